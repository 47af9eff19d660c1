//! Opening PostgreSQL sessions. A port of its own so that a refused connection ("too many
//! clients", a stopped server) is an ordinary `Err` the domain turns into a finding, and so that
//! tests can hand out fake sessions.

use async_trait::async_trait;

use super::Postgres;
use crate::error::Result;

#[async_trait]
pub trait PgConnector: Send + Sync {
    /// `url`: libpq-style, password included when there is one (never logged).
    async fn connect(&self, url: &str) -> Result<Box<dyn Postgres>>;
}
