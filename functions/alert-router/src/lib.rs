//! alert-router as a library too, so the end-to-end tests can sign acknowledgement links.

pub mod aws_operations;
pub mod channels;
pub mod handler;
pub mod link;
pub mod plan;
