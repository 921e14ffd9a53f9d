//! Commands from the hub, each executed at most once.
//!
//! A command id is looked up and recorded in one store job before anything runs:
//! - known and finished: the stored [`CommandResult`] is published again, unchanged;
//! - known and still `started` in this process: nothing (its result follows);
//! - known and `started` by an earlier process (it crashed or was stopped mid-way): it is
//!   answered `failed` and not run again, since the charger may have done it already;
//! - past its `expires_at`: answered `expired`, not started;
//! - otherwise recorded as `started`, run, and its result stored, then published.
//!
//! Commands on the site's own tables (local authorization list, tariffs) run inside the
//! recording job itself, so they are exactly once with no `started` window at all.

use crate::app::Shared;
use crate::balancer::ExternalLimits;
use crate::ocpp::registry::CommandError;
use crate::store::{StoreError, ts};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};
use shared_model::events::SiteEvent;
use shared_model::ocpp::OcppRequest;
use shared_model::ocpp::v16::*;
use shared_model::sync::{
    Command, CommandEnvelope, CommandOutcome, CommandResult, LocalListEntry, PROTOCOL_VERSION, RateUnit, SessionLimit,
};
use std::collections::HashSet;

/// What to do with a command that came in.
#[derive(Debug)]
pub enum Received {
    /// Recorded as started: run it.
    Run(Box<CommandEnvelope>),
    /// Answer with this (stored) result; `fresh` is false for a redelivery.
    Answer { result: CommandResult, fresh: bool },
    /// Already running in this process: its result follows.
    Running,
    /// Not a command (no readable id): logged and dropped.
    Dropped(String),
}

fn outcome_str(o: CommandOutcome) -> &'static str {
    match o {
        CommandOutcome::Accepted => "accepted",
        CommandOutcome::Rejected => "rejected",
        CommandOutcome::Failed => "failed",
        CommandOutcome::Expired => "expired",
    }
}

fn reason(text: impl Into<String>) -> Value {
    json!({ "reason": text.into() })
}

fn result(site: &str, command_id: &str, outcome: CommandOutcome, detail: Value, at: DateTime<Utc>) -> CommandResult {
    CommandResult {
        v: PROTOCOL_VERSION,
        site_id: site.to_owned(),
        command_id: command_id.to_owned(),
        outcome,
        detail,
        at,
    }
}

fn insert_finished(conn: &Connection, payload: &str, r: &CommandResult, now: DateTime<Utc>) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO sync_commands (command_id, received_at, payload, outcome, result, finished_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?2)",
    )?
    .execute(params![r.command_id, ts(now), payload, outcome_str(r.outcome), serde_json::to_string(r)?])?;
    Ok(())
}

fn finish(conn: &Connection, r: &CommandResult) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE sync_commands SET outcome = ?2, result = ?3, finished_at = ?4 WHERE command_id = ?1")?
        .execute(params![r.command_id, outcome_str(r.outcome), serde_json::to_string(r)?, ts(r.at)])?;
    Ok(())
}

/// Looks the command up and records it (see the module docs). `running` holds the ids
/// this process is executing now.
pub async fn receive(shared: &Shared, raw: &[u8], running: &HashSet<String>) -> Result<Received, StoreError> {
    let site = shared.config.site.id.clone();
    let text = String::from_utf8_lossy(raw).into_owned();
    let parsed: Result<CommandEnvelope, String> = serde_json::from_str(&text).map_err(|e| e.to_string());
    let command_id = match &parsed {
        Ok(env) => env.command_id.clone(),
        Err(e) => {
            match serde_json::from_str::<Value>(&text).ok().and_then(|v| v["command_id"].as_str().map(str::to_owned)) {
                Some(id) => id,
                None => return Ok(Received::Dropped(format!("not a command envelope (no command_id): {e}"))),
            }
        }
    };
    if command_id.is_empty() || command_id.len() > 200 {
        return Ok(Received::Dropped(format!("command_id of {} bytes: expected 1 to 200", command_id.len())));
    }
    if running.contains(&command_id) {
        return Ok(Received::Running);
    }
    let has_energy = shared.config.energy.is_some();
    shared
        .store
        .write(move |conn| {
            let now = Utc::now();
            let known: Option<(String, Option<String>)> = conn
                .prepare_cached("SELECT outcome, result FROM sync_commands WHERE command_id = ?1")?
                .query_row([&command_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if let Some((outcome, stored)) = known {
                if outcome == "started" {
                    let r = interrupted(&site, &command_id, now);
                    finish(conn, &r)?;
                    return Ok(Received::Answer { result: r, fresh: true });
                }
                let r = match stored.as_deref().map(serde_json::from_str::<CommandResult>) {
                    Some(Ok(r)) => r,
                    _ => result(&site, &command_id, CommandOutcome::Failed, reason("the stored result is unreadable"), now),
                };
                return Ok(Received::Answer { result: r, fresh: false });
            }
            let env = match parsed {
                Ok(env) => env,
                Err(e) => {
                    let r = result(&site, &command_id, CommandOutcome::Failed, reason(format!("invalid command: {e}")), now);
                    insert_finished(conn, &text, &r, now)?;
                    return Ok(Received::Answer { result: r, fresh: true });
                }
            };
            let early = if env.site_id != site {
                Some((CommandOutcome::Failed, reason(format!("the command is for site {:?}, this is {site:?}", env.site_id))))
            } else if env.expires_at.is_some_and(|t| t <= now) {
                Some((
                    CommandOutcome::Expired,
                    json!({ "reason": "arrived after expires_at; not started", "expires_at": env.expires_at, "received_at": now }),
                ))
            } else {
                match &env.command {
                    Command::SetLocalList { full, entries } => Some(set_local_list(conn, *full, entries, now)?),
                    Command::SetTariff { tariff_id, tariff } => Some(set_tariff(conn, tariff_id, tariff, &command_id, now)?),
                    Command::SetSiteLimits { .. } if !has_energy => Some((
                        CommandOutcome::Rejected,
                        reason("balancing is off at this site (no [[circuits]] configured): nothing to limit"),
                    )),
                    _ => None,
                }
            };
            if let Some((outcome, detail)) = early {
                let r = result(&site, &command_id, outcome, detail, now);
                insert_finished(conn, &text, &r, now)?;
                return Ok(Received::Answer { result: r, fresh: true });
            }
            conn.prepare_cached(
                "INSERT INTO sync_commands (command_id, received_at, payload, outcome) VALUES (?1, ?2, ?3, 'started')",
            )?
            .execute(params![command_id, ts(now), text])?;
            Ok(Received::Run(Box::new(env)))
        })
        .await
}

fn interrupted(site: &str, command_id: &str, now: DateTime<Utc>) -> CommandResult {
    result(
        site,
        command_id,
        CommandOutcome::Failed,
        reason(
            "the agent stopped while this command was running; it is not run again because the charger may have \
             carried it out already",
        ),
        now,
    )
}

/// A command whose task died: failed, never run again.
pub async fn abandon(shared: &Shared, command_id: &str) -> Result<CommandResult, StoreError> {
    let r = interrupted(&shared.config.site.id, command_id, Utc::now());
    let stored = r.clone();
    shared.store.write(move |conn| finish(conn, &stored)).await?;
    Ok(r)
}

/// At start: commands a previous process left `started` are failed (never run twice),
/// and every result not yet handed to the broker is returned for publishing.
pub async fn recover(shared: &Shared) -> Result<Vec<CommandResult>, StoreError> {
    let site = shared.config.site.id.clone();
    shared
        .store
        .write(move |conn| {
            let now = Utc::now();
            let started: Vec<String> = conn
                .prepare("SELECT command_id FROM sync_commands WHERE outcome = 'started'")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for id in &started {
                tracing::warn!(command = %id, "sync: a command was interrupted by the last stop; answering failed");
                finish(conn, &interrupted(&site, id, now))?;
            }
            let mut stmt = conn.prepare(
                "SELECT result FROM sync_commands WHERE reported_at IS NULL AND finished_at IS NOT NULL
                 ORDER BY finished_at LIMIT 1000",
            )?;
            let rows = stmt.query_map([], |r| r.get::<_, Option<String>>(0))?;
            let mut out = Vec::new();
            for row in rows {
                if let Some(Ok(r)) = row?.as_deref().map(serde_json::from_str::<CommandResult>) {
                    out.push(r);
                }
            }
            Ok(out)
        })
        .await
}

/// Notes that these results were handed to the broker.
pub async fn mark_reported(shared: &Shared, ids: Vec<String>) -> Result<(), StoreError> {
    shared
        .store
        .write(move |conn| {
            let now = ts(Utc::now());
            let mut stmt = conn.prepare_cached("UPDATE sync_commands SET reported_at = ?2 WHERE command_id = ?1")?;
            for id in &ids {
                stmt.execute(params![id, now])?;
            }
            Ok(())
        })
        .await
}

/// Runs a recorded command and stores its result.
pub async fn run(shared: &Shared, env: &CommandEnvelope) -> CommandResult {
    let (outcome, detail) = execute(shared, env).await;
    let r = result(&shared.config.site.id, &env.command_id, outcome, detail, Utc::now());
    let stored = r.clone();
    if let Err(e) = shared.store.write(move |conn| finish(conn, &stored)).await {
        tracing::error!(command = %env.command_id, error = %e, "sync: storing a command's result failed");
    }
    r
}

async fn execute(shared: &Shared, env: &CommandEnvelope) -> (CommandOutcome, Value) {
    use CommandOutcome::{Accepted, Failed, Rejected};
    match &env.command {
        Command::RemoteStart { station, connector, id_tag } => {
            if *connector == Some(0) {
                return (Failed, reason("connector 0 is the whole charger: give a connector from 1, or none"));
            }
            let tag = match IdToken::try_new(id_tag.as_str()) {
                Ok(t) => t,
                Err(e) => return (Failed, reason(format!("id_tag: {e}"))),
            };
            // The hub vouches for the tag (a roaming partner authorized it): the charger's
            // StartTransaction with it is accepted here even if the site does not know it.
            let grants = &shared.remote_auth;
            let until = Utc::now() + crate::remote_auth::REMOTE_START_GRANT;
            grants.grant(&env.command_id, station, *connector, id_tag, until);
            let req = RemoteStartTransactionRequest { connector_id: *connector, id_tag: tag, charging_profile: None };
            let (outcome, mut detail) = call(shared, station, &req, |r| match r.status {
                RemoteStartStopStatus::Accepted => Accepted,
                RemoteStartStopStatus::Rejected => Rejected,
            })
            .await;
            let now = Utc::now();
            if outcome != Accepted {
                grants.revoke(&env.command_id);
            } else if let Some(expires_at) = env.expires_at.filter(|t| *t <= now) {
                // Answered after the hub gave up on it (the roaming partner was told it
                // timed out): the grant goes, so an unknown tag's late start is refused
                // here; the hub stops a late start of a tag the site accepts itself.
                grants.revoke(&env.command_id);
                if let Value::Object(map) = &mut detail {
                    map.insert("answered_after_expiry".into(), json!({ "expires_at": expires_at, "answered_at": now }));
                }
            }
            (outcome, detail)
        }
        Command::ReserveNow { station, connector, expiry, id_tag, reservation_id } => {
            if *connector == 0 {
                return (Failed, reason("connector 0 (any connector) is not offered: give a connector from 1"));
            }
            let tag = match IdToken::try_new(id_tag.as_str()) {
                Ok(t) => t,
                Err(e) => return (Failed, reason(format!("id_tag: {e}"))),
            };
            let key = reservation_key(station, *reservation_id);
            shared.remote_auth.grant(&key, station, Some(*connector), id_tag, *expiry);
            let req = ReserveNowRequest {
                connector_id: *connector,
                expiry_date: *expiry,
                id_tag: tag,
                parent_id_tag: None,
                reservation_id: *reservation_id,
            };
            let (outcome, detail) = call(shared, station, &req, |r| match r.status {
                ReservationStatus::Accepted => Accepted,
                ReservationStatus::Faulted
                | ReservationStatus::Occupied
                | ReservationStatus::Rejected
                | ReservationStatus::Unavailable => Rejected,
            })
            .await;
            if outcome != Accepted {
                shared.remote_auth.revoke(&key);
            }
            (outcome, detail)
        }
        Command::CancelReservation { station, reservation_id } => {
            let (outcome, detail) =
                call(shared, station, &CancelReservationRequest { reservation_id: *reservation_id }, |r| {
                    match r.status {
                        CancelReservationStatus::Accepted => Accepted,
                        CancelReservationStatus::Rejected => Rejected,
                    }
                })
                .await;
            if outcome == Accepted {
                shared.remote_auth.revoke(&reservation_key(station, *reservation_id));
            }
            (outcome, detail)
        }
        Command::SetSessionLimit { station, connector, transaction_id, limit } => {
            set_session_limit(shared, station, *connector, *transaction_id, limit.as_ref()).await
        }
        Command::GetCompositeSchedule { station, connector, duration_s } => {
            if *connector == 0 {
                return (Failed, reason("give a connector from 1"));
            }
            let req = GetCompositeScheduleRequest {
                connector_id: *connector,
                duration: i64::from(*duration_s),
                charging_rate_unit: None,
            };
            call(shared, station, &req, |r| match r.status {
                GetCompositeScheduleStatus::Accepted => Accepted,
                GetCompositeScheduleStatus::Rejected => Rejected,
            })
            .await
        }
        Command::RemoteStop { station, transaction_id } => {
            let Ok(transaction_id) = i32::try_from(*transaction_id) else {
                return (
                    Failed,
                    reason(format!("transaction_id {transaction_id} is out of the OCPP 1.6 integer range")),
                );
            };
            call(shared, station, &RemoteStopTransactionRequest { transaction_id }, |r| match r.status {
                RemoteStartStopStatus::Accepted => Accepted,
                RemoteStartStopStatus::Rejected => Rejected,
            })
            .await
        }
        Command::ChangeAvailability { station, connector, operative } => {
            let r#type = if *operative { AvailabilityType::Operative } else { AvailabilityType::Inoperative };
            call(shared, station, &ChangeAvailabilityRequest { connector_id: *connector, r#type }, |r| match r.status {
                AvailabilityStatus::Accepted | AvailabilityStatus::Scheduled => Accepted,
                AvailabilityStatus::Rejected => Rejected,
            })
            .await
        }
        Command::Reset { station, hard } => {
            let r#type = if *hard { ResetType::Hard } else { ResetType::Soft };
            call(shared, station, &ResetRequest { r#type }, |r| match r.status {
                ResetStatus::Accepted => Accepted,
                ResetStatus::Rejected => Rejected,
            })
            .await
        }
        Command::UnlockConnector { station, connector } => {
            if *connector == 0 {
                return (Failed, reason("connector 0 cannot be unlocked: give a connector from 1"));
            }
            call(shared, station, &UnlockConnectorRequest { connector_id: *connector }, |r| match r.status {
                UnlockStatus::Unlocked => Accepted,
                UnlockStatus::UnlockFailed | UnlockStatus::NotSupported => Rejected,
            })
            .await
        }
        Command::ChangeConfiguration { station, key, value } => {
            let (key, value) = match (CiString50::try_new(key.as_str()), CiString500::try_new(value.as_str())) {
                (Ok(k), Ok(v)) => (k, v),
                (Err(e), _) => return (Failed, reason(format!("key: {e}"))),
                (_, Err(e)) => return (Failed, reason(format!("value: {e}"))),
            };
            call(shared, station, &ChangeConfigurationRequest { key, value }, |r| match r.status {
                ConfigurationStatus::Accepted | ConfigurationStatus::RebootRequired => Accepted,
                ConfigurationStatus::Rejected | ConfigurationStatus::NotSupported => Rejected,
            })
            .await
        }
        Command::SetSiteLimits { limits } => {
            let limits: ExternalLimits = match serde_json::from_value(limits.clone()) {
                Ok(l) => l,
                Err(e) => return (Failed, reason(format!("limits: {e}"))),
            };
            if let Err(e) = crate::api::check_limits(&limits) {
                return (Failed, reason(format!("limits: {e}")));
            }
            shared.control.set_limits(limits.clone());
            tracing::info!(?limits, "sync: external limits replaced by the hub");
            (Accepted, serde_json::to_value(&limits).unwrap_or(Value::Null))
        }
        // Run inside the recording job (see `receive`); never reach here.
        Command::SetLocalList { .. } | Command::SetTariff { .. } => (Failed, reason("not run as a charger command")),
    }
}

/// The [`crate::remote_auth`] key of a reservation.
fn reservation_key(station: &str, reservation_id: i32) -> String {
    format!("reservation:{station}:{reservation_id}")
}

/// The id of the TxProfile a session limit becomes at a site without a balancer (one per
/// connector: a new limit replaces the last one).
const SESSION_LIMIT_PROFILE_ID: i32 = 900_000;

/// A session cap: with the balancer, a bound on what it offers the session (it keeps the
/// site's limits whatever the cap says); without one, a TxProfile on the charger.
async fn set_session_limit(
    shared: &Shared,
    station: &str,
    connector: u32,
    transaction_id: i64,
    limit: Option<&SessionLimit>,
) -> (CommandOutcome, Value) {
    use CommandOutcome::{Accepted, Failed, Rejected};
    if connector == 0 {
        return (Failed, reason("give a connector from 1"));
    }
    if shared.directory.get(station).is_none() {
        return (Failed, reason(format!("no charger {station:?} at this site")));
    }
    if shared.config.energy.is_some() {
        let had = shared.control.set_session_limit(station, transaction_id, limit.cloned());
        return match limit {
            Some(_) => (Accepted, json!({ "applied_by": "balancer", "replaced": had })),
            None if had => (Accepted, json!({ "applied_by": "balancer", "cleared": true })),
            None => (Rejected, json!({ "status": "Unknown", "reason": "no limit was set on this session" })),
        };
    }
    let Ok(tx) = i32::try_from(transaction_id) else {
        return (Failed, reason(format!("transaction_id {transaction_id} is out of the OCPP 1.6 integer range")));
    };
    let Some(limit) = limit else {
        let req = ClearChargingProfileRequest {
            id: Some(SESSION_LIMIT_PROFILE_ID + i32::try_from(connector).unwrap_or(0)),
            connector_id: None,
            charging_profile_purpose: None,
            stack_level: None,
        };
        return call(shared, station, &req, |r| match r.status {
            ClearChargingProfileStatus::Accepted => Accepted,
            ClearChargingProfileStatus::Unknown => Rejected,
        })
        .await;
    };
    let profile = ChargingProfile {
        charging_profile_id: SESSION_LIMIT_PROFILE_ID + i32::try_from(connector).unwrap_or(0),
        transaction_id: Some(tx),
        stack_level: 1,
        charging_profile_purpose: ChargingProfilePurposeType::TxProfile,
        charging_profile_kind: if limit.start.is_some() {
            ChargingProfileKindType::Absolute
        } else {
            ChargingProfileKindType::Relative
        },
        recurrency_kind: None,
        valid_from: None,
        valid_to: None,
        charging_schedule: ChargingSchedule {
            duration: limit.duration_s.map(i64::from),
            start_schedule: limit.start,
            charging_rate_unit: match limit.unit {
                RateUnit::A => ChargingRateUnitType::A,
                RateUnit::W => ChargingRateUnitType::W,
            },
            charging_schedule_period: limit
                .periods
                .iter()
                .map(|p| ChargingSchedulePeriod {
                    start_period: i64::from(p.start_s),
                    // The schema wants a multiple of 0.1.
                    limit: (p.limit * 10.0).floor() / 10.0,
                    number_phases: None,
                })
                .collect(),
            min_charging_rate: limit.min_rate.map(|r| (r * 10.0).round() / 10.0),
        },
    };
    let req = SetChargingProfileRequest { connector_id: connector, cs_charging_profiles: profile };
    call(shared, station, &req, |r| match r.status {
        ChargingProfileStatus::Accepted => Accepted,
        ChargingProfileStatus::Rejected | ChargingProfileStatus::NotSupported => Rejected,
    })
    .await
}

/// Sends a typed OCPP 1.6 CALL; the outcome comes from the charger's answer.
async fn call<R: OcppRequest>(
    shared: &Shared,
    station: &str,
    request: &R,
    judge: impl Fn(&R::Response) -> CommandOutcome,
) -> (CommandOutcome, Value) {
    if shared.directory.get(station).is_none() {
        return (CommandOutcome::Failed, reason(format!("no charger {station:?} at this site")));
    }
    match shared.registry.call(station, request).await {
        Ok(answer) => (judge(&answer), serde_json::to_value(&answer).unwrap_or(Value::Null)),
        Err(e) => {
            let rejected = matches!(e, CommandError::CallError { .. });
            let outcome = if rejected { CommandOutcome::Rejected } else { CommandOutcome::Failed };
            (outcome, json!({ "reason": e.to_string(), "action": R::ACTION }))
        }
    }
}

/// Applies a local authorization list (inside the recording job). `full` replaces every
/// entry the hub gave before (entries from the config file and the local API stay).
fn set_local_list(
    conn: &Connection,
    full: bool,
    entries: &[LocalListEntry],
    now: DateTime<Utc>,
) -> Result<(CommandOutcome, Value), StoreError> {
    for (i, e) in entries.iter().enumerate() {
        let bad = if e.id_tag.is_empty() || e.id_tag.chars().count() > 20 {
            Some(format!("id_tag {:?} must be 1 to 20 characters (OCPP idToken)", e.id_tag))
        } else if e.status.as_deref().is_some_and(|s| shared_model::model::AuthorizationStatus::parse(s).is_none()) {
            Some(format!("status {:?} is not one of Accepted, Blocked, Expired, Invalid, ConcurrentTx", e.status))
        } else if e.parent_id_tag.as_ref().is_some_and(|p| p.chars().count() > 20) {
            Some("parent_id_tag must be at most 20 characters".to_owned())
        } else {
            None
        };
        if let Some(bad) = bad {
            return Ok((CommandOutcome::Failed, reason(format!("entries[{i}]: {bad}; nothing was changed"))));
        }
    }
    let mut removed = 0usize;
    let mut remove = |conn: &Connection, id_tag: &str| -> Result<(), StoreError> {
        if conn.prepare_cached("DELETE FROM id_tags WHERE id_tag = ?1")?.execute([id_tag])? > 0 {
            removed += 1;
            let event = SiteEvent::IdTagChanged {
                id_tag: id_tag.to_owned(),
                status: None,
                expiry: None,
                parent_id_tag: None,
                at: now,
            };
            crate::chargers::emit(conn, &event, now)?;
        }
        Ok(())
    };
    if full {
        let listed: HashSet<&str> = entries.iter().filter(|e| e.status.is_some()).map(|e| e.id_tag.as_str()).collect();
        let previous: Vec<String> = conn
            .prepare_cached("SELECT id_tag FROM id_tags WHERE source = 'hub' ORDER BY id_tag")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for id in previous.iter().filter(|id| !listed.contains(id.as_str())) {
            remove(conn, id.as_str())?;
        }
    }
    let mut set = 0usize;
    for e in entries {
        let Some(status) = &e.status else {
            remove(conn, &e.id_tag)?;
            continue;
        };
        conn.prepare_cached(
            "INSERT INTO id_tags (id_tag, status, expiry, parent_id_tag, source) VALUES (?1, ?2, ?3, ?4, 'hub')
             ON CONFLICT (id_tag) DO UPDATE SET status = excluded.status, expiry = excluded.expiry,
                 parent_id_tag = excluded.parent_id_tag, source = 'hub'",
        )?
        .execute(params![e.id_tag, status, e.expiry.map(ts), e.parent_id_tag])?;
        set += 1;
        let event = SiteEvent::IdTagChanged {
            id_tag: e.id_tag.clone(),
            status: Some(status.clone()),
            expiry: e.expiry,
            parent_id_tag: e.parent_id_tag.clone(),
            at: now,
        };
        crate::chargers::emit(conn, &event, now)?;
    }
    Ok((CommandOutcome::Accepted, json!({ "full": full, "set": set, "removed": removed })))
}

/// Stores a tariff (inside the recording job).
fn set_tariff(
    conn: &Connection,
    tariff_id: &str,
    tariff: &Value,
    command_id: &str,
    now: DateTime<Utc>,
) -> Result<(CommandOutcome, Value), StoreError> {
    if tariff_id.is_empty() || tariff_id.chars().count() > 36 {
        return Ok((CommandOutcome::Failed, reason("tariff_id must be 1 to 36 characters (OCPI CiString(36))")));
    }
    if !tariff.is_object() {
        return Ok((CommandOutcome::Failed, reason("tariff must be a JSON object (an OCPI tariff)")));
    }
    conn.prepare_cached(
        "INSERT INTO tariffs (tariff_id, tariff, command_id, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (tariff_id) DO UPDATE SET tariff = excluded.tariff, command_id = excluded.command_id,
             updated_at = excluded.updated_at",
    )?
    .execute(params![tariff_id, tariff.to_string(), command_id, ts(now)])?;
    Ok((CommandOutcome::Accepted, json!({ "tariff_id": tariff_id })))
}
