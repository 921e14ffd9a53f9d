//! The balancer's output: one setpoint per charger, the predicted use of every node, and
//! what is in fail-safe and why.

use super::model::{ChargerId, NodeId, Phase};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The result of one balancer run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    /// The `now_ms` of the run.
    pub computed_at_ms: u64,
    /// One per charger, in site order.
    pub setpoints: Vec<Setpoint>,
    /// One per node, in tree (pre-)order.
    pub nodes: Vec<NodeUsage>,
    /// Everything running on safe values, and why (invariant 2: "and says so").
    pub fail_safe: Vec<FailSafe>,
    /// Conditions no setpoint can fix, for the operator.
    pub warnings: Vec<Warning>,
}

impl Allocation {
    /// The setpoint of a charger.
    pub fn get(&self, id: &ChargerId) -> Option<&Setpoint> {
        self.setpoints.iter().find(|s| &s.charger == id)
    }

    /// Setpoints by charger id, for callers that look many up.
    pub fn by_charger(&self) -> BTreeMap<&ChargerId, &Setpoint> {
        self.setpoints.iter().map(|s| (&s.charger, s)).collect()
    }

    /// Whether a node or charger with this id is in fail-safe.
    pub fn is_fail_safe(&self, id: &str) -> bool {
        self.fail_safe.iter().any(|f| f.subject.id() == id)
    }
}

/// The limit for one charger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setpoint {
    pub charger: ChargerId,
    /// The limit to send, in A per phase (on every phase the session uses); 0 when paused or
    /// idle. For a charger that does not answer: the current reserved for it.
    pub current_a: f64,
    /// The site phases this setpoint is counted on (L1, L2, L3).
    pub phases: [bool; 3],
    /// A session that could not have its minimum (or is held by the minimum pause time).
    pub paused: bool,
    pub reason: Reason,
    /// When the session entered its present running or paused state (ms).
    pub since_ms: u64,
    /// The session this setpoint belongs to (its start), to tell a new car from the last one.
    pub session_started_ms: Option<u64>,
}

impl Setpoint {
    /// Current per site phase (A): `current_a` on the phases it is counted on.
    pub fn site_currents(&self) -> [f64; 3] {
        self.phases.map(|on| if on { self.current_a } else { 0.0 })
    }

    /// Whether this is a limit for the loop to send (not a reservation for a lost charger).
    pub fn is_controlled(&self) -> bool {
        !matches!(self.reason, Reason::Reserved(_))
    }
}

/// Why a setpoint is what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// No session: 0.
    Idle,
    /// Charging; `limited_by` stopped it rising.
    Running { limited_by: Limiter },
    /// Paused: current 0.
    Paused { why: PauseReason },
    /// The charger does not answer: this current is kept for it.
    Reserved(Reservation),
}

/// What capped a running session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Limiter {
    /// The charger's hardware maximum.
    ChargerMax,
    /// What the EV takes.
    EvDemand,
    /// A node's current limit on a phase (`phase`), or its power limit (`phase` = None),
    /// external limits included at the root.
    Node { node: NodeId, phase: Option<Phase> },
}

/// Why a session is paused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PauseReason {
    /// Its floor (plus the resume hysteresis, if it was not running) does not fit at `node`.
    NoCapacity { node: NodeId, phase: Option<Phase> },
    /// It would fit, but was paused less than `min_pause_ms` ago.
    MinPauseTime,
    /// The site floor `pause_below_a` is above the charger's maximum.
    FloorAboveMax,
}

/// Current kept for a charger that does not answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reservation {
    /// Its last limit, valid until `until_ms`.
    LastLimit { until_ms: u64 },
    /// Its last limit has expired; it runs on its own safe current.
    SafeCurrent,
}

/// A node's meter state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeterState {
    Unmetered,
    Fresh,
    /// Older than `stale_after_ms`.
    Stale,
    /// Never reported (start-up).
    Missing,
    /// Reported a value that is not a number.
    Invalid,
}

/// Predicted use of one node after the setpoints are applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeUsage {
    pub node: NodeId,
    pub meter: MeterState,
    /// Non-EV load per phase (A): measured, or assumed when the meter is not fresh.
    pub non_ev_a: [f64; 3],
    /// EV load per phase (A): setpoints and reservations below the node.
    pub ev_a: [f64; 3],
    /// `non_ev_a + ev_a`.
    pub predicted_a: [f64; 3],
    /// The effective per-phase limit (external limits included at the root); `None`: none.
    pub limit_a: [Option<f64>; 3],
    /// Predicted power (W) and the effective power limit, if any.
    pub predicted_w: f64,
    pub limit_w: Option<f64>,
}

/// What is in fail-safe.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Subject {
    Node(NodeId),
    Charger(ChargerId),
    /// The grid operator's link.
    Grid,
}

impl Subject {
    /// The node or charger id; `grid-operator` for the grid link.
    pub fn id(&self) -> &str {
        match self {
            Subject::Node(n) => n.as_str(),
            Subject::Charger(c) => c.as_str(),
            Subject::Grid => "grid-operator",
        }
    }
}

/// One fail-safe condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailSafe {
    pub subject: Subject,
    pub reason: FailSafeReason,
}

/// Why something runs on safe values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FailSafeReason {
    /// The node's meter has not reported since `last_ms`: EVs below get its safe current.
    MeterStale { last_ms: u64 },
    /// The node's meter never reported (start-up): EVs below get its safe current.
    MeterMissing,
    /// The node's meter reported a value that is not a number.
    MeterInvalid,
    /// The charger stopped answering at `since_ms`; `reserved_a` is kept for it.
    ChargerNotAnswering { since_ms: u64, reserved_a: f64 },
    /// The grid operator's limits expired at `valid_until_ms`: safe import limits apply.
    ExternalLimitsExpired { valid_until_ms: u64 },
}

/// A condition no setpoint can fix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Warning {
    /// Non-EV load plus reservations alone exceed the limit at `node` (on `phase`, or its
    /// power limit when `phase` is None): every controllable session below it is paused.
    Overload { node: NodeId, phase: Option<Phase>, fixed_a: f64, limit_a: f64 },
}
