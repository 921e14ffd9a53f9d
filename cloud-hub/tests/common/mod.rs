//! Shared setup for the hub's integration tests: a real database (a SQLite file or a
//! fresh PostgreSQL database), a hub started from a real config file, and an edge played
//! by a rumqttc client over a real broker (the hub's embedded rumqttd, or Mosquitto).
//!
//! PostgreSQL and Mosquitto are used where they run (`SITEPILOT_TEST_PG`, default
//! `postgres://postgres@127.0.0.1:5432/test`; `SITEPILOT_TEST_MQTT`, default
//! `127.0.0.1:1883`). When one is absent a test says why and returns early, except with
//! `CI=true`, where that is a failure.

#![allow(dead_code)]

use chrono::{DateTime, TimeZone, Utc};
use cloud_hub::app::Running;
use cloud_hub::config::Config;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::Value;
use shared_model::events::SiteEvent;
use shared_model::model::{ConnectorRef, ConnectorStatus, MeterSample, StationInfo, StopReason, TransactionOrigin};
use shared_model::sync::{
    Ack, CommandEnvelope, CommandOutcome, CommandResult, EventBatch, EventEnvelope, Hello, PROTOCOL_VERSION, Topic,
};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

pub const TIMEOUT: Duration = Duration::from_secs(15);

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Which broker a test runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    /// The hub's embedded rumqttd.
    Embedded,
    /// The Mosquitto running on this machine (shared subscriptions).
    Mosquitto,
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Says why a test cannot run here; a failure in CI.
pub fn skip(reason: &str) {
    if in_ci() {
        panic!("CI=true and {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

fn pg_admin_url() -> String {
    std::env::var("SITEPILOT_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn mqtt_addr() -> String {
    std::env::var("SITEPILOT_TEST_MQTT").unwrap_or_else(|_| "127.0.0.1:1883".to_owned())
}

/// A database of its own for one test: a SQLite file in a temporary directory, or a
/// PostgreSQL database created for it and dropped afterwards.
pub struct TestDb {
    pub url: String,
    pub dir: tempfile::TempDir,
    pg_name: Option<String>,
}

impl TestDb {
    /// `None` when the backend is not available here (already reported by [`skip`]).
    pub async fn new(backend: Backend) -> Option<TestDb> {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => Some(TestDb { url: "sqlite://hub.db".to_owned(), dir, pg_name: None }),
            Backend::Postgres => {
                use sqlx::Connection as _;
                let admin = pg_admin_url();
                let mut conn = match sqlx::PgConnection::connect(&admin).await {
                    Ok(c) => c,
                    Err(e) => {
                        skip(&format!("PostgreSQL is not reachable at {admin}: {e}"));
                        return None;
                    }
                };
                let name = format!("hubtest_{}", uuid::Uuid::new_v4().simple());
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create the test database");
                let _ = conn.close().await;
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                Some(TestDb { url: format!("{base}/{name}"), dir, pg_name: Some(name) })
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else { return };
        // Drop runs outside any runtime's control (maybe while panicking): use a thread
        // with a runtime of its own.
        let admin = pg_admin_url();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                use sqlx::Connection as _;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// Whether Mosquitto answers (reported by [`skip`] when not).
pub async fn mosquitto_available() -> bool {
    let addr = mqtt_addr();
    match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(&addr)).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            skip(&format!("no MQTT broker (Mosquitto) at {addr}: {e}"));
            false
        }
        Err(_) => {
            skip(&format!("no MQTT broker (Mosquitto) at {addr}: timeout"));
            false
        }
    }
}

/// A hub under test: its config file, and the running hub.
pub struct TestHub {
    pub config_path: PathBuf,
    pub config: Config,
    pub running: Option<Running>,
}

impl TestHub {
    /// Writes a config next to the database and starts a hub from it.
    pub async fn start(db: &TestDb, broker: Broker) -> TestHub {
        let mqtt = match broker {
            Broker::Embedded => "listen = \"127.0.0.1:0\"\n".to_owned(),
            Broker::Mosquitto => {
                // A group and client id of its own: tests running at the same time on
                // the same Mosquitto must not take each other's messages.
                let id = uuid::Uuid::new_v4().simple().to_string();
                format!(
                    "url = \"mqtt://{}\"\nclient_id = \"hubtest-{id}\"\nshare_group = \"hubtest-{id}\"\n",
                    mqtt_addr()
                )
            }
        };
        let text = format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\n{mqtt}[database]\nurl = \"{}\"\nmax_connections = 4\n\
             [ingest]\nworkers = 2\n",
            db.url
        );
        let config_path = db.dir.path().join("cloud-hub.toml");
        std::fs::write(&config_path, text).expect("write the config");
        let config = Config::load(&config_path).map_err(|e| e.to_string()).expect("valid test config");
        let mut hub = TestHub { config_path, config, running: None };
        hub.restart().await;
        hub
    }

    /// Starts the hub again (after [`TestHub::stop`]) on the same database and, for the
    /// embedded broker, the same port.
    pub async fn restart(&mut self) {
        let running =
            cloud_hub::app::start(self.config.clone()).await.map_err(|e| format!("{e:#}")).expect("hub starts");
        assert!(running.wait_ready(TIMEOUT).await, "the hub's MQTT client subscribes");
        if let (cloud_hub::config::BrokerPlan::Embedded { listen }, Some(actual)) =
            (&mut self.config.broker, running.embedded_broker)
        {
            *listen = actual;
        }
        self.running = Some(running);
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("the hub runs")
    }

    pub fn store(&self) -> &cloud_hub::db::Store {
        &self.running().store
    }

    /// `host:port` where sites connect.
    pub fn broker_host_port(&self) -> (String, u16) {
        let url = &self.running().broker_url;
        let rest = url.strip_prefix("mqtt://").expect("mqtt:// url");
        let (host, port) = rest.rsplit_once(':').expect("host:port");
        (host.trim_matches(['[', ']']).to_owned(), port.parse().expect("port"))
    }

    /// Provisions a site; its id and password.
    pub async fn add_site(&self, name: &str) -> (String, String) {
        let creds =
            cloud_hub::sites::add_site(self.store(), name, None, &self.config.mqtt.username).await.expect("site added");
        (creds.site_id, creds.mqtt_password)
    }

    /// Connects an edge for a site; on Mosquitto (anonymous here) without credentials.
    pub async fn edge(&self, site: &str, password: &str) -> Edge {
        let (host, port) = self.broker_host_port();
        let creds = self.running().embedded_broker.is_some().then(|| (site.to_owned(), password.to_owned()));
        Edge::connect(&host, port, site, creds).await
    }

    pub async fn metrics_text(&self) -> String {
        self.running().metrics.encode()
    }

    /// Makes an API key with `role`; its token.
    pub async fn api_key(&self, name: &str, role: cloud_hub::auth::Role) -> String {
        cloud_hub::auth::add_key(self.store(), name, role).await.expect("key added").token
    }

    /// A client of the hub's HTTP server.
    pub fn http(&self) -> Http {
        Http { base: format!("http://{}", self.running().http_addr), client: reqwest::Client::new() }
    }
}

/// An HTTP answer: status, headers and body (JSON when it parses, else a string).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem JSON answer with `status` whose detail contains `needle`.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, needle: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "{self:?}");
        assert_eq!(self.body["status"], status, "{self:?}");
        assert_eq!(self.body["type"], "about:blank", "{self:?}");
        let detail = self.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(needle), "detail {detail:?} should contain {needle:?}");
    }
}

/// A small HTTP client of the hub.
pub struct Http {
    pub base: String,
    client: reqwest::Client,
}

impl Http {
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, &str)>,
    ) -> Answer {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        if let Some((content_type, body)) = body {
            req = req.header("content-type", content_type).body(body.to_owned());
        }
        let res = req.send().await.expect("HTTP request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, headers, body }
    }

    /// A GET with this `Authorization` header value.
    pub async fn client_request(&self, path: &str, authorization: &str) -> Answer {
        let res = self
            .client
            .get(format!("{}{path}", self.base))
            .header("authorization", authorization)
            .send()
            .await
            .expect("HTTP request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, headers, body }
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.send(reqwest::Method::GET, path, Some(token), None).await
    }

    pub async fn post_json(&self, path: &str, token: &str, body: &Value) -> Answer {
        self.send(reqwest::Method::POST, path, Some(token), Some(("application/json", &body.to_string()))).await
    }
}

/// Checks `instance` against the OpenAPI document's component schema `name`.
#[track_caller]
pub fn assert_schema(doc: &Value, name: &str, instance: &Value) {
    let schema = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{name}"),
        "components": doc["components"],
    });
    let validator = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("schema {name} compiles: {e}"));
    let errors: Vec<String> =
        validator.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{name}: {errors:?}\n{instance:#}");
}

impl Drop for TestHub {
    fn drop(&mut self) {
        // A hub still running at the end of a test (a failed assertion) is dropped with
        // the runtime; nothing to do.
    }
}

/// An edge agent played by a test: publishes batches, hellos and command results on its
/// site's topics and collects the acks and the commands the hub sends.
pub struct Edge {
    pub site: String,
    pub client: AsyncClient,
    acks: mpsc::UnboundedReceiver<Ack>,
    commands: mpsc::UnboundedReceiver<CommandEnvelope>,
    ready: watch::Receiver<bool>,
    /// Why the connection last failed (e.g. a refused login).
    pub last_error: watch::Receiver<Option<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Edge {
    /// Connects and subscribes to the site's acks and commands (again after every
    /// reconnect).
    pub async fn connect(host: &str, port: u16, site: &str, creds: Option<(String, String)>) -> Edge {
        let edge = Edge::connect_no_wait(host, port, site, creds);
        let mut ready = edge.ready.clone();
        let ok = tokio::time::timeout(TIMEOUT, ready.wait_for(|r| *r)).await.is_ok_and(|r| r.is_ok());
        assert!(ok, "edge {site} connects and subscribes (last error: {:?})", edge.last_error.borrow().clone());
        edge
    }

    /// Starts connecting without waiting (for tests of refused logins).
    pub fn connect_no_wait(host: &str, port: u16, site: &str, creds: Option<(String, String)>) -> Edge {
        let mut options = MqttOptions::new(format!("edge-{site}-{}", uuid::Uuid::new_v4().simple()), host, port);
        options.set_keep_alive(Duration::from_secs(10));
        options.set_max_packet_size(2 * 1024 * 1024, 2 * 1024 * 1024);
        if let Some((user, password)) = creds {
            options.set_credentials(user, password);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let (acks_tx, acks) = mpsc::unbounded_channel();
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let (ready_tx, ready) = watch::channel(false);
        let (error_tx, last_error) = watch::channel(None);
        let ack_topic = Topic::Acks.of(site);
        let command_topic = Topic::Commands.of(site);
        let sub_client = client.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        let filters = [&ack_topic, &command_topic]
                            .map(|t| rumqttc::SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
                        let _ = sub_client.try_subscribe_many(filters);
                    }
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        let _ = ready_tx.send(true);
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        if p.topic == ack_topic {
                            match serde_json::from_slice::<Ack>(&p.payload) {
                                Ok(ack) => {
                                    let _ = acks_tx.send(ack);
                                }
                                Err(e) => panic!("the hub sent an ack that does not parse: {e}"),
                            }
                        } else if p.topic == command_topic {
                            match serde_json::from_slice::<CommandEnvelope>(&p.payload) {
                                Ok(env) => {
                                    let _ = commands_tx.send(env);
                                }
                                Err(e) => panic!("the hub sent a command envelope that does not parse: {e}"),
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = ready_tx.send(false);
                        let _ = error_tx.send(Some(e.to_string()));
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        Edge { site: site.to_owned(), client, acks, commands, ready, last_error, task }
    }

    /// Waits until connected and subscribed again (after a broker restart).
    pub async fn wait_ready(&self) {
        let mut ready = self.ready.clone();
        let ok = tokio::time::timeout(TIMEOUT, ready.wait_for(|r| *r)).await.is_ok_and(|r| r.is_ok());
        assert!(ok, "edge {} reconnects", self.site);
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the connection is down (e.g. dropped by the broker's ACL).
    pub async fn wait_disconnected(&self) -> bool {
        let mut ready = self.ready.clone();
        tokio::time::timeout(TIMEOUT, ready.wait_for(|r| !*r)).await.is_ok_and(|r| r.is_ok())
    }

    pub async fn publish(&self, topic: String, payload: Vec<u8>) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload).await.expect("queue a publish");
    }

    pub async fn send_batch(&self, batch: &EventBatch) {
        self.publish(Topic::Events.of(&self.site), serde_json::to_vec(batch).expect("serialise")).await;
    }

    pub async fn send_hello(&self, oldest: Option<u64>, newest: Option<u64>) {
        let hello = Hello {
            v: PROTOCOL_VERSION,
            site_id: self.site.clone(),
            agent_version: "test-edge 0.0.1".into(),
            oldest_unacked: oldest,
            newest,
            at: Utc::now(),
        };
        self.publish(Topic::Hello.of(&self.site), serde_json::to_vec(&hello).expect("serialise")).await;
    }

    /// The next ack; fails the test after [`TIMEOUT`].
    pub async fn next_ack(&mut self) -> Ack {
        match tokio::time::timeout(TIMEOUT, self.acks.recv()).await {
            Ok(Some(ack)) => ack,
            Ok(None) => panic!("edge {}: the ack channel closed", self.site),
            Err(_) => panic!("edge {}: no ack within {TIMEOUT:?}", self.site),
        }
    }

    /// Whether an ack arrives within `wait`.
    pub async fn ack_within(&mut self, wait: Duration) -> Option<Ack> {
        tokio::time::timeout(wait, self.acks.recv()).await.ok().flatten()
    }

    /// The next command the hub sends; fails the test after [`TIMEOUT`].
    pub async fn next_command(&mut self) -> CommandEnvelope {
        match tokio::time::timeout(TIMEOUT, self.commands.recv()).await {
            Ok(Some(env)) => env,
            Ok(None) => panic!("edge {}: the command channel closed", self.site),
            Err(_) => panic!("edge {}: no command within {TIMEOUT:?}", self.site),
        }
    }

    /// Whether a command arrives within `wait`.
    pub async fn command_within(&mut self, wait: Duration) -> Option<CommandEnvelope> {
        tokio::time::timeout(wait, self.commands.recv()).await.ok().flatten()
    }

    /// Publishes a result on `up/results`.
    pub async fn send_result(&self, result: &CommandResult) {
        self.publish(Topic::Results.of(&self.site), serde_json::to_vec(result).expect("serialise")).await;
    }

    /// The result a site sends for a command.
    pub fn result_for(&self, command_id: &str, outcome: CommandOutcome, detail: Value) -> CommandResult {
        CommandResult {
            v: PROTOCOL_VERSION,
            site_id: self.site.clone(),
            command_id: command_id.to_owned(),
            outcome,
            detail,
            at: Utc::now(),
        }
    }

    /// Sends a batch and returns the ack that answers it.
    pub async fn roundtrip(&mut self, batch: &EventBatch) -> u64 {
        self.send_batch(batch).await;
        let ack = self.next_ack().await;
        assert_eq!(ack.site_id, self.site);
        assert_eq!(ack.v, PROTOCOL_VERSION);
        ack.applied_through
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---- events ----------------------------------------------------------------------

pub fn t(minute: u32, second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 12, minute, second).single().expect("valid time")
}

pub fn envelope(seq: u64, event: &SiteEvent) -> EventEnvelope {
    EventEnvelope::new(seq, uuid::Uuid::new_v4().to_string(), t(0, 0), event).expect("serialise")
}

pub fn batch(site: &str, events: Vec<EventEnvelope>) -> EventBatch {
    EventBatch { v: PROTOCOL_VERSION, site_id: site.to_owned(), events }
}

/// A connection event (a simple event with a visible effect).
pub fn connection(seq: u64, station: &str) -> EventEnvelope {
    envelope(
        seq,
        &SiteEvent::StationConnection { station: station.into(), connected: seq % 2 == 1, at: t(0, seq as u32 % 60) },
    )
}

/// Batch of connection events `from..=to`.
pub fn connections(site: &str, from: u64, to: u64) -> EventBatch {
    batch(site, (from..=to).map(|s| connection(s, "CP-1")).collect())
}

pub fn booted(seq: u64, station: &str) -> EventEnvelope {
    envelope(
        seq,
        &SiteEvent::StationBooted {
            station: station.into(),
            info: StationInfo {
                vendor: "Acme".into(),
                model: "Wallbox 22".into(),
                serial_number: Some("SN-1".into()),
                firmware_version: Some("1.2.3".into()),
                ..StationInfo::default()
            },
            registration: "Accepted".into(),
            at: t(0, 1),
        },
    )
}

pub fn connector_status(seq: u64, station: &str, evse: u32, status: ConnectorStatus) -> EventEnvelope {
    envelope(
        seq,
        &SiteEvent::ConnectorStatus {
            station: station.into(),
            connector: ConnectorRef { evse, connector: 1 },
            status,
            error_code: Some("NoError".into()),
            info: None,
            vendor_error_code: None,
            at: t(0, 2),
        },
    )
}

pub fn tx_started(seq: u64, station: &str, uid: &str, meter_start: i64) -> EventEnvelope {
    envelope(
        seq,
        &SiteEvent::TransactionStarted {
            station: station.into(),
            transaction_uid: uid.into(),
            station_transaction_id: "17".into(),
            connector: ConnectorRef { evse: 1, connector: 1 },
            id_tag: Some("TAG-1".into()),
            meter_start_wh: Some(meter_start),
            started_at: Some(t(1, 0)),
            origin: TransactionOrigin::Online,
        },
    )
}

pub fn sample(minute: u32, value: &str, unit: Option<&str>, measurand: &str) -> MeterSample {
    MeterSample {
        timestamp: t(minute, 0),
        value: value.into(),
        measurand: measurand.into(),
        phase: None,
        location: Some("Outlet".into()),
        unit: unit.map(str::to_owned),
        context: Some("Sample.Periodic".into()),
        format: Some("Raw".into()),
    }
}

pub fn meter_values(seq: u64, station: &str, uid: Option<&str>, samples: Vec<MeterSample>) -> EventEnvelope {
    envelope(
        seq,
        &SiteEvent::MeterValues {
            station: station.into(),
            connector: ConnectorRef { evse: 1, connector: 1 },
            transaction_uid: uid.map(str::to_owned),
            samples,
        },
    )
}

pub fn tx_stopped(seq: u64, station: &str, uid: &str, meter_stop: Option<i64>) -> EventEnvelope {
    envelope(
        seq,
        &SiteEvent::TransactionStopped {
            station: station.into(),
            transaction_uid: uid.into(),
            meter_stop_wh: meter_stop,
            stopped_at: t(30, 0),
            reason: Some(StopReason::EVDisconnected),
            id_tag: Some("TAG-1".into()),
            reconciled: false,
        },
    )
}

/// An event of a kind this hub does not know (from a newer edge).
pub fn from_the_future(seq: u64) -> EventEnvelope {
    EventEnvelope {
        seq,
        event_id: uuid::Uuid::new_v4().to_string(),
        at: t(0, 3),
        kind: "solar_forecast".into(),
        payload: serde_json::value::to_raw_value(
            &serde_json::json!({"type": "solar_forecast", "kw": [1.5, 2.5], "nested": {"a": 1}}),
        )
        .expect("JSON"),
    }
}

/// The count of rows in a table for a site.
pub async fn count(store: &cloud_hub::db::Store, sql: &'static str, site: &str) -> i64 {
    store
        .fetch_opt(sql, &[site.into()], &[cloud_hub::db::Ty::Int])
        .await
        .expect("count query")
        .and_then(|r| r.int(0))
        .expect("a count")
}

/// `name{labels} value` from the Prometheus text.
pub fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

pub fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("json")
}
