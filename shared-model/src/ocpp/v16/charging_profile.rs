//! Smart Charging types (OCPP 1.6 §3.13, §7.8–7.14): charging profiles, their schedules
//! and the enums that qualify them.
//!
//! Limits (`limit`, `minChargingRate`) are decimals in A or W; the schema requires a
//! multiple of 0.1, which these types do not enforce (round before sending).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// ChargingProfileKindType (OCPP 1.6 §7.9): how a schedule's start is anchored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChargingProfileKindType {
    /// Periods are relative to `startSchedule`.
    Absolute,
    /// Repeats daily or weekly from `startSchedule`.
    Recurring,
    /// Periods are relative to the start of the transaction (no `startSchedule`).
    Relative,
}

/// ChargingProfilePurposeType (OCPP 1.6 §7.10): which stack a profile belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChargingProfilePurposeType {
    /// Limits the whole charge point (connectorId 0); what the site balancer uses.
    ChargePointMaxProfile,
    /// Default for new transactions on a connector (or all, with connectorId 0).
    TxDefaultProfile,
    /// Applies to one running transaction only.
    TxProfile,
}

/// ChargingProfileStatus (OCPP 1.6 §7.11): answer to SetChargingProfile.req.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChargingProfileStatus {
    Accepted,
    Rejected,
    NotSupported,
}

/// ChargingRateUnitType (OCPP 1.6 §7.12): the unit of a schedule's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChargingRateUnitType {
    /// Amperes per phase.
    A,
    /// Watts, total over the phases used.
    W,
}

/// ClearChargingProfileStatus (OCPP 1.6 §7.21).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ClearChargingProfileStatus {
    Accepted,
    /// No profile matched the criteria.
    Unknown,
}

/// GetCompositeScheduleStatus (OCPP 1.6 §7.26).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GetCompositeScheduleStatus {
    Accepted,
    Rejected,
}

/// RecurrencyKindType (OCPP 1.6 §7.37).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RecurrencyKindType {
    Daily,
    Weekly,
}

/// ChargingProfile (OCPP 1.6 §7.8). Sent as `csChargingProfiles` in SetChargingProfile.req
/// and as `chargingProfile` in RemoteStartTransaction.req.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChargingProfile {
    pub charging_profile_id: i32,
    /// Only with purpose `TxProfile`: the transaction the profile applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<i32>,
    /// Precedence within the purpose's stack; higher wins, lowest is 0.
    pub stack_level: u32,
    pub charging_profile_purpose: ChargingProfilePurposeType,
    pub charging_profile_kind: ChargingProfileKindType,
    /// Only with kind `Recurring`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrency_kind: Option<RecurrencyKindType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<DateTime<Utc>>,
    pub charging_schedule: ChargingSchedule,
}

/// ChargingSchedule (OCPP 1.6 §7.13).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChargingSchedule {
    /// Seconds; absent means the last period lasts until the profile ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<i64>,
    /// Absent for `Relative` profiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_schedule: Option<DateTime<Utc>>,
    pub charging_rate_unit: ChargingRateUnitType,
    /// Ordered by `startPeriod`, the first starting at 0.
    pub charging_schedule_period: Vec<ChargingSchedulePeriod>,
    /// Lowest rate the EV charges at efficiently (an optimisation hint), in the rate unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_charging_rate: Option<f64>,
}

/// ChargingSchedulePeriod (OCPP 1.6 §7.14).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChargingSchedulePeriod {
    /// Seconds from the start of the schedule.
    pub start_period: i64,
    /// Limit in the schedule's rate unit.
    pub limit: f64,
    /// Phases allowed (1–3); absent means 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_phases: Option<u32>,
}
