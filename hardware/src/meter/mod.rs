//! Meters: small capability traits, data-driven Modbus register maps and the
//! [`ModbusMeter`] driver that polls a map over any [`RegisterBus`].
//!
//! Capabilities are separate traits (as evcc's `api.Meter`, `api.PhaseCurrents`, …) so a
//! consumer asks only for what it needs: [`MeterPower`], [`PhasePowers`],
//! [`PhaseCurrents`], [`PhaseVoltages`], [`MeterEnergy`].
//!
//! Register maps are TOML files (`configs/meters/*.toml`, also compiled in as
//! [`BUILTIN_MAPS`]):
//!
//! ```toml
//! [meter]
//! name = "Eastron SDM630"
//! function = "input"          # input (0x04) or holding (0x03)
//! word_order = "big"          # big (high word first, default) or little
//! sentinels = "sunspec"       # "not implemented" markers: sunspec (default), max, none
//! max_registers_per_read = 80 # the device's limit, at most 125 (default)
//! max_gap = 40                # unmapped registers a read may span (default 0)
//!
//! [[values]]
//! quantity = "current_l1"     # see Quantity::ALL for the vocabulary
//! address = 0x0006            # 0-based protocol address
//! type = "f32"                # f32 f64 i16 u16 i32 u32 i64 u64 acc32 acc64
//! scale = 1.0                 # fixed factor to the base unit (default 1)
//! # scale_register = { address = 40075, type = "i16" }  # SunSpec: times 10^sf
//! ```

mod builtin;
mod decode;
mod load;
mod map;
mod reading;

use std::future::Future;
use std::sync::Arc;

pub use builtin::BUILTIN_MAPS;
pub use decode::{
    EncodeError, RegisterImage, Sentinels, ValueType, WordOrder, decode_scale_factor, decode_value, encode_value,
};
pub use load::{MapError, load_dir};
pub use map::{DecodeError, MAX_REGISTERS_PER_READ, ReadRequest, RegisterMap, ScaleRegister, ValueSpec};
pub use reading::{MeterReading, Quantity};

use crate::bus::{BusError, ErrorKind, RegisterBus};

/// Error of a meter read.
#[derive(Debug, thiserror::Error)]
pub enum MeterError {
    /// The bus request failed: see [`BusError::kind`] for offline vs. rejected.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The device answered with fewer registers than asked.
    #[error("invalid response: {0}")]
    Decode(#[from] DecodeError),
    /// The meter's register map does not provide the quantity.
    #[error("meter map \"{map}\" does not provide {quantity}")]
    NotMapped {
        /// Name of the register map.
        map: String,
        /// The quantity asked for.
        quantity: Quantity,
    },
    /// The device reported the quantity as not available (NaN or a "not implemented"
    /// marker), e.g. a phase a single-phase meter does not measure.
    #[error("the meter reports no value for {0}")]
    NotAvailable(Quantity),
}

impl MeterError {
    /// What kind of failure this is: offline ([`ErrorKind::is_offline`]), rejected by the
    /// device, a bad answer, or a quantity the meter does not have.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Bus(err) => err.kind(),
            Self::Decode(_) => ErrorKind::InvalidResponse,
            Self::NotMapped { .. } | Self::NotAvailable(_) => ErrorKind::Unavailable,
        }
    }
}

/// A meter that measures total active power.
pub trait MeterPower {
    /// Total active power in W, positive when importing (see [`MeterReading`]).
    fn power_w(&mut self) -> impl Future<Output = Result<f64, MeterError>> + Send;
}

/// A meter that measures active power per phase.
pub trait PhasePowers {
    /// Active power of L1, L2, L3 in W; `None` for a phase the meter does not measure.
    fn powers_w(&mut self) -> impl Future<Output = Result<[Option<f64>; 3], MeterError>> + Send;
}

/// A meter that measures current per phase (what load balancing needs).
pub trait PhaseCurrents {
    /// Current of L1, L2, L3 in A; `None` for a phase the meter does not measure.
    fn currents_a(&mut self) -> impl Future<Output = Result<[Option<f64>; 3], MeterError>> + Send;
}

/// A meter that measures line-to-neutral voltage per phase.
pub trait PhaseVoltages {
    /// Voltage L1-N, L2-N, L3-N in V; `None` for a phase the meter does not measure.
    fn voltages_v(&mut self) -> impl Future<Output = Result<[Option<f64>; 3], MeterError>> + Send;
}

/// A meter with energy registers.
pub trait MeterEnergy {
    /// Total imported active energy in Wh.
    fn import_wh(&mut self) -> impl Future<Output = Result<f64, MeterError>> + Send;
    /// Total exported active energy in Wh.
    fn export_wh(&mut self) -> impl Future<Output = Result<f64, MeterError>> + Send;
}

/// A Modbus meter: a [`RegisterMap`] polled over a bus it owns.
///
/// [`read_all`](Self::read_all) fetches every mapped quantity with the map's grouped read
/// plan (for a 1 s control loop); the capability traits read only the registers they need.
#[derive(Debug)]
pub struct ModbusMeter<B> {
    bus: B,
    unit: u8,
    map: Arc<RegisterMap>,
    plan: Vec<ReadRequest>,
}

const PHASE_POWERS: [Quantity; 3] = [Quantity::PowerL1, Quantity::PowerL2, Quantity::PowerL3];
const PHASE_CURRENTS: [Quantity; 3] = [Quantity::CurrentL1, Quantity::CurrentL2, Quantity::CurrentL3];
const PHASE_VOLTAGES: [Quantity; 3] = [Quantity::VoltageL1, Quantity::VoltageL2, Quantity::VoltageL3];

impl<B: RegisterBus> ModbusMeter<B> {
    /// A meter at Modbus unit `unit` on `bus`, laid out as `map`.
    pub fn new(bus: B, unit: u8, map: impl Into<Arc<RegisterMap>>) -> Self {
        let map = map.into();
        let plan = map.read_plan();
        Self { bus, unit, map, plan }
    }

    /// The register map.
    pub fn map(&self) -> &RegisterMap {
        &self.map
    }

    /// The Modbus unit id.
    pub fn unit(&self) -> u8 {
        self.unit
    }

    /// The reads [`read_all`](Self::read_all) makes.
    pub fn read_plan(&self) -> &[ReadRequest] {
        &self.plan
    }

    /// The bus, e.g. to call [`ScriptedBus::done`](crate::bus::ScriptedBus::done).
    pub fn bus_mut(&mut self) -> &mut B {
        &mut self.bus
    }

    /// Gives the bus back.
    pub fn into_bus(self) -> B {
        self.bus
    }

    /// Whether the map provides `quantity`.
    pub fn provides(&self, quantity: Quantity) -> bool {
        self.map.provides(quantity)
    }

    /// One grouped poll of every mapped quantity.
    pub async fn read_all(&mut self) -> Result<MeterReading, MeterError> {
        let image = fetch(&mut self.bus, self.unit, &self.plan).await?;
        Ok(self.map.decode(&image)?)
    }

    /// Reads only `quantities` (those the map provides; others stay `None`).
    pub async fn read(&mut self, quantities: &[Quantity]) -> Result<MeterReading, MeterError> {
        let plan = self.map.read_plan_for(quantities);
        let image = fetch(&mut self.bus, self.unit, &plan).await?;
        Ok(self.map.decode_only(&image, quantities)?)
    }

    async fn read_one(&mut self, quantity: Quantity) -> Result<f64, MeterError> {
        if !self.map.provides(quantity) {
            return Err(MeterError::NotMapped { map: self.map.name().to_owned(), quantity });
        }
        self.read(&[quantity]).await?.get(quantity).ok_or(MeterError::NotAvailable(quantity))
    }

    async fn read_phases(&mut self, quantities: [Quantity; 3]) -> Result<[Option<f64>; 3], MeterError> {
        if !quantities.iter().any(|q| self.map.provides(*q)) {
            return Err(MeterError::NotMapped { map: self.map.name().to_owned(), quantity: quantities[0] });
        }
        let reading = self.read(&quantities).await?;
        Ok(quantities.map(|q| reading.get(q)))
    }
}

async fn fetch<B: RegisterBus>(bus: &mut B, unit: u8, plan: &[ReadRequest]) -> Result<RegisterImage, BusError> {
    let mut image = RegisterImage::new();
    for read in plan {
        let words = bus.read_registers(read.function, unit, read.address, read.count).await?;
        if words.len() != usize::from(read.count) {
            return Err(BusError::invalid_response(format!(
                "unit {unit}: read {} {} count {} returned {} registers",
                read.function.as_str(),
                read.address,
                read.count,
                words.len()
            )));
        }
        image.insert(read.address, &words);
    }
    Ok(image)
}

impl<B: RegisterBus> MeterPower for ModbusMeter<B> {
    /// Reads the total power register, or sums the phase powers when the map has only those.
    async fn power_w(&mut self) -> Result<f64, MeterError> {
        if !self.map.provides(Quantity::PowerTotal) && PHASE_POWERS.iter().any(|q| self.map.provides(*q)) {
            let phases = self.read_phases(PHASE_POWERS).await?;
            return phases
                .into_iter()
                .flatten()
                .reduce(|a, b| a + b)
                .ok_or(MeterError::NotAvailable(Quantity::PowerTotal));
        }
        self.read_one(Quantity::PowerTotal).await
    }
}

impl<B: RegisterBus> PhasePowers for ModbusMeter<B> {
    async fn powers_w(&mut self) -> Result<[Option<f64>; 3], MeterError> {
        self.read_phases(PHASE_POWERS).await
    }
}

impl<B: RegisterBus> PhaseCurrents for ModbusMeter<B> {
    async fn currents_a(&mut self) -> Result<[Option<f64>; 3], MeterError> {
        self.read_phases(PHASE_CURRENTS).await
    }
}

impl<B: RegisterBus> PhaseVoltages for ModbusMeter<B> {
    async fn voltages_v(&mut self) -> Result<[Option<f64>; 3], MeterError> {
        self.read_phases(PHASE_VOLTAGES).await
    }
}

impl<B: RegisterBus> MeterEnergy for ModbusMeter<B> {
    async fn import_wh(&mut self) -> Result<f64, MeterError> {
        self.read_one(Quantity::EnergyImportTotal).await
    }

    async fn export_wh(&mut self) -> Result<f64, MeterError> {
        self.read_one(Quantity::EnergyExportTotal).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Expect, ScriptedBus};

    fn sdm630() -> RegisterMap {
        match RegisterMap::builtin("eastron-sdm630") {
            Ok(map) => map,
            Err(err) => panic!("{err}"),
        }
    }

    fn f32_words(value: f32) -> [u16; 2] {
        let bits = value.to_bits();
        [(bits >> 16) as u16, (bits & 0xFFFF) as u16]
    }

    #[test]
    fn sdm630_is_polled_in_exactly_one_read() {
        let plan = sdm630().read_plan();
        assert_eq!(
            plan,
            vec![ReadRequest { function: crate::bus::RegisterFunction::Input, address: 0x0000, count: 0x004C }]
        );
    }

    #[tokio::test]
    async fn read_all_decodes_one_grouped_read() {
        let map = sdm630();
        let expected = MeterReading {
            power_w: Some(11_040.0),
            powers_w: [Some(3_680.0), Some(3_680.0), Some(3_680.0)],
            currents_a: [Some(16.0), Some(16.0), Some(16.0)],
            voltages_v: [Some(230.0), Some(230.0), Some(230.0)],
            energy_import_wh: Some(1_234_500.0),
            energy_export_wh: Some(0.0),
            frequency_hz: Some(50.0),
            ..MeterReading::default()
        };
        let image = map.encode(&expected).ok().unwrap_or_default();
        let bus = ScriptedBus::new([Expect::read_input(7, 0, 76, Ok(image.read(0, 76)))]);
        let mut meter = ModbusMeter::new(bus, 7, map);
        let reading = meter.read_all().await.ok();
        assert_eq!(reading.map(|r| r.currents_a), Some(expected.currents_a));
        assert_eq!(reading.map(|r| r.power_w), Some(Some(11_040.0)));
        assert_eq!(reading.map(|r| r.energy_import_wh), Some(Some(1_234_500.0)));
        meter.bus_mut().done();
    }

    #[tokio::test]
    async fn capabilities_read_only_what_they_need() {
        let [hi, lo] = f32_words(16.5);
        let bus = ScriptedBus::new([
            Expect::read_input(1, 0x0034, 2, Ok(f32_words(-4_200.0).to_vec())),
            Expect::read_input(1, 0x0006, 6, Ok(vec![hi, lo, hi, lo, 0x7FC0, 0x0000])),
            Expect::read_input(1, 0x0048, 2, Ok(f32_words(12.5).to_vec())),
        ]);
        let mut meter = ModbusMeter::new(bus, 1, sdm630());
        assert_eq!(meter.power_w().await.ok(), Some(-4_200.0));
        // NaN on L3 (a meter wired single-phase) is None, not 0.
        assert_eq!(meter.currents_a().await.ok(), Some([Some(16.5), Some(16.5), None]));
        assert_eq!(meter.import_wh().await.ok(), Some(12_500.0));
        meter.bus_mut().done();
    }

    #[tokio::test]
    async fn errors_keep_their_kind() {
        let bus = ScriptedBus::new([
            Expect::read_input(1, 0x0034, 2, Err(BusError::timeout("no answer"))),
            Expect::read_input(1, 0x0034, 2, Err(BusError::exception(0x02))),
            Expect::read_input(1, 0x0034, 2, Ok(vec![0x45E7])),
            Expect::read_input(1, 0x0034, 2, Ok(vec![0x7FC0, 0])),
        ]);
        let mut meter = ModbusMeter::new(bus, 1, sdm630());
        let kind = |r: Result<f64, MeterError>| r.err().map(|e| e.kind());
        assert_eq!(kind(meter.power_w().await), Some(ErrorKind::Timeout));
        assert_eq!(kind(meter.power_w().await), Some(ErrorKind::Exception(0x02)));
        assert_eq!(kind(meter.power_w().await), Some(ErrorKind::InvalidResponse));
        assert_eq!(kind(meter.power_w().await), Some(ErrorKind::Unavailable));
        meter.bus_mut().done();
    }

    #[tokio::test]
    async fn quantities_missing_from_the_map_are_unavailable_without_bus_traffic() {
        let map = RegisterMap::from_toml(
            "[meter]\nname = \"power only\"\nfunction = \"holding\"\n\
             [[values]]\nquantity = \"power_l1\"\naddress = 0\ntype = \"i16\"\n\
             [[values]]\nquantity = \"power_l2\"\naddress = 1\ntype = \"i16\"\n",
            "t",
        );
        let Ok(map) = map else { panic!("map") };
        let bus = ScriptedBus::new([Expect::read_holding(1, 0, 2, Ok(vec![100, 0xFFF6]))]);
        let mut meter = ModbusMeter::new(bus, 1, map);
        let err = meter.import_wh().await.err();
        assert_eq!(err.as_ref().map(MeterError::kind), Some(ErrorKind::Unavailable));
        assert_eq!(
            err.map(|e| e.to_string()),
            Some("meter map \"power only\" does not provide energy_import_total".into())
        );
        // No total power register: the phases are summed.
        assert_eq!(meter.power_w().await.ok(), Some(90.0));
        meter.bus_mut().done();
    }
}
