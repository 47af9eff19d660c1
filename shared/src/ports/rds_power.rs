//! Stopping and starting RDS instances (non-production cost containment). A trait of its own so
//! the existing `Rds` port stays as it is.

use async_trait::async_trait;

use crate::error::Result;

#[async_trait]
pub trait RdsPower: Send + Sync {
    /// Stops an `available` instance (AWS starts it again by itself after 7 days).
    async fn stop_instance(&self, id: &str) -> Result<()>;
    async fn start_instance(&self, id: &str) -> Result<()>;
}
