//! Local Auth List Management profile messages (OCPP 1.6 §3.5.3): the list of idTags a
//! charger may authorize on its own, e.g. while offline.

use super::types::{AuthorizationData, UpdateStatus, UpdateType};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------- GetLocalListVersion

/// GetLocalListVersion.req (OCPP 1.6 §6.27): empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct GetLocalListVersionRequest {}

/// GetLocalListVersion.conf (OCPP 1.6 §6.28).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetLocalListVersionResponse {
    /// 0: the list is empty; -1: local lists are not supported.
    pub list_version: i32,
}

ocpp_action!("GetLocalListVersion", GetLocalListVersionRequest, GetLocalListVersionResponse);

// ---------------------------------------------------------------- SendLocalList

/// SendLocalList.req (OCPP 1.6 §6.41).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendLocalListRequest {
    /// The version the list has after this update.
    pub list_version: i32,
    /// Absent or empty with a `Full` update: clear the list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_authorization_list: Option<Vec<AuthorizationData>>,
    pub update_type: UpdateType,
}

/// SendLocalList.conf (OCPP 1.6 §6.42).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendLocalListResponse {
    pub status: UpdateStatus,
}

ocpp_action!("SendLocalList", SendLocalListRequest, SendLocalListResponse);
