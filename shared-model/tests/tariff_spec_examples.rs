//! Every worked example of the OCPI 2.2.1 tariffs chapter (`mod_tariffs.asciidoc`, "Examples"
//! under the Tariff object, the `step_size` examples under PriceComponent and the restriction
//! examples under TariffRestrictions), with the 2.2.1 errata's corrected figures, and the CDR
//! chapter's example CDR (`mod_cdrs.asciidoc`, `examples/cdr_example.json`).
//!
//! Tariff JSON is the spec's, verbatim from the errata edition of the chapter. Where the spec
//! gives a scenario in words, the session is built from it and the hand calculation is in a
//! comment next to the assertion.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use shared_model::tariff::{
    CdrDimensionType, CompiledTariff, MeterReading, Phase, PricedSession, Pricer, Reservation, Sample, Session, Tariff,
    TariffError,
};
use std::str::FromStr;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).expect("decimal literal")
}

/// Rounded to cents, half away from zero, as the spec's prose rounds.
fn cents(v: Decimal) -> Decimal {
    v.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
}

fn compile(json: &str) -> CompiledTariff {
    let tariff: Tariff = serde_json::from_str(json).expect("spec tariff parses");
    // The JSON round-trips through our types unchanged in meaning.
    let again: Tariff = serde_json::from_str(&serde_json::to_string(&tariff).expect("write")).expect("reparse");
    assert_eq!(again, tariff);
    CompiledTariff::try_new(&tariff).expect("spec tariff is valid")
}

/// A local wall-clock time at the location.
fn local(tz: Tz, y: i32, m: u32, day: u32, h: u32, min: u32) -> DateTime<Utc> {
    tz.from_local_datetime(&NaiveDate::from_ymd_opt(y, m, day).expect("date").and_hms_opt(h, min, 0).expect("time"))
        .single()
        .expect("unambiguous local time")
        .with_timezone(&Utc)
}

/// Builds a session from `start` as consecutive stretches of (minutes, Wh delivered); a
/// stretch with 0 Wh is parking.
fn session(tz: &str, start: DateTime<Utc>, stretches: &[(i64, i64)]) -> Session {
    let mut meter = vec![MeterReading { at: start, energy_wh: Decimal::ZERO }];
    let (mut at, mut wh) = (start, 0);
    for &(minutes, energy) in stretches {
        at += chrono::TimeDelta::minutes(minutes);
        wh += energy;
        meter.push(MeterReading { at, energy_wh: Decimal::from(wh) });
    }
    Session::try_new(start, at, tz, meter).expect("valid session")
}

fn price(tariff: &CompiledTariff, s: &Session) -> PricedSession {
    Pricer::new().price(tariff, s).expect("priced")
}

fn assert_total(p: &PricedSession, excl: &str, incl: &str) {
    assert_eq!(p.totals.total_cost.excl_vat, d(excl), "total excl. VAT; {p:#?}");
    assert_eq!(p.totals.total_cost.incl_vat, Some(d(incl)), "total incl. VAT; {p:#?}");
}

const BERLIN: &str = "Europe/Berlin";
fn berlin() -> Tz {
    BERLIN.parse().expect("zone")
}

// ---------------------------------------------------------------------------------------------
// Examples under "Tariff Object"
// ---------------------------------------------------------------------------------------------

const TARIFF_16_SIMPLE: &str = r#"{
  "country_code": "DE",
  "party_id": "ALL",
  "id": "16",
  "currency": "EUR",
  "elements": [
    {
      "price_components": [
        {
          "type": "ENERGY",
          "price": 0.25,
          "vat": 10,
          "step_size": 1
        }
      ]
    }
  ],
  "last_updated": "2018-12-17T11:16:55Z"
}"#;

#[test]
fn simple_tariff_0_25_euro_per_kwh() {
    // "This tariff will result in costs of € 5.00 (excl. VAT) or € 5.50 (incl. VAT) when 20 kWh are charged."
    let t = compile(TARIFF_16_SIMPLE);
    let p = price(&t, &session(BERLIN, local(berlin(), 2024, 5, 6, 10, 0), &[(120, 20_000)]));
    assert_total(&p, "5.00", "5.50");
    assert_eq!(p.totals.total_energy, d("20"));
    assert_eq!(p.totals.total_energy_cost.excl_vat, d("5.00"));
}

const TARIFF_17_START_FEE: &str = r#"{
  "country_code": "DE",
  "party_id": "ALL",
  "id": "17",
  "currency": "EUR",
  "elements": [
    {
      "price_components": [
        {
          "type": "FLAT",
          "price": 0.5,
          "vat": 20,
          "step_size": 1
        },
        {
          "type": "ENERGY",
          "price": 0.25,
          "vat": 10,
          "step_size": 1
        }
      ]
    }
  ],
  "last_updated": "2018-12-17T11:36:01Z"
}"#;

#[test]
fn tariff_0_25_euro_per_kwh_plus_start_fee() {
    // "€ 5.50 (excl. VAT) or € 6.10 (incl. VAT) when 20 kWh are charged": 0.50*1.2 + 5.00*1.1.
    let t = compile(TARIFF_17_START_FEE);
    let p = price(&t, &session(BERLIN, local(berlin(), 2024, 5, 6, 10, 0), &[(60, 12_000), (60, 8_000)]));
    assert_total(&p, "5.50", "6.10");
    assert_eq!(p.totals.total_fixed_cost.excl_vat, d("0.50"), "the flat fee is billed once, not per period");
}

const TARIFF_20_MIN_PRICE: &str = r#"{
  "country_code": "DE",
  "party_id": "ALL",
  "id": "20",
  "currency": "EUR",
  "min_price": {
    "excl_vat": 0.5,
    "incl_vat": 0.55
  },
  "elements": [
    {
      "price_components": [
        {
          "type": "ENERGY",
          "price": 0.25,
          "vat": 10,
          "step_size": 1
        }
      ]
    }
  ],
  "last_updated": "2018-12-17T16:45:21Z"
}"#;

#[test]
fn tariff_0_25_euro_per_kwh_plus_minimum_price() {
    let t = compile(TARIFF_20_MIN_PRICE);
    let start = local(berlin(), 2024, 5, 6, 10, 0);
    // 20 kWh: € 5.00 / € 5.50, above the minimum.
    let p = price(&t, &session(BERLIN, start, &[(120, 20_000)]));
    assert_total(&p, "5.00", "5.50");
    assert!(!p.totals.min_price_applied);
    // "if less than 2 kWh is charged, € 0.50 (excl. VAT) or € 0.55 (incl. VAT) will be billed": 1 kWh = € 0.25.
    let p = price(&t, &session(BERLIN, start, &[(10, 1_000)]));
    assert_total(&p, "0.50", "0.55");
    assert!(p.totals.min_price_applied);
    assert_eq!(p.totals.total_energy_cost.excl_vat, d("0.25"), "the component cost itself is unchanged");
}

const TARIFF_18_PARKING_START: &str = r#"{
  "country_code": "DE",
  "party_id": "ALL",
  "id": "18",
  "currency": "EUR",
  "elements": [
    {
      "price_components": [
        {
          "type": "FLAT",
          "price": 0.5,
          "vat": 20,
          "step_size": 1
        },
        {
          "type": "ENERGY",
          "price": 0.25,
          "vat": 10,
          "step_size": 1
        },
        {
          "type": "PARKING_TIME",
          "price": 2,
          "vat": 20,
          "step_size": 900
        }
      ]
    }
  ],
  "last_updated": "2018-12-17T11:44:10Z"
}"#;

#[test]
fn tariff_0_25_euro_per_kwh_plus_parking_fee_plus_start_fee() {
    // 20 kWh, then parked 40 minutes, billed as 45: 0.50 + 5.00 + 1.50 = 7.00;
    // incl.: 0.60 + 5.50 + 1.80 = 7.90.
    let t = compile(TARIFF_18_PARKING_START);
    let p = price(&t, &session(BERLIN, local(berlin(), 2024, 5, 6, 10, 0), &[(120, 20_000), (40, 0)]));
    assert_total(&p, "7.00", "7.90");
    assert_eq!(p.totals.total_parking_time, d("0.6667"), "40 minutes actually parked");
    assert_eq!(p.totals.total_parking_cost.excl_vat, d("1.50"), "45 minutes billed");
    let parking = p.period_costs.iter().find(|c| c.phase == Phase::Parking).expect("parking period");
    assert_eq!(parking.billed_ms, 45 * 60_000);
}

const TARIFF_16_MAX_PRICE: &str = r#"{
  "country_code": "DE",
  "party_id": "ALL",
  "id": "16",
  "currency": "EUR",
  "max_price": {
    "excl_vat": 10,
    "incl_vat": 11
  },
  "elements": [
    {
      "price_components": [
        {
          "type": "FLAT",
          "price": 0.5,
          "vat": 20,
          "step_size": 1
        },
        {
          "type": "ENERGY",
          "price": 0.25,
          "vat": 10,
          "step_size": 1
        }
      ]
    }
  ],
  "end_date_time": "2019-06-30T23:59:59Z",
  "last_updated": "2018-12-17T17:15:01Z"
}"#;

#[test]
fn tariff_0_25_euro_per_kwh_plus_start_fee_plus_max_price_plus_end_date() {
    let t = compile(TARIFF_16_MAX_PRICE);
    let start = local(berlin(), 2019, 6, 3, 9, 0);
    // 50 kWh: 0.50 + 12.50 = 13.00 > 10.00 → € 10.00 / € 11.00 "due to the price limit".
    let p = price(&t, &session(BERLIN, start, &[(300, 50_000)]));
    assert_total(&p, "10", "11");
    assert!(p.totals.max_price_applied);
    // 30 kWh: 0.50 + 7.50 = 8.00; incl. 0.60 + 8.25 = 8.85, under the limit.
    let p = price(&t, &session(BERLIN, start, &[(180, 30_000)]));
    assert_total(&p, "8.00", "8.85");
    assert!(!p.totals.max_price_applied);
    // After the end date the tariff no longer applies.
    let late = session(BERLIN, "2019-07-01T10:00:00Z".parse().expect("time"), &[(60, 1_000)]);
    assert!(matches!(Pricer::new().price(&t, &late), Err(TariffError::TariffNotActive { .. })));
}

const TARIFF_12_TWO_EURO_PER_HOUR: &str = r#"{
  "country_code": "DE",
  "party_id": "ALL",
  "id": "12",
  "currency": "EUR",
  "elements": [
    {
      "price_components": [
        {
          "type": "TIME",
          "price": 2,
          "vat": 10,
          "step_size": 60
        }
      ]
    }
  ],
  "last_updated": "2015-06-29T20:39:09Z"
}"#;

#[test]
fn simple_tariff_2_euro_per_hour() {
    // 2.5 hours charging: € 5.00 / € 5.50. Parking after it is not billed (no PARKING_TIME component).
    let t = compile(TARIFF_12_TWO_EURO_PER_HOUR);
    let p = price(&t, &session(BERLIN, local(berlin(), 2024, 5, 6, 10, 0), &[(150, 11_000), (30, 0)]));
    assert_total(&p, "5.00", "5.50");
    assert_eq!(p.totals.total_parking_cost.excl_vat, Decimal::ZERO);
    assert_eq!(p.totals.total_parking_time, d("0.5"));
    assert_eq!(p.totals.total_time, d("3"), "CDR total_time covers charging and parking");
}

const TARIFF_21_THREE_PER_HOUR_FIVE_PARKING: &str = r#"{
  "country_code": "DE",
  "party_id": "ALL",
  "id": "21",
  "currency": "EUR",
  "elements": [
    {
      "price_components": [
        {
          "type": "TIME",
          "price": 3,
          "vat": 10,
          "step_size": 60
        },
        {
          "type": "PARKING_TIME",
          "price": 5,
          "vat": 20,
          "step_size": 300
        }
      ]
    }
  ],
  "last_updated": "2018-12-17T17:00:43Z"
}"#;

#[test]
fn simple_tariff_3_euro_per_hour_5_euro_per_hour_parking() {
    // 150 min charging (7.50) + 42 min parking billed as 45 (3.75) = 11.25; incl. 8.25 + 4.50 = 12.75.
    let t = compile(TARIFF_21_THREE_PER_HOUR_FIVE_PARKING);
    let p = price(&t, &session(BERLIN, local(berlin(), 2024, 5, 6, 10, 0), &[(150, 30_000), (42, 0)]));
    assert_total(&p, "11.25", "12.75");
}

const TARIFF_12_ADHOC_ALT_TEXT: &str = r#"{
  "country_code": "DE",
  "party_id": "ALL",
  "id": "12",
  "currency": "EUR",
  "type": "AD_HOC_PAYMENT",
  "tariff_alt_text": [
    {
      "language": "en",
      "text": "2.00 euro p/hour including VAT."
    },
    {
      "language": "nl",
      "text": "2.00 euro p/uur inclusief BTW."
    }
  ],
  "elements": [
    {
      "price_components": [
        {
          "type": "TIME",
          "price": 1.9,
          "vat": 5.2,
          "step_size": 300
        }
      ]
    }
  ],
  "last_updated": "2015-06-29T20:39:09Z"
}"#;

#[test]
fn ad_hoc_simple_tariff_with_multiple_languages() {
    let tariff: Tariff = serde_json::from_str(TARIFF_12_ADHOC_ALT_TEXT).expect("parse");
    assert_eq!(tariff.tariff_alt_text.len(), 2);
    assert_eq!(tariff.tariff_alt_text[1].language, "nl");
    // 2.5 h at 1.90/h = 4.75 excl.; incl. 4.75 * 1.052 = 4.997, which the spec shows as € 5.00.
    let t = compile(TARIFF_12_ADHOC_ALT_TEXT);
    let p = price(&t, &session(BERLIN, local(berlin(), 2024, 5, 6, 10, 0), &[(150, 11_000)]));
    assert_total(&p, "4.75", "4.997");
    assert_eq!(p.totals.total_cost.incl_vat.map(cents), Some(d("5.00")));
}

const TARIFF_19_NOT_POSSIBLE: &str = r#"{
  "country_code": "DE",
  "party_id": "ALL",
  "id": "19",
  "currency": "EUR",
  "type": "AD_HOC_PAYMENT",
  "tariff_alt_text": [
    {
      "language": "en",
      "text": "2.00 euro p/hour, start tariff debit card: 0.25 euro, credit card: 0.50 euro including VAT."
    },
    {
      "language": "nl",
      "text": "2.00 euro p/uur, starttarief bankpas: 0,25 euro, creditkaart: 0,50 euro inclusief BTW."
    }
  ],
  "elements": [
    {
      "price_components": [
        {
          "type": "FLAT",
          "price": 0.4,
          "vat": 25,
          "step_size": 1
        },
        {
          "type": "TIME",
          "price": 1.9,
          "vat": 5.2,
          "step_size": 300
        }
      ]
    }
  ],
  "last_updated": "2018-12-29T15:55:58Z"
}"#;

#[test]
fn ad_hoc_tariff_example_not_possible_with_ocpi() {
    // No figures in the spec. By hand, 1 h 58 min charging (billed 2 h by the 5-minute step):
    // 0.40 + 3.80 = 4.20 excl.; 0.50 + 3.9976 = 4.4976 incl. — 0.50 start fee incl. VAT as the text says.
    let t = compile(TARIFF_19_NOT_POSSIBLE);
    let p = price(&t, &session(BERLIN, local(berlin(), 2024, 5, 6, 10, 0), &[(118, 11_000)]));
    assert_total(&p, "4.20", "4.4976");
    assert_eq!(p.totals.total_fixed_cost.incl_vat, Some(d("0.50")));
}

const TARIFF_13_ALT_URL: &str = r#"{
  "country_code": "DE",
  "party_id": "ALL",
  "id": "13",
  "currency": "EUR",
  "type": "PROFILE_CHEAP",
  "tariff_alt_url": "https://company.com/tariffs/13",
  "elements": [
    {
      "price_components": [
        {
          "type": "FLAT",
          "price": 0.5,
          "vat": 20,
          "step_size": 1
        },
        {
          "type": "ENERGY",
          "price": 0.25,
          "vat": 10,
          "step_size": 100
        }
      ]
    }
  ],
  "last_updated": "2015-06-29T20:39:09Z"
}"#;

#[test]
fn simple_tariff_with_alternative_url() {
    // 20.45 kWh billed as 20.5 kWh (100 Wh steps): energy 5.125 excl. / 5.6375 incl., plus
    // the start fee 0.50 / 0.60: 5.625 / 6.2375, shown in the spec rounded to cents as 5.63 / 6.24.
    let t = compile(TARIFF_13_ALT_URL);
    let p = price(&t, &session(BERLIN, local(berlin(), 2024, 5, 6, 10, 0), &[(100, 10_000), (50, 10_450)]));
    assert_total(&p, "5.625", "6.2375");
    assert_eq!(p.totals.total_energy, d("20.45"));
    assert_eq!(cents(p.totals.total_energy_cost.excl_vat), d("5.13"));
    assert_eq!(p.totals.total_energy_cost.incl_vat.map(cents), Some(d("5.64")));
    assert_eq!(cents(p.totals.total_cost.excl_vat), d("5.63"));
    assert_eq!(p.totals.total_cost.incl_vat.map(cents), Some(d("6.24")));
    // Nothing changes at the meter reading in between, so it is one period, billed 20.5 kWh.
    assert_eq!(p.period_costs.len(), 1);
    assert_eq!(p.period_costs[0].energy_wh, d("20450"));
    assert_eq!(p.period_costs[0].billed_energy_wh, d("20500"));
}

const TARIFF_14_COMPLEX: &str = r#"{
  "country_code": "DE",
  "party_id": "ALL",
  "id": "14",
  "currency": "EUR",
  "type": "REGULAR",
  "tariff_alt_url": "https://company.com/tariffs/14",
  "elements": [
    {
      "price_components": [
        {
          "type": "FLAT",
          "price": 2.5,
          "vat": 15,
          "step_size": 1
        }
      ]
    },
    {
      "price_components": [
        {
          "type": "TIME",
          "price": 1,
          "vat": 20,
          "step_size": 900
        }
      ],
      "restrictions": {
        "max_current": 32
      }
    },
    {
      "price_components": [
        {
          "type": "TIME",
          "price": 2,
          "vat": 20,
          "step_size": 600
        }
      ],
      "restrictions": {
        "min_current": 32,
        "day_of_week": [
          "MONDAY",
          "TUESDAY",
          "WEDNESDAY",
          "THURSDAY",
          "FRIDAY"
        ]
      }
    },
    {
      "price_components": [
        {
          "type": "TIME",
          "price": 1.25,
          "vat": 20,
          "step_size": 600
        }
      ],
      "restrictions": {
        "min_current": 32,
        "day_of_week": [
          "SATURDAY",
          "SUNDAY"
        ]
      }
    },
    {
      "price_components": [
        {
          "type": "PARKING_TIME",
          "price": 5,
          "vat": 10,
          "step_size": 300
        }
      ],
      "restrictions": {
        "start_time": "09:00",
        "end_time": "18:00",
        "day_of_week": [
          "MONDAY",
          "TUESDAY",
          "WEDNESDAY",
          "THURSDAY",
          "FRIDAY"
        ]
      }
    },
    {
      "price_components": [
        {
          "type": "PARKING_TIME",
          "price": 6,
          "vat": 10,
          "step_size": 300
        }
      ],
      "restrictions": {
        "start_time": "10:00",
        "end_time": "17:00",
        "day_of_week": [
          "SATURDAY"
        ]
      }
    }
  ],
  "last_updated": "2015-06-29T20:39:09Z"
}"#;

#[test]
fn complex_tariff_monday_morning() {
    // Monday 09:30, 165 min charging at 16 A, then 42 min parking (to 12:57, within 09:00–18:00).
    // Flat 2.50 (incl. 2.875) + time 165 min at 1.00/h = 2.75 (3.30), not rounded because parking
    // follows + parking 42 min billed as 45 at 5.00/h = 3.75 (4.125) = 9.00 / 10.30.
    let t = compile(TARIFF_14_COMPLEX);
    let start = local(berlin(), 2024, 6, 3, 9, 30);
    let s = session(BERLIN, start, &[(165, 10_000), (42, 0)]).with_current(vec![Sample { at: start, value: d("16") }]);
    let p = price(&t, &s);
    assert_total(&p, "9.00", "10.30");
    assert_eq!(p.totals.total_time_cost.excl_vat, d("2.75"));
    assert_eq!(p.totals.total_parking_cost.excl_vat, d("3.75"));
}

#[test]
fn complex_tariff_saturday_afternoon() {
    // Saturday 13:30, 114 min charging at 43 A, then 71 min parking (15:24–16:35, within 10:00–17:00).
    // Flat 2.50 (2.875) + time 114 min at 1.25/h = 2.375 (2.85), not rounded because parking
    // follows + parking 71 min billed as 75 at 6.00/h = 7.50 (8.25) = 12.375 / 13.975.
    // The errata's table shows the charging time as 2.28 (2.736), which is 114 min at 1.20/h —
    // an arithmetic slip: the component is 1.25/h, and its parking and flat lines agree with ours.
    let t = compile(TARIFF_14_COMPLEX);
    let start = local(berlin(), 2024, 6, 8, 13, 30);
    let s = session(BERLIN, start, &[(114, 20_000), (71, 0)]).with_current(vec![Sample { at: start, value: d("43") }]);
    let p = price(&t, &s);
    assert_total(&p, "12.375", "13.975");
    assert_eq!(p.totals.total_parking_cost.excl_vat, d("7.50"));
    assert_eq!(p.totals.total_fixed_cost.incl_vat, Some(d("2.875")));
}

const TARIFF_15_FREE: &str = r#"{
  "country_code": "DE",
  "party_id": "ALL",
  "id": "15",
  "currency": "EUR",
  "elements": [
    {
      "price_components": [
        {
          "type": "FLAT",
          "price": 0,
          "step_size": 0
        }
      ]
    }
  ],
  "last_updated": "2015-06-29T20:39:09Z"
}"#;

#[test]
fn free_of_charge_tariff() {
    let t = compile(TARIFF_15_FREE);
    let p = price(&t, &session(BERLIN, local(berlin(), 2024, 5, 6, 10, 0), &[(90, 15_000), (30, 0)]));
    assert_total(&p, "0", "0");
    assert_eq!(p.totals.total_energy, d("15"));
}

/// "First hour free energy example" of the original 2.2.1 text (the errata edition dropped it).
const TARIFF_52_FIRST_HOUR_FREE: &str = r#"{
  "country_code": "DE",
  "party_id": "ALL",
  "id": "52",
  "currency": "EUR",
  "elements": [{
    "price_components": [{ "type": "PARKING_TIME", "price": 0.0, "step_size": 60 }],
    "restrictions": { "min_duration": 0, "max_duration": 3600 }
  }, {
    "price_components": [{ "type": "PARKING_TIME", "price": 2.0, "step_size": 60 }],
    "restrictions": { "min_duration": 3600, "max_duration": 10800 }
  }, {
    "price_components": [{ "type": "PARKING_TIME", "price": 3.0, "step_size": 60 }],
    "restrictions": { "min_duration": 10800 }
  }, {
    "price_components": [{ "type": "ENERGY", "price": 0.0, "step_size": 1 }],
    "restrictions": { "max_kwh": 1.0 }
  }, {
    "price_components": [{ "type": "ENERGY", "price": 0.2, "step_size": 1 }],
    "restrictions": { "min_kwh": 1.0 }
  }],
  "last_updated": "2018-12-29T15:55:58Z"
}"#;

#[test]
fn first_hour_free_energy() {
    // The spec's € 7.30 (19 kWh * 0.20 + 1.75 h * 2.00) treats the durations as parking time,
    // which only holds if charging took no time at all: min_duration/max_duration count from
    // the start of the session. With 20 kWh charged in 15 minutes and 2.75 h parked after it:
    // energy: first kWh free, 19 kWh * 0.20 = 3.80 (the 1 kWh edge falls inside the first
    // meter interval, at 45 s); parking 0:15–1:00 free, 1:00–3:00 at 2.00 = 4.00 → 7.80.
    let t = compile(TARIFF_52_FIRST_HOUR_FREE);
    let start = local(berlin(), 2024, 5, 6, 10, 0);
    let p = price(&t, &session(BERLIN, start, &[(15, 20_000), (165, 0)]));
    assert_eq!(p.totals.total_energy_cost.excl_vat, d("3.80"));
    assert_eq!(p.totals.total_parking_cost.excl_vat, d("4.00"));
    assert_eq!(p.totals.total_cost.excl_vat, d("7.80"));
    // No VAT given: incl. equals excl. ("If omitted, no VAT is applicable").
    assert_eq!(p.totals.total_cost.incl_vat, Some(d("7.80")));
    let edge = p.period_costs.iter().find(|c| c.energy_wh == d("1000")).expect("a period ends at exactly 1 kWh");
    assert_eq!(edge.end - edge.start, chrono::TimeDelta::seconds(45));
}

// ---------------------------------------------------------------------------------------------
// Reservation examples
// ---------------------------------------------------------------------------------------------

const TARIFF_20_RESERVATION: &str = r#"{
  "country_code": "DE",
  "party_id": "ALL",
  "id": "20",
  "currency": "EUR",
  "elements": [
    {
      "price_components": [
        {
          "type": "TIME",
          "price": 5,
          "vat": 20,
          "step_size": 60
        }
      ],
      "restrictions": {
        "reservation": "RESERVATION"
      }
    },
    {
      "price_components": [
        {
          "type": "FLAT",
          "price": 0.5,
          "vat": 20,
          "step_size": 1
        },
        {
          "type": "ENERGY",
          "price": 0.25,
          "vat": 10,
          "step_size": 1
        }
      ]
    }
  ],
  "last_updated": "2019-02-03T17:00:11Z"
}"#;

const TARIFF_20_RESERVATION_FEE: &str = r#"{
  "country_code": "DE",
  "party_id": "ALL",
  "id": "20",
  "currency": "EUR",
  "elements": [
    {
      "price_components": [
        {
          "type": "FLAT",
          "price": 2,
          "vat": 20,
          "step_size": 1
        },
        {
          "type": "TIME",
          "price": 5,
          "vat": 20,
          "step_size": 300
        }
      ],
      "restrictions": {
        "reservation": "RESERVATION"
      }
    },
    {
      "price_components": [
        {
          "type": "FLAT",
          "price": 0.5,
          "vat": 20,
          "step_size": 1
        },
        {
          "type": "ENERGY",
          "price": 0.25,
          "vat": 10,
          "step_size": 1
        }
      ]
    }
  ],
  "last_updated": "2019-02-03T17:00:11Z"
}"#;

const TARIFF_20_RESERVATION_EXPIRE_FEE: &str = r#"{
  "country_code": "DE",
  "party_id": "ALL",
  "id": "20",
  "currency": "EUR",
  "elements": [
    {
      "price_components": [
        {
          "type": "FLAT",
          "price": 4,
          "vat": 20,
          "step_size": 1
        }
      ],
      "restrictions": {
        "reservation": "RESERVATION_EXPIRES"
      }
    },
    {
      "price_components": [
        {
          "type": "TIME",
          "price": 2,
          "vat": 20,
          "step_size": 600
        }
      ],
      "restrictions": {
        "reservation": "RESERVATION"
      }
    },
    {
      "price_components": [
        {
          "type": "FLAT",
          "price": 0.5,
          "vat": 20,
          "step_size": 1
        },
        {
          "type": "ENERGY",
          "price": 0.25,
          "vat": 10,
          "step_size": 1
        }
      ]
    }
  ],
  "last_updated": "2019-02-03T17:00:11Z"
}"#;

const TARIFF_20_RESERVATION_EXPIRE_TIME: &str = r#"{
  "country_code": "DE",
  "party_id": "ALL",
  "id": "20",
  "currency": "EUR",
  "elements": [
    {
      "price_components": [
        {
          "type": "TIME",
          "price": 6,
          "vat": 20,
          "step_size": 600
        }
      ],
      "restrictions": {
        "reservation": "RESERVATION_EXPIRES"
      }
    },
    {
      "price_components": [
        {
          "type": "TIME",
          "price": 3,
          "vat": 20,
          "step_size": 600
        }
      ],
      "restrictions": {
        "reservation": "RESERVATION"
      }
    },
    {
      "price_components": [
        {
          "type": "FLAT",
          "price": 0.5,
          "vat": 20,
          "step_size": 1
        },
        {
          "type": "ENERGY",
          "price": 0.25,
          "vat": 10,
          "step_size": 1
        }
      ]
    }
  ],
  "last_updated": "2019-02-03T17:00:11Z"
}"#;

/// A reservation of `minutes`, then (unless it expired) a session charging 20 kWh.
fn reserved(minutes: i64, expired: bool) -> Session {
    let reserved_at = local(berlin(), 2024, 5, 6, 9, 0);
    let start = reserved_at + chrono::TimeDelta::minutes(minutes);
    let stretches: &[(i64, i64)] = if expired { &[] } else { &[(120, 20_000)] };
    session(BERLIN, start, stretches).with_reservation(Reservation { start: reserved_at, end: start, expired })
}

#[test]
fn tariff_with_reservation_price() {
    // 15 min reserved at 5.00/h = 1.25 (1.50) + 0.50 (0.60) + 20 kWh 5.00 (5.50) = 6.75 / 7.60.
    let p = price(&compile(TARIFF_20_RESERVATION), &reserved(15, false));
    assert_total(&p, "6.75", "7.60");
    assert_eq!(p.totals.total_reservation_cost, shared_model::tariff::Price::new(d("1.25"), d("1.50")));
    assert_eq!(p.charging_periods[0].dimensions[0].dimension, CdrDimensionType::ReservationTime);
}

#[test]
fn tariff_with_reservation_price_and_fee() {
    // 13 min billed as 15 (5-minute steps): 1.25 (1.50) + fee 2.00 (2.40) + 0.50 (0.60) + 5.00 (5.50)
    // = 8.75 / 10.00.
    let p = price(&compile(TARIFF_20_RESERVATION_FEE), &reserved(13, false));
    assert_total(&p, "8.75", "10.00");
    assert_eq!(p.totals.total_reservation_cost.excl_vat, d("3.25"));
    assert_eq!(p.totals.total_fixed_cost.excl_vat, d("0.50"));
}

#[test]
fn tariff_with_reservation_price_and_expire_fee() {
    let t = compile(TARIFF_20_RESERVATION_EXPIRE_FEE);
    // 22 min billed as 30 at 2.00/h = 1.00 (1.20) + 0.50 (0.60) + 5.00 (5.50) = 6.50 / 7.30.
    assert_total(&price(&t, &reserved(22, false)), "6.50", "7.30");
    // Expired after 1 h, no session: fee 4.00 (4.80) + 60 min at 2.00/h 2.00 (2.40) = 6.00 / 7.20.
    let p = price(&t, &reserved(60, true));
    assert_total(&p, "6.00", "7.20");
    assert_eq!(p.totals.total_fixed_cost.excl_vat, Decimal::ZERO, "no session start fee without a session");
}

#[test]
fn tariff_with_reservation_time_and_expire_time() {
    let t = compile(TARIFF_20_RESERVATION_EXPIRE_TIME);
    // 22 min billed as 30 at 3.00/h = 1.50 (1.80) + 0.50 (0.60) + 5.00 (5.50) = 7.00 / 7.90.
    assert_total(&price(&t, &reserved(22, false)), "7.00", "7.90");
    // Expired after 1.5 h: RESERVATION_EXPIRES's 6.00/h applies: 9.00 / 10.80.
    assert_total(&price(&t, &reserved(90, true)), "9.00", "10.80");
}

// ---------------------------------------------------------------------------------------------
// step_size examples (PriceComponent), errata edition
// ---------------------------------------------------------------------------------------------

const TARIFF_22_STEP_SIZE: &str = r#"{
  "country_code": "DE",
  "party_id": "ALL",
  "id": "22",
  "currency": "EUR",
  "elements": [
    {
      "price_components": [
        {
          "type": "TIME",
          "price": 1.2,
          "step_size": 1800
        },
        {
          "type": "PARKING_TIME",
          "price": 1,
          "step_size": 900
        }
      ],
      "restrictions": {
        "start_time": "00:00",
        "end_time": "17:00"
      }
    },
    {
      "price_components": [
        {
          "type": "TIME",
          "price": 2.4,
          "step_size": 900
        },
        {
          "type": "PARKING_TIME",
          "price": 1,
          "step_size": 900
        }
      ],
      "restrictions": {
        "start_time": "17:00",
        "end_time": "20:00"
      }
    },
    {
      "price_components": [
        {
          "type": "TIME",
          "price": 2.4,
          "step_size": 900
        }
      ],
      "restrictions": {
        "start_time": "20:00",
        "end_time": "00:00"
      }
    }
  ],
  "last_updated": "2018-12-18T17:07:11Z"
}"#;

#[test]
fn step_size_switching_to_different_tariff_element_1() {
    // Plug in 16:55, charge 10 min, park 2 min. Charging 5 min at 1.20/h = 0.10 and 5 min at
    // 2.40/h = 0.20, not rounded (parking follows); parking 2 min rounded to 15 at 1.00/h = 0.25.
    // Total € 0.55.
    let t = compile(TARIFF_22_STEP_SIZE);
    let p = price(&t, &session(BERLIN, local(berlin(), 2024, 5, 6, 16, 55), &[(10, 2_000), (2, 0)]));
    assert_eq!(p.totals.total_cost.excl_vat, d("0.55"));
    assert_eq!(p.totals.total_time_cost.excl_vat, d("0.30"));
    assert_eq!(p.totals.total_parking_cost.excl_vat, d("0.25"));
    assert_eq!(p.charging_periods.len(), 3, "split at 17:00 and where charging stops");
    assert_eq!(p.charging_periods[1].start_date_time, local(berlin(), 2024, 5, 6, 17, 0));
}

#[test]
fn step_size_switching_to_different_tariff_element_2() {
    // Plug in 16:35, charge 35 min, leave. The last TIME component's 15-minute step rounds the
    // total 35 min to 45; the extra 10 min are billed after 17:00: 25 min at 1.20/h = 0.50 and
    // 20 min at 2.40/h = 0.80. Total € 1.30.
    let t = compile(TARIFF_22_STEP_SIZE);
    let p = price(&t, &session(BERLIN, local(berlin(), 2024, 5, 6, 16, 35), &[(35, 7_000)]));
    assert_eq!(p.totals.total_cost.excl_vat, d("1.30"));
    assert_eq!(p.period_costs[0].cost.excl_vat, d("0.50"));
    assert_eq!(p.period_costs[1].cost.excl_vat, d("0.80"));
    assert_eq!(p.period_costs[1].billed_ms, 20 * 60_000);
}

#[test]
fn step_size_switching_to_free_of_charge_tariff_element_totals_0_73() {
    // Errata: plug in 19:40, charge 12 min, park 20 min. Charging 12 min at 2.40/h = 0.48, not
    // rounded (parking follows). Parking is priced only until 20:00 (the 20:00–00:00 element has
    // no PARKING_TIME): 8 billable minutes, rounded up to 15 by the step of the last priced
    // time-based period (19:52–20:00) at 1.00/h = 0.25. The 12 minutes after 20:00 are free.
    // Total € 0.73.
    let t = compile(TARIFF_22_STEP_SIZE);
    let p = price(&t, &session(BERLIN, local(berlin(), 2024, 5, 6, 19, 40), &[(12, 2_400), (20, 0)]));
    assert_eq!(p.totals.total_cost.excl_vat, d("0.73"));
    assert_eq!(p.totals.total_time_cost.excl_vat, d("0.48"));
    assert_eq!(p.totals.total_parking_cost.excl_vat, d("0.25"));
    let phases: Vec<Phase> = p.period_costs.iter().map(|c| c.phase).collect();
    assert_eq!(phases, [Phase::Charging, Phase::Parking, Phase::Parking]);
    assert_eq!(p.period_costs[1].billed_ms, 15 * 60_000, "8 minutes billed as 15");
    assert_eq!(p.period_costs[2].cost.excl_vat, Decimal::ZERO);
    assert_eq!(p.period_costs[2].start, local(berlin(), 2024, 5, 6, 20, 0));
}

// ---------------------------------------------------------------------------------------------
// TariffRestrictions examples
// ---------------------------------------------------------------------------------------------

const TARIFF_1_MAX_POWER: &str = r#"{
  "country_code": "DE",
  "party_id": "ALL",
  "id": "1",
  "currency": "EUR",
  "type": "REGULAR",
  "elements": [{
    "price_components": [{
      "type": "ENERGY",
      "price": 0.20,
      "vat": 20.0,
      "step_size": 1
    }],
    "restrictions": {
      "max_power": 16.00
    }
  }, {
    "price_components": [{
      "type": "ENERGY",
      "price": 0.35,
      "vat": 20.0,
      "step_size": 1
    }],
    "restrictions": {
      "max_power": 32.00
    }
  }, {
    "price_components": [{
      "type": "ENERGY",
      "price": 0.50,
      "vat": 20.0,
      "step_size": 1
    }]
  }],
  "last_updated": "2018-12-05T12:01:09Z"
}"#;

#[test]
fn tariff_with_max_power_restrictions() {
    // 1 kWh at 6 kW (10 min): 0.20; 40 kWh at 48 kW (50 min): 20.00; 0.5 kWh at 4 kW (7.5 min):
    // 0.10. Total € 20.30 excl., 24.36 incl. 20% VAT. Power is each meter interval's average.
    let t = compile(TARIFF_1_MAX_POWER);
    let start = local(berlin(), 2024, 5, 6, 10, 0);
    let at = |s: i64| start + chrono::TimeDelta::seconds(s);
    let meter = vec![
        MeterReading { at: at(0), energy_wh: d("0") },
        MeterReading { at: at(600), energy_wh: d("1000") },
        MeterReading { at: at(3600), energy_wh: d("41000") },
        MeterReading { at: at(4050), energy_wh: d("41500") },
    ];
    let s = Session::try_new(start, at(4050), BERLIN, meter).expect("session");
    let p = price(&t, &s);
    assert_total(&p, "20.30", "24.36");
    let costs: Vec<Decimal> = p.period_costs.iter().map(|c| c.cost.excl_vat).collect();
    assert_eq!(costs, [d("0.20"), d("20.00"), d("0.10")]);
    // The same with explicit power samples (W) instead of meter averages.
    let s = s.with_power(vec![
        Sample { at: at(0), value: d("6000") },
        Sample { at: at(600), value: d("48000") },
        Sample { at: at(3600), value: d("4000") },
    ]);
    assert_total(&price(&t, &s), "20.30", "24.36");
}

const TARIFF_2_MAX_DURATION: &str = r#"{
  "country_code": "DE",
  "party_id": "ALL",
  "id": "2",
  "currency": "EUR",
  "type": "REGULAR",
  "elements": [{
    "price_components": [{
      "type": "ENERGY",
      "price": 0.00,
      "vat": 20.0,
      "step_size": 1
    }],
    "restrictions": {
      "max_duration": 1800
    }
  }, {
    "price_components": [{
      "type": "ENERGY",
      "price": 0.25,
      "vat": 20.0,
      "step_size": 1
    }],
    "restrictions": {
      "max_duration": 3600
    }
  }, {
    "price_components": [{
      "type": "ENERGY",
      "price": 0.40,
      "vat": 20.0,
      "step_size": 1
    }]
  }],
  "last_updated": "2018-12-05T13:12:44Z"
}"#;

#[test]
fn tariff_with_max_duration_restrictions() {
    // 40 min: 5 kWh in the first 30 min free, 1.2 kWh in the next 10 min at 0.25 = € 0.30.
    let t = compile(TARIFF_2_MAX_DURATION);
    let p = price(&t, &session(BERLIN, local(berlin(), 2024, 5, 6, 10, 0), &[(30, 5_000), (10, 1_200)]));
    assert_total(&p, "0.30", "0.36");
    // With one meter interval over the whole 40 min, the 30-minute mark splits it: 6.2 kWh
    // evenly over 40 min puts 1.55 kWh after the mark.
    let p = price(&t, &session(BERLIN, local(berlin(), 2024, 5, 6, 10, 0), &[(40, 6_200)]));
    assert_eq!(p.period_costs.len(), 2);
    assert_eq!(p.totals.total_cost.excl_vat, d("0.3875"));
}

// ---------------------------------------------------------------------------------------------
// The CDR chapter's example CDR
// ---------------------------------------------------------------------------------------------

const CDR_EXAMPLE: &str = r#"{
  "id": "12345",
  "start_date_time": "2015-06-29T21:39:09Z",
  "end_date_time": "2015-06-29T23:37:32Z",
  "cdr_location": { "id": "LOC1", "name": "Gent Zuid", "city": "Gent", "country": "BEL" },
  "currency": "EUR",
  "tariffs": [{
    "id": "12",
    "currency": "EUR",
    "elements": [{
      "price_components": [{
        "type": "TIME",
        "price": 2.00,
        "vat": 10.0,
        "step_size": 300
      }]
    }],
    "last_updated": "2015-02-02T14:15:01Z"
  }],
  "charging_periods": [{
    "start_date_time": "2015-06-29T21:39:09Z",
    "dimensions": [{
      "type": "TIME",
      "volume": 1.973
    }],
    "tariff_id": "12"
  }],
  "total_cost": {
    "excl_vat": 4.00,
    "incl_vat": 4.40
  },
  "total_energy": 15.342,
  "total_time": 1.973,
  "last_updated": "2015-06-29T22:01:13Z"
}"#;

#[test]
fn cdr_chapter_example_cdr() {
    let cdr: serde_json::Value = serde_json::from_str(CDR_EXAMPLE).expect("cdr");
    // The example's embedded tariff predates country_code/party_id, which 2.2.1 requires.
    let mut tariff_json = cdr["tariffs"][0].clone();
    tariff_json["country_code"] = "BE".into();
    tariff_json["party_id"] = "BEC".into();
    let tariff: Tariff = serde_json::from_value(tariff_json).expect("tariff");
    let t = CompiledTariff::try_new(&tariff).expect("valid");
    let start: DateTime<Utc> = "2015-06-29T21:39:09Z".parse().expect("time");
    let end: DateTime<Utc> = "2015-06-29T23:37:32Z".parse().expect("time");
    let meter = vec![MeterReading { at: start, energy_wh: d("0") }, MeterReading { at: end, energy_wh: d("15342") }];
    let s = Session::try_new(start, end, "Europe/Brussels", meter).expect("session").with_currency("EUR");
    let p = price(&t, &s);
    // 1 h 58 min 23 s billed as 2 h (5-minute steps) at 2.00/h: 4.00 / 4.40.
    assert_total(&p, "4.00", "4.40");
    assert_eq!(p.totals.total_energy, d("15.342"));
    assert_eq!(p.totals.total_time.round_dp(3), d("1.973"));
    assert_eq!(p.charging_periods.len(), 1);
    let period = serde_json::to_value(&p.charging_periods[0]).expect("json");
    assert_eq!(period["start_date_time"], cdr["charging_periods"][0]["start_date_time"]);
    assert_eq!(period["tariff_id"], "12");
    let time = p.charging_periods[0].dimensions.iter().find(|x| x.dimension == CdrDimensionType::Time);
    assert_eq!(time.map(|x| x.volume.round_dp(3)), Some(d("1.973")));
    let total = serde_json::to_value(p.totals.total_cost).expect("json");
    assert_eq!(total, cdr["total_cost"]);
}
