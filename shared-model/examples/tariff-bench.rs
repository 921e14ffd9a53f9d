//! Throughput of the tariff engine's hot path, [`Pricer::price_totals`], and of the full CDR
//! breakdown, [`Pricer::price`], on one core, beside a floor measured in the same run.
//!
//! ```sh
//! cargo run --release -p shared-model --example tariff-bench
//! cargo run --release -p shared-model --example tariff-bench -- --sessions 2000 --rounds 15
//! ```
//!
//! Beside it, two baselines measured in the same run: the engine as it was before its fast
//! path (the slow reference the property tests compare with, `tests/tariff_reference/`), and a
//! floor. The floor prices the same sessions with a trivial flat computation (energy × one price, time ×
//! another, in `Decimal`, summed from the meter readings): what any exact-decimal pricing costs
//! before restrictions, periods, step_size and VAT. Issue 5's target is 100 000 sessions/s per
//! core for `price_totals` on the `weekday` workload.

use chrono::{DateTime, TimeDelta, Utc};
use rust_decimal::Decimal;
use shared_model::tariff::{CompiledTariff, MeterReading, Pricer, Session, Tariff};
#[path = "../tests/tariff_reference/mod.rs"]
mod tariff_reference;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// The spec's complex tariff minus the current restrictions, plus a night window: flat fee,
/// time by time of day and weekday, parking by window, energy by kWh threshold.
const TARIFF: &str = r#"{
  "country_code": "DE", "party_id": "ALL", "id": "bench", "currency": "EUR",
  "elements": [
    {"price_components": [{"type": "FLAT", "price": 2.5, "vat": 15, "step_size": 1}]},
    {"price_components": [{"type": "TIME", "price": 1.00, "vat": 20, "step_size": 900}],
     "restrictions": {"start_time": "22:00", "end_time": "06:00"}},
    {"price_components": [{"type": "TIME", "price": 2.00, "vat": 20, "step_size": 600}],
     "restrictions": {"day_of_week": ["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY"]}},
    {"price_components": [{"type": "ENERGY", "price": 0.20, "vat": 20, "step_size": 1}],
     "restrictions": {"max_kwh": 10}},
    {"price_components": [{"type": "ENERGY", "price": 0.35, "vat": 20, "step_size": 1},
                          {"type": "TIME", "price": 1.25, "vat": 20, "step_size": 600}]},
    {"price_components": [{"type": "PARKING_TIME", "price": 5, "vat": 10, "step_size": 300}],
     "restrictions": {"start_time": "09:00", "end_time": "18:00"}}
  ],
  "last_updated": "2015-06-29T20:39:09Z"
}"#;

struct Options {
    sessions: usize,
    rounds: usize,
    /// Only `price_totals` on the weekday workload, for `perf record`.
    profile: bool,
}

fn options() -> Result<Options, String> {
    let mut o = Options { sessions: 1000, rounds: 9, profile: false };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> Result<usize, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .filter(|&v: &usize| v > 0)
                .ok_or_else(|| format!("{name} needs a positive number"))
        };
        match a.as_str() {
            "--sessions" => o.sessions = value("--sessions")?,
            "--rounds" => o.rounds = value("--rounds")?,
            "--profile" => o.profile = true,
            "-h" | "--help" => {
                return Err(
                    "usage: tariff-bench [--sessions N (default 1000)] [--rounds N of at least 150 ms (default 9)] \
                     [--profile (only price_totals on the weekday sessions, to run under perf record)]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other:?}; try --help")),
        }
    }
    Ok(o)
}

/// `n` sessions of 3 h charging with a reading every 15 min, then 40 min parked, starting every
/// 97 minutes from `base` (so they cover every time of day and day of the week).
fn sessions(base: &str, n: usize) -> Vec<Session> {
    let base: DateTime<Utc> = base.parse().expect("valid time");
    (0..n)
        .map(|i| {
            let start = base + TimeDelta::minutes(i as i64 * 97);
            let mut meter: Vec<MeterReading> = (0..=12)
                .map(|k| MeterReading { at: start + TimeDelta::minutes(15 * k), energy_wh: Decimal::from(k * 2750) })
                .collect();
            let end = start + TimeDelta::minutes(220);
            meter.push(MeterReading { at: end, energy_wh: Decimal::from(12 * 2750) });
            Session::try_new(start, end, "Europe/Amsterdam", meter).expect("valid session")
        })
        .collect()
}

/// The floor: 0.30/kWh and 1.50/h from the readings, in Decimal, no restrictions.
fn flat_price(s: &Session) -> Decimal {
    let (Some(first), Some(last)) = (s.meter.first(), s.meter.last()) else { return Decimal::ZERO };
    let kwh = (last.energy_wh - first.energy_wh) / Decimal::ONE_THOUSAND;
    let hours = Decimal::from((s.end - s.start).num_milliseconds()) / Decimal::from(3_600_000);
    (kwh * Decimal::new(30, 2) + hours * Decimal::new(150, 2)).round_dp(4)
}

/// Time this thread has spent on a CPU (Linux `schedstat`), so that other processes sharing
/// the cores do not count; `None` elsewhere, and wall-clock time is used instead.
fn thread_cpu_time() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok().map(Duration::from_nanos)
}

/// How long one timed round runs at least: the kernel may account CPU time only at scheduler
/// ticks (4 ms), so a round must be long for that not to matter.
const ROUND: Duration = Duration::from_millis(150);

/// Median and best of `rounds` timings of each of `fs` over all `n` sessions, as sessions per
/// second of this thread's CPU time (or of wall-clock time where that cannot be read), and the
/// last checksum of each. Each round calls each `f` as many times as fit in [`ROUND`]; the
/// rounds of the different `fs` alternate, so a burst of load elsewhere on the machine hits
/// them alike.
fn measure(rounds: usize, n: usize, fs: &mut [&mut dyn FnMut() -> Decimal]) -> Vec<(f64, f64, Decimal)> {
    // Warm-up (buffers grown, caches filled) and calibration.
    let mut reps = Vec::with_capacity(fs.len());
    let mut checksums = Vec::with_capacity(fs.len());
    for f in fs.iter_mut() {
        let started = Instant::now();
        checksums.push(f());
        let once = started.elapsed().max(Duration::from_micros(1));
        reps.push((ROUND.as_secs_f64() / once.as_secs_f64()).ceil().max(1.0) as u32);
    }
    let mut times = vec![Vec::with_capacity(rounds); fs.len()];
    for _ in 0..rounds {
        for (k, f) in fs.iter_mut().enumerate() {
            let (cpu, wall) = (thread_cpu_time(), Instant::now());
            for _ in 0..reps[k] {
                checksums[k] = black_box(f());
            }
            let spent = match (cpu, thread_cpu_time()) {
                (Some(a), Some(b)) if b > a => b - a,
                _ => wall.elapsed(),
            };
            times[k].push(spent / reps[k]);
        }
    }
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    times
        .into_iter()
        .zip(checksums)
        .map(|(mut t, checksum)| {
            t.sort();
            (rate(t[t.len() / 2]), rate(t[0]), checksum)
        })
        .collect()
}

fn main() {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let tariff: Tariff = serde_json::from_str(TARIFF).expect("bench tariff parses");
    let reference = tariff_reference::RefTariff::try_new(&tariff).expect("bench tariff is valid");
    let tariff = CompiledTariff::try_new(&tariff).expect("bench tariff is valid");
    let workloads = [
        // The throughput test's sessions: from Monday 4 March 2024, 08:00 in Amsterdam.
        ("weekday", sessions("2024-03-04T07:00:00Z", o.sessions)),
        // From 29 March 2024, across Amsterdam's spring-forward night (31 March, 02:00 → 03:00).
        ("dst-spring", sessions("2024-03-29T12:00:00Z", o.sessions)),
        // From 25 October 2024, across its fall-back night (27 October, 03:00 → 02:00).
        ("dst-autumn", sessions("2024-10-25T12:00:00Z", o.sessions)),
    ];
    let mut pricer = Pricer::new();
    let mut full_pricer = Pricer::new();
    let mut before_pricer = tariff_reference::RefPricer::new();
    if o.profile {
        let sessions = &workloads[0].1;
        let (median, best, _) = measure(
            o.rounds,
            sessions.len(),
            &mut [&mut || {
                sessions
                    .iter()
                    .map(|s| pricer.price_totals(&tariff, s).expect("bench session prices").total_cost.excl_vat)
                    .sum()
            }],
        )[0];
        println!("weekday price_totals: {median:.0}/s (best {best:.0})");
        return;
    }
    println!("tariff-bench: {} sessions × {} rounds per figure, one thread, Europe/Amsterdam", o.sessions, o.rounds);
    println!(
        "{:<12} {:>26} {:>26} {:>26} {:>26}",
        "workload", "floor (flat Decimal)", "price_totals before", "price_totals", "price (full CDR)"
    );
    for (name, sessions) in &workloads {
        let n = sessions.len();
        let figures = measure(
            o.rounds,
            n,
            &mut [
                &mut || sessions.iter().map(flat_price).sum(),
                &mut || {
                    sessions
                        .iter()
                        .map(|s| {
                            before_pricer.price_totals(&reference, s).expect("bench session prices").total_cost.excl_vat
                        })
                        .sum()
                },
                &mut || {
                    sessions
                        .iter()
                        .map(|s| pricer.price_totals(&tariff, s).expect("bench session prices").total_cost.excl_vat)
                        .sum()
                },
                &mut || {
                    sessions
                        .iter()
                        .map(|s| {
                            full_pricer.price(&tariff, s).expect("bench session prices").totals.total_cost.excl_vat
                        })
                        .sum()
                },
            ],
        );
        let (floor, before, totals, full) = (figures[0], figures[1], figures[2], figures[3]);
        assert_eq!(totals.2, full.2, "price and price_totals disagree");
        assert_eq!(totals.2, before.2, "the fast path and the engine before it disagree");
        let cell = |(median, best, _): (f64, f64, Decimal)| format!("{median:>9.0}/s (best {best:>7.0})");
        println!("{name:<12} {:>26} {:>26} {:>26} {:>26}", cell(floor), cell(before), cell(totals), cell(full));
        println!(
            "{:<12} price_totals: {:.1}× faster than before, {:.1}× the floor's time per session; checksum {}",
            "",
            totals.0 / before.0,
            floor.0 / totals.0,
            totals.2
        );
    }
    let clock = if thread_cpu_time().is_some() { "this thread's CPU time" } else { "wall-clock time" };
    println!("sessions/s per core: one thread, measured in {clock}; median of the rounds, best in brackets");
}
