//! The commands module, Receiver interface (OCPI 2.2.1 "Commands module"):
//! `POST commands/{START_SESSION|STOP_SESSION|RESERVE_NOW|CANCEL_RESERVATION|UNLOCK_CONNECTOR}`,
//! and the asynchronous results of these and of the charging profile requests
//! ([`super::chargingprofiles`]).
//!
//! A request is checked (a body that is not the command's object: 2001), its Location,
//! EVSE and Connector are mapped to our site, station and OCPP connector (unknown or not
//! published: 2003 with a REJECTED CommandResponse, as the spec's UNLOCK_CONNECTOR example
//! shows), and it becomes a site command ([`crate::commands`]) whose `expires_at` is the
//! command's deadline, so a site that gets it late does not carry it out. The request is
//! stored first (table `ocpi_commands`, with its `response_url` and deadline), then the
//! site command, then it is published; the CommandResponse says ACCEPTED with the
//! `timeout` of `[ocpi] command_timeout_s`.
//!
//! [`run`] then, every `refresh_interval_ms`, on every replica:
//! - decides each open request once: from the site's CommandResult when it came before
//!   the deadline, else TIMEOUT at the deadline (a conditional UPDATE: the first decision
//!   stands, whoever makes it);
//! - POSTs each decided result to its `response_url` with our token, retried with
//!   backoff (0.5 s doubling to 60 s, [`POST_TRIES`] tries) until the partner answers
//!   1000, and stores that it did: a restarted hub neither loses nor repeats it (short of
//!   dying between the partner's answer and that write);
//! - stops a transaction that a START_SESSION started although the partner was told it
//!   failed or timed out ([`LATE_START_WATCH`]), and records why;
//! - follows the reservations RESERVE_NOW made: one that ends unused (expired, or
//!   cancelled at the site or by the CPO side) gets a second result, CANCELED_RESERVATION,
//!   at the RESERVE_NOW's `response_url`, once ([`watch_reservations`]).
//!
//! Sessions: STOP_SESSION's `session_id` (and the charging profiles' one) is our session
//! id as the hub's `sessions` table has it, `transaction_uid`. (The sessions module that
//! serves OCPI Sessions is written separately; it must use the same id.) A partner may
//! act on a session of a token of its own party (pushed through the tokens module) or of
//! a token it used in a START_SESSION or RESERVE_NOW at that site; any other is REJECTED.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use shared_model::ocpi::charging_profiles::{
    ActiveChargingProfile, ActiveChargingProfileResult, ChargingProfile, ChargingProfilePeriod, ChargingProfileResult,
    ChargingProfileResultType, ChargingRateUnit,
};
use shared_model::ocpi::commands::{
    CancelReservation, CommandResponse, CommandResponseType, CommandResult, CommandResultType, CommandType,
    DisplayText, ReserveNow, StartSession, StopSession, UnlockConnector, check_ci_string, check_time, check_url,
};
use shared_model::ocpi::{Envelope, Token, status, timestamp};
use shared_model::sync::{Command, CommandOutcome, CommandResult as SiteResult};

use super::client::Route;
use super::partners::{self, PartnerState};
use super::transport::{self, OcpiError, OcpiResult};
use super::{Caller, CallerExt, OcpiState, locations};
use crate::db::{DbError, Row, Ty};

/// The tries of one result POST before it is given up (0.5 s doubling to 60 s between
/// them: about eight minutes in all).
pub const POST_TRIES: i64 = 12;

/// How long after a START_SESSION was answered with anything but ACCEPTED a transaction
/// it started anyway is still looked for (and stopped).
pub const LATE_START_WATCH: chrono::Duration = chrono::Duration::minutes(30);

/// The clock difference allowed between a site and the hub when a transaction is
/// matched to the START_SESSION that asked for it.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(120);

/// A replica that POSTs a result holds it this long (longer than the client's timeout).
const POST_LEASE: chrono::Duration = chrono::Duration::seconds(60);

/// OCPP 1.6 idTag: at most 20 characters.
const MAX_ID_TAG: usize = 20;

/// A stored request's module.
pub const COMMANDS: &str = "commands";
/// See [`super::chargingprofiles`].
pub const CHARGING_PROFILES: &str = "chargingprofiles";

/// The wait between result POSTs after `tries` failed ones.
fn backoff(tries: i64) -> chrono::Duration {
    let ms = 500i64.saturating_mul(1i64 << tries.clamp(1, 8).saturating_sub(1));
    chrono::Duration::milliseconds(ms.min(60_000))
}

/// The `timeout` of commands, seconds.
pub fn timeout_s(state: &OcpiState) -> u32 {
    state.settings.command_timeout_s
}

fn response(state: &OcpiState, result: CommandResponseType, message: Option<String>) -> Response {
    transport::ok(CommandResponse {
        result,
        timeout: timeout_s(state),
        message: message.map(DisplayText::en).unwrap_or_default(),
    })
}

/// An answer with `data` and a status code other than 1000 (OCPI 2.2.1 "Commands
/// module": an unknown Location is 2003 with a REJECTED CommandResponse).
pub fn with_status<T: Serialize>(http: StatusCode, code: u16, message: &str, data: T) -> Response {
    let body = Envelope {
        data: Some(data),
        status_code: code,
        status_message: Some(message.to_owned()),
        timestamp: timestamp(Utc::now()),
    };
    (http, axum::Json(body)).into_response()
}

fn unknown_location(state: &OcpiState, message: String) -> Response {
    let data = CommandResponse {
        result: CommandResponseType::Rejected,
        timeout: timeout_s(state),
        message: DisplayText::en(message.clone()),
    };
    with_status(StatusCode::NOT_FOUND, status::UNKNOWN_LOCATION, &message, data)
}

/// Parses a request body as `T`; a 2001 that says what is wrong.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> OcpiResult<(T, Value)> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| OcpiError::invalid(format!("the body is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(OcpiError::invalid(format!("the body must be a {what} object")));
    }
    let parsed = serde_json::from_value(value.clone())
        .map_err(|e| OcpiError::invalid(format!("the body is not a {what} object: {e}")))?;
    Ok((parsed, value))
}

fn ci(field: &str, value: &str) -> OcpiResult<()> {
    check_ci_string(field, value, 36).map_err(OcpiError::invalid)
}

fn ci_opt(field: &str, value: Option<&String>) -> OcpiResult<()> {
    value.map_or(Ok(()), |v| ci(field, v))
}

fn url(value: &str) -> OcpiResult<()> {
    check_url("response_url", value).map_err(OcpiError::invalid)
}

fn check_token(token: &Token) -> OcpiResult<()> {
    ci("token.uid", &token.uid)?;
    if !shared_model::ocpi::TOKEN_TYPES.contains(&token.token_type.as_str()) {
        return Err(OcpiError::invalid(format!(
            "token.type {:?} is not one of {}",
            token.token_type,
            shared_model::ocpi::TOKEN_TYPES.join(", ")
        )));
    }
    Ok(())
}

/// Whether the token is of the caller's own party (OCPI 2.2.1: an eMSP SHALL only use its
/// own Tokens in StartSession and ReserveNow).
fn own_token(caller: &Caller, token: &Token) -> bool {
    let p = &caller.partner;
    p.country_code.as_deref().is_some_and(|c| c.eq_ignore_ascii_case(&token.country_code))
        && p.party_id.as_deref().is_some_and(|c| c.eq_ignore_ascii_case(&token.party_id))
}

// ---- locations and sessions -------------------------------------------------------

/// One EVSE of a published Location, with where it is at the site.
#[derive(Debug, Clone, PartialEq)]
pub struct EvseRef {
    pub uid: String,
    pub station: String,
    /// Our EVSE number: the OCPP 1.6 connectorId.
    pub evse: i64,
    /// The OCPI Connector ids.
    pub connectors: Vec<i64>,
    /// Its OCPI status.
    pub status: &'static str,
}

/// The site and EVSEs of a published Location; `None` when there is none of that id.
pub async fn location_evses(state: &OcpiState, location_id: &str) -> Result<Option<(String, Vec<EvseRef>)>, DbError> {
    let Some(row) = state
        .store
        .fetch_opt(
            "SELECT site_id FROM ocpi_locations WHERE location_id = $1 AND publish = $2",
            &[location_id.into(), true.into()],
            &[Ty::Text],
        )
        .await?
    else {
        return Ok(None);
    };
    let site = row.text(0).unwrap_or_default().to_owned();
    let rows = state
        .store
        .fetch(
            "SELECT c.station, c.evse, c.connector, c.status, ch.connected FROM connectors c \
             LEFT JOIN chargers ch ON ch.site_id = c.site_id AND ch.station = c.station \
             WHERE c.site_id = $1 AND c.evse > 0 AND c.connector > 0 ORDER BY c.station, c.evse, c.connector",
            &[site.as_str().into()],
            &[Ty::Text, Ty::Int, Ty::Int, Ty::Text, Ty::Bool],
        )
        .await?;
    let mut evses: Vec<(EvseRef, Vec<String>, Option<bool>)> = Vec::new();
    for r in &rows {
        let (station, evse) = (r.text(0).unwrap_or_default(), r.int(1).unwrap_or(0));
        let status = r.text(3).unwrap_or_default().to_owned();
        match evses.iter_mut().find(|(e, _, _)| e.station == station && e.evse == evse) {
            Some((e, statuses, _)) => {
                e.connectors.push(r.int(2).unwrap_or(0));
                statuses.push(status);
            }
            None => evses.push((
                EvseRef {
                    uid: locations::evse_uid(location_id, station, evse),
                    station: station.to_owned(),
                    evse,
                    connectors: vec![r.int(2).unwrap_or(0)],
                    status: "UNKNOWN",
                },
                vec![status],
                r.bool(4),
            )),
        }
    }
    let evses = evses
        .into_iter()
        .map(|(mut e, statuses, connected)| {
            e.status = locations::evse_status(statuses.iter().map(String::as_str), connected);
            e
        })
        .collect();
    Ok(Some((site, evses)))
}

/// Where a command goes: the site, and the EVSE when one was named or chosen.
#[derive(Debug, Clone)]
struct Target {
    site: String,
    evse: Option<EvseRef>,
}

/// Maps `location_id` / `evse_uid` / `connector_id` to our site, station and EVSE;
/// `Err(response)`: 2003 with a REJECTED CommandResponse.
async fn target(
    state: &OcpiState,
    location_id: &str,
    evse_uid: Option<&str>,
    connector_id: Option<&str>,
) -> OcpiResult<Result<Target, Response>> {
    let found = location_evses(state, location_id).await.map_err(|e| OcpiError::db("reading the location", &e))?;
    let Some((site, evses)) = found else {
        return Ok(Err(unknown_location(state, format!("no location {location_id:?}"))));
    };
    let Some(uid) = evse_uid else { return Ok(Ok(Target { site, evse: None })) };
    let Some(evse) = evses.into_iter().find(|e| e.uid == uid) else {
        return Ok(Err(unknown_location(state, format!("location {location_id:?} has no EVSE {uid:?}"))));
    };
    if let Some(c) = connector_id
        && !evse.connectors.iter().any(|id| id.to_string() == c)
    {
        return Ok(Err(unknown_location(
            state,
            format!("EVSE {uid:?} of location {location_id:?} has no connector {c:?}"),
        )));
    }
    Ok(Ok(Target { site, evse: Some(evse) }))
}

/// A session as the hub has it.
#[derive(Debug, Clone)]
pub struct SessionRef {
    pub site: String,
    pub station: String,
    pub transaction_id: Option<i64>,
    pub evse: Option<i64>,
    pub id_tag: Option<String>,
    pub stopped_at: Option<DateTime<Utc>>,
}

/// Our session `session_id` (`sessions.transaction_uid`).
pub async fn session(state: &OcpiState, session_id: &str) -> Result<Option<SessionRef>, DbError> {
    Ok(state
        .store
        .fetch_opt(
            "SELECT site_id, station, station_transaction_id, evse, id_tag, stopped_at FROM sessions \
             WHERE transaction_uid = $1",
            &[session_id.into()],
            &[Ty::Text, Ty::Text, Ty::Text, Ty::Int, Ty::Text, Ty::Time],
        )
        .await?
        .map(|r| SessionRef {
            site: r.text(0).unwrap_or_default().to_owned(),
            station: r.text(1).unwrap_or_default().to_owned(),
            transaction_id: r.text(2).and_then(|t| t.parse().ok()),
            evse: r.int(3),
            id_tag: r.text(4).map(str::to_owned),
            stopped_at: r.time(5),
        }))
}

/// Whether the caller may act on a session: its id tag is a token of the caller's party,
/// or one the caller started or reserved with at that site.
pub async fn entitled(state: &OcpiState, caller: &Caller, s: &SessionRef) -> Result<bool, DbError> {
    let Some(tag) = s.id_tag.as_deref() else { return Ok(false) };
    let p = &caller.partner;
    let row = state
        .store
        .fetch_opt(
            "SELECT (SELECT COUNT(*) FROM ocpi_tokens WHERE LOWER(uid) = LOWER($1) AND LOWER(country_code) = LOWER($2) \
                 AND LOWER(party_id) = LOWER($3)) + \
             (SELECT COUNT(*) FROM ocpi_commands WHERE partner_id = $4 AND site_id = $5 \
                 AND command IN ('START_SESSION', 'RESERVE_NOW') AND LOWER(id_tag) = LOWER($1))",
            &[
                tag.into(),
                p.country_code.as_deref().unwrap_or("").into(),
                p.party_id.as_deref().unwrap_or("").into(),
                p.id.as_str().into(),
                s.site.as_str().into(),
            ],
            &[Ty::Int],
        )
        .await?;
    Ok(row.and_then(|r| r.int(0)).unwrap_or(0) > 0)
}

// ---- storing and sending ----------------------------------------------------------

/// A request to store (and, with `site_command`, to send to the site).
pub struct NewRequest<'a> {
    /// Our id for it (a fresh UUID when `None`).
    pub id: Option<String>,
    pub caller: &'a Caller,
    pub module: &'static str,
    pub command: &'static str,
    pub body: &'a Value,
    pub response_url: &'a str,
    pub site: Option<&'a str>,
    pub station: Option<&'a str>,
    pub connector: Option<i64>,
    pub id_tag: Option<&'a str>,
    pub session_id: Option<&'a str>,
    pub site_command: Option<Command>,
    /// Decided at once by the hub (e.g. an unknown reservation): the result value and the
    /// body to POST.
    pub decided: Option<(String, Value)>,
}

/// Stores the request (its id), then the site command, then publishes it; a publish that
/// cannot be queued now goes out at the site's next hello (before the deadline, or not
/// at all: it carries the deadline as `expires_at`).
pub async fn store_and_send(state: &OcpiState, r: NewRequest<'_>) -> Result<String, DbError> {
    let id = r.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let now = Utc::now();
    let deadline = now + chrono::Duration::seconds(i64::from(timeout_s(state)));
    let env = match (r.site, r.site_command) {
        (Some(site), Some(command)) => Some(crate::commands::envelope(site, command, now, Some(deadline))),
        _ => None,
    };
    let (result, result_body, decided_at) = match r.decided {
        Some((result, body)) => (Some(result), Some(body), Some(now)),
        None => (None, None, None),
    };
    state
        .store
        .exec(
            "INSERT INTO ocpi_commands (id, partner_id, module, command, body, response_url, site_id, station, \
                 connector, id_tag, session_id, site_command_id, received_at, deadline, result, result_body, \
                 decided_at, decided_by, next_post_at, match_since) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $17, $19)",
            &[
                id.as_str().into(),
                r.caller.partner.id.as_str().into(),
                r.module.into(),
                r.command.into(),
                r.body.clone().into(),
                r.response_url.into(),
                r.site.into(),
                r.station.into(),
                r.connector.into(),
                r.id_tag.into(),
                r.session_id.into(),
                env.as_ref().map(|e| e.command_id.as_str()).into(),
                now.into(),
                deadline.into(),
                result.as_deref().into(),
                crate::db::Val::Json(result_body),
                decided_at.into(),
                decided_at.map(|_| "hub").into(),
                (now - CLOCK_SKEW).into(),
            ],
        )
        .await?;
    if let Some(env) = env {
        let issued_by = format!("ocpi:{}", r.caller.partner.id);
        if let Err(e) = crate::commands::insert(&state.store, &env, Some(&issued_by)).await {
            // The partner gets an error instead of ACCEPTED: no result is to follow.
            let _ = state
                .store
                .exec(
                    "UPDATE ocpi_commands SET result = 'FAILED', decided_at = $2, decided_by = 'hub', \
                         abandoned_at = $2, post_error = $3 WHERE id = $1",
                    &[id.as_str().into(), now.into(), format!("not sent to the site: {e}").into()],
                )
                .await;
            return Err(e);
        }
        let published = match &state.mqtt {
            Some(client) => crate::commands::publish(client, &env),
            None => Err("no MQTT client".to_owned()),
        };
        match published {
            Ok(()) => crate::commands::mark_sent(&state.store, &env.command_id, now).await?,
            Err(reason) => tracing::warn!(
                site = env.site_id,
                command_id = env.command_id,
                reason,
                "OCPI command stored; it goes out at the site's next hello"
            ),
        }
    }
    tracing::info!(partner = r.caller.partner.id, command = r.command, id, "OCPI request accepted");
    Ok(id)
}

// ---- the Receiver -----------------------------------------------------------------

/// `POST commands/{command}`.
pub async fn post(
    State(state): State<OcpiState>,
    caller: CallerExt,
    Path(command): Path<String>,
    body: Bytes,
) -> Response {
    match post_inner(&state, &caller, &command, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn post_inner(state: &OcpiState, caller: &Caller, command: &str, body: &[u8]) -> OcpiResult<Response> {
    let Some(kind) = CommandType::parse(command) else {
        let names: Vec<&str> = CommandType::ALL.iter().map(|c| c.as_str()).collect();
        return Err(OcpiError::invalid(format!("unknown command {command:?}: use one of {}", names.join(", "))));
    };
    let db = |e: DbError| OcpiError::db("storing the command", &e);
    match kind {
        CommandType::StartSession => start_session(state, caller, body).await,
        CommandType::StopSession => stop_session(state, caller, body).await,
        CommandType::ReserveNow => reserve_now(state, caller, body).await,
        CommandType::CancelReservation => cancel_reservation(state, caller, body).await.map_err(|e| match e {
            Fail::Ocpi(e) => e,
            Fail::Db(e) => db(e),
        }),
        CommandType::UnlockConnector => unlock_connector(state, caller, body).await,
    }
}

enum Fail {
    Ocpi(OcpiError),
    Db(DbError),
}

impl From<OcpiError> for Fail {
    fn from(e: OcpiError) -> Self {
        Fail::Ocpi(e)
    }
}

impl From<DbError> for Fail {
    fn from(e: DbError) -> Self {
        Fail::Db(e)
    }
}

fn db_err(e: DbError) -> OcpiError {
    OcpiError::db("handling the command", &e)
}

/// An EVSE to use when the request names none: the first AVAILABLE one (OCPI lets the
/// Charge Point choose; with several stations at a Location the CPO has to).
async fn any_available(state: &OcpiState, location_id: &str) -> OcpiResult<Option<EvseRef>> {
    let found = location_evses(state, location_id).await.map_err(db_err)?;
    Ok(found.and_then(|(_, evses)| evses.into_iter().find(|e| e.status == "AVAILABLE")))
}

/// Why a command may not use `token` at a charger (it is another party's, or longer than
/// an OCPP 1.6 idTag); `None` when it may.
fn token_refusal(caller: &Caller, token: &Token) -> Option<String> {
    if !own_token(caller, token) {
        return Some(format!(
            "token {}/{} is not of your party: use your own tokens",
            token.country_code, token.party_id
        ));
    }
    if token.uid.chars().count() > MAX_ID_TAG {
        return Some(format!("token uid {:?} is longer than the 20 characters an OCPP 1.6 charger takes", token.uid));
    }
    None
}

/// The EVSE the request named, else any AVAILABLE one of the location; `Err` is the
/// REJECTED answer when there is none (`what`: "" or " to reserve").
async fn evse_or_any(
    state: &OcpiState,
    named: Option<EvseRef>,
    location_id: &str,
    what: &str,
) -> OcpiResult<Result<EvseRef, Response>> {
    if let Some(e) = named {
        return Ok(Ok(e));
    }
    Ok(match any_available(state, location_id).await? {
        Some(e) => Ok(e),
        None => {
            let msg = format!("no EVSE of location {location_id:?} is AVAILABLE{what}");
            Err(response(state, CommandResponseType::Rejected, Some(msg)))
        }
    })
}

/// Stores the request and sends its site command ([`store_and_send`]): the ACCEPTED
/// CommandResponse.
async fn accept(state: &OcpiState, r: NewRequest<'_>) -> OcpiResult<Response> {
    store_and_send(state, r).await.map_err(db_err)?;
    Ok(response(state, CommandResponseType::Accepted, None))
}

async fn start_session(state: &OcpiState, caller: &Caller, body: &[u8]) -> OcpiResult<Response> {
    let (req, raw): (StartSession, Value) = parse_body(body, "StartSession")?;
    url(&req.response_url)?;
    check_token(&req.token)?;
    ci("location_id", &req.location_id)?;
    ci_opt("evse_uid", req.evse_uid.as_ref())?;
    ci_opt("connector_id", req.connector_id.as_ref())?;
    ci_opt("authorization_reference", req.authorization_reference.as_ref())?;
    if req.connector_id.is_some() && req.evse_uid.is_none() {
        return Err(OcpiError::invalid("connector_id needs evse_uid (OCPI 2.2.1, StartSession)"));
    }
    let t = match target(state, &req.location_id, req.evse_uid.as_deref(), req.connector_id.as_deref()).await? {
        Ok(t) => t,
        Err(r) => return Ok(r),
    };
    if let Some(msg) = token_refusal(caller, &req.token) {
        return Ok(response(state, CommandResponseType::Rejected, Some(msg)));
    }
    let evse = match evse_or_any(state, t.evse, &req.location_id, "").await? {
        Ok(e) => e,
        Err(r) => return Ok(r),
    };
    let connector = u32::try_from(evse.evse).unwrap_or(0);
    let command = Command::RemoteStart {
        station: evse.station.clone(),
        connector: Some(connector),
        id_tag: req.token.uid.clone(),
    };
    accept(
        state,
        NewRequest {
            id: None,
            caller,
            module: COMMANDS,
            command: "START_SESSION",
            body: &raw,
            response_url: &req.response_url,
            site: Some(&t.site),
            station: Some(&evse.station),
            connector: Some(evse.evse),
            id_tag: Some(&req.token.uid),
            session_id: None,
            site_command: Some(command),
            decided: None,
        },
    )
    .await
}

/// A session the caller may act on, or the answer to give instead: UNKNOWN_SESSION when
/// the hub has no such session, REJECTED when it is another party's or has ended.
pub enum SessionCheck {
    Running(SessionRef, i64),
    Unknown(String),
    Rejected(String),
}

pub async fn check_session(state: &OcpiState, caller: &Caller, session_id: &str) -> Result<SessionCheck, DbError> {
    let Some(s) = session(state, session_id).await? else {
        return Ok(SessionCheck::Unknown(format!("no session {session_id:?}")));
    };
    if !entitled(state, caller, &s).await? {
        return Ok(SessionCheck::Rejected(format!("session {session_id:?} is not one of your customers'")));
    }
    if let Some(at) = s.stopped_at {
        return Ok(SessionCheck::Rejected(format!("session {session_id:?} ended at {}", timestamp(at))));
    }
    let Some(tx) = s.transaction_id else {
        return Ok(SessionCheck::Rejected(format!("session {session_id:?} has no transaction id at its charger yet")));
    };
    Ok(SessionCheck::Running(s, tx))
}

async fn stop_session(state: &OcpiState, caller: &Caller, body: &[u8]) -> OcpiResult<Response> {
    let (req, raw): (StopSession, Value) = parse_body(body, "StopSession")?;
    url(&req.response_url)?;
    ci("session_id", &req.session_id)?;
    let (s, tx) = match check_session(state, caller, &req.session_id).await.map_err(db_err)? {
        SessionCheck::Running(s, tx) => (s, tx),
        SessionCheck::Unknown(m) => return Ok(response(state, CommandResponseType::UnknownSession, Some(m))),
        SessionCheck::Rejected(m) => return Ok(response(state, CommandResponseType::Rejected, Some(m))),
    };
    let command = Command::RemoteStop { station: s.station.clone(), transaction_id: tx };
    accept(
        state,
        NewRequest {
            id: None,
            caller,
            module: COMMANDS,
            command: "STOP_SESSION",
            body: &raw,
            response_url: &req.response_url,
            site: Some(&s.site),
            station: Some(&s.station),
            connector: s.evse,
            id_tag: s.id_tag.as_deref(),
            session_id: Some(&req.session_id),
            site_command: Some(command),
            decided: None,
        },
    )
    .await
}

async fn reserve_now(state: &OcpiState, caller: &Caller, body: &[u8]) -> OcpiResult<Response> {
    let (req, raw): (ReserveNow, Value) = parse_body(body, "ReserveNow")?;
    url(&req.response_url)?;
    check_token(&req.token)?;
    ci("reservation_id", &req.reservation_id)?;
    ci("location_id", &req.location_id)?;
    ci_opt("evse_uid", req.evse_uid.as_ref())?;
    ci_opt("authorization_reference", req.authorization_reference.as_ref())?;
    let expiry = check_time("expiry_date", &req.expiry_date).map_err(OcpiError::invalid)?;
    let t = match target(state, &req.location_id, req.evse_uid.as_deref(), None).await? {
        Ok(t) => t,
        Err(r) => return Ok(r),
    };
    if let Some(msg) = token_refusal(caller, &req.token) {
        return Ok(response(state, CommandResponseType::Rejected, Some(msg)));
    }
    let now = Utc::now();
    if expiry <= now {
        let msg = format!("expiry_date {} has passed", req.expiry_date);
        return Ok(response(state, CommandResponseType::Rejected, Some(msg)));
    }
    let evse = match evse_or_any(state, t.evse, &req.location_id, " to reserve").await? {
        Ok(e) => e,
        Err(r) => return Ok(r),
    };
    let id = uuid::Uuid::new_v4().to_string();
    let (ocpp_id, moved_from) =
        reservation_row(state, caller, &req, &t.site, &evse, expiry, &id).await.map_err(db_err)?;
    let Ok(reservation_id) = i32::try_from(ocpp_id) else {
        tracing::error!(ocpp_id, "OCPI: reservation ids exhausted the OCPP 1.6 integer range");
        return Err(OcpiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            status::SERVER_ERROR,
            "reservation ids are exhausted",
        ));
    };
    if let Some(old_station) = moved_from {
        // Replaced with another EVSE on another charger: the old charger lets it go.
        let cancel = Command::CancelReservation { station: old_station, reservation_id };
        let env = crate::commands::envelope(&t.site, cancel, now, Some(now + chrono::Duration::minutes(10)));
        crate::commands::insert(&state.store, &env, Some(&format!("ocpi:{}", caller.partner.id)))
            .await
            .map_err(db_err)?;
        if let Some(client) = &state.mqtt
            && crate::commands::publish(client, &env).is_ok()
        {
            let _ = crate::commands::mark_sent(&state.store, &env.command_id, now).await;
        }
    }
    let command = Command::ReserveNow {
        station: evse.station.clone(),
        connector: u32::try_from(evse.evse).unwrap_or(0),
        expiry,
        id_tag: req.token.uid.clone(),
        reservation_id,
    };
    accept(
        state,
        NewRequest {
            id: Some(id),
            caller,
            module: COMMANDS,
            command: "RESERVE_NOW",
            body: &raw,
            response_url: &req.response_url,
            site: Some(&t.site),
            station: Some(&evse.station),
            connector: Some(evse.evse),
            id_tag: Some(&req.token.uid),
            session_id: None,
            site_command: Some(command),
            decided: None,
        },
    )
    .await
}

/// Creates or replaces the reservation row; our OCPP reservation id, and the station it
/// was on before when a replacement moves it to another charger.
async fn reservation_row(
    state: &OcpiState,
    caller: &Caller,
    req: &ReserveNow,
    site: &str,
    evse: &EvseRef,
    expiry: DateTime<Utc>,
    command_id: &str,
) -> Result<(i64, Option<String>), DbError> {
    let now = Utc::now();
    let existing = state
        .store
        .fetch_opt(
            "SELECT ocpp_id, station, status FROM ocpi_reservations \
             WHERE partner_id = $1 AND location_id = $2 AND reservation_id = $3",
            &[caller.partner.id.as_str().into(), req.location_id.as_str().into(), req.reservation_id.as_str().into()],
            &[Ty::Int, Ty::Text, Ty::Text],
        )
        .await?;
    let args = |id: Option<i64>| {
        vec![
            caller.partner.id.as_str().into(),
            req.location_id.as_str().into(),
            req.reservation_id.as_str().into(),
            site.into(),
            evse.station.as_str().into(),
            evse.evse.into(),
            req.token.uid.as_str().into(),
            expiry.into(),
            command_id.into(),
            now.into(),
            id.into(),
        ]
    };
    if let Some(row) = existing {
        let ocpp_id = row.int(0).unwrap_or(0);
        let live = matches!(row.text(2), Some("requested" | "active"));
        let moved = row.text(1).filter(|s| live && *s != evse.station).map(str::to_owned);
        state
            .store
            .exec(
                "UPDATE ocpi_reservations SET site_id = $4, station = $5, connector = $6, id_tag = $7, expiry = $8, \
                     command_id = $9, status = 'requested', updated_at = $10, reserved_seen_at = NULL \
                 WHERE ocpp_id = $11 AND partner_id = $1 AND location_id = $2 AND reservation_id = $3",
                &args(Some(ocpp_id)),
            )
            .await?;
        return Ok((ocpp_id, moved));
    }
    let row = state
        .store
        .fetch_opt(
            "INSERT INTO ocpi_reservations (partner_id, location_id, reservation_id, site_id, station, connector, \
                 id_tag, expiry, command_id, status, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'requested', $10) RETURNING ocpp_id",
            &args(None)[..10],
            &[Ty::Int],
        )
        .await?;
    let id = row.and_then(|r| r.int(0)).ok_or_else(|| DbError::Data("no reservation id returned".into()))?;
    Ok((id, None))
}

async fn cancel_reservation(state: &OcpiState, caller: &Caller, body: &[u8]) -> Result<Response, Fail> {
    let (req, raw): (CancelReservation, Value) = parse_body(body, "CancelReservation")?;
    url(&req.response_url)?;
    ci("reservation_id", &req.reservation_id)?;
    let found = state
        .store
        .fetch_opt(
            "SELECT ocpp_id, site_id, station, connector, id_tag FROM ocpi_reservations \
             WHERE partner_id = $1 AND reservation_id = $2 AND status IN ('requested', 'active') \
             ORDER BY updated_at DESC LIMIT 1",
            &[caller.partner.id.as_str().into(), req.reservation_id.as_str().into()],
            &[Ty::Int, Ty::Text, Ty::Text, Ty::Int, Ty::Text],
        )
        .await?;
    let (site, station, tag);
    let mut new = NewRequest {
        id: None,
        caller,
        module: COMMANDS,
        command: "CANCEL_RESERVATION",
        body: &raw,
        response_url: &req.response_url,
        site: None,
        station: None,
        connector: None,
        id_tag: None,
        session_id: None,
        site_command: None,
        decided: None,
    };
    match &found {
        None => {
            // Not one of this partner's live reservations: the answer needs no charger.
            let result = CommandResult {
                result: CommandResultType::UnknownReservation,
                message: DisplayText::en(format!("no live reservation {:?} of yours", req.reservation_id)),
            };
            new.decided = Some((result.result.as_str().to_owned(), to_json(&result)));
        }
        Some(r) => {
            site = r.text(1).unwrap_or_default().to_owned();
            station = r.text(2).unwrap_or_default().to_owned();
            tag = r.text(4).map(str::to_owned);
            let reservation_id = i32::try_from(r.int(0).unwrap_or(0)).unwrap_or(0);
            new.site = Some(&site);
            new.station = Some(&station);
            new.connector = r.int(3);
            new.id_tag = tag.as_deref();
            new.site_command = Some(Command::CancelReservation { station: station.clone(), reservation_id });
        }
    }
    store_and_send(state, new).await?;
    Ok(response(state, CommandResponseType::Accepted, None))
}

async fn unlock_connector(state: &OcpiState, caller: &Caller, body: &[u8]) -> OcpiResult<Response> {
    let (req, raw): (UnlockConnector, Value) = parse_body(body, "UnlockConnector")?;
    url(&req.response_url)?;
    ci("location_id", &req.location_id)?;
    ci("evse_uid", &req.evse_uid)?;
    ci("connector_id", &req.connector_id)?;
    let t = match target(state, &req.location_id, Some(&req.evse_uid), Some(&req.connector_id)).await? {
        Ok(t) => t,
        Err(r) => return Ok(r),
    };
    let Some(evse) = t.evse else {
        return Ok(unknown_location(state, format!("location {:?} has no EVSE {:?}", req.location_id, req.evse_uid)));
    };
    let command =
        Command::UnlockConnector { station: evse.station.clone(), connector: u32::try_from(evse.evse).unwrap_or(0) };
    accept(
        state,
        NewRequest {
            id: None,
            caller,
            module: COMMANDS,
            command: "UNLOCK_CONNECTOR",
            body: &raw,
            response_url: &req.response_url,
            site: Some(&t.site),
            station: Some(&evse.station),
            connector: Some(evse.evse),
            id_tag: None,
            session_id: None,
            site_command: Some(command),
            decided: None,
        },
    )
    .await
}

// ---- results ----------------------------------------------------------------------

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The reason text of a site's result detail.
fn site_reason(r: &SiteResult) -> String {
    match (&r.detail["reason"], &r.detail["status"]) {
        (Value::String(reason), _) => reason.clone(),
        (_, Value::String(status)) => format!("the charge point answered {status}"),
        _ => format!("the site answered {:?}", r.outcome),
    }
}

/// The CommandResultType of a site's answer to one of our commands.
pub fn command_result(command: &str, r: &SiteResult) -> CommandResult {
    use CommandResultType as R;
    let charger_status = r.detail["status"].as_str().unwrap_or_default();
    let reason = site_reason(r);
    let result = match r.outcome {
        CommandOutcome::Accepted => R::Accepted,
        CommandOutcome::Expired => R::Timeout,
        // The edge's OCPP call timed out: the charger did not answer (CommandError::Timeout).
        CommandOutcome::Failed if reason.contains("did not answer in time") => R::Timeout,
        CommandOutcome::Failed => R::Failed,
        CommandOutcome::Rejected if reason.contains("NotSupported") || reason.contains("NotImplemented") => {
            R::NotSupported
        }
        CommandOutcome::Rejected => match (command, charger_status) {
            ("RESERVE_NOW", "Occupied") => R::EvseOccupied,
            ("RESERVE_NOW", "Faulted" | "Unavailable") => R::EvseInoperative,
            ("CANCEL_RESERVATION", "Rejected") => R::UnknownReservation,
            ("UNLOCK_CONNECTOR", "NotSupported") => R::NotSupported,
            ("UNLOCK_CONNECTOR", "UnlockFailed") => R::Failed,
            _ => R::Rejected,
        },
    };
    let message = match result {
        R::Accepted => Vec::new(),
        _ => DisplayText::en(reason),
    };
    CommandResult { result, message }
}

/// The ActiveChargingProfile in an OCPP GetCompositeSchedule answer (the result's detail).
fn active_profile(detail: &Value, at: DateTime<Utc>) -> Option<ActiveChargingProfile> {
    let schedule = detail.get("chargingSchedule")?;
    let unit = match schedule.get("chargingRateUnit")?.as_str()? {
        "W" => ChargingRateUnit::W,
        "A" => ChargingRateUnit::A,
        _ => return None,
    };
    let periods = schedule
        .get("chargingSchedulePeriod")?
        .as_array()?
        .iter()
        .filter_map(|p| {
            Some(ChargingProfilePeriod {
                start_period: p.get("startPeriod")?.as_i64()?,
                limit: p.get("limit")?.as_f64()?,
            })
        })
        .collect();
    let start = detail
        .get("scheduleStart")
        .and_then(Value::as_str)
        .and_then(shared_model::ocpi::parse_timestamp)
        .or_else(|| schedule.get("startSchedule").and_then(Value::as_str).and_then(shared_model::ocpi::parse_timestamp))
        .unwrap_or(at);
    Some(ActiveChargingProfile {
        start_date_time: timestamp(start),
        charging_profile: ChargingProfile {
            start_date_time: Some(timestamp(start)),
            duration: schedule.get("duration").and_then(Value::as_i64),
            charging_rate_unit: unit,
            min_charging_rate: schedule.get("minChargingRate").and_then(Value::as_f64),
            charging_profile_period: periods,
        },
    })
}

/// The result of a request (value, body to POST): from the site's answer, or at the
/// deadline (`None`).
pub fn decide(module: &str, command: &str, site: Option<&SiteResult>, timeout: u32) -> (String, Value) {
    if module == CHARGING_PROFILES {
        use ChargingProfileResultType as P;
        let accepted = site.is_some_and(|r| r.outcome == CommandOutcome::Accepted);
        if command == "GET_PROFILE" {
            let profile = site.filter(|_| accepted).and_then(|r| active_profile(&r.detail, r.at));
            let result = if profile.is_some() { P::Accepted } else { P::Rejected };
            return (
                to_json(&result).as_str().unwrap_or("REJECTED").to_owned(),
                to_json(&ActiveChargingProfileResult { result, profile }),
            );
        }
        let result = match site {
            Some(_) if accepted => P::Accepted,
            Some(r) if command == "CLEAR_PROFILE" && r.detail["status"] == "Unknown" => P::Unknown,
            _ => P::Rejected,
        };
        return (
            to_json(&result).as_str().unwrap_or("REJECTED").to_owned(),
            to_json(&ChargingProfileResult { result }),
        );
    }
    let result = match site {
        Some(r) => command_result(command, r),
        None => CommandResult {
            result: CommandResultType::Timeout,
            message: DisplayText::en(format!("no answer from the charge point within {timeout} s")),
        },
    };
    (result.result.as_str().to_owned(), to_json(&result))
}

/// Decides every open request whose site answered or whose deadline passed.
async fn decide_due(state: &OcpiState, now: DateTime<Utc>) -> Result<usize, DbError> {
    let rows = state
        .store
        .fetch(
            "SELECT o.id, o.module, o.command, o.deadline, c.result, c.result_received_at, o.partner_id, o.body \
             FROM ocpi_commands o LEFT JOIN commands c ON c.command_id = o.site_command_id \
             WHERE o.decided_at IS NULL AND (c.result IS NOT NULL OR o.deadline <= $1) \
             ORDER BY o.deadline LIMIT 500",
            &[now.into()],
            &[Ty::Text, Ty::Text, Ty::Text, Ty::Time, Ty::Json, Ty::Time, Ty::Text, Ty::Json],
        )
        .await?;
    let mut decided = 0;
    for r in &rows {
        let (id, module, command) =
            (r.text(0).unwrap_or_default(), r.text(1).unwrap_or_default(), r.text(2).unwrap_or_default());
        let deadline = r.time(3).unwrap_or(now);
        let site: Option<SiteResult> = r.json(4).and_then(|v| serde_json::from_value(v.clone()).ok());
        // A site answer that came after the deadline is too late: the deadline decided.
        let in_time = site.filter(|_| r.time(5).is_none_or(|at| at <= deadline));
        let (result, body) = decide(module, command, in_time.as_ref(), timeout_s(state));
        let by = if in_time.is_some() { "site" } else { "deadline" };
        let won = state
            .store
            .exec(
                "UPDATE ocpi_commands SET result = $2, result_body = $3, decided_at = $4, decided_by = $5, \
                     next_post_at = $4 WHERE id = $1 AND decided_at IS NULL",
                &[id.into(), result.as_str().into(), body.into(), now.into(), by.into()],
            )
            .await?;
        if won == 0 {
            continue;
        }
        decided += 1;
        tracing::info!(id, command, result, by, "OCPI command result decided");
        after_decision(state, r, command, &result, now).await?;
    }
    Ok(decided)
}

/// What a decision changes beside the request: a reservation's state.
async fn after_decision(
    state: &OcpiState,
    r: &Row,
    command: &str,
    result: &str,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    let id = r.text(0).unwrap_or_default();
    match command {
        "RESERVE_NOW" => {
            let status = if result == "ACCEPTED" { "active" } else { "failed" };
            state
                .store
                .exec(
                    "UPDATE ocpi_reservations SET status = $2, updated_at = $3 WHERE command_id = $1 AND status = 'requested'",
                    &[id.into(), status.into(), now.into()],
                )
                .await?;
        }
        "CANCEL_RESERVATION" if result == "ACCEPTED" || result == "UNKNOWN_RESERVATION" => {
            let reservation = r.json(7).and_then(|b| b["reservation_id"].as_str()).unwrap_or_default();
            state
                .store
                .exec(
                    "UPDATE ocpi_reservations SET status = 'canceled', updated_at = $3 \
                     WHERE partner_id = $1 AND reservation_id = $2 AND status IN ('requested', 'active')",
                    &[r.text(6).unwrap_or_default().into(), reservation.into(), now.into()],
                )
                .await?;
        }
        _ => {}
    }
    Ok(())
}

/// A START_SESSION the partner was told failed (or timed out) whose transaction started
/// all the same (the site got it before the deadline, the charger answered late): the
/// transaction is stopped with a remote stop, and the request records it. A site that
/// got the command only after the deadline never starts it (`expires_at`).
///
/// The transaction is told apart by its station, EVSE, id tag and start (at or after the
/// request, give or take [`CLOCK_SKEW`]), and is not one an earlier request claimed
/// already; a driver who starts with the same token by
/// hand at that EVSE within [`LATE_START_WATCH`] is stopped too, which the partner, told
/// its start failed, has no other way to expect.
async fn stop_late_starts(state: &OcpiState, now: DateTime<Utc>) -> Result<usize, DbError> {
    let found = state
        .store
        .fetch(
            "SELECT o.id, o.site_id, o.station, o.result, s.transaction_uid, s.station_transaction_id, s.stopped_at, \
                 s.stop_reason \
             FROM ocpi_commands o JOIN sessions s ON s.site_id = o.site_id AND s.station = o.station \
                 AND LOWER(s.id_tag) = LOWER(o.id_tag) AND (o.connector IS NULL OR s.evse = o.connector) \
                 AND s.started_at >= o.match_since \
             WHERE o.command = 'START_SESSION' AND o.decided_at IS NOT NULL AND o.decided_at > $1 \
                 AND o.result <> 'ACCEPTED' AND o.late_session_uid IS NULL \
                 AND s.transaction_uid NOT IN \
                     (SELECT late_session_uid FROM ocpi_commands WHERE late_session_uid IS NOT NULL) \
             ORDER BY s.started_at LIMIT 100",
            &[(now - LATE_START_WATCH).into()],
            &[Ty::Text, Ty::Text, Ty::Text, Ty::Text, Ty::Text, Ty::Text, Ty::Time, Ty::Text],
        )
        .await?;
    let mut stopped = 0;
    let mut taken = std::collections::HashSet::new();
    for r in &found {
        let (id, site, station) =
            (r.text(0).unwrap_or_default(), r.text(1).unwrap_or_default(), r.text(2).unwrap_or_default());
        let result = r.text(3).unwrap_or_default();
        let uid = r.text(4).unwrap_or_default();
        if !taken.insert(uid) {
            // Another request of this round claims it.
            continue;
        }
        let transaction_id = r.text(5).and_then(|t| t.parse::<i64>().ok());
        let (note, command) = match (r.time(6), transaction_id) {
            (Some(at), _) => (
                format!(
                    "transaction {uid} started after the partner was told {result}; the site had stopped it at {} ({})",
                    timestamp(at),
                    r.text(7).unwrap_or("no reason given")
                ),
                None,
            ),
            (None, Some(tx)) => (
                format!("transaction {uid} started after the partner was told {result}: stopped remotely"),
                Some(Command::RemoteStop { station: station.to_owned(), transaction_id: tx }),
            ),
            (None, None) => (
                format!(
                    "transaction {uid} started after the partner was told {result}, without a transaction id to stop it by"
                ),
                None,
            ),
        };
        let env = command.map(|c| crate::commands::envelope(site, c, now, Some(now + chrono::Duration::minutes(10))));
        // Claim it first: of two replicas (or two matches), one sends the stop.
        let claimed = state
            .store
            .exec(
                "UPDATE ocpi_commands SET late_session_uid = $2, late_stop_command_id = $3, late_note = $4 \
                 WHERE id = $1 AND late_session_uid IS NULL",
                &[id.into(), uid.into(), env.as_ref().map(|e| e.command_id.as_str()).into(), note.as_str().into()],
            )
            .await?;
        if claimed == 0 {
            continue;
        }
        tracing::warn!(id, site, station, transaction = uid, "OCPI START_SESSION: {note}");
        if let Some(env) = env {
            crate::commands::insert(&state.store, &env, Some("ocpi:late-start")).await?;
            if let Some(client) = &state.mqtt
                && crate::commands::publish(client, &env).is_ok()
            {
                crate::commands::mark_sent(&state.store, &env.command_id, now).await?;
            }
            stopped += 1;
        }
    }
    Ok(stopped)
}

/// POSTs every decided result that is due, each in a task of its own.
async fn post_due(state: &OcpiState, now: DateTime<Utc>) -> Result<usize, DbError> {
    let rows = state
        .store
        .fetch(
            "SELECT id, partner_id, response_url, result_body, post_tries FROM ocpi_commands \
             WHERE decided_at IS NOT NULL AND posted_at IS NULL AND abandoned_at IS NULL AND next_post_at <= $1 \
             ORDER BY next_post_at LIMIT 200",
            &[now.into()],
            &[Ty::Text, Ty::Text, Ty::Text, Ty::Json, Ty::Int],
        )
        .await?;
    let mut started = 0;
    for r in rows {
        let id = r.text(0).unwrap_or_default().to_owned();
        // The lease: no replica (nor the next tick) posts it while this one does.
        let claimed = state
            .store
            .exec(
                "UPDATE ocpi_commands SET next_post_at = $3, post_tries = post_tries + 1 \
                 WHERE id = $1 AND posted_at IS NULL AND next_post_at <= $2",
                &[id.as_str().into(), now.into(), (now + POST_LEASE).into()],
            )
            .await?;
        if claimed == 0 {
            continue;
        }
        started += 1;
        let state = state.clone();
        tokio::spawn(async move {
            let tries = r.int(4).unwrap_or(0) + 1;
            let outcome =
                post_one(&state, r.text(1).unwrap_or_default(), r.text(2).unwrap_or_default(), r.json(3)).await;
            if let Err(e) = record_post(&state, &id, tries, outcome).await {
                tracing::warn!(id, error = %e, "OCPI: cannot record a result POST; it is tried again");
            }
        });
    }
    Ok(started)
}

/// Why a result could not be POSTed.
enum PostError {
    /// Worth another try.
    Retry(String),
    /// Never going to work (the partner is gone).
    GiveUp(String),
}

async fn post_one(state: &OcpiState, partner_id: &str, url: &str, body: Option<&Value>) -> Result<(), PostError> {
    let p = partners::get(&state.store, partner_id)
        .await
        .map_err(|e| PostError::Retry(format!("cannot read the partner: {e}")))?
        .filter(|p| p.state == PartnerState::Registered)
        .ok_or_else(|| PostError::GiveUp(format!("partner {partner_id:?} is not registered any more")))?;
    let token = p
        .outgoing_token
        .as_deref()
        .ok_or_else(|| PostError::GiveUp(format!("no token to call partner {partner_id:?} with")))?;
    let route = Route { from: Some(state.settings.us()), to: p.country_code.clone().zip(p.party_id.clone()) };
    state
        .client
        .call::<Value>(Method::POST, url, token, p.raw_tokens, &route, body)
        .await
        .map(|_| ())
        .map_err(|e| PostError::Retry(e.to_string()))
}

async fn record_post(state: &OcpiState, id: &str, tries: i64, outcome: Result<(), PostError>) -> Result<(), DbError> {
    let now = Utc::now();
    match outcome {
        Ok(()) => {
            tracing::info!(id, tries, "OCPI result POSTed");
            state
                .store
                .exec(
                    "UPDATE ocpi_commands SET posted_at = $2, post_error = NULL WHERE id = $1",
                    &[id.into(), now.into()],
                )
                .await?;
        }
        Err(PostError::Retry(e)) if tries < POST_TRIES => {
            tracing::debug!(id, tries, error = e, "OCPI result POST failed; retrying");
            state
                .store
                .exec(
                    "UPDATE ocpi_commands SET next_post_at = $2, post_error = $3 WHERE id = $1 AND posted_at IS NULL",
                    &[id.into(), (now + backoff(tries)).into(), e.into()],
                )
                .await?;
        }
        Err(PostError::Retry(e) | PostError::GiveUp(e)) => {
            tracing::warn!(id, tries, error = e, "OCPI result POST given up");
            state
                .store
                .exec(
                    "UPDATE ocpi_commands SET abandoned_at = $2, post_error = $3 WHERE id = $1 AND posted_at IS NULL",
                    &[id.into(), now.into(), e.into()],
                )
                .await?;
        }
    }
    Ok(())
}

/// Statuses of a connector in use: a reservation that reaches one was (most likely) taken
/// up by its driver; its session, when it comes, says so for sure.
const IN_USE: [&str; 6] = ["Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Finishing", "Occupied"];

/// How long after its expiry a reservation whose charger never showed it `Reserved` is
/// taken to have ended unused (the site's events of that time have arrived by then,
/// unless the site is offline, which postpones it).
pub const EXPIRY_GRACE: chrono::Duration = chrono::Duration::seconds(60);

/// How a live reservation stands now, from its charger's connector statuses and the
/// sessions the site reported (pure; [`watch_reservations`] applies it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationFate {
    /// Still held (or not known to be over yet).
    Held,
    /// The connector shows `Reserved` for the first time: remember it.
    SeenReserved,
    /// Its driver started a session: done, nothing to tell.
    Used,
    /// Over without a session: expired or cancelled at the site or by the CPO side.
    EndedUnused,
}

/// Facts about one live reservation.
#[derive(Debug, Clone)]
pub struct ReservationFacts<'a> {
    pub statuses: Vec<&'a str>,
    pub seen_reserved: bool,
    pub session_started: bool,
    pub expiry: DateTime<Utc>,
    /// The site is online (or its presence unknown).
    pub site_online: bool,
}

/// OCPP 1.6: a reserved connector reports `Reserved` until the reservation is used
/// (`Preparing`, then a StartTransaction with the reservation's id tag) or ends — expired,
/// or cancelled by a CancelReservation from anyone on the CPO side — when it reports
/// `Available` (or `Unavailable` / `Faulted`) again. A charger that never reports
/// `Reserved` is judged by the expiry instead, [`EXPIRY_GRACE`] after it, while the site
/// is online.
pub fn reservation_fate(f: &ReservationFacts<'_>, now: DateTime<Utc>) -> ReservationFate {
    if f.session_started {
        return ReservationFate::Used;
    }
    let reserved = f.statuses.contains(&"Reserved");
    let in_use = f.statuses.iter().any(|s| IN_USE.contains(s));
    if reserved {
        return if f.seen_reserved { ReservationFate::Held } else { ReservationFate::SeenReserved };
    }
    if in_use {
        // Plugged in: wait for the session (or for the connector to come back free).
        return ReservationFate::Held;
    }
    if f.seen_reserved && !f.statuses.is_empty() {
        return ReservationFate::EndedUnused;
    }
    if now >= f.expiry + EXPIRY_GRACE && f.site_online {
        return ReservationFate::EndedUnused;
    }
    ReservationFate::Held
}

/// Follows the reservations RESERVE_NOW made (ACCEPTED, result delivered): one whose
/// driver started a session is `used`; one that ended unused — expired, or cancelled at
/// the site or by the CPO side, but not by the partner's own CANCEL_RESERVATION — is
/// `ended`, and a CommandResult CANCELED_RESERVATION goes to the RESERVE_NOW's
/// `response_url` (OCPI 2.2.1 "ReserveNow": "the CPO sends the CommandResult
/// CANCELED_RESERVATION"), once: a result row of its own (id `{reserve_now id}:ended`,
/// inserted with the state change in one transaction) that [`post_due`] delivers like
/// every other result.
pub async fn watch_reservations(state: &OcpiState, now: DateTime<Utc>) -> Result<usize, DbError> {
    let live = state
        .store
        .fetch(
            "SELECT r.ocpp_id, r.partner_id, r.site_id, r.station, r.connector, r.id_tag, r.expiry, r.command_id, \
                 r.reserved_seen_at, o.response_url, o.decided_at, s.online \
             FROM ocpi_reservations r JOIN ocpi_commands o ON o.id = r.command_id \
             LEFT JOIN sites s ON s.id = r.site_id \
             WHERE r.status = 'active' AND (o.posted_at IS NOT NULL OR o.abandoned_at IS NOT NULL) \
             AND NOT EXISTS (SELECT 1 FROM ocpi_commands c WHERE c.command = 'CANCEL_RESERVATION' \
                 AND c.partner_id = r.partner_id AND c.station = r.station AND c.decided_at IS NULL)",
            &[],
            &[
                Ty::Int,
                Ty::Text,
                Ty::Text,
                Ty::Text,
                Ty::Int,
                Ty::Text,
                Ty::Time,
                Ty::Text,
                Ty::Time,
                Ty::Text,
                Ty::Time,
                Ty::Bool,
            ],
        )
        .await?;
    let mut ended = 0;
    for r in &live {
        let (Some(ocpp_id), Some(partner), Some(site), Some(station), Some(tag), Some(command_id)) =
            (r.int(0), r.text(1), r.text(2), r.text(3), r.text(5), r.text(7))
        else {
            continue;
        };
        let evse = r.int(4).unwrap_or(0);
        let since = r.time(10).unwrap_or(now) - CLOCK_SKEW;
        let statuses = state
            .store
            .fetch(
                "SELECT status FROM connectors WHERE site_id = $1 AND station = $2 AND evse = $3 AND connector > 0",
                &[site.into(), station.into(), evse.into()],
                &[Ty::Text],
            )
            .await?;
        let started = state
            .store
            .fetch_opt(
                "SELECT COUNT(*) FROM sessions WHERE site_id = $1 AND station = $2 AND LOWER(id_tag) = LOWER($3) \
                 AND started_at >= $4",
                &[site.into(), station.into(), tag.into(), since.into()],
                &[Ty::Int],
            )
            .await?
            .and_then(|c| c.int(0))
            .unwrap_or(0);
        let facts = ReservationFacts {
            statuses: statuses.iter().filter_map(|s| s.text(0)).collect(),
            seen_reserved: r.time(8).is_some(),
            session_started: started > 0,
            expiry: r.time(6).unwrap_or(now),
            site_online: r.bool(11) != Some(false),
        };
        match reservation_fate(&facts, now) {
            ReservationFate::Held => {}
            ReservationFate::SeenReserved => {
                state
                    .store
                    .exec(
                        "UPDATE ocpi_reservations SET reserved_seen_at = $2 WHERE ocpp_id = $1 \
                         AND reserved_seen_at IS NULL",
                        &[ocpp_id.into(), now.into()],
                    )
                    .await?;
            }
            ReservationFate::Used => {
                state
                    .store
                    .exec(
                        "UPDATE ocpi_reservations SET status = 'used', updated_at = $2 WHERE ocpp_id = $1 \
                         AND status = 'active'",
                        &[ocpp_id.into(), now.into()],
                    )
                    .await?;
            }
            ReservationFate::EndedUnused => {
                let mut tx = state.store.begin().await?;
                let won = tx
                    .exec(
                        "UPDATE ocpi_reservations SET status = 'ended', updated_at = $2 WHERE ocpp_id = $1 \
                         AND status = 'active' AND command_id = $3",
                        &[ocpp_id.into(), now.into(), command_id.into()],
                    )
                    .await?;
                if won == 0 {
                    tx.rollback().await?;
                    continue;
                }
                let why = if facts.seen_reserved {
                    format!("the reservation at {station} ended without a session (expired or cancelled at the site)")
                } else {
                    "the reservation expired without a session".to_owned()
                };
                let result =
                    CommandResult { result: CommandResultType::CanceledReservation, message: DisplayText::en(why) };
                tx.exec(
                    "INSERT INTO ocpi_commands (id, partner_id, module, command, body, response_url, site_id, \
                         station, connector, id_tag, received_at, deadline, result, result_body, decided_at, \
                         decided_by, next_post_at) \
                     SELECT $1, partner_id, module, 'RESERVATION_ENDED', body, response_url, site_id, station, \
                         connector, id_tag, $2, $2, $3, $4, $2, $6, $2 FROM ocpi_commands WHERE id = $5 \
                     ON CONFLICT (id) DO NOTHING",
                    &[
                        format!("{command_id}:ended").into(),
                        now.into(),
                        result.result.as_str().into(),
                        to_json(&result).into(),
                        command_id.into(),
                        (if facts.seen_reserved { "site" } else { "hub" }).into(),
                    ],
                )
                .await?;
                tx.commit().await?;
                ended += 1;
                tracing::info!(partner, site, station, ocpp_id, "OCPI reservation ended unused: CANCELED_RESERVATION");
            }
        }
    }
    Ok(ended)
}

/// One round: decisions, late starts, reservations that ended, POSTs.
pub async fn tick(state: &OcpiState) -> Result<(), DbError> {
    let now = Utc::now();
    decide_due(state, now).await?;
    stop_late_starts(state, now).await?;
    watch_reservations(state, now).await?;
    post_due(state, now).await?;
    Ok(())
}

/// Runs [`tick`] every `refresh_interval` until aborted.
pub async fn run(state: OcpiState) {
    let mut every = tokio::time::interval(state.settings.refresh_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(e) = tick(&state).await {
            tracing::warn!(error = %e, "OCPI: cannot handle command results");
        }
    }
}

/// One stored request, as the administration and the tests see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stored {
    pub id: String,
    pub partner_id: String,
    pub command: String,
    pub site_command_id: Option<String>,
    pub result: Option<String>,
    pub decided_by: Option<String>,
    pub posted_at: Option<DateTime<Utc>>,
    pub post_tries: i64,
    pub abandoned_at: Option<DateTime<Utc>>,
    pub late_session_uid: Option<String>,
    pub late_stop_command_id: Option<String>,
    pub late_note: Option<String>,
}

/// Every stored request of a partner, oldest first.
pub async fn stored(store: &crate::db::Store, partner_id: &str) -> Result<Vec<Stored>, DbError> {
    Ok(store
        .fetch(
            "SELECT id, partner_id, command, site_command_id, result, decided_by, posted_at, post_tries, abandoned_at, \
                 late_session_uid, late_stop_command_id, late_note FROM ocpi_commands WHERE partner_id = $1 \
             ORDER BY received_at, id",
            &[partner_id.into()],
            &[
                Ty::Text,
                Ty::Text,
                Ty::Text,
                Ty::Text,
                Ty::Text,
                Ty::Text,
                Ty::Time,
                Ty::Int,
                Ty::Time,
                Ty::Text,
                Ty::Text,
                Ty::Text,
            ],
        )
        .await?
        .iter()
        .map(|r| {
            let text = |i| r.text(i).map(str::to_owned);
            Stored {
                id: text(0).unwrap_or_default(),
                partner_id: text(1).unwrap_or_default(),
                command: text(2).unwrap_or_default(),
                site_command_id: text(3),
                result: text(4),
                decided_by: text(5),
                posted_at: r.time(6),
                post_tries: r.int(7).unwrap_or(0),
                abandoned_at: r.time(8),
                late_session_uid: text(9),
                late_stop_command_id: text(10),
                late_note: text(11),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn site(outcome: CommandOutcome, detail: Value) -> SiteResult {
        SiteResult {
            v: 1,
            site_id: "s".into(),
            command_id: "c".into(),
            outcome,
            detail,
            at: "2026-11-21T12:00:00Z".parse().expect("time"),
        }
    }

    #[test]
    fn site_answers_map_to_command_results() {
        use CommandResultType as R;
        let cases = [
            ("START_SESSION", CommandOutcome::Accepted, json!({"status": "Accepted"}), R::Accepted),
            ("START_SESSION", CommandOutcome::Rejected, json!({"status": "Rejected"}), R::Rejected),
            ("START_SESSION", CommandOutcome::Failed, json!({"reason": "charger did not answer in time"}), R::Timeout),
            ("START_SESSION", CommandOutcome::Failed, json!({"reason": "charger CP-1 is not connected"}), R::Failed),
            ("START_SESSION", CommandOutcome::Expired, json!({"reason": "arrived after expires_at"}), R::Timeout),
            ("RESERVE_NOW", CommandOutcome::Rejected, json!({"status": "Occupied"}), R::EvseOccupied),
            ("RESERVE_NOW", CommandOutcome::Rejected, json!({"status": "Faulted"}), R::EvseInoperative),
            ("RESERVE_NOW", CommandOutcome::Rejected, json!({"status": "Unavailable"}), R::EvseInoperative),
            ("CANCEL_RESERVATION", CommandOutcome::Rejected, json!({"status": "Rejected"}), R::UnknownReservation),
            ("UNLOCK_CONNECTOR", CommandOutcome::Rejected, json!({"status": "NotSupported"}), R::NotSupported),
            ("UNLOCK_CONNECTOR", CommandOutcome::Rejected, json!({"status": "UnlockFailed"}), R::Failed),
            (
                "STOP_SESSION",
                CommandOutcome::Rejected,
                json!({"reason": "charger answered with CALLERROR NotImplemented: x"}),
                R::NotSupported,
            ),
        ];
        for (command, outcome, detail, expected) in cases {
            let r = command_result(command, &site(outcome, detail.clone()));
            assert_eq!(r.result, expected, "{command} {outcome:?} {detail}");
            assert_eq!(r.message.is_empty(), expected == R::Accepted, "a reason unless accepted");
        }
        let (result, body) = decide(COMMANDS, "START_SESSION", None, 30);
        assert_eq!(result, "TIMEOUT");
        assert!(body["message"][0]["text"].as_str().is_some_and(|t| t.contains("30 s")), "{body}");
    }

    #[test]
    fn charging_profile_results() {
        let detail = json!({"status": "Accepted", "connectorId": 1, "scheduleStart": "2026-11-21T12:00:00Z",
            "chargingSchedule": {"duration": 900, "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}, {"startPeriod": 600, "limit": 8.0}]}});
        let (result, body) =
            decide(CHARGING_PROFILES, "GET_PROFILE", Some(&site(CommandOutcome::Accepted, detail)), 30);
        assert_eq!(result, "ACCEPTED");
        assert_eq!(body["profile"]["start_date_time"], "2026-11-21T12:00:00.000Z");
        assert_eq!(body["profile"]["charging_profile"]["charging_profile_period"][1]["limit"], 8.0);
        let (result, body) = decide(CHARGING_PROFILES, "SET_PROFILE", None, 30);
        assert_eq!((result.as_str(), body), ("REJECTED", json!({"result": "REJECTED"})));
        let unknown = site(CommandOutcome::Rejected, json!({"status": "Unknown"}));
        assert_eq!(decide(CHARGING_PROFILES, "CLEAR_PROFILE", Some(&unknown), 30).0, "UNKNOWN");
    }

    #[test]
    fn a_reservation_ends_when_its_connector_leaves_reserved_without_a_session() {
        use ReservationFate as F;
        let now = Utc::now();
        let facts =
            |statuses: Vec<&'static str>, seen: bool, session: bool, expiry_in_s: i64, online: bool| ReservationFacts {
                statuses,
                seen_reserved: seen,
                session_started: session,
                expiry: now + chrono::Duration::seconds(expiry_in_s),
                site_online: online,
            };
        // Accepted, the charger has not shown it yet: held until the expiry (+ grace).
        assert_eq!(reservation_fate(&facts(vec!["Available"], false, false, 600, true), now), F::Held);
        assert_eq!(reservation_fate(&facts(vec!["Reserved"], false, false, 600, true), now), F::SeenReserved);
        assert_eq!(reservation_fate(&facts(vec!["Reserved"], true, false, 600, true), now), F::Held);
        // Reserved, then free again without a session: ended (expired or cancelled).
        assert_eq!(reservation_fate(&facts(vec!["Available"], true, false, 600, true), now), F::EndedUnused);
        assert_eq!(reservation_fate(&facts(vec!["Faulted"], true, false, -5, true), now), F::EndedUnused);
        // Plugged in: wait for the session; with it, used (whatever the connector says).
        assert_eq!(reservation_fate(&facts(vec!["Preparing"], true, false, 600, true), now), F::Held);
        assert_eq!(reservation_fate(&facts(vec!["Available"], true, true, 600, true), now), F::Used);
        // Never shown Reserved: ended only after the expiry and the grace, while online.
        let grace = EXPIRY_GRACE.num_seconds();
        assert_eq!(reservation_fate(&facts(vec!["Available"], false, false, -grace + 1, true), now), F::Held);
        assert_eq!(reservation_fate(&facts(vec!["Available"], false, false, -grace, true), now), F::EndedUnused);
        assert_eq!(reservation_fate(&facts(vec!["Available"], false, false, -grace, false), now), F::Held);
        assert_eq!(reservation_fate(&facts(vec!["Available"], false, true, -grace, true), now), F::Used);
        // No status row at all (a charger the hub knows nothing of): only the expiry.
        assert_eq!(reservation_fate(&facts(vec![], true, false, 600, true), now), F::Held);
    }

    #[test]
    fn backoff_doubles_to_a_minute() {
        assert_eq!(backoff(1), chrono::Duration::milliseconds(500));
        assert_eq!(backoff(2), chrono::Duration::seconds(1));
        assert_eq!(backoff(12), chrono::Duration::seconds(60));
    }
}
