//! [`PgConnector`] on tokio-postgres ([`PgSession`]) with nbaops's TLS policy ([`PgTls`]).

use async_trait::async_trait;

use super::{PgSession, PgTls};
use crate::config::pg::PgConfig;
use crate::config::Settings;
use crate::error::Result;
use crate::ports::{PgConnector, Postgres};

pub struct TokioPgConnector {
    pub tls: PgTls,
}

impl TokioPgConnector {
    /// The connector every PostgreSQL function builds at init: `pg.ca_bundle_path` (else the RDS
    /// roots compiled in) and `pg.plaintext_loopback`.
    pub fn from_settings(s: &Settings) -> Result<TokioPgConnector> {
        Ok(TokioPgConnector {
            tls: PgTls::from_settings(s)?,
        })
    }
}

/// What a function that opens sessions on `pg.databases` builds at init (pg-health,
/// vacuum-trigger, backup-guard): the `pg` section and the connector ([`TokioPgConnector`]).
pub fn pg_access(s: &Settings) -> Result<(PgConfig, Box<dyn PgConnector>)> {
    Ok((
        crate::config::pg::from_settings(s)?,
        Box::new(TokioPgConnector::from_settings(s)?),
    ))
}

#[async_trait]
impl PgConnector for TokioPgConnector {
    async fn connect(&self, url: &str, password: Option<&str>) -> Result<Box<dyn Postgres>> {
        let session = PgSession::connect(url, password, &self.tls).await?;
        Ok(Box::new(session))
    }
}
