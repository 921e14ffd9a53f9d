//! The shared state of every meter: what the API shows, what `/metrics` counts, and what
//! the balancer loop consumes. One [`watch`] channel carries a [`MeterSnapshot`] and is
//! updated on every read and every staleness change, so a consumer can run event-driven:
//!
//! ```no_run
//! # async fn demo(hub: edge_agent::meters::MeterHub) {
//! let mut rx = hub.subscribe();
//! while rx.changed().await.is_ok() {
//!     // Stale meters are left out: the balancer then gives their nodes the safe current.
//!     let measurements = rx.borrow_and_update().measurements();
//!     # let _ = measurements;
//! }
//! # }
//! ```

use super::schedule::Transition;
use crate::balancer::{Measurements, NodeId};
use crate::metrics::{MeterLabels, MeterPhaseLabels, MeterResultLabels, MeterTransitionLabels, Metrics};
use chrono::{DateTime, Utc};
use hardware::meter::MeterReading;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What the config says about a meter.
#[derive(Debug, Clone, Serialize)]
pub struct MeterInfo {
    pub id: String,
    /// The built-in map name or the map file.
    pub map: String,
    /// `tcp 192.168.1.50:502` or `rtu /dev/ttyUSB0 9600 8N1`.
    pub transport: String,
    pub unit_id: u8,
    /// The circuit node it measures.
    pub node: Option<NodeId>,
    pub period_ms: u64,
    pub stale_after_periods: u32,
    /// Which phase currents the map provides: a phase it does not is 0 A for the balancer,
    /// a phase it does but the meter reports as not available is "no reading".
    #[serde(skip)]
    pub phases_mapped: [bool; 3],
}

/// One good reading, in base units (A, V, W, Wh, Hz, var, VA); `null` for what the meter
/// does not provide.
pub type Reading = MeterReading;

/// The last failed read attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastError {
    /// `timeout`, `offline`, `bad_register`, `device_error`, `invalid_response`,
    /// `unavailable`, `bad_reading`, `other`: the `result` label of `meter_reads_total`.
    pub kind: &'static str,
    pub message: String,
    pub at: DateTime<Utc>,
}

/// The live state of one meter.
#[derive(Debug, Clone, Serialize)]
pub struct MeterStatus {
    #[serde(flatten)]
    pub info: MeterInfo,
    /// The last good reading (kept while stale, for display; the balancer does not use it).
    pub reading: Option<Reading>,
    /// When the last good reading was taken.
    pub read_at: Option<DateTime<Utc>>,
    /// No good reading for `stale_after_periods` periods, or none yet since start.
    pub stale: bool,
    pub stale_since: Option<DateTime<Utc>>,
    pub last_error: Option<LastError>,
    /// Polls in a row that failed (every attempt, retries included).
    pub consecutive_failures: u32,
    /// The current poll interval: `period_ms`, longer while backing off.
    pub poll_interval_ms: u64,
    /// Read attempts since start.
    pub reads_ok: u64,
    pub reads_failed: u64,
    /// Entries into staleness since start (the start-up counts as one).
    pub stale_entries: u64,
}

impl MeterStatus {
    fn new(info: MeterInfo, now: DateTime<Utc>) -> Self {
        let poll_interval_ms = info.period_ms;
        MeterStatus {
            info,
            reading: None,
            read_at: None,
            stale: true,
            stale_since: Some(now),
            last_error: None,
            consecutive_failures: 0,
            poll_interval_ms,
            reads_ok: 0,
            reads_failed: 0,
            stale_entries: 1,
        }
    }

    /// The reading as the balancer takes it (marked stale when it is: the balancer then
    /// applies the node's safe current), or `None` without a reading yet.
    pub fn balancer_reading(&self) -> Option<crate::balancer::MeterReading> {
        let reading = self.reading?;
        let at = self.read_at?;
        let mut current_a = [0.0; 3];
        for (i, slot) in current_a.iter_mut().enumerate() {
            *slot = match (reading.currents_a[i], self.info.phases_mapped[i]) {
                (Some(a), _) => a,
                // The meter has no such phase: nothing flows there that it could see.
                (None, false) => 0.0,
                // The meter should measure it and does not: not a number, so the balancer
                // treats the whole node as unmeasured.
                (None, true) => f64::NAN,
            };
        }
        Some(crate::balancer::MeterReading {
            current_a,
            at_ms: u64::try_from(at.timestamp_millis()).unwrap_or(0),
            stale: self.stale,
        })
    }

    /// The status with its age at `now`, as the API shows it.
    pub fn view(&self, now: DateTime<Utc>) -> MeterView {
        let age_ms = self.read_at.map(|at| u64::try_from((now - at).num_milliseconds()).unwrap_or(0));
        MeterView { status: self.clone(), age_ms }
    }
}

/// [`MeterStatus`] plus the age of its reading.
#[derive(Debug, Clone, Serialize)]
pub struct MeterView {
    #[serde(flatten)]
    pub status: MeterStatus,
    /// Milliseconds since `read_at`.
    pub age_ms: Option<u64>,
}

/// Every meter's status, in config order.
#[derive(Debug, Clone, Default)]
pub struct MeterSnapshot {
    pub meters: Vec<MeterStatus>,
}

impl MeterSnapshot {
    pub fn get(&self, id: &str) -> Option<&MeterStatus> {
        self.meters.iter().find(|m| m.info.id == id)
    }

    /// The balancer's input: the reading of every fresh meter that has a node.
    pub fn measurements(&self) -> Measurements {
        let meters = self.meters.iter().filter_map(|m| Some((m.info.node.clone()?, m.balancer_reading()?))).collect();
        Measurements { meters }
    }

    /// Whether any meter is stale (some node is on its safe current).
    pub fn any_stale(&self) -> bool {
        self.meters.iter().any(|m| m.stale)
    }
}

/// The registry of meter states, shared by the polling tasks (writers), the API and the
/// balancer loop (readers). Clones share it.
#[derive(Clone)]
pub struct MeterHub {
    tx: Arc<watch::Sender<MeterSnapshot>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for MeterHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeterHub").field("meters", &self.tx.borrow().meters.len()).finish()
    }
}

const PHASES: [&str; 3] = ["L1", "L2", "L3"];

impl MeterHub {
    /// Every meter starts stale: safe limits until it reports. That start-up entry is
    /// logged and counted like any other.
    pub fn new(infos: Vec<MeterInfo>, metrics: Arc<Metrics>) -> Self {
        let now = Utc::now();
        for info in &infos {
            let meter = info.id.clone();
            metrics.meter_stale.get_or_create(&MeterLabels { meter: meter.clone() }).set(1);
            metrics
                .meter_stale_transitions
                .get_or_create(&MeterTransitionLabels { meter: meter.clone(), direction: "enter" })
                .inc();
            // Zero series from the start, so rates and alerts see the first change.
            metrics
                .meter_stale_transitions
                .get_or_create(&MeterTransitionLabels { meter: meter.clone(), direction: "exit" })
                .inc_by(0);
            metrics.meter_reads.get_or_create(&MeterResultLabels { meter, result: "ok" }).inc_by(0);
            tracing::info!(meter = %info.id, transport = %info.transport, map = %info.map,
                "meter {}: no reading yet, stale until it reports (safe limits where it measures)", info.id);
        }
        let snapshot = MeterSnapshot { meters: infos.into_iter().map(|i| MeterStatus::new(i, now)).collect() };
        MeterHub { tx: Arc::new(watch::Sender::new(snapshot)), metrics }
    }

    /// A receiver that sees every update (each read and each staleness change).
    pub fn subscribe(&self) -> watch::Receiver<MeterSnapshot> {
        self.tx.subscribe()
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> MeterSnapshot {
        self.tx.borrow().clone()
    }

    pub fn get(&self, id: &str) -> Option<MeterStatus> {
        self.tx.borrow().get(id).cloned()
    }

    /// The balancer's input now (see [`MeterSnapshot::measurements`]).
    pub fn measurements(&self) -> Measurements {
        self.tx.borrow().measurements()
    }

    /// The API's list.
    pub fn views(&self, now: DateTime<Utc>) -> Vec<MeterView> {
        self.tx.borrow().meters.iter().map(|m| m.view(now)).collect()
    }

    pub fn view(&self, id: &str, now: DateTime<Utc>) -> Option<MeterView> {
        self.tx.borrow().get(id).map(|m| m.view(now))
    }

    /// A good read of meter `index`, taken at `at`.
    pub(crate) fn record_success(&self, index: usize, update: ReadUpdate, reading: &MeterReading, at: DateTime<Utc>) {
        let Some(meter) = self.meter_id(index) else { return };
        self.count_read(&meter, "ok", update.elapsed);
        for (phase, current) in PHASES.iter().zip(reading.currents_a) {
            if let Some(a) = current {
                self.metrics.meter_current.get_or_create(&MeterPhaseLabels { meter: meter.clone(), phase }).set(a);
            }
        }
        if let Some(w) = reading.power_w {
            self.metrics.meter_power.get_or_create(&MeterLabels { meter: meter.clone() }).set(w);
        }
        let reading = *reading;
        self.tx.send_modify(|s| {
            if let Some(m) = s.meters.get_mut(index) {
                m.reading = Some(reading);
                m.read_at = Some(at);
                m.reads_ok += 1;
                m.consecutive_failures = update.failed_polls;
                m.poll_interval_ms = duration_ms(update.interval);
            }
        });
    }

    /// A failed read attempt of meter `index`.
    pub(crate) fn record_failure(
        &self,
        index: usize,
        update: ReadUpdate,
        kind: &'static str,
        message: String,
        at: DateTime<Utc>,
    ) {
        let Some(meter) = self.meter_id(index) else { return };
        self.count_read(&meter, kind, update.elapsed);
        self.tx.send_modify(|s| {
            if let Some(m) = s.meters.get_mut(index) {
                m.last_error = Some(LastError { kind, message, at });
                m.reads_failed += 1;
                m.consecutive_failures = update.failed_polls;
                m.poll_interval_ms = duration_ms(update.interval);
            }
        });
    }

    /// Meter `index` went stale or fresh (`at`: when, on the wall clock).
    pub(crate) fn record_transition(&self, index: usize, transition: Transition, at: DateTime<Utc>) {
        let Some(meter) = self.meter_id(index) else { return };
        let labels = MeterLabels { meter: meter.clone() };
        let mut last_error = None;
        let mut stale_entries = 0;
        let stale = matches!(transition, Transition::Stale { .. });
        self.tx.send_modify(|s| {
            if let Some(m) = s.meters.get_mut(index) {
                m.stale = stale;
                m.stale_since = stale.then_some(at);
                if stale {
                    m.stale_entries += 1;
                }
                last_error = m.last_error.as_ref().map(|e| e.message.clone());
                stale_entries = m.stale_entries;
            }
        });
        let direction = if stale { "enter" } else { "exit" };
        self.metrics.meter_stale.get_or_create(&labels).set(i64::from(stale));
        self.metrics
            .meter_stale_transitions
            .get_or_create(&MeterTransitionLabels { meter: meter.clone(), direction })
            .inc();
        match transition {
            Transition::Stale { .. } => tracing::warn!(
                meter = %meter,
                since = %at,
                last_error = last_error.as_deref().unwrap_or("none"),
                stale_entries,
                "meter {meter} is stale: no good reading in time; safe limits apply where it measures"
            ),
            Transition::Fresh { stale_for, .. } => tracing::info!(
                meter = %meter,
                stale_for_ms = duration_ms(stale_for),
                "meter {meter} reports again; its readings are used again"
            ),
        }
    }

    fn meter_id(&self, index: usize) -> Option<String> {
        self.tx.borrow().meters.get(index).map(|m| m.info.id.clone())
    }

    fn count_read(&self, meter: &str, result: &'static str, elapsed: Duration) {
        self.metrics.meter_reads.get_or_create(&MeterResultLabels { meter: meter.to_owned(), result }).inc();
        self.metrics
            .meter_read_seconds
            .get_or_create(&MeterLabels { meter: meter.to_owned() })
            .observe(elapsed.as_secs_f64());
    }
}

/// What the polling loop knows after a read attempt.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadUpdate {
    pub elapsed: Duration,
    pub failed_polls: u32,
    pub interval: Duration,
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, node: Option<&str>, phases_mapped: [bool; 3]) -> MeterInfo {
        MeterInfo {
            id: id.into(),
            map: "eastron-sdm630".into(),
            transport: "tcp 127.0.0.1:502".into(),
            unit_id: 1,
            node: node.map(|n| n.parse().expect("node id")),
            period_ms: 1000,
            stale_after_periods: 3,
            phases_mapped,
        }
    }

    fn update() -> ReadUpdate {
        ReadUpdate { elapsed: Duration::from_millis(12), failed_polls: 0, interval: Duration::from_secs(1) }
    }

    #[test]
    fn meters_start_stale_and_the_start_up_entry_is_counted() {
        let metrics = Arc::new(Metrics::new());
        let hub = MeterHub::new(vec![info("grid", Some("main"), [true; 3])], metrics.clone());
        let m = hub.get("grid").expect("meter");
        assert!(m.stale);
        assert_eq!(m.stale_entries, 1);
        assert!(hub.measurements().meters.is_empty());
        let text = metrics.render();
        assert!(text.contains(r#"sitepilot_edge_meter_stale{meter="grid"} 1"#), "{text}");
        assert!(
            text.contains(r#"sitepilot_edge_meter_stale_transitions_total{meter="grid",direction="enter"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"sitepilot_edge_meter_stale_transitions_total{meter="grid",direction="exit"} 0"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn readings_and_transitions_are_published_and_feed_the_balancer() {
        let metrics = Arc::new(Metrics::new());
        let hub = MeterHub::new(
            vec![
                info("grid", Some("main"), [true; 3]),
                info("pv", None, [true; 3]),
                info("sub", Some("sub"), [true, false, false]),
            ],
            metrics.clone(),
        );
        let mut rx = hub.subscribe();
        rx.borrow_and_update();
        let at = Utc::now();
        let reading = MeterReading {
            currents_a: [Some(10.0), Some(11.0), None],
            power_w: Some(4_600.0),
            ..MeterReading::default()
        };
        hub.record_success(0, update(), &reading, at);
        assert!(rx.has_changed().expect("open"));
        hub.record_transition(
            0,
            Transition::Fresh { at: std::time::Instant::now(), stale_for: Duration::from_secs(1) },
            at,
        );
        hub.record_success(
            2,
            update(),
            &MeterReading { currents_a: [Some(5.0), None, None], ..MeterReading::default() },
            at,
        );
        hub.record_transition(
            2,
            Transition::Fresh { at: std::time::Instant::now(), stale_for: Duration::from_secs(1) },
            at,
        );

        let snapshot = rx.borrow_and_update().clone();
        let measured = snapshot.measurements();
        let main = measured.meters.get(&"main".parse::<NodeId>().expect("id")).expect("main measured");
        assert_eq!(main.current_a[..2], [10.0, 11.0]);
        // L3 is mapped but not reported: not a number, the balancer goes safe for the node.
        assert!(main.current_a[2].is_nan());
        assert_eq!(main.at_ms, u64::try_from(at.timestamp_millis()).expect("after 1970"));
        // A phase the map does not have is 0 A.
        let sub = measured.meters.get(&"sub".parse::<NodeId>().expect("id")).expect("sub measured");
        assert_eq!(sub.current_a, [5.0, 0.0, 0.0]);
        // The meter without a node is not an input.
        assert_eq!(measured.meters.len(), 2);

        let text = metrics.render();
        assert!(text.contains(r#"sitepilot_edge_meter_current_amperes{meter="grid",phase="L2"} 11.0"#), "{text}");
        assert!(text.contains(r#"sitepilot_edge_meter_power_watts{meter="grid"} 4600.0"#), "{text}");
        assert!(text.contains(r#"sitepilot_edge_meter_stale{meter="grid"} 0"#), "{text}");

        // Stale: passed on marked stale (the balancer goes to the safe current), the last
        // reading stays visible.
        hub.record_failure(0, update(), "timeout", "no answer".into(), at);
        hub.record_transition(0, Transition::Stale { at: std::time::Instant::now() }, at);
        let m = hub.get("grid").expect("meter");
        assert!(m.stale && m.reading.is_some());
        assert_eq!(m.stale_entries, 2);
        assert_eq!(m.last_error.as_ref().map(|e| e.kind), Some("timeout"));
        let main = "main".parse::<NodeId>().expect("id");
        assert!(hub.measurements().meters.get(&main).is_some_and(|r| r.stale), "passed on, marked stale");
        assert!(hub.snapshot().any_stale());
        let text = metrics.render();
        assert!(text.contains(r#"sitepilot_edge_meter_reads_total{meter="grid",result="timeout"} 1"#), "{text}");
        assert!(
            text.contains(r#"sitepilot_edge_meter_stale_transitions_total{meter="grid",direction="exit"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn the_view_serialises_every_field_and_the_age() {
        let hub = MeterHub::new(vec![info("grid", Some("main"), [true; 3])], Arc::new(Metrics::new()));
        let at = Utc::now();
        hub.record_success(0, update(), &MeterReading { frequency_hz: Some(50.0), ..MeterReading::default() }, at);
        let view = hub.view("grid", at + chrono::Duration::milliseconds(250)).expect("meter");
        let json = serde_json::to_value(&view).expect("json");
        assert_eq!(json["id"], "grid");
        assert_eq!(json["node"], "main");
        assert_eq!(json["transport"], "tcp 127.0.0.1:502");
        assert_eq!(json["age_ms"], 250);
        assert_eq!(json["reading"]["frequency_hz"], 50.0);
        assert_eq!(json["reading"]["currents_a"], serde_json::json!([null, null, null]));
        assert!(json.get("phases_mapped").is_none());
        assert!(hub.view("nope", at).is_none());
    }
}
