//! The fleet dashboard at `/`: server-rendered pages (every value escaped), a little
//! JavaScript, and live updates pushed over server-sent events (`/events`).
//!
//! Log-in is by user name and password (`cloud-hub user add`); a session is a random
//! token in an HttpOnly, SameSite=Strict cookie of which the database keeps only the
//! SHA-256. Every POST must also come from this origin (the `Origin` header, when the
//! browser sends one, must name the `Host`). Roles:
//! - `admin`: everything;
//! - `cpo_operator`: every site, charger and session;
//! - `fleet_manager`: only the sessions of their customer's id tags, and the sites where
//!   those happened (read-only).
//!
//! Every page, fragment and stream asks [`Viewer`] what it may show.
//!
//! Pages: the sites overview (`/`), a site (`/sites/{id}`: chargers with live status,
//! active sessions, power per phase against every limit and the fail-safe state
//! ([`energy`]), per-phase readings of the chargers, open alerts, and for admins and CPO operators
//! command buttons and the site's recent commands), sessions with energy and cost
//! (`/sessions`, `/sites/{id}/sessions`, CSV at `/sessions.csv`), invoices (`/invoices`,
//! each printable at `/invoices/{id}`), alerts (`/alerts`, their count in every page's
//! navigation) and energy / utilisation charts (`/charts`, data at `/charts.json`).

/// The SQL condition "the site in column `$col` is one the viewer may see", `$1` being the
/// viewer's customer (NULL for admins and CPO operators: every site). A fleet manager sees
/// the sites where their customer's id tags charged: one index probe per tag and site
/// (`sessions (id_tag, site_id)`, schema 9), however many sessions there are. (`CROSS
/// JOIN` keeps SQLite's planner on that order; PostgreSQL plans it as any inner join.)
macro_rules! visible_site {
    ($col:literal) => {
        concat!(
            "($1 IS NULL OR EXISTS (SELECT 1 FROM customer_tokens vt CROSS JOIN sessions vs \
             WHERE vt.customer_id = $1 AND vs.id_tag = vt.id_tag AND vs.site_id = ",
            $col,
            "))"
        )
    };
}

pub mod actions;
pub mod alerts;
pub mod charts;
pub mod cli;
pub mod energy;
pub mod invoices;
pub mod live;
mod pages;
pub mod sessions;

use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
use chrono::{Duration as TimeDelta, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::auth::token_hash;
use crate::db::{DbError, Store, Ty};
use crate::metrics::Metrics;
use crate::sites;
use rumqttc::AsyncClient;

/// The session cookie's name.
pub const COOKIE: &str = "sp_session";
/// How long a log-in lasts.
const SESSION_HOURS: i64 = 12;
/// Failed log-ins allowed per user name within [`LOCKOUT`] before further tries are refused.
const MAX_FAILURES: u32 = 5;
const LOCKOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A dashboard role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    CpoOperator,
    FleetManager,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::CpoOperator => "cpo_operator",
            Role::FleetManager => "fleet_manager",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "cpo_operator" => Ok(Role::CpoOperator),
            "fleet_manager" => Ok(Role::FleetManager),
            other => Err(format!("unknown role {other:?} (admin, cpo_operator or fleet_manager)")),
        }
    }
}

/// What the dashboard needs besides the database.
pub struct DashSettings {
    /// The hub's MQTT client, for commands (the same path as the fleet API's).
    pub mqtt: AsyncClient,
    pub metrics: Arc<Metrics>,
    /// A command's lifetime, seconds (`[api] command_expiry_s`).
    pub command_expiry_s: u32,
    /// Who issues invoices (`[billing] issuer`), printed on them.
    pub issuer: String,
}

/// What the dashboard's handlers share.
#[derive(Clone)]
pub struct DashState {
    pub store: Store,
    pub settings: Arc<DashSettings>,
    failures: Arc<Mutex<HashMap<String, (u32, Instant)>>>,
}

/// The dashboard's routes (merged into the hub's router at `/`).
pub fn router(store: Store, settings: DashSettings) -> Router {
    let state = DashState { store, settings: Arc::new(settings), failures: Arc::default() };
    Router::new()
        .route("/", get(pages::overview))
        .route("/login", get(login_page).post(login))
        .route("/logout", axum::routing::post(logout))
        .route("/sites/{id}", get(pages::site))
        .route("/sites/{id}/live", get(pages::site_live))
        .route("/sites/{id}/sessions", get(sessions::site_page))
        .route("/sites/{id}/commands", axum::routing::post(actions::send))
        .route("/sessions", get(sessions::page))
        .route("/sessions.csv", get(sessions::csv))
        .route("/invoices", get(invoices::page))
        .route("/invoices/{id}", get(invoices::document))
        .route("/alerts", get(alerts::page))
        .route("/charts", get(charts::page))
        .route("/charts.json", get(charts::data))
        .route("/events", get(pages::events))
        .route("/static/dashboard.css", get(pages::css))
        .route("/static/dashboard.js", get(pages::js))
        .route("/static/uplot.min.js", get(charts::uplot_js))
        .route("/static/uplot.min.css", get(charts::uplot_css))
        .with_state(state)
}

/// A logged-in user, as every handler receives it.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub username: String,
    pub role: Role,
    pub customer: Option<String>,
}

impl Viewer {
    /// Whether this user sees every site (admin, CPO operator).
    pub fn sees_all(&self) -> bool {
        matches!(self.role, Role::Admin | Role::CpoOperator)
    }

    /// Whether this user may send commands to chargers (admin, CPO operator).
    pub fn may_command(&self) -> bool {
        matches!(self.role, Role::Admin | Role::CpoOperator)
    }
}

/// Why a request was refused or failed.
#[derive(Debug)]
pub enum DashError {
    /// Not logged in: to the log-in page.
    Login,
    Forbidden,
    NotFound,
    BadRequest(&'static str),
    /// A 4xx with its reason (a query or form value that does not parse, a command the
    /// charger cannot take).
    Invalid(StatusCode, String),
    Db(DbError),
}

impl DashError {
    /// The status and the reason shown to the user.
    pub fn status_and_reason(&self) -> (StatusCode, String) {
        match self {
            DashError::Login => (StatusCode::UNAUTHORIZED, "Log in first.".to_owned()),
            DashError::Forbidden => (StatusCode::FORBIDDEN, "Your role does not allow this.".to_owned()),
            DashError::NotFound => (StatusCode::NOT_FOUND, "Not found (or not yours to see).".to_owned()),
            DashError::BadRequest(why) => (StatusCode::BAD_REQUEST, (*why).to_owned()),
            DashError::Invalid(code, why) => (*code, why.clone()),
            DashError::Db(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "The database did not answer; try again.".to_owned())
            }
        }
    }
}

impl From<DbError> for DashError {
    fn from(e: DbError) -> Self {
        DashError::Db(e)
    }
}

impl IntoResponse for DashError {
    fn into_response(self) -> Response {
        match &self {
            DashError::Login => return Redirect::to("/login").into_response(),
            DashError::Db(e) => tracing::error!(error = %e, "dashboard: database error"),
            _ => {}
        }
        let (code, text) = self.status_and_reason();
        (code, pages::page("Sitepilot", None, &format!("<p class=\"error\">{}</p>", pages::esc(&text)))).into_response()
    }
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

impl<S> FromRequestParts<S> for Viewer
where
    DashState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = DashError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = DashState::from_ref(state);
        let token = cookie_value(&parts.headers, COOKIE).ok_or(DashError::Login)?;
        let row = state
            .store
            .fetch_opt(
                "SELECT u.username, u.role, u.customer_id FROM dashboard_sessions s \
                 JOIN dashboard_users u ON u.username = s.username \
                 WHERE s.token_hash = $1 AND s.expires_at > $2",
                &[token_hash(&token).into(), Utc::now().into()],
                &[Ty::Text, Ty::Text, Ty::Text],
            )
            .await?
            .ok_or(DashError::Login)?;
        let role = row.text(1).unwrap_or_default().parse::<Role>().map_err(|_| DashError::Login)?;
        if parts.method == axum::http::Method::POST && !same_origin(&parts.headers) {
            return Err(DashError::Forbidden);
        }
        Ok(Viewer {
            username: row.text(0).unwrap_or_default().to_owned(),
            role,
            customer: row.text(2).map(str::to_owned),
        })
    }
}

/// CSRF check for POSTs (on top of the SameSite=Strict cookie): a browser's `Origin`
/// must name the host it sends to; a POST without `Origin` is refused too (every
/// browser that supports SameSite sends it on POST).
pub fn same_origin(headers: &HeaderMap) -> bool {
    let (Some(origin), Some(host)) = (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == Some(host)
}

async fn login_page() -> Response {
    pages::login_form(None).into_response()
}

#[derive(serde::Deserialize)]
struct LoginForm {
    username: String,
    password: String,
}

async fn login(State(state): State<DashState>, headers: HeaderMap, Form(form): Form<LoginForm>) -> Response {
    if !same_origin(&headers) {
        return DashError::Forbidden.into_response();
    }
    let name = form.username.trim().to_owned();
    {
        let Ok(mut failures) = state.failures.lock() else {
            return (StatusCode::INTERNAL_SERVER_ERROR, "lock poisoned").into_response();
        };
        failures.retain(|_, (_, at)| at.elapsed() < LOCKOUT);
        if failures.get(&name).is_some_and(|(n, _)| *n >= MAX_FAILURES) {
            return (StatusCode::TOO_MANY_REQUESTS, pages::login_form(Some("Too many failed log-ins; wait a minute.")))
                .into_response();
        }
    }
    match check_password(&state.store, &name, &form.password).await {
        Ok(true) => {}
        Ok(false) => {
            if let Ok(mut failures) = state.failures.lock() {
                let entry = failures.entry(name).or_insert((0, Instant::now()));
                entry.0 += 1;
                entry.1 = Instant::now();
            }
            return (StatusCode::UNAUTHORIZED, pages::login_form(Some("Wrong user name or password."))).into_response();
        }
        Err(e) => return DashError::Db(e).into_response(),
    }
    let token = sites::generate_password();
    let now = Utc::now();
    let stored = state
        .store
        .exec(
            "INSERT INTO dashboard_sessions (token_hash, username, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            &[token_hash(&token).into(), name.into(), now.into(), (now + TimeDelta::hours(SESSION_HOURS)).into()],
        )
        .await;
    if let Err(e) = stored {
        return DashError::Db(e).into_response();
    }
    let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}", SESSION_HOURS * 3600);
    let mut response = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

async fn check_password(store: &Store, name: &str, password: &str) -> Result<bool, DbError> {
    let hash = store
        .fetch_opt("SELECT password_hash FROM dashboard_users WHERE username = $1", &[name.into()], &[Ty::Text])
        .await?
        .and_then(|r| r.text(0).map(str::to_owned));
    let Some(hash) = hash else { return Ok(false) };
    let password = password.to_owned();
    Ok(tokio::task::spawn_blocking(move || sites::verify_password(&password, &hash)).await.unwrap_or(false))
}

async fn logout(State(state): State<DashState>, headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return DashError::Forbidden.into_response();
    }
    if let Some(token) = cookie_value(&headers, COOKIE)
        && let Err(e) =
            state.store.exec("DELETE FROM dashboard_sessions WHERE token_hash = $1", &[token_hash(&token).into()]).await
    {
        return DashError::Db(e).into_response();
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("sp_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    response
}
