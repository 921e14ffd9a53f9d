//! [`MeterServer`]: a Modbus TCP meter that serves a [`SiteLoad`] through a register map.

use std::future::{Ready, ready};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use hardware::bus::RegisterFunction;
use hardware::meter::{MapError, RegisterImage, RegisterMap};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_modbus::prelude::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_modbus::server::Service;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};

use super::site::SiteLoad;

/// The register map served unless another is chosen.
pub const DEFAULT_MAP: &str = "eastron-sdm630";
/// The Modbus unit id served unless another is chosen.
pub const DEFAULT_UNIT_ID: u8 = 1;
/// Most registers one read may ask for (Modbus application protocol, 0x03 / 0x04).
const MAX_READ_COUNT: u16 = 125;

/// Why a meter server could not start.
#[derive(Debug, thiserror::Error)]
pub enum MeterServerError {
    /// The register map is unknown or invalid.
    #[error(transparent)]
    Map(#[from] MapError),
    /// The address cannot be listened on (e.g. the port is taken).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

/// Builds a [`MeterServer`]: [`MeterServer::builder`].
#[derive(Debug)]
pub struct MeterServerBuilder {
    load: SiteLoad,
    map: Option<RegisterMap>,
    unit_id: u8,
}

impl MeterServerBuilder {
    /// Serves through `map` instead of the built-in SDM630 map.
    pub fn with_map(mut self, map: RegisterMap) -> Self {
        self.map = Some(map);
        self
    }

    /// Serves through the built-in map `name` (a file name of `configs/meters/` without
    /// `.toml`, e.g. `"sunspec-203"`).
    pub fn with_builtin_map(self, name: &str) -> Result<Self, MapError> {
        Ok(self.with_map(RegisterMap::builtin(name)?))
    }

    /// Answers as Modbus unit `unit_id` (default 1).
    pub fn with_unit_id(mut self, unit_id: u8) -> Self {
        self.unit_id = unit_id;
        self
    }

    /// Listens on `addr` (port 0: the OS picks one, see [`MeterServer::local_addr`]) and
    /// starts serving.
    pub async fn bind(self, addr: SocketAddr) -> Result<MeterServer, MeterServerError> {
        let map = match self.map {
            Some(map) => map,
            None => RegisterMap::builtin(DEFAULT_MAP)?,
        };
        let listener = TcpListener::bind(addr).await.map_err(|source| MeterServerError::Bind { addr, source })?;
        let local_addr = listener.local_addr().map_err(|source| MeterServerError::Bind { addr, source })?;
        let device = Arc::new(Device::new(self.load, map, self.unit_id));
        let service = MeterService(Arc::clone(&device));
        let task = tokio::spawn(async move {
            let server = Server::new(listener);
            let on_connected = move |stream: TcpStream, peer: SocketAddr| {
                let service = service.clone();
                async move { accept_tcp_connection(stream, peer, move |_| Ok(Some(service.clone()))) }
            };
            if let Err(err) = server.serve(&on_connected, |err| tracing::debug!("meter-sim connection: {err}")).await {
                tracing::warn!("meter-sim stopped accepting: {err}");
            }
        });
        tracing::debug!(addr = %local_addr, map = device.map.name(), unit = device.unit_id, "meter-sim listening");
        Ok(MeterServer { local_addr, device, task })
    }
}

/// A simulated Modbus TCP meter measuring a [`SiteLoad`].
///
/// Every request gets a fresh image: the site's [`reading`](SiteLoad::reading) encoded
/// with the register map ([`RegisterMap::encode`]). What it answers:
///
/// - reads with the map's function (0x04 input or 0x03 holding) of `1..=125` registers
///   inside the map's span (from its lowest to its highest mapped register, scale factor
///   registers included): the image, unmapped registers as 0 (as meters answer for
///   reserved registers inside a block);
/// - a read reaching outside the span: exception 0x02 (illegal data address); a count of
///   0 or more than 125: 0x03 (illegal data value);
/// - the other read function, and any other function (writes, coils): 0x01 (illegal
///   function);
/// - a unit id other than its own: 0x0B (gateway target device failed to respond), as a
///   TCP-to-RTU gateway answers for a unit that is not on its line, so a wrong unit id
///   shows at once as an offline meter instead of a timeout;
/// - a reading that does not fit the map's types (e.g. a negative value in an unsigned
///   register): 0x04 (server device failure), logged.
///
/// [`set_offline`](Self::set_offline) makes it accept connections and requests but never
/// answer, so clients time out; [`set_frozen`](Self::set_frozen) keeps serving the last
/// image. Dropping the server stops it and closes its connections.
#[derive(Debug)]
pub struct MeterServer {
    local_addr: SocketAddr,
    device: Arc<Device>,
    task: JoinHandle<()>,
}

impl MeterServer {
    /// A builder serving `load`: the built-in SDM630 map, unit id 1.
    pub fn builder(load: SiteLoad) -> MeterServerBuilder {
        MeterServerBuilder { load, map: None, unit_id: DEFAULT_UNIT_ID }
    }

    /// Serves `load` on `addr` as an SDM630 with unit id 1.
    pub async fn bind(addr: SocketAddr, load: SiteLoad) -> Result<MeterServer, MeterServerError> {
        MeterServer::builder(load).bind(addr).await
    }

    /// The address it listens on (with the port the OS chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The site it measures (a handle sharing the same load).
    pub fn site_load(&self) -> &SiteLoad {
        &self.device.load
    }

    /// The register map it serves.
    pub fn map(&self) -> &RegisterMap {
        &self.device.map
    }

    /// The Modbus unit id it answers to.
    pub fn unit_id(&self) -> u8 {
        self.device.unit_id
    }

    /// Offline: requests get no answer at all (clients time out). Back online, the next
    /// request is answered again; connections stay open throughout.
    pub fn set_offline(&self, offline: bool) {
        self.device.offline.store(offline, Ordering::SeqCst);
    }

    /// Whether it is offline.
    pub fn is_offline(&self) -> bool {
        self.device.offline.load(Ordering::SeqCst)
    }

    /// Frozen: keeps serving the last image (as a meter whose measuring part hung), so the
    /// readings go stale while the meter still answers.
    pub fn set_frozen(&self, frozen: bool) {
        self.device.frozen.store(frozen, Ordering::SeqCst);
    }

    /// Whether it is frozen.
    pub fn is_frozen(&self) -> bool {
        self.device.frozen.load(Ordering::SeqCst)
    }

    /// Requests answered so far (with data or an exception; not those ignored offline).
    pub fn requests_answered(&self) -> u64 {
        self.device.answered.load(Ordering::SeqCst)
    }

    /// Stops serving and closes the connections.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for MeterServer {
    fn drop(&mut self) {
        // Aborting `serve` cancels the per-connection tasks it spawned (drop guard).
        self.task.abort();
    }
}

/// The meter's state, shared by its connections.
#[derive(Debug)]
struct Device {
    load: SiteLoad,
    map: RegisterMap,
    unit_id: u8,
    /// Registers `span.0..span.1` may be read.
    span: (u32, u32),
    offline: AtomicBool,
    frozen: AtomicBool,
    last_image: Mutex<Option<RegisterImage>>,
    answered: AtomicU64,
}

impl Device {
    fn new(load: SiteLoad, map: RegisterMap, unit_id: u8) -> Self {
        let mut span: Option<(u32, u32)> = None;
        for value in map.values() {
            let mut extend = |start: u32, end: u32| {
                span = Some(span.map_or((start, end), |(lo, hi)| (lo.min(start), hi.max(end))));
            };
            let start = u32::from(value.address);
            extend(start, start + u32::from(value.value_type.width()));
            if let Some(sf) = value.scale_register {
                extend(u32::from(sf.address), u32::from(sf.address) + 1);
            }
        }
        Device {
            load,
            map,
            unit_id,
            span: span.unwrap_or((0, 0)),
            offline: AtomicBool::new(false),
            frozen: AtomicBool::new(false),
            last_image: Mutex::new(None),
            answered: AtomicU64::new(0),
        }
    }

    /// The image to serve: the last one when frozen, otherwise a fresh one.
    fn image(&self) -> Result<RegisterImage, ExceptionCode> {
        let mut last = self.last_image.lock().unwrap_or_else(PoisonError::into_inner);
        if self.frozen.load(Ordering::SeqCst)
            && let Some(image) = last.as_ref()
        {
            return Ok(image.clone());
        }
        let reading = self.load.reading(Instant::now());
        let image = self.map.encode(&reading).map_err(|err| {
            tracing::warn!(map = self.map.name(), "meter-sim cannot encode {reading:?}: {err}");
            ExceptionCode::ServerDeviceFailure
        })?;
        *last = Some(image.clone());
        Ok(image)
    }

    fn read(&self, function: RegisterFunction, address: u16, count: u16) -> Result<Vec<u16>, ExceptionCode> {
        if function != self.map.function() {
            return Err(ExceptionCode::IllegalFunction);
        }
        if count == 0 || count > MAX_READ_COUNT {
            return Err(ExceptionCode::IllegalDataValue);
        }
        let (start, end) = (u32::from(address), u32::from(address) + u32::from(count));
        if start < self.span.0 || end > self.span.1 {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        Ok(self.image()?.read(address, count))
    }

    fn answer(&self, request: SlaveRequest<'static>) -> Result<Option<Response>, ExceptionCode> {
        if self.offline.load(Ordering::SeqCst) {
            return Ok(None);
        }
        self.answered.fetch_add(1, Ordering::SeqCst);
        if request.slave != self.unit_id {
            return Err(ExceptionCode::GatewayTargetDevice);
        }
        match request.request {
            Request::ReadHoldingRegisters(address, count) => {
                self.read(RegisterFunction::Holding, address, count).map(|w| Some(Response::ReadHoldingRegisters(w)))
            }
            Request::ReadInputRegisters(address, count) => {
                self.read(RegisterFunction::Input, address, count).map(|w| Some(Response::ReadInputRegisters(w)))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }
}

#[derive(Debug, Clone)]
struct MeterService(Arc<Device>);

impl Service for MeterService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Option<Response>, ExceptionCode>>;

    fn call(&self, request: SlaveRequest<'static>) -> Self::Future {
        ready(self.0.answer(request))
    }
}
