//! Opening PostgreSQL sessions. A port of its own so that a refused connection ("too many
//! clients", a stopped server) is an ordinary `Err` the domain turns into a finding, and so that
//! tests can hand out fake sessions.

use async_trait::async_trait;

use super::Postgres;
use crate::error::Result;

#[async_trait]
pub trait PgConnector: Send + Sync {
    /// `url`: libpq-style, without a password; `password` (from a SecureString, never logged)
    /// is handed to the driver apart, so no URL ever carries it.
    async fn connect(&self, url: &str, password: Option<&str>) -> Result<Box<dyn Postgres>>;
}
