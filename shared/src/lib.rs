//! nbaops-shared: what every nbaops function stands on.
//!
//! - [`events`]: every delivery shape normalised into one model per source.
//! - [`config`]: typed settings, SPEC numbers as defaults, env + SSM overrides, validated at init.
//! - [`guard`]: the one pipeline every action passes, and the audit record it leaves.
//! - [`ports`] / [`adapters`] / [`fakes`]: the traits the domain uses, their SDK and in-memory implementations.
//! - [`alerts`]: the alert message and its publisher. [`telemetry`]: JSON logs, redaction, EMF metrics.
//! - [`fleet`]: the accounts and regions one deployment watches, and the origin of each record.
//! - [`runtime`]: the wiring every function's `main` shares. [`deadline`]: what a run may still start.

pub mod adapters;
pub mod alerts;
pub mod aws_operations;
pub mod clock;
pub mod config;
pub mod deadline;
pub mod error;
pub mod events;
#[cfg(any(test, feature = "fakes"))]
pub mod fakes;
pub mod fleet;
pub mod guard;
pub mod ports;
pub mod runtime;
pub mod sql;
pub mod telemetry;

pub use error::{NbaopsError, Result};
