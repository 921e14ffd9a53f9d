//! `sync-bench`: how fast sites' events get from the edge to the hub (issue 4).
//!
//! **Backlog.** A real edge agent (in this process, `edge_agent::app::start`, SQLite
//! file) runs without `[sync]` while `--chargers` chargers report `--hours` of sessions
//! and meter values every 60 s; the events are recorded through the agent's own store
//! functions (those its OCPP handlers call), so its outbox holds exactly what an offline
//! site accumulates. The agent is then started again with `[sync]` pointing at the hub,
//! and the clock runs from that start until the hub stands at the last seq and the
//! outbox is empty: seconds to catch up and events/s. Target: 24 h of 50 chargers in
//! under 30 s.
//!
//! **Ingest.** `--sites` provisioned sites (each its own MQTT credentials from
//! `cloud_hub::sites::add_site`) publish `--events-per-site` events of `--site-chargers`
//! chargers as `EventBatch`es cut by the agent's rules, each keeping `--window` batches
//! unacknowledged as the agent does, until the hub acked everything: events/s applied.
//!
//! **Flow control.** The hub grants each site a share of `--hub-inflight-budget-bytes`
//! with its acks; the simulated sites keep within it as the agent does, and their batches
//! are cut at the share all sites sending get (the agent cuts to what its grant leaves).
//!
//! **Baselines, same run, same embedded broker, same payloads, QoS 1.** One publisher to
//! one subscriber (`--raw-window` messages in flight), and every site publishing its
//! batches to one subscriber logged in as the hub (`--window` per site within the fair
//! share of the budget, as in the ingest), on a `up/bench` topic the hub does not
//! subscribe to; and the same events unbatched, each a message of its own, one publisher
//! to one subscriber (the broker's message rate). The ingest rate is printed as a ratio
//! of all three. Target: ingest at least a third of the raw broker rate (the first).
//!
//! **Ceiling, same run.** Before any hub starts, the hub's decoding alone
//! (`cloud_hub::ingest::parse_batch` and every envelope's typed event) of the ingest's
//! batches on one core, with no broker and no database: no ingest can beat it per core.
//!
//! Each `--backends` entry gets a hub of its own (SQLite file; a PostgreSQL database
//! created at `--pg-url`'s server for the run and dropped afterwards).
//!
//! ```text
//! cargo build --release -p tests --bin sync-bench
//! target/release/sync-bench --hours 2 --sites 20 --events-per-site 500 --timeout-s 60   # a minute or two
//! target/release/sync-bench                                                             # the issue's sizes
//! ```
//!
//! A phase that has not finished after `--timeout-s` is reported as such, with how far it
//! got. Progress goes to stderr, the tables to stdout. Nothing is asserted about time.

mod sync_bench;

use anyhow::{Context as _, Result};
use clap::Parser;
use std::sync::Arc;
use std::time::{Duration, Instant};
use sync_bench::backlog::{self, BacklogRun, BacklogSpec};
use sync_bench::batches::{self, Batch, Cut, SiteSpec};
use sync_bench::day::Measurands;
use sync_bench::decode::{self, Decoded};
use sync_bench::flow::SendPlan;
use sync_bench::hub::{Backend, Hub, HubTuning};
use sync_bench::load::{self, Run};
use sync_bench::report::{Table, group, mb, rate, ratio, secs};

#[derive(Debug, Parser)]
#[command(
    name = "sync-bench",
    about = "Edge-to-hub sync: a 24 h offline backlog drained into the hub, hub ingest from many sites into \
             SQLite and PostgreSQL, beside the raw broker rate measured in the same run"
)]
struct Args {
    /// Chargers of the backlog site.
    #[arg(long, default_value_t = 50)]
    chargers: usize,
    /// Hours the backlog site was offline.
    #[arg(long, default_value_t = 24)]
    hours: u32,
    /// Simulated sites publishing at once for the ingest figure.
    #[arg(long, default_value_t = 100)]
    sites: usize,
    /// Events each simulated site publishes.
    #[arg(long, default_value_t = 1000)]
    events_per_site: u64,
    /// Chargers of each simulated site (its event mix).
    #[arg(long, default_value_t = 10)]
    site_chargers: usize,
    /// Samples per MeterValues: `sim` (the charge-point simulator's set, 9 to 10) or
    /// `energy` (the register only).
    #[arg(long, value_enum, default_value_t = Measurands::Sim)]
    measurands: Measurands,
    /// Events per batch (the agent's `[sync] batch_size`; its default).
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
    /// Event payload bytes per batch (the agent's `[sync] max_batch_bytes`; its default).
    #[arg(long, default_value_t = 1024 * 1024)]
    max_batch_bytes: usize,
    /// Unacknowledged batches per site (the agent's `[sync] max_inflight_batches`).
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// Messages in flight for the one-publisher baseline (the broker keeps 64 MB per
    /// filter: more than that unread and the subscriber misses messages).
    #[arg(long, default_value_t = 32)]
    raw_window: usize,
    /// Messages of the baselines (the ingest's batches, repeated as needed): enough for a
    /// run of a few seconds.
    #[arg(long, default_value_t = 2000)]
    raw_messages: usize,
    /// Events of the per-event baseline: the ingest's events, each published as a
    /// message of its own (a batch of one), one publisher to one subscriber with
    /// `--raw-window` in flight.
    #[arg(long, default_value_t = 30_000)]
    raw_single_events: u64,
    /// A simulated site sends again from its last ack after this long without one (the
    /// agent's `ack_timeout_s` default).
    #[arg(long, default_value_t = 30)]
    ack_timeout_s: u64,
    /// Hubs to run, comma separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<Backend>,
    /// PostgreSQL server (a database is created on it for each run and dropped).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pg_url: String,
    /// The hub's `[ingest] workers` (default: the hub's default).
    #[arg(long)]
    hub_workers: Option<usize>,
    /// The hub's `[database] max_connections` (default: the hub's default).
    #[arg(long)]
    hub_db_connections: Option<u32>,
    /// The hub's `[mqtt] inflight_budget_bytes` (its default): what all sites together
    /// may have in flight. The ingest's batches are cut at the share of it each site gets
    /// (as the agent cuts them to its grant), and the raw fan-in baseline keeps within
    /// the same share.
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    hub_inflight_budget_bytes: u64,
    /// The hub's `[mqtt] inflight_budget_batches` (its default).
    #[arg(long, default_value_t = 800)]
    hub_inflight_budget_batches: u32,
    /// Give up on a phase after this long.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
    /// Skip the backlog drain.
    #[arg(long)]
    no_backlog: bool,
    /// Skip the ingest and its baselines.
    #[arg(long)]
    no_ingest: bool,
    /// Skip the raw broker baselines.
    #[arg(long)]
    no_baselines: bool,
}

/// Runs of the per-event baseline, each with a publisher of its own; the fastest is
/// reported (a baseline is what the broker can do; its rate varies from run to run).
const SINGLE_ROUNDS: usize = 3;

/// The figures of one hub.
struct HubRun {
    backend: Backend,
    raw_one: Option<Run>,
    raw_fan_in: Option<Run>,
    raw_single: Option<Run>,
    backlog: Option<BacklogRun>,
    ingest: Option<Run>,
    /// Ingest sanity: events stored for the sites, of them with effects; meter samples.
    stored: (u64, u64, u64),
    /// Ingest batches at the hub: applied, duplicate, gap.
    outcomes: (u64, u64, u64),
}

fn main() -> Result<()> {
    let args = Args::parse();
    // The hub's, the agent's and the broker's logs, when asked for (`RUST_LOG=cloud_hub=debug`).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    // Each of the ingest's sites gets this share of the hub's budget (once all are
    // sending), and the agent cuts its batches to what its grant leaves.
    let share = fair_share(&args);
    let cut = Cut {
        batch_size: args.batch_size,
        max_batch_bytes: args.max_batch_bytes.min(usize::try_from(share.bytes).unwrap_or(usize::MAX)),
    };
    let site_ids: Vec<String> = (0..args.sites).map(|i| format!("site-{i:03}")).collect();

    let site_batches: Vec<Arc<Vec<Batch>>> = if args.no_ingest {
        Vec::new()
    } else {
        eprintln!("encoding {} events for each of {} sites", args.events_per_site, args.sites);
        let t = Instant::now();
        let (ids, events, chargers, measurands) =
            (site_ids.clone(), args.events_per_site, args.site_chargers, args.measurands);
        let start = chrono::Utc::now() - chrono::Duration::days(1);
        let built = tokio::task::spawn_blocking(move || {
            ids.iter()
                .enumerate()
                .map(|(i, id)| {
                    let spec = SiteSpec { chargers, events, start, seed: i as u64 + 1, measurands, cut };
                    batches::site_batches(id, &shared_model::sync::Topic::Events.of(id), &spec).map(Arc::new)
                })
                .collect::<Result<Vec<_>>>()
        })
        .await
        .context("encoding task")??;
        eprintln!("  encoded in {:.1} s", t.elapsed().as_secs_f64());
        built
    };

    // The per-event baseline's messages, encoded once for every hub.
    let singles = Arc::new(if args.no_ingest || args.no_baselines {
        Vec::new()
    } else {
        single_event_batches(&args, site_batches.len())?
    });

    // Before any hub runs, so that nothing else takes the core.
    let decoded = if args.no_ingest || args.no_baselines {
        None
    } else {
        eprintln!("baseline: decoding alone (one core, no broker, no database)");
        let (ids, batches) = (site_ids.clone(), site_batches.clone());
        Some(tokio::task::spawn_blocking(move || decode::decode(&ids, &batches, 3)).await.context("decoding task")??)
    };

    let tuning = HubTuning {
        workers: args.hub_workers,
        db_connections: args.hub_db_connections,
        inflight_budget_bytes: args.hub_inflight_budget_bytes,
        inflight_budget_batches: args.hub_inflight_budget_batches,
    };
    let mut runs = Vec::new();
    // A backend that fails (its server away, a client that cannot connect under load) is
    // reported with its error after the tables; the others still run.
    let mut failed: Vec<(Backend, String)> = Vec::new();
    for backend in args.backends.clone() {
        eprintln!("== hub on {}", backend.label());
        let dir = tempfile::tempdir().context("a temporary directory")?;
        let hub = match Hub::start(backend, dir.path(), &args.pg_url, &tuning).await {
            Ok(Some(hub)) => hub,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("  {} failed to start: {e:#}", backend.label());
                failed.push((backend, format!("the hub did not start: {e:#}")));
                continue;
            }
        };
        let result = run_hub(&args, &hub, &site_ids, &site_batches, &singles).await;
        hub.stop().await;
        match result {
            Ok(run) => runs.push(run),
            Err(e) => {
                eprintln!("  {} failed: {e:#}", backend.label());
                failed.push((backend, format!("{e:#}")));
            }
        }
    }

    print_report(&args, cpus, &site_batches, decoded.as_ref(), &runs);
    if !failed.is_empty() {
        println!();
        println!("## Backends that failed (no figures)");
        println!();
        for (backend, why) in &failed {
            println!("- {}: {why}", backend.label());
        }
    }
    Ok(())
}

/// What the hub grants each of the ingest's sites while all of them are sending.
fn fair_share(args: &Args) -> shared_model::sync::Window {
    let sites = args.sites.max(1) as u64;
    shared_model::sync::Window {
        batches: (u64::from(args.hub_inflight_budget_batches) / sites).max(1) as u32,
        bytes: (args.hub_inflight_budget_bytes / sites).max(cloud_hub::flow::MIN_SHARE_BYTES),
    }
}

async fn run_hub(
    args: &Args,
    hub: &Hub,
    site_ids: &[String],
    site_batches: &[Arc<Vec<Batch>>],
    singles: &Arc<Vec<Batch>>,
) -> Result<HubRun> {
    let timeout = Duration::from_secs(args.timeout_s);
    let ack_timeout = Duration::from_secs(args.ack_timeout_s);
    let mut out = HubRun {
        backend: hub.backend,
        raw_one: None,
        raw_fan_in: None,
        raw_single: None,
        backlog: None,
        ingest: None,
        stored: (0, 0, 0),
        outcomes: (0, 0, 0),
    };

    let mut sites = Vec::new();
    if !args.no_ingest {
        eprintln!("provisioning and connecting {} sites", site_ids.len());
        let creds = hub.add_sites("site", site_ids.len()).await?;
        sites = load::connect_sites(hub, &creds, site_batches).await?;
    }
    if !args.no_ingest && !args.no_baselines {
        eprintln!("baseline: raw broker, 1 publisher -> 1 subscriber");
        let raw_creds = hub.add_sites("raw", 1).await?;
        let all: Vec<Batch> =
            site_batches.iter().flat_map(|b| b.iter().cloned()).cycle().take(args.raw_messages).collect();
        let plan = SendPlan { window: args.raw_window, grant: None, ack_timeout, deadline: Instant::now() + timeout };
        if let Some(creds) = raw_creds.first() {
            out.raw_one = Some(load::raw_one_to_one(hub, creds, Arc::new(all), plan).await?);
        }

        eprintln!("baseline: raw broker, {} publishers -> 1 subscriber", sites.len());
        let plan = SendPlan {
            window: args.window,
            grant: Some(fair_share(args)),
            ack_timeout,
            deadline: Instant::now() + timeout,
        };
        let total: usize = site_batches.iter().map(|b| b.len()).sum();
        let rounds = args.raw_messages.div_ceil(total.max(1)).max(1);
        out.raw_fan_in = Some(load::raw_fan_in(hub, &sites, rounds, plan).await?);

        eprintln!("baseline: raw broker, one event per message, 1 publisher -> 1 subscriber (best of {SINGLE_ROUNDS})");
        for creds in hub.add_sites("raw-single", SINGLE_ROUNDS).await? {
            let plan =
                SendPlan { window: args.raw_window, grant: None, ack_timeout, deadline: Instant::now() + timeout };
            let run = load::raw_one_to_one(hub, &creds, singles.clone(), plan).await?;
            let rate = |r: &Run| r.per_second(r.events).unwrap_or(0.0);
            if out.raw_single.as_ref().is_none_or(|best| rate(&run) > rate(best)) {
                out.raw_single = Some(run);
            }
        }
    }

    if !args.no_backlog {
        eprintln!("backlog: {} chargers offline for {} h", args.chargers, args.hours);
        let spec = BacklogSpec {
            chargers: args.chargers,
            hours: args.hours,
            measurands: args.measurands,
            batch_size: args.batch_size,
            max_batch_bytes: args.max_batch_bytes,
            max_inflight_batches: args.window,
            timeout,
        };
        let creds = hub.add_sites("backlog", 1).await?;
        if let Some(site) = creds.first() {
            out.backlog = Some(backlog::run(hub, site, &spec).await?);
        }
    }

    if !args.no_ingest {
        eprintln!("ingest: {} sites into {}", sites.len(), hub.backend.label());
        let before = hub.batch_outcomes();
        // The agent sends a hello and waits for its ack, which grants the slow start: one
        // batch (of at most SLOW_START_BYTES, and one batch always goes). Without it 100
        // sites would start with `--window` full batches each, more than the broker keeps
        // for the hub.
        let slow_start = shared_model::sync::Window { batches: 1, bytes: cloud_hub::flow::SLOW_START_BYTES };
        let plan =
            SendPlan { window: args.window, grant: Some(slow_start), ack_timeout, deadline: Instant::now() + timeout };
        out.ingest = Some(load::ingest(&mut sites, plan).await?);
        let after = hub.batch_outcomes();
        out.outcomes =
            (after.0.saturating_sub(before.0), after.1.saturating_sub(before.1), after.2.saturating_sub(before.2));
        let (stored, effects) = hub.stored_events("site-").await?;
        let samples = hub.count("SELECT COUNT(*) FROM meter_samples WHERE site_id LIKE 'site-%'").await?;
        out.stored = (stored, effects, samples);
    }
    drop(sites);
    Ok(out)
}

/// The ingest sites' events (the same days, seeds and measurands), each encoded as a
/// batch of one, up to `--raw-single-events` of them.
fn single_event_batches(args: &Args, sites: usize) -> Result<Vec<Batch>> {
    let one = Cut { batch_size: 1, max_batch_bytes: args.max_batch_bytes };
    let start = chrono::Utc::now() - chrono::Duration::days(1);
    let mut out = Vec::new();
    for i in 0..sites.max(1) {
        let left = args.raw_single_events.saturating_sub(out.len() as u64);
        if left == 0 {
            break;
        }
        let spec = SiteSpec {
            chargers: args.site_chargers,
            events: args.events_per_site.min(left),
            start,
            seed: i as u64 + 1,
            measurands: args.measurands,
            cut: one,
        };
        let id = format!("site-{i:03}");
        out.extend(batches::site_batches(&id, &shared_model::sync::Topic::Events.of(&id), &spec)?);
    }
    Ok(out)
}

/// Seconds, or how far a run got before the phase timeout.
fn run_secs(run: &Run, timeout_s: u64) -> String {
    match run.seconds {
        Some(s) => format!("{s:.2}"),
        None => format!("did not finish: {}/{} batches answered in {timeout_s} s", run.answered, run.batches),
    }
}

fn met(ok: bool) -> String {
    if ok { "met".to_owned() } else { "NOT met".to_owned() }
}

fn print_report(
    args: &Args,
    cpus: usize,
    site_batches: &[Arc<Vec<Batch>>],
    decoded: Option<&Decoded>,
    runs: &[HubRun],
) {
    println!("# sync-bench");
    println!();
    println!(
        "{cpus} CPUs; everything in one process: hub (embedded rumqttd broker, ingest), edge agent, simulated \
         sites and baseline clients. Batches of at most {} events / {} bytes of event payload, {} unacknowledged \
         per site; MeterValues samples: {:?}.",
        args.batch_size, args.max_batch_bytes, args.window, args.measurands
    );
    let or_default = |v: Option<String>| v.unwrap_or_else(|| "its default".to_owned());
    println!(
        "Hub: [ingest] workers = {}, [database] max_connections = {}, [mqtt] inflight_budget_bytes = {} / \
         inflight_budget_batches = {}.",
        or_default(args.hub_workers.map(|n| n.to_string())),
        or_default(args.hub_db_connections.map(|n| n.to_string())),
        args.hub_inflight_budget_bytes,
        args.hub_inflight_budget_batches
    );
    let share = fair_share(args);
    println!(
        "Flow control: with all {} ingest sites sending, each is granted {} batches / {} bytes in flight; the \
         ingest's batches are cut at that size (as the agent cuts to its grant), and the raw fan-in baseline keeps \
         within the same grant.",
        args.sites, share.batches, share.bytes
    );
    let payload: Vec<usize> = site_batches.iter().flat_map(|b| b.iter().map(Batch::bytes)).collect();
    if let (Some(min), Some(max)) = (payload.iter().min(), payload.iter().max()) {
        let avg = payload.iter().sum::<usize>() as f64 / payload.len() as f64;
        println!("Ingest messages: {} batches, {min} to {max} bytes (mean {avg:.0}).", payload.len());
    }
    println!();

    if runs.iter().any(|r| r.raw_one.is_some()) {
        println!("## Baseline: raw broker publish -> receive (same embedded broker, same payloads, QoS 1)");
        println!();
        let mut t = Table::new(&[
            "hub",
            "case",
            "window",
            "messages",
            "MB",
            "seconds",
            "msg/s",
            "MB/s",
            "events/s equiv.",
            "go-backs",
        ]);
        let single_case = format!("one event per message, 1 -> 1, best of {SINGLE_ROUNDS}");
        for r in runs {
            for (case, window, run) in [
                ("1 publisher -> 1 subscriber", args.raw_window, &r.raw_one),
                ("every site -> 1 subscriber", args.window, &r.raw_fan_in),
                (single_case.as_str(), args.raw_window, &r.raw_single),
            ] {
                let Some(run) = run else { continue };
                t.row(vec![
                    r.backend.label().to_owned(),
                    format!("{case} ({} publishers)", run.senders),
                    format!("{window}{}", if run.senders > 1 { " per publisher" } else { "" }),
                    group(run.batches),
                    mb(run.bytes),
                    run_secs(run, args.timeout_s),
                    rate(run.per_second(run.batches)),
                    rate(run.per_second(run.bytes).map(|b| b / 1e6)),
                    rate(run.per_second(run.events)),
                    group(run.go_backs),
                ]);
            }
        }
        t.print();
    }

    if let Some(d) = decoded {
        println!("## Ceiling: the hub's decoding alone (one core, no broker, no database)");
        println!();
        let mut t = Table::new(&["events", "MB", "seconds", "events/s", "MB/s", "vs raw 1->1 (per hub)"]);
        let ev = d.per_second(d.events);
        t.row(vec![
            group(d.events),
            mb(d.bytes),
            format!("{:.2}", d.seconds),
            rate(ev),
            rate(d.per_second(d.bytes).map(|b| b / 1e6)),
            runs.iter()
                .filter_map(|r| {
                    let raw = r.raw_one.as_ref().and_then(|x| x.per_second(x.events));
                    Some(format!("{} {}", r.backend.label(), ratio(ev, Some(raw?))))
                })
                .collect::<Vec<_>>()
                .join(", "),
        ]);
        t.print();
        println!(
            "`cloud_hub::ingest::parse_batch` of every ingest batch (3 rounds) and the typed event of each envelope, \
             on one thread before any hub started: no ingest into any database can be faster than this on one core \
             with these payloads."
        );
        println!();
    }

    if runs.iter().any(|r| r.backlog.is_some()) {
        println!(
            "## Backlog: {} chargers offline for {} h, drained by the edge agent into the hub (target: under 30 s)",
            args.chargers, args.hours
        );
        println!();
        let mut t = Table::new(&[
            "hub",
            "events",
            "sessions",
            "payload MB",
            "batches sent",
            "events sent",
            "go-backs",
            "hub caught up (s)",
            "outbox empty (s)",
            "events/s",
            "hub stored",
            "hub batches applied/dup/gap",
            "target",
        ]);
        for r in runs {
            let Some(b) = &r.backlog else { continue };
            let per_s = b.hub_caught_up.filter(|s| *s > 0.0).map(|s| b.events as f64 / s);
            t.row(vec![
                r.backend.label().to_owned(),
                group(b.events),
                group(b.sessions),
                mb(b.payload_bytes),
                group(b.batches_sent),
                group(b.events_sent),
                group(b.resends),
                secs(b.hub_caught_up),
                secs(b.outbox_empty),
                rate(per_s),
                group(b.hub_events),
                format!("{}/{}/{}", b.hub_batches.0, b.hub_batches.1, b.hub_batches.2),
                met(b.outbox_empty.is_some_and(|s| s < 30.0)),
            ]);
        }
        t.print();
        println!(
            "Seconds from `edge_agent::app::start` with `[sync]` (connect, hello, drain) until the hub's \
             applied_through reached the last seq, and until the agent had deleted every acknowledged row. Writing \
             the backlog (not timed above) took {}.",
            runs.iter()
                .filter_map(|r| r.backlog.as_ref().map(|b| format!("{:.1} s ({})", b.write_seconds, r.backend.label())))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!();
    }

    if runs.iter().any(|r| r.ingest.is_some()) {
        println!(
            "## Ingest: {} sites at once, {} events each (target: at least 1/3 of the raw broker rate)",
            args.sites, args.events_per_site
        );
        println!();
        let mut t = Table::new(&[
            "hub",
            "events",
            "MB",
            "seconds",
            "events/s",
            "batches/s",
            "go-backs",
            "hub batches applied/dup/gap",
            "stored (effects)",
            "meter samples",
            "vs raw 1->1",
            "vs raw sites->1",
            "vs raw 1 event/msg",
            "target",
        ]);
        for r in runs {
            let Some(i) = &r.ingest else { continue };
            let ev = i.per_second(i.events);
            let raw_one = r.raw_one.as_ref().and_then(|x| x.per_second(x.events));
            let raw_fan = r.raw_fan_in.as_ref().and_then(|x| x.per_second(x.events));
            let raw_single = r.raw_single.as_ref().and_then(|x| x.per_second(x.events));
            t.row(vec![
                r.backend.label().to_owned(),
                group(i.events),
                mb(i.bytes),
                run_secs(i, args.timeout_s),
                rate(ev),
                rate(i.per_second(i.batches)),
                group(i.go_backs),
                format!("{}/{}/{}", r.outcomes.0, r.outcomes.1, r.outcomes.2),
                format!("{} ({})", group(r.stored.0), group(r.stored.1)),
                group(r.stored.2),
                ratio(ev, raw_one),
                ratio(ev, raw_fan),
                ratio(ev, raw_single),
                match (ev, raw_one) {
                    (Some(e), Some(raw)) => met(e * 3.0 >= raw),
                    _ => "—".to_owned(),
                },
            ]);
        }
        t.print();
        println!(
            "Events/s: events acknowledged by the hub (applied in its database with their effects) per second, \
             from the start signal to the last site's last ack. The target compares with the one-publisher rate \
             in events equivalent (the issue's baseline); the every-site baseline is the same traffic without the \
             hub; the one-event-per-message baseline is the broker's own message rate with these events, \
             unbatched. Go-backs: a site heard no ack for {} s (doubling while silent, as the edge agent does) and sent \
             again from its last ack; duplicates at the hub are batches it received again after applying them.",
            args.ack_timeout_s
        );
    }
}
