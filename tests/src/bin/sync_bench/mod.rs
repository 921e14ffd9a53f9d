//! The parts of `sync-bench` (see `sync-bench.rs` for what it measures).

pub mod backlog;
pub mod batches;
pub mod day;
pub mod decode;
pub mod flow;
pub mod hub;
pub mod load;
pub mod report;
