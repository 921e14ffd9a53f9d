//! OCPI 2.2.1 tariffs and the engine that prices a charging session with one.
//!
//! Pure: a tariff and a session timeline in, CDR-ready charging periods and totals out. No
//! clock, no IO. Money and volumes are [`rust_decimal::Decimal`] from JSON to total — the JSON
//! numbers are read from their text ([`decimal_json`]), never through `f64`.
//!
//! # How a session is priced
//!
//! 1. The session (start, end, the location's IANA time zone, cumulative meter readings,
//!    optional power and current samples, an optional reservation) is cut at every instant
//!    where a price can change: each meter reading and sample, each `min_duration` /
//!    `max_duration` mark, the instant the energy consumed crosses each `min_kwh` / `max_kwh`,
//!    and each local `start_time` / `end_time` and local midnight (for dates and days of the
//!    week) — resolved in the location's zone, so a 22:00–06:00 window lasts 9 hours on the
//!    night the clocks go back and 7 on the night they go forward.
//! 2. Each piece is charging (the register moved) or parking (it did not), or reservation.
//!    Per dimension the first element whose restrictions all hold and which has a component
//!    for that dimension prices it (§11.3.1). Adjacent pieces with the same phase and the same
//!    components merge into one period.
//! 3. step_size as the 2.2.1 errata describes it: each dimension's session total is rounded up
//!    to the step_size of the component active in the last period where that dimension is
//!    priced, and the rounding is billed in that period; `TIME` and `PARKING_TIME` form one
//!    time-based sequence, so charging time followed by priced parking is not rounded.
//! 4. Each component's cost gets its own VAT; a `FLAT` fee is billed once for the session
//!    (and once for a reservation); `min_price` / `max_price` bound the total excl. and
//!    incl. VAT separately.
//!
//! Restriction bounds are inclusive below and exclusive above (`min_kwh <= kWh < max_kwh`,
//! same for duration, power and current). A day-of-week restriction is evaluated at each local
//! instant: a session from Friday 23:00 to Saturday 01:00 leaves a Friday-only element at
//! local midnight.
//!
//! # Speed
//!
//! [`Pricer::price_totals`] is the hot path (issue 5: at least 100 000 sessions per second per
//! core). What keeps it fast, without changing a single decimal (value or scale) against the
//! straightforward engine kept in `tests/tariff_reference/` and compared by the property tests
//! in `tests/tariff_fast_path.rs`:
//! - [`CompiledTariff`] holds restrictions as integers (local day number, time of day) and, per
//!   kind of period, the list of elements whose reservation restriction admits it;
//!   evaluation stops once every dimension has its element.
//! - The [`Pricer`] caches, per recent local day and zone, the UTC instants of local midnight
//!   and of the tariff's restriction times (the DST-aware part of cutting a session); each cut
//!   then costs one UTC-offset lookup.
//! - Arithmetic returns a zero-sized overflow error; same-scale sums and differences of
//!   non-negative amounts, and the final rounding to four decimals, are done on the integer
//!   mantissas exactly as rust_decimal would (checked against it in unit tests).
//!
//! Measure it with `cargo run --release -p shared-model --example tariff-bench`: sessions per
//! second per core of `price_totals` and `price`, beside the engine before its fast path and a
//! flat-price floor, measured in the same run.
//!
//! # Why our own engine
//!
//! Evaluated November 2026 on crates.io: TandemDrive's `ocpi-tariffs` (MIT/Apache-2.0, actively
//! released, 0.54) and `ocpi-kit` (MIT/Apache-2.0, 0.4, young). Neither fits:
//! - every `ocpi-kit` release and `ocpi-tariffs` 0.49+ need Rust 1.96; we build with 1.95.
//!   `ocpi-tariffs` 0.48.0 does build with 1.95 and chrono 0.4.45 (checked in a scratch project).
//! - `ocpi-tariffs` 0.48 pins `rust_decimal = "=1.39.0"` and turns on rust_decimal's
//!   `serde-with-arbitrary-precision`, which switches serde_json's `arbitrary_precision` on
//!   for the whole workspace (the same problem CRATES.md records for `rust-ocpp`).
//! - `ocpi-tariffs` prices an existing CDR's periods, or generates a synthetic CDR from a
//!   constant-power model (`requested_kwh`, `max_power_supply_kw`); it does not build periods
//!   from a session's meter values, which is the part we need. Its API is a JSON-tree with
//!   warnings, meant for linting and checking third-party CDRs, not for an allocation-light
//!   hot path.
//!
//! Its step_size code (`price.rs`, `apply_step_sizes`) was read to confirm our reading of the
//! errata; no code was taken. So the engine is ours, with `rust_decimal` and `chrono-tz`, and
//! the public API is ours either way.
//!
//! # Example
//!
//! ```
//! use shared_model::tariff::{CompiledTariff, MeterReading, Pricer, Session, Tariff};
//! use rust_decimal::Decimal;
//!
//! let tariff: Tariff = serde_json::from_str(r#"{
//!   "country_code": "DE", "party_id": "ALL", "id": "16", "currency": "EUR",
//!   "elements": [{"price_components": [{"type": "ENERGY", "price": 0.25, "vat": 10, "step_size": 1}]}],
//!   "last_updated": "2018-12-17T11:16:55Z"
//! }"#).expect("tariff");
//! let tariff = CompiledTariff::try_new(&tariff).expect("valid tariff");
//! let start = "2024-03-01T10:00:00Z".parse().expect("time");
//! let end = "2024-03-01T12:00:00Z".parse().expect("time");
//! let meter = vec![
//!     MeterReading { at: start, energy_wh: Decimal::ZERO },
//!     MeterReading { at: end, energy_wh: Decimal::from(20_000) },
//! ];
//! let session = Session::try_new(start, end, "Europe/Berlin", meter).expect("session");
//! let priced = Pricer::new().price(&tariff, &session).expect("priced");
//! assert_eq!(priced.totals.total_cost.excl_vat, Decimal::new(500, 2)); // 5.00
//! assert_eq!(priced.totals.total_cost.incl_vat, Some(Decimal::new(550, 2))); // 5.50
//! ```

mod compiled;
pub mod decimal_json;
mod engine;
pub mod model;
mod session;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

pub use compiled::CompiledTariff;
pub use engine::{PeriodCost, Phase, PricedSession, Pricer, Totals};
pub use model::{
    CdrDimension, CdrDimensionType, ChargingPeriod, DayOfWeek, DisplayText, EnergyMix, LocalDate, Price,
    PriceComponent, ReservationRestrictionType, Tariff, TariffDimensionType, TariffElement, TariffRestrictions,
    TariffType, TimeOfDay,
};
pub use session::{MeterReading, Reservation, Sample, Session, parse_time_zone};

/// Why a session could not be priced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TariffError {
    #[error("unknown time zone {0:?}; expected an IANA name such as Europe/Amsterdam")]
    UnknownTimeZone(String),
    #[error("end {end} is before start {start}")]
    EndBeforeStart { start: DateTime<Utc>, end: DateTime<Utc> },
    #[error("meter readings must start at the session start {start} and end at its end {end}")]
    MeterDoesNotCoverSession { start: DateTime<Utc>, end: DateTime<Utc> },
    #[error("{what} are not in time order at {at}")]
    OutOfOrder { what: &'static str, at: DateTime<Utc> },
    #[error("meter went backwards at {at}: {from_wh} Wh then {to_wh} Wh")]
    MeterWentBackwards { at: DateTime<Utc>, from_wh: Decimal, to_wh: Decimal },
    #[error("two meter readings at {at} differ: energy cannot be delivered in no time")]
    MeterJump { at: DateTime<Utc> },
    #[error("{what} has a negative value at {at}")]
    NegativeSample { what: &'static str, at: DateTime<Utc> },
    #[error("an expired reservation cannot be followed by charging")]
    ExpiredReservationWithCharging,
    #[error("reservation ends at {reservation_end}, after the session started at {session_start}")]
    ReservationOverlapsSession { reservation_end: DateTime<Utc>, session_start: DateTime<Utc> },
    #[error("tariff currency {tariff} does not match the session's currency {session}")]
    CurrencyMismatch { tariff: String, session: String },
    #[error("tariff {tariff_id} is not active at {at} (outside its start_date_time/end_date_time)")]
    TariffNotActive { tariff_id: String, at: DateTime<Utc> },
    #[error("no element of tariff {tariff_id} applies at any moment of the session")]
    NoElementApplies { tariff_id: String },
    #[error("tariff {tariff_id} is invalid: {reason}")]
    InvalidTariff { tariff_id: String, reason: String },
    #[error("a price or volume is too large to compute exactly")]
    Overflow,
}
