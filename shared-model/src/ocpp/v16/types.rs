//! OCPP 1.6 enumerations and composite types of the core spec (OCPP 1.6 §7), except the
//! smart-charging ones, which live in [`super::charging_profile`].
//!
//! Every enum carries the exact wire spelling; where that is not a Rust identifier
//! (`"Energy.Active.Import.Register"`, `"L1-N"`, `"kWh"`) the variant is renamed. Unknown
//! values are refused when decoding, which the framing layer answers with a
//! `PropertyConstraintViolation`.

use super::strings::{CiString50, CiString500, IdToken};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------- enumerations

/// AuthorizationStatus (OCPP 1.6 §7.2): the verdict on an idTag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuthorizationStatus {
    Accepted,
    Blocked,
    Expired,
    Invalid,
    /// Already in another transaction (only meaningful in StartTransaction.conf).
    ConcurrentTx,
}

/// AvailabilityStatus (OCPP 1.6 §7.3): answer to ChangeAvailability.req.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AvailabilityStatus {
    Accepted,
    Rejected,
    /// Accepted, applied once the running transaction(s) end.
    Scheduled,
}

/// AvailabilityType (OCPP 1.6 §7.4): the availability asked for in ChangeAvailability.req.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AvailabilityType {
    Inoperative,
    Operative,
}

/// CancelReservationStatus (OCPP 1.6 §7.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CancelReservationStatus {
    Accepted,
    Rejected,
}

/// ChargePointErrorCode (OCPP 1.6 §7.6): the error reported in StatusNotification.req.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChargePointErrorCode {
    ConnectorLockFailure,
    EVCommunicationError,
    GroundFailure,
    HighTemperature,
    InternalError,
    LocalListConflict,
    NoError,
    OtherError,
    OverCurrentFailure,
    OverVoltage,
    PowerMeterFailure,
    PowerSwitchFailure,
    ReaderFailure,
    ResetFailure,
    UnderVoltage,
    WeakSignal,
}

/// ChargePointStatus (OCPP 1.6 §7.7): connector state in StatusNotification.req.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChargePointStatus {
    Available,
    Preparing,
    Charging,
    /// The charger (or the central system through a profile) withholds energy.
    SuspendedEVSE,
    /// The EV does not take energy although it is offered.
    SuspendedEV,
    Finishing,
    Reserved,
    Unavailable,
    Faulted,
}

/// ClearCacheStatus (OCPP 1.6 §7.20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ClearCacheStatus {
    Accepted,
    Rejected,
}

/// ConfigurationStatus (OCPP 1.6 §7.22): answer to ChangeConfiguration.req.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConfigurationStatus {
    Accepted,
    Rejected,
    RebootRequired,
    NotSupported,
}

/// DataTransferStatus (OCPP 1.6 §7.23).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DataTransferStatus {
    Accepted,
    Rejected,
    UnknownMessageId,
    UnknownVendorId,
}

/// DiagnosticsStatus (OCPP 1.6 §7.24): progress of a GetDiagnostics upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DiagnosticsStatus {
    /// Not uploading; only sent in answer to a TriggerMessage.
    Idle,
    Uploaded,
    UploadFailed,
    Uploading,
}

/// FirmwareStatus (OCPP 1.6 §7.25): progress of an UpdateFirmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FirmwareStatus {
    Downloaded,
    DownloadFailed,
    Downloading,
    /// Not updating; only sent in answer to a TriggerMessage.
    Idle,
    InstallationFailed,
    Installing,
    Installed,
}

/// Location (OCPP 1.6 §7.30): where a sampled value was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Location {
    Body,
    Cable,
    #[serde(rename = "EV")]
    Ev,
    Inlet,
    /// The default when absent.
    Outlet,
}

/// Measurand (OCPP 1.6 §7.31): what a sampled value measures. "Import" is energy flowing
/// from the grid to the EV, "Export" the other way (V2G).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Measurand {
    #[serde(rename = "Current.Export")]
    CurrentExport,
    #[serde(rename = "Current.Import")]
    CurrentImport,
    #[serde(rename = "Current.Offered")]
    CurrentOffered,
    #[serde(rename = "Energy.Active.Export.Register")]
    EnergyActiveExportRegister,
    /// The default when absent: the meter register, in Wh unless a unit says otherwise.
    #[serde(rename = "Energy.Active.Import.Register")]
    EnergyActiveImportRegister,
    #[serde(rename = "Energy.Reactive.Export.Register")]
    EnergyReactiveExportRegister,
    #[serde(rename = "Energy.Reactive.Import.Register")]
    EnergyReactiveImportRegister,
    #[serde(rename = "Energy.Active.Export.Interval")]
    EnergyActiveExportInterval,
    #[serde(rename = "Energy.Active.Import.Interval")]
    EnergyActiveImportInterval,
    #[serde(rename = "Energy.Reactive.Export.Interval")]
    EnergyReactiveExportInterval,
    #[serde(rename = "Energy.Reactive.Import.Interval")]
    EnergyReactiveImportInterval,
    Frequency,
    #[serde(rename = "Power.Active.Export")]
    PowerActiveExport,
    #[serde(rename = "Power.Active.Import")]
    PowerActiveImport,
    #[serde(rename = "Power.Factor")]
    PowerFactor,
    #[serde(rename = "Power.Offered")]
    PowerOffered,
    #[serde(rename = "Power.Reactive.Export")]
    PowerReactiveExport,
    #[serde(rename = "Power.Reactive.Import")]
    PowerReactiveImport,
    #[serde(rename = "RPM")]
    Rpm,
    /// State of charge of the EV battery, in percent.
    SoC,
    Temperature,
    Voltage,
}

/// MessageTrigger (OCPP 1.6 §7.32): the message a TriggerMessage.req asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MessageTrigger {
    BootNotification,
    DiagnosticsStatusNotification,
    FirmwareStatusNotification,
    Heartbeat,
    MeterValues,
    StatusNotification,
}

/// Phase (OCPP 1.6 §7.34): the phase (or phase pair) a sampled value applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    L1,
    L2,
    L3,
    N,
    /// Voltage between L1 and neutral.
    #[serde(rename = "L1-N")]
    L1N,
    #[serde(rename = "L2-N")]
    L2N,
    #[serde(rename = "L3-N")]
    L3N,
    /// Voltage between L1 and L2.
    #[serde(rename = "L1-L2")]
    L1L2,
    #[serde(rename = "L2-L3")]
    L2L3,
    #[serde(rename = "L3-L1")]
    L3L1,
}

/// ReadingContext (OCPP 1.6 §7.35): why a sampled value was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReadingContext {
    #[serde(rename = "Interruption.Begin")]
    InterruptionBegin,
    #[serde(rename = "Interruption.End")]
    InterruptionEnd,
    Other,
    /// Clock-aligned sample (`ClockAlignedDataInterval`).
    #[serde(rename = "Sample.Clock")]
    SampleClock,
    /// Periodic sample during a transaction (`MeterValueSampleInterval`); the default.
    #[serde(rename = "Sample.Periodic")]
    SamplePeriodic,
    #[serde(rename = "Transaction.Begin")]
    TransactionBegin,
    #[serde(rename = "Transaction.End")]
    TransactionEnd,
    /// Taken in answer to a TriggerMessage.
    Trigger,
}

/// Reason (OCPP 1.6 §7.36): why a transaction stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// The idTag was refused after the transaction started (StopTransactionOnInvalidId).
    DeAuthorized,
    EmergencyStop,
    EVDisconnected,
    HardReset,
    /// Stopped at the charger by the user; the default when absent.
    Local,
    Other,
    PowerLoss,
    Reboot,
    /// Stopped by RemoteStopTransaction.req.
    Remote,
    SoftReset,
    UnlockCommand,
}

/// RegistrationStatus (OCPP 1.6 §7.38): the central system's answer to BootNotification.req.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RegistrationStatus {
    Accepted,
    /// Not yet accepted: the charger retries after `interval` and accepts only
    /// central-system-initiated messages meanwhile.
    Pending,
    Rejected,
}

/// RemoteStartStopStatus (OCPP 1.6 §7.39).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RemoteStartStopStatus {
    Accepted,
    Rejected,
}

/// ReservationStatus (OCPP 1.6 §7.40): answer to ReserveNow.req.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReservationStatus {
    Accepted,
    Faulted,
    Occupied,
    Rejected,
    Unavailable,
}

/// ResetStatus (OCPP 1.6 §7.41).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResetStatus {
    Accepted,
    Rejected,
}

/// ResetType (OCPP 1.6 §7.42).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResetType {
    /// Restart now, without stopping transactions gracefully.
    Hard,
    /// Stop transactions gracefully, then restart.
    Soft,
}

/// TriggerMessageStatus (OCPP 1.6 §7.44); the security extension's
/// TriggerMessageStatusEnumType (ExtendedTriggerMessage.conf) has the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TriggerMessageStatus {
    Accepted,
    Rejected,
    NotImplemented,
}

/// UnitOfMeasure (OCPP 1.6 §7.45).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UnitOfMeasure {
    /// The default when absent (for energy measurands).
    Wh,
    #[serde(rename = "kWh")]
    KWh,
    #[serde(rename = "varh")]
    Varh,
    #[serde(rename = "kvarh")]
    Kvarh,
    W,
    #[serde(rename = "kW")]
    KW,
    #[serde(rename = "VA")]
    Va,
    #[serde(rename = "kVA")]
    KVa,
    #[serde(rename = "var")]
    Var,
    #[serde(rename = "kvar")]
    Kvar,
    A,
    V,
    /// Kelvin.
    K,
    /// The original 1.6 spelling; chargers built to it still send it, so it is kept
    /// apart from [`UnitOfMeasure::Celsius`] (both are in the official schema).
    Celcius,
    /// The corrected spelling (1.6 errata).
    Celsius,
    Fahrenheit,
    Percent,
    /// Frequency. Note: the official StopTransaction.json omits it from its list, only
    /// MeterValues.json has it.
    Hertz,
}

/// UnlockStatus (OCPP 1.6 §7.46).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UnlockStatus {
    Unlocked,
    UnlockFailed,
    NotSupported,
}

/// UpdateStatus (OCPP 1.6 §7.47): answer to SendLocalList.req.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UpdateStatus {
    Accepted,
    Failed,
    NotSupported,
    /// The charger's list version does not match the one a differential update builds on.
    VersionMismatch,
}

/// UpdateType (OCPP 1.6 §7.48): how SendLocalList.req changes the local list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UpdateType {
    /// Add, update or (entry without idTagInfo) remove the entries sent.
    Differential,
    /// Replace the whole list.
    Full,
}

/// ValueFormat (OCPP 1.6 §7.49): how SampledValue.value is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ValueFormat {
    /// A plain number as text; the default.
    Raw,
    /// A signed meter reading (e.g. OCMF or EDL), to be kept verbatim for billing law.
    SignedData,
}

// ---------------------------------------------------------------- composite types

/// IdTagInfo (OCPP 1.6 §7.27): the authorization status of an idTag and its validity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdTagInfo {
    /// After this moment the idTag is no longer valid (absent: valid indefinitely).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_date: Option<DateTime<Utc>>,
    /// The group the idTag belongs to (tags sharing a parent may stop each other's sessions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id_tag: Option<IdToken>,
    pub status: AuthorizationStatus,
}

impl IdTagInfo {
    /// An IdTagInfo with only a status.
    pub fn new(status: AuthorizationStatus) -> Self {
        IdTagInfo { expiry_date: None, parent_id_tag: None, status }
    }
}

/// AuthorizationData (OCPP 1.6 §7.1): one entry of a SendLocalList.req.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationData {
    pub id_tag: IdToken,
    /// Required in a full update; in a differential update its absence removes the entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_tag_info: Option<IdTagInfo>,
}

/// KeyValue (OCPP 1.6 §7.29): one configuration key in GetConfiguration.conf.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyValue {
    pub key: CiString50,
    /// Spelled `readonly` on the wire (not `readOnly`).
    pub readonly: bool,
    /// Absent when the key has no value set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<CiString500>,
}

/// MeterValue (OCPP 1.6 §7.33): sampled values taken at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeterValue {
    pub timestamp: DateTime<Utc>,
    /// At least one per the schema; an empty list is accepted on input (leniency) but
    /// is not schema-valid output.
    pub sampled_value: Vec<SampledValue>,
}

/// SampledValue (OCPP 1.6 §7.43): one measured value. Absent optional fields take the
/// spec's defaults (context `Sample.Periodic`, format `Raw`, measurand
/// `Energy.Active.Import.Register`, location `Outlet`, unit `Wh`); they are kept absent
/// here rather than filled in, so a frame round-trips unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SampledValue {
    /// The value as sent: a decimal number for `Raw`, an opaque blob for `SignedData`.
    /// Kept as a string so signed data stays byte-exact and decimals are not rounded.
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<ReadingContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ValueFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurand: Option<Measurand>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<UnitOfMeasure>,
}

impl SampledValue {
    /// A sampled value with only its value set (every other field at the spec default).
    pub fn new(value: impl Into<String>) -> Self {
        SampledValue {
            value: value.into(),
            context: None,
            format: None,
            measurand: None,
            phase: None,
            location: None,
            unit: None,
        }
    }
}
