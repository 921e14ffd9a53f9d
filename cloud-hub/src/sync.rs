//! The hub's side of the sync protocol over MQTT: one rumqttc client subscribed to every
//! site's `up/events`, `up/hello`, `up/status`, `up/results` and `up/auth`, and workers
//! that apply what arrives (see [`crate::ingest`]) and answer with acks. A hello also
//! re-sends the site's unanswered commands (see [`crate::commands`]); results are stored
//! once per command id. An authorization request (`up/auth`) is answered on `down/auth`
//! by OCPI ([`crate::ocpi::realtime`]) in a task of its own (an eMSP may take a moment),
//! or at once with `unknown` when OCPI is off.
//!
//! - One site always goes to the same worker, so a site's batches are applied in the
//!   order they arrived; different sites are applied in parallel.
//! - Messages are acknowledged to the broker (PUBACK) only after they were handled, so
//!   the broker's in-flight window bounds what waits in the workers' queues, and in the
//!   order they arrived whichever worker finished first (MQTT 3.1.1 4.6.0-2; rumqttd
//!   disconnects a client whose PUBACKs come out of order, and every message then in
//!   flight to the hub was lost until the sites resent it): see [`AckOrder`]. Acks of a
//!   connection that has since closed are never sent on the next one.
//! - With an external broker the subscriptions are shared (`$share/{group}/...`): every
//!   message goes to one of the hub replicas. Correctness does not depend on which one
//!   (the site's row is locked while a batch is applied).
//! - The session is clean: what was published while the hub was away is not kept for
//!   it. The edge resends whatever no ack covers (go-back-N), so nothing is lost.

use chrono::Utc;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS, SubscribeFilter, SubscribeReasonCode};
use shared_model::sync::Topic;
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::commands;
use crate::db::Store;
use crate::flow::Flow;
use crate::ingest::{self, Reject};
use crate::metrics::{Metrics, ReasonLabels, ResultLabels, TopicLabels};

/// The hub's MQTT client settings.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive: Duration,
    pub max_payload_bytes: usize,
    /// `Some(group)`: shared subscriptions `$share/{group}/...` (several replicas).
    pub share_group: Option<String>,
    pub workers: usize,
    /// What all sites together may have in flight (see [`crate::flow`]).
    pub inflight_budget_bytes: u64,
    pub inflight_budget_batches: u32,
}

impl SyncSettings {
    /// The subscription filters: `up/events`, `up/hello`, `up/status`, `up/results` and
    /// `up/auth` of every site.
    pub fn filters(&self) -> Vec<String> {
        [Topic::Events, Topic::Hello, Topic::Status, Topic::Results, Topic::AuthRequests]
            .into_iter()
            .map(|t| match &self.share_group {
                Some(group) => format!("$share/{group}/{}", t.all_sites()),
                None => t.all_sites(),
            })
            .collect()
    }
}

/// Where the answers to sites' authorization requests come from, once OCPI runs.
pub type Authorizer = Arc<std::sync::OnceLock<crate::ocpi::OcpiState>>;

/// The running client and workers.
pub struct SyncHandle {
    client: AsyncClient,
    authorizer: Authorizer,
    ready: watch::Receiver<bool>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

struct Ctx {
    store: Store,
    metrics: Arc<Metrics>,
    client: AsyncClient,
    flow: Flow,
    authorizer: Authorizer,
}

/// Starts the client (it connects, and reconnects, in the background) and the workers.
pub fn start(settings: &SyncSettings, store: Store, metrics: Arc<Metrics>) -> SyncHandle {
    let mut options = MqttOptions::new(settings.client_id.clone(), settings.host.clone(), settings.port);
    options.set_keep_alive(settings.keep_alive);
    options.set_clean_session(true);
    options.set_manual_acks(true);
    options.set_max_packet_size(settings.max_payload_bytes + 1024, settings.max_payload_bytes + 1024);
    if let Some(user) = &settings.username {
        options.set_credentials(user.clone(), settings.password.clone().unwrap_or_default());
    }
    let (client, eventloop) = AsyncClient::new(options, 1024);
    let (ready_tx, ready) = watch::channel(false);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let flow = Flow::new(settings.inflight_budget_bytes, settings.inflight_budget_batches);
    let authorizer: Authorizer = Arc::default();
    let ctx =
        Arc::new(Ctx { store, metrics: metrics.clone(), client: client.clone(), flow, authorizer: authorizer.clone() });
    let mut tasks = Vec::new();
    let mut queues = Vec::new();
    let (acks, acks_rx) = mpsc::unbounded_channel();
    for _ in 0..settings.workers.max(1) {
        let (tx, rx) = mpsc::unbounded_channel();
        queues.push(tx);
        tasks.push(tokio::spawn(worker(ctx.clone(), rx, acks.clone())));
    }
    tasks.push(tokio::spawn(acker(client.clone(), acks_rx)));
    tasks.push(tokio::spawn(drive(
        eventloop,
        client.clone(),
        settings.filters(),
        Dispatch { queues, acks },
        ready_tx,
        shutdown_rx,
        metrics,
    )));
    SyncHandle { client, authorizer, ready, shutdown, tasks }
}

impl SyncHandle {
    /// Waits until the client is connected and subscribed; false on timeout.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut ready = self.ready.clone();
        tokio::time::timeout(timeout, ready.wait_for(|r| *r)).await.is_ok_and(|r| r.is_ok())
    }

    /// The hub's MQTT client (to publish commands; it queues while disconnected).
    pub fn client(&self) -> AsyncClient {
        self.client.clone()
    }

    /// Sites' authorization requests are answered by OCPI from now on.
    pub fn set_ocpi(&self, state: crate::ocpi::OcpiState) {
        let _ = self.authorizer.set(state);
    }

    /// Whether the client is connected and subscribed now.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Follows [`SyncHandle::is_ready`].
    pub fn ready_watch(&self) -> watch::Receiver<bool> {
        self.ready.clone()
    }

    /// Closes the connection, lets the workers finish what they hold, and waits for them.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

fn shard(topic: &str, workers: usize) -> usize {
    let site = Topic::parse(topic).map(|(site, _)| site).unwrap_or("");
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    site.hash(&mut hasher);
    (hasher.finish() % workers.max(1) as u64) as usize
}

/// Polls the connection: (re)subscribes after every CONNACK, hands messages to the
/// workers, and reconnects after errors.
async fn drive(
    mut eventloop: rumqttc::EventLoop,
    client: AsyncClient,
    filters: Vec<String>,
    Dispatch { queues, acks }: Dispatch,
    ready: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) {
    let mut failing = false;
    // Every message received, numbered in arrival order (over all connections).
    let mut received: u64 = 0;
    loop {
        let event = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                failing = false;
                // What the previous connection received and has not acked stays unacked:
                // its packet ids mean nothing on this one.
                let _ = acks.send(AckMsg::Reset);
                tracing::info!(filters = ?filters, "MQTT connected; subscribing");
                let subscribe = filters.iter().map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                if let Err(e) = client.try_subscribe_many(subscribe) {
                    tracing::error!(error = %e, "cannot queue the subscription");
                }
            }
            Ok(Event::Incoming(Incoming::SubAck(ack))) => {
                if ack.return_codes.iter().any(|c| matches!(c, SubscribeReasonCode::Failure)) {
                    tracing::error!(codes = ?ack.return_codes, "the broker refused a subscription: no batches will arrive");
                } else {
                    metrics.mqtt_connected.set(1);
                    let _ = ready.send(true);
                }
            }
            Ok(Event::Incoming(Incoming::Publish(publish))) => {
                let i = shard(&publish.topic, queues.len());
                received += 1;
                // Before the worker can report it done (the acker sees this first).
                let _ = acks.send(AckMsg::Received { index: received, qos: publish.qos, pkid: publish.pkid });
                if let Some(queue) = queues.get(i)
                    && queue.send((publish, received)).is_err()
                {
                    tracing::error!("ingest worker {i} is gone");
                }
            }
            Ok(_) => {}
            Err(e) => {
                metrics.mqtt_connected.set(0);
                let _ = ready.send(false);
                if !failing {
                    tracing::warn!(error = %e, "MQTT connection lost; retrying every second");
                    failing = true;
                } else {
                    tracing::debug!(error = %e, "MQTT reconnect failed");
                }
                tokio::select! {
                    _ = shutdown.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    metrics.mqtt_connected.set(0);
    let _ = ready.send(false);
}

async fn worker(
    ctx: Arc<Ctx>,
    mut queue: mpsc::UnboundedReceiver<(rumqttc::Publish, u64)>,
    acks: mpsc::UnboundedSender<AckMsg>,
) {
    while let Some((publish, index)) = queue.recv().await {
        handle(&ctx, &publish.topic, &publish.payload).await;
        let _ = acks.send(AckMsg::Done(index));
    }
}

/// Where received messages go: a worker's queue, and the acker.
struct Dispatch {
    queues: Vec<mpsc::UnboundedSender<(rumqttc::Publish, u64)>>,
    acks: mpsc::UnboundedSender<AckMsg>,
}

/// What the acker hears of.
#[derive(Debug)]
enum AckMsg {
    /// A message arrived (the `index`-th, counting from 1).
    Received { index: u64, qos: QoS, pkid: u16 },
    /// A worker has handled message `index`.
    Done(u64),
    /// A new connection: forget what the previous one received.
    Reset,
}

/// Sends PUBACKs in the order the messages arrived, each once every message before it
/// was handled.
async fn acker(client: AsyncClient, mut queue: mpsc::UnboundedReceiver<AckMsg>) {
    let mut order = AckOrder::default();
    while let Some(msg) = queue.recv().await {
        let ready = match msg {
            AckMsg::Received { index, qos, pkid } => {
                order.received(index, qos, pkid);
                continue;
            }
            AckMsg::Done(index) => order.done(index),
            AckMsg::Reset => {
                order.reset();
                continue;
            }
        };
        for (qos, pkid) in ready {
            let mut publish = rumqttc::Publish::new("", qos, Vec::<u8>::new());
            publish.pkid = pkid;
            if let Err(e) = client.ack(&publish).await {
                tracing::debug!(error = %e, "cannot acknowledge a message to the broker");
            }
        }
    }
}

/// The messages received and not yet acknowledged, in arrival order (pure; see
/// [`acker`]).
#[derive(Debug, Default)]
struct AckOrder {
    /// (index, QoS, packet id, handled), indexes consecutive from the front.
    waiting: VecDeque<(u64, QoS, u16, bool)>,
}

impl AckOrder {
    fn received(&mut self, index: u64, qos: QoS, pkid: u16) {
        self.waiting.push_back((index, qos, pkid, false));
    }

    /// Marks `index` handled; returns the acks now due, in order. An index not waiting
    /// (from before a [`AckOrder::reset`]) is ignored.
    fn done(&mut self, index: u64) -> Vec<(QoS, u16)> {
        let Some(front) = self.waiting.front().map(|w| w.0) else { return Vec::new() };
        let Some(at) = index.checked_sub(front).and_then(|d| usize::try_from(d).ok()) else { return Vec::new() };
        match self.waiting.get_mut(at) {
            Some(w) if w.0 == index => w.3 = true,
            _ => return Vec::new(),
        }
        let mut due = Vec::new();
        while self.waiting.front().is_some_and(|w| w.3) {
            if let Some((_, qos, pkid, _)) = self.waiting.pop_front() {
                due.push((qos, pkid));
            }
        }
        due
    }

    fn reset(&mut self) {
        self.waiting.clear();
    }
}

/// Handles one message; every failure is logged with its reason and counted.
async fn handle(ctx: &Ctx, topic: &str, payload: &[u8]) {
    let Some((site, kind)) = Topic::parse(topic) else {
        ctx.metrics.messages.get_or_create(&TopicLabels { topic: "other" }).inc();
        report(ctx, topic, Reject::BadTopic(topic.to_owned()));
        return;
    };
    ctx.metrics.messages.get_or_create(&TopicLabels { topic: kind.suffix() }).inc();
    let result = match kind {
        Topic::Events => on_batch(ctx, site, payload).await,
        Topic::Hello => on_hello(ctx, site, payload).await,
        Topic::Status => on_status(ctx, site, payload).await,
        Topic::Results => on_result(ctx, site, payload).await,
        Topic::AuthRequests => on_auth(ctx, site, payload),
        // Down topics are ours (the hub does not subscribe to them).
        Topic::Acks | Topic::Commands | Topic::AuthAnswers => Ok(()),
    };
    if let Err(reject) = result {
        report(ctx, topic, reject);
    }
}

fn report(ctx: &Ctx, topic: &str, reject: Reject) {
    ctx.metrics.reject(reject.label());
    match &reject {
        Reject::Db(e) => {
            tracing::error!(topic, error = %e, "message not applied (database error); the site will resend")
        }
        _ => tracing::warn!(topic, reason = reject.label(), error = %reject, "message dropped"),
    }
}

async fn on_batch(ctx: &Ctx, site: &str, payload: &[u8]) -> Result<(), Reject> {
    let batch = ingest::parse_batch(site, payload)?;
    let started = std::time::Instant::now();
    let applied = ingest::apply_batch(&ctx.store, &batch, Utc::now()).await?;
    ctx.metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
    ctx.metrics.batches.get_or_create(&ResultLabels { result: applied.outcome.label() }).inc();
    if let ingest::Outcome::Applied { first, last } = applied.outcome {
        ctx.metrics.events_applied.inc_by(last - first + 1);
    }
    ctx.metrics.events_raw.inc_by(applied.raw);
    let (from, to) = batch.range().unwrap_or((0, 0));
    match applied.outcome {
        ingest::Outcome::Applied { .. } => {
            tracing::debug!(site, from, to, applied_through = applied.applied_through, "batch applied")
        }
        ingest::Outcome::Duplicate => {
            tracing::debug!(site, from, to, applied_through = applied.applied_through, "batch seen before")
        }
        ingest::Outcome::Gap { .. } => tracing::info!(
            site,
            from,
            to,
            applied_through = applied.applied_through,
            "batch does not continue where the site stands: not applied"
        ),
    }
    if let ingest::Outcome::Applied { .. } = applied.outcome {
        crate::dashboard::live::changed(site);
    }
    publish_ack(ctx, site, applied.applied_through, false).await;
    Ok(())
}

async fn on_hello(ctx: &Ctx, site: &str, payload: &[u8]) -> Result<(), Reject> {
    let hello = ingest::parse_hello(site, payload)?;
    let Some(applied_through) = ingest::record_hello(&ctx.store, &hello, Utc::now()).await? else {
        return Err(Reject::UnknownSite(site.to_owned()));
    };
    if hello.newest.is_some_and(|newest| newest < applied_through) {
        ctx.metrics.outbox_regressions.inc();
        tracing::warn!(
            site,
            newest = hello.newest,
            applied_through,
            "the site's newest seq is below what the hub applied: was its outbox reset? Its new events with \
             seqs up to {applied_through} will be taken for duplicates"
        );
    }
    tracing::info!(site, agent = hello.agent_version, applied_through, "hello");
    publish_ack(ctx, site, applied_through, true).await;
    resend_commands(ctx, site).await;
    Ok(())
}

/// Publishes again the site's commands that have no result and have not expired (the
/// site was away when they were sent, or its result was lost). Failures are logged: the
/// next hello tries again.
async fn resend_commands(ctx: &Ctx, site: &str) {
    let now = Utc::now();
    let pending = match commands::unanswered(&ctx.store, site, now).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(site, error = %e, "cannot read the site's unanswered commands; not re-sent");
            return;
        }
    };
    for env in pending {
        let payload = match serde_json::to_vec(&env) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(site, command_id = env.command_id, error = %e, "cannot serialise a command");
                continue;
            }
        };
        if let Err(e) = ctx.client.publish(Topic::Commands.of(site), QoS::AtLeastOnce, false, payload).await {
            tracing::warn!(site, error = %e, "cannot re-send commands; the next hello tries again");
            return;
        }
        ctx.metrics.commands_published.get_or_create(&ReasonLabels { reason: "hello" }).inc();
        tracing::info!(site, command_id = env.command_id, "unanswered command re-sent after hello");
        if let Err(e) = commands::mark_sent(&ctx.store, &env.command_id, now).await {
            tracing::warn!(site, command_id = env.command_id, error = %e, "cannot count the re-send");
        }
    }
}

async fn on_result(ctx: &Ctx, site: &str, payload: &[u8]) -> Result<(), Reject> {
    let result = ingest::parse_result(site, payload)?;
    let outcome = commands::record_result(&ctx.store, &result, Utc::now()).await?;
    ctx.metrics.command_results.get_or_create(&ResultLabels { result: outcome.label() }).inc();
    let id = result.command_id.as_str();
    match outcome {
        commands::ResultOutcome::Stored => {
            tracing::info!(site, command_id = id, outcome = ?result.outcome, "command result");
            // The site page lists its recent commands with their results.
            crate::dashboard::live::changed(site);
        }
        commands::ResultOutcome::Duplicate => {
            tracing::debug!(site, command_id = id, "command result received again (a redelivery): nothing to do")
        }
        commands::ResultOutcome::Conflicting => tracing::warn!(
            site,
            command_id = id,
            outcome = ?result.outcome,
            "a different result for a command that has one: the first one stands"
        ),
        commands::ResultOutcome::UnknownCommand => {
            tracing::warn!(site, command_id = id, "result for a command this hub did not send to this site: ignored")
        }
    }
    Ok(())
}

/// Answers an authorization request in a task of its own: the site's batches are not
/// held up while an eMSP thinks.
fn on_auth(ctx: &Ctx, site: &str, payload: &[u8]) -> Result<(), Reject> {
    let req = ingest::parse_auth_request(site, payload)?;
    let (client, ocpi) = (ctx.client.clone(), ctx.authorizer.get().cloned());
    // Over the site's budget: Unknown at once, no eMSP asked (the site's policy decides).
    let limited = ocpi.as_ref().is_some_and(|s| !s.auth_limiter.admit(site, std::time::Instant::now()));
    if limited {
        ctx.metrics.ocpi_auth_rate_limited.inc();
        tracing::warn!(site, id_tag = req.id_tag, "authorization request over the site's rate: answered Unknown");
    }
    let site = site.to_owned();
    tokio::spawn(async move {
        let answer = match &ocpi {
            Some(_) if limited => crate::ocpi::realtime::rate_limited(&req),
            Some(state) => crate::ocpi::realtime::authorize_for_site(state, &req).await,
            None => crate::ocpi::realtime::unknown(&req, "hub: OCPI is off"),
        };
        tracing::info!(site, id_tag = req.id_tag, verdict = ?answer.verdict, source = ?answer.source, "authorization request answered");
        match serde_json::to_vec(&answer) {
            Ok(payload) => {
                if let Err(e) = client.publish(Topic::AuthAnswers.of(&site), QoS::AtLeastOnce, false, payload).await {
                    tracing::warn!(site, error = %e, "cannot publish an authorization answer; the site falls back");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot serialise an authorization answer"),
        }
    });
    Ok(())
}

async fn on_status(ctx: &Ctx, site: &str, payload: &[u8]) -> Result<(), Reject> {
    if payload.is_empty() {
        // A retained status being cleared.
        return Ok(());
    }
    let status = ingest::parse_status(site, payload)?;
    if !ingest::record_status(&ctx.store, &status).await? {
        return Err(Reject::UnknownSite(site.to_owned()));
    }
    tracing::info!(site, online = status.online, "site status");
    crate::dashboard::live::changed(site);
    Ok(())
}

/// Acks where the site stands, with its flow-control grant (a slow start after a hello).
async fn publish_ack(ctx: &Ctx, site: &str, applied_through: u64, after_hello: bool) {
    let mut ack = ingest::ack(site, applied_through);
    ack.window = Some(ctx.flow.grant(site, after_hello, std::time::Instant::now()));
    let payload = match serde_json::to_vec(&ack) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise an ack");
            return;
        }
    };
    match ctx.client.publish(Topic::Acks.of(site), QoS::AtLeastOnce, false, payload).await {
        Ok(()) => {
            ctx.metrics.acks_sent.inc();
        }
        Err(e) => tracing::warn!(site, error = %e, "cannot publish the ack; the site will ask again"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_subscriptions_only_with_a_group() {
        let mut s = SyncSettings {
            host: "h".into(),
            port: 1,
            client_id: "c".into(),
            username: None,
            password: None,
            keep_alive: Duration::from_secs(30),
            max_payload_bytes: 1024,
            share_group: None,
            workers: 2,
            inflight_budget_bytes: 1 << 20,
            inflight_budget_batches: 100,
        };
        assert_eq!(
            s.filters(),
            [
                "sitepilot/v1/+/up/events",
                "sitepilot/v1/+/up/hello",
                "sitepilot/v1/+/up/status",
                "sitepilot/v1/+/up/results",
                "sitepilot/v1/+/up/auth"
            ]
        );
        s.share_group = Some("hub".into());
        assert_eq!(s.filters()[0], "$share/hub/sitepilot/v1/+/up/events");
    }

    #[test]
    fn acks_go_out_in_arrival_order_whoever_finishes_first() {
        let mut o = AckOrder::default();
        for (i, pkid) in [(1, 10), (2, 11), (3, 12), (4, 13)] {
            o.received(i, QoS::AtLeastOnce, pkid);
        }
        assert!(o.done(3).is_empty(), "3 waits for 1 and 2");
        assert!(o.done(2).is_empty());
        assert_eq!(o.done(1), [(QoS::AtLeastOnce, 10), (QoS::AtLeastOnce, 11), (QoS::AtLeastOnce, 12)]);
        assert!(o.done(3).is_empty(), "acked once");
        assert_eq!(o.done(4), [(QoS::AtLeastOnce, 13)]);
        assert!(o.waiting.is_empty());
    }

    #[test]
    fn acks_of_a_closed_connection_are_never_sent() {
        let mut o = AckOrder::default();
        o.received(1, QoS::AtLeastOnce, 1);
        o.received(2, QoS::AtLeastOnce, 2);
        o.reset();
        o.received(3, QoS::AtLeastOnce, 1);
        assert!(o.done(1).is_empty());
        assert!(o.done(2).is_empty());
        assert_eq!(o.done(3), [(QoS::AtLeastOnce, 1)]);
        assert!(o.done(0).is_empty() && o.done(99).is_empty());
    }

    #[test]
    fn a_site_always_goes_to_the_same_worker() {
        let a = shard("sitepilot/v1/site-a/up/events", 4);
        assert_eq!(a, shard("sitepilot/v1/site-a/up/hello", 4));
        assert!(a < 4);
        assert_eq!(shard("garbage", 1), 0);
    }
}
