//! `ocpp-load`: OCPP 1.6J load benchmark of the edge agent against a bare WebSocket echo
//! baseline measured in the same run. See `simulators::load::bench`.
//!
//! ```text
//! ocpp-load --agent-bin target/release/edge-agent --counts 100,1000,5000 --duration-s 60
//! ocpp-load --echo-server            # the baseline server (started by ocpp-load itself)
//! ```

use anyhow::{Context, Result};
use clap::Parser;
use simulators::load::bench::{self, BenchConfig};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "ocpp-load", about = "OCPP 1.6J load benchmark: edge agent vs. a bare WebSocket echo baseline")]
struct Args {
    /// The edge-agent binary, started as `PATH run --config FILE` for each fleet size.
    /// Without it only the echo baseline is measured.
    #[arg(long)]
    agent_bin: Option<PathBuf>,
    /// Fleet sizes to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
    counts: Vec<usize>,
    /// Length of the measured window per run, in seconds (after the connect ramp).
    #[arg(long, default_value_t = 60)]
    duration_s: u64,
    /// MeterValues interval during a session, in seconds.
    #[arg(long, default_value_t = 10)]
    meter_interval_s: u64,
    /// Heartbeat interval, in seconds.
    #[arg(long, default_value_t = 60)]
    heartbeat_interval_s: u64,
    /// New connections per second while ramping up.
    #[arg(long, default_value_t = 500.0)]
    connect_rate: f64,
    /// Timeout of one CALL, in seconds.
    #[arg(long, default_value_t = 10)]
    call_timeout_s: u64,
    /// The agent's SQLite `synchronous` setting: `full` (fsync at every commit, survives
    /// power loss; the agent's default) or `normal` (survives a killed process only).
    #[arg(long, default_value = "full", value_parser = ["full", "normal"])]
    synchronous: String,
    /// Run as the echo baseline server instead (prints `ECHO_READY ADDR`).
    #[arg(long)]
    echo_server: bool,
    /// Listen address of the echo server.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    if args.echo_server {
        return bench::echo_server_main(&args.listen).await;
    }
    let echo_bin = std::env::current_exe().context("locating this program for --echo-server")?;
    bench::run(BenchConfig {
        agent_bin: args.agent_bin,
        echo_bin,
        counts: args.counts,
        duration: Duration::from_secs(args.duration_s.max(1)),
        meter_interval: Duration::from_secs(args.meter_interval_s.max(1)),
        heartbeat_interval: Duration::from_secs(args.heartbeat_interval_s.max(1)),
        connect_rate: args.connect_rate.max(1.0),
        call_timeout: Duration::from_secs(args.call_timeout_s.max(1)),
        synchronous: args.synchronous,
    })
    .await
}
