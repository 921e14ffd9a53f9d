//! The shared language of Sitepilot: what the edge agent, the cloud hub, the simulators
//! and the tests all speak. Pure and deterministic: no tokio, no sockets, no database.
//!
//! - [`ocpp`]: OCPP-J framing (CALL / CALLRESULT / CALLERROR) and typed messages per
//!   protocol version ([`ocpp::v16`] for OCPP 1.6J).
//! - [`model`]: the version-neutral charger model every OCPP version adapter maps into.
//! - [`ids`]: validated identifiers.
//! - [`site`]: the site's supply phases and how chargers are wired to them.
//! - [`energy`]: site power per phase against its limits, and the fail-safe state.
//! - [`sync`]: the edge ↔ hub sync protocol over MQTT (see `shared-model/SYNC.md`).
//! - [`tariff`]: OCPI 2.2.1 tariffs and the engine that prices a session into CDR periods.
//!
//! ```
//! use shared_model::ocpp::framing::Frame;
//! let frame = Frame::parse(r#"[2,"19223201","Heartbeat",{}]"#).expect("valid frame");
//! assert!(matches!(frame, Frame::Call(ref c) if c.action == "Heartbeat"));
//! ```

pub mod config_file;
pub mod energy;
pub mod events;
pub mod ids;
pub mod model;
pub mod ocpi;
pub mod ocpp;
pub mod site;
pub mod sync;
pub mod tariff;
