//! The Sitepilot cloud hub: collects every site over MQTT and does what needs the whole
//! fleet (billing, OCPI roaming, fleet dashboards, grid programs).
//!
//! Filled by the sync issue (ingest, store, fleet API) and the billing/OCPI issue. It has
//! no binary yet on purpose: a `cloud-hub` that starts but does nothing would pretend to
//! work. What edge and hub share lives in `shared-model`.
