//! Alerts: what needs someone's attention, derived from what the sites report, each an
//! episode with the time it opened and the time it cleared (`dashboard_alerts`).
//!
//! | kind | opens when | clears when |
//! |---|---|---|
//! | `site_offline` | the site's presence says offline (its MQTT last will) | the site says online again |
//! | `charger_offline` | the station's WebSocket to the edge disconnects | it connects again |
//! | `connector_faulted` | a connector (or the whole station) reports `Faulted`, with its error code | it reports any other status |
//! | `fail_safe` | a site energy report says the balancer is in fail-safe, its reasons as detail | a report says it is over |
//!
//! Ingest keeps the table in the same transaction as the event's other effects
//! ([`on_event`]), and the site's presence through [`on_status`]; times are the site's
//! event times. A repeated `Faulted` updates the open alert's detail (error code) and
//! keeps its opening time.
//!
//! **Fail-safe.** The edge's balancer enters fail-safe (stale meter, lost grid link, a
//! charger that stops answering); its site energy reports (`SiteEvent::SiteEnergy`, on a
//! cadence and at once on every change) carry the state, and the alert follows them. A
//! repeated report updates the open alert's detail (the reasons) and keeps its opening.
//!
//! Who sees which alerts: admins and CPO operators all of them; a fleet manager those of
//! the sites they may see (where their customer's id tags charged), as for every page.

use axum::extract::{Query, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use shared_model::events::SiteEvent;
use shared_model::model::ConnectorStatus;
use std::fmt::Write as _;

use super::pages::{self, esc, page_with, scope, seg, time};
use super::{DashError, DashState, Viewer};
use crate::db::{DbError, Row, Store, Tx, Ty, Val};

/// The most open alerts a page lists (the count in the badge is exact).
const OPEN_LIMIT: i64 = 500;
/// The most cleared alerts a page lists, newest first.
const CLEARED_LIMIT: i64 = 100;

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKind {
    SiteOffline,
    ChargerOffline,
    ConnectorFaulted,
    FailSafe,
}

impl AlertKind {
    /// The name stored in `dashboard_alerts.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::SiteOffline => "site_offline",
            AlertKind::ChargerOffline => "charger_offline",
            AlertKind::ConnectorFaulted => "connector_faulted",
            AlertKind::FailSafe => "fail_safe",
        }
    }

    fn label(kind: &str) -> &'static str {
        match kind {
            "site_offline" => "Site offline",
            "charger_offline" => "Charger offline",
            "connector_faulted" => "Connector faulted",
            "fail_safe" => "Fail-safe active",
            _ => "Alert",
        }
    }
}

/// Where an alert applies: the site (`station` empty) or a station's EVSE / connector.
struct Subject<'a> {
    site: &'a str,
    kind: AlertKind,
    station: &'a str,
    evse: i64,
    connector: i64,
}

impl Subject<'_> {
    fn key(&self) -> [Val; 5] {
        [self.site.into(), self.kind.as_str().into(), self.station.into(), self.evse.into(), self.connector.into()]
    }
}

const OPEN_SQL: &str = "INSERT INTO dashboard_alerts (site_id, kind, station, evse, connector, detail, opened_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (site_id, kind, station, evse, connector) WHERE cleared_at IS NULL \
     DO UPDATE SET detail = excluded.detail";
// An event time earlier than the opening (a clock step at the site) clears at the opening.
const CLEAR_SQL: &str = "UPDATE dashboard_alerts \
     SET cleared_at = CASE WHEN opened_at > $6 THEN opened_at ELSE $6 END \
     WHERE site_id = $1 AND kind = $2 AND station = $3 AND evse = $4 AND connector = $5 AND cleared_at IS NULL";

fn open_args(s: &Subject<'_>, detail: Option<String>, at: DateTime<Utc>) -> Vec<Val> {
    let mut args = s.key().to_vec();
    args.push(Val::from(detail));
    args.push(at.into());
    args
}

fn clear_args(s: &Subject<'_>, at: DateTime<Utc>) -> Vec<Val> {
    let mut args = s.key().to_vec();
    args.push(at.into());
    args
}

/// The detail of a fault: error code, vendor error code and info, those that are given.
fn fault_detail(error_code: Option<&str>, vendor: Option<&str>, info: Option<&str>) -> Option<String> {
    let parts: Vec<&str> = [error_code, vendor, info].into_iter().flatten().filter(|p| !p.trim().is_empty()).collect();
    (!parts.is_empty()).then(|| parts.join(" / "))
}

/// Opens or clears the alerts an applied event implies (inside ingest's transaction).
pub(crate) async fn on_event(tx: &mut Tx, site: &str, event: &SiteEvent) -> Result<(), DbError> {
    match event {
        SiteEvent::StationConnection { station, connected, at } => {
            let s = Subject { site, kind: AlertKind::ChargerOffline, station, evse: 0, connector: 0 };
            if *connected {
                tx.exec(CLEAR_SQL, &clear_args(&s, *at)).await?;
            } else {
                tx.exec(OPEN_SQL, &open_args(&s, None, *at)).await?;
            }
        }
        SiteEvent::ConnectorStatus { station, connector, status, error_code, info, vendor_error_code, at } => {
            let s = Subject {
                site,
                kind: AlertKind::ConnectorFaulted,
                station,
                evse: i64::from(connector.evse),
                connector: i64::from(connector.connector),
            };
            if *status == ConnectorStatus::Faulted {
                let detail = fault_detail(error_code.as_deref(), vendor_error_code.as_deref(), info.as_deref());
                tx.exec(OPEN_SQL, &open_args(&s, detail, *at)).await?;
            } else {
                tx.exec(CLEAR_SQL, &clear_args(&s, *at)).await?;
            }
        }
        SiteEvent::SiteEnergy(report) => {
            let s = Subject { site, kind: AlertKind::FailSafe, station: "", evse: 0, connector: 0 };
            if report.fail_safe.active {
                let detail = Some(report.fail_safe.summary()).filter(|d| !d.is_empty());
                tx.exec(OPEN_SQL, &open_args(&s, detail, report.at)).await?;
            } else {
                tx.exec(CLEAR_SQL, &clear_args(&s, report.at)).await?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Opens (offline) or clears (online) the site's `site_offline` alert.
pub(crate) async fn on_status(store: &Store, site: &str, online: bool, at: DateTime<Utc>) -> Result<(), DbError> {
    let s = Subject { site, kind: AlertKind::SiteOffline, station: "", evse: 0, connector: 0 };
    if online {
        store.exec(CLEAR_SQL, &clear_args(&s, at)).await?;
    } else {
        store.exec(OPEN_SQL, &open_args(&s, None, at)).await?;
    }
    Ok(())
}

/// The sites a fleet manager may see (`$1`: their customer; NULL: every site).
macro_rules! visible {
    ($col:literal) => {
        visible_site!($col)
    };
}

/// How many alerts are open for what the viewer may see.
pub async fn open_count(store: &Store, viewer: &Viewer) -> Result<i64, DashError> {
    const SQL: &str =
        concat!("SELECT COUNT(*) FROM dashboard_alerts a WHERE a.cleared_at IS NULL AND ", visible!("a.site_id"));
    Ok(store.fetch_opt_planned(SQL, &[scope(viewer)?], &[Ty::Int]).await?.and_then(|r| r.int(0)).unwrap_or(0))
}

const COLUMNS: [Ty; 9] = [Ty::Text, Ty::Text, Ty::Text, Ty::Text, Ty::Int, Ty::Int, Ty::Text, Ty::Time, Ty::Time];

async fn list(store: &Store, viewer: &Viewer, site: Option<&str>, open: bool) -> Result<Vec<Row>, DashError> {
    const OPEN: &str = concat!(
        "SELECT a.site_id, sites.name, a.kind, a.station, a.evse, a.connector, a.detail, a.opened_at, a.cleared_at \
         FROM dashboard_alerts a JOIN sites ON sites.id = a.site_id \
         WHERE a.cleared_at IS NULL AND ($2 IS NULL OR a.site_id = $2) AND ",
        visible!("a.site_id"),
        " ORDER BY a.opened_at DESC, a.id DESC LIMIT $3"
    );
    const CLEARED: &str = concat!(
        "SELECT a.site_id, sites.name, a.kind, a.station, a.evse, a.connector, a.detail, a.opened_at, a.cleared_at \
         FROM dashboard_alerts a JOIN sites ON sites.id = a.site_id \
         WHERE a.cleared_at IS NOT NULL AND ($2 IS NULL OR a.site_id = $2) AND ",
        visible!("a.site_id"),
        " ORDER BY a.cleared_at DESC, a.id DESC LIMIT $3"
    );
    let (sql, limit) = if open { (OPEN, OPEN_LIMIT) } else { (CLEARED, CLEARED_LIMIT) };
    Ok(store.fetch_planned(sql, &[scope(viewer)?, Val::from(site), limit.into()], &COLUMNS).await?)
}

fn table(rows: &[Row], open: bool) -> String {
    let (id, empty) =
        if open { ("open-alerts", "No open alerts.") } else { ("cleared-alerts", "No alert cleared recently.") };
    if rows.is_empty() {
        return format!("<p class=\"empty\" id=\"{id}-empty\">{empty}</p>");
    }
    let mut out = format!(
        "<div class=\"scroll\"><table id=\"{id}\" class=\"stack\"><thead><tr><th>Alert</th><th>Site</th><th>Where</th>\
         <th>Detail</th><th>Opened</th>{}</tr></thead><tbody>",
        if open { "" } else { "<th>Cleared</th>" }
    );
    for r in rows {
        let kind = r.text(2).unwrap_or_default();
        let station = r.text(3).unwrap_or_default();
        let place = match (station, r.int(4).unwrap_or(0), r.int(5).unwrap_or(0)) {
            ("", _, _) => "whole site".to_owned(),
            (st, 0, _) if kind == "connector_faulted" => format!("{} (station)", esc(st)),
            (st, 0, _) => esc(st),
            (st, e, c) => format!("{} {e}/{c}", esc(st)),
        };
        let cleared = if open { String::new() } else { format!("<td data-label=\"Cleared\">{}</td>", time(r.time(8))) };
        let _ = write!(
            out,
            "<tr class=\"alert\" data-kind=\"{}\" data-site=\"{}\"><td data-label=\"Alert\"><span class=\"badge {}\">{}</span></td>\
             <td data-label=\"Site\"><a href=\"/sites/{}\">{}</a></td><td data-label=\"Where\">{place}</td>\
             <td data-label=\"Detail\">{}</td><td data-label=\"Opened\">{}</td>{cleared}</tr>",
            esc(kind),
            esc(r.text(0).unwrap_or_default()),
            if open { "bad" } else { "" },
            AlertKind::label(kind),
            seg(r.text(0).unwrap_or_default()),
            esc(r.text(1).unwrap_or_default()),
            esc(r.text(6).unwrap_or("—")),
            time(r.time(7)),
        );
    }
    out.push_str("</tbody></table></div>");
    out
}

/// The live part of the alerts page: open alerts, then the recently cleared ones.
pub(super) async fn fragment(store: &Store, viewer: &Viewer, site: Option<&str>) -> Result<String, DashError> {
    let open = list(store, viewer, site, true).await?;
    let cleared = list(store, viewer, site, false).await?;
    Ok(format!(
        "<section><h2>Open</h2>{}</section><section><h2>Recently cleared</h2>{}</section>",
        table(&open, true),
        table(&cleared, false)
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    site: Option<String>,
}

/// `/alerts` (`?site=ID` for one site): open and recently cleared alerts, pushed live.
pub async fn page(
    State(state): State<DashState>,
    viewer: Viewer,
    Query(q): Query<AlertsQuery>,
) -> Result<Response, DashError> {
    let site = q.site.filter(|s| !s.is_empty());
    if let Some(site) = &site {
        pages::check_site(&state.store, &viewer, site).await?;
    }
    let fragment = fragment(&state.store, &viewer, site.as_deref()).await?;
    let stream = match &site {
        Some(s) => format!("/events?view=alerts&amp;site={}", seg(s)),
        None => "/events?view=alerts".to_owned(),
    };
    let body = format!(
        "<h1>Alerts</h1><p class=\"note\">Charger offline, site offline, faulted connectors and load balancers \
         in fail-safe, as the sites report them.</p>\
         <p class=\"live-state\" id=\"live-state\">connecting…</p>\
         <div id=\"live\" data-stream=\"{stream}\">{fragment}</div>"
    );
    let count = open_count(&state.store, &viewer).await?;
    Ok(page_with("Alerts", Some(&viewer), Some(count), &[], &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_detail_joins_what_is_given() {
        assert_eq!(fault_detail(Some("GroundFailure"), None, None).as_deref(), Some("GroundFailure"));
        assert_eq!(
            fault_detail(Some("OtherError"), Some("E-42"), Some("RCD tripped")).as_deref(),
            Some("OtherError / E-42 / RCD tripped")
        );
        assert_eq!(fault_detail(None, Some(" "), None), None);
    }
}
