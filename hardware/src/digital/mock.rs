//! In-memory pins and watchdog for tests and simulators.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use embedded_hal::digital::{ErrorType, InputPin, OutputPin, StatefulOutputPin};

/// Error of a [`MockPin`] switched to failing with [`MockPin::set_failing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("mock pin failure")]
pub struct MockPinError;

impl embedded_hal::digital::Error for MockPinError {
    fn kind(&self) -> embedded_hal::digital::ErrorKind {
        embedded_hal::digital::ErrorKind::Other
    }
}

#[derive(Debug, Default)]
struct PinState {
    high: bool,
    writes: usize,
    failing: bool,
}

/// A pin whose level lives in memory, shared by its clones: give one clone to the driver
/// and keep one in the test to flip inputs ([`set_level`](Self::set_level)) and observe
/// outputs ([`level`](Self::level), [`writes`](Self::writes)).
///
/// It is input and output at once, like a GPIO line read back.
#[derive(Debug, Clone, Default)]
pub struct MockPin {
    state: Arc<Mutex<PinState>>,
}

impl MockPin {
    /// A pin at the given level.
    pub fn new(high: bool) -> Self {
        Self { state: Arc::new(Mutex::new(PinState { high, ..PinState::default() })) }
    }

    fn lock(&self) -> MutexGuard<'_, PinState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the level from outside (what the wiring does to an input). Not counted as a write.
    pub fn set_level(&self, high: bool) {
        self.lock().high = high;
    }

    /// The current level (true = high).
    pub fn level(&self) -> bool {
        self.lock().high
    }

    /// How many times the driver set the pin through [`OutputPin`].
    pub fn writes(&self) -> usize {
        self.lock().writes
    }

    /// Makes every later pin operation fail (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        self.lock().failing = failing;
    }

    fn write(&mut self, high: bool) -> Result<(), MockPinError> {
        let mut state = self.lock();
        if state.failing {
            return Err(MockPinError);
        }
        state.high = high;
        state.writes += 1;
        Ok(())
    }

    fn read(&self) -> Result<bool, MockPinError> {
        let state = self.lock();
        if state.failing { Err(MockPinError) } else { Ok(state.high) }
    }
}

impl ErrorType for MockPin {
    type Error = MockPinError;
}

impl OutputPin for MockPin {
    fn set_low(&mut self) -> Result<(), MockPinError> {
        self.write(false)
    }

    fn set_high(&mut self) -> Result<(), MockPinError> {
        self.write(true)
    }
}

impl StatefulOutputPin for MockPin {
    fn is_set_high(&mut self) -> Result<bool, MockPinError> {
        self.read()
    }

    fn is_set_low(&mut self) -> Result<bool, MockPinError> {
        self.read().map(|high| !high)
    }
}

impl InputPin for MockPin {
    fn is_high(&mut self) -> Result<bool, MockPinError> {
        self.read()
    }

    fn is_low(&mut self) -> Result<bool, MockPinError> {
        self.read().map(|high| !high)
    }
}

/// Error of a [`MockWatchdog`] switched to failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("mock watchdog failure")]
pub struct MockWatchdogError;

/// A [`Watchdog`](super::Watchdog) that counts kicks; clones share the count.
#[derive(Debug, Clone, Default)]
pub struct MockWatchdog {
    kicks: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

impl MockWatchdog {
    /// A watchdog with no kicks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Successful kicks so far.
    pub fn kicks(&self) -> usize {
        self.kicks.load(Ordering::SeqCst)
    }

    /// Makes later kicks fail (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

impl super::Watchdog for MockWatchdog {
    type Error = MockWatchdogError;

    fn kick(&mut self) -> Result<(), MockWatchdogError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(MockWatchdogError);
        }
        self.kicks.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}
