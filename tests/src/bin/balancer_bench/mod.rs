//! The parts of the `balancer-bench` binary (see `balancer-bench.rs` for what it measures).

pub mod compute;
pub mod fleet;
pub mod stats;
pub mod steps;

use std::path::PathBuf;
use std::time::Duration;

/// What one loop measurement uses, from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub agent_bin: PathBuf,
    pub steps: usize,
    pub step_a: f64,
    pub base_a: f64,
    pub per_car_a: f64,
    pub ev_max_a: f64,
    pub single_phase_every: usize,
    pub meter_period_ms: u64,
    pub stale_after_periods: u32,
    pub ev_delay: Duration,
    pub ev_ramp: Duration,
    pub sim_tick: Duration,
    pub meter_values: Duration,
    pub sample: Duration,
    pub quiet: Duration,
    pub no_reaction: Duration,
    pub step_timeout: Duration,
    pub settle_timeout: Duration,
    pub fanout_runs: usize,
    /// Extra `key = value` lines for the agent's `[balancer]` table.
    pub balancer_set: Vec<String>,
    pub connect_concurrency: usize,
    pub keep_dir: bool,
    /// The agent's `[balancer] settle_ms` (its default unless set with `--balancer-set`).
    pub agent_settle_ms: u64,
    /// Print every profile and every crossing of the limit to stderr.
    pub trace: bool,
}
