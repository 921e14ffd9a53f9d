//! The locations module, Sender interface (OCPI 2.2.1 "Locations module").
//!
//! A site with OCPI metadata (table `ocpi_locations`) is one Location; each of its
//! chargers' EVSEs (evse > 0) is an EVSE with uid `{location_id}*{station}*{evse}`, each
//! connector a Connector. The EVSE status follows the live connector status ingest
//! stored (UNKNOWN while the charger is disconnected).
//!
//! The generated Location is stored (`body`) with the `last_updated` of it, each EVSE and
//! each connector. A refresh rebuilds a site's Location when ingest applied events since
//! the last build (`source_seq` behind the site's `applied_through`) or its metadata
//! changed, and keeps every object's previous `last_updated` unless its content (without
//! any `last_updated`) changed, so incremental syncs with `date_from` stay incremental.
//! A refresh runs every `refresh_interval_ms` and before every GET; the site's lock is
//! held while it builds (PostgreSQL `SELECT ... FOR UPDATE` on the site; SQLite's write
//! lock), so a stale build never overwrites a newer one, on any replica.

use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use shared_model::ocpi::{Connector, Evse, GeoLocation, Location, parse_timestamp, timestamp};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use super::transport::{self, OcpiError, OcpiResult, PageRequest};
use super::{CallerExt, OcpiState, Settings};
use crate::db::{DbError, Row, Store, Ty, Val};

/// Serialises refreshes within one hub (replicas are kept apart by the site lock), and
/// lets the GETs waiting for one share it.
#[derive(Debug, Default)]
pub struct Refresher {
    lock: tokio::sync::Mutex<()>,
    /// Refreshes begun, and the number of the last one completed.
    begun: AtomicU64,
    completed: AtomicU64,
    /// The [`Signature`] read before the last refresh that found nothing to rebuild: while
    /// the database shows the same one, nothing is out of date.
    clean: std::sync::Mutex<Option<Signature>>,
    /// The `X-Total-Count`s of GET locations at one signature.
    counts: std::sync::Mutex<Counts>,
}

/// What makes a Location out of date, in one cheap read: the sum of the counters in
/// `ocpi_location_changes` (migration 12). Database triggers bump one of them in every
/// transaction that applies events to a site (raises `applied_through`), builds a
/// Location, changes its metadata, or adds or removes a site or Location — on whichever
/// replica, and visible exactly when that transaction commits. It only ever grows, so the
/// same signature read twice means nothing was committed in between. (It replaces sums
/// of `applied_through` and `source_seq` over every site and Location: two scans of
/// 10 000 rows per GET at 100 000 EVSEs, and sums that a rebuild and a metadata change
/// committed together could leave unchanged.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Signature(i64);

const SIGNATURE_SQL: &str = "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM ocpi_location_changes";

async fn signature(store: &Store) -> Result<Option<Signature>, DbError> {
    let row = store.fetch_opt(SIGNATURE_SQL, &[], &[Ty::Int]).await?;
    Ok(row.and_then(|r| Some(Signature(r.int(0)?))))
}

/// How many `last_updated` windows [`Counts`] keeps: each partner's incremental sync asks
/// its own; a full crawl asks none.
const COUNTED_WINDOWS: usize = 64;

/// The number of published Locations per `last_updated` window (milliseconds, `[from,
/// to)`), counted after `at` was read: they change only with the signature, so while the
/// database shows `at` they are exact and a page needs no count of its own (an index
/// scan of every Location per GET). Entries of an older signature are never used again.
#[derive(Debug, Default)]
struct Counts {
    at: Option<Signature>,
    by_window: HashMap<(i64, i64), i64>,
}

impl Counts {
    fn get(&self, at: Signature, window: (i64, i64)) -> Option<i64> {
        if self.at == Some(at) { self.by_window.get(&window).copied() } else { None }
    }

    /// Keeps `count`, counted after `at` was read.
    fn put(&mut self, at: Signature, window: (i64, i64), count: i64) {
        if self.at != Some(at) || self.by_window.len() >= COUNTED_WINDOWS {
            self.by_window.clear();
            self.at = Some(at);
        }
        self.by_window.insert(window, count);
    }
}

/// What a refresh changed, to push to the eMSPs' locations Receiver.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// New, or changed outside its EVSEs' statuses: PUT the whole Location.
    Location(Location),
    /// A new or changed EVSE: PUT it.
    Evse { location_id: String, evse: Evse },
    /// Only the EVSE's status changed: PATCH `status` and `last_updated`.
    EvseStatus { location_id: String, uid: String, status: String, last_updated: String },
}

/// The EVSE uid (OCPI: unique within the CPO, `CiString(36)`): `{location}*{station}*{evse}`,
/// or the first 36 hex digits of its SHA-256 when that is longer.
pub fn evse_uid(location_id: &str, station: &str, evse: i64) -> String {
    let uid = format!("{location_id}*{station}*{evse}");
    if uid.len() <= 36 {
        uid
    } else {
        Sha256::digest(uid.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>()[..36].to_owned()
    }
}

/// The OCPI EVSE status of connectors with these (OCPP, as stored) statuses.
pub fn evse_status<'a>(statuses: impl IntoIterator<Item = &'a str>, connected: Option<bool>) -> &'static str {
    if connected == Some(false) {
        return "UNKNOWN";
    }
    let statuses: Vec<&str> = statuses.into_iter().collect();
    let any = |names: &[&str]| statuses.iter().any(|s| names.contains(s));
    if any(&["Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Finishing", "Occupied"]) {
        "CHARGING"
    } else if any(&["Reserved"]) {
        "RESERVED"
    } else if any(&["Available"]) {
        "AVAILABLE"
    } else if any(&["Faulted"]) {
        "OUTOFORDER"
    } else if any(&["Unavailable"]) {
        "INOPERATIVE"
    } else {
        "UNKNOWN"
    }
}

/// A value without any `last_updated`: what "the content changed" compares.
fn content(v: &impl serde::Serialize) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.remove("last_updated");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(v).unwrap_or(Value::Null);
    strip(&mut v);
    v
}

/// The metadata of a published site.
#[derive(Debug, Clone)]
pub struct Meta {
    pub location_id: String,
    pub name: Option<String>,
    pub address: String,
    pub city: String,
    pub postal_code: Option<String>,
    pub country: String,
    pub latitude: String,
    pub longitude: String,
    pub time_zone: String,
    pub publish: bool,
    pub connector_standard: String,
    pub connector_format: String,
    pub power_type: String,
    pub max_voltage: i64,
    pub max_amperage: i64,
}

/// One stored connector status: `(station, evse, connector, status, charger connected)`.
pub type SourceRow = (String, i64, i64, String, Option<bool>);

/// One EVSE's rows: connector ids, their statuses, whether the charger is connected.
type Group<'a> = (Vec<i64>, Vec<&'a str>, Option<bool>);

/// Builds the Location from the live rows, keeping `previous`'s `last_updated` where the
/// content did not change; the changes to push.
pub fn build(
    s: &Settings,
    meta: &Meta,
    rows: &[SourceRow],
    previous: Option<&Location>,
    now: &str,
) -> (Location, Vec<Change>) {
    let mut groups: BTreeMap<(&str, i64), Group<'_>> = BTreeMap::new();
    for (station, evse, connector, status, connected) in rows {
        let g = groups.entry((station.as_str(), *evse)).or_default();
        g.0.push(*connector);
        g.1.push(status.as_str());
        g.2 = *connected;
    }
    let prev_evses: HashMap<&str, &Evse> =
        previous.map(|l| l.evses.iter().map(|e| (e.uid.as_str(), e)).collect()).unwrap_or_default();
    let mut evses = Vec::with_capacity(groups.len());
    let mut changes = Vec::new();
    for ((station, evse_no), (mut connector_ids, statuses, connected)) in groups {
        connector_ids.sort_unstable();
        let uid = evse_uid(&meta.location_id, station, evse_no);
        let prev = prev_evses.get(uid.as_str()).copied();
        let connectors = connector_ids
            .iter()
            .map(|id| {
                let mut c = Connector {
                    id: id.to_string(),
                    standard: meta.connector_standard.clone(),
                    format: meta.connector_format.clone(),
                    power_type: meta.power_type.clone(),
                    max_voltage: meta.max_voltage,
                    max_amperage: meta.max_amperage,
                    last_updated: now.to_owned(),
                };
                if let Some(pc) = prev.and_then(|e| e.connectors.iter().find(|pc| pc.id == c.id))
                    && content(pc) == content(&c)
                {
                    c.last_updated = pc.last_updated.clone();
                }
                c
            })
            .collect();
        let mut e = Evse {
            uid,
            status: evse_status(statuses, connected).to_owned(),
            physical_reference: None,
            connectors,
            last_updated: now.to_owned(),
        };
        match prev {
            Some(p) if content(p) == content(&e) => e.last_updated = p.last_updated.clone(),
            Some(p) if content(&Evse { status: e.status.clone(), ..p.clone() }) == content(&e) => {
                changes.push(Change::EvseStatus {
                    location_id: meta.location_id.clone(),
                    uid: e.uid.clone(),
                    status: e.status.clone(),
                    last_updated: e.last_updated.clone(),
                });
            }
            _ => changes.push(Change::Evse { location_id: meta.location_id.clone(), evse: e.clone() }),
        }
        evses.push(e);
    }
    let mut location = Location {
        country_code: s.country_code.clone(),
        party_id: s.party_id.clone(),
        id: meta.location_id.clone(),
        publish: meta.publish,
        name: meta.name.clone(),
        address: meta.address.clone(),
        city: meta.city.clone(),
        postal_code: meta.postal_code.clone(),
        country: meta.country.clone(),
        coordinates: GeoLocation { latitude: meta.latitude.clone(), longitude: meta.longitude.clone() },
        evses,
        time_zone: meta.time_zone.clone(),
        last_updated: now.to_owned(),
    };
    match previous {
        Some(p) if content(p) == content(&location) => {
            location.last_updated = p.last_updated.clone();
            changes.clear();
        }
        Some(p) => {
            let shell = |l: &Location| content(&Location { evses: Vec::new(), ..l.clone() });
            let removed = p.evses.iter().any(|pe| !location.evses.iter().any(|e| e.uid == pe.uid));
            if removed || shell(p) != shell(&location) {
                changes = vec![Change::Location(location.clone())];
            }
        }
        None => changes = vec![Change::Location(location.clone())],
    }
    (location, changes)
}

const META_SQL: &str = "SELECT location_id, name, address, city, postal_code, country, latitude, longitude, time_zone, \
                        publish, connector_standard, connector_format, power_type, max_voltage, max_amperage, \
                        source_seq, body FROM ocpi_locations WHERE site_id = $1";
const META_TYPES: [Ty; 17] = [
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
    Ty::Int,
    Ty::Text,
];

/// Rebuilds one site's Location if ingest moved on or its metadata changed; the changes.
pub async fn refresh_site(store: &Store, s: &Settings, site_id: &str) -> Result<Vec<Change>, DbError> {
    let mut tx = store.begin().await?;
    let Some(applied) = tx.lock_site(site_id).await? else {
        tx.rollback().await?;
        return Ok(Vec::new());
    };
    let Some(r) = tx.fetch_opt(META_SQL, &[site_id.into()], &META_TYPES).await? else {
        tx.rollback().await?;
        return Ok(Vec::new());
    };
    if r.int(15) == Some(applied) {
        tx.rollback().await?;
        return Ok(Vec::new());
    }
    let text = |i| r.text(i).unwrap_or_default().to_owned();
    let meta = Meta {
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
    };
    let previous: Option<Location> = r.text(16).and_then(|v| serde_json::from_str(v).ok());
    let rows = tx
        .fetch(
            "SELECT c.station, c.evse, c.connector, c.status, ch.connected FROM connectors c \
             LEFT JOIN chargers ch ON ch.site_id = c.site_id AND ch.station = c.station \
             WHERE c.site_id = $1 AND c.evse > 0 AND c.connector > 0",
            &[site_id.into()],
            &[Ty::Text, Ty::Int, Ty::Int, Ty::Text, Ty::Bool],
        )
        .await?;
    let rows: Vec<SourceRow> = rows
        .iter()
        .map(|r| {
            (
                r.text(0).unwrap_or_default().to_owned(),
                r.int(1).unwrap_or(0),
                r.int(2).unwrap_or(0),
                r.text(3).unwrap_or_default().to_owned(),
                r.bool(4),
            )
        })
        .collect();
    let now = chrono::Utc::now();
    let (location, changes) = build(s, &meta, &rows, previous.as_ref(), &timestamp(now));
    let hash: String =
        Sha256::digest(content(&location).to_string().as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    // Stored as text, as it is served (spliced into the page's envelope).
    let body =
        serde_json::to_string(&location).map_err(|e| DbError::Data(format!("a Location does not serialise: {e}")))?;
    let last_updated_ms = parse_timestamp(&location.last_updated).map(|t| t.timestamp_millis());
    tx.exec(
        "UPDATE ocpi_locations SET source_seq = $2, content_hash = $3, body = $4, last_updated_ms = $5, \
             updated_at = $6 WHERE site_id = $1",
        &[site_id.into(), applied.into(), hash.into(), body.into(), last_updated_ms.into(), now.into()],
    )
    .await?;
    tx.commit().await?;
    Ok(changes)
}

/// Rebuilds every site whose Location may be out of date and hands the changes to the
/// pushes, then does the same for new or changed tariffs ([`super::tariffs::scan`]); how
/// many sites were rebuilt.
pub async fn refresh(state: &OcpiState) -> Result<usize, DbError> {
    let _guard = state.locations.lock.lock().await;
    refresh_locked(state).await
}

async fn refresh_locked(state: &OcpiState) -> Result<usize, DbError> {
    let run = state.locations.begun.fetch_add(1, Ordering::SeqCst) + 1;
    // Read before looking: whatever changes after it changes the signature.
    let before = signature(&state.store).await?;
    let refreshed = refresh_now(state).await;
    if let Ok(rebuilt) = refreshed {
        state.locations.completed.fetch_max(run, Ordering::SeqCst);
        let clean = if rebuilt == 0 { before } else { None };
        *state.locations.clean.lock().unwrap_or_else(|p| p.into_inner()) = clean;
    }
    refreshed
}

/// A refresh for a GET: what ingest applied before the GET arrived is in what it
/// serves. A refresh that began after the GET arrived and completed is as good as one
/// of its own, so GETs that come together share one instead of queueing one each
/// behind the lock; and while the database's [`Signature`] is the one a refresh found
/// everything up to date at, there is nothing to look for and nothing to wait for (the
/// signature costs a read of 64 counters; looking, a join of every Location with its
/// site). The refresh loop always looks.
pub async fn refresh_for_read(state: &OcpiState) -> Result<(), DbError> {
    refresh_for_read_at(state).await.map(|_| ())
}

/// [`refresh_for_read`], and a [`Signature`] read after the GET arrived at which every
/// Location was up to date, when known (not after a refresh that rebuilt some).
async fn refresh_for_read_at(state: &OcpiState) -> Result<Option<Signature>, DbError> {
    let arrived = state.locations.begun.load(Ordering::SeqCst);
    let clean = || *state.locations.clean.lock().unwrap_or_else(|p| p.into_inner());
    // Up to date without waiting for the lock: a signature read after the GET arrived that
    // is still the one of a refresh that found nothing to do means nothing was committed
    // since that refresh looked. (Checking under the lock made concurrent GETs queue for
    // each other's database round trips.)
    let before = clean();
    if before.is_some() && signature(&state.store).await? == before {
        return Ok(before);
    }
    let _guard = state.locations.lock.lock().await;
    // The last refresh that completed began after the GET arrived (refreshes only run
    // under the lock held here), and `clean` is what it read if it found nothing to do.
    if state.locations.completed.load(Ordering::SeqCst) > arrived {
        return Ok(clean());
    }
    refresh_locked(state).await?;
    Ok(clean())
}

async fn refresh_now(state: &OcpiState) -> Result<usize, DbError> {
    let dirty = state
        .store
        .fetch(
            "SELECT l.site_id FROM ocpi_locations l JOIN sites s ON s.id = l.site_id \
             WHERE l.source_seq <> s.applied_through",
            &[],
            &[Ty::Text],
        )
        .await?;
    for row in &dirty {
        let Some(site) = row.text(0) else { continue };
        let changes = refresh_site(&state.store, &state.settings, site).await?;
        state.push.send(changes).await?;
    }
    let tariffs = super::tariffs::scan(state).await?;
    state.push.send_tariffs(tariffs).await?;
    Ok(dirty.len())
}

/// Refreshes the locations (and tariffs), then the sessions and CDRs
/// ([`super::sessions::refresh`]), every `refresh_interval` until aborted.
pub async fn refresh_loop(state: OcpiState) {
    let mut tick = tokio::time::interval(state.settings.refresh_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = refresh(&state).await {
            tracing::warn!(error = %e, "OCPI: cannot refresh the locations");
        }
        if let Err(e) = super::sessions::refresh(&state).await {
            tracing::warn!(error = %e, "OCPI: cannot refresh the sessions and CDRs");
        }
    }
}

async fn fresh(state: &OcpiState) -> OcpiResult<Option<Signature>> {
    refresh_for_read_at(state).await.map_err(|e| OcpiError::db("refreshing the locations", &e))
}

/// `GET locations`: a page of Locations by id, filtered on `last_updated`.
pub async fn list(State(state): State<OcpiState>, _caller: CallerExt, uri: Uri) -> Response {
    match list_inner(&state, &uri).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

// The page queries, without and with a `last_updated` window. Both are served by the
// partial index `ocpi_locations_page` (publish, location_id, last_updated_ms): the count
// and the page's ids come from the index alone (the stored bodies, a few kB each, are
// not read for the rows an OFFSET skips), then the page's bodies by id, as stored text
// (PostgreSQL: TEXT since migration 12, no JSONB to convert).
const COUNT_ALL: &str = "SELECT COUNT(*) FROM ocpi_locations WHERE body IS NOT NULL AND publish = $1";
const COUNT_WINDOW: &str = "SELECT COUNT(*) FROM ocpi_locations WHERE body IS NOT NULL AND publish = $1 \
                            AND last_updated_ms >= $2 AND last_updated_ms < $3";
// Each page query reads the [`Signature`] too, in the same statement and so from the same
// snapshot (PostgreSQL READ COMMITTED takes one per statement; SQLite reads one state per
// statement): a page read at the signature of the last refresh that found nothing to do
// is up to date as it is (a LEFT JOIN, so that an empty page still has the signature).
const PAGE_ALL: &str = "SELECT s.n, p.body FROM \
                        (SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) AS n FROM ocpi_location_changes) s \
                        LEFT JOIN (SELECT location_id, body FROM ocpi_locations WHERE location_id IN \
                        (SELECT location_id FROM ocpi_locations WHERE body IS NOT NULL AND publish = $1 \
                        ORDER BY location_id LIMIT $2 OFFSET $3)) p ON 1 = 1 ORDER BY p.location_id";
const PAGE_WINDOW: &str = "SELECT s.n, p.body FROM \
                           (SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) AS n FROM ocpi_location_changes) s \
                           LEFT JOIN (SELECT location_id, body FROM ocpi_locations WHERE location_id IN \
                           (SELECT location_id FROM ocpi_locations WHERE body IS NOT NULL AND publish = $1 \
                           AND last_updated_ms >= $4 AND last_updated_ms < $5 \
                           ORDER BY location_id LIMIT $2 OFFSET $3)) p ON 1 = 1 ORDER BY p.location_id";

/// A page's rows: the [`Signature`] it was read at, and the bodies.
async fn page_rows(state: &OcpiState, sql: &'static str, args: &[Val]) -> OcpiResult<(Option<Signature>, Vec<Row>)> {
    let rows = state
        .store
        .fetch(sql, args, &[Ty::Int, Ty::Text])
        .await
        .map_err(|e| OcpiError::db("listing the locations", &e))?;
    Ok((rows.first().and_then(|r| r.int(0)).map(Signature), rows))
}

async fn list_inner(state: &OcpiState, uri: &Uri) -> OcpiResult<Response> {
    let page = PageRequest::parse(uri, state.settings.max_page_limit)?;
    let window = page.date_from.is_some() || page.date_to.is_some();
    let from = page.date_from.map(|t| t.timestamp_millis()).unwrap_or(i64::MIN);
    let to = page.date_to.map(|t| t.timestamp_millis()).unwrap_or(i64::MAX);
    let offset = i64::try_from(page.offset).unwrap_or(i64::MAX);
    let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
    let (count_sql, page_sql, count_args, page_args): (_, _, Vec<Val>, Vec<Val>) = if window {
        (
            COUNT_WINDOW,
            PAGE_WINDOW,
            vec![true.into(), from.into(), to.into()],
            vec![true.into(), limit.into(), offset.into(), from.into(), to.into()],
        )
    } else {
        (COUNT_ALL, PAGE_ALL, vec![true.into()], vec![true.into(), limit.into(), offset.into()])
    };
    let counts = &state.locations.counts;
    let counted = |at: Signature| counts.lock().unwrap_or_else(|p| p.into_inner()).get(at, (from, to));
    // Nothing changed since the last refresh that found nothing to do, and the count at
    // it is known: one statement, read after the GET arrived, shows it (no refresh to
    // wait for, no signature read of its own). Otherwise refresh and count as needed.
    let clean = *state.locations.clean.lock().unwrap_or_else(|p| p.into_inner());
    let known = clean.and_then(|at| counted(at).map(|total| (at, total)));
    let mut served = None;
    if let Some((at, total)) = known {
        let (seen, rows) = page_rows(state, page_sql, &page_args).await?;
        if seen == Some(at) {
            served = Some((total, rows));
        }
    }
    let (total, rows) = match served {
        Some(served) => served,
        None => {
            let at = fresh(state).await?;
            let total = match at.and_then(counted) {
                Some(total) => total,
                None => {
                    let total = state
                        .store
                        .fetch_opt(count_sql, &count_args, &[Ty::Int])
                        .await
                        .map_err(|e| OcpiError::db("counting the locations", &e))?
                        .and_then(|r| r.int(0))
                        .unwrap_or(0);
                    if let Some(at) = at {
                        counts.lock().unwrap_or_else(|p| p.into_inner()).put(at, (from, to), total);
                    }
                    total
                }
            };
            (total, page_rows(state, page_sql, &page_args).await?.1)
        }
    };
    // The stored bodies are the Locations as served (JSON text): spliced into the
    // envelope as they are, not parsed and written again.
    let bodies: Vec<&str> = rows.iter().filter_map(|r| r.text(1)).collect();
    let headers =
        page.headers(u64::try_from(total).unwrap_or(0), &format!("{}/locations", state.settings.version_url()));
    let mut response = transport::ok_json_list(&bodies);
    response.headers_mut().extend(headers);
    Ok(response)
}

async fn location(state: &OcpiState, id: &str) -> OcpiResult<Location> {
    fresh(state).await?;
    let row = state
        .store
        .fetch_opt(
            "SELECT body FROM ocpi_locations WHERE location_id = $1 AND body IS NOT NULL AND publish = $2",
            &[id.into(), true.into()],
            &[Ty::Text],
        )
        .await
        .map_err(|e| OcpiError::db("reading a location", &e))?;
    row.and_then(|r| r.text(0).and_then(|v| serde_json::from_str(v).ok()))
        .ok_or_else(|| OcpiError::unknown_location(format!("no location {id:?}")))
}

fn evse_of(l: Location, uid: &str) -> OcpiResult<Evse> {
    let id = l.id.clone();
    l.evses
        .into_iter()
        .find(|e| e.uid == uid)
        .ok_or_else(|| OcpiError::unknown_location(format!("location {id:?} has no EVSE {uid:?}")))
}

/// `GET locations/{location_id}`.
pub async fn get_location(State(state): State<OcpiState>, _caller: CallerExt, Path(id): Path<String>) -> Response {
    match location(&state, &id).await {
        Ok(l) => transport::ok(l),
        Err(e) => e.into_response(),
    }
}

/// `GET locations/{location_id}/{evse_uid}`.
pub async fn get_evse(
    State(state): State<OcpiState>,
    _caller: CallerExt,
    Path((id, uid)): Path<(String, String)>,
) -> Response {
    match location(&state, &id).await.and_then(|l| evse_of(l, &uid)) {
        Ok(e) => transport::ok(e),
        Err(e) => e.into_response(),
    }
}

/// `GET locations/{location_id}/{evse_uid}/{connector_id}`.
pub async fn get_connector(
    State(state): State<OcpiState>,
    _caller: CallerExt,
    Path((id, uid, connector)): Path<(String, String, String)>,
) -> Response {
    let found = location(&state, &id).await.and_then(|l| evse_of(l, &uid)).and_then(|e| {
        e.connectors.into_iter().find(|c| c.id == connector).ok_or_else(|| {
            OcpiError::unknown_location(format!("EVSE {uid:?} of location {id:?} has no connector {connector:?}"))
        })
    });
    match found {
        Ok(c) => transport::ok(c),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::new(&super::super::config::OcpiConfig::default(), "127.0.0.1:8080".parse().expect("addr"))
    }

    fn meta() -> Meta {
        Meta {
            location_id: "LOC1".into(),
            name: None,
            address: "Main St 1".into(),
            city: "Berlin".into(),
            postal_code: None,
            country: "DEU".into(),
            latitude: "52.5".into(),
            longitude: "13.4".into(),
            time_zone: "Europe/Berlin".into(),
            publish: true,
            connector_standard: "IEC_62196_T2".into(),
            connector_format: "SOCKET".into(),
            power_type: "AC_3_PHASE".into(),
            max_voltage: 230,
            max_amperage: 32,
        }
    }

    fn row(station: &str, evse: i64, status: &str) -> SourceRow {
        (station.into(), evse, 1, status.into(), Some(true))
    }

    #[test]
    fn last_updated_moves_only_with_content() {
        let (s, m) = (settings(), meta());
        let rows = vec![row("CP-1", 1, "Available"), row("CP-1", 2, "Available")];
        let (first, changes) = build(&s, &m, &rows, None, "2026-01-01T00:00:00.000Z");
        assert!(matches!(changes.as_slice(), [Change::Location(_)]));
        let (same, changes) = build(&s, &m, &rows, Some(&first), "2026-01-01T00:00:05.000Z");
        assert_eq!(same, first, "nothing changed: nothing moves");
        assert!(changes.is_empty());

        let rows = vec![row("CP-1", 1, "Charging"), row("CP-1", 2, "Available")];
        let (next, changes) = build(&s, &m, &rows, Some(&first), "2026-01-01T00:00:09.000Z");
        assert_eq!(next.last_updated, "2026-01-01T00:00:09.000Z");
        assert_eq!(next.evses[0].last_updated, "2026-01-01T00:00:09.000Z");
        assert_eq!(next.evses[0].connectors[0].last_updated, "2026-01-01T00:00:00.000Z", "connector unchanged");
        assert_eq!(next.evses[1].last_updated, "2026-01-01T00:00:00.000Z");
        assert_eq!(
            changes,
            vec![Change::EvseStatus {
                location_id: "LOC1".into(),
                uid: "LOC1*CP-1*1".into(),
                status: "CHARGING".into(),
                last_updated: "2026-01-01T00:00:09.000Z".into()
            }]
        );
    }

    #[test]
    fn status_mapping() {
        assert_eq!(evse_status(["Available"], Some(true)), "AVAILABLE");
        assert_eq!(evse_status(["SuspendedEV"], None), "CHARGING");
        assert_eq!(evse_status(["Faulted", "Available"], None), "AVAILABLE");
        assert_eq!(evse_status(["Faulted"], None), "OUTOFORDER");
        assert_eq!(evse_status(["Unavailable"], None), "INOPERATIVE");
        assert_eq!(evse_status(["Charging"], Some(false)), "UNKNOWN");
    }

    #[test]
    fn counts_hold_for_their_signature_only() {
        let mut c = Counts::default();
        let all = (i64::MIN, i64::MAX);
        assert_eq!(c.get(Signature(7), all), None);
        c.put(Signature(7), all, 100);
        c.put(Signature(7), (5, 9), 3);
        assert_eq!((c.get(Signature(7), all), c.get(Signature(7), (5, 9))), (Some(100), Some(3)));
        assert_eq!(c.get(Signature(7), (5, 10)), None, "another window");
        assert_eq!(c.get(Signature(8), all), None, "something changed since");
        c.put(Signature(8), all, 101);
        assert_eq!((c.get(Signature(8), all), c.get(Signature(8), (5, 9))), (Some(101), None));
        assert_eq!(c.get(Signature(7), all), None, "the older signature's counts are gone");
        for w in 0..(COUNTED_WINDOWS as i64 * 2) {
            c.put(Signature(8), (w, w + 1), w);
        }
        assert!(c.by_window.len() <= COUNTED_WINDOWS);
        let last = COUNTED_WINDOWS as i64 * 2 - 1;
        assert_eq!(c.get(Signature(8), (last, last + 1)), Some(last));
    }

    #[test]
    fn long_uids_are_hashed_to_36() {
        assert_eq!(evse_uid("L", "CP", 1), "L*CP*1");
        assert_eq!(evse_uid(&"x".repeat(30), "station-with-a-long-name", 1).len(), 36);
    }
}
