//! Core profile messages (OCPP 1.6 §4 charge-point-initiated, §5 central-system-initiated,
//! fields in §6).

use super::charging_profile::ChargingProfile;
use super::strings::{CiString20, CiString25, CiString50, CiString255, CiString500, IdToken};
use super::types::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------- Authorize

/// Authorize.req (OCPP 1.6 §6.1): may this idTag charge?
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizeRequest {
    pub id_tag: IdToken,
}

/// Authorize.conf (OCPP 1.6 §6.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizeResponse {
    pub id_tag_info: IdTagInfo,
}

ocpp_action!("Authorize", AuthorizeRequest, AuthorizeResponse);

// ---------------------------------------------------------------- BootNotification

/// BootNotification.req (OCPP 1.6 §6.3): the charger introduces itself after (re)boot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootNotificationRequest {
    pub charge_point_vendor: CiString20,
    pub charge_point_model: CiString20,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge_point_serial_number: Option<CiString25>,
    /// Deprecated in 1.6 in favour of `chargePointSerialNumber`, still sent by many chargers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge_box_serial_number: Option<CiString25>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_version: Option<CiString50>,
    /// SIM card ICCID of the modem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iccid: Option<CiString20>,
    /// SIM card IMSI of the modem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imsi: Option<CiString20>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_type: Option<CiString25>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_serial_number: Option<CiString25>,
}

/// BootNotification.conf (OCPP 1.6 §6.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootNotificationResponse {
    pub status: RegistrationStatus,
    /// The central system's clock, for the charger to synchronise to.
    pub current_time: DateTime<Utc>,
    /// Seconds: the heartbeat interval when accepted, the retry delay otherwise.
    pub interval: i64,
}

ocpp_action!("BootNotification", BootNotificationRequest, BootNotificationResponse);

// ---------------------------------------------------------------- ChangeAvailability

/// ChangeAvailability.req (OCPP 1.6 §6.7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeAvailabilityRequest {
    /// 0 means the whole charge point.
    pub connector_id: u32,
    pub r#type: AvailabilityType,
}

/// ChangeAvailability.conf (OCPP 1.6 §6.8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeAvailabilityResponse {
    pub status: AvailabilityStatus,
}

ocpp_action!("ChangeAvailability", ChangeAvailabilityRequest, ChangeAvailabilityResponse);

// ---------------------------------------------------------------- ChangeConfiguration

/// ChangeConfiguration.req (OCPP 1.6 §6.9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeConfigurationRequest {
    pub key: CiString50,
    pub value: CiString500,
}

/// ChangeConfiguration.conf (OCPP 1.6 §6.10).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeConfigurationResponse {
    pub status: ConfigurationStatus,
}

ocpp_action!("ChangeConfiguration", ChangeConfigurationRequest, ChangeConfigurationResponse);

// ---------------------------------------------------------------- ClearCache

/// ClearCache.req (OCPP 1.6 §6.11): empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ClearCacheRequest {}

/// ClearCache.conf (OCPP 1.6 §6.12).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClearCacheResponse {
    pub status: ClearCacheStatus,
}

ocpp_action!("ClearCache", ClearCacheRequest, ClearCacheResponse);

// ---------------------------------------------------------------- DataTransfer

/// DataTransfer.req (OCPP 1.6 §6.15): vendor-specific data, in either direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataTransferRequest {
    pub vendor_id: CiString255,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<CiString50>,
    /// Free text (often JSON encoded as a string); the schema says string, no length limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// DataTransfer.conf (OCPP 1.6 §6.16).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataTransferResponse {
    pub status: DataTransferStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

ocpp_action!("DataTransfer", DataTransferRequest, DataTransferResponse);

// ---------------------------------------------------------------- GetConfiguration

/// GetConfiguration.req (OCPP 1.6 §6.23).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct GetConfigurationRequest {
    /// The keys wanted; absent (or empty) means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Vec<CiString50>>,
}

/// GetConfiguration.conf (OCPP 1.6 §6.24).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct GetConfigurationResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration_key: Option<Vec<KeyValue>>,
    /// Requested keys the charger does not know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_key: Option<Vec<CiString50>>,
}

ocpp_action!("GetConfiguration", GetConfigurationRequest, GetConfigurationResponse);

// ---------------------------------------------------------------- Heartbeat

/// Heartbeat.req (OCPP 1.6 §6.29): empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HeartbeatRequest {}

/// Heartbeat.conf (OCPP 1.6 §6.30).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatResponse {
    pub current_time: DateTime<Utc>,
}

ocpp_action!("Heartbeat", HeartbeatRequest, HeartbeatResponse);

// ---------------------------------------------------------------- MeterValues

/// MeterValues.req (OCPP 1.6 §6.31).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeterValuesRequest {
    /// 0 means the charge point's main meter.
    pub connector_id: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<i32>,
    /// Singular on the wire, though a list (at least one per the schema).
    pub meter_value: Vec<MeterValue>,
}

/// MeterValues.conf (OCPP 1.6 §6.32): empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MeterValuesResponse {}

ocpp_action!("MeterValues", MeterValuesRequest, MeterValuesResponse);

// ---------------------------------------------------------------- RemoteStartTransaction

/// RemoteStartTransaction.req (OCPP 1.6 §6.33).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteStartTransactionRequest {
    /// Absent: the charger picks a connector. Never 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector_id: Option<u32>,
    pub id_tag: IdToken,
    /// Must have purpose `TxProfile` (and no transactionId: none exists yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charging_profile: Option<ChargingProfile>,
}

/// RemoteStartTransaction.conf (OCPP 1.6 §6.34).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteStartTransactionResponse {
    pub status: RemoteStartStopStatus,
}

ocpp_action!("RemoteStartTransaction", RemoteStartTransactionRequest, RemoteStartTransactionResponse);

// ---------------------------------------------------------------- RemoteStopTransaction

/// RemoteStopTransaction.req (OCPP 1.6 §6.35).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteStopTransactionRequest {
    pub transaction_id: i32,
}

/// RemoteStopTransaction.conf (OCPP 1.6 §6.36).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteStopTransactionResponse {
    pub status: RemoteStartStopStatus,
}

ocpp_action!("RemoteStopTransaction", RemoteStopTransactionRequest, RemoteStopTransactionResponse);

// ---------------------------------------------------------------- Reset

/// Reset.req (OCPP 1.6 §6.39).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResetRequest {
    pub r#type: ResetType,
}

/// Reset.conf (OCPP 1.6 §6.40).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResetResponse {
    pub status: ResetStatus,
}

ocpp_action!("Reset", ResetRequest, ResetResponse);

// ---------------------------------------------------------------- StartTransaction

/// StartTransaction.req (OCPP 1.6 §6.45).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartTransactionRequest {
    pub connector_id: u32,
    pub id_tag: IdToken,
    /// Meter register at the start, in Wh.
    pub meter_start: i64,
    /// The reservation this transaction ends, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<i32>,
    pub timestamp: DateTime<Utc>,
}

/// StartTransaction.conf (OCPP 1.6 §6.46).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartTransactionResponse {
    pub id_tag_info: IdTagInfo,
    /// Assigned by the central system; the charger uses it in every later message.
    pub transaction_id: i32,
}

ocpp_action!("StartTransaction", StartTransactionRequest, StartTransactionResponse);

// ---------------------------------------------------------------- StatusNotification

/// StatusNotification.req (OCPP 1.6 §6.47).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusNotificationRequest {
    /// 0 means the charge point's main controller.
    pub connector_id: u32,
    pub error_code: ChargePointErrorCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<CiString50>,
    pub status: ChargePointStatus,
    /// When the status changed (absent: on receipt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_id: Option<CiString255>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_error_code: Option<CiString50>,
}

/// StatusNotification.conf (OCPP 1.6 §6.48): empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StatusNotificationResponse {}

ocpp_action!("StatusNotification", StatusNotificationRequest, StatusNotificationResponse);

// ---------------------------------------------------------------- StopTransaction

/// StopTransaction.req (OCPP 1.6 §6.49).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopTransactionRequest {
    /// The idTag that stopped the transaction, when it was stopped by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_tag: Option<IdToken>,
    /// Meter register at the stop, in Wh.
    pub meter_stop: i64,
    pub timestamp: DateTime<Utc>,
    pub transaction_id: i32,
    /// Absent means `Local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// Meter values sampled during the transaction (`StopTxnSampledData`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_data: Option<Vec<MeterValue>>,
}

/// StopTransaction.conf (OCPP 1.6 §6.50).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct StopTransactionResponse {
    /// Present only when the request carried an idTag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_tag_info: Option<IdTagInfo>,
}

ocpp_action!("StopTransaction", StopTransactionRequest, StopTransactionResponse);

// ---------------------------------------------------------------- UnlockConnector

/// UnlockConnector.req (OCPP 1.6 §6.53).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnlockConnectorRequest {
    pub connector_id: u32,
}

/// UnlockConnector.conf (OCPP 1.6 §6.54).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnlockConnectorResponse {
    pub status: UnlockStatus,
}

ocpp_action!("UnlockConnector", UnlockConnectorRequest, UnlockConnectorResponse);
