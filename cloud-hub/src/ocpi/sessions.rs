//! The sessions module, Sender interface (OCPI 2.2.1 "Sessions module").
//!
//! A session at one of our sites belongs to a roaming partner when its id tag is that
//! partner's: the partner whose real-time authorization (or pushed token, see
//! [`super::realtime`]) let the tag charge — the latest ALLOWED answer recorded for the tag
//! up to ten minutes after the session's start (table `ocpi_authorizations`) — else the
//! partner that pushed a token whose `uid` is the id tag (table `ocpi_tokens`; OCPI 2.2.1
//! "Tokens module": the uid is what the charger's RFID reader reads, which OCPP sends as
//! the idTag). Only sessions at sites published as Locations are served (a Session names
//! its location, EVSE and connector).
//!
//! Each such session is one OCPI Session (table `ocpi_sessions`), rebuilt when the
//! session changes at the hub or its CDR appears: `kwh` from the meter, `status` ACTIVE
//! until the stop then COMPLETED, the `cdr_token` and `auth_method` (AUTH_REQUEST after a
//! real-time authorization, else WHITELIST) of its owner, and when the site's tariff can
//! price it the `total_cost` and `charging_periods` — from the CDR as billing issued it
//! once there is one, else priced by the tariff engine up to the last meter value (so
//! the content moves only when the data does). `last_updated` moves only when the content
//! does. A new Session is PUT to the owner's sessions Receiver, a change PATCHed (or PUT
//! when more than the progress fields changed), through the durable [`super::push`]
//! outbox, in the same transaction as the new body.
//!
//! `GET sessions` serves the calling partner's Sessions only; `date_from` is required
//! (OCPI 2.2.1: "Only return Sessions that have last_updated after or equal to this").

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use shared_model::ocpi::{CdrToken, Session, Token, auth_method, parse_timestamp, status, timestamp};
use shared_model::tariff::{ChargingPeriod, Price, Pricer, decimal_json};

use super::locations::{Meta, evse_uid};
use super::push::{self, Push};
use super::transport::{self, OcpiError, OcpiResult, PageRequest};
use super::{CallerExt, OcpiState, Settings};
use crate::billing::cdr::{self as billing_cdr, FinishedSession};
use crate::billing::tariffs::tariff_at;
use crate::db::{DbError, Store, Ty};

/// A real-time authorization counts for sessions that start up to this long after it
/// (the charger's clock, which stamps the start, may run ahead of the hub's).
const SKEW: chrono::Duration = chrono::Duration::minutes(10);

/// How far back an incremental refresh reaches before the previous one started: a
/// session whose transaction committed late (`updated_at` is the hub's clock at ingest).
const OVERLAP: chrono::Duration = chrono::Duration::seconds(60);

/// Serialises refreshes within one hub and remembers where the last one started (`None`
/// before the first, which looks at every roaming session).
#[derive(Debug, Default)]
pub struct Refresher {
    since: tokio::sync::Mutex<Option<DateTime<Utc>>>,
}

/// The partner a session (or CDR) belongs to, and how its token was let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub partner_id: String,
    pub token: CdrToken,
    /// [`auth_method`].
    pub auth_method: String,
    pub authorization_reference: Option<String>,
}

/// The owner of id tag `id_tag` for a session that started at `started_at`.
pub async fn owner(store: &Store, id_tag: &str, started_at: DateTime<Utc>) -> Result<Option<Owner>, DbError> {
    let authorized = store
        .fetch(
            "SELECT partner_id, token, auth_method, authorization_reference FROM ocpi_authorizations \
             WHERE id_tag = $1 AND allowed = 'ALLOWED' AND at <= $2 ORDER BY at DESC LIMIT 1",
            &[id_tag.into(), (started_at + SKEW).into()],
            &[Ty::Text, Ty::Text, Ty::Text, Ty::Text],
        )
        .await?;
    for r in &authorized {
        let token = r.text(1).and_then(|t| serde_json::from_str::<Token>(t).ok());
        if let (Some(partner_id), Some(token), Some(method)) = (r.text(0), token, r.text(2)) {
            return Ok(Some(Owner {
                partner_id: partner_id.to_owned(),
                token: CdrToken::of(&token),
                auth_method: method.to_owned(),
                authorization_reference: r.text(3).map(str::to_owned),
            }));
        }
    }
    let pushed = store
        .fetch(
            "SELECT partner_id, body FROM ocpi_tokens WHERE uid = $1 \
             ORDER BY CASE WHEN token_type = 'RFID' THEN 0 ELSE 1 END, received_at DESC LIMIT 1",
            &[id_tag.into()],
            &[Ty::Text, Ty::Json],
        )
        .await?;
    Ok(pushed.first().and_then(|r| {
        let token: Token = serde_json::from_value(r.json(1)?.clone()).ok()?;
        Some(Owner {
            partner_id: r.text(0)?.to_owned(),
            token: CdrToken::of(&token),
            auth_method: auth_method::WHITELIST.to_owned(),
            authorization_reference: None,
        })
    }))
}

/// The OCPI metadata of a published site (`None`: the site is no Location).
pub async fn location_meta(store: &Store, site_id: &str) -> Result<Option<Meta>, DbError> {
    let r = store
        .fetch_opt(
            "SELECT location_id, name, address, city, postal_code, country, latitude, longitude, time_zone, \
             publish, connector_standard, connector_format, power_type, max_voltage, max_amperage \
             FROM ocpi_locations WHERE site_id = $1",
            &[site_id.into()],
            &[
                Ty::Text,
                Ty::Text,
                Ty::Text,
                Ty::Text,
                Ty::Text,
                Ty::Text,
                Ty::Text,
                Ty::Text,
                Ty::Text,
                Ty::Bool,
                Ty::Text,
                Ty::Text,
                Ty::Text,
                Ty::Int,
                Ty::Int,
            ],
        )
        .await?;
    Ok(r.map(|r| {
        let text = |i| r.text(i).unwrap_or_default().to_owned();
        Meta {
            location_id: text(0),
            name: r.text(1).map(str::to_owned),
            address: text(2),
            city: text(3),
            postal_code: r.text(4).map(str::to_owned),
            country: text(5),
            latitude: text(6),
            longitude: text(7),
            time_zone: text(8),
            publish: r.bool(9).unwrap_or(true),
            connector_standard: text(10),
            connector_format: text(11),
            power_type: text(12),
            max_voltage: r.int(13).unwrap_or(230),
            max_amperage: r.int(14).unwrap_or(32),
        }
    }))
}

/// A session as ingest stored it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    pub site_id: String,
    pub transaction_uid: String,
    pub station: String,
    pub evse: Option<i64>,
    pub connector: Option<i64>,
    pub id_tag: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub meter_start_wh: Option<i64>,
    pub last_energy_wh: Option<i64>,
    pub last_energy_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub meter_stop_wh: Option<i64>,
    pub updated_at: Option<DateTime<Utc>>,
}

async fn session_row(store: &Store, site: &str, uid: &str) -> Result<Option<SessionRow>, DbError> {
    let r = store
        .fetch_opt(
            "SELECT station, evse, connector, id_tag, started_at, meter_start_wh, last_energy_wh, last_energy_at, \
             stopped_at, meter_stop_wh, updated_at FROM sessions WHERE site_id = $1 AND transaction_uid = $2",
            &[site.into(), uid.into()],
            &[Ty::Text, Ty::Int, Ty::Int, Ty::Text, Ty::Time, Ty::Int, Ty::Int, Ty::Time, Ty::Time, Ty::Int, Ty::Time],
        )
        .await?;
    Ok(r.map(|r| SessionRow {
        site_id: site.to_owned(),
        transaction_uid: uid.to_owned(),
        station: r.text(0).unwrap_or_default().to_owned(),
        evse: r.int(1),
        connector: r.int(2),
        id_tag: r.text(3).map(str::to_owned),
        started_at: r.time(4),
        meter_start_wh: r.int(5),
        last_energy_wh: r.int(6),
        last_energy_at: r.time(7),
        stopped_at: r.time(8),
        meter_stop_wh: r.int(9),
        updated_at: r.time(10),
    }))
}

/// What a session costs so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Costing {
    pub currency: String,
    pub total_cost: Price,
    pub charging_periods: Vec<ChargingPeriod>,
}

/// Wh as kWh, exactly.
pub fn kwh(wh: i64) -> Decimal {
    Decimal::new(wh, 3).normalize()
}

/// The Session of `row` (which has a start, an EVSE and a connector) for `owner`.
pub fn build(
    s: &Settings,
    row: &SessionRow,
    owner: &Owner,
    meta: &Meta,
    costing: Option<&Costing>,
    now: &str,
) -> Option<Session> {
    let started_at = row.started_at?;
    let start_wh = row.meter_start_wh.unwrap_or(0);
    let wh = match row.stopped_at {
        Some(_) => row.meter_stop_wh.or(row.last_energy_wh),
        None => row.last_energy_wh,
    }
    .map_or(0, |end| (end - start_wh).max(0));
    Some(Session {
        country_code: s.country_code.clone(),
        party_id: s.party_id.clone(),
        id: row.transaction_uid.clone(),
        start_date_time: timestamp(started_at),
        end_date_time: row.stopped_at.map(timestamp),
        kwh: kwh(wh),
        cdr_token: owner.token.clone(),
        auth_method: owner.auth_method.clone(),
        authorization_reference: owner.authorization_reference.clone(),
        location_id: meta.location_id.clone(),
        evse_uid: evse_uid(&meta.location_id, &row.station, row.evse?),
        connector_id: row.connector?.to_string(),
        meter_id: None,
        currency: costing.map_or_else(|| s.default_currency.clone(), |c| c.currency.clone()),
        charging_periods: costing.map(|c| c.charging_periods.clone()).unwrap_or_default(),
        total_cost: costing.map(|c| c.total_cost),
        status: if row.stopped_at.is_some() { "COMPLETED" } else { "ACTIVE" }.to_owned(),
        last_updated: now.to_owned(),
    })
}

/// The fields a PATCH carries (OCPI 2.2.1 "Sessions module", Receiver PATCH): what moves
/// while a session runs and ends.
#[derive(Debug, Serialize)]
struct SessionPatch<'a> {
    #[serde(skip_serializing_if = "Option::is_none", with = "decimal_json::option")]
    kwh: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_date_time: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    charging_periods: Option<&'a [ChargingPeriod]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_cost: Option<&'a Price>,
    last_updated: &'a str,
}

/// What to push when `previous` (as served) becomes `next`: nothing when the content is
/// the same (`next` then takes `previous`'s `last_updated`), a PATCH of the progress
/// fields when only they moved, else a PUT.
pub fn change(s: &Settings, previous: Option<&Session>, next: &mut Session) -> Option<Push> {
    let path = format!("/{}/{}/{}", s.country_code, s.party_id, next.id);
    let put = |next: &Session| Push {
        module: "sessions",
        method: Method::PUT,
        path: path.clone(),
        body: serde_json::to_string(next).unwrap_or_default(),
        cdr_id: None,
    };
    let Some(prev) = previous else { return Some(put(next)) };
    let same_as_next = |p: &Session| Session { last_updated: next.last_updated.clone(), ..p.clone() };
    if same_as_next(prev) == *next {
        next.last_updated.clone_from(&prev.last_updated);
        return None;
    }
    let progress_only = Session {
        kwh: next.kwh,
        status: next.status.clone(),
        end_date_time: next.end_date_time.clone(),
        charging_periods: next.charging_periods.clone(),
        total_cost: next.total_cost,
        ..same_as_next(prev)
    } == *next;
    if !progress_only || (prev.total_cost.is_some() && next.total_cost.is_none()) {
        return Some(put(next));
    }
    let patch = SessionPatch {
        kwh: (prev.kwh != next.kwh).then_some(next.kwh),
        status: (prev.status != next.status).then_some(next.status.as_str()),
        end_date_time: if prev.end_date_time != next.end_date_time { next.end_date_time.as_deref() } else { None },
        charging_periods: (prev.charging_periods != next.charging_periods).then_some(next.charging_periods.as_slice()),
        total_cost: if prev.total_cost != next.total_cost { next.total_cost.as_ref() } else { None },
        last_updated: &next.last_updated,
    };
    Some(Push {
        module: "sessions",
        method: Method::PATCH,
        path,
        body: serde_json::to_string(&patch).unwrap_or_default(),
        cdr_id: None,
    })
}

/// The latest debit CDR of a session that no credit cancels: `(id, costing)`.
async fn billed(store: &Store, site: &str, uid: &str) -> Result<Option<(String, Costing)>, DbError> {
    let r = store
        .fetch_opt(
            "SELECT c.id, c.currency, c.total_cost_excl_vat, c.total_cost_incl_vat, c.detail FROM cdrs c \
             WHERE c.site_id = $1 AND c.transaction_uid = $2 AND c.kind = 'debit' \
                 AND NOT EXISTS (SELECT 1 FROM cdrs k WHERE k.credits = c.id) \
             ORDER BY c.revision DESC LIMIT 1",
            &[site.into(), uid.into()],
            &[Ty::Text, Ty::Text, Ty::Text, Ty::Text, Ty::Text],
        )
        .await?;
    let Some(r) = r else { return Ok(None) };
    let id = r.text(0).unwrap_or_default().to_owned();
    let total_cost = Price {
        excl_vat: crate::billing::parse_decimal(r.text(2), "cdrs.total_cost_excl_vat")?,
        incl_vat: crate::billing::parse_decimal_opt(r.text(3), "cdrs.total_cost_incl_vat")?,
    };
    let detail = super::cdrs::Detail::parse(r.text(4).unwrap_or("{}"))?;
    Ok(Some((
        id,
        Costing { currency: r.text(1).unwrap_or_default().to_owned(), total_cost, charging_periods: detail.periods },
    )))
}

/// Prices a session that has no CDR (yet) with the site's tariff, up to its stop or its
/// last meter value. `None` when there is no tariff or the engine cannot price it.
async fn priced(store: &Store, pricer: &mut Pricer, row: &SessionRow) -> Result<Option<Costing>, DbError> {
    let (Some(started_at), Some(meter_start_wh)) = (row.started_at, row.meter_start_wh) else { return Ok(None) };
    let (end, end_wh) = match (row.stopped_at, row.meter_stop_wh) {
        (Some(at), Some(wh)) => (at, wh),
        _ => match (row.last_energy_at, row.last_energy_wh) {
            (Some(at), Some(wh)) if at > started_at => (at, wh),
            _ => return Ok(None),
        },
    };
    let Some((assignment, stored)) = tariff_at(store, &row.site_id, started_at).await? else { return Ok(None) };
    let finished = FinishedSession {
        site_id: row.site_id.clone(),
        transaction_uid: row.transaction_uid.clone(),
        station: row.station.clone(),
        evse: row.evse,
        connector: row.connector,
        id_tag: row.id_tag.clone(),
        started_at,
        stopped_at: end,
        meter_start_wh,
        meter_stop_wh: end_wh,
    };
    let samples = crate::billing::worker::samples(store, &finished).await?;
    let priced = billing_cdr::build_session(&finished, &assignment.time_zone, &samples)
        .and_then(|(session, _)| billing_cdr::price(pricer, &stored.tariff, &session));
    Ok(priced.ok().map(|p| Costing {
        currency: p.currency,
        total_cost: p.totals.total_cost,
        charging_periods: p.charging_periods,
    }))
}

/// Rebuilds one session's OCPI Session; pushes what changed. Skipped (for the next pass)
/// when the session or its CDR moved while it was being built.
pub async fn refresh_session(state: &OcpiState, pricer: &mut Pricer, site: &str, uid: &str) -> Result<(), DbError> {
    let store = &state.store;
    let Some(row) = session_row(store, site, uid).await? else { return Ok(()) };
    let (Some(id_tag), Some(started_at)) = (row.id_tag.as_deref(), row.started_at) else { return Ok(()) };
    let Some(owner) = owner(store, id_tag, started_at).await? else { return Ok(()) };
    let Some(meta) = location_meta(store, site).await? else { return Ok(()) };
    let bill = billed(store, site, uid).await?;
    let costing = match &bill {
        Some((_, c)) => Some(c.clone()),
        None => priced(store, pricer, &row).await?,
    };
    let now = timestamp(Utc::now());
    let Some(mut next) = build(&state.settings, &row, &owner, &meta, costing.as_ref(), &now) else { return Ok(()) };
    const STORED: &str = "SELECT partner_id, body FROM ocpi_sessions WHERE site_id = $1 AND transaction_uid = $2";
    let parse = |r: Option<crate::db::Row>| -> Option<(String, Session)> {
        let r = r?;
        Some((r.text(0)?.to_owned(), serde_json::from_str::<Session>(r.text(1)?).ok()?))
    };
    // Most passes change nothing: find that out without taking the site's lock.
    let before = parse(store.fetch_opt(STORED, &[site.into(), uid.into()], &[Ty::Text, Ty::Text]).await?);
    let unchanged = before
        .as_ref()
        .filter(|(p, _)| *p == owner.partner_id)
        .is_some_and(|(_, prev)| change(&state.settings, Some(prev), &mut next.clone()).is_none());
    if unchanged {
        return Ok(());
    }
    let receiver = push::receivers(store, "sessions").await?.into_iter().any(|p| p.id == owner.partner_id);

    // Nothing below uses the pool while the transaction holds the site (and, on SQLite,
    // the write lock): with every pooled connection waiting for that lock, it would wait
    // for ever.
    let mut tx = store.begin().await?;
    if tx.lock_site(site).await?.is_none() {
        return tx.rollback().await;
    }
    // Optimistic: what the Session was built from must still be current.
    let current = tx
        .fetch_opt(
            "SELECT s.updated_at, (SELECT c.id FROM cdrs c WHERE c.site_id = s.site_id \
                 AND c.transaction_uid = s.transaction_uid AND c.kind = 'debit' \
                 AND NOT EXISTS (SELECT 1 FROM cdrs k WHERE k.credits = c.id) ORDER BY c.revision DESC LIMIT 1) \
             FROM sessions s WHERE s.site_id = $1 AND s.transaction_uid = $2",
            &[site.into(), uid.into()],
            &[Ty::Time, Ty::Text],
        )
        .await?;
    let bill_id = bill.as_ref().map(|(id, _)| id.as_str());
    if current.as_ref().map(|r| (r.time(0), r.text(1))) != Some((row.updated_at, bill_id)) {
        return tx.rollback().await;
    }
    let previous = parse(tx.fetch_opt(STORED, &[site.into(), uid.into()], &[Ty::Text, Ty::Text]).await?);
    let same_partner = previous.as_ref().filter(|(p, _)| *p == owner.partner_id).map(|(_, s)| s);
    let Some(push) = change(&state.settings, same_partner, &mut next) else {
        return tx.rollback().await;
    };
    let body = serde_json::to_string(&next).map_err(|e| DbError::Data(format!("a Session does not serialise: {e}")))?;
    let last_updated_ms = parse_timestamp(&next.last_updated).map_or(0, |t| t.timestamp_millis());
    tx.exec(
        "INSERT INTO ocpi_sessions (site_id, transaction_uid, partner_id, body, last_updated_ms, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (site_id, transaction_uid) DO UPDATE SET partner_id = excluded.partner_id, \
             body = excluded.body, last_updated_ms = excluded.last_updated_ms, updated_at = excluded.updated_at",
        &[
            site.into(),
            uid.into(),
            owner.partner_id.as_str().into(),
            body.into(),
            last_updated_ms.into(),
            Utc::now().into(),
        ],
    )
    .await?;
    let pushed = state.settings.push && receiver;
    if pushed {
        push::enqueue_in(&mut tx, &owner.partner_id, &push).await?;
    }
    tx.commit().await?;
    if pushed {
        state.push.wake();
    }
    Ok(())
}

/// The roaming sessions (their id tag is a partner's) at published sites that changed at
/// or after `since` (all when `None`).
async fn candidates(store: &Store, since: Option<DateTime<Utc>>) -> Result<Vec<(String, String)>, DbError> {
    let rows = store
        .fetch(
            "SELECT s.site_id, s.transaction_uid FROM sessions s \
             WHERE ($1 IS NULL OR s.updated_at >= $1) AND s.id_tag IS NOT NULL AND s.started_at IS NOT NULL \
                 AND (EXISTS (SELECT 1 FROM ocpi_tokens t WHERE t.uid = s.id_tag) \
                     OR EXISTS (SELECT 1 FROM ocpi_authorizations a WHERE a.id_tag = s.id_tag \
                         AND a.allowed = 'ALLOWED')) \
                 AND EXISTS (SELECT 1 FROM ocpi_locations l WHERE l.site_id = s.site_id) \
             ORDER BY s.site_id, s.transaction_uid",
            &[since.into()],
            &[Ty::Text, Ty::Text],
        )
        .await?;
    Ok(rows.iter().filter_map(|r| Some((r.text(0)?.to_owned(), r.text(1)?.to_owned()))).collect())
}

/// One pass: new CDRs of roaming sessions become OCPI CDRs (POSTed), and every roaming
/// session that changed (or got a CDR) is rebuilt. Runs every `refresh_interval` and
/// before every `GET sessions` / `GET cdrs`.
pub async fn refresh(state: &OcpiState) -> Result<(), DbError> {
    let mut since = state.sessions.since.lock().await;
    let started = Utc::now();
    let mut touched = super::cdrs::scan(state, *since).await?;
    touched.extend(candidates(&state.store, *since).await?);
    touched.sort();
    touched.dedup();
    let mut pricer = Pricer::new();
    for (site, uid) in &touched {
        refresh_session(state, &mut pricer, site, uid).await?;
    }
    *since = Some(started - OVERLAP);
    Ok(())
}

async fn fresh(state: &OcpiState) -> OcpiResult<()> {
    refresh(state).await.map_err(|e| OcpiError::db("refreshing the sessions", &e))
}

/// A page of stored objects (`ocpi_sessions` or `ocpi_cdrs`) of one partner, as served.
pub(super) async fn page_of(
    state: &OcpiState,
    table: Table,
    partner_id: &str,
    page: &PageRequest,
    module: &str,
) -> OcpiResult<Response> {
    let from = page.date_from.map_or(i64::MIN, |t| t.timestamp_millis());
    let to = page.date_to.map_or(i64::MAX, |t| t.timestamp_millis());
    let db = |e: DbError| OcpiError::db(&format!("listing the {module}"), &e);
    let (count_sql, page_sql) = match table {
        Table::Sessions => (
            "SELECT COUNT(*) FROM ocpi_sessions WHERE partner_id = $1 AND last_updated_ms >= $2 \
             AND last_updated_ms < $3",
            "SELECT body FROM ocpi_sessions WHERE partner_id = $1 AND last_updated_ms >= $2 \
             AND last_updated_ms < $3 ORDER BY last_updated_ms, site_id, transaction_uid LIMIT $4 OFFSET $5",
        ),
        Table::Cdrs => (
            "SELECT COUNT(*) FROM ocpi_cdrs WHERE partner_id = $1 AND last_updated_ms >= $2 \
             AND last_updated_ms < $3",
            "SELECT body FROM ocpi_cdrs WHERE partner_id = $1 AND last_updated_ms >= $2 \
             AND last_updated_ms < $3 ORDER BY last_updated_ms, cdr_id LIMIT $4 OFFSET $5",
        ),
    };
    let total = state
        .store
        .fetch_opt(count_sql, &[partner_id.into(), from.into(), to.into()], &[Ty::Int])
        .await
        .map_err(db)?
        .and_then(|r| r.int(0))
        .unwrap_or(0);
    let offset = i64::try_from(page.offset).unwrap_or(i64::MAX);
    let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
    let rows = state
        .store
        .fetch(page_sql, &[partner_id.into(), from.into(), to.into(), limit.into(), offset.into()], &[Ty::Text])
        .await
        .map_err(db)?;
    // The stored JSON text as is: money stays exact.
    let mut items: Vec<Box<RawValue>> = Vec::with_capacity(rows.len());
    for r in &rows {
        let text = r.text(0).unwrap_or("null").to_owned();
        items.push(RawValue::from_string(text).map_err(|e| db(DbError::Data(format!("a stored {module} body: {e}"))))?);
    }
    let mut response = transport::ok(items);
    let total = u64::try_from(total).unwrap_or(0);
    response.headers_mut().extend(page.headers(total, &format!("{}/{module}", state.settings.version_url())));
    Ok(response)
}

/// Which stored objects [`page_of`] reads.
#[derive(Debug, Clone, Copy)]
pub(super) enum Table {
    Sessions,
    Cdrs,
}

/// `GET sessions?date_from=...`: a page of the caller's Sessions by `last_updated`.
pub async fn list(State(state): State<OcpiState>, caller: CallerExt, uri: Uri) -> Response {
    let inner = async {
        let page = PageRequest::parse(&uri, state.settings.max_page_limit)?;
        if page.date_from.is_none() {
            return Err(OcpiError::invalid(
                "date_from is required for sessions (OCPI 2.2.1 Sessions module, GET): e.g. \
                 ?date_from=2026-01-01T00:00:00Z",
            ));
        }
        fresh(&state).await?;
        page_of(&state, Table::Sessions, &caller.partner.id, &page, "sessions").await
    };
    match inner.await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// `PUT sessions/{session_id}/charging_preferences`: the eMSP's driver preferences. The
/// sites plan with their own departure times and limits, so a valid request for one of
/// the caller's sessions is answered `NOT_POSSIBLE` (OCPI 2.2.1 allows a CPO that cannot
/// honour preferences to say so); a session that is not the caller's is unknown (2003).
pub async fn charging_preferences(
    State(state): State<OcpiState>,
    caller: CallerExt,
    Path(session_id): Path<String>,
    body: Bytes,
) -> Response {
    let inner = async {
        let Ok(Value::Object(prefs)) = serde_json::from_slice::<Value>(&body) else {
            return Err(OcpiError::invalid("the body must be a ChargingPreferences object"));
        };
        match prefs.get("profile_type").and_then(Value::as_str) {
            Some("CHEAP" | "FAST" | "GREEN" | "REGULAR") => {}
            other => {
                return Err(OcpiError::invalid(format!(
                    "profile_type {other:?} is not one of CHEAP, FAST, GREEN, REGULAR"
                )));
            }
        }
        if let Some(d) = prefs.get("departure_time")
            && d.as_str().and_then(parse_timestamp).is_none()
        {
            return Err(OcpiError::invalid(format!("departure_time {d} is not an RFC 3339 time")));
        }
        if let Some(e) = prefs.get("energy_need")
            && !e.as_f64().is_some_and(|v| v >= 0.0)
        {
            return Err(OcpiError::invalid(format!("energy_need {e} is not a number of kWh >= 0")));
        }
        let found = state
            .store
            .fetch_opt(
                "SELECT body FROM ocpi_sessions WHERE transaction_uid = $1 AND partner_id = $2",
                &[session_id.as_str().into(), caller.partner.id.as_str().into()],
                &[Ty::Text],
            )
            .await
            .map_err(|e| OcpiError::db("reading a session", &e))?;
        if found.is_none() {
            return Err(OcpiError::new(
                StatusCode::NOT_FOUND,
                status::UNKNOWN_LOCATION,
                format!("no session {session_id:?} of yours"),
            ));
        }
        Ok(transport::ok("NOT_POSSIBLE"))
    };
    match inner.await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings() -> Settings {
        Settings {
            country_code: "DE".into(),
            party_id: "SPL".into(),
            business_name: "x".into(),
            base_url: "http://h".into(),
            push: true,
            rotation_grace: chrono::Duration::seconds(1),
            max_page_limit: 10,
            command_timeout_s: 60,
            refresh_interval: Duration::from_millis(100),
            push_retry_min: Duration::from_millis(500),
            push_retry_max: Duration::from_secs(30),
            default_currency: "EUR".into(),
            realtime_auth_timeout: Duration::from_millis(1500),
            authorize_unknown_tokens: true,
            auth_rate_per_s: 5.0,
            auth_burst: 20,
        }
    }

    fn meta() -> Meta {
        Meta {
            location_id: "LOC1".into(),
            name: None,
            address: "a".into(),
            city: "c".into(),
            postal_code: None,
            country: "DEU".into(),
            latitude: "1.0".into(),
            longitude: "2.0".into(),
            time_zone: "Europe/Berlin".into(),
            publish: true,
            connector_standard: "IEC_62196_T2".into(),
            connector_format: "SOCKET".into(),
            power_type: "AC_3_PHASE".into(),
            max_voltage: 230,
            max_amperage: 32,
        }
    }

    fn owner() -> Owner {
        Owner {
            partner_id: "emsp".into(),
            token: CdrToken {
                country_code: "NL".into(),
                party_id: "EMS".into(),
                uid: "TAG".into(),
                token_type: "RFID".into(),
                contract_id: "NL-EMS-TAG".into(),
            },
            auth_method: auth_method::AUTH_REQUEST.into(),
            authorization_reference: Some("ref-1".into()),
        }
    }

    fn row() -> SessionRow {
        let t = |m| chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 11, 21, 12, m, 0).single().expect("time");
        SessionRow {
            site_id: "s".into(),
            transaction_uid: "tx-1".into(),
            station: "CP-1".into(),
            evse: Some(1),
            connector: Some(1),
            id_tag: Some("TAG".into()),
            started_at: Some(t(0)),
            meter_start_wh: Some(1000),
            last_energy_wh: Some(3500),
            last_energy_at: Some(t(10)),
            stopped_at: None,
            meter_stop_wh: None,
            updated_at: Some(t(10)),
        }
    }

    #[test]
    fn an_active_session_then_its_progress_is_patched() {
        let s = settings();
        let mut first = build(&s, &row(), &owner(), &meta(), None, "2026-11-21T12:10:00.000Z").expect("built");
        assert_eq!((first.status.as_str(), first.kwh.to_string().as_str()), ("ACTIVE", "2.5"));
        assert_eq!((first.evse_uid.as_str(), first.connector_id.as_str()), ("LOC1*CP-1*1", "1"));
        assert_eq!((first.currency.as_str(), first.total_cost), ("EUR", None));
        let put = change(&s, None, &mut first).expect("new: PUT");
        assert_eq!((put.method, put.path.as_str()), (Method::PUT, "/DE/SPL/tx-1"));

        // Nothing moved: nothing to push, last_updated kept.
        let mut same = build(&s, &row(), &owner(), &meta(), None, "2026-11-21T12:11:00.000Z").expect("built");
        assert!(change(&s, Some(&first), &mut same).is_none());
        assert_eq!(same.last_updated, first.last_updated);

        // Stopped: a PATCH of kwh, status, end and last_updated only.
        let mut stopped_row = row();
        stopped_row.stopped_at = stopped_row.last_energy_at;
        stopped_row.meter_stop_wh = Some(4000);
        let mut done = build(&s, &stopped_row, &owner(), &meta(), None, "2026-11-21T12:12:00.000Z").expect("built");
        let patch = change(&s, Some(&first), &mut done).expect("changed");
        assert_eq!(patch.method, Method::PATCH);
        let body: Value = serde_json::from_str(&patch.body).expect("json");
        let mut keys: Vec<&str> = body.as_object().expect("object").keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, vec!["end_date_time", "kwh", "last_updated", "status"], "{body}");
        assert_eq!(body["status"], "COMPLETED");
        assert!(patch.body.contains(r#""kwh":3"#), "{}", patch.body);
        assert_eq!(done.last_updated, "2026-11-21T12:12:00.000Z");

        // Another token (a new owner's): the whole Session again.
        let mut other = owner();
        other.token.contract_id = "NL-EMS-OTHER".into();
        let mut moved = build(&s, &stopped_row, &other, &meta(), None, "2026-11-21T12:13:00.000Z").expect("built");
        assert_eq!(change(&s, Some(&done), &mut moved).map(|p| p.method), Some(Method::PUT));
    }

    #[test]
    fn costs_come_with_their_currency() {
        let s = settings();
        let costing = Costing {
            currency: "CHF".into(),
            total_cost: Price { excl_vat: "1.2345".parse().expect("d"), incl_vat: None },
            charging_periods: Vec::new(),
        };
        let built = build(&s, &row(), &owner(), &meta(), Some(&costing), "2026-11-21T12:10:00.000Z").expect("built");
        assert_eq!(built.currency, "CHF");
        let json = serde_json::to_string(&built).expect("json");
        assert!(json.contains(r#""total_cost":{"excl_vat":1.2345}"#), "{json}");
        let mut no_evse = row();
        no_evse.evse = None;
        assert!(build(&s, &no_evse, &owner(), &meta(), None, "x").is_none(), "a Session names its EVSE");
    }
}
