//! Digital I/O on embedded-hal 1.0 pins: contactor / relay output with welded-contact
//! detection, safety inputs (e-stop, RCD, main switch) with debouncing, a status LED and the
//! hardware watchdog.
//!
//! Everything is generic over `embedded_hal::digital` pins and takes the current time as a
//! parameter (`now: Instant`) instead of reading the clock, so the logic is tested with
//! [`MockPin`]s and made-up instants. The Linux backing (GPIO character device,
//! `/dev/watchdog`) is in the `linux` module, behind the `linux` feature.

mod mock;

#[cfg(feature = "linux")]
pub mod linux;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use embedded_hal::digital::{ErrorType, InputPin, OutputPin, PinState, StatefulOutputPin};

pub use mock::{MockPin, MockPinError, MockWatchdog, MockWatchdogError};

/// Which electrical level means "active" for a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polarity {
    /// High level is active.
    ActiveHigh,
    /// Low level is active (e.g. a normally-closed e-stop contact pulling the line low
    /// when released, or an open-drain output that sinks current).
    ActiveLow,
}

impl Polarity {
    fn level(self, active: bool) -> PinState {
        PinState::from(active == (self == Polarity::ActiveHigh))
    }

    fn is_active(self, high: bool) -> bool {
        high == (self == Polarity::ActiveHigh)
    }
}

/// A pin that is never read: the feedback input of a [`Contactor`] without one.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFeedback;

impl ErrorType for NoFeedback {
    type Error = Infallible;
}

impl InputPin for NoFeedback {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        Ok(false)
    }

    fn is_low(&mut self) -> Result<bool, Infallible> {
        Ok(true)
    }
}

/// Failure of a [`Contactor`] operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContactorError<E, F = Infallible> {
    /// Driving or reading back the coil output failed.
    #[error("contactor coil pin: {0:?}")]
    Coil(E),
    /// Reading the auxiliary (feedback) contact failed.
    #[error("contactor feedback pin: {0:?}")]
    Feedback(F),
    /// The coil is off but the contacts report closed after the settle time: the main
    /// contacts are welded (or the feedback is miswired). The EV may still be live.
    #[error("contactor welded: commanded open but the feedback contact reports closed")]
    Welded,
    /// The coil is on but the contacts report open after the settle time: coil, supply or
    /// mechanics failed.
    #[error("contactor did not close: commanded closed but the feedback contact reports open")]
    DidNotClose,
}

/// The verified state of a [`Contactor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactorState {
    /// Commanded open (and the feedback agrees, if there is one).
    Open,
    /// Commanded closed (and the feedback agrees, if there is one).
    Closed,
    /// Switched less than the settle time ago: the feedback is not trusted yet.
    Settling,
}

/// A contactor (or relay) driven by an output pin, optionally with an auxiliary feedback
/// contact (mirror contact) that reports whether the main contacts really moved.
///
/// The commanded state is read back from the pin ([`StatefulOutputPin`]), so it is what
/// the hardware drives, not what this struct remembers. [`check`](Self::check) compares it
/// with the feedback after a settle time and reports a welded contactor.
///
/// Construction does not touch the pin: open the contactor (or create the pin in the
/// inactive state, as `linux::open_output` does) at start-up.
#[derive(Debug)]
pub struct Contactor<P, F = NoFeedback> {
    coil: P,
    coil_polarity: Polarity,
    feedback: Option<(F, Polarity)>,
    settle: Duration,
    switched_at: Option<Instant>,
}

/// Typical switching time of an EVSE contactor, with margin.
pub const DEFAULT_SETTLE: Duration = Duration::from_millis(200);

impl<P: OutputPin + StatefulOutputPin> Contactor<P, NoFeedback> {
    /// A contactor whose coil is energised by a high level on `coil`, without feedback.
    pub fn new(coil: P) -> Self {
        Self { coil, coil_polarity: Polarity::ActiveHigh, feedback: None, settle: DEFAULT_SETTLE, switched_at: None }
    }

    /// Adds the auxiliary contact input: `closed_level` is the level it reads when the main
    /// contacts are closed; `settle` how long after switching the feedback may lag.
    pub fn with_feedback<F: InputPin>(self, feedback: F, closed_level: Polarity, settle: Duration) -> Contactor<P, F> {
        Contactor {
            coil: self.coil,
            coil_polarity: self.coil_polarity,
            feedback: Some((feedback, closed_level)),
            settle,
            switched_at: self.switched_at,
        }
    }
}

impl<P, F> Contactor<P, F>
where
    P: OutputPin + StatefulOutputPin,
    F: InputPin,
{
    /// Sets which coil level energises the contactor (default: high).
    pub fn with_coil_polarity(mut self, polarity: Polarity) -> Self {
        self.coil_polarity = polarity;
        self
    }

    /// Energises the coil.
    pub fn close(&mut self, now: Instant) -> Result<(), ContactorError<P::Error, F::Error>> {
        self.drive(true, now)
    }

    /// De-energises the coil.
    pub fn open(&mut self, now: Instant) -> Result<(), ContactorError<P::Error, F::Error>> {
        self.drive(false, now)
    }

    fn drive(&mut self, closed: bool, now: Instant) -> Result<(), ContactorError<P::Error, F::Error>> {
        let was_closed = self.is_commanded_closed()?;
        self.coil.set_state(self.coil_polarity.level(closed)).map_err(ContactorError::Coil)?;
        if was_closed != closed {
            self.switched_at = Some(now);
        }
        Ok(())
    }

    /// Whether the coil is driven to close the contactor (read back from the pin).
    pub fn is_commanded_closed(&mut self) -> Result<bool, ContactorError<P::Error, F::Error>> {
        let high = self.coil.is_set_high().map_err(ContactorError::Coil)?;
        Ok(self.coil_polarity.is_active(high))
    }

    /// Compares the commanded state with the feedback contact.
    ///
    /// Within the settle time after a switch the answer is [`ContactorState::Settling`].
    /// Without a feedback input the commanded state is returned unverified.
    pub fn check(&mut self, now: Instant) -> Result<ContactorState, ContactorError<P::Error, F::Error>> {
        let commanded = self.is_commanded_closed()?;
        let Some((feedback, closed_level)) = self.feedback.as_mut() else {
            return Ok(if commanded { ContactorState::Closed } else { ContactorState::Open });
        };
        if self.switched_at.is_some_and(|at| now.saturating_duration_since(at) < self.settle) {
            return Ok(ContactorState::Settling);
        }
        let high = feedback.is_high().map_err(ContactorError::Feedback)?;
        match (commanded, closed_level.is_active(high)) {
            (true, true) => Ok(ContactorState::Closed),
            (false, false) => Ok(ContactorState::Open),
            (false, true) => Err(ContactorError::Welded),
            (true, false) => Err(ContactorError::DidNotClose),
        }
    }

    /// Gives the pins back.
    pub fn release(self) -> (P, Option<F>) {
        (self.coil, self.feedback.map(|(f, _)| f))
    }
}

/// State of a [`SafetyInput`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SafetyState {
    /// The safety chain is closed: charging may proceed.
    Normal,
    /// E-stop pressed, RCD tripped, main switch off, input unreadable, or not yet known.
    Tripped,
}

/// A safety input (e-stop, RCD / RCM trip contact, main switch) with debouncing.
///
/// Fail-safe by construction: the state is [`SafetyState::Tripped`] until the input has
/// read "normal" for `clear_after`, and becomes tripped again when the pin cannot be read.
/// Tripping waits `trip_after` (default zero: immediately); clearing waits `clear_after`,
/// which filters contact bounce and a flickering RCD contact.
#[derive(Debug)]
pub struct SafetyInput<P> {
    pin: P,
    tripped_level: Polarity,
    trip_after: Duration,
    clear_after: Duration,
    state: SafetyState,
    pending: Option<(bool, Instant)>,
}

impl<P: InputPin> SafetyInput<P> {
    /// A safety input that is tripped while `pin` is at the `tripped_level` level.
    pub fn new(pin: P, tripped_level: Polarity) -> Self {
        Self {
            pin,
            tripped_level,
            trip_after: Duration::ZERO,
            clear_after: Duration::ZERO,
            state: SafetyState::Tripped,
            pending: None,
        }
    }

    /// Sets how long a level must be stable before the state follows it.
    pub fn with_debounce(mut self, trip_after: Duration, clear_after: Duration) -> Self {
        self.trip_after = trip_after;
        self.clear_after = clear_after;
        self
    }

    /// The debounced state as of the last [`poll`](Self::poll).
    pub fn state(&self) -> SafetyState {
        self.state
    }

    /// Samples the pin at `now` and returns the debounced state. Call it periodically
    /// (every few milliseconds to every control tick).
    ///
    /// A read error trips the input (the chain cannot be seen, so it is not trusted) and is
    /// returned.
    pub fn poll(&mut self, now: Instant) -> Result<SafetyState, P::Error> {
        let high = match self.pin.is_high() {
            Ok(high) => high,
            Err(err) => {
                self.state = SafetyState::Tripped;
                self.pending = None;
                return Err(err);
            }
        };
        let tripped = self.tripped_level.is_active(high);
        if tripped == (self.state == SafetyState::Tripped) {
            self.pending = None;
            return Ok(self.state);
        }
        let since = match self.pending {
            Some((level, since)) if level == tripped => since,
            _ => {
                self.pending = Some((tripped, now));
                now
            }
        };
        let needed = if tripped { self.trip_after } else { self.clear_after };
        if now.saturating_duration_since(since) >= needed {
            self.state = if tripped { SafetyState::Tripped } else { SafetyState::Normal };
            self.pending = None;
        }
        Ok(self.state)
    }

    /// Gives the pin back.
    pub fn release(self) -> P {
        self.pin
    }
}

/// What a [`StatusLed`] shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedPattern {
    /// Dark.
    Off,
    /// Lit.
    On,
    /// Lit for `on`, dark for `off`, repeating from when the pattern was set.
    Blink {
        /// Lit time per period.
        on: Duration,
        /// Dark time per period.
        off: Duration,
    },
}

/// A status LED that shows a [`LedPattern`]; call [`update`](Self::update) from a timer.
#[derive(Debug)]
pub struct StatusLed<P> {
    pin: P,
    polarity: Polarity,
    pattern: LedPattern,
    since: Option<Instant>,
    lit: Option<bool>,
}

impl<P: OutputPin> StatusLed<P> {
    /// An LED that lights when `pin` is at the `lit_level` level; starts [`LedPattern::Off`].
    pub fn new(pin: P, lit_level: Polarity) -> Self {
        Self { pin, polarity: lit_level, pattern: LedPattern::Off, since: None, lit: None }
    }

    /// Shows `pattern` from `now` on (no-op when it is already shown, so blinking keeps
    /// its phase). The pin changes at the next [`update`](Self::update).
    pub fn set_pattern(&mut self, pattern: LedPattern, now: Instant) {
        if pattern != self.pattern || self.since.is_none() {
            self.pattern = pattern;
            self.since = Some(now);
        }
    }

    /// The pattern shown.
    pub fn pattern(&self) -> LedPattern {
        self.pattern
    }

    /// Drives the pin for `now`; writes only when the level changes.
    pub fn update(&mut self, now: Instant) -> Result<(), P::Error> {
        let lit = match self.pattern {
            LedPattern::Off => false,
            LedPattern::On => true,
            LedPattern::Blink { on, off } => {
                let period = on + off;
                if period.is_zero() {
                    false
                } else {
                    let elapsed = now.saturating_duration_since(self.since.unwrap_or(now));
                    let phase = elapsed.as_nanos() % period.as_nanos();
                    phase < on.as_nanos()
                }
            }
        };
        if self.lit != Some(lit) {
            self.pin.set_state(self.polarity.level(lit))?;
            self.lit = Some(lit);
        }
        Ok(())
    }
}

/// A hardware watchdog: if it is not kicked within its timeout, the gateway reboots.
///
/// The control loop kicks it only while it is healthy (loop running, safety inputs
/// readable), so a hung agent takes the site to the hardware's safe state.
pub trait Watchdog {
    /// Error of a kick.
    type Error: std::error::Error;

    /// Restarts the watchdog timer.
    fn kick(&mut self) -> Result<(), Self::Error>;
}

impl<W: Watchdog + ?Sized> Watchdog for &mut W {
    type Error = W::Error;

    fn kick(&mut self) -> Result<(), Self::Error> {
        (**self).kick()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn contactor_without_feedback_reports_the_commanded_state() {
        let coil = MockPin::new(false);
        let mut k = Contactor::new(coil.clone());
        let now = t0();
        assert_eq!(k.check(now), Ok(ContactorState::Open));
        assert_eq!(k.close(now), Ok(()));
        assert!(coil.level());
        assert_eq!(k.check(now), Ok(ContactorState::Closed));
        assert_eq!(k.open(now), Ok(()));
        assert!(!coil.level());
    }

    #[test]
    fn contactor_coil_polarity_active_low() {
        let coil = MockPin::new(true);
        let mut k = Contactor::new(coil.clone()).with_coil_polarity(Polarity::ActiveLow);
        assert_eq!(k.is_commanded_closed(), Ok(false));
        assert_eq!(k.close(t0()), Ok(()));
        assert!(!coil.level());
        assert_eq!(k.is_commanded_closed(), Ok(true));
    }

    #[test]
    fn contactor_feedback_confirms_after_settle_time() {
        let coil = MockPin::new(false);
        let aux = MockPin::new(false);
        let mut k = Contactor::new(coil).with_feedback(aux.clone(), Polarity::ActiveHigh, ms(100));
        let now = t0();
        assert_eq!(k.close(now), Ok(()));
        assert_eq!(k.check(now + ms(50)), Ok(ContactorState::Settling));
        aux.set_level(true); // the mirror contact follows
        assert_eq!(k.check(now + ms(100)), Ok(ContactorState::Closed));
        assert_eq!(k.open(now + ms(1000)), Ok(()));
        aux.set_level(false);
        assert_eq!(k.check(now + ms(1200)), Ok(ContactorState::Open));
    }

    #[test]
    fn welded_contactor_is_detected() {
        let coil = MockPin::new(false);
        let aux = MockPin::new(false);
        let mut k = Contactor::new(coil).with_feedback(aux.clone(), Polarity::ActiveHigh, ms(100));
        let now = t0();
        assert_eq!(k.close(now), Ok(()));
        aux.set_level(true);
        assert_eq!(k.check(now + ms(150)), Ok(ContactorState::Closed));
        assert_eq!(k.open(now + ms(200)), Ok(()));
        // The mirror contact stays closed: welded.
        assert_eq!(k.check(now + ms(250)), Ok(ContactorState::Settling));
        assert_eq!(k.check(now + ms(300)), Err(ContactorError::Welded));
    }

    #[test]
    fn contactor_that_does_not_close_is_detected() {
        let coil = MockPin::new(false);
        let aux = MockPin::new(true); // NC mirror contact: high = open, so closed_level is low
        let mut k = Contactor::new(coil).with_feedback(aux, Polarity::ActiveLow, ms(100));
        let now = t0();
        assert_eq!(k.check(now), Ok(ContactorState::Open));
        assert_eq!(k.close(now), Ok(()));
        assert_eq!(k.check(now + ms(100)), Err(ContactorError::DidNotClose));
    }

    #[test]
    fn contactor_pin_errors_are_reported() {
        let coil = MockPin::new(false);
        let aux = MockPin::new(false);
        let mut k = Contactor::new(coil.clone()).with_feedback(aux.clone(), Polarity::ActiveHigh, ms(0));
        coil.set_failing(true);
        assert_eq!(k.close(t0()), Err(ContactorError::Coil(MockPinError)));
        coil.set_failing(false);
        aux.set_failing(true);
        assert_eq!(k.check(t0()), Err(ContactorError::Feedback(MockPinError)));
    }

    #[test]
    fn safety_input_starts_tripped_and_debounces_release() {
        let estop = MockPin::new(true); // NC chain closed: high = normal
        let mut input = SafetyInput::new(estop.clone(), Polarity::ActiveLow).with_debounce(ms(0), ms(50));
        let now = t0();
        assert_eq!(input.state(), SafetyState::Tripped);
        assert_eq!(input.poll(now), Ok(SafetyState::Tripped));
        assert_eq!(input.poll(now + ms(49)), Ok(SafetyState::Tripped));
        assert_eq!(input.poll(now + ms(50)), Ok(SafetyState::Normal));
        // Pressed: trips at once.
        estop.set_level(false);
        assert_eq!(input.poll(now + ms(60)), Ok(SafetyState::Tripped));
        // Bouncing release: the timer restarts on every bounce.
        estop.set_level(true);
        assert_eq!(input.poll(now + ms(70)), Ok(SafetyState::Tripped));
        estop.set_level(false);
        assert_eq!(input.poll(now + ms(80)), Ok(SafetyState::Tripped));
        estop.set_level(true);
        assert_eq!(input.poll(now + ms(90)), Ok(SafetyState::Tripped));
        assert_eq!(input.poll(now + ms(139)), Ok(SafetyState::Tripped));
        assert_eq!(input.poll(now + ms(140)), Ok(SafetyState::Normal));
    }

    #[test]
    fn safety_input_trip_debounce_ignores_a_short_glitch() {
        let rcd = MockPin::new(false); // RCD aux contact: high = tripped
        let mut input = SafetyInput::new(rcd.clone(), Polarity::ActiveHigh).with_debounce(ms(20), ms(0));
        let now = t0();
        assert_eq!(input.poll(now), Ok(SafetyState::Normal));
        rcd.set_level(true);
        assert_eq!(input.poll(now + ms(5)), Ok(SafetyState::Normal));
        rcd.set_level(false);
        assert_eq!(input.poll(now + ms(10)), Ok(SafetyState::Normal));
        rcd.set_level(true);
        assert_eq!(input.poll(now + ms(15)), Ok(SafetyState::Normal));
        assert_eq!(input.poll(now + ms(35)), Ok(SafetyState::Tripped));
    }

    #[test]
    fn unreadable_safety_input_trips() {
        let pin = MockPin::new(true);
        let mut input = SafetyInput::new(pin.clone(), Polarity::ActiveLow);
        assert_eq!(input.poll(t0()), Ok(SafetyState::Normal));
        pin.set_failing(true);
        assert_eq!(input.poll(t0()), Err(MockPinError));
        assert_eq!(input.state(), SafetyState::Tripped);
    }

    #[test]
    fn status_led_blinks_and_writes_only_on_change() {
        let pin = MockPin::new(false);
        let mut led = StatusLed::new(pin.clone(), Polarity::ActiveHigh);
        let now = t0();
        led.set_pattern(LedPattern::Blink { on: ms(100), off: ms(400) }, now);
        let mut seen = Vec::new();
        for step in 0..10 {
            assert_eq!(led.update(now + ms(step * 100)), Ok(()));
            seen.push(pin.level());
        }
        assert_eq!(seen, [true, false, false, false, false, true, false, false, false, false]);
        assert_eq!(pin.writes(), 4);
        led.set_pattern(LedPattern::On, now);
        assert_eq!(led.update(now + ms(1)), Ok(()));
        assert!(pin.level());
        assert_eq!(led.pattern(), LedPattern::On);
    }

    #[test]
    fn status_led_active_low() {
        let pin = MockPin::new(true);
        let mut led = StatusLed::new(pin.clone(), Polarity::ActiveLow);
        led.set_pattern(LedPattern::On, t0());
        assert_eq!(led.update(t0()), Ok(()));
        assert!(!pin.level());
    }

    #[test]
    fn watchdog_mock_counts_kicks_and_can_fail() {
        let dog = MockWatchdog::new();
        let mut handle = dog.clone();
        let mut by_ref = &mut handle;
        assert_eq!(Watchdog::kick(&mut by_ref), Ok(()));
        assert_eq!(handle.kick(), Ok(()));
        assert_eq!(dog.kicks(), 2);
        dog.set_failing(true);
        assert_eq!(handle.kick(), Err(MockWatchdogError));
        assert_eq!(dog.kicks(), 2);
    }
}
