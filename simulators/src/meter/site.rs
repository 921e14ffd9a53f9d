//! What the site meter measures: [`SiteLoad`], the building's base load plus an extra load
//! plus the current the attached chargers draw, per phase.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use hardware::meter::MeterReading;
use tokio::sync::watch;

use super::clock::SimClock;
use super::profile::{DAY_S, LoadProfile};
use crate::chargepoint::{ChargePoint, ChargePointState};

/// Nominal line-to-neutral voltage (V).
pub const NOMINAL_VOLTAGE_V: f64 = 230.0;
/// Nominal grid frequency (Hz).
pub const NOMINAL_FREQUENCY_HZ: f64 = 50.0;
/// Longest simulated step of the energy integration: the base load profile is sampled at
/// least this often (in simulated seconds) between two readings.
const INTEGRATION_STEP_S: f64 = 60.0;
/// Cap on the samples of one integration (a reading after a very long pause).
const MAX_INTEGRATION_STEPS: usize = 100_000;

pub use shared_model::site::{Phase, Wiring, WiringError};

/// Where the current a charger draws comes from: a simulated charge point
/// ([`ChargePointDraw`]), a test's [`ManualDraw`], or any closure returning `[f64; 3]`.
///
/// Called on every reading, with the site's lock held: be quick, and do not call back
/// into the [`SiteLoad`].
pub trait DrawSource: Send + Sync {
    /// Current now on the charger's phases 1, 2, 3 (A; negative when it feeds back, V2G).
    fn charger_currents(&self) -> [f64; 3];
}

impl<F> DrawSource for F
where
    F: Fn() -> [f64; 3] + Send + Sync,
{
    fn charger_currents(&self) -> [f64; 3] {
        self()
    }
}

/// The per-phase currents of an EV that charges on `phases` (1 or 3) at `amps` per phase,
/// on the charger's phases 1, 2, 3.
pub fn ev_currents(amps: f64, phases: u8) -> [f64; 3] {
    if phases == 1 { [amps, 0.0, 0.0] } else { [amps; 3] }
}

/// A draw set by hand: tests feed EV currents through it without a socket. Clones share
/// the value.
#[derive(Debug, Clone, Default)]
pub struct ManualDraw {
    amps: Arc<Mutex<[f64; 3]>>,
}

impl ManualDraw {
    /// A draw of 0 A.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the current on the charger's phases 1, 2, 3.
    pub fn set(&self, amps: [f64; 3]) {
        *self.amps.lock().unwrap_or_else(PoisonError::into_inner) = amps;
    }

    /// Sets the draw of an EV charging on `phases` (1 or 3) at `amps` per phase.
    pub fn set_ev(&self, amps: f64, phases: u8) {
        self.set(ev_currents(amps, phases));
    }

    /// The current on the charger's phases 1, 2, 3.
    pub fn get(&self) -> [f64; 3] {
        *self.amps.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl DrawSource for ManualDraw {
    fn charger_currents(&self) -> [f64; 3] {
        self.get()
    }
}

/// The draw of a simulated charge point: the sum over its connectors of the current the
/// EV draws (`ConnectorState::current_a`), on one or three phases as the EV charges.
/// Once the charge point has stopped (its state channel closed), it draws nothing.
#[derive(Debug, Clone)]
pub struct ChargePointDraw {
    state: watch::Receiver<ChargePointState>,
    ev_phases: u8,
}

impl ChargePointDraw {
    /// Follows a charge point's state; its EVs charge on `ev_phases` (1 or 3).
    pub fn new(state: watch::Receiver<ChargePointState>, ev_phases: u8) -> Self {
        Self { state, ev_phases }
    }

    /// Follows `cp`, whose EVs charge on the phases its configuration says.
    pub fn of(cp: &ChargePoint) -> Self {
        Self::new(cp.watch_state(), cp.config().ev.phases)
    }
}

impl DrawSource for ChargePointDraw {
    fn charger_currents(&self) -> [f64; 3] {
        if self.state.has_changed().is_err() {
            // The simulator has stopped: nothing draws current any more.
            return [0.0; 3];
        }
        let amps: f64 = self.state.borrow().connectors.iter().map(|c| c.current_a).sum();
        ev_currents(amps, self.ev_phases)
    }
}

/// Identifies an attached draw, to [`detach`](SiteLoad::detach) it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LoadId(u64);

/// The site's current per phase at one moment, by origin (A, L1..L3; positive = import).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SiteCurrents {
    /// The building's base load from the profile.
    pub base: [f64; 3],
    /// The manual extra load ([`SiteLoad::set_extra_load`]).
    pub extra: [f64; 3],
    /// The attached chargers, after wiring.
    pub chargers: [f64; 3],
    /// The sum: what the meter measures.
    pub total: [f64; 3],
}

struct Attached {
    id: LoadId,
    wiring: Wiring,
    source: Box<dyn DrawSource>,
}

struct Inner {
    profile: LoadProfile,
    clock: SimClock,
    voltage_v: f64,
    voltage_variation_v: f64,
    power_factor: f64,
    frequency_hz: f64,
    extra: [f64; 3],
    attached: Vec<Attached>,
    next_id: u64,
    import_wh: f64,
    export_wh: f64,
    /// The previous reading: when, and the current besides the base load then.
    last: Option<(Instant, [f64; 3])>,
}

impl Inner {
    fn chargers(&self) -> [f64; 3] {
        let mut site = [0.0; 3];
        for attached in &self.attached {
            attached.wiring.add_to(attached.source.charger_currents(), &mut site);
        }
        site
    }

    fn voltages(&self, seconds_of_day: f64) -> [f64; 3] {
        // A slow, deterministic wobble: one period a day, the phases 120° apart.
        let angle = std::f64::consts::TAU * seconds_of_day / DAY_S;
        [0.0, 1.0, 2.0]
            .map(|k| self.voltage_v + self.voltage_variation_v * (angle - k * std::f64::consts::TAU / 3.0).sin())
    }

    /// Net active power (W, positive = import) at `seconds_of_day` with `other` amps on top
    /// of the base load.
    fn net_power_w(&self, seconds_of_day: f64, other: [f64; 3]) -> f64 {
        let base = self.profile.at_seconds(seconds_of_day);
        let volts = self.voltages(seconds_of_day);
        (0..3).map(|p| volts[p] * (base[p] + other[p]) * self.power_factor).sum()
    }

    /// Adds the energy from the previous reading to `now` to the registers. The base load
    /// follows the profile (trapezoids of at most [`INTEGRATION_STEP_S`] simulated
    /// seconds); the rest is held at what it was at the previous reading, as a meter that
    /// samples sees it.
    fn integrate(&mut self, now: Instant) {
        let Some((since, other)) = self.last else { return };
        let real_s = now.saturating_duration_since(since).as_secs_f64();
        if real_s <= 0.0 {
            return;
        }
        let sim_s = self.clock.elapsed(since, now).as_secs_f64();
        let start = self.clock.seconds_of_day(since);
        let day_span = real_s * self.clock.day_rate();
        // Voltage and base load depend only on the time of day: a fixed clock needs one step.
        // The cast saturates; the count is then bounded by MAX_INTEGRATION_STEPS.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let steps = ((day_span / INTEGRATION_STEP_S).ceil() as usize).clamp(1, MAX_INTEGRATION_STEPS);
        #[allow(clippy::cast_precision_loss)]
        let n = steps as f64;
        let step_h = sim_s / n / 3600.0;
        let mut energy_wh = 0.0;
        #[allow(clippy::cast_precision_loss)]
        let power_at = |k: usize| self.net_power_w(start + day_span * k as f64 / n, other);
        let mut previous = power_at(0);
        for k in 1..=steps {
            let power = power_at(k);
            energy_wh += (previous + power) / 2.0 * step_h;
            previous = power;
        }
        if energy_wh >= 0.0 {
            self.import_wh += energy_wh;
        } else {
            self.export_wh -= energy_wh;
        }
    }

    fn currents(&self, now: Instant) -> SiteCurrents {
        let base = self.profile.at_seconds(self.clock.seconds_of_day(now));
        let extra = self.extra;
        let chargers = self.chargers();
        let total = [0, 1, 2].map(|p| base[p] + extra[p] + chargers[p]);
        SiteCurrents { base, extra, chargers, total }
    }
}

/// The load the site meter measures: the building's base load from a [`LoadProfile`] on a
/// [`SimClock`], plus an extra load set by hand, plus the current of the attached chargers
/// (through their [`Wiring`]).
///
/// A handle: clones share the same site, so a test can keep one to change the load while a
/// [`MeterServer`](super::MeterServer) serves another. Currents are signed per phase
/// (positive = import); the meter shows their magnitude and signs the power.
///
/// [`reading`](Self::reading) integrates the energy registers over the simulated time since
/// the previous reading, whoever asked for it (two servers on one site count each joule
/// once).
#[derive(Clone)]
pub struct SiteLoad {
    inner: Arc<Mutex<Inner>>,
}

impl fmt::Debug for SiteLoad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("SiteLoad")
            .field("clock", &inner.clock)
            .field("extra", &inner.extra)
            .field("attached", &inner.attached.len())
            .field("import_wh", &inner.import_wh)
            .field("export_wh", &inner.export_wh)
            .finish_non_exhaustive()
    }
}

impl Default for SiteLoad {
    /// The office profile in real time, starting at 12:00.
    fn default() -> Self {
        let noon = chrono::NaiveTime::from_hms_opt(12, 0, 0).unwrap_or(chrono::NaiveTime::MIN);
        SiteLoad::new(LoadProfile::office(), SimClock::real_time(noon))
    }
}

impl SiteLoad {
    /// A site with `profile` as its base load, on `clock`: 230 V, unity power factor,
    /// 50 Hz, energy registers at 0, nothing attached.
    pub fn new(profile: LoadProfile, clock: SimClock) -> SiteLoad {
        let inner = Inner {
            profile,
            clock,
            voltage_v: NOMINAL_VOLTAGE_V,
            voltage_variation_v: 0.0,
            power_factor: 1.0,
            frequency_hz: NOMINAL_FREQUENCY_HZ,
            extra: [0.0; 3],
            attached: Vec::new(),
            next_id: 1,
            import_wh: 0.0,
            export_wh: 0.0,
            last: None,
        };
        SiteLoad { inner: Arc::new(Mutex::new(inner)) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the nominal line-to-neutral voltage (V).
    pub fn with_voltage(self, volts: f64) -> Self {
        self.lock().voltage_v = volts;
        self
    }

    /// Lets the voltage wobble by ± `volts` over the simulated day (a sine, the phases 120°
    /// apart): deterministic, so tests can still compute it. 0 (the default) is constant.
    pub fn with_voltage_variation(self, volts: f64) -> Self {
        self.lock().voltage_variation_v = volts;
        self
    }

    /// Sets the power factor cos φ of the whole load (inductive), clamped to 0..=1.
    /// Default 1.
    pub fn with_power_factor(self, cos_phi: f64) -> Self {
        self.lock().power_factor = if cos_phi.is_finite() { cos_phi.clamp(0.0, 1.0) } else { 1.0 };
        self
    }

    /// Sets the grid frequency (Hz). Default 50.
    pub fn with_frequency(self, hz: f64) -> Self {
        self.lock().frequency_hz = hz;
        self
    }

    /// Sets the energy registers' starting values (Wh), as a meter that has run for years.
    pub fn with_energy(self, import_wh: f64, export_wh: f64) -> Self {
        let mut inner = self.lock();
        inner.import_wh = import_wh;
        inner.export_wh = export_wh;
        drop(inner);
        self
    }

    /// The clock.
    pub fn clock(&self) -> SimClock {
        self.lock().clock
    }

    /// The base load profile.
    pub fn profile(&self) -> LoadProfile {
        self.lock().profile.clone()
    }

    /// Replaces the base load profile.
    pub fn set_profile(&self, profile: LoadProfile) {
        self.lock().profile = profile;
    }

    /// Sets a load added to each phase on top of everything else (A, L1..L3; negative =
    /// export), e.g. `[40.0; 3]` for a load step. Replaces the previous extra load.
    pub fn set_extra_load(&self, amps: [f64; 3]) {
        self.lock().extra = amps;
    }

    /// The extra load (A, L1..L3).
    pub fn extra_load(&self) -> [f64; 3] {
        self.lock().extra
    }

    /// Attaches a simulated charge point: the current its EVs draw (on one or three phases,
    /// as `cp.config().ev.phases` says) adds to the site phases per `wiring`.
    pub fn attach(&self, cp: &ChargePoint, wiring: Wiring) -> LoadId {
        self.attach_source(ChargePointDraw::of(cp), wiring)
    }

    /// Attaches any draw: its charger phases 1, 2, 3 add to the site phases per `wiring`.
    pub fn attach_source(&self, source: impl DrawSource + 'static, wiring: Wiring) -> LoadId {
        let mut inner = self.lock();
        let id = LoadId(inner.next_id);
        inner.next_id += 1;
        inner.attached.push(Attached { id, wiring, source: Box::new(source) });
        id
    }

    /// Detaches a draw; `false` if it was not attached.
    pub fn detach(&self, id: LoadId) -> bool {
        let mut inner = self.lock();
        let before = inner.attached.len();
        inner.attached.retain(|a| a.id != id);
        inner.attached.len() != before
    }

    /// The current per phase at `now`, by origin. Reads the draws, does not integrate.
    pub fn currents(&self, now: Instant) -> SiteCurrents {
        self.lock().currents(now)
    }

    /// The energy registers (import Wh, export Wh) as of the last reading.
    pub fn energy_wh(&self) -> (f64, f64) {
        let inner = self.lock();
        (inner.import_wh, inner.export_wh)
    }

    /// What the meter shows at `now`, after integrating the energy since the previous
    /// reading. `now` drives the profile and the integration; the attached draws and the
    /// extra load are read as they are at the call.
    ///
    /// Per phase: current = |I|, voltage V, active power V·I·cos φ (signed); totals:
    /// active, apparent (Σ V·|I|) and reactive power (Σ V·|I|·sin φ), power factor P/S,
    /// frequency, line-to-line voltages (phases 120° apart), import and export energy.
    pub fn reading(&self, now: Instant) -> MeterReading {
        let mut inner = self.lock();
        inner.integrate(now);
        let seconds = inner.clock.seconds_of_day(now);
        let currents = inner.currents(now);
        let other = [0, 1, 2].map(|p| currents.extra[p] + currents.chargers[p]);
        inner.last = match inner.last {
            Some((at, _)) if at > now => Some((at, other)),
            _ => Some((now, other)),
        };
        let volts = inner.voltages(seconds);
        let cos_phi = inner.power_factor;
        let sin_phi = (1.0 - cos_phi * cos_phi).max(0.0).sqrt();
        let powers = [0, 1, 2].map(|p| volts[p] * currents.total[p] * cos_phi);
        let apparent: f64 = (0..3).map(|p| volts[p] * currents.total[p].abs()).sum();
        let power: f64 = powers.iter().sum();
        let line = |a: f64, b: f64| (a * a + b * b + a * b).sqrt();
        MeterReading {
            power_w: Some(power),
            powers_w: powers.map(Some),
            currents_a: currents.total.map(|a| Some(a.abs())),
            voltages_v: volts.map(Some),
            line_voltages_v: [
                Some(line(volts[0], volts[1])),
                Some(line(volts[1], volts[2])),
                Some(line(volts[2], volts[0])),
            ],
            energy_import_wh: Some(inner.import_wh),
            energy_export_wh: Some(inner.export_wh),
            frequency_hz: Some(inner.frequency_hz),
            reactive_power_var: Some(apparent * sin_phi),
            apparent_power_va: Some(apparent),
            power_factor: Some(if apparent > 0.0 { power / apparent } else { cos_phi }),
        }
    }
}
