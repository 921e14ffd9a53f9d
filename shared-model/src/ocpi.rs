//! OCPI 2.2.1 wire types shared by the hub (CPO role) and the simulated eMSP peer: the
//! response envelope and its status codes (OCPI 2.2.1 "Status codes"), versions and
//! endpoints ("Version information endpoint"), credentials ("Credentials module"),
//! locations ("Locations module"), tokens and real-time authorization ("Tokens module");
//! commands ([`commands`]) and charging profiles ([`charging_profiles`]) in modules of
//! their own.
//!
//! Only the fields Sitepilot produces or reads are typed; everything else a peer sends
//! is kept in `extra` so that a stored object goes back out unchanged.

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
    fn token_keeps_unknown_fields() {
        let json = serde_json::json!({"country_code":"NL","party_id":"EXA","uid":"U1","type":"RFID",
            "contract_id":"C1","issuer":"Ex","valid":true,"whitelist":"ALLOWED",
            "last_updated":"2026-11-21T12:00:00Z","visual_number":"123"});
        let token: Token = serde_json::from_value(json.clone()).expect("token");
        assert_eq!(token.extra["visual_number"], "123");
        assert_eq!(serde_json::to_value(&token).expect("json"), json);
    }
}
