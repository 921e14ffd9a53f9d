//! The load steps: the building's load jumps by `step_a` on every phase, the agent's loop
//! sees it at its next meter poll and lowers the chargers' limits; the step is over once
//! the grid is back under its limit and no profile came for the quiet window. Then the
//! extra load goes away again (step down), measured the same way.

use super::Options;
use super::fleet::{Fleet, ms_between};
use super::stats::{Rng, Samples};
use anyhow::{Result, bail};
use chrono::Utc;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::time::MissedTickBehavior;

/// How far below their limits before the steps the chargers may stay on average after a
/// step down (A) and still count as restored: half the loop's default resolution.
const RESTORE_TOLERANCE_A: f64 = 0.05;

/// What one phase (a step up, a step down, or waiting to settle) saw, times in ms from
/// the load change.
#[derive(Debug, Clone, Default)]
pub struct PhaseResult {
    /// Grid under the limit and no profile for the quiet window before the timeout.
    pub settled: bool,
    pub duration_ms: f64,
    /// The last SetChargingProfile that changed a limit.
    pub last_change_ms: Option<f64>,
    /// SetChargingProfile calls received (all, and those that changed a limit).
    pub profiles: usize,
    pub changed: usize,
    /// Profiles that lowered (raised) a limit.
    pub lowered: usize,
    pub raised: usize,
    /// Most profiles one charger got in this phase.
    pub max_per_charger: usize,
    /// Separate stretches over the limit (more than one: it went back over).
    pub over_episodes: usize,
    /// Start of the final stretch under the limit, when it went over.
    pub under_ms: Option<f64>,
    /// Time over the limit (sampled).
    pub over_ms: f64,
    /// Largest excess over the limit on any phase (A).
    pub peak_excess_a: f64,
}

/// Besides "grid under the limit and no profile for the quiet window", what a phase waits for.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// Nothing more (waiting for the site to settle).
    Quiet,
    /// A limit changed, or this long passed without one. A step down may wait longer than a
    /// step up: the loop may hold the building load it saw while an EV follows a new limit
    /// (up to its `settle_ms`) before it takes the load as gone.
    Reaction(Duration),
}

/// Changes the extra load (if `extra` is given) and watches until the site settles.
pub async fn watch(
    fleet: &mut Fleet,
    extra: Option<[f64; 3]>,
    until: Until,
    timeout: Duration,
    opts: &Options,
) -> PhaseResult {
    let mut tick = tokio::time::interval(opts.sample);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    fleet.drain_profiles();
    let t0w = Utc::now();
    let t0 = Instant::now();
    if let Some(extra) = extra {
        fleet.site.set_extra_load(extra);
    }
    let quiet = opts.quiet.as_secs_f64() * 1e3;
    let timeout = timeout.as_secs_f64() * 1e3;
    let mut r = PhaseResult::default();
    let trace = opts.trace;
    let mut last_trace = 0.0;
    let mut per_charger: HashMap<usize, usize> = HashMap::new();
    let mut last_any: Option<f64> = None;
    let mut over_now = false;
    let mut prev = 0.0;
    loop {
        tick.tick().await;
        let el = t0.elapsed().as_secs_f64() * 1e3;
        for e in fleet.drain_profiles() {
            let at = ms_between(t0w, e.at);
            if at < 0.0 {
                continue;
            }
            if trace {
                eprintln!(
                    "    {at:8.1} ms  {:<11} c{} {:<22} {:>6} A{}",
                    fleet.specs[e.charger].id,
                    e.connector,
                    e.purpose,
                    e.limit.map_or("-".to_string(), |l| format!("{l:.1}")),
                    if e.changed { "" } else { " (same)" }
                );
            }
            r.profiles += 1;
            *per_charger.entry(e.charger).or_default() += 1;
            last_any = Some(last_any.map_or(at, |l: f64| l.max(at)));
            r.lowered += usize::from(e.lowered);
            r.raised += usize::from(e.raised);
            if e.changed {
                r.changed += 1;
                r.last_change_ms = Some(r.last_change_ms.map_or(at, |l: f64| l.max(at)));
            }
        }
        let (total, over) = fleet.grid();
        if trace && over != over_now {
            eprintln!(
                "    {el:8.1} ms  grid {total:.1?} A: {}",
                if over { "OVER the limit" } else { "under the limit" }
            );
        }
        if trace && over && (el - last_trace) >= 250.0 {
            last_trace = el;
            if let Some(c) = fleet.cps.first().map(|cp| cp.snapshot()).and_then(|s| s.connectors.first().cloned()) {
                eprintln!(
                    "    {el:8.1} ms  grid {total:.1?} A; {}: profile limit {:?} A, offered {:.1} A, EV {:.1} A",
                    fleet.specs[0].id, c.profile_limit_a, c.offered_a, c.current_a
                );
            }
        }
        if over {
            let excess = total.iter().copied().fold(f64::MIN, f64::max) - fleet.limit_a;
            r.peak_excess_a = r.peak_excess_a.max(excess);
            r.over_ms += el - prev;
            if !over_now {
                r.over_episodes += 1;
            }
            r.under_ms = None;
        } else if over_now {
            r.under_ms = Some(el);
        }
        over_now = over;
        prev = el;
        let reacted = match until {
            Until::Quiet => true,
            Until::Reaction(wait) => r.last_change_ms.is_some() || el >= wait.as_secs_f64() * 1e3,
        };
        let quiet_for = el - last_any.unwrap_or(0.0);
        if !over && reacted && quiet_for >= quiet {
            r.settled = true;
            break;
        }
        if el >= timeout {
            break;
        }
    }
    r.duration_ms = t0.elapsed().as_secs_f64() * 1e3;
    r.max_per_charger = per_charger.values().copied().max().unwrap_or(0);
    r
}

/// Everything measured for one fleet size.
#[derive(Debug, Default)]
pub struct LoopResult {
    pub chargers: usize,
    pub limit_a: f64,
    pub cars_per_phase: [usize; 3],
    pub steps: usize,
    /// Step up: time to the last profile that changed a limit (steps with a change).
    pub up_last: Samples,
    /// Step up: time to the grid back under the limit (steps that went over).
    pub up_under: Samples,
    pub up_over_steps: usize,
    pub up_no_change: usize,
    pub up_unsettled: usize,
    /// Limit-changing profiles per step up.
    pub up_changed: Samples,
    /// Steps up in which some charger got more than one profile.
    pub up_repeat_steps: usize,
    /// Steps up with a profile that raised a limit (the loop went back on its reaction).
    pub up_raise_steps: usize,
    /// Steps down with a profile that lowered a limit (a late reaction to the step up, or a
    /// correction of an overshoot).
    pub down_lower_steps: usize,
    /// Steps up that went over the limit more than once.
    pub up_reover_steps: usize,
    pub down_last: Samples,
    pub down_changed: Samples,
    pub down_over_steps: usize,
    pub down_unsettled: usize,
    /// Steps down after which the limits were not back where they were before the steps.
    pub down_not_restored: usize,
    pub over_ms: f64,
    pub measured_ms: f64,
    pub peak_excess_a: f64,
    pub fanout_receipt: Samples,
    pub fanout_http: Samples,
    pub before: String,
    /// The sum of the TxProfile limits before the first step (A).
    pub restored_sum_a: f64,
    pub ev_before: (f64, f64),
    pub ev_after: (f64, f64),
    pub lagged: u64,
    pub error: Option<String>,
}

/// Starts a site of `n` chargers, measures the fan-out baseline, starts the sessions,
/// waits for them to settle and runs the steps.
pub async fn run(n: usize, opts: &Options) -> Result<LoopResult> {
    let started = Instant::now();
    eprintln!("[{n}] starting the meter, the agent and {n} chargers");
    let mut fleet = Fleet::start(n, opts).await?;
    let mut res = LoopResult {
        chargers: n,
        limit_a: fleet.limit_a,
        cars_per_phase: super::fleet::cars_per_phase(&fleet.specs),
        ..LoopResult::default()
    };
    eprintln!("[{n}] booted in {:.1} s; fan-out baseline ({} runs)", started.elapsed().as_secs_f64(), opts.fanout_runs);
    let (receipt, http) = fleet.fanout_baseline(opts.fanout_runs).await?;
    res.fanout_receipt = receipt;
    res.fanout_http = http;
    eprintln!("[{n}] starting {n} transactions");
    fleet.start_transactions(opts.connect_concurrency).await?;
    let result = measure(&mut fleet, &mut res, opts).await;
    res.lagged = fleet.lagged.load(std::sync::atomic::Ordering::Relaxed);
    if let Err(e) = &result {
        res.error = Some(format!("{e:#}"));
        eprintln!("[{n}] stopped: {e:#}\n[{n}] the agent's last output:\n{}", fleet.agent_tail());
    }
    fleet.stop(opts.keep_dir).await;
    Ok(res)
}

async fn measure(fleet: &mut Fleet, res: &mut LoopResult, opts: &Options) -> Result<()> {
    let n = res.chargers;
    if opts.trace {
        for (i, cp) in fleet.cps.iter().enumerate().take(2) {
            for c in cp.received_calls().iter().filter(|c| c.action == "SetChargingProfile") {
                let p = &c.payload["csChargingProfiles"];
                eprintln!(
                    "    {} before the steps: {} {} {} A valid to {}",
                    fleet.specs[i].id,
                    c.at.format("%H:%M:%S%.3f"),
                    p["chargingProfilePurpose"],
                    p["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"],
                    p["validTo"]
                );
            }
        }
    }
    let mut settle = watch(fleet, None, Until::Quiet, opts.settle_timeout, opts).await;
    if settle.settled {
        // The loop distrusts measured draws for `settle_ms` after each limit change (the
        // start-up cascade changed many): start the steps on a site at rest.
        eprintln!("[{n}] quiet; waiting {} ms more (the loop's settle_ms)", opts.agent_settle_ms);
        tokio::time::sleep(Duration::from_millis(opts.agent_settle_ms)).await;
        settle = watch(fleet, None, Until::Quiet, opts.settle_timeout, opts).await;
    }
    if !settle.settled {
        let (grid, _) = fleet.grid();
        bail!(
            "the site did not settle within {:?} after the sessions started (grid {grid:.1?} A, limit {} A, {} profiles, \
             allocation: {})",
            opts.settle_timeout,
            fleet.limit_a,
            settle.profiles,
            fleet.allocation_summary().await
        );
    }
    res.before = fleet.allocation_summary().await;
    // After a step down the limits should be back where they were (within rounding).
    let baseline_sum = fleet.tx_limit_sum();
    #[allow(clippy::cast_precision_loss)]
    let restored = baseline_sum - RESTORE_TOLERANCE_A * n as f64;
    res.restored_sum_a = baseline_sum;
    let down_wait = Duration::from_millis(opts.agent_settle_ms) + opts.no_reaction;
    res.ev_before = fleet.ev_range();
    let (grid, _) = fleet.grid();
    eprintln!(
        "[{n}] settled: grid {grid:.1?} A of {} A; EVs {:.1}..{:.1} A; agent: {}",
        fleet.limit_a, res.ev_before.0, res.ev_before.1, res.before
    );
    let mut rng = Rng::new(0xbe4c_0000 ^ n as u64);
    let step = [opts.step_a; 3];
    let progress_every = (opts.steps / 20).max(1);
    let started = Instant::now();
    for i in 0..opts.steps {
        if !fleet.agent_running() {
            bail!("the agent exited");
        }
        // Not phase-locked to the meter poll: a random offset within one period.
        #[allow(clippy::cast_precision_loss)]
        let jitter = rng.float(0.0, opts.meter_period_ms as f64);
        tokio::time::sleep(Duration::from_secs_f64(jitter / 1e3)).await;

        if opts.trace {
            eprintln!("[{n}] step {} up", i + 1);
        }
        let up = watch(fleet, Some(step), Until::Reaction(opts.no_reaction), opts.step_timeout, opts).await;
        if i == 0 {
            res.ev_after = fleet.ev_range();
        }
        res.steps += 1;
        res.measured_ms += up.duration_ms;
        res.over_ms += up.over_ms;
        res.peak_excess_a = res.peak_excess_a.max(up.peak_excess_a);
        #[allow(clippy::cast_precision_loss)]
        res.up_changed.push(up.changed as f64);
        match up.last_change_ms {
            Some(t) => res.up_last.push(t),
            None => res.up_no_change += 1,
        }
        if up.over_episodes > 0 {
            res.up_over_steps += 1;
            if let Some(t) = up.under_ms {
                res.up_under.push(t);
            }
        }
        if up.over_episodes > 1 {
            res.up_reover_steps += 1;
        }
        if up.max_per_charger > 1 {
            res.up_repeat_steps += 1;
        }
        if up.raised > 0 {
            res.up_raise_steps += 1;
        }
        if !up.settled {
            res.up_unsettled += 1;
        }

        if opts.trace {
            eprintln!("[{n}] step {} down", i + 1);
        }
        let down = watch(fleet, Some([0.0; 3]), Until::Reaction(down_wait), opts.step_timeout, opts).await;
        if fleet.tx_limit_sum() < restored {
            res.down_not_restored += 1;
        }
        res.measured_ms += down.duration_ms;
        res.over_ms += down.over_ms;
        res.peak_excess_a = res.peak_excess_a.max(down.peak_excess_a);
        #[allow(clippy::cast_precision_loss)]
        res.down_changed.push(down.changed as f64);
        if let Some(t) = down.last_change_ms {
            res.down_last.push(t);
        }
        if down.over_episodes > 0 {
            res.down_over_steps += 1;
        }
        if down.lowered > 0 {
            res.down_lower_steps += 1;
        }
        if !down.settled {
            res.down_unsettled += 1;
            let again = watch(fleet, None, Until::Quiet, opts.settle_timeout, opts).await;
            res.measured_ms += again.duration_ms;
            res.over_ms += again.over_ms;
            if !again.settled {
                let (grid, _) = fleet.grid();
                bail!("step {}: the site did not settle again (grid {grid:.1?} A, limit {} A)", i + 1, fleet.limit_a);
            }
        }
        if (i + 1) % progress_every == 0 || i + 1 == opts.steps {
            eprintln!(
                "[{n}] step {}/{} ({:.0} s): up last profile {} ms ({} changed), under {} ms; p99 so far {} ms",
                i + 1,
                opts.steps,
                started.elapsed().as_secs_f64(),
                super::stats::ms(up.last_change_ms),
                up.changed,
                super::stats::ms(up.under_ms),
                super::stats::ms(res.up_last.p99()),
            );
        }
    }
    Ok(())
}
