//! The tariff engine before its fast path, kept as a slow, straightforward reference: the
//! property tests check that `Pricer` returns bit-for-bit the same decimals (value *and* scale).
#![allow(dead_code, clippy::all)]

mod compiled;
mod engine;

pub use compiled::RefTariff;
pub use engine::RefPricer;
