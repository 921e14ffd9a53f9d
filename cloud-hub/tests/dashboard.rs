//! The fleet dashboard end to end over HTTP: a real hub (embedded broker, real database),
//! users made the way `cloud-hub user add` makes them, and an edge played by an MQTT
//! client. Every scenario runs against SQLite and against PostgreSQL.

mod common;

use chrono::Utc;
use cloud_hub::dashboard::Role;
use cloud_hub::db::Val;
use common::*;
use shared_model::events::SiteEvent;
use shared_model::model::{ConnectorRef, TransactionOrigin};
use shared_model::sync::EventEnvelope;

macro_rules! on_both_databases {
    ($scenario:ident, $sqlite:ident, $postgres:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            $scenario(Backend::Sqlite).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            $scenario(Backend::Postgres).await;
        }
    };
}

/// A browser-like client: no redirects followed, one session cookie, an `Origin` header
/// on POSTs unless told otherwise.
struct Browser {
    base: String,
    client: reqwest::Client,
    cookie: Option<String>,
}

impl Browser {
    fn new(hub: &TestHub) -> Browser {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        Browser { base: format!("http://{}", hub.running().http_addr), client, cookie: None }
    }

    async fn get(&self, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let res = req.send().await.expect("GET");
        let (status, headers) = (res.status().as_u16(), res.headers().clone());
        (status, headers, res.text().await.expect("body"))
    }

    async fn post(&self, path: &str, form: &[(&str, &str)], origin: bool) -> (u16, reqwest::header::HeaderMap) {
        let body = form.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&");
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if origin {
            req = req.header("origin", &self.base);
        }
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let res = req.send().await.expect("POST");
        (res.status().as_u16(), res.headers().clone())
    }

    /// Logs in; returns the Set-Cookie header.
    async fn login(&mut self, user: &str, password: &str) -> String {
        let (status, headers) = self.post("/login", &[("username", user), ("password", password)], true).await;
        assert_eq!(status, 303, "log-in of {user}");
        assert_eq!(headers.get("location").and_then(|v| v.to_str().ok()), Some("/"));
        let set = headers.get("set-cookie").and_then(|v| v.to_str().ok()).expect("a cookie").to_owned();
        self.cookie = set.split(';').next().map(str::to_owned);
        set
    }
}

/// Percent-encodes a form value.
fn encode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") }).collect()
}

fn tx_started_by(seq: u64, station: &str, uid: &str, tag: &str) -> EventEnvelope {
    envelope(
        seq,
        &SiteEvent::TransactionStarted {
            station: station.into(),
            transaction_uid: uid.into(),
            station_transaction_id: format!("{seq}"),
            connector: ConnectorRef { evse: 1, connector: 1 },
            id_tag: Some(tag.into()),
            meter_start_wh: Some(1000),
            started_at: Some(t(1, 0)),
            origin: TransactionOrigin::Online,
        },
    )
}

async fn customer(hub: &TestHub, id: &str, tag: &str) {
    let store = hub.store();
    store
        .exec(
            "INSERT INTO customers (id, name, created_at) VALUES ($1, $2, $3)",
            &[id.into(), id.into(), Val::from(Utc::now())],
        )
        .await
        .expect("customer");
    store
        .exec(
            "INSERT INTO customer_tokens (id_tag, customer_id, created_at) VALUES ($1, $2, $3)",
            &[tag.into(), id.into(), Val::from(Utc::now())],
        )
        .await
        .expect("token");
}

/// Reads the event stream until a `live` event contains `needle`; the event's data.
async fn stream_until(res: &mut reqwest::Response, needle: &str) -> String {
    let mut seen = String::new();
    let read = async {
        loop {
            let chunk = res.chunk().await.expect("stream").expect("stream open");
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if let Some(event) = seen.split("\n\n").find(|e| e.contains("event: live") && e.contains(needle)) {
                return event.to_owned();
            }
        }
    };
    tokio::time::timeout(TIMEOUT, read).await.unwrap_or_else(|_| panic!("no live event with {needle:?}"))
}

async fn roles_sessions_and_live(backend: Backend) {
    init_logs();
    let Some(db) = TestDb::new(backend).await else { return };
    let hub = TestHub::start(&db, Broker::Embedded).await;
    let store = hub.store().clone();
    let (site, password) = hub.add_site("Depot <script>alert(1)</script>").await;
    let (other_site, _) = hub.add_site("Yard").await;
    customer(&hub, "acme", "TAG-ACME").await;
    customer(&hub, "globex", "TAG-GLOBEX").await;
    customer(&hub, "initech", "TAG-INITECH").await;
    let op_pw = cloud_hub::dashboard::cli::add_user(&store, "op", Role::CpoOperator, None).await.expect("op");
    let fm_pw = cloud_hub::dashboard::cli::add_user(&store, "fm", Role::FleetManager, Some("acme")).await.expect("fm");
    let fm2_pw =
        cloud_hub::dashboard::cli::add_user(&store, "fm2", Role::FleetManager, Some("globex")).await.expect("fm2");
    let fm3_pw =
        cloud_hub::dashboard::cli::add_user(&store, "fm3", Role::FleetManager, Some("initech")).await.expect("fm3");
    // The CLI's checks.
    assert!(cloud_hub::dashboard::cli::add_user(&store, "x", Role::FleetManager, None).await.is_err());
    assert!(cloud_hub::dashboard::cli::add_user(&store, "x", Role::FleetManager, Some("nobody")).await.is_err());
    assert!(cloud_hub::dashboard::cli::add_user(&store, "op", Role::Admin, None).await.is_err());
    assert!(cloud_hub::dashboard::cli::add_user(&store, "a b", Role::Admin, None).await.is_err());

    // Not logged in: every page sends to the log-in page, the stream too.
    let mut op = Browser::new(&hub);
    for path in ["/", &format!("/sites/{site}"), "/events"] {
        let (status, headers, _) = op.get(path).await;
        assert_eq!(status, 303, "{path}");
        assert_eq!(headers.get("location").and_then(|v| v.to_str().ok()), Some("/login"), "{path}");
    }
    let (status, _, body) = op.get("/login").await;
    assert_eq!(status, 200);
    assert!(body.contains("name=\"password\""));

    // Wrong password; a POST from another origin (or none).
    let (status, headers) = op.post("/login", &[("username", "op"), ("password", "nope")], true).await;
    assert_eq!(status, 401);
    assert!(headers.get("set-cookie").is_none());
    let (status, _) = op.post("/login", &[("username", "op"), ("password", &op_pw)], false).await;
    assert_eq!(status, 403, "a log-in without Origin is refused");

    let set = op.login("op", &op_pw).await;
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/"), "{set}");
    let token = set.split(';').next().and_then(|c| c.split_once('=')).map(|(_, v)| v.to_owned()).expect("token");
    let stored = store
        .fetch("SELECT token_hash FROM dashboard_sessions", &[], &[cloud_hub::db::Ty::Text])
        .await
        .expect("sessions");
    assert!(stored.iter().all(|r| r.text(0) != Some(token.as_str())), "the token itself is not stored");
    assert!(stored.iter().any(|r| r.text(0) == Some(cloud_hub::auth::token_hash(&token).as_str())));

    // The overview escapes a hostile site name and sets a strict CSP.
    let (status, headers, body) = op.get("/").await;
    assert_eq!(status, 200);
    assert!(body.contains("Depot &lt;script&gt;alert(1)&lt;/script&gt;"), "{body}");
    assert!(!body.contains("<script>alert(1)"), "raw markup from data");
    assert!(
        headers
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("script-src 'self'"))
    );
    assert!(body.contains("Yard"));

    // A session appears in the site page's stream after the edge sends it.
    let mut stream = op
        .client
        .get(format!("{}/events?site={site}", op.base))
        .header("cookie", op.cookie.clone().expect("cookie"))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status().as_u16(), 200);
    let first = stream_until(&mut stream, "No session in progress").await;
    assert!(first.contains("data: "), "{first}");
    let mut edge = hub.edge(&site, &password).await;
    edge.roundtrip(&batch(
        &site,
        vec![
            connection(1, "CP-<1>"),
            booted(2, "CP-<1>"),
            tx_started_by(3, "CP-<1>", "tx-acme", "TAG-ACME"),
            tx_started_by(4, "CP-<1>", "tx-globex", "TAG-GLOBEX"),
        ],
    ))
    .await;
    let event = stream_until(&mut stream, "tx-acme").await;
    assert!(event.contains("tx-globex"), "the operator sees every session: {event}");
    assert!(event.contains("CP-&lt;1&gt;") && !event.contains("CP-<1>"), "station names escaped: {event}");
    drop(stream);

    // The site page for the operator: both sessions, the charger online.
    let (status, _, body) = op.get(&format!("/sites/{site}")).await;
    assert_eq!(status, 200);
    assert!(body.contains("tx-acme") && body.contains("tx-globex"));
    assert!(body.contains("data-station=\"CP-&lt;1&gt;\""), "{body}");
    assert_eq!(op.get("/sites/no-such-site").await.0, 404);

    // Fleet managers: only their customer's sessions, only the sites where they charged.
    let mut fm = Browser::new(&hub);
    fm.login("fm", &fm_pw).await;
    let (status, _, body) = fm.get(&format!("/sites/{site}")).await;
    assert_eq!(status, 200);
    assert!(body.contains("tx-acme") && !body.contains("tx-globex") && !body.contains("TAG-GLOBEX"), "{body}");
    let (_, _, overview) = fm.get("/").await;
    assert!(overview.contains("Depot") && !overview.contains("Yard"), "{overview}");
    assert_eq!(fm.get(&format!("/sites/{other_site}")).await.0, 404);
    assert_eq!(fm.get(&format!("/sites/{other_site}/live")).await.0, 404);
    assert_eq!(fm.get(&format!("/events?site={other_site}")).await.0, 404);
    let (_, _, live) = fm.get(&format!("/sites/{site}/live")).await;
    assert!(live.contains("tx-acme") && !live.contains("tx-globex"));

    let mut fm2 = Browser::new(&hub);
    fm2.login("fm2", &fm2_pw).await;
    let (_, _, body) = fm2.get(&format!("/sites/{site}")).await;
    assert!(body.contains("tx-globex") && !body.contains("tx-acme"));
    let mut fm3 = Browser::new(&hub);
    fm3.login("fm3", &fm3_pw).await;
    assert_eq!(fm3.get(&format!("/sites/{site}")).await.0, 404, "no sessions there: not theirs to see");
    let (_, _, overview) = fm3.get("/").await;
    assert!(!overview.contains("Depot") && overview.contains("No sites to show"));

    // Log-out needs the same origin, then ends the session on the server.
    let (status, _) = fm.post("/logout", &[], false).await;
    assert_eq!(status, 403);
    assert_eq!(fm.get("/").await.0, 200);
    let (status, headers) = fm.post("/logout", &[], true).await;
    assert_eq!(status, 303);
    assert!(headers.get("set-cookie").and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("Max-Age=0")));
    assert_eq!(fm.get("/").await.0, 303, "the old cookie no longer works");

    // Log-in rate limit per user name: after 5 failures even the right password waits.
    let mut guess = Browser::new(&hub);
    for _ in 0..5 {
        assert_eq!(guess.post("/login", &[("username", "fm2"), ("password", "x")], true).await.0, 401);
    }
    assert_eq!(guess.post("/login", &[("username", "fm2"), ("password", &fm2_pw)], true).await.0, 429);
    guess.cookie = None;
    // Another user is not affected.
    guess.login("fm3", &fm3_pw).await;
}

on_both_databases!(roles_sessions_and_live, roles_sessions_and_live_sqlite, roles_sessions_and_live_postgres);
