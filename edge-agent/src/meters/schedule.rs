//! The sans-IO core of one meter's polling loop: when to read, when to retry, how far to
//! back off, and when the meter is stale. It never reads the clock: every call takes
//! `now`, so tests drive it with made-up instants and no sleeping.
//!
//! A *poll* is one scheduled read with up to `retries` immediate retries. A poll fails
//! when all its attempts fail. After `k` polls in a row failed the next one is due
//! `period * 2^(k-1)` after the failed one started, at most `max_backoff`; the first good
//! read brings the interval back to `period`.
//!
//! Staleness is measured in nominal periods, whatever the backoff: the meter is stale
//! from `last good read + stale_after_periods * period` until the next good read. It
//! starts stale (no reading yet: safe limits until it reports).

use std::time::{Duration, Instant};

/// How one meter is polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollPolicy {
    /// Nominal poll period.
    pub period: Duration,
    /// Immediate retries within one poll after a failed attempt.
    pub retries: u32,
    /// The longest interval backoff grows to (at least `period`).
    pub max_backoff: Duration,
    /// Stale after this many periods without a good read.
    pub stale_after_periods: u32,
}

impl PollPolicy {
    /// How long a good reading stays fresh.
    pub fn fresh_for(&self) -> Duration {
        self.period.saturating_mul(self.stale_after_periods.max(1))
    }

    /// The poll interval after `failed_polls` polls in a row failed.
    pub fn interval_after(&self, failed_polls: u32) -> Duration {
        let cap = self.max_backoff.max(self.period);
        if failed_polls <= 1 {
            return self.period.min(cap);
        }
        let factor = 1u32.checked_shl(failed_polls - 1).unwrap_or(u32::MAX);
        self.period.saturating_mul(factor).min(cap)
    }
}

/// What the driver should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read the meter now (the first attempt of a poll or a retry).
    Read,
    /// Nothing to do before this instant (the next poll or the staleness deadline).
    Wait(Instant),
}

/// A change of the stale flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// No good read for `stale_after_periods` periods: stale since `at`.
    Stale { at: Instant },
    /// A good read at `at` after being stale for `stale_for`.
    Fresh { at: Instant, stale_for: Duration },
}

/// What a failed attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Retry at once (attempt `attempt` of this poll, 1-based, failed).
    Retry { attempt: u32 },
    /// The poll failed; the next one is due at `next_poll`.
    GaveUp { next_poll: Instant, failed_polls: u32 },
}

/// The polling and staleness state of one meter.
#[derive(Debug, Clone)]
pub struct PollSchedule {
    policy: PollPolicy,
    /// When the current (or next) poll was scheduled: the anchor of the next one.
    poll_due: Instant,
    /// When the next attempt is due (`poll_due`, or earlier for a retry).
    due: Instant,
    /// Failed attempts of the current poll.
    attempts_failed: u32,
    /// Polls in a row that failed.
    failed_polls: u32,
    last_success: Option<Instant>,
    /// `Some` while stale.
    stale_since: Option<Instant>,
}

impl PollSchedule {
    /// A meter seen for the first time at `now`: stale (no reading yet), first poll due now.
    pub fn new(policy: PollPolicy, now: Instant) -> Self {
        PollSchedule {
            policy,
            poll_due: now,
            due: now,
            attempts_failed: 0,
            failed_polls: 0,
            last_success: None,
            stale_since: Some(now),
        }
    }

    pub fn policy(&self) -> &PollPolicy {
        &self.policy
    }

    pub fn is_stale(&self) -> bool {
        self.stale_since.is_some()
    }

    pub fn stale_since(&self) -> Option<Instant> {
        self.stale_since
    }

    pub fn last_success(&self) -> Option<Instant> {
        self.last_success
    }

    /// Polls in a row that failed (0 after a good read).
    pub fn failed_polls(&self) -> u32 {
        self.failed_polls
    }

    /// The current poll interval (grown by backoff).
    pub fn interval(&self) -> Duration {
        self.policy.interval_after(self.failed_polls)
    }

    /// When the next poll (or retry) is due.
    pub fn next_poll(&self) -> Instant {
        self.due
    }

    /// When the meter turns stale without a good read, if it is fresh now.
    pub fn stale_at(&self) -> Option<Instant> {
        match (self.stale_since, self.last_success) {
            (None, Some(t)) => Some(t + self.policy.fresh_for()),
            _ => None,
        }
    }

    /// The next instant something happens without input: a poll or the staleness deadline.
    pub fn poll_timeout(&self) -> Instant {
        match self.stale_at() {
            Some(stale_at) => stale_at.min(self.due),
            None => self.due,
        }
    }

    /// Checks the staleness deadline at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Transition> {
        let at = self.stale_at().filter(|at| *at <= now)?;
        self.stale_since = Some(at);
        Some(Transition::Stale { at })
    }

    /// What to do at `now`. Call [`handle_timeout`](Self::handle_timeout) first.
    pub fn action(&self, now: Instant) -> Action {
        if self.due <= now { Action::Read } else { Action::Wait(self.poll_timeout()) }
    }

    /// A good read completed at `now`.
    pub fn on_success(&mut self, now: Instant) -> Option<Transition> {
        self.attempts_failed = 0;
        self.failed_polls = 0;
        self.schedule_next(now);
        self.last_success = Some(now);
        self.stale_since
            .take()
            .map(|since| Transition::Fresh { at: now, stale_for: now.saturating_duration_since(since) })
    }

    /// An attempt failed at `now`. The staleness deadline is checked as well: the
    /// transition, if any, is returned with the decision.
    pub fn on_failure(&mut self, now: Instant) -> (AfterFailure, Option<Transition>) {
        let transition = self.handle_timeout(now);
        self.attempts_failed += 1;
        if self.attempts_failed <= self.policy.retries {
            self.due = now;
            return (AfterFailure::Retry { attempt: self.attempts_failed }, transition);
        }
        self.attempts_failed = 0;
        self.failed_polls = self.failed_polls.saturating_add(1);
        self.schedule_next(now);
        (AfterFailure::GaveUp { next_poll: self.due, failed_polls: self.failed_polls }, transition)
    }

    /// The next poll: one interval after this one was due, never in the past (a read that
    /// overran its period is followed at once by the next).
    fn schedule_next(&mut self, now: Instant) {
        self.poll_due = (self.poll_due + self.interval()).max(now);
        self.due = self.poll_due;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Duration = Duration::from_millis(1000);

    fn policy() -> PollPolicy {
        PollPolicy { period: P, retries: 2, max_backoff: Duration::from_secs(10), stale_after_periods: 3 }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn starts_stale_and_reads_at_once() {
        let t0 = Instant::now();
        let s = PollSchedule::new(policy(), t0);
        assert!(s.is_stale());
        assert_eq!(s.stale_since(), Some(t0));
        assert_eq!(s.action(t0), Action::Read);
    }

    #[test]
    fn a_good_read_makes_it_fresh_and_schedules_the_next_period() {
        let t0 = Instant::now();
        let mut s = PollSchedule::new(policy(), t0);
        let t = t0 + ms(40);
        assert_eq!(s.on_success(t), Some(Transition::Fresh { at: t, stale_for: ms(40) }));
        assert!(!s.is_stale());
        // Anchored on when the poll was due, not when the read finished: no drift.
        assert_eq!(s.next_poll(), t0 + P);
        assert_eq!(s.action(t0 + ms(999)), Action::Wait(t0 + P));
        assert_eq!(s.action(t0 + P), Action::Read);
        // Further good reads: no transition.
        assert_eq!(s.on_success(t0 + P + ms(30)), None);
        assert_eq!(s.next_poll(), t0 + P * 2);
    }

    #[test]
    fn stale_exactly_after_n_periods_without_a_good_read() {
        let t0 = Instant::now();
        let mut s = PollSchedule::new(policy(), t0);
        s.on_success(t0);
        let deadline = t0 + P * 3;
        assert_eq!(s.stale_at(), Some(deadline));
        // Polls at 1 s and 2 s fail (all attempts): not stale yet.
        for k in 1..=2u32 {
            let t = t0 + P * k;
            assert_eq!(s.action(t), Action::Read);
            for _ in 0..3 {
                let (_, tr) = s.on_failure(t);
                assert_eq!(tr, None);
            }
        }
        assert_eq!(s.handle_timeout(deadline - Duration::from_nanos(1)), None);
        assert!(!s.is_stale());
        // The wake-up is the deadline even though the next poll (backed off) is later.
        assert_eq!(s.next_poll(), t0 + P * 4);
        assert_eq!(s.action(t0 + P * 2 + ms(1)), Action::Wait(deadline));
        assert_eq!(s.handle_timeout(deadline), Some(Transition::Stale { at: deadline }));
        assert!(s.is_stale());
        assert_eq!(s.stale_since(), Some(deadline));
        // Entered once.
        assert_eq!(s.handle_timeout(deadline + P * 5), None);
    }

    #[test]
    fn a_late_wake_up_dates_staleness_from_the_deadline() {
        let t0 = Instant::now();
        let mut s = PollSchedule::new(policy(), t0);
        s.on_success(t0);
        let late = t0 + P * 7;
        assert_eq!(s.handle_timeout(late), Some(Transition::Stale { at: t0 + P * 3 }));
    }

    #[test]
    fn recovery_is_one_transition_and_counts_the_time_stale() {
        let t0 = Instant::now();
        let mut s = PollSchedule::new(policy(), t0);
        s.on_success(t0);
        assert!(s.handle_timeout(t0 + P * 3).is_some());
        let back = t0 + P * 5 + ms(10);
        assert_eq!(s.on_success(back), Some(Transition::Fresh { at: back, stale_for: P * 2 + ms(10) }));
        assert_eq!(s.on_success(back + P), None);
        assert!(!s.is_stale());
        assert_eq!(s.stale_at(), Some(back + P + P * 3));
    }

    #[test]
    fn retries_are_immediate_within_a_poll() {
        let t0 = Instant::now();
        let mut s = PollSchedule::new(policy(), t0);
        let t = t0 + ms(500);
        assert_eq!(s.on_failure(t).0, AfterFailure::Retry { attempt: 1 });
        assert_eq!(s.action(t), Action::Read);
        assert_eq!(s.on_failure(t).0, AfterFailure::Retry { attempt: 2 });
        assert_eq!(s.action(t), Action::Read);
        // Third failure (2 retries used): the poll failed, next one a period after it was due.
        assert_eq!(s.on_failure(t).0, AfterFailure::GaveUp { next_poll: t0 + P, failed_polls: 1 });
        assert_eq!(s.action(t), Action::Wait(t0 + P));
        // A retry that succeeds resets the attempt count.
        assert_eq!(s.on_failure(t0 + P).0, AfterFailure::Retry { attempt: 1 });
        assert!(s.on_success(t0 + P + ms(5)).is_some(), "first good read ends the start-up staleness");
        assert_eq!(s.failed_polls(), 0);
        assert_eq!(s.on_failure(t0 + P * 2).0, AfterFailure::Retry { attempt: 1 });
    }

    #[test]
    fn no_retries_means_one_attempt_per_poll() {
        let t0 = Instant::now();
        let mut s = PollSchedule::new(PollPolicy { retries: 0, ..policy() }, t0);
        assert_eq!(s.on_failure(t0).0, AfterFailure::GaveUp { next_poll: t0 + P, failed_polls: 1 });
    }

    #[test]
    fn backoff_doubles_caps_and_resets_on_success() {
        let p = PollPolicy { retries: 0, max_backoff: Duration::from_secs(5), ..policy() };
        let t0 = Instant::now();
        let mut s = PollSchedule::new(p, t0);
        let mut t = t0;
        let mut gaps = Vec::new();
        for _ in 0..7 {
            assert_eq!(s.action(t), Action::Read);
            let (AfterFailure::GaveUp { next_poll, .. }, _) = s.on_failure(t) else { panic!("no retries") };
            gaps.push(next_poll - t);
            t = next_poll;
        }
        let secs: Vec<u64> = gaps.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, vec![1, 2, 4, 5, 5, 5, 5]);
        assert_eq!(s.interval(), Duration::from_secs(5));
        s.on_success(t);
        assert_eq!(s.interval(), P);
        assert_eq!(s.next_poll(), t + P);
        // Many failures never overflow.
        assert_eq!(p.interval_after(u32::MAX), Duration::from_secs(5));
        assert_eq!(PollPolicy { max_backoff: Duration::MAX, ..p }.interval_after(200), P.saturating_mul(u32::MAX));
    }

    #[test]
    fn backoff_equal_to_the_period_disables_it() {
        let p = PollPolicy { max_backoff: P, ..policy() };
        assert_eq!(p.interval_after(0), P);
        assert_eq!(p.interval_after(9), P);
    }

    #[test]
    fn a_read_that_overruns_its_period_is_followed_at_once() {
        let t0 = Instant::now();
        let mut s = PollSchedule::new(policy(), t0);
        // Three timed-out attempts of 500 ms each end 1.5 s after the poll was due.
        let end = t0 + ms(1500);
        assert_eq!(s.on_failure(t0 + ms(500)).0, AfterFailure::Retry { attempt: 1 });
        assert_eq!(s.on_failure(t0 + ms(1000)).0, AfterFailure::Retry { attempt: 2 });
        assert_eq!(s.on_failure(end).0, AfterFailure::GaveUp { next_poll: end, failed_polls: 1 });
        assert_eq!(s.action(end), Action::Read);
    }

    #[test]
    fn a_failure_past_the_deadline_reports_stale_with_it() {
        let t0 = Instant::now();
        let mut s = PollSchedule::new(policy(), t0);
        s.on_success(t0);
        let (after, tr) = s.on_failure(t0 + P * 3 + ms(1));
        assert_eq!(after, AfterFailure::Retry { attempt: 1 });
        assert_eq!(tr, Some(Transition::Stale { at: t0 + P * 3 }));
    }
}
