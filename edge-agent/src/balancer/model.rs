//! The balancer's input model: the circuit tree, the charge points hanging on it, their
//! per-run state, meter readings, external limits and the balancer's configuration.
//!
//! Static configuration ([`CircuitTree`], [`ChargerPoint`], joined in a [`Site`]) is
//! validated once, at start-up, with a typed [`ModelError`] naming what is wrong. Per-run
//! values (meter readings, demands, measured draws, external limits) are never rejected:
//! a value that is not a finite number is read in the direction that is safe (see each
//! field), so a bad reading can never crash the balancer nor turn a limit into "unlimited".

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The largest current (A) or voltage (V) accepted in configuration; anything larger is a
/// typo, and bounding it keeps every sum far from overflow.
pub const MAX_CONFIG_VALUE: f64 = 100_000.0;

/// The largest power limit (W) accepted in configuration (1 GW).
pub const MAX_CONFIG_POWER_W: f64 = 1e9;

/// Why the static model is invalid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error("{kind} id {id:?} is invalid: {reason}")]
    BadId { kind: &'static str, id: String, reason: &'static str },
    #[error("node {0} is defined twice")]
    DuplicateNode(NodeId),
    #[error("the circuit tree has no root (a node without a parent: the grid connection)")]
    NoRoot,
    #[error("the circuit tree has two roots, {0} and {1}; only the grid connection has no parent")]
    TwoRoots(NodeId, NodeId),
    #[error("node {node} names parent {parent}, which does not exist")]
    UnknownParent { node: NodeId, parent: NodeId },
    #[error("node {0} is not reachable from the root (its parents form a cycle)")]
    Cycle(NodeId),
    #[error("{subject}: {field} = {value} is invalid: {reason}")]
    BadValue { subject: String, field: &'static str, value: f64, reason: &'static str },
    #[error("charger {0} is defined twice")]
    DuplicateCharger(ChargerId),
    #[error("charger {charger} hangs on node {node}, which does not exist")]
    UnknownNode { charger: ChargerId, node: NodeId },
    #[error("charger {charger}: min_current_a {min} is above max_current_a {max}")]
    MinAboveMax { charger: ChargerId, min: f64, max: f64 },
    #[error(transparent)]
    Wiring(#[from] WiringError),
}

/// Why the balancer could not run at all (the caller then keeps every charger on its safe
/// limit). Everything else is handled inside the balancer, in the safe direction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BalancerError {
    #[error("{got} charger states given for {expected} chargers (one per charger, in site order)")]
    StateCount { expected: usize, got: usize },
}

fn check_id(kind: &'static str, s: &str) -> Result<(), ModelError> {
    let bad = |reason| Err(ModelError::BadId { kind, id: s.to_owned(), reason });
    if s.is_empty() {
        return bad("empty");
    }
    if s.chars().count() > 64 {
        return bad("longer than 64 characters");
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("contains whitespace or control characters");
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        ///
        /// Shared, not copied: a balancer run hands out one per setpoint, so cloning it is a
        /// reference count, not an allocation.
        #[derive(Debug, Clone, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Checks and wraps an id: non-empty, at most 64 characters, no whitespace.
            pub fn try_new(s: impl Into<String>) -> Result<Self, ModelError> {
                let s = s.into();
                check_id($kind, &s)?;
                Ok(Self(Arc::from(s)))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = ModelError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::try_new(s)
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
            }
        }

        impl Eq for $name {}

        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
                self.0.hash(h);
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Self::try_new(String::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A node of the circuit tree: the grid connection, a sub-board, a feeder.
    NodeId,
    "node"
);
id_type!(
    /// A charge point as the balancer sees it: one EVSE (a station's connector that can
    /// charge one car at a time), e.g. `CP-001:1`.
    ChargerId,
    "charger"
);

pub use shared_model::site::{Phase, Wiring, WiringError};

pub(crate) fn default_voltage() -> f64 {
    230.0
}

pub(crate) fn default_min_current() -> f64 {
    6.0
}

/// One node of the circuit tree as configured: the grid connection (the root, no parent),
/// a sub-board or a feeder. Every limit is optional; a node without limits only groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub id: NodeId,
    /// The node it is fed from; `None` for the grid connection.
    #[serde(default)]
    pub parent: Option<NodeId>,
    /// Per-phase current limit (A) for L1, L2, L3: the fuse or breaker rating.
    #[serde(default)]
    pub limit_a: Option<[f64; 3]>,
    /// Total power limit (W) over all phases, converted with `voltage_v` into a limit on the
    /// sum of the phase currents (so a 1-phase load may use it all on one phase).
    #[serde(default)]
    pub power_limit_w: Option<f64>,
    /// Whether a meter measures this node's per-phase current (all loads below it, EVs
    /// included). A metered node whose reading is missing or stale is in fail-safe.
    #[serde(default)]
    pub metered: bool,
    /// Per-phase current the EVs below this node may draw in total while its meter is stale
    /// or has not reported yet: the installer's `limit - worst-case other load`. Default 0.
    #[serde(default)]
    pub safe_current_a: f64,
    /// Phase-to-neutral voltage used to convert power limits; default 230 V.
    #[serde(default = "default_voltage")]
    pub voltage_v: f64,
}

impl Node {
    /// A node without limits or meter.
    pub fn new(id: NodeId, parent: Option<NodeId>) -> Node {
        Node { id, parent, limit_a: None, power_limit_w: None, metered: false, safe_current_a: 0.0, voltage_v: 230.0 }
    }

    /// With the same current limit on all three phases.
    pub fn with_limit_a(mut self, a: f64) -> Node {
        self.limit_a = Some([a; 3]);
        self
    }

    /// With a total power limit (W).
    pub fn with_power_limit_w(mut self, w: f64) -> Node {
        self.power_limit_w = Some(w);
        self
    }

    /// Metered, with the safe current used while its meter is stale.
    pub fn with_meter(mut self, safe_current_a: f64) -> Node {
        self.metered = true;
        self.safe_current_a = safe_current_a;
        self
    }
}

fn check_value(subject: &dyn fmt::Display, field: &'static str, v: f64, positive: bool) -> Result<(), ModelError> {
    check_range(subject, field, v, positive, MAX_CONFIG_VALUE)
}

fn check_range(
    subject: &dyn fmt::Display,
    field: &'static str,
    v: f64,
    positive: bool,
    max: f64,
) -> Result<(), ModelError> {
    let reason = if !v.is_finite() {
        "not a finite number"
    } else if v < 0.0 || (positive && v == 0.0) {
        if positive { "must be above 0" } else { "must not be negative" }
    } else if v > max {
        "implausibly large"
    } else {
        return Ok(());
    };
    Err(ModelError::BadValue { subject: subject.to_string(), field, value: v, reason })
}

/// A validated circuit tree: one root (the grid connection), every other node fed from an
/// existing parent, no cycles, every limit a finite number `>= 0`.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitTree {
    /// Nodes in pre-order (root first, every subtree contiguous).
    nodes: Vec<Node>,
    parent: Vec<Option<usize>>,
    /// Pre-order index one past the end of each node's subtree.
    subtree_end: Vec<usize>,
    index: BTreeMap<NodeId, usize>,
}

impl CircuitTree {
    /// Validates the nodes (in any order) and builds the tree.
    pub fn try_new(nodes: Vec<Node>) -> Result<CircuitTree, ModelError> {
        let mut by_id: BTreeMap<NodeId, usize> = BTreeMap::new();
        for (i, n) in nodes.iter().enumerate() {
            if by_id.insert(n.id.clone(), i).is_some() {
                return Err(ModelError::DuplicateNode(n.id.clone()));
            }
            if let Some(l) = n.limit_a {
                for v in l {
                    check_value(&n.id, "limit_a", v, false)?;
                }
            }
            if let Some(w) = n.power_limit_w {
                check_range(&n.id, "power_limit_w", w, false, MAX_CONFIG_POWER_W)?;
            }
            check_value(&n.id, "safe_current_a", n.safe_current_a, false)?;
            check_value(&n.id, "voltage_v", n.voltage_v, true)?;
        }
        let mut root = None;
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
        for (i, n) in nodes.iter().enumerate() {
            match &n.parent {
                None => match root {
                    None => root = Some(i),
                    Some(r) => {
                        let first: &Node = &nodes[r];
                        return Err(ModelError::TwoRoots(first.id.clone(), n.id.clone()));
                    }
                },
                Some(p) => match by_id.get(p) {
                    Some(&pi) => children[pi].push(i),
                    None => return Err(ModelError::UnknownParent { node: n.id.clone(), parent: p.clone() }),
                },
            }
        }
        let root = root.ok_or(ModelError::NoRoot)?;
        // Iterative pre-order walk; children in configuration order.
        let mut order = Vec::with_capacity(nodes.len());
        let mut stack = vec![root];
        while let Some(i) = stack.pop() {
            order.push(i);
            stack.extend(children[i].iter().rev());
        }
        if order.len() != nodes.len() {
            let mut seen = vec![false; nodes.len()];
            for &i in &order {
                seen[i] = true;
            }
            let lost = seen.iter().position(|s| !s).unwrap_or(0);
            return Err(ModelError::Cycle(nodes[lost].id.clone()));
        }
        let mut new_pos = vec![0; nodes.len()];
        for (pos, &old) in order.iter().enumerate() {
            new_pos[old] = pos;
        }
        let mut slots: Vec<Option<Node>> = nodes.into_iter().map(Some).collect();
        let sorted: Vec<Node> = order.iter().filter_map(|&old| slots[old].take()).collect();
        let index: BTreeMap<NodeId, usize> = sorted.iter().enumerate().map(|(i, n)| (n.id.clone(), i)).collect();
        let parent: Vec<Option<usize>> =
            sorted.iter().map(|n| n.parent.as_ref().and_then(|p| index.get(p).copied())).collect();
        let mut subtree_end: Vec<usize> = (1..=sorted.len()).collect();
        for i in (1..sorted.len()).rev() {
            if let Some(p) = parent[i] {
                subtree_end[p] = subtree_end[p].max(subtree_end[i]);
            }
        }
        Ok(CircuitTree { nodes: sorted, parent, subtree_end, index })
    }

    /// The nodes in pre-order: the root first, each subtree contiguous.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Position of a node in [`CircuitTree::nodes`].
    pub fn position(&self, id: &NodeId) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Parent position of the node at `pos` (`None` for the root).
    pub fn parent(&self, pos: usize) -> Option<usize> {
        self.parent.get(pos).copied().flatten()
    }

    /// Pre-order positions `pos..end` are the subtree of the node at `pos`.
    pub fn subtree_end(&self, pos: usize) -> usize {
        self.subtree_end.get(pos).copied().unwrap_or(pos)
    }

    /// The node at `pos` and its ancestors up to the root.
    pub fn path(&self, pos: usize) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(Some(pos), move |&p| self.parent(p))
    }
}

/// One charge point (EVSE) as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargerPoint {
    pub id: ChargerId,
    /// The circuit node it hangs on.
    pub node: NodeId,
    /// Charger phases to site phases; default L1-L2-L3.
    #[serde(default)]
    pub wiring: Wiring,
    /// Lowest current (A per phase) a session can charge with: 6 A (IEC 61851-1) by default.
    #[serde(default = "default_min_current")]
    pub min_current_a: f64,
    /// Highest current (A per phase) the hardware (and its cable) allows.
    pub max_current_a: f64,
    /// Nominal phase voltage, for converting a current setpoint to power (W) for chargers
    /// that take their limit in W; the balancer itself works in A.
    #[serde(default = "default_voltage")]
    pub voltage_v: f64,
    /// Higher is served first with [`Fairness::Priority`] and paused last in every mode.
    #[serde(default)]
    pub priority: u8,
}

impl ChargerPoint {
    /// A charger with the defaults: 6 A minimum, 230 V, priority 0.
    pub fn new(id: ChargerId, node: NodeId, wiring: Wiring, max_current_a: f64) -> ChargerPoint {
        ChargerPoint { id, node, wiring, min_current_a: 6.0, max_current_a, voltage_v: 230.0, priority: 0 }
    }

    /// With a priority.
    pub fn with_priority(mut self, priority: u8) -> ChargerPoint {
        self.priority = priority;
        self
    }
}

/// A validated site: the circuit tree and the chargers on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    tree: CircuitTree,
    chargers: Vec<ChargerPoint>,
    charger_node: Vec<usize>,
    index: BTreeMap<ChargerId, usize>,
    /// Each charger's rank in id order (a cheap stable tie-break).
    id_rank: Vec<u32>,
}

impl Site {
    /// Checks every charger against the tree: unique ids, existing nodes, sane currents.
    /// Chargers keep their given order, which is the order of [`BalancerInput::states`] and
    /// of [`crate::balancer::Allocation::setpoints`].
    pub fn try_new(tree: CircuitTree, chargers: Vec<ChargerPoint>) -> Result<Site, ModelError> {
        let mut index = BTreeMap::new();
        let mut charger_node = Vec::with_capacity(chargers.len());
        for (i, c) in chargers.iter().enumerate() {
            if index.insert(c.id.clone(), i).is_some() {
                return Err(ModelError::DuplicateCharger(c.id.clone()));
            }
            let node = tree
                .position(&c.node)
                .ok_or_else(|| ModelError::UnknownNode { charger: c.id.clone(), node: c.node.clone() })?;
            charger_node.push(node);
            check_value(&c.id, "min_current_a", c.min_current_a, false)?;
            check_value(&c.id, "max_current_a", c.max_current_a, true)?;
            check_value(&c.id, "voltage_v", c.voltage_v, true)?;
            if c.min_current_a > c.max_current_a {
                return Err(ModelError::MinAboveMax {
                    charger: c.id.clone(),
                    min: c.min_current_a,
                    max: c.max_current_a,
                });
            }
        }
        let mut id_rank = vec![0u32; chargers.len()];
        for (rank, &i) in index.values().enumerate() {
            id_rank[i] = u32::try_from(rank).unwrap_or(u32::MAX);
        }
        Ok(Site { tree, chargers, charger_node, index, id_rank })
    }

    /// Builds tree and site in one step.
    pub fn try_from_parts(nodes: Vec<Node>, chargers: Vec<ChargerPoint>) -> Result<Site, ModelError> {
        Site::try_new(CircuitTree::try_new(nodes)?, chargers)
    }

    pub fn tree(&self) -> &CircuitTree {
        &self.tree
    }

    /// The chargers, in configuration order.
    pub fn chargers(&self) -> &[ChargerPoint] {
        &self.chargers
    }

    /// Position of a charger in [`Site::chargers`].
    pub fn charger_position(&self, id: &ChargerId) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Rank of charger `i`'s id in id order.
    pub fn id_rank(&self, i: usize) -> u32 {
        self.id_rank.get(i).copied().unwrap_or(u32::MAX)
    }

    /// Tree position of the node charger `i` hangs on.
    pub fn charger_node(&self, i: usize) -> usize {
        self.charger_node.get(i).copied().unwrap_or(0)
    }
}

/// A charging session on a charger (a car plugged in and authorized).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// When the session started (ms since the epoch): older sessions are paused last.
    pub started_ms: u64,
    /// The most the EV will take (A per phase), if known: it is offered no more, and what it
    /// leaves goes to the others. Not a finite number `>= 0`: unknown (the charger's max).
    #[serde(default)]
    pub demand_a: Option<f64>,
    /// How many of the charger's phases the EV uses (a 1-phase car on a 3-phase charger
    /// uses charger phase 1 only), once observed. `None`: all of the charger's phases.
    /// The caller lowers it only after seeing the car draw on fewer phases, and raises it
    /// before allowing a switch to more phases (EVerest #1060 exceeded limits there).
    #[serde(default)]
    pub ev_phases: Option<u8>,
}

/// Whether the charger answers the central system.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
pub enum Link {
    #[default]
    Answering,
    /// Not answering since `since_ms`. Until `limit_valid_until_ms` it keeps obeying the
    /// last limit it accepted (`last_limit_a`; `None`: the previous allocation's setpoint,
    /// or its max if there is none); after that it falls back to `safe_current_a` itself.
    /// Either is reserved for it: counted as drawn.
    NotAnswering { since_ms: u64, last_limit_a: Option<f64>, limit_valid_until_ms: u64, safe_current_a: f64 },
}

/// A charger's state for one run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ChargerState {
    #[serde(default)]
    pub session: Option<Session>,
    /// Measured current per charger phase (A), to tell EV load from other load in meter
    /// readings. Not a finite number: 0 (so the other load is over-, never under-estimated).
    /// Ignored while the charger does not answer.
    #[serde(default)]
    pub measured_a: [f64; 3],
    #[serde(default)]
    pub link: Link,
    /// Its limit changed a moment ago and `measured_a` may not show the change yet (the EV
    /// is still following it). At every metered node above it the non-EV load of the
    /// previous run is then kept if larger, so a draw in transition is never read as
    /// building load rising or falling (the loop would chase its own tail).
    #[serde(default)]
    pub settling: bool,
}

/// One meter reading: per-phase current (A) through a node, all loads below it included.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterReading {
    pub current_a: [f64; 3],
    /// When it was taken (ms since the epoch). Older than `stale_after_ms`: stale.
    pub at_ms: u64,
    /// The meter task found it stale (no good read for its configured number of periods):
    /// the node is in fail-safe whatever the age.
    #[serde(default)]
    pub stale: bool,
}

/// The latest reading of each metered node. A reading with a value that is not a finite
/// number counts as no reading (the node goes to its safe current).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Measurements {
    pub meters: BTreeMap<NodeId, MeterReading>,
}

/// A planned limit for a time window (from the planner or a local schedule), applied at the
/// grid connection while `start_ms <= now < end_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulePeriod {
    pub start_ms: u64,
    pub end_ms: u64,
    /// Total import power (W).
    #[serde(default)]
    pub limit_w: Option<f64>,
    /// Current per phase (A).
    #[serde(default)]
    pub limit_a: Option<f64>,
}

/// Limits from outside the site's wiring, applied at the grid connection (the root).
/// A value that is not a finite number `>= 0` counts as 0: no import for EVs (never as
/// "unlimited": OpenEMS #3894 turned an underflow into unlimited charging).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ExternalLimits {
    /// The grid operator's import cap (W, total).
    #[serde(default)]
    pub import_limit_w: Option<f64>,
    /// The grid operator's import cap per phase (A).
    #[serde(default)]
    pub import_limit_a: Option<[f64; 3]>,
    /// The grid operator's export cap (W). Recorded for V2G; charging only lowers export, so
    /// no setpoint of this balancer can break it.
    #[serde(default)]
    pub export_limit_w: Option<f64>,
    /// When the operator's limits expire unless renewed (the grid link's heartbeat). After
    /// it, the `safe_*` values apply (or the last limits, if no safe value is configured).
    #[serde(default)]
    pub valid_until_ms: Option<u64>,
    #[serde(default)]
    pub safe_import_limit_w: Option<f64>,
    #[serde(default)]
    pub safe_import_limit_a: Option<[f64; 3]>,
    /// Planned limits; every active period applies (the lowest wins).
    #[serde(default)]
    pub schedule: Vec<SchedulePeriod>,
}

/// How capacity is shared among sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Fairness {
    /// Equal current: every session rises at the same rate in A per phase until it reaches
    /// its own limit or a bottleneck (max-min fair in current). Priorities only decide who is
    /// paused first when not everyone can have the minimum.
    #[default]
    Equal,
    /// Strict priority classes: a higher class is served completely (up to its sessions'
    /// max or demand) before a lower one gets anything; equal current within a class.
    Priority,
    /// Max-min fair in power: every session rises at the same rate in W, so a 1-phase car
    /// gets three times the current of a 3-phase car behind the same bottleneck.
    MaxMin,
}

pub(crate) fn default_pause_below() -> f64 {
    6.0
}
pub(crate) fn default_hysteresis() -> f64 {
    1.0
}
fn default_min_ms() -> u64 {
    60_000
}
fn default_stale_ms() -> u64 {
    10_000
}
pub(crate) fn default_resolution() -> f64 {
    0.1
}

/// The balancer's tuning.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalancerConfig {
    #[serde(default)]
    pub fairness: Fairness,
    /// Site-wide floor (A): a session is never given less than
    /// `max(this, charger min_current_a)`; below it, it is paused instead.
    #[serde(default = "default_pause_below")]
    pub pause_below_a: f64,
    /// A paused (or new) session starts only when its floor plus this fits.
    #[serde(default = "default_hysteresis")]
    pub resume_hysteresis_a: f64,
    /// A paused session stays paused at least this long (unless nothing else could use the
    /// capacity: it is never resumed early, only kept paused).
    #[serde(default = "default_min_ms")]
    pub min_pause_ms: u64,
    /// A running session is not paused to make room for others before this (a limit still
    /// pauses it at once: safety before contactor wear).
    #[serde(default = "default_min_ms")]
    pub min_run_ms: u64,
    /// A meter reading older than this is stale (e.g. 10 periods of a 1 s poll).
    #[serde(default = "default_stale_ms")]
    pub stale_after_ms: u64,
    /// Setpoints are rounded down to a multiple of this (A); 0 for none.
    #[serde(default = "default_resolution")]
    pub resolution_a: f64,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        BalancerConfig {
            fairness: Fairness::Equal,
            pause_below_a: default_pause_below(),
            resume_hysteresis_a: default_hysteresis(),
            min_pause_ms: default_min_ms(),
            min_run_ms: default_min_ms(),
            stale_after_ms: default_stale_ms(),
            resolution_a: default_resolution(),
        }
    }
}

/// Everything one balancer run looks at. `now_ms` is injected: the balancer never reads
/// the clock.
#[derive(Debug, Clone, Copy)]
pub struct BalancerInput<'a> {
    pub site: &'a Site,
    /// One per charger, in [`Site::chargers`] order.
    pub states: &'a [ChargerState],
    pub measurements: &'a Measurements,
    pub external: &'a ExternalLimits,
    /// The allocation applied last, for hysteresis and minimum run/pause times.
    pub previous: Option<&'a crate::balancer::Allocation>,
    /// Milliseconds since the epoch.
    pub now_ms: u64,
    pub config: &'a BalancerConfig,
}

/// `v` if it is a finite number, else `fallback`.
pub(crate) fn finite_or(v: f64, fallback: f64) -> f64 {
    if v.is_finite() { v } else { fallback }
}

/// A limit value read safely: not finite or negative counts as 0.
pub(crate) fn limit_value(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 { v } else { 0.0 }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn id(s: &str) -> NodeId {
        s.parse().unwrap()
    }

    #[test]
    fn wiring_from_lists() {
        let w: Wiring = Wiring::try_new(&[Phase::L2, Phase::L3, Phase::L1]).unwrap();
        assert_eq!(w.site_phase(0), Some(Phase::L2));
        assert_eq!(w.site_phases(Some(1)), [false, true, false]);
        assert_eq!(w.site_phases(None), [true, true, true]);
        assert_eq!(Wiring::single(Phase::L3).site_phases(None), [false, false, true]);
        assert!(Wiring::try_new(&[]).is_err());
        assert!(Wiring::try_new(&[Phase::L1, Phase::L1]).is_err());
        let c: ChargerPoint =
            toml::from_str("id = \"a\"\nnode = \"g\"\nwiring = [\"L3\"]\nmax_current_a = 16").unwrap();
        assert_eq!(c.wiring, Wiring::single(Phase::L3));
        assert_eq!(c.min_current_a, 6.0);
        assert!(
            toml::from_str::<ChargerPoint>("id = \"a\"\nnode = \"g\"\nwiring = [\"L3\", \"L3\"]\nmax_current_a = 16")
                .is_err()
        );
    }

    #[test]
    fn tree_validation() {
        let ok = CircuitTree::try_new(vec![
            Node::new(id("b"), Some(id("a"))),
            Node::new(id("a"), None).with_limit_a(32.0),
            Node::new(id("c"), Some(id("b"))),
            Node::new(id("d"), Some(id("a"))),
        ])
        .unwrap();
        let names: Vec<&str> = ok.nodes().iter().map(|n| n.id.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        assert_eq!(ok.subtree_end(0), 4);
        assert_eq!(ok.subtree_end(1), 3);
        assert_eq!(ok.path(2).collect::<Vec<_>>(), [2, 1, 0]);

        assert_eq!(CircuitTree::try_new(vec![]), Err(ModelError::NoRoot));
        assert!(matches!(
            CircuitTree::try_new(vec![Node::new(id("a"), None), Node::new(id("b"), None)]),
            Err(ModelError::TwoRoots(..))
        ));
        assert!(matches!(
            CircuitTree::try_new(vec![
                Node::new(id("a"), None),
                Node::new(id("b"), Some(id("c"))),
                Node::new(id("c"), Some(id("b")))
            ]),
            Err(ModelError::Cycle(_))
        ));
        assert!(matches!(
            CircuitTree::try_new(vec![Node::new(id("a"), Some(id("x")))]),
            Err(ModelError::UnknownParent { .. })
        ));
        for bad in [f64::NAN, f64::INFINITY, -1.0] {
            assert!(matches!(
                CircuitTree::try_new(vec![Node::new(id("a"), None).with_limit_a(bad)]),
                Err(ModelError::BadValue { field: "limit_a", .. })
            ));
        }
        assert!("".parse::<NodeId>().is_err());
        assert!("a b".parse::<ChargerId>().is_err());
    }

    #[test]
    fn site_validation() {
        let tree = CircuitTree::try_new(vec![Node::new(id("g"), None)]).unwrap();
        let cp =
            |n: &str, node: &str, max: f64| ChargerPoint::new(n.parse().unwrap(), id(node), Wiring::THREE_PHASE, max);
        assert!(Site::try_new(tree.clone(), vec![cp("a", "g", 16.0)]).is_ok());
        assert!(matches!(
            Site::try_new(tree.clone(), vec![cp("a", "g", 16.0), cp("a", "g", 16.0)]),
            Err(ModelError::DuplicateCharger(_))
        ));
        assert!(matches!(Site::try_new(tree.clone(), vec![cp("a", "x", 16.0)]), Err(ModelError::UnknownNode { .. })));
        assert!(matches!(Site::try_new(tree.clone(), vec![cp("a", "g", 5.0)]), Err(ModelError::MinAboveMax { .. })));
        assert!(matches!(Site::try_new(tree, vec![cp("a", "g", f64::NAN)]), Err(ModelError::BadValue { .. })));
    }
}
