//! The fleet dashboard end to end over HTTP: a real hub (embedded broker, real database),
//! users made the way `cloud-hub user add` makes them, and an edge played by an MQTT
//! client. Every scenario runs against SQLite and against PostgreSQL.

mod common;

use chrono::{TimeZone as _, Utc};
use cloud_hub::dashboard::Role;
use cloud_hub::db::Val;
use common::*;
use shared_model::events::SiteEvent;
use shared_model::model::{ConnectorRef, ConnectorStatus, TransactionOrigin};
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

    /// A POST of a form asking for JSON (as the page's script sends command buttons):
    /// status and body.
    async fn post_for_json(&self, path: &str, form: &[(&str, &str)], origin: bool) -> (u16, serde_json::Value) {
        let body = form.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&");
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body);
        if origin {
            req = req.header("origin", &self.base);
        }
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let res = req.send().await.expect("POST");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Opens an event stream.
    async fn stream(&self, path: &str) -> reqwest::Response {
        let res = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie.clone().expect("logged in"))
            .send()
            .await
            .expect("stream");
        assert_eq!(res.status().as_u16(), 200, "{path}");
        res
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

// ---- sessions with cost, CSV, invoices ------------------------------------------------------

/// OCPI 2.2.1 "Tariff example 0.25 euro per kWh + start fee": EUR 0.25 per kWh at 10 % VAT,
/// a start fee of EUR 0.50 at 20 % VAT.
const TARIFF: &str = r#"{
  "country_code": "NL", "party_id": "SPT", "id": "12", "currency": "EUR",
  "elements": [{"price_components": [
    {"type": "FLAT", "price": 0.50, "vat": 20.0, "step_size": 1},
    {"type": "ENERGY", "price": 0.25, "vat": 10.0, "step_size": 1}
  ]}],
  "last_updated": "2018-12-17T11:36:01Z"
}"#;

fn started_at(seq: u64, station: &str, uid: &str, tag: &str, meter: i64, at: chrono::DateTime<Utc>) -> EventEnvelope {
    envelope(
        seq,
        &SiteEvent::TransactionStarted {
            station: station.into(),
            transaction_uid: uid.into(),
            station_transaction_id: format!("{seq}"),
            connector: ConnectorRef { evse: 1, connector: 1 },
            id_tag: Some(tag.into()),
            meter_start_wh: Some(meter),
            started_at: Some(at),
            origin: TransactionOrigin::Online,
        },
    )
}

fn stopped_at(seq: u64, station: &str, uid: &str, meter: i64, at: chrono::DateTime<Utc>) -> EventEnvelope {
    envelope(
        seq,
        &SiteEvent::TransactionStopped {
            station: station.into(),
            transaction_uid: uid.into(),
            meter_stop_wh: Some(meter),
            stopped_at: at,
            reason: Some(shared_model::model::StopReason::EVDisconnected),
            id_tag: None,
            reconciled: false,
        },
    )
}

/// RFC 4180: fields, quoted or not, CRLF line ends.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let (mut row, mut field, mut quoted, mut chars) = (Vec::new(), String::new(), false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {
                assert_eq!(chars.next(), Some('\n'), "CR without LF");
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, '\n') => panic!("a bare LF ends a CSV line"),
            (false, c) => field.push(c),
        }
    }
    assert!(field.is_empty() && row.is_empty(), "the CSV ends with CRLF");
    rows
}

async fn api(hub: &TestHub, token: &str, method: reqwest::Method, path: &str, body: &str) -> Answer {
    hub.http().send(method, path, Some(token), Some(("application/json", body))).await
}

async fn sessions_costs_csv_and_invoices(backend: Backend) {
    init_logs();
    let Some(db) = TestDb::new(backend).await else { return };
    let hub = TestHub::start(&db, Broker::Embedded).await;
    let store = hub.store().clone();
    let admin = hub.api_key("admin", cloud_hub::auth::Role::Admin).await;
    let (alpha, alpha_pw) = hub.add_site("Alpha").await;
    let (beta, beta_pw) = hub.add_site("Beta, \"B\" =site").await;
    customer(&hub, "acme", "TAG-ACME").await;
    customer(&hub, "globex", "TAG-GLOBEX").await;
    let op_pw = cloud_hub::dashboard::cli::add_user(&store, "op", Role::CpoOperator, None).await.expect("op");
    let fm_pw = cloud_hub::dashboard::cli::add_user(&store, "fm", Role::FleetManager, Some("acme")).await.expect("fm");

    // Alpha has a tariff; Beta has none.
    let mut alpha_edge = hub.edge(&alpha, &alpha_pw).await;
    assert_eq!(api(&hub, &admin, reqwest::Method::PUT, "/api/v1/tariffs/12", TARIFF).await.status, 201);
    let assign = r#"{"tariff_id": "12", "time_zone": "Europe/Amsterdam", "valid_from": "2026-11-01T00:00:00Z"}"#;
    let a = api(&hub, &admin, reqwest::Method::POST, &format!("/api/v1/sites/{alpha}/tariffs"), assign).await;
    assert_eq!(a.status, 201, "{a:?}");
    let _set_tariff = alpha_edge.next_command().await;

    // Alpha: acme 12:01-12:30 1000 -> 3500 Wh (2.5 kWh: 0.625 + 0.50 fee = 1.125 net,
    // 1.2875 gross); globex 12:05-12:10 2000 -> 2600 Wh; acme open, 4 kWh so far.
    let events = vec![
        connection(1, "CP-1"),
        started_at(2, "CP-1", "tx-acme", "TAG-ACME", 1000, t(1, 0)),
        stopped_at(3, "CP-1", "tx-acme", 3500, t(30, 0)),
        started_at(4, "CP-2", "tx-globex", "TAG-GLOBEX", 2000, t(5, 0)),
        stopped_at(5, "CP-2", "tx-globex", 2600, t(10, 0)),
        started_at(6, "CP-3", "tx-open", "TAG-ACME", 1000, t(40, 0)),
        meter_values(7, "CP-3", Some("tx-open"), vec![sample(45, "5000", Some("Wh"), "Energy.Active.Import.Register")]),
    ];
    assert_eq!(alpha_edge.roundtrip(&batch(&alpha, events)).await, 7);
    // Beta: 1100 globex sessions, ten starting at the same second each (the CSV must page
    // through ties without losing or repeating one), all finished.
    let mut beta_edge = hub.edge(&beta, &beta_pw).await;
    let mut seq = 0;
    for chunk in 0..4 {
        let mut events = Vec::new();
        for i in (chunk * 275)..((chunk + 1) * 275) {
            let at = t(0, 0) - chrono::Duration::seconds(i64::from(i / 10));
            let uid = format!("b-{i:04}");
            seq += 1;
            events.push(started_at(seq, "CP-B", &uid, "TAG-GLOBEX", 0, at));
            seq += 1;
            events.push(stopped_at(seq, "CP-B", &uid, 1234, at + chrono::Duration::seconds(30)));
        }
        assert_eq!(beta_edge.roundtrip(&batch(&beta, events)).await, seq);
    }
    // Both priced sessions get their CDR.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let n = common::count(&store, "SELECT COUNT(*) FROM cdrs WHERE site_id = $1", &alpha).await;
        if n == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "CDRs for Alpha: {n}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let mut op = Browser::new(&hub);
    op.login("op", &op_pw).await;
    let mut fm = Browser::new(&hub);
    fm.login("fm", &fm_pw).await;

    // Not logged in: to the log-in page.
    let anon = Browser::new(&hub);
    for path in ["/sessions", "/sessions.csv", "/invoices", "/alerts", "/charts", "/charts.json"] {
        assert_eq!(anon.get(path).await.0, 303, "{path}");
    }

    // The operator's sessions page: every site, newest first, energy and cost.
    let (status, headers, body) = op.get("/sessions").await;
    assert_eq!(status, 200);
    assert!(headers.get("content-security-policy").is_some());
    assert!(body.contains("data-tx=\"tx-open\"") && body.contains("data-tx=\"tx-acme\""), "{body}");
    assert!(body.contains("data-tx=\"tx-globex\"") && body.contains("data-tx=\"b-0000\""));
    assert!(body.contains("1.29 EUR <small>incl. VAT</small>"), "the CDR's cost, rounded to cents: {body}");
    assert!(body.contains("4.00 kWh <small>so far</small>"), "an open session's energy so far");
    assert!(body.contains("2.50 kWh"), "the CDR's energy");
    assert!(body.contains("data-state=\"unpriced\""), "Beta has no tariff");
    assert!(body.contains("rel=\"next\"") && !body.contains("rel=\"prev\""), "50 a page");
    assert_eq!(body.matches("<tr class=\"session\"").count(), 50);
    let (_, _, page2) = op.get("/sessions?page=2").await;
    assert!(page2.contains("rel=\"prev\"") && page2.contains("Page 2"));
    assert!(!page2.contains("data-tx=\"tx-open\""));
    // Filters.
    let (_, _, only_alpha) = op.get(&format!("/sessions?site={alpha}")).await;
    assert_eq!(only_alpha.matches("<tr class=\"session\"").count(), 3, "{only_alpha}");
    let (_, _, open) = op.get("/sessions?state=open").await;
    assert_eq!(open.matches("<tr class=\"session\"").count(), 1);
    assert!(open.contains("data-tx=\"tx-open\""));
    let (_, _, later) = op.get("/sessions?from=2026-11-22").await;
    assert!(later.contains("No sessions match"));
    let (_, _, that_day) = op.get(&format!("/sessions?site={alpha}&from=2026-11-21&to=2026-11-21")).await;
    assert_eq!(that_day.matches("<tr class=\"session\"").count(), 3, "to includes its day");
    for (path, code, reason) in [
        ("/sessions?from=21.11.2026", 400, "is not a date YYYY-MM-DD"),
        ("/sessions?from=2026-11-22&to=2026-11-21", 400, "is after"),
        ("/sessions?state=lost", 400, "open or finished"),
        ("/sessions?page=0", 400, "page must be"),
        ("/sessions?color=red", 400, "unknown field"),
        ("/sessions?site=nowhere", 404, "Not found"),
        ("/sessions.csv?page=2", 400, "leave out page"),
        ("/sites/nowhere/sessions", 404, "Not found"),
    ] {
        let (status, _, body) = op.get(path).await;
        assert_eq!(status, code, "{path}: {body}");
        assert!(body.contains(reason), "{path}: {body}");
    }
    let (status, _, site_page) = op.get(&format!("/sites/{alpha}/sessions?state=finished")).await;
    assert_eq!(status, 200);
    assert_eq!(site_page.matches("<tr class=\"session\"").count(), 2);
    assert!(site_page.contains(&format!("/sessions.csv?site={alpha}&amp;state=finished")), "the export link");

    // The fleet manager: only their customer's sessions, on every route.
    let (_, _, mine) = fm.get("/sessions").await;
    assert!(mine.contains("data-tx=\"tx-acme\"") && mine.contains("data-tx=\"tx-open\""), "{mine}");
    assert!(!mine.contains("tx-globex") && !mine.contains("b-0000") && !mine.contains("TAG-GLOBEX"), "{mine}");
    assert!(!mine.contains("Beta"), "not even in the site filter");
    assert_eq!(fm.get(&format!("/sessions?site={beta}")).await.0, 404);
    assert_eq!(fm.get(&format!("/sites/{beta}/sessions")).await.0, 404);
    assert_eq!(fm.get(&format!("/sessions.csv?site={beta}")).await.0, 404);

    // CSV: every session once, exact decimals, proper quoting.
    let res = op.client.get(format!("{}/sessions.csv", op.base)).header("cookie", op.cookie.clone().expect("c")).send();
    let res = res.await.expect("csv");
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("text/csv; charset=utf-8"));
    let disposition = res.headers().get("content-disposition").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(disposition.starts_with("attachment; filename=\"sessions-"), "{disposition}");
    let rows = parse_csv(&res.text().await.expect("body"));
    let header = &rows[0];
    assert_eq!(header.len(), 17);
    assert!(rows.iter().all(|r| r.len() == 17), "every line has every field");
    let col = |name: &str| header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name}"));
    assert_eq!(rows.len(), 1 + 3 + 1100, "a header and every session");
    let mut uids: Vec<&str> = rows[1..].iter().map(|r| r[col("transaction_uid")].as_str()).collect();
    uids.sort_unstable();
    uids.dedup();
    assert_eq!(uids.len(), 1103, "no session twice across the chunks");
    let line = |uid: &str| rows.iter().find(|r| r[col("transaction_uid")] == uid).expect("line").clone();
    let acme = line("tx-acme");
    assert_eq!(acme[col("site_name")], "Alpha");
    assert_eq!(acme[col("state")], "priced");
    assert_eq!(acme[col("energy_source")], "cdr");
    let exact = |s: &str| s.parse::<rust_decimal::Decimal>().unwrap_or_else(|_| panic!("{s:?} is not a decimal"));
    assert_eq!(exact(&acme[col("energy_kwh")]), exact("2.5"));
    assert_eq!(exact(&acme[col("cost_excl_vat")]), exact("1.125"));
    assert_eq!(acme[col("cost_incl_vat")], "1.2875", "exact, not rounded");
    assert_eq!(acme[col("currency")], "EUR");
    assert_eq!(acme[col("started_at")], "2026-11-21T12:01:00Z");
    assert!(!acme[col("cdr_id")].is_empty());
    let open = line("tx-open");
    assert_eq!((open[col("state")].as_str(), open[col("energy_kwh")].as_str()), ("open", "4"));
    assert_eq!((open[col("energy_source")].as_str(), open[col("cost_incl_vat")].as_str()), ("so_far", ""));
    let b = line("b-0007");
    assert_eq!(b[col("site_name")], "Beta, \"B\" =site", "quoted and unquoted back");
    assert_eq!((b[col("state")].as_str(), b[col("energy_kwh")].as_str()), ("unpriced", "1.234"));
    assert_eq!(b[col("energy_source")], "meter_stop");

    let res = fm.client.get(format!("{}/sessions.csv", fm.base)).header("cookie", fm.cookie.clone().expect("c"));
    let rows = parse_csv(&res.send().await.expect("csv").text().await.expect("body"));
    let mut mine: Vec<&str> = rows[1..].iter().map(|r| r[2].as_str()).collect();
    mine.sort_unstable();
    assert_eq!(mine, ["tx-acme", "tx-open"], "the fleet manager's CSV holds their sessions only");
    let res = op.client.get(format!("{}/sessions.csv?site={alpha}&state=open", op.base));
    let rows = parse_csv(
        &res.header("cookie", op.cookie.clone().expect("c")).send().await.expect("csv").text().await.expect("b"),
    );
    assert_eq!(rows.len(), 2, "filters apply to the CSV: {rows:?}");

    // Invoices: one per customer, through the fleet API.
    let period = |c: &str| {
        format!("{{\"customer_id\": \"{c}\", \"from\": \"2026-11-01T00:00:00Z\", \"to\": \"2026-12-01T00:00:00Z\"}}")
    };
    let acme_inv = api(&hub, &admin, reqwest::Method::POST, "/api/v1/invoices", &period("acme")).await;
    assert_eq!(acme_inv.status, 201, "{acme_inv:?}");
    let globex_inv = api(&hub, &admin, reqwest::Method::POST, "/api/v1/invoices", &period("globex")).await;
    assert_eq!(globex_inv.status, 201, "{globex_inv:?}");
    let (acme_id, globex_id) =
        (acme_inv.body["id"].as_str().expect("id").to_owned(), globex_inv.body["id"].as_str().expect("id").to_owned());

    let (status, _, list) = op.get("/invoices").await;
    assert_eq!(status, 200);
    assert!(list.contains("data-customer=\"acme\"") && list.contains("data-customer=\"globex\""), "{list}");
    assert!(list.contains(&format!("href=\"/invoices/{acme_id}\"")));
    assert!(list.contains("1.29 EUR"), "the total: {list}");
    let (_, _, globex_only) = op.get("/invoices?customer=globex").await;
    assert!(!globex_only.contains("data-customer=\"acme\"") && globex_only.contains(&globex_id));
    let (_, _, none) = op.get("/invoices?from=2026-12-02").await;
    assert!(none.contains("No invoices match"));
    assert_eq!(op.get("/invoices?from=yesterday").await.0, 400);
    let (status, headers, doc) = op.get(&format!("/invoices/{acme_id}")).await;
    assert_eq!(status, 200);
    assert!(doc.contains("Invoice 1") && doc.contains("1.29 EUR"), "{doc}");
    let csp = headers.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"), "{csp}");
    assert_eq!(op.get("/invoices/nope").await.0, 404);

    let (_, _, list) = fm.get("/invoices").await;
    assert!(list.contains(&acme_id) && !list.contains(&globex_id) && !list.contains("<select name=\"customer\""));
    assert_eq!(fm.get("/invoices?customer=globex").await.0, 404);
    assert_eq!(fm.get(&format!("/invoices/{globex_id}")).await.0, 404);
    assert_eq!(fm.get(&format!("/invoices/{acme_id}")).await.0, 200);
}

on_both_databases!(sessions_costs_csv_and_invoices, sessions_csv_invoices_sqlite, sessions_csv_invoices_postgres);

// ---- alerts, commands, charts ----------------------------------------------------------------

fn status_event(seq: u64, station: &str, status: ConnectorStatus, error: &str, minute: u32) -> EventEnvelope {
    envelope(
        seq,
        &SiteEvent::ConnectorStatus {
            station: station.into(),
            connector: ConnectorRef { evse: 1, connector: 1 },
            status,
            error_code: Some(error.into()),
            info: None,
            vendor_error_code: None,
            at: t(minute, 0),
        },
    )
}

fn link(seq: u64, station: &str, connected: bool, minute: u32) -> EventEnvelope {
    envelope(seq, &SiteEvent::StationConnection { station: station.into(), connected, at: t(minute, 0) })
}

async fn presence(edge: &Edge, online: bool, minute: u32) {
    let status = shared_model::sync::Status {
        v: shared_model::sync::PROTOCOL_VERSION,
        site_id: edge.site.clone(),
        online,
        at: t(minute, 0),
    };
    edge.publish(shared_model::sync::Topic::Status.of(&edge.site), serde_json::to_vec(&status).expect("json")).await;
}

async fn alerts_commands_and_charts(backend: Backend) {
    init_logs();
    let Some(db) = TestDb::new(backend).await else { return };
    let hub = TestHub::start(&db, Broker::Embedded).await;
    let store = hub.store().clone();
    let (site, password) = hub.add_site("Alpha").await;
    customer(&hub, "acme", "TAG-ACME").await;
    customer(&hub, "globex", "TAG-GLOBEX").await;
    let op_pw = cloud_hub::dashboard::cli::add_user(&store, "op", Role::CpoOperator, None).await.expect("op");
    let fm_pw = cloud_hub::dashboard::cli::add_user(&store, "fm", Role::FleetManager, Some("acme")).await.expect("fm");
    let fm2_pw =
        cloud_hub::dashboard::cli::add_user(&store, "fm2", Role::FleetManager, Some("globex")).await.expect("fm2");
    let mut op = Browser::new(&hub);
    op.login("op", &op_pw).await;
    let mut fm = Browser::new(&hub);
    fm.login("fm", &fm_pw).await;
    let mut fm2 = Browser::new(&hub);
    fm2.login("fm2", &fm2_pw).await;

    // The count stream of a page without a live part starts at 0.
    let mut count = op.stream("/events?view=count").await;
    stream_until(&mut count, "\"alerts\":0").await;

    // CP-1 charges for acme (12:01-12:30, 2.5 kWh) and then faults; CP-2 drops off.
    let mut edge = hub.edge(&site, &password).await;
    let events = vec![
        link(1, "CP-1", true, 0),
        booted(2, "CP-1"),
        status_event(3, "CP-1", ConnectorStatus::Available, "NoError", 0),
        started_at(4, "CP-1", "tx-done", "TAG-ACME", 1000, t(1, 0)),
        stopped_at(5, "CP-1", "tx-done", 3500, t(30, 0)),
        started_at(6, "CP-1", "tx-live", "TAG-ACME", 3500, t(31, 0)),
        status_event(7, "CP-1", ConnectorStatus::Faulted, "GroundFailure", 32),
        link(8, "CP-2", true, 0),
        link(9, "CP-2", false, 33),
    ];
    assert_eq!(edge.roundtrip(&batch(&site, events)).await, 9);
    stream_until(&mut count, "\"alerts\":2").await;

    let (status, _, alerts) = op.get("/alerts").await;
    assert_eq!(status, 200);
    assert!(alerts.contains("<span id=\"alert-count\" class=\"badge bad\">2</span>"), "the badge: {alerts}");
    assert!(alerts.contains("data-stream=\"/events?view=alerts\""));
    let open = alerts.split("<h2>Recently cleared</h2>").next().unwrap_or_default();
    assert!(open.contains("data-kind=\"connector_faulted\"") && open.contains("GroundFailure"), "{open}");
    assert!(open.contains("data-kind=\"charger_offline\"") && open.contains("2026-11-21 12:33:00 UTC"));
    assert!(alerts.contains("No alert cleared recently"));
    // The fleet manager who charged there sees them; the one who did not, none.
    let (_, _, theirs) = fm.get("/alerts").await;
    assert!(theirs.contains("GroundFailure"));
    let (_, _, none) = fm2.get("/alerts").await;
    assert!(none.contains("No open alerts") && none.contains("class=\"badge ok\">0</span>"), "{none}");
    assert_eq!(fm2.get(&format!("/alerts?site={site}")).await.0, 404);
    assert_eq!(fm2.get(&format!("/events?view=alerts&site={site}")).await.0, 404);
    assert_eq!(op.get("/events?view=everything").await.0, 400);

    // The fault clears; the site goes offline and comes back.
    let mut alert_stream = op.stream("/events?view=alerts").await;
    stream_until(&mut alert_stream, "GroundFailure").await;
    assert_eq!(
        edge.roundtrip(&batch(&site, vec![status_event(10, "CP-1", ConnectorStatus::Charging, "NoError", 40)])).await,
        10
    );
    stream_until(&mut count, "\"alerts\":1").await;
    let cleared = stream_until(&mut alert_stream, "12:40:00 UTC").await;
    assert!(cleared.contains("id=\\\"cleared-alerts\\\""), "the fault is among the cleared: {cleared}");
    presence(&edge, false, 41).await;
    stream_until(&mut count, "\"alerts\":2").await;
    let (_, _, page) = op.get(&format!("/sites/{site}")).await;
    assert!(page.contains("data-kind=\"site_offline\""), "{page}");
    presence(&edge, true, 42).await;
    stream_until(&mut count, "\"alerts\":1").await;
    let rows = store
        .fetch(
            "SELECT kind, opened_at, cleared_at FROM dashboard_alerts WHERE site_id = $1 ORDER BY id",
            &[site.as_str().into()],
            &[cloud_hub::db::Ty::Text, cloud_hub::db::Ty::Time, cloud_hub::db::Ty::Time],
        )
        .await
        .expect("alerts");
    type Episode<'a> = (&'a str, Option<chrono::DateTime<Utc>>, Option<chrono::DateTime<Utc>>);
    let summary: Vec<Episode> = rows.iter().map(|r| (r.text(0).unwrap_or_default(), r.time(1), r.time(2))).collect();
    assert_eq!(
        summary,
        [
            ("connector_faulted", Some(t(32, 0)), Some(t(40, 0))),
            ("charger_offline", Some(t(33, 0)), None),
            ("site_offline", Some(t(41, 0)), Some(t(42, 0))),
        ]
    );
    drop(count);
    drop(alert_stream);

    // Command buttons: the operator has them, the fleet managers do not.
    let (_, _, page) = op.get(&format!("/sites/{site}")).await;
    assert!(
        page.contains("data-cmd=\"remote-stop\"") && page.contains("name=\"transaction_id\" value=\"6\""),
        "{page}"
    );
    assert!(page.contains("data-cmd=\"unlock\"") && page.contains("data-cmd=\"availability\""));
    assert!(page.contains("id=\"cmd-result\"") && page.contains("No commands sent to this site yet"));
    let (_, _, theirs) = fm.get(&format!("/sites/{site}")).await;
    assert!(theirs.contains("tx-live") && !theirs.contains("class=\"cmd\"") && !theirs.contains("Recent commands"));

    let stop = [("type", "remote_stop"), ("station", "CP-1"), ("transaction_id", "6")];
    let path = format!("/sites/{site}/commands");
    let (status, body) = fm.post_for_json(&path, &stop, true).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("Your role does not allow this.")));
    assert_eq!(op.post_for_json(&path, &stop, false).await.0, 403, "no Origin: refused");
    for (form, code, reason) in [
        (vec![("type", "remote_stop"), ("station", "CP-1"), ("transaction_id", "six")], 422, "not a whole number"),
        (vec![("type", "remote_stop"), ("station", "CP-9"), ("transaction_id", "6")], 422, "not known at this site"),
        (vec![("type", "remote_stop"), ("station", "CP-1"), ("transaction_id", "99")], 409, "is running"),
        (vec![("type", "reset"), ("station", "CP-1"), ("hard", "true")], 422, "use the fleet API"),
        (vec![("type", "unlock_connector"), ("station", "CP-1"), ("connector", "0")], 422, "1 or more"),
        (vec![("type", "remote_stop"), ("station", "CP-1")], 422, "missing field `transaction_id`"),
    ] {
        let (status, body) = op.post_for_json(&path, &form, true).await;
        assert_eq!(status, code, "{form:?}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains(reason)), "{form:?}: {body}");
    }
    assert_eq!(op.post_for_json("/sites/nowhere/commands", &stop, true).await.0, 404);
    assert!(edge.command_within(std::time::Duration::from_millis(300)).await.is_none(), "nothing refused was sent");

    let (status, body) = op.post_for_json(&path, &stop, true).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["published"], true);
    assert!(body["message"].as_str().is_some_and(|m| m.contains("Stop of transaction 6 at CP-1")), "{body}");
    let command = edge.next_command().await;
    assert_eq!(command.command_id, body["command_id"].as_str().expect("id"));
    assert_eq!(command.command, shared_model::sync::Command::RemoteStop { station: "CP-1".into(), transaction_id: 6 });
    let stored = cloud_hub::commands::get(&store, &command.command_id).await.expect("db").expect("stored");
    assert_eq!(stored.issued_by.as_deref(), Some("op"));
    assert_eq!(hub.running().metrics.commands_published_count("dashboard"), 1);
    // A plain form POST (no script) comes back to the page.
    let unlock = [("type", "unlock_connector"), ("station", "CP-1"), ("connector", "1")];
    let (status, headers) = op.post(&path, &unlock, true).await;
    assert_eq!(status, 303);
    assert_eq!(headers.get("location").and_then(|v| v.to_str().ok()), Some(format!("/sites/{site}#commands").as_str()));
    let _unlock = edge.next_command().await;
    // The site's answer shows on the page, pushed.
    let mut live = op.stream(&format!("/events?site={site}")).await;
    stream_until(&mut live, "waiting").await;
    edge.send_result(&edge.result_for(
        &command.command_id,
        shared_model::sync::CommandOutcome::Accepted,
        serde_json::json!({}),
    ))
    .await;
    let event = stream_until(&mut live, "badge ok\\\">accepted").await;
    assert!(event.contains(&command.command_id), "{event}");
    drop(live);

    // Charts: the finished session's 2.5 kWh in the 12:00 hour, 29 of its 60 minutes busy
    // on the one charging point, and the open session's 29 minutes from 12:31 up to now.
    let (status, _, json) = op.get(&format!("/charts.json?site={site}&range=day&end=2026-11-21")).await;
    assert_eq!(status, 200, "{json}");
    let data: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(data["bucket"], "hour");
    assert_eq!(data["charging_points"], 1);
    assert_eq!(data["sessions"], 2);
    let points = data["points"].as_array().expect("points");
    assert_eq!(points.len(), 24);
    assert_eq!(points[12]["start"], "2026-11-21T12:00:00Z");
    assert_eq!(points[12]["energy_kwh"], 2.5);
    assert_eq!(points[12]["utilisation_pct"], 96.7, "29 + 29 of 60 minutes");
    assert_eq!(points[11]["energy_kwh"], 0.0);
    let (_, _, week) = op.get(&format!("/charts.json?site={site}&range=week&end=2026-11-21")).await;
    let week: serde_json::Value = serde_json::from_str(&week).expect("json");
    assert_eq!(week["points"].as_array().map(Vec::len), Some(7));
    assert_eq!(week["points"][6]["energy_kwh"], 2.5);
    assert_eq!(week["points"][0]["energy_kwh"], 0.0);
    let (_, _, month) = op.get("/charts.json?range=month&end=2026-11-21").await;
    let month: serde_json::Value = serde_json::from_str(&month).expect("json");
    assert_eq!((month["points"].as_array().map(Vec::len), month["site"].is_null()), (Some(30), true));
    assert_eq!(month["total_energy_kwh"], 2.5);
    let (_, _, fleet2) = fm2.get("/charts.json?range=week&end=2026-11-21").await;
    let fleet2: serde_json::Value = serde_json::from_str(&fleet2).expect("json");
    assert_eq!((fleet2["total_energy_kwh"].as_f64(), fleet2["sessions"].as_u64()), (Some(0.0), Some(0)));
    assert_eq!(fm2.get(&format!("/charts.json?site={site}")).await.0, 404);
    assert_eq!(op.get("/charts.json?range=year").await.0, 400);
    assert_eq!(op.get("/charts.json?end=tomorrow").await.0, 400);
    // Bucket edges: a session starting exactly on an hour (summed by the database) and one
    // across midnight (spread by the hub), at a site of their own.
    let (beta, beta_pw) = hub.add_site("Beta").await;
    let beta_edge = hub.edge(&beta, &beta_pw).await;
    let mut beta_edge = beta_edge;
    let at = |d: u32, h: u32, m: u32| Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).single().expect("time");
    let events = vec![
        status_event(1, "CP-B", ConnectorStatus::Available, "NoError", 0),
        started_at(2, "CP-B", "b-night", "TAG-GLOBEX", 10_000, at(20, 23, 0)),
        stopped_at(3, "CP-B", "b-night", 14_000, at(21, 1, 0)),
        started_at(4, "CP-B", "b-edge", "TAG-GLOBEX", 0, at(21, 13, 0)),
        stopped_at(5, "CP-B", "b-edge", 1_000, at(21, 13, 30)),
    ];
    assert_eq!(beta_edge.roundtrip(&batch(&beta, events)).await, 5);
    let (_, _, day) = op.get(&format!("/charts.json?site={beta}&range=day&end=2026-11-21")).await;
    let day: serde_json::Value = serde_json::from_str(&day).expect("json");
    assert_eq!((day["sessions"].as_u64(), day["charging_points"].as_u64()), (Some(2), Some(1)), "{day}");
    let hours: Vec<(f64, f64)> = day["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| (p["energy_kwh"].as_f64().unwrap_or(-1.0), p["utilisation_pct"].as_f64().unwrap_or(-1.0)))
        .collect();
    assert_eq!(hours[0], (2.0, 100.0), "the night session's second hour: {hours:?}");
    assert_eq!(hours[1], (0.0, 0.0));
    assert_eq!(hours[12], (0.0, 0.0), "not the hour before the edge");
    assert_eq!(hours[13], (1.0, 50.0), "a start on the hour counts in that hour");
    let (_, _, week) = op.get(&format!("/charts.json?site={beta}&range=week&end=2026-11-21")).await;
    let week: serde_json::Value = serde_json::from_str(&week).expect("json");
    let days: Vec<(f64, f64)> = week["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| (p["energy_kwh"].as_f64().unwrap_or(-1.0), p["utilisation_pct"].as_f64().unwrap_or(-1.0)))
        .collect();
    assert_eq!(days[5], (2.0, 4.2), "one hour of the night session on the 20th: {days:?}");
    assert_eq!(days[6].0, 3.0, "its other hour and the edge session on the 21st");

    let (status, headers, chart_page) = op.get(&format!("/charts?site={site}&range=day&end=2026-11-21")).await;
    assert_eq!(status, 200);
    assert!(chart_page.contains("<script src=\"/static/uplot.min.js\"></script>"));
    assert!(chart_page.contains(&format!("data-src=\"/charts.json?range=day&amp;end=2026-11-21&amp;site={site}\"")));
    assert!(chart_page.contains("<td class=\"n\">2.500 kWh</td>"), "the figures as a table");
    let csp = headers.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"), "{csp}");
    let (status, headers, lib) = op.get("/static/uplot.min.js").await;
    assert_eq!(status, 200);
    assert!(
        headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/javascript"))
    );
    assert!(lib.contains("The MIT License (MIT)") && lib.contains("Leon Sorokin") && lib.contains("var uPlot="));
    assert_eq!(op.get("/static/uplot.min.css").await.0, 200);
}

on_both_databases!(alerts_commands_and_charts, alerts_commands_charts_sqlite, alerts_commands_charts_postgres);

fn energy_report(minute: u32, currents: [f64; 3], fail_safe: Option<&str>) -> SiteEvent {
    use shared_model::energy::{
        CircuitEnergy, EnergyLimit, FailSafeReason, FailSafeState, LimitSource, SiteEnergyReport,
    };
    SiteEvent::SiteEnergy(SiteEnergyReport {
        at: t(minute, 0),
        circuits: vec![
            CircuitEnergy {
                circuit: "main".into(),
                parent: None,
                meter: Some("grid".into()),
                state: if fail_safe.is_some() { "stale" } else { "fresh" }.into(),
                stale: fail_safe.is_some(),
                read_at: Some(t(minute, 0)),
                current_a: currents.map(Some),
                power_w: currents.map(|a| Some(a * 230.0)),
                total_power_w: Some(currents.iter().sum::<f64>() * 230.0),
                allocated_a: [6.0, 6.0, 0.0],
                limits: vec![
                    EnergyLimit { source: LimitSource::Fuse, current_a: Some([32.0; 3]), power_w: None, until: None },
                    EnergyLimit {
                        source: LimitSource::GridOperator,
                        current_a: Some([40.0, 25.0, 40.0]),
                        power_w: Some(20_000.0),
                        until: Some(t(59, 0)),
                    },
                ],
            },
            CircuitEnergy {
                circuit: "garage".into(),
                parent: Some("main".into()),
                meter: None,
                state: "unmetered".into(),
                stale: false,
                read_at: None,
                current_a: [None; 3],
                power_w: [None; 3],
                total_power_w: None,
                allocated_a: [6.0, 6.0, 0.0],
                limits: vec![EnergyLimit {
                    source: LimitSource::Fuse,
                    current_a: Some([16.0; 3]),
                    power_w: None,
                    until: None,
                }],
            },
        ],
        allocated_a: [6.0, 6.0, 0.0],
        fail_safe: FailSafeState {
            active: fail_safe.is_some(),
            reasons: fail_safe
                .map(|k| vec![FailSafeReason { subject: "main".into(), kind: k.into(), since: Some(t(minute, 0)) }])
                .unwrap_or_default(),
        },
    })
}

/// Issue 6: the site page shows the site's power per phase against every limit, live; a
/// site in fail-safe opens the `fail_safe` alert and a report that it is over clears it;
/// the fleet API serves the newest report.
async fn site_energy_page_and_fail_safe(backend: Backend) {
    init_logs();
    let Some(db) = TestDb::new(backend).await else { return };
    let hub = TestHub::start(&db, Broker::Embedded).await;
    let store = hub.store().clone();
    let admin = hub.api_key("admin", cloud_hub::auth::Role::Admin).await;
    let (site, password) = hub.add_site("Alpha").await;
    customer(&hub, "acme", "TAG-ACME").await;
    customer(&hub, "globex", "TAG-GLOBEX").await;
    let op_pw = cloud_hub::dashboard::cli::add_user(&store, "op", Role::CpoOperator, None).await.expect("op");
    let fm_pw = cloud_hub::dashboard::cli::add_user(&store, "fm", Role::FleetManager, Some("acme")).await.expect("fm");
    let fm2_pw =
        cloud_hub::dashboard::cli::add_user(&store, "fm2", Role::FleetManager, Some("globex")).await.expect("fm2");
    let mut op = Browser::new(&hub);
    op.login("op", &op_pw).await;
    let mut fm = Browser::new(&hub);
    fm.login("fm", &fm_pw).await;
    let mut fm2 = Browser::new(&hub);
    fm2.login("fm2", &fm2_pw).await;
    let mut edge = hub.edge(&site, &password).await;
    assert_eq!(edge.roundtrip(&batch(&site, vec![tx_started_by(1, "CP-1", "tx-1", "TAG-ACME")])).await, 1);

    // Nothing reported yet: the page says so, the API answers nulls.
    let (status, _, page) = op.get(&format!("/sites/{site}")).await;
    assert_eq!(status, 200);
    assert!(page.contains("id=\"no-energy\""), "{page}");
    let none = hub.http().get(&format!("/api/v1/sites/{site}/energy"), &admin).await;
    assert_eq!(
        (none.status, &none.body["report"], &none.body["received_at"]),
        (200, &serde_json::Value::Null, &serde_json::Value::Null)
    );
    assert_eq!(hub.http().get("/api/v1/sites/nope/energy", &admin).await.status, 404);

    // A report arrives: the open page's stream re-renders it with the phase rows.
    let mut live = op.stream(&format!("/events?site={site}")).await;
    let mut count = op.stream("/events?view=count").await;
    stream_until(&mut count, "\"alerts\":0").await;
    assert_eq!(edge.roundtrip(&batch(&site, vec![envelope(2, &energy_report(5, [20.0, 24.0, 10.0], None))])).await, 2);
    let pushed = stream_until(&mut live, "data-phase=\\\"L2\\\"").await;
    assert!(pushed.contains("site-energy"), "{pushed}");
    let (_, _, page) = op.get(&format!("/sites/{site}")).await;
    let energy = page.split("id=\"site-energy\"").nth(1).and_then(|s| s.split("</section>").next()).expect("section");
    for needle in [
        "data-circuit=\"main\"",
        "(grid connection)",
        "data-circuit=\"garage\"",
        "20.0 A",
        "24.0 A",
        "Grid operator",
        "Fuse",
        "12.42 kW",
        "20.00 kW",
        "<meter",
    ] {
        assert!(energy.contains(needle), "{needle} in {energy}");
    }
    assert!(!energy.contains("id=\"fail-safe\""), "no fail-safe banner: {energy}");
    // L1: the fuse (32 A) is the tightest; L2: the grid operator's 25 A.
    let row = |phase: &str, circuit: &str| -> String {
        let c = energy.split(&format!("data-circuit=\"{circuit}\"")).nth(1).unwrap_or_default();
        c.split(&format!("data-phase=\"{phase}\""))
            .nth(1)
            .and_then(|r| r.split("</tr>").next())
            .unwrap_or_default()
            .to_owned()
    };
    let l1 = row("L1", "main");
    assert!(l1.contains("data-label=\"Fuse\">32.0 A <small>tightest</small>"), "{l1}");
    assert!(!l1.contains("data-label=\"Grid operator\">40.0 A <small>tightest"), "{l1}");
    let l2 = row("L2", "main");
    assert!(l2.contains("data-label=\"Grid operator\">25.0 A <small>tightest</small>"), "{l2}");
    assert!(l2.contains("max=\"25.000\"") && l2.contains("value=\"24.000\""), "the bar is against 25 A: {l2}");
    assert!(row("L3", "garage").contains("16.0 A <small>tightest</small>"));
    // The fleet manager whose tag charged here sees it; another does not see the site.
    assert!(fm.get(&format!("/sites/{site}")).await.2.contains("data-circuit=\"main\""));
    assert_eq!(fm2.get(&format!("/sites/{site}")).await.0, 404);

    // The API serves it, as its schema says.
    let api = hub.http().get(&format!("/api/v1/sites/{site}/energy"), &admin).await;
    assert_eq!(api.status, 200, "{}", api.body);
    assert_eq!(api.body["report"]["circuits"][0]["current_a"], serde_json::json!([20.0, 24.0, 10.0]));
    assert_eq!(api.body["report"]["fail_safe"]["active"], false);
    let doc = hub.http().get("/api/v1/openapi.json", &admin).await.body;
    assert_schema(&doc, "SiteEnergy", &api.body);
    assert_schema(&doc, "SiteEnergy", &none.body);
    assert!(doc["paths"]["/api/v1/sites/{site}/energy"]["get"].is_object(), "documented");

    // The meter goes stale: fail-safe opens the alert, the page shows the banner.
    let stale = energy_report(6, [20.0, 24.0, 10.0], Some("meter_stale"));
    assert_eq!(edge.roundtrip(&batch(&site, vec![envelope(3, &stale)])).await, 3);
    stream_until(&mut count, "\"alerts\":1").await;
    let (_, _, page) = op.get(&format!("/sites/{site}")).await;
    assert!(page.contains("id=\"fail-safe\"") && page.contains("meter stale at <code>main</code>"), "{page}");
    let (_, _, alerts) = op.get("/alerts").await;
    assert!(alerts.contains("data-kind=\"fail_safe\"") && alerts.contains("meter_stale at main"), "{alerts}");
    // Repeated: still one alert, opened at the first report.
    let again = energy_report(7, [20.0, 24.0, 10.0], Some("meter_stale"));
    assert_eq!(edge.roundtrip(&batch(&site, vec![envelope(4, &again)])).await, 4);
    // It is over: the alert clears.
    assert_eq!(edge.roundtrip(&batch(&site, vec![envelope(5, &energy_report(8, [5.0, 6.0, 7.0], None))])).await, 5);
    stream_until(&mut count, "\"alerts\":0").await;
    let rows = store
        .fetch(
            "SELECT opened_at, cleared_at, detail FROM dashboard_alerts WHERE site_id = $1 AND kind = 'fail_safe'",
            &[site.as_str().into()],
            &[cloud_hub::db::Ty::Time, cloud_hub::db::Ty::Time, cloud_hub::db::Ty::Text],
        )
        .await
        .expect("alerts");
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].time(0), rows[0].time(1)), (Some(t(6, 0)), Some(t(8, 0))));
    assert_eq!(rows[0].text(2), Some("meter_stale at main"));
    let (_, _, page) = op.get(&format!("/sites/{site}")).await;
    assert!(!page.contains("id=\"fail-safe\"") && page.contains("5.0 A"), "{page}");
    // Four reports make a chart of the last hour.
    assert!(page.contains("class=\"spark\"") && page.contains("<polyline"), "{page}");
    let n = store
        .fetch_opt(
            "SELECT COUNT(*) FROM site_energy_series WHERE site_id = $1",
            &[site.as_str().into()],
            &[cloud_hub::db::Ty::Int],
        )
        .await
        .expect("series")
        .and_then(|r| r.int(0));
    assert_eq!(n, Some(4));
    // An hour later the first points are gone.
    let late = energy_report(5, [1.0, 1.0, 1.0], None);
    let SiteEvent::SiteEnergy(mut late_report) = late else { unreachable!("a report") };
    late_report.at = t(6, 30) + chrono::Duration::hours(1);
    assert_eq!(edge.roundtrip(&batch(&site, vec![envelope(6, &SiteEvent::SiteEnergy(late_report))])).await, 6);
    let n = store
        .fetch_opt(
            "SELECT COUNT(*) FROM site_energy_series WHERE site_id = $1",
            &[site.as_str().into()],
            &[cloud_hub::db::Ty::Int],
        )
        .await
        .expect("series")
        .and_then(|r| r.int(0));
    assert_eq!(n, Some(3), "the report of 12:05 and 12:06 are older than an hour; 12:07, 12:08 and the new stay");
}

on_both_databases!(site_energy_page_and_fail_safe, site_energy_sqlite, site_energy_postgres);
