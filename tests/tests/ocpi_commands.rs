//! OCPI commands and charging profiles through the whole chain: the simulated eMSP →
//! the hub's OCPI Receivers → MQTT → a real edge agent → OCPP 1.6 → a simulated charger,
//! and the CommandResult back to the eMSP's `response_url`.
//!
//! The scenario users trip over, "START_SESSION commands that time out and start
//! anyway", on SQLite and PostgreSQL: the charger answers RemoteStartTransaction only
//! after the command's deadline (or never); the eMSP is told TIMEOUT, and no session is
//! left charging. PostgreSQL as in `edge_to_hub.rs` (`SITEPILOT_TEST_PG`; with
//! `CI=true` its absence is a failure).

#![allow(clippy::unwrap_used)]

use cloud_hub::db::{Store, Ty};
use serde_json::{Value, json};
use simulators::chargepoint::{AnswerMode, ChargePoint, ChargePointConfig, EvModel};
use simulators::emsp::{Emsp, EmspConfig};
use std::time::Duration;
use tests::hubdb::{Backend, database, drop_database};
use tests::{TAG_OK, TestAgent, energy_config_text, eventually, password};

const WAIT: Duration = Duration::from_secs(30);

/// A hub with OCPI, an edge agent for "test-site" with charger CP-1 (2 connectors, no
/// balancer), the charger simulated and booted, the site published as Location
/// "LOC-1", and an eMSP registered.
struct Chain {
    hub: cloud_hub::app::Running,
    agent: TestAgent,
    cp: ChargePoint,
    emsp: Emsp,
    pg: Option<String>,
    _dir: tempfile::TempDir,
}

impl Chain {
    async fn start(backend: Backend, command_timeout_s: u32) -> Option<Chain> {
        Chain::start_with(backend, command_timeout_s, "", "").await
    }

    /// With `charger` lines in CP-1's `[[chargers]]` entry and `tail` (circuits, balancer)
    /// in the edge's config.
    async fn start_with(backend: Backend, command_timeout_s: u32, charger: &str, tail: &str) -> Option<Chain> {
        let dir = tempfile::tempdir().unwrap();
        let (db_url, pg) = database(backend, dir.path()).await?;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let text = format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nlisten = \"127.0.0.1:{port}\"\n[database]\nurl = \"{db_url}\"\n\
             max_connections = 4\n[ingest]\nworkers = 2\n[ocpi]\nenabled = true\ncountry_code = \"DE\"\n\
             party_id = \"SPL\"\nrefresh_interval_ms = 100\ncommand_timeout_s = {command_timeout_s}\n"
        );
        let path = dir.path().join("cloud-hub.toml");
        std::fs::write(&path, text).unwrap();
        let config = cloud_hub::config::Config::load(&path).map_err(|e| e.to_string()).unwrap();
        let hub = cloud_hub::app::start(config).await.map_err(|e| format!("{e:#}")).unwrap();
        assert!(hub.wait_ready(Duration::from_secs(15)).await, "the hub subscribes");
        let creds =
            cloud_hub::sites::add_site(&hub.store, "Test site", Some("test-site"), "sitepilot-hub").await.unwrap();
        let tail = format!(
            "{tail}\n[sync]\nbroker = \"mqtt://127.0.0.1:{port}\"\nusername = \"{}\"\npassword = \"{}\"\n\
             poll_interval_ms = 100\n",
            creds.mqtt_username, creds.mqtt_password
        );
        let agent = TestAgent::start_text(|d| energy_config_text(d, &[("CP-1", charger)], &tail)).await;
        let cfg = ChargePointConfig::new("CP-1", agent.ocpp_url())
            .with_password(password("CP-1"))
            .with_connectors(2)
            .fast()
            .with_ev(EvModel::instant().with_max_current(16.0))
            .with_meter_interval(Duration::from_millis(200));
        let cp = ChargePoint::connect(cfg).await.unwrap();
        cp.boot().await.unwrap();
        // The hub knows both connectors before the site is published.
        eventually(30, || async {
            let n = count(&hub.store, "SELECT COUNT(*) FROM connectors WHERE site_id = 'test-site' AND evse > 0").await;
            (n == 2).then_some(())
        })
        .await
        .expect("the connectors reach the hub");
        let http = reqwest::Client::new();
        let base = format!("http://{}", hub.http_addr);
        let admin = cloud_hub::auth::add_key(&hub.store, "admin", cloud_hub::auth::Role::Admin).await.unwrap().token;
        let r = http
            .put(format!("{base}/api/v1/ocpi/sites/test-site/location"))
            .bearer_auth(&admin)
            .json(&json!({"location_id": "LOC-1", "address": "Main St 1", "city": "Berlin", "country": "DEU",
                "latitude": 52.52, "longitude": 13.405, "time_zone": "Europe/Berlin"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let made: Value = http
            .post(format!("{base}/api/v1/ocpi/partners"))
            .bearer_auth(&admin)
            .json(&json!({"name": "emsp"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let emsp = Emsp::start(EmspConfig::default()).await.unwrap();
        emsp.register(&format!("{base}/ocpi/versions"), made["token_a"].as_str().unwrap()).await.unwrap();
        Some(Chain { hub, agent, cp, emsp, pg, _dir: dir })
    }

    fn evse(&self, n: i64) -> String {
        cloud_hub::ocpi::locations::evse_uid("LOC-1", "CP-1", n)
    }

    fn token(&self, uid: &str) -> Value {
        serde_json::to_value(self.emsp.token(uid)).unwrap()
    }

    /// Sends a command with a fresh response URL; asserts the CommandResponse is ACCEPTED.
    async fn command(&self, command: &str, mut body: Value) -> String {
        let url = self.emsp.response_url("commands");
        body["response_url"] = json!(url);
        let a = self.emsp.command(command, &body).await.unwrap();
        assert_eq!((a.http, &a.body["data"]["result"]), (200, &json!("ACCEPTED")), "{command}: {:?}", a.body);
        url
    }

    async fn result(&self, url: &str) -> Value {
        self.emsp.wait_for_result(url, WAIT).await.unwrap_or_else(|| panic!("no result at {url}"))
    }

    /// A charging profile request with a fresh response URL; asserts ACCEPTED.
    async fn profile(&self, method: reqwest::Method, session: &str, query: &str, body: Option<Value>) -> String {
        let url = self.emsp.response_url("chargingprofiles");
        let (query, body) = match body {
            Some(mut b) => {
                b["response_url"] = json!(url);
                (None, Some(b))
            }
            None => (Some(format!("{query}response_url={url}")), None),
        };
        let a = self.emsp.charging_profile(method, session, query.as_deref(), body.as_ref()).await.unwrap();
        assert_eq!(a.body["data"]["result"], "ACCEPTED", "{:?}", a.body);
        url
    }

    async fn shutdown(self) {
        self.hub.shutdown().await;
        self.agent.running.shutdown().await;
        drop_database(self.pg).await;
    }
}

async fn count(store: &Store, sql: &'static str) -> i64 {
    store.fetch_opt(sql, &[], &[Ty::Int]).await.unwrap().and_then(|r| r.int(0)).unwrap_or(-1)
}

/// The hub's session of `id_tag`: (transaction uid, stopped, stop reason).
async fn session_of(store: &Store, id_tag: &str) -> Option<(String, bool, Option<String>)> {
    store
        .fetch_opt(
            "SELECT transaction_uid, stopped_at, stop_reason FROM sessions WHERE site_id = 'test-site' AND id_tag = $1",
            &[id_tag.into()],
            &[Ty::Text, Ty::Time, Ty::Text],
        )
        .await
        .unwrap()
        .map(|r| (r.text(0).unwrap_or_default().to_owned(), r.time(1).is_some(), r.text(2).map(str::to_owned)))
}

/// The charger answers RemoteStartTransaction after the command's deadline (2 s) but
/// before the edge gives up on it (5 s): the edge reports it accepted, the charger
/// starts the transaction, yet the eMSP was told TIMEOUT. The hub stops that
/// transaction: nothing is left charging that the eMSP was told did not start.
async fn start_session_that_times_out_at_the_charger(backend: Backend) {
    let Some(chain) = Chain::start(backend, 2).await else { return };
    chain.cp.set_answer_mode("RemoteStartTransaction", AnswerMode::Delay(Duration::from_millis(3500))).await.unwrap();
    // A token the site accepts by itself, so only the hub can stop the late start.
    let url = chain
        .command(
            "START_SESSION",
            json!({"token": chain.token(TAG_OK), "location_id": "LOC-1", "evse_uid": chain.evse(1)}),
        )
        .await;
    let r = chain.result(&url).await;
    assert_eq!(r["result"], "TIMEOUT", "{r}");

    // The late start happens, and is stopped again.
    let stopped = eventually(40, || async {
        let (uid, stopped, reason) = session_of(&chain.hub.store, TAG_OK).await?;
        stopped.then_some((uid, reason))
    })
    .await
    .expect("the late transaction is stopped at the hub");
    assert_eq!(stopped.1.as_deref(), Some("Remote"), "stopped by a remote stop");
    assert!(chain.cp.received_calls().iter().any(|c| c.action == "RemoteStopTransaction"));
    let idle = chain.cp.wait_for_state(|s| s.connectors.iter().all(|c| c.transaction.is_none()), WAIT).await;
    assert!(idle.is_ok(), "nothing charges at the charger");
    let rows = cloud_hub::ocpi::commands::stored(&chain.hub.store, "emsp").await.unwrap();
    assert_eq!(rows[0].late_session_uid.as_deref(), Some(stopped.0.as_str()), "{rows:?}");
    assert!(rows[0].late_note.as_deref().is_some_and(|n| n.contains("stopped remotely")), "{rows:?}");
    // The site's own (late) answer did not change what the eMSP was told.
    let answered = eventually(20, || async {
        let n = count(
            &chain.hub.store,
            "SELECT COUNT(*) FROM commands c JOIN ocpi_commands o ON o.site_command_id = c.command_id \
             WHERE c.outcome = 'accepted'",
        )
        .await;
        (n == 1).then_some(())
    })
    .await;
    assert!(answered.is_some(), "the edge's late 'accepted' reached the hub");
    assert_eq!(chain.emsp.results_at(&url), vec![r], "one result, the TIMEOUT");
    chain.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_session_that_times_out_at_the_charger_sqlite() {
    start_session_that_times_out_at_the_charger(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_session_that_times_out_at_the_charger_postgres() {
    start_session_that_times_out_at_the_charger(Backend::Postgres).await;
}

/// The charger never answers: TIMEOUT, the edge gives up in its turn, and nothing starts.
async fn start_session_the_charger_never_answers(backend: Backend) {
    let Some(chain) = Chain::start(backend, 2).await else { return };
    chain.cp.set_answer_mode("RemoteStartTransaction", AnswerMode::Never).await.unwrap();
    let url = chain
        .command(
            "START_SESSION",
            json!({"token": chain.token(TAG_OK), "location_id": "LOC-1", "evse_uid": chain.evse(1)}),
        )
        .await;
    assert_eq!(chain.result(&url).await["result"], "TIMEOUT");
    // The edge's own timeout ends its attempt: its result reaches the hub.
    eventually(30, || async {
        let n = count(&chain.hub.store, "SELECT COUNT(*) FROM commands WHERE outcome = 'failed'").await;
        (n == 1).then_some(())
    })
    .await
    .expect("the edge reports the charger's silence");
    assert_eq!(chain.cp.ignored_calls().len(), 1, "the charger got it and kept quiet");
    assert!(chain.cp.snapshot().connectors.iter().all(|c| c.transaction.is_none()));
    assert!(session_of(&chain.hub.store, TAG_OK).await.is_none(), "no session at the hub");
    assert_eq!(chain.emsp.results_at(&url).len(), 1);
    chain.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_session_the_charger_never_answers_sqlite() {
    start_session_the_charger_never_answers(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_session_the_charger_never_answers_postgres() {
    start_session_the_charger_never_answers(Backend::Postgres).await;
}

/// Every command and the charging profiles, with a real site: an app token the site
/// does not know starts (the hub vouches for it), a charging profile limits the car, a
/// reservation keeps the connector for its token only, unlock and stop work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_through_a_real_site() {
    let Some(chain) = Chain::start(Backend::Sqlite, 30).await else { return };
    let cp = &chain.cp;

    // START_SESSION with the eMSP's app token: the site's list does not know it.
    let url = chain
        .command(
            "START_SESSION",
            json!({"token": chain.token("APP-4711"), "location_id": "LOC-1", "evse_uid": chain.evse(1)}),
        )
        .await;
    assert_eq!(chain.result(&url).await["result"], "ACCEPTED");
    let charging = cp.wait_for_state(|s| s.connectors[0].current_a > 15.0, WAIT).await.unwrap();
    assert_eq!(charging.connectors[0].transaction.as_ref().map(|t| t.id_tag.as_str()), Some("APP-4711"));
    let session = eventually(20, || async { session_of(&chain.hub.store, "APP-4711").await }).await.unwrap().0;

    // A charging profile of 10 A on the session: the charger takes it as a TxProfile.
    let body = json!({"charging_profile": {"charging_rate_unit": "A",
        "charging_profile_period": [{"start_period": 0, "limit": 10}]}});
    let url = chain.profile(reqwest::Method::PUT, &session, "", Some(body)).await;
    assert_eq!(chain.result(&url).await, json!({"result": "ACCEPTED"}));
    cp.wait_for_state(|s| (s.connectors[0].current_a - 10.0).abs() < 0.01, WAIT).await.unwrap();
    let url = chain.profile(reqwest::Method::GET, &session, "duration=600&", None).await;
    let active = chain.result(&url).await;
    assert_eq!(active["result"], "ACCEPTED", "{active}");
    assert_eq!(active["profile"]["charging_profile"]["charging_profile_period"][0]["limit"], 10.0, "{active}");
    let url = chain.profile(reqwest::Method::DELETE, &session, "", None).await;
    assert_eq!(chain.result(&url).await, json!({"result": "ACCEPTED"}));
    cp.wait_for_state(|s| s.connectors[0].current_a > 15.0, WAIT).await.unwrap();

    // STOP_SESSION by our session id.
    let url = chain.command("STOP_SESSION", json!({"session_id": session})).await;
    assert_eq!(chain.result(&url).await["result"], "ACCEPTED");
    cp.wait_for_state(|s| s.connectors[0].transaction.is_none(), WAIT).await.unwrap();
    eventually(20, || async { session_of(&chain.hub.store, "APP-4711").await.filter(|s| s.1) }).await.unwrap();

    // RESERVE_NOW on EVSE 2: only its token may start there.
    let expiry = shared_model::ocpi::timestamp(chrono::Utc::now() + chrono::Duration::minutes(30));
    let url = chain
        .command(
            "RESERVE_NOW",
            json!({"token": chain.token("APP-RES"), "expiry_date": expiry, "reservation_id": "R-1",
                "location_id": "LOC-1", "evse_uid": chain.evse(2)}),
        )
        .await;
    assert_eq!(chain.result(&url).await["result"], "ACCEPTED");
    let reserved = cp.wait_for_state(|s| s.connectors[1].reservation_id.is_some(), WAIT).await.unwrap();
    assert_eq!(reserved.connectors[1].status, shared_model::ocpp::v16::ChargePointStatus::Reserved);
    let url = chain
        .command(
            "START_SESSION",
            json!({"token": chain.token("APP-OTHER"), "location_id": "LOC-1", "evse_uid": chain.evse(2)}),
        )
        .await;
    assert_eq!(chain.result(&url).await["result"], "REJECTED", "another token at the reserved EVSE");
    assert!(cp.start_transaction(2, TAG_OK).await.is_err(), "nor with a card at the charger");
    let url = chain.command("CANCEL_RESERVATION", json!({"reservation_id": "R-1"})).await;
    assert_eq!(chain.result(&url).await["result"], "ACCEPTED");
    cp.wait_for_state(|s| s.connectors[1].reservation_id.is_none(), WAIT).await.unwrap();

    // UNLOCK_CONNECTOR.
    let url = chain
        .command("UNLOCK_CONNECTOR", json!({"location_id": "LOC-1", "evse_uid": chain.evse(1), "connector_id": "1"}))
        .await;
    assert_eq!(chain.result(&url).await["result"], "ACCEPTED");
    assert!(cp.received_calls().iter().any(|c| c.action == "UnlockConnector" && c.payload["connectorId"] == 1));
    chain.shutdown().await;
}

/// OCPI 2.2.1 ReserveNow: a reservation that expires at the charger unused ends with a
/// second CommandResult, CANCELED_RESERVATION, at the RESERVE_NOW's `response_url`,
/// once: the charger shows the connector Reserved, then Available at the expiry; the
/// edge reports both, the hub tells the eMSP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_that_expires_unused_is_reported() {
    let Some(chain) = Chain::start(Backend::Sqlite, 30).await else { return };
    let cp = &chain.cp;
    let expiry = shared_model::ocpi::timestamp(chrono::Utc::now() + chrono::Duration::seconds(4));
    let url = chain
        .command(
            "RESERVE_NOW",
            json!({"token": chain.token("APP-EXP"), "expiry_date": expiry, "reservation_id": "R-EXP",
                "location_id": "LOC-1", "evse_uid": chain.evse(2)}),
        )
        .await;
    assert_eq!(chain.result(&url).await["result"], "ACCEPTED");
    cp.wait_for_state(|s| s.connectors[1].reservation_id.is_some(), WAIT).await.unwrap();
    // Expired at the charger: the connector is Available again, and the eMSP is told.
    cp.wait_for_state(|s| s.connectors[1].reservation_id.is_none(), WAIT).await.unwrap();
    let results = eventually(30, || async {
        let r = chain.emsp.results_at(&url);
        (r.len() >= 2).then_some(r)
    })
    .await
    .expect("a second result");
    assert_eq!(results[0]["result"], "ACCEPTED");
    assert_eq!(results[1]["result"], "CANCELED_RESERVATION", "{results:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(chain.emsp.results_at(&url).len(), 2, "once");
    chain.shutdown().await;
}

/// At a site with a balancer a charging profile is a cap on what the balancer offers the
/// session: the car follows it, and gets the circuit's share back when it is cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charging_profile_caps_a_session_at_a_balanced_site() {
    let tail = "[balancer]\ntick_ms = 200\nmin_pause_s = 2\nmin_run_s = 2\nsettle_ms = 1500\n\n\
                [[circuits]]\nid = \"grid\"\nlimit_a = 32\n";
    let Some(chain) = Chain::start_with(Backend::Sqlite, 30, "circuit = \"grid\"\nmax_current_a = 32", tail).await
    else {
        return;
    };
    let cp = &chain.cp;
    let url = chain
        .command(
            "START_SESSION",
            json!({"token": chain.token("APP-CAP"), "location_id": "LOC-1", "evse_uid": chain.evse(1)}),
        )
        .await;
    assert_eq!(chain.result(&url).await["result"], "ACCEPTED");
    cp.wait_for_state(|s| s.connectors[0].current_a > 15.0, WAIT).await.unwrap();
    let session = eventually(20, || async { session_of(&chain.hub.store, "APP-CAP").await }).await.unwrap().0;

    // 2 300 W over the charger's three phases at 230 V: 3.3 A, below the minimum: paused.
    let body = json!({"charging_profile": {"charging_rate_unit": "W",
        "charging_profile_period": [{"start_period": 0, "limit": 2300}]}});
    let url = chain.profile(reqwest::Method::PUT, &session, "", Some(body)).await;
    assert_eq!(chain.result(&url).await, json!({"result": "ACCEPTED"}));
    cp.wait_for_state(|s| s.connectors[0].current_a == 0.0, WAIT).await.unwrap();
    // 10 A: the balancer offers no more.
    let body = json!({"charging_profile": {"charging_rate_unit": "A",
        "charging_profile_period": [{"start_period": 0, "limit": 10}]}});
    let url = chain.profile(reqwest::Method::PUT, &session, "", Some(body)).await;
    assert_eq!(chain.result(&url).await, json!({"result": "ACCEPTED"}));
    cp.wait_for_state(|s| (s.connectors[0].current_a - 10.0).abs() < 0.01, WAIT).await.unwrap();
    let url = chain.profile(reqwest::Method::GET, &session, "duration=300&", None).await;
    let active = chain.result(&url).await;
    assert_eq!(active["profile"]["charging_profile"]["charging_profile_period"][0]["limit"], 10.0, "{active}");
    // Cleared: the circuit's 32 A again.
    let url = chain.profile(reqwest::Method::DELETE, &session, "", None).await;
    assert_eq!(chain.result(&url).await, json!({"result": "ACCEPTED"}));
    cp.wait_for_state(|s| s.connectors[0].current_a > 15.0, WAIT).await.unwrap();
    chain.shutdown().await;
}
