//! Sync over a real MQTT broker: an embedded rumqttd on a free port (and, in one test,
//! the machine's Mosquitto), an in-process agent with a real SQLite file, and a small hub
//! peer written here that applies batches the way SYNC.md says (strictly in order, at most
//! once per seq) and answers with cumulative acks. Broker outages are made by a TCP proxy
//! between the agent and the broker that drops every connection while it is "down".
//!
//! Waits poll with a generous deadline (a hung test, not a timing check).

#![allow(clippy::unwrap_used)]

use chrono::{Duration as ChronoDuration, Utc};
use edge_agent::app::Running;
use edge_agent::config::Config;
use futures_util::{SinkExt, StreamExt};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use shared_model::events::SiteEvent;
use shared_model::sync::{
    Ack, AuthAnswer, AuthRequest, AuthVerdict, Command, CommandEnvelope, CommandOutcome, CommandResult, EventBatch,
    Hello, LocalListEntry, PROTOCOL_VERSION, Status, Topic,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const WAIT: Duration = Duration::from_secs(20);

// ------------------------------------------------------------------------ brokers

/// Starts rumqttd on a port that was free a moment ago, and checks that the broker
/// answering there is this one (its thread still runs, a message goes round trip);
/// another port is tried otherwise.
async fn embedded_broker() -> SocketAddr {
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let connections = rumqttd::ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: 16 * 1024 * 1024,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        };
        let server = rumqttd::ServerSettings {
            name: format!("v4-{port}"),
            listen: addr,
            tls: None,
            next_connection_delay_ms: 1,
            connections,
        };
        let config = rumqttd::Config {
            id: 0,
            router: rumqttd::RouterConfig {
                max_connections: 100,
                max_outgoing_packet_count: 200,
                max_segment_size: 100 * 1024 * 1024,
                max_segment_count: 10,
                ..Default::default()
            },
            v4: Some(HashMap::from([("1".to_owned(), server)])),
            ..Default::default()
        };
        let thread = std::thread::spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            let _ = broker.start();
        });
        if round_trip(addr).await && !thread.is_finished() {
            return addr;
        }
    }
    panic!("could not start an embedded broker");
}

/// Whether an MQTT broker at `addr` delivers a message to its sender.
async fn round_trip(addr: SocketAddr) -> bool {
    let id = format!("probe-{}", uuid::Uuid::new_v4().simple());
    let (client, mut eventloop) = AsyncClient::new(MqttOptions::new(&id, addr.ip().to_string(), addr.port()), 10);
    let topic = format!("probe/{id}");
    let probe = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    client.subscribe(&topic, QoS::AtLeastOnce).await.ok()?;
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    client.publish(&topic, QoS::AtLeastOnce, false, b"x".to_vec()).await.ok()?;
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == topic => return Some(()),
                Ok(_) => {}
                // Not listening yet (the broker thread is starting), or nothing there.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), probe).await.ok().flatten().is_some()
}

/// The machine's Mosquitto on 127.0.0.1:1883, if it runs; with CI=true it must.
async fn mosquitto() -> Option<SocketAddr> {
    let addr = SocketAddr::from(([127, 0, 0, 1], 1883));
    if round_trip(addr).await {
        return Some(addr);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true but no MQTT broker answers on {addr} (Mosquitto is expected there in CI)");
    }
    eprintln!("skipping: no Mosquitto on {addr} (install and start mosquitto to run this test)");
    None
}

/// A TCP proxy in front of the broker: `down()` drops every connection and refuses new
/// ones (they are accepted and closed at once) until `up()`.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection close
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns2.lock().unwrap().push(task);
            }
        });
        Proxy { addr, up, conns, accept }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.down();
    }
}

// ------------------------------------------------------------------------ the hub peer

#[derive(Default)]
struct HubState {
    applied_through: u64,
    /// Applied events: (seq, event_id, kind, payload).
    applied: Vec<(u64, String, String, Value)>,
    /// Every batch received: (first, last).
    batches: Vec<(u64, u64)>,
    /// Batches that did not continue where the hub stood.
    gaps: usize,
    /// Batches to lose (as a hub restart would).
    drop_next: usize,
    /// Acks held back while true.
    hold: bool,
    hellos: Vec<Hello>,
    statuses: Vec<bool>,
    results: Vec<CommandResult>,
    /// Authorization requests received.
    auth_requests: Vec<AuthRequest>,
    /// The verdict to answer them with; `None`: silent, like a hub that predates `up/auth`.
    auth_verdict: Option<AuthVerdict>,
}

/// A hub written for the tests: applies batches in order, acks cumulatively.
struct Hub {
    site: String,
    client: AsyncClient,
    state: Arc<Mutex<HubState>>,
    task: JoinHandle<()>,
}

impl Hub {
    async fn start(broker: SocketAddr, site: &str) -> Hub {
        let mut opts = MqttOptions::new(format!("hub-{site}"), broker.ip().to_string(), broker.port());
        opts.set_max_packet_size(16 * 1024 * 1024, 16 * 1024 * 1024);
        let (client, mut eventloop) = AsyncClient::new(opts, 1000);
        let state: Arc<Mutex<HubState>> = Arc::default();
        let (st, cl, s) = (state.clone(), client.clone(), site.to_owned());
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready = Some(ready_tx);
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        cl.try_subscribe(format!("sitepilot/v1/{s}/up/#"), QoS::AtLeastOnce).unwrap();
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => Hub::on_message(&st, &cl, &s, &p.topic, &p.payload),
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(WAIT, ready_rx).await.unwrap().unwrap();
        Hub { site: site.to_owned(), client, state, task }
    }

    fn on_message(state: &Mutex<HubState>, client: &AsyncClient, site: &str, topic: &str, payload: &[u8]) {
        let Some((s, kind)) = Topic::parse(topic) else { return };
        assert_eq!(s, site);
        let mut st = state.lock().unwrap();
        match kind {
            Topic::Events => {
                let batch: EventBatch = serde_json::from_slice(payload).unwrap();
                assert_eq!(batch.v, PROTOCOL_VERSION);
                assert_eq!(batch.site_id, site);
                batch.check().unwrap();
                let (first, last) = batch.range().unwrap();
                st.batches.push((first, last));
                if st.drop_next > 0 {
                    st.drop_next -= 1;
                    return;
                }
                if first > st.applied_through + 1 {
                    st.gaps += 1;
                } else {
                    let from = st.applied_through;
                    for e in batch.events.into_iter().filter(|e| e.seq > from) {
                        st.applied_through = e.seq;
                        let payload = e.payload_value().unwrap();
                        st.applied.push((e.seq, e.event_id, e.kind, payload));
                    }
                }
            }
            Topic::Hello => st.hellos.push(serde_json::from_slice(payload).unwrap()),
            Topic::Status => {
                if !payload.is_empty() {
                    st.statuses.push(serde_json::from_slice::<Status>(payload).unwrap().online);
                }
                return;
            }
            Topic::Results => {
                st.results.push(serde_json::from_slice(payload).unwrap());
                return;
            }
            Topic::AuthRequests => {
                let req: AuthRequest = serde_json::from_slice(payload).unwrap();
                if let Some(verdict) = st.auth_verdict {
                    let answer = AuthAnswer {
                        v: PROTOCOL_VERSION,
                        site_id: site.to_owned(),
                        request_id: req.request_id.clone(),
                        id_tag: req.id_tag.clone(),
                        verdict,
                        expiry: None,
                        source: Some("test hub".into()),
                        at: Utc::now(),
                    };
                    let payload = serde_json::to_vec(&answer).unwrap();
                    client.try_publish(Topic::AuthAnswers.of(site), QoS::AtLeastOnce, false, payload).unwrap();
                }
                st.auth_requests.push(req);
                return;
            }
            Topic::Acks | Topic::Commands | Topic::AuthAnswers => return,
        }
        if !st.hold {
            Hub::ack(client, site, st.applied_through);
        }
    }

    fn ack(client: &AsyncClient, site: &str, applied_through: u64) {
        let ack = Ack { v: PROTOCOL_VERSION, site_id: site.to_owned(), applied_through, window: None };
        client.try_publish(Topic::Acks.of(site), QoS::AtLeastOnce, false, serde_json::to_vec(&ack).unwrap()).unwrap();
    }

    fn send_ack(&self, applied_through: u64) {
        Hub::ack(&self.client, &self.site, applied_through);
    }

    /// Holds acks back; releasing publishes where the hub stands (when `answer`).
    fn hold(&self, hold: bool, answer: bool) {
        let through = {
            let mut st = self.state.lock().unwrap();
            st.hold = hold;
            st.applied_through
        };
        if !hold && answer {
            self.send_ack(through);
        }
    }

    fn command(&self, command_id: &str, expires_in: Option<ChronoDuration>, command: Command) {
        let env = CommandEnvelope {
            v: PROTOCOL_VERSION,
            site_id: self.site.clone(),
            command_id: command_id.to_owned(),
            issued_at: Utc::now(),
            expires_at: expires_in.map(|d| Utc::now() + d),
            command,
        };
        self.raw_command(serde_json::to_vec(&env).unwrap());
    }

    fn raw_command(&self, payload: Vec<u8>) {
        self.client.try_publish(Topic::Commands.of(&self.site), QoS::AtLeastOnce, false, payload).unwrap();
    }

    fn with<R>(&self, f: impl FnOnce(&HubState) -> R) -> R {
        f(&self.state.lock().unwrap())
    }

    async fn wait(&self, what: &str, done: impl Fn(&HubState) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.with(&done) {
            assert!(tokio::time::Instant::now() < deadline, "hub: never {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn results_of(&self, command_id: &str) -> Vec<CommandResult> {
        self.with(|s| s.results.iter().filter(|r| r.command_id == command_id).cloned().collect())
    }

    /// Every seq 1..=n applied once, in order, with the ids the outbox gave them.
    fn assert_applied_once_in_order(&self, n: u64) {
        self.with(|s| {
            let seqs: Vec<u64> = s.applied.iter().map(|a| a.0).collect();
            assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
            let mut ids: Vec<&String> = s.applied.iter().map(|a| &a.1).collect();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len() as u64, n, "event ids are unique");
        });
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ------------------------------------------------------------------------ the agent

static SITES: AtomicU64 = AtomicU64::new(0);

fn site_id() -> String {
    format!("sync-{}-{}", std::process::id(), SITES.fetch_add(1, Ordering::SeqCst))
}

fn config_text(db: &Path, site: &str, broker: SocketAddr, sync_extra: &str) -> String {
    format!(
        "[site]\nid = \"{site}\"\n\n\
         [ocpp]\nlisten = \"127.0.0.1:0\"\nsecurity_profile = 0\ncall_timeout_s = 5\n\n\
         [store]\npath = \"{}\"\nsynchronous = \"normal\"\n\n\
         [api]\nlisten = \"127.0.0.1:0\"\n\n\
         [[chargers]]\nid = \"CP-1\"\n\n\
         [sync]\nbroker = \"mqtt://{broker}\"\nbatch_size = 7\nmax_inflight_batches = 3\npoll_interval_ms = 50\n\
         reconnect_min_ms = 50\nreconnect_max_s = 1\nkeepalive_s = 5\n{sync_extra}\n",
        db.display()
    )
}

struct Agent {
    running: Running,
    http: reqwest::Client,
}

impl Agent {
    async fn start(text: &str) -> Agent {
        let config = Config::parse(Path::new("sync-test.toml"), text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        Agent { running: edge_agent::app::start(config).await.unwrap(), http: reqwest::Client::new() }
    }

    /// Writes `n` events (one transaction), as a burst of station changes would.
    async fn events(&self, n: usize) {
        self.running
            .shared
            .store
            .write(move |c| {
                for i in 0..n {
                    let ev = SiteEvent::StationConnection {
                        station: format!("CP-{i}"),
                        connected: i % 2 == 0,
                        at: Utc::now(),
                    };
                    edge_agent::chargers::emit(c, &ev, Utc::now())?;
                }
                Ok(())
            })
            .await
            .unwrap();
    }

    /// The outbox: (seq, event_id).
    async fn outbox(&self) -> Vec<(u64, String)> {
        self.running
            .shared
            .store
            .read(|c| {
                let mut stmt = c.prepare("SELECT seq, event_id FROM outbox ORDER BY seq")?;
                let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self.http.get(format!("{}{path}", self.running.api_url())).send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn sync_view(&self) -> Value {
        let (status, v) = self.get("/api/v1/sync").await;
        assert_eq!(status, 200, "{v}");
        v
    }

    async fn wait_view(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let v = self.sync_view().await;
            if done(&v) {
                return v;
            }
            assert!(tokio::time::Instant::now() < deadline, "agent: never {what}: {v:#}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_outbox_empty(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.outbox().await.is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "the outbox never emptied: {:?}", self.outbox().await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn metric(&self, name: &str) -> f64 {
        let text = self.running.shared.metrics.render();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0.0)
    }
}

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("edge.db")
}

// ------------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_drain_in_order_and_rows_are_deleted_only_after_the_ack() {
    let broker = embedded_broker().await;
    let site = site_id();
    let hub = Hub::start(broker, &site).await;
    hub.hold(true, false);
    let dir = tempfile::tempdir().unwrap();
    // A long ack timeout: nothing is sent again while the hub holds its acks.
    let agent = Agent::start(&config_text(&db_path(&dir), &site, broker, "ack_timeout_s = 120")).await;
    hub.wait("got a hello", |s| !s.hellos.is_empty() && s.statuses.contains(&true)).await;
    hub.hold(false, true); // the answer to the hello: nothing applied yet
    agent.wait_view("draining", |v| v["connected"] == true && v["last_ack"] == 0).await;
    hub.hold(true, false);

    agent.events(40).await;
    let written = agent.outbox().await;
    assert_eq!(written.iter().map(|r| r.0).collect::<Vec<_>>(), (1..=40).collect::<Vec<_>>());
    // Backpressure: three batches of seven, then the agent waits for an ack.
    hub.wait("got the window", |s| s.batches.len() == 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hub.with(|s| s.batches.clone()), vec![(1, 7), (8, 14), (15, 21)]);
    assert_eq!(agent.outbox().await.len(), 40, "nothing is deleted before the hub acks");
    let view = agent.sync_view().await;
    assert_eq!(view["in_flight_batches"], 3, "{view:#}");
    assert_eq!(view["sent_through"], 21, "{view:#}");
    assert_eq!(view["outbox"]["pending"], 40, "{view:#}");
    assert_eq!(view["outbox"]["oldest_seq"], 1, "{view:#}");

    hub.hold(false, true);
    hub.wait("applied everything", |s| s.applied_through == 40).await;
    agent.wait_outbox_empty().await;
    hub.assert_applied_once_in_order(40);
    let ids: Vec<String> = hub.with(|s| s.applied.iter().map(|a| a.1.clone()).collect());
    assert_eq!(ids, written.iter().map(|r| r.1.clone()).collect::<Vec<_>>(), "the outbox's event ids, in order");
    assert!(hub.with(|s| s.applied[0].2 == "station_connection" && s.applied[0].3["type"] == "station_connection"));

    // Duplicate and stale acks are harmless: nothing is sent again, nothing lost.
    for _ in 0..3 {
        hub.send_ack(40);
    }
    hub.send_ack(10);
    agent
        .wait_view("saw the stale ack", |v| v["last_error"]["message"].as_str().is_some_and(|m| m.contains("below")))
        .await;
    let batches_before = hub.with(|s| s.batches.len());
    agent.events(5).await;
    hub.wait("applied the next events", |s| s.applied_through == 45).await;
    agent.wait_outbox_empty().await;
    hub.assert_applied_once_in_order(45);
    assert_eq!(hub.with(|s| s.batches[batches_before..].to_vec()), vec![(41, 45)], "sent once");
    assert_eq!(agent.metric("sitepilot_edge_sync_resends_total{reason=\"ack\"}"), 0.0);

    let view = agent.wait_view("saw the last ack", |v| v["last_ack"] == 45).await;
    assert_eq!(view["enabled"], true);
    assert_eq!(view["broker"], format!("mqtt://{broker}"));
    assert_eq!(view["outbox"]["pending"], 0, "{view:#}");
    assert_eq!(view["outbox"]["newest_seq"], 45, "{view:#}");
    assert!(view["alarm"].is_null(), "{view:#}");
    assert_eq!(agent.metric("sitepilot_edge_sync_events_acked_total"), 45.0);
    assert_eq!(agent.metric("sitepilot_edge_sync_connected"), 1.0);
    assert!(agent.metric("sitepilot_edge_sync_batches_sent_total") >= 7.0);
    assert_eq!(agent.metric("sitepilot_edge_sync_last_ack_seq"), 45.0);
    agent.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_ack_makes_the_agent_send_again_from_there() {
    let broker = embedded_broker().await;
    let site = site_id();
    let hub = Hub::start(broker, &site).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&config_text(&db_path(&dir), &site, broker, "ack_timeout_s = 120")).await;
    agent.wait_view("answered hello", |v| v["last_ack"] == 0).await;

    // The hub loses the first batch (say it restarted): the next ones do not continue
    // where it stands, so it answers with a lower ack and the agent goes back.
    hub.state.lock().unwrap().drop_next = 1;
    agent.events(30).await;
    hub.wait("applied everything", |s| s.applied_through == 30).await;
    agent.wait_outbox_empty().await;
    hub.assert_applied_once_in_order(30);
    assert!(hub.with(|s| s.gaps) >= 1);
    let batches = hub.with(|s| s.batches.clone());
    assert_eq!(batches[0], (1, 7), "{batches:?}");
    assert!(batches.iter().skip(1).any(|b| b.0 == 1), "seq 1 was sent again: {batches:?}");
    assert!(agent.metric("sitepilot_edge_sync_resends_total{reason=\"ack\"}") >= 1.0);
    assert_eq!(agent.metric("sitepilot_edge_sync_resends_total{reason=\"timeout\"}"), 0.0);
    agent.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_hub_gets_the_batches_again_after_the_ack_timeout() {
    let broker = embedded_broker().await;
    let site = site_id();
    let hub = Hub::start(broker, &site).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&config_text(&db_path(&dir), &site, broker, "ack_timeout_s = 1")).await;
    agent.wait_view("answered hello", |v| v["last_ack"] == 0).await;
    // Lost, and nothing after it to reveal the gap: only the timeout can tell.
    hub.state.lock().unwrap().drop_next = 1;
    agent.events(5).await;
    hub.wait("applied everything", |s| s.applied_through == 5).await;
    agent.wait_outbox_empty().await;
    hub.assert_applied_once_in_order(5);
    assert!(agent.metric("sitepilot_edge_sync_resends_total{reason=\"timeout\"}") >= 1.0);
    agent.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_keeps_everything_local_and_delivers_it_once_in_order_afterwards() {
    let broker = embedded_broker().await;
    let proxy = Proxy::start(broker).await;
    let site = site_id();
    let hub = Hub::start(broker, &site).await;
    let dir = tempfile::tempdir().unwrap();
    let agent =
        Agent::start(&config_text(&db_path(&dir), &site, proxy.addr, "ack_timeout_s = 2\nmax_outbox_rows = 20")).await;
    agent.events(10).await;
    hub.wait("applied the first events", |s| s.applied_through == 10).await;
    agent.wait_outbox_empty().await;

    proxy.down();
    agent.wait_view("noticed the outage", |v| v["connected"] == false).await;
    // Everything local goes on: the API answers, state changes are recorded.
    agent.events(500).await;
    for tag in ["TAG-OUTAGE-1", "TAG-OUTAGE-2"] {
        let resp = agent
            .http
            .put(format!("{}/api/v1/id-tags/{tag}", agent.running.api_url()))
            .json(&json!({ "status": "Accepted" }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    // The outbox is over its bound: an alarm, and still nothing deleted.
    let view = agent.wait_view("raised the alarm", |v| v["alarm"].is_string()).await;
    assert_eq!(view["outbox"]["pending"], 502, "{view:#}");
    assert!(view["alarm"].as_str().unwrap().contains("502 events wait in the outbox"), "{view:#}");
    assert!(view["last_error"]["message"].as_str().unwrap().starts_with("broker: "), "{view:#}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while agent.metric("sitepilot_edge_sync_outbox_alarm") != 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "no alarm in /metrics");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(agent.metric("sitepilot_edge_sync_connected"), 0.0);
    assert_eq!(agent.outbox().await.len(), 502);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hub.with(|s| s.applied_through), 10, "nothing reached the hub during the outage");
    hub.wait("saw the last will", |s| s.statuses.contains(&false)).await;

    proxy.up();
    hub.wait("applied everything", |s| s.applied_through == 512).await;
    agent.wait_outbox_empty().await;
    hub.assert_applied_once_in_order(512);
    let kinds: Vec<String> = hub.with(|s| s.applied[510..].iter().map(|a| a.2.clone()).collect());
    assert_eq!(kinds, vec!["id_tag_changed", "id_tag_changed"]);
    let view = agent.wait_view("cleared the alarm", |v| v["alarm"].is_null() && v["connected"] == true).await;
    assert_eq!(view["outbox"]["pending"], 0, "{view:#}");
    hub.wait("saw the site online again", |s| s.statuses.last() == Some(&true) && s.hellos.len() >= 2).await;
    assert!(agent.metric("sitepilot_edge_sync_connects_total") >= 2.0);
    assert!(agent.metric("sitepilot_edge_sync_connection_errors_total") >= 1.0);
    agent.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_resumes_from_the_oldest_unacked_row() {
    let broker = embedded_broker().await;
    let site = site_id();
    let hub = Hub::start(broker, &site).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&db_path(&dir), &site, broker, "ack_timeout_s = 120");
    let agent = Agent::start(&text).await;
    agent.events(10).await;
    hub.wait("applied the first events", |s| s.applied_through == 10).await;
    agent.wait_outbox_empty().await;

    // The hub applies the next window but its acks never arrive; more events wait behind.
    hub.hold(true, false);
    agent.events(30).await;
    hub.wait("applied the window", |s| s.applied_through == 31).await;
    agent.running.shutdown().await;
    hub.hold(false, false);
    let conn = rusqlite::Connection::open(db_path(&dir)).unwrap();
    let left: Vec<u64> = conn
        .prepare("SELECT seq FROM outbox ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get::<_, i64>(0).map(|s| s as u64))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(left, (11..=40).collect::<Vec<_>>(), "unacked rows survive the stop");
    drop(conn);

    // Same SQLite file: the hub's answer to the hello skips what it applied (11..=31),
    // the rest follows in order.
    let batches_before = hub.with(|s| s.batches.len());
    let agent = Agent::start(&text).await;
    hub.wait("applied everything", |s| s.applied_through == 40).await;
    agent.wait_outbox_empty().await;
    hub.assert_applied_once_in_order(40);
    let after = hub.with(|s| s.batches[batches_before..].to_vec());
    assert_eq!(after.first().map(|b| b.0), Some(32), "nothing applied is sent again: {after:?}");
    let hello = hub.with(|s| s.hellos.last().cloned().unwrap());
    assert_eq!((hello.oldest_unacked, hello.newest), (Some(11), Some(40)));
    agent.running.shutdown().await;
}

/// A charger on the agent's OCPP endpoint that answers every CALL `Accepted` after a
/// pause, counting the CALLs by action.
async fn charger(ocpp_url: &str, id: &str) -> (Arc<Mutex<Vec<(String, Value)>>>, JoinHandle<()>) {
    let mut request = format!("{ocpp_url}/{id}").into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "ocpp1.6".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let calls: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let seen = calls.clone();
    let task = tokio::spawn(async move {
        while let Some(Ok(msg)) = ws.next().await {
            let Message::Text(text) = msg else { continue };
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame[0] != 2 {
                continue;
            }
            seen.lock().unwrap().push((frame[2].as_str().unwrap().to_owned(), frame[3].clone()));
            tokio::time::sleep(Duration::from_millis(300)).await;
            let answer = json!([3, frame[1], { "status": "Accepted" }]);
            if ws.send(Message::text(answer.to_string())).await.is_err() {
                break;
            }
        }
    });
    (calls, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_delivered_again_is_executed_once_and_answered_with_the_stored_result() {
    let broker = embedded_broker().await;
    let site = site_id();
    let hub = Hub::start(broker, &site).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&config_text(&db_path(&dir), &site, broker, "")).await;
    agent.wait_view("connected", |v| v["connected"] == true).await;
    let (calls, _charger) = charger(&agent.running.ocpp_url(), "CP-1").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while agent.get("/api/v1/chargers/CP-1").await.1["connected"] != true {
        assert!(tokio::time::Instant::now() < deadline, "the charger never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Delivered twice at once (the second arrives while the charger thinks), then again
    // after the result.
    let start = Command::RemoteStart { station: "CP-1".into(), connector: Some(1), id_tag: "TAG-1".into() };
    hub.command("cmd-start", Some(ChronoDuration::hours(1)), start.clone());
    hub.command("cmd-start", Some(ChronoDuration::hours(1)), start.clone());
    hub.wait("got the result", |s| s.results.iter().any(|r| r.command_id == "cmd-start")).await;
    hub.command("cmd-start", Some(ChronoDuration::hours(1)), start);
    hub.wait("got the result again", |s| s.results.iter().filter(|r| r.command_id == "cmd-start").count() >= 2).await;
    let results = hub.results_of("cmd-start");
    assert_eq!(results[0].outcome, CommandOutcome::Accepted, "{results:?}");
    assert_eq!(results[0].detail, json!({ "status": "Accepted" }));
    assert!(results.iter().all(|r| *r == results[0]), "the stored result, unchanged: {results:?}");
    let starts: Vec<Value> =
        calls.lock().unwrap().iter().filter(|(a, _)| a == "RemoteStartTransaction").map(|(_, p)| p.clone()).collect();
    assert_eq!(starts, vec![json!({ "connectorId": 1, "idTag": "TAG-1" })], "executed exactly once");

    // A local list, delivered twice: applied once (one event per entry), same answer.
    let list = Command::SetLocalList {
        full: true,
        entries: vec![
            LocalListEntry {
                id_tag: "HUB-A".into(),
                status: Some("Accepted".into()),
                expiry: None,
                parent_id_tag: None,
            },
            LocalListEntry {
                id_tag: "HUB-B".into(),
                status: Some("Blocked".into()),
                expiry: None,
                parent_id_tag: None,
            },
        ],
    };
    hub.command("cmd-list", None, list.clone());
    hub.command("cmd-list", None, list);
    hub.wait("got both list results", |s| s.results.iter().filter(|r| r.command_id == "cmd-list").count() == 2).await;
    let results = hub.results_of("cmd-list");
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0].detail, json!({ "full": true, "set": 2, "removed": 0 }));
    let (_, tags) = agent.get("/api/v1/id-tags").await;
    let hub_tags: Vec<(String, String)> = tags
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["source"] == "hub")
        .map(|t| (t["id_tag"].as_str().unwrap().to_owned(), t["status"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(hub_tags, vec![("HUB-A".into(), "Accepted".into()), ("HUB-B".into(), "Blocked".into())]);
    agent.wait_outbox_empty().await;
    let tag_events: Vec<Value> =
        hub.with(|s| s.applied.iter().filter(|a| a.2 == "id_tag_changed").map(|a| a.3["id_tag"].clone()).collect());
    assert_eq!(tag_events, vec![json!("HUB-A"), json!("HUB-B")], "applied once");

    // A command this agent does not know, and one for another site: failed, with why.
    hub.raw_command(
        serde_json::to_vec(&json!({ "v": 1, "site_id": site, "command_id": "cmd-new", "issued_at": Utc::now(),
            "expires_at": null, "command": { "type": "open_the_pod_bay_doors" } }))
        .unwrap(),
    );
    hub.raw_command(
        serde_json::to_vec(
            &json!({ "v": 1, "site_id": "elsewhere", "command_id": "cmd-other", "issued_at": Utc::now(),
            "expires_at": null, "command": { "type": "reset", "station": "CP-1", "hard": true } }),
        )
        .unwrap(),
    );
    hub.wait("answered both", |s| s.results.iter().filter(|r| r.command_id.starts_with("cmd-")).count() >= 6).await;
    let unknown = &hub.results_of("cmd-new")[0];
    assert_eq!(unknown.outcome, CommandOutcome::Failed);
    assert!(
        unknown.detail["reason"].as_str().unwrap().contains("unknown variant `open_the_pod_bay_doors`"),
        "{unknown:?}"
    );
    let other = &hub.results_of("cmd-other")[0];
    assert_eq!(other.outcome, CommandOutcome::Failed);
    assert!(other.detail["reason"].as_str().unwrap().contains("for site \"elsewhere\""), "{other:?}");
    assert!(!calls.lock().unwrap().iter().any(|(a, _)| a == "Reset"));
    assert!(agent.metric("sitepilot_edge_sync_commands_total{outcome=\"repeated\"}") >= 2.0);
    agent.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_or_interrupted_command_is_answered_and_never_run() {
    let broker = embedded_broker().await;
    let site = site_id();
    let hub = Hub::start(broker, &site).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&db_path(&dir), &site, broker, "");
    let agent = Agent::start(&text).await;
    agent.wait_view("connected", |v| v["connected"] == true).await;

    // Expired: answered `expired` (were it started, CP-1 being offline would make it `failed`).
    let stop = Command::RemoteStop { station: "CP-1".into(), transaction_id: 7 };
    hub.command("cmd-late", Some(ChronoDuration::minutes(-1)), stop.clone());
    hub.wait("got the result", |s| s.results.iter().any(|r| r.command_id == "cmd-late")).await;
    hub.command("cmd-late", Some(ChronoDuration::minutes(-1)), stop.clone());
    hub.wait("got it again", |s| s.results.iter().filter(|r| r.command_id == "cmd-late").count() == 2).await;
    let results = hub.results_of("cmd-late");
    assert_eq!(results[0].outcome, CommandOutcome::Expired);
    assert_eq!(results[0], results[1]);

    // Not expired, charger offline: failed with the reason.
    hub.command("cmd-offline", None, stop.clone());
    hub.wait("got the result", |s| s.results.iter().any(|r| r.command_id == "cmd-offline")).await;
    let r = &hub.results_of("cmd-offline")[0];
    assert_eq!(r.outcome, CommandOutcome::Failed);
    assert_eq!(r.detail["reason"], "charger CP-1 is not connected", "{r:?}");

    // A command the agent was running when it stopped: failed at the next start, not run.
    agent.running.shutdown().await;
    let conn = rusqlite::Connection::open(db_path(&dir)).unwrap();
    conn.execute(
        "INSERT INTO sync_commands (command_id, received_at, payload, outcome) VALUES ('cmd-cut', ?1, '{}', 'started')",
        [Utc::now().to_rfc3339()],
    )
    .unwrap();
    drop(conn);
    let agent = Agent::start(&text).await;
    hub.wait("got the interrupted result", |s| s.results.iter().any(|r| r.command_id == "cmd-cut")).await;
    hub.command("cmd-cut", None, Command::Reset { station: "CP-1".into(), hard: true });
    hub.wait("got it again", |s| s.results.iter().filter(|r| r.command_id == "cmd-cut").count() == 2).await;
    let results = hub.results_of("cmd-cut");
    assert_eq!(results[0].outcome, CommandOutcome::Failed);
    assert!(results[0].detail["reason"].as_str().unwrap().contains("not run again"), "{results:?}");
    assert_eq!(results[0], results[1]);
    let outcome: String = agent
        .running
        .shared
        .store
        .read(|c| Ok(c.query_row("SELECT outcome FROM sync_commands WHERE command_id = 'cmd-cut'", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(outcome, "failed");

    // Tariffs are kept for offline use; site limits need balancing.
    hub.command(
        "cmd-tariff",
        None,
        Command::SetTariff { tariff_id: "T1".into(), tariff: json!({ "id": "T1", "currency": "EUR" }) },
    );
    hub.command("cmd-limits", None, Command::SetSiteLimits { limits: json!({ "import_limit_w": 11000.0 }) });
    hub.wait("answered both", |s| {
        s.results.iter().any(|r| r.command_id == "cmd-tariff") && s.results.iter().any(|r| r.command_id == "cmd-limits")
    })
    .await;
    assert_eq!(hub.results_of("cmd-tariff")[0].outcome, CommandOutcome::Accepted);
    let stored: String = agent
        .running
        .shared
        .store
        .read(|c| Ok(c.query_row("SELECT tariff FROM tariffs WHERE tariff_id = 'T1'", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(serde_json::from_str::<Value>(&stored).unwrap()["currency"], "EUR");
    let limits = &hub.results_of("cmd-limits")[0];
    assert_eq!(limits.outcome, CommandOutcome::Rejected);
    assert!(limits.detail["reason"].as_str().unwrap().contains("balancing is off"), "{limits:?}");
    agent.running.shutdown().await;
}

/// A charger that boots and sends Authorize CALLs; each answer's idTagInfo status.
struct AuthorizingCharger {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl AuthorizingCharger {
    async fn connect(ocpp_url: &str, id: &str) -> AuthorizingCharger {
        let mut request = format!("{ocpp_url}/{id}").into_client_request().unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", "ocpp1.6".parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let mut cp = AuthorizingCharger { ws, next_id: 0 };
        let boot = cp.call("BootNotification", json!({"chargePointVendor": "Test", "chargePointModel": "T1"})).await;
        assert_eq!(boot["status"], "Accepted", "{boot}");
        cp
    }

    async fn call(&mut self, action: &str, payload: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id.to_string();
        self.ws.send(Message::text(json!([2, id, action, payload]).to_string())).await.unwrap();
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next()).await.expect("an answer").unwrap().unwrap();
            let Message::Text(text) = msg else { continue };
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame[0] == 3 && frame[1] == id.as_str() {
                return frame[2].clone();
            }
        }
    }

    async fn authorize(&mut self, id_tag: &str) -> String {
        let answer = self.call("Authorize", json!({ "idTag": id_tag })).await;
        answer["idTagInfo"]["status"].as_str().unwrap().to_owned()
    }
}

async fn cached(agent: &Agent, id_tag: &str) -> Option<String> {
    let tag = id_tag.to_owned();
    agent
        .running
        .shared
        .store
        .read(move |c| {
            Ok(c.query_row("SELECT status FROM auth_cache WHERE id_tag = ?1", [tag], |r| r.get::<_, String>(0)).ok())
        })
        .await
        .unwrap()
}

/// An id tag the site does not know is asked of the hub; a hub that does not answer (an
/// older one) leaves the decision to the site's policy after `auth_timeout_ms`, and
/// nothing is cached. Tags of the local list are never asked about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_that_does_not_answer_leaves_unknown_tags_to_the_local_policy() {
    let broker = embedded_broker().await;
    let site = site_id();
    let hub = Hub::start(broker, &site).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "auth_timeout_ms = 300\n\n[[authorization.tags]]\nid_tag = \"LOCAL\"\nstatus = \"Accepted\"\n";
    let agent = Agent::start(&config_text(&db_path(&dir), &site, broker, extra)).await;
    agent.wait_view("connected", |v| v["connected"] == true).await;
    let mut cp = AuthorizingCharger::connect(&agent.running.ocpp_url(), "CP-1").await;
    assert_eq!(cp.authorize("ROAMING-1").await, "Invalid", "the default policy rejects unknown tags");
    let asked = hub.with(|s| s.auth_requests.clone());
    assert_eq!(asked.len(), 1);
    assert_eq!(
        (asked[0].id_tag.as_str(), asked[0].station.as_deref(), asked[0].site_id.as_str()),
        ("ROAMING-1", Some("CP-1"), site.as_str())
    );
    assert_eq!(cached(&agent, "ROAMING-1").await, None, "no answer, nothing cached");
    assert_eq!(cp.authorize("LOCAL").await, "Accepted");
    assert_eq!(hub.with(|s| s.auth_requests.len()), 1, "the local list answers by itself");
    agent.running.shutdown().await;
}

/// The hub's verdict is cached: used while fresh, asked again when stale (and used when
/// the hub then stays silent, as offline), replaced by a newer verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hubs_verdict_is_cached_for_offline_use() {
    let broker = embedded_broker().await;
    let site = site_id();
    let hub = Hub::start(broker, &site).await;
    hub.state.lock().unwrap().auth_verdict = Some(AuthVerdict::Accepted);
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&config_text(&db_path(&dir), &site, broker, "auth_timeout_ms = 300\n")).await;
    agent.wait_view("connected", |v| v["connected"] == true).await;
    let mut cp = AuthorizingCharger::connect(&agent.running.ocpp_url(), "CP-1").await;
    assert_eq!(cp.authorize("ROAMING-2").await, "Accepted", "the hub's verdict");
    assert_eq!(cached(&agent, "ROAMING-2").await.as_deref(), Some("Accepted"));
    // Fresh (auth_refresh_s = 3600): not asked again.
    assert_eq!(cp.authorize("ROAMING-2").await, "Accepted");
    assert_eq!(hub.with(|s| s.auth_requests.len()), 1);
    // StartTransaction names the connector: asked with the EVSE, for a new tag.
    hub.state.lock().unwrap().auth_verdict = Some(AuthVerdict::Blocked);
    let start = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "ROAMING-3", "meterStart": 0, "timestamp": Utc::now().to_rfc3339()}),
        )
        .await;
    assert_eq!(start["idTagInfo"]["status"], "Blocked", "{start}");
    let last = hub.with(|s| s.auth_requests.last().cloned().unwrap());
    assert_eq!((last.id_tag.as_str(), last.evse), ("ROAMING-3", Some(1)));
    agent.running.shutdown().await;

    // The same site with answers that go stale at once; the hub then goes silent.
    let text = config_text(&db_path(&dir), &site, broker, "auth_timeout_ms = 300\nauth_refresh_s = 0\n");
    let agent = Agent::start(&text).await;
    agent.wait_view("connected", |v| v["connected"] == true).await;
    let mut cp = AuthorizingCharger::connect(&agent.running.ocpp_url(), "CP-1").await;
    hub.state.lock().unwrap().auth_verdict = None;
    let before = hub.with(|s| s.auth_requests.len());
    assert_eq!(cp.authorize("ROAMING-2").await, "Accepted", "no answer: the cached verdict holds");
    assert_eq!(hub.with(|s| s.auth_requests.len()), before + 1, "asked again (stale)");
    hub.state.lock().unwrap().auth_verdict = Some(AuthVerdict::Blocked);
    assert_eq!(cp.authorize("ROAMING-2").await, "Blocked", "a newer verdict replaces it");
    assert_eq!(cached(&agent, "ROAMING-2").await.as_deref(), Some("Blocked"));
    agent.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_sync_section_everything_local_works_and_the_api_says_sync_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&db_path(&dir), "no-sync", "127.0.0.1:1".parse().unwrap(), "");
    let text = text.split("[sync]").next().unwrap().to_owned();
    let agent = Agent::start(&text).await;
    agent.events(3).await;
    let view = agent.sync_view().await;
    assert_eq!(view["enabled"], false, "{view:#}");
    assert_eq!(view["connected"], false, "{view:#}");
    assert_eq!(view["outbox"]["pending"], 3, "{view:#}");
    assert!(view["alarm"].is_null());
    agent.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drains_through_mosquitto() {
    let Some(broker) = mosquitto().await else { return };
    let site = site_id();
    let hub = Hub::start(broker, &site).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&config_text(&db_path(&dir), &site, broker, "")).await;
    agent.events(50).await;
    hub.wait("applied everything", |s| s.applied_through == 50).await;
    agent.wait_outbox_empty().await;
    hub.assert_applied_once_in_order(50);
    agent.running.shutdown().await;
    hub.wait("saw the site go", |s| s.statuses.last() == Some(&false)).await;
    // Leave no retained status behind on a shared broker.
    hub.client.try_publish(Topic::Status.of(&site), QoS::AtLeastOnce, true, Vec::<u8>::new()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
}
