//! PostgreSQL over tokio-postgres, reached as RDS serves it: TLS is required and the server's
//! certificate is verified against the RDS certificate authorities (compiled in from
//! `shared/certs/rds-ca-bundle.pem`, or `pg.ca_bundle_path`) with its host name checked. There is
//! no silent downgrade (tokio-postgres' default `prefer` would continue in plaintext when the
//! server offers no TLS): plaintext only to a loopback host, and only when `pg.plaintext_loopback`
//! says so.

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
        // "error connecting to server" alone hides why: the cause (e.g. "Connection refused
        // (os error 111)", a timeout, a DNS failure) is the error's source.
        None => match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    };
    NbaopsError::dependency("postgres", message)
}

/// The RDS root certificate authorities (source and expiry dates: `shared/certs/README.md`).
pub const RDS_CA_BUNDLE: &[u8] = include_bytes!("../../certs/rds-ca-bundle.pem");

/// nbaops's TLS policy for PostgreSQL, built once at init.
#[derive(Clone)]
pub struct PgTls {
    config: Arc<rustls::ClientConfig>,
    plaintext_loopback: bool,
    /// Certificates in the trust store, for the init log line.
    pub roots: usize,
}

impl PgTls {
    /// `ca_bundle_pem`: the PEM bundle to trust (None: the RDS roots compiled in). Nothing else
    /// is trusted: a server's certificate must chain to one of these.
    pub fn new(ca_bundle_pem: Option<&[u8]>, plaintext_loopback: bool) -> Result<PgTls> {
        let pem = ca_bundle_pem.unwrap_or(RDS_CA_BUNDLE);
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| NbaopsError::config(format!("CA bundle: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| NbaopsError::config(format!("CA bundle: {e}")))?;
        }
        if roots.is_empty() {
            return Err(NbaopsError::config(
                "CA bundle: no certificate in it (pg.ca_bundle_path must be a PEM file)",
            ));
        }
        let count = roots.len();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| NbaopsError::config(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(PgTls {
            config: Arc::new(config),
            plaintext_loopback,
            roots: count,
        })
    }

    /// From `pg.ca_bundle_path` (read at init; an unreadable file fails init) and
    /// `pg.plaintext_loopback`.
    pub fn from_settings(s: &crate::config::Settings) -> Result<PgTls> {
        let path = s.string("pg.ca_bundle_path");
        let bundle = if path.is_empty() {
            None
        } else {
            Some(std::fs::read(&path).map_err(|e| {
                NbaopsError::config(format!("pg.ca_bundle_path: cannot read {path}: {e}"))
            })?)
        };
        PgTls::new(bundle.as_deref(), s.boolean("pg.plaintext_loopback")?)
    }
}

/// How one connection goes: plaintext (loopback, allowed by config) or TLS verified.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transport {
    Plaintext,
    VerifiedTls,
}

/// The transport for a parsed URL under the policy, or why the URL is refused.
pub fn transport(config: &tokio_postgres::Config, plaintext_loopback: bool) -> Result<Transport> {
    use tokio_postgres::config::{Host, SslMode};
    let loopback = !config.get_hosts().is_empty()
        && config.get_hosts().iter().all(|h| match h {
            Host::Tcp(h) => h == "127.0.0.1" || h == "localhost" || h == "::1",
            #[cfg(unix)]
            Host::Unix(_) => true,
        });
    match config.get_ssl_mode() {
        SslMode::Disable if !loopback => Err(NbaopsError::config(format!(
            "sslmode=disable to {}: nbaops reaches a non-loopback PostgreSQL only over verified TLS",
            hosts(config)
        ))),
        SslMode::Require => Ok(Transport::VerifiedTls),
        _ if loopback && plaintext_loopback => Ok(Transport::Plaintext),
        SslMode::Disable => Err(NbaopsError::config(format!(
            "sslmode=disable to {}: plaintext even to a loopback host needs pg.plaintext_loopback = true",
            hosts(config)
        ))),
        _ => Ok(Transport::VerifiedTls),
    }
}

fn hosts(config: &tokio_postgres::Config) -> String {
    config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A TLS failure in the operator's words: which promise the server broke.
fn tls_err(e: tokio_postgres::Error, config: &tokio_postgres::Config) -> NbaopsError {
    let text = e.to_string();
    let source = std::error::Error::source(&e)
        .map(|s| s.to_string())
        .unwrap_or_default();
    let all = format!("{text}: {source}");
    let why = if all.contains("server does not support TLS") {
        "the server offers no TLS; nbaops does not fall back to plaintext".to_string()
    } else if all.contains("NotValidForName") || all.contains("not valid for name") {
        format!(
            "the server's certificate is not valid for the host name {}",
            hosts(config)
        )
    } else if all.contains("UnknownIssuer") || all.contains("invalid peer certificate") {
        format!("the server's certificate is not signed by a trusted CA (the RDS bundle or pg.ca_bundle_path): {source}")
    } else {
        return pg_err(e);
    };
    NbaopsError::dependency("postgres", format!("TLS to {}: {why}", hosts(config)))
}

impl PgSession {
    /// `url` is a libpq-style URL without a password; `password` goes to the driver apart.
    /// Verified TLS unless [`transport`] allows plaintext.
    pub async fn connect(url: &str, password: Option<&str>, tls: &PgTls) -> Result<PgSession> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| NbaopsError::config(format!("PostgreSQL URL: {e}")))?;
        if crate::config::pg::url_carries_password(url) {
            return Err(NbaopsError::config(
                "PostgreSQL URL carries a password: passwords come from SSM SecureString only",
            ));
        }
        if let Some(pw) = password {
            config.password(pw);
        }
        let notices = Arc::new(Mutex::new(Vec::new()));
        let client = match transport(&config, tls.plaintext_loopback)? {
            Transport::Plaintext => {
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                let (client, conn) = config.connect(NoTls).await.map_err(pg_err)?;
                tokio::spawn(drive(conn, notices.clone()));
                client
            }
            Transport::VerifiedTls => {
                // Require: a server without TLS is an error, never a plaintext session.
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                let make = tokio_postgres_rustls::MakeRustlsConnect::new((*tls.config).clone());
                let (client, conn) = config
                    .connect(make)
                    .await
                    .map_err(|e| tls_err(e, &config))?;
                tokio::spawn(drive(conn, notices.clone()));
                client
            }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tls_tests {
    use super::*;

    fn t(url: &str, loopback_ok: bool) -> Result<Transport> {
        transport(&url.parse().unwrap(), loopback_ok)
    }

    #[test]
    fn rds_bundle_parses_and_is_current() {
        let tls = PgTls::new(None, false).unwrap();
        assert!(tls.roots >= 80, "{}", tls.roots);
        // Every certificate in the file made it into the store (expiry: infra/tests/check_ca_bundle.sh).
        let text = String::from_utf8_lossy(RDS_CA_BUNDLE);
        assert_eq!(text.matches("BEGIN CERTIFICATE").count(), tls.roots);
    }

    #[test]
    fn non_loopback_hosts_always_get_verified_tls() {
        for url in [
            "postgres://mon@db.abc.us-east-1.rds.amazonaws.com:5432/app",
            "postgres://mon@db.abc.us-east-1.rds.amazonaws.com:5432/app?sslmode=prefer",
            "postgres://mon@db.abc.us-east-1.rds.amazonaws.com:5432/app?sslmode=require",
            "postgres://mon@db.nbaops.test:5432/app?hostaddr=127.0.0.1",
        ] {
            assert_eq!(t(url, true).unwrap(), Transport::VerifiedTls, "{url}");
        }
        let e = t("postgres://mon@db.example.com/app?sslmode=disable", true).unwrap_err();
        assert!(e.to_string().contains("db.example.com"), "{e}");
    }

    #[test]
    fn loopback_is_plaintext_only_when_config_says_so() {
        assert_eq!(
            t("postgres://u@127.0.0.1:5432/app", false).unwrap(),
            Transport::VerifiedTls
        );
        assert_eq!(
            t("postgres://u@127.0.0.1:5432/app", true).unwrap(),
            Transport::Plaintext
        );
        assert_eq!(
            t("postgres://u@localhost/app?sslmode=require", true).unwrap(),
            Transport::VerifiedTls
        );
        assert!(t("postgres://u@localhost/app?sslmode=disable", false).is_err());
    }

    #[test]
    fn an_empty_or_broken_bundle_fails_init() {
        assert!(PgTls::new(Some(b"not a pem"), false).is_err());
    }

    #[tokio::test]
    async fn a_password_in_the_url_is_refused() {
        let tls = PgTls::new(None, true).unwrap();
        let e = PgSession::connect("postgres://u:secret@127.0.0.1:1/app", None, &tls)
            .await
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("carries a password") && !e.to_string().contains("secret"),
            "{e}"
        );
    }
}
