//! The backlog of a site that was offline: a real edge agent (`edge_agent::app::start`)
//! runs without `[sync]` while its chargers report a whole offline stretch, recorded
//! through the agent's own store functions (the ones its OCPP handlers call:
//! `chargers::status`, `start_transaction`, `meter_values`, `stop_transaction`, each
//! writing its tables and its outbox row in one transaction). Then the agent is stopped
//! and started again with `[sync]` pointing at the hub, and the clock runs until the hub
//! stands at the last seq and the agent's outbox is empty.

use super::day::{Action, Day, Measurands, station_name, tag_of};
use super::hub::Hub;
use anyhow::{Context as _, Result, anyhow};
use chrono::{DateTime, Utc};
use edge_agent::chargers::{self, StartReport, StatusReport, StopReport};
use edge_agent::config::{AuthorizationConfig, Config};
use edge_agent::sync::outbox::{self, OutboxStats};
use shared_model::model::{ConnectorRef, StopReason};
use std::path::Path;
use std::time::{Duration, Instant};

/// The backlog to build and how the agent sends it.
#[derive(Debug, Clone, Copy)]
pub struct BacklogSpec {
    pub chargers: usize,
    pub hours: u32,
    pub measurands: Measurands,
    pub batch_size: usize,
    pub max_batch_bytes: usize,
    pub max_inflight_batches: usize,
    pub timeout: Duration,
}

/// What the drain took.
#[derive(Debug, Clone, Default)]
pub struct BacklogRun {
    pub events: u64,
    /// Bytes of event payload in the outbox.
    pub payload_bytes: u64,
    pub sessions: u64,
    /// Writing the backlog through the agent (not part of the drain).
    pub write_seconds: f64,
    /// From `app::start` with `[sync]` until the hub stood at the last seq.
    pub hub_caught_up: Option<f64>,
    /// ... and until the agent's outbox was empty too.
    pub outbox_empty: Option<f64>,
    /// The agent's sync counters at the end.
    pub batches_sent: u64,
    pub events_sent: u64,
    pub resends: u64,
    /// At the hub: events stored for the site, and batches by outcome.
    pub hub_events: u64,
    pub hub_batches: (u64, u64, u64),
}

fn edge_config(dir: &Path, site: &str, spec: &BacklogSpec, sync: Option<(&str, &str)>) -> Result<Config> {
    let mut text = format!(
        "[site]\nid = \"{site}\"\n\n[ocpp]\nlisten = \"127.0.0.1:0\"\nsecurity_profile = 0\n\n\
         [store]\npath = \"{}\"\n\n[api]\nlisten = \"127.0.0.1:0\"\n\n\
         [authorization]\nunknown_id_tags = \"accept\"\nallow_concurrent_tx = true\n",
        dir.join("edge.db").display()
    );
    for i in 0..spec.chargers {
        text.push_str(&format!("\n[[chargers]]\nid = \"{}\"\n", station_name(i)));
    }
    if let Some((broker, password)) = sync {
        text.push_str(&format!(
            "\n[sync]\nbroker = \"{broker}\"\npassword = \"{password}\"\nbatch_size = {}\nmax_batch_bytes = {}\n\
             max_inflight_batches = {}\n",
            spec.batch_size, spec.max_batch_bytes, spec.max_inflight_batches
        ));
    }
    let path = dir.join("edge-agent.toml");
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    Config::parse(&path, &text).map_err(|e| anyhow!("the bench's edge config: {e}"))
}

const CONNECTOR: ConnectorRef = ConnectorRef { evse: 1, connector: 1 };

/// Records one minute of actions as the agent's OCPP handlers would; `tx` holds each
/// charger's running transaction id (as handed to the station).
fn record(
    conn: &rusqlite::Connection,
    actions: Vec<Action>,
    tx: &mut [Option<i64>],
    policy: &AuthorizationConfig,
) -> Result<(), edge_agent::store::StoreError> {
    for action in actions {
        match action {
            Action::Status { station, status, at } => {
                let report = StatusReport {
                    connector: CONNECTOR,
                    status,
                    error_code: Some("NoError".to_owned()),
                    info: None,
                    vendor_error_code: None,
                    timestamp: Some(at),
                };
                chargers::status(conn, &station_name(station), &report, at)?;
            }
            Action::Start { station, meter_wh, at } => {
                let report = StartReport {
                    connector: CONNECTOR,
                    id_tag: tag_of(station),
                    meter_start_wh: meter_wh,
                    timestamp: at,
                    reservation_id: None,
                };
                let out = chargers::start_transaction(conn, &station_name(station), &report, policy, at)?;
                if let Some(slot) = tx.get_mut(station) {
                    *slot = Some(out.transaction_id);
                }
            }
            Action::Meter { station, samples, at } => {
                let id = tx.get(station).copied().flatten();
                chargers::meter_values(conn, &station_name(station), CONNECTOR, id, &samples, at)?;
            }
            Action::Stop { station, meter_wh, at } => {
                let Some(id) = tx.get_mut(station).and_then(Option::take) else { continue };
                let report = StopReport {
                    station_tx_id: id,
                    id_tag: Some(tag_of(station)),
                    meter_stop_wh: meter_wh,
                    timestamp: at,
                    reason: Some(StopReason::EVDisconnected),
                    samples: Vec::new(),
                };
                chargers::stop_transaction(conn, &station_name(station), &report, policy, at)?;
            }
        }
    }
    Ok(())
}

/// Phase one: the agent without `[sync]`, the chargers' day written through it.
async fn write_backlog(config: Config, spec: &BacklogSpec, start: DateTime<Utc>) -> Result<(OutboxStats, u64, u64)> {
    let running = edge_agent::app::start(config).await.context("starting the edge agent (offline)")?;
    let store = running.shared.store.clone();
    let policy = running.shared.config.authorization.clone();
    let mut day = Day::new(spec.chargers, start, 0x5eed, spec.measurands);
    let mut tx: Vec<Option<i64>> = vec![None; spec.chargers];
    let mut sessions = 0u64;
    for hour in 0..spec.hours {
        let mut actions = Vec::new();
        for _ in 0..60 {
            actions.extend(day.next_minute());
        }
        sessions += actions.iter().filter(|a| matches!(a, Action::Start { .. })).count() as u64;
        let policy = policy.clone();
        // One job per simulated hour: each action is its own savepoint inside it, as
        // the agent's handlers are.
        tx = store
            .write(move |conn| {
                let mut tx = tx;
                record(conn, actions, &mut tx, &policy)?;
                Ok(tx)
            })
            .await
            .with_context(|| format!("recording hour {hour} of the backlog"))?;
        if hour % 6 == 5 {
            eprintln!("  backlog: {} of {} hours written", hour + 1, spec.hours);
        }
    }
    let stats = store.read(outbox::stats).await.context("reading the outbox")?;
    let bytes = store
        .read(|c| Ok(c.query_row("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM outbox", [], |r| r.get::<_, i64>(0))?))
        .await
        .context("measuring the outbox")?;
    running.shutdown().await;
    Ok((stats, u64::try_from(bytes).unwrap_or(0), sessions))
}

/// Builds the backlog of a new site of `hub`, then times its drain.
pub async fn run(hub: &Hub, site: &(String, String), spec: &BacklogSpec) -> Result<BacklogRun> {
    let (site, password) = site;
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let mut out = BacklogRun::default();

    let start = Utc::now() - chrono::Duration::hours(i64::from(spec.hours));
    let offline = edge_config(dir.path(), site, spec, None)?;
    let t = Instant::now();
    let (stats, bytes, sessions) = write_backlog(offline, spec, start).await?;
    out.write_seconds = t.elapsed().as_secs_f64();
    out.events = stats.pending;
    out.payload_bytes = bytes;
    out.sessions = sessions;
    let last = stats.newest_seq.unwrap_or(0);
    eprintln!(
        "  backlog: {} events (seq {}..={last}), {:.1} MB of payload, written in {:.1} s; reconnecting",
        stats.pending,
        stats.oldest_seq.unwrap_or(0),
        bytes as f64 / 1e6,
        out.write_seconds
    );

    let online = edge_config(dir.path(), site, spec, Some((&hub.broker_url(), password)))?;
    let before = hub.batch_outcomes();
    let t0 = Instant::now();
    let running = edge_agent::app::start(online).await.context("starting the edge agent (online)")?;
    let mut next_report = Duration::from_secs(2);
    loop {
        let elapsed = t0.elapsed();
        let applied = hub.applied_through(site).await?;
        if out.hub_caught_up.is_none() && applied >= last {
            out.hub_caught_up = Some(elapsed.as_secs_f64());
        }
        let pending = running.shared.store.read(outbox::stats).await.context("reading the outbox")?.pending;
        if out.hub_caught_up.is_some() && pending == 0 {
            out.outbox_empty = Some(elapsed.as_secs_f64());
            break;
        }
        if elapsed >= next_report {
            eprintln!("  backlog: hub at seq {applied} of {last}, {pending} rows in the outbox after {elapsed:.0?}");
            next_report += Duration::from_secs(2);
        }
        if elapsed >= spec.timeout {
            eprintln!("  backlog: not drained within {:?}; giving up", spec.timeout);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let m = &running.shared.metrics.sync;
    out.batches_sent = m.batches_sent.get();
    out.events_sent = m.events_sent.get();
    out.resends = ["ack", "timeout"]
        .into_iter()
        .map(|reason| m.resends.get_or_create(&edge_agent::sync::ReasonLabels { reason }).get())
        .sum();
    running.shutdown().await;
    out.hub_events = hub.stored_events(site).await?.0;
    let after = hub.batch_outcomes();
    out.hub_batches =
        (after.0.saturating_sub(before.0), after.1.saturating_sub(before.1), after.2.saturating_sub(before.2));
    Ok(out)
}
