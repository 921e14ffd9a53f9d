//! OCPP 1.6J messages, requests and responses, as typed serde types.
//!
//! Naming: for every action `X`, `XRequest` and `XResponse`, and `impl OcppRequest for
//! XRequest { const ACTION = "X"; type Response = XResponse; }`. Field names are the
//! spec's, in snake_case, renamed to camelCase on the wire; optional fields are `Option`
//! and omitted when `None`. Enums carry the exact wire spelling.

mod strings;
mod types;

pub use strings::*;
pub use types::*;

use super::OcppRequest;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------- Core profile

/// BootNotification.req (OCPP 1.6 §6.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootNotificationRequest {
    pub charge_point_vendor: CiString20,
    pub charge_point_model: CiString20,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge_point_serial_number: Option<CiString25>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge_box_serial_number: Option<CiString25>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_version: Option<CiString50>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iccid: Option<CiString20>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imsi: Option<CiString20>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_type: Option<CiString25>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_serial_number: Option<CiString25>,
}

/// BootNotification.conf (OCPP 1.6 §6.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootNotificationResponse {
    pub status: RegistrationStatus,
    pub current_time: DateTime<Utc>,
    pub interval: i64,
}

impl OcppRequest for BootNotificationRequest {
    const ACTION: &'static str = "BootNotification";
    type Response = BootNotificationResponse;
}

/// Heartbeat.req (OCPP 1.6 §6.30).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HeartbeatRequest {}

/// Heartbeat.conf (OCPP 1.6 §6.31).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatResponse {
    pub current_time: DateTime<Utc>,
}

impl OcppRequest for HeartbeatRequest {
    const ACTION: &'static str = "Heartbeat";
    type Response = HeartbeatResponse;
}
