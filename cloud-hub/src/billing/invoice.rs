//! Invoices: a customer's CDRs of a period, not invoiced before, with VAT lines per rate;
//! stored once (numbers gapless in order of issue) and served as JSON and as a printable
//! HTML page.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::cdr::{self, Cdr, CdrFilter, VatLine};
use super::{BillingError, parse_decimal};
use crate::db::{DbError, Row, Store, Ty};
use crate::fleet::params::Page;

/// The most CDRs on one invoice (a period with more is invoiced in parts).
pub const MAX_LINES: i64 = 10_000;

/// A customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    pub address: Option<String>,
    pub vat_id: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The id tags billed to the customer.
    #[serde(default)]
    pub id_tags: Vec<String>,
}

/// One line of an invoice: a CDR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    pub cdr_id: String,
    pub kind: String,
    pub credits: Option<String>,
    pub site_id: String,
    pub station: String,
    pub id_tag: Option<String>,
    pub start_date_time: DateTime<Utc>,
    pub end_date_time: DateTime<Utc>,
    pub energy_kwh: Decimal,
    pub time_h: Decimal,
    pub net: Decimal,
    pub vat: Decimal,
    pub gross: Decimal,
}

/// An invoice as stored and served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    pub id: String,
    pub number: i64,
    pub customer: Customer,
    pub currency: String,
    pub period_from: DateTime<Utc>,
    pub period_to: DateTime<Utc>,
    pub issued_at: DateTime<Utc>,
    pub lines: Vec<InvoiceLine>,
    /// VAT per rate, lowest rate first (`rate` null: the tariff gave no VAT).
    pub tax_lines: Vec<VatLine>,
    pub total_excl_vat: Decimal,
    pub total_vat: Decimal,
    pub total_incl_vat: Decimal,
}

/// Checks and creates a customer.
pub async fn add_customer(
    store: &Store,
    id: Option<&str>,
    name: &str,
    email: Option<&str>,
    address: Option<&str>,
    vat_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Customer, BillingError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(BillingError::Invalid("name must not be empty".into()));
    }
    let id = match id {
        Some(id) if shared_model::sync::is_valid_site_id(id) => id.to_owned(),
        Some(id) => {
            return Err(BillingError::Invalid(format!(
                "id {id:?} is not valid: use 1 to 64 letters, digits, '-' or '_'"
            )));
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    let n = store
        .exec(
            "INSERT INTO customers (id, name, email, address, vat_id, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT DO NOTHING",
            &[id.as_str().into(), name.into(), email.into(), address.into(), vat_id.into(), now.into()],
        )
        .await?;
    if n == 0 {
        return Err(BillingError::Conflict(format!("a customer with id {id:?} already exists")));
    }
    Ok(Customer {
        id,
        name: name.to_owned(),
        email: email.map(str::to_owned),
        address: address.map(str::to_owned),
        vat_id: vat_id.map(str::to_owned),
        created_at: now,
        id_tags: Vec::new(),
    })
}

fn customer_from_row(r: &Row) -> Result<Customer, DbError> {
    Ok(Customer {
        id: r.text(0).ok_or_else(|| DbError::Data("customers.id is NULL".into()))?.to_owned(),
        name: r.text(1).ok_or_else(|| DbError::Data("customers.name is NULL".into()))?.to_owned(),
        email: r.text(2).map(str::to_owned),
        address: r.text(3).map(str::to_owned),
        vat_id: r.text(4).map(str::to_owned),
        created_at: r.time(5).ok_or_else(|| DbError::Data("customers.created_at is NULL".into()))?,
        id_tags: Vec::new(),
    })
}

const CUSTOMER_COLUMNS: [Ty; 6] = [Ty::Text, Ty::Text, Ty::Text, Ty::Text, Ty::Text, Ty::Time];

async fn id_tags_of(store: &Store, customer: &str) -> Result<Vec<String>, DbError> {
    Ok(store
        .fetch(
            "SELECT id_tag FROM customer_tokens WHERE customer_id = $1 ORDER BY id_tag",
            &[customer.into()],
            &[Ty::Text],
        )
        .await?
        .iter()
        .filter_map(|r| r.text(0).map(str::to_owned))
        .collect())
}

/// One customer with its id tags.
pub async fn customer(store: &Store, id: &str) -> Result<Option<Customer>, DbError> {
    let Some(row) = store
        .fetch_opt(
            "SELECT id, name, email, address, vat_id, created_at FROM customers WHERE id = $1",
            &[id.into()],
            &CUSTOMER_COLUMNS,
        )
        .await?
    else {
        return Ok(None);
    };
    let mut c = customer_from_row(&row)?;
    c.id_tags = id_tags_of(store, id).await?;
    Ok(Some(c))
}

/// Customers by id (`limit + 1` rows), with their id tags.
pub async fn customers(store: &Store, page: Page) -> Result<Vec<Customer>, DbError> {
    let rows = store
        .fetch(
            "SELECT id, name, email, address, vat_id, created_at FROM customers ORDER BY id LIMIT $1 OFFSET $2",
            &[(page.limit + 1).into(), page.offset.into()],
            &CUSTOMER_COLUMNS,
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let mut c = customer_from_row(r)?;
        c.id_tags = id_tags_of(store, &c.id).await?;
        out.push(c);
    }
    Ok(out)
}

/// Bills `id_tag`'s future sessions to `customer` (moves it from another customer).
pub async fn add_token(store: &Store, customer_id: &str, id_tag: &str, now: DateTime<Utc>) -> Result<(), BillingError> {
    if id_tag.is_empty() || id_tag.chars().count() > 36 {
        return Err(BillingError::Invalid(format!("id tag {id_tag:?} must be 1 to 36 characters")));
    }
    if customer(store, customer_id).await?.is_none() {
        return Err(BillingError::NotFound(format!("no customer {customer_id:?}")));
    }
    store
        .exec(
            "INSERT INTO customer_tokens (id_tag, customer_id, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (id_tag) DO UPDATE SET customer_id = excluded.customer_id, created_at = excluded.created_at",
            &[id_tag.into(), customer_id.into(), now.into()],
        )
        .await?;
    Ok(())
}

fn line_of(c: &Cdr) -> Result<(InvoiceLine, Vec<VatLine>), DbError> {
    let vat_lines = cdr::stored_vat_lines(&c.detail)?;
    let vat: Decimal = vat_lines.iter().map(|l| l.vat).sum();
    let net = c.total_cost_excl_vat;
    Ok((
        InvoiceLine {
            cdr_id: c.id.clone(),
            kind: c.kind.clone(),
            credits: c.credits.clone(),
            site_id: c.site_id.clone(),
            station: c.station.clone(),
            id_tag: c.id_tag.clone(),
            start_date_time: c.start_date_time,
            end_date_time: c.end_date_time,
            energy_kwh: c.total_energy_kwh,
            time_h: c.total_time_h,
            net: net.normalize(),
            vat: vat.normalize(),
            gross: (net + vat).normalize(),
        },
        vat_lines,
    ))
}

/// Invoices `customer_id`'s CDRs that ended in `[from, to)` and are on no invoice yet.
pub async fn create(
    store: &Store,
    customer_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Invoice, BillingError> {
    if to <= from {
        return Err(BillingError::Invalid(format!("to ({to}) must be after from ({from})")));
    }
    let Some(customer) = customer(store, customer_id).await? else {
        return Err(BillingError::NotFound(format!("no customer {customer_id:?}")));
    };
    let filter =
        CdrFilter { customer: Some(customer_id.to_owned()), from: Some(from), to: Some(to), ..Default::default() };
    let page = Page { limit: MAX_LINES, offset: 0 };
    let mut cdrs: Vec<Cdr> =
        cdr::list(store, &filter, page).await?.into_iter().filter(|c| c.invoice_id.is_none()).collect();
    if cdrs.is_empty() {
        return Err(BillingError::Conflict(format!(
            "customer {customer_id:?} has no CDRs ending in [{from}, {to}) that are not invoiced yet"
        )));
    }
    cdrs.truncate(usize::try_from(MAX_LINES).unwrap_or(usize::MAX));
    cdrs.sort_by(|a, b| (a.end_date_time, &a.id).cmp(&(b.end_date_time, &b.id)));
    let mut currencies: Vec<&str> = cdrs.iter().map(|c| c.currency.as_str()).collect();
    currencies.sort_unstable();
    currencies.dedup();
    let [currency] = currencies.as_slice() else {
        return Err(BillingError::Invalid(format!(
            "the CDRs of the period are in several currencies ({}): invoice a shorter period per currency",
            currencies.join(", ")
        )));
    };
    let currency = (*currency).to_owned();

    let mut lines = Vec::with_capacity(cdrs.len());
    let mut tax_lines: Vec<VatLine> = Vec::new();
    for c in &cdrs {
        let (line, vat_lines) = line_of(c)?;
        for v in vat_lines {
            match tax_lines.iter_mut().find(|t| t.rate == v.rate) {
                Some(t) => {
                    t.net += v.net;
                    t.vat += v.vat;
                }
                None => tax_lines.push(v),
            }
        }
        lines.push(line);
    }
    tax_lines.sort_by_key(|a| a.rate);
    for t in &mut tax_lines {
        t.net = t.net.normalize();
        t.vat = t.vat.normalize();
    }
    let total_excl_vat: Decimal = lines.iter().map(|l| l.net).sum::<Decimal>().normalize();
    let total_vat: Decimal = lines.iter().map(|l| l.vat).sum::<Decimal>().normalize();

    let mut tx = store.begin().await?;
    if tx.is_postgres() {
        // Gapless numbers: one issuer at a time (SQLite holds the write lock already).
        tx.exec("LOCK TABLE invoices IN EXCLUSIVE MODE", &[]).await?;
    }
    let number = tx
        .fetch_opt("SELECT COALESCE(MAX(number), 0) + 1 FROM invoices", &[], &[Ty::Int])
        .await?
        .and_then(|r| r.int(0))
        .unwrap_or(1);
    let invoice = Invoice {
        id: uuid::Uuid::new_v4().to_string(),
        number,
        customer,
        currency,
        period_from: from,
        period_to: to,
        issued_at: now,
        lines,
        tax_lines,
        total_excl_vat,
        total_vat,
        total_incl_vat: (total_excl_vat + total_vat).normalize(),
    };
    let body =
        serde_json::to_string(&invoice).map_err(|e| DbError::Data(format!("cannot serialise an invoice: {e}")))?;
    tx.exec(
        "INSERT INTO invoices (id, number, customer_id, currency, period_from, period_to, issued_at, total_excl_vat, \
             total_vat, total_incl_vat, body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            invoice.id.as_str().into(),
            number.into(),
            customer_id.into(),
            invoice.currency.as_str().into(),
            from.into(),
            to.into(),
            now.into(),
            total_excl_vat.to_string().into(),
            total_vat.to_string().into(),
            invoice.total_incl_vat.to_string().into(),
            body.into(),
        ],
    )
    .await?;
    for line in &invoice.lines {
        let n = tx
            .exec(
                "INSERT INTO invoice_cdrs (cdr_id, invoice_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[line.cdr_id.as_str().into(), invoice.id.as_str().into()],
            )
            .await?;
        if n == 0 {
            tx.rollback().await?;
            return Err(BillingError::Conflict(format!(
                "CDR {} was invoiced by another request meanwhile; try again",
                line.cdr_id
            )));
        }
    }
    tx.commit().await?;
    Ok(invoice)
}

fn invoice_from_row(r: &Row) -> Result<Invoice, DbError> {
    let body = r.text(0).ok_or_else(|| DbError::Data("invoices.body is NULL".into()))?;
    let invoice: Invoice =
        serde_json::from_str(body).map_err(|e| DbError::Data(format!("a stored invoice does not parse: {e}")))?;
    // The columns are the index; the body is the document. They agree by construction.
    let total = parse_decimal(r.text(1), "invoices.total_incl_vat")?;
    if total != invoice.total_incl_vat {
        return Err(DbError::Data(format!("invoice {} total does not match its body", invoice.id)));
    }
    Ok(invoice)
}

/// One invoice.
pub async fn get(store: &Store, id: &str) -> Result<Option<Invoice>, DbError> {
    store
        .fetch_opt("SELECT body, total_incl_vat FROM invoices WHERE id = $1", &[id.into()], &[Ty::Text, Ty::Text])
        .await?
        .map(|r| invoice_from_row(&r))
        .transpose()
}

/// Invoices, newest number first (`limit + 1` rows), of one customer or all.
pub async fn list(store: &Store, customer: Option<&str>, page: Page) -> Result<Vec<Invoice>, DbError> {
    store
        .fetch(
            "SELECT body, total_incl_vat FROM invoices WHERE ($1 IS NULL OR customer_id = $1) \
             ORDER BY number DESC LIMIT $2 OFFSET $3",
            &[customer.into(), (page.limit + 1).into(), page.offset.into()],
            &[Ty::Text, Ty::Text],
        )
        .await?
        .iter()
        .map(invoice_from_row)
        .collect()
}

fn esc(s: &str) -> String {
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

/// An amount with two decimals (rounded half away from zero) for print; the JSON keeps
/// the exact amounts.
fn money(d: Decimal) -> String {
    format!("{:.2}", d.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero))
}

/// The invoice as a printable HTML page (A4, no script, no external resources).
pub fn html(inv: &Invoice, issuer: &str) -> String {
    let c = &inv.customer;
    let mut rows = String::new();
    for l in &inv.lines {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td>\
             <td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>\n",
            esc(&l.start_date_time.format("%Y-%m-%d %H:%M").to_string()),
            if l.kind == "credit" { "credit" } else { "charging" },
            esc(&l.site_id),
            esc(&l.station),
            esc(l.id_tag.as_deref().unwrap_or("")),
            l.energy_kwh.round_dp(3),
            l.time_h.round_dp(2),
            money(l.net),
            money(l.vat),
            money(l.gross),
        ));
    }
    let mut taxes = String::new();
    for t in &inv.tax_lines {
        taxes.push_str(&format!(
            "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td></tr>\n",
            t.rate.map_or("not stated".to_owned(), |r| format!("{r} %")),
            money(t.net),
            money(t.vat)
        ));
    }
    let cur = esc(&inv.currency);
    format!(
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width, initial-scale=1\">\
         <title>Invoice {number}</title><style>\
         body{{font:14px/1.4 system-ui,sans-serif;margin:2rem;color:#111}}\
         table{{border-collapse:collapse;width:100%;margin:1rem 0}}th,td{{padding:.3rem .5rem;border-bottom:1px solid #ccc;text-align:left}}\
         .n{{text-align:right;font-variant-numeric:tabular-nums}}.total td{{font-weight:bold;border-top:2px solid #111}}\
         header{{display:flex;justify-content:space-between;flex-wrap:wrap;gap:1rem}}\
         @media print{{body{{margin:0}}@page{{size:A4;margin:15mm}}}}\
         </style></head><body>\
         <header><div><h1>Invoice {number}</h1><p>{issuer}</p></div>\
         <div><p><strong>{name}</strong><br>{address}<br>{email}{vat_id}</p></div></header>\
         <p>Issued {issued} · period {from} to {to} · currency {cur}</p>\
         <table><thead><tr><th>Start (UTC)</th><th>Item</th><th>Site / charger</th><th>Id tag</th><th class=n>kWh</th>\
         <th class=n>Hours</th><th class=n>Net</th><th class=n>VAT</th><th class=n>Gross</th></tr></thead><tbody>\n{rows}</tbody></table>\
         <table><thead><tr><th>VAT rate</th><th class=n>Net</th><th class=n>VAT</th></tr></thead><tbody>\n{taxes}</tbody></table>\
         <table><tbody><tr><td>Total excl. VAT</td><td class=n>{excl} {cur}</td></tr>\
         <tr><td>VAT</td><td class=n>{vat} {cur}</td></tr>\
         <tr class=total><td>Total</td><td class=n>{incl} {cur}</td></tr></tbody></table>\
         <footer><small>Invoice id {id}</small></footer></body></html>\n",
        number = inv.number,
        issuer = esc(issuer),
        name = esc(&c.name),
        address = esc(c.address.as_deref().unwrap_or("")),
        email = esc(c.email.as_deref().unwrap_or("")),
        vat_id = c.vat_id.as_deref().map(|v| format!("<br>VAT id {}", esc(v))).unwrap_or_default(),
        issued = inv.issued_at.format("%Y-%m-%d"),
        from = inv.period_from.format("%Y-%m-%d %H:%M"),
        to = inv.period_to.format("%Y-%m-%d %H:%M"),
        excl = money(inv.total_excl_vat),
        vat = money(inv.total_vat),
        incl = money(inv.total_incl_vat),
        id = esc(&inv.id),
    )
}
