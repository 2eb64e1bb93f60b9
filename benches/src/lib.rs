//! Benchmarks for eventide, and the baselines they are measured against.
//!
//! The criterion benches live in `benches/benches/`; this library holds the
//! comparison structures they share, each written to be a fair, competent
//! version of what other event loops use, so that a ratio against it means
//! something.

pub mod heap;
pub mod mutex_pool;
pub mod timer_work;
