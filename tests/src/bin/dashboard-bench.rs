//! `dashboard-bench`: how fast the fleet dashboard serves its pages from a hub holding
//! `--sites` sites (the issue: every page in under 200 ms with 100 sites).
//!
//! **Fleet.** A real hub (`cloud_hub::app::start` from a config file, embedded broker,
//! SQLite file or a PostgreSQL database created for the run and dropped afterwards) gets
//! `--sites` provisioned sites with `--chargers` chargers each; `--days` of history with
//! `--sessions` sessions per charger and day (start, register and power readings every 30
//! minutes, stop), applied through the hub's own ingest (`cloud_hub::ingest::apply_batch`,
//! what the MQTT workers call); one open session per site, an offline charger per site and
//! a faulted connector on every tenth site (alerts). A tariff on every site from
//! `--priced-days` ago, priced by the hub's billing worker into CDRs; `--customers`
//! customers owning the id tags, each with an invoice.
//!
//! **Measured.** Every dashboard page and data route, `--requests` times each after two
//! warm-up requests, one request at a time (the time to the last byte of the body), as a
//! CPO operator (every site) and as a fleet manager (one customer): p50 / p99 / max. The
//! baseline in the same run: `/health` (the same server and connection, no database work
//! beyond a ping) and a static file. PostgreSQL gets `ANALYZE` after the load, as its
//! autovacuum would; SQLite none (the hub never runs it).
//!
//! ```text
//! cargo build -p tests --bin dashboard-bench
//! target/debug/dashboard-bench --sites 100                  # both databases
//! target/debug/dashboard-bench --sites 20 --days 7 --backends sqlite
//! ```
//!
//! Nothing is asserted; the table goes to stdout, progress to stderr.

#![allow(clippy::print_stdout)]

use anyhow::{Context as _, Result, anyhow, bail};
use chrono::{DateTime, Duration as TimeDelta, DurationRound as _, Utc};
use clap::Parser;
use cloud_hub::dashboard::Role;
use cloud_hub::db::{Store, Ty};
use shared_model::events::SiteEvent;
use shared_model::model::{ConnectorRef, ConnectorStatus, MeterSample, StationInfo, StopReason, TransactionOrigin};
use shared_model::sync::{EventBatch, EventEnvelope, PROTOCOL_VERSION};
use std::time::{Duration, Instant};
use tests::hubdb::Backend;

#[derive(Debug, Parser)]
#[command(name = "dashboard-bench", about = "Fleet dashboard page latency on a hub holding many sites")]
struct Args {
    /// Sites in the fleet.
    #[arg(long, default_value_t = 100)]
    sites: usize,
    /// Chargers per site.
    #[arg(long, default_value_t = 4)]
    chargers: usize,
    /// Days of history.
    #[arg(long, default_value_t = 30)]
    days: i64,
    /// Sessions per charger and day.
    #[arg(long, default_value_t = 2)]
    sessions: i64,
    /// Days (the most recent) whose sessions the billing worker prices.
    #[arg(long, default_value_t = 3)]
    priced_days: i64,
    /// Customers owning the id tags.
    #[arg(long, default_value_t = 10)]
    customers: usize,
    /// Timed requests per page.
    #[arg(long, default_value_t = 30)]
    requests: usize,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<Backend>,
    /// PostgreSQL server (a database is created there for the run).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pg_url: String,
    /// How long to wait for the billing worker, seconds.
    #[arg(long, default_value_t = 600)]
    billing_timeout_s: u64,
    /// Keep the databases for a look afterwards: the SQLite file in this folder, the
    /// PostgreSQL database not dropped (both named on stderr).
    #[arg(long)]
    keep: Option<std::path::PathBuf>,
}

/// OCPI 2.2.1 "0.25 euro per kWh + start fee".
const TARIFF: &str = r#"{"country_code": "NL", "party_id": "SPT", "id": "bench", "currency": "EUR",
  "elements": [{"price_components": [{"type": "FLAT", "price": 0.50, "vat": 20.0, "step_size": 1},
  {"type": "ENERGY", "price": 0.25, "vat": 10.0, "step_size": 1}]}], "last_updated": "2026-01-01T00:00:00Z"}"#;

struct Pg {
    admin: String,
    name: String,
}

impl Pg {
    async fn create(admin: &str) -> Result<Option<(Pg, String)>> {
        use sqlx::Connection as _;
        let mut conn = match sqlx::PgConnection::connect(admin).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("PostgreSQL is not reachable at {admin}: {e}; skipping it");
                return Ok(None);
            }
        };
        let name = format!("dashbench_{}", std::process::id());
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
            .execute(&mut conn)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await?;
        let _ = conn.close().await;
        let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
        let url = format!("{base}/{name}");
        Ok(Some((Pg { admin: admin.to_owned(), name }, url)))
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

fn sample(at: DateTime<Utc>, measurand: &str, value: String, unit: &str) -> MeterSample {
    MeterSample {
        timestamp: at,
        value,
        measurand: measurand.into(),
        phase: None,
        location: Some("Outlet".into()),
        unit: Some(unit.into()),
        context: Some("Sample.Periodic".into()),
        format: Some("Raw".into()),
    }
}

/// A site's whole history as events, in seq order from 1.
fn site_events(site: usize, args: &Args, customers_tags: &[String], now: DateTime<Utc>) -> Result<Vec<EventEnvelope>> {
    let mut events = Vec::new();
    let mut push = |at: DateTime<Utc>, event: SiteEvent| -> Result<()> {
        let seq = events.len() as u64 + 1;
        events.push(EventEnvelope::new(seq, format!("s{site}-{seq}"), at, &event)?);
        Ok(())
    };
    let day0 = now.duration_trunc(TimeDelta::days(1))? - TimeDelta::days(args.days - 1);
    let boot = day0 - TimeDelta::hours(1);
    for c in 0..args.chargers {
        let station = format!("CP-{}", c + 1);
        push(boot, SiteEvent::StationConnection { station: station.clone(), connected: true, at: boot })?;
        let info = StationInfo { vendor: "Acme".into(), model: "Wallbox 22".into(), ..StationInfo::default() };
        push(
            boot,
            SiteEvent::StationBooted { station: station.clone(), info, registration: "Accepted".into(), at: boot },
        )?;
        let status = ConnectorStatus::Available;
        let connector = ConnectorRef { evse: 1, connector: 1 };
        let event = SiteEvent::ConnectorStatus {
            station,
            connector,
            status,
            error_code: Some("NoError".into()),
            info: None,
            vendor_error_code: None,
            at: boot,
        };
        push(boot, event)?;
    }
    let mut n = 0usize;
    for day in 0..args.days {
        for c in 0..args.chargers {
            let station = format!("CP-{}", c + 1);
            let mut meter = 1_000_000 * (c as i64 + 1) + day * 100_000;
            for k in 0..args.sessions {
                let start = day0
                    + TimeDelta::days(day)
                    + TimeDelta::hours(6 + k * (16 / args.sessions.max(1)))
                    + TimeDelta::minutes((site * 7 + c * 13) as i64 % 60);
                let stop = start + TimeDelta::minutes(90);
                if stop > now {
                    continue;
                }
                n += 1;
                let uid = format!("s{site}-c{c}-d{day}-k{k}");
                let tag = &customers_tags[(site * 31 + c * 7 + n) % customers_tags.len()];
                let connector = ConnectorRef { evse: 1, connector: 1 };
                push(
                    start,
                    SiteEvent::TransactionStarted {
                        station: station.clone(),
                        transaction_uid: uid.clone(),
                        station_transaction_id: format!("{n}"),
                        connector,
                        id_tag: Some(tag.clone()),
                        meter_start_wh: Some(meter),
                        started_at: Some(start),
                        origin: TransactionOrigin::Online,
                    },
                )?;
                for half_hour in 1..=2 {
                    let at = start + TimeDelta::minutes(30 * half_hour);
                    meter += 5_500;
                    let samples = vec![
                        sample(at, "Energy.Active.Import.Register", meter.to_string(), "Wh"),
                        sample(at, "Power.Active.Import", "11000".into(), "W"),
                    ];
                    push(
                        at,
                        SiteEvent::MeterValues {
                            station: station.clone(),
                            connector,
                            transaction_uid: Some(uid.clone()),
                            samples,
                        },
                    )?;
                }
                meter += 5_500;
                push(
                    stop,
                    SiteEvent::TransactionStopped {
                        station: station.clone(),
                        transaction_uid: uid,
                        meter_stop_wh: Some(meter),
                        stopped_at: stop,
                        reason: Some(StopReason::EVDisconnected),
                        id_tag: None,
                        reconciled: false,
                    },
                )?;
            }
        }
    }
    // Now: one open session, one charger offline, every tenth site a faulted connector.
    let open = now - TimeDelta::minutes(40);
    let connector = ConnectorRef { evse: 1, connector: 1 };
    push(
        open,
        SiteEvent::TransactionStarted {
            station: "CP-1".into(),
            transaction_uid: format!("s{site}-open"),
            station_transaction_id: "999999".into(),
            connector,
            id_tag: Some(customers_tags[site % customers_tags.len()].clone()),
            meter_start_wh: Some(50_000_000),
            started_at: Some(open),
            origin: TransactionOrigin::Online,
        },
    )?;
    let reading = now - TimeDelta::minutes(10);
    push(
        reading,
        SiteEvent::MeterValues {
            station: "CP-1".into(),
            connector,
            transaction_uid: Some(format!("s{site}-open")),
            samples: vec![
                sample(reading, "Energy.Active.Import.Register", "50005500".into(), "Wh"),
                sample(reading, "Power.Active.Import", "11000".into(), "W"),
            ],
        },
    )?;
    let last = format!("CP-{}", args.chargers);
    push(
        now,
        SiteEvent::StationConnection { station: last.clone(), connected: false, at: now - TimeDelta::minutes(5) },
    )?;
    if site.is_multiple_of(10) {
        push(
            now,
            SiteEvent::ConnectorStatus {
                station: last,
                connector,
                status: ConnectorStatus::Faulted,
                error_code: Some("GroundFailure".into()),
                info: None,
                vendor_error_code: None,
                at: now - TimeDelta::minutes(3),
            },
        )?;
    }
    Ok(events)
}

async fn count(store: &Store, sql: &'static str) -> Result<i64> {
    Ok(store.fetch_opt(sql, &[], &[Ty::Int]).await?.and_then(|r| r.int(0)).unwrap_or(0))
}

/// Percent-encodes a form value.
fn encode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") }).collect()
}

/// A logged-in dashboard client.
struct Client {
    base: String,
    http: reqwest::Client,
    cookie: String,
}

impl Client {
    async fn login(base: &str, user: &str, password: &str) -> Result<Client> {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
        let res = http
            .post(format!("{base}/login"))
            .header("origin", base)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("username={}&password={}", encode(user), encode(password)))
            .send()
            .await?;
        let cookie = res
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .ok_or_else(|| anyhow!("log-in of {user} failed: {}", res.status()))?
            .to_owned();
        Ok(Client { base: base.to_owned(), http, cookie })
    }

    /// One GET to the last byte: its time and size.
    async fn time(&self, path: &str) -> Result<(Duration, usize)> {
        let started = Instant::now();
        let res = self.http.get(format!("{}{path}", self.base)).header("cookie", &self.cookie).send().await?;
        let status = res.status();
        let body = res.bytes().await?;
        let took = started.elapsed();
        if !status.is_success() {
            bail!("GET {path}: {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok((took, body.len()))
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn measure(client: &Client, who: &str, path: &str, n: usize) -> Result<()> {
    for _ in 0..2 {
        client.time(path).await?;
    }
    let mut times = Vec::with_capacity(n);
    let mut size = 0;
    for _ in 0..n {
        let (t, s) = client.time(path).await?;
        times.push(t);
        size = s;
    }
    times.sort();
    let max = times.last().copied().unwrap_or_default();
    println!(
        "| {who} | `{path}` | {} | {} | {} | {} |",
        ms(pct(&times, 0.5)),
        ms(pct(&times, 0.99)),
        ms(max),
        if size >= 10_000 { format!("{} kB", size / 1000) } else { format!("{size} B") }
    );
    Ok(())
}

async fn run(backend: Backend, args: &Args) -> Result<()> {
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
        Backend::Postgres => match Pg::create(&args.pg_url).await? {
            Some((pg, url)) => (url, Some(pg)),
            None => return Ok(()),
        },
    };
    let result = run_on(backend, &url, &dir, args).await;
    match pg {
        Some(pg) if args.keep.is_some() => eprintln!("keeping the PostgreSQL database {}", pg.name),
        Some(pg) => pg.drop_now().await,
        None => {}
    }
    result
}

async fn run_on(backend: Backend, url: &str, dir: &std::path::Path, args: &Args) -> Result<()> {
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"{url}\"\n\
         max_connections = 8\n[billing]\ninterval_s = 1\n"
    );
    let path = dir.join("cloud-hub.toml");
    std::fs::write(&path, text)?;
    let config = cloud_hub::config::Config::load(&path).map_err(|e| anyhow!("the bench's hub config: {e}"))?;
    let hub = cloud_hub::app::start(config).await.context("starting the hub")?;
    let store = hub.store.clone();
    let base = format!("http://{}", hub.http_addr);
    let now = Utc::now();
    let started = Instant::now();

    // Customers and their tags.
    let mut tags = Vec::new();
    for c in 0..args.customers {
        let id = format!("c{c:02}");
        cloud_hub::billing::invoice::add_customer(
            &store,
            Some(&id),
            &format!("Customer {c:02}"),
            None,
            None,
            None,
            now,
        )
        .await?;
        for t in 0..20 {
            let tag = format!("TAG-{c:02}-{t:02}");
            cloud_hub::billing::invoice::add_token(&store, &id, &tag, now).await?;
            tags.push(tag);
        }
    }
    // Sites, their tariff (from `priced_days` ago) and their history.
    let key = cloud_hub::auth::add_key(&store, "bench", cloud_hub::auth::Role::Admin).await?.token;
    let api = reqwest::Client::new();
    let put = api
        .put(format!("{base}/api/v1/tariffs/bench"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(TARIFF)
        .send()
        .await?;
    if !put.status().is_success() {
        bail!("PUT tariff: {}", put.text().await?);
    }
    let valid_from = (now.duration_trunc(TimeDelta::days(1))? - TimeDelta::days(args.priced_days - 1)).to_rfc3339();
    let mut events_total = 0;
    for s in 0..args.sites {
        let id = format!("site-{s:03}");
        cloud_hub::sites::add_site(&store, &format!("Site {s:03}"), Some(&id), "sitepilot-hub").await?;
        let res = api
            .post(format!("{base}/api/v1/sites/{id}/tariffs"))
            .bearer_auth(&key)
            .json(&serde_json::json!({"tariff_id": "bench", "time_zone": "Europe/Amsterdam", "valid_from": valid_from}))
            .send()
            .await?;
        if !res.status().is_success() {
            bail!("assigning the tariff: {}", res.text().await?);
        }
        let events = site_events(s, args, &tags, now)?;
        events_total += events.len();
        for chunk in events.chunks(500) {
            let batch = EventBatch { v: PROTOCOL_VERSION, site_id: id.clone(), events: chunk.to_vec() };
            cloud_hub::ingest::apply_batch(&store, &batch, Utc::now())
                .await
                .map_err(|e| anyhow!("applying a batch of {id}: {e:?}"))?;
        }
        if (s + 1).is_multiple_of(10) {
            eprintln!(
                "{backend:?}: {} sites, {events_total} events applied ({:.0} s)",
                s + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    // Billing: wait until the worker has priced every session it can.
    let to_price = count(
        &store,
        "SELECT COUNT(*) FROM sessions s WHERE s.stopped_at IS NOT NULL AND s.started_at >= \
         (SELECT MIN(valid_from) FROM site_tariffs)",
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(args.billing_timeout_s);
    loop {
        let cdrs = count(&store, "SELECT COUNT(*) FROM cdrs").await?;
        if cdrs >= to_price {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("{backend:?}: billing priced {cdrs} of {to_price} sessions before the timeout; measuring anyway");
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        eprintln!("{backend:?}: {cdrs} of {to_price} sessions priced");
    }
    let from = (now - TimeDelta::days(args.days + 1)).to_rfc3339();
    let to = (now + TimeDelta::days(1)).to_rfc3339();
    let mut invoice = None;
    for c in 0..args.customers {
        let res = api
            .post(format!("{base}/api/v1/invoices"))
            .bearer_auth(&key)
            .json(&serde_json::json!({"customer_id": format!("c{c:02}"), "from": from, "to": to}))
            .send()
            .await?;
        let body: serde_json::Value = res.json().await?;
        if invoice.is_none() {
            invoice = body["id"].as_str().map(str::to_owned);
        }
    }
    if backend == Backend::Postgres {
        // Statistics for the planner, as autovacuum gathers them after a bulk change (the
        // bench measures at once; production runs with statistics). SQLite has none
        // unless someone runs ANALYZE, and the hub does not: none here either.
        store.exec("ANALYZE", &[]).await?;
    }
    let sessions = count(&store, "SELECT COUNT(*) FROM sessions").await?;
    let samples = count(&store, "SELECT COUNT(*) FROM meter_samples").await?;
    let cdrs = count(&store, "SELECT COUNT(*) FROM cdrs").await?;
    let alerts = count(&store, "SELECT COUNT(*) FROM dashboard_alerts WHERE cleared_at IS NULL").await?;
    let invoices = count(&store, "SELECT COUNT(*) FROM invoices").await?;
    eprintln!("{backend:?}: fleet ready in {:.0} s", started.elapsed().as_secs_f64());

    let op_pw = cloud_hub::dashboard::cli::add_user(&store, "op", Role::CpoOperator, None).await?;
    let fm_pw = cloud_hub::dashboard::cli::add_user(&store, "fm", Role::FleetManager, Some("c00")).await?;
    let op = Client::login(&base, "op", &op_pw).await?;
    let fm = Client::login(&base, "fm", &fm_pw).await?;

    println!();
    println!(
        "### {} — {} sites, {} chargers, {sessions} sessions, {samples} meter samples, {cdrs} CDRs, {alerts} open \
         alerts, {invoices} invoices",
        backend.label(),
        args.sites,
        args.sites * args.chargers,
    );
    println!();
    println!("{} requests per page, one at a time, to the last byte (ms).", args.requests);
    println!();
    println!("| who | page | p50 | p99 | max | size |");
    println!("|---|---|---|---|---|---|");
    let n = args.requests;
    let site = "site-000";
    let day = now.format("%Y-%m-%d");
    let week_ago = (now - TimeDelta::days(6)).format("%Y-%m-%d");
    measure(&op, "baseline", "/health", n).await?;
    measure(&op, "baseline", "/static/dashboard.css", n).await?;
    let invoice = invoice.ok_or_else(|| anyhow!("no customer had CDRs to invoice"))?;
    let pages = [
        "/".to_owned(),
        format!("/sites/{site}"),
        format!("/sites/{site}/live"),
        "/sessions".to_owned(),
        "/sessions?page=20".to_owned(),
        format!("/sessions?site={site}&from={week_ago}&to={day}"),
        format!("/sites/{site}/sessions"),
        format!("/sessions.csv?site={site}&from={week_ago}&to={day}"),
        "/invoices".to_owned(),
        format!("/invoices/{invoice}"),
        "/alerts".to_owned(),
        "/charts".to_owned(),
        "/charts.json?range=month".to_owned(),
        format!("/charts.json?site={site}&range=week"),
        "/charts.json?range=day".to_owned(),
    ];
    for page in &pages {
        measure(&op, "cpo_operator", page, n).await?;
    }
    for page in ["/", "/sessions", "/invoices", "/alerts", "/charts.json?range=month"] {
        measure(&fm, "fleet_manager", page, n).await?;
    }
    // The whole fleet's CSV, once: a download, not a page.
    let (took, size) = op.time("/sessions.csv").await?;
    println!(
        "| cpo_operator | `/sessions.csv` (all {sessions} sessions, once) | {} | | | {} kB |",
        ms(took),
        size / 1000
    );
    hub.shutdown().await;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    println!("## dashboard-bench");
    println!();
    println!(
        "{} sites x {} chargers, {} days x {} sessions per charger and day, the last {} days priced, {} customers \
         (build: {}).",
        args.sites,
        args.chargers,
        args.days,
        args.sessions,
        args.priced_days,
        args.customers,
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    for backend in args.backends.clone() {
        run(backend, &args).await?;
    }
    Ok(())
}
