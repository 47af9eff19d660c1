//! [`PgConnector`] on tokio-postgres ([`PgSession`]), with the configured CA bundle for
//! verify-full TLS to RDS.

use async_trait::async_trait;

use super::PgSession;
use crate::error::Result;
use crate::ports::{PgConnector, Postgres};

pub struct TokioPgConnector {
    /// PEM bundle (e.g. the RDS global bundle) added to the web PKI roots.
    pub ca_bundle: Option<Vec<u8>>,
}

#[async_trait]
impl PgConnector for TokioPgConnector {
    async fn connect(&self, url: &str) -> Result<Box<dyn Postgres>> {
        let session = PgSession::connect(url, self.ca_bundle.as_deref()).await?;
        Ok(Box::new(session))
    }
}
