//! Simulators for tests, benchmarks and the demo.
