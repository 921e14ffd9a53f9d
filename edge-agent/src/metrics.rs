//! Prometheus metrics, one registry per agent instance (several agents can run in one
//! test process without mixing their counts). Served as text at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    pub direction: &'static str,
    pub message_type: &'static str,
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub direction: &'static str,
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MeterLabels {
    pub meter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MeterResultLabels {
    pub meter: String,
    /// `ok`, or what went wrong (see `meters::error_label`).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MeterTransitionLabels {
    pub meter: String,
    /// `enter` (stale) or `exit`.
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MeterPhaseLabels {
    pub meter: String,
    /// `L1`, `L2`, `L3`.
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChargerLabels {
    pub charger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailSafeLabels {
    /// `meter_stale`, `meter_missing`, `meter_invalid`, `charger_not_answering`,
    /// `external_limits_expired`.
    pub reason: &'static str,
    /// `enter` or `exit`.
    pub direction: &'static str,
}

fn meter_read_histogram() -> Histogram {
    // 1 ms .. ~8 s
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

fn roundtrip_histogram() -> Histogram {
    // 1 ms .. ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// All metrics of one agent.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub connections: Gauge,
    pub messages: Family<MessageLabels, Counter>,
    pub call_errors: Family<ErrorLabels, Counter>,
    pub call_roundtrip: Family<ActionLabels, Histogram, fn() -> Histogram>,
    pub call_timeouts: Family<ActionLabels, Counter>,
    pub handshake_refused: Family<ReasonLabels, Counter>,
    pub sqlite_commit: Histogram,
    pub sqlite_jobs: Counter,
    pub meter_reads: Family<MeterResultLabels, Counter>,
    pub meter_read_seconds: Family<MeterLabels, Histogram, fn() -> Histogram>,
    pub meter_stale: Family<MeterLabels, Gauge>,
    pub meter_stale_transitions: Family<MeterTransitionLabels, Counter>,
    pub meter_current: Family<MeterPhaseLabels, Gauge<f64, AtomicU64>>,
    pub meter_power: Family<MeterLabels, Gauge<f64, AtomicU64>>,
    pub balancer_run_seconds: Histogram,
    pub balancer_refused: Counter,
    pub balancer_setpoint: Family<ChargerLabels, Gauge<f64, AtomicU64>>,
    pub charging_profiles: Family<ResultLabels, Counter>,
    pub fail_safe_active: Gauge,
    pub fail_safe_transitions: Family<FailSafeLabels, Counter>,
    pub sync: crate::sync::SyncMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sitepilot_edge");
        let connections = Gauge::default();
        registry.register("ocpp_connections", "Open OCPP WebSocket connections", connections.clone());
        let messages = Family::<MessageLabels, Counter>::default();
        registry.register("ocpp_messages", "OCPP frames by direction, type and action", messages.clone());
        let call_errors = Family::<ErrorLabels, Counter>::default();
        registry.register("ocpp_callerrors", "CALLERROR frames by direction and error code", call_errors.clone());
        let call_roundtrip =
            Family::<ActionLabels, Histogram, fn() -> Histogram>::new_with_constructor(roundtrip_histogram);
        registry.register(
            "ocpp_call_roundtrip_seconds",
            "Round trip of CALLs the agent sends, CALL to CALLRESULT/CALLERROR",
            call_roundtrip.clone(),
        );
        let call_timeouts = Family::<ActionLabels, Counter>::default();
        registry.register(
            "ocpp_call_timeouts",
            "CALLs the agent sent that got no answer in time",
            call_timeouts.clone(),
        );
        let handshake_refused = Family::<ReasonLabels, Counter>::default();
        registry.register("ocpp_handshake_refused", "WebSocket upgrades refused, by reason", handshake_refused.clone());
        let sqlite_commit = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register("sqlite_commit_seconds", "Latency of one SQLite group commit", sqlite_commit.clone());
        let sqlite_jobs = Counter::default();
        registry.register("sqlite_write_jobs", "Store write jobs committed", sqlite_jobs.clone());
        let meter_reads = Family::<MeterResultLabels, Counter>::default();
        registry.register("meter_reads", "Meter read attempts by meter and result", meter_reads.clone());
        let meter_read_seconds =
            Family::<MeterLabels, Histogram, fn() -> Histogram>::new_with_constructor(meter_read_histogram);
        registry.register(
            "meter_read_seconds",
            "Duration of one meter read attempt, failed ones included",
            meter_read_seconds.clone(),
        );
        let meter_stale = Family::<MeterLabels, Gauge>::default();
        registry.register(
            "meter_stale",
            "1 while a meter has no fresh reading (safe limits apply where it measures)",
            meter_stale.clone(),
        );
        let meter_stale_transitions = Family::<MeterTransitionLabels, Counter>::default();
        registry.register(
            "meter_stale_transitions",
            "Entries into (start-up included) and exits from meter staleness",
            meter_stale_transitions.clone(),
        );
        let meter_current = Family::<MeterPhaseLabels, Gauge<f64, AtomicU64>>::default();
        registry.register("meter_current_amperes", "Last good current reading per phase", meter_current.clone());
        let meter_power = Family::<MeterLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "meter_power_watts",
            "Last good total active power reading (positive: import)",
            meter_power.clone(),
        );
        let balancer_run_seconds = Histogram::new(exponential_buckets(0.00001, 2.0, 16));
        registry.register(
            "balancer_run_seconds",
            "Compute time of one balancer run (with its verification)",
            balancer_run_seconds.clone(),
        );
        let balancer_refused = Counter::default();
        registry.register(
            "balancer_refused",
            "Allocations refused because they broke a limit or the input was inconsistent (a bug)",
            balancer_refused.clone(),
        );
        let balancer_setpoint = Family::<ChargerLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "balancer_setpoint_amperes",
            "Latest setpoint per charger connector (A per phase; 0 paused or idle)",
            balancer_setpoint.clone(),
        );
        let charging_profiles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "balancer_limits_sent",
            "Limits sent to chargers by the balancer loop, by result",
            charging_profiles.clone(),
        );
        let fail_safe_active = Gauge::default();
        registry.register(
            "balancer_fail_safe_active",
            "Conditions in fail-safe now (stale meters, chargers not answering, expired limits)",
            fail_safe_active.clone(),
        );
        let fail_safe_transitions = Family::<FailSafeLabels, Counter>::default();
        registry.register(
            "balancer_fail_safe_transitions",
            "Entries into and exits from fail-safe, by reason",
            fail_safe_transitions.clone(),
        );
        let sync = crate::sync::SyncMetrics::register(&mut registry);
        Metrics {
            sync,
            balancer_run_seconds,
            balancer_refused,
            balancer_setpoint,
            charging_profiles,
            fail_safe_active,
            fail_safe_transitions,
            registry: Mutex::new(registry),
            connections,
            messages,
            call_errors,
            call_roundtrip,
            call_timeouts,
            handshake_refused,
            sqlite_commit,
            sqlite_jobs,
            meter_reads,
            meter_read_seconds,
            meter_stale,
            meter_stale_transitions,
            meter_current,
            meter_power,
        }
    }

    /// Counts one frame.
    pub fn frame(&self, direction: &'static str, message_type: &'static str, action: &str) {
        self.messages.get_or_create(&MessageLabels { direction, message_type, action: action.to_owned() }).inc();
    }

    /// Counts one CALLERROR.
    pub fn call_error(&self, direction: &'static str, code: shared_model::ocpp::framing::ErrorCode) {
        self.call_errors.get_or_create(&ErrorLabels { direction, code: code.as_str() }).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            // Writing into a String cannot fail.
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }
}

impl crate::store::WriteObserver for Metrics {
    fn commit(&self, seconds: f64, jobs: usize) {
        self.sqlite_commit.observe(seconds);
        self.sqlite_jobs.inc_by(jobs as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.frame("in", "call", "Heartbeat");
        m.call_error("out", shared_model::ocpp::framing::ErrorCode::NotImplemented);
        m.call_roundtrip.get_or_create(&ActionLabels { action: "Reset".into() }).observe(0.003);
        let text = m.render();
        assert!(
            text.contains(
                r#"sitepilot_edge_ocpp_messages_total{direction="in",message_type="call",action="Heartbeat"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"sitepilot_edge_ocpp_callerrors_total{direction="out",code="NotImplemented"} 1"#),
            "{text}"
        );
        assert!(text.contains("sitepilot_edge_ocpp_call_roundtrip_seconds_bucket"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
