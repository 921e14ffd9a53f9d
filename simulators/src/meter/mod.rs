//! A Modbus TCP site meter that sees what the simulated chargers draw, so the control loop
//! is closed: the edge agent reads the meter, limits the chargers, the EVs draw less, and
//! the next reading shows it.
//!
//! - [`SiteLoad`]: what the meter measures, per phase: the building's base load from a
//!   [`LoadProfile`] (time of day → [L1, L2, L3] A, linear, wrapping at midnight; a CSV
//!   file `time,l1_a,l2_a,l3_a` or the built-in [office](LoadProfile::office) profile) on a
//!   [`SimClock`] (real time, a compressed day, or a fixed time for tests), plus an extra
//!   load set by hand ([`SiteLoad::set_extra_load`]), plus the current of attached chargers
//!   ([`SiteLoad::attach`] for a simulated [`ChargePoint`](crate::chargepoint::ChargePoint),
//!   [`SiteLoad::attach_source`] for any [`DrawSource`], e.g. a test's [`ManualDraw`]),
//!   each through its [`Wiring`] (a single-phase charger on L2, a three-phase one rotated
//!   L2-L3-L1, …). [`SiteLoad::reading`] gives a [`MeterReading`](hardware::meter::MeterReading)
//!   and integrates the energy registers.
//! - [`MeterServer`]: a tokio-modbus TCP server answering as one unit with the register
//!   image of the reading through a `hardware` [`RegisterMap`](hardware::meter::RegisterMap)
//!   (the Eastron SDM630 by default, any built-in map by name), with faults for tests:
//!   [`set_offline`](MeterServer::set_offline) and [`set_frozen`](MeterServer::set_frozen).
//!   The exceptions it answers with are listed on [`MeterServer`].
//! - the `meter-sim` binary serves the base load alone (`meter-sim --help`).
//!
//! A meter on port 0 whose site has a 3 × 16 A EV on a charger wired L2-L3-L1, read as the
//! edge agent reads it:
//!
//! ```
//! use std::time::Duration;
//!
//! use chrono::NaiveTime;
//! use hardware::bus::TcpBus;
//! use hardware::meter::{ModbusMeter, PhaseCurrents, RegisterMap};
//! use simulators::meter::{LoadProfile, ManualDraw, MeterServer, SimClock, SiteLoad, Wiring};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! let noon = NaiveTime::from_hms_opt(12, 0, 0).ok_or("time")?;
//! let site = SiteLoad::new(LoadProfile::office(), SimClock::fixed(noon));
//! let ev = ManualDraw::new();
//! site.attach_source(ev.clone(), Wiring::L2_L3_L1);
//! ev.set_ev(16.0, 3);
//!
//! let server = MeterServer::bind("127.0.0.1:0".parse()?, site.clone()).await?;
//! let bus = TcpBus::tcp(server.local_addr()).with_timeout(Duration::from_millis(500));
//! let mut meter = ModbusMeter::new(bus, 1, RegisterMap::builtin("eastron-sdm630")?);
//!
//! let base = LoadProfile::office().at(noon);
//! let [l1, _, _] = meter.currents_a().await?;
//! assert!((l1.ok_or("L1")? - (base[0] + 16.0)).abs() < 1e-3);
//!
//! site.set_extra_load([40.0; 3]); // a load step: the next read follows
//! let [l1, _, _] = meter.currents_a().await?;
//! assert!((l1.ok_or("L1")? - (base[0] + 56.0)).abs() < 1e-3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```

mod clock;
mod profile;
mod server;
mod site;

pub use clock::SimClock;
pub use profile::{LoadProfile, OFFICE_PROFILE_CSV, ProfileError};
pub use server::{DEFAULT_MAP, DEFAULT_UNIT_ID, MeterServer, MeterServerBuilder, MeterServerError};
pub use site::{
    ChargePointDraw, DrawSource, LoadId, ManualDraw, NOMINAL_FREQUENCY_HZ, NOMINAL_VOLTAGE_V, Phase, SiteCurrents,
    SiteLoad, Wiring, WiringError, ev_currents,
};

#[cfg(test)]
mod tests;
