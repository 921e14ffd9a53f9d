//! The sending side of the outbox, sans IO: which seqs are in flight, what to send next,
//! what an [`Ack`](shared_model::sync::Ack) means and when to send again. It takes the
//! time as a parameter and never touches the broker or the store, so its rules are
//! tested here directly.
//!
//! Rules (see `shared-model/SYNC.md`):
//! - After a (re)connect the agent sends a hello and waits (at most `ack_timeout`) for the
//!   hub's ack of where it stands, then sends from there; nothing the hub already applied
//!   is sent again.
//! - At most `max_inflight` batches are unacknowledged; the next one starts right after
//!   the last one sent.
//! - An ack that moves forward deletes what it covers (the caller does that) and frees
//!   the window. An ack that does not move forward while batches beyond it are in flight
//!   means the hub skipped something (a gap: a message lost, e.g. by a hub restart): the
//!   agent goes back to `applied_through + 1` and sends everything again (go-back-N).
//!   Acks answering the batches that were in flight at that moment are expected to repeat
//!   the same position, so after a go-back further non-advancing acks are absorbed (as
//!   many as batches were in flight and re-sent, and for one `ack_timeout` at most)
//!   instead of causing a storm of resends.
//! - When the oldest batch in flight has waited `ack_timeout` without an ack, the agent
//!   goes back too; while the hub stays silent the wait doubles, up to 8 times.
//! - An ack may carry a [`Window`] (flow control): from then on the agent keeps within
//!   both it and its own limits: at most `min(max_inflight, window.batches)` batches and
//!   `window.bytes` bytes in flight, each batch no larger than what is left of the bytes.
//!   One batch may always be in flight, so the oldest events can move however small the
//!   grant. An ack without a window (an older hub) leaves the agent's own limits.

use shared_model::sync::Window;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One batch sent and not yet covered by an ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub first: u64,
    pub last: u64,
    /// The batch's payload size.
    pub bytes: u64,
    pub at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not connected: nothing is sent.
    Offline,
    /// Connected, hello sent: waiting for the hub's ack until then.
    Hello { until: Instant },
    /// Sending.
    Draining,
}

/// Why the agent sends again what it had sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoBack {
    /// An ack that did not move while later batches were in flight.
    Ack,
    /// No ack within the timeout.
    Timeout,
}

impl GoBack {
    pub fn as_str(self) -> &'static str {
        match self {
            GoBack::Ack => "ack",
            GoBack::Timeout => "timeout",
        }
    }
}

/// What an ack means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckOutcome {
    /// Rows up to here may be deleted (the ack moved forward).
    pub delete_through: Option<u64>,
    /// The agent went back to resend.
    pub went_back: Option<GoBack>,
    /// The ack is below one the hub gave before (the hub went backwards).
    pub behind: bool,
}

/// The state of the outbox drain over one agent run.
#[derive(Debug)]
pub struct Outflow {
    max_inflight: usize,
    ack_timeout: Duration,
    phase: Phase,
    /// The highest `applied_through` the hub gave (0: none yet in this run).
    acked: u64,
    /// The next seq to send: rows with `seq >= next_from`.
    next_from: u64,
    inflight: VecDeque<Sent>,
    /// After a go-back: how many non-advancing acks are still absorbed, and until when.
    damp: Option<(usize, Instant)>,
    /// Timeouts in a row without progress (the wait doubles with each).
    silent: u32,
    /// The hub's latest flow-control grant (`None`: none given).
    grant: Option<Window>,
}

impl Outflow {
    pub fn new(max_inflight: usize, ack_timeout: Duration) -> Outflow {
        Outflow {
            max_inflight: max_inflight.max(1),
            ack_timeout,
            phase: Phase::Offline,
            acked: 0,
            next_from: 1,
            inflight: VecDeque::new(),
            damp: None,
            silent: 0,
            grant: None,
        }
    }

    /// The broker connection is up and the hello is sent.
    pub fn connected(&mut self, now: Instant) {
        self.phase = Phase::Hello { until: now + self.ack_timeout };
        self.restart_from_ack();
        self.silent = 0;
    }

    /// The broker connection is gone: what was in flight will be sent again.
    pub fn disconnected(&mut self) {
        self.phase = Phase::Offline;
        self.restart_from_ack();
    }

    fn restart_from_ack(&mut self) {
        self.inflight.clear();
        self.damp = None;
        self.next_from = self.acked + 1;
    }

    fn go_back(&mut self, now: Instant) {
        let outstanding = self.inflight.len();
        self.restart_from_ack();
        self.damp = Some((outstanding + self.max_inflight, now + self.ack_timeout));
    }

    fn damped(&self, now: Instant) -> bool {
        self.damp.is_some_and(|(n, until)| n > 0 && now < until)
    }

    /// The hub applied everything up to `applied_through`.
    pub fn ack(&mut self, applied_through: u64, now: Instant) -> AckOutcome {
        let answered_hello = matches!(self.phase, Phase::Hello { .. });
        if answered_hello {
            self.phase = Phase::Draining;
        }
        let damped = self.damped(now);
        if let Some((n, until)) = self.damp {
            self.damp = (n > 1).then(|| (n - 1, until));
        }
        if applied_through > self.acked {
            self.acked = applied_through;
            self.silent = 0;
            while self.inflight.front().is_some_and(|b| b.last <= applied_through) {
                self.inflight.pop_front();
            }
            if self.next_from <= applied_through {
                // The hub knows more than we sent in this run (after a restart, or acks
                // that were lost): skip what it has.
                self.next_from = applied_through + 1;
                self.inflight.clear();
            }
            return AckOutcome { delete_through: Some(applied_through), ..AckOutcome::default() };
        }
        if applied_through < self.acked {
            return AckOutcome { behind: true, ..AckOutcome::default() };
        }
        // Where the hub stood already. Harmless unless later batches are in flight: then
        // the hub did not apply them (a gap), so they go again.
        if !answered_hello && self.phase == Phase::Draining && !self.inflight.is_empty() && !damped {
            self.go_back(now);
            return AckOutcome { went_back: Some(GoBack::Ack), ..AckOutcome::default() };
        }
        AckOutcome::default()
    }

    fn wait(&self) -> Duration {
        self.ack_timeout * (1u32 << self.silent.min(3))
    }

    /// Timers: the end of the hello wait, the ack timeout. Call when [`Self::deadline`] passed.
    pub fn due(&mut self, now: Instant) -> Option<GoBack> {
        match self.phase {
            Phase::Hello { until } if now >= until => {
                // No answer from the hub: send from the oldest row we have.
                self.phase = Phase::Draining;
                None
            }
            Phase::Draining => {
                let oldest = self.inflight.front()?;
                if now < oldest.at + self.wait() {
                    return None;
                }
                self.silent = self.silent.saturating_add(1);
                self.go_back(now);
                Some(GoBack::Timeout)
            }
            _ => None,
        }
    }

    /// When [`Self::due`] should be called next.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Hello { until } => Some(until),
            Phase::Draining => self.inflight.front().map(|b| b.at + self.wait()),
            Phase::Offline => None,
        }
    }

    /// The seq to read from when another batch may go now.
    pub fn window(&self) -> Option<u64> {
        if self.phase != Phase::Draining {
            return None;
        }
        let n = self.inflight.len();
        let open = match self.grant {
            _ if n == 0 => true,
            None => n < self.max_inflight,
            Some(g) => n < self.max_inflight.min(g.batches as usize) && self.inflight_bytes() < g.bytes,
        };
        open.then_some(self.next_from)
    }

    /// How large the next batch may be, given the agent's own `max_batch_bytes`: what the
    /// grant leaves (all of it when nothing is in flight), never more than `max_batch_bytes`.
    /// A batch holds at least one event whatever this says.
    pub fn batch_bytes(&self, max_batch_bytes: usize) -> usize {
        match self.grant {
            None => max_batch_bytes,
            Some(g) => {
                let left = g.bytes.saturating_sub(self.inflight_bytes());
                max_batch_bytes.min(usize::try_from(left).unwrap_or(usize::MAX)).max(1)
            }
        }
    }

    /// The hub's flow-control grant that came with an ack (`None`: it gave none).
    pub fn set_grant(&mut self, grant: Option<Window>) {
        self.grant = grant;
    }

    pub fn grant(&self) -> Option<Window> {
        self.grant
    }

    fn inflight_bytes(&self) -> u64 {
        self.inflight.iter().map(|b| b.bytes).sum()
    }

    /// A batch of `first..=last`, `bytes` long, went out.
    pub fn sent(&mut self, first: u64, last: u64, bytes: u64, now: Instant) {
        self.inflight.push_back(Sent { first, last, bytes, at: now });
        self.next_from = last + 1;
    }

    /// The highest `applied_through` the hub gave in this run (0: none).
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The last seq sent (in this round; 0: none).
    pub fn sent_through(&self) -> u64 {
        self.inflight.back().map(|b| b.last).unwrap_or(self.acked)
    }

    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    fn draining(now: Instant) -> Outflow {
        let mut o = Outflow::new(3, T);
        o.connected(now);
        assert_eq!(o.window(), None, "waits for the hello's answer");
        assert_eq!(o.ack(0, now), AckOutcome::default());
        o
    }

    #[test]
    fn sends_a_window_then_waits_for_acks() {
        let now = Instant::now();
        let mut o = draining(now);
        assert_eq!(o.window(), Some(1));
        o.sent(1, 10, 0, now);
        o.sent(11, 20, 0, now);
        o.sent(21, 30, 0, now);
        assert_eq!(o.window(), None, "three batches in flight");
        let a = o.ack(10, now);
        assert_eq!(a.delete_through, Some(10));
        assert_eq!(o.window(), Some(31));
        assert_eq!(o.inflight(), 2);
        // Acks are cumulative: one for 30 covers both.
        assert_eq!(o.ack(30, now).delete_through, Some(30));
        assert_eq!(o.inflight(), 0);
        assert_eq!(o.sent_through(), 30);
    }

    #[test]
    fn the_hello_answer_skips_what_the_hub_has() {
        let now = Instant::now();
        let mut o = Outflow::new(3, T);
        o.connected(now);
        let a = o.ack(42, now);
        assert_eq!(a.delete_through, Some(42));
        assert_eq!(o.window(), Some(43));
    }

    #[test]
    fn without_a_hello_answer_it_sends_from_the_oldest_row() {
        let now = Instant::now();
        let mut o = Outflow::new(3, T);
        o.connected(now);
        assert_eq!(o.deadline(), Some(now + T));
        assert_eq!(o.due(now + T / 2), None);
        assert_eq!(o.window(), None);
        assert_eq!(o.due(now + T), None);
        assert_eq!(o.window(), Some(1));
    }

    #[test]
    fn a_non_advancing_ack_with_batches_in_flight_goes_back_once() {
        let now = Instant::now();
        let mut o = draining(now);
        o.sent(1, 10, 0, now);
        o.sent(11, 20, 0, now);
        o.sent(21, 30, 0, now);
        // The first batch was lost: the hub answers the second with where it stands.
        let a = o.ack(0, now);
        assert_eq!(a.went_back, Some(GoBack::Ack));
        assert_eq!(o.window(), Some(1));
        o.sent(1, 10, 0, now);
        o.sent(11, 20, 0, now);
        // The answer to the third original repeats 0: absorbed, no second go-back.
        assert_eq!(o.ack(0, now), AckOutcome::default());
        assert_eq!(o.window(), Some(21));
        assert_eq!(o.ack(20, now).delete_through, Some(20));
    }

    #[test]
    fn duplicate_acks_when_nothing_is_in_flight_change_nothing() {
        let now = Instant::now();
        let mut o = draining(now);
        o.sent(1, 10, 0, now);
        assert_eq!(o.ack(10, now).delete_through, Some(10));
        assert_eq!(o.ack(10, now), AckOutcome::default());
        assert_eq!(o.ack(10, now), AckOutcome::default());
        assert_eq!(o.window(), Some(11));
        let a = o.ack(5, now);
        assert!(a.behind && a.delete_through.is_none() && a.went_back.is_none());
    }

    #[test]
    fn a_silent_hub_gets_the_window_again_with_a_growing_wait() {
        let now = Instant::now();
        let mut o = draining(now);
        o.sent(1, 10, 0, now);
        assert_eq!(o.deadline(), Some(now + T));
        assert_eq!(o.due(now + T - Duration::from_millis(1)), None);
        assert_eq!(o.due(now + T), Some(GoBack::Timeout));
        assert_eq!(o.window(), Some(1));
        let t1 = now + T;
        o.sent(1, 10, 0, t1);
        assert_eq!(o.deadline(), Some(t1 + 2 * T), "the wait doubled");
        assert_eq!(o.due(t1 + 2 * T), Some(GoBack::Timeout));
        let t2 = t1 + 2 * T;
        o.sent(1, 10, 0, t2);
        assert_eq!(o.ack(10, t2).delete_through, Some(10));
        o.sent(11, 12, 0, t2);
        assert_eq!(o.deadline(), Some(t2 + T), "progress resets the wait");
    }

    #[test]
    fn a_reconnect_starts_over_from_the_last_ack() {
        let now = Instant::now();
        let mut o = draining(now);
        o.sent(1, 10, 0, now);
        o.sent(11, 20, 0, now);
        assert_eq!(o.ack(10, now).delete_through, Some(10));
        o.disconnected();
        assert_eq!(o.window(), None);
        assert_eq!(o.deadline(), None);
        o.connected(now);
        assert_eq!(o.ack(10, now), AckOutcome::default(), "the hello answer");
        assert_eq!(o.window(), Some(11));
    }

    #[test]
    fn a_grant_bounds_batches_and_bytes_in_flight() {
        let now = Instant::now();
        let mut o = draining(now);
        o.set_grant(Some(Window { batches: 2, bytes: 1000 }));
        assert_eq!(o.batch_bytes(4096), 1000, "nothing in flight: the whole grant");
        o.sent(1, 10, 600, now);
        assert_eq!(o.window(), Some(11), "600 of 1000 bytes in flight");
        assert_eq!(o.batch_bytes(4096), 400, "what the grant leaves");
        assert_eq!(o.batch_bytes(100), 100, "never beyond the agent's own limit");
        o.sent(11, 12, 400, now);
        assert_eq!(o.window(), None, "the bytes are used up");
        assert_eq!(o.ack(10, now).delete_through, Some(10));
        assert_eq!(o.window(), Some(13));
        o.sent(13, 14, 10, now);
        assert_eq!(o.window(), None, "two batches granted, two in flight");
    }

    #[test]
    fn one_batch_always_goes_however_small_the_grant() {
        let now = Instant::now();
        let mut o = draining(now);
        o.set_grant(Some(Window { batches: 0, bytes: 0 }));
        assert_eq!(o.window(), Some(1));
        assert_eq!(o.batch_bytes(4096), 1, "one event, whatever its size");
        o.sent(1, 1, 5000, now);
        assert_eq!(o.window(), None);
    }

    #[test]
    fn the_agents_own_limit_holds_under_a_larger_grant_and_without_one() {
        let now = Instant::now();
        let mut o = draining(now);
        o.set_grant(Some(Window { batches: 100, bytes: u64::MAX }));
        o.sent(1, 10, 1, now);
        o.sent(11, 20, 1, now);
        o.sent(21, 30, 1, now);
        assert_eq!(o.window(), None, "max_inflight is 3");
        o.set_grant(None);
        assert_eq!(o.window(), None);
        assert_eq!(o.batch_bytes(4096), 4096);
        assert_eq!(o.ack(30, now).delete_through, Some(30));
        assert_eq!(o.window(), Some(31));
    }
}
