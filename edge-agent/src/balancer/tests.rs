#![allow(clippy::unwrap_used)]

use super::*;

const NOW: u64 = 1_000_000;

fn nid(s: &str) -> NodeId {
    s.parse().unwrap()
}

fn cid(s: &str) -> ChargerId {
    s.parse().unwrap()
}

fn session(started_ms: u64) -> ChargerState {
    ChargerState { session: Some(Session { started_ms, demand_a: None, ev_phases: None }), ..Default::default() }
}

/// One run's inputs, owned.
struct Case {
    site: Site,
    states: Vec<ChargerState>,
    measurements: Measurements,
    external: ExternalLimits,
    config: BalancerConfig,
}

impl Case {
    fn new(nodes: Vec<Node>, chargers: Vec<ChargerPoint>) -> Case {
        let states = chargers.iter().map(|_| session(0)).collect();
        Case {
            site: Site::try_from_parts(nodes, chargers).unwrap(),
            states,
            measurements: Measurements::default(),
            external: ExternalLimits::default(),
            config: BalancerConfig::default(),
        }
    }

    /// A fresh reading at `node`.
    fn meter(mut self, node: &str, a: [f64; 3]) -> Case {
        self.measurements.meters.insert(nid(node), MeterReading { current_a: a, at_ms: NOW, stale: false });
        self
    }

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

    fn run(&self) -> Allocation {
        let a = balance(&self.input(None)).unwrap();
        assert_eq!(verify(&a, &self.input(None)), Ok(()));
        a
    }

    fn currents(&self) -> Vec<f64> {
        self.run().setpoints.iter().map(|s| s.current_a).collect()
    }
}

fn three(id: &str, node: &str, max: f64) -> ChargerPoint {
    ChargerPoint::new(cid(id), nid(node), Wiring::THREE_PHASE, max)
}

fn one(id: &str, node: &str, phase: Phase, max: f64) -> ChargerPoint {
    ChargerPoint::new(cid(id), nid(node), Wiring::single(phase), max)
}

/// grid (limit) -> a (limit_a), b (limit_b), two 3-phase chargers on a, one on b.
fn two_boards(grid: f64, limit_a: f64, limit_b: f64) -> Case {
    Case::new(
        vec![
            Node::new(nid("grid"), None).with_limit_a(grid),
            Node::new(nid("a"), Some(nid("grid"))).with_limit_a(limit_a),
            Node::new(nid("b"), Some(nid("grid"))).with_limit_a(limit_b),
        ],
        vec![three("a1", "a", 32.0), three("a2", "a", 32.0), three("b1", "b", 32.0)],
    )
}

#[test]
fn a_full_sub_board_leaves_the_rest_of_the_grid_to_the_others() {
    // Board a (20 A) holds its two sessions at 10 A; b1 gets 50 - 20 = 30 A.
    assert_eq!(two_boards(50.0, 20.0, 40.0).currents(), [10.0, 10.0, 30.0]);
    // The grid binds first: 3 x 13.3 A; board a is not full, so nobody gets more.
    assert_eq!(two_boards(40.0, 32.0, 40.0).currents(), [13.3, 13.3, 13.3]);
}

#[test]
fn one_phase_car_only_uses_its_phase() {
    // L1 has 10 A left; a 3-phase car would be paused, the 1-phase car on L2 is not.
    let c = Case::new(
        vec![Node::new(nid("grid"), None).with_limit_a(32.0).with_meter(10.0)],
        vec![three("t", "grid", 32.0), one("o", "grid", Phase::L2, 16.0)],
    )
    .meter("grid", [27.0, 0.0, 0.0]);
    let a = c.run();
    assert_eq!(a.setpoints[0].current_a, 0.0);
    assert!(a.setpoints[0].paused);
    assert_eq!(
        a.setpoints[0].reason,
        Reason::Paused { why: PauseReason::NoCapacity { node: nid("grid"), phase: Some(Phase::L1) } }
    );
    assert_eq!(a.setpoints[1].current_a, 16.0);
    assert_eq!(a.setpoints[1].phases, [false, true, false]);
    assert_eq!(a.setpoints[1].reason, Reason::Running { limited_by: Limiter::ChargerMax });
}

#[test]
fn ev_phases_restrict_a_three_phase_charger_to_charger_phase_one() {
    let mut c = Case::new(
        vec![Node::new(nid("grid"), None).with_limit_a(16.0)],
        vec![ChargerPoint::new(
            cid("r"),
            nid("grid"),
            Wiring::try_new(&[Phase::L3, Phase::L1, Phase::L2]).unwrap(),
            32.0,
        )],
    );
    c.states[0].session = Some(Session { started_ms: 0, demand_a: None, ev_phases: Some(1) });
    let a = c.run();
    assert_eq!(a.setpoints[0].phases, [false, false, true]);
    assert_eq!(a.nodes[0].ev_a, [0.0, 0.0, 16.0]);
}

#[test]
fn fairness_modes_differ_on_a_shared_phase() {
    let nodes = || vec![Node::new(nid("grid"), None).with_limit_a(40.0)];
    let chargers = || vec![three("t", "grid", 32.0), one("o", "grid", Phase::L1, 32.0)];
    // Equal current: 20 A each on L1.
    assert_eq!(Case::new(nodes(), chargers()).currents(), [20.0, 20.0]);
    // Equal power: the 1-phase car gets 3 x the current: t/3 + t = 40 -> 10 A and 30 A.
    let mut c = Case::new(nodes(), chargers());
    c.config.fairness = Fairness::MaxMin;
    assert_eq!(c.currents(), [10.0, 30.0]);
    // Strict priority: the priority car takes its max, the other what is left.
    let mut c = Case::new(nodes(), vec![three("t", "grid", 32.0), one("o", "grid", Phase::L1, 32.0).with_priority(1)]);
    c.config.fairness = Fairness::Priority;
    assert_eq!(c.currents(), [8.0, 32.0]);
}

#[test]
fn the_oldest_sessions_keep_charging_when_not_all_floors_fit() {
    let mut c = Case::new(
        vec![Node::new(nid("grid"), None).with_limit_a(12.5)],
        vec![three("x", "grid", 32.0), three("y", "grid", 32.0)],
    );
    c.states[0] = session(500);
    c.states[1] = session(100);
    let a = c.run();
    assert_eq!(a.setpoints[0].current_a, 0.0);
    assert!(a.setpoints[0].paused);
    // 12.5 A would feed two floors, but a new session needs its floor + 1 A hysteresis.
    assert_eq!(a.setpoints[1].current_a, 12.5);
}

#[test]
fn site_floor_above_charger_max_pauses() {
    let mut c = Case::new(vec![Node::new(nid("grid"), None).with_limit_a(32.0)], vec![three("x", "grid", 8.0)]);
    c.config.pause_below_a = 10.0;
    let a = c.run();
    assert_eq!(a.setpoints[0].reason, Reason::Paused { why: PauseReason::FloorAboveMax });
}

#[test]
fn demand_below_the_floor_gets_the_floor() {
    let mut c = Case::new(vec![Node::new(nid("grid"), None).with_limit_a(32.0)], vec![three("x", "grid", 32.0)]);
    c.states[0].session = Some(Session { started_ms: 0, demand_a: Some(2.0), ev_phases: None });
    let a = c.run();
    assert_eq!(a.setpoints[0].current_a, 6.0);
    assert_eq!(a.setpoints[0].reason, Reason::Running { limited_by: Limiter::EvDemand });
}

#[test]
fn bad_numbers_are_read_safely() {
    let mut c = Case::new(
        vec![Node::new(nid("grid"), None).with_limit_a(32.0).with_meter(12.0)],
        vec![three("x", "grid", 32.0), three("y", "grid", 32.0)],
    )
    .meter("grid", [f64::NAN, 0.0, 0.0]);
    c.states[0].session = Some(Session { started_ms: 0, demand_a: Some(f64::NAN), ev_phases: None });
    c.states[1].measured_a = [f64::INFINITY, f64::NAN, -3.0];
    c.config.resolution_a = f64::NAN;
    c.config.resume_hysteresis_a = -4.0;
    let a = c.run();
    // NaN reading: the meter counts as failed, the EVs share its 12 A safe current.
    assert_eq!(a.nodes[0].meter, MeterState::Invalid);
    assert!(a.is_fail_safe("grid"));
    assert_eq!(a.setpoints[0].current_a, 6.0);
    assert_eq!(a.setpoints[1].current_a, 6.0);

    // A NaN or negative external limit is 0, never "unlimited" (OpenEMS #3894).
    for bad in [f64::NAN, -1.0, f64::INFINITY, f64::NEG_INFINITY] {
        let mut c = Case::new(vec![Node::new(nid("grid"), None).with_limit_a(32.0)], vec![three("x", "grid", 32.0)]);
        c.external.import_limit_w = Some(bad);
        assert_eq!(c.currents(), [0.0], "import limit {bad}");
    }
}

#[test]
fn state_count_must_match() {
    let mut c = Case::new(vec![Node::new(nid("grid"), None)], vec![three("x", "grid", 32.0)]);
    c.states.clear();
    assert_eq!(balance(&c.input(None)), Err(BalancerError::StateCount { expected: 1, got: 0 }));
}

#[test]
fn a_lost_charger_reserves_its_last_limit_then_its_safe_current() {
    let mut c = Case::new(
        vec![Node::new(nid("grid"), None).with_limit_a(32.0)],
        vec![three("x", "grid", 32.0), three("lost", "grid", 32.0)],
    );
    let before = c.run();
    assert_eq!(before.setpoints[1].current_a, 16.0);
    // Last limit unknown to the caller: the previous allocation's 16 A.
    c.states[1].link = Link::NotAnswering {
        since_ms: NOW - 1,
        last_limit_a: None,
        limit_valid_until_ms: NOW + 1,
        safe_current_a: 6.0,
    };
    let a = balance(&c.input(Some(&before))).unwrap();
    assert_eq!(a.setpoints[1].current_a, 16.0);
    assert_eq!(a.setpoints[1].reason, Reason::Reserved(Reservation::LastLimit { until_ms: NOW + 1 }));
    assert!(!a.setpoints[1].is_controlled());
    assert_eq!(a.setpoints[0].current_a, 16.0);
    assert!(a.is_fail_safe("lost"));
    // No previous allocation and no last limit: its max, the worst case.
    assert_eq!(balance(&c.input(None)).unwrap().setpoints[1].current_a, 32.0);
    // NaN last limit: its max too.
    c.states[1].link = Link::NotAnswering {
        since_ms: NOW - 1,
        last_limit_a: Some(f64::NAN),
        limit_valid_until_ms: NOW + 1,
        safe_current_a: 6.0,
    };
    assert_eq!(balance(&c.input(None)).unwrap().setpoints[1].current_a, 32.0);
    // Expired: its safe current.
    c.states[1].link = Link::NotAnswering {
        since_ms: NOW - 9,
        last_limit_a: Some(16.0),
        limit_valid_until_ms: NOW,
        safe_current_a: 6.0,
    };
    let a = balance(&c.input(None)).unwrap();
    assert_eq!(a.setpoints[1].current_a, 6.0);
    assert_eq!(a.setpoints[1].reason, Reason::Reserved(Reservation::SafeCurrent));
    assert_eq!(a.setpoints[0].current_a, 26.0);
}

#[test]
fn previous_is_found_by_id_when_the_charger_order_changes() {
    let mut c = Case::new(
        vec![Node::new(nid("grid"), None).with_limit_a(16.0)],
        vec![three("x", "grid", 32.0), three("y", "grid", 32.0), three("z", "grid", 32.0)],
    );
    c.states = vec![session(1), session(2), session(3)];
    let first = c.run();
    assert!(first.setpoints[2].paused);
    // The same site with the chargers listed in another order.
    let reordered = Case {
        site: Site::try_from_parts(
            c.site.tree().nodes().to_vec(),
            vec![three("z", "grid", 32.0), three("y", "grid", 32.0), three("x", "grid", 32.0)],
        )
        .unwrap(),
        states: vec![session(3), session(2), session(1)],
        measurements: Measurements::default(),
        external: ExternalLimits::default(),
        config: BalancerConfig::default(),
    };
    let second = balance(&reordered.input(Some(&first))).unwrap();
    let z = second.get(&cid("z")).unwrap();
    assert!(z.paused);
    assert_eq!(z.reason, Reason::Paused { why: PauseReason::NoCapacity { node: nid("grid"), phase: Some(Phase::L1) } });
    assert_eq!(z.since_ms, first.get(&cid("z")).unwrap().since_ms);
}

#[test]
fn without_a_new_reading_the_last_paired_non_ev_load_is_kept() {
    // The previous run paired the reading (19 A) with draws of 8 A: 11 A of other load.
    let mut c = Case::new(
        vec![Node::new(nid("grid"), None).with_limit_a(32.0).with_meter(10.0)],
        vec![three("x", "grid", 32.0)],
    )
    .meter("grid", [19.0; 3]);
    c.states[0].measured_a = [8.0; 3];
    let first = c.run();
    assert_eq!(first.nodes[0].non_ev_a, [11.0; 3]);
    assert_eq!(first.setpoints[0].current_a, 21.0);
    // Now the car draws 21 A, but the meter has not read again: still 11 A of other load.
    c.states[0].measured_a = [21.0; 3];
    let second = balance(&c.input(Some(&first))).unwrap();
    assert_eq!(second.nodes[0].non_ev_a, [11.0; 3]);
    assert_eq!(second.setpoints[0].current_a, 21.0);
    assert_eq!(verify(&second, &c.input(Some(&first))), Ok(()));
    // A newer reading is used as it is.
    c.measurements.meters.insert(nid("grid"), MeterReading { current_a: [24.0; 3], at_ms: NOW + 1, stale: false });
    let mut input = c.input(Some(&second));
    input.now_ms = NOW + 1;
    assert_eq!(balance(&input).unwrap().nodes[0].non_ev_a, [3.0; 3]);
}

#[test]
fn verify_catches_what_is_wrong() {
    let mut c = Case::new(
        vec![
            Node::new(nid("grid"), None).with_limit_a(40.0).with_power_limit_w(230.0 * 90.0),
            Node::new(nid("sub"), Some(nid("grid"))).with_limit_a(32.0).with_meter(30.0),
        ],
        vec![three("a", "sub", 32.0), three("b", "grid", 32.0), three("idle", "grid", 32.0)],
    );
    c.states[2].session = None;
    c.external.import_limit_a = Some([35.0; 3]);
    let ok = c.run();
    // Power binds at the grid: 90 A summed - 3 x 2 A assumed other load in the silent sub.
    assert_eq!(ok.setpoints[0].current_a, 14.0);
    assert_eq!(ok.setpoints[1].current_a, 14.0);
    let input = c.input(None);
    let tamper = |f: &dyn Fn(&mut Allocation)| {
        let mut a = ok.clone();
        f(&mut a);
        verify(&a, &input).unwrap_err()
    };
    // The sub-board's meter never reported: its EVs get at most its 30 A safe current.
    assert!(ok.is_fail_safe("sub"));
    let v = tamper(&|a| a.setpoints[0].current_a = 31.0);
    assert!(v.iter().any(|v| matches!(v, Violation::StaleMeterCap { .. })), "{v:?}");
    let v = tamper(&|a| a.setpoints[1].current_a = 30.0);
    assert!(v.iter().any(|v| matches!(v, Violation::NodeCurrent { .. })), "{v:?}");
    assert!(v.iter().any(|v| matches!(v, Violation::ImportCurrent { .. })), "{v:?}");
    assert!(v.iter().any(|v| matches!(v, Violation::NodePower { .. })), "{v:?}");
    let v = tamper(&|a| a.setpoints[1].current_a = 3.0);
    assert!(matches!(v[..], [Violation::OutOfBounds { .. }]), "{v:?}");
    let v = tamper(&|a| a.setpoints[2].current_a = 6.0);
    assert!(v.iter().any(|v| matches!(v, Violation::CurrentWithoutSession { .. })), "{v:?}");
    let v = tamper(&|a| a.setpoints[1].paused = true);
    assert!(matches!(v[..], [Violation::CurrentWithoutSession { .. }]), "{v:?}");
    let v = tamper(&|a| a.setpoints[1].current_a = f64::NAN);
    assert!(v.iter().any(|v| matches!(v, Violation::NotFinite { .. })), "{v:?}");
    let v = tamper(&|a| a.setpoints.swap(0, 1));
    assert!(matches!(v[..], [Violation::Shape { .. }]), "{v:?}");
    let v = tamper(&|a| {
        a.setpoints.pop();
    });
    assert!(matches!(v[..], [Violation::Shape { .. }]), "{v:?}");

    // Import power at the root.
    let mut c = Case::new(vec![Node::new(nid("grid"), None).with_limit_a(63.0)], vec![three("a", "grid", 32.0)]);
    c.external.import_limit_w = Some(230.0 * 3.0 * 10.0);
    let mut a = c.run();
    assert_eq!(a.setpoints[0].current_a, 10.0);
    a.setpoints[0].current_a = 11.0;
    let v = verify(&a, &c.input(None)).unwrap_err();
    assert!(matches!(v[..], [Violation::ImportPower { .. }]), "{v:?}");
}

#[test]
fn verify_counts_the_required_reservation_even_if_the_allocation_forgets_it() {
    let mut c = Case::new(
        vec![Node::new(nid("grid"), None).with_limit_a(32.0)],
        vec![three("x", "grid", 32.0), three("lost", "grid", 32.0)],
    );
    c.states[1].link = Link::NotAnswering {
        since_ms: 0,
        last_limit_a: Some(20.0),
        limit_valid_until_ms: NOW + 1,
        safe_current_a: 6.0,
    };
    let mut a = c.run();
    assert_eq!(a.setpoints[0].current_a, 12.0);
    a.setpoints[1].current_a = 0.0;
    a.setpoints[0].current_a = 20.0;
    assert!(verify(&a, &c.input(None)).is_err());
}

#[test]
fn fixed_load_above_a_limit_warns_and_pauses_everything_below() {
    let c = Case::new(
        vec![Node::new(nid("grid"), None).with_limit_a(32.0).with_meter(10.0)],
        vec![three("x", "grid", 32.0), one("y", "grid", Phase::L3, 32.0)],
    )
    .meter("grid", [40.0, 0.0, 0.0]);
    let a = c.run();
    assert_eq!(a.setpoints[0].current_a, 0.0);
    assert_eq!(a.setpoints[1].current_a, 32.0);
    assert_eq!(
        a.warnings,
        [Warning::Overload { node: nid("grid"), phase: Some(Phase::L1), fixed_a: 40.0, limit_a: 32.0 }]
    );
}

#[test]
fn expired_external_limits_fall_back_to_safe_values() {
    let mut c = Case::new(vec![Node::new(nid("grid"), None).with_limit_a(63.0)], vec![three("x", "grid", 32.0)]);
    c.external = ExternalLimits {
        import_limit_w: Some(230.0 * 3.0 * 20.0),
        valid_until_ms: Some(NOW + 1),
        safe_import_limit_w: Some(230.0 * 3.0 * 8.0),
        ..Default::default()
    };
    assert_eq!(c.currents(), [20.0]);
    c.external.valid_until_ms = Some(NOW);
    let a = c.run();
    assert_eq!(a.setpoints[0].current_a, 8.0);
    assert_eq!(a.fail_safe[0].subject, Subject::Grid);
    assert!(a.is_fail_safe("grid-operator"));
}

#[test]
fn allocation_serializes_for_the_api() {
    let c = two_boards(50.0, 20.0, 40.0);
    let a = c.run();
    let json = serde_json::to_string(&a).unwrap();
    assert!(json.contains(r#""charger":"a1""#), "{json}");
    let back: Allocation = serde_json::from_str(&json).unwrap();
    assert_eq!(back, a);
}

#[test]
fn large_sites_stay_within_limits() {
    // 2 000 chargers on 40 boards: the event-driven filling against a brute-force check.
    let mut nodes = vec![Node::new(nid("grid"), None).with_limit_a(1500.0).with_power_limit_w(230.0 * 3.0 * 1200.0)];
    let mut chargers = Vec::new();
    for b in 0..40 {
        nodes.push(Node::new(nid(&format!("b{b}")), Some(nid("grid"))).with_limit_a(40.0 + f64::from(b) * 3.0));
        for k in 0..50 {
            let id = format!("c{b}-{k}");
            let cp = if k % 3 == 0 {
                one(&id, &format!("b{b}"), Phase::ALL[k % 3], 32.0)
            } else {
                three(&id, &format!("b{b}"), 16.0 + f64::from(k as u8 % 3) * 8.0)
            };
            chargers.push(cp);
        }
    }
    let mut c = Case::new(nodes, chargers);
    for (i, s) in c.states.iter_mut().enumerate() {
        s.session = Some(Session { started_ms: i as u64, demand_a: None, ev_phases: None });
    }
    let a = c.run();
    let running = a.setpoints.iter().filter(|s| s.current_a > 0.0).count();
    assert!(running > 100, "{running}");
    for (n, u) in c.site.tree().nodes().iter().zip(&a.nodes) {
        for k in 0..3 {
            assert!(u.predicted_a[k] <= n.limit_a.unwrap()[k] + 1e-6, "{} {:?}", n.id, u.predicted_a);
        }
    }
}

#[test]
fn balance_verified_applies_only_checked_allocations() {
    let c = two_boards(50.0, 20.0, 40.0);
    let a = balance_verified(&c.input(None)).unwrap();
    assert_eq!(a, c.run());
    let mut short = Case::new(vec![Node::new(nid("grid"), None)], vec![three("x", "grid", 32.0)]);
    short.states.clear();
    assert!(matches!(balance_verified(&short.input(None)), Err(Refused::Input(_))));
    let v = Violation::NodeCurrent { node: nid("grid"), phase: Phase::L2, predicted_a: 33.0, limit_a: 32.0 };
    let refused = Refused::Violations(vec![v], Box::new(a));
    assert_eq!(
        refused.to_string(),
        "allocation refused, it breaks 1 limit(s): node grid L2: predicted 33.000 A above its limit 32.000 A"
    );
}
