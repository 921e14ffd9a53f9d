//! Snapshots of the simulator's state, and the log of what the central system asked.

use super::profiles::Profile;
use chrono::{DateTime, Utc};
use serde_json::Value;
use shared_model::ocpp::framing::Frame;
use shared_model::ocpp::v16::{ChargePointStatus, DiagnosticsStatus, FirmwareStatus, RegistrationStatus};
use std::collections::BTreeMap;
use std::time::Duration;

/// A transaction running on a connector.
#[derive(Debug, Clone, PartialEq)]
pub struct TransactionState {
    /// The id the central system gave; `None` until the StartTransaction was answered
    /// (e.g. while offline).
    pub id: Option<i32>,
    /// The simulator's local id (negative), used in queued messages until `id` is known.
    pub local_id: i32,
    /// The id tag that started it.
    pub id_tag: String,
    /// Meter register at the start (Wh).
    pub meter_start_wh: i64,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Energy delivered so far (Wh).
    pub energy_wh: f64,
    /// The EV's state of charge (%).
    pub soc_percent: f64,
}

/// One connector.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorState {
    /// Connector id (1..).
    pub id: u32,
    /// Last status reported (or to be reported once online).
    pub status: ChargePointStatus,
    /// Availability: `false` after ChangeAvailability Inoperative.
    pub operative: bool,
    /// Availability change waiting for the running transaction to end.
    pub scheduled_operative: Option<bool>,
    /// A cable and EV are plugged in.
    pub plugged: bool,
    /// The running transaction.
    pub transaction: Option<TransactionState>,
    /// Limit from charging profiles (A per phase), `None` when no profile limits it.
    pub profile_limit_a: Option<f64>,
    /// Limit the connector offers now: the profile limit capped by the hardware (A).
    pub offered_a: f64,
    /// Current the EV draws per phase (A).
    pub current_a: f64,
    /// Power the EV draws (W).
    pub power_w: f64,
    /// Energy meter register (Wh).
    pub meter_wh: f64,
    /// Reservation on this connector, if any.
    pub reservation_id: Option<i32>,
}

impl ConnectorState {
    /// The central system's id of the running transaction, once known.
    pub fn transaction_id(&self) -> Option<i32> {
        self.transaction.as_ref().and_then(|t| t.id)
    }
}

/// One configuration key (GetConfiguration's KeyValue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigValue {
    pub value: String,
    pub readonly: bool,
}

/// What the simulated charge point knows, at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct ChargePointState {
    /// Charge point identity.
    pub id: String,
    /// A WebSocket connection is open.
    pub connected: bool,
    /// The answer to the last BootNotification on this connection, if any.
    pub registration: Option<RegistrationStatus>,
    /// Heartbeat interval in force.
    pub heartbeat_interval: Duration,
    /// MeterValues interval in force.
    pub meter_interval: Duration,
    /// Connectors 1..=n (index 0 is connector 1).
    pub connectors: Vec<ConnectorState>,
    /// Configuration keys and values.
    pub configuration: BTreeMap<String, ConfigValue>,
    /// Installed charging profiles.
    pub profiles: Vec<Profile>,
    /// Local authorization list version (SendLocalList).
    pub local_list_version: i32,
    /// Local authorization list: id tag -> idTagInfo status (`None` = no info).
    pub local_list: BTreeMap<String, Option<String>>,
    /// Transaction-related messages waiting for delivery (offline queue).
    pub queued_messages: usize,
    /// Last firmware status notified.
    pub firmware_status: FirmwareStatus,
    /// Last diagnostics status notified.
    pub diagnostics_status: DiagnosticsStatus,
}

impl ChargePointState {
    /// Connector `id` (1-based).
    pub fn connector(&self, id: u32) -> Option<&ConnectorState> {
        self.connectors.iter().find(|c| c.id == id)
    }
}

/// One CALL the central system sent us, with our answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedCall {
    /// When it arrived.
    pub at: DateTime<Utc>,
    /// Its unique id.
    pub unique_id: String,
    /// Its action.
    pub action: String,
    /// Its payload.
    pub payload: Value,
    /// The CALLRESULT or CALLERROR we answered with.
    pub response: Frame,
}
