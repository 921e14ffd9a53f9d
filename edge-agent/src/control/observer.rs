//! The non-EV load at a metered circuit, tracked across meter readings while the EVs
//! below are following new limits. Pure.
//!
//! A meter reading is the building's load plus the EVs' draw. When every EV below is
//! steady, their draw is known (see [`super::estimate`]) and the non-EV load is the
//! reading minus it. While some EV is still following a new limit its draw is only known
//! to lie between its old and new limit, and new limits go out all the time on a busy
//! site, so waiting for a steady moment is no option (a building load rising meanwhile
//! would be missed). Instead the observer follows the *changes* of the reading:
//!
//! - a rise is the building's, except as much of it as the EVs may still rise by after
//!   limits we raised (the `up` budget);
//! - a fall is the EVs', as much as they may still fall by after limits we lowered (the
//!   `down` budget), and the building's beyond that;
//! - the result is kept within what the reading and the EVs' bounds allow (between
//!   reading minus their upper bounds and reading minus their lower bounds);
//! - at a steady moment it starts over from the reading and the known draws.
//!
//! So a building load step is seen at once, whatever our own limits are doing, except for
//! as much as our own raises could explain, until the next steady moment.

/// The observer of one metered circuit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observer {
    last: Option<([f64; 3], u64)>,
    non_ev: [f64; 3],
    /// What our own limit changes may still move the reading by, each until the EV has had
    /// its settle time to follow (after that it has, or it will not).
    budgets: Vec<Budget>,
}

#[derive(Debug, Clone, PartialEq)]
struct Budget {
    until_ms: u64,
    up: [f64; 3],
    down: [f64; 3],
}

/// The EVs below a circuit, for one run.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EvBelow {
    /// Sums of the estimates, and of their lower and upper bounds (A per site phase).
    pub estimate: [f64; 3],
    pub low: [f64; 3],
    pub high: [f64; 3],
    /// Whether any of them is still following a new limit.
    pub settling: bool,
}

impl Observer {
    /// We changed an EV's limit from `from` to `to` (A) on the site phases `phases`; the EV
    /// follows by `until_ms` or not at all.
    pub fn expect_change(&mut self, phases: [bool; 3], from: f64, to: f64, until_ms: u64) {
        let mut b = Budget { until_ms, up: [0.0; 3], down: [0.0; 3] };
        for k in (0..3).filter(|&k| phases[k]) {
            if to > from {
                b.up[k] = to - from;
            } else {
                b.down[k] = from - to;
            }
        }
        self.budgets.push(b);
    }

    /// Takes up to `amount` from the budgets (oldest first), returns how much it took.
    fn take(&mut self, k: usize, amount: f64, up: bool) -> f64 {
        let mut taken = 0.0;
        for b in &mut self.budgets {
            let slot = if up { &mut b.up[k] } else { &mut b.down[k] };
            let t = slot.min(amount - taken);
            *slot -= t;
            taken += t;
            if taken >= amount {
                break;
            }
        }
        taken
    }

    /// The meter is stale: start over when it is back.
    pub fn reset(&mut self) {
        *self = Observer::default();
    }

    /// The non-EV load given a fresh reading taken at `at_ms`.
    pub fn update(&mut self, reading: [f64; 3], at_ms: u64, ev: EvBelow) -> [f64; 3] {
        let newer = self.last.is_none_or(|(_, at)| at_ms > at);
        self.budgets.retain(|b| b.until_ms >= at_ms);
        match (ev.settling, self.last) {
            (false, _) => {
                self.non_ev = [0, 1, 2].map(|k| (reading[k] - ev.estimate[k]).max(0.0));
                self.budgets.clear();
            }
            // Nothing to follow from: the safe side of the bounds.
            (true, None) => self.non_ev = [0, 1, 2].map(|k| (reading[k] - ev.low[k]).max(0.0)),
            (true, Some((prev, _))) if newer => {
                for (k, (now, before)) in reading.iter().zip(prev).enumerate() {
                    let d = now - before;
                    if d >= 0.0 {
                        let ours = self.take(k, d, true);
                        self.non_ev[k] += d - ours;
                    } else {
                        let ours = self.take(k, -d, false);
                        self.non_ev[k] -= -d - ours;
                    }
                }
            }
            (true, Some(_)) => {}
        }
        for (k, non_ev) in self.non_ev.iter_mut().enumerate() {
            let lo = (reading[k] - ev.high[k]).max(0.0);
            let hi = (reading[k] - ev.low[k]).max(0.0);
            *non_ev = non_ev.clamp(lo, hi.max(lo));
        }
        if newer {
            self.last = Some((reading, at_ms));
        }
        self.non_ev
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steady(ev: f64) -> EvBelow {
        EvBelow { estimate: [ev; 3], low: [ev; 3], high: [ev; 3], settling: false }
    }

    fn settling(low: f64, high: f64) -> EvBelow {
        EvBelow { estimate: [high; 3], low: [low; 3], high: [high; 3], settling: true }
    }

    #[test]
    fn steady_is_reading_minus_the_draws() {
        let mut o = Observer::default();
        assert_eq!(o.update([63.0; 3], 1, steady(53.0)), [10.0; 3]);
    }

    #[test]
    fn a_building_step_during_our_own_decrease_is_seen_at_once() {
        let mut o = Observer::default();
        o.update([63.0; 3], 1, steady(53.0));
        // We lower two cars from 26.5 to 16 A; meanwhile the building rises by 40 A.
        o.expect_change([true; 3], 26.5, 16.0, 100);
        o.expect_change([true; 3], 26.5, 16.0, 100);
        assert_eq!(o.update([103.0; 3], 2, settling(32.0, 53.0)), [50.0; 3]);
        // The cars come down: that fall is ours, the building stays at 50 A.
        assert_eq!(o.update([93.0; 3], 3, settling(32.0, 53.0)), [50.0; 3]);
        assert_eq!(o.update([82.0; 3], 4, settling(32.0, 53.0)), [50.0; 3]);
        // Steady again: from the reading.
        assert_eq!(o.update([82.0; 3], 5, steady(32.0)), [50.0; 3]);
    }

    #[test]
    fn our_own_raise_is_not_taken_for_building_load() {
        let mut o = Observer::default();
        o.update([30.0; 3], 1, steady(20.0));
        o.expect_change([true; 3], 20.0, 30.0, 100);
        assert_eq!(o.update([35.0; 3], 2, settling(20.0, 30.0)), [10.0; 3]);
        assert_eq!(o.update([40.0; 3], 3, settling(20.0, 30.0)), [10.0; 3]);
        // Beyond what we raised: the building's.
        assert_eq!(o.update([45.0; 3], 4, settling(20.0, 30.0)), [15.0; 3]);
    }

    #[test]
    fn without_history_it_takes_the_safe_bound_and_stays_within_the_bounds() {
        let mut o = Observer::default();
        assert_eq!(o.update([50.0; 3], 1, settling(10.0, 30.0)), [40.0; 3]);
        // A fall we did not announce: the building's, but never below reading - high.
        assert_eq!(o.update([30.0; 3], 2, settling(10.0, 30.0)), [20.0; 3]);
        assert_eq!(o.update([20.0; 3], 3, settling(10.0, 30.0)), [10.0; 3]);
        let mut o = Observer::default();
        o.update([50.0; 3], 1, settling(10.0, 30.0));
        assert_eq!(o.update([20.0; 3], 2, settling(10.0, 30.0)), [10.0; 3], "clamped to reading - low");
    }

    #[test]
    fn a_change_the_ev_did_not_follow_in_time_explains_nothing() {
        let mut o = Observer::default();
        o.update([30.0; 3], 1, steady(20.0));
        // Raised by 10 A, but the car never takes it (it limits itself).
        o.expect_change([true; 3], 20.0, 30.0, 10);
        assert_eq!(o.update([30.0; 3], 5, settling(20.0, 30.0)), [10.0; 3]);
        // Past its settle time a rise is the building's, not the car's.
        assert_eq!(o.update([38.0; 3], 20, settling(20.0, 30.0)), [18.0; 3]);
    }

    #[test]
    fn a_repeated_reading_changes_nothing() {
        let mut o = Observer::default();
        o.update([63.0; 3], 1, steady(53.0));
        o.expect_change([true; 3], 26.5, 16.0, 100);
        assert_eq!(o.update([103.0; 3], 2, settling(32.0, 53.0)), [50.0; 3]);
        assert_eq!(o.update([103.0; 3], 2, settling(32.0, 53.0)), [50.0; 3]);
    }
}
