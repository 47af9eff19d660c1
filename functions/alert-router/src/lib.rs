//! alert-router as a library too, so the end-to-end tests can sign acknowledgement links.
//!
//! `router` sets it up and routes what arrives; `alerts_topic` reads the alerts topic's records,
//! `firing` handles an alert or alarm, `ack` the acknowledgement endpoint, `approval` the
//! Approve/Deny links (issue #19), `escalation` the sweep;
//! `incidents` is the store, `delivery` the sends, `channels` what each channel receives, `plan`
//! the pure decisions, `link` the signed links.

pub mod ack;
pub mod alerts_topic;
pub mod approval;
pub mod aws_operations;
pub mod channels;
pub mod delivery;
pub mod escalation;
pub mod firing;
#[cfg(test)]
mod incident_rules_tests;
pub mod incidents;
pub mod link;
pub mod plan;
pub mod router;
#[cfg(test)]
mod test_world;
