//! The OCPP central system: WebSocket server, per-connection driver, outbound CALL
//! correlation and the per-version adapters that map wire messages onto the
//! version-neutral operations in [`crate::chargers`].

pub mod calls;
pub mod connection;
pub mod directory;
pub mod registry;
pub mod server;
pub mod v16;
