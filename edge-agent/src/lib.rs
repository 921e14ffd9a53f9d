//! The Sitepilot edge agent.
