//! The engine's fast path against the engine as it was before it (`tariff_reference/`, kept
//! verbatim): on random tariffs and sessions — across local midnight and both of Amsterdam's
//! DST nights, with power and current samples, reservations, kWh and duration thresholds, dates
//! and weekdays — `Pricer::price_totals` and `Pricer::price` must return exactly the reference's
//! decimals, scale included (`1.50` is not `1.5` in a CDR), and the same errors.

mod tariff_reference;

use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use shared_model::tariff::{
    CompiledTariff, DayOfWeek, LocalDate, MeterReading, Price, PriceComponent, Pricer, Reservation,
    ReservationRestrictionType, Sample, Session, Tariff, TariffDimensionType, TariffElement, TariffRestrictions,
    TimeOfDay,
};
use tariff_reference::{RefPricer, RefTariff};

const ZONES: [&str; 6] =
    ["Europe/Amsterdam", "Europe/Amsterdam", "Europe/Amsterdam", "America/New_York", "Australia/Lord_Howe", "UTC"];
const DAYS: [DayOfWeek; 7] = [
    DayOfWeek::Monday,
    DayOfWeek::Tuesday,
    DayOfWeek::Wednesday,
    DayOfWeek::Thursday,
    DayOfWeek::Friday,
    DayOfWeek::Saturday,
    DayOfWeek::Sunday,
];
/// Session starts: a few hours before local midnight, before Amsterdam's spring-forward night
/// (31 March 2024, 02:00 → 03:00) and its fall-back night (27 October 2024, 03:00 → 02:00), and
/// anywhere in the year.
const ANCHORS: [&str; 4] =
    ["2024-06-14T18:00:00Z", "2024-03-30T20:00:00Z", "2024-10-26T20:00:00Z", "2024-01-01T00:00:00Z"];

fn decimal(max_cents: i64) -> impl Strategy<Value = Decimal> {
    // Varying scales on purpose: 1.5, 1.50 and 1.500 must keep their scale through the engine.
    (0..max_cents, 0u32..4).prop_map(|(v, extra)| Decimal::new(v * 10i64.pow(extra), 2 + extra))
}

fn component() -> impl Strategy<Value = PriceComponent> {
    (
        0usize..4,
        decimal(500),
        proptest::option::of(prop_oneof![
            Just(Decimal::from(21)),
            Just(Decimal::new(95, 1)),
            (0i64..30).prop_map(Decimal::from)
        ]),
        prop::sample::select(vec![0u64, 1, 7, 60, 100, 300, 900, 1000]),
    )
        .prop_map(|(kind, price, vat, step_size)| PriceComponent {
            dimension: [
                TariffDimensionType::Flat,
                TariffDimensionType::Energy,
                TariffDimensionType::Time,
                TariffDimensionType::ParkingTime,
            ][kind],
            price,
            vat,
            step_size,
        })
}

fn time(h: u32, q: u32) -> TimeOfDay {
    TimeOfDay(NaiveTime::from_hms_opt(h, q * 15, 0).expect("valid time"))
}

fn restrictions() -> impl Strategy<Value = TariffRestrictions> {
    (
        (
            proptest::option::of(((0u32..24, 0u32..4), proptest::option::of((0u32..24, 0u32..4)))),
            proptest::option::of((0i64..60, proptest::option::of(1i64..30))),
            proptest::option::of(0i64..30),
            prop::collection::vec(0usize..7, 0..3),
        ),
        (
            proptest::option::of(0u64..4 * 3600),
            proptest::option::of(1u64..6 * 3600),
            proptest::option::of((0i64..40, 1i64..40)),
            proptest::option::of((0i64..60, 1i64..60)),
            proptest::option::of((0u32..2, 0i64..3)),
        ),
    )
        .prop_map(|((window, dates, max_kwh, days), (min_duration, max_duration, power, current, reservation))| {
            let base = NaiveDate::from_ymd_opt(2024, 3, 28).expect("valid date");
            TariffRestrictions {
                start_time: window.map(|(s, _)| time(s.0, s.1)),
                end_time: window.and_then(|(_, e)| e).map(|e| time(e.0, e.1)),
                start_date: dates.map(|(d, _)| LocalDate(base + TimeDelta::days(d * 4))),
                end_date: dates.and_then(|(d, len)| len.map(|l| LocalDate(base + TimeDelta::days(d * 4 + l)))),
                min_kwh: max_kwh.filter(|k| k % 3 == 0).map(|k| Decimal::new(k, 1)),
                max_kwh: max_kwh.filter(|k| k % 3 != 0).map(Decimal::from),
                min_duration,
                max_duration,
                min_power: power.filter(|p| p.0 % 2 == 0).map(|p| Decimal::from(p.0)),
                max_power: power.map(|p| Decimal::from(p.0 + p.1)),
                min_current: current.filter(|c| c.0 % 2 == 0).map(|c| Decimal::from(c.0)),
                max_current: current.map(|c| Decimal::from(c.0 + c.1)),
                day_of_week: days.into_iter().map(|i| DAYS[i]).collect(),
                reservation: reservation.and_then(|(kind, n)| {
                    (n == 0).then_some(
                        [ReservationRestrictionType::Reservation, ReservationRestrictionType::ReservationExpires]
                            [kind as usize],
                    )
                }),
            }
        })
}

fn tariff() -> impl Strategy<Value = Tariff> {
    (
        prop::collection::vec((prop::collection::vec(component(), 1..3), restrictions()), 0..5),
        prop::collection::vec(component(), 1..4),
        proptest::option::of((0i64..1000, 0i64..5000)),
        any::<bool>(),
    )
        .prop_map(|(restricted, fallback, limits, with_fallback)| {
            let mut elements: Vec<TariffElement> = restricted
                .into_iter()
                .map(|(price_components, r)| {
                    // Reservation elements may only have FLAT and TIME components.
                    let price_components = if r.reservation.is_some() {
                        price_components
                            .into_iter()
                            .filter(|c| matches!(c.dimension, TariffDimensionType::Flat | TariffDimensionType::Time))
                            .collect()
                    } else {
                        price_components
                    };
                    TariffElement { price_components, restrictions: Some(r) }
                })
                .filter(|e| !e.price_components.is_empty())
                .collect();
            if with_fallback || elements.is_empty() {
                elements.push(TariffElement { price_components: fallback, restrictions: None });
            }
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

#[derive(Debug, Clone)]
struct Parts {
    zone: &'static str,
    start: DateTime<Utc>,
    /// (seconds, Wh with a scale, extra decimals the reading at its end is written with) per
    /// meter interval; zero Wh is parking.
    stretches: Vec<(i64, Decimal, u32)>,
    power: Vec<(i64, i64)>,
    current: Vec<(i64, i64)>,
    /// (seconds before the start it began, seconds it lasted, expired)
    reservation: Option<(i64, i64, bool)>,
}

fn parts() -> impl Strategy<Value = Parts> {
    (
        prop::sample::select(ZONES.to_vec()),
        prop::sample::select(ANCHORS.to_vec()),
        0i64..200 * 24 * 60,
        prop::collection::vec((1i64..4 * 3600, prop_oneof![Just(0i64), 1i64..30_000], 0u32..3, 0u32..3), 1..8),
        prop::collection::vec((0i64..8 * 3600, 0i64..22_000), 0..4),
        prop::collection::vec((0i64..8 * 3600, 0i64..64), 0..4),
        proptest::option::of((0i64..3600, 1i64..3600, 0u8..4)),
    )
        .prop_map(|(zone, anchor, minutes, stretches, power, current, reservation)| {
            let anchor: DateTime<Utc> = anchor.parse().expect("valid anchor");
            // Near the anchor most of the time; anywhere in the following 200 days otherwise.
            let start = anchor + TimeDelta::minutes(if minutes % 4 == 0 { minutes } else { minutes % 600 });
            let stretches = stretches
                .into_iter()
                .map(|(s, wh, scale, extra)| (s, Decimal::new(wh * 10i64.pow(scale), scale), extra))
                .collect();
            let mut power: Vec<(i64, i64)> = power;
            power.sort_unstable();
            let mut current: Vec<(i64, i64)> = current;
            current.sort_unstable();
            Parts {
                zone,
                start,
                stretches,
                power,
                current,
                reservation: reservation.map(|(before, len, kind)| (before + len, len, kind == 0)),
            }
        })
}

fn session(p: &Parts) -> Session {
    let expired = p.reservation.is_some_and(|r| r.2);
    let mut meter = vec![MeterReading { at: p.start, energy_wh: Decimal::new(123_456, 1) }];
    let (mut at, mut wh) = (p.start, Decimal::new(123_456, 1));
    // An expired reservation is followed by no session: a zero-length one at its end.
    if !expired {
        for &(seconds, energy, extra) in &p.stretches {
            at += TimeDelta::seconds(seconds);
            wh += energy;
            // The same reading written as 12345.6, 12345.60 or 12345.600.
            let mut written = wh;
            written.rescale(wh.scale() + extra);
            meter.push(MeterReading { at, energy_wh: written });
        }
    }
    let samples = |v: &[(i64, i64)]| -> Vec<Sample> {
        v.iter().map(|&(s, x)| Sample { at: p.start + TimeDelta::seconds(s), value: Decimal::from(x) }).collect()
    };
    let mut s = Session::try_new(p.start, at, p.zone, meter)
        .expect("valid session")
        .with_power(samples(&p.power))
        .with_current(samples(&p.current));
    if let Some((before, len, expired)) = p.reservation {
        let start = p.start - TimeDelta::seconds(before);
        s = s.with_reservation(Reservation { start, end: start + TimeDelta::seconds(len), expired });
    }
    s
}

thread_local! {
    static SHARED: std::cell::RefCell<Pricer> = std::cell::RefCell::new(Pricer::new());
}

/// Equal value and equal representation: Debug prints each decimal with its scale.
fn same<T: std::fmt::Debug + PartialEq>(fast: &T, reference: &T) -> Result<(), TestCaseError> {
    prop_assert_eq!(fast, reference);
    prop_assert_eq!(format!("{fast:?}"), format!("{reference:?}"));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn fast_path_is_bit_for_bit_the_reference(t in tariff(), p in parts()) {
        let s = session(&p);
        let reference = RefTariff::try_new(&t).map(|r| RefPricer::new().price(&r, &s));
        let compiled = CompiledTariff::try_new(&t);
        prop_assert_eq!(compiled.is_ok(), reference.is_ok());
        let (Ok(compiled), Ok(reference)) = (compiled, reference) else { return Ok(()) };
        // One pricer for both calls, so state left over from a session cannot go unnoticed.
        let mut pricer = Pricer::new();
        let totals = pricer.price_totals(&compiled, &s);
        same(&totals, &reference.clone().map(|r| r.totals))?;
        let full = pricer.price(&compiled, &s);
        same(&full, &reference)?;
        // And one pricer for every case of the run: its per-day cache of boundaries has seen
        // other tariffs, zones and days before this one.
        let shared = SHARED.with(|p| p.borrow_mut().price(&compiled, &s));
        same(&shared, &reference)?;
    }

    #[test]
    fn a_reused_pricer_prices_a_sequence_like_fresh_ones(t in tariff(), ps in prop::collection::vec(parts(), 1..6)) {
        let Ok(compiled) = CompiledTariff::try_new(&t) else { return Ok(()) };
        let reference = RefTariff::try_new(&t).expect("the reference accepts what the engine accepts");
        let mut pricer = Pricer::new();
        for p in &ps {
            let s = session(p);
            same(&pricer.price_totals(&compiled, &s), &RefPricer::new().price(&reference, &s).map(|r| r.totals))?;
        }
    }
}
