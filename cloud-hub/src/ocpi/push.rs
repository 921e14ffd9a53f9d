//! Pushes of location changes to every registered partner with a locations Receiver
//! endpoint (OCPI 2.2.1 "Locations module", Receiver interface): PUT of a new or changed
//! Location or EVSE, PATCH of an EVSE's `status` and `last_updated`; and of new or
//! changed tariffs to every partner with a tariffs Receiver endpoint (PUT of the Tariff).
//!
//! Ingest never waits for this: a refresh hands its changes over a channel. Each partner
//! has a queue and a task of its own, which sends in order and retries a failed push
//! with exponential backoff (0.5 s doubling to 30 s, 8 tries) before it drops it with a
//! warning; a slow partner delays nobody else. The queues live in memory: pushes not yet
//! delivered when the hub stops are lost, and the partner catches up by crawling
//! `GET locations?date_from=` (every object's `last_updated` is exact for that).

use axum::http::Method;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Settings;
use super::client::{Client, Route};
use super::locations::Change;
use super::partners::{self, PartnerState};
use crate::db::Store;
use shared_model::tariff::Tariff;

/// The tries of one push before it is dropped.
pub const MAX_TRIES: u32 = 8;

/// One push: what is sent, and to which module of the partner.
#[derive(Debug, Clone, PartialEq)]
pub enum Push {
    Location(Change),
    Tariff(Tariff),
}

impl Push {
    /// The module (of the partner's Receiver endpoint) this push goes to.
    pub fn module(&self) -> &'static str {
        match self {
            Push::Location(_) => "locations",
            Push::Tariff(_) => "tariffs",
        }
    }
}

/// Where changes are handed to the pushes.
#[derive(Clone)]
pub struct PushHandle {
    tx: mpsc::UnboundedSender<Vec<Push>>,
    task: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl PushHandle {
    /// Starts the dispatcher.
    pub fn start(store: Store, settings: Arc<Settings>, client: Client) -> PushHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(dispatch(rx, store, settings, client));
        PushHandle { tx, task: Arc::new(std::sync::Mutex::new(Some(task))) }
    }

    /// Queues changes for every partner registered now; never blocks.
    pub fn send(&self, changes: Vec<Change>) {
        let _ = self.tx.send(changes.into_iter().map(Push::Location).collect());
    }

    /// Queues new or changed tariffs for every partner registered now; never blocks.
    pub fn send_tariffs(&self, tariffs: Vec<Tariff>) {
        let _ = self.tx.send(tariffs.into_iter().map(Push::Tariff).collect());
    }

    /// Stops the dispatcher and the partners' tasks (undelivered pushes are dropped).
    pub async fn stop(&self) {
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }
}

/// One HTTP request of a push, built for the partner's endpoint.
fn request(settings: &Settings, base: &str, push: &Push) -> (Method, String, Value) {
    let prefix = format!("{base}/{}/{}", settings.country_code, settings.party_id);
    let change = match push {
        Push::Tariff(t) => {
            return (Method::PUT, format!("{prefix}/{}", t.id), serde_json::to_value(t).unwrap_or(Value::Null));
        }
        Push::Location(change) => change,
    };
    match change {
        Change::Location(l) => {
            (Method::PUT, format!("{prefix}/{}", l.id), serde_json::to_value(l).unwrap_or(Value::Null))
        }
        Change::Evse { location_id, evse } => (
            Method::PUT,
            format!("{prefix}/{location_id}/{}", evse.uid),
            serde_json::to_value(evse).unwrap_or(Value::Null),
        ),
        Change::EvseStatus { location_id, uid, status, last_updated } => (
            Method::PATCH,
            format!("{prefix}/{location_id}/{uid}"),
            json!({ "status": status, "last_updated": last_updated }),
        ),
    }
}

struct Worker {
    tx: mpsc::UnboundedSender<Push>,
    task: JoinHandle<()>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn dispatch(mut rx: mpsc::UnboundedReceiver<Vec<Push>>, store: Store, settings: Arc<Settings>, client: Client) {
    let mut workers: HashMap<String, Worker> = HashMap::new();
    while let Some(changes) = rx.recv().await {
        let registered = match partners::list(&store).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "OCPI push: cannot read the partners; changes not pushed");
                continue;
            }
        };
        let registered: Vec<_> = registered.into_iter().filter(|p| p.state == PartnerState::Registered).collect();
        workers.retain(|id, w| registered.iter().any(|p| &p.id == id) && !w.task.is_finished());
        for p in registered {
            let changes: Vec<&Push> = changes.iter().filter(|c| p.endpoint(c.module(), "RECEIVER").is_some()).collect();
            if changes.is_empty() {
                continue;
            }
            let worker = workers.entry(p.id.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                let task =
                    tokio::spawn(partner_loop(p.id.clone(), rx, store.clone(), settings.clone(), client.clone()));
                Worker { tx, task }
            });
            for change in changes {
                let _ = worker.tx.send(change.clone());
            }
        }
    }
}

async fn partner_loop(
    id: String,
    mut rx: mpsc::UnboundedReceiver<Push>,
    store: Store,
    settings: Arc<Settings>,
    client: Client,
) {
    let from = Route { from: Some(settings.us()), to: None };
    while let Some(change) = rx.recv().await {
        let mut backoff = Duration::from_millis(500);
        for attempt in 1..=MAX_TRIES {
            // Read the partner each time: its token may have rotated, it may be gone.
            let p = match partners::get(&store, &id).await {
                Ok(Some(p)) if p.state == PartnerState::Registered => p,
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(partner = %id, error = %e, "OCPI push: cannot read the partner");
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            };
            let Some(token) = p.outgoing_token.as_deref() else { return };
            // The partner may have dropped this module's Receiver since (a new registration).
            let Some(base) = p.endpoint(change.module(), "RECEIVER") else { break };
            let (method, url, body) = request(&settings, base, &change);
            let route = Route { to: p.country_code.clone().zip(p.party_id.clone()), ..from.clone() };
            match client.call::<Value>(method, &url, token, p.raw_tokens, &route, Some(&body)).await {
                Ok(_) => break,
                Err(e) if attempt == MAX_TRIES => {
                    tracing::warn!(partner = %id, %url, error = %e, "OCPI push: dropped after {MAX_TRIES} tries");
                }
                Err(e) => {
                    tracing::debug!(partner = %id, %url, error = %e, attempt, "OCPI push failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}
