//! The replay as a library, for `make bench` (tests/src/bench.rs), which measures it in-process.
//! The `nbaops` binary compiles the same files as its own modules (main.rs).

pub mod functions;
pub mod output;
pub mod replay;
