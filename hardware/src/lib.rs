//! Device drivers at the hardware boundary of the edge agent: the site meters (Modbus TCP
//! and RTU) and the gateway's digital I/O (contactor, e-stop / RCD / main-switch inputs,
//! status LED, hardware watchdog).
//!
//! - [`bus`]: the [`RegisterBus`](bus::RegisterBus) trait (read holding 0x03 / input 0x04
//!   registers) over tokio-modbus TCP and RTU with timeouts and reconnection, a
//!   [`ScriptedBus`](bus::ScriptedBus) mock that checks it was used up, and errors whose
//!   [`ErrorKind`](bus::ErrorKind) tells "meter offline" from "bad register".
//! - [`meter`]: small capability traits ([`MeterPower`](meter::MeterPower),
//!   [`PhaseCurrents`](meter::PhaseCurrents), [`PhaseVoltages`](meter::PhaseVoltages),
//!   [`MeterEnergy`](meter::MeterEnergy), …), data-driven register maps (TOML files in
//!   `configs/meters/`, also built in) with pure decoders, and the
//!   [`ModbusMeter`](meter::ModbusMeter) driver that polls a map in as few reads as possible.
//! - [`digital`]: embedded-hal 1.0 based [`Contactor`](digital::Contactor) (with welded
//!   contact detection), [`SafetyInput`](digital::SafetyInput),
//!   [`StatusLed`](digital::StatusLed) and the [`Watchdog`](digital::Watchdog) trait, with
//!   in-memory mocks and, behind the `linux` feature, GPIO character device and
//!   `/dev/watchdog` backings.
//!
//! Polling a meter, here against a scripted bus standing in for an Eastron SDM630 whose
//! total power (input register 0x0034, float32) reads 7.4 kW:
//!
//! ```
//! use hardware::bus::{Expect, ScriptedBus};
//! use hardware::meter::{MeterPower, ModbusMeter, RegisterMap};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let map = RegisterMap::builtin("eastron-sdm630")?;
//! let bus = ScriptedBus::new([Expect::read_input(1, 0x0034, 2, Ok(vec![0x45E7, 0x4000]))]);
//! let mut meter = ModbusMeter::new(bus, 1, map);
//!
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! let watts = runtime.block_on(meter.power_w())?;
//! assert_eq!(watts, 7400.0);
//!
//! // Every scripted request was made, and nothing else.
//! meter.bus_mut().done();
//! # Ok(())
//! # }
//! ```

pub mod bus;
pub mod digital;
pub mod meter;
