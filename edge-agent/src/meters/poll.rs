//! The driver of one meter: a task that owns the meter and its bus, runs the
//! [`PollSchedule`] against tokio's clock and reports to the [`MeterHub`].

use super::hub::{MeterHub, ReadUpdate};
use super::schedule::{Action, AfterFailure, PollPolicy, PollSchedule, Transition};
use chrono::{DateTime, Utc};
use hardware::bus::{ErrorKind, RegisterBus};
use hardware::meter::{MeterError, MeterReading, ModbusMeter, Quantity};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Largest plausible current (A) and power (W): beyond these the registers hold garbage
/// (a wrong map, a wrong word order), not a measurement.
const MAX_CURRENT_A: f64 = 100_000.0;
const MAX_POWER_W: f64 = 1e9;

/// Why a read gave no usable reading.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Meter(#[from] MeterError),
    /// The meter answered with values that cannot be a measurement.
    #[error("bad reading: {0}")]
    BadReading(String),
}

impl ReadError {
    /// The `result` label of `meter_reads_total` and the `kind` the API shows.
    pub fn label(&self) -> &'static str {
        match self {
            ReadError::Meter(e) => error_label(e.kind()),
            ReadError::BadReading(_) => "bad_reading",
        }
    }
}

/// Sorts a hardware error into what an installer acts on.
pub fn error_label(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Timeout => "timeout",
        ErrorKind::Disconnected | ErrorKind::Io => "offline",
        // A TCP-to-RTU gateway answered; the meter behind it did not.
        ErrorKind::Exception(0x0A | 0x0B) => "offline",
        // Illegal function / data address / data value: the map does not fit the device.
        ErrorKind::Exception(0x01..=0x03) => "bad_register",
        ErrorKind::Exception(_) => "device_error",
        ErrorKind::InvalidResponse => "invalid_response",
        ErrorKind::Unavailable => "unavailable",
        _ => "other",
    }
}

/// Checks a decoded reading: every value finite and plausible, and at least one phase
/// current when the map has any (the balancer needs currents).
pub fn check_reading(reading: &MeterReading, phases_mapped: [bool; 3]) -> Result<(), String> {
    for q in Quantity::ALL {
        let Some(v) = reading.get(q) else { continue };
        if !v.is_finite() {
            return Err(format!("{q} is {v}"));
        }
        let limit = match q.unit() {
            "A" => MAX_CURRENT_A,
            "W" | "var" | "VA" => MAX_POWER_W,
            _ => continue,
        };
        if v.abs() > limit {
            return Err(format!("{q} = {v} {} is beyond any real installation (wrong map or word order?)", q.unit()));
        }
    }
    if phases_mapped.iter().any(|m| *m) && reading.currents_a.iter().all(Option::is_none) {
        return Err("the meter reports no phase current as available".into());
    }
    Ok(())
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The wall-clock time of `at`, given that `now` is `now_utc`.
fn wall(at: Instant, now: Instant, now_utc: DateTime<Utc>) -> DateTime<Utc> {
    let back = chrono::Duration::from_std(now.saturating_duration_since(at)).unwrap_or_default();
    now_utc - back
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

fn report_transition(hub: &MeterHub, index: usize, transition: Transition, now_instant: Instant) {
    let at = match transition {
        Transition::Stale { at } | Transition::Fresh { at, .. } => at,
    };
    hub.record_transition(index, transition, wall(at, now_instant, Utc::now()));
}

/// Polls `meter` until `shutdown` turns true (or its sender is dropped), then gives the
/// meter back (tests check the scripted bus was used up).
pub async fn run<B: RegisterBus>(
    mut meter: ModbusMeter<B>,
    hub: MeterHub,
    index: usize,
    policy: PollPolicy,
    mut shutdown: watch::Receiver<bool>,
) -> ModbusMeter<B> {
    let phases_mapped = [Quantity::CurrentL1, Quantity::CurrentL2, Quantity::CurrentL3].map(|q| meter.provides(q));
    let id = hub.snapshot().meters.get(index).map(|m| m.info.id.clone()).unwrap_or_default();
    let mut schedule = PollSchedule::new(policy, now());
    loop {
        if *shutdown.borrow() {
            return meter;
        }
        let t = now();
        if let Some(tr) = schedule.handle_timeout(t) {
            report_transition(&hub, index, tr, t);
        }
        match schedule.action(t) {
            Action::Wait(until) => {
                tokio::select! {
                    () = sleep_until(Some(until)) => {}
                    changed = shutdown.changed() => if changed.is_err() { return meter; },
                }
            }
            Action::Read => {
                let started = now();
                let result = {
                    let read = meter.read_all();
                    tokio::pin!(read);
                    // The staleness deadline may pass while a slow read is under way.
                    loop {
                        tokio::select! {
                            r = &mut read => break r,
                            () = sleep_until(schedule.stale_at()) => {
                                let t = now();
                                if let Some(tr) = schedule.handle_timeout(t) {
                                    report_transition(&hub, index, tr, t);
                                }
                            }
                        }
                    }
                };
                let result = result
                    .map_err(ReadError::from)
                    .and_then(|r| check_reading(&r, phases_mapped).map(|()| r).map_err(ReadError::BadReading));
                let done = now();
                let elapsed = done.saturating_duration_since(started);
                let done_utc = Utc::now();
                match result {
                    Ok(reading) => {
                        let transition = schedule.on_success(done);
                        hub.record_success(index, update(&schedule, elapsed), &reading, done_utc);
                        if let Some(tr) = transition {
                            report_transition(&hub, index, tr, done);
                        }
                    }
                    Err(err) => {
                        let was_failing = schedule.failed_polls() > 0;
                        let (after, transition) = schedule.on_failure(done);
                        hub.record_failure(index, update(&schedule, elapsed), err.label(), err.to_string(), done_utc);
                        if let Some(tr) = transition {
                            report_transition(&hub, index, tr, done);
                        }
                        match after {
                            AfterFailure::Retry { attempt } => {
                                tracing::debug!(meter = %id, attempt, error = %err, "meter read failed, retrying")
                            }
                            AfterFailure::GaveUp { failed_polls, .. } if !was_failing => tracing::warn!(
                                meter = %id,
                                error = %err,
                                failed_polls,
                                "meter {id}: read failed after {} attempts", policy.retries + 1
                            ),
                            AfterFailure::GaveUp { failed_polls, next_poll } => tracing::debug!(
                                meter = %id,
                                error = %err,
                                failed_polls,
                                next_poll_in_ms = u64::try_from(next_poll.saturating_duration_since(done).as_millis()).unwrap_or(u64::MAX),
                                "meter read failed again"
                            ),
                        }
                    }
                }
            }
        }
    }
}

fn update(schedule: &PollSchedule, elapsed: Duration) -> ReadUpdate {
    ReadUpdate { elapsed, failed_polls: schedule.failed_polls(), interval: schedule.interval() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meters::hub::MeterInfo;
    use crate::metrics::Metrics;
    use hardware::bus::{BusError, Expect, ScriptedBus};
    use hardware::meter::RegisterMap;
    use std::sync::Arc;

    fn sdm630() -> RegisterMap {
        RegisterMap::builtin("eastron-sdm630").expect("built-in map")
    }

    fn words(reading: &MeterReading) -> Vec<u16> {
        sdm630().encode(reading).expect("encodable").read(0, 76)
    }

    fn reading(amps: f64) -> MeterReading {
        MeterReading {
            currents_a: [Some(amps), Some(amps + 1.0), Some(amps + 2.0)],
            voltages_v: [Some(230.0); 3],
            power_w: Some(amps * 690.0),
            frequency_hz: Some(50.0),
            ..MeterReading::default()
        }
    }

    fn hub(metrics: Arc<Metrics>) -> MeterHub {
        MeterHub::new(
            vec![MeterInfo {
                id: "grid".into(),
                map: "eastron-sdm630".into(),
                transport: "scripted".into(),
                unit_id: 1,
                node: None,
                period_ms: 100,
                stale_after_periods: 3,
                phases_mapped: [true; 3],
            }],
            metrics,
        )
    }

    fn policy() -> PollPolicy {
        PollPolicy {
            period: Duration::from_millis(100),
            retries: 1,
            max_backoff: Duration::from_millis(400),
            stale_after_periods: 3,
        }
    }

    #[test]
    fn error_kinds_become_installer_labels() {
        assert_eq!(error_label(ErrorKind::Timeout), "timeout");
        assert_eq!(error_label(ErrorKind::Disconnected), "offline");
        assert_eq!(error_label(ErrorKind::Exception(0x0B)), "offline");
        assert_eq!(error_label(ErrorKind::Exception(0x02)), "bad_register");
        assert_eq!(error_label(ErrorKind::Exception(0x06)), "device_error");
        assert_eq!(error_label(ErrorKind::InvalidResponse), "invalid_response");
    }

    #[test]
    fn implausible_or_empty_readings_are_bad() {
        assert_eq!(check_reading(&reading(16.0), [true; 3]), Ok(()));
        let mut r = reading(16.0);
        r.currents_a[1] = Some(f64::INFINITY);
        assert!(check_reading(&r, [true; 3]).is_err_and(|e| e.contains("current_l2 is inf")));
        r.currents_a[1] = Some(3.0e30);
        assert!(check_reading(&r, [true; 3]).is_err_and(|e| e.contains("beyond any real installation")));
        let none = MeterReading { currents_a: [None; 3], ..reading(1.0) };
        assert!(check_reading(&none, [true; 3]).is_err());
        // A power-only map has no currents to miss.
        assert_eq!(check_reading(&none, [false; 3]), Ok(()));
    }

    /// The exact reads over a scripted bus on tokio's paused clock: a good read, a timeout
    /// and its immediate retry, a read with NaN currents (bad), silence until stale, and
    /// recovery.
    #[tokio::test(start_paused = true)]
    async fn polls_retry_back_off_go_stale_and_recover_on_a_scripted_bus() {
        let metrics = Arc::new(Metrics::new());
        let hub = hub(metrics.clone());
        let nan = MeterReading { currents_a: [None; 3], ..reading(0.0) };
        let mut nan_words = words(&nan);
        for w in &mut nan_words[6..12] {
            *w = 0x7FC0; // every word of L1..L3 (0x0006..0x000B): 0x7FC07FC0 is a float32 NaN
        }
        let timeout = || Err(BusError::timeout("no answer within 50ms"));
        let bus = ScriptedBus::new([
            // t = 0: good.
            Expect::read_input(1, 0, 76, Ok(words(&reading(10.0)))),
            // t = 100: timeout, retried at once: good.
            Expect::read_input(1, 0, 76, timeout()),
            Expect::read_input(1, 0, 76, Ok(words(&reading(11.0)))),
            // t = 200: NaN currents, retry: timeout -> poll 1 failed, next at 300.
            Expect::read_input(1, 0, 76, Ok(nan_words)),
            Expect::read_input(1, 0, 76, timeout()),
            // t = 300: both attempts fail -> 2 failed polls, next at 300 + 200 = 500.
            Expect::read_input(1, 0, 76, timeout()),
            Expect::read_input(1, 0, 76, timeout()),
            // Stale at 100 + 300 = 400 (last good read), before the next poll.
            // t = 500: good again -> fresh.
            Expect::read_input(1, 0, 76, Ok(words(&reading(12.0)))),
            // t = 600
            Expect::read_input(1, 0, 76, Ok(words(&reading(13.0)))),
        ]);
        let meter = ModbusMeter::new(bus, 1, sdm630());
        let (stop, shutdown) = watch::channel(false);
        let mut rx = hub.subscribe();
        let task = tokio::spawn(run(meter, hub.clone(), 0, policy(), shutdown));

        // Observe every published state: (ms since start, stale, reads_ok, reads_failed).
        let t0 = tokio::time::Instant::now();
        let mut seen = Vec::new();
        while tokio::time::Instant::now() - t0 < Duration::from_millis(650) {
            tokio::select! {
                _ = rx.changed() => {
                    let s = rx.borrow_and_update().meters[0].clone();
                    seen.push(((tokio::time::Instant::now() - t0).as_millis(), s.stale, s.reads_ok, s.reads_failed));
                }
                () = tokio::time::sleep_until(t0 + Duration::from_millis(650)) => {}
            }
        }
        stop.send(true).expect("task alive");
        let mut meter = task.await.expect("task");
        meter.bus_mut().done();

        let transitions: Vec<(u128, bool)> =
            seen.windows(2).filter(|w| w[0].1 != w[1].1).map(|w| (w[1].0, w[1].1)).collect();
        // A watch receiver sees the latest state: the first read and its end of the start-up
        // staleness arrive together.
        assert_eq!(seen.first(), Some(&(0, false, 1, 0)), "{seen:?}");
        assert_eq!(transitions, vec![(400, true), (500, false)], "{seen:?}");
        assert_eq!(seen.last().map(|s| (s.2, s.3)), Some((4, 5)), "{seen:?}");
        let m = hub.get("grid").expect("meter");
        assert!(!m.stale);
        assert_eq!(m.stale_entries, 2);
        assert_eq!(m.reading.map(|r| r.currents_a[0]), Some(Some(13.0)));
        assert_eq!(m.consecutive_failures, 0);
        assert_eq!(m.poll_interval_ms, 100);
        assert_eq!(m.last_error.as_ref().map(|e| e.kind), Some("timeout"));
        let text = metrics.render();
        for line in [
            r#"sitepilot_edge_meter_reads_total{meter="grid",result="ok"} 4"#,
            r#"sitepilot_edge_meter_reads_total{meter="grid",result="timeout"} 4"#,
            r#"sitepilot_edge_meter_reads_total{meter="grid",result="bad_reading"} 1"#,
            r#"sitepilot_edge_meter_stale_transitions_total{meter="grid",direction="enter"} 2"#,
            r#"sitepilot_edge_meter_stale_transitions_total{meter="grid",direction="exit"} 2"#,
            r#"sitepilot_edge_meter_current_amperes{meter="grid",phase="L3"} 15.0"#,
            r#"sitepilot_edge_meter_read_seconds_count{meter="grid"} 9"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
