//! OCPI 2.2.1, CPO role: how roaming partners (eMSPs, hubs) see our sites and chargers.
//!
//! - [`transport`]: the envelope, status codes, `Authorization: Token`, request ids,
//!   routing headers, pagination.
//! - `GET /ocpi/versions`, `GET /ocpi/2.2.1` (this module): versions and endpoints.
//! - [`credentials`]: registration both ways (a partner registers with us using the
//!   token A we gave it; we register with a partner given its versions URL and token A),
//!   rotation with a grace window, unregistering. [`partners`] stores partners and tokens.
//! - [`locations`]: Sender. Sites with OCPI metadata (set with
//!   `PUT /api/v1/ocpi/sites/{site_id}/location`, see [`admin`]) become Locations, their
//!   chargers' EVSEs and connectors follow the live status; `last_updated` moves only
//!   when the generated object's content does. Changes are pushed by [`push`].
//! - [`tariffs`]: Sender. The fleet API's tariffs as OCPI Tariffs, pushed when created or
//!   changed.
//! - [`tokens`]: Receiver of the eMSPs' tokens, and the client of their real-time
//!   authorization.
//! - [`realtime`]: a site's question "may this id tag charge?" (sync protocol `up/auth`)
//!   answered from the pushed tokens or the eMSPs' real-time authorization.
//! - [`sessions`]: Sender. The sessions of partners' tokens at published sites as OCPI
//!   Sessions (PUT when new, PATCH as they progress); `charging_preferences` answered
//!   `NOT_POSSIBLE`.
//! - [`cdrs`]: Sender. Billing's CDRs (debits and credits) of those sessions as OCPI
//!   CDRs, each POSTed to its partner once.
//! - [`commands`]: Receiver of the eMSPs' commands (START_SESSION, STOP_SESSION,
//!   RESERVE_NOW, CANCEL_RESERVATION, UNLOCK_CONNECTOR), sent down to the sites, with
//!   their asynchronous results POSTed back; [`chargingprofiles`]: Receiver of charging
//!   profiles on sessions, the same way.
//! - [`push`]: the durable outbox every push and CDR POST goes through.
//! - [`client`]: calls to partners.
//!
//! More modules come as files of their own next to these: a handler file, a row in
//! [`details`], a route in [`router`].

pub mod admin;
pub mod cdrs;
pub mod chargingprofiles;
pub mod client;
pub mod commands;
pub mod config;
pub mod credentials;
pub mod locations;
pub mod partners;
pub mod push;
pub mod realtime;
pub mod sessions;
pub mod tariffs;
pub mod tokens;
pub mod transport;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use chrono::Utc;
use shared_model::ocpi::{Endpoint, VERSION, Version, VersionDetails};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::db::Store;
use partners::{Partner, PartnerState, TokenUse};
use transport::{
    OCPI_FROM_COUNTRY, OCPI_FROM_PARTY, OCPI_TO_COUNTRY, OCPI_TO_PARTY, OcpiError, X_CORRELATION_ID, X_REQUEST_ID,
};

/// Who we are and how we behave, resolved from `[ocpi]` at start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub country_code: String,
    pub party_id: String,
    pub business_name: String,
    /// Where partners reach us, without a trailing `/`.
    pub base_url: String,
    pub push: bool,
    pub rotation_grace: chrono::Duration,
    pub max_page_limit: u64,
    pub refresh_interval: Duration,
    /// The `timeout` of commands and charging profile requests, seconds.
    pub command_timeout_s: u32,
    /// The first wait before a failed push is tried again, and the longest one.
    pub push_retry_min: Duration,
    pub push_retry_max: Duration,
    /// The currency of a session at a site without a tariff.
    pub default_currency: String,
    /// How long a site's authorization request waits for an eMSP.
    pub realtime_auth_timeout: Duration,
    /// Ask every eMSP about an id tag none pushed.
    pub authorize_unknown_tokens: bool,
    /// The token bucket of each site's authorization requests: per second, burst.
    pub auth_rate_per_s: f64,
    pub auth_burst: u32,
}

impl Settings {
    /// From the config; `http_addr` is where the HTTP server listens (the base URL when
    /// `public_url` is not given).
    pub fn new(c: &config::OcpiConfig, http_addr: SocketAddr) -> Settings {
        Settings {
            country_code: c.country_code.clone(),
            party_id: c.party_id.clone(),
            business_name: c.business_name.clone(),
            base_url: c.public_url.clone().unwrap_or_else(|| format!("http://{http_addr}")),
            push: c.push,
            rotation_grace: chrono::Duration::seconds(i64::from(c.rotation_grace_s)),
            max_page_limit: u64::from(c.max_page_limit),
            refresh_interval: Duration::from_millis(c.refresh_interval_ms),
            command_timeout_s: c.command_timeout_s,
            push_retry_min: Duration::from_millis(c.push_retry_min_ms),
            push_retry_max: Duration::from_millis(c.push_retry_max_ms),
            default_currency: c.default_currency.clone(),
            realtime_auth_timeout: Duration::from_millis(c.realtime_auth_timeout_ms),
            authorize_unknown_tokens: c.authorize_unknown_tokens,
            auth_rate_per_s: c.auth_rate_per_s,
            auth_burst: c.auth_burst,
        }
    }

    pub fn versions_url(&self) -> String {
        format!("{}/ocpi/versions", self.base_url)
    }

    pub fn version_url(&self) -> String {
        format!("{}/ocpi/{VERSION}", self.base_url)
    }

    /// `(country_code, party_id)`.
    pub fn us(&self) -> (String, String) {
        (self.country_code.clone(), self.party_id.clone())
    }
}

/// What the OCPI handlers and tasks share.
#[derive(Clone)]
pub struct OcpiState {
    pub store: Store,
    pub settings: Arc<Settings>,
    pub client: client::Client,
    pub locations: Arc<locations::Refresher>,
    pub tariffs_seen: Arc<tariffs::Seen>,
    pub sessions: Arc<sessions::Refresher>,
    pub push: push::PushHandle,
    /// Each site's budget of authorization requests ([`realtime::RateLimiter`]).
    pub auth_limiter: Arc<realtime::RateLimiter>,
    /// Where commands to sites are published (`None`: they go out at the sites' next
    /// hello).
    pub mqtt: Option<rumqttc::AsyncClient>,
}

/// The partner a request authenticated as (put there by the authentication layer).
#[derive(Debug, Clone)]
pub struct Caller {
    pub partner: Partner,
    pub token_use: TokenUse,
    /// The token as the partner holds it (decoded).
    pub token: String,
}

/// The OCPI background work of a running hub: the refresher of locations, tariffs,
/// sessions and CDRs (which feeds the pushes) and the delivery of the outbox.
pub struct Service {
    pub state: OcpiState,
    refresher: tokio::task::JoinHandle<()>,
    commands: tokio::task::JoinHandle<()>,
}

impl Service {
    /// Starts OCPI: the config's bootstrap tokens are stored, the pushes, the location
    /// refresher and the command results ([`commands::run`]) run. Commands to sites are
    /// published with `mqtt`.
    pub async fn start(
        c: &config::OcpiConfig,
        store: Store,
        http_addr: SocketAddr,
        mqtt: Option<rumqttc::AsyncClient>,
    ) -> anyhow::Result<Service> {
        partners::bootstrap(&store, c).await?;
        let settings = Arc::new(Settings::new(c, http_addr));
        let auth_limiter = Arc::new(realtime::RateLimiter::new(settings.auth_rate_per_s, settings.auth_burst));
        let client = client::Client::default();
        let push = push::PushHandle::start(store.clone(), settings.clone(), client.clone());
        let state = OcpiState {
            store,
            settings,
            client,
            locations: Arc::new(locations::Refresher::default()),
            tariffs_seen: Arc::new(tariffs::Seen::default()),
            sessions: Arc::new(sessions::Refresher::default()),
            auth_limiter,
            push,
            mqtt,
        };
        let refresher = tokio::spawn(locations::refresh_loop(state.clone()));
        let commands = tokio::spawn(commands::run(state.clone()));
        Ok(Service { state, refresher, commands })
    }

    /// Stops the refresher and the delivery (what is not delivered stays in the outbox
    /// for the next start).
    pub async fn stop(self) {
        self.refresher.abort();
        let _ = self.refresher.await;
        self.commands.abort();
        let _ = self.commands.await;
        self.state.push.stop().await;
    }
}

/// Adds `/ocpi/...` ([`router`]) and the administration under [`admin::PREFIX`] to the
/// hub's HTTP routes.
pub fn mount(app: Router, state: OcpiState) -> Router {
    mount_with(app, state, Router::new())
}

/// [`mount`] with `extra` routes inside the OCPI router (behind its authentication).
pub fn mount_with(app: Router, state: OcpiState, extra: Router<OcpiState>) -> Router {
    app.merge(router_with(state.clone(), extra)).nest(admin::PREFIX, admin::router(state))
}

/// `/ocpi/...`: every route authenticated with a partner's token.
pub fn router(state: OcpiState) -> Router {
    router_with(state, Router::new())
}

/// [`router`] with `extra` routes, authenticated the same way.
pub fn router_with(state: OcpiState, extra: Router<OcpiState>) -> Router {
    Router::new()
        .merge(extra)
        .route("/ocpi/versions", get(versions))
        .route(&format!("/ocpi/{VERSION}"), get(version_details))
        .route(
            &format!("/ocpi/{VERSION}/credentials"),
            get(credentials::get).post(credentials::post).put(credentials::put).delete(credentials::delete),
        )
        .route(&format!("/ocpi/{VERSION}/locations"), get(locations::list))
        .route(&format!("/ocpi/{VERSION}/locations/{{location_id}}"), get(locations::get_location))
        .route(&format!("/ocpi/{VERSION}/locations/{{location_id}}/{{evse_uid}}"), get(locations::get_evse))
        .route(
            &format!("/ocpi/{VERSION}/locations/{{location_id}}/{{evse_uid}}/{{connector_id}}"),
            get(locations::get_connector),
        )
        .route(&format!("/ocpi/{VERSION}/tariffs"), get(tariffs::list))
        .route(&format!("/ocpi/{VERSION}/sessions"), get(sessions::list))
        .route(
            &format!("/ocpi/{VERSION}/sessions/{{session_id}}/charging_preferences"),
            axum::routing::put(sessions::charging_preferences),
        )
        .route(&format!("/ocpi/{VERSION}/cdrs"), get(cdrs::list))
        .route(
            &format!("/ocpi/{VERSION}/tokens/{{country_code}}/{{party_id}}/{{token_uid}}"),
            get(tokens::get).put(tokens::put).patch(tokens::patch),
        )
        .route(&format!("/ocpi/{VERSION}/commands/{{command}}"), axum::routing::post(commands::post))
        .route(
            &format!("/ocpi/{VERSION}/chargingprofiles/{{session_id}}"),
            get(chargingprofiles::get).put(chargingprofiles::put).delete(chargingprofiles::delete),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// Our endpoints in version 2.2.1 (OCPI 2.2.1 "Version information endpoint").
async fn version_details(State(state): State<OcpiState>) -> Response {
    transport::ok(details(&state.settings))
}

/// The version details document.
pub fn details(s: &Settings) -> VersionDetails {
    let base = s.version_url();
    let e = |identifier: &str, role: &str, path: &str| Endpoint {
        identifier: identifier.to_owned(),
        role: role.to_owned(),
        url: format!("{base}/{path}"),
    };
    VersionDetails {
        version: VERSION.to_owned(),
        endpoints: vec![
            e("credentials", "SENDER", "credentials"),
            e("credentials", "RECEIVER", "credentials"),
            e("locations", "SENDER", "locations"),
            e("tariffs", "SENDER", "tariffs"),
            e("sessions", "SENDER", "sessions"),
            e("cdrs", "SENDER", "cdrs"),
            e("tokens", "RECEIVER", "tokens"),
            e("commands", "RECEIVER", "commands"),
            e("chargingprofiles", "RECEIVER", "chargingprofiles"),
        ],
    }
}

async fn versions(State(state): State<OcpiState>) -> Response {
    transport::ok(vec![Version { version: VERSION.to_owned(), url: state.settings.version_url() }])
}

async fn not_found() -> Response {
    OcpiError::new(axum::http::StatusCode::NOT_FOUND, shared_model::ocpi::status::CLIENT_ERROR, "no such OCPI endpoint")
        .into_response()
}

async fn method_not_allowed() -> Response {
    OcpiError::method_not_allowed("this endpoint does not take this method").into_response()
}

/// Whether a token that is not (yet) a registered partner's may call `path`: token A
/// and our token B in flight serve registration only (OCPI 2.2.1 "Credentials module").
fn registration_path(path: &str) -> bool {
    path == "/ocpi/versions" || path == format!("/ocpi/{VERSION}") || path == format!("/ocpi/{VERSION}/credentials")
}

/// Authenticates every OCPI request and stamps every answer with `X-Request-ID` /
/// `X-Correlation-ID` (the request's, or fresh ones) and, for a registered partner, the
/// routing headers from us to it.
async fn authenticate(State(state): State<OcpiState>, mut req: Request, next: Next) -> Response {
    let headers = req.headers().clone();
    let path = req.uri().path().to_owned();
    let id = |name: axum::http::HeaderName| {
        headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 255)
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
    };
    let request_id = id(X_REQUEST_ID);
    let correlation_id = id(X_CORRELATION_ID);
    let (mut response, partner) = match check(&state, &headers, &path).await {
        Ok(caller) => {
            let partner = caller.partner.clone();
            req.extensions_mut().insert(caller);
            (next.run(req).await, Some(partner))
        }
        Err(e) => (e.into_response(), None),
    };
    let headers = response.headers_mut();
    set(headers, X_REQUEST_ID, &request_id);
    set(headers, X_CORRELATION_ID, &correlation_id);
    if let Some(p) = partner.filter(|p| p.state == PartnerState::Registered)
        && let (Some(cc), Some(pid)) = (&p.country_code, &p.party_id)
    {
        set(headers, OCPI_FROM_COUNTRY, &state.settings.country_code);
        set(headers, OCPI_FROM_PARTY, &state.settings.party_id);
        set(headers, OCPI_TO_COUNTRY, cc);
        set(headers, OCPI_TO_PARTY, pid);
    }
    response
}

fn set(headers: &mut HeaderMap, name: axum::http::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

async fn check(state: &OcpiState, headers: &HeaderMap, path: &str) -> Result<Caller, OcpiError> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Err(OcpiError::unauthorized(
            "no Authorization header: send `Authorization: Token <base64 of your token>`",
        ));
    };
    let value = value.to_str().map_err(|_| OcpiError::unauthorized("the Authorization header is not ASCII text"))?;
    let (decoded, raw) = transport::parse_token_header(value).map_err(OcpiError::unauthorized)?;
    let found = partners::authenticate(&state.store, decoded.as_deref(), &raw, Utc::now())
        .await
        .map_err(|e| OcpiError::db("checking the token", &e))?;
    let Some((partner, token_use, token)) = found else {
        return Err(OcpiError::unauthorized("the token is not valid (unknown, replaced or unregistered)"));
    };
    if partner.state != PartnerState::Registered && !registration_path(path) {
        return Err(OcpiError::unauthorized(
            "this token serves registration only (versions, version details, credentials): register first",
        ));
    }
    // Routing headers (OCPI 2.2.1 "Transport and format", Message Routing): when given,
    // the request must be addressed to us and come from the partner the token belongs to.
    let header = |name: axum::http::HeaderName| headers.get(&name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let (Some(cc), Some(pid)) = (header(OCPI_TO_COUNTRY), header(OCPI_TO_PARTY))
        && (!cc.eq_ignore_ascii_case(&state.settings.country_code)
            || !pid.eq_ignore_ascii_case(&state.settings.party_id))
    {
        return Err(OcpiError::invalid(format!(
            "OCPI-to-country-code / OCPI-to-party-id {cc}/{pid} is not this platform ({}/{})",
            state.settings.country_code, state.settings.party_id
        )));
    }
    if partner.state == PartnerState::Registered
        && let (Some(cc), Some(pid)) = (header(OCPI_FROM_COUNTRY), header(OCPI_FROM_PARTY))
        && let (Some(pcc), Some(ppid)) = (&partner.country_code, &partner.party_id)
        && (!cc.eq_ignore_ascii_case(pcc) || !pid.eq_ignore_ascii_case(ppid))
    {
        return Err(OcpiError::invalid(format!(
            "OCPI-from-country-code / OCPI-from-party-id {cc}/{pid} is not the party this token belongs to"
        )));
    }
    Ok(Caller { partner, token_use, token })
}

/// The caller, as an extractor.
pub type CallerExt = Extension<Caller>;
