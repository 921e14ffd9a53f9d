//! Pushes to partners' Receiver endpoints, through a durable outbox (table `ocpi_outbox`):
//!
//! - locations (OCPI 2.2.1 "Locations module", Receiver): PUT of a new or changed Location
//!   or EVSE, PATCH of an EVSE's `status` and `last_updated`;
//! - tariffs: PUT of a new or changed Tariff;
//! - sessions: PUT of a new Session, PATCH of what changed (`kwh`, `status`,
//!   `end_date_time`, `charging_periods`, `total_cost`, `last_updated`);
//! - cdrs: POST of every new CDR (debit and credit); the partner's `Location` header is
//!   kept in `ocpi_cdrs.partner_location`.
//!
//! A push is a row first (sessions and CDRs in the same transaction as the object it
//! carries), so a hub that stops or crashes loses none: the next start delivers what is
//! left. Rows go out in order per partner and module (a session's PUT before its
//! PATCHes; a slow locations queue delays no CDR), each partner and module with a task of
//! its own, so a slow partner delays nobody else. Ingest never waits for any of this.
//!
//! A failed try is retried after `push_retry_min_ms`, the wait doubling up to
//! `push_retry_max_ms`. A location, tariff or session push is dropped with a warning
//! after [`MAX_TRIES`] failed tries (the partner catches up with `GET ...?date_from=`,
//! whose `last_updated` are exact for that). A CDR is money: it is retried for as long as
//! the partner cannot be reached, and when the partner keeps refusing it (an OCPI error
//! status, [`MAX_TRIES`] times) it is parked (`state = 'parked'`, with the reason), never
//! deleted; the partner still gets it from `GET cdrs`.
//!
//! Several replicas may deliver side by side: a row is leased (`lease_until_ms`) by the
//! replica that sends it, and the next row of a queue waits until the one before it is
//! delivered.

use axum::http::Method;
use chrono::Utc;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::Settings;
use super::client::{Client, ClientError, Route};
use super::locations::Change;
use super::partners::{self, Partner, PartnerState};
use crate::db::{DbError, Store, Tx, Ty, Val};
use shared_model::tariff::Tariff;

/// The tries of a push before it is dropped (a CDR: parked, and only when refused).
pub const MAX_TRIES: i64 = 8;

/// How long a replica holds a row it is sending (longer than the client's timeout); a
/// hub that stops gives its leases back, one that crashes holds them this long.
const LEASE_MS: i64 = 30_000;

/// One push to queue: what is sent, where below the partner's Receiver endpoint of
/// `module`, and the CDR it carries (to keep the partner's `Location`).
#[derive(Debug, Clone, PartialEq)]
pub struct Push {
    /// `locations`, `tariffs`, `sessions` or `cdrs`.
    pub module: &'static str,
    pub method: Method,
    /// Appended to the partner's endpoint (`/{country_code}/{party_id}/...`; empty for a
    /// CDR POST).
    pub path: String,
    /// JSON text.
    pub body: String,
    pub cdr_id: Option<String>,
}

impl Push {
    /// The push of a location change.
    pub fn location(s: &Settings, change: &Change) -> Push {
        let prefix = format!("/{}/{}", s.country_code, s.party_id);
        let (method, path, body) = match change {
            Change::Location(l) => (Method::PUT, format!("{prefix}/{}", l.id), serde_json::to_string(l)),
            Change::Evse { location_id, evse } => {
                (Method::PUT, format!("{prefix}/{location_id}/{}", evse.uid), serde_json::to_string(evse))
            }
            Change::EvseStatus { location_id, uid, status, last_updated } => (
                Method::PATCH,
                format!("{prefix}/{location_id}/{uid}"),
                Ok(json!({ "status": status, "last_updated": last_updated }).to_string()),
            ),
        };
        Push { module: "locations", method, path, body: body.unwrap_or_default(), cdr_id: None }
    }

    /// The PUT of a new or changed tariff.
    pub fn tariff(s: &Settings, t: &Tariff) -> Push {
        Push {
            module: "tariffs",
            method: Method::PUT,
            path: format!("/{}/{}/{}", s.country_code, s.party_id, t.id),
            body: serde_json::to_string(t).unwrap_or_default(),
            cdr_id: None,
        }
    }
}

/// The registered partners that have a Receiver endpoint for `module`.
pub async fn receivers(store: &Store, module: &str) -> Result<Vec<Partner>, DbError> {
    Ok(partners::list(store)
        .await?
        .into_iter()
        .filter(|p| p.state == PartnerState::Registered && p.endpoint(module, "RECEIVER").is_some())
        .collect())
}

const INSERT: &str = "INSERT INTO ocpi_outbox (partner_id, module, method, path, body, cdr_id, state, attempts, \
                      next_attempt_ms, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $8)";

fn insert_args(partner_id: &str, push: &Push) -> Vec<Val> {
    let now = Utc::now();
    vec![
        partner_id.into(),
        push.module.into(),
        push.method.as_str().into(),
        push.path.as_str().into(),
        push.body.as_str().into(),
        push.cdr_id.as_deref().into(),
        now.timestamp_millis().into(),
        now.into(),
    ]
}

/// Queues `push` for `partner_id` in `tx` (it goes out once `tx` commits).
pub async fn enqueue_in(tx: &mut Tx, partner_id: &str, push: &Push) -> Result<(), DbError> {
    tx.exec(INSERT, &insert_args(partner_id, push)).await.map(|_| ())
}

/// Where pushes are queued, and the task that delivers them.
#[derive(Clone)]
pub struct PushHandle {
    store: Store,
    settings: Arc<Settings>,
    /// This hub process, as the holder of leases.
    replica: Arc<str>,
    wake: Arc<Notify>,
    task: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl PushHandle {
    /// Starts the delivery (what earlier runs left in the outbox goes first).
    pub fn start(store: Store, settings: Arc<Settings>, client: Client) -> PushHandle {
        let wake = Arc::new(Notify::new());
        let replica: Arc<str> = uuid::Uuid::new_v4().to_string().into();
        let task = tokio::spawn(dispatch(store.clone(), settings.clone(), client, wake.clone(), replica.clone()));
        PushHandle { store, settings, replica, wake, task: Arc::new(std::sync::Mutex::new(Some(task))) }
    }

    /// Delivery looks at the outbox now (after a transaction queued pushes).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Queues pushes for every partner registered now with a Receiver endpoint of their
    /// module (nothing when `[ocpi] push` is off).
    pub async fn fan_out(&self, pushes: &[Push]) -> Result<(), DbError> {
        if !self.settings.push || pushes.is_empty() {
            return Ok(());
        }
        let registered = partners::list(&self.store).await?;
        let mut queued = false;
        for p in registered.iter().filter(|p| p.state == PartnerState::Registered) {
            for push in pushes.iter().filter(|push| p.endpoint(push.module, "RECEIVER").is_some()) {
                self.store.exec(INSERT, &insert_args(&p.id, push)).await?;
                queued = true;
            }
        }
        if queued {
            self.wake();
        }
        Ok(())
    }

    /// Queues location changes for every partner with a locations Receiver.
    pub async fn send(&self, changes: Vec<Change>) -> Result<(), DbError> {
        let pushes: Vec<Push> = changes.iter().map(|c| Push::location(&self.settings, c)).collect();
        self.fan_out(&pushes).await
    }

    /// Queues new or changed tariffs for every partner with a tariffs Receiver.
    pub async fn send_tariffs(&self, tariffs: Vec<Tariff>) -> Result<(), DbError> {
        let pushes: Vec<Push> = tariffs.iter().map(|t| Push::tariff(&self.settings, t)).collect();
        self.fan_out(&pushes).await
    }

    /// Stops delivering (what is not delivered stays in the outbox for the next start,
    /// and the rows this hub was sending are free for it, or another replica, at once).
    pub async fn stop(&self) {
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        let released = self
            .store
            .exec(
                "UPDATE ocpi_outbox SET lease_until_ms = NULL, leased_by = NULL WHERE leased_by = $1",
                &[self.replica.as_ref().into()],
            )
            .await;
        if let Err(e) = released {
            tracing::warn!(error = %e, "OCPI push: cannot give the leases back; they run out by themselves");
        }
    }
}

/// The wait before try `attempts + 1`, after `attempts` failed ones.
pub fn backoff(s: &Settings, attempts: i64) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    s.push_retry_min.saturating_mul(1u32 << doublings).min(s.push_retry_max)
}

type QueueKey = (String, String);

struct Worker {
    task: JoinHandle<()>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a task per (partner, module) with pending rows, whenever woken and at least
/// every `refresh_interval` (another replica may have queued rows).
async fn dispatch(store: Store, settings: Arc<Settings>, client: Client, wake: Arc<Notify>, replica: Arc<str>) {
    let mut workers: HashMap<QueueKey, Worker> = HashMap::new();
    loop {
        match store
            .fetch(
                "SELECT DISTINCT partner_id, module FROM ocpi_outbox WHERE state = 'pending'",
                &[],
                &[Ty::Text, Ty::Text],
            )
            .await
        {
            Ok(rows) => {
                workers.retain(|_, w| !w.task.is_finished());
                for r in rows {
                    let (Some(partner), Some(module)) = (r.text(0), r.text(1)) else { continue };
                    let key = (partner.to_owned(), module.to_owned());
                    if workers.contains_key(&key) {
                        continue;
                    }
                    let task = tokio::spawn(queue_loop(
                        key.clone(),
                        store.clone(),
                        settings.clone(),
                        client.clone(),
                        wake.clone(),
                        replica.clone(),
                    ));
                    workers.insert(key, Worker { task });
                }
            }
            Err(e) => tracing::warn!(error = %e, "OCPI push: cannot read the outbox; trying again"),
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(settings.refresh_interval) => {}
        }
    }
}

/// The oldest pending row of a queue.
struct Row {
    id: i64,
    method: String,
    path: String,
    body: String,
    cdr_id: Option<String>,
    attempts: i64,
    next_attempt_ms: i64,
    lease_until_ms: Option<i64>,
}

async fn head(store: &Store, key: &QueueKey) -> Result<Option<Row>, DbError> {
    let r = store
        .fetch_opt(
            "SELECT id, method, path, body, cdr_id, attempts, next_attempt_ms, lease_until_ms FROM ocpi_outbox \
             WHERE partner_id = $1 AND module = $2 AND state = 'pending' ORDER BY id LIMIT 1",
            &[key.0.as_str().into(), key.1.as_str().into()],
            &[Ty::Int, Ty::Text, Ty::Text, Ty::Text, Ty::Text, Ty::Int, Ty::Int, Ty::Int],
        )
        .await?;
    Ok(r.and_then(|r| {
        Some(Row {
            id: r.int(0)?,
            method: r.text(1)?.to_owned(),
            path: r.text(2)?.to_owned(),
            body: r.text(3)?.to_owned(),
            cdr_id: r.text(4).map(str::to_owned),
            attempts: r.int(5).unwrap_or(0),
            next_attempt_ms: r.int(6).unwrap_or(0),
            lease_until_ms: r.int(7),
        })
    }))
}

/// What became of one try.
enum Tried {
    Delivered(Option<String>),
    Failed {
        error: String,
        refused: bool,
    },
    /// The partner is gone or has no endpoint for the module (any more).
    NoRoute(String),
}

async fn send(store: &Store, settings: &Settings, client: &Client, key: &QueueKey, row: &Row) -> Tried {
    let p = match partners::get(store, &key.0).await {
        Ok(Some(p)) if p.state == PartnerState::Registered => p,
        Ok(_) => return Tried::NoRoute(format!("partner {:?} is not registered", key.0)),
        Err(e) => return Tried::Failed { error: format!("reading the partner: {e}"), refused: false },
    };
    let (Some(base), Some(token)) = (p.endpoint(&key.1, "RECEIVER"), p.outgoing_token.as_deref()) else {
        return Tried::NoRoute(format!("partner {:?} has no {} Receiver endpoint", key.0, key.1));
    };
    let url = format!("{base}{}", row.path);
    let method = Method::from_bytes(row.method.as_bytes()).unwrap_or(Method::PUT);
    let route = Route { from: Some(settings.us()), to: p.country_code.clone().zip(p.party_id.clone()) };
    match client.call_text::<Value>(method, &url, token, p.raw_tokens, &route, Some(&row.body)).await {
        Ok((_, headers)) => {
            let location = headers.get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
            Tried::Delivered(location)
        }
        Err(e) => {
            let refused = matches!(e, ClientError::Refused { .. } | ClientError::Garbage { .. });
            Tried::Failed { error: e.to_string(), refused }
        }
    }
}

/// Delivers one queue in order until it is empty.
async fn queue_loop(
    key: QueueKey,
    store: Store,
    settings: Arc<Settings>,
    client: Client,
    wake: Arc<Notify>,
    replica: Arc<str>,
) {
    let is_cdr = key.1 == "cdrs";
    loop {
        let row = match head(&store, &key).await {
            Ok(Some(row)) => row,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(partner = %key.0, module = %key.1, error = %e, "OCPI push: cannot read the outbox");
                tokio::time::sleep(settings.refresh_interval).await;
                continue;
            }
        };
        let now = Utc::now().timestamp_millis();
        let not_before = row.next_attempt_ms.max(row.lease_until_ms.unwrap_or(0));
        if not_before > now {
            let wait = Duration::from_millis(u64::try_from(not_before - now).unwrap_or(0));
            tokio::time::sleep(wait.min(settings.refresh_interval.max(Duration::from_millis(50)))).await;
            continue;
        }
        // Lease the row: of two replicas only one sends it.
        let leased = store
            .exec(
                "UPDATE ocpi_outbox SET lease_until_ms = $2, leased_by = $4 WHERE id = $1 AND state = 'pending' \
                 AND (lease_until_ms IS NULL OR lease_until_ms <= $3)",
                &[row.id.into(), (now + LEASE_MS).into(), now.into(), replica.as_ref().into()],
            )
            .await;
        match leased {
            Ok(1) => {}
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(partner = %key.0, error = %e, "OCPI push: cannot lease a row");
                tokio::time::sleep(settings.refresh_interval).await;
                continue;
            }
        }
        let tried = send(&store, &settings, &client, &key, &row).await;
        let done = match tried {
            Tried::Delivered(location) => delivered(&store, &row, location).await,
            Tried::NoRoute(why) if is_cdr => {
                tracing::error!(partner = %key.0, id = row.id, reason = %why, "OCPI push: CDR parked");
                park(&store, &row, &why).await
            }
            Tried::NoRoute(why) => {
                tracing::warn!(partner = %key.0, module = %key.1, reason = %why, "OCPI push: dropped");
                store.exec("DELETE FROM ocpi_outbox WHERE id = $1", &[row.id.into()]).await.map(|_| ())
            }
            Tried::Failed { error, refused } => {
                let attempts = row.attempts + 1;
                if attempts >= MAX_TRIES && (!is_cdr || refused) {
                    if is_cdr {
                        tracing::error!(partner = %key.0, id = row.id, %error, "OCPI push: CDR refused {attempts} times; parked");
                        park(&store, &row, &error).await
                    } else {
                        tracing::warn!(partner = %key.0, module = %key.1, %error, "OCPI push: dropped after {attempts} tries");
                        store.exec("DELETE FROM ocpi_outbox WHERE id = $1", &[row.id.into()]).await.map(|_| ())
                    }
                } else {
                    tracing::debug!(partner = %key.0, module = %key.1, %error, attempts, "OCPI push failed; retrying");
                    let next = Utc::now().timestamp_millis()
                        + i64::try_from(backoff(&settings, attempts).as_millis()).unwrap_or(i64::MAX / 2);
                    store
                        .exec(
                            "UPDATE ocpi_outbox SET attempts = $2, next_attempt_ms = $3, lease_until_ms = NULL, \
                             leased_by = NULL, last_error = $4 WHERE id = $1",
                            &[row.id.into(), attempts.into(), next.into(), error.as_str().into()],
                        )
                        .await
                        .map(|_| ())
                }
            }
        };
        if let Err(e) = done {
            tracing::warn!(partner = %key.0, error = %e, "OCPI push: cannot record the outcome; the lease runs out");
            tokio::time::sleep(settings.refresh_interval).await;
        }
        // Other queues may have rows now (a dropped partner's rows, say): let the
        // dispatcher look.
        wake.notify_one();
    }
}

async fn delivered(store: &Store, row: &Row, location: Option<String>) -> Result<(), DbError> {
    let mut tx = store.begin().await?;
    if let Some(cdr_id) = &row.cdr_id {
        tx.exec(
            "UPDATE ocpi_cdrs SET partner_location = COALESCE($2, partner_location), delivered_at = $3 \
             WHERE cdr_id = $1",
            &[cdr_id.as_str().into(), location.as_deref().into(), Utc::now().into()],
        )
        .await?;
    }
    tx.exec("DELETE FROM ocpi_outbox WHERE id = $1", &[row.id.into()]).await?;
    tx.commit().await
}

async fn park(store: &Store, row: &Row, why: &str) -> Result<(), DbError> {
    store
        .exec(
            "UPDATE ocpi_outbox SET state = 'parked', attempts = attempts + 1, lease_until_ms = NULL, \
             leased_by = NULL, last_error = $2 WHERE id = $1",
            &[row.id.into(), why.into()],
        )
        .await
        .map(|_| ())
}

/// Moves `partner_id`'s parked CDRs back to pending, as if never tried (an operator
/// after the partner fixed what made it refuse them); how many. The caller wakes the
/// delivery ([`PushHandle::wake`]).
pub async fn retry_parked(store: &Store, partner_id: &str) -> Result<u64, DbError> {
    store
        .exec(
            "UPDATE ocpi_outbox SET state = 'pending', attempts = 0, next_attempt_ms = $2, lease_until_ms = NULL, \
             leased_by = NULL WHERE partner_id = $1 AND state = 'parked'",
            &[partner_id.into(), Utc::now().timestamp_millis().into()],
        )
        .await
}

/// What waits in the outbox per partner: `(partner_id, pending, parked)`.
pub async fn backlog(store: &Store) -> Result<Vec<(String, i64, i64)>, DbError> {
    let rows = store
        .fetch(
            "SELECT partner_id, SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END), \
                 SUM(CASE WHEN state = 'parked' THEN 1 ELSE 0 END) \
             FROM ocpi_outbox GROUP BY partner_id ORDER BY partner_id",
            &[],
            &[Ty::Text, Ty::Int, Ty::Int],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((r.text(0)?.to_owned(), r.int(1).unwrap_or(0), r.int(2).unwrap_or(0))))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = settings();
        let waits: Vec<u128> = (1..=9).map(|a| backoff(&s, a).as_millis()).collect();
        assert_eq!(waits, vec![500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        assert_eq!(backoff(&s, 1000), Duration::from_secs(30));
    }

    #[test]
    fn location_pushes_go_below_our_party() {
        let s = settings();
        let p = Push::location(
            &s,
            &Change::EvseStatus {
                location_id: "L".into(),
                uid: "L*CP*1".into(),
                status: "CHARGING".into(),
                last_updated: "2026-01-01T00:00:00.000Z".into(),
            },
        );
        assert_eq!((p.module, p.method.as_str(), p.path.as_str()), ("locations", "PATCH", "/DE/SPL/L/L*CP*1"));
        let body: Value = serde_json::from_str(&p.body).expect("json");
        assert_eq!(body["status"], "CHARGING");
    }
}
