//! `meter-sim`: a simulated Modbus TCP site meter showing a building's base load over a
//! (possibly compressed) day. Prints `METER_READY <addr>` once it listens; Ctrl-C stops it.
//!
//! ```text
//! meter-sim --listen 127.0.0.1:5020 --map eastron-sdm630 --profile office.csv --speed 360 --unit-id 1
//! ```
//!
//! EV draws are added when the demo runs the meter in-process ([`simulators::meter`]);
//! this binary serves the base load (plus `--extra-load`) only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::{NaiveTime, Timelike};
use clap::Parser;
use hardware::meter::RegisterMap;
use simulators::meter::{DEFAULT_MAP, LoadProfile, MeterServer, MeterServerError, SimClock, SiteLoad};

#[derive(Debug, Parser)]
#[command(
    name = "meter-sim",
    about = "Simulated Modbus TCP site meter: a building's base load over a (compressed) day",
    after_help = "Profile file (CSV): one line per point, `time,l1_a,l2_a,l3_a` with time HH:MM or HH:MM:SS \
                  and amperes per phase; optional header `time,l1_a,l2_a,l3_a`; `#` comments. Linear between \
                  points, wrapping around midnight. Without --profile: a built-in office building (10-40 A)."
)]
struct Args {
    /// Address to listen on; port 0 lets the OS choose (the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:5020")]
    listen: SocketAddr,
    /// Built-in register map to serve (a file name of configs/meters/ without .toml).
    #[arg(long, default_value = DEFAULT_MAP)]
    map: String,
    /// Register map file (TOML, as in configs/meters/) to serve instead of --map.
    #[arg(long, conflicts_with = "map")]
    map_file: Option<PathBuf>,
    /// Base load profile (CSV, see below); default: the built-in office building.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Simulated seconds per real second (360: a day in 4 minutes).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Simulated time of day at start, HH:MM (default: the local time now).
    #[arg(long, value_parser = parse_time_of_day)]
    start: Option<NaiveTime>,
    /// Freeze the time of day at this HH:MM instead of running a clock.
    #[arg(long, value_parser = parse_time_of_day, conflicts_with_all = ["start", "speed"])]
    fixed_time: Option<NaiveTime>,
    /// Modbus unit id to answer to; other ids get exception 0x0B.
    #[arg(long, default_value_t = 1)]
    unit_id: u8,
    /// Extra load on top of the profile, A per phase: L1,L2,L3 (negative = export).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    extra_load: Option<Vec<f64>>,
    /// Nominal line-to-neutral voltage (V).
    #[arg(long, default_value_t = 230.0)]
    voltage: f64,
    /// Daily voltage wobble, ± V (0: constant).
    #[arg(long, default_value_t = 0.0)]
    voltage_variation: f64,
    /// Power factor cos φ of the load (0..=1).
    #[arg(long, default_value_t = 1.0)]
    power_factor: f64,
    /// Starting value of the import energy register (kWh).
    #[arg(long, default_value_t = 0.0)]
    import_kwh: f64,
    /// Print the reading every this many real seconds (0: never).
    #[arg(long, default_value_t = 10)]
    print_every_s: u64,
}

fn parse_time_of_day(text: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(text, "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(text, "%H:%M:%S"))
        .map_err(|_| format!("\"{text}\" is not a time of day HH:MM"))
}

fn site_from(args: &Args) -> Result<SiteLoad> {
    if !(args.speed.is_finite() && args.speed > 0.0) {
        bail!("--speed must be a positive number, got {}", args.speed);
    }
    if !(0.0..=1.0).contains(&args.power_factor) {
        bail!("--power-factor must be between 0 and 1, got {}", args.power_factor);
    }
    if !(args.voltage.is_finite() && args.voltage > 0.0) {
        bail!("--voltage must be a positive number, got {}", args.voltage);
    }
    let profile = match &args.profile {
        Some(path) => LoadProfile::load(path).context("invalid --profile")?,
        None => LoadProfile::office(),
    };
    let clock = match args.fixed_time {
        Some(at) => SimClock::fixed(at),
        None => {
            let start = args.start.unwrap_or_else(|| {
                let now = chrono::Local::now().time();
                now.with_nanosecond(0).unwrap_or(now)
            });
            SimClock::compressed(start, args.speed)
        }
    };
    let site = SiteLoad::new(profile, clock)
        .with_voltage(args.voltage)
        .with_voltage_variation(args.voltage_variation)
        .with_power_factor(args.power_factor)
        .with_energy(args.import_kwh * 1000.0, 0.0);
    if let Some(extra) = &args.extra_load {
        let [l1, l2, l3] = extra.as_slice() else { bail!("--extra-load takes three values L1,L2,L3") };
        site.set_extra_load([*l1, *l2, *l3]);
    }
    Ok(site)
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let site = site_from(&args)?;
    let map = match &args.map_file {
        Some(path) => RegisterMap::load(path).context("invalid --map-file")?,
        None => RegisterMap::builtin(&args.map).context("invalid --map")?,
    };
    let map_name = map.name().to_owned();
    let server =
        match MeterServer::builder(site.clone()).with_map(map).with_unit_id(args.unit_id).bind(args.listen).await {
            Ok(server) => server,
            Err(err @ MeterServerError::Bind { .. }) => {
                bail!("{err} (is another meter-sim running? choose another --listen address, or port 0)")
            }
            Err(err) => return Err(err.into()),
        };
    println!("METER_READY {}", server.local_addr());
    let clock = site.clock();
    let when = if clock.is_fixed() { "fixed".to_string() } else { format!("{}x", clock.speed()) };
    println!(
        "  {map_name}, unit {}, simulated time {} ({when})",
        server.unit_id(),
        clock.time_of_day(Instant::now()).format("%H:%M")
    );

    let mut ticker = (args.print_every_s > 0).then(|| tokio::time::interval(Duration::from_secs(args.print_every_s)));
    loop {
        tokio::select! {
            signal = tokio::signal::ctrl_c() => {
                signal.context("waiting for Ctrl-C")?;
                break;
            }
            _ = async {
                match ticker.as_mut() {
                    Some(t) => { t.tick().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {
                let now = Instant::now();
                let r = site.reading(now);
                let amps = r.currents_a.map(|a| a.unwrap_or_default());
                println!(
                    "{}  L1 {:5.1} A  L2 {:5.1} A  L3 {:5.1} A  {:7.2} kW  import {:.1} kWh",
                    clock.time_of_day(now).format("%H:%M"),
                    amps[0],
                    amps[1],
                    amps[2],
                    r.power_w.unwrap_or_default() / 1000.0,
                    r.energy_import_wh.unwrap_or_default() / 1000.0,
                );
            }
        }
    }
    server.shutdown();
    Ok(())
}
