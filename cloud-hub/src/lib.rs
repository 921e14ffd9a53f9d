//! The Sitepilot cloud hub: collects every site over MQTT and does what needs the whole
//! fleet (billing, OCPI roaming, fleet dashboards, grid programs; those come with their
//! issues).
//!
//! What is here: the hub's side of the sync protocol (`shared-model/SYNC.md`). Each
//! site's events arrive in batches over MQTT and are applied to the database at most once
//! per `(site_id, seq)`, in order, each batch in one transaction with its effects
//! (chargers, connectors, sessions, meter samples); the hub acks after the commit. The
//! broker is embedded (rumqttd, with per-site logins and a topic ACL) or external (any
//! MQTT 3.1.1 broker, shared subscriptions across replicas); the database is SQLite or
//! PostgreSQL.
//!
//! The binary is a thin shell over [`app::start`]; tests start the hub the same way:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let config = cloud_hub::config::Config::load(std::path::Path::new("cloud-hub.toml"))?;
//! let running = cloud_hub::app::start(config).await?;
//! println!("sites connect to {}; health at http://{}/health", running.broker_url, running.http_addr);
//! running.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The fleet REST API (`/api/v1`, bearer API keys with roles, an OpenAPI document at
//! `/api/v1/openapi.json`) reads what ingest built and sends commands to sites, which are
//! re-sent at each hello of their site until answered or expired.
//!
//! Modules: [`config`], [`db`] (both databases, migrations), [`ingest`] (applying
//! batches), [`sync`] (the MQTT client and workers), [`commands`] (commands down, results
//! up), [`broker`] (the embedded broker and its ACL), [`sites`] (provisioning),
//! [`mosquitto`] (password and ACL files for an external Mosquitto), [`auth`] (API keys
//! and roles), [`fleet`] (the REST API), [`billing`] (tariffs, CDRs, invoices), [`ocpi`]
//! (OCPI 2.2.1, CPO role), [`http`], [`metrics`], [`app`], [`cli`].

pub mod app;
pub mod auth;
pub mod billing;
pub mod broker;
pub mod cli;
pub mod commands;
pub mod config;
pub mod dashboard;
pub mod db;
pub mod fleet;
pub mod flow;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod mosquitto;
pub mod ocpi;
pub mod sites;
pub mod sync;
