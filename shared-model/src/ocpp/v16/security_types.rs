//! Types of the OCPP 1.6 security whitepaper ("Improved security for OCPP 1.6-J",
//! edition 3): certificate management, secure firmware update, log retrieval.
//!
//! The whitepaper borrows these from OCPP 2.0.1, hence the `...EnumType` names in its
//! schemas; here they drop the suffix. Where a name would clash with a core-spec type
//! the prefix says which message it belongs to (e.g. [`SignedFirmwareStatus`]).

use super::strings::{String40, String128, String512, String800, String5500};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// CertificateSignedStatusEnumType: answer to CertificateSigned.req.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CertificateSignedStatus {
    Accepted,
    /// The certificate chain is invalid (the charger logs a security event).
    Rejected,
}

/// CertificateUseEnumType: which root certificate store is meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CertificateUse {
    /// Roots the charger uses to verify the central system's TLS certificate.
    CentralSystemRootCertificate,
    /// Roots the charger uses to verify firmware signatures.
    ManufacturerRootCertificate,
}

/// DeleteCertificateStatusEnumType.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeleteCertificateStatus {
    Accepted,
    Failed,
    NotFound,
}

/// GenericStatusEnumType: answer to SignCertificate.req.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GenericStatus {
    Accepted,
    Rejected,
}

/// GetInstalledCertificateStatusEnumType.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GetInstalledCertificateStatus {
    Accepted,
    NotFound,
}

/// HashAlgorithmEnumType: the hash used in [`CertificateHashData`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HashAlgorithm {
    #[serde(rename = "SHA256")]
    Sha256,
    #[serde(rename = "SHA384")]
    Sha384,
    #[serde(rename = "SHA512")]
    Sha512,
}

/// InstallCertificateStatusEnumType.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstallCertificateStatus {
    Accepted,
    Failed,
    Rejected,
}

/// LogEnumType: which log GetLog.req asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LogType {
    DiagnosticsLog,
    SecurityLog,
}

/// LogStatusEnumType: answer to GetLog.req.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LogStatus {
    Accepted,
    Rejected,
    /// Accepted, and an upload already running was cancelled for it.
    AcceptedCanceled,
}

/// MessageTriggerEnumType: the message ExtendedTriggerMessage.req asks for. Unlike the
/// core [`super::MessageTrigger`] it can ask for a new client certificate
/// (`SignChargePointCertificate`) and for `LogStatusNotification`, and has no
/// `DiagnosticsStatusNotification`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExtendedMessageTrigger {
    BootNotification,
    LogStatusNotification,
    FirmwareStatusNotification,
    Heartbeat,
    MeterValues,
    SignChargePointCertificate,
    StatusNotification,
}

/// FirmwareStatusEnumType of SignedFirmwareStatusNotification.req: the core
/// [`super::FirmwareStatus`] plus scheduling and signature-check states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SignedFirmwareStatus {
    Downloaded,
    DownloadFailed,
    Downloading,
    DownloadScheduled,
    DownloadPaused,
    Idle,
    InstallationFailed,
    Installing,
    Installed,
    InstallRebooting,
    InstallScheduled,
    InstallVerificationFailed,
    InvalidSignature,
    SignatureVerified,
}

/// UpdateFirmwareStatusEnumType: answer to SignedUpdateFirmware.req.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UpdateFirmwareStatus {
    Accepted,
    Rejected,
    /// Accepted, and a firmware update already running was cancelled for it.
    AcceptedCanceled,
    InvalidCertificate,
    RevokedCertificate,
}

/// UploadLogStatusEnumType: progress of a GetLog upload (LogStatusNotification.req).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UploadLogStatus {
    BadMessage,
    /// Not uploading; only sent in answer to a trigger.
    Idle,
    NotSupportedOperation,
    PermissionDenied,
    Uploaded,
    UploadFailure,
    Uploading,
}

/// CertificateHashDataType: identifies one installed certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateHashData {
    pub hash_algorithm: HashAlgorithm,
    /// Hex hash of the issuer's distinguished name.
    pub issuer_name_hash: String128,
    /// Hex hash of the issuer's public key.
    pub issuer_key_hash: String128,
    /// The certificate's serial number, hex.
    pub serial_number: String40,
}

/// LogParametersType: where and what to upload for GetLog.req.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogParameters {
    /// Upload URL.
    pub remote_location: String512,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_timestamp: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_timestamp: Option<DateTime<Utc>>,
}

/// FirmwareType: the signed firmware image SignedUpdateFirmware.req points at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Firmware {
    /// Download URL.
    pub location: String512,
    /// Download from this moment on.
    pub retrieve_date_time: DateTime<Utc>,
    /// Install at this moment (absent: as soon as downloaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_date_time: Option<DateTime<Utc>>,
    /// PEM certificate whose key signed the firmware.
    pub signing_certificate: String5500,
    /// Base64 signature of the firmware image.
    pub signature: String800,
}
