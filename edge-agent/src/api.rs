//! The local HTTP API on port 8081: chargers with live status, transactions with meter
//! values, the OCPP message log, commands that return the charger's answer, `/health`
//! and `/metrics`. Errors are problem JSON (RFC 9457) with a precise reason.
//!
//! Commands take the OCPP 1.6 request payload as their JSON body (field names as in the
//! spec, e.g. `{"idTag": "ABC", "connectorId": 1}`); it is checked against the typed
//! request before anything is sent, and the charger's typed answer is returned.

use crate::app::Shared;
use crate::chargers::{Registration, StationAuth};
use crate::ocpp::registry::CommandError;
use crate::store::StoreError;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared_model::ocpp::OcppRequest;
use shared_model::ocpp::framing::decode_payload;
use shared_model::ocpp::v16::*;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// An API error rendered as problem JSON.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    title: &'static str,
    detail: String,
}

impl ApiError {
    fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Self {
        ApiError { status, title, detail: detail.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "title": self.title, "status": self.status.as_u16(), "detail": self.detail });
        (self.status, [(header::CONTENT_TYPE, "application/problem+json")], body.to_string()).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::new(StatusCode::NOT_FOUND, "not found", what),
            StoreError::Conflict(what) => ApiError::new(StatusCode::CONFLICT, "conflict", what),
            other => {
                // Never leak internals: log them, answer generically.
                tracing::error!(error = %other, "api: store error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error",
                    "the store failed; see the agent log",
                )
            }
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        let status = match &e {
            CommandError::NotConnected(_) => StatusCode::CONFLICT,
            CommandError::QueueFull(_) => StatusCode::SERVICE_UNAVAILABLE,
            CommandError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            CommandError::Disconnected | CommandError::CallError { .. } | CommandError::BadResponse { .. } => {
                StatusCode::BAD_GATEWAY
            }
        };
        ApiError::new(status, "command failed", e.to_string())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid query", e.body_text())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        ApiError::new(e.status(), "invalid body", e.body_text())
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Serves the API until shutdown.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    // The installer page's event streams end on shutdown (they would hold it up).
    let app = router(shared).layer(axum::Extension(crate::ui::Shutdown(shutdown.clone())));
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "api: server failed");
    }
}

/// The routes (public for tests that drive the router directly).
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/chargers", get(list_chargers))
        .route("/api/v1/chargers/{id}", get(get_charger))
        .route("/api/v1/chargers/{id}/approve", post(approve))
        .route("/api/v1/chargers/{id}/reject", post(reject))
        .route("/api/v1/chargers/{id}/commands/{command}", post(command))
        .route("/api/v1/chargers/{id}/ocpp/{action}", post(ocpp_call))
        .route("/api/v1/transactions", get(list_transactions))
        .route("/api/v1/transactions/{id}", get(get_transaction))
        .route("/api/v1/messages", get(messages))
        .route("/api/v1/id-tags", get(list_tags))
        .route("/api/v1/id-tags/{tag}", axum::routing::put(put_tag).delete(delete_tag))
        .route("/api/v1/meters", get(list_meters))
        .route("/api/v1/meters/{id}", get(get_meter))
        .route("/api/v1/balancer", get(get_balancer))
        .route("/api/v1/balancer/limits", get(get_limits).put(put_limits))
        .route("/api/v1/sync", get(get_sync))
        // The installer page at `/` and its assets and event stream under `/ui/`.
        .merge(crate::ui::router())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not found", "no such endpoint") })
        .with_state(shared)
}

async fn health(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "site": s.config.site.id,
        "connections": s.registry.connected().len(),
        "started_at": s.started_at,
    }))
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.metrics.render())
}

async fn stats(State(s): State<Arc<Shared>>) -> ApiResult<Json<Value>> {
    let v = s
        .store
        .read(|c| {
            let count = |sql: &str| -> Result<i64, StoreError> { Ok(c.query_row(sql, [], |r| r.get(0))?) };
            Ok(json!({
                "messages_logged": count("SELECT count(*) FROM message_log")?,
                "calls_received": count("SELECT count(*) FROM message_log WHERE direction = 'in' AND message_type = 2")?,
                "transactions": count("SELECT count(*) FROM transactions")?,
                "active_transactions": count("SELECT count(*) FROM transactions WHERE stop_source IS NULL")?,
                "meter_samples": count("SELECT count(*) FROM meter_samples")?,
                "outbox": count("SELECT count(*) FROM outbox")?,
                "chargers": count("SELECT count(*) FROM chargers")?,
            }))
        })
        .await?;
    Ok(Json(v))
}

#[derive(Serialize)]
struct ConnectorView {
    evse: u32,
    connector: u32,
    /// OCPP 1.6 connectorId.
    connector_id: u32,
    status: String,
    error_code: Option<String>,
    info: Option<String>,
    status_at: String,
    active_transaction: Option<i64>,
}

#[derive(Serialize)]
struct ChargerView {
    id: String,
    registration: String,
    source: String,
    name: Option<String>,
    vendor: Option<String>,
    model: Option<String>,
    serial_number: Option<String>,
    firmware_version: Option<String>,
    firmware_status: Option<String>,
    diagnostics_status: Option<String>,
    last_boot: Option<String>,
    last_seen: Option<String>,
    connected: bool,
    connected_at: Option<chrono::DateTime<chrono::Utc>>,
    protocol: Option<String>,
    connectors: Vec<ConnectorView>,
}

fn load_chargers(c: &rusqlite::Connection, only: Option<&str>) -> Result<Vec<ChargerView>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT id, registration, source, name, vendor, model, serial_number, firmware_version, firmware_status,
                diagnostics_status, last_boot, last_seen, protocol
         FROM chargers WHERE (?1 IS NULL OR id = ?1) ORDER BY id",
    )?;
    let mut chargers: Vec<ChargerView> = stmt
        .query_map([only], |r| {
            Ok(ChargerView {
                id: r.get(0)?,
                registration: r.get(1)?,
                source: r.get(2)?,
                name: r.get(3)?,
                vendor: r.get(4)?,
                model: r.get(5)?,
                serial_number: r.get(6)?,
                firmware_version: r.get(7)?,
                firmware_status: r.get(8)?,
                diagnostics_status: r.get(9)?,
                last_boot: r.get(10)?,
                last_seen: r.get(11)?,
                protocol: r.get(12)?,
                connected: false,
                connected_at: None,
                connectors: Vec::new(),
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut conn_stmt = c.prepare_cached(
        "SELECT k.evse, k.connector, k.status, k.error_code, k.info, k.status_at,
                (SELECT t.station_tx_id FROM transactions t WHERE t.charger_id = k.charger_id AND t.evse = k.evse
                   AND t.stop_source IS NULL ORDER BY t.pk DESC LIMIT 1)
         FROM connectors k WHERE k.charger_id = ?1 ORDER BY k.evse, k.connector",
    )?;
    for ch in &mut chargers {
        ch.connectors = conn_stmt
            .query_map([&ch.id], |r| {
                let evse: u32 = r.get(0)?;
                Ok(ConnectorView {
                    evse,
                    connector: r.get(1)?,
                    connector_id: evse,
                    status: r.get(2)?,
                    error_code: r.get(3)?,
                    info: r.get(4)?,
                    status_at: r.get(5)?,
                    active_transaction: r.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
    }
    Ok(chargers)
}

fn with_live(s: &Shared, mut chargers: Vec<ChargerView>) -> Vec<ChargerView> {
    for ch in &mut chargers {
        if let Some(live) = s.registry.info(&ch.id) {
            ch.connected = true;
            ch.connected_at = Some(live.connected_at);
            ch.protocol = Some(live.protocol.to_owned());
        }
    }
    chargers
}

async fn list_chargers(State(s): State<Arc<Shared>>) -> ApiResult<Json<Vec<ChargerView>>> {
    let chargers = s.store.read(|c| load_chargers(c, None)).await?;
    Ok(Json(with_live(&s, chargers)))
}

async fn get_charger(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult<Json<ChargerView>> {
    let key = id.clone();
    let chargers = s.store.read(move |c| load_chargers(c, Some(&key))).await?;
    with_live(&s, chargers)
        .pop()
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not found", format!("no charger {id}")))
}

#[derive(Deserialize, Default)]
struct ApproveBody {
    /// A new password for the charger; without one, the password it presented while
    /// pending is adopted.
    password: Option<String>,
}

async fn set_registration(
    s: &Shared,
    id: String,
    registration: Registration,
    password: Option<String>,
) -> ApiResult<Json<Value>> {
    let hash = match password {
        Some(p) if p.len() < 8 => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid body",
                "password must be at least 8 characters",
            ));
        }
        Some(p) => Some(crate::auth::hash_password(&p).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error", format!("hashing failed: {e}"))
        })?),
        None => None,
    };
    let key = id.clone();
    let stored_hash = s
        .store
        .write(move |c| {
            crate::chargers::set_registration(c, &key, registration, hash, chrono::Utc::now())?;
            Ok(c.query_row("SELECT password_hash FROM chargers WHERE id = ?1", [&key], |r| {
                r.get::<_, Option<String>>(0)
            })
            .optional()?
            .flatten())
        })
        .await?;
    s.directory.set(&id, StationAuth { registration, password_hash: stored_hash });
    if registration == Registration::Rejected {
        s.registry.close(&id).await;
    }
    Ok(Json(json!({ "id": id, "registration": registration.as_str() })))
}

async fn approve(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Option<Json<ApproveBody>>,
) -> ApiResult<Json<Value>> {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    set_registration(&s, id, Registration::Accepted, body.password).await
}

async fn reject(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    set_registration(&s, id, Registration::Rejected, None).await
}

/// Friendly command names for the common central-system calls.
fn command_action(command: &str) -> Option<&'static str> {
    Some(match command {
        "remote-start" => RemoteStartTransactionRequest::ACTION,
        "remote-stop" => RemoteStopTransactionRequest::ACTION,
        "availability" => ChangeAvailabilityRequest::ACTION,
        "reset" => ResetRequest::ACTION,
        "unlock" => UnlockConnectorRequest::ACTION,
        "get-configuration" => GetConfigurationRequest::ACTION,
        "change-configuration" => ChangeConfigurationRequest::ACTION,
        "trigger-message" => TriggerMessageRequest::ACTION,
        "clear-cache" => ClearCacheRequest::ACTION,
        _ => return None,
    })
}

async fn command(
    State(s): State<Arc<Shared>>,
    Path((id, command)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> ApiResult<Json<Value>> {
    let action = command_action(&command).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown command",
            format!(
                "no command {command:?}; use remote-start, remote-stop, availability, reset, unlock, \
                 get-configuration, change-configuration, trigger-message, clear-cache, or /ocpp/{{Action}}"
            ),
        )
    })?;
    send(&s, &id, action, body.map(|Json(v)| v).unwrap_or_else(|| json!({}))).await
}

async fn ocpp_call(
    State(s): State<Arc<Shared>>,
    Path((id, action)): Path<(String, String)>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(payload) = body?;
    send(&s, &id, &action, payload).await
}

/// Decodes the payload as the action's typed request, sends it, returns the typed answer.
async fn send(s: &Shared, station: &str, action: &str, payload: Value) -> ApiResult<Json<Value>> {
    if s.directory.get(station).is_none() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not found", format!("no charger {station}")));
    }
    macro_rules! dispatch {
        ($($req:ty),* $(,)?) => {
            match action {
                $(<$req>::ACTION => {
                    let request: $req = decode_payload(&payload).map_err(|(code, reason)| {
                        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid OCPP payload", format!("{action} ({code}): {reason}"))
                    })?;
                    let answer = s.registry.call(station, &request).await?;
                    serde_json::to_value(answer).map_err(|e| {
                        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error", e.to_string())
                    })?
                })*
                other => {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "unknown action",
                        format!("{other:?} is not an OCPP 1.6 action a central system sends"),
                    ));
                }
            }
        };
    }
    let answer = dispatch!(
        CancelReservationRequest,
        ChangeAvailabilityRequest,
        ChangeConfigurationRequest,
        ClearCacheRequest,
        ClearChargingProfileRequest,
        DataTransferRequest,
        GetCompositeScheduleRequest,
        GetConfigurationRequest,
        GetDiagnosticsRequest,
        GetLocalListVersionRequest,
        RemoteStartTransactionRequest,
        RemoteStopTransactionRequest,
        ReserveNowRequest,
        ResetRequest,
        SendLocalListRequest,
        SetChargingProfileRequest,
        TriggerMessageRequest,
        UnlockConnectorRequest,
        UpdateFirmwareRequest,
        CertificateSignedRequest,
        DeleteCertificateRequest,
        ExtendedTriggerMessageRequest,
        GetInstalledCertificateIdsRequest,
        GetLogRequest,
        InstallCertificateRequest,
        SignedUpdateFirmwareRequest,
    );
    Ok(Json(answer))
}

#[derive(Deserialize, Default)]
struct TxQuery {
    charger: Option<String>,
    active: Option<bool>,
    limit: Option<u32>,
    /// Only transactions with a local id below this (paging backwards).
    before: Option<i64>,
}

#[derive(Serialize)]
struct TxView {
    id: i64,
    uid: String,
    charger_id: String,
    connector_id: u32,
    /// The transactionId the charger uses.
    station_transaction_id: i64,
    origin: String,
    id_tag: Option<String>,
    auth_status: Option<String>,
    meter_start_wh: Option<i64>,
    started_at: Option<String>,
    meter_stop_wh: Option<i64>,
    stopped_at: Option<String>,
    stop_reason: Option<String>,
    stop_source: Option<String>,
    last_meter_wh: Option<i64>,
    energy_wh: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    meter_values: Option<Vec<Value>>,
}

const TX_COLUMNS: &str = "pk, uid, charger_id, evse, station_tx_id, origin, id_tag, auth_status, meter_start_wh,
    started_at, meter_stop_wh, stopped_at, stop_reason, stop_source, last_meter_wh";

fn tx_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TxView> {
    let meter_start: Option<i64> = r.get(8)?;
    let last: Option<i64> = r.get(14)?;
    let stop: Option<i64> = r.get(10)?;
    Ok(TxView {
        id: r.get(0)?,
        uid: r.get(1)?,
        charger_id: r.get(2)?,
        connector_id: r.get(3)?,
        station_transaction_id: r.get(4)?,
        origin: r.get(5)?,
        id_tag: r.get(6)?,
        auth_status: r.get(7)?,
        meter_start_wh: meter_start,
        started_at: r.get(9)?,
        meter_stop_wh: stop,
        stopped_at: r.get(11)?,
        stop_reason: r.get(12)?,
        stop_source: r.get(13)?,
        last_meter_wh: last,
        energy_wh: meter_start.and_then(|s| stop.or(last).map(|e| e - s)),
        meter_values: None,
    })
}

async fn list_transactions(
    State(s): State<Arc<Shared>>,
    q: Result<Query<TxQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<TxView>>> {
    let Query(q) = q?;
    let rows = s
        .store
        .read(move |c| {
            let sql = format!(
                "SELECT {TX_COLUMNS} FROM transactions
                 WHERE (?1 IS NULL OR charger_id = ?1)
                   AND (?2 IS NULL OR (?2 = 1 AND stop_source IS NULL) OR (?2 = 0 AND stop_source IS NOT NULL))
                   AND (?3 IS NULL OR pk < ?3)
                 ORDER BY pk DESC LIMIT ?4"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt
                .query_map(params![q.charger, q.active, q.before, q.limit.unwrap_or(100).clamp(1, 1000)], tx_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await?;
    Ok(Json(rows))
}

async fn get_transaction(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult<Json<TxView>> {
    let key = id.clone();
    let tx = s
        .store
        .read(move |c| {
            let sql = format!("SELECT {TX_COLUMNS} FROM transactions WHERE pk = ?1 OR uid = ?2");
            let pk: i64 = key.parse().unwrap_or(-1);
            let Some(mut tx) = c.prepare_cached(&sql)?.query_row(params![pk, key], tx_row).optional()? else {
                return Ok(None);
            };
            let mut stmt = c.prepare_cached(
                "SELECT ts, measurand, phase, location, unit, context, format, value FROM meter_samples
                 WHERE tx_pk = ?1 ORDER BY ts, id",
            )?;
            let values = stmt
                .query_map([tx.id], |r| {
                    Ok(json!({
                        "timestamp": r.get::<_, String>(0)?,
                        "measurand": r.get::<_, String>(1)?,
                        "phase": r.get::<_, Option<String>>(2)?,
                        "location": r.get::<_, Option<String>>(3)?,
                        "unit": r.get::<_, Option<String>>(4)?,
                        "context": r.get::<_, Option<String>>(5)?,
                        "format": r.get::<_, Option<String>>(6)?,
                        "value": r.get::<_, String>(7)?,
                    }))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            tx.meter_values = Some(values);
            Ok(Some(tx))
        })
        .await?;
    tx.map(Json).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not found", format!("no transaction {id}")))
}

async fn messages(
    State(s): State<Arc<Shared>>,
    q: Result<Query<crate::message_log::Query>, QueryRejection>,
) -> ApiResult<Json<Vec<crate::message_log::Row>>> {
    let Query(q) = q?;
    Ok(Json(s.store.read(move |c| crate::message_log::query(c, &q)).await?))
}

#[derive(Serialize)]
struct TagView {
    id_tag: String,
    status: String,
    expiry: Option<String>,
    parent_id_tag: Option<String>,
    /// `config` (from the config file, rewritten at every start) or `api`.
    source: String,
}

async fn list_tags(State(s): State<Arc<Shared>>) -> ApiResult<Json<Vec<TagView>>> {
    let tags = s
        .store
        .read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT id_tag, status, expiry, parent_id_tag, source FROM id_tags ORDER BY id_tag")?;
            let rows = stmt.query_map([], |r| {
                Ok(TagView {
                    id_tag: r.get(0)?,
                    status: r.get(1)?,
                    expiry: r.get(2)?,
                    parent_id_tag: r.get(3)?,
                    source: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await?;
    Ok(Json(tags))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TagBody {
    status: String,
    expiry: Option<chrono::DateTime<chrono::Utc>>,
    parent_id_tag: Option<String>,
}

/// Adds or changes an entry of the local authorization list.
async fn put_tag(
    State(s): State<Arc<Shared>>,
    Path(tag): Path<String>,
    body: Result<Json<TagBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(body) = body?;
    let invalid = |m: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid id tag", m);
    if tag.is_empty() || tag.chars().count() > 20 {
        return Err(invalid(format!("id tag {tag:?} must be 1 to 20 characters (OCPP idToken)")));
    }
    if shared_model::model::AuthorizationStatus::parse(&body.status).is_none() {
        return Err(invalid(format!("status {:?} is not one of Accepted, Blocked, Expired, Invalid", body.status)));
    }
    if body.parent_id_tag.as_ref().is_some_and(|p| p.chars().count() > 20) {
        return Err(invalid("parent_id_tag must be at most 20 characters".into()));
    }
    let key = tag.clone();
    s.store
        .write(move |c| {
            c.execute(
                "INSERT INTO id_tags (id_tag, status, expiry, parent_id_tag, source) VALUES (?1, ?2, ?3, ?4, 'api')
                 ON CONFLICT (id_tag) DO UPDATE SET status = excluded.status, expiry = excluded.expiry,
                     parent_id_tag = excluded.parent_id_tag, source = 'api'",
                params![key, body.status, body.expiry.map(crate::store::ts), body.parent_id_tag],
            )?;
            let now = chrono::Utc::now();
            let event = shared_model::events::SiteEvent::IdTagChanged {
                id_tag: key,
                status: Some(body.status),
                expiry: body.expiry,
                parent_id_tag: body.parent_id_tag,
                at: now,
            };
            crate::chargers::emit(c, &event, now)
        })
        .await?;
    Ok(Json(json!({ "id_tag": tag })))
}

async fn delete_tag(State(s): State<Arc<Shared>>, Path(tag): Path<String>) -> ApiResult<StatusCode> {
    let key = tag.clone();
    let n = s
        .store
        .write(move |c| {
            let n = c.execute("DELETE FROM id_tags WHERE id_tag = ?1", [&key])?;
            if n > 0 {
                let now = chrono::Utc::now();
                let event = shared_model::events::SiteEvent::IdTagChanged {
                    id_tag: key,
                    status: None,
                    expiry: None,
                    parent_id_tag: None,
                    at: now,
                };
                crate::chargers::emit(c, &event, now)?;
            }
            Ok(n)
        })
        .await?;
    if n == 0 {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not found", format!("no id tag {tag}")));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Every configured meter: last good reading, its age, staleness and the last error.
async fn list_meters(State(s): State<Arc<Shared>>) -> Json<Vec<crate::meters::MeterView>> {
    Json(s.meters.views(chrono::Utc::now()))
}

async fn get_meter(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult<Json<crate::meters::MeterView>> {
    s.meters
        .view(&id, chrono::Utc::now())
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not found", format!("no meter {id}")))
}

async fn get_balancer(State(s): State<Arc<Shared>>) -> Json<Value> {
    if s.config.energy.is_none() {
        return Json(json!({ "enabled": false, "reason": "no [[circuits]] configured" }));
    }
    Json(serde_json::to_value(&*s.control.view()).unwrap_or(Value::Null))
}

async fn get_limits(State(s): State<Arc<Shared>>) -> Json<crate::balancer::ExternalLimits> {
    Json(s.control.limits())
}

/// Replaces the external limits (grid operator import caps, a planned schedule). Values
/// are A per phase and W; every one must be a finite number `>= 0`.
async fn put_limits(
    State(s): State<Arc<Shared>>,
    body: Result<Json<crate::balancer::ExternalLimits>, JsonRejection>,
) -> ApiResult<Json<crate::balancer::ExternalLimits>> {
    let Json(limits) = body?;
    check_limits(&limits).map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid limits", m))?;
    if s.config.energy.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "balancing is off",
            "no [[circuits]] are configured, so there is nothing to limit",
        ));
    }
    s.control.set_limits(limits.clone());
    tracing::info!(?limits, "balancer: external limits replaced");
    Ok(Json(limits))
}

/// Checks external limits (from this API or from the hub): every value a finite number
/// `>= 0`, every schedule period ending after it starts.
pub(crate) fn check_limits(limits: &crate::balancer::ExternalLimits) -> Result<(), String> {
    let ok = |v: f64| v.is_finite() && v >= 0.0;
    let mut values: Vec<(&str, f64)> = Vec::new();
    for (key, v) in [
        ("import_limit_w", limits.import_limit_w),
        ("export_limit_w", limits.export_limit_w),
        ("safe_import_limit_w", limits.safe_import_limit_w),
    ] {
        if let Some(v) = v {
            values.push((key, v));
        }
    }
    for (key, v) in [("import_limit_a", limits.import_limit_a), ("safe_import_limit_a", limits.safe_import_limit_a)] {
        if let Some(a) = v {
            values.extend(a.iter().map(|x| (key, *x)));
        }
    }
    for (i, p) in limits.schedule.iter().enumerate() {
        if p.end_ms <= p.start_ms {
            return Err(format!("schedule[{i}]: end_ms must be after start_ms"));
        }
        values.extend(p.limit_w.map(|v| ("schedule.limit_w", v)));
        values.extend(p.limit_a.map(|v| ("schedule.limit_a", v)));
    }
    match values.into_iter().find(|(_, v)| !ok(*v)) {
        Some((key, v)) => Err(format!("{key}: {v} is not a finite number >= 0")),
        None => Ok(()),
    }
}

/// The link to the cloud hub: connected, last ack, what waits in the outbox, alarm, last error.
async fn get_sync(State(s): State<Arc<Shared>>) -> ApiResult<Json<crate::sync::SyncView>> {
    Ok(Json(crate::sync::view(&s).await?))
}
