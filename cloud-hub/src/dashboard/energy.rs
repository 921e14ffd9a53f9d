//! A site's power per phase against every limit, and its fail-safe state, from the
//! `site_energy` reports its edge sends (see `shared-model/SYNC.md`): ingest keeps the
//! newest per site and an hour of site totals (schema 10), the site page renders them
//! (live with the rest of the page, over its event stream), and the fleet API serves the
//! newest at `GET /api/v1/sites/{site}/energy`.
//!
//! The site page shows, per circuit reported (the grid connection first), one row per
//! phase L1 / L2 / L3: the measured current as a bar against the tightest limit on that
//! phase, what the balancer allocated, and every limit's value, the tightest marked; then
//! the total power against the power limits, a chart of the last hour's site power, and a
//! banner while the site is in fail-safe. Everything is markup plus the dashboard's own
//! stylesheet (`<meter>` bars, an SVG polyline): no inline style or script, as the CSP
//! demands.

use chrono::{DateTime, Utc};
use shared_model::energy::{CircuitEnergy, SiteEnergyReport};
use std::fmt::Write as _;

use super::pages::{esc, time};
use crate::db::{DbError, Row, Store, Tx, Ty};

/// How much of the series ingest keeps per site.
const SERIES_KEEP: chrono::Duration = chrono::Duration::hours(1);

/// The grid connection: the circuit without a parent (else the first).
fn root(report: &SiteEnergyReport) -> Option<&CircuitEnergy> {
    report.circuits.iter().find(|c| c.parent.is_none()).or_else(|| report.circuits.first())
}

/// A circuit's total power: the meter's total, else the sum of its phases.
fn total_w(c: &CircuitEnergy) -> Option<f64> {
    c.total_power_w.or_else(|| {
        let phases: Vec<f64> = c.power_w.iter().flatten().copied().collect();
        (!phases.is_empty()).then(|| phases.iter().sum())
    })
}

/// Stores a report (inside ingest's transaction): the newest per site (an older report
/// applied later does not replace it) and a point of the series.
pub(crate) async fn ingest(
    tx: &mut Tx,
    site: &str,
    seq: u64,
    report: &SiteEnergyReport,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    let payload = serde_json::to_value(report).unwrap_or(serde_json::Value::Null);
    let seq = i64::try_from(seq).unwrap_or(i64::MAX);
    tx.exec(
        "INSERT INTO site_energy (site_id, seq, at, fail_safe, report, received_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (site_id) DO UPDATE SET seq = excluded.seq, at = excluded.at, fail_safe = excluded.fail_safe, \
             report = excluded.report, received_at = excluded.received_at \
         WHERE site_energy.at <= excluded.at",
        &[site.into(), seq.into(), report.at.into(), report.fail_safe.active.into(), payload.into(), now.into()],
    )
    .await?;
    let (phases, power) = match root(report) {
        Some(c) => (c.current_a, total_w(c)),
        None => ([None; 3], None),
    };
    tx.exec(
        "INSERT INTO site_energy_series (site_id, at, l1_a, l2_a, l3_a, power_w, allocated_a) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (site_id, at) DO NOTHING",
        &[
            site.into(),
            report.at.into(),
            phases[0].into(),
            phases[1].into(),
            phases[2].into(),
            power.into(),
            report.allocated_a.iter().sum::<f64>().into(),
        ],
    )
    .await?;
    tx.exec(
        "DELETE FROM site_energy_series WHERE site_id = $1 AND at < $2",
        &[site.into(), (report.at - SERIES_KEEP).into()],
    )
    .await?;
    Ok(())
}

/// The newest report of `site` with when it arrived (`None`: it never reported).
pub async fn latest(store: &Store, site: &str) -> Result<Option<(SiteEnergyReport, DateTime<Utc>)>, DbError> {
    let row = store
        .fetch_opt(
            "SELECT report, received_at FROM site_energy WHERE site_id = $1",
            &[site.into()],
            &[Ty::Json, Ty::Time],
        )
        .await?;
    Ok(row.and_then(|r| {
        let report = serde_json::from_value::<SiteEnergyReport>(r.json(0)?.clone())
            .map_err(|e| tracing::warn!(site, error = %e, "a stored site energy report does not parse"))
            .ok()?;
        let received_at = r.time(1).unwrap_or(report.at);
        Some((report, received_at))
    }))
}

/// The series of `site`, oldest first: (time, power W, L1, L2, L3 A).
async fn series(store: &Store, site: &str) -> Result<Vec<Row>, DbError> {
    store
        .fetch(
            "SELECT at, power_w, l1_a, l2_a, l3_a FROM site_energy_series WHERE site_id = $1 ORDER BY at LIMIT 2000",
            &[site.into()],
            &[Ty::Time, Ty::Real, Ty::Real, Ty::Real, Ty::Real],
        )
        .await
}

fn amps(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1} A")).unwrap_or_else(|| "—".to_owned())
}

fn kw(v: Option<f64>) -> String {
    v.map(|v| format!("{:.2} kW", v / 1000.0)).unwrap_or_else(|| "—".to_owned())
}

/// A `<meter>` of `value` against `max` (warning from 90 %), or nothing without a limit.
fn bar(value: Option<f64>, max: Option<f64>, label: &str) -> String {
    match (value, max) {
        (Some(v), Some(m)) if m > 0.0 => format!(
            "<meter min=\"0\" max=\"{m:.3}\" low=\"{:.3}\" high=\"{:.3}\" optimum=\"0\" value=\"{:.3}\" \
             aria-label=\"{}\"></meter>",
            m * 0.75,
            m * 0.9,
            v.max(0.0),
            esc(label)
        ),
        _ => String::new(),
    }
}

fn circuit_table(c: &CircuitEnergy) -> String {
    let mut out = format!(
        "<div class=\"circuit\" data-circuit=\"{}\"><h3>{}{} <small>{}{}</small></h3>",
        esc(&c.circuit),
        esc(&c.circuit),
        if c.parent.is_none() { " (grid connection)" } else { "" },
        c.meter.as_deref().map(|m| format!("meter {} · ", esc(m))).unwrap_or_default(),
        match c.state.as_str() {
            "fresh" => "<span class=\"badge ok\">fresh</span>".to_owned(),
            "unmetered" => "<span class=\"badge\">unmetered</span>".to_owned(),
            s => format!("<span class=\"badge bad\">{}</span>", esc(s)),
        },
    );
    out.push_str(
        "<div class=\"scroll\"><table class=\"stack phases\"><thead><tr><th>Phase</th><th>Measured</th>\
         <th class=\"n\">Allocated</th>",
    );
    let current_limits: Vec<usize> = (0..c.limits.len()).filter(|&i| c.limits[i].current_a.is_some()).collect();
    for &i in &current_limits {
        let _ = write!(out, "<th class=\"n\">{}</th>", esc(c.limits[i].source.label()));
    }
    out.push_str("</tr></thead><tbody>");
    for (k, phase) in ["L1", "L2", "L3"].iter().enumerate() {
        let tightest = c.tightest_a(k);
        let measured = c.current_a[k];
        let over = matches!((measured, tightest), (Some(m), Some((_, t))) if m > t);
        let _ = write!(
            out,
            "<tr class=\"phase{}\" data-phase=\"{phase}\"><td data-label=\"Phase\"><strong>{phase}</strong></td>\
             <td data-label=\"Measured\"><span class=\"measured\">{}</span> {}</td>\
             <td class=\"n\" data-label=\"Allocated\">{}</td>",
            if over { " over" } else { "" },
            amps(measured),
            bar(measured, tightest.map(|t| t.1), &format!("{phase} against its tightest limit")),
            amps(Some(c.allocated_a[k])),
        );
        for &i in &current_limits {
            let v = c.limits[i].current_a.map(|a| a[k]);
            let tight = tightest.is_some_and(|(t, _)| t == i);
            let _ = write!(
                out,
                "<td class=\"n{}\" data-label=\"{}\">{}{}</td>",
                if tight { " tightest" } else { "" },
                esc(c.limits[i].source.label()),
                amps(v),
                if tight { " <small>tightest</small>" } else { "" }
            );
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    let total = total_w(c);
    let tightest_w = c.tightest_w();
    let _ = write!(out, "<p class=\"total\">Total power <strong class=\"total-power\">{}</strong>", kw(total));
    if let Some((i, w)) = tightest_w {
        let _ = write!(
            out,
            " {} of {} <small>({})</small>",
            bar(total, Some(w), "total power against the tightest power limit"),
            kw(Some(w)),
            esc(c.limits[i].source.label())
        );
    }
    let others =
        c.limits.iter().enumerate().filter(|(i, l)| l.power_w.is_some() && Some(*i) != tightest_w.map(|t| t.0));
    for (_, l) in others {
        let _ = write!(out, " · {} {}", esc(l.source.label()), kw(l.power_w));
    }
    for l in c.limits.iter().filter(|l| l.until.is_some()) {
        let _ = write!(out, " · {} until {}", esc(l.source.label()), time(l.until));
    }
    out.push_str("</p></div>");
    out
}

/// An SVG polyline of the site's power over the series (nothing with fewer than 2 points).
fn sparkline(rows: &[Row]) -> String {
    let points: Vec<(i64, f64)> =
        rows.iter().filter_map(|r| Some((r.time(0)?.timestamp_millis(), r.real(1)?))).collect();
    if points.len() < 2 {
        return String::new();
    }
    let (t0, t1) = (points[0].0, points[points.len() - 1].0);
    let max = points.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1.0);
    let span = (t1 - t0).max(1) as f64;
    let mut poly = String::new();
    for (t, w) in &points {
        let x = (t - t0) as f64 / span * 300.0;
        let y = 58.0 - w.max(0.0) / max * 56.0;
        let _ = write!(poly, "{x:.1},{y:.1} ");
    }
    format!(
        "<figure class=\"spark\"><figcaption>Site power, last hour (max {})</figcaption>\
         <svg viewBox=\"0 0 300 60\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"site power over the last hour\">\
         <polyline fill=\"none\" stroke=\"currentColor\" stroke-width=\"1.5\" points=\"{}\"/></svg></figure>",
        kw(Some(max)),
        poly.trim_end()
    )
}

/// The site page's section: fail-safe banner, per-phase rows per circuit, total power,
/// allocations and the last hour's chart.
pub(super) async fn section(store: &Store, site: &str) -> Result<String, DbError> {
    let mut out = String::from("<section id=\"site-energy\"><h2>Power per phase</h2>");
    let Some((report, received_at)) = latest(store, site).await? else {
        out.push_str(
            "<p class=\"empty\" id=\"no-energy\">The site has not reported its power and limits yet \
             (its edge agent needs circuits configured and [sync] site_energy_interval_ms above 0).</p></section>",
        );
        return Ok(out);
    };
    if report.fail_safe.active {
        let _ = write!(
            out,
            "<div class=\"failsafe\" id=\"fail-safe\" role=\"alert\"><strong>Fail-safe active</strong>: the site runs on \
             safe limits. <ul>"
        );
        for r in &report.fail_safe.reasons {
            let _ = write!(
                out,
                "<li data-kind=\"{}\">{} at <code>{}</code> <small>since {}</small></li>",
                esc(&r.kind),
                esc(&r.kind.replace('_', " ")),
                esc(&r.subject),
                time(r.since)
            );
        }
        out.push_str("</ul></div>");
    }
    let _ = write!(
        out,
        "<p class=\"note\">Reported {} (received {}). Allocated to chargers: {} / {} / {}.</p>",
        time(Some(report.at)),
        time(Some(received_at)),
        amps(Some(report.allocated_a[0])),
        amps(Some(report.allocated_a[1])),
        amps(Some(report.allocated_a[2])),
    );
    for c in &report.circuits {
        out.push_str(&circuit_table(c));
    }
    out.push_str(&sparkline(&series(store, site).await?));
    out.push_str("</section>");
    Ok(out)
}
