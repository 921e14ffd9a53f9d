//! Restrictions in the location's local time: windows that wrap past midnight, the nights the
//! clocks change, days of the week and dates across midnight; and the engine's typed errors.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use shared_model::tariff::{
    CompiledTariff, MeterReading, PricedSession, Pricer, Reservation, Session, Tariff, TariffError,
};
use std::str::FromStr;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).expect("decimal literal")
}

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().expect("UTC timestamp")
}

fn compile(elements: &str) -> CompiledTariff {
    let json = format!(
        r#"{{"country_code":"NL","party_id":"SPL","id":"T1","currency":"EUR","elements":{elements},
            "last_updated":"2024-01-01T00:00:00Z"}}"#
    );
    let tariff: Tariff = serde_json::from_str(&json).expect("tariff");
    CompiledTariff::try_new(&tariff).expect("valid")
}

/// Charging at a steady 3.6 kW (1 Wh per second) from `start` to `end` (UTC), in `tz`.
fn charging(tz: &str, start: &str, end: &str) -> Session {
    let (start, end) = (utc(start), utc(end));
    let wh = (end - start).num_seconds();
    let meter = vec![
        MeterReading { at: start, energy_wh: Decimal::ZERO },
        MeterReading { at: end, energy_wh: Decimal::from(wh) },
    ];
    Session::try_new(start, end, tz, meter).expect("session")
}

fn price(t: &CompiledTariff, s: &Session) -> PricedSession {
    Pricer::new().price(t, s).expect("priced")
}

/// 1.00/h between 22:00 and 06:00 local, 3.00/h otherwise; billed per second.
const NIGHT_WINDOW: &str = r#"[
  {"price_components":[{"type":"TIME","price":1.00,"step_size":1}],
   "restrictions":{"start_time":"22:00","end_time":"06:00"}},
  {"price_components":[{"type":"TIME","price":3.00,"step_size":1}]}
]"#;

#[test]
fn window_wrapping_midnight_on_an_ordinary_night() {
    // Amsterdam, CEST (UTC+2): 20:00–08:00 local. 8 h night at 1.00 + 4 h day at 3.00 = 20.00.
    let t = compile(NIGHT_WINDOW);
    let p = price(&t, &charging("Europe/Amsterdam", "2024-06-14T18:00:00Z", "2024-06-15T06:00:00Z"));
    assert_eq!(p.totals.total_cost.excl_vat, d("20"));
    let starts: Vec<DateTime<Utc>> = p.charging_periods.iter().map(|c| c.start_date_time).collect();
    assert_eq!(starts, [utc("2024-06-14T18:00:00Z"), utc("2024-06-14T20:00:00Z"), utc("2024-06-15T04:00:00Z")]);
}

#[test]
fn window_wrapping_midnight_on_the_fall_back_night() {
    // 27 Oct 2024, Amsterdam: 03:00 CEST becomes 02:00 CET. 20:00 CEST (18:00Z) to 08:00 CET
    // (07:00Z) is 13 real hours; the 22:00–06:00 window lasts 9 of them (20:00Z–05:00Z).
    // 9 * 1.00 + 4 * 3.00 = 21.00.
    let t = compile(NIGHT_WINDOW);
    let p = price(&t, &charging("Europe/Amsterdam", "2024-10-26T18:00:00Z", "2024-10-27T07:00:00Z"));
    assert_eq!(p.totals.total_cost.excl_vat, d("21"));
    assert_eq!(p.charging_periods[1].start_date_time, utc("2024-10-26T20:00:00Z"));
    assert_eq!(p.charging_periods[2].start_date_time, utc("2024-10-27T05:00:00Z"));
}

#[test]
fn window_wrapping_midnight_on_the_spring_forward_night() {
    // 31 Mar 2024, Amsterdam: 02:00 CET becomes 03:00 CEST. 20:00 CET (19:00Z) to 08:00 CEST
    // (06:00Z) is 11 real hours; the window lasts 7 of them (21:00Z–04:00Z).
    // 7 * 1.00 + 4 * 3.00 = 19.00.
    let t = compile(NIGHT_WINDOW);
    let p = price(&t, &charging("Europe/Amsterdam", "2024-03-30T19:00:00Z", "2024-03-31T06:00:00Z"));
    assert_eq!(p.totals.total_cost.excl_vat, d("19"));
    assert_eq!(p.charging_periods[1].start_date_time, utc("2024-03-30T21:00:00Z"));
    assert_eq!(p.charging_periods[2].start_date_time, utc("2024-03-31T04:00:00Z"));
}

#[test]
fn window_edge_inside_the_skipped_hour_flips_when_the_clock_jumps() {
    // 02:30 does not exist on 31 Mar 2024 in Amsterdam. A window starting at 02:30 opens at
    // the jump, 01:00Z (= 03:00 CEST), and closes at 04:00 CEST (02:00Z).
    // 00:00Z–01:00Z at 3.00 + 01:00Z–02:00Z at 1.00 + 02:00Z–03:00Z at 3.00 = 7.00.
    let t = compile(
        r#"[{"price_components":[{"type":"TIME","price":1.00,"step_size":1}],
              "restrictions":{"start_time":"02:30","end_time":"04:00"}},
             {"price_components":[{"type":"TIME","price":3.00,"step_size":1}]}]"#,
    );
    let p = price(&t, &charging("Europe/Amsterdam", "2024-03-31T00:00:00Z", "2024-03-31T03:00:00Z"));
    assert_eq!(p.totals.total_cost.excl_vat, d("7"));
    assert_eq!(p.charging_periods[1].start_date_time, utc("2024-03-31T01:00:00Z"));
}

#[test]
fn window_edge_inside_the_repeated_hour_is_a_boundary_both_times() {
    // 02:30 happens twice on 27 Oct 2024 in Amsterdam (00:30Z CEST and 01:30Z CET). A window
    // 02:30–02:45 therefore applies twice: 00:30Z–00:45Z and 01:30Z–01:45Z.
    // 3 h at 3.00 = 9.00, minus 2 * 15 min at (3.00 - 1.00) = 1.00 → 8.00.
    let t = compile(
        r#"[{"price_components":[{"type":"TIME","price":1.00,"step_size":1}],
              "restrictions":{"start_time":"02:30","end_time":"02:45"}},
             {"price_components":[{"type":"TIME","price":3.00,"step_size":1}]}]"#,
    );
    let p = price(&t, &charging("Europe/Amsterdam", "2024-10-27T00:00:00Z", "2024-10-27T03:00:00Z"));
    assert_eq!(p.totals.total_cost.excl_vat, d("8"));
    assert_eq!(p.charging_periods.len(), 5);
}

#[test]
fn day_of_week_across_midnight() {
    // Friday 8 Mar 2024 23:00 CET (22:00Z) to Saturday 01:00 CET (00:00Z). A Friday-only element
    // stops at local midnight (23:00Z): 1 h at 1.00 + 1 h at 2.00 = 3.00.
    let t = compile(
        r#"[{"price_components":[{"type":"TIME","price":1.00,"step_size":1}],
              "restrictions":{"day_of_week":["FRIDAY"]}},
             {"price_components":[{"type":"TIME","price":2.00,"step_size":1}]}]"#,
    );
    let p = price(&t, &charging("Europe/Berlin", "2024-03-08T22:00:00Z", "2024-03-09T00:00:00Z"));
    assert_eq!(p.totals.total_cost.excl_vat, d("3"));
    assert_eq!(p.charging_periods[1].start_date_time, utc("2024-03-08T23:00:00Z"));
}

#[test]
fn dates_in_local_time_with_exclusive_end() {
    // Valid from local 9 Mar (inclusive) until local 10 Mar (exclusive): the same Friday-night
    // session pays 2.00 before local midnight and 1.00 after.
    let t = compile(
        r#"[{"price_components":[{"type":"TIME","price":1.00,"step_size":1}],
              "restrictions":{"start_date":"2024-03-09","end_date":"2024-03-10"}},
             {"price_components":[{"type":"TIME","price":2.00,"step_size":1}]}]"#,
    );
    let p = price(&t, &charging("Europe/Berlin", "2024-03-08T22:00:00Z", "2024-03-09T00:00:00Z"));
    assert_eq!(p.totals.total_cost.excl_vat, d("3"));
    // On 10 Mar 00:00 local the element stops again.
    let p = price(&t, &charging("Europe/Berlin", "2024-03-09T22:00:00Z", "2024-03-10T00:00:00Z"));
    assert_eq!(p.totals.total_cost.excl_vat, d("3"));
    assert_eq!(p.charging_periods[1].start_date_time, utc("2024-03-09T23:00:00Z"));
}

#[test]
fn same_tariff_in_another_zone_moves_the_edges() {
    // 22:00 in New York (EDT, UTC-4) is 02:00Z.
    let t = compile(NIGHT_WINDOW);
    let p = price(&t, &charging("America/New_York", "2024-06-15T00:00:00Z", "2024-06-15T04:00:00Z"));
    assert_eq!(p.charging_periods[1].start_date_time, utc("2024-06-15T02:00:00Z"));
    assert_eq!(p.totals.total_cost.excl_vat, d("8"));
}

#[test]
fn long_session_gets_one_split_per_edge() {
    // Three days of charging under a 22:00–06:00 window: 7 periods alternating day and night.
    let t = compile(NIGHT_WINDOW);
    let p = price(&t, &charging("Europe/Amsterdam", "2024-06-14T10:00:00Z", "2024-06-17T10:00:00Z"));
    assert_eq!(p.charging_periods.len(), 7);
    // 72 h: 24 h of night (3 * 8) at 1.00 + 48 h at 3.00 = 168.
    assert_eq!(p.totals.total_cost.excl_vat, d("168"));
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

fn meter(at: &str, wh: i64) -> MeterReading {
    MeterReading { at: utc(at), energy_wh: Decimal::from(wh) }
}

#[test]
fn unknown_time_zone() {
    let r = Session::try_new(
        utc("2024-01-01T00:00:00Z"),
        utc("2024-01-01T01:00:00Z"),
        "Europe/Atlantis",
        vec![meter("2024-01-01T00:00:00Z", 0), meter("2024-01-01T01:00:00Z", 10)],
    );
    assert_eq!(r, Err(TariffError::UnknownTimeZone("Europe/Atlantis".into())));
}

#[test]
fn end_before_start() {
    let r = Session::try_new(utc("2024-01-01T01:00:00Z"), utc("2024-01-01T00:00:00Z"), "UTC", vec![]);
    assert!(matches!(r, Err(TariffError::EndBeforeStart { .. })));
}

#[test]
fn meter_going_backwards() {
    let r = Session::try_new(
        utc("2024-01-01T00:00:00Z"),
        utc("2024-01-01T02:00:00Z"),
        "UTC",
        vec![meter("2024-01-01T00:00:00Z", 100), meter("2024-01-01T01:00:00Z", 90), meter("2024-01-01T02:00:00Z", 200)],
    );
    assert!(matches!(r, Err(TariffError::MeterWentBackwards { .. })), "{r:?}");
}

#[test]
fn meter_jumping_at_one_instant() {
    let r = Session::try_new(
        utc("2024-01-01T00:00:00Z"),
        utc("2024-01-01T02:00:00Z"),
        "UTC",
        vec![
            meter("2024-01-01T00:00:00Z", 0),
            meter("2024-01-01T01:00:00Z", 90),
            meter("2024-01-01T01:00:00Z", 190),
            meter("2024-01-01T02:00:00Z", 200),
        ],
    );
    assert!(matches!(r, Err(TariffError::MeterJump { .. })), "{r:?}");
}

#[test]
fn meter_not_covering_the_session() {
    let r = Session::try_new(
        utc("2024-01-01T00:00:00Z"),
        utc("2024-01-01T02:00:00Z"),
        "UTC",
        vec![meter("2024-01-01T00:00:00Z", 0), meter("2024-01-01T01:00:00Z", 90)],
    );
    assert!(matches!(r, Err(TariffError::MeterDoesNotCoverSession { .. })), "{r:?}");
}

#[test]
fn currency_mismatch() {
    let t = compile(NIGHT_WINDOW);
    let s = charging("UTC", "2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z").with_currency("USD");
    assert_eq!(
        Pricer::new().price(&t, &s),
        Err(TariffError::CurrencyMismatch { tariff: "EUR".into(), session: "USD".into() })
    );
}

#[test]
fn no_element_applies() {
    let t = compile(
        r#"[{"price_components":[{"type":"ENERGY","price":0.30,"step_size":1}],
              "restrictions":{"start_date":"2030-01-01"}}]"#,
    );
    let s = charging("UTC", "2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z");
    assert_eq!(Pricer::new().price(&t, &s), Err(TariffError::NoElementApplies { tariff_id: "T1".into() }));
}

#[test]
fn malformed_restrictions_are_rejected_when_parsed() {
    for bad in [r#""start_time":"24:00""#, r#""start_time":"7:30""#, r#""end_date":"2024-13-01""#] {
        let json = format!(
            r#"{{"country_code":"NL","party_id":"SPL","id":"T1","currency":"EUR","last_updated":"2024-01-01T00:00:00Z",
                "elements":[{{"price_components":[{{"type":"TIME","price":1,"step_size":1}}],"restrictions":{{{bad}}}}}]}}"#
        );
        assert!(serde_json::from_str::<Tariff>(&json).is_err(), "{bad} must be rejected");
    }
}

#[test]
fn invalid_tariffs_are_rejected_when_compiled() {
    let json = r#"{"country_code":"NL","party_id":"SPL","id":"T1","currency":"EUR","elements":[],
                   "last_updated":"2024-01-01T00:00:00Z"}"#;
    let t: Tariff = serde_json::from_str(json).expect("parses");
    assert!(matches!(CompiledTariff::try_new(&t), Err(TariffError::InvalidTariff { .. })));
    let json = r#"{"country_code":"NL","party_id":"SPL","id":"T1","currency":"EUR","last_updated":"2024-01-01T00:00:00Z",
                   "elements":[{"price_components":[{"type":"ENERGY","price":1,"step_size":1}],
                                "restrictions":{"reservation":"RESERVATION"}}]}"#;
    let t: Tariff = serde_json::from_str(json).expect("parses");
    assert!(matches!(CompiledTariff::try_new(&t), Err(TariffError::InvalidTariff { .. })));
}

#[test]
fn expired_reservation_followed_by_charging() {
    let s = charging("UTC", "2024-01-01T01:00:00Z", "2024-01-01T02:00:00Z").with_reservation(Reservation {
        start: utc("2024-01-01T00:00:00Z"),
        end: utc("2024-01-01T01:00:00Z"),
        expired: true,
    });
    assert_eq!(s.validate(), Err(TariffError::ExpiredReservationWithCharging));
}

#[test]
fn the_pricer_reuses_its_buffers_across_sessions() {
    // Same results from one pricer as from fresh ones, whatever was priced before.
    let t = compile(NIGHT_WINDOW);
    let sessions = [
        charging("Europe/Amsterdam", "2024-06-14T10:00:00Z", "2024-06-17T10:00:00Z"),
        charging("Europe/Amsterdam", "2024-10-26T18:00:00Z", "2024-10-27T07:00:00Z"),
        charging("UTC", "2024-01-01T00:00:00Z", "2024-01-01T00:30:00Z"),
    ];
    let mut shared = Pricer::new();
    for s in &sessions {
        let a = shared.price_totals(&t, s).expect("priced");
        let b = Pricer::new().price_totals(&t, s).expect("priced");
        assert_eq!(a, b);
    }
}
