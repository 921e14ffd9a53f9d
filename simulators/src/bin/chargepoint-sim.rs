//! `chargepoint-sim`: runs N simulated OCPP 1.6J charge points against a central system.
//! Each boots, heartbeats and runs random charging sessions with its id tags; the EVs draw
//! current as the charging profiles allow. Ctrl-C (or `--duration-s`) stops them.
//!
//! ```text
//! chargepoint-sim --url ws://127.0.0.1:9000/ocpp --count 10 --prefix CP --connectors 2 --session-every 60
//! ```

use anyhow::Result;
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shared_model::ocpp::v16::{AuthorizationStatus, Reason, RegistrationStatus};
use simulators::chargepoint::{ChargePoint, ChargePointConfig, EvModel};
use std::time::Duration;
use tokio::time::{Instant, sleep};
use tracing::{info, warn};

#[derive(Debug, Parser)]
#[command(name = "chargepoint-sim", about = "Simulated OCPP 1.6J charge points with EVs that draw current")]
struct Args {
    /// Central system base URL; the charge point id is appended as the last path segment.
    #[arg(long, default_value = "ws://127.0.0.1:9000/ocpp")]
    url: String,
    /// Number of charge points.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Id prefix: charge point i is `{prefix}{i:03}` (1-based).
    #[arg(long, default_value = "CP")]
    prefix: String,
    /// Connectors per charge point.
    #[arg(long, default_value_t = 2)]
    connectors: u32,
    /// Basic-auth password (security profile 1).
    #[arg(long)]
    password: Option<String>,
    /// Mean time between sessions on a charge point, and mean session length, in seconds.
    #[arg(long, default_value_t = 60)]
    session_every: u64,
    /// MeterValues interval during a session, in seconds.
    #[arg(long, default_value_t = 10)]
    meter_interval_s: u64,
    /// The EVs' maximum current per phase (A).
    #[arg(long, default_value_t = 16.0)]
    max_current_a: f64,
    /// The EVs' phases (1 or 3).
    #[arg(long, default_value_t = 3)]
    phases: u8,
    /// Id tags the users present, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "TAG0001,TAG0002,TAG0003,TAG0004")]
    id_tags: Vec<String>,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration_s: Option<u64>,
}

/// Connects (retrying with backoff until `deadline`) and boots until Accepted.
async fn start(cfg: &ChargePointConfig, deadline: Instant) -> Option<ChargePoint> {
    let mut backoff = Duration::from_secs(1);
    while Instant::now() < deadline {
        match ChargePoint::connect(cfg.clone()).await {
            Ok(cp) => loop {
                match cp.boot().await {
                    Ok(r) if r.status == RegistrationStatus::Accepted => return Some(cp),
                    Ok(r) => {
                        let wait = Duration::from_secs(r.interval.clamp(1, 300) as u64);
                        info!(cp = %cfg.id, "boot {:?}, retrying in {wait:?}", r.status);
                        sleep(wait).await;
                    }
                    Err(e) => {
                        warn!(cp = %cfg.id, "boot failed: {e}");
                        break;
                    }
                }
                if Instant::now() >= deadline {
                    return None;
                }
            },
            Err(e) => warn!(cp = %cfg.id, "connect failed: {e}; retrying in {backoff:?}"),
        }
        sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
    None
}

/// One charge point's life: sessions at random times on random free connectors.
async fn run_charge_point(cfg: ChargePointConfig, session_every: Duration, deadline: Instant, seed: u64) {
    let Some(cp) = start(&cfg, deadline).await else { return };
    let mut rng = StdRng::seed_from_u64(seed);
    let around = |rng: &mut StdRng, d: Duration| d.mul_f64(rng.random_range(0.5..1.5));
    while Instant::now() < deadline {
        sleep(around(&mut rng, session_every).min(deadline.saturating_duration_since(Instant::now()))).await;
        if Instant::now() >= deadline {
            break;
        }
        let Ok(state) = cp.state().await else { break };
        let free: Vec<u32> =
            state.connectors.iter().filter(|c| c.transaction.is_none() && c.operative).map(|c| c.id).collect();
        if free.is_empty() || cfg.id_tags.is_empty() {
            continue;
        }
        let connector = free[rng.random_range(0..free.len())];
        let tag = cfg.id_tags[rng.random_range(0..cfg.id_tags.len())].clone();
        if let Err(e) = cp.plug_in(connector).await {
            warn!(cp = %cfg.id, "plug in: {e}");
            continue;
        }
        match cp.authorize(&tag).await {
            Ok(r) if r.id_tag_info.status == AuthorizationStatus::Accepted => {}
            Ok(r) => {
                info!(cp = %cfg.id, tag, "not authorized: {:?}", r.id_tag_info.status);
                let _ = cp.unplug(connector).await;
                continue;
            }
            Err(e) => warn!(cp = %cfg.id, "authorize: {e} (starting anyway, as offline chargers do)"),
        }
        match cp.start_transaction(connector, &tag).await {
            Ok(id) => info!(cp = %cfg.id, connector, tag, transaction = id, "session started"),
            Err(e) => {
                warn!(cp = %cfg.id, "start: {e}");
                let _ = cp.unplug(connector).await;
                continue;
            }
        }
        let length = around(&mut rng, session_every).min(deadline.saturating_duration_since(Instant::now()));
        sleep(length).await;
        let energy = cp
            .state()
            .await
            .ok()
            .and_then(|s| s.connector(connector).and_then(|c| c.transaction.as_ref().map(|t| t.energy_wh)));
        if let Err(e) = cp.stop_transaction(connector, Reason::Local).await {
            warn!(cp = %cfg.id, "stop: {e}");
        }
        let _ = cp.unplug(connector).await;
        info!(cp = %cfg.id, connector, "session ended, {:.0} Wh", energy.unwrap_or(0.0));
    }
    let _ = cp.disconnect().await;
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // Without --duration-s the simulators run for (at most) a year; Ctrl-C ends them.
    let deadline = Instant::now() + Duration::from_secs(args.duration_s.unwrap_or(365 * 86_400));
    let session_every = Duration::from_secs(args.session_every.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 1..=args.count {
        let mut cfg = ChargePointConfig::new(format!("{}{i:03}", args.prefix), args.url.clone())
            .with_connectors(args.connectors)
            .with_meter_interval(Duration::from_secs(args.meter_interval_s))
            .with_ev(EvModel::default().with_max_current(args.max_current_a).with_phases(args.phases));
        cfg.password = args.password.clone();
        cfg.id_tags = args.id_tags.clone();
        cfg.auto_reconnect = true;
        tasks.spawn(run_charge_point(cfg, session_every, deadline, i as u64));
        // Ramp: 50 connections per second at most.
        sleep(Duration::from_millis(20)).await;
    }
    info!("{} charge points started against {}", args.count, args.url);
    tokio::select! {
        _ = async { while tasks.join_next().await.is_some() {} } => info!("all charge points finished"),
        _ = tokio::signal::ctrl_c() => info!("Ctrl-C: stopping"),
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    // Dropped handles close their connections; give the drivers a moment to do so.
    sleep(Duration::from_millis(500)).await;
    Ok(())
}
