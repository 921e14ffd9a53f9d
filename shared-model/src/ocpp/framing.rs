//! OCPP-J RPC framing (OCPP-J 1.6 §4, unchanged in 2.0.1 §4): every WebSocket text message
//! is a JSON array.
//!
//! - CALL: `[2, "<UniqueId>", "<Action>", {<payload>}]`
//! - CALLRESULT: `[3, "<UniqueId>", {<payload>}]`
//! - CALLERROR: `[4, "<UniqueId>", "<errorCode>", "<errorDescription>", {<errorDetails>}]`
//!
//! Parsing never panics: every malformed frame yields a [`FrameError`] that carries the
//! CALLERROR code the spec names and, when it could be read, the unique id to answer to.

use serde_json::Value;
use std::fmt;

/// Longest unique id the spec allows (OCPP-J §4.1.3: maximum 36 characters).
pub const MAX_UNIQUE_ID_LEN: usize = 36;

/// CALLERROR codes (OCPP-J 1.6 §4.2.3, with the 1.6 errata spelling `FormationViolation`;
/// the original `FormatViolation` is accepted on input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The action is not known by the receiver.
    NotImplemented,
    /// The action is recognised but not supported by the receiver.
    NotSupported,
    /// An internal error occurred and the receiver could not process the action.
    InternalError,
    /// The payload for the action is incomplete.
    ProtocolError,
    /// A security issue prevented the receiver from completing the action.
    SecurityError,
    /// The payload is syntactically incorrect or does not conform to the PDU structure.
    FormationViolation,
    /// The payload is syntactically correct but a field contains an invalid value.
    PropertyConstraintViolation,
    /// A required field is missing, or a field occurs too often (spec spelling).
    OccurenceConstraintViolation,
    /// A field has the wrong data type.
    TypeConstraintViolation,
    /// Any other error.
    GenericError,
}

impl ErrorCode {
    /// Every code, for iteration in tests and metrics.
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::NotImplemented,
        ErrorCode::NotSupported,
        ErrorCode::InternalError,
        ErrorCode::ProtocolError,
        ErrorCode::SecurityError,
        ErrorCode::FormationViolation,
        ErrorCode::PropertyConstraintViolation,
        ErrorCode::OccurenceConstraintViolation,
        ErrorCode::TypeConstraintViolation,
        ErrorCode::GenericError,
    ];

    /// The code as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotImplemented => "NotImplemented",
            ErrorCode::NotSupported => "NotSupported",
            ErrorCode::InternalError => "InternalError",
            ErrorCode::ProtocolError => "ProtocolError",
            ErrorCode::SecurityError => "SecurityError",
            ErrorCode::FormationViolation => "FormationViolation",
            ErrorCode::PropertyConstraintViolation => "PropertyConstraintViolation",
            ErrorCode::OccurenceConstraintViolation => "OccurenceConstraintViolation",
            ErrorCode::TypeConstraintViolation => "TypeConstraintViolation",
            ErrorCode::GenericError => "GenericError",
        }
    }

    /// Parses a wire code. Unknown codes map to `GenericError` (a peer's error code is
    /// informational to us; losing the frame over it would be worse).
    pub fn from_wire(s: &str) -> ErrorCode {
        match s {
            "NotImplemented" => ErrorCode::NotImplemented,
            "NotSupported" => ErrorCode::NotSupported,
            "InternalError" => ErrorCode::InternalError,
            "ProtocolError" => ErrorCode::ProtocolError,
            "SecurityError" => ErrorCode::SecurityError,
            "FormationViolation" | "FormatViolation" => ErrorCode::FormationViolation,
            "PropertyConstraintViolation" => ErrorCode::PropertyConstraintViolation,
            "OccurenceConstraintViolation" | "OccurrenceConstraintViolation" => ErrorCode::OccurenceConstraintViolation,
            "TypeConstraintViolation" => ErrorCode::TypeConstraintViolation,
            _ => ErrorCode::GenericError,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request (message type 2).
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub unique_id: String,
    pub action: String,
    pub payload: Value,
}

/// A successful response (message type 3).
#[derive(Debug, Clone, PartialEq)]
pub struct CallResult {
    pub unique_id: String,
    pub payload: Value,
}

/// An error response (message type 4).
#[derive(Debug, Clone, PartialEq)]
pub struct CallError {
    pub unique_id: String,
    pub code: ErrorCode,
    pub description: String,
    pub details: Value,
}

impl CallError {
    /// A CALLERROR with an empty details object.
    pub fn new(unique_id: impl Into<String>, code: ErrorCode, description: impl Into<String>) -> Self {
        CallError {
            unique_id: unique_id.into(),
            code,
            description: description.into(),
            details: Value::Object(Default::default()),
        }
    }
}

/// One OCPP-J message.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Call(Call),
    CallResult(CallResult),
    CallError(CallError),
}

/// Why a text message is not a valid OCPP-J frame.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct FrameError {
    /// The CALLERROR code to answer with.
    pub code: ErrorCode,
    /// The unique id, when the frame got far enough to carry a readable one.
    pub unique_id: Option<String>,
    /// Whether the frame looked like a CALL (only CALLs may be answered with a CALLERROR).
    pub was_call: bool,
    /// Human-readable reason, suitable for the CALLERROR description.
    pub message: String,
}

impl FrameError {
    fn new(code: ErrorCode, unique_id: Option<String>, was_call: bool, message: impl Into<String>) -> Self {
        FrameError { code, unique_id, was_call, message: message.into() }
    }
}

impl Frame {
    /// Parses one WebSocket text message.
    pub fn parse(text: &str) -> Result<Frame, FrameError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| FrameError::new(ErrorCode::FormationViolation, None, false, format!("invalid JSON: {e}")))?;
        Frame::from_value(value)
    }

    /// Interprets an already parsed JSON value as a frame.
    pub fn from_value(value: Value) -> Result<Frame, FrameError> {
        let Value::Array(mut items) = value else {
            return Err(FrameError::new(
                ErrorCode::FormationViolation,
                None,
                false,
                "an OCPP-J message must be a JSON array",
            ));
        };
        let type_id = items.first().and_then(Value::as_u64);
        let was_call = type_id == Some(2);
        let unique_id = match items.get(1) {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_UNIQUE_ID_LEN => Some(s.clone()),
            Some(Value::String(s)) if s.is_empty() => {
                return Err(FrameError::new(ErrorCode::FormationViolation, None, was_call, "empty unique id"));
            }
            Some(Value::String(s)) => {
                return Err(FrameError::new(
                    ErrorCode::FormationViolation,
                    None,
                    was_call,
                    format!("unique id is {} characters, at most {MAX_UNIQUE_ID_LEN} allowed", s.chars().count()),
                ));
            }
            Some(_) => {
                return Err(FrameError::new(
                    ErrorCode::FormationViolation,
                    None,
                    was_call,
                    "unique id (element 1) must be a string",
                ));
            }
            None => {
                return Err(FrameError::new(
                    ErrorCode::FormationViolation,
                    None,
                    was_call,
                    "message has no unique id (element 1)",
                ));
            }
        };
        let err = |code, msg: String| Err(FrameError::new(code, unique_id.clone(), was_call, msg));
        match type_id {
            Some(2) => {
                if items.len() != 4 {
                    return err(
                        ErrorCode::FormationViolation,
                        format!("a CALL has 4 elements, this one has {}", items.len()),
                    );
                }
                let payload = items.pop().unwrap_or(Value::Null);
                let action = match &items[2] {
                    Value::String(a) if !a.is_empty() => a.clone(),
                    _ => {
                        return err(
                            ErrorCode::FormationViolation,
                            "action (element 2) must be a non-empty string".into(),
                        );
                    }
                };
                if !payload.is_object() {
                    return err(ErrorCode::FormationViolation, "CALL payload (element 3) must be a JSON object".into());
                }
                Ok(Frame::Call(Call { unique_id: unique_id.unwrap_or_default(), action, payload }))
            }
            Some(3) => {
                if items.len() != 3 {
                    return err(
                        ErrorCode::FormationViolation,
                        format!("a CALLRESULT has 3 elements, this one has {}", items.len()),
                    );
                }
                let payload = items.pop().unwrap_or(Value::Null);
                if !payload.is_object() {
                    return err(ErrorCode::FormationViolation, "CALLRESULT payload must be a JSON object".into());
                }
                Ok(Frame::CallResult(CallResult { unique_id: unique_id.unwrap_or_default(), payload }))
            }
            Some(4) => {
                if items.len() != 5 {
                    return err(
                        ErrorCode::FormationViolation,
                        format!("a CALLERROR has 5 elements, this one has {}", items.len()),
                    );
                }
                let details = items.pop().unwrap_or(Value::Null);
                let description = match &items[3] {
                    Value::String(d) => d.clone(),
                    _ => return err(ErrorCode::FormationViolation, "error description must be a string".into()),
                };
                let code = match &items[2] {
                    Value::String(c) => ErrorCode::from_wire(c),
                    _ => return err(ErrorCode::FormationViolation, "error code must be a string".into()),
                };
                Ok(Frame::CallError(CallError { unique_id: unique_id.unwrap_or_default(), code, description, details }))
            }
            Some(other) => err(ErrorCode::FormationViolation, format!("unknown message type id {other}")),
            None => err(ErrorCode::FormationViolation, "message type id (element 0) must be 2, 3 or 4".into()),
        }
    }

    /// Serialises the frame for the wire.
    pub fn to_text(&self) -> String {
        let value = match self {
            Frame::Call(c) => Value::Array(vec![
                Value::from(2),
                Value::from(c.unique_id.as_str()),
                Value::from(c.action.as_str()),
                c.payload.clone(),
            ]),
            Frame::CallResult(r) => {
                Value::Array(vec![Value::from(3), Value::from(r.unique_id.as_str()), r.payload.clone()])
            }
            Frame::CallError(e) => Value::Array(vec![
                Value::from(4),
                Value::from(e.unique_id.as_str()),
                Value::from(e.code.as_str()),
                Value::from(e.description.as_str()),
                if e.details.is_object() { e.details.clone() } else { Value::Object(Default::default()) },
            ]),
        };
        value.to_string()
    }

    /// The unique id of any frame.
    pub fn unique_id(&self) -> &str {
        match self {
            Frame::Call(c) => &c.unique_id,
            Frame::CallResult(r) => &r.unique_id,
            Frame::CallError(e) => &e.unique_id,
        }
    }
}

/// Decodes a typed payload, mapping a serde failure to the CALLERROR code the spec names
/// for it (OCPP-J §4.2.3): a missing field is an `OccurenceConstraintViolation`, a wrong
/// JSON type a `TypeConstraintViolation`, an out-of-range value (unknown enum value,
/// over-long string) a `PropertyConstraintViolation`.
pub fn decode_payload<T: serde::de::DeserializeOwned>(payload: &Value) -> Result<T, (ErrorCode, String)> {
    T::deserialize(payload).map_err(|e| {
        let msg = e.to_string();
        (classify_decode_error(&msg), msg)
    })
}

/// Maps a serde error message to the OCPP error code (see [`decode_payload`]).
///
/// Date-times are strings of the right JSON type whose content is wrong, so every chrono
/// parse error is a `PropertyConstraintViolation`: besides "premature end of input" (no
/// offset) and "input contains invalid characters", that is "trailing input" (junk after
/// the offset), "input is not enough for unique date and time" and "no possible date and
/// time matching input" (e.g. February 30th); "input is out of range" matches "out of range".
pub fn classify_decode_error(msg: &str) -> ErrorCode {
    if msg.starts_with("missing field") || msg.contains("duplicate field") {
        ErrorCode::OccurenceConstraintViolation
    } else if msg.starts_with("invalid type") {
        ErrorCode::TypeConstraintViolation
    } else if msg.starts_with("unknown variant")
        || msg.starts_with("invalid value")
        || msg.starts_with("invalid length")
        || msg.contains("exceeds")
        || msg.contains("premature end of input")
        || msg.contains("input contains invalid characters")
        || msg.contains("trailing input")
        || msg.contains("input is not enough for unique date and time")
        || msg.contains("no possible date and time matching input")
        || msg.contains("out of range")
    {
        ErrorCode::PropertyConstraintViolation
    } else {
        ErrorCode::FormationViolation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_each_frame_type() {
        let call = Frame::parse(r#"[2,"a1","BootNotification",{"chargePointVendor":"X","chargePointModel":"Y"}]"#);
        assert!(matches!(call, Ok(Frame::Call(ref c)) if c.action == "BootNotification" && c.unique_id == "a1"));
        let res = Frame::parse(r#"[3,"a1",{"status":"Accepted"}]"#);
        assert!(matches!(res, Ok(Frame::CallResult(ref r)) if r.payload["status"] == "Accepted"));
        let err = Frame::parse(r#"[4,"a1","FormatViolation","bad",{}]"#);
        assert!(matches!(err, Ok(Frame::CallError(ref e)) if e.code == ErrorCode::FormationViolation));
    }

    #[test]
    fn malformed_frames_get_precise_codes() {
        let cases: &[(&str, ErrorCode, Option<&str>)] = &[
            ("not json", ErrorCode::FormationViolation, None),
            (r#"{"a":1}"#, ErrorCode::FormationViolation, None),
            (r#"[2]"#, ErrorCode::FormationViolation, None),
            (r#"[2,"id","Heartbeat"]"#, ErrorCode::FormationViolation, Some("id")),
            (r#"[2,"id","Heartbeat",[]]"#, ErrorCode::FormationViolation, Some("id")),
            (r#"[2,"id",7,{}]"#, ErrorCode::FormationViolation, Some("id")),
            (r#"[9,"id",{}]"#, ErrorCode::FormationViolation, Some("id")),
            (r#"[2,"0123456789012345678901234567890123456789","Heartbeat",{}]"#, ErrorCode::FormationViolation, None),
        ];
        for (text, code, id) in cases {
            let e = Frame::parse(text).expect_err(text);
            assert_eq!(e.code, *code, "{text}");
            assert_eq!(e.unique_id.as_deref(), *id, "{text}");
        }
    }

    #[test]
    fn error_code_wire_names_round_trip() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_wire(code.as_str()), code);
        }
        assert_eq!(ErrorCode::from_wire("SomethingElse"), ErrorCode::GenericError);
    }

    #[test]
    fn decode_errors_are_classified() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct P {
            a: i32,
        }
        let missing = decode_payload::<P>(&serde_json::json!({})).expect_err("missing");
        assert_eq!(missing.0, ErrorCode::OccurenceConstraintViolation);
        let wrong = decode_payload::<P>(&serde_json::json!({"a": "x"})).expect_err("wrong type");
        assert_eq!(wrong.0, ErrorCode::TypeConstraintViolation);
    }

    #[test]
    fn bad_date_times_are_property_violations() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            t: chrono::DateTime<chrono::Utc>,
        }
        for bad in [
            "yesterday",
            "2024-03-05T09:12:00",
            "2024-03-05T09:12:00Zjunk",
            "2024-02-30T09:12:00Z",
            "2024-03-05T25:12:00Z",
            "",
        ] {
            let e = decode_payload::<T>(&serde_json::json!({ "t": bad })).expect_err(bad);
            assert_eq!(e.0, ErrorCode::PropertyConstraintViolation, "{bad:?}: {}", e.1);
        }
        let e = decode_payload::<T>(&serde_json::json!({ "t": 1_700_000_000 })).expect_err("number");
        assert_eq!(e.0, ErrorCode::TypeConstraintViolation, "{}", e.1);
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,200}") {
            let _ = Frame::parse(&s);
        }

        #[test]
        fn frames_round_trip(id in "[a-zA-Z0-9-]{1,36}", action in "[A-Za-z]{1,30}", n in any::<i64>()) {
            let f = Frame::Call(Call { unique_id: id.clone(), action, payload: serde_json::json!({"n": n}) });
            prop_assert_eq!(Frame::parse(&f.to_text()), Ok(f));
            let r = Frame::CallResult(CallResult { unique_id: id.clone(), payload: serde_json::json!({"n": n}) });
            prop_assert_eq!(Frame::parse(&r.to_text()), Ok(r));
            let e = Frame::CallError(CallError::new(id, ErrorCode::NotImplemented, "nope"));
            prop_assert_eq!(Frame::parse(&e.to_text()), Ok(e));
        }
    }
}
