//! An OCPP 1.6J charge point simulator with EVs that really draw current.
//!
//! [`ChargePoint::connect`] opens the WebSocket (`ws://…/ocpp/{id}`, subprotocol
//! `ocpp1.6`, HTTP Basic auth when a password is set) and spawns a driver task that owns
//! the connection. The [`ChargePoint`] handle then plays the charger's user and hardware:
//! boot, plug in, start and stop transactions, pull the cable, lose power, reconnect.
//! Meanwhile the driver behaves like a real charger on its own:
//!
//! - it answers every CALL of the central system as OCPP 1.6 says (RemoteStart/Stop,
//!   ChangeAvailability, Reset with a real reboot, UnlockConnector, Get/ChangeConfiguration,
//!   ClearCache, TriggerMessage, Set/ClearChargingProfile, GetCompositeSchedule,
//!   SendLocalList, GetLocalListVersion, ReserveNow, CancelReservation, UpdateFirmware and
//!   GetDiagnostics with their status notifications, DataTransfer); unknown actions get a
//!   `NotImplemented` CALLERROR, malformed CALLs the CALLERROR the framing names;
//! - it keeps one CALL of its own outstanding at a time, with a timeout;
//! - it sends heartbeats and, during a transaction, MeterValues every `meter_interval`
//!   (energy register, power, current and voltage per phase, offered current, SoC);
//! - the EV draws `min(EV max, limit)` where the limit comes from the installed charging
//!   profiles (TxProfile > TxDefaultProfile, capped by ChargePointMaxProfile), follows a
//!   new limit after a delay with a ramp, pauses below 6 A (SuspendedEVSE), and the meter
//!   integrates its power (see [`ev`]);
//! - transaction-related messages survive connection loss: they are queued in order and
//!   delivered after the next accepted BootNotification; a transaction started offline
//!   gets its id from the queued StartTransaction's answer and the later queued messages
//!   are rewritten to it (see [`queue`]).
//!
//! ```no_run
//! use simulators::chargepoint::{ChargePoint, ChargePointConfig, EvModel};
//! use shared_model::ocpp::v16::{Reason, RegistrationStatus};
//! use std::time::Duration;
//!
//! # async fn demo() -> Result<(), simulators::chargepoint::SimError> {
//! let cfg = ChargePointConfig::new("CP001", "ws://127.0.0.1:9000/ocpp")
//!     .with_password("secret")
//!     .with_connectors(2)
//!     .with_ev(EvModel::instant().with_max_current(16.0))
//!     .with_meter_interval(Duration::from_secs(1));
//! let cp = ChargePoint::connect(cfg).await?;
//! assert_eq!(cp.boot().await?.status, RegistrationStatus::Accepted);
//! cp.plug_in(1).await?;
//! let tx = cp.start_transaction(1, "TAG0001").await?;
//! // ... the central system may now send SetChargingProfile; the EV follows:
//! let state = cp.wait_for_state(|s| s.connectors[0].current_a > 0.0, Duration::from_secs(5)).await?;
//! println!("transaction {tx} draws {} A", state.connectors[0].current_a);
//! cp.stop_transaction(1, Reason::Local).await?;
//! cp.unplug(1).await?;
//! cp.disconnect().await?;
//! # Ok(())
//! # }
//! ```

pub mod config;
mod driver;
pub mod error;
pub mod ev;
pub mod profiles;
pub mod queue;
pub mod state;
mod station;

pub use config::{ChargePointConfig, EvModel};
pub use error::SimError;
pub use state::{ChargePointState, ConfigValue, ConnectorState, ReceivedCall, TransactionState};

pub use driver::AnswerMode;
use driver::{CallLog, Command, Driver, Op, Ticket};
use serde_json::Value;
use shared_model::ocpp::OcppRequest;
use shared_model::ocpp::framing::{Frame, decode_payload};
use shared_model::ocpp::v16::{
    AuthorizationStatus, AuthorizeRequest, AuthorizeResponse, BootNotificationResponse, ChargePointStatus,
    HeartbeatRequest, HeartbeatResponse, IdToken, Reason, RegistrationStatus, StartTransactionResponse,
    StopTransactionResponse,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// A running simulated charge point. Dropping it stops the simulator (closing the
/// connection cleanly). All methods take `&self`; share it with an `Arc` if needed.
pub struct ChargePoint {
    cfg: ChargePointConfig,
    cmd: mpsc::Sender<Command>,
    state: watch::Receiver<ChargePointState>,
    calls: Arc<CallLog>,
    call_cursor: Mutex<HashMap<String, usize>>,
}

impl std::fmt::Debug for ChargePoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChargePoint").field("id", &self.cfg.id).finish_non_exhaustive()
    }
}

impl ChargePoint {
    /// Opens the WebSocket and starts the simulator. Does not boot: call
    /// [`boot`](Self::boot) (tests may want to send something else first).
    ///
    /// Fails with [`SimError::Refused`] (with the HTTP status) when the server refuses the
    /// upgrade, [`SimError::SubprotocolRefused`] when it does not select `ocpp1.6`, and
    /// [`SimError::Connect`] when nothing answers.
    pub async fn connect(cfg: ChargePointConfig) -> Result<ChargePoint, SimError> {
        let ws = driver::open(&cfg).await?;
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let calls = Arc::new(CallLog::new());
        let initial = station_snapshot(&cfg);
        let (state_tx, state_rx) = watch::channel(initial);
        let driver = Driver::new(cfg.clone(), ws, cmd_rx, calls.clone(), state_tx);
        tokio::spawn(driver.run());
        Ok(ChargePoint { cfg, cmd: cmd_tx, state: state_rx, calls, call_cursor: Mutex::new(HashMap::new()) })
    }

    /// The charge point identity.
    pub fn id(&self) -> &str {
        &self.cfg.id
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &ChargePointConfig {
        &self.cfg
    }

    /// How long a high-level operation waits for its answer before reporting it queued
    /// (the answer may wait behind other queued messages).
    fn answer_wait(&self) -> Duration {
        self.cfg.call_timeout.saturating_mul(3) + Duration::from_secs(1)
    }

    async fn command<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, SimError> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(make(tx)).await.map_err(|_| SimError::Stopped)?;
        rx.await.map_err(|_| SimError::Stopped)
    }

    async fn op(&self, op: Op) -> Result<Ticket, SimError> {
        self.command(|reply| Command::Op { op, reply }).await?
    }

    /// Waits for a ticket's answer: `Ok(None)` when the message was queued for a later
    /// connection (offline, lost connection, or still waiting behind others).
    async fn answer(&self, ticket: Ticket) -> Result<Option<Value>, SimError> {
        let Some(rx) = ticket.answer else { return Ok(None) };
        match tokio::time::timeout(self.answer_wait(), rx).await {
            Ok(Ok(result)) => result.map(Some),
            Ok(Err(_)) | Err(_) => Ok(None),
        }
    }

    /// Sends any CALL and returns the decoded CALLRESULT. A CALLERROR becomes
    /// [`SimError::CallError`]. Not queued while offline ([`SimError::NotConnected`]).
    pub async fn call<R: OcppRequest>(&self, req: R) -> Result<R::Response, SimError> {
        let payload = serde_json::to_value(&req).map_err(|e| SimError::Invalid(e.to_string()))?;
        let v = self.call_value(R::ACTION, payload).await?;
        decode_payload::<R::Response>(&v).map_err(|(_, m)| SimError::BadResponse(m))
    }

    /// Sends a CALL with any action and payload; returns the CALLRESULT payload.
    pub async fn call_value(&self, action: &str, payload: Value) -> Result<Value, SimError> {
        let action_name = action.to_string();
        let rx = {
            let (tx, rx) = oneshot::channel();
            self.cmd
                .send(Command::Call { action: action.to_string(), payload, reply: tx })
                .await
                .map_err(|_| SimError::Stopped)?;
            rx
        };
        match tokio::time::timeout(self.answer_wait(), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(SimError::Disconnected),
            Err(_) => Err(SimError::Timeout { action: action_name }),
        }
    }

    /// Sends any text frame (possibly invalid) and returns the frame the server sends that
    /// answers it: the CALLRESULT/CALLERROR with its unique id, or — when no unique id can
    /// be read from `text` — the next frame of any kind. Waits at most the call timeout
    /// ([`SimError::Timeout`] if the server stays silent, as it should for some inputs).
    pub async fn send_raw(&self, text: impl Into<String>) -> Result<Frame, SimError> {
        self.send_raw_with_timeout(text, self.cfg.call_timeout).await
    }

    /// [`send_raw`](Self::send_raw) with its own timeout.
    pub async fn send_raw_with_timeout(&self, text: impl Into<String>, timeout: Duration) -> Result<Frame, SimError> {
        let text = text.into();
        let rx = {
            let (tx, rx) = oneshot::channel();
            self.cmd.send(Command::Raw { text, timeout, reply: tx }).await.map_err(|_| SimError::Stopped)?;
            rx
        };
        match tokio::time::timeout(timeout + self.answer_wait(), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(SimError::Disconnected),
            Err(_) => Err(SimError::Timeout { action: "raw".to_string() }),
        }
    }

    /// Sends a text frame without waiting for anything (also ignores the one-CALL rule).
    pub async fn send_text(&self, text: impl Into<String>) -> Result<(), SimError> {
        let text = text.into();
        self.command(|reply| Command::SendText { text, reply }).await?
    }

    /// BootNotification. When Accepted, heartbeats start, a StatusNotification goes out
    /// for every connector (`status_on_boot`) and queued transaction messages are sent.
    pub async fn boot(&self) -> Result<BootNotificationResponse, SimError> {
        let ticket = self.command(|reply| Command::Boot { reply }).await??;
        let Some(rx) = ticket.answer else { return Err(SimError::NotConnected) };
        let v = match tokio::time::timeout(self.answer_wait(), rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(SimError::Disconnected),
            Err(_) => return Err(SimError::Timeout { action: "BootNotification".to_string() }),
        };
        decode_payload::<BootNotificationResponse>(&v).map_err(|(_, m)| SimError::BadResponse(m))
    }

    /// Heartbeat.
    pub async fn heartbeat(&self) -> Result<HeartbeatResponse, SimError> {
        self.call(HeartbeatRequest {}).await
    }

    /// Authorize.
    pub async fn authorize(&self, id_tag: &str) -> Result<AuthorizeResponse, SimError> {
        let id_tag = IdToken::try_new(id_tag).map_err(SimError::Invalid)?;
        self.call(AuthorizeRequest { id_tag }).await
    }

    /// StatusNotification with any status (e.g. Faulted); connector 0 is the charge point.
    /// The status stays until the next plug, start, stop or unplug on that connector.
    pub async fn status_notification(&self, connector: u32, status: ChargePointStatus) -> Result<(), SimError> {
        let t = self.op(Op::Status { connector, status }).await?;
        self.answer(t).await.map(|_| ())
    }

    /// The EV's cable goes in: StatusNotification Preparing.
    pub async fn plug_in(&self, connector: u32) -> Result<(), SimError> {
        let t = self.op(Op::PlugIn(connector)).await?;
        self.answer(t).await.map(|_| ())
    }

    /// Starts a transaction (plugging in first if needed) and lets the EV charge.
    ///
    /// Returns the central system's transaction id; while offline (or if the answer is
    /// held up behind other queued messages) it returns the negative local id at once, and
    /// [`state`](Self::state) shows the real id once the queued StartTransaction is
    /// answered. When the central system does not accept the id tag the simulator stops
    /// the transaction (reason DeAuthorized) and this returns [`SimError::IdTagRejected`].
    pub async fn start_transaction(&self, connector: u32, id_tag: &str) -> Result<i32, SimError> {
        let t = self.op(Op::Start { connector, id_tag: id_tag.to_string() }).await?;
        let local = t.local_id.unwrap_or(-1);
        let Some(v) = self.answer(t).await? else { return Ok(local) };
        let r = decode_payload::<StartTransactionResponse>(&v).map_err(|(_, m)| SimError::BadResponse(m))?;
        if r.id_tag_info.status == AuthorizationStatus::Accepted {
            Ok(r.transaction_id)
        } else {
            Err(SimError::IdTagRejected {
                status: format!("{:?}", r.id_tag_info.status),
                transaction_id: Some(r.transaction_id),
            })
        }
    }

    /// Stops the transaction on `connector`. Returns the StopTransaction answer, or `None`
    /// when it was queued for a later connection.
    pub async fn stop_transaction(
        &self,
        connector: u32,
        reason: Reason,
    ) -> Result<Option<StopTransactionResponse>, SimError> {
        let t = self.op(Op::Stop { connector, reason }).await?;
        match self.answer(t).await? {
            Some(v) => decode_payload(&v).map(Some).map_err(|(_, m)| SimError::BadResponse(m)),
            None => Ok(None),
        }
    }

    /// The cable is pulled: a running transaction stops (EVDisconnected), then Available.
    pub async fn unplug(&self, connector: u32) -> Result<(), SimError> {
        let t = self.op(Op::Unplug(connector)).await?;
        self.answer(t).await.map(|_| ())
    }

    /// Sends a MeterValues for `connector` now (queued while offline if a transaction runs).
    pub async fn send_meter_values(&self, connector: u32) -> Result<(), SimError> {
        let t = self.op(Op::MeterValues(connector)).await?;
        self.answer(t).await.map(|_| ())
    }

    /// Sends the last StartTransaction again, identical but with a new unique id, as a
    /// charger does when it missed the answer; returns the transaction id answered (a
    /// correct central system answers the same id as the first time).
    pub async fn retransmit_last_start(&self) -> Result<i32, SimError> {
        let payload = self
            .command(|reply| Command::LastStart { reply })
            .await?
            .ok_or_else(|| SimError::InvalidState("no StartTransaction was sent yet".to_string()))?;
        let v = self.call_value("StartTransaction", payload).await?;
        let r = decode_payload::<StartTransactionResponse>(&v).map_err(|(_, m)| SimError::BadResponse(m))?;
        Ok(r.transaction_id)
    }

    /// Closes the connection cleanly (close frame). State and queued messages are kept;
    /// [`reconnect`](Self::reconnect) comes back.
    pub async fn disconnect(&self) -> Result<(), SimError> {
        self.command(|reply| Command::Disconnect { reply }).await
    }

    /// Drops the connection without a close frame, like a power cut or a pulled network
    /// cable. All state (transactions, meter, queued messages) is kept, like a charger's
    /// persistent memory; the EVs keep their state too. No automatic reconnect.
    pub async fn power_loss(&self) -> Result<(), SimError> {
        self.command(|reply| Command::PowerLoss { reply }).await
    }

    /// Reconnects (dropping the current connection if any), boots (retrying while the
    /// central system answers Pending or Rejected) and, once Accepted, delivers the queued
    /// transaction messages in order; returns after the first BootNotification answer and,
    /// if Accepted, once the queue is delivered (or the call timeout per message passed).
    pub async fn reconnect(&self) -> Result<BootNotificationResponse, SimError> {
        let ticket = self.command(|reply| Command::Reconnect { reply }).await??;
        let v = self.answer(ticket).await?.ok_or(SimError::Disconnected)?;
        let r = decode_payload::<BootNotificationResponse>(&v).map_err(|(_, m)| SimError::BadResponse(m))?;
        if r.status == RegistrationStatus::Accepted {
            let queued = self.state.borrow().queued_messages as u32;
            let wait = self.cfg.call_timeout.saturating_mul(queued + 1);
            let _ = self.wait_queue_drained(wait).await;
        }
        Ok(r)
    }

    /// Changes the central system URL for the next (re)connect, e.g. after the server
    /// restarted on another port.
    pub async fn set_base_url(&self, base_url: impl Into<String>) -> Result<(), SimError> {
        self.cmd.send(Command::SetBaseUrl(base_url.into())).await.map_err(|_| SimError::Stopped)
    }

    /// How to answer the central system's CALLs of `action` from now on: at once, late
    /// (acting on them only then), or never (to play a charger that times out).
    pub async fn set_answer_mode(&self, action: &str, mode: AnswerMode) -> Result<(), SimError> {
        let action = action.to_owned();
        self.command(|reply| Command::AnswerMode { action, mode, reply }).await
    }

    /// The central system's CALLs dropped unanswered ([`AnswerMode::Never`]): action and
    /// payload, in order.
    pub fn ignored_calls(&self) -> Vec<(String, Value)> {
        self.calls.ignored.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// A fresh snapshot of the charger's state.
    pub async fn state(&self) -> Result<ChargePointState, SimError> {
        self.command(|reply| Command::State { reply }).await
    }

    /// The last published snapshot, without asking the driver (updated after every event
    /// and every physics tick).
    pub fn snapshot(&self) -> ChargePointState {
        self.state.borrow().clone()
    }

    /// A receiver of state snapshots (updated after every event and physics tick).
    pub fn watch_state(&self) -> watch::Receiver<ChargePointState> {
        self.state.clone()
    }

    /// Waits until `pred` holds for a snapshot; [`SimError::Timeout`] after `timeout`.
    pub async fn wait_for_state(
        &self,
        mut pred: impl FnMut(&ChargePointState) -> bool,
        timeout: Duration,
    ) -> Result<ChargePointState, SimError> {
        let mut rx = self.state.clone();
        let wait = async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if pred(&s) {
                        return Ok(s.clone());
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(SimError::Stopped);
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or_else(|_| Err(SimError::Timeout { action: "wait_for_state".to_string() }))
    }

    /// Waits until no transaction-related message is queued any more.
    pub async fn wait_queue_drained(&self, timeout: Duration) -> Result<(), SimError> {
        self.wait_for_state(|s| s.queued_messages == 0, timeout).await.map(|_| ())
    }

    /// Every CALL the central system sent so far (the last 10 000), with our answers, in
    /// order.
    pub fn received_calls(&self) -> Vec<ReceivedCall> {
        self.calls.log.lock().unwrap_or_else(PoisonError::into_inner).calls.iter().cloned().collect()
    }

    /// A live feed of the central system's CALLs from now on.
    pub fn subscribe_calls(&self) -> broadcast::Receiver<ReceivedCall> {
        self.calls.tx.subscribe()
    }

    /// Waits for the next central-system CALL with `action` not yet returned by this
    /// method (calls received before are considered too, in order).
    pub async fn wait_for_call(&self, action: &str, timeout: Duration) -> Result<ReceivedCall, SimError> {
        let mut feed = self.calls.tx.subscribe();
        let find = || {
            let log = self.calls.log.lock().unwrap_or_else(PoisonError::into_inner);
            let mut cursor = self.call_cursor.lock().unwrap_or_else(PoisonError::into_inner);
            let start = cursor.get(action).copied().unwrap_or(0).max(log.dropped);
            let found = log.calls.iter().enumerate().skip(start - log.dropped).find(|(_, c)| c.action == action);
            found.map(|(i, c)| {
                cursor.insert(action.to_string(), log.dropped + i + 1);
                c.clone()
            })
        };
        let wait = async {
            loop {
                if let Some(c) = find() {
                    return Ok(c);
                }
                match feed.recv().await {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Err(SimError::Stopped),
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or_else(|_| Err(SimError::Timeout { action: format!("wait_for_call {action}") }))
    }
}

/// The snapshot before the driver publishes its first one.
fn station_snapshot(cfg: &ChargePointConfig) -> ChargePointState {
    let mut s = station::Station::new(cfg);
    s.on_connected();
    s.snapshot(chrono::Utc::now())
}

#[cfg(test)]
mod tests;
