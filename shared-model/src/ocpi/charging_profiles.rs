//! The charging profiles module (OCPI 2.2.1 "Charging Profiles module"): a Smart
//! Charging Service Provider (or eMSP) sets, reads and clears a cap on one session at
//! the CPO's Receiver (`PUT` / `GET` / `DELETE chargingprofiles/{session_id}`); the CPO
//! answers at once with a [`ChargingProfileResponse`] and POSTs the result later to the
//! `response_url`.

use serde::{Deserialize, Serialize};

/// `ChargingRateUnit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChargingRateUnit {
    /// Total power; per phase current = W / (230 V x phases).
    W,
    /// Current per phase.
    A,
}

/// `ChargingProfilePeriod`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChargingProfilePeriod {
    /// Seconds from the start of the profile.
    pub start_period: i64,
    pub limit: f64,
}

/// `ChargingProfile`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChargingProfile {
    /// Absent: relative to the start of charging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date_time: Option<String>,
    /// Seconds; absent: the last period lasts until the session ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<i64>,
    pub charging_rate_unit: ChargingRateUnit,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_charging_rate: Option<f64>,
    #[serde(default)]
    pub charging_profile_period: Vec<ChargingProfilePeriod>,
}

/// `SetChargingProfile`: the body of a PUT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetChargingProfile {
    pub charging_profile: ChargingProfile,
    pub response_url: String,
}

/// `ChargingProfileResponseType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChargingProfileResponseType {
    Accepted,
    NotSupported,
    Rejected,
    TooOften,
    UnknownSession,
}

/// `ChargingProfileResponse`: the data of the synchronous answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargingProfileResponse {
    pub result: ChargingProfileResponseType,
    /// Seconds within which the result is POSTed.
    pub timeout: u32,
}

/// `ChargingProfileResultType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChargingProfileResultType {
    Accepted,
    Rejected,
    /// No charging profile matched (a DELETE of a profile that is not there).
    Unknown,
}

/// `ActiveChargingProfile`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveChargingProfile {
    pub start_date_time: String,
    pub charging_profile: ChargingProfile,
}

/// `ActiveChargingProfileResult`: POSTed after a GET.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveChargingProfileResult {
    pub result: ChargingProfileResultType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<ActiveChargingProfile>,
}

/// `ChargingProfileResult` (after a PUT) and `ClearProfileResult` (after a DELETE) have
/// the same shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargingProfileResult {
    pub result: ChargingProfileResultType,
}

impl ChargingProfile {
    /// What the types do not check: periods ascending from 0 or more, limits finite and
    /// not negative, durations not negative, a valid start time.
    pub fn check(&self) -> Result<(), String> {
        if let Some(start) = &self.start_date_time {
            super::commands::check_time("charging_profile.start_date_time", start)?;
        }
        if self.duration.is_some_and(|d| d < 0) {
            return Err("charging_profile.duration must not be negative".into());
        }
        if self.min_charging_rate.is_some_and(|r| !r.is_finite() || r < 0.0) {
            return Err("charging_profile.min_charging_rate must be a number of 0 or more".into());
        }
        if self.charging_profile_period.is_empty() {
            return Err("charging_profile.charging_profile_period must hold at least one period".into());
        }
        let mut previous: Option<i64> = None;
        for (i, p) in self.charging_profile_period.iter().enumerate() {
            if p.start_period < 0 || p.start_period > i64::from(u32::MAX) {
                return Err(format!("charging_profile_period[{i}].start_period must be 0 or more seconds"));
            }
            if previous.is_some_and(|prev| p.start_period <= prev) {
                return Err(format!("charging_profile_period[{i}].start_period must be after the previous period's"));
            }
            if !p.limit.is_finite() || p.limit < 0.0 {
                return Err(format!("charging_profile_period[{i}].limit must be a number of 0 or more"));
            }
            previous = Some(p.start_period);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn profiles_parse_and_check() {
        let body = json!({"response_url": "https://scsp.example/r/1", "charging_profile": {
            "charging_rate_unit": "W", "charging_profile_period": [
                {"start_period": 0, "limit": 11000}, {"start_period": 900, "limit": 3700.5}]}});
        let set: SetChargingProfile = serde_json::from_value(body).expect("parses");
        assert_eq!(set.charging_profile.check(), Ok(()));
        let mut bad = set.charging_profile.clone();
        bad.charging_profile_period[1].start_period = 0;
        assert!(bad.check().expect_err("not ascending").contains("[1].start_period"));
        bad.charging_profile_period[1] = ChargingProfilePeriod { start_period: 10, limit: -1.0 };
        assert!(bad.check().expect_err("negative").contains("limit"));
        bad.charging_profile_period.clear();
        assert!(bad.check().is_err());
        let r = ActiveChargingProfileResult { result: ChargingProfileResultType::Unknown, profile: None };
        assert_eq!(serde_json::to_value(r).expect("json"), json!({"result": "UNKNOWN"}));
    }
}
