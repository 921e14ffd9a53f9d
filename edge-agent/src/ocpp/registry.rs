//! Live connections, one per station, and the way to send a station a CALL from
//! anywhere in the agent (API, balancer, sync). A station that reconnects replaces its
//! old connection: the old one is told to close and its pending CALLs end as
//! `Disconnected`.

use super::calls::Outcome;
use serde_json::Value;
use shared_model::ocpp::OcppRequest;
use shared_model::ocpp::framing::{ErrorCode, decode_payload};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

/// What a connection task is asked to do.
pub enum Command {
    /// Send a CALL and report its outcome.
    Call { action: String, payload: Value, reply: oneshot::Sender<Outcome> },
    /// Close: a newer connection of the same station took over.
    Replaced,
    /// Close on request (e.g. the station was blocked).
    Close,
}

#[derive(Clone)]
struct Handle {
    conn_id: u64,
    tx: mpsc::Sender<Command>,
    connected_at: chrono::DateTime<chrono::Utc>,
    protocol: &'static str,
}

/// A live connection as shown in the API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LiveInfo {
    pub connected_at: chrono::DateTime<chrono::Utc>,
    pub protocol: &'static str,
}

/// Why a CALL to a station did not produce its response.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CommandError {
    #[error("charger {0} is not connected")]
    NotConnected(String),
    #[error("too many calls queued for charger {0}")]
    QueueFull(String),
    #[error("charger did not answer in time")]
    Timeout,
    #[error("the connection closed before the charger answered")]
    Disconnected,
    #[error("charger answered with CALLERROR {code}: {description}")]
    CallError { code: ErrorCode, description: String },
    #[error("charger's answer does not match the {action} response schema: {reason}")]
    BadResponse { action: String, reason: String },
}

#[derive(Default)]
pub struct Registry {
    live: Mutex<HashMap<String, Handle>>,
    next_conn: AtomicU64,
}

impl Registry {
    /// Registers a new connection; returns its id and the channel to drive it. The
    /// previous connection of the station, if any, is told to close.
    pub fn attach(&self, station: &str, protocol: &'static str) -> (u64, mpsc::Receiver<Command>) {
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::channel(256);
        let handle = Handle { conn_id, tx, connected_at: chrono::Utc::now(), protocol };
        let old = self.live.lock().ok().and_then(|mut m| m.insert(station.to_owned(), handle));
        if let Some(old) = old {
            let _ = old.tx.try_send(Command::Replaced);
        }
        (conn_id, rx)
    }

    /// Removes a connection unless a newer one replaced it already. True if removed.
    pub fn detach(&self, station: &str, conn_id: u64) -> bool {
        let Ok(mut m) = self.live.lock() else { return false };
        if m.get(station).is_some_and(|h| h.conn_id == conn_id) {
            m.remove(station);
            true
        } else {
            false
        }
    }

    pub fn info(&self, station: &str) -> Option<LiveInfo> {
        self.live.lock().ok()?.get(station).map(|h| LiveInfo { connected_at: h.connected_at, protocol: h.protocol })
    }

    pub fn connected(&self) -> Vec<String> {
        self.live.lock().map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }

    /// Asks the station's connection to close.
    pub async fn close(&self, station: &str) {
        let tx = self.live.lock().ok().and_then(|m| m.get(station).map(|h| h.tx.clone()));
        if let Some(tx) = tx {
            let _ = tx.send(Command::Close).await;
        }
    }

    /// Sends a raw CALL and waits for its outcome.
    pub async fn call_raw(&self, station: &str, action: &str, payload: Value) -> Result<Value, CommandError> {
        let tx = self
            .live
            .lock()
            .ok()
            .and_then(|m| m.get(station).map(|h| h.tx.clone()))
            .ok_or_else(|| CommandError::NotConnected(station.to_owned()))?;
        let (reply, rx) = oneshot::channel();
        tx.send(Command::Call { action: action.to_owned(), payload, reply })
            .await
            .map_err(|_| CommandError::NotConnected(station.to_owned()))?;
        match rx.await {
            Ok(Outcome::Result(v)) => Ok(v),
            Ok(Outcome::Error(e)) => Err(CommandError::CallError { code: e.code, description: e.description }),
            Ok(Outcome::Timeout) => Err(CommandError::Timeout),
            Ok(Outcome::QueueFull) => Err(CommandError::QueueFull(station.to_owned())),
            // The connection ended before it took the command.
            Ok(Outcome::Disconnected) | Err(_) => Err(CommandError::Disconnected),
        }
    }

    /// Sends a typed CALL; the answer is checked against the response type.
    pub async fn call<R: OcppRequest>(&self, station: &str, request: &R) -> Result<R::Response, CommandError> {
        let payload = serde_json::to_value(request).map_err(|e| CommandError::BadResponse {
            action: R::ACTION.to_owned(),
            reason: format!("request did not serialise: {e}"),
        })?;
        let value = self.call_raw(station, R::ACTION, payload).await?;
        decode_payload::<R::Response>(&value)
            .map_err(|(_, reason)| CommandError::BadResponse { action: R::ACTION.to_owned(), reason })
    }
}
