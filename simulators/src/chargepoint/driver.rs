//! The connection driver: one task per charge point owns the WebSocket and the
//! [`Station`], and runs one `select!` over the socket, the command channel and a timer.
//! It keeps one CALL of ours outstanding at a time (OCPP-J §4.1.1), answers every CALL of
//! the central system at once, and reconnects after a Reset (and, if configured, after
//! the server closed the connection).

use super::config::ChargePointConfig;
use super::error::SimError;
use super::state::{ChargePointState, ReceivedCall};
use super::station::{Ctx, Now, Outgoing, Station};
use base64::Engine;
use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use shared_model::ocpp::framing::{CallError, Frame};
use shared_model::ocpp::v16::{ChargePointStatus, Reason, ResetType};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, info, warn};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Answer channel of one queued CALL.
pub(crate) type Waiter = oneshot::Sender<Result<Value, SimError>>;

/// What a charger operation queued: the transaction's local id (for StartTransaction) and,
/// when the message goes out on the current connection, the channel of its answer.
pub(crate) struct Ticket {
    pub local_id: Option<i32>,
    pub answer: Option<oneshot::Receiver<Result<Value, SimError>>>,
}

/// Physical or user operations on the charger.
#[derive(Debug)]
pub(crate) enum Op {
    Status { connector: u32, status: ChargePointStatus },
    PlugIn(u32),
    Start { connector: u32, id_tag: String },
    Stop { connector: u32, reason: Reason },
    Unplug(u32),
    MeterValues(u32),
}

pub(crate) enum Command {
    Call { action: String, payload: Value, reply: Waiter },
    Raw { text: String, timeout: Duration, reply: oneshot::Sender<Result<Frame, SimError>> },
    SendText { text: String, reply: oneshot::Sender<Result<(), SimError>> },
    Boot { reply: oneshot::Sender<Result<Ticket, SimError>> },
    Op { op: Op, reply: oneshot::Sender<Result<Ticket, SimError>> },
    LastStart { reply: oneshot::Sender<Option<Value>> },
    Disconnect { reply: oneshot::Sender<()> },
    PowerLoss { reply: oneshot::Sender<()> },
    Reconnect { reply: oneshot::Sender<Result<Ticket, SimError>> },
    SetBaseUrl(String),
    State { reply: oneshot::Sender<ChargePointState> },
    AnswerMode { action: String, mode: AnswerMode, reply: oneshot::Sender<()> },
}

/// How the simulator answers the central system's CALLs of one action (to play a
/// charger that is slow or silent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnswerMode {
    /// At once, as OCPP wants.
    #[default]
    Normal,
    /// Only after this long; the charger also acts on it only then (a late
    /// RemoteStartTransaction still starts the transaction).
    Delay(Duration),
    /// Never: the CALL is dropped unanswered and not acted on.
    Never,
}

/// Most central-system CALLs kept in the log (the oldest go first), so a simulator that
/// runs for days keeps bounded memory.
pub(crate) const CALL_LOG_CAPACITY: usize = 10_000;

/// The log of central-system CALLs, shared with the handle.
pub(crate) struct CallLog {
    pub log: Mutex<CallLogInner>,
    pub tx: broadcast::Sender<ReceivedCall>,
    /// CALLs dropped unanswered ([`AnswerMode::Never`]): action and payload.
    pub ignored: Mutex<Vec<(String, Value)>>,
}

/// The kept CALLs; `dropped` older ones were discarded, so absolute index `i` is at
/// `calls[i - dropped]`.
pub(crate) struct CallLogInner {
    pub calls: VecDeque<ReceivedCall>,
    pub dropped: usize,
}

impl CallLog {
    pub fn new() -> Self {
        CallLog {
            log: Mutex::new(CallLogInner { calls: VecDeque::new(), dropped: 0 }),
            tx: broadcast::channel(1024).0,
            ignored: Mutex::new(Vec::new()),
        }
    }

    fn push(&self, call: ReceivedCall) {
        {
            let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            if log.calls.len() >= CALL_LOG_CAPACITY {
                log.calls.pop_front();
                log.dropped += 1;
            }
            log.calls.push_back(call.clone());
        }
        let _ = self.tx.send(call);
    }
}

enum InFlight {
    Call { out: Outgoing, unique_id: String, deadline: Instant },
    Raw { id: Option<String>, deadline: Instant, reply: oneshot::Sender<Result<Frame, SimError>> },
}

struct RawRequest {
    text: String,
    timeout: Duration,
    reply: oneshot::Sender<Result<Frame, SimError>>,
}

/// Opens the WebSocket: `ocpp1.6` subprotocol, Basic auth when a password is set.
pub(crate) async fn open(cfg: &ChargePointConfig) -> Result<Ws, SimError> {
    let mut req = cfg.url().into_client_request().map_err(|e| SimError::Connect(e.to_string()))?;
    if let Some(p) = &cfg.subprotocol {
        let v = HeaderValue::from_str(p).map_err(|e| SimError::Invalid(format!("subprotocol: {e}")))?;
        req.headers_mut().insert("Sec-WebSocket-Protocol", v);
    }
    if let Some(pw) = &cfg.password {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", cfg.id, pw));
        let v = HeaderValue::from_str(&format!("Basic {token}"))
            .map_err(|e| SimError::Invalid(format!("authorization: {e}")))?;
        req.headers_mut().insert("Authorization", v);
    }
    let ws_config = WebSocketConfig::default().read_buffer_size(16 * 1024).write_buffer_size(0);
    let connect = tokio_tungstenite::connect_async_with_config(req, Some(ws_config), true);
    match tokio::time::timeout(cfg.call_timeout, connect).await {
        Err(_) => Err(SimError::Connect(format!("no WebSocket handshake within {:?}", cfg.call_timeout))),
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(WsError::Http(resp))) => Err(SimError::Refused {
            status: resp.status().as_u16(),
            body: resp.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default(),
        }),
        Ok(Err(WsError::Protocol(ProtocolError::SecWebSocketSubProtocolError(e)))) => {
            Err(SimError::SubprotocolRefused(e.to_string()))
        }
        Ok(Err(e)) => Err(SimError::Connect(e.to_string())),
    }
}

/// Lenient read of a text's unique id (element 1), for matching raw sends.
fn raw_unique_id(text: &str) -> Option<String> {
    let v: Value = serde_json::from_str(text).ok()?;
    v.get(1)?.as_str().map(str::to_string)
}

async fn next_message(ws: &mut Option<Ws>) -> Option<Result<Message, WsError>> {
    match ws {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}

pub(crate) struct Driver {
    cfg: ChargePointConfig,
    station: Station,
    ws: Option<Ws>,
    cmd_rx: mpsc::Receiver<Command>,
    in_flight: Option<InFlight>,
    raw_queue: VecDeque<RawRequest>,
    waiters: HashMap<u64, Waiter>,
    calls: Arc<CallLog>,
    state_tx: watch::Sender<ChargePointState>,
    reconnect_at: Option<Instant>,
    reconnect_attempts: u32,
    next_id: u64,
    answer_modes: HashMap<String, AnswerMode>,
    /// CALLs held back by [`AnswerMode::Delay`], with when to act on and answer them.
    held: Vec<(Instant, shared_model::ocpp::framing::Call)>,
}

/// Most automatic reconnect attempts after one connection loss.
const MAX_RECONNECT_ATTEMPTS: u32 = 10_000;

impl Driver {
    pub(crate) fn new(
        cfg: ChargePointConfig,
        ws: Ws,
        cmd_rx: mpsc::Receiver<Command>,
        calls: Arc<CallLog>,
        state_tx: watch::Sender<ChargePointState>,
    ) -> Self {
        let mut station = Station::new(&cfg);
        station.on_connected();
        Driver {
            cfg,
            station,
            ws: Some(ws),
            cmd_rx,
            in_flight: None,
            raw_queue: VecDeque::new(),
            waiters: HashMap::new(),
            calls,
            state_tx,
            reconnect_at: None,
            reconnect_attempts: 0,
            next_id: 0,
            answer_modes: HashMap::new(),
            held: Vec::new(),
        }
    }

    pub(crate) async fn run(mut self) {
        loop {
            let now = Now::current();
            self.station.tick(now);
            if let Some(kind) = self.station.poll_reset(now.mono, self.in_flight.is_none()) {
                self.reboot(kind).await;
            }
            self.pump().await;
            self.state_tx.send_replace(self.station.snapshot(now.wall));
            let wake = self.next_wake();
            tokio::select! {
                msg = next_message(&mut self.ws) => self.on_message(msg).await,
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd).await,
                    None => break,
                },
                _ = tokio::time::sleep_until(wake) => self.on_timer().await,
            }
        }
        // The handle is gone: close politely.
        if let Some(mut ws) = self.ws.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
        }
        debug!(cp = %self.cfg.id, "driver stopped");
    }

    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut wake = now + Duration::from_secs(3600);
        let mut consider = |t: Instant| wake = wake.min(t);
        if let Some(t) = self.station.next_wake() {
            consider(Instant::from_std(t));
        }
        if self.station.any_transaction() {
            consider(now + self.cfg.tick.max(Duration::from_millis(10)));
        }
        match &self.in_flight {
            Some(InFlight::Call { deadline, .. }) | Some(InFlight::Raw { deadline, .. }) => consider(*deadline),
            None => {}
        }
        if let Some(t) = self.reconnect_at {
            consider(t);
        }
        if let Some(t) = self.held.iter().map(|(t, _)| *t).min() {
            consider(t);
        }
        wake
    }

    fn unique_id(&mut self) -> String {
        self.next_id += 1;
        format!("{}-{}", uuid::Uuid::new_v4().simple().to_string().get(..12).unwrap_or("sim"), self.next_id)
    }

    async fn send_text(&mut self, text: String) -> Result<(), SimError> {
        let Some(ws) = self.ws.as_mut() else { return Err(SimError::NotConnected) };
        match ws.send(Message::text(text)).await {
            Ok(()) => Ok(()),
            Err(e) => {
                warn!(cp = %self.cfg.id, "send failed: {e}");
                self.connection_lost(true);
                Err(SimError::Disconnected)
            }
        }
    }

    /// Sends the next CALL when none is outstanding.
    async fn pump(&mut self) {
        let mut sent = 0;
        while self.in_flight.is_none() && self.ws.is_some() && sent < 64 {
            sent += 1;
            if let Some(raw) = self.raw_queue.pop_front() {
                let id = raw_unique_id(&raw.text);
                let deadline = Instant::now() + raw.timeout;
                if self.send_text(raw.text).await.is_err() {
                    let _ = raw.reply.send(Err(SimError::Disconnected));
                    return;
                }
                self.in_flight = Some(InFlight::Raw { id, deadline, reply: raw.reply });
                return;
            }
            let Some(out) = self.station.next_out(Instant::now().into_std()) else { return };
            let unique_id = self.unique_id();
            let text = Frame::Call(shared_model::ocpp::framing::Call {
                unique_id: unique_id.clone(),
                action: out.action.clone(),
                payload: out.payload.clone(),
            })
            .to_text();
            debug!(cp = %self.cfg.id, action = %out.action, "→ {text}");
            let deadline = Instant::now() + self.cfg.call_timeout;
            let persistent = out.persistent;
            let tag = out.tag;
            if self.send_text(text).await.is_err() {
                // connection_lost ran; a persistent message stays queued for the next one.
                if !persistent && let Some(w) = self.waiters.remove(&tag) {
                    let _ = w.send(Err(SimError::Disconnected));
                }
                return;
            }
            self.in_flight = Some(InFlight::Call { out, unique_id, deadline });
        }
    }

    async fn on_message(&mut self, msg: Option<Result<Message, WsError>>) {
        match msg {
            None => {
                info!(cp = %self.cfg.id, "connection closed by the server");
                self.connection_lost(true);
            }
            Some(Err(e)) => {
                info!(cp = %self.cfg.id, "connection error: {e}");
                self.connection_lost(true);
            }
            Some(Ok(Message::Text(t))) => self.on_text(t.as_str().to_string()).await,
            Some(Ok(Message::Close(frame))) => {
                info!(cp = %self.cfg.id, "close frame from the server: {frame:?}");
                if let Some(ws) = self.ws.as_mut() {
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                }
                self.connection_lost(true);
            }
            Some(Ok(Message::Binary(b))) => warn!(cp = %self.cfg.id, "ignoring a binary message of {} bytes", b.len()),
            Some(Ok(_)) => {}
        }
    }

    async fn on_text(&mut self, text: String) {
        debug!(cp = %self.cfg.id, "← {text}");
        let now = Now::current();
        match Frame::parse(&text) {
            Err(e) => {
                warn!(cp = %self.cfg.id, "invalid frame from the server ({e}): {text}");
                if matches!(self.in_flight, Some(InFlight::Raw { .. }))
                    && let Some(InFlight::Raw { reply, .. }) = self.in_flight.take()
                {
                    let _ = reply.send(Err(SimError::BadFrame { text: text.clone(), reason: e.message.clone() }));
                }
                // OCPP-J §4.2.3: a CALL we cannot read is answered with a CALLERROR when its
                // id is readable; anything else is ignored.
                if e.was_call
                    && let Some(id) = e.unique_id
                {
                    let answer = Frame::CallError(CallError::new(id, e.code, e.message)).to_text();
                    let _ = self.send_text(answer).await;
                }
            }
            Ok(Frame::Call(call)) => match self.answer_modes.get(&call.action).copied().unwrap_or_default() {
                AnswerMode::Normal => self.answer_call(call, now).await,
                AnswerMode::Delay(d) => {
                    info!(cp = %self.cfg.id, action = %call.action, "holding the answer for {d:?} (simulated)");
                    self.held.push((Instant::now() + d, call));
                }
                AnswerMode::Never => {
                    info!(cp = %self.cfg.id, action = %call.action, "not answering (simulated)");
                    self.calls.ignored.lock().unwrap_or_else(PoisonError::into_inner).push((call.action, call.payload));
                }
            },
            Ok(frame) => self.on_answer(frame, now),
        }
    }

    /// Acts on a central-system CALL and answers it.
    async fn answer_call(&mut self, call: shared_model::ocpp::framing::Call, now: Now) {
        let response = self.station.handle_call(&call, now);
        let text_out = response.to_text();
        debug!(cp = %self.cfg.id, action = %call.action, "answer → {text_out}");
        let _ = self.send_text(text_out).await;
        let record = ReceivedCall {
            at: Utc::now(),
            unique_id: call.unique_id.clone(),
            action: call.action.clone(),
            payload: call.payload.clone(),
            response,
        };
        self.calls.push(record);
        if matches!(self.in_flight, Some(InFlight::Raw { id: None, .. }))
            && let Some(InFlight::Raw { reply, .. }) = self.in_flight.take()
        {
            let _ = reply.send(Ok(Frame::Call(call)));
        }
    }

    fn on_answer(&mut self, frame: Frame, now: Now) {
        if matches!(frame, Frame::Call(_)) {
            return;
        }
        match self.in_flight.take() {
            Some(InFlight::Call { out, unique_id, deadline }) => {
                if frame.unique_id() != unique_id {
                    // OCPP-J: an answer to an unknown id is ignored.
                    warn!(cp = %self.cfg.id, "ignoring an answer with unknown id {}", frame.unique_id());
                    self.in_flight = Some(InFlight::Call { out, unique_id, deadline });
                    return;
                }
                let (station_result, user_result) = match &frame {
                    Frame::CallResult(r) => (Ok(&r.payload), Ok(r.payload.clone())),
                    Frame::CallError(e) => (
                        Err((e.code, e.description.as_str())),
                        Err(SimError::CallError { code: e.code, description: e.description.clone() }),
                    ),
                    Frame::Call(_) => (Ok(&Value::Null), Ok(Value::Null)),
                };
                self.station.on_answer(&out, station_result, now);
                if let Some(w) = self.waiters.remove(&out.tag) {
                    let _ = w.send(user_result);
                }
            }
            Some(InFlight::Raw { reply, .. }) => {
                let _ = reply.send(Ok(frame));
            }
            None => warn!(cp = %self.cfg.id, "ignoring an unexpected answer with id {}", frame.unique_id()),
        }
    }

    async fn on_timer(&mut self) {
        let now = Instant::now();
        if self.held.iter().any(|(t, _)| *t <= now) {
            let (due, rest): (Vec<_>, Vec<_>) =
                std::mem::take(&mut self.held).into_iter().partition(|(t, _)| *t <= now);
            self.held = rest;
            for (_, call) in due {
                if self.ws.is_some() {
                    self.answer_call(call, Now::current()).await;
                }
            }
        }
        let expired = match &self.in_flight {
            Some(InFlight::Call { deadline, .. }) | Some(InFlight::Raw { deadline, .. }) => *deadline <= now,
            None => false,
        };
        if expired {
            match self.in_flight.take() {
                Some(InFlight::Call { out, .. }) => {
                    warn!(cp = %self.cfg.id, action = %out.action, "no answer within {:?}", self.cfg.call_timeout);
                    self.station.on_timeout(&out, Now::current());
                    if let Some(w) = self.waiters.remove(&out.tag) {
                        let _ = w.send(Err(SimError::Timeout { action: out.action.clone() }));
                    }
                }
                Some(InFlight::Raw { reply, .. }) => {
                    let _ = reply.send(Err(SimError::Timeout { action: "raw".to_string() }));
                }
                None => {}
            }
        }
        if self.reconnect_at.is_some_and(|t| t <= now) {
            self.reconnect_at = None;
            match self.connect_and_boot().await {
                Ok(_) => self.reconnect_attempts = 0,
                Err(e) => {
                    self.reconnect_attempts += 1;
                    if self.reconnect_attempts < MAX_RECONNECT_ATTEMPTS {
                        let backoff = self
                            .cfg
                            .reconnect_delay
                            .saturating_mul(1 << self.reconnect_attempts.min(6))
                            .min(Duration::from_secs(30));
                        info!(cp = %self.cfg.id, "reconnect failed ({e}), next try in {backoff:?}");
                        self.reconnect_at = Some(Instant::now() + backoff);
                    } else {
                        warn!(cp = %self.cfg.id, "giving up reconnecting: {e}");
                    }
                }
            }
        }
    }

    /// The connection is gone; `by_server` means it was not our decision.
    fn connection_lost(&mut self, by_server: bool) {
        self.ws = None;
        // A held CALL dies with its connection (its answer could not go out).
        self.held.clear();
        match self.in_flight.take() {
            Some(InFlight::Call { out, .. }) => {
                if let Some(w) = self.waiters.remove(&out.tag)
                    && !out.persistent
                {
                    let _ = w.send(Err(SimError::Disconnected));
                }
            }
            Some(InFlight::Raw { reply, .. }) => {
                let _ = reply.send(Err(SimError::Disconnected));
            }
            None => {}
        }
        for raw in self.raw_queue.drain(..) {
            let _ = raw.reply.send(Err(SimError::NotConnected));
        }
        for tag in self.station.on_disconnected() {
            if let Some(w) = self.waiters.remove(&tag) {
                let _ = w.send(Err(SimError::NotConnected));
            }
        }
        // Waiters of persistent messages are dropped: the messages stay queued and their
        // senders learn they were not answered on this connection.
        self.waiters.clear();
        if by_server && self.cfg.auto_reconnect && self.reconnect_at.is_none() {
            self.reconnect_at = Some(Instant::now() + self.cfg.reconnect_delay);
        }
    }

    /// Opens a new connection and queues a BootNotification (retried until accepted).
    async fn connect_and_boot(&mut self) -> Result<Ticket, SimError> {
        if self.ws.is_some() {
            self.ws = None;
            self.connection_lost(false);
        }
        let ws = open(&self.cfg).await?;
        info!(cp = %self.cfg.id, "connected to {}", self.cfg.url());
        self.ws = Some(ws);
        self.station.on_connected();
        let tag = self.station.enqueue_boot(true);
        Ok(self.ticket(None, tag))
    }

    fn ticket(&mut self, local_id: Option<i32>, tag: Option<u64>) -> Ticket {
        let answer = tag.map(|tag| {
            let (tx, rx) = oneshot::channel();
            self.waiters.insert(tag, tx);
            rx
        });
        Ticket { local_id, answer }
    }

    /// A transaction-related message goes out on this connection only once registered;
    /// otherwise it waits in the queue and nobody waits for its answer now.
    fn tx_ticket(&mut self, local_id: Option<i32>, tag: u64) -> Ticket {
        if self.station.is_registered() { self.ticket(local_id, Some(tag)) } else { Ticket { local_id, answer: None } }
    }

    /// Reset: close the connection (a Hard reset like a power cut, a Soft one cleanly),
    /// then reconnect and boot after the reconnect delay.
    async fn reboot(&mut self, kind: ResetType) {
        info!(cp = %self.cfg.id, ?kind, "rebooting");
        if let Some(mut ws) = self.ws.take()
            && kind == ResetType::Soft
        {
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
        }
        self.connection_lost(false);
        self.reconnect_at = Some(Instant::now() + self.cfg.reconnect_delay);
    }

    async fn on_command(&mut self, cmd: Command) {
        let now = Now::current();
        self.station.tick(now);
        match cmd {
            Command::Call { action, payload, reply } => {
                let ctx = if action == "BootNotification" { Ctx::Boot { auto: false } } else { Ctx::Plain };
                match self.station.enqueue(&action, payload, ctx) {
                    Some(tag) => {
                        self.waiters.insert(tag, reply);
                    }
                    None => {
                        let _ = reply.send(Err(SimError::NotConnected));
                    }
                }
            }
            Command::Raw { text, timeout, reply } => {
                if self.ws.is_none() {
                    let _ = reply.send(Err(SimError::NotConnected));
                } else {
                    self.raw_queue.push_back(RawRequest { text, timeout, reply });
                }
            }
            Command::SendText { text, reply } => {
                let _ = reply.send(self.send_text(text).await);
            }
            Command::Boot { reply } => {
                let result = match self.station.enqueue_boot(false) {
                    Some(tag) => Ok(self.ticket(None, Some(tag))),
                    None => Err(SimError::NotConnected),
                };
                let _ = reply.send(result);
            }
            Command::Op { op, reply } => {
                let result = self.on_op(op, now);
                let _ = reply.send(result);
            }
            Command::LastStart { reply } => {
                let _ = reply.send(self.station.last_start());
            }
            Command::Disconnect { reply } => {
                if let Some(mut ws) = self.ws.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                    // Let the server's close frame arrive before dropping the socket.
                    let _ = tokio::time::timeout(Duration::from_millis(500), async {
                        while let Some(Ok(m)) = ws.next().await {
                            if m.is_close() {
                                break;
                            }
                        }
                    })
                    .await;
                }
                self.reconnect_at = None;
                self.connection_lost(false);
                let _ = reply.send(());
            }
            Command::PowerLoss { reply } => {
                // Dropping the stream closes the TCP socket without a WebSocket close frame.
                self.ws = None;
                self.reconnect_at = None;
                self.connection_lost(false);
                let _ = reply.send(());
            }
            Command::Reconnect { reply } => {
                self.reconnect_at = None;
                let result = self.connect_and_boot().await;
                let _ = reply.send(result);
            }
            Command::SetBaseUrl(url) => self.cfg.base_url = url,
            Command::AnswerMode { action, mode, reply } => {
                self.answer_modes.insert(action, mode);
                let _ = reply.send(());
            }
            Command::State { reply } => {
                let _ = reply.send(self.station.snapshot(now.wall));
            }
        }
    }

    fn on_op(&mut self, op: Op, now: Now) -> Result<Ticket, SimError> {
        match op {
            Op::Status { connector, status } => {
                let tag = self.station.status_notification(connector, status, now);
                Ok(self.ticket(None, tag))
            }
            Op::PlugIn(c) => {
                let tag = self.station.plug_in(c, now)?;
                Ok(self.ticket(None, tag))
            }
            Op::Start { connector, id_tag } => {
                let (local, tag) = self.station.start_transaction(connector, &id_tag, now)?;
                Ok(self.tx_ticket(Some(local), tag))
            }
            Op::Stop { connector, reason } => {
                let tag = self.station.stop_transaction(connector, reason, now)?;
                Ok(self.tx_ticket(None, tag))
            }
            Op::Unplug(c) => {
                let tag = self.station.unplug(c, now)?;
                Ok(self.ticket(None, tag))
            }
            Op::MeterValues(c) => match self.station.send_meter_values(c, now)? {
                Some(tag) if self.station.queued().any(|m| m.tag == tag) => Ok(self.tx_ticket(None, tag)),
                tag => Ok(self.ticket(None, tag)),
            },
        }
    }
}
