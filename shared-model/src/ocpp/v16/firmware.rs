//! Firmware Management profile messages (OCPP 1.6 §3.9): firmware updates and diagnostics
//! uploads. The signed variants of the security whitepaper are in [`super::security`].

use super::strings::CiString255;
use super::types::{DiagnosticsStatus, FirmwareStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------- DiagnosticsStatusNotification

/// DiagnosticsStatusNotification.req (OCPP 1.6 §6.17).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiagnosticsStatusNotificationRequest {
    pub status: DiagnosticsStatus,
}

/// DiagnosticsStatusNotification.conf (OCPP 1.6 §6.18): empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DiagnosticsStatusNotificationResponse {}

ocpp_action!(
    "DiagnosticsStatusNotification",
    DiagnosticsStatusNotificationRequest,
    DiagnosticsStatusNotificationResponse
);

// ---------------------------------------------------------------- FirmwareStatusNotification

/// FirmwareStatusNotification.req (OCPP 1.6 §6.19).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FirmwareStatusNotificationRequest {
    pub status: FirmwareStatus,
}

/// FirmwareStatusNotification.conf (OCPP 1.6 §6.20): empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FirmwareStatusNotificationResponse {}

ocpp_action!("FirmwareStatusNotification", FirmwareStatusNotificationRequest, FirmwareStatusNotificationResponse);

// ---------------------------------------------------------------- GetDiagnostics

/// GetDiagnostics.req (OCPP 1.6 §6.25): upload a diagnostics file to `location`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetDiagnosticsRequest {
    /// Upload URI (e.g. `ftp://...`); the spec gives no length limit.
    pub location: String,
    /// Upload attempts after the first; absent: the charger decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Seconds between attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_time: Option<DateTime<Utc>>,
}

/// GetDiagnostics.conf (OCPP 1.6 §6.26).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct GetDiagnosticsResponse {
    /// The file that will be uploaded; absent when there is nothing to upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<CiString255>,
}

ocpp_action!("GetDiagnostics", GetDiagnosticsRequest, GetDiagnosticsResponse);

// ---------------------------------------------------------------- UpdateFirmware

/// UpdateFirmware.req (OCPP 1.6 §6.55).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateFirmwareRequest {
    /// Download URI of the firmware image.
    pub location: String,
    /// Download attempts after the first; absent: the charger decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Download from this moment on.
    pub retrieve_date: DateTime<Utc>,
    /// Seconds between attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<i64>,
}

/// UpdateFirmware.conf (OCPP 1.6 §6.56): empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct UpdateFirmwareResponse {}

ocpp_action!("UpdateFirmware", UpdateFirmwareRequest, UpdateFirmwareResponse);
