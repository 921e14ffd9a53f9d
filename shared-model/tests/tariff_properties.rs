//! Invariants of the tariff engine over random tariffs and sessions, in zones with and
//! without daylight saving (Lord Howe shifts by 30 minutes).

use chrono::{DateTime, NaiveTime, TimeDelta, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use shared_model::tariff::{
    CompiledTariff, DayOfWeek, MeterReading, Price, PriceComponent, Pricer, Session, Tariff, TariffDimensionType,
    TariffElement, TariffRestrictions, TimeOfDay,
};

const ZONES: [&str; 5] = ["Europe/Amsterdam", "America/New_York", "Australia/Lord_Howe", "UTC", "Asia/Kolkata"];
const DAYS: [DayOfWeek; 7] = [
    DayOfWeek::Monday,
    DayOfWeek::Tuesday,
    DayOfWeek::Wednesday,
    DayOfWeek::Thursday,
    DayOfWeek::Friday,
    DayOfWeek::Saturday,
    DayOfWeek::Sunday,
];

fn component() -> impl Strategy<Value = PriceComponent> {
    (0usize..4, 0i64..500, proptest::option::of(0i64..30), prop::sample::select(vec![0u64, 1, 60, 100, 300, 900]))
        .prop_map(|(kind, cents, vat, step_size)| PriceComponent {
            dimension: [
                TariffDimensionType::Flat,
                TariffDimensionType::Energy,
                TariffDimensionType::Time,
                TariffDimensionType::ParkingTime,
            ][kind],
            price: Decimal::new(cents, 2),
            vat: vat.map(Decimal::from),
            step_size,
        })
}

fn restrictions() -> impl Strategy<Value = TariffRestrictions> {
    (
        proptest::option::of((0u32..24, 0u32..4, 0u32..24)),
        proptest::option::of(0i64..30),
        proptest::option::of(0i64..30),
        proptest::option::of(0u64..4 * 3600),
        proptest::option::of(0u64..4 * 3600),
        proptest::option::of(1i64..50),
        prop::collection::vec(0usize..7, 0..3),
    )
        .prop_map(|(window, min_kwh, max_kwh, min_duration, max_duration, max_power, days)| {
            let t = |h: u32, m: u32| TimeOfDay(NaiveTime::from_hms_opt(h, m * 15, 0).expect("time"));
            TariffRestrictions {
                start_time: window.map(|(h, m, _)| t(h, m)),
                end_time: window.map(|(_, m, h)| t(h, m)),
                min_kwh: min_kwh.map(Decimal::from),
                max_kwh: max_kwh.map(Decimal::from),
                min_duration,
                max_duration,
                max_power: max_power.map(Decimal::from),
                day_of_week: days.into_iter().map(|i| DAYS[i]).collect(),
                ..TariffRestrictions::default()
            }
        })
}

fn tariff() -> impl Strategy<Value = Tariff> {
    (
        prop::collection::vec((prop::collection::vec(component(), 1..3), restrictions()), 0..4),
        prop::collection::vec(component(), 1..4),
        proptest::option::of((0i64..1000, 0i64..5000)),
    )
        .prop_map(|(restricted, fallback, limits)| {
            let mut elements: Vec<TariffElement> = restricted
                .into_iter()
                .map(|(price_components, r)| TariffElement { price_components, restrictions: Some(r) })
                .collect();
            // A fallback without restrictions, so some element always applies.
            elements.push(TariffElement { price_components: fallback, restrictions: None });
            let (min_price, max_price) = match limits {
                Some((lo, extra)) => {
                    let lo = Decimal::new(lo, 2);
                    let hi = lo + Decimal::new(extra, 2);
                    (Some(Price::new(lo, lo * Decimal::new(11, 1))), Some(Price::new(hi, hi * Decimal::new(11, 1))))
                }
                None => (None, None),
            };
            Tariff {
                country_code: "NL".into(),
                party_id: "SPL".into(),
                id: "P".into(),
                currency: "EUR".into(),
                tariff_type: None,
                tariff_alt_text: vec![],
                tariff_alt_url: None,
                min_price,
                max_price,
                elements,
                start_date_time: None,
                end_date_time: None,
                energy_mix: None,
                last_updated: DateTime::<Utc>::UNIX_EPOCH,
            }
        })
}

/// (zone, start, stretches of (minutes, Wh)); energies are even so a midpoint is exact.
fn session_parts() -> impl Strategy<Value = (&'static str, DateTime<Utc>, Vec<(i64, i64)>)> {
    (
        prop::sample::select(ZONES.to_vec()),
        0i64..366 * 24 * 4,
        prop::collection::vec((1i64..240, prop_oneof![Just(0i64), 1i64..15_000]), 1..6),
    )
        .prop_map(|(zone, quarter, stretches)| {
            let start =
                "2024-01-01T00:00:00Z".parse::<DateTime<Utc>>().expect("time") + TimeDelta::minutes(quarter * 15);
            (zone, start, stretches.into_iter().map(|(m, wh)| (m, wh * 2)).collect())
        })
}

/// Meter readings at each stretch end, and with `refine`, also at each stretch's midpoint.
fn session(zone: &str, start: DateTime<Utc>, stretches: &[(i64, i64)], refine: bool) -> Session {
    let mut meter = vec![MeterReading { at: start, energy_wh: Decimal::ZERO }];
    let (mut at, mut wh) = (start, 0i64);
    for &(minutes, energy) in stretches {
        if refine {
            meter.push(MeterReading {
                at: at + TimeDelta::seconds(minutes * 30),
                energy_wh: Decimal::from(wh + energy / 2),
            });
        }
        at += TimeDelta::minutes(minutes);
        wh += energy;
        meter.push(MeterReading { at, energy_wh: Decimal::from(wh) });
    }
    Session::try_new(start, at, zone, meter).expect("valid session")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn vat_never_lowers_a_price_and_nothing_is_negative(t in tariff(), (zone, start, stretches) in session_parts()) {
        let compiled = CompiledTariff::try_new(&t).expect("valid");
        let totals = Pricer::new().price_totals(&compiled, &session(zone, start, &stretches, false)).expect("priced");
        for p in [totals.total_cost, totals.total_fixed_cost, totals.total_energy_cost, totals.total_time_cost,
                  totals.total_parking_cost] {
            prop_assert!(p.excl_vat >= Decimal::ZERO);
            prop_assert!(p.incl_vat.expect("incl. VAT computed") >= p.excl_vat, "{p:?}");
        }
    }

    #[test]
    fn periods_are_contiguous_and_cover_the_session(t in tariff(), (zone, start, stretches) in session_parts()) {
        let compiled = CompiledTariff::try_new(&t).expect("valid");
        let s = session(zone, start, &stretches, false);
        let priced = Pricer::new().price(&compiled, &s).expect("priced");
        let periods = &priced.period_costs;
        prop_assert_eq!(periods.first().map(|p| p.start), Some(s.start));
        prop_assert_eq!(periods.last().map(|p| p.end), Some(s.end));
        for pair in periods.windows(2) {
            prop_assert_eq!(pair[0].end, pair[1].start);
            prop_assert!(pair[0].start < pair[0].end);
        }
        for (ocpi, cost) in priced.charging_periods.iter().zip(periods) {
            prop_assert_eq!(ocpi.start_date_time, cost.start);
        }
        let energy: Decimal = periods.iter().map(|p| p.energy_wh).sum();
        let delivered: i64 = stretches.iter().map(|s| s.1).sum();
        prop_assert_eq!(energy, Decimal::from(delivered));
    }

    #[test]
    fn finer_meter_values_do_not_change_the_price(t in tariff(), (zone, start, stretches) in session_parts()) {
        // Extra readings on the same straight line add no information: same periods, same totals.
        let compiled = CompiledTariff::try_new(&t).expect("valid");
        let coarse = Pricer::new().price(&compiled, &session(zone, start, &stretches, false)).expect("priced");
        let fine = Pricer::new().price(&compiled, &session(zone, start, &stretches, true)).expect("priced");
        prop_assert_eq!(coarse.totals, fine.totals);
        prop_assert_eq!(coarse.period_costs.len(), fine.period_costs.len());
    }

    #[test]
    fn total_respects_min_and_max_price(t in tariff(), (zone, start, stretches) in session_parts()) {
        let compiled = CompiledTariff::try_new(&t).expect("valid");
        let totals = Pricer::new().price_totals(&compiled, &session(zone, start, &stretches, false)).expect("priced");
        if let Some(min) = t.min_price {
            prop_assert!(totals.total_cost.excl_vat >= min.excl_vat);
            prop_assert!(totals.total_cost.incl_vat >= min.incl_vat);
        }
        if let Some(max) = t.max_price {
            prop_assert!(totals.total_cost.excl_vat <= max.excl_vat);
            prop_assert!(totals.total_cost.incl_vat <= max.incl_vat);
        }
    }

    #[test]
    fn tariffs_round_trip_through_json(t in tariff()) {
        let json = serde_json::to_string(&t).expect("write");
        let back: Tariff = serde_json::from_str(&json).expect("read");
        prop_assert_eq!(back, t);
    }
}
