//! A rough throughput printout for the hot path, [`Pricer::price_totals`]. Not a benchmark and
//! not asserted (wall-clock time varies by machine); ignored by default. Run with
//! `cargo test --release -p shared-model --test tariff_throughput -- --ignored --nocapture`.

use chrono::{DateTime, TimeDelta, Utc};
use rust_decimal::Decimal;
use shared_model::tariff::{CompiledTariff, MeterReading, Pricer, Session, Tariff};
use std::time::Instant;

/// The spec's complex tariff minus the current restrictions, plus a night window: flat fee,
/// time by time of day and weekday, parking by window, energy by kWh threshold.
const TARIFF: &str = r#"{
  "country_code": "DE", "party_id": "ALL", "id": "bench", "currency": "EUR",
  "elements": [
    {"price_components": [{"type": "FLAT", "price": 2.5, "vat": 15, "step_size": 1}]},
    {"price_components": [{"type": "TIME", "price": 1.00, "vat": 20, "step_size": 900}],
     "restrictions": {"start_time": "22:00", "end_time": "06:00"}},
    {"price_components": [{"type": "TIME", "price": 2.00, "vat": 20, "step_size": 600}],
     "restrictions": {"day_of_week": ["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY"]}},
    {"price_components": [{"type": "ENERGY", "price": 0.20, "vat": 20, "step_size": 1}],
     "restrictions": {"max_kwh": 10}},
    {"price_components": [{"type": "ENERGY", "price": 0.35, "vat": 20, "step_size": 1},
                          {"type": "TIME", "price": 1.25, "vat": 20, "step_size": 600}]},
    {"price_components": [{"type": "PARKING_TIME", "price": 5, "vat": 10, "step_size": 300}],
     "restrictions": {"start_time": "09:00", "end_time": "18:00"}}
  ],
  "last_updated": "2015-06-29T20:39:09Z"
}"#;

#[test]
#[ignore = "prints a timing; run explicitly with --release"]
fn price_totals_throughput_printout() {
    let tariff: Tariff = serde_json::from_str(TARIFF).expect("tariff");
    let tariff = CompiledTariff::try_new(&tariff).expect("valid");
    // 1 000 pre-built sessions: 3 h of charging with a reading every 15 min, then 40 min parked.
    let base: DateTime<Utc> = "2024-03-04T07:00:00Z".parse().expect("time");
    let sessions: Vec<Session> = (0..1000)
        .map(|i| {
            let start = base + TimeDelta::minutes(i * 97);
            let mut meter: Vec<MeterReading> = (0..=12)
                .map(|k| MeterReading { at: start + TimeDelta::minutes(15 * k), energy_wh: Decimal::from(k * 2750) })
                .collect();
            let end = start + TimeDelta::minutes(220);
            meter.push(MeterReading { at: end, energy_wh: Decimal::from(12 * 2750) });
            Session::try_new(start, end, "Europe/Amsterdam", meter).expect("session")
        })
        .collect();
    let mut pricer = Pricer::new();
    let mut checksum = Decimal::ZERO;
    for s in &sessions {
        checksum += pricer.price_totals(&tariff, s).expect("priced").total_cost.excl_vat;
    }
    let rounds = 20;
    let started = Instant::now();
    for _ in 0..rounds {
        for s in &sessions {
            checksum += pricer.price_totals(&tariff, s).expect("priced").total_cost.excl_vat;
        }
    }
    let elapsed = started.elapsed();
    let n = rounds * sessions.len();
    println!(
        "priced {n} sessions in {elapsed:?}: {:.0} sessions/s on one core (checksum {checksum})",
        n as f64 / elapsed.as_secs_f64()
    );
    assert!(checksum > Decimal::ZERO);
}
