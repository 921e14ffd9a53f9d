//! A [`RegisterBus`] that plays a script: each request must match the next expectation.

use std::collections::VecDeque;
use std::fmt;

use super::{BusError, RegisterBus, RegisterFunction};

/// One expected request and the answer to give.
#[derive(Debug)]
pub struct Expect {
    function: RegisterFunction,
    unit: u8,
    address: u16,
    count: u16,
    response: Result<Vec<u16>, BusError>,
}

impl Expect {
    /// Expects a Read Holding Registers (0x03) request.
    pub fn read_holding(unit: u8, address: u16, count: u16, response: Result<Vec<u16>, BusError>) -> Self {
        Self::read(RegisterFunction::Holding, unit, address, count, response)
    }

    /// Expects a Read Input Registers (0x04) request.
    pub fn read_input(unit: u8, address: u16, count: u16, response: Result<Vec<u16>, BusError>) -> Self {
        Self::read(RegisterFunction::Input, unit, address, count, response)
    }

    /// Expects a read with the given function code.
    pub fn read(
        function: RegisterFunction,
        unit: u8,
        address: u16,
        count: u16,
        response: Result<Vec<u16>, BusError>,
    ) -> Self {
        Self { function, unit, address, count, response }
    }

    fn matches(&self, function: RegisterFunction, unit: u8, address: u16, count: u16) -> bool {
        self.function == function && self.unit == unit && self.address == address && self.count == count
    }

    fn describe(&self) -> String {
        describe(self.function, self.unit, self.address, self.count)
    }
}

fn describe(function: RegisterFunction, unit: u8, address: u16, count: u16) -> String {
    format!("read {} unit {unit} address {address} (0x{address:04X}) count {count}", function.as_str())
}

/// Why a script was not played as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ScriptError {
    /// Requests that did not match the next expectation (or came after the script ended).
    pub unexpected: Vec<String>,
    /// Expectations never reached.
    pub unused: Vec<String>,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("scripted bus was not used as scripted")?;
        for request in &self.unexpected {
            write!(f, "\n  unexpected: {request}")?;
        }
        for expectation in &self.unused {
            write!(f, "\n  never requested: {expectation}")?;
        }
        Ok(())
    }
}

/// A mock [`RegisterBus`] driven by a list of [`Expect`]ations, played in order.
///
/// A request that does not match the next expectation gets an
/// [`ErrorKind::InvalidResponse`](super::ErrorKind::InvalidResponse) error *and* is
/// remembered, so [`done`](Self::done) fails the test even when the code under test
/// swallowed the error. Call `done()` at the end of every test.
///
/// ```
/// use hardware::bus::{BusError, Expect, RegisterBus, ScriptedBus};
/// # tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(async {
/// let mut bus = ScriptedBus::new([
///     Expect::read_input(1, 0x0034, 2, Ok(vec![0x45E7, 0x4000])),
///     Expect::read_input(1, 0x0034, 2, Err(BusError::timeout("meter unplugged"))),
/// ]);
/// assert_eq!(bus.read_input_registers(1, 0x0034, 2).await.ok(), Some(vec![0x45E7, 0x4000]));
/// assert!(bus.read_input_registers(1, 0x0034, 2).await.is_err());
/// bus.done();
/// # });
/// ```
#[derive(Debug, Default)]
pub struct ScriptedBus {
    script: VecDeque<Expect>,
    unexpected: Vec<String>,
}

impl ScriptedBus {
    /// A bus that expects exactly these requests, in this order.
    pub fn new(script: impl IntoIterator<Item = Expect>) -> Self {
        Self { script: script.into_iter().collect(), unexpected: Vec::new() }
    }

    /// Appends an expectation to the script.
    pub fn push(&mut self, expect: Expect) {
        self.script.push_back(expect);
    }

    /// How many expectations have not been requested yet.
    pub fn remaining(&self) -> usize {
        self.script.len()
    }

    /// Checks the script was played completely and nothing unexpected was requested.
    pub fn try_done(&mut self) -> Result<(), ScriptError> {
        let unused: Vec<String> = self.script.drain(..).map(|e| e.describe()).collect();
        let unexpected = std::mem::take(&mut self.unexpected);
        if unused.is_empty() && unexpected.is_empty() { Ok(()) } else { Err(ScriptError { unexpected, unused }) }
    }

    /// Like [`try_done`](Self::try_done), but panics with the details: for tests.
    #[track_caller]
    pub fn done(&mut self) {
        if let Err(err) = self.try_done() {
            panic!("{err}");
        }
    }

    fn serve(&mut self, function: RegisterFunction, unit: u8, address: u16, count: u16) -> Result<Vec<u16>, BusError> {
        let request = describe(function, unit, address, count);
        match self.script.front() {
            Some(next) if next.matches(function, unit, address, count) => match self.script.pop_front() {
                Some(expect) => expect.response,
                None => Err(BusError::invalid_response("scripted bus: script ended")),
            },
            Some(next) => {
                let message = format!("scripted bus: got {request}, expected {}", next.describe());
                self.unexpected.push(request);
                Err(BusError::invalid_response(message))
            }
            None => {
                let message = format!("scripted bus: got {request} after the end of the script");
                self.unexpected.push(request);
                Err(BusError::invalid_response(message))
            }
        }
    }
}

impl RegisterBus for ScriptedBus {
    async fn read_holding_registers(&mut self, unit: u8, address: u16, count: u16) -> Result<Vec<u16>, BusError> {
        self.serve(RegisterFunction::Holding, unit, address, count)
    }

    async fn read_input_registers(&mut self, unit: u8, address: u16, count: u16) -> Result<Vec<u16>, BusError> {
        self.serve(RegisterFunction::Input, unit, address, count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::ErrorKind;

    #[tokio::test]
    async fn plays_the_script_in_order_including_errors() {
        let mut bus = ScriptedBus::new([
            Expect::read_holding(3, 100, 2, Ok(vec![7, 8])),
            Expect::read_holding(3, 100, 2, Err(BusError::exception(0x02))),
        ]);
        assert_eq!(bus.read_holding_registers(3, 100, 2).await.ok(), Some(vec![7, 8]));
        let err = bus.read_holding_registers(3, 100, 2).await.err();
        assert_eq!(err.map(|e| e.kind()), Some(ErrorKind::Exception(0x02)));
        assert_eq!(bus.remaining(), 0);
        bus.done();
    }

    #[tokio::test]
    async fn mismatched_request_is_an_error_and_is_remembered() {
        let mut bus = ScriptedBus::new([Expect::read_holding(1, 0, 2, Ok(vec![0, 0]))]);
        // Wrong function code: input instead of holding.
        let err = bus.read_input_registers(1, 0, 2).await.err();
        assert_eq!(err.as_ref().map(BusError::kind), Some(ErrorKind::InvalidResponse));
        assert!(err.map(|e| e.to_string()).unwrap_or_default().contains("expected read holding unit 1 address 0"));
        let report = bus.try_done().err();
        assert_eq!(
            report,
            Some(ScriptError {
                unexpected: vec!["read input unit 1 address 0 (0x0000) count 2".into()],
                unused: vec!["read holding unit 1 address 0 (0x0000) count 2".into()],
            })
        );
    }

    #[tokio::test]
    async fn requests_after_the_end_are_errors() {
        let mut bus = ScriptedBus::new([]);
        assert!(bus.read_input_registers(1, 0, 1).await.is_err());
        assert!(bus.try_done().is_err());
    }

    #[test]
    #[should_panic(expected = "never requested: read input unit 1 address 52 (0x0034) count 2")]
    fn done_panics_on_unused_expectations() {
        let mut bus = ScriptedBus::new([Expect::read_input(1, 0x34, 2, Ok(vec![0, 0]))]);
        bus.done();
    }
}
