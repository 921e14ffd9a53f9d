//! OCPI 2.2.1 Tariff objects (`mod_tariffs.asciidoc` §11.3–11.4) and the CDR pieces the engine
//! fills in (`mod_cdrs.asciidoc` §10.4), with serde exactly as the spec's JSON.
//!
//! Every `number` is a [`Decimal`] read and written through [`super::decimal_json`], so prices
//! never pass through a float. `start_time`/`end_time` and `start_date`/`end_date` check their
//! format when deserialized: a malformed tariff is rejected at the edge, not while pricing.

use super::decimal_json;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// OCPI `DateTime` (types §16.5): RFC 3339 in UTC. The spec allows the `Z` to be left out
/// ("the absence of the timezone designator implies a UTC timestamp"), so both are accepted;
/// serialization always writes the `Z`.
pub mod ocpi_datetime {
    use super::*;
    use serde::de::Error as _;

    /// Parses an OCPI timestamp, with or without a zone designator.
    pub fn parse(s: &str) -> Result<DateTime<Utc>, String> {
        if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
            return Ok(dt.with_timezone(&Utc));
        }
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
            .map(|n| n.and_utc())
            .map_err(|e| format!("{s:?} is not an OCPI DateTime: {e}"))
    }

    /// Writes `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
    pub fn serialize<S: Serializer>(dt: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&dt.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    }

    /// Reads an OCPI timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(D::Error::custom)
    }

    /// The same for optional fields.
    pub mod option {
        use super::*;

        /// Writes `Some` as a timestamp, `None` as `null`.
        pub fn serialize<S: Serializer>(dt: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
            match dt {
                Some(dt) => super::serialize(dt, s),
                None => s.serialize_none(),
            }
        }

        /// Reads `null` as `None`.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
            match Option::<String>::deserialize(d)? {
                Some(s) => parse(&s).map(Some).map_err(D::Error::custom),
                None => Ok(None),
            }
        }
    }
}

/// OCPI `Price` (types §16.13): an amount excluding and, optionally, including VAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    #[serde(with = "decimal_json")]
    pub excl_vat: Decimal,
    #[serde(default, with = "decimal_json::option", skip_serializing_if = "Option::is_none")]
    pub incl_vat: Option<Decimal>,
}

impl Price {
    /// Zero, with VAT known to be zero as well.
    pub const ZERO: Price = Price { excl_vat: Decimal::ZERO, incl_vat: Some(Decimal::ZERO) };

    /// A price with both amounts given.
    pub fn new(excl_vat: Decimal, incl_vat: Decimal) -> Self {
        Price { excl_vat, incl_vat: Some(incl_vat) }
    }
}

/// OCPI `DisplayText` (types §16.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisplayText {
    pub language: String,
    pub text: String,
}

/// `TariffType` (§11.4.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TariffType {
    AdHocPayment,
    ProfileCheap,
    ProfileFast,
    ProfileGreen,
    Regular,
}

/// `TariffDimensionType` (§11.4.5): what a price component prices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TariffDimensionType {
    /// Per kWh; `step_size` in Wh.
    Energy,
    /// A fixed fee per session (or per reservation).
    Flat,
    /// Per hour not charging; `step_size` in seconds.
    ParkingTime,
    /// Per hour charging (or reserved, with a reservation restriction); `step_size` in seconds.
    Time,
}

/// `DayOfWeek` (§11.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DayOfWeek {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

impl DayOfWeek {
    /// The chrono weekday.
    pub fn to_weekday(self) -> chrono::Weekday {
        match self {
            DayOfWeek::Monday => chrono::Weekday::Mon,
            DayOfWeek::Tuesday => chrono::Weekday::Tue,
            DayOfWeek::Wednesday => chrono::Weekday::Wed,
            DayOfWeek::Thursday => chrono::Weekday::Thu,
            DayOfWeek::Friday => chrono::Weekday::Fri,
            DayOfWeek::Saturday => chrono::Weekday::Sat,
            DayOfWeek::Sunday => chrono::Weekday::Sun,
        }
    }
}

/// `ReservationRestrictionType` (§11.4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReservationRestrictionType {
    /// Prices the time (and fee) of a reservation.
    Reservation,
    /// Prices a reservation that expired without a charging session following it.
    ReservationExpires,
}

/// `PriceComponent` (§11.4.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceComponent {
    #[serde(rename = "type")]
    pub dimension: TariffDimensionType,
    /// Price per unit excluding VAT: per kWh, per hour, or per session for `FLAT`.
    #[serde(with = "decimal_json")]
    pub price: Decimal,
    /// VAT percentage. Absent means no VAT applies, which differs from `0.0`.
    #[serde(default, with = "decimal_json::option", skip_serializing_if = "Option::is_none")]
    pub vat: Option<Decimal>,
    /// Billing block: Wh for `ENERGY`, seconds for `TIME` and `PARKING_TIME`, unused for `FLAT`.
    pub step_size: u64,
}

/// A time of day `HH:MM` in the location's local time (§11.4.6 `start_time`/`end_time`,
/// regex `([0-1][0-9]|2[0-3]):[0-5][0-9]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimeOfDay(pub NaiveTime);

impl FromStr for TimeOfDay {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let ok = b.len() == 5 && b[2] == b':' && [0, 1, 3, 4].iter().all(|&i| b[i].is_ascii_digit());
        let parsed = ok
            .then(|| {
                let h = u32::from(b[0] - b'0') * 10 + u32::from(b[1] - b'0');
                let m = u32::from(b[3] - b'0') * 10 + u32::from(b[4] - b'0');
                NaiveTime::from_hms_opt(h, m, 0).filter(|_| h < 24 && m < 60)
            })
            .flatten();
        parsed.map(TimeOfDay).ok_or_else(|| format!("{s:?} is not a time of day HH:MM (00:00 to 23:59)"))
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%H:%M"))
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A calendar date `YYYY-MM-DD` in the location's local time (§11.4.6 `start_date`/`end_date`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalDate(pub NaiveDate);

impl FromStr for LocalDate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 10 {
            return Err(format!("{s:?} is not a date YYYY-MM-DD"));
        }
        NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map(LocalDate)
            .map_err(|e| format!("{s:?} is not a date YYYY-MM-DD: {e}"))
    }
}

impl fmt::Display for LocalDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

impl Serialize for LocalDate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LocalDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// `TariffRestrictions` (§11.4.6). All set restrictions must hold (logical AND).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TariffRestrictions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<TimeOfDay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<TimeOfDay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<LocalDate>,
    /// Exclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<LocalDate>,
    #[serde(default, with = "decimal_json::option", skip_serializing_if = "Option::is_none")]
    pub min_kwh: Option<Decimal>,
    #[serde(default, with = "decimal_json::option", skip_serializing_if = "Option::is_none")]
    pub max_kwh: Option<Decimal>,
    /// Sum over all phases, A.
    #[serde(default, with = "decimal_json::option", skip_serializing_if = "Option::is_none")]
    pub min_current: Option<Decimal>,
    /// Sum over all phases, A.
    #[serde(default, with = "decimal_json::option", skip_serializing_if = "Option::is_none")]
    pub max_current: Option<Decimal>,
    /// kW.
    #[serde(default, with = "decimal_json::option", skip_serializing_if = "Option::is_none")]
    pub min_power: Option<Decimal>,
    /// kW.
    #[serde(default, with = "decimal_json::option", skip_serializing_if = "Option::is_none")]
    pub max_power: Option<Decimal>,
    /// Seconds since the session started (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_duration: Option<u64>,
    /// Seconds since the session started (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub day_of_week: Vec<DayOfWeek>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<ReservationRestrictionType>,
}

/// `TariffElement` (§11.4.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TariffElement {
    pub price_components: Vec<PriceComponent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restrictions: Option<TariffRestrictions>,
}

/// `EnergySource` (locations §8.4.7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnergySource {
    pub source: String,
    #[serde(with = "decimal_json")]
    pub percentage: Decimal,
}

/// `EnvironmentalImpact` (locations §8.4.9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentalImpact {
    pub category: String,
    #[serde(with = "decimal_json")]
    pub amount: Decimal,
}

/// `EnergyMix` (locations §8.4.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnergyMix {
    pub is_green_energy: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub energy_sources: Vec<EnergySource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environ_impact: Vec<EnvironmentalImpact>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplier_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_product_name: Option<String>,
}

/// The OCPI 2.2.1 `Tariff` object (§11.3.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tariff {
    pub country_code: String,
    pub party_id: String,
    pub id: String,
    pub currency: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub tariff_type: Option<TariffType>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tariff_alt_text: Vec<DisplayText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tariff_alt_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_price: Option<Price>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_price: Option<Price>,
    pub elements: Vec<TariffElement>,
    #[serde(default, with = "ocpi_datetime::option", skip_serializing_if = "Option::is_none")]
    pub start_date_time: Option<DateTime<Utc>>,
    #[serde(default, with = "ocpi_datetime::option", skip_serializing_if = "Option::is_none")]
    pub end_date_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_mix: Option<EnergyMix>,
    #[serde(with = "ocpi_datetime")]
    pub last_updated: DateTime<Utc>,
}

/// `CdrDimensionType` (cdrs §10.4.3), all values of 2.2.1. The engine fills `ENERGY`, `TIME`,
/// `PARKING_TIME` and `RESERVATION_TIME`; 2.2.1 has no `FLAT` dimension (a flat fee shows
/// only in `total_fixed_cost`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CdrDimensionType {
    Current,
    Energy,
    EnergyExport,
    EnergyImport,
    MaxCurrent,
    MinCurrent,
    MaxPower,
    MinPower,
    ParkingTime,
    Power,
    ReservationTime,
    StateOfCharge,
    Time,
}

/// `CdrDimension` (cdrs §10.4.2): kWh for energy, hours for the time dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdrDimension {
    #[serde(rename = "type")]
    pub dimension: CdrDimensionType,
    #[serde(with = "decimal_json")]
    pub volume: Decimal,
}

/// `ChargingPeriod` (cdrs §10.4.6): starts at `start_date_time`, lasts until the next period
/// starts (or the session ends).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargingPeriod {
    #[serde(with = "ocpi_datetime")]
    pub start_date_time: DateTime<Utc>,
    pub dimensions: Vec<CdrDimension>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tariff_id: Option<String>,
}
