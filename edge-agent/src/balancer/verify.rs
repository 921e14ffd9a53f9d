//! The independent check of an allocation against every limit, run before it is applied.
//!
//! Deliberately written apart from [`super::balance`] and as plainly as possible: it
//! shares none of its code (not the room computation, not the filling), only the
//! definitions of the input. It recomputes, from the input alone, the non-EV load of
//! every node and the reservation of every charger that does not answer, adds the
//! setpoints on the site phases each session draws on, and checks every node's per-phase
//! and power limit, the external limits at the root, the safe current of every node whose
//! meter is not fresh, and every setpoint's own bounds. Any violation is a bug: the loop
//! logs it and refuses the allocation.
//!
//! A limit that the fixed load (non-EV load and reservations) already exceeds is only a
//! violation if the allocation adds a controlled current on it: pausing is all it can do.

use super::allocation::{Allocation, MeterState};
use super::model::{BalancerInput, ChargerId, Link, NodeId, Phase};

/// Slack for float rounding (A): absolute, plus relative to the sum being checked (a sum
/// of n floats carries an error of about n * 1e-16 of its size).
const TOLERANCE_A: f64 = 1e-6;

fn over(value: f64, limit: f64) -> bool {
    value > limit + TOLERANCE_A + 1e-9 * value.abs()
}

/// One way an allocation breaks a limit or a bound.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Violation {
    #[error("allocation has {got} setpoints for {expected} chargers, or not in site order")]
    Shape { expected: usize, got: usize },
    #[error("charger {charger}: setpoint {current_a} A is not a finite number >= 0")]
    NotFinite { charger: ChargerId, current_a: f64 },
    #[error("charger {charger}: setpoint {current_a} A is neither 0 nor within [{min_a}, {max_a}] A")]
    OutOfBounds { charger: ChargerId, current_a: f64, min_a: f64, max_a: f64 },
    #[error("charger {charger}: {current_a} A without a session, or while marked paused")]
    CurrentWithoutSession { charger: ChargerId, current_a: f64 },
    #[error("node {node} {phase}: predicted {predicted_a:.3} A above its limit {limit_a:.3} A")]
    NodeCurrent { node: NodeId, phase: Phase, predicted_a: f64, limit_a: f64 },
    #[error("node {node}: predicted {predicted_w:.0} W above its power limit {limit_w:.0} W")]
    NodePower { node: NodeId, predicted_w: f64, limit_w: f64 },
    #[error("grid connection {phase}: predicted {predicted_a:.3} A above the import limit {limit_a:.3} A")]
    ImportCurrent { phase: Phase, predicted_a: f64, limit_a: f64 },
    #[error("grid connection: predicted {predicted_w:.0} W above the import limit {limit_w:.0} W")]
    ImportPower { predicted_w: f64, limit_w: f64 },
    #[error("node {node} {phase}: EVs get {ev_a:.3} A while its meter is not fresh; safe current is {safe_a:.3} A")]
    StaleMeterCap { node: NodeId, phase: Phase, ev_a: f64, safe_a: f64 },
}

fn not_negative_finite(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 { v } else { 0.0 }
}

/// Checks `allocation` against every limit of `input`.
pub fn verify(allocation: &Allocation, input: &BalancerInput<'_>) -> Result<(), Vec<Violation>> {
    let site = input.site;
    let chargers = site.chargers();
    let tree = site.tree();
    let nodes = tree.nodes();
    let now = input.now_ms;
    let cfg = input.config;
    let setpoints = &allocation.setpoints;
    if setpoints.len() != chargers.len()
        || input.states.len() != chargers.len()
        || setpoints.iter().zip(chargers).any(|(s, c)| s.charger != c.id)
    {
        return Err(vec![Violation::Shape { expected: chargers.len(), got: setpoints.len() }]);
    }
    let mut violations = Vec::new();
    // The previous setpoint of charger `i`: at the same position, else found by id.
    let previous = |i: usize, id: &ChargerId| -> Option<f64> {
        let p = input.previous?;
        match p.setpoints.get(i) {
            Some(s) if &s.charger == id => Some(s.current_a),
            _ => p.setpoints.iter().find(|s| &s.charger == id).map(|s| s.current_a),
        }
    };

    // Per node and site phase: EV current (setpoints, reservations), EV draws measured, and
    // whether a controlled setpoint above 0 is counted there.
    let mut ev = vec![[0.0f64; 3]; nodes.len()];
    let mut measured = vec![[0.0f64; 3]; nodes.len()];
    let mut controlled = vec![[false; 3]; nodes.len()];
    // Nodes with an answering charger below whose draw is still settling.
    let mut settling = vec![false; nodes.len()];
    let mut measured_settling = vec![[0.0f64; 3]; nodes.len()];
    for (i, ((charger, state), sp)) in chargers.iter().zip(input.states).zip(setpoints).enumerate() {
        let mut current = sp.current_a;
        if !current.is_finite() || current < 0.0 {
            violations.push(Violation::NotFinite { charger: charger.id.clone(), current_a: current });
            current = charger.max_current_a;
        }
        let mut phases = charger.wiring.site_phases(None);
        let mut is_controlled = false;
        // What the charger may draw on each of its phases, as far as the input says.
        let mut count_measured = true;
        match state.link {
            Link::NotAnswering { last_limit_a, limit_valid_until_ms, safe_current_a, .. } => {
                let max = charger.max_current_a;
                let required = if now < limit_valid_until_ms {
                    match last_limit_a.or(previous(i, &charger.id)) {
                        Some(a) if a.is_finite() => a,
                        _ => max,
                    }
                } else if safe_current_a.is_finite() {
                    safe_current_a
                } else {
                    max
                };
                let required = required.clamp(0.0, max);
                current = current.max(required);
                // Its real draw is unknown: none of its last measurement is subtracted.
                count_measured = false;
            }
            Link::Answering => match state.session {
                None => {
                    if current > 0.0 {
                        violations
                            .push(Violation::CurrentWithoutSession { charger: charger.id.clone(), current_a: current });
                        is_controlled = true;
                    }
                }
                Some(session) => {
                    phases = charger.wiring.site_phases(session.ev_phases);
                    let floor = charger.min_current_a.max(not_negative_finite(cfg.pause_below_a));
                    if current > 0.0 {
                        is_controlled = true;
                        if sp.paused {
                            violations.push(Violation::CurrentWithoutSession {
                                charger: charger.id.clone(),
                                current_a: current,
                            });
                        }
                        if current < floor - TOLERANCE_A || current > charger.max_current_a + TOLERANCE_A {
                            violations.push(Violation::OutOfBounds {
                                charger: charger.id.clone(),
                                current_a: current,
                                min_a: floor,
                                max_a: charger.max_current_a,
                            });
                        }
                    }
                }
            },
        }
        let node = site.charger_node(i);
        if state.settling && count_measured {
            let mut n = Some(node);
            while let Some(at) = n {
                settling[at] = true;
                n = tree.parent(at);
            }
        }
        for cp in 0..3 {
            let Some(p) = charger.wiring.site_phase(cp) else { continue };
            let draw = if count_measured { not_negative_finite(state.measured_a[cp]) } else { 0.0 };
            let k = p.index();
            let mut n = Some(node);
            while let Some(at) = n {
                measured[at][k] += draw;
                if state.settling {
                    measured_settling[at][k] += draw;
                }
                if phases[k] {
                    ev[at][k] += current;
                    controlled[at][k] |= is_controlled;
                }
                n = tree.parent(at);
            }
        }
    }

    // Non-EV load, children before parents (pre-order reversed).
    let mut non_ev = vec![[0.0f64; 3]; nodes.len()];
    let mut stale_safe: Vec<Option<f64>> = vec![None; nodes.len()];
    for i in (0..nodes.len()).rev() {
        let node = &nodes[i];
        if node.metered {
            let reading = input.measurements.meters.get(&node.id);
            let fresh = reading.filter(|r| {
                !r.stale
                    && r.current_a.iter().all(|v| v.is_finite())
                    && now.saturating_sub(r.at_ms) <= cfg.stale_after_ms
            });
            match fresh {
                Some(r) => {
                    // No newer reading than the previous run had, or a charger below is
                    // settling: keep its non-EV load if larger (the EV draws may be newer
                    // than the reading, or in transition).
                    let held = input
                        .previous
                        .filter(|p| settling[i] || r.at_ms <= p.computed_at_ms)
                        .and_then(|p| p.nodes.iter().find(|u| u.node == node.id && u.meter == MeterState::Fresh))
                        .map(|u| u.non_ev_a.map(not_negative_finite));
                    // Settling with nothing to hold: none of the settling draws is subtracted.
                    let subtract = |k: usize| match (settling[i], held) {
                        (true, None) => measured[i][k] - measured_settling[i][k],
                        _ => measured[i][k],
                    };
                    let held = held.unwrap_or([0.0; 3]);
                    for k in 0..3 {
                        non_ev[i][k] = (r.current_a[k] - subtract(k)).max(held[k]);
                    }
                }
                None => {
                    stale_safe[i] = Some(node.safe_current_a);
                    for k in 0..3 {
                        non_ev[i][k] = match node.limit_a {
                            Some(l) => (l[k] - node.safe_current_a).max(0.0),
                            None => 0.0,
                        };
                    }
                }
            }
        } else {
            for j in i + 1..tree.subtree_end(i) {
                if tree.parent(j) == Some(i) {
                    let child = non_ev[j];
                    for (sum, c) in non_ev[i].iter_mut().zip(child) {
                        *sum += c;
                    }
                }
            }
        }
    }

    // External limits at the root.
    let ext = input.external;
    let expired = ext.valid_until_ms.is_some_and(|t| now >= t);
    let (import_a, import_w) = if expired {
        (ext.safe_import_limit_a.or(ext.import_limit_a), ext.safe_import_limit_w.or(ext.import_limit_w))
    } else {
        (ext.import_limit_a, ext.import_limit_w)
    };
    let mut root_a: Vec<[f64; 3]> = import_a.into_iter().map(|l| l.map(not_negative_finite)).collect();
    let mut root_w: Vec<f64> = import_w.into_iter().map(not_negative_finite).collect();
    for period in ext.schedule.iter().filter(|s| s.start_ms <= now && now < s.end_ms) {
        root_a.extend(period.limit_a.map(|a| [not_negative_finite(a); 3]));
        root_w.extend(period.limit_w.map(not_negative_finite));
    }

    for (i, node) in nodes.iter().enumerate() {
        let predicted = [0, 1, 2].map(|k| non_ev[i][k] + ev[i][k]);
        let any_controlled = controlled[i].iter().any(|&c| c);
        for (k, phase) in Phase::ALL.into_iter().enumerate() {
            if !controlled[i][k] {
                continue;
            }
            if let Some(l) = node.limit_a
                && over(predicted[k], l[k])
            {
                violations.push(Violation::NodeCurrent {
                    node: node.id.clone(),
                    phase,
                    predicted_a: predicted[k],
                    limit_a: l[k],
                });
            }
            if let Some(safe) = stale_safe[i]
                && over(ev[i][k], safe)
            {
                violations.push(Violation::StaleMeterCap {
                    node: node.id.clone(),
                    phase,
                    ev_a: ev[i][k],
                    safe_a: safe,
                });
            }
            if i == 0 {
                for l in &root_a {
                    if over(predicted[k], l[k]) {
                        violations.push(Violation::ImportCurrent { phase, predicted_a: predicted[k], limit_a: l[k] });
                    }
                }
            }
        }
        if !any_controlled {
            continue;
        }
        let v = node.voltage_v;
        let predicted_w = predicted.iter().sum::<f64>() * v;
        if let Some(limit_w) = node.power_limit_w
            && over(predicted_w / v, limit_w / v)
        {
            violations.push(Violation::NodePower { node: node.id.clone(), predicted_w, limit_w });
        }
        if i == 0 {
            for &limit_w in &root_w {
                if over(predicted_w / v, limit_w / v) {
                    violations.push(Violation::ImportPower { predicted_w, limit_w });
                }
            }
        }
    }
    if violations.is_empty() { Ok(()) } else { Err(violations) }
}
