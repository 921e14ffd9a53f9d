//! `demo`: a complete demo site with one command.
//!
//! Starts the edge agent (built on demand when run through `cargo run`) on its default
//! ports (or free ones, said so, when those are taken), then simulated charge points
//! whose EVs arrive and leave over a compressed day: from the real Caltech ACN sessions
//! in `../shared/data/` when that folder is there, from a built-in generator otherwise.
//! Prints the URLs and a line of live figures every few seconds until Ctrl-C.
//!
//! A simulated grid meter (Modbus TCP, SDM630 map) reads an office building's load over
//! the same compressed day plus what the EVs draw; the agent polls it every second and
//! keeps the site under its grid limit (`--grid-limit-a`), moving power between the cars.
//! A cloud hub (SQLite, embedded MQTT broker) runs beside it; the demo provisions the site
//! with `cloud-hub site add` and the agent syncs every event to the hub.

use anyhow::{Context, Result, bail};
use clap::Parser;
use shared_model::ocpp::v16::Reason;
use shared_model::site::Wiring;
use simulators::chargepoint::{ChargePoint, ChargePointConfig, EvModel};
use simulators::load::process::{Server, http_get};
use simulators::meter::{LoadProfile, MeterServer, SimClock, SiteLoad};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "demo", about = "Run a complete simulated charging site: edge agent + simulated chargers with EVs")]
struct Args {
    /// Simulated charge points (two connectors each).
    #[arg(long, default_value_t = 4)]
    chargers: u32,
    /// The edge-agent binary (default: next to this program, built if run through cargo).
    #[arg(long)]
    agent_bin: Option<PathBuf>,
    /// EV sessions CSV (Caltech ACN format); the built-in generator is used when absent.
    #[arg(long, default_value = "../shared/data/acn_caltech_sessions.csv")]
    sessions: PathBuf,
    /// How much faster than real time the day runs (360: an hour in 10 s).
    #[arg(long, default_value_t = 360.0)]
    speed: f64,
    /// OCPP port to try first.
    #[arg(long, default_value_t = 9000)]
    ocpp_port: u16,
    /// HTTP port to try first.
    #[arg(long, default_value_t = 8081)]
    api_port: u16,
    /// Where the agent keeps its database (default: a fresh temporary folder).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    seconds: Option<u64>,
    /// The grid connection's fuse (A per phase) the balancer keeps the site under.
    #[arg(long, default_value_t = 80.0)]
    grid_limit_a: f64,
    /// Modbus TCP port of the simulated grid meter to try first.
    #[arg(long, default_value_t = 5020)]
    meter_port: u16,
    /// The hub's HTTP port to try first.
    #[arg(long, default_value_t = 8080)]
    hub_port: u16,
    /// The hub's embedded MQTT broker port to try first.
    #[arg(long, default_value_t = 1883)]
    mqtt_port: u16,
}

/// One EV visit: how long it stays plugged in (simulated seconds).
#[derive(Clone, Copy, Debug)]
struct Visit {
    plugged_s: f64,
}

fn load_visits(path: &Path) -> Option<Vec<Visit>> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (conn, disc) = (col("connection_time_utc")?, col("disconnect_time_utc")?);
    let visits: Vec<Visit> = lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let a = chrono::DateTime::parse_from_rfc3339(f.get(conn)?).ok()?;
            let b = chrono::DateTime::parse_from_rfc3339(f.get(disc)?).ok()?;
            let s = (b - a).num_seconds() as f64;
            (s > 0.0).then_some(Visit { plugged_s: s })
        })
        .take(2000)
        .collect();
    (!visits.is_empty()).then_some(visits)
}

/// Built-in generator: visits of 30 min to 9 h, a workplace-like mix.
fn generated_visits() -> Vec<Visit> {
    (0..2000u64)
        .map(|i| {
            // A fixed, well-mixed sequence (no RNG needed for a reproducible demo).
            let x = (i.wrapping_mul(2_654_435_761) % 1000) as f64 / 1000.0;
            Visit { plugged_s: 1800.0 + x * x * 30_600.0 }
        })
        .collect()
}

fn free_port(preferred: u16) -> Result<(u16, bool)> {
    if std::net::TcpListener::bind(("0.0.0.0", preferred)).is_ok() {
        return Ok((preferred, true));
    }
    let l = std::net::TcpListener::bind(("0.0.0.0", 0)).context("finding a free port")?;
    Ok((l.local_addr()?.port(), false))
}

/// The edge agent and the cloud hub binaries: next to this program (built first when run
/// through `cargo run`, same profile), or the edge agent given by `--agent-bin` with the hub
/// beside it.
fn binaries(args: &Args) -> Result<(PathBuf, PathBuf)> {
    let exe = std::env::current_exe()?;
    let here = exe.parent().context("locating this program's folder")?.to_owned();
    let dir = args.agent_bin.as_ref().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or(here);
    let name = |n: &str| dir.join(format!("{n}{}", std::env::consts::EXE_SUFFIX));
    let (agent, hub) = (args.agent_bin.clone().unwrap_or_else(|| name("edge-agent")), name("cloud-hub"));
    if args.agent_bin.is_none()
        && let Some(cargo) = std::env::var_os("CARGO")
    {
        let release = dir.file_name().is_some_and(|n| n == "release");
        eprintln!("demo: building the edge agent and the hub ({})...", if release { "release" } else { "debug" });
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "-p", "edge-agent", "--bin", "edge-agent", "-p", "cloud-hub", "--bin", "cloud-hub"]);
        if release {
            cmd.arg("--release");
        }
        if !cmd.status().context("running cargo build")?.success() {
            bail!("building the edge agent and the hub failed");
        }
    }
    for bin in [&agent, &hub] {
        if !bin.exists() {
            bail!("{} not found: build it with `cargo build -p edge-agent -p cloud-hub`", bin.display());
        }
    }
    Ok((agent, hub))
}

/// Runs `cloud-hub ARGS --config CONFIG` and returns what it printed after `prefix` on
/// one of its lines (a password or token it shows once).
fn hub_cli(hub: &Path, config: &Path, args: &[&str], prefix: &str) -> Result<String> {
    let what = format!("cloud-hub {}", args.iter().take(2).copied().collect::<Vec<_>>().join(" "));
    let out = std::process::Command::new(hub)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8(out.stdout)?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix(prefix).map(|p| p.trim().to_owned()))
        .with_context(|| format!("{what} printed no {prefix:?} line"))
}

/// Provisions the demo site at the hub (`cloud-hub site add`) and returns its MQTT password.
fn add_site(hub: &Path, config: &Path) -> Result<String> {
    hub_cli(hub, config, &["site", "add", "Sitepilot demo", "--id", "demo-site"], "MQTT password:")
}

/// An admin API key of the hub (`cloud-hub apikey add`), for the demo's billing set-up.
fn add_api_key(hub: &Path, config: &Path) -> Result<String> {
    hub_cli(hub, config, &["apikey", "add", "demo-admin", "--role", "admin"], "token:")
}

/// The fleet dashboard's admin user `demo` (`cloud-hub user add`); returns its password.
fn add_dashboard_user(hub: &Path, config: &Path) -> Result<String> {
    hub_cli(hub, config, &["user", "add", "demo", "--role", "admin"], "password:")
}

/// The demo's tariff (OCPI 2.2.1): a EUR 0.50 start fee, EUR 0.39 per kWh from 07:00 to
/// 22:00 and EUR 0.29 at night, 21 % VAT, and EUR 2.00 an hour for parking after charging.
const DEMO_TARIFF: &str = r#"{
  "country_code": "NL", "party_id": "SPD", "id": "DEMO-AC", "currency": "EUR",
  "tariff_alt_text": [{"language": "en", "text": "EUR 0.50 per session, EUR 0.39/kWh 07-22h, EUR 0.29/kWh at night, EUR 2.00/h parking"}],
  "elements": [
    {"price_components": [{"type": "FLAT", "price": 0.50, "vat": 21.0, "step_size": 1}]},
    {"price_components": [{"type": "ENERGY", "price": 0.39, "vat": 21.0, "step_size": 1}],
     "restrictions": {"start_time": "07:00", "end_time": "22:00"}},
    {"price_components": [{"type": "ENERGY", "price": 0.29, "vat": 21.0, "step_size": 1}]},
    {"price_components": [{"type": "PARKING_TIME", "price": 2.00, "vat": 21.0, "step_size": 60}]}
  ],
  "last_updated": "2026-01-01T00:00:00Z"
}"#;

/// Sets up billing at the hub over its fleet API: the tariff, given to the demo site, and
/// one customer owning every demo id tag, so that sessions close into priced CDRs.
async fn set_up_billing(hub: &str, token: &str, tags: &[String]) -> Result<()> {
    let client = reqwest::Client::new();
    let send = |req: reqwest::RequestBuilder, body: String| async move {
        let res = req
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .context("calling the hub's fleet API")?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("the hub answered {status}: {text}");
        }
        Ok::<_, anyhow::Error>(())
    };
    send(client.put(format!("{hub}/api/v1/tariffs/DEMO-AC")), DEMO_TARIFF.to_owned()).await?;
    let assign = serde_json::json!({"tariff_id": "DEMO-AC", "time_zone": "Europe/Amsterdam",
                                    "valid_from": "2000-01-01T00:00:00Z"});
    send(client.post(format!("{hub}/api/v1/sites/demo-site/tariffs")), assign.to_string()).await?;
    let customer =
        serde_json::json!({"id": "demo-fleet", "name": "Demo Fleet B.V.", "address": "Stationsplein 1, Utrecht"});
    send(client.post(format!("{hub}/api/v1/customers")), customer.to_string()).await?;
    for t in tags {
        let body = serde_json::json!({"id_tag": t}).to_string();
        send(client.post(format!("{hub}/api/v1/customers/demo-fleet/id-tags")), body).await?;
    }
    Ok(())
}

/// How many CDRs the hub has issued and the newest one, as a line for the console.
async fn cdr_line(hub: &str, token: &str) -> Option<String> {
    let res = reqwest::Client::new()
        .get(format!("{hub}/api/v1/cdrs?limit=1000"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    let page: serde_json::Value = res.json().await.ok()?;
    let items = page["items"].as_array()?;
    let more = if page["next_offset"].is_null() { "" } else { "+" };
    let Some(last) = items.first() else { return Some("  billing: no CDRs yet".to_owned()) };
    Some(format!(
        "  billing: {}{more} CDRs | newest: {} {} kWh, EUR {} incl. VAT",
        items.len(),
        last["station"].as_str().unwrap_or("?"),
        last["total_energy_kwh"].as_str().unwrap_or("?"),
        last["total_cost_incl_vat"]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .map_or("?".into(), |v| format!("{v:.2}")),
    ))
}

fn hash_password(bin: &Path, password: &str) -> Result<String> {
    use std::io::Write;
    let mut child = std::process::Command::new(bin)
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(format!("{password}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("edge-agent hash-password failed");
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// How charger `n` is wired: rotated so single-phase load spreads over the phases.
fn wiring(n: u32) -> Wiring {
    match n % 3 {
        1 => Wiring::L1_L2_L3,
        2 => Wiring::L2_L3_L1,
        _ => Wiring::L3_L1_L2,
    }
}

/// The id tag of a driver who uses `connector` of charger `n` (one tag per connector, so
/// no driver ever has two sessions at once, which the agent would answer ConcurrentTx).
fn tag(n: u32, connector: u32) -> String {
    format!("DEMO-{n:02}-{connector}")
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let (bin, hub_bin) = binaries(&args)?;
    let (visits, source) = match load_visits(&args.sessions) {
        Some(v) => {
            let source = format!("{} real sessions from {}", v.len(), args.sessions.display());
            (v, source)
        }
        None => (generated_visits(), "the built-in session generator (no data file found)".to_owned()),
    };
    let tmp = tempfile::tempdir()?;
    let dir = args.data_dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let (ocpp_port, ocpp_default) = free_port(args.ocpp_port)?;
    let (api_port, api_default) = free_port(args.api_port)?;
    if !ocpp_default {
        eprintln!("demo: port {} is taken; OCPP uses {ocpp_port} instead", args.ocpp_port);
    }
    if !api_default {
        eprintln!("demo: port {} is taken; the API uses {api_port} instead", args.api_port);
    }
    let (meter_port, meter_default) = free_port(args.meter_port)?;
    if !meter_default {
        eprintln!("demo: port {} is taken; the simulated meter uses {meter_port} instead", args.meter_port);
    }
    let (hub_port, hub_default) = free_port(args.hub_port)?;
    if !hub_default {
        eprintln!("demo: port {} is taken; the hub's HTTP uses {hub_port} instead", args.hub_port);
    }
    let (mqtt_port, mqtt_default) = free_port(args.mqtt_port)?;
    if !mqtt_default {
        eprintln!("demo: port {} is taken; the hub's MQTT broker uses {mqtt_port} instead", args.mqtt_port);
    }
    // The hub: SQLite and its embedded broker, the demo site provisioned.
    let hub_config = dir.join("cloud-hub.toml");
    std::fs::write(
        &hub_config,
        format!(
            "[http]\nlisten = \"0.0.0.0:{hub_port}\"\n\n[mqtt]\nembedded = true\nlisten = \"0.0.0.0:{mqtt_port}\"\n\n\
             [database]\nurl = \"sqlite://{}\"\n",
            dir.join("hub.db").display()
        ),
    )?;
    let site_password = add_site(&hub_bin, &hub_config)?;
    let hub_token = add_api_key(&hub_bin, &hub_config)?;
    let dashboard_password = add_dashboard_user(&hub_bin, &hub_config)?;
    let hub_arg = hub_config.to_string_lossy().into_owned();
    let hub = Server::spawn(&hub_bin, &["run", "--config", &hub_arg], "SITEPILOT_READY", Duration::from_secs(20))
        .await
        .map_err(anyhow::Error::msg)?;
    let hub_url = format!("http://127.0.0.1:{hub_port}");
    let tags: Vec<String> = (1..=args.chargers).flat_map(|n| (1..=2).map(move |c| tag(n, c))).collect();
    set_up_billing(&hub_url, &hub_token, &tags).await.context("setting up billing at the hub")?;
    // The building: an office over the same compressed day, starting at 07:00.
    let speed = args.speed.max(1.0);
    let site = SiteLoad::new(
        LoadProfile::office(),
        SimClock::compressed(chrono::NaiveTime::from_hms_opt(7, 0, 0).unwrap_or_default(), speed),
    );
    let meter = MeterServer::bind(std::net::SocketAddr::from(([127, 0, 0, 1], meter_port)), site.clone())
        .await
        .with_context(|| format!("starting the simulated meter on port {meter_port}"))?;

    let mut config = format!(
        "[site]\nid = \"demo-site\"\nname = \"Sitepilot demo\"\n\n[ocpp]\nlisten = \"0.0.0.0:{ocpp_port}\"\n\
         security_profile = 1\nheartbeat_interval_s = 60\n\n[store]\npath = \"{}\"\nsynchronous = \"normal\"\n\n\
         [api]\nlisten = \"0.0.0.0:{api_port}\"\n\n[authorization]\nunknown_id_tags = \"reject\"\n\n\
         [sync]\nbroker = \"mqtt://127.0.0.1:{mqtt_port}\"\nusername = \"demo-site\"\npassword = \"{site_password}\"\n\n\
         [balancer]\nmin_pause_s = 20\nmin_run_s = 20\nsettle_ms = 4000\n\n\
         [[circuits]]\nid = \"grid\"\nlimit_a = {limit}\nsafe_current_a = {safe}\n\n\
         [[meters]]\nid = \"grid-meter\"\nmap = \"eastron-sdm630\"\ntcp = \"127.0.0.1:{meter_port}\"\ncircuit = \"grid\"\n\
         period_ms = 1000\n",
        dir.join("edge.db").display(),
        limit = args.grid_limit_a,
        safe = (args.grid_limit_a / 2.0).floor(),
    );
    for n in 1..=args.chargers {
        for connector in 1..=2 {
            config.push_str(&format!(
                "\n[[authorization.tags]]\nid_tag = \"{}\"\nstatus = \"Accepted\"\n",
                tag(n, connector)
            ));
        }
    }
    let mut passwords = Vec::new();
    for i in 1..=args.chargers {
        let id = format!("DEMO-{i:02}");
        let password = format!("demo-password-{i:02}");
        config.push_str(&format!(
            "\n[[chargers]]\nid = \"{id}\"\nname = \"Bay {i}\"\npassword_hash = \"{}\"\ncircuit = \"grid\"\n\
             connectors = 2\nmax_current_a = 32\nwiring = \"{}\"\nsafe_current_a = 0\n",
            hash_password(&bin, &password)?,
            wiring(i),
        ));
        passwords.push((id, password));
    }
    let config_path = dir.join("edge-agent.toml");
    std::fs::write(&config_path, config)?;
    let config_arg = config_path.to_string_lossy().into_owned();
    let agent = Server::spawn(&bin, &["run", "--config", &config_arg], "SITEPILOT_READY", Duration::from_secs(20))
        .await
        .map_err(anyhow::Error::msg)?;

    let ocpp_url = format!("ws://127.0.0.1:{ocpp_port}/ocpp");
    let api = format!("127.0.0.1:{api_port}");
    println!("Sitepilot demo site is running.");
    println!("  edge agent API     http://{api}/api/v1/chargers   (health: /health, metrics: /metrics)");
    println!("  OCPP endpoint      {ocpp_url}/{{chargePointId}}");
    println!("  sessions           {source}, one simulated hour every {:.0} s", 3600.0 / args.speed);
    println!("  load balancing     http://{api}/api/v1/balancer   (grid limit {} A per phase)", args.grid_limit_a);
    println!(
        "  grid meter         http://{api}/api/v1/meters     (simulated SDM630 on Modbus TCP 127.0.0.1:{meter_port})"
    );
    println!(
        "  cloud hub          http://127.0.0.1:{hub_port}/health   (metrics: /metrics; MQTT broker on {mqtt_port})"
    );
    println!("  fleet dashboard    {hub_url}/   (log in as demo / {dashboard_password})");
    println!("  sync to the hub    http://{api}/api/v1/sync");
    println!("  installer page     http://{api}/");
    println!("  priced CDRs        {hub_url}/api/v1/cdrs   (Authorization: Bearer {hub_token})");
    println!(
        "  invoices           POST {hub_url}/api/v1/invoices {{\"customer_id\": \"demo-fleet\", \"from\": ..., \"to\": ...}}"
    );
    println!("  agent config       {config_arg}");
    println!("Ctrl-C stops it.");

    let visits = Arc::new(visits);
    let mut tasks = Vec::new();
    for (n, (id, password)) in passwords.into_iter().enumerate() {
        let cfg = ChargePointConfig::new(&id, &ocpp_url)
            .with_password(password)
            .with_connectors(2)
            .with_meter_interval(Duration::from_secs(5))
            .with_ev(EvModel::default().with_max_current(if n % 2 == 0 { 16.0 } else { 32.0 }));
        let cp = ChargePoint::connect(cfg).await.with_context(|| format!("connecting {id}"))?;
        cp.boot().await?;
        site.attach(&cp, wiring(n as u32 + 1));
        let cp = Arc::new(cp);
        for connector in 1..=2u32 {
            let (cp, visits) = (cp.clone(), visits.clone());
            let offset = n * 2 + connector as usize;
            let tag = tag(n as u32 + 1, connector);
            tasks.push(tokio::spawn(async move {
                let mut k = offset;
                loop {
                    let idle = 3.0 + (k * 7 % 13) as f64;
                    tokio::time::sleep(Duration::from_secs_f64(idle)).await;
                    let visit = visits[k % visits.len()];
                    k += 17;
                    if cp.plug_in(connector).await.is_err() || cp.start_transaction(connector, &tag).await.is_err() {
                        continue;
                    }
                    let stay = (visit.plugged_s / speed).clamp(15.0, 180.0);
                    tokio::time::sleep(Duration::from_secs_f64(stay)).await;
                    let _ = cp.stop_transaction(connector, Reason::EVDisconnected).await;
                    let _ = cp.unplug(connector).await;
                }
            }));
        }
    }

    let until = args.seconds.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        if let Ok((200, body)) = http_get(&api, "/api/v1/stats", Duration::from_secs(2)).await
            && let Ok(s) = serde_json::from_str::<serde_json::Value>(&body)
        {
            println!(
                "chargers {} | active sessions {} | sessions so far {} | meter samples {} | OCPP messages {}",
                s["chargers"], s["active_transactions"], s["transactions"], s["meter_samples"], s["messages_logged"]
            );
        }
        if let Ok((200, body)) = http_get(&api, "/api/v1/sync", Duration::from_secs(2)).await
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&body)
        {
            println!(
                "  hub link {} | events recorded {} | waiting to sync {} | hub applied through {}",
                if v["connected"] == true { "up" } else { "down" },
                v["outbox"]["newest_seq"],
                v["outbox"]["pending"],
                v["last_ack"]
            );
        }
        if let Some(line) = cdr_line(&hub_url, &hub_token).await {
            println!("{line}");
        }
        let grid = site.currents(std::time::Instant::now());
        let setpoints = match http_get(&api, "/api/v1/balancer", Duration::from_secs(2)).await {
            Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|b| b["allocation"]["setpoints"].as_array().cloned())
                .map(|sps| {
                    sps.iter()
                        .filter(|sp| sp["session_started_ms"].is_u64())
                        .map(|sp| {
                            let a = sp["current_a"].as_f64().unwrap_or(0.0);
                            format!(
                                "{} {}",
                                sp["charger"].as_str().unwrap_or("?"),
                                if a > 0.0 { format!("{a:.1} A") } else { "paused".into() }
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default(),
            _ => String::new(),
        };
        println!(
            "  grid {:.0}/{:.0}/{:.0} A of {:.0} A (building {:.0}/{:.0}/{:.0} A) | {setpoints}",
            grid.total[0], grid.total[1], grid.total[2], args.grid_limit_a, grid.base[0], grid.base[1], grid.base[2]
        );
        if until.is_some_and(|u| tokio::time::Instant::now() >= u) {
            break;
        }
    }
    for t in tasks {
        t.abort();
    }
    agent.stop(Duration::from_secs(5)).await;
    hub.stop(Duration::from_secs(5)).await;
    meter.shutdown();
    println!("demo stopped.");
    Ok(())
}
