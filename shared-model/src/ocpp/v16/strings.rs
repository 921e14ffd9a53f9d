//! Case-insensitive bounded strings (OCPP 1.6 §7.7–7.11: CiString20Type ... CiString500Type).
//! Each checks its length when deserialised, so an over-long value is refused with a
//! message the framing layer classifies as `PropertyConstraintViolation`.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

macro_rules! ci_string {
    ($name:ident, $max:expr) => {
        #[doc = concat!("A string of at most ", stringify!($max), " characters (OCPP 1.6 `", stringify!($name), "Type`).")]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Longest value allowed.
            pub const MAX_LEN: usize = $max;

            /// Checks the length.
            pub fn try_new(s: impl Into<String>) -> Result<Self, String> {
                let s = s.into();
                let len = s.chars().count();
                if len > $max {
                    Err(format!("string of {len} characters exceeds the maximum length {}", $max))
                } else {
                    Ok($name(s))
                }
            }

            /// The value.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The owned value.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::try_new(s).map_err(serde::de::Error::custom)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = String;
            fn try_from(s: &str) -> Result<Self, String> {
                $name::try_new(s)
            }
        }
    };
}

ci_string!(CiString20, 20);
ci_string!(CiString25, 25);
ci_string!(CiString50, 50);
ci_string!(CiString255, 255);
ci_string!(CiString500, 500);

/// An idTag (OCPP 1.6 §7.29 IdToken = CiString20Type).
pub type IdToken = CiString20;
