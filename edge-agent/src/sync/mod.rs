//! Sync with the cloud hub over MQTT (protocol v1, `shared-model/SYNC.md`).
//!
//! One task owns the link. It drains the SQLite outbox in `seq` order as
//! [`EventBatch`]es on `up/events`, at most `max_inflight_batches` unacknowledged, and
//! deletes rows only when an [`Ack`] from the hub covers them (the rules are in
//! [`outflow`]); it executes the hub's commands at most once ([`commands`]) and answers
//! on `up/results`; it says `online` (retained) on `up/status`, with `offline` as its last
//! will, and sends a [`Hello`] on every (re)connect. It also carries the real-time
//! authorization of id tags the site does not know (`up/auth` / `down/auth`,
//! [`realtime`]).
//!
//! It wakes on every committed station change (the `live` broadcast) and at least every
//! `poll_interval_ms`. While the broker is unreachable it retries with backoff; nothing
//! local waits for it: chargers, the API and the balancer never touch this task, and the
//! outbox keeps every event until the hub has it. When the outbox grows past
//! `max_outbox_rows`, or its oldest row past `retention_days`, the agent raises an alarm
//! (log, `/metrics`, `GET /api/v1/sync`) and still deletes nothing.
//!
//! After a restart it starts from the oldest row: what the hub applied but never acked
//! is skipped thanks to the hub's answer to the hello.
//!
//! ```toml
//! [sync]
//! broker = "mqtt://hub.example.com:1883"
//! password = "from `cloud-hub site add`"
//! ```

pub mod commands;
pub mod config;
pub mod net;
pub mod outbox;
pub mod outflow;
pub mod realtime;

pub use config::SyncConfig;

use crate::app::Shared;
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use outbox::OutboxStats;
use outflow::Outflow;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rumqttc::{AsyncClient, QoS};
use serde::Serialize;
use shared_model::sync::{Ack, CommandResult, EventBatch, Hello, PROTOCOL_VERSION, Topic};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinSet;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `accepted`, `rejected`, `failed`, `expired`, or `repeated` (a redelivery answered
    /// with the stored result).
    pub outcome: &'static str,
}

/// The sync metrics (registered with the agent's others).
pub struct SyncMetrics {
    pub connected: Gauge,
    pub connects: Counter,
    pub connection_errors: Counter,
    pub events_sent: Counter,
    pub events_acked: Counter,
    pub batches_sent: Counter,
    pub resends: Family<ReasonLabels, Counter>,
    pub outbox_pending: Gauge,
    pub outbox_alarm: Gauge,
    pub last_ack: Gauge,
    pub commands: Family<OutcomeLabels, Counter>,
}

impl SyncMetrics {
    pub fn register(registry: &mut Registry) -> SyncMetrics {
        let m = SyncMetrics {
            connected: Gauge::default(),
            connects: Counter::default(),
            connection_errors: Counter::default(),
            events_sent: Counter::default(),
            events_acked: Counter::default(),
            batches_sent: Counter::default(),
            resends: Family::default(),
            outbox_pending: Gauge::default(),
            outbox_alarm: Gauge::default(),
            last_ack: Gauge::default(),
            commands: Family::default(),
        };
        registry.register("sync_connected", "1 while connected to the MQTT broker", m.connected.clone());
        registry.register("sync_connects", "Connections to the MQTT broker accepted", m.connects.clone());
        registry.register(
            "sync_connection_errors",
            "Failed or lost connections to the MQTT broker",
            m.connection_errors.clone(),
        );
        registry.register("sync_events_sent", "Outbox events published (resends included)", m.events_sent.clone());
        registry.register(
            "sync_events_acked",
            "Outbox rows deleted after the hub acknowledged them",
            m.events_acked.clone(),
        );
        registry.register("sync_batches_sent", "Event batches published (resends included)", m.batches_sent.clone());
        registry.register(
            "sync_resends",
            "Go-backs: the agent sent again from the hub's last ack (reason: ack, timeout)",
            m.resends.clone(),
        );
        registry.register("sync_outbox_pending", "Events in the outbox not yet acknowledged", m.outbox_pending.clone());
        registry.register(
            "sync_outbox_alarm",
            "1 while the outbox is over max_outbox_rows or older than retention_days",
            m.outbox_alarm.clone(),
        );
        registry.register("sync_last_ack_seq", "The hub's last applied_through", m.last_ack.clone());
        registry.register("sync_commands", "Commands from the hub by outcome", m.commands.clone());
        m
    }
}

/// When and what went wrong last.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LastError {
    pub at: DateTime<Utc>,
    pub message: String,
}

/// The sync task's state, for the API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LinkState {
    pub connected: bool,
    pub connected_since: Option<DateTime<Utc>>,
    /// The hub's last `applied_through` (in this run of the agent).
    pub last_ack: Option<u64>,
    pub last_ack_at: Option<DateTime<Utc>>,
    /// The highest seq sent in the current round.
    pub sent_through: Option<u64>,
    pub in_flight_batches: usize,
    /// The hub's latest flow-control grant (none from an older hub).
    pub window: Option<shared_model::sync::Window>,
    pub commands_running: usize,
    pub last_error: Option<LastError>,
}

/// Shared between the sync task, the API and the OCPP handlers.
#[derive(Default)]
pub struct SyncHandle {
    state: Mutex<LinkState>,
    /// Real-time authorization requests to the hub and their answers.
    pub auth: realtime::AuthBridge,
}

impl SyncHandle {
    pub fn state(&self) -> LinkState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut LinkState)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }

    fn error(&self, message: String) {
        self.update(|s| s.last_error = Some(LastError { at: Utc::now(), message }));
    }
}

/// `GET /api/v1/sync`.
#[derive(Debug, Clone, Serialize)]
pub struct SyncView {
    pub enabled: bool,
    /// `mqtt://HOST:PORT` (TLS is not supported yet).
    pub broker: Option<String>,
    #[serde(flatten)]
    pub link: LinkState,
    pub outbox: OutboxStats,
    /// Why the outbox needs attention (nothing is deleted unacknowledged).
    pub alarm: Option<String>,
}

/// The view for the API: the task's state plus the outbox as it is now.
pub async fn view(shared: &Shared) -> Result<SyncView, StoreError> {
    let stats = shared.store.read(outbox::stats).await?;
    let cfg = shared.config.sync.as_ref();
    Ok(SyncView {
        enabled: cfg.is_some(),
        broker: cfg.map(|c| c.broker_addr().map(|b| b.to_string()).unwrap_or_else(|_| c.broker.clone())),
        link: shared.sync.state(),
        alarm: cfg.and_then(|c| outbox::alarm(&stats, c.max_outbox_rows, c.retention_days, Utc::now())),
        outbox: stats,
    })
}

/// Runs the link until shutdown (returns at once without a `[sync]` section).
pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let Some(cfg) = shared.config.sync.clone() else { return };
    let site = shared.config.site.id.clone();
    let (client, eventloop) = match net::client(&site, &cfg) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "sync: not started");
            shared.sync.error(format!("not started: {e}"));
            return;
        }
    };
    let mut pending_results: VecDeque<CommandResult> = match commands::recover(&shared).await {
        Ok(r) => r.into(),
        Err(e) => {
            tracing::error!(error = %e, "sync: reading unfinished commands failed");
            VecDeque::new()
        }
    };
    let (net_tx, mut net_rx) = mpsc::unbounded_channel();
    // Dropping the set (when this task ends or is aborted) stops the connection and any
    // command still running (which then stays `started`: answered `failed` next time).
    let mut net_task = JoinSet::new();
    net_task.spawn(net::drive(
        eventloop,
        net_tx,
        site.clone(),
        Duration::from_millis(cfg.reconnect_min_ms),
        Duration::from_secs(cfg.reconnect_max_s),
    ));
    let mut cmd_tasks: JoinSet<()> = JoinSet::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<CommandResult>();
    let mut live = shared.live.subscribe();
    let mut live_open = true;
    let mut tick = tokio::time::interval(cfg.poll_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(broker = %cfg.broker, site = %site, "sync: starting");

    let mut link = Link {
        outflow: Outflow::new(cfg.max_inflight_batches, cfg.ack_timeout()),
        shared: shared.clone(),
        cfg,
        site,
        client,
        connected: false,
        running: HashSet::new(),
        newest_sent: 0,
        alarm: None,
        alarm_logged: None,
        failures: 0,
        gap_reported: None,
        tasks: HashMap::new(),
    };
    loop {
        if link.connected {
            link.pump().await;
            link.flush_results(&mut pending_results).await;
        }
        let deadline = link.outflow.deadline().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(ev) = net_rx.recv() => match ev {
                net::NetEvent::Connected => link.on_connected().await,
                net::NetEvent::Disconnected(why) => link.on_disconnected(why),
                net::NetEvent::SubscribeRefused => {
                    let message = format!(
                        "the broker refused the subscription to {} and {}: check its ACL for this site \
                         (no acks or commands can arrive)",
                        Topic::Acks.of(&link.site),
                        Topic::Commands.of(&link.site)
                    );
                    tracing::error!("sync: {message}");
                    link.shared.sync.error(message);
                }
                net::NetEvent::Message { topic, payload } => match Topic::parse(&topic) {
                    Some((s, Topic::Acks)) if s == link.site => link.on_ack(&payload).await,
                    Some((s, Topic::AuthAnswers)) if s == link.site => link.shared.sync.auth.deliver(s, &payload),
                    Some((s, Topic::Commands)) if s == link.site => {
                        if let Some(result) = link.on_command(&payload, &mut cmd_tasks, &done_tx).await {
                            pending_results.push_back(result);
                        }
                    }
                    _ => tracing::debug!(%topic, "sync: ignoring a message on a topic that is not ours"),
                },
            },
            Some(result) = done_rx.recv() => {
                link.running.remove(&result.command_id);
                link.shared.sync.update(|s| s.commands_running = link.running.len());
                link.shared.metrics.sync.commands.get_or_create(&OutcomeLabels { outcome: outcome_label(&result) }).inc();
                pending_results.push_back(result);
            }
            r = live.recv(), if live_open => {
                if let Err(broadcast::error::RecvError::Closed) = r {
                    live_open = false;
                }
            }
            _ = tick.tick() => link.housekeeping().await,
            _ = async { if let Some(d) = deadline { tokio::time::sleep_until(d).await } }, if deadline.is_some() => {
                if let Some(why) = link.outflow.due(Instant::now()) {
                    link.shared.metrics.sync.resends.get_or_create(&ReasonLabels { reason: why.as_str() }).inc();
                    tracing::info!(from = link.outflow.acked() + 1, "sync: no ack in time; sending again");
                }
            }
            Some(joined) = cmd_tasks.join_next_with_id(), if !cmd_tasks.is_empty() => {
                let id = match &joined {
                    Ok((id, ())) => *id,
                    Err(e) => e.id(),
                };
                let command_id = link.tasks.remove(&id);
                if let (Err(e), Some(command_id)) = (joined, command_id) {
                    // Never expected (commands do not panic); answered like an interrupted one.
                    tracing::error!(command = %command_id, error = %e, "sync: a command's task died");
                    link.running.remove(&command_id);
                    match commands::abandon(&link.shared, &command_id).await {
                        Ok(result) => pending_results.push_back(result),
                        Err(e) => tracing::error!(error = %e, "sync: recording a dead command failed"),
                    }
                }
            }
        }
    }
    link.shared.sync.auth.disconnected();
    // Best effort: say goodbye (the last will says it otherwise).
    if link.connected {
        let _ = link.client.try_publish(
            Topic::Status.of(&link.site),
            QoS::AtLeastOnce,
            true,
            net::status(&link.site, false),
        );
        let _ = link.client.try_disconnect();
        // A moment for the event loop to put it on the wire.
        let _ = tokio::time::timeout(Duration::from_millis(200), net_rx.recv()).await;
    }
    link.shared.metrics.sync.connected.set(0);
}

fn outcome_label(r: &CommandResult) -> &'static str {
    match r.outcome {
        shared_model::sync::CommandOutcome::Accepted => "accepted",
        shared_model::sync::CommandOutcome::Rejected => "rejected",
        shared_model::sync::CommandOutcome::Failed => "failed",
        shared_model::sync::CommandOutcome::Expired => "expired",
    }
}

struct Link {
    shared: Arc<Shared>,
    cfg: SyncConfig,
    site: String,
    client: AsyncClient,
    outflow: Outflow,
    connected: bool,
    /// Commands running now.
    running: HashSet<String>,
    /// The highest seq published in this run.
    newest_sent: u64,
    alarm: Option<String>,
    alarm_logged: Option<Instant>,
    /// Connection failures in a row.
    failures: u32,
    /// The last (hub position, first row) reported as a hole the hub cannot fill.
    gap_reported: Option<(u64, u64)>,
    /// Running commands by task, to fail one whose task died.
    tasks: HashMap<tokio::task::Id, String>,
}

impl Link {
    fn publish(&self, topic: Topic, retain: bool, payload: Vec<u8>) -> Result<(), String> {
        self.client.try_publish(topic.of(&self.site), QoS::AtLeastOnce, retain, payload).map_err(|e| e.to_string())
    }

    async fn on_connected(&mut self) {
        self.connected = true;
        self.failures = 0;
        let m = &self.shared.metrics.sync;
        m.connected.set(1);
        m.connects.inc();
        tracing::info!(broker = %self.cfg.broker, "sync: connected");
        let subscribed = self.client.try_subscribe_many(
            [Topic::Acks, Topic::Commands, Topic::AuthAnswers]
                .map(|t| rumqttc::SubscribeFilter::new(t.of(&self.site), QoS::AtLeastOnce)),
        );
        if let Err(e) = subscribed {
            tracing::warn!(error = %e, "sync: subscribing failed");
        }
        let stats = self.shared.store.read(outbox::stats).await.unwrap_or_default();
        let hello = Hello {
            v: PROTOCOL_VERSION,
            site_id: self.site.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            oldest_unacked: stats.oldest_seq,
            newest: stats.newest_seq,
            at: Utc::now(),
        };
        let sent = self
            .publish(Topic::Status, true, net::status(&self.site, true))
            .and_then(|()| self.publish(Topic::Hello, false, serde_json::to_vec(&hello).unwrap_or_default()));
        if let Err(e) = sent {
            tracing::warn!(error = %e, "sync: publishing status and hello failed");
        }
        self.outflow.connected(Instant::now());
        self.shared.sync.auth.connected(self.client.clone(), self.site.clone());
        self.shared.sync.update(|s| {
            s.connected = true;
            s.connected_since = Some(Utc::now());
        });
    }

    fn on_disconnected(&mut self, why: String) {
        let m = &self.shared.metrics.sync;
        m.connection_errors.inc();
        m.connected.set(0);
        if self.connected {
            tracing::warn!(error = %why, "sync: lost the broker; events wait in the outbox");
        } else if self.failures == 0 {
            tracing::warn!(error = %why, broker = %self.cfg.broker, "sync: cannot reach the broker; retrying");
        } else {
            tracing::debug!(error = %why, "sync: still cannot reach the broker");
        }
        self.failures = self.failures.saturating_add(1);
        self.connected = false;
        self.outflow.disconnected();
        self.shared.sync.auth.disconnected();
        self.shared.sync.update(|s| {
            s.connected = false;
            s.connected_since = None;
            s.in_flight_batches = 0;
            s.last_error = Some(LastError { at: Utc::now(), message: format!("broker: {why}") });
        });
    }

    /// Sends batches while the window is open and the outbox has rows.
    async fn pump(&mut self) {
        while let Some(from) = self.outflow.window() {
            let (limit, max_bytes) = (self.cfg.batch_size, self.outflow.batch_bytes(self.cfg.max_batch_bytes));
            let rows = match self.shared.store.read(move |c| outbox::read_from(c, from, limit, max_bytes)).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(error = %e, "sync: reading the outbox failed");
                    self.shared.sync.error(format!("reading the outbox: {e}"));
                    break;
                }
            };
            let (Some(first), Some(last)) = (rows.first().map(|r| r.seq), rows.last().map(|r| r.seq)) else { break };
            let acked = self.outflow.acked();
            // Sending right after the hub's position (at start or after a go-back), the
            // outbox must continue there; later batches start wherever the window is.
            if acked > 0 && from == acked + 1 && first > from && self.gap_reported != Some((acked, first)) {
                self.gap_reported = Some((acked, first));
                let message = format!(
                    "the hub stands at seq {acked} but the outbox starts at {first}: events {} to {} were deleted \
                     on an ack the hub no longer knows about (was the hub's database restored?)",
                    acked + 1,
                    first - 1
                );
                tracing::error!("sync: {message}");
                self.shared.sync.error(message);
            }
            let n = rows.len() as u64;
            let batch = EventBatch { v: PROTOCOL_VERSION, site_id: self.site.clone(), events: rows };
            let payload = match serde_json::to_vec(&batch) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "sync: encoding a batch failed");
                    break;
                }
            };
            let payload_len = payload.len() as u64;
            if let Err(e) = self.publish(Topic::Events, false, payload) {
                // The client's queue is full (the connection is slow or going away): the
                // rows stay where they are and go with a later try.
                tracing::debug!(error = %e, "sync: batch not queued");
                break;
            }
            self.outflow.sent(first, last, payload_len, Instant::now());
            self.newest_sent = self.newest_sent.max(last);
            let m = &self.shared.metrics.sync;
            m.events_sent.inc_by(n);
            m.batches_sent.inc();
            tracing::debug!(first, last, "sync: batch sent");
        }
        self.publish_state();
    }

    fn publish_state(&self) {
        let (sent, inflight) = (self.outflow.sent_through(), self.outflow.inflight());
        self.shared.sync.update(|s| {
            s.sent_through = (sent > 0).then_some(sent);
            s.in_flight_batches = inflight;
        });
    }

    async fn on_ack(&mut self, payload: &[u8]) {
        let ack: Ack = match serde_json::from_slice(payload) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "sync: an unreadable ack");
                self.shared.sync.error(format!("an unreadable ack from the hub: {e}"));
                return;
            }
        };
        if ack.site_id != self.site {
            tracing::warn!(site = %ack.site_id, "sync: an ack for another site");
            return;
        }
        let a = ack.applied_through;
        if a > self.newest_sent {
            // More than this run sent (fine after a restart) must still be a seq this
            // site assigned: anything else would delete events the hub never saw.
            let newest = self.shared.store.read(outbox::stats).await.ok().and_then(|s| s.newest_seq).unwrap_or(0);
            if a > newest {
                let message = format!(
                    "the hub acknowledged seq {a}, but this site has only assigned up to {newest}: ignored, nothing \
                     deleted (was this site's database replaced? the hub must reset the site's position)"
                );
                tracing::error!("sync: {message}");
                self.shared.sync.error(message);
                return;
            }
        }
        self.outflow.set_grant(ack.window);
        let out = self.outflow.ack(a, Instant::now());
        let m = &self.shared.metrics.sync;
        if let Some(through) = out.delete_through {
            match self.shared.store.write(move |c| outbox::delete_through(c, through)).await {
                Ok(n) => {
                    m.events_acked.inc_by(n as u64);
                }
                Err(e) => {
                    tracing::error!(error = %e, "sync: deleting acknowledged rows failed");
                    self.shared.sync.error(format!("deleting acknowledged rows: {e}"));
                }
            }
            m.last_ack.set(i64::try_from(through).unwrap_or(i64::MAX));
        }
        if let Some(why) = out.went_back {
            m.resends.get_or_create(&ReasonLabels { reason: why.as_str() }).inc();
            tracing::info!(from = a + 1, "sync: the hub is missing events; sending again from there");
        }
        if out.behind {
            let message = format!("the hub acknowledged {a}, below its earlier {} (ignored)", self.outflow.acked());
            tracing::warn!("sync: {message}");
            self.shared.sync.error(message);
        }
        let acked = self.outflow.acked();
        let grant = self.outflow.grant();
        self.shared.sync.update(|s| {
            s.last_ack = Some(acked);
            s.last_ack_at = Some(Utc::now());
            s.window = grant;
        });
        self.publish_state();
    }

    /// Records a command; returns a result to publish now, or starts it.
    async fn on_command(
        &mut self,
        payload: &[u8],
        tasks: &mut JoinSet<()>,
        done: &mpsc::UnboundedSender<CommandResult>,
    ) -> Option<CommandResult> {
        let received = match commands::receive(&self.shared, payload, &self.running).await {
            Ok(r) => r,
            Err(e) => {
                // Not recorded: a redelivery tries again.
                tracing::error!(error = %e, "sync: recording a command failed");
                self.shared.sync.error(format!("recording a command: {e}"));
                return None;
            }
        };
        let m = &self.shared.metrics.sync;
        match received {
            commands::Received::Run(env) => {
                tracing::info!(command = %env.command_id, kind = ?env.command, "sync: running a command");
                self.running.insert(env.command_id.clone());
                self.shared.sync.update(|s| s.commands_running = self.running.len());
                let (shared, done) = (self.shared.clone(), done.clone());
                let command_id = env.command_id.clone();
                let task = tasks.spawn(async move {
                    let result = commands::run(&shared, &env).await;
                    let _ = done.send(result);
                });
                self.tasks.insert(task.id(), command_id);
                None
            }
            commands::Received::Answer { result, fresh } => {
                let label = if fresh { outcome_label(&result) } else { "repeated" };
                m.commands.get_or_create(&OutcomeLabels { outcome: label }).inc();
                if !fresh {
                    tracing::info!(command = %result.command_id, "sync: a command seen before; sending its result again");
                }
                Some(result)
            }
            commands::Received::Running => {
                tracing::info!("sync: a command still running was delivered again; its result follows");
                None
            }
            commands::Received::Dropped(why) => {
                tracing::warn!(reason = %why, "sync: dropping a message on the command topic");
                self.shared.sync.error(format!("a message on the command topic was dropped: {why}"));
                None
            }
        }
    }

    async fn flush_results(&mut self, queue: &mut VecDeque<CommandResult>) {
        let mut sent = Vec::new();
        while let Some(r) = queue.front() {
            let Ok(payload) = serde_json::to_vec(r) else {
                queue.pop_front();
                continue;
            };
            if self.publish(Topic::Results, false, payload).is_err() {
                break;
            }
            if let Some(r) = queue.pop_front() {
                sent.push(r.command_id);
            }
        }
        if !sent.is_empty()
            && let Err(e) = commands::mark_reported(&self.shared, sent).await
        {
            tracing::warn!(error = %e, "sync: noting published results failed");
        }
    }

    /// Every poll interval: the outbox gauge and the alarm.
    async fn housekeeping(&mut self) {
        let stats = match self.shared.store.read(outbox::stats).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "sync: reading the outbox bounds failed");
                return;
            }
        };
        let m = &self.shared.metrics.sync;
        m.outbox_pending.set(i64::try_from(stats.pending).unwrap_or(i64::MAX));
        let alarm = outbox::alarm(&stats, self.cfg.max_outbox_rows, self.cfg.retention_days, Utc::now());
        m.outbox_alarm.set(i64::from(alarm.is_some()));
        match (&alarm, &self.alarm) {
            (Some(a), _) if self.alarm_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) => {
                tracing::warn!(alarm = %a, "sync: outbox alarm");
                self.alarm_logged = Some(Instant::now());
            }
            (None, Some(_)) => {
                tracing::info!("sync: outbox alarm cleared");
                self.alarm_logged = None;
            }
            _ => {}
        }
        self.alarm = alarm;
    }
}
