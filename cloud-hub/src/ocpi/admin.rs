//! OCPI administration on the fleet API, under `/api/v1/ocpi` (bearer API key with the
//! `admin` role; problem JSON errors like the rest of `/api/v1`):
//!
//! | method and path | what |
//! |---|---|
//! | `PUT /api/v1/ocpi/sites/{site_id}/location` | publish a site as an OCPI Location: address, city, postal_code, country (ISO alpha-3), latitude, longitude, time_zone, optional location_id (default: the site id), name, publish, connector_standard, connector_format, power_type, max_voltage, max_amperage |
//! | `GET /api/v1/ocpi/partners` | the partners and their state (never their tokens), with `outbox: {pending, parked}`: pushes waiting for them, CDRs parked after repeated refusals |
//! | `POST /api/v1/ocpi/partners` | `{"name": N, "raw_tokens": false}`: a token A for partner N to register with us (shown once) and our versions URL |
//! | `POST /api/v1/ocpi/partners/register` | `{"name": N, "versions_url": U, "token_a": T, "raw_tokens": false}`: register with a partner |
//! | `POST /api/v1/ocpi/partners/{name}/rotate` | new tokens both ways (ours stays valid for the grace window) |
//! | `POST /api/v1/ocpi/partners/{name}/outbox/retry` | the partner's parked CDRs go back to pending and are sent again, in order: `{"name": N, "retried": n}` |
//! | `DELETE /api/v1/ocpi/partners/{name}` | unregister (tells the partner, then every token stops) |
//! | `POST /api/v1/ocpi/partners/{name}/authorize` | `{"uid": U, "type": "RFID", "location_id": L, "evse_uids": [..]}`: real-time authorization by the eMSP |

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post, put};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use shared_model::ocpi::LocationReferences;

use super::OcpiState;
use super::credentials::{self, RegisterError};
use super::partners::{self, PartnerError};
use super::tokens::{self, AuthorizeError};
use crate::auth::{self, Role};
use crate::fleet::problem::ApiError;

/// Where the admin routes live.
pub const PREFIX: &str = "/api/v1/ocpi";

/// The admin routes (relative to [`PREFIX`]).
pub fn router(state: OcpiState) -> Router {
    Router::new()
        .route("/sites/{site_id}/location", put(put_location))
        .route("/partners", post(create_partner).get(list_partners))
        .route("/partners/register", post(register))
        .route("/partners/{name}/rotate", post(rotate))
        .route("/partners/{name}/outbox/retry", post(retry_outbox))
        .route("/partners/{name}", delete(unregister))
        .route("/partners/{name}/authorize", post(authorize))
        .layer(middleware::from_fn_with_state(state.clone(), admin_only))
        .with_state(state)
}

async fn admin_only(State(state): State<OcpiState>, req: Request, next: Next) -> Response {
    let Some(value) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return ApiError::unauthorized("no Authorization header: send `Authorization: Bearer <API key>`", false)
            .into_response();
    };
    let token = match auth::parse_bearer(value) {
        Ok(t) => t,
        Err(reason) => return ApiError::unauthorized(reason, false).into_response(),
    };
    match auth::authenticate(&state.store, token).await {
        Ok(Some(key)) if key.role.allows(Role::Admin) => next.run(req).await,
        Ok(Some(key)) => {
            ApiError::forbidden(format!("OCPI administration needs the admin role; this key is {}", key.role))
                .into_response()
        }
        Ok(None) => ApiError::unauthorized("the API key is not valid (unknown or revoked)", true).into_response(),
        Err(e) => ApiError::db("checking the API key", &e).into_response(),
    }
}

fn json_body<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    serde_json::from_value(v).map_err(|e| ApiError::unprocessable(format!("the body has the wrong shape: {e}")))
}

/// The body of `PUT sites/{site_id}/location`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocationBody {
    location_id: Option<String>,
    name: Option<String>,
    address: String,
    city: String,
    postal_code: Option<String>,
    country: String,
    latitude: f64,
    longitude: f64,
    time_zone: String,
    #[serde(default = "yes")]
    publish: bool,
    connector_standard: Option<String>,
    connector_format: Option<String>,
    power_type: Option<String>,
    max_voltage: Option<i64>,
    max_amperage: Option<i64>,
}

fn yes() -> bool {
    true
}

async fn put_location(State(state): State<OcpiState>, Path(site): Path<String>, body: Bytes) -> Response {
    match put_location_inner(&state, &site, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn put_location_inner(state: &OcpiState, site: &str, body: &Bytes) -> Result<Response, ApiError> {
    let b: LocationBody = json_body(body)?;
    let location_id = b.location_id.clone().unwrap_or_else(|| site.to_owned());
    let mut problems = Vec::new();
    if location_id.is_empty() || location_id.len() > 36 {
        problems.push(format!(
            "location_id {location_id:?} must be 1 to 36 characters (give one when the site id is longer)"
        ));
    }
    if b.address.trim().is_empty() || b.address.len() > 45 {
        problems.push("address must be 1 to 45 characters".to_owned());
    }
    if b.city.trim().is_empty() || b.city.len() > 45 {
        problems.push("city must be 1 to 45 characters".to_owned());
    }
    if b.country.len() != 3 || !b.country.chars().all(|c| c.is_ascii_uppercase()) {
        problems.push(format!("country {:?} must be ISO 3166-1 alpha-3, e.g. \"DEU\"", b.country));
    }
    if !(-90.0..=90.0).contains(&b.latitude) {
        problems.push(format!("latitude {} is not within -90 to 90", b.latitude));
    }
    if !(-180.0..=180.0).contains(&b.longitude) {
        problems.push(format!("longitude {} is not within -180 to 180", b.longitude));
    }
    if b.time_zone.is_empty() || !(b.time_zone.contains('/') || b.time_zone == "UTC") {
        problems.push(format!("time_zone {:?} must be an IANA zone, e.g. \"Europe/Berlin\"", b.time_zone));
    }
    if let Some(v) = b.max_voltage.filter(|v| !(1..=2000).contains(v)) {
        problems.push(format!("max_voltage {v} must be 1 to 2000"));
    }
    if let Some(a) = b.max_amperage.filter(|a| !(1..=1000).contains(a)) {
        problems.push(format!("max_amperage {a} must be 1 to 1000"));
    }
    if !problems.is_empty() {
        return Err(ApiError::unprocessable(problems.join("; ")));
    }
    if !crate::fleet::views::site_exists(&state.store, site).await.map_err(|e| ApiError::db("reading the site", &e))? {
        return Err(ApiError::not_found(format!("no site {site:?}")));
    }
    let taken = state
        .store
        .fetch_opt(
            "SELECT site_id FROM ocpi_locations WHERE location_id = $1 AND site_id <> $2",
            &[location_id.as_str().into(), site.into()],
            &[crate::db::Ty::Text],
        )
        .await
        .map_err(|e| ApiError::db("reading the locations", &e))?;
    if let Some(other) = taken.and_then(|r| r.text(0).map(str::to_owned)) {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("location_id {location_id:?} is site {other:?}'s")));
    }
    state
        .store
        .exec(
            "INSERT INTO ocpi_locations (site_id, location_id, name, address, city, postal_code, country, latitude, \
                 longitude, time_zone, publish, connector_standard, connector_format, power_type, max_voltage, \
                 max_amperage, source_seq, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, -1, $17) \
             ON CONFLICT (site_id) DO UPDATE SET location_id = excluded.location_id, name = excluded.name, \
                 address = excluded.address, city = excluded.city, postal_code = excluded.postal_code, \
                 country = excluded.country, latitude = excluded.latitude, longitude = excluded.longitude, \
                 time_zone = excluded.time_zone, publish = excluded.publish, \
                 connector_standard = excluded.connector_standard, connector_format = excluded.connector_format, \
                 power_type = excluded.power_type, max_voltage = excluded.max_voltage, \
                 max_amperage = excluded.max_amperage, source_seq = -1, updated_at = excluded.updated_at",
            &[
                site.into(),
                location_id.as_str().into(),
                b.name.as_deref().into(),
                b.address.as_str().into(),
                b.city.as_str().into(),
                b.postal_code.as_deref().into(),
                b.country.as_str().into(),
                format!("{:.6}", b.latitude).into(),
                format!("{:.6}", b.longitude).into(),
                b.time_zone.as_str().into(),
                b.publish.into(),
                b.connector_standard.as_deref().unwrap_or("IEC_62196_T2").into(),
                b.connector_format.as_deref().unwrap_or("SOCKET").into(),
                b.power_type.as_deref().unwrap_or("AC_3_PHASE").into(),
                b.max_voltage.unwrap_or(230).into(),
                b.max_amperage.unwrap_or(32).into(),
                Utc::now().into(),
            ],
        )
        .await
        .map_err(|e| ApiError::db("storing the location", &e))?;
    Ok(Json(json!({ "site_id": site, "location_id": location_id })).into_response())
}

/// The partners, each with what waits for it in the push outbox (`pending`, and `parked`
/// CDRs it kept refusing).
async fn list_partners(State(state): State<OcpiState>) -> Response {
    let listed = async {
        let list = partners::list(&state.store).await?;
        let backlog = super::push::backlog(&state.store).await?;
        let items: Vec<Value> = list
            .iter()
            .map(|p| {
                let (pending, parked) = backlog
                    .iter()
                    .find(|(id, _, _)| *id == p.id)
                    .map_or((0, 0), |(_, pending, parked)| (*pending, *parked));
                let mut item = serde_json::to_value(p).unwrap_or(Value::Null);
                if let Value::Object(fields) = &mut item {
                    fields.insert("outbox".into(), json!({ "pending": pending, "parked": parked }));
                }
                item
            })
            .collect();
        Ok::<_, crate::db::DbError>(items)
    };
    match listed.await {
        Ok(items) => Json(json!({ "items": items })).into_response(),
        Err(e) => ApiError::db("listing the partners", &e).into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPartner {
    name: String,
    #[serde(default)]
    raw_tokens: bool,
}

async fn create_partner(State(state): State<OcpiState>, body: Bytes) -> Response {
    let inner = async {
        let b: NewPartner = json_body(&body)?;
        let token_a = partners::generate_token();
        partners::create_pending(&state.store, &b.name, &token_a, b.raw_tokens).await.map_err(partner_error)?;
        Ok::<_, ApiError>(
            (
                StatusCode::CREATED,
                Json(json!({
                    "name": b.name,
                    "token_a": token_a,
                    "versions_url": state.settings.versions_url(),
                })),
            )
                .into_response(),
        )
    };
    inner.await.unwrap_or_else(IntoResponse::into_response)
}

fn partner_error(e: PartnerError) -> ApiError {
    match e {
        PartnerError::BadName(_) => ApiError::unprocessable(e.to_string()),
        PartnerError::Exists(..) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        PartnerError::Db(e) => ApiError::db("storing the partner", &e),
    }
}

fn register_error(e: RegisterError) -> ApiError {
    match e {
        RegisterError::Partner(p) => partner_error(p),
        RegisterError::NotRegistered(_) => ApiError::not_found(e.to_string()),
        RegisterError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        RegisterError::Db(d) => ApiError::db("storing the partner", &d),
        // The partner failed us: a gateway error with the OCPI status code in the detail.
        RegisterError::Client(_) => ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    name: String,
    versions_url: String,
    token_a: String,
    #[serde(default)]
    raw_tokens: bool,
}

async fn register(State(state): State<OcpiState>, body: Bytes) -> Response {
    let inner = async {
        let b: RegisterBody = json_body(&body)?;
        let p = credentials::register_with(&state, &b.name, &b.versions_url, &b.token_a, b.raw_tokens)
            .await
            .map_err(register_error)?;
        Ok::<_, ApiError>(Json(p).into_response())
    };
    inner.await.unwrap_or_else(IntoResponse::into_response)
}

async fn rotate(State(state): State<OcpiState>, Path(name): Path<String>) -> Response {
    match credentials::rotate(&state, &name).await {
        Ok(()) => Json(json!({ "name": name, "rotated": true })).into_response(),
        Err(e) => register_error(e).into_response(),
    }
}

/// Parked CDRs of partner `name` back to pending (404 for an unknown partner).
async fn retry_outbox(State(state): State<OcpiState>, Path(name): Path<String>) -> Response {
    let inner = async {
        let db = |e: crate::db::DbError| ApiError::db("retrying the parked CDRs", &e);
        if partners::get(&state.store, &name).await.map_err(db)?.is_none() {
            return Err(ApiError::not_found(format!("no OCPI partner {name:?}")));
        }
        let retried = super::push::retry_parked(&state.store, &name).await.map_err(db)?;
        if retried > 0 {
            tracing::info!(partner = %name, retried, "OCPI: parked CDRs sent again on request");
            state.push.wake();
        }
        Ok(Json(json!({ "name": name, "retried": retried })).into_response())
    };
    inner.await.unwrap_or_else(|e: ApiError| e.into_response())
}

async fn unregister(State(state): State<OcpiState>, Path(name): Path<String>) -> Response {
    match credentials::unregister(&state, &name).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => register_error(e).into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizeBody {
    uid: String,
    #[serde(rename = "type", default = "rfid")]
    token_type: String,
    location_id: Option<String>,
    evse_uids: Option<Vec<String>>,
}

fn rfid() -> String {
    "RFID".to_owned()
}

async fn authorize(State(state): State<OcpiState>, Path(name): Path<String>, body: Bytes) -> Response {
    let inner = async {
        let b: AuthorizeBody = json_body(&body)?;
        let location = b.location_id.map(|location_id| LocationReferences { location_id, evse_uids: b.evse_uids });
        match tokens::authorize(&state, &name, &b.uid, &b.token_type, location.as_ref()).await {
            Ok(info) => Ok(Json(info).into_response()),
            Err(AuthorizeError::NoPartner(_) | AuthorizeError::NoEndpoint(_)) => {
                Err(ApiError::not_found(format!("no registered partner {name:?} with real-time authorization")))
            }
            Err(AuthorizeError::Db(e)) => Err(ApiError::db("reading the partner", &e)),
            Err(AuthorizeError::Client(e)) => {
                Err(ApiError::new(StatusCode::BAD_GATEWAY, format!("OCPI status {}: {e}", e.code())))
            }
        }
    };
    inner.await.unwrap_or_else(IntoResponse::into_response)
}
