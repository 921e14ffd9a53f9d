//! The Sitepilot edge agent: the charging site's local OCPP central system.
//!
//! Chargers on the site's LAN connect to it over OCPP-J (1.6 today); it keeps every
//! state change in SQLite together with an outbox event (so nothing a charger reported
//! is lost, whatever happens to the process), serves a local REST API for installers,
//! and later balances load, plans charging and syncs with the cloud hub.
//!
//! The binary is a thin shell over [`app::start`]; tests start the agent the same way:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let config = edge_agent::config::Config::load(std::path::Path::new("edge-agent.toml"))?;
//! let running = edge_agent::app::start(config).await?;
//! println!("chargers connect to {}/{{id}}", running.ocpp_url());
//! # Ok(()) }
//! ```

pub mod api;
pub mod app;
pub mod auth;
pub mod balancer;
pub mod chargers;
pub mod config;
pub mod control;
pub mod message_log;
pub mod meters;
pub mod metrics;
pub mod ocpp;
pub mod remote_auth;
pub mod store;
pub mod sync;
pub mod ui;
