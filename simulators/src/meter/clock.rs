//! The simulated site's clock: real time, a compressed day, or a fixed time of day.

use std::time::{Duration, Instant};

use chrono::NaiveTime;

use super::profile::{DAY_S, seconds_of, time_of};

/// Maps real instants to the simulated site's time of day and elapsed time.
///
/// - [`real_time`](Self::real_time): one simulated second per real second;
/// - [`compressed`](Self::compressed): `speed` simulated seconds per real second (the demo's
///   compressed day: speed 360 plays a day in 4 minutes);
/// - [`fixed`](Self::fixed): the time of day stands still (deterministic tests), while
///   elapsed time, and so the energy registers, still run at real speed.
///
/// Every method takes the instant as a parameter: tests pass `epoch + Duration` and never
/// wait.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimClock {
    epoch: Instant,
    start_s: f64,
    speed: f64,
    fixed: bool,
}

impl SimClock {
    /// Real time, starting at `start` now.
    pub fn real_time(start: NaiveTime) -> SimClock {
        SimClock::compressed(start, 1.0)
    }

    /// A compressed day starting at `start` now, `speed` times faster than real time.
    /// A `speed` that is not a positive finite number is taken as 1.
    pub fn compressed(start: NaiveTime, speed: f64) -> SimClock {
        SimClock::compressed_at(Instant::now(), start, speed)
    }

    /// [`compressed`](Self::compressed) with the real instant at which the simulated day
    /// is at `start` given (for tests).
    pub fn compressed_at(epoch: Instant, start: NaiveTime, speed: f64) -> SimClock {
        let speed = if speed.is_finite() && speed > 0.0 { speed } else { 1.0 };
        SimClock { epoch, start_s: seconds_of(start), speed, fixed: false }
    }

    /// Always `at`: the profile gives the same base load at every instant. Elapsed time
    /// runs at real speed, so energy still integrates.
    pub fn fixed(at: NaiveTime) -> SimClock {
        SimClock { epoch: Instant::now(), start_s: seconds_of(at), speed: 1.0, fixed: true }
    }

    /// Simulated seconds per real second (1 for a fixed clock).
    pub fn speed(&self) -> f64 {
        self.speed
    }

    /// Whether the time of day stands still.
    pub fn is_fixed(&self) -> bool {
        self.fixed
    }

    /// Seconds since midnight at `now`, in `0.0..86400.0`. Instants before the clock's
    /// epoch count as the epoch.
    pub fn seconds_of_day(&self, now: Instant) -> f64 {
        if self.fixed {
            return self.start_s;
        }
        (self.start_s + now.saturating_duration_since(self.epoch).as_secs_f64() * self.speed).rem_euclid(DAY_S)
    }

    /// The simulated time of day at `now`.
    pub fn time_of_day(&self, now: Instant) -> NaiveTime {
        time_of(self.seconds_of_day(now))
    }

    /// Simulated time between two real instants (zero when `to` is not after `from`).
    pub fn elapsed(&self, from: Instant, to: Instant) -> Duration {
        to.saturating_duration_since(from).mul_f64(self.speed)
    }

    /// How fast the time of day moves, in simulated seconds per real second (0 when fixed).
    pub(crate) fn day_rate(&self) -> f64 {
        if self.fixed { 0.0 } else { self.speed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap_or(NaiveTime::MIN)
    }

    #[test]
    fn a_compressed_day_runs_speed_times_faster_and_wraps() {
        let epoch = Instant::now();
        let clock = SimClock::compressed_at(epoch, t(22, 0), 360.0);
        assert_eq!(clock.time_of_day(epoch), t(22, 0));
        // 10 real seconds are one simulated hour.
        assert_eq!(clock.time_of_day(epoch + Duration::from_secs(10)), t(23, 0));
        assert_eq!(clock.time_of_day(epoch + Duration::from_secs(30)), t(1, 0));
        assert_eq!(clock.elapsed(epoch, epoch + Duration::from_secs(10)), Duration::from_secs(3600));
        // A whole day is 240 s.
        assert_eq!(clock.time_of_day(epoch + Duration::from_secs(240)), t(22, 0));
        // Earlier instants count as the epoch; time does not run backwards.
        assert_eq!(clock.time_of_day(epoch.checked_sub(Duration::from_secs(1)).unwrap_or(epoch)), t(22, 0));
        assert_eq!(clock.elapsed(epoch + Duration::from_secs(1), epoch), Duration::ZERO);
    }

    #[test]
    fn a_fixed_clock_stands_still_but_elapsed_time_runs() {
        let clock = SimClock::fixed(t(12, 0));
        let now = Instant::now();
        assert_eq!(clock.time_of_day(now + Duration::from_secs(7200)), t(12, 0));
        assert_eq!(clock.elapsed(now, now + Duration::from_secs(7200)), Duration::from_secs(7200));
        assert!(clock.is_fixed());
        assert_eq!(clock.day_rate(), 0.0);
    }

    #[test]
    fn invalid_speeds_are_real_time() {
        for speed in [0.0, -3.0, f64::NAN, f64::INFINITY] {
            assert_eq!(SimClock::compressed(t(0, 0), speed).speed(), 1.0);
        }
        assert_eq!(SimClock::real_time(t(0, 0)).speed(), 1.0);
    }
}
