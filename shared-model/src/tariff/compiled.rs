//! A tariff checked and turned into the form the engine evaluates quickly: restrictions parsed
//! into numbers and bit masks, components indexed by dimension, and the list of instants
//! where a restriction can start or stop applying.

use super::model::{Price, ReservationRestrictionType, Tariff, TariffDimensionType};
use super::{Phase, TariffError};
use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Timelike, Utc};
use rust_decimal::Decimal;

/// Index of each priced dimension in per-dimension arrays.
pub(crate) const FLAT: usize = 0;
pub(crate) const ENERGY: usize = 1;
pub(crate) const TIME: usize = 2;
pub(crate) const PARKING: usize = 3;

const WH_PER_KWH: Decimal = Decimal::from_parts(1000, 0, 0, false, 0);

fn dimension_index(d: TariffDimensionType) -> usize {
    match d {
        TariffDimensionType::Flat => FLAT,
        TariffDimensionType::Energy => ENERGY,
        TariffDimensionType::Time => TIME,
        TariffDimensionType::ParkingTime => PARKING,
    }
}

/// A price component ready for arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Component {
    pub price: Decimal,
    pub vat: Option<Decimal>,
    /// `1 + vat / 100`, computed once so pricing multiplies instead of dividing.
    pub vat_factor: Option<Decimal>,
    pub step_size: u64,
}

/// A local date and time of day as integers, for restriction checks without calendar math.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LocalTime {
    /// Days since 1970-01-01 (local).
    pub day: i64,
    /// Time of day as [`time_key`] orders it.
    pub time: u64,
}

const UNIX_EPOCH_DAYS_FROM_CE: i64 = 719_163;

/// `NaiveTime`'s order as one integer: seconds of the day, then the fraction (which may reach
/// 2·10⁹ for a leap second, so it gets 31 bits).
pub(crate) fn time_key(t: NaiveTime) -> u64 {
    (u64::from(t.num_seconds_from_midnight()) << 31) | u64::from(t.nanosecond())
}

/// Days since 1970-01-01.
pub(crate) fn day_number(d: NaiveDate) -> i64 {
    i64::from(d.num_days_from_ce()) - UNIX_EPOCH_DAYS_FROM_CE
}

impl LocalTime {
    /// The local time `local_ms` milliseconds after local 1970-01-01 00:00.
    pub(crate) fn from_local_ms(local_ms: i64) -> Self {
        const MS_PER_DAY: i64 = 86_400_000;
        let ms = local_ms.rem_euclid(MS_PER_DAY);
        // ms < 86 400 000, so both parts fit.
        let (secs, frac_ns) = ((ms / 1000) as u64, (ms % 1000) as u64 * 1_000_000);
        LocalTime { day: local_ms.div_euclid(MS_PER_DAY), time: (secs << 31) | frac_ns }
    }

    /// Monday = 0.
    fn weekday(self) -> u32 {
        // 1970-01-01 was a Thursday (3).
        (self.day + 3).rem_euclid(7) as u32
    }
}

/// What the restrictions are evaluated against at the start of a period.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context {
    pub local: LocalTime,
    /// Energy consumed since the session started, Wh.
    pub energy_wh: Decimal,
    /// Time since the session (or reservation) started, ms.
    pub elapsed_ms: i64,
    pub power_kw: Option<Decimal>,
    pub current_a: Option<Decimal>,
}

#[derive(Debug, Clone, Default)]
struct Restrictions {
    start_time: Option<NaiveTime>,
    end_time: Option<NaiveTime>,
    start_date: Option<NaiveDate>,
    end_date: Option<NaiveDate>,
    min_wh: Option<Decimal>,
    max_wh: Option<Decimal>,
    min_current: Option<Decimal>,
    max_current: Option<Decimal>,
    min_power: Option<Decimal>,
    max_power: Option<Decimal>,
    min_ms: Option<i64>,
    max_ms: Option<i64>,
    /// Bit `n` set: active on weekday `n` (Monday = 0). Zero: every day.
    days: u8,
    reservation: Option<ReservationRestrictionType>,
    /// `start_time`, `end_time` as [`time_key`]s, `start_date`, `end_date` as [`day_number`]s.
    start_key: Option<u64>,
    end_key: Option<u64>,
    start_day: Option<i64>,
    end_day: Option<i64>,
}

fn in_range(v: Decimal, min: Option<Decimal>, max: Option<Decimal>) -> bool {
    min.is_none_or(|m| v >= m) && max.is_none_or(|m| v < m)
}

impl Restrictions {
    /// Whether the reservation restriction lets the element price a period of `phase`
    /// (OCPI 2.2.1 §11.4.6: reservation elements price reservations only, and the others never).
    fn admits(&self, phase: Phase, reservation_expired: bool) -> bool {
        match (self.reservation, phase) {
            (None, Phase::Reservation) => false,
            (None, _) => true,
            (Some(ReservationRestrictionType::Reservation), Phase::Reservation) => true,
            (Some(ReservationRestrictionType::ReservationExpires), Phase::Reservation) => reservation_expired,
            (Some(_), _) => false,
        }
    }

    /// All set restrictions other than the reservation one hold (OCPI: "treated as a logical
    /// AND"); [`CompiledTariff::candidates`] has already applied that one. Lower bounds are
    /// inclusive and upper bounds exclusive, so `max_current: 32` and `min_current: 32` in the
    /// same tariff split the range without overlap or gap.
    fn matches(&self, c: &Context) -> bool {
        let t = c.local.time;
        let time_ok = match (self.start_key, self.end_key) {
            (Some(s), Some(e)) if s < e => s <= t && t < e,
            // A window that wraps past midnight, e.g. 22:00–06:00.
            (Some(s), Some(e)) if s > e => t >= s || t < e,
            (Some(_), Some(_)) => true,
            (Some(s), None) => t >= s,
            (None, Some(e)) => t < e,
            (None, None) => true,
        };
        if !time_ok {
            return false;
        }
        let d = c.local.day;
        if self.start_day.is_some_and(|s| d < s) || self.end_day.is_some_and(|e| d >= e) {
            return false;
        }
        if self.days != 0 && self.days & (1 << c.local.weekday()) == 0 {
            return false;
        }
        if (self.min_wh.is_some() || self.max_wh.is_some()) && !in_range(c.energy_wh, self.min_wh, self.max_wh) {
            return false;
        }
        if self.min_ms.is_some_and(|m| c.elapsed_ms < m) || self.max_ms.is_some_and(|m| c.elapsed_ms >= m) {
            return false;
        }
        if self.min_power.is_some() || self.max_power.is_some() {
            match c.power_kw {
                Some(p) if in_range(p, self.min_power, self.max_power) => {}
                _ => return false,
            }
        }
        if self.min_current.is_some() || self.max_current.is_some() {
            match c.current_a {
                Some(a) if in_range(a, self.min_current, self.max_current) => {}
                _ => return false,
            }
        }
        true
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Element {
    pub components: [Option<Component>; 4],
    restrictions: Restrictions,
}

impl Element {
    pub(crate) fn matches(&self, c: &Context) -> bool {
        self.restrictions.matches(c)
    }
}

/// A validated tariff in evaluation form. Build it once per tariff and reuse it for every
/// session priced with that tariff.
#[derive(Debug, Clone)]
pub struct CompiledTariff {
    pub(crate) id: String,
    pub(crate) currency: String,
    pub(crate) min_price: Option<Price>,
    pub(crate) max_price: Option<Price>,
    pub(crate) valid_from: Option<DateTime<Utc>>,
    pub(crate) valid_until: Option<DateTime<Utc>>,
    pub(crate) elements: Vec<Element>,
    /// Energy thresholds (Wh) where a `min_kwh`/`max_kwh` restriction flips.
    pub(crate) energy_edges_wh: Vec<Decimal>,
    /// Durations (ms) where a `min_duration`/`max_duration` restriction flips.
    pub(crate) duration_edges_ms: Vec<i64>,
    /// Local times of day where a `start_time`/`end_time` restriction flips.
    pub(crate) time_edges: Vec<NaiveTime>,
    /// Some element restricts dates or days of the week, so local midnights are boundaries.
    pub(crate) uses_calendar: bool,
    /// Some element restricts power, so the engine needs the power of each period.
    pub(crate) uses_power: bool,
    /// Per kind of period, the elements whose reservation restriction lets them apply, in
    /// tariff order, with a mask of the dimensions they have components for: charging,
    /// parking, reservation, expired reservation ([`CompiledTariff::candidates`]).
    candidates: [Vec<(u16, u8)>; 4],
}

impl CompiledTariff {
    /// Checks and compiles an OCPI tariff.
    pub fn try_new(tariff: &Tariff) -> Result<Self, TariffError> {
        let invalid = |reason: String| TariffError::InvalidTariff { tariff_id: tariff.id.clone(), reason };
        if tariff.elements.is_empty() {
            return Err(invalid("it has no elements".into()));
        }
        if tariff.currency.len() != 3 || !tariff.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(invalid(format!("currency {:?} is not an ISO 4217 code", tariff.currency)));
        }
        if let (Some(s), Some(e)) = (tariff.start_date_time, tariff.end_date_time)
            && e <= s
        {
            return Err(invalid(format!("end_date_time {e} is not after start_date_time {s}")));
        }
        if let (Some(min), Some(max)) = (tariff.min_price, tariff.max_price)
            && min.excl_vat > max.excl_vat
        {
            return Err(invalid(format!("min_price {} exceeds max_price {}", min.excl_vat, max.excl_vat)));
        }
        let mut out = CompiledTariff {
            id: tariff.id.clone(),
            currency: tariff.currency.clone(),
            min_price: tariff.min_price,
            max_price: tariff.max_price,
            valid_from: tariff.start_date_time,
            valid_until: tariff.end_date_time,
            elements: Vec::with_capacity(tariff.elements.len()),
            energy_edges_wh: Vec::new(),
            duration_edges_ms: Vec::new(),
            time_edges: Vec::new(),
            uses_calendar: false,
            uses_power: false,
            candidates: Default::default(),
        };
        for (i, element) in tariff.elements.iter().enumerate() {
            if element.price_components.is_empty() {
                return Err(invalid(format!("element {i} has no price components")));
            }
            let r = element.restrictions.clone().unwrap_or_default();
            let mut components = [None; 4];
            for pc in &element.price_components {
                if pc.price.is_sign_negative() && !pc.price.is_zero() {
                    return Err(invalid(format!("element {i} has a negative price {}", pc.price)));
                }
                if pc.vat.is_some_and(|v| v.is_sign_negative() && !v.is_zero()) {
                    return Err(invalid(format!("element {i} has a negative VAT percentage")));
                }
                if r.reservation.is_some()
                    && matches!(pc.dimension, TariffDimensionType::Energy | TariffDimensionType::ParkingTime)
                {
                    return Err(invalid(format!(
                        "element {i} is a reservation element with a {:?} component; only FLAT and TIME are allowed",
                        pc.dimension
                    )));
                }
                let slot = &mut components[dimension_index(pc.dimension)];
                // Only the first component of a dimension in an element can ever be used.
                if slot.is_none() {
                    let vat_factor = pc
                        .vat
                        .map(|v| v.checked_div(Decimal::ONE_HUNDRED).and_then(|f| f.checked_add(Decimal::ONE)))
                        .map(|f| f.ok_or(TariffError::Overflow))
                        .transpose()?;
                    *slot = Some(Component { price: pc.price, vat: pc.vat, vat_factor, step_size: pc.step_size });
                }
            }
            let kwh = |v: Option<Decimal>, name: &str| -> Result<Option<Decimal>, TariffError> {
                match v {
                    Some(v) if v.is_sign_negative() && !v.is_zero() => {
                        Err(invalid(format!("element {i} has a negative {name}")))
                    }
                    Some(v) => v.checked_mul(WH_PER_KWH).map(Some).ok_or(TariffError::Overflow),
                    None => Ok(None),
                }
            };
            let ms = |v: Option<u64>| -> Result<Option<i64>, TariffError> {
                v.map(|s| i64::try_from(s).ok().and_then(|s| s.checked_mul(1000)).ok_or(TariffError::Overflow))
                    .transpose()
            };
            let compiled = Restrictions {
                start_time: r.start_time.map(|t| t.0),
                end_time: r.end_time.map(|t| t.0),
                start_date: r.start_date.map(|d| d.0),
                end_date: r.end_date.map(|d| d.0),
                min_wh: kwh(r.min_kwh, "min_kwh")?,
                max_wh: kwh(r.max_kwh, "max_kwh")?,
                min_current: r.min_current,
                max_current: r.max_current,
                min_power: r.min_power,
                max_power: r.max_power,
                min_ms: ms(r.min_duration)?,
                max_ms: ms(r.max_duration)?,
                days: r.day_of_week.iter().fold(0u8, |m, d| m | 1 << d.to_weekday().num_days_from_monday()),
                reservation: r.reservation,
                start_key: r.start_time.map(|t| time_key(t.0)),
                end_key: r.end_time.map(|t| time_key(t.0)),
                start_day: r.start_date.map(|d| day_number(d.0)),
                end_day: r.end_date.map(|d| day_number(d.0)),
            };
            out.energy_edges_wh.extend(compiled.min_wh.iter().chain(compiled.max_wh.iter()).copied());
            out.duration_edges_ms.extend(compiled.min_ms.iter().chain(compiled.max_ms.iter()).copied());
            out.time_edges.extend(compiled.start_time.iter().chain(compiled.end_time.iter()).copied());
            out.uses_power |= compiled.min_power.is_some() || compiled.max_power.is_some();
            out.uses_calendar |= compiled.days != 0 || compiled.start_date.is_some() || compiled.end_date.is_some();
            out.elements.push(Element { components, restrictions: compiled });
        }
        if out.elements.len() > usize::from(u16::MAX) {
            return Err(invalid(format!("it has {} elements; at most 65535 are supported", out.elements.len())));
        }
        let kinds = [
            (Phase::Charging, false),
            (Phase::Parking, false),
            (Phase::Reservation, false),
            (Phase::Reservation, true),
        ];
        for (list, (phase, expired)) in out.candidates.iter_mut().zip(kinds) {
            for (i, e) in out.elements.iter().enumerate() {
                if e.restrictions.admits(phase, expired) {
                    let mask = e.components.iter().enumerate().fold(0u8, |m, (d, c)| m | u8::from(c.is_some()) << d);
                    // i < 65536, checked above.
                    list.push((i as u16, mask));
                }
            }
        }
        out.energy_edges_wh.sort_unstable();
        out.energy_edges_wh.dedup();
        out.duration_edges_ms.sort_unstable();
        out.duration_edges_ms.dedup();
        out.time_edges.sort_unstable();
        out.time_edges.dedup();
        Ok(out)
    }

    /// The elements that can apply to a period of `phase` (after a reservation that
    /// `reservation_expired`), with the mask of dimensions each has components for.
    pub(crate) fn candidates(&self, phase: Phase, reservation_expired: bool) -> &[(u16, u8)] {
        let k = match (phase, reservation_expired) {
            (Phase::Charging, _) => 0,
            (Phase::Parking, _) => 1,
            (Phase::Reservation, false) => 2,
            (Phase::Reservation, true) => 3,
        };
        &self.candidates[k]
    }

    /// Whether some element looks at the local time, date or weekday.
    pub(crate) fn needs_local_time(&self) -> bool {
        !self.time_edges.is_empty() || self.uses_calendar
    }

    /// The tariff's OCPI id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The tariff's ISO 4217 currency.
    pub fn currency(&self) -> &str {
        &self.currency
    }
}
