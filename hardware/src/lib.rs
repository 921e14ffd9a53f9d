//! Device drivers at the hardware boundary of the edge agent.
//!
//! Filled by the site-energy issue: a `RegisterBus` trait over tokio-modbus (TCP and
//! RTU) with data-driven meter register maps, small meter capability traits, and
//! embedded-hal 1.0 digital I/O (contactor, e-stop / RCD input, status LED, watchdog).
//! Nothing here yet: the foundation issue only fixes the crate's place in the workspace.
