//! The OCPP 1.6 messages that carry limits to a charger, per its quirks. Pure.
//!
//! The layering, so that a charger the agent no longer reaches is never capped for good
//! and never runs free:
//!
//! | profile | connector | id | stack | validity | limit |
//! |---|---|---|---|---|---|
//! | ChargePointMaxProfile | 0 | 1 | 0 | none | hard cap: the tightest circuit limit above it |
//! | TxDefaultProfile | 0 | 2 | 0 | none | the charger's safe current |
//! | TxProfile (setpoint) | c | 100 + c | 1 | `validTo` = now + validity | the balancer's setpoint |
//!
//! The TxProfile overrides the TxDefaultProfile while it is valid (OCPP 1.6 §3.13.2); the
//! loop renews it at half its validity. When the agent is gone it expires and the charger
//! falls back to its safe current, which the config checks fit every limit on their own.
//! Quirks: `tx_default_profile` sends the setpoint as a TxDefaultProfile on connector `c`
//! (a connector's own TxDefaultProfile overrides connector 0's); `stack_level_zero` puts
//! the setpoint at stack 0 (it still overrides, being a TxProfile or connector-specific);
//! `watts` converts every limit to W; `no_max_profile` skips the ChargePointMaxProfile;
//! `no_profiles` uses ChangeAvailability instead (see [`Command`]).

use crate::config::Quirk;
use chrono::{DateTime, Duration, Utc};
use shared_model::ocpp::v16::{
    AvailabilityType, ChangeAvailabilityRequest, ChargingProfile, ChargingProfileKindType, ChargingProfilePurposeType,
    ChargingRateUnitType, ChargingSchedule, ChargingSchedulePeriod, SetChargingProfileRequest,
};

/// Profile ids the loop owns.
pub const MAX_PROFILE_ID: i32 = 1;
pub const SAFE_PROFILE_ID: i32 = 2;
pub const SETPOINT_PROFILE_BASE_ID: i32 = 100;

/// What one charger is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Profile(SetChargingProfileRequest),
    Availability(ChangeAvailabilityRequest),
}

/// How limits are expressed for one charger.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Unit {
    pub watts: bool,
    pub phases: usize,
    pub voltage_v: f64,
}

impl Unit {
    fn limit(&self, amps: f64) -> (ChargingRateUnitType, f64, Option<u32>) {
        let amps = (amps.max(0.0) * 10.0).floor() / 10.0;
        if self.watts {
            let phases = self.phases.clamp(1, 3);
            let w = (amps * self.voltage_v * phases as f64).floor();
            (ChargingRateUnitType::W, w, Some(phases as u32))
        } else {
            (ChargingRateUnitType::A, amps, None)
        }
    }
}

#[allow(clippy::too_many_arguments)] // one field each of the profile
fn profile(
    id: i32,
    purpose: ChargingProfilePurposeType,
    stack_level: u32,
    transaction_id: Option<i32>,
    valid_to: Option<DateTime<Utc>>,
    unit: Unit,
    amps: f64,
    now: DateTime<Utc>,
) -> ChargingProfile {
    let (rate, limit, number_phases) = unit.limit(amps);
    ChargingProfile {
        charging_profile_id: id,
        transaction_id,
        stack_level,
        charging_profile_purpose: purpose,
        charging_profile_kind: ChargingProfileKindType::Absolute,
        recurrency_kind: None,
        valid_from: None,
        valid_to,
        charging_schedule: ChargingSchedule {
            duration: None,
            // A little in the past, so a charger whose clock is slightly behind ours applies
            // it at once (one ahead falls back to its safe profile meanwhile: the safe side).
            start_schedule: Some(now - Duration::minutes(5)),
            charging_rate_unit: rate,
            charging_schedule_period: vec![ChargingSchedulePeriod { start_period: 0, limit, number_phases }],
            min_charging_rate: None,
        },
    }
}

/// The profiles sent at every boot: the hard cap and the safe fallback (none for a charger
/// that takes no profiles).
pub fn boot_profiles(
    quirks: &[Quirk],
    unit: Unit,
    hard_cap_a: f64,
    safe_current_a: f64,
    now: DateTime<Utc>,
) -> Vec<SetChargingProfileRequest> {
    if quirks.contains(&Quirk::NoProfiles) {
        return Vec::new();
    }
    let mut out = Vec::new();
    if !quirks.contains(&Quirk::NoMaxProfile) {
        out.push(SetChargingProfileRequest {
            connector_id: 0,
            cs_charging_profiles: profile(
                MAX_PROFILE_ID,
                ChargingProfilePurposeType::ChargePointMaxProfile,
                0,
                None,
                None,
                unit,
                hard_cap_a,
                now,
            ),
        });
    }
    out.push(SetChargingProfileRequest {
        connector_id: 0,
        cs_charging_profiles: profile(
            SAFE_PROFILE_ID,
            ChargingProfilePurposeType::TxDefaultProfile,
            0,
            None,
            None,
            unit,
            safe_current_a,
            now,
        ),
    });
    out
}

/// The command carrying one setpoint (`amps`, 0 = paused) to connector `connector` during
/// transaction `transaction_id`, valid until `valid_to`.
pub fn setpoint(
    quirks: &[Quirk],
    unit: Unit,
    connector: u32,
    transaction_id: Option<i32>,
    amps: f64,
    valid_to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Command {
    if quirks.contains(&Quirk::NoProfiles) {
        let r#type = if amps > 0.0 { AvailabilityType::Operative } else { AvailabilityType::Inoperative };
        return Command::Availability(ChangeAvailabilityRequest { connector_id: connector, r#type });
    }
    let stack = if quirks.contains(&Quirk::StackLevelZero) { 0 } else { 1 };
    let id = SETPOINT_PROFILE_BASE_ID + i32::try_from(connector).unwrap_or(0);
    let (purpose, tx) = if quirks.contains(&Quirk::TxDefaultProfile) || transaction_id.is_none() {
        (ChargingProfilePurposeType::TxDefaultProfile, None)
    } else {
        (ChargingProfilePurposeType::TxProfile, transaction_id)
    };
    Command::Profile(SetChargingProfileRequest {
        connector_id: connector,
        cs_charging_profiles: profile(id, purpose, stack, tx, Some(valid_to), unit, amps, now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AMPS: Unit = Unit { watts: false, phases: 3, voltage_v: 230.0 };

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z").map(|t| t.with_timezone(&Utc)).unwrap_or_default()
    }

    #[test]
    fn boot_sends_a_hard_cap_and_a_safe_fallback_that_does_not_expire() {
        let p = boot_profiles(&[], AMPS, 40.0, 6.0, now());
        assert_eq!(p.len(), 2);
        let max = &p[0].cs_charging_profiles;
        assert_eq!(max.charging_profile_purpose, ChargingProfilePurposeType::ChargePointMaxProfile);
        assert_eq!(max.charging_schedule.charging_schedule_period[0].limit, 40.0);
        let safe = &p[1].cs_charging_profiles;
        assert_eq!(safe.charging_profile_purpose, ChargingProfilePurposeType::TxDefaultProfile);
        assert_eq!((p[1].connector_id, safe.stack_level, safe.valid_to), (0, 0, None));
        assert_eq!(safe.charging_schedule.charging_schedule_period[0].limit, 6.0);
        assert_eq!(boot_profiles(&[Quirk::NoMaxProfile], AMPS, 40.0, 6.0, now()).len(), 1);
        assert!(boot_profiles(&[Quirk::NoProfiles], AMPS, 40.0, 6.0, now()).is_empty());
    }

    #[test]
    fn a_setpoint_is_an_expiring_tx_profile_above_the_safe_one() {
        let until = now() + Duration::seconds(120);
        let Command::Profile(r) = setpoint(&[], AMPS, 2, Some(7), 13.37, until, now()) else {
            panic!("expected a profile")
        };
        let p = &r.cs_charging_profiles;
        assert_eq!(r.connector_id, 2);
        assert_eq!(p.charging_profile_purpose, ChargingProfilePurposeType::TxProfile);
        assert_eq!((p.transaction_id, p.stack_level, p.valid_to), (Some(7), 1, Some(until)));
        assert_eq!(p.charging_profile_id, 102);
        assert_eq!(p.charging_schedule.charging_schedule_period[0].limit, 13.3);
        assert_eq!(p.charging_schedule.charging_rate_unit, ChargingRateUnitType::A);
    }

    #[test]
    fn quirks_change_purpose_stack_unit_and_message() {
        let until = now() + Duration::seconds(120);
        let q = [Quirk::TxDefaultProfile, Quirk::StackLevelZero];
        let Command::Profile(r) = setpoint(&q, AMPS, 1, Some(7), 10.0, until, now()) else {
            panic!("expected a profile")
        };
        let p = &r.cs_charging_profiles;
        assert_eq!(p.charging_profile_purpose, ChargingProfilePurposeType::TxDefaultProfile);
        assert_eq!((r.connector_id, p.transaction_id, p.stack_level), (1, None, 0));

        let watts = Unit { watts: true, phases: 3, voltage_v: 230.0 };
        let Command::Profile(r) = setpoint(&[Quirk::Watts], watts, 1, Some(7), 10.0, until, now()) else {
            panic!("expected a profile")
        };
        let s = &r.cs_charging_profiles.charging_schedule;
        assert_eq!(s.charging_rate_unit, ChargingRateUnitType::W);
        assert_eq!(s.charging_schedule_period[0].limit, 6900.0);
        assert_eq!(s.charging_schedule_period[0].number_phases, Some(3));

        let off = setpoint(&[Quirk::NoProfiles], AMPS, 1, Some(7), 0.0, until, now());
        assert_eq!(
            off,
            Command::Availability(ChangeAvailabilityRequest { connector_id: 1, r#type: AvailabilityType::Inoperative })
        );
    }
}
