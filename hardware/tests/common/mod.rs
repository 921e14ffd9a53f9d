//! Shared setup: a tokio-modbus server that serves register images, and a TCP proxy whose
//! connections can be cut to exercise reconnection.

#![allow(dead_code, clippy::unwrap_used)]

use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hardware::meter::{MeterReading, Quantity, RegisterImage, RegisterMap};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_modbus::prelude::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_modbus::server::Service;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};

/// `configs/meters/` of the workspace.
pub fn meters_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs/meters")
}

/// A plausible reading of a 22 kW charger's feed (or, for inverters, a producing inverter):
/// different values per phase so that swapped registers show.
pub fn realistic_reading(map: &RegisterMap) -> MeterReading {
    let producing = map.values().iter().any(|v| v.quantity == Quantity::PowerTotal && v.scale < 0.0);
    let mut reading = MeterReading {
        power_w: Some(11_021.0),
        powers_w: [Some(3_511.0), Some(3_702.5), Some(3_807.5)],
        currents_a: [Some(15.25), Some(16.1), Some(16.55)],
        voltages_v: [Some(229.4), Some(231.2), Some(230.1)],
        line_voltages_v: [Some(398.6), Some(399.9), Some(397.2)],
        energy_import_wh: Some(1_234_567.0),
        energy_export_wh: Some(89_012.0),
        frequency_hz: Some(49.98),
        reactive_power_var: Some(-512.0),
        apparent_power_va: Some(11_190.0),
        power_factor: Some(0.985),
    };
    if producing {
        reading.power_w = Some(-5_210.0);
        reading.energy_export_wh = Some(12_345_678.0);
        reading.apparent_power_va = Some(5_230.0);
    }
    reading
}

/// Registers a server holds, per function code.
#[derive(Debug, Clone, Default)]
pub struct Registers {
    pub holding: RegisterImage,
    pub input: RegisterImage,
}

impl Registers {
    /// The image of `map` showing `reading`, in the table the map reads.
    pub fn for_map(map: &RegisterMap, reading: &MeterReading) -> Self {
        let image = map.encode(reading).unwrap();
        match map.function() {
            hardware::bus::RegisterFunction::Holding => Self { holding: image, input: RegisterImage::new() },
            hardware::bus::RegisterFunction::Input => Self { holding: RegisterImage::new(), input: image },
        }
    }
}

/// A Modbus device: answers reads of `unit` from its images. Reads of a range that holds
/// no known register get exception 0x02 (illegal data address); reserved registers inside
/// a known range read as 0, as real meters do. Other units get 0x0B, as a gateway does.
#[derive(Debug, Clone)]
pub struct Device {
    pub unit: u8,
    pub registers: Arc<Mutex<Registers>>,
    pub requests: Arc<Mutex<Vec<(u8, u16, u16)>>>,
}

impl Device {
    pub fn new(unit: u8, registers: Registers) -> Self {
        Self { unit, registers: Arc::new(Mutex::new(registers)), requests: Arc::default() }
    }

    /// (function code, address, count) of every request served.
    pub fn requests(&self) -> Vec<(u8, u16, u16)> {
        self.requests.lock().unwrap().clone()
    }

    fn answer(image: &RegisterImage, address: u16, count: u16) -> Result<Vec<u16>, ExceptionCode> {
        let known = (0..count).any(|i| address.checked_add(i).is_some_and(|a| image.get(a).is_some()));
        if known { Ok(image.read(address, count)) } else { Err(ExceptionCode::IllegalDataAddress) }
    }
}

impl Service for Device {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Response, ExceptionCode>>;

    fn call(&self, request: SlaveRequest<'static>) -> Self::Future {
        if request.slave != self.unit {
            return ready(Err(ExceptionCode::GatewayTargetDevice));
        }
        let registers = self.registers.lock().unwrap();
        ready(match request.request {
            Request::ReadHoldingRegisters(address, count) => {
                self.requests.lock().unwrap().push((0x03, address, count));
                Self::answer(&registers.holding, address, count).map(Response::ReadHoldingRegisters)
            }
            Request::ReadInputRegisters(address, count) => {
                self.requests.lock().unwrap().push((0x04, address, count));
                Self::answer(&registers.input, address, count).map(Response::ReadInputRegisters)
            }
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

/// Serves `device` over Modbus TCP on 127.0.0.1, port chosen by the OS.
pub async fn serve_tcp(device: Device) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(listener);
    let task = tokio::spawn(async move {
        let on_connected = move |stream: TcpStream, socket_addr: SocketAddr| {
            let device = device.clone();
            async move { accept_tcp_connection(stream, socket_addr, move |_| Ok(Some(device.clone()))) }
        };
        let _ = server.serve(&on_connected, |_err| {}).await;
    });
    (addr, task)
}

/// A TCP proxy in front of `upstream` whose open connections [`cut`](Self::cut) drops,
/// like a gateway reboot or a pulled cable, while it keeps accepting new ones.
pub struct Proxy {
    pub addr: SocketAddr,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let list = Arc::clone(&connections);
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let handle = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                list.lock().unwrap().push(handle);
            }
        });
        Self { addr, connections, accept }
    }

    /// Drops every open connection.
    pub fn cut(&self) {
        for handle in self.connections.lock().unwrap().drain(..) {
            handle.abort();
        }
    }

    /// How many connections were accepted and not cut.
    pub fn open_connections(&self) -> usize {
        self.connections.lock().unwrap().len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// Asserts `actual` is within `tolerance` of `expected`, naming the map and quantity.
pub fn assert_close(map: &str, quantity: Quantity, actual: Option<f64>, expected: Option<f64>, tolerance: f64) {
    match (actual, expected) {
        (Some(a), Some(e)) => {
            assert!((a - e).abs() <= tolerance, "{map}: {quantity} decoded {a}, expected {e} ± {tolerance}")
        }
        (a, e) => assert_eq!(a, e, "{map}: {quantity}"),
    }
}
