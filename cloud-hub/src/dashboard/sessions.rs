//! Sessions with energy and cost: `/sessions` (every site the viewer may see),
//! `/sites/{id}/sessions` (one site) and the CSV export `/sessions.csv`.
//!
//! - **Filters** (query parameters, the same for the pages and the CSV): `site` (a site
//!   id), `from` and `to` (dates `YYYY-MM-DD`, UTC, both included) on the session's start
//!   (its stop when the hub never learned the start), `state` (`open` or `finished`), and
//!   on the pages `page` (from 1, [`PAGE_SIZE`] sessions a page, newest first). A value
//!   that does not parse is a 400 with the reason; a site the viewer may not see is a 404.
//! - **Role scope**: a fleet manager sees the sessions of their customer's id tags only,
//!   on the pages and in the CSV alike.
//! - **Energy**: the CDR's total when the session is priced; else meter stop minus meter
//!   start; an open session shows the energy so far (latest register reading minus meter
//!   start).
//! - **Cost**: the session's effective CDR, the newest debit revision that was not
//!   credited (a correction credits the old debit and adds a new revision). A session whose
//!   every debit was credited is `credited` and costs nothing; a finished session without
//!   a CDR is `unpriced` (its site has no tariff, or pricing failed).
//! - **CSV** (RFC 4180, CRLF, UTF-8): one header line, one line per session in the order of
//!   the pages, streamed in chunks with a keyset cursor so sessions that arrive meanwhile
//!   neither repeat nor shift lines. Money and energy are the exact decimal strings the CDR
//!   stores (energy from the meter: Wh / 1000 exactly), never rounded through a float.
//!   Text fields that a spreadsheet would take for a formula (starting with `=`, `+`, `-`,
//!   `@`, tab or CR) get a leading `'`; numeric fields never do.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, SecondsFormat, TimeDelta, Utc};
use futures_util::StreamExt as _;
use rust_decimal::Decimal;
use std::fmt::Write as _;

use super::pages::{check_site, esc, render, scope, seg, time};
use super::{DashError, DashState, Viewer};
use crate::db::{DbError, Row, Store, Ty, Val};

/// Sessions per page.
pub const PAGE_SIZE: i64 = 50;
/// Sessions per database round trip of the CSV export.
const CSV_CHUNK: i64 = 1000;
/// The highest page number accepted.
const MAX_PAGE: i64 = 100_000;

/// The query parameters of the pages and the CSV.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionQuery {
    site: Option<String>,
    from: Option<String>,
    to: Option<String>,
    state: Option<String>,
    page: Option<String>,
}

/// Open or finished sessions only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFilter {
    Open,
    Finished,
}

impl StateFilter {
    fn as_str(self) -> &'static str {
        match self {
            StateFilter::Open => "open",
            StateFilter::Finished => "finished",
        }
    }
}

/// Checked filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub site: Option<String>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub state: Option<StateFilter>,
    /// From 1.
    pub page: i64,
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn date(name: &str, v: Option<&str>) -> Result<Option<NaiveDate>, DashError> {
    v.map(|v| {
        NaiveDate::parse_from_str(v, "%Y-%m-%d")
            .map_err(|_| DashError::Invalid(StatusCode::BAD_REQUEST, format!("{name} {v:?} is not a date YYYY-MM-DD")))
    })
    .transpose()
}

impl Filter {
    /// Checks the query; `fixed_site` is the site of `/sites/{id}/sessions` (a `site`
    /// parameter there must name the same site).
    pub fn parse(q: &SessionQuery, fixed_site: Option<&str>) -> Result<Filter, DashError> {
        let bad = |why: String| DashError::Invalid(StatusCode::BAD_REQUEST, why);
        let site = match (non_empty(&q.site), fixed_site) {
            (Some(s), Some(f)) if s != f => {
                return Err(bad(format!("site {s:?} does not match the page's site {f:?}")));
            }
            (_, Some(f)) => Some(f.to_owned()),
            (s, None) => s.map(str::to_owned),
        };
        let from = date("from", non_empty(&q.from))?;
        let to = date("to", non_empty(&q.to))?;
        if let (Some(f), Some(t)) = (from, to)
            && f > t
        {
            return Err(bad(format!("from ({f}) is after to ({t})")));
        }
        let state = match non_empty(&q.state) {
            None => None,
            Some("open") => Some(StateFilter::Open),
            Some("finished") => Some(StateFilter::Finished),
            Some(other) => return Err(bad(format!("state must be open or finished, not {other:?}"))),
        };
        let page = match non_empty(&q.page) {
            None => 1,
            Some(p) => match p.parse::<i64>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
                _ => return Err(bad(format!("page must be a whole number from 1 to {MAX_PAGE}, not {p:?}"))),
            },
        };
        Ok(Filter { site, from, to, state, page })
    }

    fn start_time(&self) -> Option<DateTime<Utc>> {
        self.from.and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc())
    }

    /// The end, exclusive: the day after `to`.
    fn end_time(&self) -> Option<DateTime<Utc>> {
        self.to
            .and_then(|d| d.checked_add_signed(TimeDelta::days(1)))
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
    }

    /// The query string of these filters (without `page` unless given), `&`-separated
    /// and HTML-escaped for an attribute.
    fn query(&self, page: Option<i64>, with_site: bool) -> String {
        let mut parts = Vec::new();
        if with_site && let Some(s) = &self.site {
            parts.push(format!("site={}", seg(s)));
        }
        if let Some(f) = self.from {
            parts.push(format!("from={f}"));
        }
        if let Some(t) = self.to {
            parts.push(format!("to={t}"));
        }
        if let Some(s) = self.state {
            parts.push(format!("state={}", s.as_str()));
        }
        if let Some(p) = page {
            parts.push(format!("page={p}"));
        }
        parts.join("&amp;")
    }
}

/// Where a CSV chunk continues: after this sort key, site and transaction.
#[derive(Debug, Clone)]
struct Cursor {
    key: DateTime<Utc>,
    site: String,
    uid: String,
}

/// One session as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionLine {
    pub site_id: String,
    pub site_name: String,
    pub transaction_uid: String,
    pub station: String,
    pub evse: Option<i64>,
    pub connector: Option<i64>,
    pub id_tag: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
    sort_key: Option<DateTime<Utc>>,
    pub meter_start_wh: Option<i64>,
    pub last_energy_wh: Option<i64>,
    pub energy_wh: Option<i64>,
    pub stop_reason: Option<String>,
    pub cdr_id: Option<String>,
    pub cdr_energy_kwh: Option<String>,
    pub cost_excl_vat: Option<String>,
    pub cost_incl_vat: Option<String>,
    pub currency: Option<String>,
    pub cdr_count: i64,
}

/// Where a session's energy figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnergySource {
    Cdr,
    MeterStop,
    SoFar,
}

impl EnergySource {
    fn as_str(self) -> &'static str {
        match self {
            EnergySource::Cdr => "cdr",
            EnergySource::MeterStop => "meter_stop",
            EnergySource::SoFar => "so_far",
        }
    }
}

fn wh_as_kwh(wh: i64) -> String {
    Decimal::new(wh, 3).normalize().to_string()
}

impl SessionLine {
    fn from_row(r: &Row) -> SessionLine {
        let text = |i| r.text(i).map(str::to_owned);
        SessionLine {
            site_id: text(0).unwrap_or_default(),
            site_name: text(1).unwrap_or_default(),
            transaction_uid: text(2).unwrap_or_default(),
            station: text(3).unwrap_or_default(),
            evse: r.int(4),
            connector: r.int(5),
            id_tag: text(6),
            started_at: r.time(7),
            stopped_at: r.time(8),
            sort_key: r.time(9),
            meter_start_wh: r.int(10),
            last_energy_wh: r.int(11),
            energy_wh: r.int(12),
            stop_reason: text(13),
            cdr_id: text(14),
            cdr_energy_kwh: text(15),
            cost_excl_vat: text(16),
            cost_incl_vat: text(17),
            currency: text(18),
            cdr_count: r.int(19).unwrap_or(0),
        }
    }

    /// `open`, `priced`, `credited` or `unpriced`.
    pub fn state(&self) -> &'static str {
        match (self.stopped_at, &self.cdr_id, self.cdr_count) {
            (None, _, _) => "open",
            (Some(_), Some(_), _) => "priced",
            (Some(_), None, n) if n > 0 => "credited",
            (Some(_), None, _) => "unpriced",
        }
    }

    /// The energy in kWh as an exact decimal string, and where it comes from.
    pub fn energy(&self) -> Option<(String, EnergySource)> {
        if let Some(kwh) = &self.cdr_energy_kwh {
            return Some((kwh.clone(), EnergySource::Cdr));
        }
        if self.stopped_at.is_some() {
            return self.energy_wh.map(|wh| (wh_as_kwh(wh), EnergySource::MeterStop));
        }
        match (self.last_energy_wh, self.meter_start_wh) {
            (Some(last), Some(start)) if last >= start => Some((wh_as_kwh(last - start), EnergySource::SoFar)),
            _ => None,
        }
    }
}

/// The session query: `$1` customer scope, `$2` site, `$3` / `$4` start range (inclusive /
/// exclusive), `$5` state, `$6`..`$8` keyset cursor (sort key, site, transaction: rows
/// before it), `$9` limit, `$10` offset; the sort key is the start, else the stop, else
/// the last update (`COALESCE(started_at, stopped_at, updated_at)`, indexed as such in
/// schema 9), newest first. A page's keys are found first (an index range scan in sort
/// order), and only those rows are joined with their site and CDRs. One text per scope
/// (every customer or one, every site or one) so that each can use its index.
macro_rules! sessions_sql {
    ($customer:literal, $site:literal) => {
        concat!(
            "SELECT s.site_id, sites.name, s.transaction_uid, s.station, s.evse, s.connector, \
                 s.id_tag, s.started_at, s.stopped_at, p.k, \
                 s.meter_start_wh, s.last_energy_wh, s.energy_wh, s.stop_reason, \
                 c.id, c.total_energy_kwh, c.total_cost_excl_vat, c.total_cost_incl_vat, c.currency, \
                 (SELECT COUNT(*) FROM cdrs d WHERE d.site_id = s.site_id AND d.transaction_uid = s.transaction_uid) \
             FROM (SELECT s.site_id, s.transaction_uid, COALESCE(s.started_at, s.stopped_at, s.updated_at) AS k \
                 FROM sessions s WHERE ",
            $customer,
            " AND ",
            $site,
            " AND COALESCE(s.started_at, s.stopped_at, s.updated_at) >= $3 \
                 AND COALESCE(s.started_at, s.stopped_at, s.updated_at) < $4 \
                 AND ($5 IS NULL OR ($5 = 'open' AND s.stopped_at IS NULL) \
                     OR ($5 = 'finished' AND s.stopped_at IS NOT NULL)) \
                 AND COALESCE(s.started_at, s.stopped_at, s.updated_at) <= $6 \
                 AND (COALESCE(s.started_at, s.stopped_at, s.updated_at), s.site_id, s.transaction_uid) < ($6, $7, $8) \
                 ORDER BY COALESCE(s.started_at, s.stopped_at, s.updated_at) DESC, s.site_id DESC, \
                     s.transaction_uid DESC \
                 LIMIT $9 OFFSET $10) p \
             JOIN sessions s ON s.site_id = p.site_id AND s.transaction_uid = p.transaction_uid \
             JOIN sites ON sites.id = s.site_id \
             LEFT JOIN cdrs c ON c.id = (SELECT d.id FROM cdrs d WHERE d.site_id = s.site_id \
                 AND d.transaction_uid = s.transaction_uid AND d.kind = 'debit' \
                 AND NOT EXISTS (SELECT 1 FROM cdrs k WHERE k.credits = d.id) ORDER BY d.revision DESC LIMIT 1) \
             ORDER BY p.k DESC, p.site_id DESC, p.transaction_uid DESC"
        )
    };
}
const SQL_ALL: &str = sessions_sql!("$1 IS NULL", "$2 IS NULL");
const SQL_SITE: &str = sessions_sql!("$1 IS NULL", "s.site_id = $2");
const SQL_CUSTOMER: &str =
    sessions_sql!("s.id_tag IN (SELECT id_tag FROM customer_tokens WHERE customer_id = $1)", "$2 IS NULL");
const SQL_CUSTOMER_SITE: &str =
    sessions_sql!("s.id_tag IN (SELECT id_tag FROM customer_tokens WHERE customer_id = $1)", "s.site_id = $2");

/// Before and after every real time (SQLite compares the RFC 3339 text).
fn earliest() -> DateTime<Utc> {
    DateTime::from_timestamp(-62_135_596_800, 0).unwrap_or_default() // 0001-01-01T00:00:00Z
}
fn latest() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 0).unwrap_or_default() // 9999-12-31T23:59:59Z
}

const SESSION_COLUMNS: [Ty; 20] = [
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Int,
    Ty::Int,
    Ty::Text,
    Ty::Time,
    Ty::Time,
    Ty::Time,
    Ty::Int,
    Ty::Int,
    Ty::Int,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Int,
];

async fn fetch(
    store: &Store,
    scope: &Val,
    f: &Filter,
    after: Option<&Cursor>,
    limit: i64,
    offset: i64,
) -> Result<Vec<SessionLine>, DbError> {
    let sql = match (scope, &f.site) {
        (Val::Text(None), None) => SQL_ALL,
        (Val::Text(None), Some(_)) => SQL_SITE,
        (_, None) => SQL_CUSTOMER,
        (_, Some(_)) => SQL_CUSTOMER_SITE,
    };
    let args = [
        scope.clone(),
        Val::from(f.site.as_deref()),
        Val::from(f.start_time().unwrap_or_else(earliest)),
        Val::from(f.end_time().unwrap_or_else(latest)),
        Val::from(f.state.map(StateFilter::as_str)),
        Val::from(after.map_or_else(latest, |c| c.key)),
        Val::from(after.map_or("", |c| c.site.as_str())),
        Val::from(after.map_or("", |c| c.uid.as_str())),
        limit.into(),
        offset.into(),
    ];
    Ok(store.fetch_planned(sql, &args, &SESSION_COLUMNS).await?.iter().map(SessionLine::from_row).collect())
}

/// The sites the viewer may see, by name (for the site filter).
async fn visible_sites(store: &Store, viewer: &Viewer) -> Result<Vec<(String, String)>, DashError> {
    let rows = store
        .fetch_planned(
            concat!("SELECT id, name FROM sites WHERE ", visible_site!("sites.id"), " ORDER BY name, id"),
            &[scope(viewer)?],
            &[Ty::Text, Ty::Text],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.text(0).unwrap_or_default().to_owned(), r.text(1).unwrap_or_default().to_owned()))
        .collect())
}

/// An amount rounded to cents for the page (the CSV keeps the exact amount).
fn money(amount: &str, currency: Option<&str>) -> String {
    let shown = amount
        .parse::<Decimal>()
        .map(|d| format!("{:.2}", d.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero)))
        .unwrap_or_else(|_| amount.to_owned());
    format!("{} {}", esc(&shown), esc(currency.unwrap_or_default()))
}

fn cost_cell(l: &SessionLine) -> String {
    match (l.state(), &l.cost_incl_vat, &l.cost_excl_vat) {
        ("priced", Some(incl), _) => format!("{} <small>incl. VAT</small>", money(incl, l.currency.as_deref())),
        ("priced", None, Some(excl)) => format!("{} <small>excl. VAT</small>", money(excl, l.currency.as_deref())),
        ("credited", _, _) => "credited".to_owned(),
        ("open", _, _) => "<small>when it ends</small>".to_owned(),
        _ => "<small>not priced</small>".to_owned(),
    }
}

fn energy_cell(l: &SessionLine) -> String {
    match l.energy() {
        Some((kwh, source)) => {
            let shown = kwh.parse::<Decimal>().map(|d| format!("{:.2}", d.round_dp(2))).unwrap_or(kwh);
            let so_far = if source == EnergySource::SoFar { " <small>so far</small>" } else { "" };
            format!("{} kWh{so_far}", esc(&shown))
        }
        None => "—".to_owned(),
    }
}

fn table(lines: &[SessionLine], with_site: bool) -> String {
    if lines.is_empty() {
        return "<p class=\"empty\" id=\"no-sessions\">No sessions match.</p>".to_owned();
    }
    let mut out = format!(
        "<div class=\"scroll\"><table id=\"session-list\" class=\"stack\"><thead><tr>{}<th>Charger</th><th>Id tag</th><th>Started</th>\
         <th>Ended</th><th>Energy</th><th>Cost</th><th>State</th></tr></thead><tbody>",
        if with_site { "<th>Site</th>" } else { "" }
    );
    for l in lines {
        let site = if with_site {
            format!("<td data-label=\"Site\"><a href=\"/sites/{}\">{}</a></td>", seg(&l.site_id), esc(&l.site_name))
        } else {
            String::new()
        };
        let connector = match (l.evse, l.connector) {
            (Some(e), Some(c)) => format!(" {e}/{c}"),
            _ => String::new(),
        };
        let state = l.state();
        let class = match state {
            "open" => "busy",
            "priced" => "ok",
            _ => "",
        };
        let _ = write!(
            out,
            "<tr class=\"session\" data-tx=\"{}\" data-site=\"{}\" data-state=\"{state}\">{site}\
             <td data-label=\"Charger\">{}{connector}</td><td data-label=\"Id tag\">{}</td>\
             <td data-label=\"Started\">{}</td><td data-label=\"Ended\">{}</td>\
             <td class=\"n\" data-label=\"Energy\">{}</td><td class=\"n\" data-label=\"Cost\">{}</td>\
             <td data-label=\"State\"><span class=\"badge {class}\">{state}</span></td></tr>",
            esc(&l.transaction_uid),
            esc(&l.site_id),
            esc(&l.station),
            esc(l.id_tag.as_deref().unwrap_or("—")),
            time(l.started_at),
            time(l.stopped_at),
            energy_cell(l),
            cost_cell(l),
        );
    }
    out.push_str("</tbody></table></div>");
    out
}

async fn render_page(
    state: &DashState,
    viewer: &Viewer,
    filter: Filter,
    site: Option<(String, String)>,
) -> Result<Response, DashError> {
    let scope = scope(viewer)?;
    let offset = (filter.page - 1) * PAGE_SIZE;
    let mut lines = fetch(&state.store, &scope, &filter, None, PAGE_SIZE + 1, offset).await?;
    let more = lines.len() as i64 > PAGE_SIZE;
    lines.truncate(usize::try_from(PAGE_SIZE).unwrap_or(0));
    let (title, action, crumbs, site_select) = match &site {
        Some((id, name)) => (
            format!("Sessions · {name}"),
            format!("/sites/{}/sessions", seg(id)),
            format!(
                "<p class=\"crumbs\"><a href=\"/\">Sites</a> › <a href=\"/sites/{}\">{}</a> › Sessions</p>",
                seg(id),
                esc(name)
            ),
            String::new(),
        ),
        None => {
            let mut select = String::from("<label>Site <select name=\"site\"><option value=\"\">All sites</option>");
            for (id, name) in visible_sites(&state.store, viewer).await? {
                let selected = if filter.site.as_deref() == Some(id.as_str()) { " selected" } else { "" };
                let _ = write!(select, "<option value=\"{}\"{selected}>{}</option>", esc(&id), esc(&name));
            }
            select.push_str("</select></label>");
            ("Sessions".to_owned(), "/sessions".to_owned(), String::new(), select)
        }
    };
    let state_select = {
        let mut s = String::from("<label>State <select name=\"state\"><option value=\"\">Any</option>");
        for st in [StateFilter::Open, StateFilter::Finished] {
            let selected = if filter.state == Some(st) { " selected" } else { "" };
            let _ = write!(s, "<option value=\"{0}\"{selected}>{0}</option>", st.as_str());
        }
        s.push_str("</select></label>");
        s
    };
    let value = |d: Option<NaiveDate>| d.map(|d| d.to_string()).unwrap_or_default();
    let with_site = site.is_none();
    let mut pager = String::new();
    if filter.page > 1 {
        let _ = write!(
            pager,
            "<a rel=\"prev\" href=\"{action}?{}\">‹ Newer</a> ",
            filter.query(Some(filter.page - 1), with_site)
        );
    }
    let _ = write!(pager, "<span>Page {}</span>", filter.page);
    if more {
        let _ = write!(
            pager,
            " <a rel=\"next\" href=\"{action}?{}\">Older ›</a>",
            filter.query(Some(filter.page + 1), with_site)
        );
    }
    let csv = {
        let mut f = filter.clone();
        f.page = 1;
        let q = f.query(None, true);
        if q.is_empty() { "/sessions.csv".to_owned() } else { format!("/sessions.csv?{q}") }
    };
    let body = format!(
        "{crumbs}<h1>{}</h1><form method=\"get\" action=\"{action}\" class=\"filters\">{site_select}\
         <label>From <input type=\"date\" name=\"from\" value=\"{}\"></label>\
         <label>To <input type=\"date\" name=\"to\" value=\"{}\"></label>{state_select}\
         <button type=\"submit\">Filter</button> <a class=\"button\" id=\"csv\" href=\"{csv}\" download>Export CSV</a></form>\
         <p class=\"note\">Energy from the CDR when the session is priced, else from the meter; cost incl. VAT where \
         the tariff states it, rounded to cents here (exact in the CSV).</p>{}<p class=\"pager\">{pager}</p>",
        esc(&title),
        value(filter.from),
        value(filter.to),
        table(&lines, with_site),
    );
    render(&state.store, viewer, &title, &[], &body).await
}

/// `/sessions`.
pub async fn page(
    State(state): State<DashState>,
    viewer: Viewer,
    Query(q): Query<SessionQuery>,
) -> Result<Response, DashError> {
    let filter = Filter::parse(&q, None)?;
    if let Some(site) = &filter.site {
        check_site(&state.store, &viewer, site).await?;
    }
    render_page(&state, &viewer, filter, None).await
}

/// `/sites/{id}/sessions`.
pub async fn site_page(
    State(state): State<DashState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<SessionQuery>,
) -> Result<Response, DashError> {
    check_site(&state.store, &viewer, &id).await?;
    let filter = Filter::parse(&q, Some(&id))?;
    let name = state
        .store
        .fetch_opt("SELECT name FROM sites WHERE id = $1", &[id.as_str().into()], &[Ty::Text])
        .await?
        .and_then(|r| r.text(0).map(str::to_owned))
        .ok_or(DashError::NotFound)?;
    render_page(&state, &viewer, filter, Some((id, name))).await
}

/// The CSV header line.
pub const CSV_HEADER: &str = "site_id,site_name,transaction_uid,station,evse,connector,id_tag,started_at,stopped_at,\
state,energy_kwh,energy_source,cost_excl_vat,cost_incl_vat,currency,cdr_id,stop_reason\r\n";

/// A text field: quoted when it holds a comma, quote, CR or LF or starts or ends with a
/// space; a leading formula character defused with `'`.
fn csv_text(out: &mut String, s: &str) {
    let defused;
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        defused = format!("'{s}");
        defused.as_str()
    } else {
        s
    };
    csv_raw(out, s);
}

/// A field as is (numbers, times), quoted only if it must be.
fn csv_raw(out: &mut String, s: &str) {
    if s.contains([',', '"', '\r', '\n']) || s.starts_with(' ') || s.ends_with(' ') {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

fn csv_time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)).unwrap_or_default()
}

/// One session as a CSV line (with CRLF).
pub fn csv_line(out: &mut String, l: &SessionLine) {
    let energy = l.energy();
    let priced = l.state() == "priced";
    let int = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    let fields: [(bool, String); 17] = [
        (true, l.site_id.clone()),
        (true, l.site_name.clone()),
        (true, l.transaction_uid.clone()),
        (true, l.station.clone()),
        (false, int(l.evse)),
        (false, int(l.connector)),
        (true, l.id_tag.clone().unwrap_or_default()),
        (false, csv_time(l.started_at)),
        (false, csv_time(l.stopped_at)),
        (false, l.state().to_owned()),
        (false, energy.as_ref().map(|(k, _)| k.clone()).unwrap_or_default()),
        (false, energy.map(|(_, s)| s.as_str().to_owned()).unwrap_or_default()),
        (false, if priced { l.cost_excl_vat.clone().unwrap_or_default() } else { String::new() }),
        (false, if priced { l.cost_incl_vat.clone().unwrap_or_default() } else { String::new() }),
        (true, if priced { l.currency.clone().unwrap_or_default() } else { String::new() }),
        (true, l.cdr_id.clone().unwrap_or_default()),
        (true, l.stop_reason.clone().unwrap_or_default()),
    ];
    for (i, (text, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if *text {
            csv_text(out, value);
        } else {
            csv_raw(out, value);
        }
    }
    out.push_str("\r\n");
}

fn cursor_after(lines: &[SessionLine]) -> Option<Cursor> {
    lines
        .last()
        .and_then(|l| Some(Cursor { key: l.sort_key?, site: l.site_id.clone(), uid: l.transaction_uid.clone() }))
}

/// `/sessions.csv`: the sessions of the filters (no `page`: every one), streamed.
pub async fn csv(
    State(state): State<DashState>,
    viewer: Viewer,
    Query(q): Query<SessionQuery>,
) -> Result<Response, DashError> {
    if q.page.is_some() {
        return Err(DashError::BadRequest("the CSV holds every session of the filters: leave out page"));
    }
    let filter = Filter::parse(&q, None)?;
    if let Some(site) = &filter.site {
        check_site(&state.store, &viewer, site).await?;
    }
    let scope = scope(&viewer)?;
    // The first chunk before the answer, so that a database error is still a 500.
    let first = fetch(&state.store, &scope, &filter, None, CSV_CHUNK, 0).await?;
    let mut head = String::from(CSV_HEADER);
    for l in &first {
        csv_line(&mut head, l);
    }
    let next = if first.len() as i64 == CSV_CHUNK { cursor_after(&first) } else { None };
    let store = state.store.clone();
    let rest = futures_util::stream::unfold(next, move |cursor| {
        let (store, scope, filter) = (store.clone(), scope.clone(), filter.clone());
        async move {
            let cursor = cursor?;
            match fetch(&store, &scope, &filter, Some(&cursor), CSV_CHUNK, 0).await {
                Ok(lines) => {
                    let mut out = String::new();
                    for l in &lines {
                        csv_line(&mut out, l);
                    }
                    let next = if lines.len() as i64 == CSV_CHUNK { cursor_after(&lines) } else { None };
                    Some((Ok::<Bytes, std::io::Error>(Bytes::from(out)), next))
                }
                Err(e) => {
                    // The status is sent already: cut the body short so the download fails
                    // rather than ending silently incomplete.
                    tracing::error!(error = %e, "dashboard: CSV export stopped by a database error");
                    Some((Err(std::io::Error::other("database error")), None))
                }
            }
        }
    });
    let body = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(Bytes::from(head)) }).chain(rest);
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    let name = format!("attachment; filename=\"sessions-{}.csv\"", Utc::now().format("%Y%m%d-%H%M%S"));
    if let Ok(v) = HeaderValue::from_str(&name) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> SessionQuery {
        let get = |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned());
        SessionQuery { site: get("site"), from: get("from"), to: get("to"), state: get("state"), page: get("page") }
    }

    fn reason(r: Result<Filter, DashError>) -> String {
        match r {
            Err(DashError::Invalid(code, why)) => {
                assert_eq!(code, StatusCode::BAD_REQUEST);
                why
            }
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn filters_parse_with_empty_form_fields_as_absent() {
        let f = Filter::parse(&q(&[("site", ""), ("from", "2026-11-01"), ("to", "2026-11-30"), ("state", "")]), None)
            .expect("valid");
        assert_eq!(f.site, None);
        assert_eq!(f.page, 1);
        assert_eq!(f.start_time().map(|t| t.to_rfc3339()), Some("2026-11-01T00:00:00+00:00".to_owned()));
        assert_eq!(
            f.end_time().map(|t| t.to_rfc3339()),
            Some("2026-12-01T00:00:00+00:00".to_owned()),
            "to is included"
        );
        assert_eq!(f.query(Some(2), true), "from=2026-11-01&amp;to=2026-11-30&amp;page=2");
    }

    #[test]
    fn bad_filters_say_why() {
        assert!(
            reason(Filter::parse(&q(&[("from", "21.11.2026")]), None)).contains("from \"21.11.2026\" is not a date")
        );
        assert!(reason(Filter::parse(&q(&[("from", "2026-11-02"), ("to", "2026-11-01")]), None)).contains("after"));
        assert!(reason(Filter::parse(&q(&[("state", "lost")]), None)).contains("open or finished"));
        assert!(reason(Filter::parse(&q(&[("page", "0")]), None)).contains("page must be a whole number"));
        assert!(reason(Filter::parse(&q(&[("page", "2x")]), None)).contains("page must be"));
        assert!(reason(Filter::parse(&q(&[("site", "b")]), Some("a"))).contains("does not match"));
        assert_eq!(Filter::parse(&q(&[]), Some("a")).expect("fixed site").site.as_deref(), Some("a"));
    }

    fn line() -> SessionLine {
        SessionLine {
            site_id: "depot".into(),
            site_name: "Depot, \"North\"".into(),
            transaction_uid: "tx-1".into(),
            station: "=CP-1".into(),
            evse: Some(1),
            connector: Some(1),
            id_tag: Some("TAG".into()),
            started_at: Some(DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()),
            stopped_at: Some(DateTime::from_timestamp(1_800_003_600, 0).unwrap_or_default()),
            sort_key: None,
            meter_start_wh: Some(1000),
            last_energy_wh: Some(13_345),
            energy_wh: Some(12_345),
            stop_reason: Some("Local".into()),
            cdr_id: Some("cdr-1".into()),
            cdr_energy_kwh: Some("12.345".into()),
            cost_excl_vat: Some("3.7035".into()),
            cost_incl_vat: Some("4.4442".into()),
            currency: Some("EUR".into()),
            cdr_count: 1,
        }
    }

    #[test]
    fn csv_quotes_and_defuses_but_keeps_numbers_exact() {
        let mut out = String::new();
        csv_line(&mut out, &line());
        assert_eq!(
            out,
            "depot,\"Depot, \"\"North\"\"\",tx-1,'=CP-1,1,1,TAG,2027-01-15T08:00:00Z,2027-01-15T09:00:00Z,priced,\
             12.345,cdr,3.7035,4.4442,EUR,cdr-1,Local\r\n"
        );
        assert_eq!(CSV_HEADER.split(',').count(), 17);
    }

    #[test]
    fn energy_and_state_follow_what_is_known() {
        let mut l = line();
        assert_eq!(l.energy(), Some(("12.345".into(), EnergySource::Cdr)));
        l.cdr_id = None;
        l.cdr_energy_kwh = None;
        assert_eq!(l.state(), "credited");
        assert_eq!(l.energy(), Some(("12.345".into(), EnergySource::MeterStop)));
        l.cdr_count = 0;
        assert_eq!(l.state(), "unpriced");
        l.stopped_at = None;
        assert_eq!(l.state(), "open");
        assert_eq!(l.energy(), Some(("12.345".into(), EnergySource::SoFar)));
        l.last_energy_wh = Some(500);
        assert_eq!(l.energy(), None, "a register below the start is no energy");
        assert_eq!(wh_as_kwh(12_000), "12");
        assert_eq!(wh_as_kwh(5), "0.005");
    }
}
