//! The charging profiles module, Receiver interface (OCPI 2.2.1 "Charging Profiles
//! module"): a partner caps one of its sessions.
//!
//! - `PUT chargingprofiles/{session_id}` (SetChargingProfile): the profile becomes a
//!   site command [`Command::SetSessionLimit`]. At a site with a balancer the cap bounds
//!   what the balancer offers that session (the site's own limits still win, and a cap
//!   below the charger's minimum current pauses it); at a site without one it goes to
//!   the charger as an OCPP 1.6 TxProfile. A limit in W is spread over the charger's
//!   phases at its voltage.
//! - `GET chargingprofiles/{session_id}?duration=&response_url=`: the charger's
//!   composite schedule (OCPP 1.6 GetCompositeSchedule) as the ActiveChargingProfile,
//!   the limit the charger really follows, whatever set it.
//! - `DELETE chargingprofiles/{session_id}?response_url=`: removes the cap
//!   (ClearProfileResult UNKNOWN when there was none).
//!
//! The answer is a ChargingProfileResponse (ACCEPTED, UNKNOWN_SESSION, REJECTED for a
//! session of another party or one that ended) with the `timeout` of commands; the
//! result is POSTed to `response_url` like a command's ([`super::commands`]): REJECTED
//! when the site has not answered by the deadline (the module has no TIMEOUT).
//!
//! Not offered: a profile for a session not yet started, updates pushed to the partner
//! when other inputs change the active profile (the Sender's PUT interface).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use shared_model::ocpi::charging_profiles::{
    ChargingProfileResponse, ChargingProfileResponseType, ChargingRateUnit, SetChargingProfile,
};
use shared_model::ocpi::commands::{check_ci_string, check_time, check_url};
use shared_model::sync::{Command, LimitPeriod, RateUnit, SessionLimit};

use super::commands::{self, CHARGING_PROFILES, NewRequest, SessionCheck};
use super::transport::{self, OcpiError, OcpiResult, form_pairs};
use super::{Caller, CallerExt, OcpiState};
use crate::db::DbError;

/// The longest schedule a GET may ask for (a day).
const MAX_DURATION_S: u32 = 86_400;

fn answer(state: &OcpiState, result: ChargingProfileResponseType) -> Response {
    transport::ok(ChargingProfileResponse { result, timeout: commands::timeout_s(state) })
}

fn db_err(e: DbError) -> OcpiError {
    OcpiError::db("handling the charging profile request", &e)
}

/// The `response_url` (and `duration`) of a GET or DELETE.
fn query(uri: &Uri, with_duration: bool) -> OcpiResult<(String, Option<u32>)> {
    let pairs = form_pairs(uri.query().unwrap_or(""));
    let get = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let url = get("response_url").ok_or_else(|| OcpiError::invalid("response_url is missing from the query"))?;
    check_url("response_url", &url).map_err(OcpiError::invalid)?;
    if !with_duration {
        return Ok((url, None));
    }
    let duration = get("duration").ok_or_else(|| OcpiError::invalid("duration is missing from the query"))?;
    let seconds = duration
        .parse::<u32>()
        .ok()
        .filter(|d| (1..=MAX_DURATION_S).contains(d))
        .ok_or_else(|| OcpiError::invalid(format!("duration {duration:?} is not 1 to {MAX_DURATION_S} seconds")))?;
    Ok((url, Some(seconds)))
}

/// The session if the caller may act on it; else the answer to give.
async fn running(
    state: &OcpiState,
    caller: &Caller,
    session_id: &str,
) -> OcpiResult<Result<(commands::SessionRef, i64), Response>> {
    check_ci_string("session_id", session_id, 36).map_err(OcpiError::invalid)?;
    Ok(match commands::check_session(state, caller, session_id).await.map_err(db_err)? {
        SessionCheck::Running(s, tx) => Ok((s, tx)),
        SessionCheck::Unknown(_) => Err(answer(state, ChargingProfileResponseType::UnknownSession)),
        SessionCheck::Rejected(_) => Err(answer(state, ChargingProfileResponseType::Rejected)),
    })
}

/// Stores and sends a request about session `s`.
async fn send(
    state: &OcpiState,
    caller: &Caller,
    kind: &'static str,
    body: &Value,
    response_url: &str,
    (session_id, s): (&str, &commands::SessionRef),
    command: Command,
) -> OcpiResult<Response> {
    commands::store_and_send(
        state,
        NewRequest {
            id: None,
            caller,
            module: CHARGING_PROFILES,
            command: kind,
            body,
            response_url,
            site: Some(&s.site),
            station: Some(&s.station),
            connector: s.evse,
            id_tag: s.id_tag.as_deref(),
            session_id: Some(session_id),
            site_command: Some(command),
            decided: None,
        },
    )
    .await
    .map_err(db_err)?;
    Ok(answer(state, ChargingProfileResponseType::Accepted))
}

fn connector(s: &commands::SessionRef) -> u32 {
    s.evse.and_then(|e| u32::try_from(e).ok()).unwrap_or(0)
}

/// `PUT chargingprofiles/{session_id}`.
pub async fn put(
    State(state): State<OcpiState>,
    caller: CallerExt,
    Path(session_id): Path<String>,
    body: Bytes,
) -> Response {
    let inner = async {
        let (req, raw): (SetChargingProfile, Value) = commands::parse_body(&body, "SetChargingProfile")?;
        check_url("response_url", &req.response_url).map_err(OcpiError::invalid)?;
        req.charging_profile.check().map_err(OcpiError::invalid)?;
        let (s, tx) = match running(&state, &caller, &session_id).await? {
            Ok(found) => found,
            Err(r) => return Ok(r),
        };
        let p = &req.charging_profile;
        let start = match &p.start_date_time {
            Some(t) => Some(check_time("charging_profile.start_date_time", t).map_err(OcpiError::invalid)?),
            None => None,
        };
        let limit = SessionLimit {
            start,
            duration_s: p.duration.map(|d| u32::try_from(d).unwrap_or(u32::MAX)),
            unit: match p.charging_rate_unit {
                ChargingRateUnit::A => RateUnit::A,
                ChargingRateUnit::W => RateUnit::W,
            },
            min_rate: p.min_charging_rate,
            periods: p
                .charging_profile_period
                .iter()
                .map(|q| LimitPeriod { start_s: u32::try_from(q.start_period).unwrap_or(u32::MAX), limit: q.limit })
                .collect(),
        };
        let command = Command::SetSessionLimit {
            station: s.station.clone(),
            connector: connector(&s),
            transaction_id: tx,
            limit: Some(limit),
        };
        send(&state, &caller, "SET_PROFILE", &raw, &req.response_url, (&session_id, &s), command).await
    };
    match inner.await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// `GET chargingprofiles/{session_id}?duration=&response_url=`.
pub async fn get(
    State(state): State<OcpiState>,
    caller: CallerExt,
    Path(session_id): Path<String>,
    uri: Uri,
) -> Response {
    let inner = async {
        let (response_url, duration) = query(&uri, true)?;
        let (s, _) = match running(&state, &caller, &session_id).await? {
            Ok(found) => found,
            Err(r) => return Ok(r),
        };
        let raw = serde_json::json!({ "duration": duration, "response_url": response_url });
        let command = Command::GetCompositeSchedule {
            station: s.station.clone(),
            connector: connector(&s),
            duration_s: duration.unwrap_or(MAX_DURATION_S),
        };
        send(&state, &caller, "GET_PROFILE", &raw, &response_url, (&session_id, &s), command).await
    };
    match inner.await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// `DELETE chargingprofiles/{session_id}?response_url=`.
pub async fn delete(
    State(state): State<OcpiState>,
    caller: CallerExt,
    Path(session_id): Path<String>,
    uri: Uri,
) -> Response {
    let inner = async {
        let (response_url, _) = query(&uri, false)?;
        let (s, tx) = match running(&state, &caller, &session_id).await? {
            Ok(found) => found,
            Err(r) => return Ok(r),
        };
        let raw = serde_json::json!({ "response_url": response_url });
        let command = Command::SetSessionLimit {
            station: s.station.clone(),
            connector: connector(&s),
            transaction_id: tx,
            limit: None,
        };
        send(&state, &caller, "CLEAR_PROFILE", &raw, &response_url, (&session_id, &s), command).await
    };
    match inner.await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}
