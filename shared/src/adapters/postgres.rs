//! PostgreSQL over tokio-postgres. TLS with rustls (system web PKI roots plus an optional CA
//! bundle such as the RDS global bundle); plain TCP only for loopback or `sslmode=disable`.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::{Map, Number, Value};
use tokio_postgres::types::Type;
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls, Row};

use crate::error::{NbaopsError, Result};
use crate::ports::Postgres;

pub struct PgSession {
    client: Client,
    /// NOTICE/WARNING messages the server sent on this session, oldest first (bounded).
    notices: Arc<Mutex<Vec<String>>>,
}

/// At most this many notices are kept between two `take_notices` calls.
const MAX_NOTICES: usize = 1000;

/// Drives the connection and keeps what the server says on the side: a VACUUM the role may not
/// run "succeeds" with `WARNING: skipping ...`, which only arrives as an asynchronous notice.
async fn drive<S, T>(mut conn: Connection<S, T>, notices: Arc<Mutex<Vec<String>>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notice(n))) => {
                let text = format!("{}: {}", n.severity(), n.message());
                tracing::debug!(notice = %text, "postgres notice");
                if let Ok(mut v) = notices.lock() {
                    if v.len() < MAX_NOTICES {
                        v.push(text);
                    }
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::warn!(error = %e, "postgres connection closed");
                break;
            }
            None => break,
        }
    }
}

fn pg_err(e: tokio_postgres::Error) -> NbaopsError {
    // The server's message (e.g. "too many clients already") is what the operator needs.
    let message = match e.as_db_error() {
        Some(db) => format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        None => e.to_string(),
    };
    NbaopsError::dependency("postgres", message)
}

fn tls_config(ca_bundle_pem: Option<&[u8]>) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = ca_bundle_pem {
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| NbaopsError::config(format!("CA bundle: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| NbaopsError::config(format!("CA bundle: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| NbaopsError::config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl PgSession {
    /// `url` is a libpq-style URL; TLS unless the host is loopback or the URL says sslmode=disable.
    pub async fn connect(url: &str, ca_bundle_pem: Option<&[u8]>) -> Result<PgSession> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| NbaopsError::config(format!("PostgreSQL URL: {e}")))?;
        let loopback = config.get_hosts().iter().all(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => {
                h == "127.0.0.1" || h == "localhost" || h == "::1"
            }
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(_) => true,
        });
        let plain = loopback || config.get_ssl_mode() == tokio_postgres::config::SslMode::Disable;
        let notices = Arc::new(Mutex::new(Vec::new()));
        let client = if plain {
            let (client, conn) = config.connect(NoTls).await.map_err(pg_err)?;
            tokio::spawn(drive(conn, notices.clone()));
            client
        } else {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(ca_bundle_pem)?);
            let (client, conn) = config.connect(tls).await.map_err(pg_err)?;
            tokio::spawn(drive(conn, notices.clone()));
            client
        };
        Ok(PgSession { client, notices })
    }
}

fn cell(row: &Row, i: usize) -> Value {
    let ty = row.columns()[i].type_().clone();
    macro_rules! get {
        ($t:ty) => {
            row.try_get::<_, Option<$t>>(i).ok().flatten()
        };
    }
    match ty {
        Type::BOOL => get!(bool).map(Value::Bool),
        Type::INT2 => get!(i16).map(Value::from),
        Type::INT4 => get!(i32).map(Value::from),
        Type::INT8 => get!(i64).map(Value::from),
        Type::OID => get!(u32).map(Value::from),
        Type::FLOAT4 => get!(f32)
            .and_then(|v| Number::from_f64(v as f64))
            .map(Value::Number),
        Type::FLOAT8 => get!(f64).and_then(Number::from_f64).map(Value::Number),
        Type::JSON | Type::JSONB => get!(Value),
        Type::TIMESTAMPTZ => {
            get!(chrono::DateTime<chrono::Utc>).map(|t| Value::String(t.to_rfc3339()))
        }
        Type::TIMESTAMP => get!(chrono::NaiveDateTime).map(|t| Value::String(t.to_string())),
        _ => get!(String).map(Value::String),
    }
    .unwrap_or(Value::Null)
}

#[async_trait]
impl Postgres for PgSession {
    async fn query(&self, sql: &str) -> Result<Vec<Map<String, Value>>> {
        let rows = self.client.query(sql, &[]).await.map_err(pg_err)?;
        Ok(rows
            .iter()
            .map(|r| {
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_string(), cell(r, i)))
                    .collect()
            })
            .collect())
    }

    async fn execute(&self, sql: &str) -> Result<u64> {
        self.client.execute(sql, &[]).await.map_err(pg_err)
    }

    fn take_notices(&self) -> Vec<String> {
        self.notices
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}
