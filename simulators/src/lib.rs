//! Simulators for tests, benchmarks and the demo.
//!
//! - [`chargepoint`]: an OCPP 1.6J charge point with EVs that really draw current, for
//!   end-to-end tests and the `chargepoint-sim` binary.
//! - [`load`]: the lean load generator, echo baseline server and process probes behind
//!   the `ocpp-load` benchmark binary.

pub mod chargepoint;
pub mod load;
pub mod meter;
