//! The `nbaops` command as a library: the binary (main.rs) is its argument parsing only, and
//! `make bench` (tests/src/bench_replay.rs) measures the replay in-process.

pub mod account;
pub mod approve;
pub mod audit;
pub mod aws_operations;
pub mod config_cmd;
pub mod functions;
pub mod output;
pub mod overlay;
pub mod plan;
pub mod replay;
pub mod status;
