//! `edge-agent`: see the library docs. This file only parses the command line.

use clap::{Parser, Subcommand};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "edge-agent", version, about = "Sitepilot edge agent: the charging site's local OCPP central system")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent.
    Run {
        /// The TOML config file (see configs/edge-agent.example.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file and report every problem with its file, line and key.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Read a charger password from standard input and print its argon2id hash for
    /// `[[chargers]] password_hash`.
    HashPassword,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match edge_agent::config::Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok (site {}, {} chargers, {} meters, {} id tags, OCPP on {}, API on {})",
                    config.display(),
                    c.site.id,
                    c.chargers.len(),
                    c.meters.len(),
                    c.authorization.tags.len(),
                    c.ocpp.listen,
                    c.api.listen
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Command::HashPassword => {
            let mut line = String::new();
            if std::io::stdin().lock().read_line(&mut line).is_err() || line.trim_end_matches(['\r', '\n']).is_empty() {
                eprintln!("hash-password: give the password on standard input");
                return ExitCode::FAILURE;
            }
            match edge_agent::auth::hash_password(line.trim_end_matches(['\r', '\n'])) {
                Ok(h) => {
                    println!("{h}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hash-password: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config } => run(config),
    }
}

fn run(path: PathBuf) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match edge_agent::config::Config::load(&path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("edge-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let running = match edge_agent::app::start(config).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("edge-agent: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        // One machine-readable line for supervisors, benchmarks and tests (ports may be 0
        // in the config), then the human one.
        println!(
            "SITEPILOT_READY {}",
            serde_json::json!({ "ocpp": running.ocpp_addr.to_string(), "api": running.api_addr.to_string() })
        );
        println!(
            "edge-agent: chargers connect to {}/{{chargePointId}}; API on {}",
            running.ocpp_url(),
            running.api_url()
        );
        wait_for_signal().await;
        tracing::info!("edge-agent: shutting down");
        running.shutdown().await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
