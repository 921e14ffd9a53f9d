//! Compute time of one balancer run and one `verify` run, for sites of 10 to 10 000
//! chargers (grid connection -> sub-boards -> chargers; mixed 1- and 3-phase with phase
//! rotation, random demands and priorities, a few idle or lost chargers, half the
//! sub-boards metered). Target: one run for 10 000 chargers under 5 ms.
//!
//! Baseline measured in the same run: one pass over the chargers computing a naive equal
//! split of each sub-board's fuse (no phases, no tree, no minimum, no fail-safe): the
//! floor cost of touching every charger once.
//!
//! `cargo bench -p edge-agent --bench balancer` (release build). Prints a table; asserts
//! nothing about time.

use edge_agent::balancer::{
    Allocation, BalancerConfig, BalancerInput, ChargerPoint, ChargerState, ExternalLimits, Link, Measurements,
    MeterReading, Node, NodeId, Phase, Session, Site, Wiring, balance, verify,
};
use std::hint::black_box;
use std::time::{Duration, Instant};

const NOW: u64 = 10_000_000;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn float(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (self.next() >> 11) as f64 / (1u64 << 53) as f64 * (hi - lo)
    }
}

struct Bench {
    site: Site,
    states: Vec<ChargerState>,
    measurements: Measurements,
    external: ExternalLimits,
    config: BalancerConfig,
    board_limit: Vec<f64>,
}

fn id(s: String) -> NodeId {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

fn build(chargers: usize) -> Bench {
    let mut rng = Rng(0x5eed_0000 + chargers as u64);
    let boards = ((chargers as f64).sqrt().ceil() as usize).max(1);
    let per_board = chargers.div_ceil(boards);
    let grid = id("grid".into());
    // Sized so that most sessions charge (the filling has work to do) but the boards, the
    // grid fuse and the import cap all bind somewhere.
    let board_a = per_board as f64 * 7.0 + 32.0;
    let grid_a = boards as f64 * board_a * 0.7;
    let mut nodes = vec![Node::new(grid.clone(), None).with_limit_a(grid_a).with_meter(grid_a * 0.3)];
    let mut board_limit = Vec::new();
    for b in 0..boards {
        let mut n = Node::new(id(format!("board{b}")), Some(grid.clone())).with_limit_a(board_a);
        if b % 2 == 0 {
            n = n.with_meter(per_board as f64 * 2.0);
        }
        if b % 5 == 0 {
            n = n.with_power_limit_w(board_a * 3.0 * 230.0 * 0.6);
        }
        board_limit.push(n.limit_a.map_or(0.0, |l| l[0]));
        nodes.push(n);
    }
    let rotations = [
        Wiring::THREE_PHASE,
        Wiring::try_new(&[Phase::L2, Phase::L3, Phase::L1]).unwrap_or_default(),
        Wiring::try_new(&[Phase::L3, Phase::L1, Phase::L2]).unwrap_or_default(),
        Wiring::single(Phase::L1),
        Wiring::single(Phase::L2),
        Wiring::single(Phase::L3),
    ];
    let mut points = Vec::with_capacity(chargers);
    let mut states = Vec::with_capacity(chargers);
    for c in 0..chargers {
        let board = c / per_board;
        let wiring = rotations[rng.below(6) as usize];
        let max = if rng.below(2) == 0 { 16.0 } else { 32.0 };
        let charger = format!("cp{c}").parse().unwrap_or_else(|e| panic!("{e}"));
        points.push(
            ChargerPoint::new(charger, id(format!("board{board}")), wiring, max).with_priority(rng.below(3) as u8),
        );
        let session = (rng.below(10) != 0).then(|| Session {
            started_ms: rng.below(NOW),
            demand_a: (rng.below(3) == 0).then(|| rng.float(4.0, 32.0)),
            ev_phases: (rng.below(4) == 0).then_some(1),
        });
        let link = if rng.below(100) == 0 {
            Link::NotAnswering {
                since_ms: NOW - 3_000,
                last_limit_a: Some(10.0),
                limit_valid_until_ms: NOW + 20_000,
                safe_current_a: 6.0,
            }
        } else {
            Link::Answering
        };
        let draw = if session.is_some() { rng.float(0.0, 16.0) } else { 0.0 };
        states.push(ChargerState { session, measured_a: [draw; 3], link, settling: false });
    }
    let site = Site::try_from_parts(nodes, points).unwrap_or_else(|e| panic!("{e}"));
    let mut measurements = Measurements::default();
    for n in site.tree().nodes().iter().filter(|n| n.metered) {
        let load = rng.float(0.0, 30.0);
        measurements.meters.insert(n.id.clone(), MeterReading { current_a: [load; 3], at_ms: NOW - 500, stale: false });
    }
    let external = ExternalLimits { import_limit_w: Some(grid_a * 3.0 * 230.0 * 0.9), ..Default::default() };
    Bench { site, states, measurements, external, config: BalancerConfig::default(), board_limit }
}

impl Bench {
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

    /// Baseline: one pass, naive equal split of each board's fuse among its sessions.
    fn naive(&self) -> f64 {
        let mut count = vec![0u32; self.site.tree().nodes().len()];
        for (i, s) in self.states.iter().enumerate() {
            if s.session.is_some() {
                count[self.site.charger_node(i)] += 1;
            }
        }
        let mut total = 0.0;
        for (i, s) in self.states.iter().enumerate() {
            if s.session.is_some() {
                let node = self.site.charger_node(i);
                let share = self.board_limit.get(node.wrapping_sub(1)).copied().unwrap_or(0.0) / f64::from(count[node]);
                total += share.min(self.site.chargers()[i].max_current_a);
            }
        }
        total
    }
}

fn time(runs: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    let mut t: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    t.sort();
    let p99 = t[(runs * 99 / 100).min(runs - 1)];
    (t[runs / 2], p99)
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn main() {
    println!("balancer: one run (balance) and one check (verify), median and p99 in microseconds");
    println!("baseline: one pass computing a naive per-board equal split (same chargers, same run)\n");
    println!(
        "{:>8} {:>7} {:>9} {:>12} {:>11} {:>12} {:>11} {:>13} {:>11} {:>9}",
        "chargers",
        "runs",
        "sessions",
        "balance p50",
        "balance p99",
        "verify p50",
        "verify p99",
        "baseline p50",
        "x baseline",
        "paused"
    );
    for &n in &[10usize, 100, 500, 10_000] {
        let b = build(n);
        let runs = if n >= 10_000 { 200 } else { 1_000 };
        let first = balance(&b.input(None)).unwrap_or_else(|e| panic!("{e}"));
        // Steady state: the loop passes the previous allocation (hysteresis, min times).
        let previous = balance(&b.input(Some(&first))).unwrap_or_else(|e| panic!("{e}"));
        let input = b.input(Some(&previous));
        if let Err(v) = verify(&previous, &b.input(Some(&first))) {
            panic!("verify refused the benchmark's allocation: {v:?}");
        }
        let (bal50, bal99) = time(runs, || {
            black_box(balance(black_box(&input)).ok());
        });
        let out = balance(&input).unwrap_or_else(|e| panic!("{e}"));
        let (ver50, ver99) = time(runs, || {
            black_box(verify(black_box(&out), black_box(&input)).is_ok());
        });
        let (base50, _) = time(runs, || {
            black_box(b.naive());
        });
        let sessions = b.states.iter().filter(|s| s.session.is_some()).count();
        let paused = out.setpoints.iter().filter(|s| s.paused).count();
        println!(
            "{:>8} {:>7} {:>9} {:>12} {:>11} {:>12} {:>11} {:>13} {:>11.0} {:>9}",
            n,
            runs,
            sessions,
            us(bal50),
            us(bal99),
            us(ver50),
            us(ver99),
            us(base50),
            bal50.as_secs_f64() / base50.as_secs_f64().max(1e-9),
            paused
        );
    }
    println!("\ntarget: balance for 10 000 chargers under 5 000 us");
}
