//! Compute time of one verified balancer run (`balance_verified`: balance + verify, what
//! the loop applies) for a large site, beside baselines measured in the same run: a
//! trivial pass over the same input (copy the charger states and sum their measured
//! draws per node), and the same run for a small site.
//!
//! The site is built the way `edge-agent/benches/balancer.rs` builds it: grid connection
//! -> √n sub-boards -> chargers, mixed 1- and 3-phase with phase rotation, random demands
//! and priorities, a few idle or unanswering chargers, half the sub-boards metered, so the
//! grid fuse, the boards and the import cap all bind somewhere.

use super::stats::{Rng, Samples};
use anyhow::{Context, Result};
use edge_agent::balancer::{
    Allocation, BalancerConfig, BalancerInput, ChargerPoint, ChargerState, ExternalLimits, Link, Measurements,
    MeterReading, Node, NodeId, Phase, Session, Site, Wiring, balance_verified,
};
use std::hint::black_box;
use std::time::Instant;

const NOW_MS: u64 = 1_800_000_000_000;

/// One generated site and its inputs.
pub struct Bench {
    site: Site,
    states: Vec<ChargerState>,
    measurements: Measurements,
    external: ExternalLimits,
    config: BalancerConfig,
}

fn node_id(s: String) -> Result<NodeId> {
    s.parse().map_err(|e| anyhow::anyhow!("node id {s:?}: {e}"))
}

/// A site of `chargers` chargers (deterministic for a given size).
pub fn build(chargers: usize) -> Result<Bench> {
    let mut rng = Rng::new(0x5eed_0000 + chargers as u64);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let boards = ((chargers as f64).sqrt().ceil() as usize).max(1);
    let per_board = chargers.div_ceil(boards);
    let grid = node_id("grid".into())?;
    #[allow(clippy::cast_precision_loss)]
    let board_a = per_board as f64 * 7.0 + 32.0;
    #[allow(clippy::cast_precision_loss)]
    let grid_a = boards as f64 * board_a * 0.7;
    let mut nodes = vec![Node::new(grid.clone(), None).with_limit_a(grid_a).with_meter(grid_a * 0.3)];
    for b in 0..boards {
        let mut n = Node::new(node_id(format!("board{b}"))?, Some(grid.clone())).with_limit_a(board_a);
        if b % 2 == 0 {
            #[allow(clippy::cast_precision_loss)]
            let safe = per_board as f64 * 2.0;
            n = n.with_meter(safe);
        }
        if b % 5 == 0 {
            n = n.with_power_limit_w(board_a * 3.0 * 230.0 * 0.6);
        }
        nodes.push(n);
    }
    let rotations =
        [Wiring::L1_L2_L3, Wiring::L2_L3_L1, Wiring::L3_L1_L2, Wiring::single(Phase::L1), Wiring::single(Phase::L2)];
    let mut points = Vec::with_capacity(chargers);
    let mut states = Vec::with_capacity(chargers);
    for c in 0..chargers {
        let board = c / per_board;
        let wiring = rotations.get(usize::try_from(rng.below(5)).unwrap_or(0)).copied().unwrap_or_default();
        let max = if rng.below(2) == 0 { 16.0 } else { 32.0 };
        let id = format!("cp{c}").parse().map_err(|e| anyhow::anyhow!("charger id: {e}"))?;
        let priority = u8::try_from(rng.below(3)).unwrap_or(0);
        points.push(ChargerPoint::new(id, node_id(format!("board{board}"))?, wiring, max).with_priority(priority));
        let session = (rng.below(10) != 0).then(|| Session {
            started_ms: NOW_MS - rng.below(36_000_000),
            demand_a: (rng.below(3) == 0).then(|| rng.float(4.0, 32.0)),
            ev_phases: (rng.below(4) == 0).then_some(1),
        });
        let link = if rng.below(100) == 0 {
            Link::NotAnswering {
                since_ms: NOW_MS - 3_000,
                last_limit_a: Some(10.0),
                limit_valid_until_ms: NOW_MS + 20_000,
                safe_current_a: 6.0,
            }
        } else {
            Link::Answering
        };
        let draw = if session.is_some() { rng.float(0.0, 16.0) } else { 0.0 };
        states.push(ChargerState { session, measured_a: [draw; 3], link, ..ChargerState::default() });
    }
    let site = Site::try_from_parts(nodes, points).context("building the compute site")?;
    let mut measurements = Measurements::default();
    for n in site.tree().nodes().iter().filter(|n| n.metered) {
        let load = rng.float(0.0, 30.0);
        measurements
            .meters
            .insert(n.id.clone(), MeterReading { current_a: [load; 3], at_ms: NOW_MS - 500, stale: false });
    }
    let external = ExternalLimits { import_limit_w: Some(grid_a * 3.0 * 230.0 * 0.9), ..Default::default() };
    Ok(Bench { site, states, measurements, external, config: BalancerConfig::default() })
}

impl Bench {
    fn input<'a>(&'a self, states: &'a [ChargerState], previous: Option<&'a Allocation>) -> BalancerInput<'a> {
        BalancerInput {
            site: &self.site,
            states,
            measurements: &self.measurements,
            external: &self.external,
            previous,
            now_ms: NOW_MS,
            config: &self.config,
        }
    }

    /// The steady-state allocation (a run that had a previous allocation, as in the loop).
    fn steady(&self) -> Result<Allocation> {
        let first = balance_verified(&self.input(&self.states, None)).map_err(|e| anyhow::anyhow!("{e}"))?;
        balance_verified(&self.input(&self.states, Some(&first))).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Baseline: copy the states (the loop builds them each run) and sum the measured draw
    /// per node: touching every charger once.
    fn trivial(&self) -> f64 {
        let states = self.states.clone();
        let mut per_node = vec![0.0; self.site.tree().nodes().len()];
        for (i, s) in states.iter().enumerate() {
            if let Some(slot) = per_node.get_mut(self.site.charger_node(i)) {
                *slot += s.measured_a.iter().sum::<f64>();
            }
        }
        per_node.iter().sum()
    }
}

/// Timings of one size.
pub struct ComputeResult {
    pub chargers: usize,
    pub runs: usize,
    pub sessions: usize,
    pub paused: usize,
    pub verified: Samples,
    pub trivial: Samples,
}

/// Times `runs` verified runs (and `runs` trivial passes) for a site of `chargers`.
pub fn measure(chargers: usize, runs: usize) -> Result<ComputeResult> {
    let bench = build(chargers)?;
    let previous = bench.steady()?;
    let input = bench.input(&bench.states, Some(&previous));
    let mut verified = Samples::default();
    let mut trivial = Samples::default();
    let mut paused = 0;
    // One warm-up of each, not timed.
    black_box(balance_verified(&input).is_ok());
    black_box(bench.trivial());
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let out = balance_verified(black_box(&input));
        verified.push_duration(start.elapsed());
        let out = out.map_err(|e| anyhow::anyhow!("balance_verified refused the benchmark site: {e}"))?;
        paused = out.setpoints.iter().filter(|s| s.paused).count();
        black_box(out);
        let start = Instant::now();
        black_box(bench.trivial());
        trivial.push_duration(start.elapsed());
    }
    let sessions = bench.states.iter().filter(|s| s.session.is_some()).count();
    Ok(ComputeResult { chargers, runs: runs.max(1), sessions, paused, verified, trivial })
}
