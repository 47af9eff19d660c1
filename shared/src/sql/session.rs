//! Opening a PostgreSQL session the way every function does: the role's password from SSM
//! (SecureString, registered for redaction), the URL of the role, TLS through the connector built
//! at init ([`crate::adapters::pg_access`]), then the session settings (timeouts, application
//! name, read-only for the monitor). A refused connection names the database and the role.

use crate::config::pg::{PgConfig, PgTarget};
use crate::error::Result;
use crate::ports::{PgConnector, Postgres};

use super::quote_literal;

/// Statements that set up a session before any query: timeouts, a name the DBA recognises,
/// and (for the monitor) read-only so a bug can never write.
pub fn session_setup(
    application: &str,
    statement_timeout_ms: u64,
    lock_timeout_ms: u64,
    read_only: bool,
) -> Vec<String> {
    let mut v = vec![
        format!("SET statement_timeout = {statement_timeout_ms}"),
        format!("SET lock_timeout = {lock_timeout_ms}"),
        format!("SET application_name = {}", quote_literal(application)),
        // An abandoned session of ours must never hold the xmin horizon back.
        "SET idle_in_transaction_session_timeout = 60000".to_string(),
        // Catalog queries over 10,000 tables cross jit_above_cost, and compiling them costs
        // more than running them (measured: 1 s vs 0.1 s for the table scan).
        "SET jit = off".to_string(),
        // Pinned: built-ins first so no object in a writable schema can shadow them; public
        // for the extensions (pg_stat_statements, pgstattuple) RDS creates there; pg_temp last
        // (it is searched first unless named).
        "SET search_path = pg_catalog, public, pg_temp".to_string(),
    ];
    if read_only {
        v.push("SET default_transaction_read_only = on".to_string());
    }
    v
}

/// Throttling of our own VACUUMs (flexible-freeze style).
pub fn vacuum_cost(delay_ms: u64, limit: u64) -> Vec<String> {
    vec![
        format!("SET vacuum_cost_delay = {delay_ms}"),
        format!("SET vacuum_cost_limit = {limit}"),
    ]
}

/// A URL with a connect timeout added (unless it has one). Passwords never go into URLs: the
/// connector takes them apart ([`crate::ports::PgConnector::connect`]).
pub fn with_connect_timeout(url: &str, timeout_seconds: u64) -> String {
    if url.contains("connect_timeout=") {
        return url.to_string();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}connect_timeout={timeout_seconds}")
}

/// Opens a session on `target` as `role` ("monitor" or "maintenance"): the password from the
/// SecureString `/nbaops/<env>/secrets/pg/<name>/<role>` when the URL has none (registered for
/// redaction before anything can log it), then the session settings. The invocation's context
/// gives the environment and SSM; `cfg` and `connector` are what the function built at init
/// ([`crate::adapters::pg_access`]).
pub async fn open_session(
    ctx: &crate::runtime::Ctx<'_>,
    cfg: &PgConfig,
    connector: &dyn PgConnector,
    target: &PgTarget,
    role: &str,
    setup: &[String],
) -> Result<Box<dyn Postgres>> {
    let password = match ctx.deps.params.as_deref() {
        Some(p) => {
            p.get(&PgConfig::secret_name(&ctx.env(), target, role))
                .await?
        }
        None => None,
    };
    if let Some(pw) = &password {
        crate::telemetry::register_secret(pw);
    }
    let url = cfg.connect_url(target, role);
    let user = url_user(&url);
    let session = connector
        .connect(&url, password.as_deref())
        .await
        .map_err(|e| named(e, &target.name, &format!("{role} role ({user})")))?;
    for stmt in setup {
        session.execute(stmt).await?;
    }
    Ok(session)
}

/// The user of a `postgres://user@host/db` URL (percent-encoding left as is), for messages.
pub(super) fn url_user(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    match rest.split_once('@') {
        Some((user, _)) => user.split(':').next().unwrap_or(user).to_string(),
        None => "the URL's default user".to_string(),
    }
}

/// A refused connection says which database and which role (a role's connection limit, a
/// wrong password), never the password.
pub(super) fn named(e: crate::NbaopsError, db: &str, role: &str) -> crate::NbaopsError {
    let full = e.to_string();
    let text = full.strip_prefix("postgres failed: ").unwrap_or(&full);
    let hint = if text.contains("too many connections for role") {
        " (the role's CONNECTION LIMIT in infra/sql is reached)"
    } else if text.contains("remaining connection slots are reserved")
        || text.contains("too many clients")
    {
        " (the server's max_connections is reached)"
    } else {
        ""
    };
    crate::NbaopsError::dependency(
        "postgres",
        format!("database '{db}' as the {role}: {text}{hint}"),
    )
}
