//! The pricing engine as it was before the fast path (commit 27ad4f2), kept verbatim as the
//! slow reference the property tests compare the fast path with. The pricing engine: session timeline → periods split at every price boundary → step_size →
//! costs per component with its VAT → min/max price.

use super::compiled::{Component, Context, ENERGY, FLAT, PARKING, RefTariff as CompiledTariff, TIME};
use chrono::{DateTime, Days, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use rust_decimal::{Decimal, RoundingStrategy};
use shared_model::tariff::{
    CdrDimension, CdrDimensionType, ChargingPeriod, PeriodCost, Phase, Price, PricedSession, Session, TariffError,
    Totals,
};

const MS_PER_HOUR: Decimal = Decimal::from_parts(3_600_000, 0, 0, false, 0);
const WH_PER_KWH: Decimal = Decimal::from_parts(1000, 0, 0, false, 0);
/// OCPI numbers carry four decimals (types §16.10); totals and volumes are rounded to that,
/// half away from zero, once, at the end.
const OCPI_DECIMALS: u32 = 4;

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
/// not allocate once the buffers have grown; one per thread.
#[derive(Debug, Default)]
pub struct RefPricer {
    cuts: Vec<i64>,
    periods: Vec<RawPeriod>,
}

fn overflow() -> TariffError {
    TariffError::Overflow
}
fn mul(a: Decimal, b: Decimal) -> Result<Decimal, TariffError> {
    a.checked_mul(b).ok_or_else(overflow)
}
fn div(a: Decimal, b: Decimal) -> Result<Decimal, TariffError> {
    a.checked_div(b).ok_or_else(overflow)
}
fn add(a: Decimal, b: Decimal) -> Result<Decimal, TariffError> {
    a.checked_add(b).ok_or_else(overflow)
}
fn sub(a: Decimal, b: Decimal) -> Result<Decimal, TariffError> {
    a.checked_sub(b).ok_or_else(overflow)
}
fn add_price(a: &mut Price, b: Price) -> Result<(), TariffError> {
    a.excl_vat = add(a.excl_vat, b.excl_vat)?;
    a.incl_vat = Some(add(a.incl_vat.unwrap_or(a.excl_vat), b.incl_vat.unwrap_or(b.excl_vat))?);
    Ok(())
}
fn round(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(OCPI_DECIMALS, RoundingStrategy::MidpointAwayFromZero)
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
/// Local time for restriction evaluation; skips the zone lookup when no element looks at it.
fn local_if_needed(tariff: &CompiledTariff, tz: &Tz, ms: i64) -> Result<NaiveDateTime, TariffError> {
    if tariff.time_edges.is_empty() && !tariff.uses_calendar {
        return Ok(to_utc(ms)?.naive_utc());
    }
    local(tz, ms)
}
fn hours(ms: i64) -> Result<Decimal, TariffError> {
    div(Decimal::from(ms), MS_PER_HOUR)
}

/// Cost excl. and incl. VAT of `quantity / unit` units of `component`.
fn component_cost(c: &Component, quantity: Decimal, unit: Decimal) -> Result<Price, TariffError> {
    let excl = div(mul(c.price, quantity)?, unit)?;
    vat(c, excl)
}
fn vat(c: &Component, excl: Decimal) -> Result<Price, TariffError> {
    let incl = match c.vat_factor {
        // "If omitted, no VAT is applicable."
        None => excl,
        Some(f) => mul(excl, f)?,
    };
    Ok(Price::new(excl, incl))
}

/// Rounds `total` up to a whole number of `step`s; `step == 0` means no rounding.
fn ceil_to_step(total: Decimal, step: Decimal) -> Result<Decimal, TariffError> {
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

impl RefPricer {
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
            if tariff.uses_calendar {
                local_instants(tz, day.and_time(chrono::NaiveTime::MIN), &mut self.cuts, lo, hi);
            }
            for &t in &tariff.time_edges {
                local_instants(tz, day.and_time(t), &mut self.cuts, lo, hi);
            }
            day = day.succ_opt().ok_or_else(overflow)?;
        }
        Ok(())
    }

    /// Finds the first matching element per dimension for `ctx`, and whether any element's
    /// restrictions match at all.
    fn evaluate(tariff: &CompiledTariff, ctx: &Context) -> ([Option<u16>; 4], bool) {
        let dims: &[usize] = match ctx.phase {
            Phase::Charging => &[FLAT, ENERGY, TIME],
            Phase::Parking => &[FLAT, PARKING],
            Phase::Reservation => &[FLAT, TIME],
        };
        let mut active = [None; 4];
        let mut any = false;
        for (i, el) in tariff.elements.iter().enumerate() {
            if !el.matches(ctx) {
                continue;
            }
            any = true;
            for &d in dims {
                if active[d].is_none() && el.components[d].is_some() {
                    active[d] = u16::try_from(i).ok();
                }
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
        for i in 0..self.cuts.len() - 1 {
            let (a, b) = (self.cuts[i], self.cuts[i + 1]);
            let ctx = Context {
                local: local_if_needed(tariff, &session.time_zone, a)?,
                energy_wh: Decimal::ZERO,
                elapsed_ms: a - lo,
                power_kw: None,
                current_a: None,
                phase: Phase::Reservation,
                reservation_expired: expired,
            };
            let (active, m) = Self::evaluate(tariff, &ctx);
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
        self.cuts.clear();
        self.cuts.extend([lo, hi]);
        for m in meter {
            self.cuts.push(m.at.timestamp_millis());
        }
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
            for w in meter.windows(2) {
                let (e0, e1) = (sub(w[0].energy_wh, base)?, sub(w[1].energy_wh, base)?);
                if e0 < thr && thr <= e1 {
                    let (t0, t1) = (w[0].at.timestamp_millis(), w[1].at.timestamp_millis());
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

        let mut any = false;
        let mut j = 0; // meter interval [j, j+1] containing the current cut
        let mut pw = 0; // power samples consumed
        let mut cur = 0; // current samples consumed
        for i in 0..self.cuts.len() - 1 {
            let (a, b) = (self.cuts[i], self.cuts[i + 1]);
            while j + 2 < meter.len() && meter[j + 1].at.timestamp_millis() <= a {
                j += 1;
            }
            let (m0, m1) = (&meter[j], &meter[(j + 1).min(meter.len() - 1)]);
            let (t0, t1) = (m0.at.timestamp_millis(), m1.at.timestamp_millis());
            let de = sub(m1.energy_wh, m0.energy_wh)?;
            // Interpolated energies are kept to the µWh, so that period energies add up exactly
            // (a sum 1e-25 Wh over a step_size multiple would otherwise bill a whole extra step).
            let energy_at = |t: i64| -> Result<Decimal, TariffError> {
                if t1 == t0 || de.is_zero() || t == t0 {
                    return sub(m0.energy_wh, base);
                }
                if t == t1 {
                    return sub(m1.energy_wh, base);
                }
                let part = div(mul(de, Decimal::from(t - t0))?, Decimal::from(t1 - t0))?;
                add(sub(m0.energy_wh, base)?, part.round_dp_with_strategy(6, RoundingStrategy::MidpointAwayFromZero))
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
                local: local_if_needed(tariff, &session.time_zone, a)?,
                energy_wh: ea,
                elapsed_ms: a - lo,
                power_kw,
                current_a,
                phase,
                reservation_expired: false,
            };
            let (active, m) = Self::evaluate(tariff, &ctx);
            any |= m;
            self.push_period(RawPeriod {
                start_ms: a,
                end_ms: b,
                phase,
                energy_wh: sub(eb, ea)?,
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
