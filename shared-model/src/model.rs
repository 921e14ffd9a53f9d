//! The version-neutral charger model. Every OCPP version adapter (1.6 today; 2.0.1 and
//! 2.1 next) maps its wire messages into these types, so the rest of the edge agent
//! (store, balancer, sync, API) never sees a protocol version.
//!
//! Terms follow OCPP 2.0.1's device model, which is a superset of 1.6: a charging
//! station has EVSEs, each with connectors. A 1.6 connector N maps to EVSE N with
//! connector 1; 1.6 connector 0 (the whole charge point) maps to EVSE 0.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a status or limit applies: the whole station (`evse == 0`) or one EVSE/connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConnectorRef {
    /// EVSE number; 0 means the whole charging station.
    pub evse: u32,
    /// Connector number on that EVSE, starting at 1 (0 with `evse == 0`).
    pub connector: u32,
}

impl ConnectorRef {
    /// The whole charging station.
    pub const STATION: ConnectorRef = ConnectorRef { evse: 0, connector: 0 };

    /// Maps an OCPP 1.6 `connectorId` (0 = whole charge point).
    pub fn from_v16(connector_id: u32) -> Self {
        if connector_id == 0 { ConnectorRef::STATION } else { ConnectorRef { evse: connector_id, connector: 1 } }
    }

    /// The OCPP 1.6 `connectorId` for this reference.
    pub fn to_v16(self) -> u32 {
        self.evse
    }
}

/// Version-neutral connector status (union of OCPP 1.6 ChargePointStatus and 2.0.1
/// ConnectorStatusEnumType; 2.0.1's `Occupied` covers 1.6's Preparing..Finishing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConnectorStatus {
    Available,
    Preparing,
    Charging,
    SuspendedEV,
    SuspendedEVSE,
    Finishing,
    Occupied,
    Reserved,
    Unavailable,
    Faulted,
}

impl ConnectorStatus {
    /// Whether a vehicle is (probably) plugged in.
    pub fn is_occupied(self) -> bool {
        matches!(
            self,
            ConnectorStatus::Preparing
                | ConnectorStatus::Charging
                | ConnectorStatus::SuspendedEV
                | ConnectorStatus::SuspendedEVSE
                | ConnectorStatus::Finishing
                | ConnectorStatus::Occupied
        )
    }

    /// The name used in storage and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectorStatus::Available => "Available",
            ConnectorStatus::Preparing => "Preparing",
            ConnectorStatus::Charging => "Charging",
            ConnectorStatus::SuspendedEV => "SuspendedEV",
            ConnectorStatus::SuspendedEVSE => "SuspendedEVSE",
            ConnectorStatus::Finishing => "Finishing",
            ConnectorStatus::Occupied => "Occupied",
            ConnectorStatus::Reserved => "Reserved",
            ConnectorStatus::Unavailable => "Unavailable",
            ConnectorStatus::Faulted => "Faulted",
        }
    }
}

/// The kind of identifier a driver presented (OCPP 2.0.1 IdTokenEnumType; 1.6 idTags
/// are `Central` or `Iso14443` in practice and map to `Local` when unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IdTokenKind {
    Central,
    EMaid,
    Iso14443,
    Iso15693,
    KeyCode,
    Local,
    MacAddress,
    NoAuthorization,
}

/// An identifier presented to start or stop charging.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdToken {
    pub value: String,
    pub kind: IdTokenKind,
}

impl IdToken {
    /// A token as OCPP 1.6 carries it (an opaque idTag).
    pub fn local(value: impl Into<String>) -> Self {
        IdToken { value: value.into(), kind: IdTokenKind::Local }
    }
}

/// The outcome of authorizing an id token (union of 1.6 AuthorizationStatus and 2.0.1
/// AuthorizationStatusEnumType).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuthorizationStatus {
    Accepted,
    Blocked,
    Expired,
    Invalid,
    ConcurrentTx,
}

impl AuthorizationStatus {
    /// The name used in storage and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorizationStatus::Accepted => "Accepted",
            AuthorizationStatus::Blocked => "Blocked",
            AuthorizationStatus::Expired => "Expired",
            AuthorizationStatus::Invalid => "Invalid",
            AuthorizationStatus::ConcurrentTx => "ConcurrentTx",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Accepted" => AuthorizationStatus::Accepted,
            "Blocked" => AuthorizationStatus::Blocked,
            "Expired" => AuthorizationStatus::Expired,
            "Invalid" => AuthorizationStatus::Invalid,
            "ConcurrentTx" => AuthorizationStatus::ConcurrentTx,
            _ => return None,
        })
    }
}

/// What a charging station told us about itself at boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StationInfo {
    pub vendor: String,
    pub model: String,
    pub serial_number: Option<String>,
    pub firmware_version: Option<String>,
    pub iccid: Option<String>,
    pub imsi: Option<String>,
    pub meter_type: Option<String>,
    pub meter_serial_number: Option<String>,
}

/// One sampled value, kept exactly as the station reported it: the value stays a string
/// (OCPP sends decimals as strings and signed meter data must stay byte-exact), and
/// every qualifier is kept verbatim in its wire spelling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterSample {
    pub timestamp: DateTime<Utc>,
    pub value: String,
    /// e.g. `Energy.Active.Import.Register` (the default when absent).
    pub measurand: String,
    pub phase: Option<String>,
    pub location: Option<String>,
    pub unit: Option<String>,
    /// e.g. `Sample.Periodic`, `Transaction.Begin`.
    pub context: Option<String>,
    /// `Raw` or `SignedData`.
    pub format: Option<String>,
}

impl MeterSample {
    /// The value in the measurand's base unit (Wh, W, A, V, ...), converting the `k`
    /// prefixed units; `None` when the value is signed data or not a number.
    pub fn numeric_base_value(&self) -> Option<f64> {
        if self.format.as_deref() == Some("SignedData") {
            return None;
        }
        let v: f64 = self.value.trim().parse().ok()?;
        let factor = match self.unit.as_deref() {
            Some("kWh") | Some("kW") | Some("kvar") | Some("kvarh") | Some("kVA") => 1000.0,
            _ => 1.0,
        };
        Some(v * factor)
    }

    /// Whether this is the energy import register (the one transactions are billed on).
    pub fn is_energy_import_register(&self) -> bool {
        self.measurand == "Energy.Active.Import.Register" && self.phase.is_none()
    }
}

/// Why a transaction ended (union of 1.6 Reason and 2.0.1 ReasonEnumType).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StopReason {
    DeAuthorized,
    EmergencyStop,
    EVDisconnected,
    HardReset,
    Local,
    Other,
    PowerLoss,
    Reboot,
    Remote,
    SoftReset,
    UnlockCommand,
}

/// A limit on what one EVSE (or the whole station) may draw.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum ChargingLimit {
    /// Amps per phase.
    Amps { per_phase: f64, phases: Option<u8> },
    /// Watts in total.
    Watts(f64),
}

/// How a transaction came to be known to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransactionOrigin {
    /// Started online with a StartTransaction we answered.
    Online,
    /// First seen in a StopTransaction / MeterValues for a transaction id we never issued
    /// (the station started it while offline).
    Offline,
}

impl TransactionOrigin {
    /// The name used in storage and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            TransactionOrigin::Online => "online",
            TransactionOrigin::Offline => "offline",
        }
    }
}

impl StopReason {
    /// The OCPP 1.6 / stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::DeAuthorized => "DeAuthorized",
            StopReason::EmergencyStop => "EmergencyStop",
            StopReason::EVDisconnected => "EVDisconnected",
            StopReason::HardReset => "HardReset",
            StopReason::Local => "Local",
            StopReason::Other => "Other",
            StopReason::PowerLoss => "PowerLoss",
            StopReason::Reboot => "Reboot",
            StopReason::Remote => "Remote",
            StopReason::SoftReset => "SoftReset",
            StopReason::UnlockCommand => "UnlockCommand",
        }
    }
}

impl ConnectorStatus {
    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Available" => ConnectorStatus::Available,
            "Preparing" => ConnectorStatus::Preparing,
            "Charging" => ConnectorStatus::Charging,
            "SuspendedEV" => ConnectorStatus::SuspendedEV,
            "SuspendedEVSE" => ConnectorStatus::SuspendedEVSE,
            "Finishing" => ConnectorStatus::Finishing,
            "Occupied" => ConnectorStatus::Occupied,
            "Reserved" => ConnectorStatus::Reserved,
            "Unavailable" => ConnectorStatus::Unavailable,
            "Faulted" => ConnectorStatus::Faulted,
            _ => return None,
        })
    }
}
