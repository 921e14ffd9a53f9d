//! The pricing engine: session timeline → periods split at every price boundary → step_size →
//! costs per component with its VAT → min/max price.

use super::compiled::{Component, Context, ENERGY, FLAT, LocalTime, PARKING, TIME, day_number};
use super::model::{CdrDimension, CdrDimensionType, ChargingPeriod, Price};
use super::session::Session;
use super::{CompiledTariff, TariffError};
use chrono::{DateTime, Days, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use rust_decimal::{Decimal, RoundingStrategy};

const MS_PER_HOUR: Decimal = Decimal::from_parts(3_600_000, 0, 0, false, 0);
const WH_PER_KWH: Decimal = Decimal::from_parts(1000, 0, 0, false, 0);
/// OCPI numbers carry four decimals (types §16.10); totals and volumes are rounded to that,
/// half away from zero, once, at the end.
const OCPI_DECIMALS: u32 = 4;

/// What a stretch of time is, for pricing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Before the session, while a reservation holds the EVSE: `TIME` of reservation elements.
    Reservation,
    /// Energy flows: `TIME` and `ENERGY`.
    Charging,
    /// Connected but not charging: `PARKING_TIME`.
    Parking,
}

/// One period of the priced session: constant phase and constant active price components.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodCost {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub phase: Phase,
    /// Energy delivered in the period, Wh.
    pub energy_wh: Decimal,
    /// Energy billed in the period after step_size, Wh (zero when energy is not priced).
    pub billed_energy_wh: Decimal,
    /// Duration billed after step_size, ms (zero when no time component is active).
    pub billed_ms: i64,
    /// Index into the tariff's elements of the element whose component priced each dimension
    /// (`[FLAT, ENERGY, TIME, PARKING_TIME]`).
    pub elements: [Option<u16>; 4],
    /// Cost of the period, a flat fee included if it fell here.
    pub cost: Price,
}

/// Totals of a priced session, all rounded to OCPI's four decimals. `Copy`, so the hot path
/// ([`Pricer::price_totals`]) returns it without touching the heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// After min/max price.
    pub total_cost: Price,
    pub total_fixed_cost: Price,
    /// kWh.
    pub total_energy: Decimal,
    pub total_energy_cost: Price,
    /// Hours, the whole session (charging and not charging), as OCPI's CDR `total_time`.
    pub total_time: Decimal,
    /// Cost of `TIME` (charging time).
    pub total_time_cost: Price,
    /// Hours not charging.
    pub total_parking_time: Decimal,
    pub total_parking_cost: Price,
    /// Hours reserved.
    pub total_reservation_time: Decimal,
    /// Reservation time and reservation fees.
    pub total_reservation_cost: Price,
    /// `min_price` raised the total (excl. or incl. VAT).
    pub min_price_applied: bool,
    /// `max_price` lowered the total (excl. or incl. VAT).
    pub max_price_applied: bool,
}

/// A session priced for a CDR: the OCPI charging periods, a cost per period, and the totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedSession {
    pub tariff_id: String,
    pub currency: String,
    /// OCPI CDR `charging_periods`, one per [`PeriodCost`] (same order, same start).
    pub charging_periods: Vec<ChargingPeriod>,
    pub period_costs: Vec<PeriodCost>,
    pub totals: Totals,
}

#[derive(Debug, Clone, Copy)]
struct RawPeriod {
    start_ms: i64,
    end_ms: i64,
    phase: Phase,
    energy_wh: Decimal,
    active: [Option<u16>; 4],
    extra_ms: i64,
    extra_wh: Decimal,
}

/// Reusable pricing state. Holds scratch buffers so that pricing many sessions in a row does
/// not allocate once the buffers have grown, and a cache of the instants at which each recent
/// local day's restriction boundaries fall; one per thread.
#[derive(Debug, Default)]
pub struct Pricer {
    cuts: Vec<i64>,
    periods: Vec<RawPeriod>,
    /// The session's meter readings: instants in ms, and energy since the first reading.
    meter_ms: Vec<i64>,
    meter_wh: Vec<Decimal>,
    calendar: CalendarCache,
}

/// Local days kept in the [`CalendarCache`]; sessions priced in time order (as billing does)
/// find their days there, and a 64-day window covers any burst of them.
const CALENDAR_SLOTS: usize = 64;

/// The UTC instants of each recent local day's midnight and restriction times, per zone, for
/// the boundaries the current tariff has (`local_instants`, which walks DST gaps minute by
/// minute, is the expensive part of cutting a session). Direct-mapped on the day number;
/// cleared when a tariff with other boundaries comes along.
#[derive(Debug, Default)]
struct CalendarCache {
    midnight: bool,
    edges: Vec<NaiveTime>,
    slots: Vec<DaySlot>,
}

#[derive(Debug, Default)]
struct DaySlot {
    key: Option<(Tz, i64)>,
    /// Every instant at which local midnight (when `midnight`) and each of `edges` occur on
    /// that day, in that order, unfiltered.
    instants: Vec<i64>,
}

impl CalendarCache {
    fn instants(&mut self, tariff: &CompiledTariff, tz: &Tz, day: NaiveDate) -> &[i64] {
        if self.midnight != tariff.uses_calendar || self.edges != tariff.time_edges {
            self.midnight = tariff.uses_calendar;
            self.edges.clone_from(&tariff.time_edges);
            for slot in &mut self.slots {
                slot.key = None;
            }
        }
        if self.slots.is_empty() {
            self.slots.resize_with(CALENDAR_SLOTS, DaySlot::default);
        }
        let n = day_number(day);
        // rem_euclid of a positive modulus is in 0..CALENDAR_SLOTS.
        let slot = &mut self.slots[n.rem_euclid(CALENDAR_SLOTS as i64) as usize];
        if slot.key != Some((*tz, n)) {
            slot.instants.clear();
            if self.midnight {
                local_instants(tz, day.and_time(NaiveTime::MIN), &mut slot.instants, i64::MIN, i64::MAX);
            }
            for &t in &self.edges {
                local_instants(tz, day.and_time(t), &mut slot.instants, i64::MIN, i64::MAX);
            }
            slot.key = Some((*tz, n));
        }
        &slot.instants
    }
}

fn overflow() -> TariffError {
    TariffError::Overflow
}

/// [`TariffError::Overflow`] as a zero-sized error, so that the arithmetic helpers return
/// `Result<Decimal, Overflow>` in registers rather than the large `TariffError` through memory.
#[derive(Debug, Clone, Copy)]
struct Overflow;

impl From<Overflow> for TariffError {
    fn from(_: Overflow) -> Self {
        TariffError::Overflow
    }
}

#[inline]
fn mul(a: Decimal, b: Decimal) -> Result<Decimal, Overflow> {
    a.checked_mul(b).ok_or(Overflow)
}
#[inline]
fn div(a: Decimal, b: Decimal) -> Result<Decimal, Overflow> {
    a.checked_div(b).ok_or(Overflow)
}
/// Non-negative with a mantissa below 2^64: the meter energies and most amounts.
#[inline]
fn small(d: Decimal) -> Option<u64> {
    if d.is_sign_negative() {
        return None;
    }
    u64::try_from(d.mantissa()).ok()
}
/// A non-negative result with a mantissa below 2^64 at `scale`.
#[inline]
fn from_small(m: u64, scale: u32) -> Decimal {
    // Truncations intended: the two 32-bit words of m.
    Decimal::from_parts(m as u32, (m >> 32) as u32, 0, false, scale)
}
/// `a + b`; operands of one scale with small mantissas (the common case: meter energies in Wh,
/// pieces of one period) are added as integers, giving the decimal rust_decimal would.
#[inline]
fn add(a: Decimal, b: Decimal) -> Result<Decimal, Overflow> {
    if a.scale() == b.scale()
        && let (Some(x), Some(y)) = (small(a), small(b))
        && let Some(s) = x.checked_add(y)
    {
        return Ok(from_small(s, a.scale()));
    }
    a.checked_add(b).ok_or(Overflow)
}
/// `a - b`, as integers when both are of one scale, small, and `a >= b` (see [`add`]).
#[inline]
fn sub(a: Decimal, b: Decimal) -> Result<Decimal, Overflow> {
    if a.scale() == b.scale()
        && let (Some(x), Some(y)) = (small(a), small(b))
        && x >= y
    {
        return Ok(from_small(x - y, a.scale()));
    }
    a.checked_sub(b).ok_or(Overflow)
}
fn add_price(a: &mut Price, b: Price) -> Result<(), Overflow> {
    a.excl_vat = add(a.excl_vat, b.excl_vat)?;
    a.incl_vat = Some(add(a.incl_vat.unwrap_or(a.excl_vat), b.incl_vat.unwrap_or(b.excl_vat))?);
    Ok(())
}
fn round(d: Decimal) -> Decimal {
    round_half_away(d, OCPI_DECIMALS)
}

/// `d.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero)`, the same decimal
/// (value, scale and sign), in one 128-bit division instead of rust_decimal's digit-by-digit
/// loop: quotients of prices by 3 600 000 ms carry 28 digits, and rounding them was a sixth of
/// the engine's time.
fn round_half_away(d: Decimal, dp: u32) -> Decimal {
    let scale = d.scale();
    if scale <= dp || d.is_zero() {
        return d.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero);
    }
    // scale <= 28, so the power fits in a u128; the mantissa is below 2^96.
    let p = 10u128.pow(scale - dp);
    let m = d.mantissa().unsigned_abs();
    let (q, r) = (m / p, m % p);
    let q = if r >= p - r { q + 1 } else { q };
    // q <= m < 2^96: the three 32-bit words of the result (truncation intended).
    let (lo, mid, hi) = (q as u32, (q >> 32) as u32, (q >> 64) as u32);
    Decimal::from_parts(lo, mid, hi, d.is_sign_negative(), dp)
}
fn round_price(p: Price) -> Price {
    Price { excl_vat: round(p.excl_vat), incl_vat: p.incl_vat.map(round) }
}
fn to_utc(ms: i64) -> Result<DateTime<Utc>, TariffError> {
    DateTime::<Utc>::from_timestamp_millis(ms).ok_or_else(overflow)
}
fn local(tz: &Tz, ms: i64) -> Result<NaiveDateTime, TariffError> {
    Ok(to_utc(ms)?.with_timezone(tz).naive_local())
}
/// Local time for restriction evaluation; skips the zone lookup when no element looks at it
/// (restrictions then never read it).
/// `utc_date` remembers the last UTC day's date, so that consecutive cuts skip the calendar
/// arithmetic of building the date from a timestamp.
fn local_if_needed(
    tariff: &CompiledTariff,
    tz: &Tz,
    ms: i64,
    utc_date: &mut Option<(i64, NaiveDate)>,
) -> Result<LocalTime, TariffError> {
    const MS_PER_DAY: i64 = 86_400_000;
    if !tariff.needs_local_time() {
        return Ok(LocalTime::default());
    }
    let (day, in_day) = (ms.div_euclid(MS_PER_DAY), ms.rem_euclid(MS_PER_DAY));
    let date = match *utc_date {
        Some((d, date)) if d == day => date,
        _ => {
            let date = to_utc(day * MS_PER_DAY)?.date_naive();
            *utc_date = Some((day, date));
            date
        }
    };
    // 0 <= in_day < 86 400 000, so both parts fit in u32.
    let time =
        NaiveTime::from_num_seconds_from_midnight_opt((in_day / 1000) as u32, (in_day % 1000) as u32 * 1_000_000)
            .ok_or_else(overflow)?;
    let utc = NaiveDateTime::new(date, time);
    let offset_s = tz.offset_from_utc_datetime(&utc).fix().local_minus_utc();
    let local_ms = ms.checked_add(i64::from(offset_s) * 1000).ok_or_else(overflow)?;
    Ok(LocalTime::from_local_ms(local_ms))
}
fn hours(ms: i64) -> Result<Decimal, Overflow> {
    div(Decimal::from(ms), MS_PER_HOUR)
}

/// Cost excl. and incl. VAT of `quantity / unit` units of `component`.
fn component_cost(c: &Component, quantity: Decimal, unit: Decimal) -> Result<Price, Overflow> {
    let excl = div(mul(c.price, quantity)?, unit)?;
    vat(c, excl)
}
fn vat(c: &Component, excl: Decimal) -> Result<Price, Overflow> {
    let incl = match c.vat_factor {
        // "If omitted, no VAT is applicable."
        None => excl,
        Some(f) => mul(excl, f)?,
    };
    Ok(Price::new(excl, incl))
}

/// Rounds `total` up to a whole number of `step`s; `step == 0` means no rounding.
fn ceil_to_step(total: Decimal, step: Decimal) -> Result<Decimal, Overflow> {
    if step.is_zero() {
        return Ok(total);
    }
    mul(div(total, step)?.ceil(), step)
}

/// Every instant at which local `time` occurs on `date` in `tz`. On a fall-back night a time
/// in the repeated hour happens twice; on a spring-forward night a time in the skipped hour
/// never happens, and the restriction flips at the first instant after the gap instead.
fn local_instants(tz: &Tz, at: NaiveDateTime, out: &mut Vec<i64>, lo: i64, hi: i64) {
    let mut push = |dt: DateTime<Tz>| {
        let ms = dt.timestamp_millis();
        if ms > lo && ms < hi {
            out.push(ms);
        }
    };
    match tz.from_local_datetime(&at) {
        LocalResult::Single(dt) => push(dt),
        LocalResult::Ambiguous(a, b) => {
            push(a);
            push(b);
        }
        LocalResult::None => {
            // Gaps are at most a few hours (usually one); walk forward minute by minute.
            for minutes in 1..=24 * 60 {
                let later = at + chrono::TimeDelta::minutes(minutes);
                match tz.from_local_datetime(&later) {
                    LocalResult::Single(dt) | LocalResult::Ambiguous(dt, _) => {
                        // The first valid local minute after the gap is the transition instant.
                        push(dt);
                        break;
                    }
                    LocalResult::None => {}
                }
            }
        }
    }
}

impl Pricer {
    /// A pricer with empty scratch buffers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Prices `session` with `tariff` and builds the CDR-ready result.
    pub fn price(&mut self, tariff: &CompiledTariff, session: &Session) -> Result<PricedSession, TariffError> {
        let totals = self.price_totals(tariff, session)?;
        let mut charging_periods = Vec::with_capacity(self.periods.len());
        let mut period_costs = Vec::with_capacity(self.periods.len());
        for p in &self.periods {
            let ms = p.end_ms - p.start_ms;
            let mut dimensions = Vec::with_capacity(2);
            match p.phase {
                Phase::Charging => {
                    dimensions.push(CdrDimension {
                        dimension: CdrDimensionType::Energy,
                        volume: round(div(p.energy_wh, WH_PER_KWH)?),
                    });
                    dimensions.push(CdrDimension { dimension: CdrDimensionType::Time, volume: round(hours(ms)?) });
                }
                Phase::Parking => dimensions
                    .push(CdrDimension { dimension: CdrDimensionType::ParkingTime, volume: round(hours(ms)?) }),
                Phase::Reservation => dimensions
                    .push(CdrDimension { dimension: CdrDimensionType::ReservationTime, volume: round(hours(ms)?) }),
            }
            charging_periods.push(ChargingPeriod {
                start_date_time: to_utc(p.start_ms)?,
                dimensions,
                tariff_id: Some(tariff.id.clone()),
            });
            period_costs.push(self.period_cost(tariff, p)?);
        }
        // Flat fees are charged once per phase group; put each on the period it belongs to.
        for group in [true, false] {
            if let Some((i, c)) = self.flat_of_group(tariff, group) {
                add_price(&mut period_costs[i].cost, vat(&c, c.price)?)?;
            }
        }
        for pc in &mut period_costs {
            pc.cost = round_price(pc.cost);
        }
        Ok(PricedSession {
            tariff_id: tariff.id.clone(),
            currency: tariff.currency.clone(),
            charging_periods,
            period_costs,
            totals,
        })
    }

    /// Prices `session` with `tariff` and returns only the totals. After the first few calls
    /// this does not allocate: the periods live in the pricer's reused buffers.
    pub fn price_totals(&mut self, tariff: &CompiledTariff, session: &Session) -> Result<Totals, TariffError> {
        session.validate()?;
        if let Some(cur) = &session.currency
            && *cur != tariff.currency
        {
            return Err(TariffError::CurrencyMismatch { tariff: tariff.currency.clone(), session: cur.clone() });
        }
        let at = session.reservation.map_or(session.start, |r| r.start);
        if tariff.valid_from.is_some_and(|s| at < s) || tariff.valid_until.is_some_and(|e| at >= e) {
            return Err(TariffError::TariffNotActive { tariff_id: tariff.id.clone(), at });
        }
        self.periods.clear();
        let mut any_element = false;
        if let Some(r) = session.reservation
            && r.end > r.start
        {
            any_element |= self.build_reservation(
                tariff,
                session,
                r.start.timestamp_millis(),
                r.end.timestamp_millis(),
                r.expired,
            )?;
        }
        if session.end > session.start {
            any_element |= self.build_session(tariff, session)?;
        }
        if !any_element {
            return Err(TariffError::NoElementApplies { tariff_id: tariff.id.clone() });
        }
        self.apply_step_sizes(tariff)?;
        self.totals(tariff, session)
    }

    /// Adds the instants where a time-of-day, date or weekday restriction can flip.
    fn calendar_cuts(&mut self, tariff: &CompiledTariff, tz: &Tz, lo: i64, hi: i64) -> Result<(), TariffError> {
        if tariff.time_edges.is_empty() && !tariff.uses_calendar {
            return Ok(());
        }
        let first = local(tz, lo)?.date().checked_sub_days(Days::new(1)).ok_or_else(overflow)?;
        let last = local(tz, hi)?.date().checked_add_days(Days::new(1)).ok_or_else(overflow)?;
        let mut day = first;
        while day <= last {
            let instants = self.calendar.instants(tariff, tz, day);
            self.cuts.extend(instants.iter().copied().filter(|&ms| ms > lo && ms < hi));
            day = day.succ_opt().ok_or_else(overflow)?;
        }
        Ok(())
    }

    /// Finds the first matching element per dimension for `ctx`, and whether any element's
    /// restrictions match at all. Only elements whose reservation restriction admits `phase`
    /// are looked at; once every dimension has its element, and it is known (or not needed,
    /// `need_any == false`) that some element matches, the rest cannot change the answer.
    fn evaluate(
        tariff: &CompiledTariff,
        phase: Phase,
        reservation_expired: bool,
        ctx: &Context,
        need_any: bool,
    ) -> ([Option<u16>; 4], bool) {
        let mut missing: u8 = match phase {
            Phase::Charging => 1 << FLAT | 1 << ENERGY | 1 << TIME,
            Phase::Parking => 1 << FLAT | 1 << PARKING,
            Phase::Reservation => 1 << FLAT | 1 << TIME,
        };
        let mut active = [None; 4];
        let mut any = false;
        for &(i, dims) in tariff.candidates(phase, reservation_expired) {
            if dims & missing == 0 && (any || !need_any) {
                continue;
            }
            if !tariff.elements[usize::from(i)].matches(ctx) {
                continue;
            }
            any = true;
            let new = dims & missing;
            for (d, slot) in active.iter_mut().enumerate() {
                if new & 1 << d != 0 {
                    *slot = Some(i);
                }
            }
            missing &= !new;
            if missing == 0 {
                break;
            }
        }
        (active, any)
    }

    fn push_period(&mut self, p: RawPeriod) {
        if let Some(last) = self.periods.last_mut()
            && last.phase == p.phase
            && last.active == p.active
            && last.end_ms == p.start_ms
        {
            last.end_ms = p.end_ms;
            last.energy_wh += p.energy_wh;
            return;
        }
        self.periods.push(p);
    }

    fn build_reservation(
        &mut self,
        tariff: &CompiledTariff,
        session: &Session,
        lo: i64,
        hi: i64,
        expired: bool,
    ) -> Result<bool, TariffError> {
        self.cuts.clear();
        self.cuts.extend([lo, hi]);
        for &d in &tariff.duration_edges_ms {
            if d > 0 && lo + d < hi {
                self.cuts.push(lo + d);
            }
        }
        self.calendar_cuts(tariff, &session.time_zone, lo, hi)?;
        self.cuts.sort_unstable();
        self.cuts.dedup();
        let mut any = false;
        let mut utc_date = None;
        for i in 0..self.cuts.len() - 1 {
            let (a, b) = (self.cuts[i], self.cuts[i + 1]);
            let ctx = Context {
                local: local_if_needed(tariff, &session.time_zone, a, &mut utc_date)?,
                energy_wh: Decimal::ZERO,
                elapsed_ms: a - lo,
                power_kw: None,
                current_a: None,
            };
            let (active, m) = Self::evaluate(tariff, Phase::Reservation, expired, &ctx, !any);
            any |= m;
            self.push_period(RawPeriod {
                start_ms: a,
                end_ms: b,
                phase: Phase::Reservation,
                energy_wh: Decimal::ZERO,
                active,
                extra_ms: 0,
                extra_wh: Decimal::ZERO,
            });
        }
        Ok(any)
    }

    fn build_session(&mut self, tariff: &CompiledTariff, session: &Session) -> Result<bool, TariffError> {
        let lo = session.start.timestamp_millis();
        let hi = session.end.timestamp_millis();
        let meter = &session.meter;
        let base = meter[0].energy_wh;
        self.meter_ms.clear();
        self.meter_wh.clear();
        for m in meter {
            self.meter_ms.push(m.at.timestamp_millis());
            self.meter_wh.push(sub(m.energy_wh, base)?);
        }
        let (meter_ms, meter_wh) = (&self.meter_ms, &self.meter_wh);
        self.cuts.clear();
        self.cuts.extend([lo, hi]);
        self.cuts.extend_from_slice(meter_ms);
        for s in session.power_w.iter().chain(session.current_a.iter()) {
            let ms = s.at.timestamp_millis();
            if ms > lo && ms < hi {
                self.cuts.push(ms);
            }
        }
        for &d in &tariff.duration_edges_ms {
            if d > 0 && lo + d < hi {
                self.cuts.push(lo + d);
            }
        }
        // Where the energy consumed crosses a min_kwh/max_kwh threshold: interpolate within the
        // meter interval and round up to the millisecond, so the threshold is reached there.
        for &thr in &tariff.energy_edges_wh {
            for k in 0..meter.len() - 1 {
                let (e0, e1) = (meter_wh[k], meter_wh[k + 1]);
                if e0 < thr && thr <= e1 {
                    let (t0, t1) = (meter_ms[k], meter_ms[k + 1]);
                    let offset = div(mul(sub(thr, e0)?, Decimal::from(t1 - t0))?, sub(e1, e0)?)?.ceil();
                    let offset = i64::try_from(offset).map_err(|_| overflow())?;
                    if t0 + offset > lo && t0 + offset < hi {
                        self.cuts.push(t0 + offset);
                    }
                    break;
                }
            }
        }
        self.calendar_cuts(tariff, &session.time_zone, lo, hi)?;
        self.cuts.sort_unstable();
        self.cuts.dedup();

        let (meter_ms, meter_wh) = (&self.meter_ms, &self.meter_wh);
        let mut any = false;
        let mut utc_date = None;
        let mut j = 0; // meter interval [j, j+1] containing the current cut
        let mut de_of = usize::MAX; // the interval `de` was computed for
        let mut de = Decimal::ZERO;
        let mut pw = 0; // power samples consumed
        let mut cur = 0; // current samples consumed
        for i in 0..self.cuts.len() - 1 {
            let (a, b) = (self.cuts[i], self.cuts[i + 1]);
            while j + 2 < meter.len() && meter_ms[j + 1] <= a {
                j += 1;
            }
            let j1 = (j + 1).min(meter.len() - 1);
            let (t0, t1) = (meter_ms[j], meter_ms[j1]);
            if de_of != j {
                de = sub(meter[j1].energy_wh, meter[j].energy_wh)?;
                de_of = j;
            }
            // Interpolated energies are kept to the µWh, so that period energies add up exactly
            // (a sum 1e-25 Wh over a step_size multiple would otherwise bill a whole extra step).
            let energy_at = |t: i64| -> Result<Decimal, Overflow> {
                if t1 == t0 || de.is_zero() || t == t0 {
                    return Ok(meter_wh[j]);
                }
                if t == t1 {
                    return Ok(meter_wh[j1]);
                }
                let part = div(mul(de, Decimal::from(t - t0))?, Decimal::from(t1 - t0))?;
                add(meter_wh[j], round_half_away(part, 6))
            };
            let (ea, eb) = (energy_at(a)?, energy_at(b)?);
            let phase = if de > Decimal::ZERO { Phase::Charging } else { Phase::Parking };
            while pw < session.power_w.len() && session.power_w[pw].at.timestamp_millis() <= a {
                pw += 1;
            }
            while cur < session.current_a.len() && session.current_a[cur].at.timestamp_millis() <= a {
                cur += 1;
            }
            let power_kw = match pw.checked_sub(1).map(|k| session.power_w[k].value) {
                _ if !tariff.uses_power => None,
                Some(w) => Some(div(w, WH_PER_KWH)?),
                // kW = Wh * 3600 / ms over the meter interval.
                None if t1 > t0 => Some(div(mul(de, Decimal::from(3600))?, Decimal::from(t1 - t0))?),
                None => Some(Decimal::ZERO),
            };
            let current_a = cur.checked_sub(1).map(|k| session.current_a[k].value);
            let ctx = Context {
                local: local_if_needed(tariff, &session.time_zone, a, &mut utc_date)?,
                energy_wh: ea,
                elapsed_ms: a - lo,
                power_kw,
                current_a,
            };
            let (active, m) = Self::evaluate(tariff, phase, false, &ctx, !any);
            any |= m;
            let energy_wh = sub(eb, ea)?;
            if let Some(last) = self.periods.last_mut()
                && last.phase == phase
                && last.active == active
                && last.end_ms == a
            {
                last.end_ms = b;
                last.energy_wh = add(last.energy_wh, energy_wh)?;
                continue;
            }
            self.periods.push(RawPeriod {
                start_ms: a,
                end_ms: b,
                phase,
                energy_wh,
                active,
                extra_ms: 0,
                extra_wh: Decimal::ZERO,
            });
        }
        Ok(any)
    }

    fn component(tariff: &CompiledTariff, active: Option<u16>, d: usize) -> Option<Component> {
        active.and_then(|i| tariff.elements.get(usize::from(i))).and_then(|e| e.components[d])
    }

    /// The time dimension a period's time is priced in, if any.
    fn time_dim(p: &RawPeriod) -> Option<usize> {
        match p.phase {
            Phase::Charging | Phase::Reservation if p.active[TIME].is_some() => Some(TIME),
            Phase::Parking if p.active[PARKING].is_some() => Some(PARKING),
            _ => None,
        }
    }

    /// step_size as the 2.2.1 errata reads: for each dimension the *total* billed in the
    /// session is rounded up to a multiple of the step_size of the component active in the
    /// last period that dimension is priced in, and the difference is billed in that period.
    /// `TIME` and `PARKING_TIME` count as one "time-based" sequence: only the last time-based
    /// priced period's step_size applies, so charging time followed by priced parking is not
    /// rounded ("The charging time is not affected by step_size because it is followed by
    /// another time-based period."). Reservation time is rounded on its own.
    fn apply_step_sizes(&mut self, tariff: &CompiledTariff) -> Result<(), TariffError> {
        for reservation in [true, false] {
            let in_group = |p: &RawPeriod| (p.phase == Phase::Reservation) == reservation;
            if let Some(last) = self.periods.iter().rposition(|p| in_group(p) && Self::time_dim(p).is_some()) {
                let lp = self.periods[last];
                let d = Self::time_dim(&lp).unwrap_or(TIME);
                let step = Self::component(tariff, lp.active[d], d).map_or(0, |c| c.step_size);
                let total: i64 = self
                    .periods
                    .iter()
                    .filter(|p| in_group(p) && Self::time_dim(p) == Some(d))
                    .map(|p| p.end_ms - p.start_ms)
                    .sum();
                let step_ms = i64::try_from(step).ok().and_then(|s| s.checked_mul(1000)).ok_or_else(overflow)?;
                if step_ms > 0 {
                    let billed = total.div_euclid(step_ms) * step_ms + if total % step_ms == 0 { 0 } else { step_ms };
                    self.periods[last].extra_ms = billed - total;
                }
            }
        }
        if let Some(last) = self.periods.iter().rposition(|p| p.phase == Phase::Charging && p.active[ENERGY].is_some())
        {
            let step = Self::component(tariff, self.periods[last].active[ENERGY], ENERGY).map_or(0, |c| c.step_size);
            let mut total = Decimal::ZERO;
            for p in self.periods.iter().filter(|p| p.phase == Phase::Charging && p.active[ENERGY].is_some()) {
                total = add(total, p.energy_wh)?;
            }
            let billed = ceil_to_step(total, Decimal::from(step))?;
            self.periods[last].extra_wh = sub(billed, total)?;
        }
        Ok(())
    }

    /// The flat fee of the reservation (`reservation == true`) or of the session: the first
    /// period of the group in which a `FLAT` component is active.
    fn flat_of_group(&self, tariff: &CompiledTariff, reservation: bool) -> Option<(usize, Component)> {
        self.periods.iter().enumerate().find_map(|(i, p)| {
            if (p.phase == Phase::Reservation) != reservation {
                return None;
            }
            Self::component(tariff, p.active[FLAT], FLAT).map(|c| (i, c))
        })
    }

    fn period_cost(&self, tariff: &CompiledTariff, p: &RawPeriod) -> Result<PeriodCost, TariffError> {
        let mut cost = Price::ZERO;
        let mut billed_ms = 0;
        let mut billed_energy_wh = Decimal::ZERO;
        if let Some(d) = Self::time_dim(p)
            && let Some(c) = Self::component(tariff, p.active[d], d)
        {
            billed_ms = p.end_ms - p.start_ms + p.extra_ms;
            add_price(&mut cost, component_cost(&c, Decimal::from(billed_ms), MS_PER_HOUR)?)?;
        }
        if p.phase == Phase::Charging
            && let Some(c) = Self::component(tariff, p.active[ENERGY], ENERGY)
        {
            billed_energy_wh = add(p.energy_wh, p.extra_wh)?;
            add_price(&mut cost, component_cost(&c, billed_energy_wh, WH_PER_KWH)?)?;
        }
        Ok(PeriodCost {
            start: to_utc(p.start_ms)?,
            end: to_utc(p.end_ms)?,
            phase: p.phase,
            energy_wh: p.energy_wh,
            billed_energy_wh,
            billed_ms,
            elements: p.active,
            cost,
        })
    }

    fn totals(&self, tariff: &CompiledTariff, session: &Session) -> Result<Totals, TariffError> {
        let mut fixed = Price::ZERO;
        let mut energy_cost = Price::ZERO;
        let mut time_cost = Price::ZERO;
        let mut parking_cost = Price::ZERO;
        let mut reservation_cost = Price::ZERO;
        let mut energy_wh = Decimal::ZERO;
        let mut parking_ms = 0i64;
        let mut reservation_ms = 0i64;
        for p in &self.periods {
            let ms = p.end_ms - p.start_ms;
            match p.phase {
                Phase::Charging => {
                    energy_wh = add(energy_wh, p.energy_wh)?;
                    if let Some(c) = Self::component(tariff, p.active[TIME], TIME) {
                        add_price(&mut time_cost, component_cost(&c, Decimal::from(ms + p.extra_ms), MS_PER_HOUR)?)?;
                    }
                    if let Some(c) = Self::component(tariff, p.active[ENERGY], ENERGY) {
                        add_price(&mut energy_cost, component_cost(&c, add(p.energy_wh, p.extra_wh)?, WH_PER_KWH)?)?;
                    }
                }
                Phase::Parking => {
                    parking_ms += ms;
                    if let Some(c) = Self::component(tariff, p.active[PARKING], PARKING) {
                        add_price(&mut parking_cost, component_cost(&c, Decimal::from(ms + p.extra_ms), MS_PER_HOUR)?)?;
                    }
                }
                Phase::Reservation => {
                    reservation_ms += ms;
                    if let Some(c) = Self::component(tariff, p.active[TIME], TIME) {
                        add_price(
                            &mut reservation_cost,
                            component_cost(&c, Decimal::from(ms + p.extra_ms), MS_PER_HOUR)?,
                        )?;
                    }
                }
            }
        }
        if let Some((_, c)) = self.flat_of_group(tariff, true) {
            add_price(&mut reservation_cost, vat(&c, c.price)?)?;
        }
        if let Some((_, c)) = self.flat_of_group(tariff, false) {
            add_price(&mut fixed, vat(&c, c.price)?)?;
        }
        let mut total = Price::ZERO;
        for part in [fixed, energy_cost, time_cost, parking_cost, reservation_cost] {
            add_price(&mut total, part)?;
        }
        let (mut min_applied, mut max_applied) = (false, false);
        // OCPI: min_price and max_price bind excl. and incl. VAT separately.
        if let Some(min) = tariff.min_price {
            if total.excl_vat < min.excl_vat {
                total.excl_vat = min.excl_vat;
                min_applied = true;
            }
            if let (Some(incl), Some(min_incl)) = (total.incl_vat, min.incl_vat)
                && incl < min_incl
            {
                total.incl_vat = Some(min_incl);
                min_applied = true;
            }
        }
        if let Some(max) = tariff.max_price {
            if total.excl_vat > max.excl_vat {
                total.excl_vat = max.excl_vat;
                max_applied = true;
            }
            if let (Some(incl), Some(max_incl)) = (total.incl_vat, max.incl_vat)
                && incl > max_incl
            {
                total.incl_vat = Some(max_incl);
                max_applied = true;
            }
        }
        let session_ms = session.end.timestamp_millis() - session.start.timestamp_millis();
        Ok(Totals {
            total_cost: round_price(total),
            total_fixed_cost: round_price(fixed),
            total_energy: round(div(energy_wh, WH_PER_KWH)?),
            total_energy_cost: round_price(energy_cost),
            total_time: round(hours(session_ms)?),
            total_time_cost: round_price(time_cost),
            total_parking_time: round(hours(parking_ms)?),
            total_parking_cost: round_price(parking_cost),
            total_reservation_time: round(hours(reservation_ms)?),
            total_reservation_cost: round_price(reservation_cost),
            min_price_applied: min_applied,
            max_price_applied: max_applied,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_half_away_is_rust_decimals_rounding_bit_for_bit() {
        // A small deterministic generator: mantissas of every size, every scale, both signs.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut checked = 0;
        for _ in 0..200_000 {
            let bits = next() % 97;
            let m = (u128::from(next()) << 64 | u128::from(next())) & ((1u128 << bits) - 1);
            // Some mantissas end in ...5000 so that exact midpoints are hit.
            let m = if next() % 4 == 0 { (m / 10_000) * 10_000 + 5_000 } else { m } & ((1u128 << 96) - 1);
            let scale = (next() % 29) as u32;
            let negative = next() % 2 == 0;
            let d = Decimal::from_parts(m as u32, (m >> 32) as u32, (m >> 64) as u32, negative, scale);
            for dp in [0, 4, 6] {
                let expected = d.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero);
                let got = round_half_away(d, dp);
                assert_eq!(got.serialize(), expected.serialize(), "{d:?} to {dp} places: {got:?} != {expected:?}");
                checked += 1;
            }
        }
        assert_eq!(checked, 600_000);
    }

    #[test]
    fn integer_add_and_sub_are_rust_decimals_bit_for_bit() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let decimal = |next: &mut dyn FnMut() -> u64| {
            let bits = next() % 97;
            let m = (u128::from(next()) << 64 | u128::from(next())) & ((1u128 << bits) - 1);
            let scale = (next() % 5) as u32;
            Decimal::from_parts(m as u32, (m >> 32) as u32, (m >> 64) as u32, next().is_multiple_of(8), scale)
        };
        for i in 0..200_000 {
            let a = decimal(&mut next);
            // Often equal, often of the same scale, to reach the integer paths and zero results.
            let b = match i % 3 {
                0 => a,
                1 => {
                    let mut b = decimal(&mut next);
                    b.rescale(a.scale());
                    b
                }
                _ => decimal(&mut next),
            };
            for (got, expected) in [(add(a, b), a.checked_add(b)), (sub(a, b), a.checked_sub(b))] {
                assert_eq!(got.ok().map(|d| d.serialize()), expected.map(|d| d.serialize()), "{a:?}, {b:?}");
            }
        }
    }
}
