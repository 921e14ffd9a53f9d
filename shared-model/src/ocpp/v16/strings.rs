//! Bounded strings. The core spec's case-insensitive `CiString20Type` ... `CiString500Type`
//! (OCPP 1.6 §7.15–7.19), and the plain `string[N]` fields of the 1.6 security whitepaper
//! (certificates, hashes, URLs, signatures), which are case-sensitive and longer.
//!
//! Each checks its length when deserialised, so an over-long value is refused with a
//! message the framing layer classifies as `PropertyConstraintViolation`. Length is
//! counted in characters (Unicode scalar values), as JSON Schema's `maxLength` does.
//! Case-insensitivity is a matter of comparison, not of storage: values are kept verbatim.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

macro_rules! bounded_string {
    ($name:ident, $max:expr, $origin:expr) => {
        #[doc = concat!("A string of at most ", stringify!($max), " characters (", $origin, ").")]
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

bounded_string!(CiString20, 20, "OCPP 1.6 `CiString20Type`");
bounded_string!(CiString25, 25, "OCPP 1.6 `CiString25Type`");
bounded_string!(CiString50, 50, "OCPP 1.6 `CiString50Type`");
bounded_string!(CiString255, 255, "OCPP 1.6 `CiString255Type`");
bounded_string!(CiString500, 500, "OCPP 1.6 `CiString500Type`");

bounded_string!(String40, 40, "security whitepaper `string[40]`: a certificate serial number");
bounded_string!(String128, 128, "security whitepaper `string[128]`: an issuer name or key hash");
bounded_string!(String512, 512, "security whitepaper `string[512]`: a remote URL");
bounded_string!(String800, 800, "security whitepaper `string[800]`: a Base64 firmware signature");
bounded_string!(String5500, 5500, "security whitepaper `string[5500]`: one PEM certificate or CSR");
bounded_string!(String10000, 10000, "security whitepaper `string[10000]`: a PEM certificate chain");

/// An idTag (OCPP 1.6 §7.28 IdToken = CiString20Type).
pub type IdToken = CiString20;
