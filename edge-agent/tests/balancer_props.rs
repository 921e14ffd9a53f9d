//! Property tests of the balancer's invariants over random sites: trees up to depth 4 with
//! random per-phase and power limits, meters fresh, stale, missing or reporting NaN,
//! building loads (also above the limits), 1-, 2- and 3-phase chargers with random phase
//! rotation, 1-phase cars on 3-phase chargers, random demands and priorities, chargers
//! that stop answering, external limits (expired or not) and every fairness mode.
#![allow(clippy::unwrap_used)]

use edge_agent::balancer::{
    Allocation, BalancerConfig, BalancerInput, ChargerPoint, ChargerState, ExternalLimits, Fairness, Limiter, Link,
    Measurements, MeterReading, Node, Phase, Reason, SchedulePeriod, Session, Site, Wiring, balance, verify,
};
use proptest::prelude::*;

const NOW: u64 = 1_000_000;
const STALE_MS: u64 = 10_000;

#[derive(Debug, Clone)]
struct NodeSpec {
    parent: usize,
    limit: Option<[f64; 3]>,
    power_w: Option<f64>,
    /// 0 unmetered, 1 fresh, 2 stale, 3 missing, 4 NaN reading
    meter: u8,
    safe: f64,
    load: [f64; 3],
}

#[derive(Debug, Clone)]
struct ChargerSpec {
    node: usize,
    wiring: u8,
    min: f64,
    extra_max: f64,
    priority: u8,
    session: Option<(u64, Option<f64>, Option<u8>)>,
    measured: [f64; 3],
    /// 0 answering, 1 lost with a valid last limit, 2 lost after it expired
    link: u8,
    last_limit: Option<f64>,
}

#[derive(Debug, Clone)]
struct Spec {
    nodes: Vec<NodeSpec>,
    chargers: Vec<ChargerSpec>,
    external: ExternalLimits,
    config: BalancerConfig,
}

fn node_spec() -> impl Strategy<Value = NodeSpec> {
    (
        any::<usize>(),
        prop::option::weighted(
            0.8,
            prop_oneof![
                3 => (32.0f64..125.0).prop_map(|a| [a; 3]),
                1 => prop::array::uniform3(prop_oneof![8 => 32.0f64..125.0, 2 => 16.0f64..32.0, 1 => 0.0f64..16.0]),
            ],
        ),
        prop::option::weighted(0.3, prop_oneof![6 => 5_000.0f64..80_000.0, 1 => 0.0f64..5_000.0]),
        prop_oneof![3 => Just(0u8), 4 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8), 1 => Just(4u8)],
        prop_oneof![4 => 10.0f64..60.0, 1 => 0.0f64..10.0],
        prop::array::uniform3(prop_oneof![24 => 0.0f64..8.0, 1 => 15.0f64..150.0, 1 => -20.0f64..0.0]),
    )
        .prop_map(|(parent, limit, power_w, meter, safe, load)| NodeSpec {
            parent,
            limit,
            power_w,
            meter,
            safe,
            load,
        })
}

fn charger_spec() -> impl Strategy<Value = ChargerSpec> {
    (
        any::<usize>(),
        0u8..9,
        prop_oneof![3 => Just(6.0), 1 => 0.0f64..12.0],
        0.0f64..40.0,
        0u8..3,
        prop::option::weighted(
            0.85,
            (
                0u64..NOW,
                prop::option::weighted(0.5, prop_oneof![4 => 0.0f64..40.0, 1 => Just(f64::NAN)]),
                prop::option::weighted(0.3, 1u8..4),
            ),
        ),
        prop::array::uniform3(prop_oneof![8 => 0.0f64..20.0, 1 => Just(f64::NAN)]),
        prop_oneof![16 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
        prop::option::of(prop_oneof![4 => 0.0f64..40.0, 1 => Just(f64::NAN)]),
    )
        .prop_map(|(node, wiring, min, extra_max, priority, session, measured, link, last_limit)| ChargerSpec {
            node,
            wiring,
            min,
            extra_max,
            priority,
            session,
            measured,
            link,
            last_limit,
        })
}

fn limit_value() -> impl Strategy<Value = f64> {
    prop_oneof![8 => 5_000.0f64..60_000.0, 1 => 0.0f64..5_000.0, 1 => Just(f64::NAN), 1 => Just(-5.0), 1 => Just(f64::INFINITY)]
}

fn external() -> impl Strategy<Value = ExternalLimits> {
    (
        prop::option::weighted(0.2, limit_value()),
        prop::option::weighted(0.1, prop::array::uniform3(0.0f64..100.0)),
        prop::option::of(prop_oneof![Just(NOW - 1), Just(NOW), Just(NOW + 1)]),
        prop::option::weighted(0.5, 0.0f64..60_000.0),
        prop::option::weighted(0.2, (0.0f64..60_000.0, prop::option::of(0.0f64..60.0))),
    )
        .prop_map(|(import_w, import_a, valid_until, safe_w, schedule)| ExternalLimits {
            import_limit_w: import_w,
            import_limit_a: import_a,
            export_limit_w: None,
            valid_until_ms: valid_until,
            safe_import_limit_w: safe_w,
            safe_import_limit_a: None,
            schedule: schedule
                .map(|(w, a)| SchedulePeriod { start_ms: NOW - 10, end_ms: NOW + 10, limit_w: Some(w), limit_a: a })
                .into_iter()
                .collect(),
        })
}

fn config() -> impl Strategy<Value = BalancerConfig> {
    (
        prop_oneof![Just(Fairness::Equal), Just(Fairness::Priority), Just(Fairness::MaxMin)],
        prop_oneof![3 => Just(6.0), 1 => 0.0f64..10.0],
        prop_oneof![Just(0.0), Just(1.0), 0.0f64..3.0],
        prop_oneof![Just(0u64), Just(60_000u64)],
        prop_oneof![Just(0u64), Just(60_000u64)],
        prop_oneof![Just(0.0), Just(0.1), Just(1.0)],
    )
        .prop_map(|(fairness, pause_below_a, resume_hysteresis_a, min_pause_ms, min_run_ms, resolution_a)| {
            BalancerConfig {
                fairness,
                pause_below_a,
                resume_hysteresis_a,
                min_pause_ms,
                min_run_ms,
                stale_after_ms: STALE_MS,
                resolution_a,
            }
        })
}

fn spec() -> impl Strategy<Value = Spec> {
    (prop::collection::vec(node_spec(), 1..8), prop::collection::vec(charger_spec(), 0..14), external(), config())
        .prop_map(|(nodes, chargers, external, config)| Spec { nodes, chargers, external, config })
}

fn wiring(choice: u8) -> Wiring {
    use Phase::*;
    let phases: &[Phase] = match choice {
        0 => &[L1, L2, L3],
        1 => &[L2, L3, L1],
        2 => &[L3, L1, L2],
        3 => &[L1],
        4 => &[L2],
        5 => &[L3],
        6 => &[L1, L3],
        7 => &[L3, L2, L1],
        _ => &[L2, L1],
    };
    Wiring::try_new(phases).unwrap()
}

/// A built random site and the inputs of one run.
struct World {
    site: Site,
    states: Vec<ChargerState>,
    measurements: Measurements,
    external: ExternalLimits,
    config: BalancerConfig,
    /// Per node (tree order): the building load attached there.
    load: Vec<[f64; 3]>,
}

impl World {
    fn input<'a>(&'a self, previous: Option<&'a Allocation>) -> BalancerInput<'a> {
        BalancerInput {
            site: &self.site,
            states: &self.states,
            measurements: &self.measurements,
            external: &self.external,
            previous,
            now_ms: NOW,
            config: &self.config,
        }
    }
}

fn build(spec: &Spec) -> World {
    // Depth <= 4: node i hangs on an earlier node of depth <= 2 (the root has depth 0).
    let mut depth = vec![0usize; spec.nodes.len()];
    let mut nodes = Vec::new();
    for (i, n) in spec.nodes.iter().enumerate() {
        let parent = if i == 0 {
            None
        } else {
            let mut p = n.parent % i;
            while depth[p] > 2 {
                p = n.parent % (p.max(1));
            }
            depth[i] = depth[p] + 1;
            Some(format!("n{p}").parse().unwrap())
        };
        nodes.push(Node {
            id: format!("n{i}").parse().unwrap(),
            parent,
            limit_a: n.limit,
            power_limit_w: n.power_w,
            metered: n.meter != 0,
            safe_current_a: n.safe,
            voltage_v: 230.0,
        });
    }
    let chargers: Vec<ChargerPoint> = spec
        .chargers
        .iter()
        .enumerate()
        .map(|(i, c)| ChargerPoint {
            id: format!("c{i}").parse().unwrap(),
            node: format!("n{}", c.node % spec.nodes.len()).parse().unwrap(),
            wiring: wiring(c.wiring),
            min_current_a: c.min,
            max_current_a: c.min + c.extra_max + 0.5,
            voltage_v: 230.0,
            priority: c.priority,
        })
        .collect();
    let site = Site::try_from_parts(nodes, chargers).unwrap();
    let states: Vec<ChargerState> = spec
        .chargers
        .iter()
        .map(|c| ChargerState {
            session: c.session.map(|(started_ms, demand_a, ev_phases)| Session { started_ms, demand_a, ev_phases }),
            measured_a: c.measured,
            // Drawn from the generated input: about half the chargers are settling.
            settling: c.measured[0] > c.measured[1],
            link: match c.link {
                0 => Link::Answering,
                1 => Link::NotAnswering {
                    since_ms: NOW - 5_000,
                    last_limit_a: c.last_limit,
                    limit_valid_until_ms: NOW + 5_000,
                    safe_current_a: 6.0,
                },
                _ => Link::NotAnswering {
                    since_ms: NOW - 50_000,
                    last_limit_a: c.last_limit,
                    limit_valid_until_ms: NOW - 1,
                    safe_current_a: 10.0,
                },
            },
        })
        .collect();
    // Loads by tree position; meters read the loads and EV draws below them.
    let tree = site.tree();
    let spec_index = |id: &str| id[1..].parse::<usize>().unwrap();
    let load: Vec<[f64; 3]> = tree.nodes().iter().map(|n| spec.nodes[spec_index(n.id.as_str())].load).collect();
    let mut draws = vec![[0.0f64; 3]; tree.nodes().len()];
    for (i, (c, s)) in site.chargers().iter().zip(&states).enumerate() {
        for cp in 0..3 {
            if let (Some(p), true) = (c.wiring.site_phase(cp), s.measured_a[cp].is_finite()) {
                for at in tree.path(site.charger_node(i)) {
                    draws[at][p.index()] += s.measured_a[cp];
                }
            }
        }
    }
    let mut measurements = Measurements::default();
    for (i, n) in tree.nodes().iter().enumerate() {
        let mut reading = draws[i];
        for l in &load[i..tree.subtree_end(i)] {
            for k in 0..3 {
                reading[k] += l[k];
            }
        }
        let at_ms = match spec.nodes[spec_index(n.id.as_str())].meter {
            0 | 3 => continue,
            2 => NOW - STALE_MS - 1,
            4 => {
                reading[1] = f64::NAN;
                NOW
            }
            _ => NOW,
        };
        measurements.meters.insert(n.id.clone(), MeterReading { current_a: reading, at_ms, stale: at_ms % 5 == 0 });
    }
    World { site, states, measurements, external: spec.external.clone(), config: spec.config, load }
}

fn floor(w: &World, i: usize) -> f64 {
    let c = &w.site.chargers()[i];
    c.min_current_a.max(w.config.pause_below_a.max(0.0))
}

/// Whether two allocations have the same setpoints (within 1e-6 A: re-running may add the
/// same floors in another order, which can change the last bits of a float) and pauses.
fn same_setpoints(a: &Allocation, b: &Allocation) -> bool {
    a.setpoints.len() == b.setpoints.len()
        && a.setpoints
            .iter()
            .zip(&b.setpoints)
            .all(|(x, y)| (x.current_a - y.current_a).abs() < 1e-6 && x.paused == y.paused)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    /// (1) verify passes; (2) a node's predicted current stays within its limits whenever
    /// the fixed load alone does, else nothing controlled is added there; (3) setpoints
    /// are 0 or within [floor, max]; (4) nothing is NaN or negative; the non-EV load of a
    /// fresh meter is never under-estimated.
    #[test]
    fn balancer_output_respects_every_limit(spec in spec()) {
        let w = build(&spec);
        let input = w.input(None);
        let a = balance(&input).unwrap();
        if let Err(v) = verify(&a, &input) {
            prop_assert!(false, "verify refused: {v:?}");
        }
        let tree = w.site.tree();
        prop_assert_eq!(a.setpoints.len(), w.site.chargers().len());
        prop_assert_eq!(a.nodes.len(), tree.nodes().len());

        // (3), (4)
        for (i, sp) in a.setpoints.iter().enumerate() {
            let c = &w.site.chargers()[i];
            prop_assert!(sp.current_a.is_finite() && sp.current_a >= 0.0, "{sp:?}");
            prop_assert!(sp.current_a <= c.max_current_a + 1e-9, "{sp:?}");
            match &sp.reason {
                Reason::Reserved(_) => {}
                Reason::Idle => prop_assert_eq!(sp.current_a, 0.0),
                Reason::Paused { .. } => prop_assert!(sp.paused && sp.current_a == 0.0),
                Reason::Running { .. } => {
                    prop_assert!(!sp.paused);
                    prop_assert!(sp.current_a >= floor(&w, i) - 1e-9, "{sp:?} below floor {}", floor(&w, i));
                }
            }
        }

        // (2) from the setpoints alone.
        let mut ev = vec![[0.0f64; 3]; tree.nodes().len()];
        let mut fixed_ev = vec![[0.0f64; 3]; tree.nodes().len()];
        let mut controlled = vec![[false; 3]; tree.nodes().len()];
        for (i, sp) in a.setpoints.iter().enumerate() {
            for at in tree.path(w.site.charger_node(i)) {
                for (k, cur) in sp.site_currents().iter().enumerate() {
                    ev[at][k] += cur;
                    if sp.is_controlled() {
                        controlled[at][k] |= *cur > 0.0;
                    } else {
                        fixed_ev[at][k] += cur;
                    }
                }
            }
        }
        for (i, (node, usage)) in tree.nodes().iter().zip(&a.nodes).enumerate() {
            for k in 0..3 {
                prop_assert!(usage.non_ev_a[k].is_finite() && usage.non_ev_a[k] >= 0.0);
                prop_assert!((usage.predicted_a[k] - usage.non_ev_a[k] - ev[i][k]).abs() < 1e-6);
                if let Some(limit) = node.limit_a {
                    let fixed = usage.non_ev_a[k] + fixed_ev[i][k];
                    if fixed <= limit[k] {
                        prop_assert!(usage.predicted_a[k] <= limit[k] + 1e-6,
                            "{} L{}: {} > {}", node.id, k + 1, usage.predicted_a[k], limit[k]);
                    } else {
                        prop_assert!(!controlled[i][k], "{} L{} overloaded by fixed load, yet a session draws", node.id, k + 1);
                    }
                }
            }
            if let Some(p) = node.power_limit_w {
                let fixed: f64 = (0..3).map(|k| usage.non_ev_a[k] + fixed_ev[i][k]).sum::<f64>() * node.voltage_v;
                if fixed <= p {
                    prop_assert!(usage.predicted_w <= p + 1e-3, "{} {} W > {} W", node.id, usage.predicted_w, p);
                } else {
                    prop_assert!(!controlled[i].iter().any(|&c| c));
                }
            }
            // A fresh meter's non-EV load covers the building load below it.
            if usage.meter == edge_agent::balancer::MeterState::Fresh {
                for k in 0..3 {
                    let load: f64 = w.load[i..tree.subtree_end(i)].iter().map(|l| l[k]).sum();
                    prop_assert!(usage.non_ev_a[k] >= load - 1e-6, "{} L{}: non-EV {} < load {}", node.id, k + 1, usage.non_ev_a[k], load);
                }
            }
        }
    }

    /// (5) Equal (and Priority within a class): sessions stopped by the same bottleneck and
    /// above their floors get the same current; MaxMin: the same power.
    #[test]
    fn balancer_same_bottleneck_same_share(spec in spec()) {
        let w = build(&spec);
        let a = balance(&w.input(None)).unwrap();
        let res = w.config.resolution_a;
        let rising: Vec<(usize, &Limiter, f64, usize)> = a
            .setpoints
            .iter()
            .enumerate()
            .filter_map(|(i, sp)| match &sp.reason {
                Reason::Running { limited_by: l @ Limiter::Node { .. } } if sp.current_a > floor(&w, i) + res + 1e-6 => {
                    Some((i, l, sp.current_a, sp.phases.iter().filter(|&&p| p).count()))
                }
                _ => None,
            })
            .collect();
        for (x, (i, li, ai, ni)) in rising.iter().enumerate() {
            for (j, lj, aj, nj) in &rising[x + 1..] {
                let ci = &w.site.chargers()[*i];
                let cj = &w.site.chargers()[*j];
                if li != lj || (w.config.fairness == Fairness::Priority && ci.priority != cj.priority) {
                    continue;
                }
                if w.config.fairness == Fairness::MaxMin {
                    let (pi, pj) = (ai * *ni as f64, aj * *nj as f64);
                    prop_assert!((pi - pj).abs() <= 0.01 + 3.0 * res, "{ci:?} {ai} x {ni} vs {cj:?} {aj} x {nj}");
                } else {
                    prop_assert!((ai - aj).abs() <= 0.01, "{} {ai} vs {} {aj} behind {li:?}", ci.id, cj.id);
                }
            }
        }
    }

    /// (6) The same input gives the same output.
    #[test]
    fn balancer_is_deterministic(spec in spec()) {
        let w = build(&spec);
        let a = balance(&w.input(None)).unwrap();
        let b = balance(&w.input(None)).unwrap();
        prop_assert_eq!(&a, &b);
        let a2 = balance(&w.input(Some(&a))).unwrap();
        let b2 = balance(&w.input(Some(&b))).unwrap();
        prop_assert_eq!(a2, b2);
    }

    /// (7) Re-running with the previous allocation and unchanged inputs changes nothing,
    /// and the result still passes verify.
    #[test]
    fn balancer_is_stable_with_previous(spec in spec()) {
        let w = build(&spec);
        let first = balance(&w.input(None)).unwrap();
        let second = balance(&w.input(Some(&first))).unwrap();
        prop_assert!(same_setpoints(&first, &second), "{:?}\n{:?}", first.setpoints, second.setpoints);
        let input = w.input(Some(&second));
        let third = balance(&input).unwrap();
        prop_assert!(same_setpoints(&second, &third), "{:?}\n{:?}", second.setpoints, third.setpoints);
        prop_assert!(verify(&third, &input).is_ok());
    }
}
