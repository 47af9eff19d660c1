//! `make bench`, PostgreSQL part: one full pg-health scan of a database shaped like
//! check_postgres's own benchmark, through the release binary, over TLS, as `nbaops_monitor`
//! (p50/p95 of `ScanMillis`; the scan must produce the expected findings and skip no check);
//! then the bloat estimate against ground truth (each table's size before and after
//! `VACUUM FULL`). [`estimate_vs_vacuum_full`] is also what `tests/tests/e2e_bloat_accuracy.rs`
//! asserts on a few smaller tables, so a regression in the estimate fails `make test`.

use std::collections::BTreeMap;

use crate::postgres::Postgres;
use crate::HarnessError;
use nbaops_shared::sql::{self, BloatEstimate, TableStats};

fn pg_err(e: tokio_postgres::Error) -> HarnessError {
    let detail = e
        .as_db_error()
        .map(|d| format!("{}: {}", d.severity(), d.message()))
        .unwrap_or_else(|| e.to_string());
    HarnessError::Setup(format!("bench PostgreSQL: {detail}"))
}

fn setup_err(e: impl std::fmt::Display) -> HarnessError {
    HarnessError::Setup(e.to_string())
}

/// The `pg` section with its defaults (the thresholds pg-health runs with), plus `overrides`
/// (`NBAOPS_PG__...` variables).
pub fn pg_config(
    overrides: &[(&str, &str)],
) -> Result<nbaops_shared::config::pg::PgConfig, HarnessError> {
    let vars: BTreeMap<String, String> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let settings =
        nbaops_shared::config::layer(nbaops_shared::config::Env::Dev, &vars, &Default::default())
            .map_err(setup_err)?;
    nbaops_shared::config::pg::from_settings(&settings).map_err(setup_err)
}

/// A superuser session (loopback, as the harness sets the cluster up) for set-up statements.
pub async fn superuser(pg: &Postgres, db: &str) -> Result<tokio_postgres::Client, HarnessError> {
    let (client, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={} user=postgres dbname={db}", pg.port),
        tokio_postgres::NoTls,
    )
    .await
    .map_err(pg_err)?;
    tokio::spawn(conn);
    Ok(client)
}

/// One table's bloat estimate next to the truth.
#[derive(Debug, Clone)]
pub struct Accuracy {
    pub table: String,
    pub estimate: BloatEstimate,
    /// `100 * (1 - size after VACUUM FULL / size before)`: the share of the heap a rewrite
    /// (at the table's fillfactor) gives back — what "bloat" promises to be.
    pub truth: f64,
    pub bytes_before: i64,
    pub bytes_after: i64,
}

impl Accuracy {
    /// Absolute error in percentage points, when the estimate gave a number.
    pub fn error(&self) -> Option<f64> {
        self.estimate.percent().map(|p| (p - self.truth).abs())
    }
}

/// For each `schema.table` of `names` (already filled, deleted from, vacuumed or not, and
/// ANALYZEd): the estimate exactly as nbaops computes it (`sql::tables` read over TLS through the
/// shared session adapter, then `sql::bloat_estimate` with the default `pg` config), then the
/// truth: the heap's size (`pg_relation_size`, main fork) before and after `VACUUM FULL`. The
/// tables are rewritten: call it last. The session is the cluster's superuser, which reads every
/// table's `pg_stats` (a `pg_monitor`-only role reads none: its estimates are "unreliable").
pub async fn estimate_vs_vacuum_full(
    pg: &Postgres,
    db: &str,
    names: &[String],
) -> Result<Vec<Accuracy>, HarnessError> {
    use nbaops_shared::ports::Postgres as _;
    let cfg = pg_config(&[])?;
    let client = superuser(pg, db).await?;
    let version = client
        .query_one("select current_setting('server_version_num')::int8", &[])
        .await
        .map_err(pg_err)?
        .get::<_, i64>(0);
    let session = nbaops_shared::adapters::PgSession::connect(
        &pg.url(db),
        None,
        &nbaops_shared::adapters::PgTls::new(
            Some(&std::fs::read(crate::postgres::tls_dir().join("ca.pem"))?),
            false,
        )
        .map_err(setup_err)?,
    )
    .await
    .map_err(setup_err)?;
    let rows = session
        .query(&sql::tables(sql::PgVersion(version), cfg.bloat_min_bytes))
        .await
        .map_err(setup_err)?;
    let stats: BTreeMap<String, TableStats> = rows
        .iter()
        .map(TableStats::from_row)
        .map(|t| (t.name(), t))
        .collect();
    // Judged on the server's clock, as pg-health does.
    let epoch_ms: i64 = client
        .query_one("select (extract(epoch from now()) * 1000)::int8", &[])
        .await
        .map_err(pg_err)?
        .get(0);
    let now = chrono::DateTime::from_timestamp_millis(epoch_ms)
        .ok_or_else(|| HarnessError::Setup(format!("server clock {epoch_ms}")))?;
    let mut out = vec![];
    for name in names {
        let t = stats
            .get(name)
            .ok_or_else(|| HarnessError::Setup(format!("{name}: not in sql::tables")))?;
        let estimate = sql::bloat_estimate(t, &cfg, now);
        let size = format!("select pg_relation_size({})::int8", t.oid);
        let before: i64 = client.query_one(&size, &[]).await.map_err(pg_err)?.get(0);
        client
            .batch_execute(&format!(
                "vacuum full {}",
                sql::qualified(&t.schema, &t.table)
            ))
            .await
            .map_err(pg_err)?;
        let after: i64 = client.query_one(&size, &[]).await.map_err(pg_err)?.get(0);
        out.push(Accuracy {
            table: name.clone(),
            estimate,
            truth: 100.0 * (1.0 - after as f64 / before.max(1) as f64),
            bytes_before: before,
            bytes_after: after,
        });
    }
    Ok(out)
}
