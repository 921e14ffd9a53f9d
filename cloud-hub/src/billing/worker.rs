//! The billing worker: turns finished sessions into CDRs.
//!
//! Each pass looks at sessions that changed since shortly before the previous pass (the
//! `sessions (updated_at)` index; a full pass at start and after a tariff is assigned,
//! since an assignment can reach back in time). A session needs a CDR when it has a start
//! and a stop with their meter values, a tariff in force at its start, and no debit CDR
//! for its current stop. When the latest debit priced an earlier stop (the site inferred
//! one, the charger's own came later), that debit is credited and the session priced again
//! as the next revision, in one transaction. Replicas may run the worker side by side: the
//! unique `(site_id, transaction_uid, kind, revision)` lets one of them win and the other
//! roll back.
//!
//! A session that cannot be priced (no tariff element applies, a meter that ran
//! backwards...) is recorded in `cdr_failures` with the reason and tried again only when
//! its stop changes.

use chrono::{DateTime, Utc};
use shared_model::tariff::Pricer;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

use super::cdr::{self, FinishedSession};
use super::tariffs;
use crate::db::{DbError, Row, Store, Ty};

/// Sessions looked at per query.
const BATCH: i64 = 200;

/// How far back an incremental pass reaches before the previous pass's start: a session
/// whose transaction committed late (its `updated_at` is the hub's clock at ingest).
const OVERLAP: chrono::Duration = chrono::Duration::seconds(60);

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassStats {
    pub priced: u64,
    pub corrected: u64,
    pub failed: u64,
    /// Lost to another replica.
    pub raced: u64,
}

/// Wakes the worker and asks for a full pass (after a tariff assignment).
#[derive(Debug, Clone, Default)]
pub struct BillingHandle {
    full: Arc<AtomicBool>,
    wake: Arc<Notify>,
}

impl BillingHandle {
    /// Asks for a pass over every session (not only recent ones).
    pub fn rescan(&self) {
        self.full.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Asks for a pass now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Runs passes every `interval` (and when woken) until the task is aborted.
pub async fn run(store: Store, handle: BillingHandle, interval: Duration) {
    let mut pricer = Pricer::new();
    let mut since: Option<DateTime<Utc>> = None;
    loop {
        let full = handle.full.swap(false, Ordering::SeqCst);
        let started = Utc::now();
        match pass(&store, &mut pricer, if full { None } else { since }, started).await {
            Ok(stats) => {
                since = Some(started - OVERLAP);
                if stats != PassStats::default() {
                    tracing::info!(?stats, "billing: pass done");
                }
            }
            Err(e) => {
                if full {
                    handle.full.store(true, Ordering::SeqCst);
                }
                tracing::warn!(error = %e, "billing: pass failed; trying again");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = handle.wake.notified() => {}
        }
    }
}

const CANDIDATE_COLUMNS: [Ty; 12] =
    [Ty::Text, Ty::Text, Ty::Text, Ty::Int, Ty::Int, Ty::Text, Ty::Time, Ty::Time, Ty::Int, Ty::Int, Ty::Text, Ty::Int];

fn candidate(r: &Row) -> Option<(FinishedSession, Option<(String, i64)>)> {
    let s = FinishedSession {
        site_id: r.text(0)?.to_owned(),
        transaction_uid: r.text(1)?.to_owned(),
        station: r.text(2)?.to_owned(),
        evse: r.int(3),
        connector: r.int(4),
        id_tag: r.text(5).map(str::to_owned),
        started_at: r.time(6)?,
        stopped_at: r.time(7)?,
        meter_start_wh: r.int(8)?,
        meter_stop_wh: r.int(9)?,
    };
    let latest = match (r.text(10), r.int(11)) {
        (Some(id), Some(rev)) => Some((id.to_owned(), rev)),
        _ => None,
    };
    Some((s, latest))
}

/// One pass over the sessions updated at or after `since` (all when `None`).
pub async fn pass(
    store: &Store,
    pricer: &mut Pricer,
    since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<PassStats, DbError> {
    let mut stats = PassStats::default();
    let mut after: (String, String) = (String::new(), String::new());
    loop {
        let rows = store
            .fetch(
                "SELECT s.site_id, s.transaction_uid, s.station, s.evse, s.connector, s.id_tag, s.started_at, \
                     s.stopped_at, s.meter_start_wh, s.meter_stop_wh, c.id, c.revision \
                 FROM sessions s \
                 LEFT JOIN cdrs c ON c.site_id = s.site_id AND c.transaction_uid = s.transaction_uid \
                     AND c.kind = 'debit' AND c.revision = (SELECT MAX(d.revision) FROM cdrs d \
                         WHERE d.site_id = s.site_id AND d.transaction_uid = s.transaction_uid AND d.kind = 'debit') \
                 WHERE ($1 IS NULL OR s.updated_at >= $1) \
                     AND (s.site_id > $2 OR (s.site_id = $2 AND s.transaction_uid > $3)) \
                     AND s.started_at IS NOT NULL AND s.stopped_at IS NOT NULL \
                     AND s.meter_start_wh IS NOT NULL AND s.meter_stop_wh IS NOT NULL \
                     AND (c.id IS NULL OR c.end_date_time <> s.stopped_at OR c.meter_stop_wh <> s.meter_stop_wh) \
                     AND NOT EXISTS (SELECT 1 FROM cdr_failures f WHERE f.site_id = s.site_id \
                         AND f.transaction_uid = s.transaction_uid AND f.stopped_at = s.stopped_at) \
                     AND EXISTS (SELECT 1 FROM site_tariffs t WHERE t.site_id = s.site_id \
                         AND t.valid_from <= s.started_at) \
                 ORDER BY s.site_id, s.transaction_uid LIMIT $4",
                &[since.into(), after.0.as_str().into(), after.1.as_str().into(), BATCH.into()],
                &CANDIDATE_COLUMNS,
            )
            .await?;
        let n = rows.len();
        for row in &rows {
            let Some((session, latest)) = candidate(row) else { continue };
            after = (session.site_id.clone(), session.transaction_uid.clone());
            match bill(store, pricer, &session, latest, now).await? {
                Billed::Priced => stats.priced += 1,
                Billed::Corrected => stats.corrected += 1,
                Billed::Failed => stats.failed += 1,
                Billed::Raced => stats.raced += 1,
            }
        }
        if n < usize::try_from(BATCH).unwrap_or(usize::MAX) {
            return Ok(stats);
        }
    }
}

enum Billed {
    Priced,
    Corrected,
    Failed,
    Raced,
}

/// The register and power samples of a session, oldest first (what [`cdr::build_session`]
/// takes).
pub(crate) async fn samples(store: &Store, s: &FinishedSession) -> Result<Vec<(DateTime<Utc>, String, f64)>, DbError> {
    let rows = store
        .fetch(
            "SELECT ts, measurand, value_num FROM meter_samples \
             WHERE site_id = $1 AND station = $2 AND transaction_uid = $3 AND ts > $4 AND ts < $5 \
                 AND (measurand = $6 OR measurand = $7) AND phase IS NULL AND value_num IS NOT NULL \
                 AND (location IS NULL OR location = 'Outlet') \
             ORDER BY ts, seq",
            &[
                s.site_id.as_str().into(),
                s.station.as_str().into(),
                s.transaction_uid.as_str().into(),
                s.started_at.into(),
                s.stopped_at.into(),
                cdr::ENERGY_REGISTER.into(),
                cdr::POWER.into(),
            ],
            &[Ty::Time, Ty::Text, Ty::Real],
        )
        .await?;
    Ok(rows.iter().filter_map(|r| Some((r.time(0)?, r.text(1)?.to_owned(), r.real(2)?))).collect())
}

async fn record_failure(store: &Store, s: &FinishedSession, reason: &str, now: DateTime<Utc>) -> Result<(), DbError> {
    tracing::warn!(site = s.site_id, transaction_uid = s.transaction_uid, reason, "billing: session not priced");
    store
        .exec(
            "INSERT INTO cdr_failures (site_id, transaction_uid, stopped_at, reason, at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT DO NOTHING",
            &[
                s.site_id.as_str().into(),
                s.transaction_uid.as_str().into(),
                s.stopped_at.into(),
                reason.into(),
                now.into(),
            ],
        )
        .await
        .map(|_| ())
}

async fn bill(
    store: &Store,
    pricer: &mut Pricer,
    s: &FinishedSession,
    latest: Option<(String, i64)>,
    now: DateTime<Utc>,
) -> Result<Billed, DbError> {
    let Some((assignment, stored)) = tariffs::tariff_at(store, &s.site_id, s.started_at).await? else {
        return Ok(Billed::Raced);
    };
    let samples = samples(store, s).await?;
    let priced = cdr::build_session(s, &assignment.time_zone, &samples)
        .and_then(|(session, dropped)| Ok((cdr::price(pricer, &stored.tariff, &session)?, dropped)));
    let (priced, dropped) = match priced {
        Ok(p) => p,
        Err(e) => {
            record_failure(store, s, &e.to_string(), now).await?;
            return Ok(Billed::Failed);
        }
    };
    let customer = match &s.id_tag {
        Some(tag) => store
            .fetch_opt("SELECT customer_id FROM customer_tokens WHERE id_tag = $1", &[tag.as_str().into()], &[Ty::Text])
            .await?
            .and_then(|r| r.text(0).map(str::to_owned)),
        None => None,
    };
    let detail = cdr::detail_json(&priced, &stored.tariff, dropped);
    let mut tx = store.begin().await?;
    let mut corrected = false;
    let revision = match &latest {
        None => 1,
        Some((id, revision)) => {
            let Some(previous) = cdr::get_in(&mut tx, id).await? else {
                tx.rollback().await?;
                return Ok(Billed::Raced);
            };
            let credited = tx
                .fetch_opt("SELECT id FROM cdrs WHERE credits = $1", &[id.as_str().into()], &[Ty::Text])
                .await?
                .is_some();
            if !credited {
                let reason = format!(
                    "session corrected: stopped at {} with {} Wh (priced: {} with {} Wh)",
                    s.stopped_at.to_rfc3339(),
                    s.meter_stop_wh,
                    previous.end_date_time.to_rfc3339(),
                    previous.meter_stop_wh
                );
                if cdr::insert_credit(&mut tx, &previous, &reason, now).await?.is_none() {
                    tx.rollback().await?;
                    return Ok(Billed::Raced);
                }
            }
            corrected = true;
            revision + 1
        }
    };
    let inserted = cdr::insert_debit(
        &mut tx,
        s,
        revision,
        customer.as_deref(),
        &stored.tariff,
        &assignment.time_zone,
        &priced,
        &detail,
        now,
    )
    .await?;
    if inserted.is_none() {
        tx.rollback().await?;
        return Ok(Billed::Raced);
    }
    tx.commit().await?;
    tracing::info!(
        site = s.site_id,
        transaction_uid = s.transaction_uid,
        revision,
        total_excl_vat = %priced.totals.total_cost.excl_vat,
        currency = priced.currency,
        "billing: CDR issued"
    );
    Ok(if corrected { Billed::Corrected } else { Billed::Priced })
}
