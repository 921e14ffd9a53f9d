//! OCPP 1.6J messages, requests and responses, as typed serde types: the six feature
//! profiles of OCPP 1.6 edition 2 (Core, Firmware Management, Local Auth List Management,
//! Reservation, Smart Charging, Remote Trigger) and the 1.6 security whitepaper extension.
//!
//! Naming: for every action `X`, `XRequest` and `XResponse`, and `impl OcppRequest for
//! XRequest { const ACTION = "X"; type Response = XResponse; }`. Field names are the
//! spec's, in snake_case, renamed to camelCase on the wire (a field called `type` is
//! `r#type`); optional fields are `Option` and omitted when `None`. Enums carry the exact
//! wire spelling. Bounded strings are length-checked newtypes ([`CiString20`] ...).
//!
//! Decoding is strict on values and lenient on shape: an unknown enum value or an
//! over-long string is refused (the peer would otherwise be told "accepted" for something
//! we cannot act on), but unknown extra fields are ignored, because real chargers send
//! vendor additions. Every type is checked against the official JSON schemas in
//! `tests/v16_schemas.rs`.
//!
//! ```
//! use shared_model::ocpp::OcppRequest;
//! use shared_model::ocpp::v16::{AuthorizeRequest, IdToken};
//!
//! let req = AuthorizeRequest { id_tag: IdToken::try_new("04A2B3C4D5").expect("short tag") };
//! assert_eq!(AuthorizeRequest::ACTION, "Authorize");
//! assert_eq!(serde_json::to_string(&req).expect("serialises"), r#"{"idTag":"04A2B3C4D5"}"#);
//! ```

/// Implements [`OcppRequest`](super::OcppRequest) for one action.
macro_rules! ocpp_action {
    ($action:literal, $request:ty, $response:ty) => {
        impl $crate::ocpp::OcppRequest for $request {
            const ACTION: &'static str = $action;
            type Response = $response;
        }
    };
}

mod charging_profile;
mod core;
mod firmware;
mod local_auth;
mod remote_trigger;
mod reservation;
mod security;
mod security_types;
mod smart_charging;
mod strings;
mod types;

pub use self::core::*;
pub use charging_profile::*;
pub use firmware::*;
pub use local_auth::*;
pub use remote_trigger::*;
pub use reservation::*;
pub use security::*;
pub use security_types::*;
pub use smart_charging::*;
pub use strings::*;
pub use types::*;

/// Actions a charge point sends (CALLs from the charger to us). `DataTransfer` goes both
/// ways and is in both lists.
pub const CHARGE_POINT_INITIATED: &[&str] = &[
    "Authorize",
    "BootNotification",
    "DataTransfer",
    "DiagnosticsStatusNotification",
    "FirmwareStatusNotification",
    "Heartbeat",
    "MeterValues",
    "StartTransaction",
    "StatusNotification",
    "StopTransaction",
    // security whitepaper
    "LogStatusNotification",
    "SecurityEventNotification",
    "SignCertificate",
    "SignedFirmwareStatusNotification",
];

/// Actions the central system sends (CALLs from us to the charger).
pub const CENTRAL_SYSTEM_INITIATED: &[&str] = &[
    "CancelReservation",
    "ChangeAvailability",
    "ChangeConfiguration",
    "ClearCache",
    "ClearChargingProfile",
    "DataTransfer",
    "GetCompositeSchedule",
    "GetConfiguration",
    "GetDiagnostics",
    "GetLocalListVersion",
    "RemoteStartTransaction",
    "RemoteStopTransaction",
    "ReserveNow",
    "Reset",
    "SendLocalList",
    "SetChargingProfile",
    "TriggerMessage",
    "UnlockConnector",
    "UpdateFirmware",
    // security whitepaper
    "CertificateSigned",
    "DeleteCertificate",
    "ExtendedTriggerMessage",
    "GetInstalledCertificateIds",
    "GetLog",
    "InstallCertificate",
    "SignedUpdateFirmware",
];

/// Whether `action` is an OCPP 1.6 action (including the security whitepaper's), in
/// either direction. A CALL with an unknown action is answered `NotImplemented`
/// (OCPP-J §4.2.3); a known one we do not handle, `NotSupported`.
pub fn is_known_action(action: &str) -> bool {
    CHARGE_POINT_INITIATED.contains(&action) || CENTRAL_SYSTEM_INITIATED.contains(&action)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ocpp::OcppRequest;
    use crate::ocpp::framing::{Frame, decode_payload};
    use chrono::{TimeZone, Utc};
    use serde_json::{Value, json};
    use std::collections::BTreeSet;

    /// Parses a CALL and decodes its payload as `T`, checking the action name.
    fn decode_call<T: OcppRequest>(text: &str) -> (T, Value) {
        let Ok(Frame::Call(call)) = Frame::parse(text) else { panic!("not a CALL: {text}") };
        assert_eq!(call.action, T::ACTION);
        let typed = decode_payload::<T>(&call.payload).unwrap_or_else(|e| panic!("{:?}: {}", e.0, e.1));
        (typed, call.payload)
    }

    #[test]
    fn action_lists_are_consistent() {
        let cp: BTreeSet<_> = CHARGE_POINT_INITIATED.iter().collect();
        let cs: BTreeSet<_> = CENTRAL_SYSTEM_INITIATED.iter().collect();
        assert_eq!(cp.len(), CHARGE_POINT_INITIATED.len(), "duplicate in CHARGE_POINT_INITIATED");
        assert_eq!(cs.len(), CENTRAL_SYSTEM_INITIATED.len(), "duplicate in CENTRAL_SYSTEM_INITIATED");
        let both: Vec<_> = cp.intersection(&cs).collect();
        assert_eq!(both, vec![&&"DataTransfer"]);
        assert_eq!(cp.union(&cs).count(), 39);
        assert!(is_known_action("BootNotification"));
        assert!(is_known_action("SignedUpdateFirmware"));
        assert!(!is_known_action("bootnotification"));
        assert!(!is_known_action("NotifyReport")); // 2.0.1 only
        assert!(!is_known_action(""));
    }

    #[test]
    fn empty_messages_serialise_to_empty_objects() {
        assert_eq!(serde_json::to_string(&HeartbeatRequest {}).ok().as_deref(), Some("{}"));
        assert_eq!(serde_json::to_string(&StatusNotificationResponse {}).ok().as_deref(), Some("{}"));
        assert_eq!(serde_json::to_string(&GetConfigurationRequest::default()).ok().as_deref(), Some("{}"));
        // Extra fields from a chatty charger are ignored, not refused.
        assert!(decode_payload::<HeartbeatRequest>(&json!({"vendorExtra": 1})).is_ok());
    }

    /// A MeterValues frame as a three-phase AC charger with an Eichrecht meter sends it:
    /// per-phase currents and voltages, mixed units, and an OCMF signed reading whose
    /// text must survive byte for byte.
    #[test]
    fn real_meter_values_frame_round_trips() {
        let signed = r#"OCMF|{"FV":"1.0","GI":"ABL SBC-301","GS":"808829900001","GV":"1.4p3","PG":"T12345","MV":"Phoenix Contact","MM":"EEM-350-D-MCB","MS":"BQ27400330016","IS":true,"IL":"VERIFIED","IF":["RFID_PLAIN","OCPP_RS_TLS"],"IT":"ISO14443","ID":"1F2D3A4E5B6A7F","RD":[{"TM":"2024-03-05T10:15:00,000+0000 S","TX":"B","RV":2935.6,"RI":"1-b:1.8.0","RU":"kWh","RT":"AC","EF":"","ST":"G"}]}|{"SD":"304402201A8F\u00e9"}"#;
        let payload = json!({
            "connectorId": 1,
            "transactionId": 1702,
            "meterValue": [{
                "timestamp": "2024-03-05T10:15:00Z",
                "sampledValue": [
                    {"value": "2935600", "context": "Sample.Periodic", "format": "Raw",
                     "measurand": "Energy.Active.Import.Register", "location": "Outlet", "unit": "Wh"},
                    {"value": "15.91", "measurand": "Current.Import", "phase": "L1", "unit": "A"},
                    {"value": "15.87", "measurand": "Current.Import", "phase": "L2", "unit": "A"},
                    {"value": "0.00", "measurand": "Current.Import", "phase": "N", "unit": "A"},
                    {"value": "231.2", "measurand": "Voltage", "phase": "L1-N", "unit": "V"},
                    {"value": "400.4", "measurand": "Voltage", "phase": "L3-L1", "unit": "V"},
                    {"value": "11.04", "measurand": "Power.Active.Import", "unit": "kW"},
                    {"value": "31.5", "measurand": "Temperature", "location": "Body", "unit": "Celsius"},
                    {"value": "62", "measurand": "SoC", "location": "EV", "unit": "Percent"},
                    {"value": signed, "context": "Sample.Clock", "format": "SignedData",
                     "measurand": "Energy.Active.Import.Register", "unit": "kWh"}
                ]
            }]
        });
        let text = Frame::Call(crate::ocpp::framing::Call {
            unique_id: "d5e1c3b0-7a2f-4b1e-9c3d-2f6a8b9c0d1e".into(),
            action: "MeterValues".into(),
            payload: payload.clone(),
        })
        .to_text();
        let (req, raw) = decode_call::<MeterValuesRequest>(&text);
        assert_eq!(raw, payload);
        assert_eq!(req.connector_id, 1);
        assert_eq!(req.transaction_id, Some(1702));
        let values = &req.meter_value[0].sampled_value;
        assert_eq!(values.len(), 10);
        assert_eq!(values[0].measurand, Some(Measurand::EnergyActiveImportRegister));
        assert_eq!(values[1].phase, Some(Phase::L1));
        assert_eq!(values[4].phase, Some(Phase::L1N));
        assert_eq!(values[5].phase, Some(Phase::L3L1));
        assert_eq!(values[6].unit, Some(UnitOfMeasure::KW));
        assert_eq!(values[7].unit, Some(UnitOfMeasure::Celsius));
        assert_eq!(values[8].location, Some(Location::Ev));
        assert_eq!(values[9].format, Some(ValueFormat::SignedData));
        assert_eq!(values[9].context, Some(ReadingContext::SampleClock));
        assert_eq!(values[9].value, signed, "signed data must be kept verbatim");
        // Absent optionals stay absent rather than being filled with defaults.
        assert_eq!(values[1].context, None);
        assert_eq!(values[1].location, None);
        let back = serde_json::to_value(&req).expect("serialises");
        assert_eq!(back, payload);
    }

    #[test]
    fn real_stop_transaction_frame_round_trips() {
        let text = r#"[2,"19223201","StopTransaction",{"idTag":"04E91C5A123480","meterStop":2950123,"timestamp":"2024-03-05T11:02:31Z","transactionId":1702,"reason":"EVDisconnected","transactionData":[{"timestamp":"2024-03-05T09:12:00Z","sampledValue":[{"value":"2921400","context":"Transaction.Begin","unit":"Wh"}]},{"timestamp":"2024-03-05T11:02:31Z","sampledValue":[{"value":"2950123","context":"Transaction.End","unit":"Wh"},{"value":"24.5","context":"Transaction.End","measurand":"Temperature","unit":"Celcius"}]}]}]"#;
        let (req, raw) = decode_call::<StopTransactionRequest>(text);
        assert_eq!(req.reason, Some(Reason::EVDisconnected));
        assert_eq!(req.meter_stop, 2_950_123);
        assert_eq!(req.timestamp, Utc.with_ymd_and_hms(2024, 3, 5, 11, 2, 31).single().expect("valid"));
        let data = req.transaction_data.as_deref().unwrap_or_default();
        assert_eq!(data.len(), 2);
        assert_eq!(data[1].sampled_value[1].unit, Some(UnitOfMeasure::Celcius));
        assert_eq!(serde_json::to_value(&req).expect("serialises"), raw);
    }

    #[test]
    fn real_set_charging_profile_frame_round_trips() {
        let text = r#"[2,"sp-1","SetChargingProfile",{"connectorId":0,"csChargingProfiles":{"chargingProfileId":100,"stackLevel":0,"chargingProfilePurpose":"ChargePointMaxProfile","chargingProfileKind":"Recurring","recurrencyKind":"Daily","chargingSchedule":{"duration":86400,"startSchedule":"2024-03-05T00:00:00Z","chargingRateUnit":"A","chargingSchedulePeriod":[{"startPeriod":0,"limit":32.0},{"startPeriod":28800,"limit":16.5,"numberPhases":1}],"minChargingRate":6.0}}}]"#;
        let (req, raw) = decode_call::<SetChargingProfileRequest>(text);
        assert_eq!(req.connector_id, 0, "connector 0 is the whole charge point");
        let profile = &req.cs_charging_profiles;
        assert_eq!(profile.charging_profile_purpose, ChargingProfilePurposeType::ChargePointMaxProfile);
        assert_eq!(profile.recurrency_kind, Some(RecurrencyKindType::Daily));
        assert_eq!(profile.charging_schedule.charging_schedule_period[1].limit, 16.5);
        assert_eq!(profile.charging_schedule.charging_schedule_period[1].number_phases, Some(1));
        assert_eq!(serde_json::to_value(&req).expect("serialises"), raw);
    }

    #[test]
    fn timestamps_with_offsets_and_fractions_are_read_as_utc() {
        let req: StartTransactionRequest = decode_payload(&json!({
            "connectorId": 2, "idTag": "ABC", "meterStart": 0, "timestamp": "2024-03-05T11:15:00.250+01:00"
        }))
        .expect("valid");
        let expected =
            Utc.with_ymd_and_hms(2024, 3, 5, 10, 15, 0).single().expect("valid") + chrono::Duration::milliseconds(250);
        assert_eq!(req.timestamp, expected);
        assert_eq!(serde_json::to_value(&req).expect("serialises")["timestamp"], "2024-03-05T10:15:00.250Z");
    }

    #[test]
    fn type_named_fields_use_the_wire_name() {
        let req = ResetRequest { r#type: ResetType::Soft };
        assert_eq!(serde_json::to_value(&req).expect("serialises"), json!({"type": "Soft"}));
        let req: ChangeAvailabilityRequest =
            decode_payload(&json!({"connectorId": 0, "type": "Inoperative"})).expect("valid");
        assert_eq!(req.r#type, AvailabilityType::Inoperative);
    }
}
