//! [`RegisterBus`] over tokio-modbus: Modbus TCP and Modbus RTU clients.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio_modbus::Slave;
use tokio_modbus::client::{Context, Reader as _};
use tokio_modbus::prelude::SlaveContext as _;

use super::{BusError, ErrorKind, RegisterBus, RegisterFunction};

/// Opens a tokio-modbus client connection: the transport-specific half of [`ModbusBus`].
///
/// [`TcpConnector`] and [`SerialConnector`] are the real ones; tests can attach a client
/// to any stream (e.g. one end of a pseudo terminal) by implementing this trait.
pub trait Connect: Send {
    /// Opens a new connection.
    fn connect(&mut self) -> impl Future<Output = io::Result<Context>> + Send;

    /// Where the connection goes, for messages (`"tcp 10.0.0.5:502"`, `"rtu /dev/ttyUSB0"`).
    fn peer(&self) -> String;
}

/// Connects to a Modbus TCP server (a meter or a TCP-to-RTU gateway).
#[derive(Debug, Clone)]
pub struct TcpConnector {
    addr: SocketAddr,
}

impl TcpConnector {
    /// A connector for this address (port 502 is the Modbus TCP default).
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr }
    }
}

impl Connect for TcpConnector {
    async fn connect(&mut self) -> io::Result<Context> {
        // The unit id is set per request; this one is only the initial value.
        tokio_modbus::client::tcp::connect_slave(self.addr, Slave::tcp_device()).await
    }

    fn peer(&self) -> String {
        format!("tcp {}", self.addr)
    }
}

/// Serial parity. Modbus RTU specifies even parity as the default; many meters ship with none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    /// No parity bit (usually with two stop bits per the specification, one in practice).
    None,
    /// Even parity.
    Even,
    /// Odd parity.
    Odd,
}

/// Number of stop bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopBits {
    /// One stop bit.
    One,
    /// Two stop bits.
    Two,
}

/// Serial line settings for Modbus RTU. Data bits are always 8 in RTU mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialConfig {
    /// Device path, e.g. `/dev/ttyUSB0` or `/dev/ttymxc2`.
    pub path: String,
    /// Baud rate, e.g. 9600.
    pub baud_rate: u32,
    /// Parity.
    pub parity: Parity,
    /// Stop bits.
    pub stop_bits: StopBits,
}

impl SerialConfig {
    /// 8N1 at the given baud rate: the setting most meters ship with.
    pub fn new(path: impl Into<String>, baud_rate: u32) -> Self {
        Self { path: path.into(), baud_rate, parity: Parity::None, stop_bits: StopBits::One }
    }

    /// Sets the parity.
    pub fn with_parity(mut self, parity: Parity) -> Self {
        self.parity = parity;
        self
    }

    /// Sets the stop bits.
    pub fn with_stop_bits(mut self, stop_bits: StopBits) -> Self {
        self.stop_bits = stop_bits;
        self
    }
}

/// Opens a serial port for Modbus RTU (tokio-serial without libudev).
#[derive(Debug, Clone)]
pub struct SerialConnector {
    config: SerialConfig,
}

impl SerialConnector {
    /// A connector for this serial line.
    pub fn new(config: SerialConfig) -> Self {
        Self { config }
    }
}

impl Connect for SerialConnector {
    async fn connect(&mut self) -> io::Result<Context> {
        let parity = match self.config.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        };
        let stop_bits = match self.config.stop_bits {
            StopBits::One => tokio_serial::StopBits::One,
            StopBits::Two => tokio_serial::StopBits::Two,
        };
        let builder = tokio_serial::new(self.config.path.as_str(), self.config.baud_rate)
            .data_bits(tokio_serial::DataBits::Eight)
            .parity(parity)
            .stop_bits(stop_bits);
        let port = tokio_serial::SerialStream::open(&builder)?;
        Ok(tokio_modbus::client::rtu::attach_slave(port, Slave::broadcast()))
    }

    fn peer(&self) -> String {
        format!("rtu {}", self.config.path)
    }
}

/// A tokio-modbus client as a [`RegisterBus`].
///
/// Connects lazily on the first request. Every request runs under `timeout`
/// (`tokio::time::timeout`). After a timeout, a transport error or a protocol mismatch the
/// connection is dropped and the next request connects again, so a meter that was
/// unplugged comes back by itself; a Modbus exception keeps the connection.
pub struct ModbusBus<C> {
    connector: C,
    timeout: Duration,
    context: Option<Context>,
}

/// Modbus TCP client.
pub type TcpBus = ModbusBus<TcpConnector>;
/// Modbus RTU client on a serial port.
pub type RtuBus = ModbusBus<SerialConnector>;

/// Default per-request timeout: a Modbus device answers within a few hundred milliseconds,
/// and a 1 s control loop cannot wait longer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1000);

impl ModbusBus<TcpConnector> {
    /// A Modbus TCP bus to `addr` with the default timeout.
    pub fn tcp(addr: SocketAddr) -> Self {
        Self::new(TcpConnector::new(addr))
    }
}

impl ModbusBus<SerialConnector> {
    /// A Modbus RTU bus on the serial line `config` with the default timeout.
    pub fn rtu(config: SerialConfig) -> Self {
        Self::new(SerialConnector::new(config))
    }
}

impl<C: Connect> ModbusBus<C> {
    /// A bus that connects with `connector`.
    pub fn new(connector: C) -> Self {
        Self { connector, timeout: DEFAULT_TIMEOUT, context: None }
    }

    /// Sets the per-request timeout (also used for connecting).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether a connection is currently open.
    pub fn is_connected(&self) -> bool {
        self.context.is_some()
    }

    /// Closes the connection; the next request reconnects.
    pub fn disconnect(&mut self) {
        self.context = None;
    }

    async fn read(
        &mut self,
        function: RegisterFunction,
        unit: u8,
        address: u16,
        count: u16,
    ) -> Result<Vec<u16>, BusError> {
        let timeout = self.timeout;
        let peer = self.connector.peer();
        let mut context = match self.context.take() {
            Some(context) => context,
            None => match tokio::time::timeout(timeout, self.connector.connect()).await {
                Err(_) => return Err(BusError::timeout(format!("{peer}: no connection within {timeout:?}"))),
                Ok(Err(err)) => {
                    return Err(classify_io(&err, format!("{peer}: cannot connect: {err}")).with_source(err));
                }
                Ok(Ok(context)) => {
                    tracing::debug!(%peer, "modbus connected");
                    context
                }
            },
        };
        context.set_slave(Slave(unit));
        let request = async {
            match function {
                RegisterFunction::Holding => context.read_holding_registers(address, count).await,
                RegisterFunction::Input => context.read_input_registers(address, count).await,
            }
        };
        let what = format!("{peer} unit {unit}: read {} {address} (0x{address:04X}) count {count}", function.as_str());
        let result = match tokio::time::timeout(timeout, request).await {
            // The late answer might still arrive and be taken for the next one: reconnect.
            Err(_) => return Err(BusError::timeout(format!("{what}: no answer within {timeout:?}"))),
            Ok(Err(tokio_modbus::Error::Transport(err))) => {
                tracing::debug!(%peer, error = %err, "modbus transport error, will reconnect");
                return Err(classify_io(&err, format!("{what}: {err}")).with_source(err));
            }
            Ok(Err(tokio_modbus::Error::Protocol(err))) => {
                return Err(BusError::invalid_response(format!("{what}: {err}")).with_source(err));
            }
            Ok(Ok(result)) => result,
        };
        // The device answered: the connection is fine, keep it.
        self.context = Some(context);
        match result {
            Err(exception) => {
                let code = u8::from(exception);
                Err(BusError::new(ErrorKind::Exception(code), what))
            }
            Ok(words) if words.len() != usize::from(count) => {
                Err(BusError::invalid_response(format!("{what}: got {} registers instead of {count}", words.len())))
            }
            Ok(words) => Ok(words),
        }
    }
}

impl<C> std::fmt::Debug for ModbusBus<C>
where
    C: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModbusBus")
            .field("connector", &self.connector)
            .field("timeout", &self.timeout)
            .field("connected", &self.context.is_some())
            .finish()
    }
}

/// Sorts an I/O error into "the peer is gone" and the rest.
fn classify_io(err: &io::Error, message: String) -> BusError {
    use io::ErrorKind as K;
    let kind = match err.kind() {
        K::TimedOut | K::WouldBlock => ErrorKind::Timeout,
        K::ConnectionRefused
        | K::ConnectionReset
        | K::ConnectionAborted
        | K::NotConnected
        | K::BrokenPipe
        | K::UnexpectedEof
        | K::AddrNotAvailable
        | K::HostUnreachable
        | K::NetworkUnreachable
        | K::NetworkDown
        | K::NotFound => ErrorKind::Disconnected,
        K::InvalidData => ErrorKind::InvalidResponse,
        _ => ErrorKind::Io,
    };
    BusError::new(kind, message)
}

impl<C: Connect> RegisterBus for ModbusBus<C> {
    async fn read_holding_registers(&mut self, unit: u8, address: u16, count: u16) -> Result<Vec<u16>, BusError> {
        self.read(RegisterFunction::Holding, unit, address, count).await
    }

    async fn read_input_registers(&mut self, unit: u8, address: u16, count: u16) -> Result<Vec<u16>, BusError> {
        self.read(RegisterFunction::Input, unit, address, count).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_sorted_by_what_the_control_loop_does_with_them() {
        let kind = |k: io::ErrorKind| classify_io(&io::Error::from(k), String::new()).kind();
        assert_eq!(kind(io::ErrorKind::ConnectionRefused), ErrorKind::Disconnected);
        assert_eq!(kind(io::ErrorKind::UnexpectedEof), ErrorKind::Disconnected);
        assert_eq!(kind(io::ErrorKind::NotFound), ErrorKind::Disconnected);
        assert_eq!(kind(io::ErrorKind::TimedOut), ErrorKind::Timeout);
        assert_eq!(kind(io::ErrorKind::InvalidData), ErrorKind::InvalidResponse);
        assert_eq!(kind(io::ErrorKind::PermissionDenied), ErrorKind::Io);
    }

    #[tokio::test]
    async fn a_missing_serial_port_is_an_offline_error_not_a_panic() {
        let mut bus = RtuBus::rtu(SerialConfig::new("/dev/does-not-exist-sitepilot", 9600));
        let err = bus.read_input_registers(1, 0, 2).await.err();
        assert!(err.as_ref().is_some_and(|e| e.kind().is_offline()), "{err:?}");
        assert!(err.is_some_and(|e| e.to_string().contains("rtu /dev/does-not-exist-sitepilot")));
        assert!(!bus.is_connected());
    }
}
