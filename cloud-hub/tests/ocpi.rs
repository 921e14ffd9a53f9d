//! OCPI 2.2.1 (CPO role) end to end: a real hub with `[ocpi]` enabled on a real database
//! (SQLite and PostgreSQL), data applied by the real ingest code, and the simulated eMSP
//! (`simulators::emsp`) over real sockets: registration both ways with the token B / C
//! exchange, rotation with its grace window, unregistering, crawling 10 000 EVSEs page
//! by page, `last_updated` that moves only with the content, pushes on a status change,
//! tokens, real-time authorization, and every error status of these parts.

mod common;

use base64::Engine as _;
use chrono::Utc;
use cloud_hub::app::Running;
use cloud_hub::auth::Role;
use cloud_hub::config::Config;
use common::*;
use serde_json::{Value, json};
use shared_model::model::ConnectorStatus;
use simulators::emsp::{AuthAnswer, Emsp, EmspConfig, EmspError, VersionsMode};

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

struct Hub {
    running: Running,
    admin: String,
    http: reqwest::Client,
    base: String,
}

/// A hub with OCPI enabled; `extra` adds lines to `[ocpi]`.
async fn start(db: &TestDb, extra: &str) -> Hub {
    init_logs();
    let refresh = if extra.contains("refresh_interval_ms") { "" } else { "refresh_interval_ms = 100\n" };
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"{}\"\n\
         max_connections = 4\n[ingest]\nworkers = 2\n[ocpi]\nenabled = true\ncountry_code = \"DE\"\n\
         party_id = \"SPL\"\n{refresh}{extra}\n",
        db.url
    );
    let path = db.dir.path().join("cloud-hub.toml");
    std::fs::write(&path, text).expect("write the config");
    let config = Config::load(&path).map_err(|e| e.to_string()).expect("valid config");
    let running = cloud_hub::app::start(config).await.map_err(|e| format!("{e:#}")).expect("hub starts");
    let admin =
        cloud_hub::auth::add_key(&running.store, &format!("admin-{}", uuid::Uuid::new_v4().simple()), Role::Admin)
            .await
            .expect("key")
            .token;
    let base = format!("http://{}", running.http_addr);
    Hub { running, admin, http: reqwest::Client::new(), base }
}

struct Reply {
    http: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Reply {
    fn code(&self) -> Option<u64> {
        self.body.get("status_code").and_then(Value::as_u64)
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Hub {
    fn versions_url(&self) -> String {
        format!("{}/ocpi/versions", self.base)
    }

    async fn send(&self, method: reqwest::Method, path: &str, auth: Option<&str>, body: Option<&Value>) -> Reply {
        let url = if path.starts_with("http") { path.to_owned() } else { format!("{}{path}", self.base) };
        let mut req = self.http.request(method, url);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.expect("HTTP request");
        let http = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        Reply { http, headers, body: serde_json::from_str(&text).unwrap_or(Value::String(text)) }
    }

    /// An OCPI GET with `token` base64-encoded.
    async fn ocpi_get(&self, path: &str, token: &str) -> Reply {
        self.send(reqwest::Method::GET, path, Some(&b64(token)), None).await
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Reply {
        let auth = format!("Bearer {}", self.admin);
        self.send(method, &format!("/api/v1/ocpi{path}"), Some(&auth), body).await
    }

    /// A token A for partner `name`.
    async fn token_a(&self, name: &str, raw: bool) -> String {
        let r = self.admin(reqwest::Method::POST, "/partners", Some(&json!({"name": name, "raw_tokens": raw}))).await;
        assert_eq!(r.http, 201, "{:?}", r.body);
        assert_eq!(r.body["versions_url"], self.versions_url());
        r.body["token_a"].as_str().expect("token").to_owned()
    }

    async fn partner_state(&self, name: &str) -> String {
        let r = self.admin(reqwest::Method::GET, "/partners", None).await;
        assert_eq!(r.http, 200, "{:?}", r.body);
        let items = r.body["items"].as_array().expect("items");
        items
            .iter()
            .find(|p| p["id"] == name)
            .map(|p| p["state"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    }

    /// A site with `evses` EVSEs on one charger, each connector Available, published as
    /// a Location with id `site`. Direct inserts for the site (no MQTT login needed),
    /// the real ingest for its events.
    async fn site(&self, site: &str, evses: u32) {
        add_bare_site(&self.running.store, site).await;
        let events =
            (1..=evses).map(|e| connector_status(u64::from(e), "CP-1", e, ConnectorStatus::Available)).collect();
        cloud_hub::ingest::apply_batch(&self.running.store, &batch(site, events), Utc::now()).await.expect("applied");
        let r = self
            .admin(
                reqwest::Method::PUT,
                &format!("/sites/{site}/location"),
                Some(&json!({"address": "Main St 1", "city": "Berlin", "country": "DEU", "latitude": 52.52,
                              "longitude": 13.405, "time_zone": "Europe/Berlin", "postal_code": "10115"})),
            )
            .await;
        assert_eq!(r.http, 200, "{:?}", r.body);
    }

    /// Sets one connector's status through ingest (`seq` must be the site's next).
    async fn status(&self, site: &str, seq: u64, evse: u32, status: ConnectorStatus) {
        let b = batch(site, vec![connector_status(seq, "CP-1", evse, status)]);
        let applied = cloud_hub::ingest::apply_batch(&self.running.store, &b, Utc::now()).await.expect("applied");
        assert_eq!(applied.applied_through, seq);
    }
}

async fn add_bare_site(store: &cloud_hub::db::Store, site: &str) {
    store
        .exec(
            "INSERT INTO sites (id, name, mqtt_password_hash, created_at) VALUES ($1, $1, 'none', $2)",
            &[site.into(), Utc::now().into()],
        )
        .await
        .expect("site");
}

fn b64(token: &str) -> String {
    format!("Token {}", base64::engine::general_purpose::STANDARD.encode(token))
}

fn emsp_config() -> EmspConfig {
    EmspConfig::default()
}

// ---- registration -----------------------------------------------------------------

/// The eMSP registers with us: token A for registration only, then token C; rotation
/// with a grace window; unregistering.
async fn a_partner_registers_with_us(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let hub = start(&db, "rotation_grace_s = 3600").await;
    let token_a = hub.token_a("emsp", false).await;
    assert_eq!(hub.partner_state("emsp").await, "pending");

    // No token, an unknown token, a non-Token scheme: 401 with an OCPI envelope.
    let r = hub.send(reqwest::Method::GET, "/ocpi/versions", None, None).await;
    assert_eq!((r.http, r.code()), (401, Some(2000)), "{:?}", r.body);
    assert!(r.header("x-request-id").is_some());
    assert_eq!(hub.ocpi_get("/ocpi/versions", "not-a-token").await.http, 401);
    let r = hub.send(reqwest::Method::GET, "/ocpi/versions", Some(&format!("Bearer {token_a}")), None).await;
    assert_eq!(r.http, 401);

    // Token A: versions and details yes, modules no.
    let r = hub.ocpi_get("/ocpi/versions", &token_a).await;
    assert_eq!((r.http, r.code()), (200, Some(1000)), "{:?}", r.body);
    assert_eq!(r.body["data"][0]["version"], "2.2.1");
    let r = hub.ocpi_get("/ocpi/2.2.1", &token_a).await;
    let ids: Vec<String> = r.body["data"]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| format!("{}:{}", e["identifier"].as_str().unwrap_or(""), e["role"].as_str().unwrap_or("")))
        .collect();
    for e in ["credentials:SENDER", "credentials:RECEIVER", "locations:SENDER", "tokens:RECEIVER"] {
        assert!(ids.contains(&e.to_owned()), "{e} in {ids:?}");
    }
    assert_eq!(hub.ocpi_get("/ocpi/2.2.1/locations", &token_a).await.http, 401);

    // Registration: the eMSP's token B, our token C.
    let emsp = Emsp::start(emsp_config()).await.expect("emsp");
    let cpo = emsp.register(&hub.versions_url(), &token_a).await.expect("registered");
    assert_eq!((cpo.country_code.as_str(), cpo.party_id.as_str()), ("DE", "SPL"));
    let token_c = cpo.token.clone();
    assert_ne!(token_c, token_a);
    assert_eq!(hub.partner_state("emsp").await, "registered");
    assert_eq!(hub.ocpi_get("/ocpi/versions", &token_a).await.http, 401, "token A is used up");
    let r = hub.ocpi_get("/ocpi/2.2.1/locations", &token_c).await;
    assert_eq!((r.http, r.code()), (200, Some(1000)), "{:?}", r.body);
    assert_eq!(r.header("ocpi-to-party-id"), Some("EMS"));
    assert_eq!(r.header("ocpi-from-party-id"), Some("SPL"));
    let r = hub.ocpi_get("/ocpi/2.2.1/credentials", &token_c).await;
    assert_eq!(r.body["data"]["token"], token_c.as_str());
    assert_eq!(r.body["data"]["roles"][0]["role"], "CPO");

    // A second POST: 405.
    let again = json!({"token": "x-token-123", "url": emsp.versions_url(), "roles": [{"role": "EMSP",
        "business_details": {"name": "x"}, "party_id": "EMS", "country_code": "NL"}]});
    let r = hub.send(reqwest::Method::POST, "/ocpi/2.2.1/credentials", Some(&b64(&token_c)), Some(&again)).await;
    assert_eq!((r.http, r.code()), (405, Some(2000)), "{:?}", r.body);

    // Rotation: both tokens work in the grace window; after the next rotation the
    // oldest one does not (only one previous token is kept).
    let token_c2 = emsp.rotate().await.expect("rotated");
    assert_ne!(token_c2, token_c);
    assert_eq!(hub.ocpi_get("/ocpi/2.2.1/locations", &token_c).await.http, 200, "old token in the grace window");
    assert_eq!(hub.ocpi_get("/ocpi/2.2.1/locations", &token_c2).await.http, 200);
    // PUT with the previous token: refused (a rotation raced it).
    let r = hub.send(reqwest::Method::PUT, "/ocpi/2.2.1/credentials", Some(&b64(&token_c)), Some(&again)).await;
    assert_eq!(r.http, 409, "{:?}", r.body);
    let token_c3 = emsp.rotate().await.expect("rotated again");
    assert_eq!(hub.ocpi_get("/ocpi/2.2.1/locations", &token_c).await.http, 401, "two rotations back");
    assert_eq!(hub.ocpi_get("/ocpi/2.2.1/locations", &token_c2).await.http, 200);
    assert_eq!(hub.ocpi_get("/ocpi/2.2.1/locations", &token_c3).await.http, 200);

    // Unregistering: every token stops.
    emsp.unregister().await.expect("unregistered");
    assert_eq!(hub.partner_state("emsp").await, "unregistered");
    for t in [&token_c2, &token_c3] {
        assert_eq!(hub.ocpi_get("/ocpi/versions", t).await.http, 401);
    }
    hub.running.shutdown().await;
}
on_both_databases!(a_partner_registers_with_us, partner_registers_sqlite, partner_registers_postgres);

/// A grace window of 0: the previous token stops at once.
async fn without_grace_the_old_token_stops_at_once(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let hub = start(&db, "rotation_grace_s = 0").await;
    let emsp = Emsp::start(emsp_config()).await.expect("emsp");
    let cpo = emsp.register(&hub.versions_url(), &hub.token_a("emsp", false).await).await.expect("registered");
    let new = emsp.rotate().await.expect("rotated");
    assert_eq!(hub.ocpi_get("/ocpi/2.2.1/locations", &cpo.token).await.http, 401);
    assert_eq!(hub.ocpi_get("/ocpi/2.2.1/locations", &new).await.http, 200);
    hub.running.shutdown().await;
}
on_both_databases!(without_grace_the_old_token_stops_at_once, no_grace_sqlite, no_grace_postgres);

/// We register with the eMSP given its versions URL and token A; rotate; unregister.
async fn we_register_with_a_partner(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let hub = start(&db, "rotation_grace_s = 3600").await;
    let emsp = Emsp::start(emsp_config()).await.expect("emsp");
    let token_a = emsp.issue_token_a();
    let r = hub
        .admin(
            reqwest::Method::POST,
            "/partners/register",
            Some(&json!({"name": "emsp", "versions_url": emsp.versions_url(), "token_a": token_a})),
        )
        .await;
    assert_eq!(r.http, 200, "{:?}", r.body);
    assert_eq!(r.body["state"], "registered");
    assert_eq!((r.body["country_code"].as_str(), r.body["party_id"].as_str()), (Some("NL"), Some("EMS")));
    let cpo = emsp.cpo().expect("the eMSP knows us");
    // The eMSP calls us with our token B; its token A no longer opens it.
    assert_eq!(hub.ocpi_get("/ocpi/2.2.1/locations", &cpo.token).await.http, 200);
    let a = emsp.request(reqwest::Method::GET, &emsp.versions_url(), None, Some(&token_a)).await.expect("answer");
    assert_eq!(a.http, 401);

    // Our rotation: the eMSP holds a new token; the old one works in the grace window.
    let r = hub.admin(reqwest::Method::POST, "/partners/emsp/rotate", None).await;
    assert_eq!(r.http, 200, "{:?}", r.body);
    let rotated = emsp.cpo().expect("still registered");
    assert_ne!(rotated.token, cpo.token);
    assert_eq!(hub.ocpi_get("/ocpi/2.2.1/locations", &rotated.token).await.http, 200);
    assert_eq!(hub.ocpi_get("/ocpi/2.2.1/locations", &cpo.token).await.http, 200);

    // Registering again with a token A the eMSP does not know: the eMSP refuses (502
    // with its status), and the registration in place is untouched.
    let r = hub
        .admin(
            reqwest::Method::POST,
            "/partners/register",
            Some(&json!({"name": "emsp", "versions_url": emsp.versions_url(), "token_a": "whatever-token"})),
        )
        .await;
    assert_eq!(r.http, 502, "{:?}", r.body);
    assert_eq!(hub.partner_state("emsp").await, "registered");
    assert_eq!(hub.ocpi_get("/ocpi/2.2.1/locations", &rotated.token).await.http, 200);

    // Unregistering tells the eMSP and stops every token here.
    let r = hub.admin(reqwest::Method::DELETE, "/partners/emsp", None).await;
    assert_eq!(r.http, 204, "{:?}", r.body);
    assert!(emsp.cpo().is_none(), "the eMSP was told");
    assert_eq!(hub.ocpi_get("/ocpi/2.2.1/locations", &rotated.token).await.http, 401);
    assert_eq!(hub.partner_state("emsp").await, "unregistered");
    let r = hub.admin(reqwest::Method::DELETE, "/partners/emsp", None).await;
    assert_eq!(r.http, 404, "{:?}", r.body);
    hub.running.shutdown().await;
}
on_both_databases!(we_register_with_a_partner, we_register_sqlite, we_register_postgres);

/// 3001 / 3002 / 3003 in our client, both when we register and when a partner that
/// misbehaves registers with us.
async fn partner_failures_have_their_status_codes(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let hub = start(&db, "").await;
    // Unreachable: a port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let cases = [
        (format!("http://{closed}/ocpi/versions"), None, "3001"),
        (String::new(), Some(VersionsMode::Garbage), "3001"),
        (String::new(), Some(VersionsMode::OnlyOldVersion), "3002"),
        (String::new(), Some(VersionsMode::NoCredentialsEndpoint), "3003"),
    ];
    for (i, (url, mode, code)) in cases.into_iter().enumerate() {
        let sim = match mode {
            Some(versions_mode) => {
                Some(Emsp::start(EmspConfig { versions_mode, ..emsp_config() }).await.expect("emsp"))
            }
            None => None,
        };
        let (url, token) = match &sim {
            Some(s) => (s.versions_url(), s.issue_token_a()),
            None => (url, "token-a-for-nobody".to_owned()),
        };
        let r = hub
            .admin(
                reqwest::Method::POST,
                "/partners/register",
                Some(&json!({"name": format!("bad-{i}"), "versions_url": url, "token_a": token})),
            )
            .await;
        assert_eq!(r.http, 502, "{:?}", r.body);
        let detail = r.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(&format!("OCPI status {code}")), "{code}: {detail}");
        assert_ne!(hub.partner_state(&format!("bad-{i}")).await, "registered");
    }

    // A partner whose own API is garbage registers with us: we answer 3001 and it stays
    // pending (its token A still works for a retry).
    let garbage =
        Emsp::start(EmspConfig { versions_mode: VersionsMode::OnlyOldVersion, ..emsp_config() }).await.expect("emsp");
    let token_a = hub.token_a("old", false).await;
    match garbage.register(&hub.versions_url(), &token_a).await {
        Err(EmspError::Refused { code: Some(3002), .. }) => {}
        other => panic!("expected OCPI 3002, got {other:?}"),
    }
    assert_eq!(hub.partner_state("old").await, "pending");
    assert_eq!(hub.ocpi_get("/ocpi/versions", &token_a).await.http, 200);
    hub.running.shutdown().await;
}
on_both_databases!(partner_failures_have_their_status_codes, partner_failures_sqlite, partner_failures_postgres);

/// A raw (not base64) token works only for a partner flagged so.
async fn raw_tokens_only_for_flagged_partners(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let hub = start(&db, "").await;
    let raw = Emsp::start(EmspConfig { raw_tokens: true, ..emsp_config() }).await.expect("emsp");
    let strict = hub.token_a("strict", false).await;
    match raw.register(&hub.versions_url(), &strict).await {
        Err(EmspError::Refused { http: 401, .. }) => {}
        other => panic!("a raw token must be refused for an unflagged partner: {other:?}"),
    }
    let lenient = hub.token_a("lenient", true).await;
    let cpo = raw.register(&hub.versions_url(), &lenient).await.expect("registered raw");
    let r = hub.send(reqwest::Method::GET, "/ocpi/2.2.1/locations", Some(&format!("Token {}", cpo.token)), None).await;
    assert_eq!(r.http, 200, "{:?}", r.body);
    // Base64 still works for it too.
    assert_eq!(hub.ocpi_get("/ocpi/2.2.1/locations", &cpo.token).await.http, 200);
    hub.running.shutdown().await;
}
on_both_databases!(raw_tokens_only_for_flagged_partners, raw_tokens_sqlite, raw_tokens_postgres);

// ---- locations ----------------------------------------------------------------------

fn evse_count(locations: &[Value]) -> usize {
    locations.iter().map(|l| l["evses"].as_array().map_or(0, Vec::len)).sum()
}

/// 1000 sites of 10 EVSEs: crawled page by page with limit 100 and with a limit above
/// the server's cap; date_from / date_to; last_updated stable and bumped.
async fn crawling_ten_thousand_evses(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let hub = start(&db, "max_page_limit = 250\nrefresh_interval_ms = 60000").await;
    let store = &hub.running.store;
    for i in 0..1000 {
        let site = format!("s{i:04}");
        add_bare_site(store, &site).await;
        let events = (1..=10).map(|e| connector_status(e, "CP-1", e as u32, ConnectorStatus::Available)).collect();
        cloud_hub::ingest::apply_batch(store, &batch(&site, events), Utc::now()).await.expect("applied");
        store
            .exec(
                "INSERT INTO ocpi_locations (site_id, location_id, address, city, country, latitude, longitude, \
                 time_zone, connector_standard, connector_format, power_type, max_voltage, max_amperage, updated_at) \
                 VALUES ($1, $1, 'Main St 1', 'Berlin', 'DEU', '52.520000', '13.405000', 'Europe/Berlin', \
                 'IEC_62196_T2', 'SOCKET', 'AC_3_PHASE', 230, 32, $2)",
                &[site.as_str().into(), Utc::now().into()],
            )
            .await
            .expect("location");
    }
    let emsp = Emsp::start(emsp_config()).await.expect("emsp");
    emsp.register(&hub.versions_url(), &hub.token_a("emsp", false).await).await.expect("registered");
    // The first build of 1000 Locations, here rather than inside the eMSP's first GET
    // (whose client would give up after 10 s on a slow machine).
    let ocpi = &hub.running.ocpi.as_ref().expect("OCPI runs").state;
    cloud_hub::ocpi::locations::refresh(ocpi).await.expect("refresh");

    let crawl = emsp.crawl_locations(Some(100), None).await.expect("crawl");
    assert_eq!(crawl.pages.len(), 10);
    for (i, p) in crawl.pages.iter().enumerate() {
        assert_eq!((p.count, p.total, p.limit), (100, Some(1000), Some(100)), "page {i}: {p:?}");
        assert_eq!(p.next.is_some(), i < 9, "Link on every page but the last: {p:?}");
    }
    assert_eq!(crawl.locations.len(), 1000);
    assert_eq!(evse_count(&crawl.locations), 10_000);
    let mut uids: Vec<&str> = crawl
        .locations
        .iter()
        .flat_map(|l| l["evses"].as_array().into_iter().flatten())
        .filter_map(|e| e["uid"].as_str())
        .collect();
    uids.sort_unstable();
    uids.dedup();
    assert_eq!(uids.len(), 10_000, "every EVSE uid is unique");

    // A limit above the cap: X-Limit says 250.
    let capped = emsp.crawl_locations(Some(5000), None).await.expect("crawl");
    assert_eq!(capped.pages.len(), 4);
    assert!(capped.pages.iter().all(|p| p.limit == Some(250) && p.total == Some(1000)), "{:?}", capped.pages);
    // Nothing changed: nothing moved.
    assert_eq!(capped.locations, crawl.locations, "last_updated is stable when nothing changed");

    // One status change: only that EVSE and its Location move.
    let newest = crawl.locations.iter().filter_map(|l| l["last_updated"].as_str()).max().expect("some").to_owned();
    hub.status("s0042", 11, 3, ConnectorStatus::Charging).await;
    let newer = shared_model::ocpi::parse_timestamp(&newest).expect("time") + chrono::Duration::milliseconds(1);
    let since = emsp.crawl_locations(Some(100), Some(&shared_model::ocpi::timestamp(newer))).await.expect("crawl");
    assert_eq!(since.locations.len(), 1, "date_from returns only what changed");
    let changed = &since.locations[0];
    assert_eq!(changed["id"], "s0042");
    let before = crawl.locations.iter().find(|l| l["id"] == "s0042").expect("was there");
    for (old, new) in before["evses"].as_array().expect("evses").iter().zip(changed["evses"].as_array().expect("evses"))
    {
        if new["uid"] == "s0042*CP-1*3" {
            assert_eq!(new["status"], "CHARGING");
            assert_ne!(new["last_updated"], old["last_updated"]);
            assert_eq!(
                new["connectors"][0]["last_updated"], old["connectors"][0]["last_updated"],
                "connector unchanged"
            );
        } else {
            assert_eq!(new, old, "untouched EVSEs keep their last_updated");
        }
    }
    assert_ne!(changed["last_updated"], before["last_updated"]);

    // date_to: before everything, nothing.
    let oldest = crawl.locations.iter().filter_map(|l| l["last_updated"].as_str()).min().expect("some").to_owned();
    let token = emsp.cpo().expect("registered").token;
    let r = hub.ocpi_get(&format!("/ocpi/2.2.1/locations?date_to={oldest}"), &token).await;
    assert_eq!((r.http, r.header("x-total-count")), (200, Some("0")), "{:?}", r.body);
    let r = hub.ocpi_get(&format!("/ocpi/2.2.1/locations?date_from={}&limit=5", timestamp_of(newer)), &token).await;
    assert_eq!(r.header("x-total-count"), Some("1"));
    hub.running.shutdown().await;
}
on_both_databases!(crawling_ten_thousand_evses, crawl_10000_sqlite, crawl_10000_postgres);

/// Two replicas on one database: what the second commits (a new Location, a status
/// through its ingest, a Location withdrawn through its admin API) is in the first's very
/// next GET — pages and `X-Total-Count`, with and without a `date_from` window — though
/// the first keeps its counts between GETs while the database's change counter stands.
async fn another_replicas_changes_are_in_the_next_get(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    // The refresh loops run once at the start; after that only GETs refresh.
    let serving = start(&db, "refresh_interval_ms = 60000").await;
    let other = start(&db, "refresh_interval_ms = 60000").await;
    let emsp = Emsp::start(emsp_config()).await.expect("emsp");
    emsp.register(&serving.versions_url(), &serving.token_a("emsp", false).await).await.expect("registered");
    let token = emsp.cpo().expect("registered").token;
    let get = |query: String| {
        let (serving, token) = (&serving, &token);
        async move {
            let r = serving.ocpi_get(&format!("/ocpi/2.2.1/locations{query}"), token).await;
            assert_eq!((r.http, r.code()), (200, Some(1000)), "{:?}", r.body);
            let total = r.header("x-total-count").and_then(|v| v.parse::<u64>().ok());
            let items = r.body["data"].as_array().cloned().unwrap_or_default();
            (total, items)
        }
    };
    let ids =
        |items: &[Value]| items.iter().map(|l| l["id"].as_str().unwrap_or_default().to_owned()).collect::<Vec<_>>();

    other.site("s1", 2).await;
    let (total, items) = get(String::new()).await;
    assert_eq!((total, ids(&items)), (Some(1), vec!["s1".to_owned()]));
    // Again, nothing changed: the same (the count kept from the GET before).
    assert_eq!(get(String::new()).await.0, Some(1));

    other.site("s2", 3).await;
    let (total, items) = get("?limit=1&offset=1".to_owned()).await;
    assert_eq!((total, ids(&items)), (Some(2), vec!["s2".to_owned()]), "the other replica's new Location");
    let (total, items) = get(String::new()).await;
    assert_eq!((total, evse_count(&items)), (Some(2), 5));

    // A window after everything so far: empty, and counted so; then a status change
    // through the other replica's ingest falls into it.
    let newest = items.iter().filter_map(|l| l["last_updated"].as_str()).max().expect("some").to_owned();
    let after = shared_model::ocpi::parse_timestamp(&newest).expect("time") + chrono::Duration::milliseconds(1);
    let window = format!("?date_from={}", timestamp_of(after));
    assert_eq!(get(window.clone()).await, (Some(0), Vec::new()));
    assert_eq!(get(window.clone()).await.0, Some(0));
    // Past the window's start on a coarse clock too.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    other.status("s2", 4, 1, ConnectorStatus::Charging).await;
    let (total, items) = get(window.clone()).await;
    assert_eq!((total, ids(&items)), (Some(1), vec!["s2".to_owned()]), "the status change is in the window");
    assert_eq!(items[0]["evses"][0]["status"], "CHARGING");
    assert_eq!(get(String::new()).await.0, Some(2), "the whole set did not grow");

    // Withdrawn through the other replica's admin API: gone from the count and the page.
    let r = other
        .admin(
            reqwest::Method::PUT,
            "/sites/s1/location",
            Some(&json!({"address": "Main St 1", "city": "Berlin", "country": "DEU", "latitude": 52.52,
                          "longitude": 13.405, "time_zone": "Europe/Berlin", "publish": false})),
        )
        .await;
    assert_eq!(r.http, 200, "{:?}", r.body);
    let (total, items) = get(String::new()).await;
    assert_eq!((total, ids(&items)), (Some(1), vec!["s2".to_owned()]), "s1 is no longer published");
    // And a Location removed straight in the database, by any writer: gone at once.
    let store = &other.running.store;
    store.exec("DELETE FROM ocpi_locations WHERE site_id = $1", &["s2".into()]).await.expect("delete");
    assert_eq!(get(String::new()).await, (Some(0), Vec::new()));
    serving.running.shutdown().await;
    other.running.shutdown().await;
}
on_both_databases!(another_replicas_changes_are_in_the_next_get, replicas_sqlite, replicas_postgres);

fn timestamp_of(t: chrono::DateTime<Utc>) -> String {
    shared_model::ocpi::timestamp(t)
}

/// A status change reaches the registered eMSP as a PATCH; a newly published site as a PUT.
async fn pushes_reach_the_emsp(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let hub = start(&db, "").await;
    let emsp = Emsp::start(emsp_config()).await.expect("emsp");
    emsp.register(&hub.versions_url(), &hub.token_a("emsp", false).await).await.expect("registered");
    hub.site("depot", 2).await;
    let put = emsp
        .wait_for_push(TIMEOUT, |p| p.method == "PUT" && p.path == "DE/SPL/depot")
        .await
        .expect("the new location is PUT");
    assert_eq!(put.body["evses"].as_array().map(Vec::len), Some(2));
    assert_eq!(put.body["evses"][0]["status"], "AVAILABLE");

    hub.status("depot", 3, 2, ConnectorStatus::Charging).await;
    let patch = emsp
        .wait_for_push(TIMEOUT, |p| p.method == "PATCH" && p.path == "DE/SPL/depot/depot*CP-1*2")
        .await
        .expect("the status change is PATCHed");
    assert_eq!(patch.body["status"], "CHARGING");
    assert!(patch.body["last_updated"].is_string());
    let copy = emsp.location("depot").expect("the eMSP's copy");
    assert_eq!(copy["evses"][1]["status"], "CHARGING");

    // The same status again: no new push.
    hub.status("depot", 4, 2, ConnectorStatus::Charging).await;
    hub.status("depot", 5, 1, ConnectorStatus::Faulted).await;
    emsp.wait_for_push(TIMEOUT, |p| p.method == "PATCH" && p.body["status"] == "OUTOFORDER").await.expect("faulted");
    let patches = emsp.pushes().iter().filter(|p| p.method == "PATCH").count();
    assert_eq!(patches, 2, "{:?}", emsp.pushes());
    hub.running.shutdown().await;
}
on_both_databases!(pushes_reach_the_emsp, pushes_sqlite, pushes_postgres);

/// 2001 and 2003, routing headers and request ids on the locations Sender.
async fn location_errors(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let hub = start(&db, "").await;
    hub.site("depot", 1).await;
    let emsp = Emsp::start(emsp_config()).await.expect("emsp");
    let token = emsp.register(&hub.versions_url(), &hub.token_a("emsp", false).await).await.expect("registered").token;
    for bad in ["offset=-1", "offset=x", "limit=0", "limit=many", "date_from=yesterday", "date_to=2026-13-01T00:00:00Z"]
    {
        let r = hub.ocpi_get(&format!("/ocpi/2.2.1/locations?{bad}"), &token).await;
        assert_eq!((r.http, r.code()), (400, Some(2001)), "{bad}: {:?}", r.body);
        assert!(r.body["status_message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    for path in
        ["/ocpi/2.2.1/locations/nope", "/ocpi/2.2.1/locations/depot/nope", "/ocpi/2.2.1/locations/depot/depot*CP-1*1/9"]
    {
        let r = hub.ocpi_get(path, &token).await;
        assert_eq!((r.http, r.code()), (404, Some(2003)), "{path}: {:?}", r.body);
    }
    let r = hub.ocpi_get("/ocpi/2.2.1/locations/depot/depot*CP-1*1/1", &token).await;
    assert_eq!((r.http, r.code()), (200, Some(1000)), "{:?}", r.body);
    assert_eq!(r.body["data"]["standard"], "IEC_62196_T2");
    let r = hub.ocpi_get("/ocpi/2.2.1/locations/depot", &token).await;
    assert_eq!(r.body["data"]["coordinates"]["latitude"], "52.520000");
    assert_eq!(r.body["data"]["country"], "DEU");

    // Request ids are echoed; a request to another party is refused.
    let r = hub
        .http
        .get(format!("{}/ocpi/2.2.1/locations", hub.base))
        .header("authorization", b64(&token))
        .header("x-request-id", "req-1")
        .header("x-correlation-id", "corr-1")
        .send()
        .await
        .expect("request");
    assert_eq!(r.headers()["x-request-id"], "req-1");
    assert_eq!(r.headers()["x-correlation-id"], "corr-1");
    let r = hub
        .http
        .get(format!("{}/ocpi/2.2.1/locations", hub.base))
        .header("authorization", b64(&token))
        .header("ocpi-to-country-code", "FR")
        .header("ocpi-to-party-id", "XYZ")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 400);

    // The admin side: bad metadata, unknown site, no key.
    let r = hub
        .admin(
            reqwest::Method::PUT,
            "/sites/depot/location",
            Some(&json!({"address": "", "city": "B", "country": "DE",
            "latitude": 91.0, "longitude": 0.0, "time_zone": "Berlin"})),
        )
        .await;
    assert_eq!(r.http, 422, "{:?}", r.body);
    let detail = r.body["detail"].as_str().unwrap_or_default();
    for needle in ["address", "country", "latitude", "time_zone"] {
        assert!(detail.contains(needle), "{needle} in {detail}");
    }
    let ok_body =
        json!({"address": "a", "city": "b", "country": "DEU", "latitude": 1.0, "longitude": 2.0, "time_zone": "UTC"});
    assert_eq!(hub.admin(reqwest::Method::PUT, "/sites/ghost/location", Some(&ok_body)).await.http, 404);
    let r = hub.send(reqwest::Method::GET, "/api/v1/ocpi/partners", None, None).await;
    assert_eq!(r.http, 401);
    hub.running.shutdown().await;
}
on_both_databases!(location_errors, location_errors_sqlite, location_errors_postgres);

// ---- tokens ---------------------------------------------------------------------------

/// The tokens Receiver (2001, 2004) and real-time authorization (ALLOWED, BLOCKED, 2002, 2004).
async fn tokens_and_authorization(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let hub = start(&db, "").await;
    let emsp = Emsp::start(emsp_config()).await.expect("emsp");
    let token = emsp.register(&hub.versions_url(), &hub.token_a("emsp", false).await).await.expect("registered").token;
    let auth = b64(&token);
    let t = emsp.token("TAG-1");
    emsp.push_token(&t).await.expect("pushed");
    let r = hub.ocpi_get("/ocpi/2.2.1/tokens/NL/EMS/TAG-1", &token).await;
    assert_eq!((r.http, r.code()), (200, Some(1000)), "{:?}", r.body);
    assert_eq!(r.body["data"]["contract_id"], t.contract_id.as_str());

    let r = hub.ocpi_get("/ocpi/2.2.1/tokens/NL/EMS/NOPE", &token).await;
    assert_eq!((r.http, r.code()), (404, Some(2004)), "{:?}", r.body);
    let patch = json!({"valid": false, "last_updated": "2026-11-21T12:00:00Z"});
    let r = hub.send(reqwest::Method::PATCH, "/ocpi/2.2.1/tokens/NL/EMS/NOPE", Some(&auth), Some(&patch)).await;
    assert_eq!((r.http, r.code()), (404, Some(2004)));
    let r = hub.send(reqwest::Method::PATCH, "/ocpi/2.2.1/tokens/NL/EMS/TAG-1", Some(&auth), Some(&patch)).await;
    assert_eq!((r.http, r.code()), (200, Some(1000)), "{:?}", r.body);
    let r = hub.ocpi_get("/ocpi/2.2.1/tokens/NL/EMS/TAG-1", &token).await;
    assert_eq!(r.body["data"]["valid"], false);
    assert_eq!(r.body["data"]["issuer"], t.issuer.as_str(), "the PATCH kept the other fields");

    let body = serde_json::to_value(&t).expect("json");
    let bad = [
        ("/ocpi/2.2.1/tokens/NL/EMS/OTHER", body.clone()),
        ("/ocpi/2.2.1/tokens/FR/XYZ/TAG-1", body.clone()),
        ("/ocpi/2.2.1/tokens/NL/EMS/TAG-1?type=CARD", body.clone()),
        ("/ocpi/2.2.1/tokens/NL/EMS/TAG-1", json!({"uid": "TAG-1"})),
    ];
    for (path, b) in bad {
        let r = hub.send(reqwest::Method::PUT, path, Some(&auth), Some(&b)).await;
        assert_eq!((r.http, r.code()), (400, Some(2001)), "{path}: {:?}", r.body);
    }
    let r = hub
        .send(reqwest::Method::PATCH, "/ocpi/2.2.1/tokens/NL/EMS/TAG-1", Some(&auth), Some(&json!({"valid": true})))
        .await;
    assert_eq!((r.http, r.code()), (400, Some(2001)), "PATCH without last_updated");

    // Real-time authorization through our client.
    emsp.set_authorization("GOOD", AuthAnswer::Allowed);
    emsp.set_authorization("BAD", AuthAnswer::Blocked);
    emsp.set_authorization("WHERE", AuthAnswer::NeedsLocation);
    let ask = |uid: &str, location: Option<&str>| {
        let mut b = json!({"uid": uid});
        if let Some(l) = location {
            b["location_id"] = json!(l);
            b["evse_uids"] = json!([format!("{l}*CP-1*1")]);
        }
        b
    };
    let r = hub.admin(reqwest::Method::POST, "/partners/emsp/authorize", Some(&ask("GOOD", None))).await;
    assert_eq!((r.http, r.body["allowed"].as_str()), (200, Some("ALLOWED")), "{:?}", r.body);
    let r = hub.admin(reqwest::Method::POST, "/partners/emsp/authorize", Some(&ask("BAD", None))).await;
    assert_eq!(r.body["allowed"], "BLOCKED");
    let r = hub.admin(reqwest::Method::POST, "/partners/emsp/authorize", Some(&ask("WHO", None))).await;
    assert_eq!(r.http, 502);
    assert!(r.body["detail"].as_str().unwrap_or_default().contains("OCPI status 2004"), "{:?}", r.body);
    let r = hub.admin(reqwest::Method::POST, "/partners/emsp/authorize", Some(&ask("WHERE", None))).await;
    assert!(r.body["detail"].as_str().unwrap_or_default().contains("OCPI status 2002"), "{:?}", r.body);
    let r = hub.admin(reqwest::Method::POST, "/partners/emsp/authorize", Some(&ask("WHERE", Some("depot")))).await;
    assert_eq!(r.body["allowed"], "ALLOWED", "{:?}", r.body);
    assert_eq!(r.body["location"]["location_id"], "depot");
    let asked = emsp.authorizations();
    assert_eq!(
        asked.last().and_then(|(_, l)| l.clone()).map(|l| l["evse_uids"][0].clone()),
        Some(json!("depot*CP-1*1"))
    );
    let r = hub.admin(reqwest::Method::POST, "/partners/nobody/authorize", Some(&ask("GOOD", None))).await;
    assert_eq!(r.http, 404);
    hub.running.shutdown().await;
}
on_both_databases!(tokens_and_authorization, tokens_sqlite, tokens_postgres);

/// The push queue does not block ingest when the eMSP is gone, and unknown OCPI paths
/// answer in the envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_emsp_blocks_nothing() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else { return };
    let hub = start(&db, "").await;
    let emsp = Emsp::start(emsp_config()).await.expect("emsp");
    let token = emsp.register(&hub.versions_url(), &hub.token_a("emsp", false).await).await.expect("registered").token;
    emsp.stop();
    hub.site("depot", 1).await;
    for seq in 2..=6 {
        let status = if seq % 2 == 0 { ConnectorStatus::Charging } else { ConnectorStatus::Available };
        tokio::time::timeout(TIMEOUT, hub.status("depot", seq, 1, status)).await.expect("ingest is not held up");
    }
    let r = hub.ocpi_get("/ocpi/2.2.1/locations/depot", &token).await;
    assert_eq!(r.body["data"]["evses"][0]["status"], "CHARGING");
    let r = hub.ocpi_get("/ocpi/2.2.1/no-such-module", &token).await;
    assert_eq!((r.http, r.code()), (404, Some(2000)));
    hub.running.shutdown().await;
}

/// A token A from `[ocpi.token_a]` lets its partner register; a second start keeps the
/// registration (the bootstrap only creates missing partners).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_token_from_the_config_registers() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else { return };
    let token_a = "bootstrap-token-for-emsp-0123456789";
    let extra = format!("[ocpi.token_a]\nboot-emsp = \"{token_a}\"");
    let hub = start(&db, &extra).await;
    assert_eq!(hub.partner_state("boot-emsp").await, "pending");
    let emsp = Emsp::start(emsp_config()).await.expect("emsp");
    let cpo = emsp.register(&hub.versions_url(), token_a).await.expect("registered with the bootstrap token");
    hub.running.shutdown().await;

    let hub = start(&db, &extra).await;
    assert_eq!(hub.partner_state("boot-emsp").await, "registered");
    assert_eq!(hub.ocpi_get("/ocpi/versions", token_a).await.http, 401, "token A stays used up");
    assert_eq!(hub.ocpi_get("/ocpi/2.2.1/locations", &cpo.token).await.http, 200);
    hub.running.shutdown().await;
}
