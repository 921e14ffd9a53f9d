//! OCPI 2.2.1 commands and charging profiles (CPO = Receiver) end to end at the hub, on
//! SQLite and PostgreSQL: the simulated eMSP (`simulators::emsp`) sends them over real
//! HTTP, the hub stores them and publishes site commands on its embedded broker, a site
//! played by a real MQTT client answers (or not), and the eMSP receives each result at
//! its `response_url`: once, also across a hub restart, retried while it refuses, TIMEOUT
//! at the deadline, and a transaction that a timed-out START_SESSION started anyway is
//! stopped.
//!
//! The whole path through a real edge agent and a simulated charger is in
//! `tests/tests/ocpi_commands.rs`.

mod common;

use chrono::Utc;
use cloud_hub::app::Running;
use cloud_hub::auth::Role;
use cloud_hub::config::Config;
use cloud_hub::ocpi::commands::stored;
use common::*;
use serde_json::{Value, json};
use shared_model::events::SiteEvent;
use shared_model::model::{ConnectorRef, ConnectorStatus, TransactionOrigin};
use shared_model::sync::{Command, CommandEnvelope, CommandOutcome, LimitPeriod, RateUnit, SessionLimit};
use simulators::emsp::{Emsp, EmspConfig};
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

const LOCATION: &str = "LOC-1";
const WAIT: Duration = Duration::from_secs(20);

/// A hub with OCPI, a registered eMSP, and a site "site-1" (charger CP-1 with EVSEs 1
/// and 2, Available) published as Location LOC-1, whose edge is `edge`.
struct Fixture {
    config_path: std::path::PathBuf,
    running: Option<Running>,
    emsp: Emsp,
    edge: Edge,
    seq: u64,
    http: reqwest::Client,
}

fn hub_config(db: &TestDb, timeout_s: u32) -> std::path::PathBuf {
    // A fixed HTTP port: the eMSP keeps the hub's URLs across a restart.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:{port}\"\n[mqtt]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"{}\"\n\
         max_connections = 4\n[ingest]\nworkers = 2\n[ocpi]\nenabled = true\ncountry_code = \"DE\"\n\
         party_id = \"SPL\"\nrefresh_interval_ms = 100\ncommand_timeout_s = {timeout_s}\n",
        db.url
    );
    let path = db.dir.path().join("cloud-hub.toml");
    std::fs::write(&path, text).expect("write the config");
    path
}

async fn start_hub(path: &std::path::Path) -> Running {
    let config = Config::load(path).map_err(|e| e.to_string()).expect("valid config");
    let running = cloud_hub::app::start(config).await.map_err(|e| format!("{e:#}")).expect("hub starts");
    assert!(running.wait_ready(TIMEOUT).await, "the hub subscribes");
    running
}

fn edge_of(running: &Running, site: &str, password: &str) -> (String, u16, Option<(String, String)>) {
    let addr = running.embedded_broker.expect("embedded broker");
    (addr.ip().to_string(), addr.port(), Some((site.to_owned(), password.to_owned())))
}

fn tx_started(seq: u64, uid: &str, evse: u32, id_tag: &str, tx: &str) -> shared_model::sync::EventEnvelope {
    envelope(
        seq,
        &SiteEvent::TransactionStarted {
            station: "CP-1".into(),
            transaction_uid: uid.into(),
            station_transaction_id: tx.into(),
            connector: ConnectorRef { evse, connector: 1 },
            id_tag: Some(id_tag.into()),
            meter_start_wh: Some(1000),
            // The site's clock: now (a late start is matched by its time).
            started_at: Some(Utc::now()),
            origin: TransactionOrigin::Online,
        },
    )
}

impl Fixture {
    async fn new(backend: Backend, timeout_s: u32) -> Option<(TestDb, Fixture)> {
        init_logs();
        let db = TestDb::new(backend).await?;
        let config_path = hub_config(&db, timeout_s);
        let running = start_hub(&config_path).await;
        let creds =
            cloud_hub::sites::add_site(&running.store, "Site 1", Some("site-1"), "sitepilot-hub").await.expect("site");
        let (host, port, login) = edge_of(&running, "site-1", &creds.mqtt_password);
        let mut edge = Edge::connect(&host, port, "site-1", login).await;
        let events = vec![
            booted(1, "CP-1"),
            connector_status(2, "CP-1", 1, ConnectorStatus::Available),
            connector_status(3, "CP-1", 2, ConnectorStatus::Available),
        ];
        assert_eq!(edge.roundtrip(&batch("site-1", events)).await, 3);
        let http = reqwest::Client::new();
        let admin = cloud_hub::auth::add_key(&running.store, "admin", Role::Admin).await.expect("key").token;
        let base = format!("http://{}", running.http_addr);
        let put = http
            .put(format!("{base}/api/v1/ocpi/sites/site-1/location"))
            .bearer_auth(&admin)
            .json(&json!({"location_id": LOCATION, "address": "Main St 1", "city": "Berlin", "country": "DEU",
                "latitude": 52.52, "longitude": 13.405, "time_zone": "Europe/Berlin"}))
            .send()
            .await
            .expect("PUT location");
        assert_eq!(put.status().as_u16(), 200);
        let made = http
            .post(format!("{base}/api/v1/ocpi/partners"))
            .bearer_auth(&admin)
            .json(&json!({"name": "emsp"}))
            .send()
            .await
            .expect("POST partner");
        let made: Value = made.json().await.expect("json");
        let emsp = Emsp::start(EmspConfig::default()).await.expect("emsp");
        emsp.register(&format!("{base}/ocpi/versions"), made["token_a"].as_str().expect("token a"))
            .await
            .expect("registered");
        Some((db, Fixture { config_path, running: Some(running), emsp, edge, seq: 3, http }))
    }

    fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    fn evse(&self, n: i64) -> String {
        cloud_hub::ocpi::locations::evse_uid(LOCATION, "CP-1", n)
    }

    async fn event(&mut self, event: impl FnOnce(u64) -> shared_model::sync::EventEnvelope) {
        self.seq += 1;
        let seq = self.seq;
        assert_eq!(self.edge.roundtrip(&batch("site-1", vec![event(seq)])).await, seq);
    }

    /// Sends a command with a fresh response URL: (response URL, HTTP status, body).
    async fn command(&self, command: &str, mut body: Value) -> (String, u16, Value) {
        let url = self.emsp.response_url("commands");
        body["response_url"] = json!(url);
        let a = self.emsp.command(command, &body).await.expect("command sent");
        (url, a.http, a.body)
    }

    fn token(&self, uid: &str) -> Value {
        serde_json::to_value(self.emsp.token(uid)).expect("token")
    }

    async fn result(&self, url: &str) -> Value {
        self.emsp.wait_for_result(url, WAIT).await.unwrap_or_else(|| panic!("no result at {url}"))
    }

    async fn answer(&self, env: &CommandEnvelope, outcome: CommandOutcome, detail: Value) {
        self.edge.send_result(&self.edge.result_for(&env.command_id, outcome, detail)).await;
    }

    async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// The stored requests once all `n` have their POST recorded (the eMSP may see a result
/// a moment before the hub has written that it was taken).
async fn all_posted(f: &Fixture, n: usize) -> Vec<cloud_hub::ocpi::commands::Stored> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let rows = stored(&f.running().store, "emsp").await.expect("stored");
        if rows.len() == n && rows.iter().all(|r| r.posted_at.is_some()) {
            return rows;
        }
        assert!(tokio::time::Instant::now() < deadline, "not all {n} posted: {rows:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn send(emsp: &Emsp, command: &str, body: Value) -> simulators::emsp::Answer {
    emsp.command(command, &body).await.expect("sent")
}

fn accepted(status: u16, body: &Value, timeout: u64) {
    assert_eq!((status, body["status_code"].as_u64()), (200, Some(1000)), "{body}");
    assert_eq!(body["data"]["result"], "ACCEPTED", "{body}");
    assert_eq!(body["data"]["timeout"], timeout, "{body}");
}

/// Every command reaches the site as the right site command with the deadline as its
/// `expires_at`, and the site's answer reaches the eMSP as the right CommandResult.
async fn every_command_round_trips(backend: Backend) {
    let Some((_db, mut f)) = Fixture::new(backend, 30).await else { return };

    // START_SESSION on EVSE 1.
    let body = json!({"token": f.token("EMSP-1"), "location_id": LOCATION, "evse_uid": f.evse(1), "connector_id": "1"});
    let (start_url, status, answer) = f.command("START_SESSION", body).await;
    accepted(status, &answer, 30);
    let env = f.edge.next_command().await;
    assert_eq!(
        env.command,
        Command::RemoteStart { station: "CP-1".into(), connector: Some(1), id_tag: "EMSP-1".into() }
    );
    assert_eq!(env.expires_at, Some(env.issued_at + chrono::Duration::seconds(30)), "expires at the deadline");
    f.answer(&env, CommandOutcome::Accepted, json!({"status": "Accepted"})).await;
    assert_eq!(f.result(&start_url).await, json!({"result": "ACCEPTED"}));

    // The session it started; STOP_SESSION by our session id.
    f.event(|seq| tx_started(seq, "tx-emsp-1", 1, "EMSP-1", "41")).await;
    let (stop_url, status, answer) = f.command("STOP_SESSION", json!({"session_id": "tx-emsp-1"})).await;
    accepted(status, &answer, 30);
    let env = f.edge.next_command().await;
    assert_eq!(env.command, Command::RemoteStop { station: "CP-1".into(), transaction_id: 41 });
    f.answer(&env, CommandOutcome::Accepted, json!({"status": "Accepted"})).await;
    assert_eq!(f.result(&stop_url).await["result"], "ACCEPTED");

    // RESERVE_NOW: the charger says Occupied, then a second one is accepted and cancelled.
    let expiry = shared_model::ocpi::timestamp(Utc::now() + chrono::Duration::minutes(15));
    let (token_r, evse_2) = (f.token("EMSP-R"), f.evse(2));
    let reserve = |id: &str| {
        json!({"token": token_r, "expiry_date": expiry, "reservation_id": id, "location_id": LOCATION,
            "evse_uid": evse_2})
    };
    let (url, status, answer) = f.command("RESERVE_NOW", reserve("R-1")).await;
    accepted(status, &answer, 30);
    let env = f.edge.next_command().await;
    let Command::ReserveNow { station, connector, id_tag, reservation_id: first_id, .. } = env.command.clone() else {
        panic!("not a ReserveNow: {:?}", env.command)
    };
    assert_eq!((station.as_str(), connector, id_tag.as_str()), ("CP-1", 2, "EMSP-R"));
    f.answer(&env, CommandOutcome::Rejected, json!({"status": "Occupied"})).await;
    let r = f.result(&url).await;
    assert_eq!(r["result"], "EVSE_OCCUPIED", "{r}");
    assert!(r["message"][0]["text"].as_str().is_some_and(|t| !t.is_empty()), "with a reason: {r}");

    let (url, _, _) = f.command("RESERVE_NOW", reserve("R-2")).await;
    let env = f.edge.next_command().await;
    let Command::ReserveNow { reservation_id, .. } = env.command.clone() else { panic!("{:?}", env.command) };
    assert_ne!(reservation_id, first_id, "each partner reservation has an OCPP id of its own");
    f.answer(&env, CommandOutcome::Accepted, json!({"status": "Accepted"})).await;
    assert_eq!(f.result(&url).await["result"], "ACCEPTED");
    let (url, status, answer) = f.command("CANCEL_RESERVATION", json!({"reservation_id": "R-2"})).await;
    accepted(status, &answer, 30);
    let env = f.edge.next_command().await;
    assert_eq!(env.command, Command::CancelReservation { station: "CP-1".into(), reservation_id });
    f.answer(&env, CommandOutcome::Accepted, json!({"status": "Accepted"})).await;
    assert_eq!(f.result(&url).await["result"], "ACCEPTED");
    // Cancelled already, and one that never was: UNKNOWN_RESERVATION, without the site.
    for id in ["R-2", "R-NEVER"] {
        let (url, status, answer) = f.command("CANCEL_RESERVATION", json!({"reservation_id": id})).await;
        accepted(status, &answer, 30);
        assert_eq!(f.result(&url).await["result"], "UNKNOWN_RESERVATION", "{id}");
    }

    // UNLOCK_CONNECTOR: the charger could not.
    let body = json!({"location_id": LOCATION, "evse_uid": f.evse(1), "connector_id": "1"});
    let (url, status, answer) = f.command("UNLOCK_CONNECTOR", body).await;
    accepted(status, &answer, 30);
    let env = f.edge.next_command().await;
    assert_eq!(env.command, Command::UnlockConnector { station: "CP-1".into(), connector: 1 });
    f.answer(&env, CommandOutcome::Rejected, json!({"status": "UnlockFailed"})).await;
    assert_eq!(f.result(&url).await["result"], "FAILED");

    // Every result was POSTed once, and the site commands carry who asked.
    let rows = all_posted(&f, 8).await;
    for row in &rows {
        assert!(row.posted_at.is_some() && row.post_tries == 1, "{row:?}");
    }
    let by_hub: Vec<_> = rows.iter().filter(|r| r.decided_by.as_deref() == Some("hub")).collect();
    assert_eq!(by_hub.len(), 2, "the unknown reservations needed no site");
    assert!(by_hub.iter().all(|r| r.site_command_id.is_none()));
    let sent = cloud_hub::commands::list(&f.running().store, "site-1", None, Utc::now(), 100, 0).await.expect("list");
    assert_eq!(sent.len(), 6);
    assert!(sent.iter().all(|c| c.issued_by.as_deref() == Some("ocpi:emsp")));
    f.shutdown().await;
}
on_both_databases!(every_command_round_trips, every_command_round_trips_sqlite, every_command_round_trips_postgres);

/// Bad requests: 2001 for a body that is not the command's object, 2003 (with a REJECTED
/// CommandResponse) for an unknown Location, EVSE or Connector, UNKNOWN_SESSION,
/// REJECTED for another party's token or session, 401 without a token.
async fn bad_requests_have_their_answers(backend: Backend) {
    let Some((_db, mut f)) = Fixture::new(backend, 30).await else { return };
    let code = |a: &simulators::emsp::Answer| (a.http, a.body["status_code"].as_u64());
    let ok_url = "https://emsp.example/r/1";

    let a = send(&f.emsp, "FLY_TO_THE_MOON", json!({"response_url": ok_url})).await;
    assert_eq!(code(&a), (400, Some(2001)), "{:?}", a.body);
    assert!(a.body["status_message"].as_str().is_some_and(|m| m.contains("START_SESSION")), "{:?}", a.body);
    let a = send(&f.emsp, "START_SESSION", json!("not an object")).await;
    assert_eq!(code(&a), (400, Some(2001)));
    let a = send(&f.emsp, "START_SESSION", json!({"location_id": LOCATION, "token": f.token("T1")})).await;
    assert_eq!(code(&a), (400, Some(2001)));
    assert!(a.body["status_message"].as_str().is_some_and(|m| m.contains("response_url")), "{:?}", a.body);
    let a = send(
        &f.emsp,
        "START_SESSION",
        json!({"response_url": "ftp://x/y", "location_id": LOCATION, "token": f.token("T1")}),
    )
    .await;
    assert_eq!(code(&a), (400, Some(2001)));
    let a = send(
        &f.emsp,
        "START_SESSION",
        json!({"response_url": ok_url, "location_id": LOCATION, "token": f.token("T1"), "connector_id": "1"}),
    )
    .await;
    assert_eq!(code(&a), (400, Some(2001)), "connector_id without evse_uid: {:?}", a.body);
    let a = send(
        &f.emsp,
        "RESERVE_NOW",
        json!({"response_url": ok_url, "location_id": LOCATION, "token": f.token("T1"), "reservation_id": "R",
            "expiry_date": "tomorrow"}),
    )
    .await;
    assert_eq!(code(&a), (400, Some(2001)));
    let a = send(&f.emsp, "STOP_SESSION", json!({"response_url": ok_url, "session_id": "x".repeat(37)})).await;
    assert_eq!(code(&a), (400, Some(2001)));

    // Unknown Location / EVSE / Connector: 2003 with REJECTED.
    for (location, evse, connector) in
        [("NOWHERE", f.evse(1), "1"), (LOCATION, "NO-SUCH-EVSE".to_owned(), "1"), (LOCATION, f.evse(1), "9")]
    {
        let a = send(
            &f.emsp,
            "UNLOCK_CONNECTOR",
            json!({"response_url": ok_url, "location_id": location, "evse_uid": evse, "connector_id": connector}),
        )
        .await;
        assert_eq!(code(&a), (404, Some(2003)), "{location} {evse} {connector}: {:?}", a.body);
        assert_eq!(a.body["data"]["result"], "REJECTED");
    }
    let a = send(
        &f.emsp,
        "START_SESSION",
        json!({"response_url": ok_url, "location_id": "NOWHERE", "token": f.token("T1")}),
    )
    .await;
    assert_eq!(code(&a), (404, Some(2003)));

    // Answers in the CommandResponse.
    let a = send(&f.emsp, "STOP_SESSION", json!({"response_url": ok_url, "session_id": "no-such-session"})).await;
    assert_eq!((code(&a), &a.body["data"]["result"]), ((200, Some(1000)), &json!("UNKNOWN_SESSION")));
    let mut other = f.emsp.token("T1");
    other.party_id = "XYZ".into();
    let a = send(
        &f.emsp,
        "START_SESSION",
        json!({"response_url": ok_url, "location_id": LOCATION, "evse_uid": f.evse(1), "token": other}),
    )
    .await;
    assert_eq!(a.body["data"]["result"], "REJECTED", "another party's token: {:?}", a.body);
    let long = "T".repeat(21);
    let a = send(
        &f.emsp,
        "START_SESSION",
        json!({"response_url": ok_url, "location_id": LOCATION, "evse_uid": f.evse(1), "token": f.token(&long)}),
    )
    .await;
    assert_eq!(a.body["data"]["result"], "REJECTED", "an id tag OCPP 1.6 cannot carry: {:?}", a.body);
    // A session of somebody else's token.
    f.event(|seq| tx_started(seq, "tx-other", 1, "LOCAL-RFID", "5")).await;
    let a = send(&f.emsp, "STOP_SESSION", json!({"response_url": ok_url, "session_id": "tx-other"})).await;
    assert_eq!(a.body["data"]["result"], "REJECTED", "{:?}", a.body);
    let a =
        f.emsp.charging_profile(reqwest::Method::DELETE, "tx-other", Some("response_url=https://e.x/r"), None).await;
    assert_eq!(a.expect("sent").body["data"]["result"], "REJECTED");

    // Charging profiles: bad bodies and queries.
    let profile = |periods: Value| json!({"response_url": ok_url, "charging_profile": {"charging_rate_unit": "A", "charging_profile_period": periods}});
    let bad = profile(json!([{"start_period": 10, "limit": 16}, {"start_period": 5, "limit": 8}]));
    let a = f.emsp.charging_profile(reqwest::Method::PUT, "tx-other", None, Some(&bad)).await.expect("sent");
    assert_eq!(code(&a), (400, Some(2001)), "{:?}", a.body);
    let a = f.emsp.charging_profile(reqwest::Method::GET, "tx-other", Some("response_url=https://e.x/r"), None).await;
    assert_eq!(code(&a.expect("sent")), (400, Some(2001)), "no duration");
    let good = profile(json!([{"start_period": 0, "limit": 16}]));
    let a = f.emsp.charging_profile(reqwest::Method::PUT, "no-such-session", None, Some(&good)).await.expect("sent");
    assert_eq!(a.body["data"]["result"], "UNKNOWN_SESSION", "{:?}", a.body);

    // No token; another method.
    let base = format!("http://{}/ocpi/2.2.1/commands/START_SESSION", f.running().http_addr);
    let r = f.http.post(&base).json(&json!({})).send().await.expect("sent");
    assert_eq!(r.status().as_u16(), 401);
    let cpo = f.emsp.cpo().expect("registered");
    let a = f.emsp.request(reqwest::Method::GET, &base, None, Some(&cpo.token)).await.expect("sent");
    assert_eq!(a.http, 405);
    // Nothing of this reached the site.
    assert!(f.edge.command_within(Duration::from_millis(300)).await.is_none());
    assert!(stored(&f.running().store, "emsp").await.expect("stored").is_empty());
    f.shutdown().await;
}
on_both_databases!(bad_requests_have_their_answers, bad_requests_sqlite, bad_requests_postgres);

/// A site that does not answer: TIMEOUT at the deadline, once; its late answer changes
/// nothing; the transaction it starts anyway is stopped. A hub stopped before a
/// deadline posts the TIMEOUT after its restart, and nothing twice.
async fn start_session_timeout(backend: Backend) {
    let Some((_db, mut f)) = Fixture::new(backend, 2).await else { return };
    let body = json!({"token": f.token("EMSP-LATE"), "location_id": LOCATION, "evse_uid": f.evse(1)});
    let (url, status, answer) = f.command("START_SESSION", body.clone()).await;
    accepted(status, &answer, 2);
    let env = f.edge.next_command().await;
    assert_eq!(env.expires_at, Some(env.issued_at + chrono::Duration::seconds(2)));
    let r = f.result(&url).await;
    assert_eq!(r["result"], "TIMEOUT", "{r}");
    // The site answers after the deadline, and its charger starts the transaction.
    f.answer(&env, CommandOutcome::Accepted, json!({"status": "Accepted"})).await;
    f.event(|seq| tx_started(seq, "tx-late", 1, "EMSP-LATE", "77")).await;
    let stop = f.edge.next_command().await;
    assert_eq!(stop.command, Command::RemoteStop { station: "CP-1".into(), transaction_id: 77 });
    let rows = stored(&f.running().store, "emsp").await.expect("stored");
    assert_eq!(rows[0].result.as_deref(), Some("TIMEOUT"));
    assert_eq!(rows[0].decided_by.as_deref(), Some("deadline"));
    assert_eq!(rows[0].late_session_uid.as_deref(), Some("tx-late"));
    assert_eq!(rows[0].late_stop_command_id.as_deref(), Some(stop.command_id.as_str()));
    assert!(rows[0].late_note.as_deref().is_some_and(|n| n.contains("TIMEOUT")), "{:?}", rows[0].late_note);

    // The hub stops before the next deadline and comes back after it.
    let (second, _, _) = f.command("START_SESSION", body).await;
    f.edge.next_command().await;
    if let Some(r) = f.running.take() {
        r.shutdown().await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    f.running = Some(start_hub(&f.config_path).await);
    assert_eq!(f.result(&second).await["result"], "TIMEOUT");
    // A request decided after the restart is the sync point: nothing came twice.
    let (sync, _, _) = f.command("CANCEL_RESERVATION", json!({"reservation_id": "none"})).await;
    f.result(&sync).await;
    assert_eq!(f.emsp.results_at(&url).len(), 1, "{:?}", f.emsp.results_at(&url));
    assert_eq!(f.emsp.results_at(&second).len(), 1);
    let rows = all_posted(&f, 3).await;
    assert!(rows.iter().all(|r| r.post_tries == 1), "{rows:#?}");
    f.shutdown().await;
}
on_both_databases!(start_session_timeout, start_session_timeout_sqlite, start_session_timeout_postgres);

/// An eMSP that refuses results for a moment gets them again, with backoff.
async fn results_are_retried(backend: Backend) {
    let Some((_db, f)) = Fixture::new(backend, 30).await else { return };
    f.emsp.fail_next_results(2);
    let (url, status, answer) = f.command("CANCEL_RESERVATION", json!({"reservation_id": "R-9"})).await;
    accepted(status, &answer, 30);
    assert_eq!(f.result(&url).await["result"], "UNKNOWN_RESERVATION");
    assert_eq!(f.emsp.result_attempts(&url), 3, "two refused, the third taken");
    assert_eq!(f.emsp.results_at(&url).len(), 1);
    let rows = stored(&f.running().store, "emsp").await.expect("stored");
    assert_eq!(rows[0].post_tries, 3);
    f.shutdown().await;
}
on_both_databases!(results_are_retried, results_are_retried_sqlite, results_are_retried_postgres);

/// Charging profiles on a session of the eMSP's own (pushed) token: PUT becomes a
/// session limit, GET the charger's composite schedule, DELETE clears it.
async fn charging_profiles(backend: Backend) {
    let Some((_db, mut f)) = Fixture::new(backend, 30).await else { return };
    f.emsp.push_token(&f.emsp.token("EMSP-CARD")).await.expect("token pushed");
    f.event(|seq| tx_started(seq, "tx-cp", 2, "EMSP-CARD", "12")).await;

    let url = f.emsp.response_url("chargingprofiles");
    let body = json!({"response_url": url, "charging_profile": {"charging_rate_unit": "W", "duration": 3600,
        "charging_profile_period": [{"start_period": 0, "limit": 7360}, {"start_period": 1800, "limit": 3680}]}});
    let a = f.emsp.charging_profile(reqwest::Method::PUT, "tx-cp", None, Some(&body)).await.expect("sent");
    assert_eq!((a.http, &a.body["data"]), (200, &json!({"result": "ACCEPTED", "timeout": 30})), "{:?}", a.body);
    let env = f.edge.next_command().await;
    let expected = SessionLimit {
        start: None,
        duration_s: Some(3600),
        unit: RateUnit::W,
        min_rate: None,
        periods: vec![LimitPeriod { start_s: 0, limit: 7360.0 }, LimitPeriod { start_s: 1800, limit: 3680.0 }],
    };
    assert_eq!(
        env.command,
        Command::SetSessionLimit { station: "CP-1".into(), connector: 2, transaction_id: 12, limit: Some(expected) }
    );
    f.answer(&env, CommandOutcome::Accepted, json!({"applied_by": "balancer"})).await;
    assert_eq!(f.result(&url).await, json!({"result": "ACCEPTED"}));

    let url = f.emsp.response_url("chargingprofiles");
    let query = format!("duration=900&response_url={url}");
    let a = f.emsp.charging_profile(reqwest::Method::GET, "tx-cp", Some(&query), None).await.expect("sent");
    assert_eq!(a.body["data"]["result"], "ACCEPTED", "{:?}", a.body);
    let env = f.edge.next_command().await;
    assert_eq!(env.command, Command::GetCompositeSchedule { station: "CP-1".into(), connector: 2, duration_s: 900 });
    let schedule = json!({"status": "Accepted", "connectorId": 2, "scheduleStart": "2026-11-21T12:00:00Z",
        "chargingSchedule": {"duration": 900, "chargingRateUnit": "A",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10.6}]}});
    f.answer(&env, CommandOutcome::Accepted, schedule).await;
    let r = f.result(&url).await;
    assert_eq!(r["result"], "ACCEPTED", "{r}");
    assert_eq!(r["profile"]["start_date_time"], "2026-11-21T12:00:00.000Z");
    assert_eq!(r["profile"]["charging_profile"]["charging_rate_unit"], "A");
    assert_eq!(
        r["profile"]["charging_profile"]["charging_profile_period"],
        json!([{"start_period": 0, "limit": 10.6}])
    );

    for (site_answer, expected) in [
        ((CommandOutcome::Accepted, json!({"cleared": true})), "ACCEPTED"),
        ((CommandOutcome::Rejected, json!({"status": "Unknown"})), "UNKNOWN"),
    ] {
        let url = f.emsp.response_url("chargingprofiles");
        let a = f
            .emsp
            .charging_profile(reqwest::Method::DELETE, "tx-cp", Some(&format!("response_url={url}")), None)
            .await
            .expect("sent");
        assert_eq!(a.body["data"]["result"], "ACCEPTED");
        let env = f.edge.next_command().await;
        assert_eq!(
            env.command,
            Command::SetSessionLimit { station: "CP-1".into(), connector: 2, transaction_id: 12, limit: None }
        );
        f.answer(&env, site_answer.0, site_answer.1).await;
        assert_eq!(f.result(&url).await, json!({"result": expected}));
    }

    // The site never answers: REJECTED at the deadline (the module has no TIMEOUT) is in
    // `start_session_timeout`'s terms; here a session that ended is REJECTED at once.
    f.event(|seq| tx_stopped(seq, "CP-1", "tx-cp", Some(5000))).await;
    let url = f.emsp.response_url("chargingprofiles");
    let a = f
        .emsp
        .charging_profile(reqwest::Method::DELETE, "tx-cp", Some(&format!("response_url={url}")), None)
        .await
        .expect("sent");
    assert_eq!(a.body["data"]["result"], "REJECTED", "{:?}", a.body);
    f.shutdown().await;
}
on_both_databases!(charging_profiles, charging_profiles_sqlite, charging_profiles_postgres);

/// Waits until `n` results were accepted at `url`; them.
async fn results(f: &Fixture, url: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = f.emsp.results_at(url);
        if got.len() >= n {
            return got;
        }
        assert!(tokio::time::Instant::now() < deadline, "{} of {n} results at {url}: {got:?}", got.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn reservation_status(f: &Fixture, reservation_id: &str) -> (String, bool) {
    let row = f
        .running()
        .store
        .fetch_opt(
            "SELECT status, reserved_seen_at FROM ocpi_reservations WHERE reservation_id = $1",
            &[reservation_id.into()],
            &[cloud_hub::db::Ty::Text, cloud_hub::db::Ty::Time],
        )
        .await
        .expect("query")
        .expect("a reservation row");
    (row.text(0).unwrap_or_default().to_owned(), row.time(1).is_some())
}

/// OCPI 2.2.1 ReserveNow: a reservation that ends at the charger without being used
/// (the connector leaves `Reserved` for `Available`: expired, or cancelled at the site
/// or by the CPO side) gets a second CommandResult, CANCELED_RESERVATION, at the
/// RESERVE_NOW's `response_url`, once. One its driver uses gets none, nor does one the
/// partner cancels itself (see `every_command_round_trips`).
async fn a_reservation_ending_unused_is_reported(backend: Backend) {
    let Some((_db, mut f)) = Fixture::new(backend, 30).await else { return };
    let expiry = shared_model::ocpi::timestamp(Utc::now() + chrono::Duration::minutes(15));
    let reserve = |f: &Fixture, id: &str, evse: i64| {
        json!({"token": f.token("EMSP-R"), "expiry_date": expiry, "reservation_id": id, "location_id": LOCATION,
            "evse_uid": f.evse(evse)})
    };

    // R-10 on EVSE 2: accepted, the connector shows Reserved, then Available again.
    let (url, status, answer) = f.command("RESERVE_NOW", reserve(&f, "R-10", 2)).await;
    accepted(status, &answer, 30);
    let env = f.edge.next_command().await;
    f.answer(&env, CommandOutcome::Accepted, json!({"status": "Accepted"})).await;
    assert_eq!(f.result(&url).await, json!({"result": "ACCEPTED"}));
    f.event(|seq| connector_status(seq, "CP-1", 2, ConnectorStatus::Reserved)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while reservation_status(&f, "R-10").await != ("active".to_owned(), true) {
        assert!(tokio::time::Instant::now() < deadline, "the hub notes the Reserved connector");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Held: nothing more for the partner.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.emsp.results_at(&url).len(), 1);
    f.event(|seq| connector_status(seq, "CP-1", 2, ConnectorStatus::Available)).await;
    let got = results(&f, &url, 2).await;
    assert_eq!(got[1]["result"], "CANCELED_RESERVATION", "{got:?}");
    assert!(got[1]["message"][0]["text"].as_str().is_some_and(|t| t.contains("without a session")), "{got:?}");
    assert_eq!(reservation_status(&f, "R-10").await.0, "ended");

    // R-11 on EVSE 1: used by its driver (Preparing, then the session): no second result.
    let (url_used, _, _) = f.command("RESERVE_NOW", reserve(&f, "R-11", 1)).await;
    let env = f.edge.next_command().await;
    f.answer(&env, CommandOutcome::Accepted, json!({"status": "Accepted"})).await;
    assert_eq!(f.result(&url_used).await["result"], "ACCEPTED");
    f.event(|seq| connector_status(seq, "CP-1", 1, ConnectorStatus::Reserved)).await;
    f.event(|seq| connector_status(seq, "CP-1", 1, ConnectorStatus::Preparing)).await;
    f.event(|seq| tx_started(seq, "tx-reserved", 1, "EMSP-R", "77")).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while reservation_status(&f, "R-11").await.0 != "used" {
        assert!(tokio::time::Instant::now() < deadline, "the reservation is used");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f.event(|seq| connector_status(seq, "CP-1", 1, ConnectorStatus::Available)).await;

    // Each result once, also after more rounds of the watcher.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(f.emsp.results_at(&url).len(), 2, "CANCELED_RESERVATION once");
    assert_eq!(f.emsp.results_at(&url_used).len(), 1, "a used reservation gets no second result");
    let rows = all_posted(&f, 3).await;
    let ended: Vec<_> = rows.iter().filter(|r| r.command == "RESERVATION_ENDED").collect();
    assert_eq!(ended.len(), 1, "{rows:#?}");
    assert_eq!(ended[0].result.as_deref(), Some("CANCELED_RESERVATION"));
    assert_eq!(ended[0].decided_by.as_deref(), Some("site"));
    f.shutdown().await;
}
on_both_databases!(a_reservation_ending_unused_is_reported, reservation_ends_sqlite, reservation_ends_postgres);

/// Version details list the two Receivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_details_list_commands_and_charging_profiles() {
    let Some((_db, f)) = Fixture::new(Backend::Sqlite, 30).await else { return };
    let cpo = f.emsp.cpo().expect("registered");
    for module in ["commands", "chargingprofiles"] {
        let url = cpo.details.url(module, "RECEIVER").unwrap_or_else(|| panic!("{module} Receiver"));
        assert!(url.ends_with(&format!("/ocpi/2.2.1/{module}")), "{url}");
    }
    f.shutdown().await;
}
