//! OCPI 2.2.1 wire types shared by the hub (CPO role) and the simulated eMSP peer: the
//! response envelope and its status codes (OCPI 2.2.1 "Status codes"), versions and
//! endpoints ("Version information endpoint"), credentials ("Credentials module"),
//! locations ("Locations module"), tokens and real-time authorization ("Tokens module"),
//! sessions ("Sessions module") and CDRs ("CDRs module"); commands ([`commands`]) and
//! charging profiles ([`charging_profiles`]) in modules of their own. Money and volumes in
//! sessions and CDRs are exact decimals written as JSON numbers (see
//! [`crate::tariff::decimal_json`]).
//!
//! Only the fields Sitepilot produces or reads are typed; everything else a peer sends
//! is kept in `extra` so that a stored object goes back out unchanged.

use crate::tariff::{ChargingPeriod, Price, Tariff, decimal_json};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub mod charging_profiles;
pub mod commands;

/// The one OCPI version spoken so far.
pub const VERSION: &str = "2.2.1";

/// OCPI status codes (OCPI 2.2.1 "Status codes").
pub mod status {
    /// Generic success.
    pub const SUCCESS: u16 = 1000;
    /// Generic client error (also: the request's token is missing or not valid).
    pub const CLIENT_ERROR: u16 = 2000;
    /// Invalid or missing parameters.
    pub const INVALID_PARAMETERS: u16 = 2001;
    /// Not enough information, e.g. an authorization request with too little information.
    pub const NOT_ENOUGH_INFORMATION: u16 = 2002;
    /// Unknown Location.
    pub const UNKNOWN_LOCATION: u16 = 2003;
    /// Unknown Token.
    pub const UNKNOWN_TOKEN: u16 = 2004;
    /// Generic server error.
    pub const SERVER_ERROR: u16 = 3000;
    /// Unable to use the client's API (unreachable, or its answers cannot be used).
    pub const UNABLE_TO_USE_CLIENT_API: u16 = 3001;
    /// Unsupported version: no version in common.
    pub const UNSUPPORTED_VERSION: u16 = 3002;
    /// No matching endpoints, or expected endpoints missing between the parties.
    pub const NO_MATCHING_ENDPOINTS: u16 = 3003;
}

/// Every OCPI response body (OCPI 2.2.1 "Transport and format", Response format).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
    pub status_code: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    pub timestamp: String,
}

/// One entry of `GET /ocpi/versions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub version: String,
    pub url: String,
}

/// The answer of a version details endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionDetails {
    pub version: String,
    pub endpoints: Vec<Endpoint>,
}

/// One module interface a party offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The module identifier: `credentials`, `locations`, `tokens`, ...
    pub identifier: String,
    /// `SENDER` or `RECEIVER`.
    pub role: String,
    pub url: String,
}

impl VersionDetails {
    /// The URL of `identifier` in `role` (`SENDER` / `RECEIVER`).
    pub fn url(&self, identifier: &str, role: &str) -> Option<&str> {
        self.endpoints.iter().find(|e| e.identifier == identifier && e.role == role).map(|e| e.url.as_str())
    }
}

/// The credentials object (OCPI 2.2.1 "Credentials module", Credentials object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The token the other party uses to call the sender of this object.
    pub token: String,
    /// The sender's versions endpoint.
    pub url: String,
    pub roles: Vec<CredentialsRole>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialsRole {
    /// `CPO`, `EMSP`, `HUB`, `NAP`, `NSP`, `OTHER`, `SCSP`.
    pub role: String,
    pub business_details: BusinessDetails,
    pub party_id: String,
    pub country_code: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusinessDetails {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub website: Option<String>,
}

/// A Location (OCPI 2.2.1 "Locations module", Location object); only what the hub fills.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub country_code: String,
    pub party_id: String,
    pub id: String,
    pub publish: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub address: String,
    pub city: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-3.
    pub country: String,
    pub coordinates: GeoLocation,
    #[serde(default)]
    pub evses: Vec<Evse>,
    pub time_zone: String,
    pub last_updated: String,
}

/// Decimal degrees as strings, as OCPI wants them (`"52.370216"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeoLocation {
    pub latitude: String,
    pub longitude: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evse {
    pub uid: String,
    /// `AVAILABLE`, `BLOCKED`, `CHARGING`, `INOPERATIVE`, `OUTOFORDER`, `PLANNED`,
    /// `REMOVED`, `RESERVED`, `UNKNOWN`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_reference: Option<String>,
    #[serde(default)]
    pub connectors: Vec<Connector>,
    pub last_updated: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connector {
    pub id: String,
    pub standard: String,
    pub format: String,
    pub power_type: String,
    pub max_voltage: i64,
    pub max_amperage: i64,
    pub last_updated: String,
}

/// A Token (OCPI 2.2.1 "Tokens module", Token object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Token {
    pub country_code: String,
    pub party_id: String,
    pub uid: String,
    /// `AD_HOC_USER`, `APP_USER`, `OTHER`, `RFID`.
    #[serde(rename = "type")]
    pub token_type: String,
    pub contract_id: String,
    pub issuer: String,
    pub valid: bool,
    /// `ALWAYS`, `ALLOWED`, `ALLOWED_OFFLINE`, `NEVER`.
    pub whitelist: String,
    pub last_updated: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The token types OCPI 2.2.1 knows.
pub const TOKEN_TYPES: [&str; 4] = ["AD_HOC_USER", "APP_USER", "OTHER", "RFID"];

/// The answer of a real-time authorization (OCPI 2.2.1 "Tokens module", AuthorizationInfo).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthorizationInfo {
    /// `ALLOWED`, `BLOCKED`, `EXPIRED`, `NO_CREDIT`, `NOT_ALLOWED`.
    pub allowed: String,
    pub token: Token,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<LocationReferences>,
}

/// Where a real-time authorization is asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocationReferences {
    pub location_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evse_uids: Option<Vec<String>>,
}

/// The token a session or CDR was charged with (OCPI 2.2.1 "CDRs module", CdrToken).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdrToken {
    pub country_code: String,
    pub party_id: String,
    pub uid: String,
    #[serde(rename = "type")]
    pub token_type: String,
    pub contract_id: String,
}

impl CdrToken {
    /// The CdrToken of a Token.
    pub fn of(t: &Token) -> CdrToken {
        CdrToken {
            country_code: t.country_code.clone(),
            party_id: t.party_id.clone(),
            uid: t.uid.clone(),
            token_type: t.token_type.clone(),
            contract_id: t.contract_id.clone(),
        }
    }
}

/// How a session was authorized (OCPI 2.2.1 "Types", AuthMethod).
pub mod auth_method {
    /// Real-time authorization with the eMSP.
    pub const AUTH_REQUEST: &str = "AUTH_REQUEST";
    /// A command (remote start) from the eMSP.
    pub const COMMAND: &str = "COMMAND";
    /// The token was whitelisted (pushed to the CPO), no real-time request.
    pub const WHITELIST: &str = "WHITELIST";
}

/// A charging session (OCPI 2.2.1 "Sessions module", Session object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub country_code: String,
    pub party_id: String,
    pub id: String,
    pub start_date_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date_time: Option<String>,
    /// kWh charged so far.
    #[serde(with = "decimal_json")]
    pub kwh: Decimal,
    pub cdr_token: CdrToken,
    /// [`auth_method`].
    pub auth_method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_reference: Option<String>,
    pub location_id: String,
    pub evse_uid: String,
    pub connector_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_id: Option<String>,
    pub currency: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub charging_periods: Vec<ChargingPeriod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_cost: Option<Price>,
    /// `ACTIVE`, `COMPLETED`, `INVALID`, `PENDING`, `RESERVATION`.
    pub status: String,
    pub last_updated: String,
}

/// The answer to `PUT sessions/{session_id}/charging_preferences` (OCPI 2.2.1 "Sessions
/// module", ChargingPreferencesResponse): `ACCEPTED`, `DEPARTURE_REQUIRED`,
/// `ENERGY_NEED_REQUIRED`, `NOT_POSSIBLE`, `PROFILE_TYPE_NOT_SUPPORTED`.
pub const CHARGING_PREFERENCES_RESPONSES: [&str; 5] =
    ["ACCEPTED", "DEPARTURE_REQUIRED", "ENERGY_NEED_REQUIRED", "NOT_POSSIBLE", "PROFILE_TYPE_NOT_SUPPORTED"];

/// Where a CDR's session took place (OCPI 2.2.1 "CDRs module", CdrLocation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdrLocation {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub address: String,
    pub city: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    pub country: String,
    pub coordinates: GeoLocation,
    pub evse_uid: String,
    /// The eMI3 EVSE id (`DE*SPL*E...`).
    pub evse_id: String,
    pub connector_id: String,
    pub connector_standard: String,
    pub connector_format: String,
    pub connector_power_type: String,
}

/// A charge detail record (OCPI 2.2.1 "CDRs module", CDR object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cdr {
    pub country_code: String,
    pub party_id: String,
    pub id: String,
    pub start_date_time: String,
    pub end_date_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    pub cdr_token: CdrToken,
    pub auth_method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_reference: Option<String>,
    pub cdr_location: CdrLocation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_id: Option<String>,
    pub currency: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tariffs: Vec<Tariff>,
    pub charging_periods: Vec<ChargingPeriod>,
    pub total_cost: Price,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_fixed_cost: Option<Price>,
    /// kWh.
    #[serde(with = "decimal_json")]
    pub total_energy: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_energy_cost: Option<Price>,
    /// Hours.
    #[serde(with = "decimal_json")]
    pub total_time: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_time_cost: Option<Price>,
    #[serde(default, with = "decimal_json::option", skip_serializing_if = "Option::is_none")]
    pub total_parking_time: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_parking_cost: Option<Price>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_reservation_cost: Option<Price>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remark: Option<String>,
    /// A credit CDR cancels the CDR `credit_reference_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_reference_id: Option<String>,
    pub last_updated: String,
}

/// An OCPI timestamp: UTC, RFC 3339 with `Z`, milliseconds (OCPI 2.2.1 "Types",
/// DateTime: string(25)).
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parses an OCPI timestamp; a time without an offset is UTC (OCPI 2.2.1 "Types", DateTime).
pub fn parse_timestamp(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|n| n.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_and_accept_no_offset() {
        let t = parse_timestamp("2026-11-21T12:00:01.5Z").expect("valid");
        assert_eq!(timestamp(t), "2026-11-21T12:00:01.500Z");
        assert_eq!(parse_timestamp("2026-11-21T12:00:01"), parse_timestamp("2026-11-21T12:00:01Z"));
        assert!(parse_timestamp("yesterday").is_none());
    }

    #[test]
    fn cdr_money_stays_exact() {
        let text = r#"{"excl_vat":1.2345,"incl_vat":1.3580}"#;
        let p: Price = serde_json::from_str(text).expect("price");
        assert_eq!(p.excl_vat.to_string(), "1.2345");
        assert_eq!(serde_json::to_string(&p).expect("json"), r#"{"excl_vat":1.2345,"incl_vat":1.3580}"#);
        let token = CdrToken {
            country_code: "NL".into(),
            party_id: "EMS".into(),
            uid: "U1".into(),
            token_type: "RFID".into(),
            contract_id: "NL-EMS-U1".into(),
        };
        let s = Session {
            country_code: "DE".into(),
            party_id: "SPL".into(),
            id: "s1".into(),
            start_date_time: "2026-11-21T12:00:00.000Z".into(),
            end_date_time: None,
            kwh: "12.3456".parse().expect("decimal"),
            cdr_token: token,
            auth_method: auth_method::AUTH_REQUEST.into(),
            authorization_reference: None,
            location_id: "L".into(),
            evse_uid: "L*CP*1".into(),
            connector_id: "1".into(),
            meter_id: None,
            currency: "EUR".into(),
            charging_periods: Vec::new(),
            total_cost: Some(p),
            status: "ACTIVE".into(),
            last_updated: "2026-11-21T12:00:00.000Z".into(),
        };
        let json = serde_json::to_string(&s).expect("json");
        assert!(json.contains(r#""kwh":12.3456"#), "{json}");
        assert_eq!(serde_json::from_str::<Session>(&json).expect("parses"), s);
    }

    #[test]
    fn token_keeps_unknown_fields() {
        let json = serde_json::json!({"country_code":"NL","party_id":"EXA","uid":"U1","type":"RFID",
            "contract_id":"C1","issuer":"Ex","valid":true,"whitelist":"ALLOWED",
            "last_updated":"2026-11-21T12:00:00Z","visual_number":"123"});
        let token: Token = serde_json::from_value(json.clone()).expect("token");
        assert_eq!(token.extra["visual_number"], "123");
        assert_eq!(serde_json::to_value(&token).expect("json"), json);
    }
}
