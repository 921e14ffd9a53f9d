//! The tariffs module, Sender interface (OCPI 2.2.1 "Tariffs module").
//!
//! Every tariff of the fleet API (`PUT /api/v1/tariffs/{id}`, table `tariffs`) is served
//! as stored, with our `country_code` / `party_id` from `[ocpi]` (the fleet API lets a
//! manager write any; a partner must see the CPO that owns the tariff). Its
//! `last_updated` is the one billing stored: it moves only when the content does.
//!
//! Pushes (Receiver interface of the eMSPs, `PUT {tariffs}/{country_code}/{party_id}/{id}`):
//! each refresh compares every tariff's `last_updated` with the one it saw before and
//! pushes the new and changed ones. The first refresh of a hub only learns them: what
//! changed while the hub was down a partner fetches with `GET tariffs?date_from=`.

use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use shared_model::tariff::Tariff;
use std::collections::HashMap;

use super::transport::{self, OcpiError, OcpiResult, PageRequest};
use super::{CallerExt, OcpiState, Settings};
use crate::db::{DbError, Store, Ty};

/// The tariffs as served: ours, sorted by id.
pub async fn all(store: &Store, s: &Settings) -> Result<Vec<Tariff>, DbError> {
    let rows = store.fetch("SELECT body FROM tariffs ORDER BY id", &[], &[Ty::Text]).await?;
    rows.iter()
        .map(|r| {
            let body = r.text(0).ok_or_else(|| DbError::Data("tariffs.body is NULL".into()))?;
            let mut t: Tariff = serde_json::from_str(body)
                .map_err(|e| DbError::Data(format!("a stored tariff does not parse: {e}")))?;
            t.country_code.clone_from(&s.country_code);
            t.party_id.clone_from(&s.party_id);
            Ok(t)
        })
        .collect()
}

/// `GET tariffs`: a page of Tariffs by id, filtered on `last_updated` (`date_from`
/// inclusive, `date_to` exclusive).
pub async fn list(State(state): State<OcpiState>, _caller: CallerExt, uri: Uri) -> Response {
    match list_inner(&state, &uri).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn list_inner(state: &OcpiState, uri: &Uri) -> OcpiResult<Response> {
    let page = PageRequest::parse(uri, state.settings.max_page_limit)?;
    let tariffs = all(&state.store, &state.settings).await.map_err(|e| OcpiError::db("listing the tariffs", &e))?;
    // Filtered here rather than in SQL: the stored time's text form differs between the
    // databases, and a fleet has few tariffs.
    let matching: Vec<Tariff> = tariffs
        .into_iter()
        .filter(|t| {
            page.date_from.is_none_or(|f| t.last_updated >= f) && page.date_to.is_none_or(|to| t.last_updated < to)
        })
        .collect();
    let total = u64::try_from(matching.len()).unwrap_or(u64::MAX);
    let offset = usize::try_from(page.offset).unwrap_or(usize::MAX);
    let limit = usize::try_from(page.limit).unwrap_or(usize::MAX);
    let body: Vec<Tariff> = matching.into_iter().skip(offset).take(limit).collect();
    let mut response = transport::ok(body);
    response.headers_mut().extend(page.headers(total, &format!("{}/tariffs", state.settings.version_url())));
    Ok(response)
}

/// What the tariff scan has seen: `last_updated` by tariff id (`None` before the first scan).
#[derive(Debug, Default)]
pub struct Seen {
    seen: tokio::sync::Mutex<Option<HashMap<String, DateTime<Utc>>>>,
}

/// The tariffs created or changed since the previous scan (none on the first scan).
pub async fn scan(state: &OcpiState) -> Result<Vec<Tariff>, DbError> {
    let mut seen = state.tariffs_seen.seen.lock().await;
    let tariffs = all(&state.store, &state.settings).await?;
    let now: HashMap<String, DateTime<Utc>> = tariffs.iter().map(|t| (t.id.clone(), t.last_updated)).collect();
    let changed = match seen.as_ref() {
        None => Vec::new(),
        Some(before) => tariffs.into_iter().filter(|t| before.get(&t.id) != Some(&t.last_updated)).collect(),
    };
    *seen = Some(now);
    Ok(changed)
}
