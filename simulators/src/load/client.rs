//! The lean load generator: one small task per charge point, a plain tokio-tungstenite
//! connection and a fixed traffic pattern — BootNotification, Heartbeat every
//! `heartbeat_interval`, and sessions of StatusNotification Preparing, Authorize,
//! StartTransaction, StatusNotification Charging, MeterValues every `meter_interval`,
//! StopTransaction, StatusNotification Available — with typed shared-model messages.
//! One CALL outstanding per connection (OCPP-J); central-system CALLs are answered.
//!
//! Everything is bounded: connections ramp at `connect_rate`, every CALL has a timeout,
//! and every task ends at the deadline (closing its open session first).

use super::stats::Latencies;
use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};
use shared_model::ocpp::OcppRequest;
use shared_model::ocpp::framing::{Call, CallError, CallResult, ErrorCode, Frame};
use shared_model::ocpp::v16::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::{Instant, sleep_until, timeout_at};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Parameters of one load run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Base URL without the identity, e.g. `ws://127.0.0.1:9000/ocpp`.
    pub base_url: String,
    /// Identity prefix; charge point `i` is `{prefix}{i:05}`.
    pub prefix: String,
    /// Number of charge points.
    pub count: usize,
    /// Length of the measured window (after the connect ramp).
    pub duration: Duration,
    /// MeterValues interval during a session.
    pub meter_interval: Duration,
    /// Heartbeat interval.
    pub heartbeat_interval: Duration,
    /// New connections per second during the ramp.
    pub connect_rate: f64,
    /// Most handshakes in progress at once.
    pub connect_concurrency: usize,
    /// Timeout of one CALL.
    pub call_timeout: Duration,
    /// Time between the end of the ramp and the start of the measured window.
    pub settle: Duration,
    /// MeterValues per session: uniformly in this range.
    pub meter_values_per_session: (u32, u32),
}

impl LoadConfig {
    /// Defaults: 10 s meter values, 60 s heartbeats, 500 connects/s, 10 s call timeout.
    pub fn new(base_url: impl Into<String>, count: usize, duration: Duration) -> Self {
        LoadConfig {
            base_url: base_url.into(),
            prefix: "LOAD".to_string(),
            count,
            duration,
            meter_interval: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(60),
            connect_rate: 500.0,
            connect_concurrency: 100,
            call_timeout: Duration::from_secs(10),
            settle: Duration::from_secs(2),
            meter_values_per_session: (3, 6),
        }
    }
}

/// Counts of what one or all charge points did.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// CALLs answered with a CALLRESULT (whole run).
    pub calls_ok: u64,
    /// CALLs answered with a CALLERROR.
    pub call_errors: u64,
    /// CALLs without an answer in time.
    pub timeouts: u64,
    /// Connections that failed to open (after retries) or broke.
    pub connection_failures: u64,
    /// CALLs sent (whole run), whatever their outcome.
    pub calls_sent: u64,
    /// StartTransactions answered with a transaction id.
    pub transactions: u64,
    /// MeterValues CALLs sent.
    pub meter_values: u64,
    /// Sampled values inside those MeterValues.
    pub sampled_values: u64,
    /// CALLs from the central system that we answered.
    pub server_calls: u64,
    /// CALLs completed inside the measured window.
    pub window_calls: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.calls_ok += o.calls_ok;
        self.call_errors += o.call_errors;
        self.timeouts += o.timeouts;
        self.connection_failures += o.connection_failures;
        self.calls_sent += o.calls_sent;
        self.transactions += o.transactions;
        self.meter_values += o.meter_values;
        self.sampled_values += o.sampled_values;
        self.server_calls += o.server_calls;
        self.window_calls += o.window_calls;
    }

    /// Errors of any kind.
    pub fn errors(&self) -> u64 {
        self.call_errors + self.timeouts + self.connection_failures
    }
}

/// The result of one load run.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Charge points asked for.
    pub count: usize,
    /// Charge points that connected and booted.
    pub connected: usize,
    pub counts: Counts,
    /// CALL→answer latencies of the CALLs completed inside the window.
    pub latencies: Latencies,
    /// Start of the measured window.
    pub window_start: Instant,
    /// End of the measured window.
    pub window_end: Instant,
    /// First CALL of the first error, for the report.
    pub first_error: Option<String>,
}

impl LoadReport {
    /// CALLs completed per second inside the window.
    pub fn rate(&self) -> f64 {
        let secs = (self.window_end - self.window_start).as_secs_f64();
        if secs > 0.0 { self.counts.window_calls as f64 / secs } else { 0.0 }
    }
}

struct Cp {
    ws: Ws,
    id: String,
    next_uid: u64,
    counts: Counts,
    lat: Latencies,
    window: (Instant, Instant),
    timeout: Duration,
    first_error: Option<String>,
}

enum CallOutcome {
    Ok(Value),
    Error,
    Lost,
}

impl Cp {
    fn record_error(&mut self, what: String) {
        if self.first_error.is_none() {
            self.first_error = Some(format!("{}: {what}", self.id));
        }
    }

    /// Answers a CALL of the central system with a plausible minimal answer.
    async fn answer_server_call(&mut self, call: Call) -> Result<(), WsError> {
        self.counts.server_calls += 1;
        let payload = match call.action.as_str() {
            "GetConfiguration" => Some(json!({"configurationKey": [], "unknownKey": []})),
            "TriggerMessage" | "RemoteStartTransaction" | "RemoteStopTransaction" => {
                Some(json!({"status": "Rejected"}))
            }
            "UnlockConnector" => Some(json!({"status": "NotSupported"})),
            "GetLocalListVersion" => Some(json!({"listVersion": 0})),
            "DataTransfer" => Some(json!({"status": "UnknownVendorId"})),
            "ClearChargingProfile" => Some(json!({"status": "Unknown"})),
            "GetCompositeSchedule" => Some(json!({"status": "Rejected"})),
            "ChangeConfiguration"
            | "ChangeAvailability"
            | "SetChargingProfile"
            | "Reset"
            | "ClearCache"
            | "SendLocalList"
            | "CancelReservation"
            | "ReserveNow" => Some(json!({"status": "Accepted"})),
            "UpdateFirmware" => Some(json!({})),
            "GetDiagnostics" => Some(json!({})),
            _ => None,
        };
        let frame = match payload {
            Some(payload) => Frame::CallResult(CallResult { unique_id: call.unique_id, payload }),
            None => Frame::CallError(CallError::new(call.unique_id, ErrorCode::NotImplemented, "not simulated")),
        };
        self.ws.send(Message::text(frame.to_text())).await
    }

    /// Handles one incoming message while idle or waiting; `Some(frame)` for an answer.
    async fn incoming(&mut self, msg: Option<Result<Message, WsError>>) -> Result<Option<Frame>, ()> {
        match msg {
            None | Some(Err(_)) => Err(()),
            Some(Ok(Message::Text(t))) => match Frame::parse(t.as_str()) {
                Ok(Frame::Call(call)) => {
                    self.answer_server_call(call).await.map_err(|_| ())?;
                    Ok(None)
                }
                Ok(frame) => Ok(Some(frame)),
                Err(_) => Ok(None),
            },
            Some(Ok(Message::Close(_))) => Err(()),
            Some(Ok(_)) => Ok(None),
        }
    }

    /// Keeps the connection serviced until `until`.
    async fn idle_until(&mut self, until: Instant) -> Result<(), ()> {
        loop {
            tokio::select! {
                msg = self.ws.next() => { self.incoming(msg).await?; }
                _ = sleep_until(until) => return Ok(()),
            }
        }
    }

    async fn call<R: OcppRequest + Serialize>(&mut self, req: &R) -> CallOutcome {
        self.next_uid += 1;
        let unique_id = format!("{}", self.next_uid);
        let payload = serde_json::to_value(req).unwrap_or(Value::Null);
        let text = Frame::Call(Call { unique_id: unique_id.clone(), action: R::ACTION.to_string(), payload }).to_text();
        self.counts.calls_sent += 1;
        let sent = Instant::now();
        if self.ws.send(Message::text(text)).await.is_err() {
            self.counts.connection_failures += 1;
            self.record_error(format!("{}: send failed", R::ACTION));
            return CallOutcome::Lost;
        }
        let deadline = sent + self.timeout;
        loop {
            let msg = match timeout_at(deadline, self.ws.next()).await {
                Ok(m) => m,
                Err(_) => {
                    self.counts.timeouts += 1;
                    self.record_error(format!("{}: no answer in {:?}", R::ACTION, self.timeout));
                    return CallOutcome::Lost;
                }
            };
            match self.incoming(msg).await {
                Err(()) => {
                    self.counts.connection_failures += 1;
                    self.record_error(format!("{}: connection lost", R::ACTION));
                    return CallOutcome::Lost;
                }
                Ok(None) => {}
                Ok(Some(frame)) if frame.unique_id() != unique_id => {}
                Ok(Some(frame)) => {
                    let done = Instant::now();
                    if done >= self.window.0 && done <= self.window.1 {
                        self.counts.window_calls += 1;
                        self.lat.record(done - sent);
                    }
                    return match frame {
                        Frame::CallResult(r) => {
                            self.counts.calls_ok += 1;
                            CallOutcome::Ok(r.payload)
                        }
                        Frame::CallError(e) => {
                            self.counts.call_errors += 1;
                            self.record_error(format!("{}: CALLERROR {} {}", R::ACTION, e.code, e.description));
                            CallOutcome::Error
                        }
                        Frame::Call(_) => CallOutcome::Error,
                    };
                }
            }
        }
    }
}

fn status(connector: u32, status: ChargePointStatus) -> StatusNotificationRequest {
    StatusNotificationRequest {
        connector_id: connector,
        error_code: ChargePointErrorCode::NoError,
        info: None,
        status,
        timestamp: Some(Utc::now()),
        vendor_id: None,
        vendor_error_code: None,
    }
}

fn meter_values(transaction_id: i32, register_wh: i64, amps: f64) -> MeterValuesRequest {
    let sv = |value: String, measurand, unit, phase| SampledValue {
        value,
        context: Some(ReadingContext::SamplePeriodic),
        format: Some(ValueFormat::Raw),
        measurand: Some(measurand),
        phase,
        location: Some(Location::Outlet),
        unit: Some(unit),
    };
    let mut values = vec![
        sv(register_wh.to_string(), Measurand::EnergyActiveImportRegister, UnitOfMeasure::Wh, None),
        sv(format!("{:.1}", amps * 230.0 * 3.0), Measurand::PowerActiveImport, UnitOfMeasure::W, None),
    ];
    for p in [Phase::L1, Phase::L2, Phase::L3] {
        values.push(sv(format!("{amps:.2}"), Measurand::CurrentImport, UnitOfMeasure::A, Some(p)));
    }
    for p in [Phase::L1N, Phase::L2N, Phase::L3N] {
        values.push(sv("230.0".to_string(), Measurand::Voltage, UnitOfMeasure::V, Some(p)));
    }
    MeterValuesRequest {
        connector_id: 1,
        transaction_id: Some(transaction_id),
        meter_value: vec![MeterValue { timestamp: Utc::now(), sampled_value: values }],
    }
}

async fn open(url: &str) -> Result<Ws, String> {
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("ocpp1.6"));
    // Small buffers: 5 000 connections × tungstenite's 128 KiB default would be 640 MiB.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (ws, _) =
        tokio_tungstenite::connect_async_with_config(req, Some(config), true).await.map_err(|e| e.to_string())?;
    Ok(ws)
}

/// The traffic of one charge point. Returns its counts and latencies.
async fn charge_point(
    i: usize,
    cfg: Arc<LoadConfig>,
    start_at: Instant,
    window: (Instant, Instant),
    gate: Arc<Semaphore>,
) -> (Counts, Latencies, bool, Option<String>) {
    let id = format!("{}{i:05}", cfg.prefix);
    let url = format!("{}/{id}", cfg.base_url.trim_end_matches('/'));
    sleep_until(start_at).await;
    let mut ws = None;
    let mut last_err = String::new();
    for attempt in 0..3u32 {
        let permit = gate.acquire().await;
        match tokio::time::timeout(cfg.call_timeout, open(&url)).await {
            Ok(Ok(w)) => {
                ws = Some(w);
                break;
            }
            Ok(Err(e)) => last_err = e,
            Err(_) => last_err = "handshake timeout".to_string(),
        }
        drop(permit);
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await;
    }
    let Some(ws) = ws else {
        let counts = Counts { connection_failures: 1, ..Counts::default() };
        return (counts, Latencies::new(), false, Some(format!("{id}: connect: {last_err}")));
    };
    let mut cp = Cp {
        ws,
        id: id.clone(),
        next_uid: 0,
        counts: Counts::default(),
        lat: Latencies::new(),
        window,
        timeout: cfg.call_timeout,
        first_error: None,
    };
    let boot = BootNotificationRequest {
        charge_point_vendor: CiString20::try_new("Sitepilot").expect("short constant"),
        charge_point_model: CiString20::try_new("LoadGen").expect("short constant"),
        charge_point_serial_number: CiString25::try_new(id.clone()).ok(),
        charge_box_serial_number: None,
        firmware_version: CiString50::try_new("1.0.0").ok(),
        iccid: None,
        imsi: None,
        meter_type: None,
        meter_serial_number: None,
    };
    let booted = matches!(cp.call(&boot).await, CallOutcome::Ok(_));
    if !booted {
        let e = cp.first_error.clone();
        return (cp.counts, cp.lat, false, e);
    }
    let deadline = window.1;
    // A per-task generator (the thread-local one is not Send across awaits).
    let mut rng = StdRng::seed_from_u64(rand::random::<u64>() ^ i as u64);
    let jitter = |rng: &mut StdRng, d: Duration| d.mul_f64(rng.random_range(0.0..1.0));
    let mut next_hb = Instant::now() + jitter(&mut rng, cfg.heartbeat_interval);
    let mut next_session = Instant::now() + jitter(&mut rng, cfg.meter_interval * 2);
    let tag = IdToken::try_new(format!("T{i:05}")).ok();
    let mut register_wh: i64 = 0;
    let (lo, hi) = cfg.meter_values_per_session;
    'run: loop {
        // Idle between sessions (heartbeats only).
        loop {
            let next = next_hb.min(next_session).min(deadline);
            if cp.idle_until(next).await.is_err() {
                cp.counts.connection_failures += 1;
                break 'run;
            }
            let now = Instant::now();
            if now >= deadline {
                break 'run;
            }
            if now >= next_hb {
                if matches!(cp.call(&HeartbeatRequest {}).await, CallOutcome::Lost) {
                    break 'run;
                }
                next_hb += cfg.heartbeat_interval;
            }
            if Instant::now() >= next_session {
                break;
            }
        }
        // One session.
        let Some(tag) = tag.clone() else { break };
        if matches!(cp.call(&status(1, ChargePointStatus::Preparing)).await, CallOutcome::Lost)
            || matches!(cp.call(&AuthorizeRequest { id_tag: tag.clone() }).await, CallOutcome::Lost)
        {
            break;
        }
        let start = StartTransactionRequest {
            connector_id: 1,
            id_tag: tag.clone(),
            meter_start: register_wh,
            reservation_id: None,
            timestamp: Utc::now(),
        };
        let tx_id = match cp.call(&start).await {
            CallOutcome::Ok(v) => match v.get("transactionId").and_then(Value::as_i64) {
                Some(id) => {
                    cp.counts.transactions += 1;
                    id as i32
                }
                None => {
                    cp.counts.call_errors += 1;
                    cp.record_error("StartTransaction answer without transactionId".to_string());
                    next_session = Instant::now() + cfg.meter_interval;
                    continue;
                }
            },
            CallOutcome::Error => {
                next_session = Instant::now() + cfg.meter_interval;
                continue;
            }
            CallOutcome::Lost => break,
        };
        if matches!(cp.call(&status(1, ChargePointStatus::Charging)).await, CallOutcome::Lost) {
            break;
        }
        let amps = 16.0;
        let mvs = rng.random_range(lo..=hi.max(lo));
        let mut next_mv = Instant::now() + cfg.meter_interval;
        let mut lost = false;
        for _ in 0..mvs {
            // Heartbeats continue during the session.
            loop {
                let next = next_hb.min(next_mv).min(deadline);
                if cp.idle_until(next).await.is_err() {
                    lost = true;
                    break;
                }
                if Instant::now() >= next_hb && next_hb <= next_mv {
                    if matches!(cp.call(&HeartbeatRequest {}).await, CallOutcome::Lost) {
                        lost = true;
                        break;
                    }
                    next_hb += cfg.heartbeat_interval;
                    continue;
                }
                break;
            }
            if lost || Instant::now() >= deadline {
                break;
            }
            register_wh += (amps * 230.0 * 3.0 * cfg.meter_interval.as_secs_f64() / 3600.0) as i64;
            let mv = meter_values(tx_id, register_wh, amps);
            cp.counts.meter_values += 1;
            cp.counts.sampled_values += mv.meter_value.iter().map(|m| m.sampled_value.len() as u64).sum::<u64>();
            if matches!(cp.call(&mv).await, CallOutcome::Lost) {
                lost = true;
                break;
            }
            next_mv += cfg.meter_interval;
        }
        if lost {
            break;
        }
        // Stop (also at the deadline, so every transaction is closed).
        let stop = StopTransactionRequest {
            id_tag: Some(tag.clone()),
            meter_stop: register_wh,
            timestamp: Utc::now(),
            transaction_id: tx_id,
            reason: Some(Reason::Local),
            transaction_data: None,
        };
        if matches!(cp.call(&stop).await, CallOutcome::Lost)
            || matches!(cp.call(&status(1, ChargePointStatus::Available)).await, CallOutcome::Lost)
        {
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        next_session = Instant::now() + jitter(&mut rng, cfg.meter_interval * 2);
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), cp.ws.close(None)).await;
    let e = cp.first_error.clone();
    (cp.counts, cp.lat, true, e)
}

/// Runs the load: ramps `count` connections, measures for `duration`, then lets every
/// charge point close its session and disconnect. Bounded: returns at the latest
/// `ramp + settle + duration + 2 × call timeout + a little` after the start.
pub async fn run(cfg: LoadConfig) -> LoadReport {
    let cfg = Arc::new(cfg);
    let t0 = Instant::now() + Duration::from_millis(100);
    let ramp = Duration::from_secs_f64(cfg.count as f64 / cfg.connect_rate.max(1.0));
    let window_start = t0 + ramp + cfg.settle;
    let window_end = window_start + cfg.duration;
    let gate = Arc::new(Semaphore::new(cfg.connect_concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..cfg.count {
        let start_at = t0 + Duration::from_secs_f64(i as f64 / cfg.connect_rate.max(1.0));
        tasks.spawn(charge_point(i, cfg.clone(), start_at, (window_start, window_end), gate.clone()));
    }
    let mut counts = Counts::default();
    let mut latencies = Latencies::new();
    let mut connected = 0;
    let mut first_error = None;
    // Hard bound: sessions close after the deadline with at most a few CALLs each.
    let hard_end = window_end + cfg.call_timeout * 4 + Duration::from_secs(10);
    loop {
        match timeout_at(hard_end, tasks.join_next()).await {
            Ok(Some(Ok((c, l, ok, err)))) => {
                counts.add(&c);
                latencies.merge(&l);
                if ok {
                    connected += 1;
                }
                if first_error.is_none() {
                    first_error = err;
                }
            }
            Ok(Some(Err(e))) => {
                counts.connection_failures += 1;
                first_error.get_or_insert_with(|| format!("task failed: {e}"));
            }
            Ok(None) => break,
            Err(_) => {
                let left = tasks.len();
                tasks.abort_all();
                counts.connection_failures += left as u64;
                first_error.get_or_insert_with(|| format!("{left} charge points did not finish in time"));
                break;
            }
        }
    }
    LoadReport { count: cfg.count, connected, counts, latencies, window_start, window_end, first_error }
}
