//! Serde for OCPI `number` fields as exact decimals.
//!
//! OCPI sends prices, VAT percentages and volumes as JSON numbers (`0.25`, not `"0.25"`).
//! Without help, serde_json turns every non-integer number into an `f64` before any visitor
//! sees it. rust_decimal's own serde features either go through `f64` (`serde-float`) or
//! switch on serde_json's `arbitrary_precision` for the whole build (`serde-with-arbitrary-precision`),
//! which changes how every other crate's `serde_json::Value` numbers behave. Instead these
//! helpers read and write the number's JSON text through [`serde_json::value::RawValue`]
//! (serde_json's `raw_value` feature, which is additive): `0.25` is parsed from the characters
//! `0.25` and written back as `0.25`, never as a float.
//!
//! With the serde_json (de)serializer — the only one OCPI uses — the round trip is exact. Other
//! serde formats see a JSON text token and should not be used for these types.

use rust_decimal::Decimal;
use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use std::str::FromStr;

/// Parses a JSON number's text exactly. Accepts the exponent form (`1.5e-3`) too.
pub(crate) fn parse_number(text: &str) -> Result<Decimal, String> {
    let text = text.trim();
    if text.starts_with('"') {
        return Err(format!("expected a JSON number, found the string {text}"));
    }
    let parsed = if text.contains(['e', 'E']) { Decimal::from_scientific(text) } else { Decimal::from_str(text) };
    parsed.map_err(|e| format!("{text} is not a decimal number rust_decimal can hold exactly: {e}"))
}

/// Serializes a decimal as a bare JSON number with its digits unchanged.
pub fn serialize<S: Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    let raw = RawValue::from_string(value.to_string()).map_err(S::Error::custom)?;
    raw.serialize(s)
}

/// Deserializes a JSON number into a decimal without passing through `f64`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    let raw = Box::<RawValue>::deserialize(d)?;
    parse_number(raw.get()).map_err(D::Error::custom)
}

/// The same for `Option<Decimal>`: `null` or an absent field (with `#[serde(default)]`) is `None`.
pub mod option {
    use super::*;

    /// Serializes `Some` as a bare JSON number and `None` as `null`.
    pub fn serialize<S: Serializer>(value: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => super::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    /// Deserializes `null` as `None` and a JSON number exactly.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        let raw = Option::<Box<RawValue>>::deserialize(d)?;
        match raw {
            None => Ok(None),
            Some(raw) if raw.get().trim() == "null" => Ok(None),
            Some(raw) => parse_number(raw.get()).map(Some).map_err(D::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Holder {
        #[serde(with = "super")]
        price: Decimal,
        #[serde(default, with = "option", skip_serializing_if = "Option::is_none")]
        vat: Option<Decimal>,
    }

    #[test]
    fn round_trips_json_numbers_exactly() {
        for text in ["0.25", "0.1", "2.00", "1234567890.123456789", "-0.0001", "0"] {
            let json = format!(r#"{{"price":{text}}}"#);
            let h: Holder = serde_json::from_str(&json).expect("parse");
            assert_eq!(h.price, Decimal::from_str(text).expect("decimal"));
            assert_eq!(serde_json::to_string(&h).expect("write"), json, "digits kept for {text}");
        }
    }

    #[test]
    fn a_value_f64_cannot_hold_survives() {
        // 0.1 + 0.2 in f64 is 0.30000000000000004; 28 significant digits pass unchanged here.
        let json = r#"{"price":0.1234567890123456789012345678,"vat":21}"#;
        let h: Holder = serde_json::from_str(json).expect("parse");
        assert_eq!(h.price.to_string(), "0.1234567890123456789012345678");
        assert_eq!(h.vat, Some(Decimal::from(21)));
        assert_eq!(serde_json::to_string(&h).expect("write"), json);
    }

    #[test]
    fn exponent_null_and_strings() {
        let h: Holder = serde_json::from_str(r#"{"price":2.5e-1,"vat":null}"#).expect("parse");
        assert_eq!(h.price, Decimal::from_str("0.25").expect("decimal"));
        assert_eq!(h.vat, None);
        assert!(serde_json::from_str::<Holder>(r#"{"price":"0.25"}"#).is_err(), "OCPI numbers are not strings");
    }

    #[test]
    fn works_through_serde_json_value_too() {
        let v: serde_json::Value = serde_json::from_str(r#"{"price":0.25}"#).expect("value");
        let h: Holder = serde_json::from_value(v).expect("from value");
        assert_eq!(h.price, Decimal::from_str("0.25").expect("decimal"));
    }
}
