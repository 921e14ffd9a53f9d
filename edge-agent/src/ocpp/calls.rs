//! Outbound CALL correlation, sans-IO: the agent may have only one CALL outstanding per
//! connection (OCPP-J 1.6 §4.1.1: "a Central System SHOULD NOT send a CALL before the
//! previous one was answered or timed out"); further CALLs wait in a bounded queue.
//! The state machine takes the time as a parameter and never touches a socket or a
//! clock, so tests drive it with a synthetic clock (quinn-proto style).

use serde_json::Value;
use shared_model::ocpp::framing::{Call, CallError, CallResult};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How a CALL ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Result(Value),
    Error(CallError),
    Timeout,
    /// The connection closed (or was replaced) before an answer came.
    Disconnected,
    /// Refused before sending: too many CALLs already queued on this connection.
    QueueFull,
}

struct Pending<T> {
    call: Call,
    deadline: Instant,
    sent_at: Instant,
    token: T,
}

struct Queued<T> {
    action: String,
    payload: Value,
    token: T,
}

/// The queue was full.
#[derive(Debug, PartialEq, Eq)]
pub struct QueueFull;

/// One finished CALL: the caller's token, how it ended, and its round trip.
#[derive(Debug)]
pub struct Finished<T> {
    pub token: T,
    pub action: String,
    pub outcome: Outcome,
    pub round_trip: Duration,
}

/// Outbound CALLs of one connection. `T` is the caller's token (a reply channel in the
/// server, anything in tests).
pub struct OutboundCalls<T> {
    pending: Option<Pending<T>>,
    queue: VecDeque<Queued<T>>,
    timeout: Duration,
    max_queue: usize,
    next_id: u64,
    id_prefix: String,
}

impl<T> OutboundCalls<T> {
    pub fn new(timeout: Duration, max_queue: usize, id_prefix: impl Into<String>) -> Self {
        OutboundCalls {
            pending: None,
            queue: VecDeque::new(),
            timeout,
            max_queue,
            next_id: 1,
            id_prefix: id_prefix.into(),
        }
    }

    /// Queues a CALL.
    pub fn enqueue(&mut self, action: impl Into<String>, payload: Value, token: T) -> Result<(), (QueueFull, T)> {
        if self.queue.len() >= self.max_queue {
            return Err((QueueFull, token));
        }
        self.queue.push_back(Queued { action: action.into(), payload, token });
        Ok(())
    }

    /// The next CALL to put on the wire, if none is outstanding.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Call> {
        if self.pending.is_some() {
            return None;
        }
        let q = self.queue.pop_front()?;
        // Unique ids: a per-connection prefix plus a counter, at most 36 characters.
        let unique_id = format!("{}{}", self.id_prefix, self.next_id);
        self.next_id += 1;
        let call = Call { unique_id, action: q.action, payload: q.payload };
        self.pending = Some(Pending { call: call.clone(), deadline: now + self.timeout, sent_at: now, token: q.token });
        Some(call)
    }

    /// When the outstanding CALL times out.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.deadline)
    }

    /// Expires the outstanding CALL if its deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Finished<T>> {
        if self.pending.as_ref().is_some_and(|p| now >= p.deadline) {
            return self.finish(Outcome::Timeout, now);
        }
        None
    }

    /// A CALLRESULT arrived. `None` when it answers nothing outstanding (late or bogus).
    pub fn handle_result(&mut self, result: CallResult, now: Instant) -> Option<Finished<T>> {
        if self.pending.as_ref().is_some_and(|p| p.call.unique_id == result.unique_id) {
            return self.finish(Outcome::Result(result.payload), now);
        }
        None
    }

    /// A CALLERROR arrived.
    pub fn handle_error(&mut self, error: CallError, now: Instant) -> Option<Finished<T>> {
        if self.pending.as_ref().is_some_and(|p| p.call.unique_id == error.unique_id) {
            return self.finish(Outcome::Error(error), now);
        }
        None
    }

    /// The action of the outstanding CALL with this id (for logging its answer).
    pub fn pending_action(&self, unique_id: &str) -> Option<&str> {
        self.pending.as_ref().filter(|p| p.call.unique_id == unique_id).map(|p| p.call.action.as_str())
    }

    /// The connection ended: every outstanding and queued CALL ends as `Disconnected`.
    pub fn drain(&mut self, now: Instant) -> Vec<Finished<T>> {
        let mut out = Vec::new();
        if let Some(f) = self.finish(Outcome::Disconnected, now) {
            out.push(f);
        }
        for q in self.queue.drain(..) {
            out.push(Finished {
                token: q.token,
                action: q.action,
                outcome: Outcome::Disconnected,
                round_trip: Duration::ZERO,
            });
        }
        out
    }

    /// Number of CALLs waiting behind the outstanding one.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    fn finish(&mut self, outcome: Outcome, now: Instant) -> Option<Finished<T>> {
        let p = self.pending.take()?;
        Some(Finished {
            token: p.token,
            action: p.call.action,
            outcome,
            round_trip: now.saturating_duration_since(p.sent_at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use shared_model::ocpp::framing::ErrorCode;

    #[test]
    fn one_outstanding_call_at_a_time() {
        let t0 = Instant::now();
        let mut c = OutboundCalls::new(Duration::from_secs(30), 10, "cs-");
        c.enqueue("Reset", json!({"type": "Soft"}), 1).expect("q");
        c.enqueue("ClearCache", json!({}), 2).expect("q");
        let first = c.poll_transmit(t0).expect("first");
        assert_eq!(first.action, "Reset");
        assert!(c.poll_transmit(t0).is_none(), "second must wait");
        // An answer to another id is ignored.
        assert!(c.handle_result(CallResult { unique_id: "other".into(), payload: json!({}) }, t0).is_none());
        let done = c
            .handle_result(
                CallResult { unique_id: first.unique_id.clone(), payload: json!({"status": "Accepted"}) },
                t0 + Duration::from_millis(7),
            )
            .expect("done");
        assert_eq!(done.token, 1);
        assert_eq!(done.round_trip, Duration::from_millis(7));
        let second = c.poll_transmit(t0).expect("second");
        assert_eq!(second.action, "ClearCache");
        assert_ne!(second.unique_id, first.unique_id);
    }

    #[test]
    fn timeout_frees_the_slot() {
        let t0 = Instant::now();
        let mut c = OutboundCalls::new(Duration::from_secs(5), 10, "x");
        c.enqueue("Reset", json!({}), "a").expect("q");
        c.enqueue("Reset", json!({}), "b").expect("q");
        let call = c.poll_transmit(t0).expect("call");
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        assert!(c.handle_timeout(t0 + Duration::from_secs(4)).is_none());
        let f = c.handle_timeout(t0 + Duration::from_secs(5)).expect("timeout");
        assert_eq!((f.token, f.outcome), ("a", Outcome::Timeout));
        // A late answer finds nothing.
        assert!(c.handle_error(CallError::new(call.unique_id, ErrorCode::InternalError, ""), t0).is_none());
        assert!(c.poll_transmit(t0 + Duration::from_secs(5)).is_some());
    }

    #[test]
    fn bounded_queue_and_drain() {
        let t0 = Instant::now();
        let mut c = OutboundCalls::new(Duration::from_secs(5), 2, "x");
        c.enqueue("A", json!({}), 1).expect("q");
        c.enqueue("B", json!({}), 2).expect("q");
        assert_eq!(c.enqueue("C", json!({}), 3), Err((QueueFull, 3)));
        c.poll_transmit(t0);
        let drained = c.drain(t0);
        assert_eq!(drained.iter().map(|f| f.token).collect::<Vec<_>>(), vec![1, 2]);
        assert!(drained.iter().all(|f| f.outcome == Outcome::Disconnected));
    }

    proptest! {
        /// Whatever the interleaving of enqueues, answers and timeouts, every CALL ends
        /// exactly once, never two are outstanding, and ids are never reused.
        #[test]
        fn every_call_ends_exactly_once(ops in proptest::collection::vec(0u8..4, 1..200)) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut c = OutboundCalls::new(Duration::from_secs(3), 1000, "p");
            let mut next = 0u32;
            let mut ended = std::collections::HashSet::new();
            let mut ids = std::collections::HashSet::new();
            let mut on_wire: Option<String> = None;
            for op in ops {
                match op {
                    0 => { c.enqueue("A", json!({}), next).map_err(|_| TestCaseError::fail("full"))?; next += 1; }
                    1 => if let Some(id) = on_wire.take() {
                        let f = c.handle_result(CallResult { unique_id: id, payload: json!({}) }, now).expect("pending");
                        prop_assert!(ended.insert(f.token));
                    },
                    2 => { now += Duration::from_secs(2); if let Some(f) = c.handle_timeout(now) { on_wire = None; prop_assert!(ended.insert(f.token)); } }
                    _ => {}
                }
                if let Some(call) = c.poll_transmit(now) {
                    prop_assert!(on_wire.is_none(), "two outstanding");
                    prop_assert!(ids.insert(call.unique_id.clone()), "id reused");
                    on_wire = Some(call.unique_id);
                }
            }
            for f in c.drain(now) { prop_assert!(ended.insert(f.token)); }
            prop_assert_eq!(ended.len() as u32, next);
        }
    }
}
