//! EV physics: how much current a charging EV draws, given the limit the connector offers,
//! over time. Pure: every method takes the current time, nothing reads a clock.
//!
//! The EV draws `min(max current, offered limit)` per phase. A limit change reaches the EV
//! after [`EvModel::response_delay`] and the EV ramps to it at `max_current_a / ramp_time`
//! amperes per second. An offered limit below [`MIN_CHARGING_CURRENT_A`] (IEC 61851-1: the
//! lowest PWM duty cycle that allows charging is 6 A) makes the EV pause; a full battery
//! makes it stop drawing. Energy is the exact integral of `A × V × phases` over the
//! piecewise-linear current curve.

use super::config::EvModel;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Below this offered current (A per phase) an EV cannot charge (IEC 61851-1 Annex A).
pub const MIN_CHARGING_CURRENT_A: f64 = 6.0;

/// Bound on the integration steps of one [`EvSession::advance`] call, so a pathological
/// input can never spin the driver.
const MAX_STEPS: usize = 10_000;

/// What the EV is doing, from the connector's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvActivity {
    /// Energy is offered and the EV takes it.
    Charging,
    /// The charger offers less than [`MIN_CHARGING_CURRENT_A`]: OCPP `SuspendedEVSE`.
    SuspendedEvse,
    /// The EV does not take energy (battery full): OCPP `SuspendedEV`.
    SuspendedEv,
}

/// One charging session of one EV on one connector.
#[derive(Debug, Clone)]
pub struct EvSession {
    model: EvModel,
    /// Time up to which the state below is integrated.
    t: Instant,
    /// Current drawn at `t` (A per phase).
    current_a: f64,
    /// Limit the EV obeys at `t` (A per phase).
    offered_a: f64,
    /// Limits commanded at the connector that reach the EV later: (effective time, limit).
    pending: VecDeque<(Instant, f64)>,
    /// Energy delivered in this session (Wh).
    energy_wh: f64,
    /// State of charge (%).
    soc: f64,
}

impl EvSession {
    /// Starts a session at `now` with the connector offering `offered_a`; the EV starts at
    /// 0 A and ramps up.
    pub fn start(model: EvModel, now: Instant, offered_a: f64) -> Self {
        let soc = model.start_soc_percent.clamp(0.0, 100.0);
        let mut s = EvSession {
            model,
            t: now,
            current_a: 0.0,
            offered_a: offered_a.max(0.0),
            pending: VecDeque::new(),
            energy_wh: 0.0,
            soc,
        };
        s.settle();
        s
    }

    /// The EV parameters.
    pub fn model(&self) -> &EvModel {
        &self.model
    }

    /// The connector offers a new limit at `now`; the EV follows after its response delay.
    pub fn set_offered(&mut self, now: Instant, offered_a: f64) {
        let offered_a = offered_a.max(0.0);
        self.advance(now);
        if (self.commanded_a() - offered_a).abs() < 1e-9 {
            return;
        }
        let at = now.max(self.t) + self.model.response_delay;
        // Keep the queue ordered even if the delay was changed between calls.
        while self.pending.back().is_some_and(|&(t, _)| t > at) {
            self.pending.pop_back();
        }
        self.pending.push_back((at, offered_a));
        self.settle();
    }

    /// Integrates the session up to `now`; returns the energy (Wh) delivered since the last
    /// call. A `now` before the last one is ignored.
    pub fn advance(&mut self, now: Instant) -> f64 {
        let before = self.energy_wh;
        let mut steps = 0;
        self.settle();
        while self.t < now && steps < MAX_STEPS {
            steps += 1;
            let target = self.target_a();
            let mut seg_end = self.pending.front().map_or(now, |&(at, _)| at.min(now));
            let ramping = (self.current_a - target).abs() > 1e-9;
            let rate = self.ramp_rate();
            if ramping && rate.is_finite() {
                let ramp_left = Duration::from_secs_f64((target - self.current_a).abs() / rate);
                seg_end = seg_end.min(self.t + ramp_left);
            }
            if seg_end <= self.t {
                // A zero-length segment: only possible with rounding; make progress.
                seg_end = (self.t + Duration::from_nanos(1)).min(now);
            }
            let dt = (seg_end - self.t).as_secs_f64();
            let c0 = self.current_a;
            let c1 = if ramping && rate.is_finite() {
                let step = rate * dt;
                if target > c0 { (c0 + step).min(target) } else { (c0 - step).max(target) }
            } else {
                target
            };
            let energy = self.model.amps_to_watts((c0 + c1) / 2.0) * dt / 3600.0;
            let room = self.room_wh();
            if energy > 0.0 && energy >= room {
                // The battery becomes full inside this segment: cut it there (exact for a
                // constant current, a close approximation during a short ramp).
                let frac = if energy > 0.0 { (room / energy).clamp(0.0, 1.0) } else { 1.0 };
                self.energy_wh += room;
                self.soc = 100.0;
                self.current_a = c0 + (c1 - c0) * frac;
                self.t += Duration::from_secs_f64(dt * frac);
                if frac <= 0.0 {
                    // Already full: drop to zero at once (the EV's contactor opens).
                    self.current_a = 0.0;
                }
            } else {
                self.energy_wh += energy;
                if self.model.battery_capacity_wh > 0.0 {
                    self.soc = (self.soc + energy / self.model.battery_capacity_wh * 100.0).min(100.0);
                }
                self.current_a = if (c1 - target).abs() < 1e-9 { target } else { c1 };
                self.t = seg_end;
            }
            self.settle();
        }
        if self.t < now {
            self.t = now;
        }
        self.energy_wh - before
    }

    /// Applies the limit changes due at `t` and steps when there is no ramp.
    fn settle(&mut self) {
        while let Some(&(at, limit)) = self.pending.front() {
            if at <= self.t {
                self.offered_a = limit;
                self.pending.pop_front();
            } else {
                break;
            }
        }
        if !self.ramp_rate().is_finite() {
            self.current_a = self.target_a();
        }
    }

    /// A/s; infinite for a zero ramp time.
    fn ramp_rate(&self) -> f64 {
        let ramp = self.model.ramp_time.as_secs_f64();
        if ramp <= 0.0 || self.model.max_current_a <= 0.0 { f64::INFINITY } else { self.model.max_current_a / ramp }
    }

    /// Energy the battery still takes (Wh); infinite without a capacity.
    fn room_wh(&self) -> f64 {
        if self.model.battery_capacity_wh > 0.0 {
            ((100.0 - self.soc) / 100.0 * self.model.battery_capacity_wh).max(0.0)
        } else {
            f64::INFINITY
        }
    }

    /// The current the EV heads for at `t`.
    fn target_a(&self) -> f64 {
        if self.offered_a < MIN_CHARGING_CURRENT_A || self.soc >= 100.0 {
            0.0
        } else {
            self.model.max_current_a.min(self.offered_a).max(0.0)
        }
    }

    /// Current drawn per phase (A) at the last `advance`.
    pub fn current_a(&self) -> f64 {
        self.current_a
    }

    /// Power drawn (W) at the last `advance`.
    pub fn power_w(&self) -> f64 {
        self.model.amps_to_watts(self.current_a)
    }

    /// Limit the EV obeys now (A per phase).
    pub fn offered_a(&self) -> f64 {
        self.offered_a
    }

    /// Latest limit commanded at the connector, possibly not yet reached the EV.
    pub fn commanded_a(&self) -> f64 {
        self.pending.back().map_or(self.offered_a, |&(_, l)| l)
    }

    /// Energy delivered in this session (Wh).
    pub fn energy_wh(&self) -> f64 {
        self.energy_wh
    }

    /// State of charge (%).
    pub fn soc_percent(&self) -> f64 {
        self.soc
    }

    /// The connector status this session implies.
    pub fn activity(&self) -> EvActivity {
        if self.commanded_a() < MIN_CHARGING_CURRENT_A {
            EvActivity::SuspendedEvse
        } else if self.soc >= 100.0 {
            EvActivity::SuspendedEv
        } else {
            EvActivity::Charging
        }
    }

    /// When the next pending limit change reaches the EV, if any.
    pub fn next_event(&self) -> Option<Instant> {
        self.pending.front().map(|&(at, _)| at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn approx(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-3, "{a} != {b}");
    }

    #[test]
    fn draws_min_of_ev_max_and_limit() {
        let t0 = Instant::now();
        let ev = EvSession::start(EvModel::instant().with_max_current(16.0), t0, 32.0);
        approx(ev.current_a(), 16.0);
        let ev = EvSession::start(EvModel::instant().with_max_current(16.0), t0, 10.0);
        approx(ev.current_a(), 10.0);
        assert_eq!(ev.activity(), EvActivity::Charging);
    }

    #[test]
    fn watts_convert_with_voltage_and_phases() {
        let three = EvModel::default();
        approx(three.watts_to_amps(11_040.0), 16.0);
        let one = EvModel::default().with_phases(1);
        approx(one.watts_to_amps(3_680.0), 16.0);
        approx(one.amps_to_watts(10.0), 2_300.0);
    }

    #[test]
    fn limit_change_follows_after_delay_then_ramps() {
        let t0 = Instant::now();
        let model = EvModel::default().with_max_current(16.0).with_dynamics(secs(1.5), secs(2.0));
        let mut ev = EvSession::start(model, t0, 32.0);
        // Ramp up from 0 at 8 A/s: 16 A after 2 s.
        ev.advance(t0 + secs(1.0));
        approx(ev.current_a(), 8.0);
        ev.advance(t0 + secs(3.0));
        approx(ev.current_a(), 16.0);
        // New limit 8 A at t=10 s: unchanged until 11.5 s, then down at 8 A/s, 8 A at 12.5 s.
        ev.set_offered(t0 + secs(10.0), 8.0);
        assert_eq!(ev.commanded_a(), 8.0);
        ev.advance(t0 + secs(11.4));
        approx(ev.current_a(), 16.0);
        ev.advance(t0 + secs(12.0));
        approx(ev.current_a(), 12.0);
        ev.advance(t0 + secs(13.0));
        approx(ev.current_a(), 8.0);
        assert_eq!(ev.next_event(), None);
    }

    #[test]
    fn pauses_below_six_amps_and_resumes() {
        let t0 = Instant::now();
        let mut ev = EvSession::start(EvModel::instant(), t0, 16.0);
        ev.set_offered(t0 + secs(5.0), 5.9);
        assert_eq!(ev.activity(), EvActivity::SuspendedEvse);
        approx(ev.current_a(), 0.0);
        let e = ev.advance(t0 + secs(100.0));
        approx(e, 0.0);
        ev.set_offered(t0 + secs(100.0), 6.0);
        assert_eq!(ev.activity(), EvActivity::Charging);
        approx(ev.current_a(), 6.0);
    }

    #[test]
    fn energy_is_the_integral_of_power() {
        let t0 = Instant::now();
        // 16 A × 230 V × 3 = 11 040 W for one hour = 11 040 Wh.
        let mut ev = EvSession::start(EvModel::instant(), t0, 16.0);
        let e = ev.advance(t0 + secs(3600.0));
        approx(e, 11_040.0);
        approx(ev.power_w(), 11_040.0);
        // A ramp from 0 to 16 A in 2 s contributes half of the 2 s at full power.
        let model = EvModel::default().with_dynamics(Duration::ZERO, secs(2.0));
        let mut ev = EvSession::start(model, t0, 16.0);
        let e = ev.advance(t0 + secs(10.0));
        approx(e, 11_040.0 * 9.0 / 3600.0);
        // Integration does not depend on how often we advance.
        let mut a = EvSession::start(EvModel::default(), t0, 32.0);
        let mut b = a.clone();
        a.set_offered(t0 + secs(7.0), 10.0);
        b.set_offered(t0 + secs(7.0), 10.0);
        for i in 1..=400 {
            a.advance(t0 + secs(i as f64 * 0.05));
        }
        b.advance(t0 + secs(20.0));
        approx(a.energy_wh(), b.energy_wh());
        approx(a.current_a(), 10.0);
    }

    #[test]
    fn full_battery_stops_the_draw() {
        let t0 = Instant::now();
        // 1 kWh left at 11 040 W: full after 326.09 s.
        let model = EvModel::instant().with_battery(10_000.0, 90.0);
        let mut ev = EvSession::start(model, t0, 16.0);
        let e = ev.advance(t0 + secs(3600.0));
        approx(e, 1_000.0);
        approx(ev.soc_percent(), 100.0);
        approx(ev.current_a(), 0.0);
        assert_eq!(ev.activity(), EvActivity::SuspendedEv);
    }

    #[test]
    fn going_back_in_time_changes_nothing() {
        let t0 = Instant::now();
        let mut ev = EvSession::start(EvModel::instant(), t0 + secs(10.0), 16.0);
        approx(ev.advance(t0), 0.0);
        approx(ev.advance(t0 + secs(10.0)), 0.0);
    }
}
