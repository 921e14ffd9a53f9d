//! Invoices: `/invoices` lists them per customer and period, `/invoices/{id}` serves the
//! printable document billing renders ([`crate::billing::invoice::html`]).
//!
//! Admins and CPO operators see every customer's invoices (filter `customer`); a fleet
//! manager only their customer's, and another customer's invoice is a 404. Filters: `from`
//! and `to` (dates `YYYY-MM-DD`, UTC, both included) keep invoices whose period overlaps
//! them; `page` from 1. The list reads the invoices' index columns, not their bodies.
//!
//! The document has its own style sheet inline and no script: it is served with a CSP
//! that allows exactly that style sheet (by its SHA-256) and nothing else.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use chrono::{NaiveDate, TimeDelta};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

use super::pages::{esc, render, seg, time};
use super::{DashError, DashState, Role, Viewer};
use crate::db::{Ty, Val};

/// Invoices per page.
const PAGE_SIZE: i64 = 50;

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvoiceQuery {
    customer: Option<String>,
    from: Option<String>,
    to: Option<String>,
    page: Option<String>,
}

fn bad(why: String) -> DashError {
    DashError::Invalid(StatusCode::BAD_REQUEST, why)
}

fn field(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn date(name: &str, v: Option<&str>) -> Result<Option<NaiveDate>, DashError> {
    v.map(|v| {
        NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| bad(format!("{name} {v:?} is not a date YYYY-MM-DD")))
    })
    .transpose()
}

fn money(amount: Option<&str>) -> String {
    let amount = amount.unwrap_or_default();
    amount
        .parse::<Decimal>()
        .map(|d| format!("{:.2}", d.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero)))
        .unwrap_or_else(|_| amount.to_owned())
}

/// `/invoices`.
pub async fn page(
    State(state): State<DashState>,
    viewer: Viewer,
    Query(q): Query<InvoiceQuery>,
) -> Result<Response, DashError> {
    let wanted = field(&q.customer).map(str::to_owned);
    // A fleet manager's own customer, whatever they ask for; another one is not theirs.
    let own = match viewer.role {
        Role::FleetManager => {
            let own = viewer.customer.clone().ok_or(DashError::Forbidden)?;
            if wanted.as_ref().is_some_and(|w| *w != own) {
                return Err(DashError::NotFound);
            }
            Some(own)
        }
        Role::Admin | Role::CpoOperator => None,
    };
    let from = date("from", field(&q.from))?;
    let to = date("to", field(&q.to))?;
    if let (Some(f), Some(t)) = (from, to)
        && f > t
    {
        return Err(bad(format!("from ({f}) is after to ({t})")));
    }
    let page = match field(&q.page) {
        None => 1,
        Some(p) => match p.parse::<i64>() {
            Ok(n) if (1..=100_000).contains(&n) => n,
            _ => return Err(bad(format!("page must be a whole number from 1 to 100000, not {p:?}"))),
        },
    };
    let from_t = from.and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc());
    let to_t = to
        .and_then(|d| d.checked_add_signed(TimeDelta::days(1)))
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc());
    let rows = state
        .store
        .fetch_planned(
            "SELECT i.id, i.number, i.customer_id, c.name, i.currency, i.period_from, i.period_to, i.issued_at, \
                 i.total_excl_vat, i.total_vat, i.total_incl_vat, \
                 (SELECT COUNT(*) FROM invoice_cdrs x WHERE x.invoice_id = i.id) \
             FROM invoices i JOIN customers c ON c.id = i.customer_id \
             WHERE ($1 IS NULL OR i.customer_id = $1) AND ($2 IS NULL OR i.customer_id = $2) \
                 AND ($3 IS NULL OR i.period_to > $3) AND ($4 IS NULL OR i.period_from < $4) \
             ORDER BY c.name, i.customer_id, i.period_from DESC, i.number DESC LIMIT $5 OFFSET $6",
            &[
                Val::from(own.as_deref()),
                Val::from(wanted.as_deref()),
                Val::from(from_t),
                Val::from(to_t),
                (PAGE_SIZE + 1).into(),
                ((page - 1) * PAGE_SIZE).into(),
            ],
            &[
                Ty::Text,
                Ty::Int,
                Ty::Text,
                Ty::Text,
                Ty::Text,
                Ty::Time,
                Ty::Time,
                Ty::Time,
                Ty::Text,
                Ty::Text,
                Ty::Text,
                Ty::Int,
            ],
        )
        .await?;
    let more = rows.len() as i64 > PAGE_SIZE;

    let mut filters = String::from("<form method=\"get\" action=\"/invoices\" class=\"filters\">");
    if own.is_none() {
        let customers =
            state.store.fetch("SELECT id, name FROM customers ORDER BY name, id", &[], &[Ty::Text, Ty::Text]).await?;
        filters.push_str("<label>Customer <select name=\"customer\"><option value=\"\">All customers</option>");
        for c in &customers {
            let id = c.text(0).unwrap_or_default();
            let selected = if wanted.as_deref() == Some(id) { " selected" } else { "" };
            let _ =
                write!(filters, "<option value=\"{}\"{selected}>{}</option>", esc(id), esc(c.text(1).unwrap_or(id)));
        }
        filters.push_str("</select></label>");
    }
    let value = |d: Option<NaiveDate>| d.map(|d| d.to_string()).unwrap_or_default();
    let _ = write!(
        filters,
        "<label>From <input type=\"date\" name=\"from\" value=\"{}\"></label>\
         <label>To <input type=\"date\" name=\"to\" value=\"{}\"></label><button type=\"submit\">Filter</button></form>",
        value(from),
        value(to)
    );

    let mut list = String::new();
    if rows.is_empty() {
        list.push_str("<p class=\"empty\" id=\"no-invoices\">No invoices match.</p>");
    }
    let mut current: Option<&str> = None;
    for r in rows.iter().take(usize::try_from(PAGE_SIZE).unwrap_or(0)) {
        let customer = r.text(2).unwrap_or_default();
        if current != Some(customer) {
            if current.is_some() {
                list.push_str("</tbody></table></div>");
            }
            current = Some(customer);
            let _ = write!(
                list,
                "<h2 data-customer=\"{}\">{}</h2><div class=\"scroll\"><table class=\"invoices stack\"><thead><tr>\
                 <th>Number</th><th>Period</th><th>Issued</th><th>Sessions</th><th class=\"n\">Net</th>\
                 <th class=\"n\">VAT</th><th class=\"n\">Total</th><th></th></tr></thead><tbody>",
                esc(customer),
                esc(r.text(3).unwrap_or(customer))
            );
        }
        let id = r.text(0).unwrap_or_default();
        let currency = esc(r.text(4).unwrap_or_default());
        let period = |t: Option<chrono::DateTime<chrono::Utc>>| {
            t.map(|t| t.format("%Y-%m-%d").to_string()).unwrap_or_else(|| "—".to_owned())
        };
        let _ = write!(
            list,
            "<tr class=\"invoice\" data-invoice=\"{}\"><td data-label=\"Number\">{}</td>\
             <td data-label=\"Period\">{} – {}</td><td data-label=\"Issued\">{}</td>\
             <td class=\"n\" data-label=\"Sessions\">{}</td><td class=\"n\" data-label=\"Net\">{} {currency}</td>\
             <td class=\"n\" data-label=\"VAT\">{} {currency}</td><td class=\"n\" data-label=\"Total\">{} {currency}</td>\
             <td data-label=\"\"><a href=\"/invoices/{}\">Open</a></td></tr>",
            esc(id),
            r.int(1).unwrap_or(0),
            period(r.time(5)),
            period(r.time(6)),
            time(r.time(7)),
            r.int(11).unwrap_or(0),
            esc(&money(r.text(8))),
            esc(&money(r.text(9))),
            esc(&money(r.text(10))),
            seg(id),
        );
    }
    if current.is_some() {
        list.push_str("</tbody></table></div>");
    }
    let mut query = Vec::new();
    if let Some(c) = &wanted {
        query.push(format!("customer={}", seg(c)));
    }
    if let Some(f) = from {
        query.push(format!("from={f}"));
    }
    if let Some(t) = to {
        query.push(format!("to={t}"));
    }
    let link = |p: i64| {
        let mut q = query.clone();
        q.push(format!("page={p}"));
        format!("/invoices?{}", q.join("&amp;"))
    };
    let mut pager = String::new();
    if page > 1 {
        let _ = write!(pager, "<a rel=\"prev\" href=\"{}\">‹ Previous</a> ", link(page - 1));
    }
    let _ = write!(pager, "<span>Page {page}</span>");
    if more {
        let _ = write!(pager, " <a rel=\"next\" href=\"{}\">Next ›</a>", link(page + 1));
    }
    let body = format!(
        "<h1>Invoices</h1>{filters}<p class=\"note\">Per customer, newest period first; open one to print it.</p>\
         {list}<p class=\"pager\">{pager}</p>"
    );
    render(&state.store, &viewer, "Invoices", &[], &body).await
}

/// The CSP of a billing document: its one inline style sheet (by hash), nothing else.
fn document_csp(html: &str) -> String {
    let style = html
        .split_once("<style>")
        .and_then(|(_, rest)| rest.split_once("</style>"))
        .map(|(style, _)| style)
        .unwrap_or_default();
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(style.as_bytes()));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; img-src 'none'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
}

/// `/invoices/{id}`: the printable invoice.
pub async fn document(
    State(state): State<DashState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, DashError> {
    let invoice = crate::billing::invoice::get(&state.store, &id).await?.ok_or(DashError::NotFound)?;
    if viewer.role == Role::FleetManager && viewer.customer.as_deref() != Some(invoice.customer.id.as_str()) {
        return Err(DashError::NotFound);
    }
    let html = crate::billing::invoice::html(&invoice, &state.settings.issuer);
    let csp = document_csp(&html);
    let mut response = Html(html).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_csp_allows_exactly_its_style() {
        let csp = document_csp("<html><head><style>body{color:red}</style></head></html>");
        // printf 'body{color:red}' | openssl dgst -sha256 -binary | base64
        let expected = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(b"body{color:red}"));
        assert!(csp.contains(&format!("style-src 'sha256-{expected}'")), "{csp}");
        assert!(csp.starts_with("default-src 'none';"));
        assert!(!csp.contains("script-src"), "no script at all: default-src 'none' covers it");
    }

    #[test]
    fn money_is_rounded_for_print() {
        assert_eq!(money(Some("12.345")), "12.35");
        assert_eq!(money(Some("-0.005")), "-0.01");
        assert_eq!(money(Some("n/a")), "n/a");
    }
}
