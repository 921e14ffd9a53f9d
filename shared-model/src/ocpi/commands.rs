//! The commands module (OCPI 2.2.1 "Commands module"): what an eMSP sends to a CPO's
//! Receiver (`POST commands/{command}`), the CPO's synchronous [`CommandResponse`], and
//! the [`CommandResult`] the CPO POSTs later to the `response_url` the eMSP gave.
//!
//! Unknown fields are accepted and ignored (a newer peer may send more); the checks the
//! types do not make (lengths, URLs, times) are in [`check_ci_string`] and friends, so
//! the CPO can answer a precise 2001.

use serde::{Deserialize, Serialize};

use super::{Token, parse_timestamp};

/// `CommandType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CommandType {
    CancelReservation,
    ReserveNow,
    StartSession,
    StopSession,
    UnlockConnector,
}

impl CommandType {
    pub const ALL: [CommandType; 5] = [
        CommandType::CancelReservation,
        CommandType::ReserveNow,
        CommandType::StartSession,
        CommandType::StopSession,
        CommandType::UnlockConnector,
    ];

    /// The name on the wire (`START_SESSION`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            CommandType::CancelReservation => "CANCEL_RESERVATION",
            CommandType::ReserveNow => "RESERVE_NOW",
            CommandType::StartSession => "START_SESSION",
            CommandType::StopSession => "STOP_SESSION",
            CommandType::UnlockConnector => "UNLOCK_CONNECTOR",
        }
    }

    /// The command named `name` (exactly as on the wire).
    pub fn parse(name: &str) -> Option<CommandType> {
        CommandType::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// `CommandResponseType`: the CPO's synchronous answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CommandResponseType {
    NotSupported,
    Rejected,
    Accepted,
    UnknownSession,
}

/// `CommandResultType`: what the Charge Point did (or that it did not answer in time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CommandResultType {
    Accepted,
    CanceledReservation,
    EvseOccupied,
    EvseInoperative,
    Failed,
    NotSupported,
    Rejected,
    Timeout,
    UnknownReservation,
}

impl CommandResultType {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandResultType::Accepted => "ACCEPTED",
            CommandResultType::CanceledReservation => "CANCELED_RESERVATION",
            CommandResultType::EvseOccupied => "EVSE_OCCUPIED",
            CommandResultType::EvseInoperative => "EVSE_INOPERATIVE",
            CommandResultType::Failed => "FAILED",
            CommandResultType::NotSupported => "NOT_SUPPORTED",
            CommandResultType::Rejected => "REJECTED",
            CommandResultType::Timeout => "TIMEOUT",
            CommandResultType::UnknownReservation => "UNKNOWN_RESERVATION",
        }
    }

    /// The result named `name` (exactly as on the wire).
    pub fn parse(name: &str) -> Option<CommandResultType> {
        use CommandResultType::*;
        [
            Accepted,
            CanceledReservation,
            EvseOccupied,
            EvseInoperative,
            Failed,
            NotSupported,
            Rejected,
            Timeout,
            UnknownReservation,
        ]
        .into_iter()
        .find(|r| r.as_str() == name)
    }
}

/// `DisplayText` (OCPI 2.2.1 "Types"): a text in one language.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisplayText {
    /// ISO 639-1.
    pub language: String,
    pub text: String,
}

impl DisplayText {
    /// An English text (at most 512 characters, as OCPI allows).
    pub fn en(text: impl Into<String>) -> Vec<DisplayText> {
        let text: String = text.into().chars().take(512).collect();
        vec![DisplayText { language: "en".to_owned(), text }]
    }
}

/// `CommandResponse`: the data of the answer to `POST commands/{command}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResponse {
    pub result: CommandResponseType,
    /// Seconds within which the [`CommandResult`] is POSTed.
    pub timeout: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub message: Vec<DisplayText>,
}

/// `CommandResult`: POSTed to the command's `response_url`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    pub result: CommandResultType,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub message: Vec<DisplayText>,
}

/// `StartSession`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartSession {
    pub response_url: String,
    pub token: Token,
    pub location_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evse_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_reference: Option<String>,
}

/// `StopSession`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopSession {
    pub response_url: String,
    pub session_id: String,
}

/// `ReserveNow`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReserveNow {
    pub response_url: String,
    pub token: Token,
    pub expiry_date: String,
    pub reservation_id: String,
    pub location_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evse_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_reference: Option<String>,
}

/// `CancelReservation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelReservation {
    pub response_url: String,
    pub reservation_id: String,
}

/// `UnlockConnector`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlockConnector {
    pub response_url: String,
    pub location_id: String,
    pub evse_uid: String,
    pub connector_id: String,
}

/// Checks a `CiString(max)` field: 1 to `max` printable ASCII characters.
pub fn check_ci_string(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() || value.len() > max || !value.chars().all(|c| c.is_ascii() && !c.is_ascii_control()) {
        return Err(format!("{field} {value:?} must be 1 to {max} printable ASCII characters (CiString({max}))"));
    }
    Ok(())
}

/// Checks a `response_url`: an absolute `http(s)://` URL of at most 255 characters
/// (OCPI 2.2.1 "Types", URL).
pub fn check_url(field: &str, value: &str) -> Result<(), String> {
    let ok = (value.starts_with("http://") || value.starts_with("https://"))
        && value.len() <= 255
        && value.len() > "https://".len()
        && !value.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok { Ok(()) } else { Err(format!("{field} {value:?} is not an absolute http(s) URL of at most 255 characters")) }
}

/// Checks a `DateTime` field; the time.
pub fn check_time(field: &str, value: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    parse_timestamp(value)
        .ok_or_else(|| format!("{field} {value:?} is not an RFC 3339 time (e.g. 2026-01-31T12:00:00Z)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_round_trip() {
        for c in CommandType::ALL {
            assert_eq!(CommandType::parse(c.as_str()), Some(c));
            assert_eq!(serde_json::to_value(c).expect("json"), json!(c.as_str()));
        }
        assert_eq!(CommandType::parse("start_session"), None, "names are exact");
        for name in ["ACCEPTED", "CANCELED_RESERVATION", "EVSE_OCCUPIED", "TIMEOUT", "UNKNOWN_RESERVATION"] {
            let r = CommandResultType::parse(name).expect(name);
            assert_eq!(serde_json::to_value(r).expect("json"), json!(name));
        }
    }

    #[test]
    fn start_session_parses_and_checks() {
        let body = json!({"response_url": "https://emsp.example/cmd/1", "location_id": "LOC1",
            "token": {"country_code": "NL", "party_id": "EMS", "uid": "U1", "type": "APP_USER",
                "contract_id": "C1", "issuer": "x", "valid": true, "whitelist": "ALLOWED",
                "last_updated": "2026-11-21T12:00:00Z"}, "future_field": 1});
        let s: StartSession = serde_json::from_value(body).expect("parses");
        assert_eq!((s.location_id.as_str(), s.evse_uid), ("LOC1", None));
        let missing: Result<StopSession, _> = serde_json::from_value(json!({"response_url": "https://x.y/z"}));
        assert!(missing.expect_err("no session_id").to_string().contains("session_id"));
        assert!(check_url("response_url", "ftp://x").is_err());
        assert!(check_url("response_url", "https://emsp.example/r").is_ok());
        assert!(check_ci_string("location_id", &"x".repeat(37), 36).is_err());
        assert!(check_ci_string("location_id", "", 36).is_err());
        assert!(check_time("expiry_date", "soon").is_err());
    }

    #[test]
    fn response_without_message_has_no_message_field() {
        let r = CommandResponse { result: CommandResponseType::Accepted, timeout: 30, message: Vec::new() };
        assert_eq!(serde_json::to_value(&r).expect("json"), json!({"result": "ACCEPTED", "timeout": 30}));
        let r = CommandResult { result: CommandResultType::Timeout, message: DisplayText::en("no answer") };
        assert_eq!(serde_json::to_value(&r).expect("json")["message"][0]["language"], "en");
    }
}
