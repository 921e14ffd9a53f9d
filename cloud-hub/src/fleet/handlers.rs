//! The handlers of [`super::routes`]. Each checks its path and query, reads or writes
//! through [`super::views`] / [`crate::commands`], and answers JSON or problem JSON.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use shared_model::sync::is_valid_site_id;

use super::params::Query;
use super::problem::{ApiError, ApiResult};
use super::views::{self, ChargerFilter, CommandAccepted, CommandView, ListOf, SampleFilter, SessionFilter};
use super::{ApiState, Caller, PREFIX, command_body};

/// Path parameters, with problem JSON when they do not parse.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// The query of routes that take no parameters.
const NONE: &[super::params::Param] = &[];

fn check_site_id(site: &str) -> ApiResult<()> {
    if is_valid_site_id(site) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!("{site:?} is not a valid site id: use 1 to 64 letters, digits, '-' or '_'")))
    }
}

/// 404 unless the site exists.
pub(crate) async fn require_site(state: &ApiState, site: &str) -> ApiResult<()> {
    check_site_id(site)?;
    match views::site_exists(&state.store, site).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(ApiError::not_found(format!("no site {site:?}"))),
        Err(e) => Err(ApiError::db("reading the site", &e)),
    }
}

pub async fn list_sites(State(state): State<ApiState>, uri: Uri) -> ApiResult<Response> {
    let q = Query::parse(&uri, super::SITES_QUERY)?;
    let page =
        views::sites(&state.store, q.bool("online"), q.page()).await.map_err(|e| ApiError::db("listing sites", &e))?;
    Ok(Json(page).into_response())
}

pub async fn get_site(State(state): State<ApiState>, ApiPath(site): ApiPath<String>, uri: Uri) -> ApiResult<Response> {
    Query::parse(&uri, NONE)?;
    check_site_id(&site)?;
    match views::site_by_id(&state.store, &site).await {
        Ok(Some(s)) => Ok(Json(s).into_response()),
        Ok(None) => Err(ApiError::not_found(format!("no site {site:?}"))),
        Err(e) => Err(ApiError::db("reading the site", &e)),
    }
}

/// `GET /sites/{site}/energy`: the site's newest power-and-limits report.
pub async fn get_site_energy(
    State(state): State<ApiState>,
    ApiPath(site): ApiPath<String>,
    uri: Uri,
) -> ApiResult<Response> {
    Query::parse(&uri, NONE)?;
    require_site(&state, &site).await?;
    // A site that has not reported yet (an older edge, no circuits, reports off): nulls.
    match crate::dashboard::energy::latest(&state.store, &site).await {
        Ok(latest) => {
            let (report, received_at) = latest.map_or((None, None), |(r, at)| (Some(r), Some(at)));
            Ok(Json(serde_json::json!({"site_id": site, "received_at": received_at, "report": report})).into_response())
        }
        Err(e) => Err(ApiError::db("reading the site's energy report", &e)),
    }
}

pub async fn list_site_chargers(
    State(state): State<ApiState>,
    ApiPath(site): ApiPath<String>,
    uri: Uri,
) -> ApiResult<Response> {
    let q = Query::parse(&uri, super::SITE_CHARGERS_QUERY)?;
    require_site(&state, &site).await?;
    let filter = ChargerFilter { site: Some(site), station: None, connected: q.bool("connected") };
    let page =
        views::chargers(&state.store, &filter, q.page()).await.map_err(|e| ApiError::db("listing chargers", &e))?;
    Ok(Json(page).into_response())
}

pub async fn list_chargers(State(state): State<ApiState>, uri: Uri) -> ApiResult<Response> {
    let q = Query::parse(&uri, super::CHARGERS_QUERY)?;
    let filter =
        ChargerFilter { site: q.text("site").map(str::to_owned), station: None, connected: q.bool("connected") };
    let page =
        views::chargers(&state.store, &filter, q.page()).await.map_err(|e| ApiError::db("listing chargers", &e))?;
    Ok(Json(page).into_response())
}

async fn find_charger(state: &ApiState, site: &str, station: &str) -> ApiResult<views::ChargerView> {
    require_site(state, site).await?;
    match views::charger(&state.store, site, station).await {
        Ok(Some(c)) => Ok(c),
        Ok(None) => Err(ApiError::not_found(format!("no charger {station:?} at site {site:?}"))),
        Err(e) => Err(ApiError::db("reading the charger", &e)),
    }
}

pub async fn get_charger(
    State(state): State<ApiState>,
    ApiPath((site, station)): ApiPath<(String, String)>,
    uri: Uri,
) -> ApiResult<Response> {
    Query::parse(&uri, NONE)?;
    Ok(Json(find_charger(&state, &site, &station).await?).into_response())
}

pub async fn list_connectors(
    State(state): State<ApiState>,
    ApiPath((site, station)): ApiPath<(String, String)>,
    uri: Uri,
) -> ApiResult<Response> {
    Query::parse(&uri, NONE)?;
    let charger = find_charger(&state, &site, &station).await?;
    Ok(Json(ListOf { items: charger.connectors }).into_response())
}

pub async fn list_meter_samples(
    State(state): State<ApiState>,
    ApiPath((site, station)): ApiPath<(String, String)>,
    uri: Uri,
) -> ApiResult<Response> {
    let q = Query::parse(&uri, super::SAMPLES_QUERY)?;
    let (from, to) = q.range()?;
    require_site(&state, &site).await?;
    match views::station_known(&state.store, &site, &station).await {
        Ok(true) => {}
        Ok(false) => return Err(ApiError::not_found(format!("no charger {station:?} at site {site:?}"))),
        Err(e) => return Err(ApiError::db("reading the charger", &e)),
    }
    let filter = SampleFilter {
        from,
        to,
        measurand: q.text("measurand").map(str::to_owned),
        transaction_uid: q.text("transaction_uid").map(str::to_owned),
    };
    let page = views::meter_samples(&state.store, &site, &station, &filter, q.page())
        .await
        .map_err(|e| ApiError::db("reading meter samples", &e))?;
    Ok(Json(page).into_response())
}

fn session_filter(q: &Query, site: Option<String>) -> ApiResult<SessionFilter> {
    let (from, to) = q.range()?;
    Ok(SessionFilter {
        site,
        station: q.text("station").map(str::to_owned),
        transaction_uid: None,
        from,
        to,
        active: q.bool("active"),
    })
}

pub async fn list_sessions(State(state): State<ApiState>, uri: Uri) -> ApiResult<Response> {
    let q = Query::parse(&uri, super::SESSIONS_QUERY)?;
    let filter = session_filter(&q, q.text("site").map(str::to_owned))?;
    let page =
        views::sessions(&state.store, &filter, q.page()).await.map_err(|e| ApiError::db("listing sessions", &e))?;
    Ok(Json(page).into_response())
}

pub async fn list_site_sessions(
    State(state): State<ApiState>,
    ApiPath(site): ApiPath<String>,
    uri: Uri,
) -> ApiResult<Response> {
    let q = Query::parse(&uri, super::SITE_SESSIONS_QUERY)?;
    let filter = session_filter(&q, Some(site.clone()))?;
    require_site(&state, &site).await?;
    let page =
        views::sessions(&state.store, &filter, q.page()).await.map_err(|e| ApiError::db("listing sessions", &e))?;
    Ok(Json(page).into_response())
}

pub async fn get_session(
    State(state): State<ApiState>,
    ApiPath((site, uid)): ApiPath<(String, String)>,
    uri: Uri,
) -> ApiResult<Response> {
    Query::parse(&uri, NONE)?;
    require_site(&state, &site).await?;
    let filter = SessionFilter { site: Some(site.clone()), transaction_uid: Some(uid.clone()), ..Default::default() };
    let page = views::sessions(&state.store, &filter, super::params::Page { limit: 1, offset: 0 })
        .await
        .map_err(|e| ApiError::db("reading the session", &e))?;
    match page.items.into_iter().next() {
        Some(s) => Ok(Json(s).into_response()),
        None => Err(ApiError::not_found(format!("no session {uid:?} at site {site:?}"))),
    }
}

/// Whether the body is declared JSON (`application/json`, any parameters, or a
/// `+json` type).
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .is_some_and(|m| m == "application/json" || (m.starts_with("application/") && m.ends_with("+json")))
}

pub async fn send_command(
    State(state): State<ApiState>,
    Caller(caller): Caller,
    ApiPath(site): ApiPath<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    Query::parse(&uri, NONE)?;
    require_site(&state, &site).await?;
    if !is_json(&headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the command as JSON with `Content-Type: application/json`",
        ));
    }
    let body = body?;
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let request = command_body::parse(&value).map_err(ApiError::unprocessable)?;
    if let Some(station) = request.command.station() {
        match views::station_known(&state.store, &site, station).await {
            Ok(true) => {}
            Ok(false) => {
                let known = views::station_names(&state.store, &site).await.unwrap_or_default();
                return Err(ApiError::unprocessable(format!(
                    "station {station:?} is not known at site {site:?} (the hub knows {})",
                    if known.is_empty() { "no chargers there yet".to_owned() } else { known.join(", ") }
                )));
            }
            Err(e) => return Err(ApiError::db("reading the charger", &e)),
        }
    }
    let lifetime = request.expires_in_s.unwrap_or(u64::from(state.settings.command_expiry_s));
    let issued = crate::commands::issue(
        &state.store,
        &state.mqtt,
        &state.metrics,
        crate::commands::Issuer { via: "api", name: &caller.name },
        &site,
        request.command,
        lifetime,
    )
    .await
    .map_err(|e| ApiError::db("storing the command", &e))?;
    let (env, published) = (issued.envelope, issued.published);
    let location = format!("{PREFIX}/commands/{}", env.command_id);
    let accepted = CommandAccepted {
        command_id: env.command_id.clone(),
        site_id: site,
        status: "sent",
        published,
        issued_at: env.issued_at,
        expires_at: env.expires_at,
        location: location.clone(),
    };
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(accepted)).into_response())
}

pub async fn list_site_commands(
    State(state): State<ApiState>,
    ApiPath(site): ApiPath<String>,
    uri: Uri,
) -> ApiResult<Response> {
    let q = Query::parse(&uri, super::COMMANDS_QUERY)?;
    require_site(&state, &site).await?;
    let page = q.page();
    let now = Utc::now();
    let records = crate::commands::list(&state.store, &site, q.text("status"), now, page.limit + 1, page.offset)
        .await
        .map_err(|e| ApiError::db("listing commands", &e))?;
    let items = records.into_iter().map(|r| CommandView::new(r, now)).collect();
    Ok(Json(views::PageOf::from_rows(items, page)).into_response())
}

pub async fn get_command(State(state): State<ApiState>, ApiPath(id): ApiPath<String>, uri: Uri) -> ApiResult<Response> {
    Query::parse(&uri, NONE)?;
    match crate::commands::get(&state.store, &id).await {
        Ok(Some(r)) => Ok(Json(CommandView::new(r, Utc::now())).into_response()),
        Ok(None) => Err(ApiError::not_found(format!("no command {id:?}"))),
        Err(e) => Err(ApiError::db("reading the command", &e)),
    }
}

pub async fn list_api_keys(State(state): State<ApiState>, uri: Uri) -> ApiResult<Response> {
    Query::parse(&uri, NONE)?;
    let keys = crate::auth::list_keys(&state.store).await.map_err(|e| ApiError::db("listing API keys", &e))?;
    Ok(Json(ListOf { items: keys.into_iter().map(views::ApiKeyView::from).collect::<Vec<_>>() }).into_response())
}

pub async fn get_openapi(State(state): State<ApiState>, uri: Uri) -> ApiResult<Response> {
    Query::parse(&uri, NONE)?;
    Ok(Json(state.openapi.as_ref().clone()).into_response())
}
