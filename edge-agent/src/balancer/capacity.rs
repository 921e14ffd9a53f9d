//! Step 1 of a run: what each node can still carry for EVs, per phase and in power.
//!
//! For every node, bottom-up: the non-EV load (meter minus the EV draws below it at a
//! fresh metered node; the sum of its children's at an unmetered one; `limit - safe` at a
//! metered node whose meter is stale or missing, whose EVs then get at most its safe
//! current), the reservations of chargers that do not answer, and from them the room left
//! for controlled sessions. Every value is clamped at 0: a load above its limit leaves no
//! room (and a warning), never a negative room that a later step could misread.

use super::allocation::{FailSafe, FailSafeReason, MeterState, Reservation, Subject, Warning};
use super::model::{BalancerInput, Link, Phase, finite_or, limit_value};
use super::previous::Previous;

/// Slack for float rounding when comparing sums against limits (A).
pub(crate) const EPS: f64 = 1e-9;

/// Resources per node: L1, L2, L3 current and the power (sum of phase currents).
pub(crate) const RES_PER_NODE: usize = 4;

/// What one charger that does not answer keeps.
#[derive(Debug, Clone)]
pub(crate) struct Reserved {
    pub current_a: f64,
    pub kind: Reservation,
}

/// Capacities of one run.
#[derive(Debug)]
pub(crate) struct Assessment {
    pub meter: Vec<MeterState>,
    pub non_ev: Vec<[f64; 3]>,
    /// Effective per-phase limit, external limits included at the root; INFINITY: none.
    pub limit: Vec<[f64; 3]>,
    /// Effective limit on the sum of phase currents (power / voltage); INFINITY: none.
    pub power_limit: Vec<f64>,
    /// The EV cap of a node whose meter is not fresh (its safe current).
    pub safe_cap: Vec<Option<f64>>,
    /// Per charger: the reservation of a charger that does not answer.
    pub reserved: Vec<Option<Reserved>>,
    /// Per resource (`4 * node + k`): room left for controlled sessions; INFINITY: no limit.
    pub room: Vec<f64>,
    pub fail_safe: Vec<FailSafe>,
    pub warnings: Vec<Warning>,
}

fn min_opt(a: f64, b: Option<f64>) -> f64 {
    b.map_or(a, |b| a.min(limit_value(b)))
}

/// External per-phase current and power (W) limits at the root, with their fail-safe.
fn external_limits(input: &BalancerInput<'_>, fail_safe: &mut Vec<FailSafe>) -> ([f64; 3], f64) {
    let ext = input.external;
    let now = input.now_ms;
    let expired = ext.valid_until_ms.is_some_and(|until| now >= until);
    let (mut amps, mut watts) = ([f64::INFINITY; 3], f64::INFINITY);
    let (limit_a, limit_w) = match ext.valid_until_ms {
        Some(until) if expired => {
            fail_safe.push(FailSafe {
                subject: Subject::Grid,
                reason: FailSafeReason::ExternalLimitsExpired { valid_until_ms: until },
            });
            (ext.safe_import_limit_a.or(ext.import_limit_a), ext.safe_import_limit_w.or(ext.import_limit_w))
        }
        _ => (ext.import_limit_a, ext.import_limit_w),
    };
    if let Some(l) = limit_a {
        for p in 0..3 {
            amps[p] = amps[p].min(limit_value(l[p]));
        }
    }
    watts = min_opt(watts, limit_w);
    for period in ext.schedule.iter().filter(|s| s.start_ms <= now && now < s.end_ms) {
        watts = min_opt(watts, period.limit_w);
        if let Some(a) = period.limit_a {
            amps = amps.map(|x| x.min(limit_value(a)));
        }
    }
    (amps, watts)
}

/// The reservation of a charger that does not answer.
pub(crate) fn reservation(link: &Link, max_current_a: f64, previous_a: Option<f64>, now_ms: u64) -> Option<Reserved> {
    match *link {
        Link::Answering => None,
        Link::NotAnswering { last_limit_a, limit_valid_until_ms, safe_current_a, .. } => {
            let (a, kind) = if now_ms < limit_valid_until_ms {
                // Unknown or not a number: the worst case, its max.
                let last = last_limit_a.or(previous_a).map_or(max_current_a, |a| finite_or(a, max_current_a));
                (last, Reservation::LastLimit { until_ms: limit_valid_until_ms })
            } else {
                (finite_or(safe_current_a, max_current_a), Reservation::SafeCurrent)
            };
            Some(Reserved { current_a: a.clamp(0.0, max_current_a), kind })
        }
    }
}

/// Computes the room per node and resource.
pub(crate) fn assess(input: &BalancerInput<'_>, previous: &Previous<'_>) -> Assessment {
    let tree = input.site.tree();
    let nodes = tree.nodes();
    let n = nodes.len();
    let now = input.now_ms;
    let mut fail_safe = Vec::new();
    let mut warnings = Vec::new();

    // Reservations, and the EV draws to subtract from meter readings.
    let mut reserved = Vec::with_capacity(input.states.len());
    let mut ev_measured = vec![[0.0f64; 3]; n];
    let mut reserved_below = vec![[0.0f64; 3]; n];
    let mut charger_fail_safe = Vec::new();
    let mut settling_below = vec![false; n];
    // The part of `ev_measured` from settling chargers (an upper bound of their draw).
    let mut ev_settling = vec![[0.0f64; 3]; n];
    for (i, (charger, state)) in input.site.chargers().iter().zip(input.states).enumerate() {
        let node = input.site.charger_node(i);
        let r = reservation(
            &state.link,
            charger.max_current_a,
            previous.get(i, charger.id.as_str()).map(|s| s.current_a),
            now,
        );
        for cp in 0..3 {
            if let Some(p) = charger.wiring.site_phase(cp) {
                // A charger that does not answer may have stopped drawing since its last
                // measurement: the meter's load is then other load that stays, and its
                // reservation comes on top. So nothing of it is subtracted (counted twice
                // at worst: the price of not knowing).
                let sub = if r.is_some() { 0.0 } else { finite_or(state.measured_a[cp], 0.0).max(0.0) };
                ev_measured[node][p.index()] += sub;
                if state.settling && r.is_none() {
                    ev_settling[node][p.index()] += sub;
                }
                if let Some(r) = &r {
                    reserved_below[node][p.index()] += r.current_a;
                }
            }
        }
        if state.settling && r.is_none() {
            settling_below[node] = true;
        }
        if let (Some(r), Link::NotAnswering { since_ms, .. }) = (&r, state.link) {
            charger_fail_safe.push(FailSafe {
                subject: Subject::Charger(charger.id.clone()),
                reason: FailSafeReason::ChargerNotAnswering { since_ms, reserved_a: r.current_a },
            });
        }
        reserved.push(r);
    }
    for i in (1..n).rev() {
        if let Some(p) = tree.parent(i) {
            for k in 0..3 {
                ev_measured[p][k] += ev_measured[i][k];
                ev_settling[p][k] += ev_settling[i][k];
                reserved_below[p][k] += reserved_below[i][k];
            }
            settling_below[p] |= settling_below[i];
        }
    }

    // Non-EV load, bottom-up.
    let mut meter = vec![MeterState::Unmetered; n];
    let mut non_ev = vec![[0.0f64; 3]; n];
    let mut children_non_ev = vec![[0.0f64; 3]; n];
    let mut safe_cap = vec![None; n];
    for i in (0..n).rev() {
        let node = &nodes[i];
        if node.metered {
            let state = match input.measurements.meters.get(&node.id) {
                None => MeterState::Missing,
                Some(r) if r.current_a.iter().any(|v| !v.is_finite()) => MeterState::Invalid,
                Some(r) if r.stale || now.saturating_sub(r.at_ms) > input.config.stale_after_ms => MeterState::Stale,
                Some(_) => MeterState::Fresh,
            };
            meter[i] = state;
            match (state, input.measurements.meters.get(&node.id)) {
                (MeterState::Fresh, Some(r)) => {
                    for k in 0..3 {
                        non_ev[i][k] = (r.current_a[k] - ev_measured[i][k]).max(0.0);
                    }
                    let held = if settling_below[i] {
                        let held = previous.non_ev(i, node.id.as_str());
                        if held.is_none() {
                            // Nothing to hold (first fresh reading): subtracting the upper
                            // bound of a settling draw could hide load, so subtract none of it.
                            for k in 0..3 {
                                non_ev[i][k] = (r.current_a[k] - (ev_measured[i][k] - ev_settling[i][k])).max(0.0);
                            }
                        }
                        held
                    } else {
                        previous.held_non_ev(i, node.id.as_str(), r.at_ms)
                    };
                    if let Some(held) = held {
                        for k in 0..3 {
                            non_ev[i][k] = non_ev[i][k].max(finite_or(held[k], 0.0));
                        }
                    }
                }
                (_, reading) => {
                    // Unknown load: assume the worst the safe current allows for.
                    let lim = node.limit_a.unwrap_or([f64::INFINITY; 3]);
                    for k in 0..3 {
                        let l = lim[k];
                        non_ev[i][k] = if l.is_finite() { (l - node.safe_current_a).max(0.0) } else { 0.0 };
                    }
                    safe_cap[i] = Some(node.safe_current_a);
                    let reason = match (state, reading) {
                        (MeterState::Stale, Some(r)) => FailSafeReason::MeterStale { last_ms: r.at_ms },
                        (MeterState::Invalid, _) => FailSafeReason::MeterInvalid,
                        _ => FailSafeReason::MeterMissing,
                    };
                    fail_safe.push(FailSafe { subject: Subject::Node(node.id.clone()), reason });
                }
            }
        } else {
            non_ev[i] = children_non_ev[i];
        }
        if let Some(p) = tree.parent(i) {
            for k in 0..3 {
                children_non_ev[p][k] += non_ev[i][k];
            }
        }
    }
    // Node fail-safes were pushed bottom-up; report them in tree order.
    fail_safe.reverse();
    let mut grid_fail_safe = Vec::new();
    let (ext_a, ext_w) = external_limits(input, &mut grid_fail_safe);

    let mut limit = vec![[f64::INFINITY; 3]; n];
    let mut power_limit = vec![f64::INFINITY; n];
    let mut room = vec![f64::INFINITY; n * RES_PER_NODE];
    for i in 0..n {
        let node = &nodes[i];
        let v = node.voltage_v;
        if let Some(l) = node.limit_a {
            limit[i] = l.map(limit_value);
        }
        power_limit[i] = min_opt(f64::INFINITY, node.power_limit_w.map(|w| w / v));
        if i == 0 {
            for k in 0..3 {
                limit[i][k] = limit[i][k].min(ext_a[k]);
            }
            power_limit[i] = power_limit[i].min(ext_w / v);
        }
        for (k, phase) in Phase::ALL.iter().enumerate() {
            let mut cap = limit[i][k] - non_ev[i][k];
            if let Some(safe) = safe_cap[i] {
                cap = cap.min(safe);
            }
            if cap.is_finite() {
                let r = cap - reserved_below[i][k];
                if r < -EPS {
                    warnings.push(Warning::Overload {
                        node: node.id.clone(),
                        phase: Some(*phase),
                        fixed_a: non_ev[i][k] + reserved_below[i][k],
                        limit_a: limit[i][k].min(non_ev[i][k] + safe_cap[i].unwrap_or(f64::INFINITY)),
                    });
                }
                room[i * RES_PER_NODE + k] = r.max(0.0);
            }
        }
        if power_limit[i].is_finite() {
            let fixed: f64 = (0..3).map(|k| non_ev[i][k] + reserved_below[i][k]).sum();
            let r = power_limit[i] - fixed;
            if r < -EPS {
                warnings.push(Warning::Overload {
                    node: node.id.clone(),
                    phase: None,
                    fixed_a: fixed,
                    limit_a: power_limit[i],
                });
            }
            room[i * RES_PER_NODE + 3] = r.max(0.0);
        }
    }
    fail_safe.extend(charger_fail_safe);
    fail_safe.extend(grid_fail_safe);
    Assessment { meter, non_ev, limit, power_limit, safe_cap, reserved, room, fail_safe, warnings }
}
