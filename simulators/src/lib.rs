//! Simulators for tests, benchmarks and the demo.
//!
//! - [`chargepoint`]: an OCPP 1.6J charge point with EVs that really draw current, for
//!   end-to-end tests and the `chargepoint-sim` binary.
//! - [`emsp`]: an OCPI 2.2.1 eMSP peer of the hub's CPO interface (registration both
//!   ways, crawling, pushes, real-time authorization), behind the `emsp-sim` binary.
//! - [`load`]: the lean load generator, echo baseline server and process probes behind
//!   the `ocpp-load` benchmark binary.
//! - [`meter`]: a Modbus TCP site meter whose readings are a building load profile plus
//!   the current the simulated chargers draw, behind the `meter-sim` binary.
//!
//! The binaries under test never depend on this crate; simulators talk to them over
//! real sockets only (the demo starts the edge agent as a process).

pub mod chargepoint;
pub mod emsp;
pub mod load;
pub mod meter;
