//! Register access over Modbus: the [`RegisterBus`] trait and its implementations.
//!
//! Modbus is not part of embedded-hal, so the meter drivers are written against this small
//! trait instead: read holding registers (0x03) or input registers (0x04) of one unit.
//! Implementations:
//!
//! - [`ModbusBus`] over tokio-modbus: [`TcpBus`] (Modbus TCP) and [`RtuBus`] (Modbus RTU on a
//!   serial line), with a per-request timeout and reconnection after a transport error;
//! - [`ScriptedBus`], a mock that plays a script of expected requests and checks with
//!   [`ScriptedBus::done`] that it was used up (like embedded-hal-mock);
//! - [`SharedBus`], to share one bus (typically an RS-485 line) between several meters;
//! - `&mut B` for any bus `B`.
//!
//! Errors keep tokio-modbus's two layers apart: a transport failure (timeout, connection
//! lost) is [`ErrorKind::Timeout`] / [`ErrorKind::Disconnected`] / [`ErrorKind::Io`], while
//! a device that answered with a Modbus exception is [`ErrorKind::Exception`]. The control
//! loop asks [`ErrorKind::is_offline`] to tell "meter offline" from "bad register".

mod modbus;
mod scripted;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

pub use modbus::{
    Connect, DEFAULT_TIMEOUT, ModbusBus, Parity, RtuBus, SerialConfig, SerialConnector, StopBits, TcpBus, TcpConnector,
};
pub use scripted::{Expect, ScriptError, ScriptedBus};

/// Which register table a read addresses, by Modbus function code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegisterFunction {
    /// Read Holding Registers (0x03).
    Holding,
    /// Read Input Registers (0x04).
    Input,
}

impl RegisterFunction {
    /// The Modbus function code of the read.
    pub fn code(self) -> u8 {
        match self {
            Self::Holding => 0x03,
            Self::Input => 0x04,
        }
    }

    /// The name used in register map files: `"holding"` or `"input"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Holding => "holding",
            Self::Input => "input",
        }
    }
}

impl fmt::Display for RegisterFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:02X})", self.as_str(), self.code())
    }
}

/// What went wrong, coarse enough for the control loop to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No answer within the request timeout (the device may be offline or busy).
    Timeout,
    /// The connection could not be made or was lost: the device or gateway is offline.
    Disconnected,
    /// The device answered with a Modbus exception response carrying this exception code,
    /// e.g. 0x02 "illegal data address" for a register the device does not have.
    Exception(u8),
    /// The device answered, but not what was asked (wrong length, mismatching header,
    /// undecodable frame), or a scripted bus saw an unexpected request.
    InvalidResponse,
    /// Another I/O error (e.g. the serial port cannot be opened).
    Io,
    /// Meter level only: the quantity is not in the meter's register map, or the device
    /// reported it as not available (NaN or a "not implemented" marker).
    Unavailable,
}

impl ErrorKind {
    /// True when the device could not be reached at all, as opposed to a device that
    /// answered but did not like the request. Modbus gateway exceptions 0x0A (gateway path
    /// unavailable) and 0x0B (gateway target device failed to respond) count as offline:
    /// the TCP-to-RTU gateway answered, the meter behind it did not.
    pub fn is_offline(self) -> bool {
        matches!(self, Self::Timeout | Self::Disconnected | Self::Io | Self::Exception(0x0A | 0x0B))
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("timeout"),
            Self::Disconnected => f.write_str("disconnected"),
            Self::Exception(code) => write!(f, "Modbus exception 0x{code:02X} ({})", exception_name(*code)),
            Self::InvalidResponse => f.write_str("invalid response"),
            Self::Io => f.write_str("I/O error"),
            Self::Unavailable => f.write_str("unavailable"),
        }
    }
}

/// The name the Modbus application protocol specification (section 7) gives an exception code.
pub fn exception_name(code: u8) -> &'static str {
    match code {
        0x01 => "illegal function",
        0x02 => "illegal data address",
        0x03 => "illegal data value",
        0x04 => "server device failure",
        0x05 => "acknowledge",
        0x06 => "server device busy",
        0x08 => "memory parity error",
        0x0A => "gateway path unavailable",
        0x0B => "gateway target device failed to respond",
        _ => "unknown exception",
    }
}

/// Error of a [`RegisterBus`] request.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct BusError {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl BusError {
    /// An error of the given kind with a human-readable message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), source: None }
    }

    /// Attaches the underlying error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// No answer in time.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, message)
    }

    /// Connection refused, reset or closed.
    pub fn disconnected(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Disconnected, message)
    }

    /// A Modbus exception response with this exception code.
    pub fn exception(code: u8) -> Self {
        Self::new(ErrorKind::Exception(code), "the device rejected the request")
    }

    /// The answer did not match the request.
    pub fn invalid_response(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidResponse, message)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The Modbus exception code, when the device answered with an exception.
    pub fn exception_code(&self) -> Option<u8> {
        match self.kind {
            ErrorKind::Exception(code) => Some(code),
            _ => None,
        }
    }

    /// The message without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Reads 16-bit registers of Modbus units: what the meter drivers need from a bus.
///
/// Implementations return exactly `count` registers or an error. `unit` is the Modbus unit
/// (slave) id: 1–247 on an RTU line, and on Modbus TCP the id the device or gateway expects
/// (often 1, 255 for some, or the RTU address behind a gateway).
pub trait RegisterBus: Send {
    /// Read Holding Registers (0x03).
    fn read_holding_registers(
        &mut self,
        unit: u8,
        address: u16,
        count: u16,
    ) -> impl Future<Output = Result<Vec<u16>, BusError>> + Send;

    /// Read Input Registers (0x04).
    fn read_input_registers(
        &mut self,
        unit: u8,
        address: u16,
        count: u16,
    ) -> impl Future<Output = Result<Vec<u16>, BusError>> + Send;

    /// Reads with the function code chosen at run time (as a register map does).
    fn read_registers(
        &mut self,
        function: RegisterFunction,
        unit: u8,
        address: u16,
        count: u16,
    ) -> impl Future<Output = Result<Vec<u16>, BusError>> + Send {
        async move {
            match function {
                RegisterFunction::Holding => self.read_holding_registers(unit, address, count).await,
                RegisterFunction::Input => self.read_input_registers(unit, address, count).await,
            }
        }
    }
}

impl<B: RegisterBus> RegisterBus for &mut B {
    fn read_holding_registers(
        &mut self,
        unit: u8,
        address: u16,
        count: u16,
    ) -> impl Future<Output = Result<Vec<u16>, BusError>> + Send {
        (**self).read_holding_registers(unit, address, count)
    }

    fn read_input_registers(
        &mut self,
        unit: u8,
        address: u16,
        count: u16,
    ) -> impl Future<Output = Result<Vec<u16>, BusError>> + Send {
        (**self).read_input_registers(unit, address, count)
    }
}

/// One bus shared by several drivers, e.g. meters with different unit ids on one RS-485 line.
///
/// Requests are serialised by an async mutex, so one request is on the line at a time.
/// Clones share the bus.
#[derive(Debug)]
pub struct SharedBus<B> {
    inner: Arc<tokio::sync::Mutex<B>>,
}

impl<B> Clone for SharedBus<B> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

impl<B: RegisterBus> SharedBus<B> {
    /// Wraps a bus for sharing.
    pub fn new(bus: B) -> Self {
        Self { inner: Arc::new(tokio::sync::Mutex::new(bus)) }
    }

    /// Locks the bus, e.g. to call [`ScriptedBus::done`] in a test.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, B> {
        self.inner.lock().await
    }
}

impl<B: RegisterBus> RegisterBus for SharedBus<B> {
    async fn read_holding_registers(&mut self, unit: u8, address: u16, count: u16) -> Result<Vec<u16>, BusError> {
        self.inner.lock().await.read_holding_registers(unit, address, count).await
    }

    async fn read_input_registers(&mut self, unit: u8, address: u16, count: u16) -> Result<Vec<u16>, BusError> {
        self.inner.lock().await.read_input_registers(unit, address, count).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_exceptions_count_as_offline_but_illegal_address_does_not() {
        assert!(ErrorKind::Timeout.is_offline());
        assert!(ErrorKind::Disconnected.is_offline());
        assert!(ErrorKind::Exception(0x0B).is_offline());
        assert!(ErrorKind::Exception(0x0A).is_offline());
        assert!(!ErrorKind::Exception(0x02).is_offline());
        assert!(!ErrorKind::InvalidResponse.is_offline());
    }

    #[test]
    fn bus_error_display_names_kind_and_exception() {
        let err = BusError::exception(0x02);
        assert_eq!(err.exception_code(), Some(0x02));
        assert_eq!(err.to_string(), "Modbus exception 0x02 (illegal data address): the device rejected the request");
        assert_eq!(BusError::timeout("no answer after 1s").to_string(), "timeout: no answer after 1s");
    }

    #[tokio::test]
    async fn shared_bus_serves_two_meters_from_one_script() {
        let shared = SharedBus::new(ScriptedBus::new([
            Expect::read_input(1, 0, 2, Ok(vec![1, 2])),
            Expect::read_holding(2, 10, 1, Ok(vec![3])),
        ]));
        let mut a = shared.clone();
        let mut b = shared.clone();
        assert_eq!(a.read_input_registers(1, 0, 2).await.ok(), Some(vec![1, 2]));
        assert_eq!(b.read_registers(RegisterFunction::Holding, 2, 10, 1).await.ok(), Some(vec![3]));
        shared.lock().await.done();
    }
}
