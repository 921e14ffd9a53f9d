//! Messages of the OCPP 1.6 security whitepaper ("Improved security for OCPP 1.6-J",
//! edition 3): certificate management, security events, log upload, signed firmware.
//! They travel as ordinary 1.6J CALLs under the `ocpp1.6` subprotocol; a charger that
//! does not implement the whitepaper answers them with `NotImplemented`.

use super::security_types::*;
use super::strings::{CiString50, CiString255, String5500, String10000};
use super::types::TriggerMessageStatus;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------- CertificateSigned

/// CertificateSigned.req (security whitepaper): the signed client certificate chain
/// answering an earlier SignCertificate.req.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSignedRequest {
    /// PEM chain, leaf first.
    pub certificate_chain: String10000,
}

/// CertificateSigned.conf (security whitepaper).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSignedResponse {
    pub status: CertificateSignedStatus,
}

ocpp_action!("CertificateSigned", CertificateSignedRequest, CertificateSignedResponse);

// ---------------------------------------------------------------- DeleteCertificate

/// DeleteCertificate.req (security whitepaper).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteCertificateRequest {
    pub certificate_hash_data: CertificateHashData,
}

/// DeleteCertificate.conf (security whitepaper).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteCertificateResponse {
    pub status: DeleteCertificateStatus,
}

ocpp_action!("DeleteCertificate", DeleteCertificateRequest, DeleteCertificateResponse);

// ---------------------------------------------------------------- ExtendedTriggerMessage

/// ExtendedTriggerMessage.req (security whitepaper): TriggerMessage with the
/// whitepaper's messages added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtendedTriggerMessageRequest {
    pub requested_message: ExtendedMessageTrigger,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector_id: Option<u32>,
}

/// ExtendedTriggerMessage.conf (security whitepaper).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtendedTriggerMessageResponse {
    pub status: TriggerMessageStatus,
}

ocpp_action!("ExtendedTriggerMessage", ExtendedTriggerMessageRequest, ExtendedTriggerMessageResponse);

// ---------------------------------------------------------------- GetInstalledCertificateIds

/// GetInstalledCertificateIds.req (security whitepaper).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetInstalledCertificateIdsRequest {
    pub certificate_type: CertificateUse,
}

/// GetInstalledCertificateIds.conf (security whitepaper).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetInstalledCertificateIdsResponse {
    /// At least one entry when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_hash_data: Option<Vec<CertificateHashData>>,
    pub status: GetInstalledCertificateStatus,
}

ocpp_action!("GetInstalledCertificateIds", GetInstalledCertificateIdsRequest, GetInstalledCertificateIdsResponse);

// ---------------------------------------------------------------- GetLog

/// GetLog.req (security whitepaper): upload a diagnostics or security log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetLogRequest {
    pub log: LogParameters,
    pub log_type: LogType,
    /// Echoed in the LogStatusNotification.req messages about this upload.
    pub request_id: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Seconds between attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<i64>,
}

/// GetLog.conf (security whitepaper).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetLogResponse {
    pub status: LogStatus,
    /// Spelled `filename` on the wire (GetDiagnostics.conf says `fileName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<CiString255>,
}

ocpp_action!("GetLog", GetLogRequest, GetLogResponse);

// ---------------------------------------------------------------- InstallCertificate

/// InstallCertificate.req (security whitepaper): add a root certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallCertificateRequest {
    pub certificate_type: CertificateUse,
    /// PEM.
    pub certificate: String5500,
}

/// InstallCertificate.conf (security whitepaper).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallCertificateResponse {
    pub status: InstallCertificateStatus,
}

ocpp_action!("InstallCertificate", InstallCertificateRequest, InstallCertificateResponse);

// ---------------------------------------------------------------- LogStatusNotification

/// LogStatusNotification.req (security whitepaper): progress of a GetLog upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogStatusNotificationRequest {
    pub status: UploadLogStatus,
    /// The GetLog.req's requestId (absent when the status is `Idle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<i32>,
}

/// LogStatusNotification.conf (security whitepaper): empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LogStatusNotificationResponse {}

ocpp_action!("LogStatusNotification", LogStatusNotificationRequest, LogStatusNotificationResponse);

// ---------------------------------------------------------------- SecurityEventNotification

/// SecurityEventNotification.req (security whitepaper): a critical security event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityEventNotificationRequest {
    /// The event, e.g. `FirmwareUpdated`, `ResetOrReboot` (whitepaper
    /// appendix); a free string on the wire so vendors can add their own.
    pub r#type: CiString50,
    pub timestamp: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tech_info: Option<CiString255>,
}

/// SecurityEventNotification.conf (security whitepaper): empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SecurityEventNotificationResponse {}

ocpp_action!("SecurityEventNotification", SecurityEventNotificationRequest, SecurityEventNotificationResponse);

// ---------------------------------------------------------------- SignCertificate

/// SignCertificate.req (security whitepaper): the charger asks for its client certificate
/// to be signed (security profile 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignCertificateRequest {
    /// PEM PKCS#10 certificate signing request.
    pub csr: String5500,
}

/// SignCertificate.conf (security whitepaper).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignCertificateResponse {
    pub status: GenericStatus,
}

ocpp_action!("SignCertificate", SignCertificateRequest, SignCertificateResponse);

// ---------------------------------------------------------------- SignedFirmwareStatusNotification

/// SignedFirmwareStatusNotification.req (security whitepaper): progress of a
/// SignedUpdateFirmware.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedFirmwareStatusNotificationRequest {
    pub status: SignedFirmwareStatus,
    /// The SignedUpdateFirmware.req's requestId (absent when the status is `Idle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<i32>,
}

/// SignedFirmwareStatusNotification.conf (security whitepaper): empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SignedFirmwareStatusNotificationResponse {}

ocpp_action!(
    "SignedFirmwareStatusNotification",
    SignedFirmwareStatusNotificationRequest,
    SignedFirmwareStatusNotificationResponse
);

// ---------------------------------------------------------------- SignedUpdateFirmware

/// SignedUpdateFirmware.req (security whitepaper): install a signed firmware image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedUpdateFirmwareRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Seconds between attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<i64>,
    /// Echoed in the SignedFirmwareStatusNotification.req messages about this update.
    pub request_id: i32,
    pub firmware: Firmware,
}

/// SignedUpdateFirmware.conf (security whitepaper).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedUpdateFirmwareResponse {
    pub status: UpdateFirmwareStatus,
}

ocpp_action!("SignedUpdateFirmware", SignedUpdateFirmwareRequest, SignedUpdateFirmwareResponse);
