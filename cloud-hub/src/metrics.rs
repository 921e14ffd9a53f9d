//! Prometheus metrics, one registry per hub instance (several hubs can run in one test
//! process without mixing their counts). Served as text at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Mutex;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    /// `up/events`, `up/hello`, ... or `other`.
    pub topic: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// Event batches: `applied`, `duplicate`, `gap`. Command results: `stored`,
    /// `duplicate`, `conflicting`, `unknown_command`.
    pub result: &'static str,
}

/// All metrics of one hub.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub mqtt_connected: Gauge,
    pub messages: Family<TopicLabels, Counter>,
    pub rejected: Family<ReasonLabels, Counter>,
    pub batches: Family<ResultLabels, Counter>,
    pub events_applied: Counter,
    pub events_raw: Counter,
    pub acks_sent: Counter,
    pub outbox_regressions: Counter,
    pub batch_seconds: Histogram,
    pub broker_refused: Family<ReasonLabels, Counter>,
    pub command_results: Family<ResultLabels, Counter>,
    pub commands_published: Family<ReasonLabels, Counter>,
    pub api_refused: Family<ReasonLabels, Counter>,
    pub ocpi_auth_rate_limited: Counter,
    pub dashboard_streams: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sitepilot_hub");
        let mqtt_connected = Gauge::default();
        registry.register(
            "mqtt_connected",
            "1 while the hub's MQTT client is connected and subscribed",
            mqtt_connected.clone(),
        );
        let messages = Family::<TopicLabels, Counter>::default();
        registry.register("mqtt_messages", "MQTT messages received, by topic", messages.clone());
        let rejected = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "messages_rejected",
            "Messages dropped without applying anything, by reason (bad_topic, bad_json, bad_version, \
             site_mismatch, bad_batch, bad_result, unknown_site, db_error)",
            rejected.clone(),
        );
        let batches = Family::<ResultLabels, Counter>::default();
        registry.register(
            "event_batches",
            "Event batches by result: applied (something new), duplicate (all seen before), gap \
             (starts beyond applied_through + 1, not applied)",
            batches.clone(),
        );
        let events_applied = Counter::default();
        registry.register("events_applied", "Events applied (stored with their effects)", events_applied.clone());
        let events_raw = Counter::default();
        registry.register(
            "events_stored_raw",
            "Events of a kind or shape this hub does not know, stored as they came and acked",
            events_raw.clone(),
        );
        let acks_sent = Counter::default();
        registry.register("acks_sent", "Acks published to sites", acks_sent.clone());
        let outbox_regressions = Counter::default();
        registry.register(
            "outbox_regressions",
            "Hellos whose newest seq is below what the hub applied (the site's outbox was reset?)",
            outbox_regressions.clone(),
        );
        let batch_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "batch_apply_seconds",
            "Time to apply one event batch (one database transaction)",
            batch_seconds.clone(),
        );
        let broker_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "broker_refused",
            "Embedded broker: connections refused or dropped, by reason (auth, publish_acl, \
             subscribe_acl, will_acl)",
            broker_refused.clone(),
        );
        let command_results = Family::<ResultLabels, Counter>::default();
        registry.register(
            "command_results",
            "Command results from sites, by what became of them: stored (the first for its command), \
             duplicate (the same again), conflicting (a different one after the first: ignored), \
             unknown_command (no such command for that site: ignored)",
            command_results.clone(),
        );
        let commands_published = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "commands_published",
            "Command envelopes published to sites, by reason: api (sent by the fleet API), dashboard (sent \
             from the dashboard), hello (an unanswered command re-sent when its site said hello)",
            commands_published.clone(),
        );
        let api_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "api_refused",
            "Fleet API requests refused, by reason: unauthenticated (no or an invalid API key, 401), \
             forbidden (the key's role does not allow the route, 403)",
            api_refused.clone(),
        );
        let ocpi_auth_rate_limited = Counter::default();
        registry.register(
            "ocpi_auth_rate_limited",
            "Sites' authorization requests (up/auth) over their rate ([ocpi] auth_rate_per_s, auth_burst), \
             answered Unknown at once without asking any eMSP",
            ocpi_auth_rate_limited.clone(),
        );
        let dashboard_streams = Gauge::default();
        registry.register(
            "dashboard_streams",
            "Dashboard pages' live event streams (/events) open now",
            dashboard_streams.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            mqtt_connected,
            messages,
            rejected,
            batches,
            events_applied,
            events_raw,
            acks_sent,
            outbox_regressions,
            batch_seconds,
            broker_refused,
            command_results,
            commands_published,
            api_refused,
            ocpi_auth_rate_limited,
            dashboard_streams,
        }
    }

    /// Counts a dropped message.
    pub fn reject(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// The current value of `messages_rejected{reason}` (for tests and checks).
    pub fn rejected_count(&self, reason: &'static str) -> u64 {
        self.rejected.get_or_create(&ReasonLabels { reason }).get()
    }

    /// The current value of `command_results{result}`.
    pub fn command_results_count(&self, result: &'static str) -> u64 {
        self.command_results.get_or_create(&ResultLabels { result }).get()
    }

    /// The current value of `commands_published{reason}`.
    pub fn commands_published_count(&self, reason: &'static str) -> u64 {
        self.commands_published.get_or_create(&ReasonLabels { reason }).get()
    }

    /// The current value of `broker_refused{reason}`.
    pub fn broker_refused_count(&self, reason: &'static str) -> u64 {
        self.broker_refused.get_or_create(&ReasonLabels { reason }).get()
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = match self.registry.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}
