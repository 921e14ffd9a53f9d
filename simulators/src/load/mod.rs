//! Load generation for the `ocpp-load` benchmark: a lean many-connection OCPP client
//! ([`client`]), the bare echo server used as baseline ([`echo`]), process probes and
//! latency statistics ([`stats`], [`process`]) and the benchmark itself ([`bench`](mod@bench)).
//!
//! ```no_run
//! use simulators::load::client::{self, LoadConfig};
//! use std::time::Duration;
//!
//! # async fn demo() {
//! let mut report = client::run(LoadConfig::new("ws://127.0.0.1:9000/ocpp", 100, Duration::from_secs(30))).await;
//! println!("{:.0} CALLs/s, p99 {:?}", report.rate(), report.latencies.quantile(0.99));
//! # }
//! ```

pub mod bench;
pub mod client;
pub mod echo;
pub mod process;
pub mod stats;
