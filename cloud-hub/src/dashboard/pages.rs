//! The pages: the sites overview, a site with its chargers and active sessions, the page
//! frame (navigation with the open-alert count), and the server-sent events that
//! re-render a page's live part when its data changes.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::time::Duration;

use super::{DashError, DashState, Role, Viewer};
use crate::db::{Row, Store, Ty, Val};
use crate::fleet::views::live_status;

/// Nothing external, no inline script or style: the page's own files only.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/// Rows per list page.
const LIST_LIMIT: i64 = 100;
/// Sites on the overview.
const SITES_LIMIT: i64 = 1000;
/// Commands listed on a site page.
const COMMANDS_LIMIT: i64 = 10;
/// How long a stream waits after a change for more changes before it renders (at most
/// four renders a second however busy the site).
const DEBOUNCE: Duration = Duration::from_millis(250);

const CSS: &str = include_str!("static/dashboard.css");
const JS: &str = include_str!("static/dashboard.js");

/// HTML-escapes text for element content and quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A site id or station name as a URL path segment or query value (percent-encoded
/// beyond unreserved).
pub(super) fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

pub(super) fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_else(|| "—".to_owned())
}

fn kw(w: Option<f64>) -> String {
    w.map(|w| format!("{:.1} kW", w / 1000.0)).unwrap_or_else(|| "—".to_owned())
}

pub(super) fn kwh(wh: Option<i64>) -> String {
    wh.map(|wh| format!("{:.2} kWh", wh as f64 / 1000.0)).unwrap_or_else(|| "—".to_owned())
}

/// The whole page around `body`, with the security headers (no alert count in the
/// navigation: error and log-in pages).
pub fn page(title: &str, viewer: Option<&Viewer>, body: &str) -> Response {
    page_with(title, viewer, None, &[], body)
}

/// The whole page around `body`: the navigation (with `alerts`, the open-alert count,
/// which the page's event stream keeps up to date), `assets` (names of static files:
/// `.css` in the head, `.js` before the dashboard's own script), and the security headers.
pub fn page_with(title: &str, viewer: Option<&Viewer>, alerts: Option<i64>, assets: &[&str], body: &str) -> Response {
    let nav = match viewer {
        Some(v) => {
            let (class, count) = match alerts {
                Some(0) => ("badge ok", "0".to_owned()),
                Some(n) => ("badge bad", n.to_string()),
                None => ("badge", String::new()),
            };
            format!(
                "<nav><a href=\"/\" class=\"brand\">Sitepilot</a><a href=\"/\">Sites</a>\
                 <a href=\"/sessions\">Sessions</a><a href=\"/invoices\">Invoices</a><a href=\"/charts\">Charts</a>\
                 <a href=\"/alerts\" id=\"alerts-link\">Alerts <span id=\"alert-count\" class=\"{class}\">{count}</span></a>\
                 <span class=\"who\">{} <small>({})</small></span>\
                 <form method=\"post\" action=\"/logout\"><button type=\"submit\">Log out</button></form></nav>",
                esc(&v.username),
                v.role.as_str()
            )
        }
        None => "<nav><span class=\"brand\">Sitepilot</span></nav>".to_owned(),
    };
    let mut head = String::new();
    let mut scripts = String::new();
    for a in assets {
        if a.ends_with(".css") {
            let _ = write!(head, "<link rel=\"stylesheet\" href=\"/static/{a}\">");
        } else {
            let _ = write!(scripts, "<script src=\"/static/{a}\"></script>");
        }
    }
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Sitepilot</title><link rel=\"icon\" href=\"data:,\">{head}\
         <link rel=\"stylesheet\" href=\"/static/dashboard.css\"></head>\
         <body>{nav}<main>{body}</main>{scripts}<script src=\"/static/dashboard.js\"></script></body></html>",
        esc(title)
    );
    secure(Html(html).into_response())
}

/// Adds the dashboard's security headers (strict CSP, no sniffing, no caching).
pub(super) fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A full page for a logged-in viewer, with the open-alert count in the navigation.
pub(super) async fn render(
    store: &Store,
    viewer: &Viewer,
    title: &str,
    assets: &[&str],
    body: &str,
) -> Result<Response, DashError> {
    let count = super::alerts::open_count(store, viewer).await?;
    Ok(page_with(title, Some(viewer), Some(count), assets, body))
}

pub fn login_form(error: Option<&str>) -> Response {
    let error = error.map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e))).unwrap_or_default();
    page(
        "Log in",
        None,
        &format!(
            "<h1>Log in</h1>{error}<form method=\"post\" action=\"/login\" class=\"login\">\
             <label>User name <input name=\"username\" autocomplete=\"username\" required></label>\
             <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
             <button type=\"submit\">Log in</button></form>"
        ),
    )
}

pub async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=300")], CSS).into_response()
}

pub async fn js() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "max-age=300")], JS)
        .into_response()
}

/// The customer whose data a fleet manager sees (`None`: every customer's).
pub(super) fn scope(viewer: &Viewer) -> Result<Val, DashError> {
    match viewer.role {
        Role::Admin | Role::CpoOperator => Ok(Val::Text(None)),
        // A fleet manager without a customer sees nothing rather than everything.
        Role::FleetManager => Ok(Val::from(viewer.customer.clone().ok_or(DashError::Forbidden)?)),
    }
}

/// Whether the viewer may look at `site` (404 when not, so that other customers' sites
/// are not even confirmed to exist).
pub(super) async fn check_site(store: &Store, viewer: &Viewer, site: &str) -> Result<(), DashError> {
    let row = store
        .fetch_opt_planned(
            concat!("SELECT sites.id FROM sites WHERE sites.id = $2 AND ", visible_site!("sites.id")),
            &[scope(viewer)?, site.into()],
            &[Ty::Text],
        )
        .await?;
    row.map(|_| ()).ok_or(DashError::NotFound)
}

// ---- overview ---------------------------------------------------------------------------

struct SiteLine {
    id: String,
    name: String,
    online: Option<bool>,
    connected: i64,
    chargers: i64,
    active: i64,
    power_w: Option<f64>,
    alerts: i64,
}

async fn site_lines(store: &Store, viewer: &Viewer) -> Result<Vec<SiteLine>, DashError> {
    // Alerts: open ones (site offline, chargers offline, connectors Faulted; see `alerts`).
    const SQL: &str = concat!(
        "SELECT sites.id, sites.name, sites.online, \
         (SELECT COUNT(*) FROM chargers c WHERE c.site_id = sites.id AND c.connected = $2), \
         (SELECT COUNT(*) FROM chargers c WHERE c.site_id = sites.id), \
         (SELECT COUNT(*) FROM sessions s WHERE s.site_id = sites.id AND s.stopped_at IS NULL \
             AND ($1 IS NULL OR s.id_tag IN (SELECT id_tag FROM customer_tokens WHERE customer_id = $1))), \
         (SELECT SUM((SELECT CASE WHEN m.unit = 'kW' THEN m.value_num * 1000 ELSE m.value_num END \
             FROM meter_samples m WHERE m.site_id = s.site_id AND m.transaction_uid = s.transaction_uid \
             AND m.measurand = 'Power.Active.Import' AND m.phase IS NULL ORDER BY m.ts DESC LIMIT 1)) \
             FROM sessions s WHERE s.site_id = sites.id AND s.stopped_at IS NULL \
             AND ($1 IS NULL OR s.id_tag IN (SELECT id_tag FROM customer_tokens WHERE customer_id = $1))), \
         (SELECT COUNT(*) FROM dashboard_alerts a WHERE a.site_id = sites.id AND a.cleared_at IS NULL) \
         FROM sites WHERE ",
        visible_site!("sites.id"),
        " ORDER BY sites.name, sites.id LIMIT $3"
    );
    let rows = store
        .fetch_planned(
            SQL,
            &[scope(viewer)?, true.into(), SITES_LIMIT.into()],
            &[Ty::Text, Ty::Text, Ty::Bool, Ty::Int, Ty::Int, Ty::Int, Ty::Real, Ty::Int],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let online = r.bool(2);
            SiteLine {
                id: r.text(0).unwrap_or_default().to_owned(),
                name: r.text(1).unwrap_or_default().to_owned(),
                online,
                connected: r.int(3).unwrap_or(0),
                chargers: r.int(4).unwrap_or(0),
                active: r.int(5).unwrap_or(0),
                power_w: r.real(6),
                alerts: r.int(7).unwrap_or(0),
            }
        })
        .collect())
}

fn online_badge(online: Option<bool>) -> &'static str {
    match online {
        Some(true) => "<span class=\"badge ok\">online</span>",
        Some(false) => "<span class=\"badge bad\">offline</span>",
        None => "<span class=\"badge\">unknown</span>",
    }
}

fn overview_fragment(lines: &[SiteLine]) -> String {
    if lines.is_empty() {
        return "<p class=\"empty\">No sites to show.</p>".to_owned();
    }
    let mut out = String::new();
    if lines.len() as i64 >= SITES_LIMIT {
        let _ = write!(out, "<p class=\"note\">The first {SITES_LIMIT} sites by name.</p>");
    }
    out.push_str("<div class=\"cards\">");
    for s in lines {
        let alerts = if s.alerts > 0 {
            format!("<span class=\"badge bad\">{} alert{}</span>", s.alerts, if s.alerts == 1 { "" } else { "s" })
        } else {
            "<span class=\"badge ok\">no alerts</span>".to_owned()
        };
        let _ = write!(
            out,
            "<a class=\"card\" href=\"/sites/{}\" data-site=\"{}\"><h2>{}</h2><p>{} {alerts}</p>\
             <dl><dt>Chargers connected</dt><dd>{} / {}</dd><dt>Active sessions</dt><dd class=\"active\">{}</dd>\
             <dt>Power now</dt><dd>{}</dd></dl></a>",
            seg(&s.id),
            esc(&s.id),
            esc(&s.name),
            online_badge(s.online),
            s.connected,
            s.chargers,
            s.active,
            kw(s.power_w)
        );
    }
    out.push_str("</div>");
    out
}

/// `/`: every site the viewer may see, with what needs attention first to the eye.
pub async fn overview(State(state): State<DashState>, viewer: Viewer) -> Result<Response, DashError> {
    let lines = site_lines(&state.store, &viewer).await?;
    let body = format!(
        "<h1>Sites</h1><p class=\"live-state\" id=\"live-state\">connecting…</p>\
         <div id=\"live\" data-stream=\"/events\">{}</div>",
        overview_fragment(&lines)
    );
    render(&state.store, &viewer, "Sites", &[], &body).await
}

// ---- one site -------------------------------------------------------------------------

/// `/sites/{id}`: the site's chargers with live status, its active sessions with power,
/// its open alerts; for admins and CPO operators, command buttons and recent commands.
pub async fn site(
    State(state): State<DashState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, DashError> {
    check_site(&state.store, &viewer, &id).await?;
    let head = state
        .store
        .fetch_opt(
            "SELECT name, online, status_at, last_event_at, agent_version FROM sites WHERE id = $1",
            &[id.as_str().into()],
            &[Ty::Text, Ty::Bool, Ty::Time, Ty::Time, Ty::Text],
        )
        .await?
        .ok_or(DashError::NotFound)?;
    let fragment = site_fragment(&state.store, &viewer, &id).await?;
    let name = head.text(0).unwrap_or_default();
    let result = if viewer.may_command() {
        "<output id=\"cmd-result\" class=\"cmd-result\" role=\"status\" aria-live=\"polite\"></output>"
    } else {
        ""
    };
    let body = format!(
        "<p class=\"crumbs\"><a href=\"/\">Sites</a> › {}</p><h1>{}</h1>\
         <p>Site id <code>{}</code> · agent {}</p>\
         <p class=\"links\"><a href=\"/sites/{site}/sessions\">Sessions</a> · <a href=\"/charts?site={site}\">Charts</a> \
         · <a href=\"/alerts?site={site}\">Alerts</a></p>\
         <p class=\"live-state\" id=\"live-state\">connecting…</p>{result}\
         <div id=\"live\" data-stream=\"/events?site={site}\">{fragment}</div>",
        esc(name),
        esc(name),
        esc(&id),
        esc(head.text(4).unwrap_or("—")),
        site = seg(&id),
    );
    render(&state.store, &viewer, name, &[], &body).await
}

/// `/sites/{id}/live`: the live part of the site page alone.
pub async fn site_live(
    State(state): State<DashState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, DashError> {
    check_site(&state.store, &viewer, &id).await?;
    let mut response = Html(site_fragment(&state.store, &viewer, &id).await?).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

pub(super) async fn site_fragment(store: &Store, viewer: &Viewer, id: &str) -> Result<String, DashError> {
    let site = store
        .fetch_opt("SELECT online, last_event_at FROM sites WHERE id = $1", &[id.into()], &[Ty::Bool, Ty::Time])
        .await?
        .ok_or(DashError::NotFound)?;
    let site_online = site.bool(0);
    let chargers = store
        .fetch(
            "SELECT station, connected, connection_changed_at, vendor, model FROM chargers \
             WHERE site_id = $1 ORDER BY station LIMIT $2",
            &[id.into(), LIST_LIMIT.into()],
            &[Ty::Text, Ty::Bool, Ty::Time, Ty::Text, Ty::Text],
        )
        .await?;
    let connectors = store
        .fetch(
            "SELECT station, evse, connector, status, error_code FROM connectors WHERE site_id = $1 \
             ORDER BY station, evse, connector",
            &[id.into()],
            &[Ty::Text, Ty::Int, Ty::Int, Ty::Text, Ty::Text],
        )
        .await?;
    let sessions = store
        .fetch_planned(
            "SELECT s.transaction_uid, s.station, s.evse, s.connector, s.id_tag, s.started_at, \
                 s.last_energy_wh - s.meter_start_wh, \
                 (SELECT CASE WHEN m.unit = 'kW' THEN m.value_num * 1000 ELSE m.value_num END \
                     FROM meter_samples m WHERE m.site_id = s.site_id AND m.transaction_uid = s.transaction_uid \
                     AND m.measurand = 'Power.Active.Import' AND m.phase IS NULL ORDER BY m.ts DESC LIMIT 1), \
                 s.station_transaction_id \
             FROM sessions s WHERE s.site_id = $2 AND s.stopped_at IS NULL \
                 AND ($1 IS NULL OR s.id_tag IN (SELECT id_tag FROM customer_tokens WHERE customer_id = $1)) \
             ORDER BY s.started_at DESC LIMIT $3",
            &[scope(viewer)?, id.into(), LIST_LIMIT.into()],
            &[Ty::Text, Ty::Text, Ty::Int, Ty::Int, Ty::Text, Ty::Time, Ty::Int, Ty::Real, Ty::Text],
        )
        .await?;
    let phases = phase_samples(store, viewer, id).await?;
    let alerts = store
        .fetch(
            "SELECT kind, station, evse, connector, detail, opened_at FROM dashboard_alerts \
             WHERE site_id = $1 AND cleared_at IS NULL ORDER BY opened_at DESC, id DESC LIMIT $2",
            &[id.into(), LIST_LIMIT.into()],
            &[Ty::Text, Ty::Text, Ty::Int, Ty::Int, Ty::Text, Ty::Time],
        )
        .await?;
    let commands = if viewer.may_command() {
        Some(crate::commands::list(store, id, None, Utc::now(), COMMANDS_LIMIT, 0).await?)
    } else {
        None
    };
    let buttons = viewer.may_command().then_some(id);
    let mut out = format!(
        "<section><h2>Site link</h2><p>{} <small>last event {}</small></p></section>",
        online_badge(site_online),
        time(site.time(1))
    );
    out.push_str(&alerts_list(&alerts));
    out.push_str(&super::energy::section(store, id).await?);
    out.push_str(&sessions_table(&sessions, buttons));
    out.push_str(&phase_table(&phases));
    out.push_str(&chargers_table(&chargers, &connectors, site_online, buttons));
    if let Some(commands) = &commands {
        out.push_str(&super::actions::commands_table(commands));
    }
    Ok(out)
}

fn alerts_list(alerts: &[Row]) -> String {
    if alerts.is_empty() {
        return "<section><h2>Alerts</h2><p class=\"empty\" id=\"no-alerts\">No open alerts.</p></section>".to_owned();
    }
    let mut out = String::from("<section><h2>Alerts</h2><ul class=\"alerts\" id=\"site-alerts\">");
    for a in alerts {
        let kind = a.text(0).unwrap_or_default();
        let label = match kind {
            "site_offline" => "Site offline",
            "charger_offline" => "Charger offline",
            "connector_faulted" => "Connector faulted",
            "fail_safe" => "Fail-safe active",
            _ => "Alert",
        };
        let place = match (a.text(1).unwrap_or_default(), a.int(2).unwrap_or(0), a.int(3).unwrap_or(0)) {
            ("", _, _) => String::new(),
            (st, 0, _) => format!(" · {}", esc(st)),
            (st, e, c) => format!(" · {} {e}/{c}", esc(st)),
        };
        let detail = a.text(4).map(|d| format!(" · {}", esc(d))).unwrap_or_default();
        let _ = write!(
            out,
            "<li data-kind=\"{}\"><span class=\"badge bad\">{label}</span>{place}{detail} <small>since {}</small></li>",
            esc(kind),
            time(a.time(5))
        );
    }
    out.push_str("</ul></section>");
    out
}

/// A command button: a form posting `fields` to the site's commands route (the page's
/// script sends it without leaving the page; without script it posts and comes back).
pub(super) fn command_form(site: &str, fields: &[(&str, &str)], cmd: &str, label: &str) -> String {
    let mut out = format!("<form method=\"post\" action=\"/sites/{}/commands\" class=\"cmd\">", seg(site));
    for (k, v) in fields {
        let _ = write!(out, "<input type=\"hidden\" name=\"{}\" value=\"{}\">", esc(k), esc(v));
    }
    let _ = write!(out, "<button type=\"submit\" data-cmd=\"{}\">{}</button></form>", esc(cmd), esc(label));
    out
}

/// Active sessions; with `buttons` (the site, for a viewer who may command) a stop
/// button for each session whose charger gave a transaction id.
fn sessions_table(sessions: &[Row], buttons: Option<&str>) -> String {
    let mut out = String::from("<section><h2>Active sessions</h2>");
    if sessions.is_empty() {
        out.push_str("<p class=\"empty\" id=\"no-sessions\">No session in progress.</p></section>");
        return out;
    }
    let _ = write!(
        out,
        "<div class=\"scroll\"><table id=\"sessions\" class=\"stack\"><thead><tr><th>Charger</th><th>Connector</th><th>Id tag</th>\
         <th>Started</th><th>Energy</th><th>Power</th>{}</tr></thead><tbody>",
        if buttons.is_some() { "<th></th>" } else { "" }
    );
    for s in sessions {
        let connector = match (s.int(2), s.int(3)) {
            (Some(e), Some(c)) => format!("{e}/{c}"),
            _ => "—".to_owned(),
        };
        let station = s.text(1).unwrap_or_default();
        let stop = match (buttons, s.text(8).and_then(|t| t.parse::<i64>().ok())) {
            (Some(site), Some(tx)) => format!(
                "<td data-label=\"\">{}</td>",
                command_form(
                    site,
                    &[("type", "remote_stop"), ("station", station), ("transaction_id", &tx.to_string())],
                    "remote-stop",
                    "Stop"
                )
            ),
            (Some(_), None) => "<td data-label=\"\"><small>no transaction id</small></td>".to_owned(),
            (None, _) => String::new(),
        };
        let _ = write!(
            out,
            "<tr class=\"session\" data-tx=\"{}\" data-station=\"{}\"><td data-label=\"Charger\">{}</td>\
             <td data-label=\"Connector\">{connector}</td><td data-label=\"Id tag\">{}</td>\
             <td data-label=\"Started\">{}</td><td data-label=\"Energy\">{}</td><td data-label=\"Power\">{}</td>{stop}</tr>",
            esc(s.text(0).unwrap_or_default()),
            esc(station),
            esc(station),
            esc(s.text(4).unwrap_or("—")),
            time(s.time(5)),
            kwh(s.int(6)),
            kw(s.real(7)),
        );
    }
    out.push_str("</tbody></table></div></section>");
    out
}

/// The latest per-phase current and power of each active session's charger (the site's
/// own meters and limits are in the energy section, [`super::energy`]).
async fn phase_samples(store: &Store, viewer: &Viewer, id: &str) -> Result<Vec<Row>, DashError> {
    // Newest first; the first row of each (station, measurand, phase) is its latest.
    let rows = store
        .fetch_planned(
            "SELECT m.station, m.measurand, m.phase, m.value_num, m.unit, m.ts FROM meter_samples m \
             JOIN sessions s ON s.site_id = m.site_id AND s.transaction_uid = m.transaction_uid \
             WHERE m.site_id = $2 AND s.stopped_at IS NULL AND m.phase IS NOT NULL \
                 AND m.measurand IN ('Current.Import', 'Power.Active.Import') \
                 AND ($1 IS NULL OR s.id_tag IN (SELECT id_tag FROM customer_tokens WHERE customer_id = $1)) \
             ORDER BY m.ts DESC LIMIT 500",
            &[scope(viewer)?, id.into()],
            &[Ty::Text, Ty::Text, Ty::Text, Ty::Real, Ty::Text, Ty::Time],
        )
        .await?;
    let mut seen = std::collections::HashSet::new();
    let mut latest: Vec<Row> = rows
        .into_iter()
        .filter(|r| {
            seen.insert((r.text(0).map(str::to_owned), r.text(1).map(str::to_owned), r.text(2).map(str::to_owned)))
        })
        .collect();
    latest.sort_by(|a, b| (a.text(0), a.text(1), a.text(2)).cmp(&(b.text(0), b.text(1), b.text(2))));
    Ok(latest)
}

fn phase_table(rows: &[Row]) -> String {
    let mut out = String::from(
        "<section><h2>Chargers per phase</h2><p class=\"note\">Measured by the chargers of the sessions above.</p>",
    );
    if rows.is_empty() {
        out.push_str("<p class=\"empty\">No per-phase readings from charging sessions.</p></section>");
        return out;
    }
    out.push_str(
        "<div class=\"scroll\"><table class=\"stack\"><thead><tr><th>Charger</th><th>Measurand</th><th>Phase</th><th>Value</th>\
         <th>At</th></tr></thead><tbody>",
    );
    for r in rows {
        let value = r.real(3).map(|v| format!("{v:.1} {}", r.text(4).unwrap_or_default())).unwrap_or_default();
        let _ = write!(
            out,
            "<tr><td data-label=\"Charger\">{}</td><td data-label=\"Measurand\">{}</td><td data-label=\"Phase\">{}</td>\
             <td data-label=\"Value\">{}</td><td data-label=\"At\">{}</td></tr>",
            esc(r.text(0).unwrap_or_default()),
            esc(r.text(1).unwrap_or_default()),
            esc(r.text(2).unwrap_or_default()),
            esc(&value),
            time(r.time(5))
        );
    }
    out.push_str("</tbody></table></div></section>");
    out
}

/// Chargers with live status and their connectors; with `buttons` (the site, for a viewer
/// who may command) unlock and availability buttons per connector. Commands address a
/// connector by its OCPP 1.6 `connectorId`, which the hub stores as the EVSE number.
fn chargers_table(chargers: &[Row], connectors: &[Row], site_online: Option<bool>, buttons: Option<&str>) -> String {
    let mut out = String::from("<section><h2>Chargers</h2>");
    if chargers.is_empty() {
        out.push_str("<p class=\"empty\">No charger has reported yet.</p></section>");
        return out;
    }
    out.push_str(
        "<div class=\"scroll\"><table id=\"chargers\" class=\"stack\"><thead><tr><th>Charger</th><th>Status</th>\
         <th>Connectors</th><th>Model</th></tr></thead><tbody>",
    );
    for c in chargers {
        let station = c.text(0).unwrap_or_default();
        let status = live_status(c.bool(1), site_online);
        let class = match status {
            "online" => "ok",
            "offline" => "bad",
            _ => "",
        };
        let mut ks = String::new();
        for k in connectors.iter().filter(|k| k.text(0) == Some(station)) {
            let st = k.text(3).unwrap_or_default();
            let kc = match st {
                "Available" => "ok",
                "Faulted" | "Unavailable" => "bad",
                "Charging" | "Occupied" | "Preparing" | "SuspendedEV" | "SuspendedEVSE" | "Finishing" => "busy",
                _ => "",
            };
            let error = k.text(4).filter(|e| *e != "NoError").map(|e| format!(" ({})", esc(e))).unwrap_or_default();
            let (evse, connector) = (k.int(1).unwrap_or(0), k.int(2).unwrap_or(0));
            let mut cmds = String::new();
            if let Some(site) = buttons.filter(|_| evse > 0) {
                let id = evse.to_string();
                cmds.push_str(&command_form(
                    site,
                    &[("type", "unlock_connector"), ("station", station), ("connector", &id)],
                    "unlock",
                    "Unlock",
                ));
                let (operative, label) =
                    if st == "Unavailable" { ("true", "Make available") } else { ("false", "Make unavailable") };
                cmds.push_str(&command_form(
                    site,
                    &[
                        ("type", "change_availability"),
                        ("station", station),
                        ("connector", &id),
                        ("operative", operative),
                    ],
                    "availability",
                    label,
                ));
            }
            let _ = write!(
                ks,
                "<div class=\"connector\" data-connector=\"{evse}\" data-status=\"{}\"><span class=\"badge {kc}\">{evse}/{connector} \
                 {}{error}</span>{cmds}</div>",
                esc(st),
                esc(st)
            );
        }
        let model = [c.text(3), c.text(4)].into_iter().flatten().collect::<Vec<_>>().join(" ");
        let _ = write!(
            out,
            "<tr data-station=\"{}\"><td data-label=\"Charger\">{}</td><td data-label=\"Status\"><span class=\"badge {class}\">\
             {status}</span> <small>since {}</small></td><td data-label=\"Connectors\">{ks}</td>\
             <td data-label=\"Model\">{}</td></tr>",
            esc(station),
            esc(station),
            time(c.time(2)),
            esc(&model)
        );
    }
    out.push_str("</tbody></table></div></section>");
    out
}

// ---- live -------------------------------------------------------------------------------

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    site: Option<String>,
    view: Option<String>,
}

/// What a stream renders.
#[derive(Debug, Clone, PartialEq, Eq)]
enum View {
    /// The sites overview.
    Overview,
    /// A site page's live part.
    Site(String),
    /// The alerts page's live part (of one site or of all).
    Alerts(Option<String>),
    /// Only the open-alert count (pages without a live part).
    Count,
}

impl View {
    fn parse(q: StreamQuery) -> Result<View, DashError> {
        let site = q.site.filter(|s| !s.is_empty());
        match (q.view.as_deref(), site) {
            (None | Some("overview"), None) => Ok(View::Overview),
            (None | Some("site"), Some(site)) => Ok(View::Site(site)),
            (Some("alerts"), site) => Ok(View::Alerts(site)),
            (Some("count"), None) => Ok(View::Count),
            (Some("site"), None) => Err(DashError::BadRequest("view=site needs site=ID")),
            (Some("overview" | "count"), Some(_)) => {
                Err(DashError::BadRequest("site=ID goes with view=site or view=alerts only"))
            }
            (Some(_), _) => Err(DashError::BadRequest("view must be overview, site, alerts or count")),
        }
    }

    fn site(&self) -> Option<&str> {
        match self {
            View::Site(s) | View::Alerts(Some(s)) => Some(s),
            _ => None,
        }
    }

    /// Whether a change of the sites in `changed` (`None`: unknown, the stream lagged)
    /// needs the live part rendered again.
    fn needs_render(&self, changed: Option<&[String]>) -> bool {
        match (self, changed) {
            (View::Count, _) => false,
            (_, None) => true,
            (View::Site(s) | View::Alerts(Some(s)), Some(changed)) => changed.contains(s),
            (View::Overview | View::Alerts(None), Some(_)) => true,
        }
    }
}

async fn render_view(store: &Store, viewer: &Viewer, view: &View) -> Result<Option<String>, DashError> {
    Ok(match view {
        View::Overview => Some(overview_fragment(&site_lines(store, viewer).await?)),
        View::Site(id) => Some(site_fragment(store, viewer, id).await?),
        View::Alerts(site) => Some(super::alerts::fragment(store, viewer, site.as_deref()).await?),
        View::Count => None,
    })
}

/// Counts an open stream in `dashboard_streams` for as long as it lives (the server drops
/// a stream when its connection is gone).
struct StreamGuard(prometheus_client::metrics::gauge::Gauge);

impl StreamGuard {
    fn new(metrics: &crate::metrics::Metrics) -> StreamGuard {
        metrics.dashboard_streams.inc();
        StreamGuard(metrics.dashboard_streams.clone())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Waits for the next change that concerns `view` (debounced: the changes of the next
/// [`DEBOUNCE`] are taken together); the changed sites, `None` when the stream lagged.
/// `None` from the outside when the channel closed.
async fn next_change(rx: &mut tokio::sync::broadcast::Receiver<String>) -> Option<Option<Vec<String>>> {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    let mut changed = match rx.recv().await {
        Ok(site) => Some(vec![site]),
        Err(RecvError::Lagged(_)) => None,
        Err(RecvError::Closed) => return None,
    };
    tokio::time::sleep(DEBOUNCE).await;
    loop {
        match rx.try_recv() {
            Ok(site) => {
                if let Some(c) = changed.as_mut()
                    && !c.contains(&site)
                {
                    c.push(site);
                }
            }
            Err(TryRecvError::Lagged(_)) => changed = None,
            Err(TryRecvError::Empty) => return Some(changed),
            Err(TryRecvError::Closed) => return None,
        }
    }
}

/// `/events` (the overview), `/events?site=ID` (a site page), `/events?view=alerts[&site=ID]`
/// (the alerts page) or `/events?view=count` (any other page): events `live` with JSON
/// `{"html": the page's live part rendered for this viewer, "alerts": the open-alert
/// count}` (`html` absent for `count`), first at once and then after each change
/// (debounced) of a site the page shows; a change elsewhere sends the count alone when it
/// moved.
pub async fn events(
    State(state): State<DashState>,
    viewer: Viewer,
    Query(q): Query<StreamQuery>,
) -> Result<Response, DashError> {
    let view = View::parse(q)?;
    if let Some(site) = view.site() {
        check_site(&state.store, &viewer, site).await?;
    }
    let receiver = super::live::subscribe();
    let store = state.store.clone();
    let open = StreamGuard::new(&state.settings.metrics);
    let stream = futures_util::stream::unfold(
        (receiver, store, viewer, view, None::<i64>, open),
        |(mut rx, store, viewer, view, last_count, open)| async move {
            let mut render = true;
            if last_count.is_some() {
                loop {
                    let changed = next_change(&mut rx).await?;
                    render = view.needs_render(changed.as_deref());
                    if render {
                        break;
                    }
                    // A site the page does not show changed: only the count may have moved.
                    match super::alerts::open_count(&store, &viewer).await {
                        Ok(n) if Some(n) == last_count => continue,
                        _ => break,
                    }
                }
            }
            let result = async {
                let count = super::alerts::open_count(&store, &viewer).await?;
                let html = if render { render_view(&store, &viewer, &view).await? } else { None };
                Ok::<_, DashError>((count, html))
            }
            .await;
            let (event, count) = match result {
                Ok((count, html)) => {
                    let mut data = serde_json::json!({ "alerts": count });
                    if let Some(html) = html {
                        data["html"] = html.into();
                    }
                    (Event::default().event("live").data(data.to_string()), Some(count))
                }
                Err(_) => (Event::default().event("error").data("{}"), last_count.or(Some(0))),
            };
            Some((Ok::<Event, Infallible>(event), (rx, store, viewer, view, count, open)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(site: Option<&str>, view: Option<&str>) -> StreamQuery {
        StreamQuery { site: site.map(str::to_owned), view: view.map(str::to_owned) }
    }

    #[test]
    fn stream_views_parse_and_refuse_nonsense() {
        assert_eq!(View::parse(q(None, None)).ok(), Some(View::Overview));
        assert_eq!(View::parse(q(Some("s1"), None)).ok(), Some(View::Site("s1".into())));
        assert_eq!(View::parse(q(Some(""), None)).ok(), Some(View::Overview));
        assert_eq!(View::parse(q(Some("s1"), Some("alerts"))).ok(), Some(View::Alerts(Some("s1".into()))));
        assert_eq!(View::parse(q(None, Some("count"))).ok(), Some(View::Count));
        assert!(View::parse(q(None, Some("site"))).is_err());
        assert!(View::parse(q(Some("s1"), Some("count"))).is_err());
        assert!(View::parse(q(None, Some("everything"))).is_err());
    }

    #[test]
    fn a_site_page_renders_again_only_for_its_site() {
        let site = View::Site("a".into());
        assert!(site.needs_render(Some(&["a".to_owned()])));
        assert!(!site.needs_render(Some(&["b".to_owned()])));
        assert!(site.needs_render(None), "after a lag nothing is known: render");
        assert!(View::Overview.needs_render(Some(&["b".to_owned()])));
        assert!(!View::Count.needs_render(None));
    }

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(esc("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        assert_eq!(seg("a b/é"), "a%20b%2F%C3%A9");
    }
}
