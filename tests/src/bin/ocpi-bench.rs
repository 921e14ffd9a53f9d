//! `ocpi-bench`: how fast the hub serves an eMSP crawling its Locations, and how many CDRs
//! the tariff engine prices per second and core (issue 5: p99 < 20 ms per page of 100
//! Locations at 100 000 EVSEs; >= 100 000 CDRs priced per second and core).
//!
//! **Locations.** A real hub (`cloud_hub::app::start_with` from a config file, `[ocpi]`
//! enabled, SQLite file or a PostgreSQL database created for the run and dropped
//! afterwards) gets sites x chargers x EVSEs by bulk SQL (multi-row inserts in one
//! transaction, as ingest would have left them: `sites`, `chargers`, `connectors`, and the
//! OCPI metadata in `ocpi_locations`) — first `--evses` 10 000, then grown to 100 000. The
//! hub builds the Locations itself (`ocpi::locations::refresh`, timed). The simulated eMSP
//! registers (credentials handshake, token A -> token C), then `--clients` concurrent
//! clients crawl `GET /ocpi/2.2.1/locations?offset=..&limit=..` page by page over the
//! whole set, `--rounds` times each: p50 / p99 / max per page and requests per second.
//!
//! **Baseline, same run.** A static JSON body of the size of a page, served by a route the
//! bench mounts inside the hub's OCPI router (`app::Extras`): the same server, the same
//! OCPI authentication and header middleware, the same TCP path, no database.
//!
//! **CDR pricing.** `shared_model::tariff::Pricer::price_totals` on `--cdrs` sessions
//! (1 to 4 h, meter readings every 15 minutes with a parking tail, power samples) with a
//! tariff of energy, charging time after the first hour, parking, a start fee and a
//! cheaper night window, on one thread: CDRs per second per core. Baseline in the same
//! run: `Session::validate` on the same sessions (the least the engine does per CDR).
//!
//! PostgreSQL gets `VACUUM ANALYZE` after each bulk load, as its autovacuum would;
//! SQLite none (the hub never runs it).
//!
//! ```text
//! cargo build --release -p tests --bin ocpi-bench
//! target/release/ocpi-bench                              # SQLite, and PostgreSQL if reachable
//! target/release/ocpi-bench --backends sqlite --evses 10000
//! ```
//!
//! Nothing is asserted (apart from every page answering 1000 with the full count); the
//! table goes to stdout, progress to stderr.

#![allow(clippy::print_stdout)]

use anyhow::{Context as _, Result, anyhow, bail};
use axum::response::IntoResponse as _;
use base64::Engine as _;
use chrono::{DateTime, Duration as TimeDelta, TimeZone as _, Utc};
use clap::Parser;
use cloud_hub::db::{Store, Ty, Val};
use rust_decimal::Decimal;
use shared_model::tariff::{CompiledTariff, MeterReading, Pricer, Sample, Session, Tariff};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tests::hubdb::Backend;

#[derive(Debug, Parser)]
#[command(name = "ocpi-bench", about = "OCPI Locations crawl latency at 10k/100k EVSEs, CDR pricing rate")]
struct Args {
    /// EVSE counts to measure, in increasing order (the store grows from one to the next).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    evses: Vec<usize>,
    /// Chargers per site (Location).
    #[arg(long, default_value_t = 5)]
    chargers: usize,
    /// EVSEs per charger (one connector each).
    #[arg(long, default_value_t = 2)]
    evses_per_charger: usize,
    /// Locations per page.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Concurrent crawling clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Whole crawls per client.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Sessions priced for the CDR figure.
    #[arg(long, default_value_t = 200_000)]
    cdrs: usize,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<Backend>,
    /// PostgreSQL server (a database is created there for the run and dropped after).
    #[arg(long = "postgres", default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pg_url: String,
    /// Skip the Locations part (pricing only).
    #[arg(long)]
    no_locations: bool,
    /// Skip the pricing part.
    #[arg(long)]
    no_pricing: bool,
    /// Keep the databases for a look afterwards: the SQLite file in this folder, the
    /// PostgreSQL database not dropped (both named on stderr).
    #[arg(long)]
    keep: Option<std::path::PathBuf>,
}

struct Pg {
    admin: String,
    name: String,
}

impl Pg {
    async fn create(admin: &str) -> Result<(Pg, String)> {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .with_context(|| format!("PostgreSQL is not reachable at {admin}"))?;
        let name = format!("ocpibench_{}", std::process::id());
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
            .execute(&mut conn)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await?;
        let _ = conn.close().await;
        let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
        let url = format!("{base}/{name}");
        Ok((Pg { admin: admin.to_owned(), name }, url))
    }

    async fn drop_now(self) {
        use sqlx::Connection as _;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin).await {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await {
                eprintln!("could not drop {}: {e}", self.name);
            }
            let _ = conn.close().await;
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn size(bytes: usize) -> String {
    if bytes >= 10_000 { format!("{} kB", bytes / 1000) } else { format!("{bytes} B") }
}

/// The static body the baseline route serves (set once the page size is known).
type StaticBody = Arc<std::sync::RwLock<axum::body::Bytes>>;

/// Adds sites `from..to` (each `chargers` x `evses_per_charger` EVSEs, every connector
/// Available, every charger connected) with their OCPI metadata, in one transaction.
async fn fill(store: &Store, from: usize, to: usize, args: &Args) -> Result<()> {
    let now = Utc::now();
    let mut tx = store.begin().await?;
    let mut sites = Vec::new();
    let mut chargers = Vec::new();
    let mut connectors = Vec::new();
    let mut locations = Vec::new();
    for s in from..to {
        let id = format!("site-{s:06}");
        sites.extend([
            Val::from(id.as_str()),
            Val::from(format!("Site {s}").as_str()),
            Val::from("none"),
            Val::from(now),
            Val::from(1i64),
        ]);
        for c in 0..args.chargers {
            let station = format!("CP-{}", c + 1);
            chargers.extend([Val::from(id.as_str()), Val::from(station.as_str()), Val::from(true), Val::from(now)]);
            for e in 0..args.evses_per_charger {
                connectors.extend([
                    Val::from(id.as_str()),
                    Val::from(station.as_str()),
                    Val::from((e + 1) as i64),
                    Val::from(1i64),
                    Val::from("Available"),
                    Val::from(now),
                    Val::from(now),
                ]);
            }
        }
        // Spread over the Netherlands, as a real network would be.
        let lat = format!("{:.6}", 51.0 + (s % 1000) as f64 * 0.002);
        let lon = format!("{:.6}", 4.0 + (s / 1000) as f64 * 0.01);
        locations.extend([
            Val::from(id.as_str()),
            Val::from(format!("LOC{s:06}").as_str()),
            Val::from(format!("Stationsplein {}", s % 500 + 1).as_str()),
            Val::from("Utrecht"),
            Val::from("3511 ED"),
            Val::from("NLD"),
            Val::from(lat.as_str()),
            Val::from(lon.as_str()),
            Val::from("Europe/Amsterdam"),
            Val::from("IEC_62196_T2"),
            Val::from("SOCKET"),
            Val::from("AC_3_PHASE"),
            Val::from(230i64),
            Val::from(32i64),
            Val::from(now),
        ]);
    }
    tx.insert_rows("INSERT INTO sites (id, name, mqtt_password_hash, created_at, applied_through)", 5, &sites).await?;
    tx.insert_rows("INSERT INTO chargers (site_id, station, connected, updated_at)", 4, &chargers).await?;
    tx.insert_rows(
        "INSERT INTO connectors (site_id, station, evse, connector, status, status_at, updated_at)",
        7,
        &connectors,
    )
    .await?;
    tx.insert_rows(
        "INSERT INTO ocpi_locations (site_id, location_id, address, city, postal_code, country, latitude, longitude, \
         time_zone, connector_standard, connector_format, power_type, max_voltage, max_amperage, updated_at)",
        15,
        &locations,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// One timed GET to the last byte: time, body size, and the OCPI envelope's status code
/// and `X-Total-Count` (checked by the caller).
async fn get(http: &reqwest::Client, url: &str, auth: &str) -> Result<(Duration, usize, Option<u64>)> {
    let started = Instant::now();
    let res = http.get(url).header("authorization", auth).send().await?;
    let status = res.status();
    let total = res.headers().get("x-total-count").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let body = res.bytes().await?;
    let took = started.elapsed();
    let ok = b"\"status_code\":1000,";
    if !status.is_success() || !body.windows(ok.len()).any(|w| w == ok) {
        bail!("GET {url}: {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]));
    }
    Ok((took, body.len(), total))
}

struct Figures {
    times: Vec<Duration>,
    wall: Duration,
    bytes: usize,
}

/// `clients` clients, each GETting every path of `paths` (starting at a different one)
/// `rounds` times.
async fn crawl(base: &str, auth: &str, paths: &[String], clients: usize, rounds: usize, total: u64) -> Result<Figures> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let paths = paths.to_vec();
        let (base, auth) = (base.to_owned(), auth.to_owned());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut times = Vec::new();
            let mut bytes = 0;
            let n = paths.len();
            for _ in 0..rounds {
                for k in 0..n {
                    let path = &paths[(k + c * n / clients.max(1)) % n];
                    let (t, b, got) = get(&http, &format!("{base}{path}"), &auth).await?;
                    if total > 0 && got != Some(total) {
                        bail!("GET {path}: X-Total-Count {got:?}, expected {total}");
                    }
                    times.push(t);
                    bytes = bytes.max(b);
                }
            }
            anyhow::Ok((times, bytes))
        }));
    }
    let mut times = Vec::new();
    let mut bytes = 0;
    for t in tasks {
        let (mut ts, b) = t.await??;
        times.append(&mut ts);
        bytes = bytes.max(b);
    }
    let wall = started.elapsed();
    times.sort();
    Ok(Figures { times, wall, bytes })
}

fn row(backend: &str, evses: usize, what: &str, f: &Figures, target: &str) {
    let rps = f.times.len() as f64 / f.wall.as_secs_f64();
    println!(
        "| {backend} | {evses} | {what} | {} | {} | {} | {} | {rps:.0} | {} | {target} |",
        f.times.len(),
        ms(pct(&f.times, 0.5)),
        ms(pct(&f.times, 0.99)),
        ms(f.times.last().copied().unwrap_or_default()),
        size(f.bytes),
    );
}

async fn locations(backend: Backend, args: &Args) -> Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = match &args.keep {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => temp.path().to_owned(),
    };
    let (url, pg) = match backend {
        Backend::Sqlite => {
            let file = dir.join("hub.db");
            if args.keep.is_some() {
                eprintln!("keeping the SQLite database {}", file.display());
            }
            (format!("sqlite://{}", file.display()), None)
        }
        Backend::Postgres => {
            let (pg, url) = Pg::create(&args.pg_url).await?;
            (url, Some(pg))
        }
    };
    let result = locations_on(backend, &url, &dir, args).await;
    match pg {
        Some(pg) if args.keep.is_some() => eprintln!("keeping the PostgreSQL database {}", pg.name),
        Some(pg) => pg.drop_now().await,
        None => {}
    }
    result
}

async fn locations_on(backend: Backend, url: &str, dir: &std::path::Path, args: &Args) -> Result<()> {
    let name = backend.label();
    // The hub's defaults for OCPI, with the page cap above the bench's page size.
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"{url}\"\n\
         max_connections = 8\n[billing]\nenabled = false\n[ocpi]\nenabled = true\ncountry_code = \"NL\"\n\
         party_id = \"SPT\"\npush = false\n"
    );
    let path = dir.join("cloud-hub.toml");
    std::fs::write(&path, text)?;
    let config = cloud_hub::config::Config::load(&path).map_err(|e| anyhow!("the bench's hub config: {e}"))?;
    let body: StaticBody = Arc::default();
    let served = body.clone();
    let baseline = axum::Router::new().route(
        "/ocpi/2.2.1/bench-static",
        axum::routing::get(move || {
            let body = served.read().map(|b| b.clone()).unwrap_or_default();
            async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response() }
        }),
    );
    let extras = cloud_hub::app::Extras { ocpi_routes: Some(baseline) };
    let hub = cloud_hub::app::start_with(config, extras).await.context("starting the hub")?;
    let store = hub.store.clone();
    let base = format!("http://{}", hub.http_addr);
    let ocpi = &hub.ocpi.as_ref().ok_or_else(|| anyhow!("OCPI does not run"))?.state;

    // The eMSP registers the OCPI way.
    let admin = cloud_hub::auth::add_key(&store, "bench", cloud_hub::auth::Role::Admin).await?.token;
    let api = reqwest::Client::new();
    let res = api
        .post(format!("{base}/api/v1/ocpi/partners"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"name": "emsp", "raw_tokens": false}))
        .send()
        .await?;
    let created: serde_json::Value = res.json().await?;
    let token_a = created["token_a"].as_str().ok_or_else(|| anyhow!("no token A: {created}"))?.to_owned();
    let emsp = simulators::emsp::Emsp::start(simulators::emsp::EmspConfig::default()).await?;
    emsp.register(&format!("{base}/ocpi/versions"), &token_a).await.map_err(|e| anyhow!("registering: {e:?}"))?;
    let token = emsp.cpo().ok_or_else(|| anyhow!("not registered"))?.token;
    let auth = format!("Token {}", base64::engine::general_purpose::STANDARD.encode(token));

    let per_site = args.chargers * args.evses_per_charger;
    let mut sites = 0;
    for &evses in &args.evses {
        let want = evses.div_ceil(per_site.max(1));
        let started = Instant::now();
        for chunk in (sites..want).collect::<Vec<_>>().chunks(2000) {
            if let (Some(&a), Some(&b)) = (chunk.first(), chunk.last()) {
                fill(&store, a, b + 1, args).await?;
            }
        }
        let filled = started.elapsed();
        sites = sites.max(want);
        let started = Instant::now();
        let built = cloud_hub::ocpi::locations::refresh(ocpi).await?;
        let build = started.elapsed();
        if backend == Backend::Postgres {
            // Statistics for the planner and the visibility map, as autovacuum leaves them
            // after a bulk change (the bench measures at once; production runs with both).
            store.exec("VACUUM ANALYZE", &[]).await?;
        }
        let published = store
            .fetch_opt("SELECT COUNT(*) FROM ocpi_locations WHERE body IS NOT NULL", &[], &[Ty::Int])
            .await?
            .and_then(|r| r.int(0))
            .unwrap_or(0);
        eprintln!(
            "{name}: {sites} sites ({} EVSEs) inserted in {:.1} s; {built} Locations built in {:.1} s",
            sites * per_site,
            filled.as_secs_f64(),
            build.as_secs_f64()
        );
        let total = u64::try_from(published).unwrap_or(0);
        let paths: Vec<String> = (0..sites)
            .step_by(args.limit)
            .map(|o| format!("/ocpi/2.2.1/locations?offset={o}&limit={}", args.limit))
            .collect();
        // Warm-up: one crawl by one client (also checks every page).
        crawl(&base, &auth, &paths, 1, 1, total).await?;
        let pages = crawl(&base, &auth, &paths, args.clients, args.rounds, total).await?;
        // The baseline: a page's body, static, as many requests the same way.
        let middle = format!("{base}{}", paths[paths.len() / 2]);
        let bytes = reqwest::Client::new().get(middle).header("authorization", &auth).send().await?.bytes().await?;
        let page_bytes = bytes.len();
        if let Ok(mut b) = body.write() {
            *b = bytes;
        }
        let statics = vec!["/ocpi/2.2.1/bench-static".to_owned(); paths.len()];
        crawl(&base, &auth, &statics, 1, 1, 0).await?;
        let fixed = crawl(&base, &auth, &statics, args.clients, args.rounds, 0).await?;
        println!();
        println!(
            "### {name} — {} EVSEs in {sites} Locations ({} chargers x {} EVSEs each); {} clients x {} crawls of {} \
             pages; a page ~{}",
            sites * per_site,
            args.chargers,
            args.evses_per_charger,
            args.clients,
            args.rounds,
            paths.len(),
            size(page_bytes)
        );
        println!();
        println!("| database | EVSEs | route | requests | p50 ms | p99 ms | max ms | req/s | size | target |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        let target = if sites * per_site >= 100_000 { "p99 < 20 ms" } else { "" };
        row(name, sites * per_site, &format!("`GET locations?limit={}`", args.limit), &pages, target);
        row(name, sites * per_site, "baseline: static JSON, same size, same stack", &fixed, "");
        let verdict = if target.is_empty() {
            String::new()
        } else if pct(&pages.times, 0.99) < Duration::from_millis(20) {
            " — **target met**".to_owned()
        } else {
            " — **target missed**".to_owned()
        };
        println!();
        println!(
            "Locations p99 {} ms vs baseline p99 {} ms{verdict}.",
            ms(pct(&pages.times, 0.99)),
            ms(pct(&fixed.times, 0.99))
        );
    }
    emsp.stop();
    hub.shutdown().await;
    Ok(())
}

/// A realistic AC tariff: 0.35/kWh by day, 0.25/kWh 23:00-07:00, 1.20/h charging after the
/// first hour, 6.00/h parking (max 60 s step), 0.50 start fee.
const TARIFF: &str = r#"{"country_code": "NL", "party_id": "SPT", "id": "bench", "currency": "EUR",
  "elements": [
    {"price_components": [{"type": "FLAT", "price": 0.50, "vat": 21.0, "step_size": 1}]},
    {"price_components": [{"type": "ENERGY", "price": 0.25, "vat": 21.0, "step_size": 1}],
     "restrictions": {"start_time": "23:00", "end_time": "07:00"}},
    {"price_components": [{"type": "ENERGY", "price": 0.35, "vat": 21.0, "step_size": 1}]},
    {"price_components": [{"type": "TIME", "price": 1.20, "vat": 21.0, "step_size": 60}],
     "restrictions": {"min_duration": 3600}},
    {"price_components": [{"type": "PARKING_TIME", "price": 6.00, "vat": 21.0, "step_size": 60}]}
  ], "last_updated": "2026-01-01T00:00:00Z"}"#;

/// Session `i`: 1 to 4 h charging at 7-11 kW with readings every 15 minutes, then 0 to
/// 45 minutes parked; power samples at each reading.
fn session(i: usize, day0: DateTime<Utc>) -> Result<Session> {
    let start = day0 + TimeDelta::minutes((i as i64 * 37) % (60 * 24 * 30));
    let quarters = 4 + (i % 13) as i64;
    let parked = (i % 4) as i64;
    let kw = 7 + (i % 5) as i64;
    let mut meter = Vec::new();
    let mut power = Vec::new();
    let mut wh = Decimal::from(1_000_000 + i as i64);
    for q in 0..=quarters + parked {
        let at = start + TimeDelta::minutes(15 * q);
        if q > 0 && q <= quarters {
            wh += Decimal::from(kw * 250);
        }
        meter.push(MeterReading { at, energy_wh: wh });
        power.push(Sample { at, value: Decimal::from(if q < quarters { kw * 1000 } else { 0 }) });
    }
    let end = start + TimeDelta::minutes(15 * (quarters + parked));
    Ok(Session::try_new(start, end, "Europe/Amsterdam", meter)?.with_power(power))
}

fn pricing(args: &Args) -> Result<()> {
    let tariff: Tariff = serde_json::from_str(TARIFF)?;
    let compiled = CompiledTariff::try_new(&tariff)?;
    let day0 = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).single().ok_or_else(|| anyhow!("date"))?;
    let sessions = (0..args.cdrs.min(20_000)).map(|i| session(i, day0)).collect::<Result<Vec<_>>>()?;
    let mut pricer = Pricer::new();
    // Warm-up, and a check that the tariff prices every session.
    let mut total = Decimal::ZERO;
    for s in &sessions {
        total += pricer.price_totals(&compiled, s)?.total_cost.excl_vat;
    }
    let started = Instant::now();
    let mut priced = 0usize;
    let mut sum = Decimal::ZERO;
    while priced < args.cdrs {
        for s in &sessions {
            if priced == args.cdrs {
                break;
            }
            sum += std::hint::black_box(pricer.price_totals(&compiled, std::hint::black_box(s))?).total_cost.excl_vat;
            priced += 1;
        }
    }
    let took = started.elapsed();
    let started = Instant::now();
    let mut checked = 0usize;
    while checked < args.cdrs {
        for s in &sessions {
            if checked == args.cdrs {
                break;
            }
            std::hint::black_box(s).validate()?;
            checked += 1;
        }
    }
    let base = started.elapsed();
    let rate = priced as f64 / took.as_secs_f64();
    let base_rate = checked as f64 / base.as_secs_f64();
    println!();
    println!(
        "### CDR pricing — {priced} sessions ({} distinct, 1-4 h, 15-min readings, power samples), one thread",
        sessions.len()
    );
    println!();
    println!("| what | CDRs | s | per second per core | µs each | target |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| `Pricer::price_totals` | {priced} | {:.2} | {rate:.0} | {:.2} | >= 100 000/s/core{} |",
        took.as_secs_f64(),
        1e6 / rate,
        if rate >= 100_000.0 { " — **met**" } else { " — **missed**" }
    );
    println!(
        "| baseline: `Session::validate` | {checked} | {:.2} | {base_rate:.0} | {:.2} | |",
        base.as_secs_f64(),
        1e6 / base_rate
    );
    eprintln!("(sum of the totals excl. VAT: {sum}; first pass {total})");
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    println!("## ocpi-bench");
    println!();
    println!(
        "EVSEs {:?} ({} chargers x {} EVSEs per Location), pages of {}, {} clients x {} crawls; {} CDRs priced \
         (build: {}).",
        args.evses,
        args.chargers,
        args.evses_per_charger,
        args.limit,
        args.clients,
        args.rounds,
        args.cdrs,
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    if !args.no_pricing {
        pricing(&args)?;
    }
    if !args.no_locations {
        for backend in args.backends.clone() {
            // A failing backend is reported; the bench goes on with the next.
            if let Err(e) = locations(backend, &args).await {
                println!();
                println!("**{backend:?} failed:** {e:#}");
                eprintln!("{backend:?} failed: {e:#}");
            }
        }
    }
    Ok(())
}
