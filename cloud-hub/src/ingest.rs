//! Ingest: applies a site's event batches to the database, each `(site_id, seq)` at most
//! once and strictly in order, in one transaction together with every effect (chargers,
//! connectors, sessions, meter samples, id tags) and the site's new `applied_through`.
//! The rules are those of `shared-model/SYNC.md`:
//!
//! - events with `seq <= applied_through` are duplicates and skipped;
//! - a batch that starts beyond `applied_through + 1` (a gap) is not applied at all;
//! - an event kind (or shape) this hub does not know is stored as it came, counts as
//!   applied, and is marked `effects_applied = false` for a newer hub to pick up.
//!
//! Whatever the outcome, the caller answers with an [`Ack`] of the returned
//! `applied_through` — after the commit, never before.

use chrono::{DateTime, Utc};
use shared_model::events::SiteEvent;
use shared_model::model::ConnectorRef;
use shared_model::sync::{Ack, CommandResult, EventBatch, EventEnvelope, Hello, PROTOCOL_VERSION, Status};
use std::collections::HashMap;

use crate::db::{DbError, Store, Tx, Ty, Val};

/// Why a message was dropped without applying anything. [`Reject::label`] is its
/// `messages_rejected{reason}` label.
#[derive(Debug, thiserror::Error)]
pub enum Reject {
    #[error("topic {0:?} is not a sitepilot/v1/{{site_id}}/... topic")]
    BadTopic(String),
    #[error("not valid JSON for {what}: {error}")]
    BadJson { what: &'static str, error: serde_json::Error },
    #[error("protocol version {0} on a v{PROTOCOL_VERSION} topic")]
    BadVersion(u32),
    #[error("payload site_id {payload:?} differs from the topic's {topic:?}")]
    SiteMismatch { topic: String, payload: String },
    #[error("not a valid batch: {0}")]
    BadBatch(String),
    #[error("not a valid command result: {0}")]
    BadResult(String),
    #[error("unknown site {0:?}")]
    UnknownSite(String),
    #[error("{0}")]
    Db(#[from] DbError),
}

impl Reject {
    pub fn label(&self) -> &'static str {
        match self {
            Reject::BadTopic(_) => "bad_topic",
            Reject::BadJson { .. } => "bad_json",
            Reject::BadVersion(_) => "bad_version",
            Reject::SiteMismatch { .. } => "site_mismatch",
            Reject::BadBatch(_) => "bad_batch",
            Reject::BadResult(_) => "bad_result",
            Reject::UnknownSite(_) => "unknown_site",
            Reject::Db(_) => "db_error",
        }
    }
}

/// What became of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Events `first..=last` were new and are applied (earlier ones of the batch, if any,
    /// were duplicates).
    Applied { first: u64, last: u64 },
    /// Every event was applied before.
    Duplicate,
    /// The batch starts at `first`, beyond `applied_through + 1`: nothing applied.
    Gap { first: u64 },
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Applied { .. } => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Gap { .. } => "gap",
        }
    }
}

/// The result of [`apply_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub outcome: Outcome,
    /// Where the site stands after the transaction (what the ack says).
    pub applied_through: u64,
    /// Events stored raw (unknown kind or shape) in this batch.
    pub raw: u64,
}

fn check_site(topic_site: &str, payload_site: &str, version: u32) -> Result<(), Reject> {
    if version != PROTOCOL_VERSION {
        return Err(Reject::BadVersion(version));
    }
    if payload_site != topic_site {
        return Err(Reject::SiteMismatch { topic: topic_site.to_owned(), payload: payload_site.to_owned() });
    }
    Ok(())
}

/// Parses and checks an `up/events` payload of `topic_site`.
pub fn parse_batch(topic_site: &str, payload: &[u8]) -> Result<EventBatch, Reject> {
    let batch: EventBatch =
        serde_json::from_slice(payload).map_err(|error| Reject::BadJson { what: "an EventBatch", error })?;
    check_site(topic_site, &batch.site_id, batch.v)?;
    batch.check().map_err(|e| Reject::BadBatch(e.to_string()))?;
    if let Some((_, last)) = batch.range()
        && i64::try_from(last).is_err()
    {
        return Err(Reject::BadBatch(format!("seq {last} is beyond what the hub stores (2^63 - 1)")));
    }
    Ok(batch)
}

/// Parses and checks an `up/auth` payload of `topic_site`.
pub fn parse_auth_request(topic_site: &str, payload: &[u8]) -> Result<shared_model::sync::AuthRequest, Reject> {
    let req: shared_model::sync::AuthRequest =
        serde_json::from_slice(payload).map_err(|error| Reject::BadJson { what: "an AuthRequest", error })?;
    check_site(topic_site, &req.site_id, req.v)?;
    Ok(req)
}

/// Parses and checks an `up/hello` payload of `topic_site`.
pub fn parse_hello(topic_site: &str, payload: &[u8]) -> Result<Hello, Reject> {
    let hello: Hello = serde_json::from_slice(payload).map_err(|error| Reject::BadJson { what: "a Hello", error })?;
    check_site(topic_site, &hello.site_id, hello.v)?;
    Ok(hello)
}

/// Parses and checks an `up/status` payload of `topic_site`.
pub fn parse_status(topic_site: &str, payload: &[u8]) -> Result<Status, Reject> {
    let status: Status =
        serde_json::from_slice(payload).map_err(|error| Reject::BadJson { what: "a Status", error })?;
    check_site(topic_site, &status.site_id, status.v)?;
    Ok(status)
}

/// Parses and checks an `up/results` payload of `topic_site`.
pub fn parse_result(topic_site: &str, payload: &[u8]) -> Result<CommandResult, Reject> {
    let result: CommandResult =
        serde_json::from_slice(payload).map_err(|error| Reject::BadJson { what: "a CommandResult", error })?;
    check_site(topic_site, &result.site_id, result.v)?;
    if result.command_id.is_empty() || result.command_id.len() > 200 {
        return Err(Reject::BadResult(format!("command_id of {} bytes: expected 1 to 200", result.command_id.len())));
    }
    Ok(result)
}

/// The ack of where a site stands.
pub fn ack(site_id: &str, applied_through: u64) -> Ack {
    Ack { v: PROTOCOL_VERSION, site_id: site_id.to_owned(), applied_through, window: None }
}

fn as_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Applies a checked batch (see [`parse_batch`]) in one transaction.
pub async fn apply_batch(store: &Store, batch: &EventBatch, received_at: DateTime<Utc>) -> Result<Applied, Reject> {
    let Some((first, last)) = batch.range() else {
        return Err(Reject::BadBatch("the batch is empty".into()));
    };
    // Decoded before the transaction: on SQLite transactions take turns, and the next
    // batch's decoding runs while this one's statements do.
    let decoded: Vec<_> = batch.events.iter().map(EventEnvelope::event).collect();
    let mut tx = store.begin().await?;
    let Some(applied_through) = tx.lock_site(&batch.site_id).await?.map(as_u64) else {
        tx.rollback().await?;
        return Err(Reject::UnknownSite(batch.site_id.clone()));
    };
    if last <= applied_through {
        tx.rollback().await?;
        return Ok(Applied { outcome: Outcome::Duplicate, applied_through, raw: 0 });
    }
    if first > applied_through + 1 {
        tx.rollback().await?;
        return Ok(Applied { outcome: Outcome::Gap { first }, applied_through, raw: 0 });
    }
    let mut raw = 0;
    let mut pending = Pending::default();
    for (envelope, event) in batch.events.iter().zip(decoded).filter(|(e, _)| e.seq > applied_through) {
        if !apply_event(&mut tx, &mut pending, &batch.site_id, envelope, event, received_at).await? {
            raw += 1;
        }
    }
    pending.flush(&mut tx, &batch.site_id, received_at).await?;
    tx.exec(
        "UPDATE sites SET applied_through = $2, last_event_at = $3 WHERE id = $1",
        &[batch.site_id.as_str().into(), as_i64(last).into(), received_at.into()],
    )
    .await?;
    tx.commit().await?;
    Ok(Applied { outcome: Outcome::Applied { first: applied_through + 1, last }, applied_through: last, raw })
}

const EVENTS_INSERT: &str =
    "INSERT INTO events (site_id, seq, event_id, kind, at, payload, received_at, effects_applied)";
const EVENTS_TYPES: [Ty; 8] = [Ty::Text, Ty::Int, Ty::Text, Ty::Text, Ty::Time, Ty::Text, Ty::Time, Ty::Bool];
const SAMPLES_INSERT: &str = "INSERT INTO meter_samples (site_id, station, evse, connector, transaction_uid, ts, \
     measurand, phase, location, unit, context, format, value, value_num, seq)";
const SAMPLES_TYPES: [Ty; 15] = [
    Ty::Text,
    Ty::Text,
    Ty::Int,
    Ty::Int,
    Ty::Text,
    Ty::Time,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Real,
    Ty::Int,
];

/// What a batch writes in bulk at its end (multi-row inserts, one energy update per
/// session) instead of one statement per event or sample. Nothing else in the batch
/// reads these rows, except a stop that falls back to the session's latest energy
/// register: that session's update is written before the stop.
#[derive(Default)]
struct Pending {
    events: Vec<Val>,
    samples: Vec<Val>,
    /// The newest energy register reading per transaction: (time, Wh).
    energy: HashMap<String, (DateTime<Utc>, i64)>,
}

impl Pending {
    fn energy_reading(&mut self, uid: &str, ts: DateTime<Utc>, wh: i64) {
        match self.energy.get_mut(uid) {
            // The later of equal times wins, as it would one statement at a time.
            Some(r) if r.0 <= ts => *r = (ts, wh),
            Some(_) => {}
            None => {
                self.energy.insert(uid.to_owned(), (ts, wh));
            }
        }
    }

    async fn write_energy(
        tx: &mut Tx,
        site: &str,
        uid: &str,
        (ts, wh): (DateTime<Utc>, i64),
        now: DateTime<Utc>,
    ) -> Result<(), DbError> {
        tx.exec(
            "UPDATE sessions SET last_energy_wh = $3, last_energy_at = $4, updated_at = $5 \
             WHERE site_id = $1 AND transaction_uid = $2 \
                 AND (last_energy_at IS NULL OR last_energy_at <= $4)",
            &[site.into(), uid.into(), wh.into(), ts.into(), now.into()],
        )
        .await
        .map(|_| ())
    }

    /// Writes the session's pending energy update now (before something reads it).
    async fn flush_energy_of(&mut self, tx: &mut Tx, site: &str, uid: &str, now: DateTime<Utc>) -> Result<(), DbError> {
        match self.energy.remove(uid) {
            Some(reading) => Self::write_energy(tx, site, uid, reading, now).await,
            None => Ok(()),
        }
    }

    async fn flush(self, tx: &mut Tx, site: &str, now: DateTime<Utc>) -> Result<(), DbError> {
        tx.insert_columns(EVENTS_INSERT, &EVENTS_TYPES, &self.events).await?;
        tx.insert_columns(SAMPLES_INSERT, &SAMPLES_TYPES, &self.samples).await?;
        let mut energy: Vec<_> = self.energy.into_iter().collect();
        // A fixed order, so that two replicas never lock sessions in opposite orders.
        energy.sort_by(|a, b| a.0.cmp(&b.0));
        for (uid, reading) in energy {
            Self::write_energy(tx, site, &uid, reading, now).await?;
        }
        Ok(())
    }
}

/// Stores one event and applies its effects; false when it was stored raw.
async fn apply_event(
    tx: &mut Tx,
    pending: &mut Pending,
    site: &str,
    envelope: &EventEnvelope,
    event: Result<SiteEvent, serde_json::Error>,
    received_at: DateTime<Utc>,
) -> Result<bool, DbError> {
    let event = match event {
        Ok(event) => Some(event),
        Err(e) => {
            tracing::warn!(
                site,
                seq = envelope.seq,
                kind = envelope.kind,
                error = %e,
                "event of a kind or shape this hub does not know: stored as it came"
            );
            None
        }
    };
    pending.events.extend([
        site.into(),
        as_i64(envelope.seq).into(),
        envelope.event_id.as_str().into(),
        envelope.kind.as_str().into(),
        envelope.at.into(),
        // The text that came (`events.payload` is TEXT on both databases).
        envelope.payload.get().into(),
        received_at.into(),
        event.is_some().into(),
    ]);
    let Some(event) = event else {
        return Ok(false);
    };
    apply_effects(tx, pending, site, envelope.seq, &event, received_at).await?;
    Ok(true)
}

fn evse(c: &ConnectorRef) -> Val {
    i64::from(c.evse).into()
}

fn connector(c: &ConnectorRef) -> Val {
    i64::from(c.connector).into()
}

async fn ensure_charger(tx: &mut Tx, site: &str, station: &str, now: DateTime<Utc>) -> Result<(), DbError> {
    tx.exec(
        "INSERT INTO chargers (site_id, station, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (site_id, station) DO NOTHING",
        &[site.into(), station.into(), now.into()],
    )
    .await
    .map(|_| ())
}

async fn update_session_energy(tx: &mut Tx, site: &str, uid: &str) -> Result<(), DbError> {
    tx.exec(
        "UPDATE sessions SET energy_wh = CASE \
             WHEN meter_start_wh IS NOT NULL AND meter_stop_wh IS NOT NULL AND meter_stop_wh >= meter_start_wh \
             THEN meter_stop_wh - meter_start_wh ELSE NULL END \
         WHERE site_id = $1 AND transaction_uid = $2",
        &[site.into(), uid.into()],
    )
    .await
    .map(|_| ())
}

async fn apply_effects(
    tx: &mut Tx,
    pending: &mut Pending,
    site: &str,
    seq: u64,
    event: &SiteEvent,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    match event {
        SiteEvent::StationBooted { station, info, registration, at } => {
            let info_json = serde_json::to_value(info).unwrap_or(serde_json::Value::Null);
            tx.exec(
                "INSERT INTO chargers (site_id, station, vendor, model, serial_number, firmware_version, info, \
                     registration, last_boot_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (site_id, station) DO UPDATE SET vendor = excluded.vendor, model = excluded.model, \
                     serial_number = excluded.serial_number, firmware_version = excluded.firmware_version, \
                     info = excluded.info, registration = excluded.registration, \
                     last_boot_at = excluded.last_boot_at, updated_at = excluded.updated_at",
                &[
                    site.into(),
                    station.into(),
                    info.vendor.as_str().into(),
                    info.model.as_str().into(),
                    (&info.serial_number).into(),
                    (&info.firmware_version).into(),
                    info_json.into(),
                    registration.into(),
                    (*at).into(),
                    now.into(),
                ],
            )
            .await?;
        }
        SiteEvent::StationRegistration { station, registration, at: _ } => {
            tx.exec(
                "INSERT INTO chargers (site_id, station, registration, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (site_id, station) DO UPDATE SET registration = excluded.registration, \
                     updated_at = excluded.updated_at",
                &[site.into(), station.into(), registration.into(), now.into()],
            )
            .await?;
        }
        SiteEvent::StationConnection { station, connected, at } => {
            tx.exec(
                "INSERT INTO chargers (site_id, station, connected, connection_changed_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (site_id, station) DO UPDATE SET connected = excluded.connected, \
                     connection_changed_at = excluded.connection_changed_at, updated_at = excluded.updated_at",
                &[site.into(), station.into(), (*connected).into(), (*at).into(), now.into()],
            )
            .await?;
        }
        SiteEvent::IdTagChanged { id_tag, status: Some(status), expiry, parent_id_tag, at: _ } => {
            tx.exec(
                "INSERT INTO id_tags (site_id, id_tag, status, expiry, parent_id_tag, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (site_id, id_tag) DO UPDATE SET status = excluded.status, expiry = excluded.expiry, \
                     parent_id_tag = excluded.parent_id_tag, updated_at = excluded.updated_at",
                &[site.into(), id_tag.into(), status.into(), (*expiry).into(), parent_id_tag.into(), now.into()],
            )
            .await?;
        }
        SiteEvent::IdTagChanged { id_tag, status: None, .. } => {
            tx.exec("DELETE FROM id_tags WHERE site_id = $1 AND id_tag = $2", &[site.into(), id_tag.into()]).await?;
        }
        SiteEvent::ConnectorStatus { station, connector: c, status, error_code, info, vendor_error_code, at } => {
            ensure_charger(tx, site, station, now).await?;
            tx.exec(
                "INSERT INTO connectors (site_id, station, evse, connector, status, error_code, info, \
                     vendor_error_code, status_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (site_id, station, evse, connector) DO UPDATE SET status = excluded.status, \
                     error_code = excluded.error_code, info = excluded.info, \
                     vendor_error_code = excluded.vendor_error_code, status_at = excluded.status_at, \
                     updated_at = excluded.updated_at",
                &[
                    site.into(),
                    station.into(),
                    evse(c),
                    connector(c),
                    status.as_str().into(),
                    error_code.into(),
                    info.into(),
                    vendor_error_code.into(),
                    (*at).into(),
                    now.into(),
                ],
            )
            .await?;
        }
        SiteEvent::TransactionStarted {
            station,
            transaction_uid,
            station_transaction_id,
            connector: c,
            id_tag,
            meter_start_wh,
            started_at,
            origin,
        } => {
            ensure_charger(tx, site, station, now).await?;
            // A stop may have come first (the hub learns of an offline session late):
            // fill in the start side, keep the stop side.
            tx.exec(
                "INSERT INTO sessions (site_id, transaction_uid, station, station_transaction_id, evse, connector, \
                     id_tag, origin, started_at, meter_start_wh, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (site_id, transaction_uid) DO UPDATE SET station = excluded.station, \
                     station_transaction_id = excluded.station_transaction_id, evse = excluded.evse, \
                     connector = excluded.connector, id_tag = COALESCE(excluded.id_tag, sessions.id_tag), \
                     origin = excluded.origin, started_at = COALESCE(excluded.started_at, sessions.started_at), \
                     meter_start_wh = COALESCE(excluded.meter_start_wh, sessions.meter_start_wh), \
                     updated_at = excluded.updated_at",
                &[
                    site.into(),
                    transaction_uid.into(),
                    station.into(),
                    station_transaction_id.into(),
                    evse(c),
                    connector(c),
                    id_tag.into(),
                    origin.as_str().into(),
                    (*started_at).into(),
                    (*meter_start_wh).into(),
                    now.into(),
                ],
            )
            .await?;
            update_session_energy(tx, site, transaction_uid).await?;
        }
        SiteEvent::MeterValues { station, connector: c, transaction_uid, samples } => {
            // Made once, shared by every sample's row.
            let (site_v, station_v, uid_v, seq_v) =
                (Val::from(site), Val::from(station), Val::from(transaction_uid), Val::from(as_i64(seq)));
            for s in samples {
                pending.samples.extend([
                    site_v.clone(),
                    station_v.clone(),
                    evse(c),
                    connector(c),
                    uid_v.clone(),
                    s.timestamp.into(),
                    s.measurand.as_str().into(),
                    (&s.phase).into(),
                    (&s.location).into(),
                    (&s.unit).into(),
                    (&s.context).into(),
                    (&s.format).into(),
                    s.value.as_str().into(),
                    s.numeric_base_value().filter(|v| v.is_finite()).into(),
                    seq_v.clone(),
                ]);
            }
            // The session's latest energy register: its stop meter when the stop has none.
            let latest = samples
                .iter()
                .filter(|s| s.is_energy_import_register())
                .filter_map(|s| Some((s.timestamp, s.numeric_base_value().filter(|v| v.is_finite())?)))
                .max_by_key(|(ts, _)| *ts);
            if let (Some(uid), Some((ts, wh))) = (transaction_uid, latest) {
                // f64 -> i64 saturates; a register beyond 9.2e18 Wh is not a register.
                pending.energy_reading(uid, ts, wh.round() as i64);
            }
        }
        SiteEvent::TransactionStopped {
            station,
            transaction_uid,
            meter_stop_wh,
            stopped_at,
            reason,
            id_tag,
            reconciled,
        } => {
            // The stop falls back to the latest energy register: write it first.
            pending.flush_energy_of(tx, site, transaction_uid, now).await?;
            // A stop the edge inferred (`reconciled`) never replaces one the station
            // reported; a reported one replaces an inferred one.
            tx.exec(
                "INSERT INTO sessions (site_id, transaction_uid, station, stopped_at, meter_stop_wh, stop_reason, \
                     stop_id_tag, reconciled, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (site_id, transaction_uid) DO UPDATE SET stopped_at = excluded.stopped_at, \
                     meter_stop_wh = COALESCE(excluded.meter_stop_wh, sessions.last_energy_wh), \
                     stop_reason = excluded.stop_reason, stop_id_tag = excluded.stop_id_tag, \
                     reconciled = excluded.reconciled, updated_at = excluded.updated_at \
                 WHERE sessions.stopped_at IS NULL OR sessions.reconciled OR NOT excluded.reconciled",
                &[
                    site.into(),
                    transaction_uid.into(),
                    station.into(),
                    (*stopped_at).into(),
                    (*meter_stop_wh).into(),
                    reason.map(|r| r.as_str()).into(),
                    id_tag.into(),
                    (*reconciled).into(),
                    now.into(),
                ],
            )
            .await?;
            update_session_energy(tx, site, transaction_uid).await?;
        }
        SiteEvent::SiteEnergy(report) => {
            crate::dashboard::energy::ingest(tx, site, seq, report, now).await?;
        }
    }
    // Charger offline, connector faults and fail-safe open and clear in the same transaction.
    crate::dashboard::alerts::on_event(tx, site, event).await
}

/// Records a Hello; where the site stands, `None` for an unknown site.
pub async fn record_hello(store: &Store, hello: &Hello, received_at: DateTime<Utc>) -> Result<Option<u64>, DbError> {
    let row = store
        .fetch_opt(
            "UPDATE sites SET last_hello_at = $2, agent_version = $3, hello_oldest_unacked = $4, hello_newest = $5 \
             WHERE id = $1 RETURNING applied_through",
            &[
                hello.site_id.as_str().into(),
                received_at.into(),
                hello.agent_version.as_str().into(),
                hello.oldest_unacked.map(as_i64).into(),
                hello.newest.map(as_i64).into(),
            ],
            &[Ty::Int],
        )
        .await?;
    Ok(row.and_then(|r| r.int(0)).map(as_u64))
}

/// Records a Status; false for an unknown site.
pub async fn record_status(store: &Store, status: &Status) -> Result<bool, DbError> {
    let known = store
        .exec(
            "UPDATE sites SET online = $2, status_at = $3 WHERE id = $1",
            &[status.site_id.as_str().into(), status.online.into(), status.at.into()],
        )
        .await?
        > 0;
    if known {
        crate::dashboard::alerts::on_status(store, &status.site_id, status.online, status.at).await?;
    }
    Ok(known)
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    pub transaction_uid: String,
    pub station: String,
    pub evse: Option<i64>,
    pub connector: Option<i64>,
    pub id_tag: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub meter_start_wh: Option<i64>,
    pub meter_stop_wh: Option<i64>,
    pub energy_wh: Option<i64>,
    pub stop_reason: Option<String>,
    pub reconciled: bool,
}

/// The sessions of a site, oldest start first.
pub async fn sessions(store: &Store, site_id: &str) -> Result<Vec<SessionRow>, DbError> {
    let rows = store
        .fetch(
            "SELECT transaction_uid, station, evse, connector, id_tag, started_at, stopped_at, meter_start_wh, \
                 meter_stop_wh, energy_wh, stop_reason, reconciled \
             FROM sessions WHERE site_id = $1 ORDER BY started_at, transaction_uid",
            &[site_id.into()],
            &[
                Ty::Text,
                Ty::Text,
                Ty::Int,
                Ty::Int,
                Ty::Text,
                Ty::Time,
                Ty::Time,
                Ty::Int,
                Ty::Int,
                Ty::Int,
                Ty::Text,
                Ty::Bool,
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| SessionRow {
            transaction_uid: r.text(0).unwrap_or_default().to_owned(),
            station: r.text(1).unwrap_or_default().to_owned(),
            evse: r.int(2),
            connector: r.int(3),
            id_tag: r.text(4).map(str::to_owned),
            started_at: r.time(5),
            stopped_at: r.time(6),
            meter_start_wh: r.int(7),
            meter_stop_wh: r.int(8),
            energy_wh: r.int(9),
            stop_reason: r.text(10).map(str::to_owned),
            reconciled: r.bool(11).unwrap_or(false),
        })
        .collect())
}

/// A stored event (for checks and the API).
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub seq: u64,
    pub event_id: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub effects_applied: bool,
}

/// The stored events of a site, by seq.
pub async fn events(store: &Store, site_id: &str) -> Result<Vec<EventRow>, DbError> {
    let rows = store
        .fetch(
            "SELECT seq, event_id, kind, payload, effects_applied FROM events WHERE site_id = $1 ORDER BY seq",
            &[site_id.into()],
            &[Ty::Int, Ty::Text, Ty::Text, Ty::Text, Ty::Bool],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let seq = r.int(0).map(as_u64).unwrap_or(0);
            let payload = serde_json::from_str(r.text(3).unwrap_or("null"))
                .map_err(|e| DbError::Data(format!("event {seq} of {site_id}: payload is not JSON: {e}")))?;
            Ok(EventRow {
                seq,
                event_id: r.text(1).unwrap_or_default().to_owned(),
                kind: r.text(2).unwrap_or_default().to_owned(),
                payload,
                effects_applied: r.bool(4).unwrap_or(false),
            })
        })
        .collect()
}
