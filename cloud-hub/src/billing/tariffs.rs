//! Tariffs as stored, which tariff applies at a site, and sending a tariff down to the
//! sites that use it.

use chrono::{DateTime, Utc};
use rumqttc::AsyncClient;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use shared_model::sync::Command;
use shared_model::tariff::{CompiledTariff, Tariff, parse_time_zone};

use super::BillingError;
use crate::db::{DbError, Row, Store, Ty};
use crate::fleet::params::Page;

/// The longest tariff id (OCPI `CiString(36)`).
pub const MAX_TARIFF_ID: usize = 36;

/// A tariff as stored: the Tariff as served (its `last_updated` is the hub's).
#[derive(Debug, Clone)]
pub struct StoredTariff {
    pub tariff: Tariff,
    /// The Tariff JSON exactly as stored and served.
    pub body: String,
    pub created_at: DateTime<Utc>,
}

/// What a PUT of a tariff did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    /// The content changed: `last_updated` moved.
    Updated,
    /// The same content as stored: nothing changed, `last_updated` included.
    Unchanged,
}

/// A site's tariff from a time on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteTariff {
    pub site_id: String,
    pub tariff_id: String,
    pub valid_from: DateTime<Utc>,
    pub time_zone: String,
    pub assigned_at: DateTime<Utc>,
    pub assigned_by: Option<String>,
}

/// Checks a tariff body: it must parse as an OCPI 2.2.1 Tariff, carry `id` (when `id` is
/// given, that one), and compile (the engine's checks: currency, elements, components,
/// restrictions). The reason names what is wrong.
pub fn parse_tariff(body: &[u8], id: Option<&str>) -> Result<Tariff, String> {
    let tariff: Tariff =
        serde_json::from_slice(body).map_err(|e| format!("the body is not an OCPI 2.2.1 Tariff: {e}"))?;
    if tariff.id.is_empty() || tariff.id.chars().count() > MAX_TARIFF_ID {
        return Err(format!("id {:?} must be 1 to {MAX_TARIFF_ID} characters (OCPI CiString(36))", tariff.id));
    }
    if let Some(id) = id
        && tariff.id != id
    {
        return Err(format!("the body's id {:?} is not the id in the path {id:?}", tariff.id));
    }
    CompiledTariff::try_new(&tariff).map_err(|e| e.to_string())?;
    Ok(tariff)
}

/// SHA-256 (hex) of the tariff's content: everything but `last_updated`.
pub fn content_hash(tariff: &Tariff) -> Result<String, DbError> {
    let mut content = tariff.clone();
    content.last_updated = DateTime::<Utc>::UNIX_EPOCH;
    let text = serde_json::to_string(&content).map_err(|e| DbError::Data(format!("cannot serialise a tariff: {e}")))?;
    Ok(Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect())
}

fn stored_from_row(row: &Row) -> Result<StoredTariff, DbError> {
    let body = row.text(0).ok_or_else(|| DbError::Data("tariffs.body is NULL".into()))?.to_owned();
    let tariff: Tariff =
        serde_json::from_str(&body).map_err(|e| DbError::Data(format!("a stored tariff does not parse: {e}")))?;
    let created_at = row.time(1).ok_or_else(|| DbError::Data("tariffs.created_at is NULL".into()))?;
    Ok(StoredTariff { tariff, body, created_at })
}

const TARIFF_COLUMNS: [Ty; 2] = [Ty::Text, Ty::Time];

/// Stores a tariff under its id. Same content as stored: [`PutOutcome::Unchanged`] and
/// nothing is written; otherwise `last_updated` = `now`.
pub async fn put(store: &Store, mut tariff: Tariff, now: DateTime<Utc>) -> Result<(PutOutcome, StoredTariff), DbError> {
    let hash = content_hash(&tariff)?;
    let mut tx = store.begin().await?;
    let lock = if tx.is_postgres() {
        "SELECT content_hash, body, created_at FROM tariffs WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT content_hash, body, created_at FROM tariffs WHERE id = $1"
    };
    let existing = tx.fetch_opt(lock, &[tariff.id.as_str().into()], &[Ty::Text, Ty::Text, Ty::Time]).await?;
    if let Some(row) = &existing
        && row.text(0) == Some(hash.as_str())
    {
        tx.rollback().await?;
        let stored = stored_from_row(&Row(row.0[1..].to_vec()))?;
        return Ok((PutOutcome::Unchanged, stored));
    }
    tariff.last_updated = now;
    let body = serde_json::to_string(&tariff).map_err(|e| DbError::Data(format!("cannot serialise a tariff: {e}")))?;
    let created_at = existing.as_ref().and_then(|r| r.time(2)).unwrap_or(now);
    tx.exec(
        "INSERT INTO tariffs (id, currency, body, content_hash, last_updated, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (id) DO UPDATE SET currency = excluded.currency, body = excluded.body, \
             content_hash = excluded.content_hash, last_updated = excluded.last_updated",
        &[
            tariff.id.as_str().into(),
            tariff.currency.as_str().into(),
            body.as_str().into(),
            hash.into(),
            now.into(),
            created_at.into(),
        ],
    )
    .await?;
    tx.commit().await?;
    let outcome = if existing.is_some() { PutOutcome::Updated } else { PutOutcome::Created };
    Ok((outcome, StoredTariff { tariff, body, created_at }))
}

/// One tariff.
pub async fn get(store: &Store, id: &str) -> Result<Option<StoredTariff>, DbError> {
    store
        .fetch_opt("SELECT body, created_at FROM tariffs WHERE id = $1", &[id.into()], &TARIFF_COLUMNS)
        .await?
        .map(|r| stored_from_row(&r))
        .transpose()
}

/// Tariffs by id, `limit + 1` of them from `offset` (the extra one says there is more).
pub async fn list(store: &Store, page: Page) -> Result<Vec<StoredTariff>, DbError> {
    store
        .fetch(
            "SELECT body, created_at FROM tariffs ORDER BY id LIMIT $1 OFFSET $2",
            &[(page.limit + 1).into(), page.offset.into()],
            &TARIFF_COLUMNS,
        )
        .await?
        .iter()
        .map(stored_from_row)
        .collect()
}

fn site_tariff_from_row(row: &Row) -> Result<SiteTariff, DbError> {
    let text = |i: usize, what: &str| {
        row.text(i).map(str::to_owned).ok_or_else(|| DbError::Data(format!("site_tariffs.{what} is NULL")))
    };
    let time = |i: usize, what: &str| row.time(i).ok_or_else(|| DbError::Data(format!("site_tariffs.{what} is NULL")));
    Ok(SiteTariff {
        site_id: text(0, "site_id")?,
        tariff_id: text(1, "tariff_id")?,
        valid_from: time(2, "valid_from")?,
        time_zone: text(3, "time_zone")?,
        assigned_at: time(4, "assigned_at")?,
        assigned_by: row.text(5).map(str::to_owned),
    })
}

const SITE_TARIFF_COLUMNS: [Ty; 6] = [Ty::Text, Ty::Text, Ty::Time, Ty::Text, Ty::Time, Ty::Text];

/// Gives `site` the tariff `tariff_id` from `valid_from` on, in `time_zone` (an IANA
/// name). Replaces an assignment with the same `valid_from`.
pub async fn assign(
    store: &Store,
    site: &str,
    tariff_id: &str,
    time_zone: &str,
    valid_from: DateTime<Utc>,
    by: Option<&str>,
    now: DateTime<Utc>,
) -> Result<SiteTariff, BillingError> {
    parse_time_zone(time_zone).map_err(|e| BillingError::Invalid(format!("time_zone: {e}")))?;
    if get(store, tariff_id).await?.is_none() {
        return Err(BillingError::Invalid(format!("no tariff {tariff_id:?}: PUT it at /api/v1/tariffs/{{id}} first")));
    }
    store
        .exec(
            "INSERT INTO site_tariffs (site_id, valid_from, tariff_id, time_zone, assigned_at, assigned_by) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (site_id, valid_from) DO UPDATE SET tariff_id = excluded.tariff_id, \
                 time_zone = excluded.time_zone, assigned_at = excluded.assigned_at, \
                 assigned_by = excluded.assigned_by",
            &[site.into(), valid_from.into(), tariff_id.into(), time_zone.into(), now.into(), by.into()],
        )
        .await?;
    Ok(SiteTariff {
        site_id: site.to_owned(),
        tariff_id: tariff_id.to_owned(),
        valid_from,
        time_zone: time_zone.to_owned(),
        assigned_at: now,
        assigned_by: by.map(str::to_owned),
    })
}

/// A site's assignments, newest `valid_from` first.
pub async fn site_tariffs(store: &Store, site: &str) -> Result<Vec<SiteTariff>, DbError> {
    const SQL: &str = "SELECT site_id, tariff_id, valid_from, time_zone, assigned_at, assigned_by FROM site_tariffs \
                       WHERE site_id = $1 ORDER BY valid_from DESC";
    store.fetch(SQL, &[site.into()], &SITE_TARIFF_COLUMNS).await?.iter().map(site_tariff_from_row).collect()
}

/// The assignment in force at `site` at `at` and its tariff.
pub async fn tariff_at(
    store: &Store,
    site: &str,
    at: DateTime<Utc>,
) -> Result<Option<(SiteTariff, StoredTariff)>, DbError> {
    let Some(row) = store
        .fetch_opt(
            "SELECT site_id, tariff_id, valid_from, time_zone, assigned_at, assigned_by FROM site_tariffs \
             WHERE site_id = $1 AND valid_from <= $2 ORDER BY valid_from DESC LIMIT 1",
            &[site.into(), at.into()],
            &SITE_TARIFF_COLUMNS,
        )
        .await?
    else {
        return Ok(None);
    };
    let assignment = site_tariff_from_row(&row)?;
    Ok(get(store, &assignment.tariff_id).await?.map(|t| (assignment, t)))
}

/// The sites whose tariff in force at `now` is `tariff_id`.
pub async fn sites_using(store: &Store, tariff_id: &str, now: DateTime<Utc>) -> Result<Vec<String>, DbError> {
    let rows = store
        .fetch(
            "SELECT t.site_id FROM site_tariffs t WHERE t.tariff_id = $1 AND t.valid_from = \
                 (SELECT MAX(u.valid_from) FROM site_tariffs u WHERE u.site_id = t.site_id AND u.valid_from <= $2) \
             ORDER BY t.site_id",
            &[tariff_id.into(), now.into()],
            &[Ty::Text],
        )
        .await?;
    Ok(rows.iter().filter_map(|r| r.text(0).map(str::to_owned)).collect())
}

/// Sends the tariff down to `site` as a `SetTariff` command (stored first, re-sent at the
/// site's hellos until answered, like every command). The command id, and whether it went
/// out now (else at the site's next hello).
pub async fn send_to_site(
    store: &Store,
    mqtt: &AsyncClient,
    site: &str,
    tariff: &StoredTariff,
    by: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(String, bool), DbError> {
    // The edge keeps the JSON as it came; prices of up to 15 significant digits print back
    // exactly from a serde_json number.
    let value: serde_json::Value = serde_json::from_str(&tariff.body)
        .map_err(|e| DbError::Data(format!("a stored tariff does not parse: {e}")))?;
    let command = Command::SetTariff { tariff_id: tariff.tariff.id.clone(), tariff: value };
    let expires_at = now + chrono::Duration::days(7);
    let env = crate::commands::envelope(site, command, now, Some(expires_at));
    crate::commands::insert(store, &env, by).await?;
    let published = match crate::commands::publish(mqtt, &env) {
        Ok(()) => {
            crate::commands::mark_sent(store, &env.command_id, now).await?;
            true
        }
        Err(reason) => {
            tracing::warn!(
                site,
                command_id = env.command_id,
                reason,
                "tariff stored; it goes out at the site's next hello"
            );
            false
        }
    };
    Ok((env.command_id, published))
}
