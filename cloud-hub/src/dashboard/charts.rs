//! Energy and utilisation charts of a site or of the fleet: `/charts` (the page) and
//! `/charts.json` (its data, which the page fetches and draws with the vendored uPlot,
//! `static/uplot.min.js`, MIT, served by the hub; the page also lists the figures as a
//! table, which is what a browser without script shows).
//!
//! - **Range** (`range`): `day` (24 hours of the day `end`), `week` (the 7 days up to
//!   `end`) or `month` (the 30 days up to `end`); `end` is a date `YYYY-MM-DD`, today by
//!   default. Days and hours are UTC (the hub does not know every site's time zone).
//!   Buckets are hours for `day`, days otherwise.
//! - **Energy** (kWh per bucket): each session's register readings the hub keeps (meter
//!   start, the latest reading when it lies within the session, meter stop) joined by
//!   straight lines, and the rise of that line within the bucket. A session whose meter
//!   stop is below its start is left out. Sessions that start and stop within one bucket
//!   (most of them) are summed by the database; only the others are read one by one.
//! - **Utilisation** (% per bucket): the time charging points (EVSEs that reported a
//!   status, OCPP 1.6 connectors) spent in a session, over the time they were there
//!   (for the current bucket, up to now; a bucket in the future has none).
//! - **Scope**: `site` (a site id) or the whole fleet the viewer may see; a fleet manager
//!   sees their customer's sessions only (so utilisation is their share of the charging
//!   points' time at the sites they use).

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::Serialize;
use std::fmt::Write as _;

use super::pages::{check_site, esc, render, scope, seg};
use super::{DashError, DashState, Viewer};
use crate::db::{Store, Ty, Val};

const UPLOT_JS: &str = include_str!("static/uplot.min.js");
const UPLOT_CSS: &str = include_str!("static/uplot.min.css");

pub async fn uplot_js() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "max-age=86400")], UPLOT_JS)
        .into_response()
}

pub async fn uplot_css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=86400")], UPLOT_CSS)
        .into_response()
}

/// The period a chart covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    Day,
    Week,
    Month,
}

impl Range {
    fn parse(v: Option<&str>) -> Result<Range, DashError> {
        match v {
            None | Some("week") => Ok(Range::Week),
            Some("day") => Ok(Range::Day),
            Some("month") => Ok(Range::Month),
            Some(other) => Err(DashError::Invalid(
                StatusCode::BAD_REQUEST,
                format!("range must be day, week or month, not {other:?}"),
            )),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Range::Day => "day",
            Range::Week => "week",
            Range::Month => "month",
        }
    }

    /// The first bucket's start, the bucket length and the number of buckets.
    fn buckets(self, end: NaiveDate) -> (DateTime<Utc>, TimeDelta, i64) {
        let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or_default();
        match self {
            Range::Day => (midnight(end), TimeDelta::hours(1), 24),
            Range::Week => (midnight(end) - TimeDelta::days(6), TimeDelta::days(1), 7),
            Range::Month => (midnight(end) - TimeDelta::days(29), TimeDelta::days(1), 30),
        }
    }
}

/// A session as the charts need it.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub start: DateTime<Utc>,
    pub stop: Option<DateTime<Utc>>,
    pub meter_start_wh: Option<i64>,
    /// The latest register reading and its time.
    pub last: Option<(DateTime<Utc>, i64)>,
    pub meter_stop_wh: Option<i64>,
}

/// Register readings (time, Wh) in time order.
type Readings = Vec<(DateTime<Utc>, i64)>;

impl Span {
    /// The register readings in time order: the meter start, the latest reading when it
    /// lies within the session in time and value, the meter stop. `None` when there are
    /// not two, or the stop is below the start.
    fn readings(&self) -> Option<Readings> {
        let start = self.meter_start_wh?;
        let stop = match (self.stop, self.meter_stop_wh) {
            (Some(at), Some(wh)) if wh >= start && at >= self.start => Some((at, wh)),
            (Some(_), Some(_)) => return None,
            _ => None,
        };
        let mut points = vec![(self.start, start)];
        if let Some((at, wh)) = self.last
            && at > self.start
            && wh >= start
            && stop.is_none_or(|(stop_at, stop_wh)| at < stop_at && wh <= stop_wh)
            && self.stop.is_none_or(|stop_at| at < stop_at)
        {
            points.push((at, wh));
        }
        points.extend(stop);
        (points.len() >= 2).then_some(points)
    }
}

/// Sessions that the database summed up per bucket: each finished within the bucket it
/// started in, with its stop not below its start (the rest come one by one as [`Span`]s).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summed {
    pub bucket: i64,
    pub sessions: i64,
    /// Meter stop minus meter start, summed.
    pub wh: i64,
    /// Stop minus start, summed.
    pub busy_ms: f64,
}

/// The register at `t`: straight lines between readings, flat before and after.
fn register_at(points: &[(DateTime<Utc>, i64)], t: DateTime<Utc>) -> f64 {
    let Some(first) = points.first() else { return 0.0 };
    if t <= first.0 {
        return first.1 as f64;
    }
    for w in points.windows(2) {
        let ((t0, v0), (t1, v1)) = (w[0], w[1]);
        if t <= t1 {
            let span = (t1 - t0).num_milliseconds();
            if span <= 0 {
                return v1 as f64;
            }
            let part = (t - t0).num_milliseconds() as f64 / span as f64;
            return v0 as f64 + (v1 - v0) as f64 * part;
        }
    }
    points.last().map_or(0.0, |p| p.1 as f64)
}

/// One bucket of a chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub start: DateTime<Utc>,
    pub energy_kwh: f64,
    /// `None` for a bucket that has not begun, or without charging points.
    pub utilisation_pct: Option<f64>,
}

fn overlap(a: DateTime<Utc>, b: DateTime<Utc>, c: DateTime<Utc>, d: DateTime<Utc>) -> TimeDelta {
    let (start, end) = (a.max(c), b.min(d));
    if end > start { end - start } else { TimeDelta::zero() }
}

/// The chart's buckets from the sessions (`summed` per bucket by the database, the rest
/// as `spans`), `charging_points` and the time `now`. Each span touches only the buckets
/// its readings and its time overlap.
pub fn compute(
    first: DateTime<Utc>,
    step: TimeDelta,
    count: i64,
    spans: &[Span],
    summed: &[Summed],
    charging_points: i64,
    now: DateTime<Utc>,
) -> Vec<Point> {
    let n = usize::try_from(count).unwrap_or(0);
    let step_ms = step.num_milliseconds().max(1);
    let bucket = |i: usize| first + step * i32::try_from(i).unwrap_or(i32::MAX);
    // The buckets that [from, to] overlaps, if any.
    let range = |from: DateTime<Utc>, to: DateTime<Utc>| {
        let index = |t: DateTime<Utc>| (t - first).num_milliseconds().div_euclid(step_ms);
        let (a, b) = (index(from).max(0), index(to).min(count - 1));
        (a <= b).then(|| usize::try_from(a).unwrap_or(0)..=usize::try_from(b).unwrap_or(0))
    };
    let mut wh = vec![0.0_f64; n];
    let mut busy_ms = vec![0.0_f64; n];
    for s in summed {
        if let Some(i) = usize::try_from(s.bucket).ok().filter(|i| *i < n) {
            wh[i] += s.wh as f64;
            busy_ms[i] += s.busy_ms;
        }
    }
    for span in spans {
        if let Some(points) = span.readings()
            && let (Some(a), Some(b)) = (points.first(), points.last())
            && let Some(buckets) = range(a.0, b.0)
        {
            for i in buckets {
                let (start, end) = (bucket(i), bucket(i + 1));
                wh[i] += (register_at(&points, end) - register_at(&points, start)).max(0.0);
            }
        }
        let until = span.stop.unwrap_or(now).min(now);
        if let Some(buckets) = range(span.start, until) {
            for i in buckets {
                busy_ms[i] += overlap(bucket(i), bucket(i + 1), span.start, until).num_milliseconds() as f64;
            }
        }
    }
    (0..n)
        .map(|i| {
            let (start, end) = (bucket(i), bucket(i + 1));
            let elapsed = overlap(start, end, start, now);
            let utilisation_pct = (charging_points > 0 && elapsed > TimeDelta::zero()).then(|| {
                let pct = busy_ms[i] * 100.0 / (elapsed.num_milliseconds() as f64 * charging_points as f64);
                (pct.min(100.0) * 10.0).round() / 10.0
            });
            Point { start, energy_kwh: wh[i].round() / 1000.0, utilisation_pct }
        })
        .collect()
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChartQuery {
    site: Option<String>,
    range: Option<String>,
    end: Option<String>,
}

/// The data of `/charts.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ChartData {
    pub site: Option<String>,
    pub range: &'static str,
    /// `hour` or `day`.
    pub bucket: &'static str,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub charging_points: i64,
    pub sessions: usize,
    pub total_energy_kwh: f64,
    pub points: Vec<Point>,
}

struct Checked {
    site: Option<String>,
    range: Range,
    end: NaiveDate,
}

async fn check(store: &Store, viewer: &Viewer, q: &ChartQuery) -> Result<Checked, DashError> {
    let field = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
    let site = field(&q.site);
    if let Some(site) = &site {
        check_site(store, viewer, site).await?;
    }
    let range = Range::parse(field(&q.range).as_deref())?;
    let end = match field(&q.end) {
        None => Utc::now().date_naive(),
        Some(e) => NaiveDate::parse_from_str(&e, "%Y-%m-%d")
            .map_err(|_| DashError::Invalid(StatusCode::BAD_REQUEST, format!("end {e:?} is not a date YYYY-MM-DD")))?,
    };
    Ok(Checked { site, range, end })
}

/// When the database sums a session up per bucket (`$3` the first bucket's start, `$4`
/// the end, `$5` the bucket length in ms, `$6` now, `$7` the bucket as a prefix length of
/// an RFC 3339 time: 10 for days, 13 for hours): it started and stopped in the same
/// bucket, before now, with a meter stop not below its start. As 1 or 0 (never NULL), so
/// that the sessions summed and those listed one by one are exact complements. `$same`
/// says "the same bucket" in the database's own terms.
macro_rules! summed_case {
    ($same:literal) => {
        concat!(
            "CASE WHEN s.started_at >= $3 AND s.stopped_at IS NOT NULL AND s.stopped_at < $4 \
                 AND s.stopped_at <= $6 AND s.stopped_at >= s.started_at AND s.meter_start_wh IS NOT NULL \
                 AND s.meter_stop_wh >= s.meter_start_wh AND ",
            $same,
            " THEN 1 ELSE 0 END"
        )
    };
}

/// The chart queries of one backend and scope: `SUMMED` (per bucket: its index, sessions,
/// Wh, ms) and `SPANS` (every other session that overlaps `[$3, $4)`: started in it, or
/// before it and stopped in it or later or still open; three index range scans). The date
/// arithmetic is the backend's: `$same` (same bucket), `$bucket` (a group's bucket index),
/// `$group` (what to group by), `$ms` (a session's length in ms).
macro_rules! chart_sql {
    ($site:literal, $same:literal, $bucket:literal, $group:literal, $ms:literal) => {
        (
            concat!(
                "SELECT ",
                $bucket,
                ", COUNT(*), CAST(SUM(s.meter_stop_wh - s.meter_start_wh) AS BIGINT), CAST(SUM(",
                $ms,
                ") AS DOUBLE PRECISION) FROM sessions s ",
                chart_sql!(@scope $site),
                " AND s.started_at >= $3 AND s.started_at < $4 AND ",
                summed_case!($same),
                " = 1 GROUP BY ",
                $group
            ),
            concat!(
                chart_sql!(@spans $site, $same, "s.started_at >= $3 AND s.started_at < $4"),
                " UNION ALL ",
                chart_sql!(@spans $site, $same, "s.started_at < $3 AND s.stopped_at > $3"),
                " UNION ALL ",
                chart_sql!(@spans $site, $same, "s.started_at < $3 AND s.stopped_at IS NULL")
            ),
        )
    };
    (@scope $site:literal) => {
        concat!(
            "WHERE ($1 IS NULL OR s.id_tag IN (SELECT id_tag FROM customer_tokens WHERE customer_id = $1)) \
             AND $7 > 0 AND ",
            $site
        )
    };
    (@spans $site:literal, $same:literal, $when:literal) => {
        concat!(
            "SELECT s.started_at, s.stopped_at, s.meter_start_wh, s.last_energy_at, s.last_energy_wh, \
                 s.meter_stop_wh FROM sessions s ",
            chart_sql!(@scope $site),
            " AND ",
            $when,
            " AND ",
            summed_case!($same),
            " = 0"
        )
    };
}

/// SQLite keeps times as RFC 3339 text in UTC (`2026-11-21T12:01:00+00:00`, as sqlx writes
/// a `DateTime<Utc>`), so a day or an hour is a prefix of the text (cheap, where parsing
/// every time with `julianday` is not), a length within one day the difference of the
/// seconds of the day (whole seconds), and only the 30 groups' indexes go through
/// `julianday`.
macro_rules! sqlite_chart_sql {
    ($site:literal) => {
        chart_sql!(
            $site,
            "substr(s.started_at, 1, $7) = substr(s.stopped_at, 1, $7)",
            "CAST(ROUND((julianday(MIN(s.started_at)) - julianday($3)) * 86400000.0) AS INTEGER) / $5",
            "substr(s.started_at, 1, $7)",
            "((CAST(substr(s.stopped_at, 12, 2) AS INTEGER) - CAST(substr(s.started_at, 12, 2) AS INTEGER)) * 3600 \
             + (CAST(substr(s.stopped_at, 15, 2) AS INTEGER) - CAST(substr(s.started_at, 15, 2) AS INTEGER)) * 60 \
             + CAST(substr(s.stopped_at, 18, 2) AS INTEGER) - CAST(substr(s.started_at, 18, 2) AS INTEGER)) * 1000.0"
        )
    };
}

/// PostgreSQL: `timestamptz` differences as double-precision epoch seconds.
macro_rules! postgres_chart_sql {
    ($site:literal) => {
        chart_sql!(
            $site,
            "FLOOR(date_part('epoch', s.started_at - $3) * 1000.0 / $5) \
             = FLOOR(date_part('epoch', s.stopped_at - $3) * 1000.0 / $5)",
            "CAST(FLOOR(date_part('epoch', s.started_at - $3) * 1000.0 / $5) AS BIGINT)",
            "1",
            "date_part('epoch', s.stopped_at - s.started_at) * 1000.0"
        )
    };
}

/// `(SUMMED, SPANS)` per backend and scope.
const SQLITE_FLEET: (&str, &str) = sqlite_chart_sql!("$2 IS NULL");
const SQLITE_SITE: (&str, &str) = sqlite_chart_sql!("s.site_id = $2");
const POSTGRES_FLEET: (&str, &str) = postgres_chart_sql!("$2 IS NULL");
const POSTGRES_SITE: (&str, &str) = postgres_chart_sql!("s.site_id = $2");

async fn chart_data(store: &Store, viewer: &Viewer, c: &Checked) -> Result<ChartData, DashError> {
    let (first, step, count) = c.range.buckets(c.end);
    let to = first + step * i32::try_from(count).unwrap_or(0);
    let (summed_sql, spans_sql) = match (store.backend(), c.site.is_some()) {
        ("postgres", false) => POSTGRES_FLEET,
        ("postgres", true) => POSTGRES_SITE,
        (_, false) => SQLITE_FLEET,
        (_, true) => SQLITE_SITE,
    };
    let now = Utc::now();
    let args = [
        scope(viewer)?,
        Val::from(c.site.as_deref()),
        first.into(),
        to.into(),
        step.num_milliseconds().into(),
        now.into(),
        // The length of an RFC 3339 prefix naming the bucket: `2026-11-21T12` or `2026-11-21`.
        (if step < TimeDelta::days(1) { 13_i64 } else { 10 }).into(),
    ];
    let summed: Vec<Summed> = store
        .fetch_planned(summed_sql, &args, &[Ty::Int, Ty::Int, Ty::Int, Ty::Real])
        .await?
        .iter()
        .map(|r| Summed {
            bucket: r.int(0).unwrap_or(-1),
            sessions: r.int(1).unwrap_or(0),
            wh: r.int(2).unwrap_or(0),
            busy_ms: r.real(3).unwrap_or(0.0),
        })
        .collect();
    let rows =
        store.fetch_planned(spans_sql, &args, &[Ty::Time, Ty::Time, Ty::Int, Ty::Time, Ty::Int, Ty::Int]).await?;
    let spans: Vec<Span> = rows
        .iter()
        .filter_map(|r| {
            Some(Span {
                start: r.time(0)?,
                stop: r.time(1),
                meter_start_wh: r.int(2),
                last: r.time(3).zip(r.int(4)),
                meter_stop_wh: r.int(5),
            })
        })
        .collect();
    let charging_points = store
        .fetch_opt_planned(
            concat!(
                "SELECT COUNT(*) FROM (SELECT DISTINCT k.site_id, k.station, k.evse FROM connectors k \
                 WHERE k.evse > 0 AND ($2 IS NULL OR k.site_id = $2) AND ",
                visible_site!("k.site_id"),
                ") points"
            ),
            &[scope(viewer)?, Val::from(c.site.as_deref())],
            &[Ty::Int],
        )
        .await?
        .and_then(|r| r.int(0))
        .unwrap_or(0);
    let points = compute(first, step, count, &spans, &summed, charging_points, now);
    let total = points.iter().map(|p| p.energy_kwh).sum::<f64>();
    Ok(ChartData {
        site: c.site.clone(),
        range: c.range.as_str(),
        bucket: if c.range == Range::Day { "hour" } else { "day" },
        from: first,
        to,
        charging_points,
        sessions: spans.len() + summed.iter().map(|s| usize::try_from(s.sessions).unwrap_or(0)).sum::<usize>(),
        total_energy_kwh: (total * 1000.0).round() / 1000.0,
        points,
    })
}

/// `/charts.json`.
pub async fn data(
    State(state): State<DashState>,
    viewer: Viewer,
    Query(q): Query<ChartQuery>,
) -> Result<Response, DashError> {
    let checked = check(&state.store, &viewer, &q).await?;
    let data = chart_data(&state.store, &viewer, &checked).await?;
    let mut response = axum::Json(data).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `/charts`.
pub async fn page(
    State(state): State<DashState>,
    viewer: Viewer,
    Query(q): Query<ChartQuery>,
) -> Result<Response, DashError> {
    let checked = check(&state.store, &viewer, &q).await?;
    let data = chart_data(&state.store, &viewer, &checked).await?;
    let sites = state
        .store
        .fetch_planned(
            concat!("SELECT id, name FROM sites WHERE ", visible_site!("sites.id"), " ORDER BY name, id"),
            &[scope(&viewer)?],
            &[Ty::Text, Ty::Text],
        )
        .await?;
    let mut form = String::from(
        "<form method=\"get\" action=\"/charts\" class=\"filters\"><label>Scope <select name=\"site\">\
         <option value=\"\">Whole fleet</option>",
    );
    let mut title = "Charts · fleet".to_owned();
    for r in &sites {
        let id = r.text(0).unwrap_or_default();
        let name = r.text(1).unwrap_or(id);
        let selected = if checked.site.as_deref() == Some(id) {
            title = format!("Charts · {name}");
            " selected"
        } else {
            ""
        };
        let _ = write!(form, "<option value=\"{}\"{selected}>{}</option>", esc(id), esc(name));
    }
    form.push_str("</select></label><label>Range <select name=\"range\">");
    for r in [Range::Day, Range::Week, Range::Month] {
        let selected = if r == checked.range { " selected" } else { "" };
        let _ = write!(form, "<option value=\"{0}\"{selected}>{0}</option>", r.as_str());
    }
    let _ = write!(
        form,
        "</select></label><label>Up to <input type=\"date\" name=\"end\" value=\"{}\"></label>\
         <button type=\"submit\">Show</button></form>",
        checked.end
    );
    let mut src = format!("/charts.json?range={}&amp;end={}", checked.range.as_str(), checked.end);
    if let Some(site) = &checked.site {
        let _ = write!(src, "&amp;site={}", seg(site));
    }
    let label = |p: &Point| {
        if data.bucket == "hour" { p.start.format("%H:00").to_string() } else { p.start.format("%a %d %b").to_string() }
    };
    let mut table = String::from(
        "<div class=\"scroll\"><table id=\"chart-table\"><thead><tr><th>From (UTC)</th><th class=\"n\">Energy</th>\
         <th class=\"n\">Utilisation</th></tr></thead><tbody>",
    );
    for p in &data.points {
        let _ = write!(
            table,
            "<tr data-start=\"{}\"><td>{}</td><td class=\"n\">{:.3} kWh</td><td class=\"n\">{}</td></tr>",
            p.start.to_rfc3339(),
            label(p),
            p.energy_kwh,
            p.utilisation_pct.map(|u| format!("{u:.1} %")).unwrap_or_else(|| "—".to_owned())
        );
    }
    table.push_str("</tbody></table></div>");
    let body = format!(
        "<h1>{}</h1>{form}<p id=\"chart-summary\">{} to {} (UTC) · {:.3} kWh in {} session{} · {} charging \
         point{}</p><div id=\"charts\" data-src=\"{src}\"><figure><figcaption>Energy per {} (kWh)</figcaption>\
         <div class=\"chart\" id=\"chart-energy\"></div></figure><figure><figcaption>Utilisation per {} \
         (% of charging-point time in a session)</figcaption><div class=\"chart\" id=\"chart-utilisation\"></div>\
         </figure></div><details><summary>Figures</summary>{table}</details>",
        esc(&title),
        data.from.format("%Y-%m-%d %H:%M"),
        data.to.format("%Y-%m-%d %H:%M"),
        data.total_energy_kwh,
        data.sessions,
        if data.sessions == 1 { "" } else { "s" },
        data.charging_points,
        if data.charging_points == 1 { "" } else { "s" },
        data.bucket,
        data.bucket,
    );
    render(&state.store, &viewer, &title, &["uplot.min.css", "uplot.min.js"], &body).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0).single().unwrap_or_default()
    }

    #[test]
    fn a_session_across_midnight_splits_its_energy_and_time() {
        // 22:00 to 02:00, 40 kWh: 20 kWh and 2 h on each day.
        let s = Span {
            start: at(20, 22),
            stop: Some(at(21, 2)),
            meter_start_wh: Some(1_000),
            last: None,
            meter_stop_wh: Some(41_000),
        };
        let points = compute(at(20, 0), TimeDelta::days(1), 2, &[s], &[], 2, at(25, 0));
        assert_eq!(points.iter().map(|p| p.energy_kwh).collect::<Vec<_>>(), [20.0, 20.0]);
        // 2 h of 2 x 24 h.
        assert_eq!(points[0].utilisation_pct, Some(4.2));
        assert_eq!(points[1].utilisation_pct, Some(4.2));
    }

    #[test]
    fn an_open_session_counts_up_to_now_and_its_latest_reading() {
        let s = Span {
            start: at(21, 10),
            stop: None,
            meter_start_wh: Some(0),
            last: Some((at(21, 12), 6_000)),
            meter_stop_wh: None,
        };
        // Now is 14:00: hourly buckets of the day.
        let points = compute(at(21, 0), TimeDelta::hours(1), 24, &[s], &[], 1, at(21, 14));
        assert_eq!(points[10].energy_kwh, 3.0);
        assert_eq!(points[11].energy_kwh, 3.0);
        assert_eq!(points[12].energy_kwh, 0.0, "nothing known after the latest reading");
        assert_eq!(points[13].utilisation_pct, Some(100.0));
        assert_eq!(points[9].utilisation_pct, Some(0.0));
        assert_eq!(points[14].utilisation_pct, None, "the future has no utilisation");
    }

    #[test]
    fn readings_that_go_down_are_left_out() {
        let s = Span {
            start: at(21, 10),
            stop: Some(at(21, 11)),
            meter_start_wh: Some(9_000),
            last: None,
            meter_stop_wh: Some(1_000),
        };
        let points = compute(at(21, 0), TimeDelta::days(1), 1, &[s], &[], 0, at(22, 0));
        assert_eq!(points[0].energy_kwh, 0.0);
        assert_eq!(points[0].utilisation_pct, None, "no charging points");
    }

    #[test]
    fn a_latest_reading_outside_the_session_is_ignored_not_the_session() {
        let s = Span {
            start: at(21, 10),
            stop: Some(at(21, 12)),
            meter_start_wh: Some(0),
            last: Some((at(21, 11), 9_000)),
            meter_stop_wh: Some(2_000),
        };
        let points = compute(at(21, 0), TimeDelta::hours(1), 24, &[s], &[], 1, at(22, 0));
        assert_eq!((points[10].energy_kwh, points[11].energy_kwh), (1.0, 1.0), "a straight line from start to stop");
        let summed = Summed { bucket: 3, sessions: 2, wh: 1_500, busy_ms: 1_800_000.0 };
        let points = compute(at(21, 0), TimeDelta::hours(1), 24, &[], &[summed], 1, at(22, 0));
        assert_eq!((points[3].energy_kwh, points[3].utilisation_pct), (1.5, Some(50.0)));
    }

    #[test]
    fn ranges_end_on_the_given_day() {
        let end = NaiveDate::from_ymd_opt(2026, 11, 21).unwrap_or_default();
        assert_eq!(Range::Week.buckets(end), (at(15, 0), TimeDelta::days(1), 7));
        assert_eq!(Range::Day.buckets(end), (at(21, 0), TimeDelta::hours(1), 24));
        assert_eq!(
            Range::Month.buckets(end).0,
            Utc.with_ymd_and_hms(2026, 10, 23, 0, 0, 0).single().unwrap_or_default()
        );
        assert!(Range::parse(Some("year")).is_err());
    }
}
