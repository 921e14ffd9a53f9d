//! Smart Charging profile messages (OCPP 1.6 §3.13). The profile types themselves are in
//! [`super::charging_profile`].

use super::charging_profile::{
    ChargingProfile, ChargingProfilePurposeType, ChargingProfileStatus, ChargingRateUnitType, ChargingSchedule,
    ClearChargingProfileStatus, GetCompositeScheduleStatus,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------- ClearChargingProfile

/// ClearChargingProfile.req (OCPP 1.6 §6.13). Either one profile by `id`, or every profile
/// matching all criteria given; with no field set, every profile is cleared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClearChargingProfileRequest {
    /// A chargingProfileId; when set, the other criteria are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charging_profile_purpose: Option<ChargingProfilePurposeType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_level: Option<u32>,
}

/// ClearChargingProfile.conf (OCPP 1.6 §6.14).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClearChargingProfileResponse {
    pub status: ClearChargingProfileStatus,
}

ocpp_action!("ClearChargingProfile", ClearChargingProfileRequest, ClearChargingProfileResponse);

// ---------------------------------------------------------------- GetCompositeSchedule

/// GetCompositeSchedule.req (OCPP 1.6 §6.21).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetCompositeScheduleRequest {
    /// 0 asks for the whole charge point's expected consumption.
    pub connector_id: u32,
    /// Seconds from now.
    pub duration: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charging_rate_unit: Option<ChargingRateUnitType>,
}

/// GetCompositeSchedule.conf (OCPP 1.6 §6.22).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetCompositeScheduleResponse {
    pub status: GetCompositeScheduleStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_start: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charging_schedule: Option<ChargingSchedule>,
}

ocpp_action!("GetCompositeSchedule", GetCompositeScheduleRequest, GetCompositeScheduleResponse);

// ---------------------------------------------------------------- SetChargingProfile

/// SetChargingProfile.req (OCPP 1.6 §6.43).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetChargingProfileRequest {
    /// 0 applies the profile to the whole charge point.
    pub connector_id: u32,
    /// One profile, despite the plural wire name.
    pub cs_charging_profiles: ChargingProfile,
}

/// SetChargingProfile.conf (OCPP 1.6 §6.44).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetChargingProfileResponse {
    pub status: ChargingProfileStatus,
}

ocpp_action!("SetChargingProfile", SetChargingProfileRequest, SetChargingProfileResponse);
