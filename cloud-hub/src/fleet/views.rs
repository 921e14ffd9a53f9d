//! What the fleet API returns, and the queries that read it. The JSON shapes are
//! described by the schemas of the same names in the OpenAPI document
//! ([`super::openapi`]); the tests check every answer against them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use shared_model::sync::{Command, CommandOutcome};

use crate::auth::ApiKey;
use crate::commands::CommandRecord;
use crate::db::{DbError, Row, Store, Ty, Val};

use super::params::Page;

/// One page of a list. `next_offset` is the offset of the next page, `null` on the last.
#[derive(Debug, Clone, Serialize)]
pub struct PageOf<T> {
    pub items: Vec<T>,
    pub limit: i64,
    pub offset: i64,
    pub next_offset: Option<i64>,
}

impl<T> PageOf<T> {
    /// From up to `limit + 1` rows (the extra one only says that there is a next page).
    pub fn from_rows(mut items: Vec<T>, page: Page) -> Self {
        let more = items.len() as i64 > page.limit;
        items.truncate(usize::try_from(page.limit).unwrap_or(0));
        PageOf { items, limit: page.limit, offset: page.offset, next_offset: more.then_some(page.offset + page.limit) }
    }
}

/// A list that is never long enough to page.
#[derive(Debug, Clone, Serialize)]
pub struct ListOf<T> {
    pub items: Vec<T>,
}

/// The rows to fetch for a page: one more than it holds.
fn fetch_limit(page: Page) -> Val {
    (page.limit + 1).into()
}

// ---- sites -------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct SiteView {
    pub id: String,
    pub name: String,
    pub created_at: Option<DateTime<Utc>>,
    /// Every event up to this seq is applied.
    pub applied_through: i64,
    pub last_event_at: Option<DateTime<Utc>>,
    /// From the site's retained `up/status` (its last will says false); null: never heard.
    pub online: Option<bool>,
    pub status_at: Option<DateTime<Utc>>,
    pub last_hello_at: Option<DateTime<Utc>>,
    pub agent_version: Option<String>,
    /// The outbox as the last hello described it.
    pub hello_oldest_unacked: Option<i64>,
    pub hello_newest: Option<i64>,
    /// How many chargers the site has reported.
    pub chargers: i64,
}

const SITE_SELECT_TYPES: [Ty; 12] = [
    Ty::Text,
    Ty::Text,
    Ty::Time,
    Ty::Int,
    Ty::Time,
    Ty::Bool,
    Ty::Time,
    Ty::Time,
    Ty::Text,
    Ty::Int,
    Ty::Int,
    Ty::Int,
];

fn site(r: &Row) -> SiteView {
    SiteView {
        id: r.text(0).unwrap_or_default().to_owned(),
        name: r.text(1).unwrap_or_default().to_owned(),
        created_at: r.time(2),
        applied_through: r.int(3).unwrap_or(0),
        last_event_at: r.time(4),
        online: r.bool(5),
        status_at: r.time(6),
        last_hello_at: r.time(7),
        agent_version: r.text(8).map(str::to_owned),
        hello_oldest_unacked: r.int(9),
        hello_newest: r.int(10),
        chargers: r.int(11).unwrap_or(0),
    }
}

pub async fn sites(store: &Store, online: Option<bool>, page: Page) -> Result<PageOf<SiteView>, DbError> {
    let rows = store
        .fetch(
            "SELECT id, name, created_at, applied_through, last_event_at, online, status_at, last_hello_at, \
                 agent_version, hello_oldest_unacked, hello_newest, \
                 (SELECT COUNT(*) FROM chargers c WHERE c.site_id = sites.id) \
             FROM sites WHERE ($1 IS NULL OR online = $1) ORDER BY id LIMIT $2 OFFSET $3",
            &[Val::Bool(online), fetch_limit(page), page.offset.into()],
            &SITE_SELECT_TYPES,
        )
        .await?;
    Ok(PageOf::from_rows(rows.iter().map(site).collect(), page))
}

pub async fn site_by_id(store: &Store, id: &str) -> Result<Option<SiteView>, DbError> {
    Ok(store
        .fetch_opt(
            "SELECT id, name, created_at, applied_through, last_event_at, online, status_at, last_hello_at, \
                 agent_version, hello_oldest_unacked, hello_newest, \
                 (SELECT COUNT(*) FROM chargers c WHERE c.site_id = sites.id) \
             FROM sites WHERE id = $1",
            &[id.into()],
            &SITE_SELECT_TYPES,
        )
        .await?
        .map(|r| site(&r)))
}

pub async fn site_exists(store: &Store, id: &str) -> Result<bool, DbError> {
    Ok(store.fetch_opt("SELECT id FROM sites WHERE id = $1", &[id.into()], &[Ty::Text]).await?.is_some())
}

// ---- chargers and connectors ---------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct ConnectorView {
    pub evse: i64,
    pub connector: i64,
    /// The OCPP status as the charger last reported it (Available, Charging, Faulted, ...).
    pub status: String,
    pub error_code: Option<String>,
    pub info: Option<String>,
    pub vendor_error_code: Option<String>,
    pub status_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChargerView {
    pub site_id: String,
    pub station: String,
    /// `online`: connected to its site, and the site to the hub; `offline`: either is
    /// known to be down; `unknown`: not reported yet.
    pub status: &'static str,
    /// Whether the charger is connected to its site's edge agent (as last reported).
    pub connected: Option<bool>,
    pub connection_changed_at: Option<DateTime<Utc>>,
    /// Whether the site is connected to the hub.
    pub site_online: Option<bool>,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub serial_number: Option<String>,
    pub firmware_version: Option<String>,
    pub registration: Option<String>,
    pub last_boot_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub connectors: Vec<ConnectorView>,
}

/// The live status of a charger from its connection and its site's.
pub fn live_status(connected: Option<bool>, site_online: Option<bool>) -> &'static str {
    match (connected, site_online) {
        (Some(false), _) | (_, Some(false)) => "offline",
        (Some(true), Some(true)) => "online",
        _ => "unknown",
    }
}

/// Which chargers to list.
#[derive(Debug, Clone, Default)]
pub struct ChargerFilter {
    pub site: Option<String>,
    pub station: Option<String>,
    pub connected: Option<bool>,
}

fn connector(r: &Row, first: usize) -> ConnectorView {
    ConnectorView {
        evse: r.int(first).unwrap_or(0),
        connector: r.int(first + 1).unwrap_or(0),
        status: r.text(first + 2).unwrap_or_default().to_owned(),
        error_code: r.text(first + 3).map(str::to_owned),
        info: r.text(first + 4).map(str::to_owned),
        vendor_error_code: r.text(first + 5).map(str::to_owned),
        status_at: r.time(first + 6),
    }
}

const CONNECTOR_TYPES: [Ty; 9] =
    [Ty::Text, Ty::Text, Ty::Int, Ty::Int, Ty::Text, Ty::Text, Ty::Text, Ty::Text, Ty::Time];

pub async fn chargers(store: &Store, filter: &ChargerFilter, page: Page) -> Result<PageOf<ChargerView>, DbError> {
    let args = [
        Val::from(filter.site.as_deref()),
        Val::from(filter.station.as_deref()),
        Val::Bool(filter.connected),
        fetch_limit(page),
        page.offset.into(),
    ];
    let rows = store
        .fetch(
            "SELECT c.site_id, c.station, c.connected, c.connection_changed_at, s.online, c.vendor, c.model, \
                 c.serial_number, c.firmware_version, c.registration, c.last_boot_at, c.updated_at \
             FROM chargers c JOIN sites s ON s.id = c.site_id \
             WHERE ($1 IS NULL OR c.site_id = $1) AND ($2 IS NULL OR c.station = $2) \
                 AND ($3 IS NULL OR c.connected = $3) \
             ORDER BY c.site_id, c.station LIMIT $4 OFFSET $5",
            &args,
            &[
                Ty::Text,
                Ty::Text,
                Ty::Bool,
                Ty::Time,
                Ty::Bool,
                Ty::Text,
                Ty::Text,
                Ty::Text,
                Ty::Text,
                Ty::Text,
                Ty::Time,
                Ty::Time,
            ],
        )
        .await?;
    // The connectors of exactly the chargers of this page (the same filter and window).
    let connectors = store
        .fetch(
            "SELECT k.site_id, k.station, k.evse, k.connector, k.status, k.error_code, k.info, \
                 k.vendor_error_code, k.status_at \
             FROM connectors k JOIN (SELECT c.site_id, c.station FROM chargers c \
                 WHERE ($1 IS NULL OR c.site_id = $1) AND ($2 IS NULL OR c.station = $2) \
                     AND ($3 IS NULL OR c.connected = $3) \
                 ORDER BY c.site_id, c.station LIMIT $4 OFFSET $5) p \
                 ON k.site_id = p.site_id AND k.station = p.station \
             ORDER BY k.site_id, k.station, k.evse, k.connector",
            &args,
            &CONNECTOR_TYPES,
        )
        .await?;
    let items = rows
        .iter()
        .map(|r| {
            let (site_id, station) = (r.text(0).unwrap_or_default(), r.text(1).unwrap_or_default());
            ChargerView {
                site_id: site_id.to_owned(),
                station: station.to_owned(),
                status: live_status(r.bool(2), r.bool(4)),
                connected: r.bool(2),
                connection_changed_at: r.time(3),
                site_online: r.bool(4),
                vendor: r.text(5).map(str::to_owned),
                model: r.text(6).map(str::to_owned),
                serial_number: r.text(7).map(str::to_owned),
                firmware_version: r.text(8).map(str::to_owned),
                registration: r.text(9).map(str::to_owned),
                last_boot_at: r.time(10),
                updated_at: r.time(11),
                connectors: connectors
                    .iter()
                    .filter(|k| k.text(0) == Some(site_id) && k.text(1) == Some(station))
                    .map(|k| connector(k, 2))
                    .collect(),
            }
        })
        .collect();
    Ok(PageOf::from_rows(items, page))
}

/// One charger (with its connectors).
pub async fn charger(store: &Store, site: &str, station: &str) -> Result<Option<ChargerView>, DbError> {
    let filter = ChargerFilter { site: Some(site.to_owned()), station: Some(station.to_owned()), connected: None };
    Ok(chargers(store, &filter, Page { limit: 1, offset: 0 }).await?.items.into_iter().next())
}

/// Whether the hub has heard of this station at this site (a charger row, or meter
/// samples of it).
pub async fn station_known(store: &Store, site: &str, station: &str) -> Result<bool, DbError> {
    if store
        .fetch_opt(
            "SELECT station FROM chargers WHERE site_id = $1 AND station = $2",
            &[site.into(), station.into()],
            &[Ty::Text],
        )
        .await?
        .is_some()
    {
        return Ok(true);
    }
    Ok(store
        .fetch_opt(
            "SELECT station FROM meter_samples WHERE site_id = $1 AND station = $2 LIMIT 1",
            &[site.into(), station.into()],
            &[Ty::Text],
        )
        .await?
        .is_some())
}

/// The stations the hub knows at a site (for error messages), at most 20.
pub async fn station_names(store: &Store, site: &str) -> Result<Vec<String>, DbError> {
    Ok(store
        .fetch("SELECT station FROM chargers WHERE site_id = $1 ORDER BY station LIMIT 20", &[site.into()], &[Ty::Text])
        .await?
        .iter()
        .filter_map(|r| r.text(0).map(str::to_owned))
        .collect())
}

// ---- sessions --------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    pub site_id: String,
    pub transaction_uid: String,
    pub station: String,
    pub station_transaction_id: Option<String>,
    pub evse: Option<i64>,
    pub connector: Option<i64>,
    pub id_tag: Option<String>,
    pub origin: Option<String>,
    /// No stop seen yet.
    pub active: bool,
    pub started_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub meter_start_wh: Option<i64>,
    pub meter_stop_wh: Option<i64>,
    /// The latest energy register sample of the session, and its time.
    pub last_energy_wh: Option<i64>,
    pub last_energy_at: Option<DateTime<Utc>>,
    /// Energy delivered: final once stopped (meter stop − meter start), so far while
    /// active (latest register − meter start); null when not known.
    pub energy_wh: Option<i64>,
    pub stop_reason: Option<String>,
    /// The stop was inferred by the edge (no StopTransaction came); a reported stop
    /// replaces it.
    pub reconciled: bool,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Which sessions to list.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    pub site: Option<String>,
    pub station: Option<String>,
    pub transaction_uid: Option<String>,
    /// Started at or after.
    pub from: Option<DateTime<Utc>>,
    /// Started before.
    pub to: Option<DateTime<Utc>>,
    pub active: Option<bool>,
}

fn session(r: &Row) -> SessionView {
    let stopped_at = r.time(9);
    let (meter_start, meter_stop, last_energy, energy) = (r.int(10), r.int(11), r.int(12), r.int(14));
    let active = stopped_at.is_none();
    let energy_wh = if active {
        match (meter_start, last_energy) {
            (Some(start), Some(last)) if last >= start => Some(last - start),
            _ => None,
        }
    } else {
        energy
    };
    SessionView {
        site_id: r.text(0).unwrap_or_default().to_owned(),
        transaction_uid: r.text(1).unwrap_or_default().to_owned(),
        station: r.text(2).unwrap_or_default().to_owned(),
        station_transaction_id: r.text(3).map(str::to_owned),
        evse: r.int(4),
        connector: r.int(5),
        id_tag: r.text(6).map(str::to_owned),
        origin: r.text(7).map(str::to_owned),
        active,
        started_at: r.time(8),
        stopped_at,
        meter_start_wh: meter_start,
        meter_stop_wh: meter_stop,
        last_energy_wh: last_energy,
        last_energy_at: r.time(13),
        energy_wh,
        stop_reason: r.text(15).map(str::to_owned),
        reconciled: r.bool(16).unwrap_or(false),
        updated_at: r.time(17),
    }
}

/// Sessions, newest start first (sessions whose start the hub has not seen come last).
pub async fn sessions(store: &Store, f: &SessionFilter, page: Page) -> Result<PageOf<SessionView>, DbError> {
    let rows = store
        .fetch(
            "SELECT site_id, transaction_uid, station, station_transaction_id, evse, connector, id_tag, origin, \
                 started_at, stopped_at, meter_start_wh, meter_stop_wh, last_energy_wh, last_energy_at, energy_wh, \
                 stop_reason, reconciled, updated_at \
             FROM sessions \
             WHERE ($1 IS NULL OR site_id = $1) AND ($2 IS NULL OR station = $2) \
                 AND ($3 IS NULL OR transaction_uid = $3) \
                 AND ($4 IS NULL OR started_at >= $4) AND ($5 IS NULL OR started_at < $5) \
                 AND ($6 IS NULL OR (stopped_at IS NULL) = $6) \
             ORDER BY started_at IS NULL, started_at DESC, site_id, transaction_uid LIMIT $7 OFFSET $8",
            &[
                Val::from(f.site.as_deref()),
                Val::from(f.station.as_deref()),
                Val::from(f.transaction_uid.as_deref()),
                Val::Time(f.from),
                Val::Time(f.to),
                Val::Bool(f.active),
                fetch_limit(page),
                page.offset.into(),
            ],
            &[
                Ty::Text,
                Ty::Text,
                Ty::Text,
                Ty::Text,
                Ty::Int,
                Ty::Int,
                Ty::Text,
                Ty::Text,
                Ty::Time,
                Ty::Time,
                Ty::Int,
                Ty::Int,
                Ty::Int,
                Ty::Time,
                Ty::Int,
                Ty::Text,
                Ty::Bool,
                Ty::Time,
            ],
        )
        .await?;
    Ok(PageOf::from_rows(rows.iter().map(session).collect(), page))
}

// ---- meter samples ------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct MeterSampleView {
    pub ts: Option<DateTime<Utc>>,
    pub evse: i64,
    pub connector: i64,
    pub transaction_uid: Option<String>,
    pub measurand: String,
    pub phase: Option<String>,
    pub location: Option<String>,
    pub unit: Option<String>,
    pub context: Option<String>,
    pub format: Option<String>,
    /// The value as the charger sent it.
    pub value: String,
    /// The value in the base unit (Wh, W, A, V, ...), when it is a number.
    pub value_num: Option<f64>,
    /// The site event that carried it.
    pub seq: i64,
}

/// Which samples of a station to read.
#[derive(Debug, Clone, Default)]
pub struct SampleFilter {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub measurand: Option<String>,
    pub transaction_uid: Option<String>,
}

/// A station's samples in `[from, to)`, oldest first (the `(site_id, station, ts)`
/// index serves the range; on PostgreSQL, only the partitions that hold it are read).
pub async fn meter_samples(
    store: &Store,
    site: &str,
    station: &str,
    f: &SampleFilter,
    page: Page,
) -> Result<PageOf<MeterSampleView>, DbError> {
    // Open ends become the widest times both databases order correctly (SQLite compares
    // the RFC 3339 text).
    let from = f.from.unwrap_or_else(distant_past);
    let to = f.to.unwrap_or_else(far_future);
    let rows = store
        .fetch(
            "SELECT ts, evse, connector, transaction_uid, measurand, phase, location, unit, context, format, value, \
                 value_num, seq \
             FROM meter_samples \
             WHERE site_id = $1 AND station = $2 AND ts >= $3 AND ts < $4 \
                 AND ($5 IS NULL OR measurand = $5) AND ($6 IS NULL OR transaction_uid = $6) \
             ORDER BY ts, seq, evse, connector, measurand, phase, location LIMIT $7 OFFSET $8",
            &[
                site.into(),
                station.into(),
                from.into(),
                to.into(),
                Val::from(f.measurand.as_deref()),
                Val::from(f.transaction_uid.as_deref()),
                fetch_limit(page),
                page.offset.into(),
            ],
            &[
                Ty::Time,
                Ty::Int,
                Ty::Int,
                Ty::Text,
                Ty::Text,
                Ty::Text,
                Ty::Text,
                Ty::Text,
                Ty::Text,
                Ty::Text,
                Ty::Text,
                Ty::Real,
                Ty::Int,
            ],
        )
        .await?;
    let items = rows
        .iter()
        .map(|r| MeterSampleView {
            ts: r.time(0),
            evse: r.int(1).unwrap_or(0),
            connector: r.int(2).unwrap_or(0),
            transaction_uid: r.text(3).map(str::to_owned),
            measurand: r.text(4).unwrap_or_default().to_owned(),
            phase: r.text(5).map(str::to_owned),
            location: r.text(6).map(str::to_owned),
            unit: r.text(7).map(str::to_owned),
            context: r.text(8).map(str::to_owned),
            format: r.text(9).map(str::to_owned),
            value: r.text(10).unwrap_or_default().to_owned(),
            value_num: r.real(11),
            seq: r.int(12).unwrap_or(0),
        })
        .collect();
    Ok(PageOf::from_rows(items, page))
}

/// 0001-01-01T00:00:00Z: before every sample, and still four-digit years.
fn distant_past() -> DateTime<Utc> {
    DateTime::from_timestamp(-62_135_596_800, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// 9999-12-31T23:59:59Z: after every sample, and still four-digit years.
fn far_future() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

// ---- commands -------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct ResultView {
    pub outcome: CommandOutcome,
    pub detail: Value,
    /// When the site finished it.
    pub at: DateTime<Utc>,
    /// When the hub received the result.
    pub received_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommandView {
    pub command_id: String,
    pub site_id: String,
    pub command: Command,
    /// `sent`: waiting for the site's result (re-sent at each hello of the site until
    /// it expires); `answered`: `result` holds it; `unanswered`: expired without a
    /// result (no longer re-sent; a late result is still recorded).
    pub status: &'static str,
    pub issued_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The name of the API key that sent it.
    pub issued_by: Option<String>,
    /// How often it was published (the first send, then re-sends after hellos).
    pub sent_count: i64,
    pub last_sent_at: Option<DateTime<Utc>>,
    pub result: Option<ResultView>,
}

/// A command's status as the API shows it, at `now`.
pub fn command_status(stored: &str, expires_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> &'static str {
    match stored {
        "answered" => "answered",
        _ if expires_at.is_some_and(|t| t <= now) => "unanswered",
        _ => "sent",
    }
}

impl CommandView {
    pub fn new(r: CommandRecord, now: DateTime<Utc>) -> Self {
        let env = r.envelope;
        CommandView {
            status: command_status(&r.status, env.expires_at, now),
            command_id: env.command_id,
            site_id: env.site_id,
            command: env.command,
            issued_at: env.issued_at,
            expires_at: env.expires_at,
            issued_by: r.issued_by,
            sent_count: r.sent_count,
            last_sent_at: r.last_sent_at,
            result: r.result.map(|res| ResultView {
                outcome: res.outcome,
                detail: res.detail,
                at: res.at,
                received_at: r.result_received_at,
            }),
        }
    }
}

/// The answer to a command sent (202).
#[derive(Debug, Clone, Serialize)]
pub struct CommandAccepted {
    pub command_id: String,
    pub site_id: String,
    pub status: &'static str,
    /// Whether it was handed to the MQTT client now; if not, it goes out at the site's
    /// next hello.
    pub published: bool,
    pub issued_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Where to follow it.
    pub location: String,
}

// ---- API keys ------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    pub role: &'static str,
    pub created_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKey> for ApiKeyView {
    fn from(k: ApiKey) -> Self {
        ApiKeyView {
            id: k.id,
            name: k.name,
            role: k.role.as_str(),
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_know_whether_more_follow() {
        let p = PageOf::from_rows(vec![1, 2, 3], Page { limit: 2, offset: 4 });
        assert_eq!((p.items, p.next_offset), (vec![1, 2], Some(6)));
        let p = PageOf::from_rows(vec![1, 2], Page { limit: 2, offset: 0 });
        assert_eq!((p.items, p.next_offset), (vec![1, 2], None));
    }

    #[test]
    fn live_status_needs_both_links() {
        assert_eq!(live_status(Some(true), Some(true)), "online");
        assert_eq!(live_status(Some(true), Some(false)), "offline");
        assert_eq!(live_status(Some(false), None), "offline");
        assert_eq!(live_status(Some(true), None), "unknown");
        assert_eq!(live_status(None, Some(true)), "unknown");
    }

    #[test]
    fn commands_become_unanswered_when_they_expire() {
        let now = Utc::now();
        let past = now - chrono::Duration::seconds(1);
        assert_eq!(command_status("sent", None, now), "sent");
        assert_eq!(command_status("sent", Some(now + chrono::Duration::seconds(1)), now), "sent");
        assert_eq!(command_status("sent", Some(past), now), "unanswered");
        assert_eq!(command_status("answered", Some(past), now), "answered");
        assert_eq!(far_future().to_rfc3339(), "9999-12-31T23:59:59+00:00");
        assert_eq!(distant_past().to_rfc3339(), "0001-01-01T00:00:00+00:00");
    }
}
