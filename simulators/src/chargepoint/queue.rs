//! The transaction-message queue a charge point keeps in persistent memory (OCPP 1.6 §4.7
//! "Transaction-related messages"): StartTransaction, StopTransaction and MeterValues of a
//! transaction are delivered in order, exactly as generated, even across connection loss
//! and reboots.
//!
//! Every transaction gets a negative local id when it starts. Messages about it carry that
//! id in their `transactionId` until the StartTransaction answer gives the real one; then
//! [`TxQueue::resolve`] rewrites every queued message. Pure: no IO, no clock.

use serde_json::Value;
use std::collections::{HashMap, VecDeque};

/// One queued transaction-related CALL.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedMessage {
    /// Caller's tag (the simulator uses a global sequence number to order it among the
    /// other outgoing messages).
    pub tag: u64,
    /// Action, e.g. `"StartTransaction"`.
    pub action: &'static str,
    /// Payload as it will be sent (after id rewriting).
    pub payload: Value,
    /// Local id of the transaction a StartTransaction opens (its answer resolves it).
    pub opens: Option<i32>,
    /// Delivery attempts so far.
    pub attempts: u32,
}

/// The persistent queue of transaction-related messages.
#[derive(Debug, Clone, Default)]
pub struct TxQueue {
    queue: VecDeque<QueuedMessage>,
    /// Local id -> id given by the central system.
    resolved: HashMap<i32, i32>,
    /// Local ids whose StartTransaction was refused for good (never got an id).
    dead: Vec<i32>,
    next_local: i32,
}

impl TxQueue {
    /// An empty queue.
    pub fn new() -> Self {
        TxQueue { next_local: -1, ..TxQueue::default() }
    }

    /// A fresh local id for a new transaction: -1, -2, ...
    pub fn new_local_id(&mut self) -> i32 {
        let id = self.next_local;
        self.next_local = self.next_local.saturating_sub(1);
        id
    }

    /// True for a local (not yet resolved) id.
    pub fn is_local(id: i32) -> bool {
        id < 0
    }

    /// The real id of a transaction known by its local id.
    pub fn real_id(&self, local: i32) -> Option<i32> {
        if Self::is_local(local) { self.resolved.get(&local).copied() } else { Some(local) }
    }

    /// Appends a message. Its `transactionId`, if local and already resolved, is rewritten.
    pub fn push(&mut self, tag: u64, action: &'static str, mut payload: Value, opens: Option<i32>) {
        if let Some(local) = transaction_id(&payload)
            && let Some(real) = self.real_id(local)
        {
            set_transaction_id(&mut payload, real);
        }
        self.queue.push_back(QueuedMessage { tag, action, payload, opens, attempts: 0 });
    }

    /// The message to send next.
    pub fn front(&self) -> Option<&QueuedMessage> {
        self.queue.front()
    }

    /// Mutable access to the next message (to count attempts).
    pub fn front_mut(&mut self) -> Option<&mut QueuedMessage> {
        self.queue.front_mut()
    }

    /// Removes the message at the front once the central system answered it.
    pub fn pop(&mut self) -> Option<QueuedMessage> {
        self.queue.pop_front()
    }

    /// Number of queued messages.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Iterates over the queued messages in order.
    pub fn iter(&self) -> impl Iterator<Item = &QueuedMessage> {
        self.queue.iter()
    }

    /// Records the real id of a transaction and rewrites every queued message about it.
    pub fn resolve(&mut self, local: i32, real: i32) {
        self.resolved.insert(local, real);
        for m in &mut self.queue {
            if transaction_id(&m.payload) == Some(local) {
                set_transaction_id(&mut m.payload, real);
            }
        }
    }

    /// The StartTransaction of `local` can never be delivered: drops the queued messages
    /// about it (a central system cannot make sense of a transaction it never saw). Returns
    /// how many were dropped.
    pub fn abandon(&mut self, local: i32) -> usize {
        self.dead.push(local);
        let before = self.queue.len();
        self.queue.retain(|m| transaction_id(&m.payload) != Some(local));
        before - self.queue.len()
    }

    /// True when the front message refers to a transaction whose id is still local
    /// although nothing ahead of it will resolve it (its StartTransaction was abandoned).
    pub fn front_is_orphan(&self) -> bool {
        self.queue
            .front()
            .and_then(|m| transaction_id(&m.payload))
            .is_some_and(|id| Self::is_local(id) && self.dead.contains(&id))
    }
}

/// The `transactionId` of a payload, if it has one.
pub fn transaction_id(payload: &Value) -> Option<i32> {
    payload.get("transactionId").and_then(Value::as_i64).and_then(|v| i32::try_from(v).ok())
}

fn set_transaction_id(payload: &mut Value, id: i32) {
    if let Some(obj) = payload.as_object_mut() {
        obj.insert("transactionId".to_string(), Value::from(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn offline_transaction_ids_are_rewritten_in_order() {
        let mut q = TxQueue::new();
        let a = q.new_local_id();
        let b = q.new_local_id();
        assert_eq!((a, b), (-1, -2));
        q.push(1, "StartTransaction", json!({"connectorId": 1, "meterStart": 0}), Some(a));
        q.push(2, "MeterValues", json!({"connectorId": 1, "transactionId": a}), None);
        q.push(3, "StartTransaction", json!({"connectorId": 2, "meterStart": 5}), Some(b));
        q.push(4, "StopTransaction", json!({"transactionId": a, "meterStop": 10}), None);
        q.push(5, "StopTransaction", json!({"transactionId": b, "meterStop": 20}), None);

        let start = q.pop().expect("start a");
        assert_eq!(start.opens, Some(a));
        q.resolve(a, 41);
        assert_eq!(q.front().map(|m| &m.payload), Some(&json!({"connectorId": 1, "transactionId": 41})));
        q.pop();
        let start_b = q.pop().expect("start b");
        assert_eq!(start_b.opens, Some(b));
        q.resolve(b, 42);
        let stop_a = q.pop().expect("stop a");
        assert_eq!(stop_a.payload["transactionId"], 41);
        let stop_b = q.pop().expect("stop b");
        assert_eq!(stop_b.payload["transactionId"], 42);
        assert!(q.is_empty());
    }

    #[test]
    fn messages_pushed_after_resolution_get_the_real_id() {
        let mut q = TxQueue::new();
        let a = q.new_local_id();
        q.resolve(a, 7);
        q.push(6, "MeterValues", json!({"connectorId": 1, "transactionId": a}), None);
        assert_eq!(q.front().map(|m| m.payload["transactionId"].clone()), Some(json!(7)));
        assert_eq!(q.real_id(a), Some(7));
        assert_eq!(q.real_id(9), Some(9));
        assert_eq!(q.real_id(-5), None);
    }

    #[test]
    fn abandoned_transactions_drop_their_messages() {
        let mut q = TxQueue::new();
        let a = q.new_local_id();
        q.push(7, "StartTransaction", json!({"connectorId": 1}), Some(a));
        q.push(8, "MeterValues", json!({"transactionId": a}), None);
        q.push(9, "MeterValues", json!({"transactionId": 3}), None);
        q.pop();
        assert_eq!(q.abandon(a), 1);
        assert_eq!(q.len(), 1);
        assert!(!q.front_is_orphan());
    }
}
