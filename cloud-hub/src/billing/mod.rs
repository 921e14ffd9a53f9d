//! Billing: tariffs, CDRs and invoices.
//!
//! - **Tariffs** ([`tariffs`]) are OCPI 2.2.1 Tariff objects, checked by the tariff engine
//!   (`shared_model::tariff`) when they are stored. `last_updated` moves only when the
//!   content changes. A site gets a tariff from a time on (`site_tariffs`), with its time
//!   zone; the hub sends the tariff down to the site (`SetTariff`) when it is assigned or
//!   changes, so the installer page and receipts show prices while the site is offline.
//! - **CDRs** ([`cdr`], [`worker`]): every finished session at a site with a tariff becomes
//!   one immutable CDR, priced by the engine from the session's meter values into OCPI
//!   charging periods, in the site's time zone. The database refuses updates and deletes of
//!   CDRs. A correction is a credit CDR (the same amounts negated) and, when the session
//!   itself changed (a stop reported by the charger after one the site inferred), a new
//!   debit CDR with the next revision.
//! - **Invoices** ([`invoice`]): per customer (the owner of the id tags) and period, every
//!   CDR not yet invoiced, with VAT lines per rate, as JSON and as a printable HTML page.
//!   Numbers are gapless in order of issue.
//!
//! Money is `rust_decimal::Decimal` from the tariff to the invoice and is stored as text.

pub mod api;
pub mod cdr;
pub mod invoice;
pub mod tariffs;
pub mod worker;

use crate::db::DbError;
use rust_decimal::Decimal;

/// Why a billing operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    /// The request is not valid (a 422 at the API).
    #[error("{0}")]
    Invalid(String),
    /// Something named does not exist (a 404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the state (a 409).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A decimal as stored (text), or a data error naming the column.
pub(crate) fn parse_decimal(text: Option<&str>, column: &str) -> Result<Decimal, DbError> {
    let text = text.ok_or_else(|| DbError::Data(format!("{column} is NULL")))?;
    text.parse::<Decimal>().map_err(|e| DbError::Data(format!("{column} {text:?} is not a decimal: {e}")))
}

/// Like [`parse_decimal`] for a nullable column.
pub(crate) fn parse_decimal_opt(text: Option<&str>, column: &str) -> Result<Option<Decimal>, DbError> {
    text.map(|t| parse_decimal(Some(t), column)).transpose()
}
