//! OCPP: the JSON framing shared by all versions and the typed messages per version.

pub mod framing;
pub mod v16;

/// One OCPP request type: its action name on the wire and its response type.
pub trait OcppRequest: serde::Serialize + serde::de::DeserializeOwned {
    /// The action name carried in the CALL frame, e.g. `"BootNotification"`.
    const ACTION: &'static str;
    /// The payload type of the matching CALLRESULT.
    type Response: serde::Serialize + serde::de::DeserializeOwned;
}

/// The OCPP-J WebSocket subprotocols Sitepilot knows, in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// OCPP 1.6J, subprotocol `ocpp1.6`.
    V16,
}

impl ProtocolVersion {
    /// The WebSocket subprotocol token (`Sec-WebSocket-Protocol`).
    pub fn subprotocol(self) -> &'static str {
        match self {
            ProtocolVersion::V16 => "ocpp1.6",
        }
    }

    /// Parses a subprotocol token; `None` for a version we do not speak.
    pub fn from_subprotocol(token: &str) -> Option<Self> {
        match token.trim() {
            "ocpp1.6" => Some(ProtocolVersion::V16),
            _ => None,
        }
    }
}
