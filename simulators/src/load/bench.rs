//! The `ocpp-load` benchmark: for each fleet size, the same traffic against the edge
//! agent and against the bare echo server (both child processes), with latency, rate,
//! errors, RSS and CPU of the server, and a check that the agent persisted everything.

use super::client::{self, LoadConfig, LoadReport};
use super::process::{Sampler, Server, http_get, summarize};
use super::stats::{clock_ticks_per_second, open_files_limit};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// What `ocpp-load` was asked to do.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The edge-agent binary; `None` measures only the echo baseline.
    pub agent_bin: Option<PathBuf>,
    /// This program, started with `--echo-server` for the baseline.
    pub echo_bin: PathBuf,
    pub counts: Vec<usize>,
    pub duration: Duration,
    pub meter_interval: Duration,
    pub heartbeat_interval: Duration,
    pub connect_rate: f64,
    pub call_timeout: Duration,
    /// The agent's `store.synchronous`: `full` (fsync per commit, the default) or `normal`.
    pub synchronous: String,
}

/// The measurements of one server at one fleet size.
#[derive(Debug, Clone)]
pub struct TargetResult {
    pub report: LoadReport,
    pub rss_peak_kib: u64,
    pub rss_end_kib: u64,
    pub cpu_percent: f64,
    /// Persistence check lines (agent only).
    pub persistence: Option<String>,
}

impl TargetResult {
    fn p(&mut self, q: f64) -> Option<Duration> {
        self.report.latencies.quantile(q)
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".to_string(), |d| format!("{:.2}", d.as_secs_f64() * 1000.0))
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// The agent's config for one run (the keys the lead's `edge-agent run` reads).
fn agent_config(dir: &std::path::Path, heartbeat_s: u64, synchronous: &str) -> String {
    format!(
        r#"[site]
id = "load-test"

[ocpp]
listen = "127.0.0.1:0"
security_profile = 0
unknown_chargers = "accept"
heartbeat_interval_s = {heartbeat_s}

[store]
path = "{}"
synchronous = "{synchronous}"

[api]
listen = "127.0.0.1:0"

[authorization]
unknown_id_tags = "accept"
"#,
        dir.join("edge.db").display()
    )
}

fn load_config(cfg: &BenchConfig, base_url: String, n: usize) -> LoadConfig {
    let mut l = LoadConfig::new(base_url, n, cfg.duration);
    l.meter_interval = cfg.meter_interval;
    l.heartbeat_interval = cfg.heartbeat_interval;
    l.connect_rate = cfg.connect_rate;
    l.call_timeout = cfg.call_timeout;
    l
}

async fn measure(server: &Server, load: LoadConfig) -> (LoadReport, u64, u64, f64) {
    let sampler = Sampler::start(server.pid(), Duration::from_millis(250));
    let report = client::run(load).await;
    let samples = sampler.stop();
    let (peak, end, cpu) = summarize(&samples, report.window_start, report.window_end, clock_ticks_per_second());
    (report, peak, end, cpu)
}

/// Runs the load against the echo server child.
async fn run_echo(cfg: &BenchConfig, n: usize) -> Result<TargetResult> {
    let echo_bin = cfg.echo_bin.clone();
    let server = Server::spawn(&echo_bin, &["--echo-server"], "ECHO_READY", Duration::from_secs(20))
        .await
        .map_err(anyhow::Error::msg)
        .context("starting the echo server")?;
    let url = format!("ws://{}/ocpp", server.ready);
    let (report, rss_peak_kib, rss_end_kib, cpu_percent) = measure(&server, load_config(cfg, url, n)).await;
    server.stop(Duration::from_secs(5)).await;
    Ok(TargetResult { report, rss_peak_kib, rss_end_kib, cpu_percent, persistence: None })
}

/// Runs the load against a fresh agent with its own database.
async fn run_agent(cfg: &BenchConfig, bin: &std::path::Path, n: usize) -> Result<TargetResult> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let config_path = dir.path().join("edge-agent.toml");
    std::fs::write(&config_path, agent_config(dir.path(), cfg.heartbeat_interval.as_secs().max(1), &cfg.synchronous))
        .context("writing the agent config")?;
    let config_arg = config_path.to_string_lossy().into_owned();
    let mut server = Server::spawn(bin, &["run", "--config", &config_arg], "SITEPILOT_READY", Duration::from_secs(60))
        .await
        .map_err(anyhow::Error::msg)
        .context("starting the edge agent")?;
    let ready: Value = serde_json::from_str(&server.ready)
        .with_context(|| format!("SITEPILOT_READY is followed by invalid JSON: {}", server.ready))?;
    let ocpp =
        ready.get("ocpp").and_then(Value::as_str).context("SITEPILOT_READY has no \"ocpp\" address")?.to_string();
    let api = ready.get("api").and_then(Value::as_str).map(str::to_string);
    let url = format!("ws://{ocpp}/ocpp");
    let (report, rss_peak_kib, rss_end_kib, cpu_percent) = measure(&server, load_config(cfg, url, n)).await;
    if !server.is_running() {
        eprintln!("the agent exited during the run; its last output:\n{}", server.tail());
    }
    // Give the agent a moment to commit what it received last.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let persistence = Some(match api {
        Some(api) => persistence_check(&api, &report).await,
        None => "persistence: unknown (SITEPILOT_READY has no \"api\" address)".to_string(),
    });
    server.stop(Duration::from_secs(10)).await;
    drop(dir);
    Ok(TargetResult { report, rss_peak_kib, rss_end_kib, cpu_percent, persistence })
}

/// Compares `/api/v1/stats` with what the load generator sent.
async fn persistence_check(api: &str, report: &LoadReport) -> String {
    let c = &report.counts;
    let sent = format!(
        "sent: {} CALLs ({} answered), {} transactions, {} MeterValues with {} sampled values",
        c.calls_sent, c.calls_ok, c.transactions, c.meter_values, c.sampled_values
    );
    let (status, body) = match http_get(api, "/api/v1/stats", Duration::from_secs(10)).await {
        Ok(r) => r,
        Err(e) => return format!("persistence: UNKNOWN, GET /api/v1/stats failed ({e}); {sent}"),
    };
    if status != 200 {
        return format!("persistence: UNKNOWN, GET /api/v1/stats answered HTTP {status}; {sent}");
    }
    let Ok(v) = serde_json::from_str::<Value>(&body) else {
        return format!("persistence: UNKNOWN, /api/v1/stats is not JSON: {body}; {sent}");
    };
    let get = |k: &str| v.get(k).and_then(Value::as_u64);
    let (Some(logged), Some(txs), Some(samples)) = (get("messages_logged"), get("transactions"), get("meter_samples"))
    else {
        return format!(
            "persistence: UNKNOWN, /api/v1/stats lacks messages_logged/transactions/meter_samples: {body}; {sent}"
        );
    };
    // messages_logged may count only CALLs received or also our answers and its own CALLs;
    // at least every CALL we sent and got an answer to must be there.
    let msgs_ok = logged >= c.calls_ok;
    let txs_ok = txs >= c.transactions;
    let samples_ok = samples >= c.meter_values && (samples == c.meter_values || samples >= c.sampled_values);
    format!(
        "persistence: agent stats messages_logged={logged} transactions={txs} meter_samples={samples}; {sent}; \
         every message persisted: {}",
        if msgs_ok && txs_ok && samples_ok { "yes" } else { "NO" }
    )
}

/// Runs the whole benchmark and prints the table.
pub async fn run(cfg: BenchConfig) -> Result<()> {
    if cfg.counts.is_empty() {
        bail!("no fleet sizes to measure");
    }
    let limit = open_files_limit();
    println!(
        "ocpp-load: counts {:?}, window {:?}, meter values every {:?}, heartbeat every {:?}, agent store.synchronous = {}, open-files limit {}",
        cfg.counts,
        cfg.duration,
        cfg.meter_interval,
        cfg.heartbeat_interval,
        cfg.synchronous,
        limit.map_or("unknown".to_string(), |l| l.to_string())
    );
    let mut rows = Vec::new();
    for &n in &cfg.counts {
        // The generator needs one socket per charge point and the server one more each;
        // both processes have this limit. We raise nothing: skip what does not fit.
        if let Some(l) = limit
            && (n as u64) + 200 > l
        {
            println!("N={n}: skipped, needs about {} open files, the limit is {l}", n + 200);
            continue;
        }
        println!("N={n}: echo baseline …");
        let mut echo = match run_echo(&cfg, n).await {
            Ok(r) => Some(r),
            Err(e) => {
                println!("N={n}: echo baseline failed: {e:#}");
                None
            }
        };
        let mut agent = match &cfg.agent_bin {
            Some(bin) => {
                println!("N={n}: edge agent …");
                match run_agent(&cfg, bin, n).await {
                    Ok(r) => Some(r),
                    Err(e) => {
                        println!("N={n}: agent run failed: {e:#}");
                        None
                    }
                }
            }
            None => None,
        };
        for (name, r) in [("agent", agent.as_mut()), ("echo", echo.as_mut())] {
            if let Some(r) = r {
                let p99 = r.p(0.99);
                println!(
                    "N={n} {name}: {} of {n} connected, {:.1} CALLs/s, p99 {} ms, RSS peak {} MiB, CPU {:.1} %, errors {}{}",
                    r.report.connected,
                    r.report.rate(),
                    ms(p99),
                    mib(r.rss_peak_kib),
                    r.cpu_percent,
                    r.report.counts.errors(),
                    r.report.first_error.as_ref().map(|e| format!(" (first: {e})")).unwrap_or_default()
                );
                if let Some(p) = &r.persistence {
                    println!("N={n} {p}");
                }
            }
        }
        rows.push((n, agent, echo));
    }
    println!();
    println!("{}", table(&mut rows));
    Ok(())
}

type Row = (usize, Option<TargetResult>, Option<TargetResult>);

fn table(rows: &mut [Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>6} | {:>10} | {:>8} | {:>8} | {:>8} | {:>6} | {:>9} | {:>9} | {:>6} | {:>11} | {:>9} | {:>5}",
        "N",
        "rate msg/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "RSS MiB",
        "RSS end",
        "CPU %",
        "echo msg/s",
        "echo p99",
        "ratio"
    );
    let _ = writeln!(out, "{}", "-".repeat(124));
    let mut verdicts = Vec::new();
    for (n, agent, echo) in rows.iter_mut() {
        let (echo_rate, echo_p99) = match echo.as_mut() {
            Some(e) => (Some(e.report.rate()), e.p(0.99)),
            None => (None, None),
        };
        let echo_rate_s = echo_rate.map_or("-".to_string(), |r| format!("{r:.1}"));
        match agent.as_mut() {
            Some(a) => {
                let rate = a.report.rate();
                let (p50, p99, max) = (a.p(0.5), a.p(0.99), a.report.latencies.max());
                let ratio = echo_rate.filter(|r| *r > 0.0).map(|e| rate / e);
                let _ = writeln!(
                    out,
                    "{:>6} | {:>10.1} | {:>8} | {:>8} | {:>8} | {:>6} | {:>9} | {:>9} | {:>6.1} | {:>11} | {:>9} | {:>5}",
                    n,
                    rate,
                    ms(p50),
                    ms(p99),
                    ms(max),
                    a.report.counts.errors(),
                    mib(a.rss_peak_kib),
                    mib(a.rss_end_kib),
                    a.cpu_percent,
                    echo_rate_s,
                    ms(echo_p99),
                    ratio.map_or("-".to_string(), |r| format!("{r:.2}"))
                );
                if *n == 5000 {
                    let ok = p99.is_some_and(|p| p < Duration::from_millis(20)) && a.report.connected == 5000;
                    verdicts.push(format!("5000 CPs p99 < 20 ms: {}", if ok { "yes" } else { "no" }));
                }
                verdicts.push(format!(
                    "N={n} throughput >= 0.5x echo: {}",
                    match ratio {
                        Some(r) if r >= 0.5 => "yes".to_string(),
                        Some(_) => "no".to_string(),
                        None => "unknown (no echo figure)".to_string(),
                    }
                ));
            }
            None => {
                let _ = writeln!(
                    out,
                    "{:>6} | {:>10} | {:>8} | {:>8} | {:>8} | {:>6} | {:>9} | {:>9} | {:>6} | {:>11} | {:>9} | {:>5}",
                    n,
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    echo_rate_s,
                    ms(echo_p99),
                    "-"
                );
            }
        }
    }
    if !rows.iter().any(|(n, a, _)| *n == 5000 && a.is_some()) {
        verdicts.push("5000 CPs p99 < 20 ms: not measured".to_string());
    }
    for v in verdicts {
        let _ = writeln!(out, "{v}");
    }
    out
}

/// `ocpp-load --echo-server`: serves the baseline on 127.0.0.1 until killed, after
/// printing `ECHO_READY 127.0.0.1:PORT`.
pub async fn echo_server_main(listen: &str) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr().context("local address")?;
    println!("ECHO_READY {addr}");
    // Bounded: the parent stops it; should the parent vanish, it ends after two hours.
    let _ = tokio::time::timeout(Duration::from_secs(7200), super::echo::serve(listener)).await;
    Ok(())
}
