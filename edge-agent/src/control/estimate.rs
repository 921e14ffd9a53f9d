//! What a charger draws, as the balancer needs it to tell EV load from building load in a
//! meter reading. Pure: everything is an argument.
//!
//! A charger reports its current (MeterValues `Current.Import`) every few seconds at best,
//! while the site meter reads every second; and an EV follows a new limit only after a
//! delay and a ramp. Subtracting a stale sample from a fresh meter reading would read the
//! EV's own change as building load and make the loop chase its tail (with a one-sample lag
//! the loop `s[k] = L - B - (s[k-1] - s[k-2])` is unstable). So:
//!
//! - **Settling** (a new limit was accepted less than `settle_ms` ago): the draw is somewhere
//!   between the old and the new limit. The estimate is the larger of the two (the non-EV
//!   load computed from it is then a lower bound), and the balancer keeps the previous run's
//!   non-EV load if that is larger ([`ChargerState::settling`](crate::balancer::ChargerState)).
//! - **Steady**, with a sample taken after the EV had time to settle, or one taken after
//!   the change that shows the EV at its new limit (which ends the settling early): the
//!   sample.
//! - **Steady**, without such a sample: the limit in force, or less when the last sample
//!   showed the car taking less than it was offered (it limits itself).
//!
//! The demand: a car that takes clearly less than its limit (more than `DEMAND_GAP_A` below)
//! is given its draw plus that gap as its demand, so what it leaves goes to the others; when
//! it wants more, its next sample is at its limit and the demand is lifted.

/// A car drawing this much below its limit is taken to limit itself (A).
pub const DEMAND_GAP_A: f64 = 2.0;

/// A car within this of its new limit has followed it (A).
pub const FOLLOW_TOLERANCE_A: f64 = 0.5;

/// One `Current.Import` reading of a connector, per charger phase (A).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub current_a: [f64; 3],
    /// When it was received (ms since the epoch).
    pub at_ms: u64,
}

impl Sample {
    fn max(&self) -> f64 {
        self.current_a.iter().copied().fold(0.0, f64::max)
    }
}

/// A limit the charger accepted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Accepted {
    pub limit_a: f64,
    /// When the charger accepted it (ms).
    pub at_ms: u64,
    /// The highest and lowest the EV may still draw from before this change (the limits
    /// of earlier changes it may still be following, or its steady draw); `None`: unknown.
    pub previous_a: Option<f64>,
    pub previous_low_a: Option<f64>,
}

/// The estimate for one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// The best single estimate (while settling: the upper bound).
    pub measured_a: [f64; 3],
    /// Bounds of the draw: equal to `measured_a` when steady; while settling the EV is
    /// somewhere between its old and its new limit.
    pub low_a: [f64; 3],
    pub high_a: [f64; 3],
    pub settling: bool,
    pub demand_a: Option<f64>,
    /// `Some(1)` when a multi-phase charger is seen drawing on one phase only.
    pub ev_phases: Option<u8>,
}

/// Estimates a connector's draw with a session. `phases` is the charger's phase count.
pub fn estimate(
    sample: Option<Sample>,
    accepted: Option<Accepted>,
    phases: usize,
    now_ms: u64,
    settle_ms: u64,
) -> Estimate {
    let phases = phases.clamp(1, 3);
    let ev_phases = sample.and_then(|s| {
        let on = s.current_a.iter().take(phases).filter(|a| **a > 1.0).count();
        let off = s.current_a.iter().take(phases).filter(|a| **a < 0.5).count();
        (phases > 1 && on == 1 && off == phases - 1).then_some(1)
    });
    let used = if ev_phases == Some(1) { 1 } else { phases };
    let spread = |a: f64| {
        let mut out = [0.0; 3];
        for (k, slot) in out.iter_mut().enumerate().take(phases) {
            let on = match (ev_phases, sample) {
                (Some(1), Some(s)) => s.current_a[k] > 1.0,
                _ => k < used,
            };
            if on {
                *slot = a.max(0.0);
            }
        }
        out
    };
    let Some(acc) = accepted else {
        // Nothing of ours in force: what it reported, or nothing known (0 counts the
        // meter's whole load as building load: the safe direction).
        let m = sample.map_or([0.0; 3], |s| s.current_a);
        return Estimate { measured_a: m, low_a: m, high_a: m, settling: false, demand_a: None, ev_phases };
    };
    let settled_at = acc.at_ms.saturating_add(settle_ms);
    // A sample taken after the change that shows the car at its new limit (or, after a
    // decrease, at or below it) ends the settling early.
    let followed = sample.filter(|s| {
        let decreased = acc.previous_a.is_some_and(|p| acc.limit_a < p);
        s.at_ms > acc.at_ms
            && s.max() <= acc.limit_a + FOLLOW_TOLERANCE_A
            && (decreased || s.max() >= acc.limit_a - FOLLOW_TOLERANCE_A)
    });
    if now_ms < settled_at && followed.is_none() {
        let high = acc.previous_a.unwrap_or(0.0).max(acc.limit_a).max(sample.map_or(0.0, |s| s.max()));
        // Unknown before (it ran on its safe profile): as low as nothing.
        let low = acc.previous_low_a.unwrap_or(0.0).min(acc.limit_a);
        return Estimate {
            measured_a: spread(high),
            low_a: spread(low),
            high_a: spread(high),
            settling: true,
            demand_a: None,
            ev_phases,
        };
    }
    let steady = |m: [f64; 3], demand_a: Option<f64>| Estimate {
        measured_a: m,
        low_a: m,
        high_a: m,
        settling: false,
        demand_a,
        ev_phases,
    };
    match sample {
        Some(s) if s.at_ms >= settled_at || followed.is_some() => {
            let demand = (s.max() < acc.limit_a - DEMAND_GAP_A).then(|| s.max() + DEMAND_GAP_A);
            steady(s.current_a, demand)
        }
        Some(s) => {
            // The sample is from before the limit: if the car limited itself then, it still does.
            let before = acc.previous_a.unwrap_or(0.0);
            let self_limited = s.max() < before - DEMAND_GAP_A;
            let a = if self_limited { acc.limit_a.min(s.max()) } else { acc.limit_a };
            steady(spread(a), None)
        }
        None => steady(spread(acc.limit_a), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: u64 = 4000;

    #[test]
    fn no_profile_yet_uses_the_sample_or_nothing() {
        assert_eq!(estimate(None, None, 3, 10_000, SETTLE).measured_a, [0.0; 3]);
        let s = Sample { current_a: [5.0, 5.0, 5.0], at_ms: 9_000 };
        assert_eq!(estimate(Some(s), None, 3, 10_000, SETTLE).measured_a, [5.0; 3]);
    }

    #[test]
    fn settling_takes_the_higher_of_old_and_new_limit() {
        let acc = Accepted { limit_a: 10.0, at_ms: 9_000, previous_a: Some(16.0), previous_low_a: Some(16.0) };
        let e = estimate(None, Some(acc), 3, 10_000, SETTLE);
        assert!(e.settling);
        assert_eq!(e.measured_a, [16.0; 3]);
        assert_eq!((e.low_a, e.high_a), ([10.0; 3], [16.0; 3]));
        let up = Accepted { limit_a: 20.0, at_ms: 9_000, previous_a: Some(16.0), previous_low_a: Some(16.0) };
        assert_eq!(estimate(None, Some(up), 1, 10_000, SETTLE).measured_a, [20.0, 0.0, 0.0]);
    }

    #[test]
    fn a_sample_at_the_new_limit_ends_settling_early() {
        let down = Accepted { limit_a: 10.0, at_ms: 9_000, previous_a: Some(16.0), previous_low_a: Some(16.0) };
        let at_new = Sample { current_a: [10.1; 3], at_ms: 9_500 };
        let e = estimate(Some(at_new), Some(down), 3, 10_000, SETTLE);
        assert!(!e.settling);
        assert_eq!(e.measured_a, [10.1; 3]);
        // Still on its way down, or a sample from before the change: settling.
        let on_the_way = Sample { current_a: [13.0; 3], at_ms: 9_500 };
        assert!(estimate(Some(on_the_way), Some(down), 3, 10_000, SETTLE).settling);
        let before = Sample { current_a: [10.0; 3], at_ms: 8_500 };
        assert!(estimate(Some(before), Some(down), 3, 10_000, SETTLE).settling);
        // Up: only at the new limit (a car that stays below may not want more).
        let up = Accepted { limit_a: 20.0, at_ms: 9_000, previous_a: Some(16.0), previous_low_a: Some(16.0) };
        let still_16 = Sample { current_a: [16.0; 3], at_ms: 9_500 };
        assert!(estimate(Some(still_16), Some(up), 3, 10_000, SETTLE).settling);
        let at_20 = Sample { current_a: [19.8; 3], at_ms: 9_500 };
        assert!(!estimate(Some(at_20), Some(up), 3, 10_000, SETTLE).settling);
    }

    #[test]
    fn steady_uses_a_sample_taken_after_settling_and_learns_demand() {
        let acc = Accepted { limit_a: 20.0, at_ms: 1_000, previous_a: Some(16.0), previous_low_a: Some(16.0) };
        let s = Sample { current_a: [12.0, 12.0, 12.0], at_ms: 6_000 };
        let e = estimate(Some(s), Some(acc), 3, 7_000, SETTLE);
        assert!(!e.settling);
        assert_eq!(e.measured_a, [12.0; 3]);
        assert_eq!(e.demand_a, Some(14.0));
        // At its limit: no demand cap.
        let s = Sample { current_a: [19.5; 3], at_ms: 6_000 };
        assert_eq!(estimate(Some(s), Some(acc), 3, 7_000, SETTLE).demand_a, None);
    }

    #[test]
    fn steady_without_a_new_sample_uses_the_limit_unless_the_car_limited_itself() {
        let acc = Accepted { limit_a: 20.0, at_ms: 1_000, previous_a: Some(16.0), previous_low_a: Some(16.0) };
        let following = Sample { current_a: [16.0; 3], at_ms: 500 };
        assert_eq!(estimate(Some(following), Some(acc), 3, 9_000, SETTLE).measured_a, [20.0; 3]);
        let self_limited = Sample { current_a: [8.0; 3], at_ms: 500 };
        assert_eq!(estimate(Some(self_limited), Some(acc), 3, 9_000, SETTLE).measured_a, [8.0; 3]);
        assert_eq!(estimate(None, Some(acc), 3, 9_000, SETTLE).measured_a, [20.0; 3]);
    }

    #[test]
    fn a_one_phase_car_on_a_three_phase_charger_is_seen() {
        let acc = Accepted { limit_a: 16.0, at_ms: 1_000, previous_a: None, previous_low_a: None };
        let s = Sample { current_a: [0.0, 15.8, 0.1], at_ms: 6_000 };
        let e = estimate(Some(s), Some(acc), 3, 7_000, SETTLE);
        assert_eq!(e.ev_phases, Some(1));
        let no_sample_since = estimate(Some(Sample { at_ms: 500, ..s }), Some(acc), 3, 9_000, SETTLE);
        assert_eq!(no_sample_since.measured_a, [0.0, 16.0, 0.0]);
    }
}
