//! The version-neutral charger model and its state changes. Every OCPP version adapter
//! maps its messages onto these operations; each runs inside one store job, writing the
//! state change and its outbox event in the same SQLite transaction.
//!
//! Transaction safety rules (the bugs SteVe and EVerest users hit, and how we avoid them):
//! - A retransmitted StartTransaction (same station, connector, idTag, meterStart and
//!   timestamp) finds its transaction by fingerprint and gets the same transactionId.
//! - A boot never closes a running transaction. A station that lost a transaction in a
//!   reboot is reconciled from later evidence: a new StartTransaction on the same
//!   connector closes the old one as `reconciled` at its last meter reading; a real
//!   StopTransaction arriving later supersedes that.
//! - A StopTransaction (or MeterValues) for a transactionId we never issued is a
//!   transaction the station started offline: it is recorded as such, never refused.

use crate::config::{AuthorizationConfig, UnknownTagPolicy};
use crate::store::{StoreError, ts};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use shared_model::events::SiteEvent;
use shared_model::model::{
    AuthorizationStatus, ConnectorRef, ConnectorStatus, MeterSample, StationInfo, StopReason, TransactionOrigin,
};

/// A station's registration state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    Accepted,
    Pending,
    Rejected,
}

impl Registration {
    pub fn as_str(self) -> &'static str {
        match self {
            Registration::Accepted => "accepted",
            Registration::Pending => "pending",
            Registration::Rejected => "rejected",
        }
    }

    /// Parses the stored name (anything unknown counts as pending).
    pub fn parse(s: &str) -> Registration {
        match s {
            "accepted" => Registration::Accepted,
            "rejected" => Registration::Rejected,
            _ => Registration::Pending,
        }
    }
}

/// What the handshake needs to know about a station.
#[derive(Debug, Clone)]
pub struct StationAuth {
    pub registration: Registration,
    pub password_hash: Option<String>,
}

/// Appends an event to the outbox (same transaction as the change it describes).
pub fn emit(conn: &Connection, event: &SiteEvent, now: DateTime<Utc>) -> Result<(), StoreError> {
    let payload = serde_json::to_string(event)?;
    conn.prepare_cached("INSERT INTO outbox (event_id, created_at, kind, payload) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![uuid::Uuid::new_v4().to_string(), ts(now), event.kind(), payload])?;
    Ok(())
}

/// Looks up a station for the WebSocket handshake.
pub fn station_auth(conn: &Connection, station: &str) -> Result<Option<StationAuth>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT registration, password_hash FROM chargers WHERE id = ?1")?
        .query_row([station], |r| {
            Ok(StationAuth { registration: Registration::parse(&r.get::<_, String>(0)?), password_hash: r.get(1)? })
        })
        .optional()?)
}

/// Registers a station we did not know (policy `pending` or `accept`). The password it
/// presented becomes its password when accepted, or waits for approval when pending.
pub fn register_unknown(
    conn: &Connection,
    station: &str,
    registration: Registration,
    presented_password_hash: Option<String>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO chargers (id, registration, password_hash, pending_password_hash, source, first_seen)
         VALUES (?1, ?2, CASE WHEN ?2 = 'accepted' THEN ?3 END, CASE WHEN ?2 = 'pending' THEN ?3 END, 'auto', ?4)
         ON CONFLICT (id) DO UPDATE SET pending_password_hash = excluded.pending_password_hash
         WHERE chargers.registration = 'pending'",
    )?
    .execute(params![station, registration.as_str(), presented_password_hash, ts(now)])?;
    emit(
        conn,
        &SiteEvent::StationRegistration {
            station: station.to_owned(),
            registration: registration.as_str().to_owned(),
            at: now,
        },
        now,
    )
}

/// Sets a station's registration (installer approval or block), adopting the password
/// the station presented while pending unless a new hash is given.
pub fn set_registration(
    conn: &Connection,
    station: &str,
    registration: Registration,
    password_hash: Option<String>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let n = conn.execute(
        "UPDATE chargers SET registration = ?2,
             password_hash = COALESCE(?3, password_hash, pending_password_hash),
             pending_password_hash = NULL
         WHERE id = ?1",
        params![station, registration.as_str(), password_hash],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("charger {station}")));
    }
    emit(
        conn,
        &SiteEvent::StationRegistration {
            station: station.to_owned(),
            registration: registration.as_str().to_owned(),
            at: now,
        },
        now,
    )
}

/// Records a connection or disconnection.
pub fn connection_changed(
    conn: &Connection,
    station: &str,
    protocol: &str,
    connected: bool,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE chargers SET last_seen = ?2, protocol = ?3, first_seen = COALESCE(first_seen, ?2) WHERE id = ?1",
    )?
    .execute(params![station, ts(now), protocol])?;
    emit(conn, &SiteEvent::StationConnection { station: station.to_owned(), connected, at: now }, now)
}

/// BootNotification: stores what the station says about itself; returns its registration.
/// Running transactions are left alone (see the module docs).
pub fn boot(
    conn: &Connection,
    station: &str,
    info: &StationInfo,
    now: DateTime<Utc>,
) -> Result<Registration, StoreError> {
    let registration: Option<String> = conn
        .prepare_cached(
            "UPDATE chargers SET vendor = ?2, model = ?3, serial_number = ?4, firmware_version = ?5, iccid = ?6,
                 imsi = ?7, meter_type = ?8, meter_serial_number = ?9, last_boot = ?10, last_seen = ?10
             WHERE id = ?1 RETURNING registration",
        )?
        .query_row(
            params![
                station,
                info.vendor,
                info.model,
                info.serial_number,
                info.firmware_version,
                info.iccid,
                info.imsi,
                info.meter_type,
                info.meter_serial_number,
                ts(now)
            ],
            |r| r.get(0),
        )
        .optional()?;
    let registration =
        Registration::parse(&registration.ok_or_else(|| StoreError::NotFound(format!("charger {station}")))?);
    emit(
        conn,
        &SiteEvent::StationBooted {
            station: station.to_owned(),
            info: info.clone(),
            registration: registration.as_str().to_owned(),
            at: now,
        },
        now,
    )?;
    Ok(registration)
}

/// Any message from a station: remember when we last heard from it.
pub fn touch(conn: &Connection, station: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE chargers SET last_seen = ?2 WHERE id = ?1")?.execute(params![station, ts(now)])?;
    Ok(())
}

/// A reported connector status.
#[derive(Debug, Clone)]
pub struct StatusReport {
    pub connector: ConnectorRef,
    pub status: ConnectorStatus,
    pub error_code: Option<String>,
    pub info: Option<String>,
    pub vendor_error_code: Option<String>,
    pub timestamp: Option<DateTime<Utc>>,
}

/// StatusNotification.
pub fn status(conn: &Connection, station: &str, report: &StatusReport, now: DateTime<Utc>) -> Result<(), StoreError> {
    let at = report.timestamp.unwrap_or(now);
    conn.prepare_cached(
        "INSERT INTO connectors (charger_id, evse, connector, status, error_code, info, vendor_error_code, status_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (charger_id, evse, connector) DO UPDATE SET status = excluded.status,
             error_code = excluded.error_code, info = excluded.info,
             vendor_error_code = excluded.vendor_error_code, status_at = excluded.status_at",
    )?
    .execute(params![
        station,
        report.connector.evse,
        report.connector.connector,
        report.status.as_str(),
        report.error_code,
        report.info,
        report.vendor_error_code,
        ts(at)
    ])?;
    emit(
        conn,
        &SiteEvent::ConnectorStatus {
            station: station.to_owned(),
            connector: report.connector,
            status: report.status,
            error_code: report.error_code.clone(),
            info: report.info.clone(),
            vendor_error_code: report.vendor_error_code.clone(),
            at,
        },
        now,
    )
}

/// The answer to an authorization request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuthResult {
    pub status: AuthorizationStatus,
    pub expiry: Option<DateTime<Utc>>,
    pub parent_id_tag: Option<String>,
}

/// Authorize: the local list first, then the cache of online answers, then the policy
/// for unknown tags. `check_concurrent` answers ConcurrentTx for a tag that already has a
/// running transaction (unless the config allows concurrent transactions).
pub fn authorize(
    conn: &Connection,
    id_tag: &str,
    policy: &AuthorizationConfig,
    check_concurrent: bool,
    now: DateTime<Utc>,
) -> Result<AuthResult, StoreError> {
    type Entry = (String, Option<String>, Option<String>);
    let lookup = |table: &str| -> Result<Option<Entry>, StoreError> {
        Ok(conn
            .prepare_cached(&format!("SELECT status, expiry, parent_id_tag FROM {table} WHERE id_tag = ?1"))?
            .query_row([id_tag], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?)
    };
    let found = match lookup("id_tags")? {
        Some(f) => Some(f),
        None => lookup("auth_cache")?,
    };
    let mut result = match found {
        Some((status, expiry, parent)) => {
            let expiry = expiry.as_deref().and_then(crate::store::parse_ts);
            let mut status = AuthorizationStatus::parse(&status).unwrap_or(AuthorizationStatus::Invalid);
            if status == AuthorizationStatus::Accepted && expiry.is_some_and(|e| e <= now) {
                status = AuthorizationStatus::Expired;
            }
            AuthResult { status, expiry, parent_id_tag: parent }
        }
        None => AuthResult {
            status: match policy.unknown_id_tags {
                UnknownTagPolicy::Accept => AuthorizationStatus::Accepted,
                UnknownTagPolicy::Reject => AuthorizationStatus::Invalid,
            },
            expiry: None,
            parent_id_tag: None,
        },
    };
    if check_concurrent && result.status == AuthorizationStatus::Accepted && !policy.allow_concurrent_tx {
        let running: i64 = conn
            .prepare_cached("SELECT count(*) FROM transactions WHERE id_tag = ?1 AND stop_source IS NULL")?
            .query_row([id_tag], |r| r.get(0))?;
        if running > 0 {
            result.status = AuthorizationStatus::ConcurrentTx;
        }
    }
    Ok(result)
}

/// Whether the hub should be asked about `id_tag` (real-time authorization): it is not in
/// the local list, and the cache has no answer for it younger than `max_age`.
pub fn needs_online_authorization(
    conn: &Connection,
    id_tag: &str,
    max_age: chrono::Duration,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let listed: i64 =
        conn.prepare_cached("SELECT count(*) FROM id_tags WHERE id_tag = ?1")?.query_row([id_tag], |r| r.get(0))?;
    if listed > 0 {
        return Ok(false);
    }
    let cached: Option<String> = conn
        .prepare_cached("SELECT updated_at FROM auth_cache WHERE id_tag = ?1")?
        .query_row([id_tag], |r| r.get(0))
        .optional()?;
    Ok(cached.as_deref().and_then(crate::store::parse_ts).is_none_or(|at| now - at >= max_age))
}

/// Keeps an online authority's answer for `id_tag` (the hub's) for offline use.
pub fn cache_authorization(
    conn: &Connection,
    id_tag: &str,
    status: AuthorizationStatus,
    expiry: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO auth_cache (id_tag, status, expiry, parent_id_tag, updated_at) VALUES (?1, ?2, ?3, NULL, ?4)
         ON CONFLICT (id_tag) DO UPDATE SET status = excluded.status, expiry = excluded.expiry,
             updated_at = excluded.updated_at",
    )?
    .execute(params![id_tag, status.as_str(), expiry.map(ts), ts(now)])?;
    Ok(())
}

/// A StartTransaction, version-neutral.
#[derive(Debug, Clone)]
pub struct StartReport {
    pub connector: ConnectorRef,
    pub id_tag: String,
    pub meter_start_wh: i64,
    pub timestamp: DateTime<Utc>,
    pub reservation_id: Option<i64>,
}

/// The transaction id handed to the station and the tag's authorization.
#[derive(Debug, Clone, PartialEq)]
pub struct StartOutcome {
    pub transaction_id: i64,
    pub auth: AuthResult,
    /// True when this was a retransmission of a start we already recorded.
    pub duplicate: bool,
}

/// StartTransaction. Always records the transaction and returns an id (the station may
/// have started charging already); the tag's status tells the station whether to go on.
pub fn start_transaction(
    conn: &Connection,
    station: &str,
    report: &StartReport,
    policy: &AuthorizationConfig,
    now: DateTime<Utc>,
) -> Result<StartOutcome, StoreError> {
    let fingerprint = format!(
        "{station}|{}|{}|{}|{}",
        report.connector.evse,
        report.id_tag,
        report.meter_start_wh,
        ts(report.timestamp)
    );
    let existing: Option<(i64, Option<String>)> = conn
        .prepare_cached("SELECT station_tx_id, auth_status FROM transactions WHERE start_fingerprint = ?1")?
        .query_row([&fingerprint], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((transaction_id, auth_status)) = existing {
        let status =
            auth_status.as_deref().and_then(AuthorizationStatus::parse).unwrap_or(AuthorizationStatus::Accepted);
        return Ok(StartOutcome {
            transaction_id,
            auth: AuthResult { status, expiry: None, parent_id_tag: None },
            duplicate: true,
        });
    }
    // A transaction still open on this connector was lost by the station (reboot, power
    // loss): close it as reconciled before the new one starts.
    let stale: Vec<(i64, String, Option<i64>, Option<String>)> = conn
        .prepare_cached(
            "SELECT pk, uid, last_meter_wh, last_meter_at FROM transactions
             WHERE charger_id = ?1 AND evse = ?2 AND stop_source IS NULL",
        )?
        .query_map(params![station, report.connector.evse], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    for (pk, uid, last_wh, last_at) in stale {
        let stopped_at = last_at.as_deref().and_then(crate::store::parse_ts).unwrap_or(report.timestamp);
        let meter_stop = last_wh.or(Some(report.meter_start_wh));
        conn.prepare_cached(
            "UPDATE transactions SET meter_stop_wh = ?2, stopped_at = ?3, stop_reason = 'Other',
                 stop_source = 'reconciled', updated_at = ?4 WHERE pk = ?1",
        )?
        .execute(params![pk, meter_stop, ts(stopped_at), ts(now)])?;
        emit(
            conn,
            &SiteEvent::TransactionStopped {
                station: station.to_owned(),
                transaction_uid: uid,
                meter_stop_wh: meter_stop,
                stopped_at,
                reason: Some(StopReason::Other),
                id_tag: None,
                reconciled: true,
            },
            now,
        )?;
    }
    let auth = authorize(conn, &report.id_tag, policy, true, now)?;
    let uid = uuid::Uuid::new_v4().to_string();
    conn.prepare_cached(
        "INSERT INTO transactions (uid, charger_id, evse, connector, station_tx_id, origin, id_tag, auth_status,
             reservation_id, meter_start_wh, started_at, start_fingerprint, last_meter_wh, last_meter_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, 0, 'online', ?5, ?6, ?7, ?8, ?9, ?10, ?8, ?9, ?11)",
    )?
    .execute(params![
        uid,
        station,
        report.connector.evse,
        report.connector.connector,
        report.id_tag,
        auth.status.as_str(),
        report.reservation_id,
        report.meter_start_wh,
        ts(report.timestamp),
        fingerprint,
        ts(now)
    ])?;
    let pk = conn.last_insert_rowid();
    if pk > i64::from(i32::MAX) {
        return Err(StoreError::Conflict("transaction ids exhausted the OCPP 1.6 integer range".into()));
    }
    conn.prepare_cached("UPDATE transactions SET station_tx_id = pk WHERE pk = ?1")?.execute([pk])?;
    emit(
        conn,
        &SiteEvent::TransactionStarted {
            station: station.to_owned(),
            transaction_uid: uid,
            station_transaction_id: pk.to_string(),
            connector: report.connector,
            id_tag: Some(report.id_tag.clone()),
            meter_start_wh: Some(report.meter_start_wh),
            started_at: Some(report.timestamp),
            origin: TransactionOrigin::Online,
        },
        now,
    )?;
    Ok(StartOutcome { transaction_id: pk, auth, duplicate: false })
}

struct TxRow {
    pk: i64,
    uid: String,
    stop_source: Option<String>,
    meter_stop_wh: Option<i64>,
    stopped_at: Option<String>,
}

fn find_transaction(conn: &Connection, station: &str, station_tx_id: i64) -> Result<Vec<TxRow>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT pk, uid, stop_source, meter_stop_wh, stopped_at FROM transactions
             WHERE charger_id = ?1 AND station_tx_id = ?2 ORDER BY (stop_source IS NULL) DESC, pk DESC",
        )?
        .query_map(params![station, station_tx_id], |r| {
            Ok(TxRow {
                pk: r.get(0)?,
                uid: r.get(1)?,
                stop_source: r.get(2)?,
                meter_stop_wh: r.get(3)?,
                stopped_at: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?)
}

fn insert_samples(
    conn: &Connection,
    station: &str,
    connector: ConnectorRef,
    tx_pk: Option<i64>,
    station_tx_id: Option<i64>,
    samples: &[MeterSample],
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO meter_samples (charger_id, evse, connector, tx_pk, station_tx_id, ts, measurand, phase, location,
             unit, context, format, value)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    for s in samples {
        stmt.execute(params![
            station,
            connector.evse,
            connector.connector,
            tx_pk,
            station_tx_id,
            ts(s.timestamp),
            s.measurand,
            s.phase,
            s.location,
            s.unit,
            s.context,
            s.format,
            s.value
        ])?;
    }
    Ok(())
}

/// The latest energy import register reading in a batch, in Wh.
fn last_energy_wh(samples: &[MeterSample]) -> Option<(i64, DateTime<Utc>)> {
    samples
        .iter()
        .filter(|s| s.is_energy_import_register())
        .filter_map(|s| s.numeric_base_value().map(|v| (v.round() as i64, s.timestamp)))
        .max_by_key(|(_, t)| *t)
}

/// Creates the record of a transaction the station started while offline.
fn insert_offline_transaction(
    conn: &Connection,
    station: &str,
    connector: ConnectorRef,
    station_tx_id: i64,
    id_tag: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(i64, String), StoreError> {
    let uid = uuid::Uuid::new_v4().to_string();
    conn.prepare_cached(
        "INSERT INTO transactions (uid, charger_id, evse, connector, station_tx_id, origin, id_tag, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'offline', ?6, ?7)",
    )?
    .execute(params![uid, station, connector.evse, connector.connector, station_tx_id, id_tag, ts(now)])?;
    let pk = conn.last_insert_rowid();
    // Meter values that arrived for this id before we knew the transaction.
    conn.prepare_cached(
        "UPDATE meter_samples SET tx_pk = ?3 WHERE charger_id = ?1 AND station_tx_id = ?2 AND tx_pk IS NULL",
    )?
    .execute(params![station, station_tx_id, pk])?;
    Ok((pk, uid))
}

/// MeterValues. Samples for a transaction id we do not know are kept (linked later when
/// the transaction becomes known).
pub fn meter_values(
    conn: &Connection,
    station: &str,
    connector: ConnectorRef,
    station_tx_id: Option<i64>,
    samples: &[MeterSample],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let tx = match station_tx_id {
        Some(id) => find_transaction(conn, station, id)?.into_iter().next().map(|t| (t.pk, t.uid)),
        None => None,
    };
    // Unknown id: the samples keep the station's id and are linked when it becomes known.
    insert_samples(conn, station, connector, tx.as_ref().map(|t| t.0), station_tx_id, samples)?;
    if let Some((pk, _)) = &tx
        && let Some((wh, at)) = last_energy_wh(samples)
    {
        conn.prepare_cached(
            "UPDATE transactions SET last_meter_wh = ?2, last_meter_at = ?3, updated_at = ?4
             WHERE pk = ?1 AND (last_meter_at IS NULL OR last_meter_at <= ?3)",
        )?
        .execute(params![pk, wh, ts(at), ts(now)])?;
    }
    emit(
        conn,
        &SiteEvent::MeterValues {
            station: station.to_owned(),
            connector,
            transaction_uid: tx.map(|t| t.1),
            samples: samples.to_vec(),
        },
        now,
    )
}

/// A StopTransaction, version-neutral.
#[derive(Debug, Clone)]
pub struct StopReport {
    pub station_tx_id: i64,
    pub id_tag: Option<String>,
    pub meter_stop_wh: i64,
    pub timestamp: DateTime<Utc>,
    pub reason: Option<StopReason>,
    pub samples: Vec<MeterSample>,
}

/// What became of a StopTransaction.
#[derive(Debug, Clone, PartialEq)]
pub struct StopOutcome {
    pub auth: Option<AuthResult>,
    pub transaction_uid: String,
    /// The transaction was unknown: started while the station was offline.
    pub offline: bool,
    /// A retransmission of a stop we already recorded.
    pub duplicate: bool,
}

/// StopTransaction. Never refused: an unknown id is an offline-started transaction.
pub fn stop_transaction(
    conn: &Connection,
    station: &str,
    report: &StopReport,
    policy: &AuthorizationConfig,
    now: DateTime<Utc>,
) -> Result<StopOutcome, StoreError> {
    let auth = match &report.id_tag {
        Some(tag) => Some(authorize(conn, tag, policy, false, now)?),
        None => None,
    };
    let candidates = find_transaction(conn, station, report.station_tx_id)?;
    let stop_ts = ts(report.timestamp);
    // A retransmitted stop: same id, already stopped by the station with the same data.
    if let Some(t) = candidates.iter().find(|t| {
        t.stop_source.as_deref() == Some("station")
            && t.meter_stop_wh == Some(report.meter_stop_wh)
            && t.stopped_at.as_deref() == Some(stop_ts.as_str())
    }) {
        return Ok(StopOutcome { auth, transaction_uid: t.uid.clone(), offline: false, duplicate: true });
    }
    let target = candidates.into_iter().find(|t| t.stop_source.as_deref() != Some("station"));
    let (pk, uid, offline, connector) = match target {
        Some(t) => {
            let (evse, connector): (u32, u32) = conn
                .prepare_cached("SELECT evse, connector FROM transactions WHERE pk = ?1")?
                .query_row([t.pk], |r| Ok((r.get(0)?, r.get(1)?)))?;
            (t.pk, t.uid, false, ConnectorRef { evse, connector })
        }
        None => {
            // Which connector? StopTransaction does not say; earlier meter values may.
            let connector: Option<(u32, u32)> = conn
                .prepare_cached(
                    "SELECT evse, connector FROM meter_samples
                     WHERE charger_id = ?1 AND station_tx_id = ?2 AND tx_pk IS NULL LIMIT 1",
                )?
                .query_row(params![station, report.station_tx_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let connector =
                connector.map(|(evse, connector)| ConnectorRef { evse, connector }).unwrap_or(ConnectorRef::STATION);
            let (pk, uid) = insert_offline_transaction(
                conn,
                station,
                connector,
                report.station_tx_id,
                report.id_tag.as_deref(),
                now,
            )?;
            // Start data from the earliest sample we hold for it (Transaction.Begin if sent).
            let begin = conn
                .prepare_cached(
                    "SELECT value, unit, ts FROM meter_samples WHERE tx_pk = ?1
                     AND measurand = 'Energy.Active.Import.Register' AND phase IS NULL ORDER BY ts LIMIT 1",
                )?
                .query_row([pk], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, String>(2)?))
                })
                .optional()?;
            let begin = begin.map(|(value, unit, t)| (value, unit, crate::store::parse_ts(&t))).or_else(|| {
                report
                    .samples
                    .iter()
                    .filter(|s| s.is_energy_import_register())
                    .min_by_key(|s| s.timestamp)
                    .map(|s| (s.value.clone(), s.unit.clone(), Some(s.timestamp)))
            });
            let (meter_start, started_at) = match begin {
                Some((value, unit, at)) => {
                    let sample = MeterSample {
                        timestamp: at.unwrap_or(report.timestamp),
                        value,
                        measurand: "Energy.Active.Import.Register".into(),
                        phase: None,
                        location: None,
                        unit,
                        context: None,
                        format: None,
                    };
                    (sample.numeric_base_value().map(|v| v.round() as i64), at)
                }
                None => (None, None),
            };
            conn.prepare_cached("UPDATE transactions SET meter_start_wh = ?2, started_at = ?3 WHERE pk = ?1")?
                .execute(params![pk, meter_start, started_at.map(ts)])?;
            emit(
                conn,
                &SiteEvent::TransactionStarted {
                    station: station.to_owned(),
                    transaction_uid: uid.clone(),
                    station_transaction_id: report.station_tx_id.to_string(),
                    connector,
                    id_tag: report.id_tag.clone(),
                    meter_start_wh: meter_start,
                    started_at,
                    origin: TransactionOrigin::Offline,
                },
                now,
            )?;
            (pk, uid, true, connector)
        }
    };
    insert_samples(conn, station, connector, Some(pk), Some(report.station_tx_id), &report.samples)?;
    conn.prepare_cached(
        "UPDATE transactions SET meter_stop_wh = ?2, stopped_at = ?3, stop_reason = ?4, stop_id_tag = ?5,
             stop_source = 'station', last_meter_wh = ?2, last_meter_at = ?3, updated_at = ?6
         WHERE pk = ?1",
    )?
    .execute(params![
        pk,
        report.meter_stop_wh,
        stop_ts,
        report.reason.map(StopReason::as_str),
        report.id_tag,
        ts(now)
    ])?;
    if !report.samples.is_empty() {
        emit(
            conn,
            &SiteEvent::MeterValues {
                station: station.to_owned(),
                connector,
                transaction_uid: Some(uid.clone()),
                samples: report.samples.clone(),
            },
            now,
        )?;
    }
    emit(
        conn,
        &SiteEvent::TransactionStopped {
            station: station.to_owned(),
            transaction_uid: uid.clone(),
            meter_stop_wh: Some(report.meter_stop_wh),
            stopped_at: report.timestamp,
            reason: report.reason,
            id_tag: report.id_tag.clone(),
            reconciled: false,
        },
        now,
    )?;
    Ok(StopOutcome { auth, transaction_uid: uid, offline, duplicate: false })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MIGRATIONS;

    fn db() -> Connection {
        let c = Connection::open_in_memory().expect("db");
        for m in MIGRATIONS {
            c.execute_batch(m).expect("migrate");
        }
        c.execute("INSERT INTO chargers (id, registration, source) VALUES ('CP1', 'accepted', 'config')", [])
            .expect("charger");
        c
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&Utc)
    }

    fn accept_all() -> AuthorizationConfig {
        AuthorizationConfig { unknown_id_tags: UnknownTagPolicy::Accept, ..Default::default() }
    }

    fn start(c: &Connection, connector: u32, tag: &str, meter: i64, at: &str) -> StartOutcome {
        let r = StartReport {
            connector: ConnectorRef::from_v16(connector),
            id_tag: tag.into(),
            meter_start_wh: meter,
            timestamp: t(at),
            reservation_id: None,
        };
        start_transaction(c, "CP1", &r, &accept_all(), t(at)).expect("start")
    }

    fn count(c: &Connection, sql: &str) -> i64 {
        c.query_row(sql, [], |r| r.get(0)).expect("count")
    }

    #[test]
    fn retransmitted_start_gets_the_same_id() {
        let c = db();
        let a = start(&c, 1, "TAG", 100, "2026-01-01T10:00:00Z");
        let b = start(&c, 1, "TAG", 100, "2026-01-01T10:00:00Z");
        assert_eq!(a.transaction_id, b.transaction_id);
        assert!(b.duplicate && !a.duplicate);
        assert_eq!(count(&c, "SELECT count(*) FROM transactions"), 1);
        assert_eq!(count(&c, "SELECT count(*) FROM outbox WHERE kind = 'transaction_started'"), 1);
    }

    #[test]
    fn new_start_on_a_busy_connector_reconciles_the_lost_one() {
        let c = db();
        let a = start(&c, 1, "TAG", 100, "2026-01-01T10:00:00Z");
        let sample = MeterSample {
            timestamp: t("2026-01-01T10:30:00Z"),
            value: "2.5".into(),
            measurand: "Energy.Active.Import.Register".into(),
            phase: None,
            location: None,
            unit: Some("kWh".into()),
            context: None,
            format: None,
        };
        meter_values(
            &c,
            "CP1",
            ConnectorRef::from_v16(1),
            Some(a.transaction_id),
            &[sample],
            t("2026-01-01T10:30:00Z"),
        )
        .expect("mv");
        let b = start(&c, 1, "TAG2", 2600, "2026-01-01T11:00:00Z");
        assert_ne!(a.transaction_id, b.transaction_id);
        let (src, stop): (String, i64) = c
            .query_row("SELECT stop_source, meter_stop_wh FROM transactions WHERE pk = ?1", [a.transaction_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("row");
        assert_eq!((src.as_str(), stop), ("reconciled", 2500));
        // The real stop arrives late and supersedes the reconciliation.
        let out = stop_transaction(
            &c,
            "CP1",
            &StopReport {
                station_tx_id: a.transaction_id,
                id_tag: None,
                meter_stop_wh: 2550,
                timestamp: t("2026-01-01T10:40:00Z"),
                reason: Some(StopReason::PowerLoss),
                samples: vec![],
            },
            &accept_all(),
            t("2026-01-01T11:05:00Z"),
        )
        .expect("stop");
        assert!(!out.offline && !out.duplicate);
        let (src, stop): (String, i64) = c
            .query_row("SELECT stop_source, meter_stop_wh FROM transactions WHERE pk = ?1", [a.transaction_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("row");
        assert_eq!((src.as_str(), stop), ("station", 2550));
        // b is untouched.
        assert_eq!(count(&c, "SELECT count(*) FROM transactions WHERE stop_source IS NULL"), 1);
    }

    #[test]
    fn unknown_stop_is_an_offline_transaction_with_its_earlier_samples() {
        let c = db();
        let begin = MeterSample {
            timestamp: t("2026-01-01T08:00:00Z"),
            value: "1000".into(),
            measurand: "Energy.Active.Import.Register".into(),
            phase: None,
            location: None,
            unit: Some("Wh".into()),
            context: Some("Sample.Periodic".into()),
            format: None,
        };
        meter_values(&c, "CP1", ConnectorRef::from_v16(2), Some(-7), &[begin], t("2026-01-01T09:00:00Z")).expect("mv");
        let report = StopReport {
            station_tx_id: -7,
            id_tag: Some("TAG".into()),
            meter_stop_wh: 5000,
            timestamp: t("2026-01-01T09:00:00Z"),
            reason: Some(StopReason::EVDisconnected),
            samples: vec![],
        };
        let out = stop_transaction(&c, "CP1", &report, &accept_all(), t("2026-01-01T09:00:01Z")).expect("stop");
        assert!(out.offline);
        let (origin, evse, start, stop): (String, u32, i64, i64) = c
            .query_row(
                "SELECT origin, evse, meter_start_wh, meter_stop_wh FROM transactions WHERE uid = ?1",
                [&out.transaction_uid],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .expect("row");
        assert_eq!((origin.as_str(), evse, start, stop), ("offline", 2, 1000, 5000));
        assert_eq!(count(&c, "SELECT count(*) FROM meter_samples WHERE tx_pk IS NULL"), 0);
        // A retransmission of the same stop changes nothing.
        let again = stop_transaction(&c, "CP1", &report, &accept_all(), t("2026-01-01T09:00:02Z")).expect("stop");
        assert!(again.duplicate);
        assert_eq!(count(&c, "SELECT count(*) FROM transactions"), 1);
        assert_eq!(count(&c, "SELECT count(*) FROM outbox WHERE kind = 'transaction_stopped'"), 1);
    }

    #[test]
    fn authorization_order_and_policies() {
        let c = db();
        c.execute_batch(
            "INSERT INTO id_tags VALUES ('OK', 'Accepted', NULL, NULL, 'config');
             INSERT INTO id_tags VALUES ('OLD', 'Accepted', '2020-01-01T00:00:00.000Z', NULL, 'config');
             INSERT INTO id_tags VALUES ('BAD', 'Blocked', NULL, NULL, 'config');
             INSERT INTO auth_cache VALUES ('CACHED', 'Accepted', NULL, 'P', '2026-01-01T00:00:00.000Z');",
        )
        .expect("seed");
        let now = t("2026-01-01T00:00:00Z");
        let reject = AuthorizationConfig::default();
        let status = |tag: &str, p: &AuthorizationConfig| authorize(&c, tag, p, true, now).expect("auth").status;
        assert_eq!(status("OK", &reject), AuthorizationStatus::Accepted);
        assert_eq!(status("OLD", &reject), AuthorizationStatus::Expired);
        assert_eq!(status("BAD", &reject), AuthorizationStatus::Blocked);
        assert_eq!(status("CACHED", &reject), AuthorizationStatus::Accepted);
        assert_eq!(status("NOPE", &reject), AuthorizationStatus::Invalid);
        assert_eq!(status("NOPE", &accept_all()), AuthorizationStatus::Accepted);
        start(&c, 1, "OK", 0, "2026-01-01T00:00:00Z");
        assert_eq!(status("OK", &reject), AuthorizationStatus::ConcurrentTx);
    }

    #[test]
    fn the_hub_is_asked_only_about_tags_without_a_fresh_answer() {
        let c = db();
        c.execute_batch("INSERT INTO id_tags VALUES ('LISTED', 'Accepted', NULL, NULL, 'config');").expect("seed");
        let hour = chrono::Duration::hours(1);
        let now = t("2026-01-01T12:00:00Z");
        let ask = |tag: &str, at| needs_online_authorization(&c, tag, hour, at).expect("query");
        assert!(!ask("LISTED", now), "the local list answers");
        assert!(ask("ROAMING", now), "unknown: ask");
        cache_authorization(&c, "ROAMING", AuthorizationStatus::Accepted, None, now).expect("cache");
        assert!(!ask("ROAMING", now + chrono::Duration::minutes(59)), "a fresh answer is used");
        assert!(ask("ROAMING", now + hour), "a stale answer is asked again");
        // Offline the cached answer decides, whatever its age.
        let reject = AuthorizationConfig::default();
        let later = now + chrono::Duration::days(3);
        assert_eq!(authorize(&c, "ROAMING", &reject, true, later).expect("auth").status, AuthorizationStatus::Accepted);
        cache_authorization(&c, "ROAMING", AuthorizationStatus::Blocked, None, later).expect("cache");
        assert_eq!(authorize(&c, "ROAMING", &reject, true, later).expect("auth").status, AuthorizationStatus::Blocked);
    }
}
