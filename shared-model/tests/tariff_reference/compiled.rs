//! The engine's tariff compilation as it was before the fast path (commit 27ad4f2), kept
//! verbatim as the slow reference. A tariff checked and turned into the form the engine evaluates quickly: restrictions parsed
//! into numbers and bit masks, components indexed by dimension, and the list of instants
//! where a restriction can start or stop applying.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use rust_decimal::Decimal;
use shared_model::tariff::{Phase, Price, ReservationRestrictionType, Tariff, TariffDimensionType, TariffError};

/// Index of each priced dimension in per-dimension arrays.
pub const FLAT: usize = 0;
pub const ENERGY: usize = 1;
pub const TIME: usize = 2;
pub const PARKING: usize = 3;

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
pub struct Component {
    pub price: Decimal,
    pub vat: Option<Decimal>,
    /// `1 + vat / 100`, computed once so pricing multiplies instead of dividing.
    pub vat_factor: Option<Decimal>,
    pub step_size: u64,
}

/// What the restrictions are evaluated against at the start of a period.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub local: NaiveDateTime,
    /// Energy consumed since the session started, Wh.
    pub energy_wh: Decimal,
    /// Time since the session (or reservation) started, ms.
    pub elapsed_ms: i64,
    pub power_kw: Option<Decimal>,
    pub current_a: Option<Decimal>,
    pub phase: Phase,
    pub reservation_expired: bool,
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
}

fn in_range(v: Decimal, min: Option<Decimal>, max: Option<Decimal>) -> bool {
    min.is_none_or(|m| v >= m) && max.is_none_or(|m| v < m)
}

impl Restrictions {
    /// All set restrictions hold (OCPI: "treated as a logical AND"). Lower bounds are
    /// inclusive and upper bounds exclusive, so `max_current: 32` and `min_current: 32` in the
    /// same tariff split the range without overlap or gap.
    fn matches(&self, c: &Context) -> bool {
        let reservation_ok = match (self.reservation, c.phase) {
            (None, Phase::Reservation) => false,
            (None, _) => true,
            (Some(ReservationRestrictionType::Reservation), Phase::Reservation) => true,
            (Some(ReservationRestrictionType::ReservationExpires), Phase::Reservation) => c.reservation_expired,
            (Some(_), _) => false,
        };
        if !reservation_ok {
            return false;
        }
        let t = c.local.time();
        let time_ok = match (self.start_time, self.end_time) {
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
        let d = c.local.date();
        if self.start_date.is_some_and(|s| d < s) || self.end_date.is_some_and(|e| d >= e) {
            return false;
        }
        if self.days != 0 && self.days & (1 << d.weekday().num_days_from_monday()) == 0 {
            return false;
        }
        if !in_range(c.energy_wh, self.min_wh, self.max_wh) {
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
pub struct Element {
    pub components: [Option<Component>; 4],
    restrictions: Restrictions,
}

impl Element {
    pub fn matches(&self, c: &Context) -> bool {
        self.restrictions.matches(c)
    }
}

/// A validated tariff in evaluation form. Build it once per tariff and reuse it for every
/// session priced with that tariff.
#[derive(Debug, Clone)]
pub struct RefTariff {
    pub id: String,
    pub currency: String,
    pub min_price: Option<Price>,
    pub max_price: Option<Price>,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub elements: Vec<Element>,
    /// Energy thresholds (Wh) where a `min_kwh`/`max_kwh` restriction flips.
    pub energy_edges_wh: Vec<Decimal>,
    /// Durations (ms) where a `min_duration`/`max_duration` restriction flips.
    pub duration_edges_ms: Vec<i64>,
    /// Local times of day where a `start_time`/`end_time` restriction flips.
    pub time_edges: Vec<NaiveTime>,
    /// Some element restricts dates or days of the week, so local midnights are boundaries.
    pub uses_calendar: bool,
    /// Some element restricts power, so the engine needs the power of each period.
    pub uses_power: bool,
}

impl RefTariff {
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
        let mut out = RefTariff {
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
            };
            out.energy_edges_wh.extend(compiled.min_wh.iter().chain(compiled.max_wh.iter()).copied());
            out.duration_edges_ms.extend(compiled.min_ms.iter().chain(compiled.max_ms.iter()).copied());
            out.time_edges.extend(compiled.start_time.iter().chain(compiled.end_time.iter()).copied());
            out.uses_power |= compiled.min_power.is_some() || compiled.max_power.is_some();
            out.uses_calendar |= compiled.days != 0 || compiled.start_date.is_some() || compiled.end_date.is_some();
            out.elements.push(Element { components, restrictions: compiled });
        }
        out.energy_edges_wh.sort_unstable();
        out.energy_edges_wh.dedup();
        out.duration_edges_ms.sort_unstable();
        out.duration_edges_ms.dedup();
        out.time_edges.sort_unstable();
        out.time_edges.dedup();
        Ok(out)
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
