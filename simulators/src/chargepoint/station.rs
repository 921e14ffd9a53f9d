//! The charge point itself, without IO: connectors, transactions, EVs, configuration,
//! profiles, the local list, reservations and the outgoing message queues. The driver
//! feeds it the time, central-system CALLs and the answers to our CALLs, and takes from it
//! the next CALL to send.

use super::config::{ChargePointConfig, EvModel};
use super::error::SimError;
use super::ev::{EvActivity, EvSession};
use super::profiles::{self, Kind, Period, Profile, ProfileStore, Purpose, RateUnit, Recurrency, TxContext};
use super::queue::{QueuedMessage, TxQueue};
use super::state::{ChargePointState, ConfigValue, ConnectorState, TransactionState};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use shared_model::ocpp::OcppRequest;
use shared_model::ocpp::framing::{Call, CallError, CallResult, ErrorCode, Frame, decode_payload};
use shared_model::ocpp::v16::*;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// The time, as the station sees it: monotonic for physics and timers, wall clock for
/// payload timestamps and charging schedules.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub wall: DateTime<Utc>,
}

impl Now {
    /// The current time.
    pub fn current() -> Self {
        Now { mono: tokio::time::Instant::now().into_std(), wall: Utc::now() }
    }

    /// `d` later.
    #[cfg(test)]
    pub fn plus(self, d: Duration) -> Self {
        Now { mono: self.mono + d, wall: self.wall + d }
    }
}

/// What to do with the answer to an outgoing CALL.
#[derive(Debug, Clone)]
pub enum Ctx {
    /// Nothing beyond handing it to whoever waits.
    Plain,
    /// BootNotification; `auto` ones are retried when not accepted.
    Boot { auto: bool },
    /// StartTransaction of the transaction with this local id.
    Start { local_id: i32, connector: u32 },
    /// Authorize before a RemoteStartTransaction (AuthorizeRemoteTxRequests = true).
    RemoteAuthorize { connector: u32, id_tag: String, profile: Option<Box<Profile>> },
}

/// One CALL ready to go out.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub tag: u64,
    pub action: String,
    pub payload: Value,
    pub ctx: Ctx,
    /// From the persistent transaction queue (stays queued until answered).
    pub persistent: bool,
}

/// Something the station wants done later.
#[derive(Debug, Clone)]
enum Deferred {
    Boot,
    Firmware(FirmwareStatus),
    Diagnostics(DiagnosticsStatus),
}

#[derive(Debug, Clone)]
struct Tx {
    local_id: i32,
    real_id: Option<i32>,
    id_tag: String,
    meter_start_wh: i64,
    started: DateTime<Utc>,
    ev: EvSession,
    next_meter: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Connector {
    id: u32,
    reported: ChargePointStatus,
    status_override: Option<ChargePointStatus>,
    operative: bool,
    scheduled_operative: Option<bool>,
    plugged: bool,
    finishing: bool,
    meter_wh: f64,
    tx: Option<Tx>,
}

#[derive(Debug, Clone)]
struct Reservation {
    id: i32,
    connector: u32,
    id_tag: String,
    expiry: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Int,
    Bool,
    Text,
}

#[derive(Debug, Clone)]
struct Key {
    name: &'static str,
    value: String,
    readonly: bool,
    kind: KeyKind,
}

/// The configuration keys of OCPP 1.6 §9 the simulator knows.
fn default_keys(cfg: &ChargePointConfig) -> Vec<Key> {
    let k = |name, value: String, readonly, kind| Key { name, value, readonly, kind };
    use KeyKind::*;
    vec![
        k("AllowOfflineTxForUnknownId", "false".into(), false, Bool),
        k("AuthorizationCacheEnabled", "false".into(), false, Bool),
        k("AuthorizeRemoteTxRequests", "false".into(), false, Bool),
        k("ChargeProfileMaxStackLevel", profiles::MAX_STACK_LEVEL.to_string(), true, Int),
        k("ChargingScheduleAllowedChargingRateUnit", "Current,Power".into(), true, Text),
        k("ChargingScheduleMaxPeriods", profiles::MAX_PERIODS.to_string(), true, Int),
        k("ClockAlignedDataInterval", "0".into(), false, Int),
        k("ConnectionTimeOut", "60".into(), false, Int),
        k("ConnectorPhaseRotation", "0.RST".into(), false, Text),
        k("GetConfigurationMaxKeys", "64".into(), true, Int),
        k("HeartbeatInterval", cfg.heartbeat_interval.map_or(0, whole_seconds).to_string(), false, Int),
        k("LocalAuthListEnabled", "true".into(), false, Bool),
        k("LocalAuthListMaxLength", "1000".into(), true, Int),
        k("LocalAuthorizeOffline", "true".into(), false, Bool),
        k("LocalPreAuthorize", "false".into(), false, Bool),
        k("MaxChargingProfilesInstalled", profiles::MAX_PROFILES.to_string(), true, Int),
        k("MeterValueSampleInterval", whole_seconds(cfg.meter_interval).to_string(), false, Int),
        k(
            "MeterValuesSampledData",
            "Energy.Active.Import.Register,Power.Active.Import,Current.Import,Voltage,SoC".into(),
            false,
            Text,
        ),
        k("MeterValuesAlignedData", "Energy.Active.Import.Register".into(), false, Text),
        k("NumberOfConnectors", cfg.connectors.to_string(), true, Int),
        k("ReserveConnectorZeroSupported", "false".into(), true, Bool),
        k("ResetRetries", "3".into(), false, Int),
        k("SendLocalListMaxLength", "1000".into(), true, Int),
        k("StopTransactionOnEVSideDisconnect", "true".into(), false, Bool),
        k("StopTransactionOnInvalidId", "true".into(), false, Bool),
        k("StopTxnAlignedData", "".into(), false, Text),
        k("StopTxnSampledData", "Energy.Active.Import.Register".into(), false, Text),
        k(
            "SupportedFeatureProfiles",
            "Core,FirmwareManagement,LocalAuthListManagement,Reservation,SmartCharging,RemoteTrigger".into(),
            true,
            Text,
        ),
        k("TransactionMessageAttempts", "3".into(), false, Int),
        k("TransactionMessageRetryInterval", "10".into(), false, Int),
        k("UnlockConnectorOnEVSideDisconnect", "true".into(), false, Bool),
        k("WebSocketPingInterval", "0".into(), false, Int),
    ]
}

/// A duration as the whole seconds a configuration key holds; a sub-second (test) interval
/// shows as 1 rather than 0, which would mean "disabled".
fn whole_seconds(d: Duration) -> u64 {
    if d.is_zero() { 0 } else { d.as_secs().max(1) }
}

/// Serialises a typed message (these types always serialise; a failure would be a bug in
/// them, logged rather than a panic).
fn to_value<T: Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap_or_else(|e| {
        warn!("could not serialise a message: {e}");
        Value::Object(Default::default())
    })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Station parameters that do not change.
#[derive(Debug, Clone)]
struct Params {
    id: String,
    vendor: String,
    model: String,
    serial: String,
    firmware: String,
    hw_max_a: f64,
    ev: EvModel,
    heartbeat_override: Option<Duration>,
    status_on_boot: bool,
    status_step: Duration,
}

/// The simulated charge point's state and behaviour.
#[derive(Debug)]
pub struct Station {
    p: Params,
    connectors: Vec<Connector>,
    keys: Vec<Key>,
    profiles: ProfileStore,
    local_list_version: i32,
    local_list: BTreeMap<String, Option<IdTagInfo>>,
    reservations: Vec<Reservation>,
    txq: TxQueue,
    volatile: VecDeque<Outgoing>,
    next_tag: u64,
    connected: bool,
    registration: Option<RegistrationStatus>,
    heartbeat_interval: Duration,
    meter_interval: Duration,
    next_heartbeat: Option<Instant>,
    deferred: Vec<(Instant, Deferred)>,
    reset: Option<(ResetType, Instant)>,
    firmware_status: FirmwareStatus,
    diagnostics_status: DiagnosticsStatus,
    last_start: Option<Value>,
    tx_retry_at: Option<Instant>,
}

impl Station {
    /// A charger with every connector Available and nothing queued.
    pub fn new(cfg: &ChargePointConfig) -> Self {
        let connectors = (1..=cfg.connectors.max(1))
            .map(|id| Connector {
                id,
                reported: ChargePointStatus::Available,
                status_override: None,
                operative: true,
                scheduled_operative: None,
                plugged: false,
                finishing: false,
                meter_wh: 0.0,
                tx: None,
            })
            .collect();
        Station {
            p: Params {
                id: cfg.id.clone(),
                vendor: cfg.vendor.clone(),
                model: cfg.model.clone(),
                serial: cfg.serial.clone(),
                firmware: cfg.firmware.clone(),
                hw_max_a: cfg.connector_max_current_a,
                ev: cfg.ev.clone(),
                heartbeat_override: cfg.heartbeat_interval,
                status_on_boot: cfg.status_on_boot,
                status_step: cfg.status_step_delay,
            },
            connectors,
            keys: default_keys(cfg),
            profiles: ProfileStore::new(),
            local_list_version: 0,
            local_list: BTreeMap::new(),
            reservations: Vec::new(),
            txq: TxQueue::new(),
            volatile: VecDeque::new(),
            next_tag: 1,
            connected: false,
            registration: None,
            heartbeat_interval: cfg.heartbeat_interval.unwrap_or(Duration::from_secs(300)),
            meter_interval: cfg.meter_interval,
            next_heartbeat: None,
            deferred: Vec::new(),
            reset: None,
            firmware_status: FirmwareStatus::Idle,
            diagnostics_status: DiagnosticsStatus::Idle,
            last_start: None,
            tx_retry_at: None,
        }
    }

    // ------------------------------------------------------------ connection lifecycle

    /// A connection was opened (not yet booted).
    pub fn on_connected(&mut self) {
        self.connected = true;
        self.registration = None;
        self.next_heartbeat = None;
    }

    /// The connection is gone. Returns the tags of the volatile CALLs that will never be
    /// sent (their waiters fail). Transaction-related messages stay queued.
    pub fn on_disconnected(&mut self) -> Vec<u64> {
        self.connected = false;
        self.registration = None;
        self.next_heartbeat = None;
        self.volatile.drain(..).map(|o| o.tag).collect()
    }

    /// Whether the last BootNotification on this connection was accepted.
    pub fn is_registered(&self) -> bool {
        self.registration == Some(RegistrationStatus::Accepted)
    }

    fn tag(&mut self) -> u64 {
        let t = self.next_tag;
        self.next_tag += 1;
        t
    }

    /// Queues a volatile CALL (sent only on this connection); returns its tag.
    pub fn enqueue(&mut self, action: &str, payload: Value, ctx: Ctx) -> Option<u64> {
        if !self.connected {
            return None;
        }
        let tag = self.tag();
        let out = Outgoing { tag, action: action.to_string(), payload, ctx, persistent: false };
        if matches!(out.ctx, Ctx::Boot { .. }) {
            self.volatile.push_front(out);
        } else {
            self.volatile.push_back(out);
        }
        Some(tag)
    }

    fn enqueue_typed<R: OcppRequest>(&mut self, req: &R) -> Option<u64> {
        self.enqueue(R::ACTION, to_value(req), Ctx::Plain)
    }

    /// Queues a transaction-related CALL in persistent memory; returns its tag.
    fn enqueue_tx(&mut self, action: &'static str, payload: Value, opens: Option<i32>) -> u64 {
        let tag = self.tag();
        self.txq.push(tag, action, payload, opens);
        tag
    }

    /// Queues a BootNotification; returns its tag.
    pub fn enqueue_boot(&mut self, auto: bool) -> Option<u64> {
        let req = BootNotificationRequest {
            charge_point_vendor: ci20(&self.p.vendor),
            charge_point_model: ci20(&self.p.model),
            charge_point_serial_number: CiString25::try_new(truncate(&self.p.serial, 25)).ok(),
            charge_box_serial_number: None,
            firmware_version: CiString50::try_new(truncate(&self.p.firmware, 50)).ok(),
            iccid: None,
            imsi: None,
            meter_type: CiString25::try_new("SimMeter").ok(),
            meter_serial_number: CiString25::try_new(truncate(&format!("M-{}", self.p.id), 25)).ok(),
        };
        self.enqueue(BootNotificationRequest::ACTION, to_value(&req), Ctx::Boot { auto })
    }

    /// The next CALL to send, if any may go now. Volatile CALLs leave their queue;
    /// transaction-related ones stay queued until answered.
    pub fn next_out(&mut self, now: Instant) -> Option<Outgoing> {
        if !self.connected {
            return None;
        }
        while self.txq.front_is_orphan() {
            if let Some(m) = self.txq.pop() {
                warn!(cp = %self.p.id, action = m.action, "dropping a message of a transaction that never got an id");
            }
        }
        let tx_ok = self.is_registered() && self.tx_retry_at.is_none_or(|t| now >= t);
        let tx_tag = if tx_ok { self.txq.front().map(|m| m.tag) } else { None };
        let take_tx = match (self.volatile.front(), tx_tag) {
            (Some(v), Some(t)) => t < v.tag && !matches!(v.ctx, Ctx::Boot { .. }),
            (None, Some(_)) => true,
            _ => false,
        };
        if take_tx {
            self.tx_retry_at = None;
            let m = self.txq.front()?;
            let ctx = match m.opens {
                Some(local_id) => Ctx::Start {
                    local_id,
                    connector: m.payload.get("connectorId").and_then(Value::as_u64).unwrap_or(0) as u32,
                },
                None => Ctx::Plain,
            };
            Some(Outgoing {
                tag: m.tag,
                action: m.action.to_string(),
                payload: m.payload.clone(),
                ctx,
                persistent: true,
            })
        } else {
            self.volatile.pop_front()
        }
    }

    /// The transaction-related messages waiting for delivery.
    pub fn queued(&self) -> impl Iterator<Item = &QueuedMessage> {
        self.txq.iter()
    }

    /// The central system answered our CALL `out` (`Err` = CALLERROR code + description).
    pub fn on_answer(&mut self, out: &Outgoing, result: Result<&Value, (ErrorCode, &str)>, now: Now) {
        if out.persistent && self.txq.front().is_some_and(|m| m.tag == out.tag) {
            self.txq.pop();
        }
        match (&out.ctx, result) {
            (Ctx::Boot { auto }, Ok(v)) => match decode_payload::<BootNotificationResponse>(v) {
                Ok(r) => self.on_boot_answer(&r, *auto, now),
                Err((_, e)) => {
                    warn!(cp = %self.p.id, "bad BootNotification answer: {e}");
                    if *auto {
                        self.defer(now.mono + Duration::from_secs(10), Deferred::Boot);
                    }
                }
            },
            (Ctx::Boot { auto: true }, Err((code, d))) => {
                warn!(cp = %self.p.id, "BootNotification refused with {code}: {d}");
                self.defer(now.mono + Duration::from_secs(10), Deferred::Boot);
            }
            (Ctx::Start { local_id, connector }, Ok(v)) => match decode_payload::<StartTransactionResponse>(v) {
                Ok(r) => self.on_start_answer(*local_id, *connector, &r, now),
                Err((_, e)) => {
                    warn!(cp = %self.p.id, "bad StartTransaction answer: {e}");
                    self.abandon_start(*local_id, *connector, now);
                }
            },
            (Ctx::Start { local_id, connector }, Err((code, d))) => {
                warn!(cp = %self.p.id, "StartTransaction refused with {code}: {d}");
                self.abandon_start(*local_id, *connector, now);
            }
            (Ctx::RemoteAuthorize { connector, id_tag, profile }, result) => {
                let accepted = result
                    .ok()
                    .and_then(|v| decode_payload::<AuthorizeResponse>(v).ok())
                    .is_some_and(|r| r.id_tag_info.status == AuthorizationStatus::Accepted);
                let (c, tag, profile) = (*connector, id_tag.clone(), profile.clone());
                if accepted && self.connector(c).is_some_and(|k| k.tx.is_none()) {
                    if let Err(e) = self.begin_transaction(c, &tag, now, profile.map(|p| *p)) {
                        warn!(cp = %self.p.id, "remote start after Authorize failed: {e}");
                    }
                } else if let Some(k) = self.connector_mut(c) {
                    k.plugged = false;
                }
                self.sync_statuses_at(now.wall);
            }
            _ => {}
        }
    }

    /// No answer to `out` within the call timeout.
    pub fn on_timeout(&mut self, out: &Outgoing, now: Now) {
        if !out.persistent {
            return;
        }
        let max_attempts = self.key_int("TransactionMessageAttempts").unwrap_or(3).max(1) as u32;
        let retry = Duration::from_secs(self.key_int("TransactionMessageRetryInterval").unwrap_or(10).max(0) as u64);
        let Some(front) = self.txq.front_mut() else { return };
        if front.tag != out.tag {
            return;
        }
        front.attempts += 1;
        if front.attempts >= max_attempts {
            warn!(cp = %self.p.id, action = front.action, "giving up after {max_attempts} attempts");
            if let Some(m) = self.txq.pop()
                && let Some(local) = m.opens
            {
                let c = m.payload.get("connectorId").and_then(Value::as_u64).unwrap_or(0) as u32;
                self.abandon_start(local, c, now);
            }
        } else {
            // §4.7: wait TransactionMessageRetryInterval × attempts before the next try.
            self.tx_retry_at = Some(now.mono + retry * front.attempts);
        }
    }

    fn on_boot_answer(&mut self, r: &BootNotificationResponse, auto: bool, now: Now) {
        self.registration = Some(r.status);
        if r.interval > 0 && self.p.heartbeat_override.is_none() {
            self.heartbeat_interval = Duration::from_secs(r.interval as u64);
            self.set_key("HeartbeatInterval", r.interval.to_string());
        } else if let Some(hb) = self.p.heartbeat_override {
            self.heartbeat_interval = hb;
            self.set_key("HeartbeatInterval", whole_seconds(hb).to_string());
        }
        match r.status {
            RegistrationStatus::Accepted => {
                info!(cp = %self.p.id, "registered");
                self.next_heartbeat = Some(now.mono + self.heartbeat_interval);
                self.deferred.retain(|(_, d)| !matches!(d, Deferred::Boot));
                if self.p.status_on_boot {
                    let cp_status = if self.connectors.iter().all(|c| !c.operative) {
                        ChargePointStatus::Unavailable
                    } else {
                        ChargePointStatus::Available
                    };
                    self.enqueue_typed(&status_request(0, cp_status, now.wall));
                    for i in 0..self.connectors.len() {
                        let status = self.desired_status(i, now.wall);
                        self.connectors[i].reported = status;
                        let id = self.connectors[i].id;
                        self.enqueue_typed(&status_request(id, status, now.wall));
                    }
                }
            }
            _ if auto => {
                let wait =
                    if r.interval > 0 { Duration::from_secs(r.interval as u64) } else { Duration::from_secs(10) };
                self.defer(now.mono + wait, Deferred::Boot);
            }
            _ => {}
        }
    }

    fn on_start_answer(&mut self, local_id: i32, connector: u32, r: &StartTransactionResponse, now: Now) {
        self.txq.resolve(local_id, r.transaction_id);
        let stop_on_invalid = self.key_bool("StopTransactionOnInvalidId").unwrap_or(true);
        let mut deauthorize = false;
        if let Some(c) = self.connector_mut(connector)
            && let Some(tx) = c.tx.as_mut()
            && tx.local_id == local_id
        {
            tx.real_id = Some(r.transaction_id);
            deauthorize = r.id_tag_info.status != AuthorizationStatus::Accepted && stop_on_invalid;
        }
        debug!(cp = %self.p.id, local_id, transaction_id = r.transaction_id, "transaction id resolved");
        if deauthorize {
            info!(cp = %self.p.id, connector, "id tag {:?}: stopping the transaction", r.id_tag_info.status);
            if let Err(e) = self.end_transaction(connector, Reason::DeAuthorized, now) {
                warn!(cp = %self.p.id, "could not stop a deauthorized transaction: {e}");
            }
        }
    }

    /// A StartTransaction will never get an id: forget the transaction's messages and end
    /// it locally.
    fn abandon_start(&mut self, local_id: i32, connector: u32, now: Now) {
        let dropped = self.txq.abandon(local_id);
        if dropped > 0 {
            warn!(cp = %self.p.id, local_id, dropped, "dropped messages of a transaction without id");
        }
        if let Some(c) = self.connector_mut(connector)
            && c.tx.as_ref().is_some_and(|t| t.local_id == local_id)
        {
            c.tx = None;
            c.finishing = c.plugged;
            self.profiles.end_transaction(connector);
        }
        self.sync_statuses_at(now.wall);
    }

    // ------------------------------------------------------------ timers

    fn defer(&mut self, at: Instant, what: Deferred) {
        self.deferred.push((at, what));
    }

    /// Advances physics and timers to `now`: EV energy, limits from schedules, status
    /// changes, periodic MeterValues, heartbeats, reservation expiry, deferred notifications.
    pub fn tick(&mut self, now: Now) {
        self.refresh_limits(now);
        for i in 0..self.connectors.len() {
            let id = self.connectors[i].id;
            let interval = self.meter_interval;
            let mut due = false;
            if let Some(tx) = self.connectors[i].tx.as_mut() {
                let e = tx.ev.advance(now.mono);
                self.connectors[i].meter_wh += e;
                if let Some(tx) = self.connectors[i].tx.as_mut() {
                    match tx.next_meter {
                        Some(at) if now.mono >= at => {
                            due = true;
                            tx.next_meter = Some(advance_past(at, interval, now.mono));
                        }
                        None if !interval.is_zero() => tx.next_meter = Some(now.mono + interval),
                        _ => {}
                    }
                    if interval.is_zero() {
                        tx.next_meter = None;
                    }
                }
            }
            if due {
                self.queue_meter_values(id, ReadingContext::SamplePeriodic, now);
            }
        }
        // Reservations expire (§5.13).
        let before = self.reservations.len();
        self.reservations.retain(|r| r.expiry > now.wall);
        if self.reservations.len() != before {
            info!(cp = %self.p.id, "reservation expired");
        }
        if let Some(at) = self.next_heartbeat
            && now.mono >= at
            && self.is_registered()
        {
            self.enqueue_typed(&HeartbeatRequest {});
            self.next_heartbeat = Some(advance_past(at, self.heartbeat_interval, now.mono));
        }
        let mut due = Vec::new();
        self.deferred.retain(|(at, d)| {
            if *at <= now.mono {
                due.push(d.clone());
                false
            } else {
                true
            }
        });
        for d in due {
            match d {
                Deferred::Boot => {
                    if self.connected && !self.is_registered() {
                        self.enqueue_boot(true);
                    }
                }
                Deferred::Firmware(s) => {
                    self.firmware_status = s;
                    self.enqueue_typed(&FirmwareStatusNotificationRequest { status: s });
                }
                Deferred::Diagnostics(s) => {
                    self.diagnostics_status = s;
                    self.enqueue_typed(&DiagnosticsStatusNotificationRequest { status: s });
                }
            }
        }
        self.sync_statuses_at(now.wall);
    }

    /// The earliest time `tick` has something to do.
    pub fn next_wake(&self) -> Option<Instant> {
        let mut wake: Option<Instant> = self.next_heartbeat;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
        };
        for c in &self.connectors {
            if let Some(tx) = &c.tx {
                consider(tx.next_meter);
                consider(tx.ev.next_event());
            }
        }
        for (at, _) in &self.deferred {
            consider(Some(*at));
        }
        consider(self.tx_retry_at);
        consider(self.reset.map(|(_, at)| at));
        wake
    }

    /// Whether a transaction runs on any connector (the driver then ticks periodically so
    /// time-based schedules take effect).
    pub fn any_transaction(&self) -> bool {
        self.connectors.iter().any(|c| c.tx.is_some())
    }

    /// A Reset is due: all stop messages delivered (or the deadline passed) and nothing in
    /// flight. Returns its type once.
    pub fn poll_reset(&mut self, now: Instant, idle: bool) -> Option<ResetType> {
        let (kind, deadline) = self.reset?;
        if (idle && self.txq.is_empty()) || now >= deadline || !self.connected {
            self.reset = None;
            Some(kind)
        } else {
            None
        }
    }

    // ------------------------------------------------------------ limits and statuses

    fn tx_context(tx: &Tx) -> TxContext {
        TxContext { transaction_id: tx.real_id, started: tx.started }
    }

    fn profile_limit(&self, i: usize, wall: DateTime<Utc>) -> Option<f64> {
        let c = &self.connectors[i];
        let tx = c.tx.as_ref().map(Self::tx_context);
        self.profiles.limit_a(c.id, wall, tx, self.p.ev.voltage_v, self.p.ev.phase_count())
    }

    fn offered(&self, i: usize, wall: DateTime<Utc>) -> f64 {
        let hw = self.p.hw_max_a;
        self.profile_limit(i, wall).map_or(hw, |l| l.min(hw)).max(0.0)
    }

    /// Tells every charging EV the limit in force now.
    fn refresh_limits(&mut self, now: Now) {
        for i in 0..self.connectors.len() {
            let offered = self.offered(i, now.wall);
            if let Some(tx) = self.connectors[i].tx.as_mut() {
                let e = tx.ev.advance(now.mono);
                tx.ev.set_offered(now.mono, offered);
                self.connectors[i].meter_wh += e;
            }
        }
    }

    fn desired_status(&self, i: usize, wall: DateTime<Utc>) -> ChargePointStatus {
        let c = &self.connectors[i];
        if let Some(s) = c.status_override {
            return s;
        }
        if let Some(tx) = &c.tx {
            return match tx.ev.activity() {
                EvActivity::Charging => ChargePointStatus::Charging,
                EvActivity::SuspendedEvse => ChargePointStatus::SuspendedEVSE,
                EvActivity::SuspendedEv => ChargePointStatus::SuspendedEV,
            };
        }
        if !c.operative {
            return ChargePointStatus::Unavailable;
        }
        if c.finishing {
            return ChargePointStatus::Finishing;
        }
        if c.plugged {
            return ChargePointStatus::Preparing;
        }
        if self.reservations.iter().any(|r| r.connector == c.id && r.expiry > wall) {
            return ChargePointStatus::Reserved;
        }
        ChargePointStatus::Available
    }

    /// Sends a StatusNotification for every connector whose status changed; returns the
    /// (connector, tag) of each one queued.
    fn sync_statuses_at(&mut self, wall: DateTime<Utc>) -> Vec<(u32, u64)> {
        let mut sent = Vec::new();
        for i in 0..self.connectors.len() {
            let status = self.desired_status(i, wall);
            if status != self.connectors[i].reported {
                self.connectors[i].reported = status;
                let id = self.connectors[i].id;
                debug!(cp = %self.p.id, connector = id, ?status, "status");
                if let Some(tag) = self.enqueue_typed(&status_request(id, status, wall)) {
                    sent.push((id, tag));
                }
            }
        }
        sent
    }

    // ------------------------------------------------------------ connectors and transactions

    fn connector(&self, id: u32) -> Option<&Connector> {
        self.connectors.iter().find(|c| c.id == id)
    }

    fn connector_mut(&mut self, id: u32) -> Option<&mut Connector> {
        self.connectors.iter_mut().find(|c| c.id == id)
    }

    fn index(&self, id: u32) -> Result<usize, SimError> {
        self.connectors
            .iter()
            .position(|c| c.id == id)
            .ok_or_else(|| SimError::Invalid(format!("connector {id} does not exist")))
    }

    /// A user's StatusNotification with any status (kept until the next plug, start, stop
    /// or unplug on that connector). Connector 0 is the whole charge point.
    pub fn status_notification(&mut self, connector: u32, status: ChargePointStatus, now: Now) -> Option<u64> {
        if connector != 0 {
            let i = self.index(connector).ok()?;
            self.connectors[i].status_override = Some(status);
            self.connectors[i].reported = status;
        }
        self.enqueue_typed(&status_request(connector, status, now.wall))
    }

    /// The EV's cable is plugged in: status Preparing. Returns the StatusNotification tag.
    pub fn plug_in(&mut self, connector: u32, now: Now) -> Result<Option<u64>, SimError> {
        let i = self.index(connector)?;
        let c = &mut self.connectors[i];
        c.status_override = None;
        c.plugged = true;
        c.finishing = false;
        Ok(self.sync_statuses_at(now.wall).into_iter().find(|(id, _)| *id == connector).map(|(_, t)| t))
    }

    /// Starts a transaction (plugging in if needed): queues StartTransaction and lets the EV
    /// charge. Returns (local id, tag of the StartTransaction).
    pub fn start_transaction(&mut self, connector: u32, id_tag: &str, now: Now) -> Result<(i32, u64), SimError> {
        self.begin_transaction(connector, id_tag, now, None)
    }

    fn begin_transaction(
        &mut self,
        connector: u32,
        id_tag: &str,
        now: Now,
        profile: Option<Profile>,
    ) -> Result<(i32, u64), SimError> {
        let token = IdToken::try_new(id_tag).map_err(SimError::Invalid)?;
        let i = self.index(connector)?;
        if self.connectors[i].tx.is_some() {
            return Err(SimError::InvalidState(format!("a transaction already runs on connector {connector}")));
        }
        if !self.connectors[i].operative {
            return Err(SimError::InvalidState(format!("connector {connector} is unavailable")));
        }
        let reservation = self.reservations.iter().position(|r| r.connector == connector && r.expiry > now.wall);
        let reservation_id = match reservation {
            Some(r) if self.reservations[r].id_tag.eq_ignore_ascii_case(id_tag) => Some(self.reservations.remove(r).id),
            Some(_) => {
                return Err(SimError::InvalidState(format!("connector {connector} is reserved for another id tag")));
            }
            None => None,
        };
        // The cable goes in first: Preparing, then the transaction.
        {
            let c = &mut self.connectors[i];
            c.status_override = None;
            c.plugged = true;
            c.finishing = false;
        }
        self.sync_statuses_at(now.wall);
        let local_id = self.txq.new_local_id();
        let meter_start_wh = self.connectors[i].meter_wh.round() as i64;
        let offered = self.offered(i, now.wall);
        let interval = self.meter_interval;
        self.connectors[i].tx = Some(Tx {
            local_id,
            real_id: None,
            id_tag: id_tag.to_string(),
            meter_start_wh,
            started: now.wall,
            ev: EvSession::start(self.p.ev.clone(), now.mono, offered),
            next_meter: if interval.is_zero() { None } else { Some(now.mono + interval) },
        });
        let req = StartTransactionRequest {
            connector_id: connector,
            id_tag: token,
            meter_start: meter_start_wh,
            reservation_id,
            timestamp: now.wall,
        };
        let payload = to_value(&req);
        self.last_start = Some(payload.clone());
        let tag = self.enqueue_tx(StartTransactionRequest::ACTION, payload, Some(local_id));
        if let Some(mut p) = profile {
            p.connector_id = connector;
            let tx = self.connectors[i].tx.as_ref().map(Self::tx_context);
            let n = self.connectors.len() as u32;
            if let Err(e) = self.profiles.install(p, n, tx) {
                warn!(cp = %self.p.id, "RemoteStartTransaction profile not installed: {e}");
            }
            self.refresh_limits(now);
        }
        self.sync_statuses_at(now.wall);
        info!(cp = %self.p.id, connector, local_id, "transaction started");
        Ok((local_id, tag))
    }

    /// Stops the transaction on `connector` with `reason`; returns the StopTransaction tag.
    pub fn stop_transaction(&mut self, connector: u32, reason: Reason, now: Now) -> Result<u64, SimError> {
        self.end_transaction(connector, reason, now)
    }

    fn end_transaction(&mut self, connector: u32, reason: Reason, now: Now) -> Result<u64, SimError> {
        let i = self.index(connector)?;
        let Some(mut tx) = self.connectors[i].tx.take() else {
            return Err(SimError::InvalidState(format!("no transaction on connector {connector}")));
        };
        let e = tx.ev.advance(now.mono);
        let c = &mut self.connectors[i];
        c.meter_wh += e;
        c.status_override = None;
        c.finishing = c.plugged && reason != Reason::EVDisconnected;
        if reason == Reason::EVDisconnected {
            c.plugged = false;
        }
        if let Some(op) = c.scheduled_operative.take() {
            c.operative = op;
        }
        let meter_stop = c.meter_wh.round() as i64;
        let begin = energy_sample(tx.meter_start_wh as f64, ReadingContext::TransactionBegin, tx.started);
        let end = energy_sample(c.meter_wh, ReadingContext::TransactionEnd, now.wall);
        let id_tag = match reason {
            Reason::Local | Reason::EVDisconnected | Reason::DeAuthorized => IdToken::try_new(tx.id_tag.clone()).ok(),
            _ => None,
        };
        let req = StopTransactionRequest {
            id_tag,
            meter_stop,
            timestamp: now.wall,
            transaction_id: tx.real_id.unwrap_or(tx.local_id),
            reason: Some(reason),
            transaction_data: Some(vec![begin, end]),
        };
        self.profiles.end_transaction(connector);
        let tag = self.enqueue_tx(StopTransactionRequest::ACTION, to_value(&req), None);
        self.sync_statuses_at(now.wall);
        info!(cp = %self.p.id, connector, ?reason, "transaction stopped");
        Ok(tag)
    }

    /// The EV's cable is pulled: a running transaction stops with EVDisconnected, then
    /// status Available. Returns the tag of the StatusNotification, if one was queued.
    pub fn unplug(&mut self, connector: u32, now: Now) -> Result<Option<u64>, SimError> {
        let i = self.index(connector)?;
        if self.connectors[i].tx.is_some() {
            self.end_transaction(connector, Reason::EVDisconnected, now)?;
        }
        let c = &mut self.connectors[i];
        c.plugged = false;
        c.finishing = false;
        c.status_override = None;
        Ok(self.sync_statuses_at(now.wall).into_iter().find(|(id, _)| *id == connector).map(|(_, t)| t))
    }

    /// Queues a MeterValues for `connector` now (context Sample.Periodic, or Trigger).
    pub fn send_meter_values(&mut self, connector: u32, now: Now) -> Result<Option<u64>, SimError> {
        self.index(connector)?;
        self.tick(now);
        Ok(self.queue_meter_values(connector, ReadingContext::SamplePeriodic, now))
    }

    fn queue_meter_values(&mut self, connector: u32, context: ReadingContext, now: Now) -> Option<u64> {
        let i = self.index(connector).ok()?;
        let value = self.sample(i, context, now.wall);
        let c = &self.connectors[i];
        let transaction_id = c.tx.as_ref().map(|t| t.real_id.unwrap_or(t.local_id));
        let req = MeterValuesRequest { connector_id: connector, transaction_id, meter_value: vec![value] };
        if transaction_id.is_some() {
            Some(self.enqueue_tx(MeterValuesRequest::ACTION, to_value(&req), None))
        } else {
            self.enqueue_typed(&req)
        }
    }

    /// One MeterValue of connector index `i`.
    fn sample(&self, i: usize, context: ReadingContext, wall: DateTime<Utc>) -> MeterValue {
        let c = &self.connectors[i];
        let ev = &self.p.ev;
        let (amps, power, soc) = match &c.tx {
            Some(tx) => (tx.ev.current_a(), tx.ev.power_w(), Some(tx.ev.soc_percent())),
            None => (0.0, 0.0, None),
        };
        let sv = |value: String, measurand, unit, phase| SampledValue {
            value,
            context: Some(context),
            format: Some(ValueFormat::Raw),
            measurand: Some(measurand),
            phase,
            location: Some(Location::Outlet),
            unit: Some(unit),
        };
        let mut values = vec![
            sv(
                format!("{}", c.meter_wh.round() as i64),
                Measurand::EnergyActiveImportRegister,
                UnitOfMeasure::Wh,
                None,
            ),
            sv(format!("{:.1}", power), Measurand::PowerActiveImport, UnitOfMeasure::W, None),
        ];
        let phases: &[(Phase, Phase)] = if ev.phases == 1 {
            &[(Phase::L1, Phase::L1N)]
        } else {
            &[(Phase::L1, Phase::L1N), (Phase::L2, Phase::L2N), (Phase::L3, Phase::L3N)]
        };
        for (p, _) in phases {
            values.push(sv(format!("{:.2}", amps), Measurand::CurrentImport, UnitOfMeasure::A, Some(*p)));
        }
        for (_, pn) in phases {
            values.push(sv(format!("{:.1}", ev.voltage_v), Measurand::Voltage, UnitOfMeasure::V, Some(*pn)));
        }
        values.push(sv(format!("{:.1}", self.offered(i, wall)), Measurand::CurrentOffered, UnitOfMeasure::A, None));
        if let Some(soc) = soc {
            let mut s = sv(format!("{:.0}", soc), Measurand::SoC, UnitOfMeasure::Percent, None);
            s.location = Some(Location::Ev);
            values.push(s);
        }
        MeterValue { timestamp: wall, sampled_value: values }
    }

    /// The payload of the last StartTransaction, for retransmission tests.
    pub fn last_start(&self) -> Option<Value> {
        self.last_start.clone()
    }

    // ------------------------------------------------------------ central-system CALLs

    /// Answers one CALL from the central system; side effects (follow-up messages) are
    /// queued. Never panics on any payload.
    pub fn handle_call(&mut self, call: &Call, now: Now) -> Frame {
        self.tick(now);
        let result = self.dispatch(call, now);
        self.sync_statuses_at(now.wall);
        match result {
            Ok(payload) => Frame::CallResult(CallResult { unique_id: call.unique_id.clone(), payload }),
            Err((code, description)) => Frame::CallError(CallError::new(call.unique_id.clone(), code, description)),
        }
    }

    fn dispatch(&mut self, call: &Call, now: Now) -> Result<Value, (ErrorCode, String)> {
        let p = &call.payload;
        match call.action.as_str() {
            "RemoteStartTransaction" => self.on_remote_start(decode_payload(p)?, now).map(|r| to_value(&r)),
            "RemoteStopTransaction" => Ok(to_value(&self.on_remote_stop(decode_payload(p)?, now))),
            "ChangeAvailability" => Ok(to_value(&self.on_change_availability(decode_payload(p)?))),
            "Reset" => Ok(to_value(&self.on_reset(decode_payload(p)?, now))),
            "UnlockConnector" => Ok(to_value(&self.on_unlock(decode_payload(p)?, now))),
            "GetConfiguration" => Ok(to_value(&self.on_get_configuration(decode_payload(p)?))),
            "ChangeConfiguration" => Ok(to_value(&self.on_change_configuration(decode_payload(p)?, now))),
            "ClearCache" => {
                decode_payload::<ClearCacheRequest>(p)?;
                Ok(to_value(&ClearCacheResponse { status: ClearCacheStatus::Accepted }))
            }
            "TriggerMessage" => Ok(to_value(&self.on_trigger(decode_payload(p)?, now))),
            "SetChargingProfile" => Ok(to_value(&self.on_set_profile(decode_payload(p)?, now))),
            "ClearChargingProfile" => Ok(to_value(&self.on_clear_profile(decode_payload(p)?, now))),
            "GetCompositeSchedule" => Ok(to_value(&self.on_composite(decode_payload(p)?, now))),
            "SendLocalList" => Ok(to_value(&self.on_send_local_list(decode_payload(p)?))),
            "GetLocalListVersion" => {
                decode_payload::<GetLocalListVersionRequest>(p)?;
                let enabled = self.key_bool("LocalAuthListEnabled").unwrap_or(true);
                let list_version = if enabled { self.local_list_version } else { -1 };
                Ok(to_value(&GetLocalListVersionResponse { list_version }))
            }
            "ReserveNow" => Ok(to_value(&self.on_reserve(decode_payload(p)?, now))),
            "CancelReservation" => {
                let r: CancelReservationRequest = decode_payload(p)?;
                let before = self.reservations.len();
                self.reservations.retain(|x| x.id != r.reservation_id);
                let status = if self.reservations.len() < before {
                    CancelReservationStatus::Accepted
                } else {
                    CancelReservationStatus::Rejected
                };
                Ok(to_value(&CancelReservationResponse { status }))
            }
            "UpdateFirmware" => {
                let r: UpdateFirmwareRequest = decode_payload(p)?;
                // Wait for retrieveDate (at most a day: a simulator must end).
                let wait =
                    (r.retrieve_date - now.wall).to_std().unwrap_or(Duration::ZERO).min(Duration::from_secs(86_400));
                let start = now.mono + wait;
                let step = self.p.status_step;
                for (k, s) in [
                    FirmwareStatus::Downloading,
                    FirmwareStatus::Downloaded,
                    FirmwareStatus::Installing,
                    FirmwareStatus::Installed,
                ]
                .into_iter()
                .enumerate()
                {
                    self.defer(start + step * k as u32, Deferred::Firmware(s));
                }
                Ok(to_value(&UpdateFirmwareResponse {}))
            }
            "GetDiagnostics" => {
                let _r: GetDiagnosticsRequest = decode_payload(p)?;
                let name = format!("diagnostics-{}-{}.log", self.p.id, now.wall.format("%Y%m%dT%H%M%SZ"));
                let step = self.p.status_step;
                self.defer(now.mono + step, Deferred::Diagnostics(DiagnosticsStatus::Uploading));
                self.defer(now.mono + step * 2, Deferred::Diagnostics(DiagnosticsStatus::Uploaded));
                Ok(to_value(&GetDiagnosticsResponse { file_name: CiString255::try_new(truncate(&name, 255)).ok() }))
            }
            "DataTransfer" => {
                let _r: DataTransferRequest = decode_payload(p)?;
                Ok(to_value(&DataTransferResponse { status: DataTransferStatus::UnknownVendorId, data: None }))
            }
            other if is_known_action(other) => {
                Err((ErrorCode::NotSupported, format!("{other} is not supported by this charge point")))
            }
            other => Err((ErrorCode::NotImplemented, format!("unknown action {other}"))),
        }
    }

    fn on_remote_start(
        &mut self,
        r: RemoteStartTransactionRequest,
        now: Now,
    ) -> Result<RemoteStartTransactionResponse, (ErrorCode, String)> {
        let reject = Ok(RemoteStartTransactionResponse { status: RemoteStartStopStatus::Rejected });
        let profile = match r.charging_profile.as_ref().map(|p| convert_profile(p, r.connector_id.unwrap_or(0))) {
            Some(Some(p)) if p.purpose == Purpose::Tx => Some(p),
            Some(_) => return reject,
            None => None,
        };
        let free = |c: &Connector, tag: &str, wall| {
            c.tx.is_none()
                && c.operative
                && !self
                    .reservations
                    .iter()
                    .any(|x| x.connector == c.id && x.expiry > wall && !x.id_tag.eq_ignore_ascii_case(tag))
        };
        let tag = r.id_tag.as_str().to_string();
        let connector = match r.connector_id {
            Some(0) => return reject,
            Some(id) => match self.connector(id) {
                Some(c) if free(c, &tag, now.wall) => id,
                _ => return reject,
            },
            None => match self.connectors.iter().find(|c| free(c, &tag, now.wall)) {
                Some(c) => c.id,
                None => return reject,
            },
        };
        if self.key_bool("AuthorizeRemoteTxRequests").unwrap_or(false) {
            // §5.11: authorize first, start when Accepted.
            if let Some(c) = self.connector_mut(connector) {
                c.plugged = true;
                c.finishing = false;
                c.status_override = None;
            }
            let req = AuthorizeRequest { id_tag: r.id_tag.clone() };
            self.enqueue(
                AuthorizeRequest::ACTION,
                to_value(&req),
                Ctx::RemoteAuthorize { connector, id_tag: tag, profile: profile.map(Box::new) },
            );
        } else if let Err(e) = self.begin_transaction(connector, &tag, now, profile) {
            warn!(cp = %self.p.id, "remote start failed: {e}");
            return reject;
        }
        Ok(RemoteStartTransactionResponse { status: RemoteStartStopStatus::Accepted })
    }

    fn on_remote_stop(&mut self, r: RemoteStopTransactionRequest, now: Now) -> RemoteStopTransactionResponse {
        let found = self
            .connectors
            .iter()
            .find(|c| c.tx.as_ref().is_some_and(|t| t.real_id == Some(r.transaction_id)))
            .map(|c| c.id);
        let status = match found {
            Some(c) if self.end_transaction(c, Reason::Remote, now).is_ok() => RemoteStartStopStatus::Accepted,
            _ => RemoteStartStopStatus::Rejected,
        };
        RemoteStopTransactionResponse { status }
    }

    fn on_change_availability(&mut self, r: ChangeAvailabilityRequest) -> ChangeAvailabilityResponse {
        let operative = r.r#type == AvailabilityType::Operative;
        if r.connector_id as usize > self.connectors.len() {
            return ChangeAvailabilityResponse { status: AvailabilityStatus::Rejected };
        }
        let mut scheduled = false;
        for c in self.connectors.iter_mut().filter(|c| r.connector_id == 0 || c.id == r.connector_id) {
            if c.tx.is_some() && c.operative != operative {
                c.scheduled_operative = Some(operative);
                scheduled = true;
            } else {
                c.operative = operative;
                c.scheduled_operative = None;
                c.status_override = None;
            }
        }
        let status = if scheduled { AvailabilityStatus::Scheduled } else { AvailabilityStatus::Accepted };
        ChangeAvailabilityResponse { status }
    }

    fn on_reset(&mut self, r: ResetRequest, now: Now) -> ResetResponse {
        let reason = if r.r#type == ResetType::Hard { Reason::HardReset } else { Reason::SoftReset };
        let running: Vec<u32> = self.connectors.iter().filter(|c| c.tx.is_some()).map(|c| c.id).collect();
        for c in running {
            if let Err(e) = self.end_transaction(c, reason, now) {
                warn!(cp = %self.p.id, "reset: {e}");
            }
        }
        // The reboot happens once the StopTransactions are out, or after 5 s at the latest.
        self.reset = Some((r.r#type, now.mono + Duration::from_secs(5)));
        ResetResponse { status: ResetStatus::Accepted }
    }

    fn on_unlock(&mut self, r: UnlockConnectorRequest, now: Now) -> UnlockConnectorResponse {
        if r.connector_id == 0 || self.connector(r.connector_id).is_none() {
            return UnlockConnectorResponse { status: UnlockStatus::NotSupported };
        }
        if self.connector(r.connector_id).is_some_and(|c| c.tx.is_some())
            && let Err(e) = self.end_transaction(r.connector_id, Reason::UnlockCommand, now)
        {
            warn!(cp = %self.p.id, "unlock: {e}");
        }
        UnlockConnectorResponse { status: UnlockStatus::Unlocked }
    }

    fn on_get_configuration(&self, r: GetConfigurationRequest) -> GetConfigurationResponse {
        let kv = |k: &Key| KeyValue {
            key: CiString50::try_new(truncate(k.name, CiString50::MAX_LEN)).expect("cut to 50 characters"),
            readonly: k.readonly,
            value: CiString500::try_new(truncate(&k.value, 500)).ok(),
        };
        match r.key.filter(|k| !k.is_empty()) {
            None => GetConfigurationResponse {
                configuration_key: Some(self.keys.iter().map(kv).collect()),
                unknown_key: None,
            },
            Some(wanted) => {
                let mut known = Vec::new();
                let mut unknown = Vec::new();
                for w in wanted {
                    match self.keys.iter().find(|k| k.name.eq_ignore_ascii_case(w.as_str())) {
                        Some(k) => known.push(kv(k)),
                        None => unknown.push(w),
                    }
                }
                GetConfigurationResponse {
                    configuration_key: Some(known),
                    unknown_key: if unknown.is_empty() { None } else { Some(unknown) },
                }
            }
        }
    }

    fn on_change_configuration(&mut self, r: ChangeConfigurationRequest, now: Now) -> ChangeConfigurationResponse {
        let status = match self.keys.iter_mut().find(|k| k.name.eq_ignore_ascii_case(r.key.as_str())) {
            None => ConfigurationStatus::NotSupported,
            Some(k) if k.readonly => ConfigurationStatus::Rejected,
            Some(k) => {
                let v = r.value.as_str().trim();
                let valid = match k.kind {
                    KeyKind::Int => v.parse::<i64>().is_ok_and(|n| n >= 0),
                    KeyKind::Bool => v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false"),
                    KeyKind::Text => true,
                };
                if valid {
                    k.value = if k.kind == KeyKind::Bool { v.to_ascii_lowercase() } else { v.to_string() };
                    ConfigurationStatus::Accepted
                } else {
                    ConfigurationStatus::Rejected
                }
            }
        };
        if status == ConfigurationStatus::Accepted {
            if r.key.as_str().eq_ignore_ascii_case("HeartbeatInterval")
                && let Some(s) = self.key_int("HeartbeatInterval")
            {
                self.heartbeat_interval = Duration::from_secs(s.max(1) as u64);
                if self.is_registered() {
                    self.next_heartbeat = Some(now.mono + self.heartbeat_interval);
                }
            }
            if r.key.as_str().eq_ignore_ascii_case("MeterValueSampleInterval")
                && let Some(s) = self.key_int("MeterValueSampleInterval")
            {
                self.meter_interval = Duration::from_secs(s as u64);
                for c in &mut self.connectors {
                    if let Some(tx) = c.tx.as_mut() {
                        tx.next_meter = if s > 0 { Some(now.mono + self.meter_interval) } else { None };
                    }
                }
            }
        }
        ChangeConfigurationResponse { status }
    }

    fn on_trigger(&mut self, r: TriggerMessageRequest, now: Now) -> TriggerMessageResponse {
        if let Some(c) = r.connector_id
            && c as usize > self.connectors.len()
        {
            return TriggerMessageResponse { status: TriggerMessageStatus::Rejected };
        }
        // The answer goes out first (it is sent at once); the triggered message is queued.
        match r.requested_message {
            MessageTrigger::BootNotification => {
                self.enqueue_boot(true);
            }
            MessageTrigger::Heartbeat => {
                self.enqueue_typed(&HeartbeatRequest {});
            }
            MessageTrigger::StatusNotification => {
                let ids: Vec<u32> = match r.connector_id {
                    Some(c) => vec![c],
                    None => (0..=self.connectors.len() as u32).collect(),
                };
                for id in ids {
                    let status = if id == 0 {
                        ChargePointStatus::Available
                    } else {
                        self.index(id).map(|i| self.desired_status(i, now.wall)).unwrap_or(ChargePointStatus::Available)
                    };
                    self.enqueue_typed(&status_request(id, status, now.wall));
                }
            }
            MessageTrigger::MeterValues => {
                let ids: Vec<u32> = match r.connector_id {
                    Some(c) if c > 0 => vec![c],
                    _ => self.connectors.iter().map(|c| c.id).collect(),
                };
                self.tick(now);
                for id in ids {
                    self.queue_meter_values(id, ReadingContext::Trigger, now);
                }
            }
            MessageTrigger::FirmwareStatusNotification => {
                let status = self.firmware_status;
                self.enqueue_typed(&FirmwareStatusNotificationRequest { status });
            }
            MessageTrigger::DiagnosticsStatusNotification => {
                let status = self.diagnostics_status;
                self.enqueue_typed(&DiagnosticsStatusNotificationRequest { status });
            }
        }
        TriggerMessageResponse { status: TriggerMessageStatus::Accepted }
    }

    fn on_set_profile(&mut self, r: SetChargingProfileRequest, now: Now) -> SetChargingProfileResponse {
        let Some(profile) = convert_profile(&r.cs_charging_profiles, r.connector_id) else {
            return SetChargingProfileResponse { status: ChargingProfileStatus::Rejected };
        };
        let tx = self.connector(r.connector_id).and_then(|c| c.tx.as_ref()).map(Self::tx_context);
        let n = self.connectors.len() as u32;
        let status = match self.profiles.install(profile, n, tx) {
            Ok(()) => ChargingProfileStatus::Accepted,
            Err(e) => {
                info!(cp = %self.p.id, "SetChargingProfile rejected: {e}");
                ChargingProfileStatus::Rejected
            }
        };
        self.refresh_limits(now);
        SetChargingProfileResponse { status }
    }

    fn on_clear_profile(&mut self, r: ClearChargingProfileRequest, now: Now) -> ClearChargingProfileResponse {
        let purpose = r.charging_profile_purpose.map(convert_purpose);
        let n = self.profiles.clear(r.id, r.connector_id, purpose, r.stack_level);
        self.refresh_limits(now);
        let status = if n > 0 { ClearChargingProfileStatus::Accepted } else { ClearChargingProfileStatus::Unknown };
        ClearChargingProfileResponse { status }
    }

    fn on_composite(&mut self, r: GetCompositeScheduleRequest, now: Now) -> GetCompositeScheduleResponse {
        let rejected = GetCompositeScheduleResponse {
            status: GetCompositeScheduleStatus::Rejected,
            connector_id: None,
            schedule_start: None,
            charging_schedule: None,
        };
        if r.connector_id as usize > self.connectors.len() || r.duration < 0 {
            return rejected;
        }
        let tx = self.connector(r.connector_id).and_then(|c| c.tx.as_ref()).map(Self::tx_context);
        let ev = &self.p.ev;
        let steps = self.profiles.composite(r.connector_id, now.wall, r.duration, tx, ev.voltage_v, ev.phase_count());
        let unit = r.charging_rate_unit.unwrap_or(ChargingRateUnitType::A);
        let hw = if r.connector_id == 0 { self.p.hw_max_a * self.connectors.len() as f64 } else { self.p.hw_max_a };
        let periods = steps
            .into_iter()
            .map(|(start, limit)| {
                let amps = limit.map_or(hw, |l| l.min(hw));
                let limit = match unit {
                    ChargingRateUnitType::A => amps,
                    ChargingRateUnitType::W => ev.amps_to_watts(amps),
                };
                ChargingSchedulePeriod {
                    start_period: start,
                    limit: round1(limit),
                    number_phases: Some(u32::from(if ev.phases == 1 { 1u8 } else { 3u8 })),
                }
            })
            .collect();
        GetCompositeScheduleResponse {
            status: GetCompositeScheduleStatus::Accepted,
            connector_id: Some(r.connector_id),
            schedule_start: Some(now.wall),
            charging_schedule: Some(ChargingSchedule {
                duration: Some(r.duration),
                start_schedule: Some(now.wall),
                charging_rate_unit: unit,
                charging_schedule_period: periods,
                min_charging_rate: None,
            }),
        }
    }

    fn on_send_local_list(&mut self, r: SendLocalListRequest) -> SendLocalListResponse {
        if !self.key_bool("LocalAuthListEnabled").unwrap_or(true) {
            return SendLocalListResponse { status: UpdateStatus::NotSupported };
        }
        let entries = r.local_authorization_list.unwrap_or_default();
        let max = self.key_int("SendLocalListMaxLength").unwrap_or(1000).max(0) as usize;
        if entries.len() > max {
            return SendLocalListResponse { status: UpdateStatus::Failed };
        }
        let status = match r.update_type {
            UpdateType::Full => {
                self.local_list =
                    entries.into_iter().map(|e| (e.id_tag.as_str().to_ascii_uppercase(), e.id_tag_info)).collect();
                self.local_list_version = r.list_version;
                UpdateStatus::Accepted
            }
            UpdateType::Differential if r.list_version <= self.local_list_version => UpdateStatus::VersionMismatch,
            UpdateType::Differential => {
                for e in entries {
                    let key = e.id_tag.as_str().to_ascii_uppercase();
                    match e.id_tag_info {
                        Some(info) => {
                            self.local_list.insert(key, Some(info));
                        }
                        None => {
                            self.local_list.remove(&key);
                        }
                    }
                }
                self.local_list_version = r.list_version;
                UpdateStatus::Accepted
            }
        };
        SendLocalListResponse { status }
    }

    fn on_reserve(&mut self, r: ReserveNowRequest, now: Now) -> ReserveNowResponse {
        let status = if r.connector_id == 0 {
            // ReserveConnectorZeroSupported = false.
            ReservationStatus::Rejected
        } else {
            match self.connector(r.connector_id) {
                None => ReservationStatus::Rejected,
                Some(c) if !c.operative => ReservationStatus::Unavailable,
                Some(c) if c.tx.is_some() || c.plugged => ReservationStatus::Occupied,
                Some(_)
                    if self
                        .reservations
                        .iter()
                        .any(|x| x.connector == r.connector_id && x.id != r.reservation_id && x.expiry > now.wall) =>
                {
                    ReservationStatus::Occupied
                }
                Some(_) if r.expiry_date <= now.wall => ReservationStatus::Rejected,
                Some(_) => {
                    self.reservations.retain(|x| x.id != r.reservation_id);
                    self.reservations.push(Reservation {
                        id: r.reservation_id,
                        connector: r.connector_id,
                        id_tag: r.id_tag.as_str().to_string(),
                        expiry: r.expiry_date,
                    });
                    ReservationStatus::Accepted
                }
            }
        };
        ReserveNowResponse { status }
    }

    // ------------------------------------------------------------ configuration keys

    fn key(&self, name: &str) -> Option<&str> {
        self.keys.iter().find(|k| k.name.eq_ignore_ascii_case(name)).map(|k| k.value.as_str())
    }

    fn key_int(&self, name: &str) -> Option<i64> {
        self.key(name).and_then(|v| v.trim().parse().ok())
    }

    fn key_bool(&self, name: &str) -> Option<bool> {
        self.key(name).map(|v| v.trim().eq_ignore_ascii_case("true"))
    }

    fn set_key(&mut self, name: &str, value: String) {
        if let Some(k) = self.keys.iter_mut().find(|k| k.name.eq_ignore_ascii_case(name)) {
            k.value = value;
        }
    }

    // ------------------------------------------------------------ snapshot

    /// A snapshot of everything observable.
    pub fn snapshot(&self, wall: DateTime<Utc>) -> ChargePointState {
        let connectors = self
            .connectors
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (current_a, power_w) = c.tx.as_ref().map_or((0.0, 0.0), |t| (t.ev.current_a(), t.ev.power_w()));
                ConnectorState {
                    id: c.id,
                    status: c.reported,
                    operative: c.operative,
                    scheduled_operative: c.scheduled_operative,
                    plugged: c.plugged,
                    transaction: c.tx.as_ref().map(|t| TransactionState {
                        id: t.real_id,
                        local_id: t.local_id,
                        id_tag: t.id_tag.clone(),
                        meter_start_wh: t.meter_start_wh,
                        started_at: t.started,
                        energy_wh: t.ev.energy_wh(),
                        soc_percent: t.ev.soc_percent(),
                    }),
                    profile_limit_a: self.profile_limit(i, wall),
                    offered_a: self.offered(i, wall),
                    current_a,
                    power_w,
                    meter_wh: c.meter_wh,
                    reservation_id: self.reservations.iter().find(|r| r.connector == c.id).map(|r| r.id),
                }
            })
            .collect();
        ChargePointState {
            id: self.p.id.clone(),
            connected: self.connected,
            registration: self.registration,
            heartbeat_interval: self.heartbeat_interval,
            meter_interval: self.meter_interval,
            connectors,
            configuration: self
                .keys
                .iter()
                .map(|k| (k.name.to_string(), ConfigValue { value: k.value.clone(), readonly: k.readonly }))
                .collect(),
            profiles: self.profiles.profiles().to_vec(),
            local_list_version: self.local_list_version,
            local_list: self
                .local_list
                .iter()
                .map(|(k, v)| (k.clone(), v.as_ref().map(|i| format!("{:?}", i.status))))
                .collect(),
            queued_messages: self.txq.len(),
            firmware_status: self.firmware_status,
            diagnostics_status: self.diagnostics_status,
        }
    }
}

/// `at + k × interval` for the smallest k ≥ 1 that lands after `now` (skips missed beats).
fn advance_past(at: Instant, interval: Duration, now: Instant) -> Instant {
    if interval.is_zero() {
        return now + Duration::from_secs(3600);
    }
    let mut next = at + interval;
    if next <= now {
        let behind = (now - at).as_secs_f64() / interval.as_secs_f64();
        next = at + interval.mul_f64(behind.floor() + 1.0);
    }
    next
}

fn status_request(connector: u32, status: ChargePointStatus, wall: DateTime<Utc>) -> StatusNotificationRequest {
    StatusNotificationRequest {
        connector_id: connector,
        error_code: if status == ChargePointStatus::Faulted {
            ChargePointErrorCode::OtherError
        } else {
            ChargePointErrorCode::NoError
        },
        info: None,
        status,
        timestamp: Some(wall),
        vendor_id: None,
        vendor_error_code: None,
    }
}

fn energy_sample(wh: f64, context: ReadingContext, at: DateTime<Utc>) -> MeterValue {
    MeterValue {
        timestamp: at,
        sampled_value: vec![SampledValue {
            value: format!("{}", wh.round() as i64),
            context: Some(context),
            format: Some(ValueFormat::Raw),
            measurand: Some(Measurand::EnergyActiveImportRegister),
            phase: None,
            location: Some(Location::Outlet),
            unit: Some(UnitOfMeasure::Wh),
        }],
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Builds a bounded string from a value we made ourselves, cut to the bound first.
fn ci20(s: &str) -> CiString20 {
    CiString20::try_new(truncate(s, CiString20::MAX_LEN)).expect("cut to 20 characters")
}

fn convert_purpose(p: ChargingProfilePurposeType) -> Purpose {
    match p {
        ChargingProfilePurposeType::ChargePointMaxProfile => Purpose::ChargePointMax,
        ChargingProfilePurposeType::TxDefaultProfile => Purpose::TxDefault,
        ChargingProfilePurposeType::TxProfile => Purpose::Tx,
    }
}

/// The wire profile as the store keeps it; `None` for values the store cannot represent
/// (negative stack level or start period).
pub fn convert_profile(p: &ChargingProfile, connector_id: u32) -> Option<Profile> {
    let s = &p.charging_schedule;
    let periods = s
        .charging_schedule_period
        .iter()
        .map(|x| {
            (x.start_period >= 0 && x.limit.is_finite() && x.limit >= 0.0).then(|| Period {
                start_s: x.start_period,
                limit: x.limit,
                number_phases: x.number_phases.and_then(|n| u8::try_from(n).ok()),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Profile {
        id: p.charging_profile_id,
        connector_id,
        transaction_id: p.transaction_id,
        stack_level: p.stack_level,
        purpose: convert_purpose(p.charging_profile_purpose),
        kind: match p.charging_profile_kind {
            ChargingProfileKindType::Absolute => Kind::Absolute,
            ChargingProfileKindType::Recurring => Kind::Recurring,
            ChargingProfileKindType::Relative => Kind::Relative,
        },
        recurrency: p.recurrency_kind.map(|r| match r {
            RecurrencyKindType::Daily => Recurrency::Daily,
            RecurrencyKindType::Weekly => Recurrency::Weekly,
        }),
        valid_from: p.valid_from,
        valid_to: p.valid_to,
        duration_s: s.duration,
        start_schedule: s.start_schedule,
        unit: match s.charging_rate_unit {
            ChargingRateUnitType::A => RateUnit::Amps,
            ChargingRateUnitType::W => RateUnit::Watts,
        },
        periods,
        min_rate: s.min_charging_rate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> ChargePointConfig {
        let mut c = ChargePointConfig::new("CP1", "ws://127.0.0.1:1/ocpp").with_connectors(2);
        c.ev = EvModel::instant().with_max_current(16.0);
        c.meter_interval = Duration::from_secs(10);
        c
    }

    fn t0() -> Now {
        Now { mono: Instant::now(), wall: Utc::now() }
    }

    fn call(action: &str, payload: Value) -> Call {
        Call { unique_id: "cs-1".to_string(), action: action.to_string(), payload }
    }

    fn result(f: &Frame) -> &Value {
        match f {
            Frame::CallResult(r) => &r.payload,
            other => panic!("expected a CALLRESULT, got {other:?}"),
        }
    }

    /// Connects and answers the BootNotification with Accepted; drains what follows.
    fn boot(s: &mut Station, now: Now) -> Vec<Outgoing> {
        s.on_connected();
        s.enqueue_boot(false);
        let out = s.next_out(now.mono).expect("boot");
        assert_eq!(out.action, "BootNotification");
        let answer = json!({"status": "Accepted", "currentTime": now.wall, "interval": 60});
        s.on_answer(&out, Ok(&answer), now);
        Vec::new()
    }

    /// Sends and answers everything queued; StartTransactions get ids from `next_id`.
    fn drain(s: &mut Station, now: Now, next_id: &mut i32) -> Vec<Outgoing> {
        let mut sent = Vec::new();
        for _ in 0..100 {
            let Some(out) = s.next_out(now.mono) else { break };
            let answer = match out.action.as_str() {
                "StartTransaction" => {
                    *next_id += 1;
                    json!({"transactionId": *next_id, "idTagInfo": {"status": "Accepted"}})
                }
                "Heartbeat" => json!({"currentTime": now.wall}),
                _ => json!({}),
            };
            s.on_answer(&out, Ok(&answer), now);
            sent.push(out);
        }
        sent
    }

    #[test]
    fn offline_transaction_is_delivered_in_order_with_the_real_id() {
        let now = t0();
        let mut s = Station::new(&cfg());
        let mut ids = 40;
        boot(&mut s, now);
        drain(&mut s, now, &mut ids);
        // Connection lost; a session happens offline.
        s.on_disconnected();
        let (local, _) = s.start_transaction(1, "TAG1", now).expect("start offline");
        assert!(local < 0);
        s.tick(now.plus(Duration::from_secs(10)));
        s.send_meter_values(1, now.plus(Duration::from_secs(15))).expect("meter values");
        s.stop_transaction(1, Reason::Local, now.plus(Duration::from_secs(20))).expect("stop");
        assert!(s.next_out(now.mono).is_none(), "nothing goes out while offline");
        assert_eq!(s.queued().count(), 4);
        // Back online: boot first, then the queue in order with the id from the answer.
        let later = now.plus(Duration::from_secs(30));
        boot(&mut s, later);
        let sent: Vec<_> = drain(&mut s, later, &mut ids).into_iter().filter(|o| o.persistent).collect();
        let actions: Vec<_> = sent.iter().map(|o| o.action.as_str()).collect();
        assert_eq!(actions, ["StartTransaction", "MeterValues", "MeterValues", "StopTransaction"]);
        for o in &sent[1..] {
            assert_eq!(o.payload["transactionId"], 41, "{}", o.action);
        }
        // 16 A × 230 V × 3 for 20 s = 61.33 Wh.
        assert_eq!(sent[3].payload["meterStop"], 61);
        assert_eq!(s.snapshot(later.wall).queued_messages, 0);
    }

    #[test]
    fn charging_profiles_limit_the_ev_and_pause_it_below_six_amps() {
        let now = t0();
        let mut s = Station::new(&cfg());
        let mut ids = 0;
        boot(&mut s, now);
        s.start_transaction(1, "TAG1", now).expect("start");
        drain(&mut s, now, &mut ids);
        let snap = s.snapshot(now.wall);
        assert_eq!(snap.connectors[0].current_a, 16.0);
        assert_eq!(snap.connectors[0].status, ChargePointStatus::Charging);
        assert_eq!(snap.connectors[0].transaction_id(), Some(1));

        let profile = |id, purpose: &str, level, unit: &str, limit: f64| {
            json!({"connectorId": if purpose == "ChargePointMaxProfile" { 0 } else { 1 },
                "csChargingProfiles": {"chargingProfileId": id, "stackLevel": level,
                "chargingProfilePurpose": purpose, "chargingProfileKind": "Absolute",
                "chargingSchedule": {"startSchedule": now.wall - chrono::Duration::seconds(1),
                    "chargingRateUnit": unit,
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}]}}})
        };
        let r = s.handle_call(&call("SetChargingProfile", profile(1, "TxDefaultProfile", 0, "A", 12.0)), now);
        assert_eq!(result(&r)["status"], "Accepted");
        assert_eq!(s.snapshot(now.wall).connectors[0].current_a, 12.0);
        // A TxProfile in W beats the default: 6 900 W / (230 V × 3) = 10 A.
        let r = s.handle_call(&call("SetChargingProfile", profile(2, "TxProfile", 0, "W", 6900.0)), now);
        assert_eq!(result(&r)["status"], "Accepted");
        assert!((s.snapshot(now.wall).connectors[0].current_a - 10.0).abs() < 1e-9);
        // A charge-point maximum of 5 A pauses the EV: SuspendedEVSE.
        let r = s.handle_call(&call("SetChargingProfile", profile(3, "ChargePointMaxProfile", 0, "A", 5.0)), now);
        assert_eq!(result(&r)["status"], "Accepted");
        let snap = s.snapshot(now.wall);
        assert_eq!(snap.connectors[0].current_a, 0.0);
        assert_eq!(snap.connectors[0].status, ChargePointStatus::SuspendedEVSE);
        let statuses: Vec<_> = drain(&mut s, now, &mut ids)
            .into_iter()
            .filter(|o| o.action == "StatusNotification")
            .map(|o| o.payload["status"].clone())
            .collect();
        assert_eq!(statuses, [json!("SuspendedEVSE")]);
        // Clearing it resumes at the TxProfile limit.
        let r = s.handle_call(&call("ClearChargingProfile", json!({"id": 3})), now);
        assert_eq!(result(&r)["status"], "Accepted");
        assert!((s.snapshot(now.wall).connectors[0].current_a - 10.0).abs() < 1e-9);
        let r = s.handle_call(&call("ClearChargingProfile", json!({"id": 3})), now);
        assert_eq!(result(&r)["status"], "Unknown");
        // The composite schedule shows the limit in force.
        let r = s.handle_call(&call("GetCompositeSchedule", json!({"connectorId": 1, "duration": 60})), now);
        assert_eq!(result(&r)["status"], "Accepted");
        assert_eq!(result(&r)["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"], 10.0);
        // A TxProfile without a transaction is rejected.
        let r = s.handle_call(
            &call("SetChargingProfile", {
                let mut p = profile(4, "TxProfile", 0, "A", 8.0);
                p["connectorId"] = json!(2);
                p
            }),
            now,
        );
        assert_eq!(result(&r)["status"], "Rejected");
    }

    #[test]
    fn availability_is_scheduled_during_a_transaction() {
        let now = t0();
        let mut s = Station::new(&cfg());
        let mut ids = 0;
        boot(&mut s, now);
        s.start_transaction(1, "TAG1", now).expect("start");
        drain(&mut s, now, &mut ids);
        let r = s.handle_call(&call("ChangeAvailability", json!({"connectorId": 0, "type": "Inoperative"})), now);
        assert_eq!(result(&r)["status"], "Scheduled");
        let snap = s.snapshot(now.wall);
        assert_eq!(snap.connectors[1].status, ChargePointStatus::Unavailable);
        assert_eq!(snap.connectors[0].status, ChargePointStatus::Charging);
        s.stop_transaction(1, Reason::Local, now).expect("stop");
        assert_eq!(s.snapshot(now.wall).connectors[0].status, ChargePointStatus::Unavailable);
        assert!(s.start_transaction(1, "TAG1", now).is_err());
        let r = s.handle_call(&call("RemoteStartTransaction", json!({"idTag": "TAG1"})), now);
        assert_eq!(result(&r)["status"], "Rejected");
        let r = s.handle_call(&call("ChangeAvailability", json!({"connectorId": 0, "type": "Operative"})), now);
        assert_eq!(result(&r)["status"], "Accepted");
        assert_eq!(s.snapshot(now.wall).connectors[1].status, ChargePointStatus::Available);
    }

    #[test]
    fn remote_start_and_stop() {
        let now = t0();
        let mut s = Station::new(&cfg());
        let mut ids = 6;
        boot(&mut s, now);
        drain(&mut s, now, &mut ids);
        let r = s.handle_call(
            &call(
                "RemoteStartTransaction",
                json!({"connectorId": 2, "idTag": "REMOTE",
                "chargingProfile": {"chargingProfileId": 9, "stackLevel": 1, "chargingProfilePurpose": "TxProfile",
                    "chargingProfileKind": "Relative", "chargingSchedule": {"chargingRateUnit": "A",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 8.0}]}}}),
            ),
            now,
        );
        assert_eq!(result(&r)["status"], "Accepted");
        let sent = drain(&mut s, now, &mut ids);
        let start = sent.iter().find(|o| o.action == "StartTransaction").expect("StartTransaction sent");
        assert_eq!(start.payload["idTag"], "REMOTE");
        assert_eq!(start.payload["connectorId"], 2);
        let snap = s.snapshot(now.wall);
        assert_eq!(snap.connectors[1].transaction_id(), Some(7));
        assert_eq!(snap.connectors[1].current_a, 8.0);
        let r = s.handle_call(&call("RemoteStopTransaction", json!({"transactionId": 99})), now);
        assert_eq!(result(&r)["status"], "Rejected");
        let r = s.handle_call(&call("RemoteStopTransaction", json!({"transactionId": 7})), now);
        assert_eq!(result(&r)["status"], "Accepted");
        let sent = drain(&mut s, now, &mut ids);
        let stop = sent.iter().find(|o| o.action == "StopTransaction").expect("StopTransaction sent");
        assert_eq!(stop.payload["reason"], "Remote");
        assert_eq!(stop.payload["transactionId"], 7);
        // The TxProfile went with the transaction.
        assert!(s.snapshot(now.wall).profiles.is_empty());
    }

    #[test]
    fn configuration_keys() {
        let now = t0();
        let mut s = Station::new(&cfg());
        let r = s.handle_call(&call("GetConfiguration", json!({"key": ["HeartbeatInterval", "NoSuchKey"]})), now);
        assert_eq!(result(&r)["configurationKey"][0]["key"], "HeartbeatInterval");
        assert_eq!(result(&r)["unknownKey"], json!(["NoSuchKey"]));
        let r = s.handle_call(&call("GetConfiguration", json!({})), now);
        assert!(result(&r)["configurationKey"].as_array().is_some_and(|k| k.len() > 20));
        let change = |k: &str, v: &str| call("ChangeConfiguration", json!({"key": k, "value": v}));
        assert_eq!(result(&s.handle_call(&change("NumberOfConnectors", "4"), now))["status"], "Rejected");
        assert_eq!(result(&s.handle_call(&change("Foo", "1"), now))["status"], "NotSupported");
        assert_eq!(result(&s.handle_call(&change("HeartbeatInterval", "abc"), now))["status"], "Rejected");
        assert_eq!(result(&s.handle_call(&change("HeartbeatInterval", "42"), now))["status"], "Accepted");
        assert_eq!(result(&s.handle_call(&change("MeterValueSampleInterval", "5"), now))["status"], "Accepted");
        let snap = s.snapshot(now.wall);
        assert_eq!(snap.heartbeat_interval, Duration::from_secs(42));
        assert_eq!(snap.meter_interval, Duration::from_secs(5));
    }

    #[test]
    fn bad_calls_get_the_right_callerror() {
        let now = t0();
        let mut s = Station::new(&cfg());
        let code = |f: Frame| match f {
            Frame::CallError(e) => e.code,
            other => panic!("expected a CALLERROR, got {other:?}"),
        };
        assert_eq!(code(s.handle_call(&call("FlyToTheMoon", json!({})), now)), ErrorCode::NotImplemented);
        assert_eq!(code(s.handle_call(&call("GetLog", json!({})), now)), ErrorCode::NotSupported);
        assert_eq!(code(s.handle_call(&call("Reset", json!({})), now)), ErrorCode::OccurenceConstraintViolation);
        assert_eq!(code(s.handle_call(&call("Reset", json!({"type": 1})), now)), ErrorCode::TypeConstraintViolation);
        assert_eq!(
            code(s.handle_call(&call("Reset", json!({"type": "Sideways"})), now)),
            ErrorCode::PropertyConstraintViolation
        );
    }

    #[test]
    fn reset_stops_transactions_then_reboots() {
        let now = t0();
        let mut s = Station::new(&cfg());
        let mut ids = 0;
        boot(&mut s, now);
        s.start_transaction(1, "TAG1", now).expect("start");
        drain(&mut s, now, &mut ids);
        let r = s.handle_call(&call("Reset", json!({"type": "Hard"})), now);
        assert_eq!(result(&r)["status"], "Accepted");
        assert_eq!(s.poll_reset(now.mono, true), None, "the StopTransaction is still queued");
        let sent = drain(&mut s, now, &mut ids);
        let stop = sent.iter().find(|o| o.action == "StopTransaction").expect("stop");
        assert_eq!(stop.payload["reason"], "HardReset");
        assert_eq!(s.poll_reset(now.mono, true), Some(ResetType::Hard));
        assert_eq!(s.poll_reset(now.mono, true), None);
    }

    #[test]
    fn local_list_reservations_and_triggers() {
        let now = t0();
        let mut s = Station::new(&cfg());
        let mut ids = 0;
        boot(&mut s, now);
        drain(&mut s, now, &mut ids);
        let list = |v: i32, t: &str| {
            call(
                "SendLocalList",
                json!({"listVersion": v, "updateType": t,
                "localAuthorizationList": [{"idTag": "A", "idTagInfo": {"status": "Accepted"}}]}),
            )
        };
        assert_eq!(result(&s.handle_call(&list(3, "Full"), now))["status"], "Accepted");
        assert_eq!(result(&s.handle_call(&list(3, "Differential"), now))["status"], "VersionMismatch");
        let r = s.handle_call(&call("GetLocalListVersion", json!({})), now);
        assert_eq!(result(&r)["listVersion"], 3);

        let expiry = now.wall + chrono::Duration::minutes(5);
        let reserve = |c: u32, id: i32| {
            call("ReserveNow", json!({"connectorId": c, "expiryDate": expiry, "idTag": "R1", "reservationId": id}))
        };
        assert_eq!(result(&s.handle_call(&reserve(1, 1), now))["status"], "Accepted");
        assert_eq!(result(&s.handle_call(&reserve(1, 2), now))["status"], "Occupied");
        assert_eq!(s.snapshot(now.wall).connectors[0].status, ChargePointStatus::Reserved);
        assert!(s.start_transaction(1, "OTHER", now).is_err());
        let (_, _) = s.start_transaction(1, "R1", now).expect("the reserving tag starts");
        let start = drain(&mut s, now, &mut ids).into_iter().find(|o| o.action == "StartTransaction").expect("start");
        assert_eq!(start.payload["reservationId"], 1);
        assert_eq!(
            result(&s.handle_call(&call("CancelReservation", json!({"reservationId": 1})), now))["status"],
            "Rejected"
        );

        let r =
            s.handle_call(&call("TriggerMessage", json!({"requestedMessage": "MeterValues", "connectorId": 1})), now);
        assert_eq!(result(&r)["status"], "Accepted");
        let mv = drain(&mut s, now, &mut ids).into_iter().find(|o| o.action == "MeterValues").expect("meter values");
        assert_eq!(mv.payload["meterValue"][0]["sampledValue"][0]["context"], "Trigger");
        assert_eq!(mv.payload["transactionId"], 1);

        let r = s.handle_call(
            &call("UpdateFirmware", json!({"location": "http://x/fw.bin", "retrieveDate": now.wall})),
            now,
        );
        assert_eq!(result(&r), &json!({}));
        s.tick(now.plus(Duration::from_secs(5)));
        let statuses: Vec<_> = drain(&mut s, now, &mut ids)
            .into_iter()
            .filter(|o| o.action == "FirmwareStatusNotification")
            .map(|o| o.payload["status"].clone())
            .collect();
        assert_eq!(statuses, [json!("Downloading"), json!("Downloaded"), json!("Installing"), json!("Installed")]);
    }

    #[test]
    fn meter_values_are_periodic_and_complete() {
        let now = t0();
        let mut s = Station::new(&cfg());
        let mut ids = 0;
        boot(&mut s, now);
        s.start_transaction(1, "TAG1", now).expect("start");
        drain(&mut s, now, &mut ids);
        for k in 1..=3 {
            s.tick(now.plus(Duration::from_secs(10 * k)));
        }
        let mvs: Vec<_> = drain(&mut s, now, &mut ids).into_iter().filter(|o| o.action == "MeterValues").collect();
        assert_eq!(mvs.len(), 3);
        let last = &mvs[2].payload["meterValue"][0]["sampledValue"];
        let find = |m: &str, phase: Option<&str>| {
            last.as_array()
                .and_then(|a| a.iter().find(|v| v["measurand"] == m && phase.is_none_or(|p| v["phase"] == p)).cloned())
                .unwrap_or(Value::Null)
        };
        // 30 s at 11 040 W = 92 Wh.
        assert_eq!(find("Energy.Active.Import.Register", None)["value"], "92");
        assert_eq!(find("Power.Active.Import", None)["value"], "11040.0");
        assert_eq!(find("Current.Import", Some("L3"))["value"], "16.00");
        assert_eq!(find("Voltage", Some("L1-N"))["unit"], "V");
        assert_eq!(find("SoC", None)["location"], "EV");
        assert_eq!(find("Current.Import", Some("L1"))["context"], "Sample.Periodic");
    }
}
