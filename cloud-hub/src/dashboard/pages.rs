//! The pages: the sites overview, a site with its chargers and active sessions, and the
//! server-sent events that re-render a page's live part when its data changes.

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

/// A site id or station name as a URL path segment (percent-encoded beyond unreserved).
fn seg(s: &str) -> String {
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

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_else(|| "—".to_owned())
}

fn kw(w: Option<f64>) -> String {
    w.map(|w| format!("{:.1} kW", w / 1000.0)).unwrap_or_else(|| "—".to_owned())
}

fn kwh(wh: Option<i64>) -> String {
    wh.map(|wh| format!("{:.2} kWh", wh as f64 / 1000.0)).unwrap_or_else(|| "—".to_owned())
}

/// The whole page around `body`, with the security headers.
pub fn page(title: &str, viewer: Option<&Viewer>, body: &str) -> Response {
    let nav = match viewer {
        Some(v) => format!(
            "<nav><a href=\"/\" class=\"brand\">Sitepilot</a><a href=\"/\">Sites</a>\
             <span class=\"who\">{} <small>({})</small></span>\
             <form method=\"post\" action=\"/logout\"><button type=\"submit\">Log out</button></form></nav>",
            esc(&v.username),
            v.role.as_str()
        ),
        None => "<nav><span class=\"brand\">Sitepilot</span></nav>".to_owned(),
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Sitepilot</title><link rel=\"icon\" href=\"data:,\">\
         <link rel=\"stylesheet\" href=\"/static/dashboard.css\"></head>\
         <body>{nav}<main>{body}</main><script src=\"/static/dashboard.js\"></script></body></html>",
        esc(title)
    );
    let mut response = Html(html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
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
fn scope(viewer: &Viewer) -> Result<Val, DashError> {
    match viewer.role {
        Role::Admin | Role::CpoOperator => Ok(Val::Text(None)),
        // A fleet manager without a customer sees nothing rather than everything.
        Role::FleetManager => Ok(Val::Text(Some(viewer.customer.clone().ok_or(DashError::Forbidden)?))),
    }
}

/// Whether the viewer may look at `site` (404 when not, so that other customers' sites
/// are not even confirmed to exist).
async fn check_site(store: &Store, viewer: &Viewer, site: &str) -> Result<(), DashError> {
    let row = store
        .fetch_opt(
            "SELECT sites.id FROM sites WHERE sites.id = $2 AND ($1 IS NULL OR sites.id IN (SELECT s.site_id \
             FROM sessions s JOIN customer_tokens t ON t.id_tag = s.id_tag WHERE t.customer_id = $1))",
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
    // Alerts: the site offline, chargers known offline, connectors Faulted.
    const SQL: &str = "SELECT sites.id, sites.name, sites.online, \
         (SELECT COUNT(*) FROM chargers c WHERE c.site_id = sites.id AND c.connected = $2), \
         (SELECT COUNT(*) FROM chargers c WHERE c.site_id = sites.id), \
         (SELECT COUNT(*) FROM sessions s WHERE s.site_id = sites.id AND s.stopped_at IS NULL \
             AND ($1 IS NULL OR s.id_tag IN (SELECT id_tag FROM customer_tokens WHERE customer_id = $1))), \
         (SELECT SUM((SELECT CASE WHEN m.unit = 'kW' THEN m.value_num * 1000 ELSE m.value_num END \
             FROM meter_samples m WHERE m.site_id = s.site_id AND m.transaction_uid = s.transaction_uid \
             AND m.measurand = 'Power.Active.Import' AND m.phase IS NULL ORDER BY m.ts DESC LIMIT 1)) \
             FROM sessions s WHERE s.site_id = sites.id AND s.stopped_at IS NULL \
             AND ($1 IS NULL OR s.id_tag IN (SELECT id_tag FROM customer_tokens WHERE customer_id = $1))), \
         (SELECT COUNT(*) FROM chargers c WHERE c.site_id = sites.id AND c.connected = $3) \
             + (SELECT COUNT(*) FROM connectors k WHERE k.site_id = sites.id AND k.status = 'Faulted') \
         FROM sites WHERE ($1 IS NULL OR sites.id IN (SELECT s.site_id FROM sessions s \
             JOIN customer_tokens t ON t.id_tag = s.id_tag WHERE t.customer_id = $1)) \
         ORDER BY sites.name, sites.id LIMIT $4";
    let rows = store
        .fetch(
            SQL,
            &[scope(viewer)?, true.into(), false.into(), LIST_LIMIT.into()],
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
                alerts: r.int(7).unwrap_or(0) + i64::from(online == Some(false)),
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
    let mut out = String::from("<div class=\"cards\">");
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
    Ok(page("Sites", Some(&viewer), &body))
}

// ---- one site -------------------------------------------------------------------------

/// `/sites/{id}`: the site's chargers with live status, its active sessions with power.
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
    let body = format!(
        "<p class=\"crumbs\"><a href=\"/\">Sites</a> › {}</p><h1>{}</h1>\
         <p>Site id <code>{}</code> · agent {} · last event {}</p>\
         <p class=\"live-state\" id=\"live-state\">connecting…</p>\
         <div id=\"live\" data-stream=\"/events?site={}\">{fragment}</div>",
        esc(name),
        esc(name),
        esc(&id),
        esc(head.text(4).unwrap_or("—")),
        time(head.time(3)),
        seg(&id),
    );
    Ok(page(name, Some(&viewer), &body))
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

async fn site_fragment(store: &Store, viewer: &Viewer, id: &str) -> Result<String, DashError> {
    let site = store
        .fetch_opt("SELECT online FROM sites WHERE id = $1", &[id.into()], &[Ty::Bool])
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
        .fetch(
            "SELECT s.transaction_uid, s.station, s.evse, s.connector, s.id_tag, s.started_at, \
                 s.last_energy_wh - s.meter_start_wh, \
                 (SELECT CASE WHEN m.unit = 'kW' THEN m.value_num * 1000 ELSE m.value_num END \
                     FROM meter_samples m WHERE m.site_id = s.site_id AND m.transaction_uid = s.transaction_uid \
                     AND m.measurand = 'Power.Active.Import' AND m.phase IS NULL ORDER BY m.ts DESC LIMIT 1) \
             FROM sessions s WHERE s.site_id = $2 AND s.stopped_at IS NULL \
                 AND ($1 IS NULL OR s.id_tag IN (SELECT id_tag FROM customer_tokens WHERE customer_id = $1)) \
             ORDER BY s.started_at DESC LIMIT $3",
            &[scope(viewer)?, id.into(), LIST_LIMIT.into()],
            &[Ty::Text, Ty::Text, Ty::Int, Ty::Int, Ty::Text, Ty::Time, Ty::Int, Ty::Real],
        )
        .await?;
    let phases = phase_samples(store, viewer, id).await?;
    let mut out = format!("<section><h2>Site link</h2><p>{}</p></section>", online_badge(site_online));
    out.push_str(&sessions_table(&sessions));
    out.push_str(&phase_table(&phases));
    out.push_str(&chargers_table(&chargers, &connectors, site_online));
    Ok(out)
}

fn sessions_table(sessions: &[Row]) -> String {
    let mut out = String::from("<section><h2>Active sessions</h2>");
    if sessions.is_empty() {
        out.push_str("<p class=\"empty\" id=\"no-sessions\">No session in progress.</p></section>");
        return out;
    }
    out.push_str(
        "<div class=\"scroll\"><table id=\"sessions\"><thead><tr><th>Charger</th><th>Connector</th><th>Id tag</th>\
         <th>Started</th><th>Energy</th><th>Power</th></tr></thead><tbody>",
    );
    for s in sessions {
        let connector = match (s.int(2), s.int(3)) {
            (Some(e), Some(c)) => format!("{e}/{c}"),
            _ => "—".to_owned(),
        };
        let _ = write!(
            out,
            "<tr class=\"session\" data-tx=\"{}\"><td>{}</td><td>{connector}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>",
            esc(s.text(0).unwrap_or_default()),
            esc(s.text(1).unwrap_or_default()),
            esc(s.text(4).unwrap_or("—")),
            time(s.time(5)),
            kwh(s.int(6)),
            kw(s.real(7)),
        );
    }
    out.push_str("</tbody></table></div></section>");
    out
}

/// The latest per-phase current and power of each active session's charger. The hub
/// receives no site-level grid meter or limit events, so per-phase site power against the
/// site's limits cannot be shown here; what the chargers measure per phase is.
async fn phase_samples(store: &Store, viewer: &Viewer, id: &str) -> Result<Vec<Row>, DashError> {
    // Newest first; the first row of each (station, measurand, phase) is its latest.
    let rows = store
        .fetch(
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
        "<section><h2>Per phase</h2><p class=\"note\">Measured by the chargers of the sessions above. \
         The site's grid meter and its limits are not reported to the hub.</p>",
    );
    if rows.is_empty() {
        out.push_str("<p class=\"empty\">No per-phase readings from charging sessions.</p></section>");
        return out;
    }
    out.push_str(
        "<div class=\"scroll\"><table><thead><tr><th>Charger</th><th>Measurand</th><th>Phase</th><th>Value</th>\
         <th>At</th></tr></thead><tbody>",
    );
    for r in rows {
        let value = r.real(3).map(|v| format!("{v:.1} {}", r.text(4).unwrap_or_default())).unwrap_or_default();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
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

fn chargers_table(chargers: &[Row], connectors: &[Row], site_online: Option<bool>) -> String {
    let mut out = String::from("<section><h2>Chargers</h2>");
    if chargers.is_empty() {
        out.push_str("<p class=\"empty\">No charger has reported yet.</p></section>");
        return out;
    }
    out.push_str(
        "<div class=\"scroll\"><table id=\"chargers\"><thead><tr><th>Charger</th><th>Status</th>\
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
            let _ = write!(
                ks,
                "<span class=\"badge {kc}\">{}/{} {}{error}</span> ",
                k.int(1).unwrap_or(0),
                k.int(2).unwrap_or(0),
                esc(st)
            );
        }
        let model = [c.text(3), c.text(4)].into_iter().flatten().collect::<Vec<_>>().join(" ");
        let _ = write!(
            out,
            "<tr data-station=\"{}\"><td>{}</td><td><span class=\"badge {class}\">{status}</span><br><small>since {}\
             </small></td><td>{ks}</td><td>{}</td></tr>",
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
pub struct StreamQuery {
    site: Option<String>,
}

/// `/events` (the overview) or `/events?site=ID` (a site page): the page's live part,
/// rendered for this viewer, first at once and then after each change of a site it shows
/// (debounced).
pub async fn events(
    State(state): State<DashState>,
    viewer: Viewer,
    Query(q): Query<StreamQuery>,
) -> Result<Response, DashError> {
    if let Some(site) = &q.site {
        check_site(&state.store, &viewer, site).await?;
    }
    let receiver = super::live::subscribe();
    let store = state.store.clone();
    let stream = futures_util::stream::unfold(
        (receiver, store, viewer, q.site, true),
        |(mut rx, store, viewer, site, first)| async move {
            if !first {
                loop {
                    match rx.recv().await {
                        Ok(changed) => {
                            // The overview shows every site the viewer may see.
                            if site.as_deref().is_none_or(|s| s == changed) {
                                break;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    }
                }
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
            }
            let html = match &site {
                Some(id) => site_fragment(&store, &viewer, id).await,
                None => site_lines(&store, &viewer).await.map(|l| overview_fragment(&l)),
            };
            let event = match html {
                Ok(html) => Event::default().event("live").data(serde_json::json!({ "html": html }).to_string()),
                Err(_) => Event::default().event("error").data("{}"),
            };
            Some((Ok::<Event, Infallible>(event), (rx, store, viewer, site, false)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}
