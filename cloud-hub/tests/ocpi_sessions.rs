//! OCPI 2.2.1 sessions and CDRs (CPO role, Sender) and a site's real-time authorization,
//! end to end: a real hub with `[ocpi]` and billing on a real database (SQLite and
//! PostgreSQL), sessions applied by the real ingest, CDRs issued by the real billing
//! worker, the simulated eMSP (`simulators::emsp`) over real sockets, and a site played by
//! an MQTT client on the hub's embedded broker.
//!
//! Scenarios: a partner's session is PUT, PATCHed as it progresses and served partner by
//! partner; its CDR is POSTed with our price exactly as billing computed it (and the
//! eMSP's `Location` kept), a credit CDR after a refund; a CDR the eMSP could not take
//! survives a hub restart and arrives once it is back; a site asks the hub about id tags
//! over `up/auth` and gets the eMSP's real-time verdict; the error statuses of these parts.

mod common;

use base64::Engine as _;
use chrono::Utc;
use cloud_hub::app::Running;
use cloud_hub::auth::Role;
use cloud_hub::config::Config;
use cloud_hub::db::Ty;
use common::*;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::{Value, json};
use shared_model::events::SiteEvent;
use shared_model::model::{ConnectorRef, ConnectorStatus, StopReason, TransactionOrigin};
use shared_model::sync::{AuthAnswer, AuthRequest, AuthVerdict, PROTOCOL_VERSION, Topic};
use simulators::emsp::{AuthAnswer as EmspAnswer, Emsp, EmspConfig};
use std::time::Duration;

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

/// OCPI 2.2.1 tariffs chapter, "Tariff example 0.25 euro per kWh + start fee": EUR 0.50
/// per session at 20 % VAT and EUR 0.25 per kWh at 10 % VAT.
const START_FEE_TARIFF: &str = r#"{
  "country_code": "NL", "party_id": "XXX", "id": "12", "currency": "EUR",
  "elements": [{"price_components": [
    {"type": "FLAT", "price": 0.50, "vat": 20.0, "step_size": 1},
    {"type": "ENERGY", "price": 0.25, "vat": 10.0, "step_size": 1}
  ]}],
  "last_updated": "2018-12-17T11:36:01Z"
}"#;

struct Hub {
    running: Running,
    config: Config,
    admin: String,
    http: reqwest::Client,
    base: String,
}

fn config_text(db: &TestDb, extra: &str) -> String {
    format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"{}\"\n\
         max_connections = 4\n[ingest]\nworkers = 2\n[billing]\ninterval_s = 1\n[ocpi]\nenabled = true\n\
         country_code = \"DE\"\nparty_id = \"SPL\"\nrefresh_interval_ms = 100\npush_retry_min_ms = 50\n\
         push_retry_max_ms = 200\nrealtime_auth_timeout_ms = 500\n{extra}\n",
        db.url
    )
}

async fn start(db: &TestDb, extra: &str) -> Hub {
    init_logs();
    let path = db.dir.path().join("cloud-hub.toml");
    std::fs::write(&path, config_text(db, extra)).expect("write the config");
    let config = Config::load(&path).map_err(|e| e.to_string()).expect("valid config");
    let running = cloud_hub::app::start(config.clone()).await.map_err(|e| format!("{e:#}")).expect("hub starts");
    let admin =
        cloud_hub::auth::add_key(&running.store, &format!("admin-{}", uuid::Uuid::new_v4().simple()), Role::Admin)
            .await
            .expect("key")
            .token;
    let base = format!("http://{}", running.http_addr);
    Hub { running, config, admin, http: reqwest::Client::new(), base }
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
}

fn b64(token: &str) -> String {
    format!("Token {}", base64::engine::general_purpose::STANDARD.encode(token))
}

impl Hub {
    fn versions_url(&self) -> String {
        format!("{}/ocpi/versions", self.base)
    }

    async fn send(&self, method: reqwest::Method, path: &str, auth: &str, body: Option<&Value>) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).header("authorization", auth);
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.expect("HTTP request");
        let http = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        Reply { http, headers, body: serde_json::from_str(&text).unwrap_or(Value::String(text)) }
    }

    async fn ocpi(&self, method: reqwest::Method, path: &str, token: &str, body: Option<&Value>) -> Reply {
        self.send(method, path, &b64(token), body).await
    }

    async fn api(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Reply {
        self.send(method, &format!("/api/v1{path}"), &format!("Bearer {}", self.admin), body).await
    }

    async fn token_a(&self, name: &str) -> String {
        let r = self.api(reqwest::Method::POST, "/ocpi/partners", Some(&json!({"name": name}))).await;
        assert_eq!(r.http, 201, "{:?}", r.body);
        r.body["token_a"].as_str().expect("token").to_owned()
    }

    /// A registered eMSP of party `party`.
    async fn emsp(&self, name: &str, party: &str) -> Emsp {
        let emsp = Emsp::start(EmspConfig { party_id: party.to_owned(), ..EmspConfig::default() }).await.expect("emsp");
        emsp.register(&self.versions_url(), &self.token_a(name).await).await.expect("registered");
        emsp
    }

    /// The site `depot` (CP-1, one EVSE) published as a Location, with the start-fee
    /// tariff from the start of the test day. The site row comes from provisioning (it
    /// has an MQTT password) when `with_login`.
    async fn depot(&self, with_login: bool) -> Option<String> {
        let password = if with_login {
            let creds =
                cloud_hub::sites::add_site(&self.running.store, "depot", Some("depot"), &self.config.mqtt.username)
                    .await
                    .expect("site");
            Some(creds.mqtt_password)
        } else {
            self.running
                .store
                .exec(
                    "INSERT INTO sites (id, name, mqtt_password_hash, created_at) VALUES ('depot', 'depot', 'none', $1)",
                    &[Utc::now().into()],
                )
                .await
                .expect("site");
            None
        };
        let b = batch("depot", vec![connector_status(1, "CP-1", 1, ConnectorStatus::Available)]);
        cloud_hub::ingest::apply_batch(&self.running.store, &b, Utc::now()).await.expect("applied");
        let r = self
            .api(
                reqwest::Method::PUT,
                "/ocpi/sites/depot/location",
                Some(&json!({"address": "Main St 1", "city": "Berlin", "country": "DEU", "latitude": 52.52,
                              "longitude": 13.405, "time_zone": "Europe/Berlin"})),
            )
            .await;
        assert_eq!(r.http, 200, "{:?}", r.body);
        let tariff: Value = serde_json::from_str(START_FEE_TARIFF).expect("tariff");
        let r = self.api(reqwest::Method::PUT, "/tariffs/12", Some(&tariff)).await;
        assert_eq!(r.http, 201, "{:?}", r.body);
        let r = self
            .api(
                reqwest::Method::POST,
                "/sites/depot/tariffs",
                Some(&json!({"tariff_id": "12", "time_zone": "Europe/Berlin", "valid_from": "2026-11-21T00:00:00Z"})),
            )
            .await;
        assert_eq!(r.http, 201, "{:?}", r.body);
        password
    }

    /// Applies events of `depot` through the real ingest.
    async fn ingest(&self, events: Vec<shared_model::sync::EventEnvelope>) {
        let applied = cloud_hub::ingest::apply_batch(&self.running.store, &batch("depot", events), Utc::now())
            .await
            .expect("applied");
        assert!(matches!(applied.outcome, cloud_hub::ingest::Outcome::Applied { .. }), "{applied:?}");
    }

    async fn count(&self, sql: &'static str) -> i64 {
        self.running.store.fetch_opt(sql, &[], &[Ty::Int]).await.expect("query").and_then(|r| r.int(0)).unwrap_or(-1)
    }
}

fn started(seq: u64, uid: &str, tag: &str, meter_start: i64) -> shared_model::sync::EventEnvelope {
    started_at(seq, uid, tag, meter_start, t(1, 0))
}

fn started_at(
    seq: u64,
    uid: &str,
    tag: &str,
    meter_start: i64,
    at: chrono::DateTime<Utc>,
) -> shared_model::sync::EventEnvelope {
    envelope(
        seq,
        &SiteEvent::TransactionStarted {
            station: "CP-1".into(),
            transaction_uid: uid.into(),
            station_transaction_id: "17".into(),
            connector: ConnectorRef { evse: 1, connector: 1 },
            id_tag: Some(tag.into()),
            meter_start_wh: Some(meter_start),
            started_at: Some(at),
            origin: TransactionOrigin::Online,
        },
    )
}

fn stopped(seq: u64, uid: &str, tag: &str, meter_stop: i64) -> shared_model::sync::EventEnvelope {
    envelope(
        seq,
        &SiteEvent::TransactionStopped {
            station: "CP-1".into(),
            transaction_uid: uid.into(),
            meter_stop_wh: Some(meter_stop),
            stopped_at: t(30, 0),
            reason: Some(StopReason::EVDisconnected),
            id_tag: Some(tag.into()),
            reconciled: false,
        },
    )
}

fn energy(seq: u64, uid: &str, minute: u32, wh: i64) -> shared_model::sync::EventEnvelope {
    meter_values(
        seq,
        "CP-1",
        Some(uid),
        vec![sample(minute, &wh.to_string(), Some("Wh"), "Energy.Active.Import.Register")],
    )
}

/// The decimal text of a JSON number as the eMSP received it (`"total_cost":{"excl_vat":1.25,...}`).
fn number_after(raw: &str, key: &str) -> Option<String> {
    let at = raw.find(&format!("\"{key}\":"))? + key.len() + 3;
    Some(raw[at..].chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '-').collect())
}

// ---- sessions and CDRs ----------------------------------------------------------------

/// A partner's session: PUT when it starts, PATCHed with its energy and its stop, served
/// to that partner only; its CDR POSTed with billing's exact price and the eMSP's
/// Location kept; a refund's credit CDR POSTed after it.
async fn sessions_and_cdrs_reach_their_partner(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let hub = start(&db, "").await;
    hub.depot(false).await;
    let emsp = hub.emsp("emsp", "EMS").await;
    let other = hub.emsp("other", "OTH").await;
    emsp.push_token(&emsp.token("ROAM-1")).await.expect("token pushed");
    let token = emsp.cpo().expect("registered").token;
    let other_token = other.cpo().expect("registered").token;

    hub.ingest(vec![started(2, "tx-roam-1", "ROAM-1", 1000), energy(3, "tx-roam-1", 10, 2000)]).await;
    let put = emsp
        .wait_for_push(TIMEOUT, |p| p.module == "sessions" && p.method == "PUT")
        .await
        .expect("the new session is PUT");
    assert_eq!(put.path, "DE/SPL/tx-roam-1");
    assert_eq!(put.body["status"], "ACTIVE");
    assert_eq!(put.body["location_id"], "depot");
    assert_eq!(put.body["evse_uid"], "depot*CP-1*1");
    assert_eq!(put.body["connector_id"], "1");
    assert_eq!(put.body["cdr_token"]["uid"], "ROAM-1");
    assert_eq!(put.body["cdr_token"]["contract_id"], "NL-EMS-ROAM-1");
    assert_eq!(put.body["auth_method"], "WHITELIST", "a pushed ALLOWED token, no real-time call");
    assert_eq!(put.body["currency"], "EUR");
    // 1 kWh so far: 0.50 + 0.25 excl. VAT, priced by the tariff engine.
    assert_eq!(number_after(&put.raw, "kwh").as_deref(), Some("1"), "{}", put.raw);
    assert_eq!(number_after(&put.raw, "excl_vat").as_deref(), Some("0.75"), "{}", put.raw);
    assert!(put.body["charging_periods"].as_array().is_some_and(|p| !p.is_empty()), "{}", put.body);

    // More energy: a PATCH of kwh (and cost), not a PUT.
    hub.ingest(vec![energy(4, "tx-roam-1", 20, 3000)]).await;
    let patch = emsp
        .wait_for_push(TIMEOUT, |p| p.module == "sessions" && p.method == "PATCH" && p.body.get("kwh").is_some())
        .await
        .expect("the energy is PATCHed");
    assert_eq!(number_after(&patch.raw, "kwh").as_deref(), Some("2"), "{}", patch.raw);
    assert!(patch.body.get("cdr_token").is_none() && patch.body["last_updated"].is_string(), "{}", patch.body);

    // The stop: COMPLETED, then the CDR.
    hub.ingest(vec![stopped(5, "tx-roam-1", "ROAM-1", 4000)]).await;
    emsp.wait_for_push(TIMEOUT, |p| p.module == "sessions" && p.body["status"] == "COMPLETED")
        .await
        .expect("the stop is PATCHed");
    let posted = emsp.wait_for_push(TIMEOUT, |p| p.module == "cdrs").await.expect("the CDR is POSTed");
    assert_eq!(posted.method, "POST");
    let cdr = &posted.body;
    let cdr_id = cdr["id"].as_str().expect("id").to_owned();
    // Billing's own record of it, to compare with.
    let billed = hub.api(reqwest::Method::GET, &format!("/cdrs/{cdr_id}"), None).await;
    assert_eq!(billed.http, 200, "{:?}", billed.body);
    let money = |v: &Value| v.to_string().trim_matches('"').parse::<rust_decimal::Decimal>().expect("a decimal");
    assert_eq!(money(&billed.body["total_cost_excl_vat"]), money(&json!("1.25")), "{:?}", billed.body);
    assert_eq!(money(&billed.body["total_cost_incl_vat"]), money(&json!("1.425")), "{:?}", billed.body);
    // 3 kWh: 0.50 + 0.75 = 1.25 excl. VAT, 0.60 + 0.825 = 1.425 incl. VAT, exactly.
    let raw = &posted.raw;
    assert!(raw.contains(r#""total_cost":{"excl_vat":1.25,"incl_vat":1.425}"#), "{raw}");
    assert!(raw.contains(r#""total_fixed_cost":{"excl_vat":0.5,"incl_vat":0.6}"#), "{raw}");
    assert!(raw.contains(r#""total_energy_cost":{"excl_vat":0.75,"incl_vat":0.825}"#), "{raw}");
    assert!(raw.contains(r#""total_energy":3,"#), "{raw}");
    assert_eq!((cdr["country_code"].as_str(), cdr["party_id"].as_str()), (Some("DE"), Some("SPL")));
    assert_eq!(cdr["session_id"], "tx-roam-1");
    assert_eq!(cdr["cdr_token"]["uid"], "ROAM-1");
    assert_eq!(cdr["cdr_location"]["id"], "depot");
    assert_eq!(cdr["cdr_location"]["evse_uid"], "depot*CP-1*1");
    assert_eq!(cdr["cdr_location"]["evse_id"], "DE*SPL*EDEPOT*CP1*1");
    assert_eq!(cdr["cdr_location"]["connector_standard"], "IEC_62196_T2");
    assert_eq!(cdr["tariffs"][0]["id"], "12");
    assert_eq!(cdr["tariffs"][0]["party_id"], "SPL", "the tariff as ours");
    assert!(cdr.get("credit").is_none());
    let periods = cdr["charging_periods"].as_array().expect("periods");
    assert!(!periods.is_empty());
    // The eMSP's Location header is kept.
    let kept = async {
        loop {
            let row = hub
                .running
                .store
                .fetch_opt(
                    "SELECT partner_location FROM ocpi_cdrs WHERE cdr_id = $1",
                    &[cdr_id.as_str().into()],
                    &[Ty::Text],
                )
                .await
                .expect("query");
            if let Some(url) = row.and_then(|r| r.text(0).map(str::to_owned)) {
                return url;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let location = tokio::time::timeout(TIMEOUT, kept).await.expect("the Location is kept");
    assert_eq!(location, format!("http://{}/ocpi/2.2.1/cdrs/{cdr_id}", emsp.addr));
    // The session's cost is the CDR's now.
    let done = emsp.session("tx-roam-1").expect("the eMSP's copy");
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(done["total_cost"]["excl_vat"], json!(1.25));

    // GET sessions: date_from is required; each partner sees its own.
    let r = hub.ocpi(reqwest::Method::GET, "/ocpi/2.2.1/sessions", &token, None).await;
    assert_eq!((r.http, r.code()), (400, Some(2001)), "{:?}", r.body);
    let r = hub.ocpi(reqwest::Method::GET, "/ocpi/2.2.1/sessions?date_from=2026-01-01T00:00:00Z", &token, None).await;
    assert_eq!((r.http, r.code()), (200, Some(1000)), "{:?}", r.body);
    assert_eq!(r.headers.get("x-total-count").and_then(|v| v.to_str().ok()), Some("1"));
    assert_eq!(r.body["data"][0]["id"], "tx-roam-1");
    assert_eq!(r.body["data"][0]["status"], "COMPLETED");
    let last_updated = r.body["data"][0]["last_updated"].as_str().expect("last_updated").to_owned();
    let r =
        hub.ocpi(reqwest::Method::GET, "/ocpi/2.2.1/sessions?date_from=2026-01-01T00:00:00Z", &other_token, None).await;
    assert_eq!(r.body["data"], json!([]), "another partner's session is not served");
    // date_from after the last change: nothing; the crawl is incremental.
    let after = shared_model::ocpi::parse_timestamp(&last_updated).expect("time") + chrono::Duration::milliseconds(1);
    let path = format!("/ocpi/2.2.1/sessions?date_from={}", shared_model::ocpi::timestamp(after));
    let r = hub.ocpi(reqwest::Method::GET, &path, &token, None).await;
    assert_eq!(r.headers.get("x-total-count").and_then(|v| v.to_str().ok()), Some("0"));

    // GET cdrs: the same CDR, exact; none for the other partner.
    let crawl = emsp.crawl("cdrs", Some(10), None).await.expect("crawl");
    assert_eq!(crawl.locations.len(), 1);
    assert_eq!(crawl.locations[0]["id"], cdr_id.as_str());
    assert_eq!(crawl.locations[0]["total_cost"], cdr["total_cost"]);
    assert!(other.crawl("cdrs", None, None).await.expect("crawl").locations.is_empty());

    // A refund: the credit CDR goes out, cancelling the debit.
    let r =
        hub.api(reqwest::Method::POST, &format!("/cdrs/{cdr_id}/credit"), Some(&json!({"reason": "goodwill"}))).await;
    assert_eq!(r.http, 201, "{:?}", r.body);
    let credit = emsp
        .wait_for_push(TIMEOUT, |p| p.module == "cdrs" && p.body["credit"] == true)
        .await
        .expect("the credit CDR is POSTed");
    assert_eq!(credit.body["credit_reference_id"], cdr_id.as_str());
    assert!(credit.body["remark"].as_str().is_some_and(|r| r.starts_with("goodwill")), "{}", credit.body);
    assert!(credit.raw.contains(r#""total_cost":{"excl_vat":-1.25,"incl_vat":-1.425}"#), "{}", credit.raw);
    // Each CDR was POSTed once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let posts = emsp.pushes().into_iter().filter(|p| p.module == "cdrs").count();
    assert_eq!(posts, 2, "{:?}", emsp.pushes());
    assert_eq!(hub.count("SELECT COUNT(*) FROM ocpi_outbox").await, 0, "the outbox is empty");
    hub.running.shutdown().await;
}
on_both_databases!(sessions_and_cdrs_reach_their_partner, sessions_and_cdrs_sqlite, sessions_and_cdrs_postgres);

/// charging_preferences: NOT_POSSIBLE for the caller's session, 2003 for a session that
/// is unknown or another partner's, 2001 for a bad body; no partner token, 401.
async fn charging_preferences_and_errors(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let hub = start(&db, "").await;
    hub.depot(false).await;
    let emsp = hub.emsp("emsp", "EMS").await;
    let other = hub.emsp("other", "OTH").await;
    emsp.push_token(&emsp.token("ROAM-2")).await.expect("token pushed");
    hub.ingest(vec![started(2, "tx-roam-2", "ROAM-2", 0)]).await;
    emsp.wait_for_push(TIMEOUT, |p| p.module == "sessions").await.expect("the session is PUT");
    let token = emsp.cpo().expect("registered").token;
    let other_token = other.cpo().expect("registered").token;
    let prefs = json!({"profile_type": "FAST", "departure_time": "2026-11-21T18:00:00Z", "energy_need": 20.5});
    let path = "/ocpi/2.2.1/sessions/tx-roam-2/charging_preferences";
    let r = hub.ocpi(reqwest::Method::PUT, path, &token, Some(&prefs)).await;
    assert_eq!((r.http, r.code(), r.body["data"].as_str()), (200, Some(1000), Some("NOT_POSSIBLE")), "{:?}", r.body);
    for (p, t) in [(path, &other_token), ("/ocpi/2.2.1/sessions/nope/charging_preferences", &token)] {
        let r = hub.ocpi(reqwest::Method::PUT, p, t, Some(&prefs)).await;
        assert_eq!((r.http, r.code()), (404, Some(2003)), "{p}: {:?}", r.body);
    }
    for bad in [
        json!({"profile_type": "TURBO"}),
        json!({"departure_time": "2026-11-21T18:00:00Z"}),
        json!({"profile_type": "CHEAP", "departure_time": "tonight"}),
        json!({"profile_type": "CHEAP", "energy_need": -1}),
        json!([1, 2]),
    ] {
        let r = hub.ocpi(reqwest::Method::PUT, path, &token, Some(&bad)).await;
        assert_eq!((r.http, r.code()), (400, Some(2001)), "{bad}: {:?}", r.body);
        assert!(r.body["status_message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    for bad in
        ["date_from=yesterday", "date_from=2026-01-01T00:00:00Z&limit=0", "date_from=2026-01-01T00:00:00Z&offset=x"]
    {
        let r = hub.ocpi(reqwest::Method::GET, &format!("/ocpi/2.2.1/sessions?{bad}"), &token, None).await;
        assert_eq!((r.http, r.code()), (400, Some(2001)), "{bad}: {:?}", r.body);
        let r = hub.ocpi(reqwest::Method::GET, &format!("/ocpi/2.2.1/cdrs?{bad}"), &token, None).await;
        assert_eq!((r.http, r.code()), (400, Some(2001)), "cdrs {bad}: {:?}", r.body);
    }
    let r = hub.send(reqwest::Method::GET, "/ocpi/2.2.1/cdrs", "Token nope", None).await;
    assert_eq!(r.http, 401);

    // Two more sessions: crawled a page at a time, following the Link headers.
    hub.ingest(vec![started(3, "tx-roam-2b", "ROAM-2", 0), started(4, "tx-roam-2c", "ROAM-2", 0)]).await;
    for id in ["DE/SPL/tx-roam-2b", "DE/SPL/tx-roam-2c"] {
        emsp.wait_for_push(TIMEOUT, |p| p.module == "sessions" && p.path == id).await.expect("PUT");
    }
    let crawl = emsp.crawl("sessions", Some(1), Some("2026-01-01T00:00:00Z")).await.expect("crawl");
    assert_eq!(crawl.pages.len(), 3, "{:?}", crawl.pages);
    for (i, p) in crawl.pages.iter().enumerate() {
        assert_eq!((p.count, p.total, p.limit), (1, Some(3), Some(1)), "page {i}: {p:?}");
        assert_eq!(p.next.is_some(), i < 2, "{p:?}");
    }
    let mut ids: Vec<&str> = crawl.locations.iter().filter_map(|s| s["id"].as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec!["tx-roam-2", "tx-roam-2b", "tx-roam-2c"]);
    assert!(other.crawl("sessions", None, Some("2026-01-01T00:00:00Z")).await.expect("crawl").locations.is_empty());
    // Version details list the new Sender interfaces.
    let r = hub.ocpi(reqwest::Method::GET, "/ocpi/2.2.1", &token, None).await;
    let ids: Vec<String> = r.body["data"]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| format!("{}:{}", e["identifier"].as_str().unwrap_or(""), e["role"].as_str().unwrap_or("")))
        .collect();
    assert!(ids.contains(&"sessions:SENDER".to_owned()) && ids.contains(&"cdrs:SENDER".to_owned()), "{ids:?}");
    hub.running.shutdown().await;
}
on_both_databases!(charging_preferences_and_errors, preferences_sqlite, preferences_postgres);

/// A CDR is money: the eMSP is down when it is issued, the hub restarts, the eMSP comes
/// back, and the CDR arrives (once). Session pushes that failed meanwhile were dropped
/// after their tries; the eMSP gets them from GET sessions.
async fn a_cdr_survives_a_hub_restart_while_the_emsp_is_down(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let hub = start(&db, "").await;
    hub.depot(false).await;
    let emsp = hub.emsp("emsp", "EMS").await;
    emsp.push_token(&emsp.token("ROAM-3")).await.expect("token pushed");
    emsp.stop();
    hub.ingest(vec![
        started(2, "tx-roam-3", "ROAM-3", 1000),
        energy(3, "tx-roam-3", 10, 2500),
        stopped(4, "tx-roam-3", "ROAM-3", 4000),
    ])
    .await;
    // The CDR is issued and its POST fails.
    let tried = async {
        while hub.count("SELECT COUNT(*) FROM ocpi_outbox WHERE module = 'cdrs' AND attempts > 0").await < 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, tried).await.expect("the CDR POST is tried and fails");
    let cdr_id = hub
        .running
        .store
        .fetch_opt("SELECT cdr_id FROM ocpi_cdrs", &[], &[Ty::Text])
        .await
        .expect("query")
        .and_then(|r| r.text(0).map(str::to_owned))
        .expect("an OCPI CDR");
    let r = hub.api(reqwest::Method::GET, "/ocpi/partners", None).await;
    let mine = r.body["items"].as_array().and_then(|l| l.iter().find(|p| p["id"] == "emsp").cloned()).expect("listed");
    assert!(mine["outbox"]["pending"].as_i64().is_some_and(|n| n >= 1), "the CDR waits: {mine}");
    assert_eq!(mine["outbox"]["parked"], 0, "{mine}");
    hub.running.shutdown().await;

    // A new hub on the same database; then the eMSP is back.
    let hub = start(&db, "").await;
    emsp.resume().await.expect("the eMSP serves again");
    let posted = emsp.wait_for_push(TIMEOUT, |p| p.module == "cdrs").await.expect("the CDR arrives after the restart");
    assert_eq!(posted.body["id"], cdr_id.as_str());
    assert!(posted.raw.contains(r#""total_cost":{"excl_vat":1.25,"incl_vat":1.425}"#), "{}", posted.raw);
    let delivered = async {
        while hub.count("SELECT COUNT(*) FROM ocpi_cdrs WHERE partner_location IS NOT NULL").await < 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, delivered).await.expect("the delivery is recorded");
    assert_eq!(hub.count("SELECT COUNT(*) FROM ocpi_outbox WHERE module = 'cdrs'").await, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(emsp.pushes().iter().filter(|p| p.module == "cdrs").count(), 1, "POSTed once");
    // The session is there to crawl (from the new hub, at its new address).
    let token = emsp.cpo().expect("registered").token;
    let r = hub.ocpi(reqwest::Method::GET, "/ocpi/2.2.1/sessions?date_from=2026-01-01T00:00:00Z", &token, None).await;
    assert_eq!(r.body["data"].as_array().map(Vec::len), Some(1), "{:?}", r.body);
    assert_eq!(r.body["data"][0]["status"], "COMPLETED");
    hub.running.shutdown().await;
}
on_both_databases!(a_cdr_survives_a_hub_restart_while_the_emsp_is_down, cdr_restart_sqlite, cdr_restart_postgres);

/// A CDR the eMSP keeps refusing (an OCPI error status) is parked after its tries, never
/// deleted; once the eMSP takes CDRs again, an admin's `POST /api/v1/ocpi/partners/{name}
/// /outbox/retry` sends it again and it arrives once. Other roles and unknown partners
/// are refused.
async fn a_parked_cdr_is_sent_again_on_request(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let hub = start(&db, "").await;
    hub.depot(false).await;
    let emsp = hub.emsp("emsp", "EMS").await;
    emsp.push_token(&emsp.token("ROAM-4")).await.expect("token pushed");
    emsp.refuse_cdrs(true);
    hub.ingest(vec![
        started(2, "tx-roam-4", "ROAM-4", 1000),
        energy(3, "tx-roam-4", 10, 2500),
        stopped(4, "tx-roam-4", "ROAM-4", 4000),
    ])
    .await;
    let parked = async {
        while hub.count("SELECT COUNT(*) FROM ocpi_outbox WHERE module = 'cdrs' AND state = 'parked'").await < 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, parked).await.expect("the refused CDR is parked");
    let refusals = emsp.cdr_refusals();
    assert_eq!(refusals as i64, cloud_hub::ocpi::push::MAX_TRIES, "tried MAX_TRIES times, then parked");
    let r = hub.api(reqwest::Method::GET, "/ocpi/partners", None).await;
    let mine = r.body["items"].as_array().and_then(|l| l.iter().find(|p| p["id"] == "emsp").cloned()).expect("listed");
    assert_eq!(mine["outbox"]["parked"], 1, "{mine}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(emsp.cdr_refusals(), refusals, "a parked CDR is not tried again by itself");
    assert!(emsp.pushes().iter().all(|p| p.module != "cdrs"));

    // Only an admin may retry, and only a partner that exists.
    let viewer = cloud_hub::auth::add_key(&hub.running.store, "viewer", Role::Viewer).await.expect("key").token;
    let r = hub
        .send(reqwest::Method::POST, "/api/v1/ocpi/partners/emsp/outbox/retry", &format!("Bearer {viewer}"), None)
        .await;
    assert_eq!(r.http, 403, "{:?}", r.body);
    let r = hub.send(reqwest::Method::POST, "/api/v1/ocpi/partners/emsp/outbox/retry", "Bearer nope", None).await;
    assert_eq!(r.http, 401, "{:?}", r.body);
    let r = hub.api(reqwest::Method::POST, "/ocpi/partners/nobody/outbox/retry", None).await;
    assert_eq!(r.http, 404, "{:?}", r.body);
    assert!(r.body["detail"].as_str().is_some_and(|d| d.contains("nobody")), "{:?}", r.body);

    // The route is in the fleet API's OpenAPI document.
    let doc = hub.api(reqwest::Method::GET, "/openapi.json", None).await;
    let op = &doc.body["paths"]["/api/v1/ocpi/partners/{name}/outbox/retry"]["post"];
    assert_eq!(
        op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/OcpiOutboxRetry",
        "{op}"
    );
    let schema = &doc.body["components"]["schemas"]["OcpiOutboxRetry"];
    assert_eq!(schema["required"], json!(["name", "retried"]), "{schema}");

    // The eMSP is fixed; the operator retries: the CDR arrives, once.
    emsp.refuse_cdrs(false);
    let r = hub.api(reqwest::Method::POST, "/ocpi/partners/emsp/outbox/retry", None).await;
    assert_eq!(r.http, 200, "{:?}", r.body);
    assert_eq!(r.body, json!({"name": "emsp", "retried": 1}));
    let posted = emsp.wait_for_push(TIMEOUT, |p| p.module == "cdrs").await.expect("the CDR arrives after the retry");
    assert_eq!(posted.body["session_id"], "tx-roam-4");
    let delivered = async {
        while hub.count("SELECT COUNT(*) FROM ocpi_outbox WHERE module = 'cdrs'").await > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, delivered).await.expect("the outbox row is gone once delivered");
    assert_eq!(hub.count("SELECT COUNT(*) FROM ocpi_cdrs WHERE delivered_at IS NOT NULL").await, 1);
    // A second retry finds nothing parked.
    let r = hub.api(reqwest::Method::POST, "/ocpi/partners/emsp/outbox/retry", None).await;
    assert_eq!(r.body["retried"], 0, "{:?}", r.body);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(emsp.pushes().iter().filter(|p| p.module == "cdrs").count(), 1, "POSTed once");
    assert_eq!(emsp.cdr_refusals(), refusals);
    hub.running.shutdown().await;
}
on_both_databases!(a_parked_cdr_is_sent_again_on_request, parked_cdr_retry_sqlite, parked_cdr_retry_postgres);

// ---- real-time authorization from a site ---------------------------------------------

/// A site's side of `up/auth` / `down/auth` on the hub's embedded broker.
struct Site {
    client: AsyncClient,
    answers: tokio::sync::mpsc::UnboundedReceiver<AuthAnswer>,
    task: tokio::task::JoinHandle<()>,
}

impl Site {
    async fn connect(broker: Option<std::net::SocketAddr>, site: &str, password: &str) -> Site {
        let addr = broker.expect("an embedded broker");
        let mut options = MqttOptions::new(format!("site-{}", uuid::Uuid::new_v4().simple()), "127.0.0.1", addr.port());
        options.set_credentials(site, password);
        let (client, mut eventloop) = AsyncClient::new(options, 10);
        let (tx, answers) = tokio::sync::mpsc::unbounded_channel();
        let (ready_tx, mut ready) = tokio::sync::watch::channel(false);
        let sub = client.clone();
        let topic = Topic::AuthAnswers.of(site);
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        let _ = sub.try_subscribe(topic.clone(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        let _ = ready_tx.send(true);
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) if p.topic == topic => {
                        let _ = tx.send(serde_json::from_slice(&p.payload).expect("an AuthAnswer"));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(TIMEOUT, ready.wait_for(|r| *r)).await.expect("subscribed").expect("ready");
        Site { client, answers, task }
    }

    /// Asks about `id_tag` at CP-1 (EVSE 1) and waits for the answer.
    async fn ask(&mut self, id_tag: &str) -> AuthAnswer {
        let req = AuthRequest {
            v: PROTOCOL_VERSION,
            site_id: "depot".into(),
            request_id: uuid::Uuid::new_v4().to_string(),
            id_tag: id_tag.into(),
            station: Some("CP-1".into()),
            evse: Some(1),
            at: Utc::now(),
        };
        self.client
            .publish(Topic::AuthRequests.of("depot"), QoS::AtLeastOnce, false, serde_json::to_vec(&req).expect("json"))
            .await
            .expect("published");
        let answer = tokio::time::timeout(TIMEOUT, self.answers.recv()).await.expect("answered").expect("open");
        assert_eq!((answer.request_id.as_str(), answer.id_tag.as_str()), (req.request_id.as_str(), id_tag));
        answer
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A site asks about id tags: the eMSP's real-time verdicts (with the site's Location and
/// EVSE), pushed tokens by their whitelist, unknown tags, a gone eMSP; the session that
/// follows an ALLOWED answer is the eMSP's, with its authorization reference.
async fn a_site_asks_the_hub_about_id_tags(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let hub = start(&db, "").await;
    let password = hub.depot(true).await.expect("a site with a login");
    let emsp = hub.emsp("emsp", "EMS").await;
    let mut site = Site::connect(hub.running.embedded_broker, "depot", &password).await;

    // Not pushed; the eMSP allows it in real time.
    emsp.set_authorization("RT-1", EmspAnswer::NeedsLocation);
    let a = site.ask("RT-1").await;
    assert_eq!((a.verdict, a.source.as_deref()), (AuthVerdict::Accepted, Some("ocpi:emsp:realtime")), "{a:?}");
    let (uid, location) = emsp.authorizations().last().cloned().expect("asked");
    assert_eq!(uid, "RT-1");
    let location = location.expect("with a location");
    assert_eq!(
        (location["location_id"].as_str(), location["evse_uids"][0].as_str()),
        (Some("depot"), Some("depot*CP-1*1"))
    );
    // Pushed with whitelist NEVER: always asked; the eMSP blocks it.
    let mut never = emsp.token("NEV-1");
    never.whitelist = "NEVER".into();
    emsp.push_token(&never).await.expect("pushed");
    emsp.set_authorization("NEV-1", EmspAnswer::Blocked);
    assert_eq!(site.ask("NEV-1").await.verdict, AuthVerdict::Blocked);
    // Pushed ALLOWED: from the store, the eMSP is not asked.
    emsp.push_token(&emsp.token("WL-1")).await.expect("pushed");
    let asked = emsp.authorizations().len();
    let a = site.ask("WL-1").await;
    assert_eq!((a.verdict, a.source.as_deref()), (AuthVerdict::Accepted, Some("ocpi:emsp:whitelist")));
    assert_eq!(emsp.authorizations().len(), asked, "no real-time call for a whitelisted token");
    // Pushed but not valid: blocked without asking.
    let mut invalid = emsp.token("OFF-1");
    invalid.valid = false;
    emsp.push_token(&invalid).await.expect("pushed");
    assert_eq!(site.ask("OFF-1").await.verdict, AuthVerdict::Blocked);
    // Nobody knows it: invalid.
    assert_eq!(site.ask("NOBODY").await.verdict, AuthVerdict::Invalid);

    // The session after the real-time ALLOWED is the eMSP's, AUTH_REQUEST, with the reference.
    // (It starts now: an authorization counts for the sessions that start after it.)
    hub.ingest(vec![started_at(2, "tx-rt-1", "RT-1", 0, Utc::now())]).await;
    let put = emsp.wait_for_push(TIMEOUT, |p| p.module == "sessions").await.expect("the session is PUT");
    assert_eq!(put.body["auth_method"], "AUTH_REQUEST");
    let reference = hub
        .running
        .store
        .fetch_opt(
            "SELECT authorization_reference FROM ocpi_authorizations WHERE id_tag = 'RT-1' AND allowed = 'ALLOWED'",
            &[],
            &[Ty::Text],
        )
        .await
        .expect("query")
        .and_then(|r| r.text(0).map(str::to_owned))
        .expect("recorded");
    assert_eq!(put.body["authorization_reference"], reference.as_str());
    assert_eq!(put.body["cdr_token"]["uid"], "RT-1");

    // The eMSP is gone: a tag it must decide is unknown (the site's policy decides).
    emsp.stop();
    assert_eq!(site.ask("NEV-1").await.verdict, AuthVerdict::Unknown);
    assert_eq!(site.ask("RT-2").await.verdict, AuthVerdict::Unknown);
    // ALLOWED_OFFLINE: let in when the eMSP cannot answer.
    emsp.resume().await.expect("back");
    let mut offline = emsp.token("AO-1");
    offline.whitelist = "ALLOWED_OFFLINE".into();
    emsp.push_token(&offline).await.expect("pushed");
    emsp.stop();
    assert_eq!(site.ask("AO-1").await.verdict, AuthVerdict::Accepted);

    // A request for another site's topic payload is refused by the hub (no answer).
    let forged = json!({"v": 1, "site_id": "elsewhere", "request_id": "x", "id_tag": "RT-1", "at": Utc::now()});
    site.client
        .publish(Topic::AuthRequests.of("depot"), QoS::AtLeastOnce, false, forged.to_string().into_bytes())
        .await
        .expect("published");
    assert!(tokio::time::timeout(Duration::from_millis(700), site.answers.recv()).await.is_err(), "not answered");
    hub.running.shutdown().await;
}
on_both_databases!(a_site_asks_the_hub_about_id_tags, site_asks_sqlite, site_asks_postgres);

/// A site over its authorization budget (`[ocpi] auth_rate_per_s`, `auth_burst`) is
/// answered Unknown at once, without asking any eMSP, so its own offline policy decides;
/// the refusals are counted in `/metrics`.
async fn a_site_over_its_auth_rate_gets_unknown(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let hub = start(&db, "auth_rate_per_s = 0.1\nauth_burst = 2").await;
    let password = hub.depot(true).await.expect("a site with a login");
    let emsp = hub.emsp("emsp", "EMS").await;
    let mut site = Site::connect(hub.running.embedded_broker, "depot", &password).await;
    let mut never = emsp.token("NEV-9");
    never.whitelist = "NEVER".into();
    emsp.push_token(&never).await.expect("pushed");
    emsp.set_authorization("NEV-9", EmspAnswer::Allowed);

    // The burst: asked and answered by the eMSP.
    for _ in 0..2 {
        let a = site.ask("NEV-9").await;
        assert_eq!(a.verdict, AuthVerdict::Accepted, "{a:?}");
    }
    let asked = emsp.authorizations().len();
    assert_eq!(asked, 2);
    // Over it (one token per 10 s): Unknown, the eMSP not asked.
    for _ in 0..3 {
        let a = site.ask("NEV-9").await;
        assert_eq!(a.verdict, AuthVerdict::Unknown, "{a:?}");
        assert!(a.source.as_deref().is_some_and(|s| s.contains("too many")), "{a:?}");
    }
    assert_eq!(emsp.authorizations().len(), asked, "no eMSP call over the rate");
    let metrics =
        hub.http.get(format!("{}/metrics", hub.base)).send().await.expect("GET /metrics").text().await.expect("text");
    assert!(metrics.lines().any(|l| l == "sitepilot_hub_ocpi_auth_rate_limited_total 3"), "{metrics}");
    hub.running.shutdown().await;
}
on_both_databases!(a_site_over_its_auth_rate_gets_unknown, auth_rate_sqlite, auth_rate_postgres);

/// A hub without OCPI answers at once that it cannot tell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ocpi_the_answer_is_unknown() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else { return };
    init_logs();
    let hub = TestHub::start(&db, Broker::Embedded).await;
    let creds =
        cloud_hub::sites::add_site(hub.store(), "depot", Some("depot"), &hub.config.mqtt.username).await.expect("site");
    let mut site = Site::connect(hub.running().embedded_broker, "depot", &creds.mqtt_password).await;
    let a = site.ask("ANY").await;
    assert_eq!((a.verdict, a.source.as_deref()), (AuthVerdict::Unknown, Some("hub: OCPI is off")));
}
