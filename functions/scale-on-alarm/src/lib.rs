//! scale-on-alarm as a library too, so the benchmark can time parse + plan in-process.

pub mod aws_operations;
pub mod cache_memory;
pub mod calendar;
pub mod gamenight;
pub mod handler;
pub mod offpeak;
pub mod plan;
pub mod recheck;
pub mod thresholds;
