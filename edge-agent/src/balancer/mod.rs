//! The load balancer: a pure function from the site's circuit tree, meter readings,
//! external limits, the sessions' demands and `now` to one current limit per charger.
//!
//! [`balance`] never reads the clock, never does IO and never panics: the loop that runs
//! it (event-driven and on a 1 s tick) injects `now`, checks the result with [`verify`]
//! and only then sends it as charging profiles; an allocation that fails the check is a
//! bug, logged and refused (the chargers keep their last limits, which expire into their
//! safe currents). Everything is deterministic: the same input gives the same output.
//!
//! # Model
//!
//! A [`CircuitTree`] of nodes (grid connection → sub-boards → feeders), each with an
//! optional per-phase current limit, an optional power limit and an optional meter that
//! measures everything below it. Chargers ([`ChargerPoint`]) hang on nodes with a
//! [`Wiring`] that maps charger phases to site phases (1-phase chargers on L1, L2 or L3;
//! rotated 3-phase chargers). A 1-phase car on a 3-phase charger charges on charger phase
//! 1 ([`Session::ev_phases`]). All currents are A per phase.
//!
//! # Algorithm
//!
//! 1. **Room per node** (`capacity.rs`): the non-EV load at a metered node is its reading
//!    minus the measured EV draws below it, clamped at 0 (a generator's export is not
//!    credited: it can vanish faster than we react). An unmetered node carries its metered
//!    children's non-EV load. The room for EVs on each phase is the limit minus non-EV
//!    load minus what is reserved for chargers that do not answer; a power limit becomes a
//!    limit on the sum of the phase currents (`P / V`), so a 1-phase load may use it all on
//!    its phase. External limits (the grid operator's import caps, the planned schedule)
//!    are further limits at the root. Every room is clamped at 0 and every limit that is
//!    not a finite number counts as 0, never as "unlimited" (OpenEMS #3894).
//! 2. **The 6 A rule** (admission): a session never gets less than its floor,
//!    `max(charger min_current_a, pause_below_a)`; below it the car is paused instead. In
//!    keep-order, sessions reserve their floor on every resource of their path if it fits:
//!    first running sessions within `min_run_ms` (contactor protection), then by priority
//!    (highest first), running before paused, older session first, charger id. A paused or
//!    new session needs its floor **plus `resume_hysteresis_a`** to (re)start, and stays
//!    paused for at least `min_pause_ms`, so a site on the threshold does not flap; a
//!    running one keeps going while its bare floor fits. Safety wins over the timers: a
//!    session whose floor does not fit is paused at once.
//! 3. **Progressive filling** (`fill.rs`, event-driven, O(n log n)): the admitted sessions rise together from their
//!    floors, each up to its own cap (charger max, EV demand: what an EV leaves goes to the
//!    others), stopping when a node it draws from saturates on a phase it uses. A 1-phase
//!    car only uses capacity on its own phase, and a full phase never stops a car that does
//!    not draw on it (evcc #29532 stopped a 1-phase car for over-current on another phase).
//!    Nobody is first-come-first-served (evcc #20113): [`Fairness::Equal`] gives every
//!    session behind the same bottleneck the same current (max-min fair in A);
//!    [`Fairness::MaxMin`] the same power (max-min fair in W: rates weighted by
//!    `1 / phases`); [`Fairness::Priority`] runs steps 2 and 3 class by class, highest
//!    priority first, each class filled completely before the next is admitted.
//! 4. Setpoints are rounded down to `resolution_a` (never below the floor) and the
//!    predicted use of every node is reported.
//!
//! # Fail-safe (invariant 2)
//!
//! - A metered node whose reading is older than `stale_after_ms`, missing (start-up: safe
//!   limits until the meters report) or not a number gives the EVs below it at most its
//!   `safe_current_a` per phase in total, and assumes the rest of its limit is taken by
//!   load it cannot see.
//! - A charger that stops answering keeps its last limit reserved (counted as drawn, on all
//!   its phases) until that limit's validity ends, then its own safe current; nobody else
//!   gets that share meanwhile. Its last measured draw is *not* subtracted from the meter
//!   readings: the car may have stopped since, and the meter's load would then be other load
//!   that stays. So it is counted twice at worst: the price of not knowing.
//! - A meter reading is paired with the chargers' measured draws of its own time: when no
//!   newer reading has come since the previous run, the previous run's non-EV load is kept
//!   if larger (the draws may have risen since the reading, and subtracting them would hide
//!   load).
//! - External limits whose validity has ended fall back to their safe values.
//! - Each of these is listed in [`Allocation::fail_safe`]. Fixed load (non-EV load plus
//!   reservations) above a limit is a [`Warning`]: every controlled session below is paused.
//!
//! Phase switching (EVerest #1060 exceeded limits while switching phases): a session is
//! counted on all the charger's phases unless the caller has seen it draw on fewer, so a
//! switch from 1 to 3 phases is always already paid for.
//!
//! ```
//! use edge_agent::balancer::*;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let grid: NodeId = "grid".parse()?;
//! let site = Site::try_from_parts(
//!     vec![Node::new(grid.clone(), None).with_limit_a(32.0)],
//!     vec![
//!         ChargerPoint::new("cp1".parse()?, grid.clone(), Wiring::THREE_PHASE, 32.0),
//!         ChargerPoint::new("cp2".parse()?, grid, Wiring::single(Phase::L1), 32.0),
//!     ],
//! )?;
//! let session = Session { started_ms: 0, demand_a: None, ev_phases: None };
//! let states = [ChargerState { session: Some(session), ..Default::default() }; 2];
//! let input = BalancerInput {
//!     site: &site,
//!     states: &states,
//!     measurements: &Measurements::default(),
//!     external: &ExternalLimits::default(),
//!     previous: None,
//!     now_ms: 1_000,
//!     config: &BalancerConfig::default(),
//! };
//! let allocation = balance(&input)?;
//! assert_eq!(allocation.setpoints[0].current_a, 16.0); // L1 is shared: 16 A each
//! assert_eq!(allocation.setpoints[1].current_a, 16.0);
//! assert!(verify(&allocation, &input).is_ok());
//! # Ok(()) }
//! ```

mod allocation;
mod capacity;
mod fill;
mod model;
mod previous;
#[cfg(test)]
mod tests;
mod verify;

pub use allocation::{
    Allocation, FailSafe, FailSafeReason, Limiter, MeterState, NodeUsage, PauseReason, Reason, Reservation, Setpoint,
    Subject, Warning,
};
pub use model::{
    BalancerConfig, BalancerError, BalancerInput, ChargerId, ChargerPoint, ChargerState, CircuitTree, ExternalLimits,
    Fairness, Link, MAX_CONFIG_POWER_W, MAX_CONFIG_VALUE, Measurements, MeterReading, ModelError, Node, NodeId, Phase,
    SchedulePeriod, Session, Site, Wiring,
};
pub use verify::{Violation, verify};

use capacity::{EPS, RES_PER_NODE};
use fill::{FillSession, Stop};
use model::limit_value;

/// Defaults of the model's configurable values, for the config file's sections.
pub(crate) mod model_defaults {
    pub(crate) use super::model::{
        default_hysteresis, default_min_current, default_pause_below, default_resolution, default_voltage,
    };
}
use previous::Previous;

/// Keep-order of a session: priority (highest first), running first, older first, id.
type KeepKey = (std::cmp::Reverse<u8>, bool, u64, u32);

/// A session's state in the previous allocation.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Before {
    New,
    Running { since: u64 },
    Paused { since: u64 },
}

/// Per candidate session, beside its [`FillSession`].
#[derive(Debug)]
struct Candidate {
    charger: usize,
    before: Before,
    /// Running for less than `min_run_ms`: its floor is reserved before anyone else's.
    locked: bool,
    /// Paused for less than `min_pause_ms`: it stays paused.
    held: bool,
    /// The site floor is above the charger's max: it can never run.
    floor_above_max: bool,
    priority: u8,
    started_ms: u64,
    /// Did its cap come from the EV's demand (rather than the charger's max)?
    demand_capped: bool,
}

#[derive(Debug, Clone)]
enum Decision {
    Open,
    Admitted,
    Paused(PauseReason),
}

fn fits(room: &[f64], pairs: &[(usize, f64)], need: f64) -> Result<(), usize> {
    match pairs.iter().find(|&&(r, a)| a * need > room[r] + EPS) {
        Some(&(r, _)) => Err(r),
        None => Ok(()),
    }
}

fn resource_place(site: &Site, r: usize) -> (NodeId, Option<Phase>) {
    // `r` indexes the room vector, 4 per node: always a node of this tree.
    let id = site.tree().nodes()[r / RES_PER_NODE].id.clone();
    (id, Phase::ALL.get(r % RES_PER_NODE).copied())
}

/// Why an allocation is not to be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Input(#[from] BalancerError),
    /// [`verify`] found the allocation over a limit: a bug in the balancer.
    #[error("allocation refused, it breaks {} limit(s): {}", .0.len(), .0.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("; "))]
    Violations(Vec<Violation>, Box<Allocation>),
}

/// [`balance`], then [`verify`]: what the loop applies. On `Err` it logs the reason and
/// keeps the chargers on what they have (their limits expire into their safe currents).
pub fn balance_verified(input: &BalancerInput<'_>) -> Result<Allocation, Refused> {
    let allocation = balance(input)?;
    match verify(&allocation, input) {
        Ok(()) => Ok(allocation),
        Err(violations) => Err(Refused::Violations(violations, Box::new(allocation))),
    }
}

/// Runs the balancer once. Fails only when `states` does not match the site's chargers;
/// every other oddity of the input is handled in the safe direction (see the module docs).
pub fn balance(input: &BalancerInput<'_>) -> Result<Allocation, BalancerError> {
    let site = input.site;
    let chargers = site.chargers();
    if input.states.len() != chargers.len() {
        return Err(BalancerError::StateCount { expected: chargers.len(), got: input.states.len() });
    }
    let cfg = input.config;
    let now = input.now_ms;
    let site_floor = limit_value(cfg.pause_below_a);
    let hysteresis = limit_value(cfg.resume_hysteresis_a);
    let tree = site.tree();
    let previous = Previous::new(input.previous, site);
    let mut assessment = capacity::assess(input, &previous);
    let room = &mut assessment.room;

    // Candidates: answering chargers with a session.
    let mut sessions: Vec<FillSession> = Vec::new();
    let mut cands: Vec<Candidate> = Vec::new();
    let mut paths: Vec<(usize, f64)> = Vec::new();
    for (i, (charger, state)) in chargers.iter().zip(input.states).enumerate() {
        let (Some(session), model::Link::Answering) = (&state.session, state.link) else { continue };
        let mask = charger.wiring.site_phases(session.ev_phases);
        let phases = mask.iter().filter(|&&m| m).count().max(1);
        let lo = charger.min_current_a.max(site_floor);
        let demand = session.demand_a.filter(|d| d.is_finite() && *d >= 0.0);
        let capped = demand.unwrap_or(charger.max_current_a).min(charger.max_current_a);
        let hi = capped.max(lo);
        let w = match cfg.fairness {
            Fairness::MaxMin => 1.0 / phases as f64,
            Fairness::Equal | Fairness::Priority => 1.0,
        };
        let node = site.charger_node(i);
        let from = paths.len();
        for pos in tree.path(node) {
            for (k, _) in mask.iter().enumerate().filter(|(_, m)| **m) {
                let r = pos * RES_PER_NODE + k;
                if room[r].is_finite() {
                    paths.push((r, 1.0));
                }
            }
            let r = pos * RES_PER_NODE + 3;
            if room[r].is_finite() {
                paths.push((r, phases as f64));
            }
        }
        let before = match previous.get(i, charger.id.as_str()) {
            Some(p) if p.session_started_ms == Some(session.started_ms) && p.paused => {
                Before::Paused { since: p.since_ms }
            }
            Some(p) if p.session_started_ms == Some(session.started_ms) && p.current_a > 0.0 => {
                Before::Running { since: p.since_ms }
            }
            _ => Before::New,
        };
        let locked = matches!(before, Before::Running { since } if now.saturating_sub(since) < cfg.min_run_ms);
        let held = matches!(before, Before::Paused { since } if now.saturating_sub(since) < cfg.min_pause_ms);
        sessions.push(FillSession { lo, hi, w, node, mask, res: from..paths.len() });
        cands.push(Candidate {
            charger: i,
            before,
            locked,
            held,
            floor_above_max: lo > charger.max_current_a,
            priority: charger.priority,
            started_ms: session.started_ms,
            demand_capped: capped < charger.max_current_a,
        });
    }

    // Keep-order: priority, running before paused, older first, id.
    let mut keyed: Vec<(KeepKey, usize)> = cands
        .iter()
        .enumerate()
        .map(|(c, cand)| {
            let not_running = !matches!(cand.before, Before::Running { .. });
            ((std::cmp::Reverse(cand.priority), not_running, cand.started_ms, site.id_rank(cand.charger)), c)
        })
        .collect();
    keyed.sort_unstable();
    let order: Vec<usize> = keyed.into_iter().map(|(_, c)| c).collect();

    let mut decision = vec![Decision::Open; cands.len()];
    let mut result: Vec<Option<(f64, Stop)>> = vec![None; cands.len()];
    let admit = |c: usize, room: &mut [f64], decision: &mut [Decision]| {
        for &(r, a) in &paths[sessions[c].res.clone()] {
            room[r] = (room[r] - a * sessions[c].lo).max(0.0);
        }
        decision[c] = Decision::Admitted;
    };
    let no_capacity = |r: usize| {
        let (node, phase) = resource_place(site, r);
        Decision::Paused(PauseReason::NoCapacity { node, phase })
    };

    // Sessions within their minimum run time keep their floor first (if it fits at all).
    for &c in &order {
        if cands[c].locked && !cands[c].floor_above_max {
            match fits(room, &paths[sessions[c].res.clone()], sessions[c].lo) {
                Ok(()) => admit(c, room, &mut decision),
                Err(r) => decision[c] = no_capacity(r),
            }
        }
    }

    let classes: Vec<Option<u8>> = match cfg.fairness {
        Fairness::Priority => {
            let mut p: Vec<u8> = cands.iter().map(|c| c.priority).collect();
            p.sort_unstable_by(|a, b| b.cmp(a));
            p.dedup();
            p.into_iter().map(Some).collect()
        }
        Fairness::Equal | Fairness::MaxMin => vec![None],
    };
    for class in classes {
        let in_class = |c: usize| class.is_none_or(|p| cands[c].priority == p);
        for &c in order.iter().filter(|&&c| in_class(c)) {
            if !matches!(decision[c], Decision::Open) {
                continue;
            }
            if cands[c].floor_above_max {
                decision[c] = Decision::Paused(PauseReason::FloorAboveMax);
                continue;
            }
            let need = match cands[c].before {
                Before::Running { .. } => sessions[c].lo,
                Before::New | Before::Paused { .. } => sessions[c].lo + hysteresis,
            };
            match fits(room, &paths[sessions[c].res.clone()], need) {
                Ok(()) if cands[c].held => decision[c] = Decision::Paused(PauseReason::MinPauseTime),
                Ok(()) => admit(c, room, &mut decision),
                Err(r) => decision[c] = no_capacity(r),
            }
        }
        let mut members: Vec<usize> =
            (0..cands.len()).filter(|&c| in_class(c) && matches!(decision[c], Decision::Admitted)).collect();
        if members.is_empty() {
            continue;
        }
        members.sort_unstable_by_key(|&c| (sessions[c].node, c));
        let out = fill::fill(&sessions, &members, &paths, room, tree);
        for &c in &members {
            result[c] = out.get(c).copied();
        }
    }

    // Setpoints.
    let resolution = limit_value(cfg.resolution_a);
    let round = |x: f64, lo: f64, hi: f64| -> f64 {
        let x = if resolution > 0.0 {
            let inv = 1.0 / resolution;
            (x * inv + 1e-9).floor() / inv
        } else {
            x
        };
        x.max(lo).min(hi)
    };
    let mut by_charger: Vec<Option<usize>> = vec![None; chargers.len()];
    for (c, cand) in cands.iter().enumerate() {
        by_charger[cand.charger] = Some(c);
    }
    let mut setpoints = Vec::with_capacity(chargers.len());
    for (i, (charger, state)) in chargers.iter().zip(input.states).enumerate() {
        let all_phases = charger.wiring.site_phases(None);
        let session_started_ms = state.session.map(|s| s.started_ms);
        let base = |current_a: f64, phases: [bool; 3], paused: bool, reason: Reason, since_ms: u64| Setpoint {
            charger: charger.id.clone(),
            current_a,
            phases,
            paused,
            reason,
            since_ms,
            session_started_ms,
        };
        let sp = if let (Some(r), model::Link::NotAnswering { since_ms, .. }) = (&assessment.reserved[i], state.link) {
            base(r.current_a, all_phases, false, Reason::Reserved(r.kind.clone()), since_ms)
        } else if let Some(c) = by_charger[i] {
            let (cand, sess) = (&cands[c], &sessions[c]);
            match (&decision[c], result[c]) {
                (Decision::Admitted, Some((x, stop))) => {
                    let limited_by = match stop {
                        Stop::Cap if cand.demand_capped => Limiter::EvDemand,
                        Stop::Cap => Limiter::ChargerMax,
                        Stop::Resource(r) => {
                            let (node, phase) = resource_place(site, r);
                            if r % RES_PER_NODE == 3 {
                                Limiter::Node { node, phase: None }
                            } else {
                                Limiter::Node { node, phase }
                            }
                        }
                    };
                    let since = match cand.before {
                        Before::Running { since } => since,
                        _ => now,
                    };
                    base(round(x, sess.lo, sess.hi), sess.mask, false, Reason::Running { limited_by }, since)
                }
                (decision, _) => {
                    let why = match decision {
                        Decision::Paused(why) => why.clone(),
                        // Unreachable by construction; paused is the safe reading.
                        _ => PauseReason::FloorAboveMax,
                    };
                    let since = match cand.before {
                        Before::Paused { since } => since,
                        _ => now,
                    };
                    base(0.0, sess.mask, true, Reason::Paused { why }, since)
                }
            }
        } else {
            base(0.0, all_phases, false, Reason::Idle, now)
        };
        setpoints.push(sp);
    }

    // Predicted use per node.
    let nodes = tree.nodes();
    let mut ev = vec![[0.0f64; 3]; nodes.len()];
    for (i, sp) in setpoints.iter().enumerate() {
        let node = site.charger_node(i);
        for (k, a) in sp.site_currents().iter().enumerate() {
            ev[node][k] += a;
        }
    }
    for i in (1..nodes.len()).rev() {
        if let Some(p) = tree.parent(i) {
            let child = ev[i];
            for (sum, c) in ev[p].iter_mut().zip(child) {
                *sum += c;
            }
        }
    }
    let usage = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let non_ev_a = assessment.non_ev[i];
            let predicted_a = [0, 1, 2].map(|k| non_ev_a[k] + ev[i][k]);
            let safe = assessment.safe_cap[i].unwrap_or(f64::INFINITY);
            let limit_a = [0, 1, 2].map(|k| {
                let l = assessment.limit[i][k].min(non_ev_a[k] + safe);
                l.is_finite().then_some(l)
            });
            let power = assessment.power_limit[i];
            NodeUsage {
                node: node.id.clone(),
                meter: assessment.meter[i],
                non_ev_a,
                ev_a: ev[i],
                predicted_a,
                limit_a,
                predicted_w: predicted_a.iter().sum::<f64>() * node.voltage_v,
                limit_w: power.is_finite().then_some(power * node.voltage_v),
            }
        })
        .collect();

    Ok(Allocation {
        computed_at_ms: now,
        setpoints,
        nodes: usage,
        fail_safe: assessment.fail_safe,
        warnings: assessment.warnings,
    })
}
