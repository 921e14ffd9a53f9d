//! `emsp-sim`: a simulated OCPI 2.2.1 eMSP. Prints `EMSP_READY <versions URL> <token A>`
//! once it listens (the token A lets a CPO register with it); with `--register-with` it
//! registers with a CPO, crawls its locations and prints what it found, and with
//! `--start-session LOCATION_ID` it then sends a START_SESSION (`--evse-uid`, `--token`)
//! and prints the CPO's answer (`COMMAND <json>`) and the CommandResult POSTed to its
//! response URL (`RESULT <json>`). Every push it receives is printed as
//! `PUSH <method> <path>`. Ctrl-C stops it.
//!
//! ```text
//! emsp-sim --listen 127.0.0.1:0 --register-with http://127.0.0.1:8080/ocpi/versions --token-a TOKEN \
//!          --allow TAG-1 --block TAG-2
//! ```

use anyhow::{Context, Result};
use clap::Parser;
use simulators::emsp::{AuthAnswer, Emsp, EmspConfig};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "emsp-sim", about = "Simulated OCPI 2.2.1 eMSP: registers with a CPO, crawls, receives pushes")]
struct Args {
    /// Address to listen on; port 0 lets the OS choose (the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Our ISO 3166-1 alpha-2 country code.
    #[arg(long, default_value = "NL")]
    country_code: String,
    /// Our party id.
    #[arg(long, default_value = "EMS")]
    party_id: String,
    /// Send tokens raw instead of base64 (like an OCPI 2.1-era peer).
    #[arg(long)]
    raw_tokens: bool,
    /// A CPO's versions URL to register with (needs --token-a).
    #[arg(long, requires = "token_a")]
    register_with: Option<String>,
    /// The token A the CPO gave us.
    #[arg(long)]
    token_a: Option<String>,
    /// Page size when crawling the CPO's locations.
    #[arg(long, default_value_t = 100)]
    limit: u64,
    /// Token uids to answer ALLOWED in real-time authorization.
    #[arg(long)]
    allow: Vec<String>,
    /// Token uids to answer BLOCKED in real-time authorization.
    #[arg(long)]
    block: Vec<String>,
    /// After registering: START_SESSION at this Location.
    #[arg(long, requires = "register_with")]
    start_session: Option<String>,
    /// The EVSE of the START_SESSION (default: the CPO chooses).
    #[arg(long, requires = "start_session")]
    evse_uid: Option<String>,
    /// The uid of the token to start with.
    #[arg(long, default_value = "EMSP-APP-1")]
    token: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let args = Args::parse();
    let emsp = Emsp::start(EmspConfig {
        listen: args.listen,
        country_code: args.country_code,
        party_id: args.party_id,
        raw_tokens: args.raw_tokens,
        ..EmspConfig::default()
    })
    .await
    .with_context(|| format!("cannot listen on {}", args.listen))?;
    for uid in &args.allow {
        emsp.set_authorization(uid, AuthAnswer::Allowed);
    }
    for uid in &args.block {
        emsp.set_authorization(uid, AuthAnswer::Blocked);
    }
    println!("EMSP_READY {} {}", emsp.versions_url(), emsp.issue_token_a());
    if let (Some(url), Some(token)) = (&args.register_with, &args.token_a) {
        let cpo = emsp.register(url, token).await.context("registering with the CPO")?;
        println!("REGISTERED {}*{} at {}", cpo.country_code, cpo.party_id, cpo.versions_url);
        let crawl = emsp.crawl_locations(Some(args.limit), None).await.context("crawling the locations")?;
        let evses: usize =
            crawl.locations.iter().map(|l| l.get("evses").and_then(|e| e.as_array()).map_or(0, Vec::len)).sum();
        println!("CRAWLED {} locations, {evses} EVSEs, {} pages", crawl.locations.len(), crawl.pages.len());
    }
    if let Some(location) = &args.start_session {
        let url = emsp.response_url("commands");
        let mut body =
            serde_json::json!({"response_url": url, "token": emsp.token(&args.token), "location_id": location});
        if let Some(evse) = &args.evse_uid {
            body["evse_uid"] = serde_json::json!(evse);
        }
        let answer = emsp.command("START_SESSION", &body).await.context("sending START_SESSION")?;
        println!("COMMAND {}", answer.body);
        let timeout = answer.body["data"]["timeout"].as_u64().unwrap_or(60);
        match emsp.wait_for_result(&url, Duration::from_secs(timeout + 10)).await {
            Some(result) => println!("RESULT {result}"),
            None => println!("RESULT none within {} s", timeout + 10),
        }
    }
    let mut seen = 0;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                let pushes = emsp.pushes();
                for p in pushes.iter().skip(seen) {
                    println!("PUSH {} {}", p.method, p.path);
                }
                seen = pushes.len();
            }
        }
    }
    Ok(())
}
