//! Validated identifiers. Each checks itself in `FromStr` and `Deserialize`, so an invalid
//! id never gets past the edge of the system.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} is {len} characters long, at most {max} allowed")]
    TooLong { kind: &'static str, len: usize, max: usize },
    #[error("{kind} contains {ch:?}; allowed are letters, digits and * - _ = : + | @ .")]
    BadChar { kind: &'static str, ch: char },
}

/// A charge point (charging station) identity: the last path segment of the OCPP URL.
/// Uses OCPP 2.0.1's `identifierString` alphabet and its 48-character limit, which is
/// also safe in URLs, MQTT topics and file names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ChargePointId(String);

impl ChargePointId {
    /// Longest identity accepted.
    pub const MAX_LEN: usize = 48;

    /// The identity as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_identifier(kind: &'static str, s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    let len = s.chars().count();
    if len > max {
        return Err(IdError::TooLong { kind, len, max });
    }
    if let Some(ch) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || "*-_=:+|@.".contains(*c))) {
        return Err(IdError::BadChar { kind, ch });
    }
    Ok(())
}

impl FromStr for ChargePointId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_identifier("charge point id", s, Self::MAX_LEN)?;
        Ok(ChargePointId(s.to_owned()))
    }
}

impl<'de> Deserialize<'de> for ChargePointId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ChargePointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ChargePointId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid_ids() {
        assert!("CP-001".parse::<ChargePointId>().is_ok());
        assert!("a.b:c@d|e+f=g*h_i".parse::<ChargePointId>().is_ok());
        assert_eq!("".parse::<ChargePointId>(), Err(IdError::Empty { kind: "charge point id" }));
        assert!(matches!("a/b".parse::<ChargePointId>(), Err(IdError::BadChar { ch: '/', .. })));
        assert!(matches!("x".repeat(49).parse::<ChargePointId>(), Err(IdError::TooLong { len: 49, .. })));
        let bad: Result<ChargePointId, _> = serde_json::from_str("\"a b\"");
        assert!(bad.is_err());
    }
}
