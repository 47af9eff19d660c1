//! Verifying the new primary after a failover: the instance is `available`, a session opens on
//! the endpoint, `pg_is_in_recovery()` is false, a write succeeds, read replicas stream again.
//!
//! The write is the only change nbaops makes here, and it is harmless by construction: one row
//! (`source = 'failover-notify'`) upserted into a heartbeat table of its own, created if missing.
//! [`probe`] observes through the ports; [`judge`] is the pure verdict.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use nbaops_shared::config::failover::{FailoverConfig, VerifyConfig};
use nbaops_shared::ports::{Params, PgConnector, Postgres, Rds};
use nbaops_shared::sql::{self, bool_of, quote_ident, quote_literal, str_of};

/// One check of the verification, as the notification shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub passed: bool,
    /// `host:port/database` (never credentials).
    pub target: String,
    pub checks: Vec<Check>,
    pub attempts: u32,
    pub at: DateTime<Utc>,
    /// The heartbeat row was written (the only change this function makes).
    pub wrote_heartbeat: bool,
}

impl Verification {
    /// "available, connected, not in recovery, write ok, 1/1 replica streaming" or the failures.
    pub fn words(&self) -> String {
        let failed: Vec<String> = self
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        if failed.is_empty() {
            format!(
                "verification passed ({})",
                self.checks
                    .iter()
                    .map(|c| c.detail.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            format!("verification FAILED ({})", failed.join("; "))
        }
    }
}

/// What the probe saw. `None` = not looked at (and why is in the verdict).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// `Some(Ok(Some(status)))` from DescribeDBInstances; `Ok(None)` = no such instance;
    /// `None` = not checked (a cluster id: the port describes instances only).
    pub instance_status: Option<Result<Option<String>, String>>,
    pub target: String,
    pub connect: Option<Result<(), String>>,
    pub in_recovery: Option<Result<bool, String>>,
    /// `None` = skipped (disabled, or the server is read-only anyway).
    pub write: Option<Result<(), String>>,
    /// (application_name, state) of pg_stat_replication.
    pub replicas: Option<Result<Vec<(String, String)>, String>>,
}

/// The pure verdict on one observation.
pub fn judge(obs: &Observation, cfg: &VerifyConfig, expected_replicas: u32) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut push = |name: &str, passed: bool, detail: String| {
        checks.push(Check {
            name: name.into(),
            passed,
            detail,
        })
    };
    match &obs.instance_status {
        None => {}
        Some(Ok(Some(s))) => push("instance", s == "available", format!("instance {s}")),
        Some(Ok(None)) => push("instance", false, "instance not found".into()),
        Some(Err(e)) => push("instance", false, format!("describe failed: {e}")),
    }
    match &obs.connect {
        Some(Ok(())) => push("connect", true, format!("connected to {}", obs.target)),
        Some(Err(e)) => push(
            "connect",
            false,
            format!("cannot connect to {}: {e}", obs.target),
        ),
        None => push(
            "connect",
            false,
            format!("no endpoint to connect to ({})", obs.target),
        ),
    }
    match &obs.in_recovery {
        Some(Ok(false)) => push("primary", true, "not in recovery".into()),
        Some(Ok(true)) => push(
            "primary",
            false,
            "pg_is_in_recovery() is true: still a read-only standby".into(),
        ),
        Some(Err(e)) => push("primary", false, format!("pg_is_in_recovery() failed: {e}")),
        None => {}
    }
    match &obs.write {
        Some(Ok(())) => push("write", true, "heartbeat write ok".into()),
        Some(Err(e)) => push("write", false, format!("heartbeat write failed: {e}")),
        None if cfg.write && obs.in_recovery == Some(Ok(false)) => {
            push("write", false, "heartbeat write not attempted".into())
        }
        None => {}
    }
    match &obs.replicas {
        Some(Ok(list)) => {
            let streaming = list.iter().filter(|(_, s)| s == "streaming").count() as u32;
            let others: Vec<String> = list
                .iter()
                .filter(|(_, s)| s != "streaming")
                .map(|(n, s)| format!("{n} {s}"))
                .collect();
            let mut detail = format!("{streaming}/{expected_replicas} replica(s) streaming");
            if !others.is_empty() {
                detail.push_str(&format!(" (not streaming: {})", others.join(", ")));
            }
            push("replicas", streaming >= expected_replicas, detail);
        }
        Some(Err(e)) => push(
            "replicas",
            expected_replicas == 0,
            format!("pg_stat_replication unreadable: {e}"),
        ),
        None => {}
    }
    checks
}

/// `host:port/db` of a URL, for reports.
pub fn describe_target(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let rest = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
    rest.split('?').next().unwrap_or(rest).to_string()
}

pub struct Ports<'a> {
    pub rds: &'a dyn Rds,
    pub connector: &'a dyn PgConnector,
    pub params: Option<&'a dyn Params>,
    pub env: &'a str,
}

const HEARTBEAT_SOURCE: &str = "failover-notify";

async fn heartbeat(pg: &dyn Postgres, table: &str, note: &str) -> Result<(), String> {
    let table = format!("public.{}", quote_ident(table));
    let upsert = format!(
        "INSERT INTO {table} (source, beat_at, note) VALUES ({}, now(), {}) \
         ON CONFLICT (source) DO UPDATE SET beat_at = EXCLUDED.beat_at, note = EXCLUDED.note",
        quote_literal(HEARTBEAT_SOURCE),
        quote_literal(note)
    );
    match pg.execute(&upsert).await {
        Ok(_) => Ok(()),
        // Created only when missing: CREATE needs a privilege an existing table does not.
        Err(e) if e.to_string().contains("42P01") => {
            pg.execute(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (source text PRIMARY KEY, \
                 beat_at timestamptz NOT NULL, note text)"
            ))
            .await
            .map_err(|e| e.to_string())?;
            pg.execute(&upsert)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Observes the database once. Never fails: every error is part of the observation.
pub async fn probe(
    db: &str,
    is_cluster: bool,
    note: &str,
    cfg: &FailoverConfig,
    ports: &Ports<'_>,
) -> Observation {
    let v = &cfg.verify;
    let mut obs = Observation::default();
    let mut endpoint = None;
    if !is_cluster {
        let described = ports.rds.describe_instance(db).await;
        if let Ok(Some(i)) = &described {
            endpoint = i.endpoint.clone();
        }
        obs.instance_status = Some(
            described
                .map(|o| o.map(|i| i.status))
                .map_err(|e| e.to_string()),
        );
    }
    let base = match (v.urls.get(db), endpoint) {
        (Some(url), _) => url.clone(),
        (None, Some((host, port))) => {
            format!(
                "postgres://{}@{host}:{port}/{}",
                nbaops_shared::config::pg::encode_userinfo(&v.user),
                v.database
            )
        }
        (None, None) => {
            obs.target = format!("no endpoint for {db}; set failover.verify.urls");
            return obs;
        }
    };
    obs.target = describe_target(&base);
    let password = match ports.params {
        Some(p) => match p.get(&FailoverConfig::secret_name(ports.env, db)).await {
            Ok(pw) => pw,
            Err(e) => {
                obs.connect = Some(Err(format!("password lookup failed: {e}")));
                return obs;
            }
        },
        None => None,
    };
    if let Some(pw) = &password {
        nbaops_shared::telemetry::register_secret(pw);
    }
    let url = sql::with_connect_timeout(&base, v.connect_timeout_seconds);
    let session = match ports.connector.connect(&url, password.as_deref()).await {
        Ok(s) => s,
        Err(e) => {
            obs.connect = Some(Err(e.to_string()));
            return obs;
        }
    };
    let pg = session.as_ref();
    let setup = sql::session_setup(
        "nbaops-failover-notify",
        v.statement_timeout_ms,
        v.statement_timeout_ms,
        false,
    );
    for stmt in &setup {
        if let Err(e) = pg.execute(stmt).await {
            obs.connect = Some(Err(format!("session setup failed: {e}")));
            return obs;
        }
    }
    obs.connect = Some(Ok(()));
    let recovery = pg
        .query("SELECT pg_is_in_recovery() AS in_recovery")
        .await
        .map(|rows| rows.first().is_some_and(|r| bool_of(r, "in_recovery")))
        .map_err(|e| e.to_string());
    let writable = recovery == Ok(false);
    obs.in_recovery = Some(recovery);
    if v.write && writable {
        obs.write = Some(heartbeat(pg, &v.heartbeat_table, note).await);
    }
    obs.replicas = Some(
        pg.query(
            "SELECT application_name::text AS name, state::text AS state FROM pg_stat_replication",
        )
        .await
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    (
                        str_of(r, "name").unwrap_or_default(),
                        str_of(r, "state").unwrap_or_default(),
                    )
                })
                .collect()
        })
        .map_err(|e| e.to_string()),
    );
    obs
}

/// Probes until the verdict passes or the attempts run out (just after a failover the DNS name
/// may still lead to the old primary).
pub async fn verify(
    db: &str,
    is_cluster: bool,
    note: &str,
    cfg: &FailoverConfig,
    ports: &Ports<'_>,
    now: DateTime<Utc>,
) -> Verification {
    let expected = cfg.verify.expected_replicas.get(db).copied().unwrap_or(0);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let obs = probe(db, is_cluster, note, cfg, ports).await;
        let checks = judge(&obs, &cfg.verify, expected);
        let passed = checks.iter().all(|c| c.passed);
        if passed || attempt >= cfg.verify.attempts {
            return Verification {
                passed,
                target: obs.target.clone(),
                checks,
                attempts: attempt,
                at: now,
                wrote_heartbeat: obs.write == Some(Ok(())),
            };
        }
        tokio::time::sleep(Duration::from_secs(cfg.verify.retry_seconds)).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn cfg() -> VerifyConfig {
        let s = nbaops_shared::config::layer(
            nbaops_shared::config::Env::Dev,
            &Default::default(),
            &Default::default(),
        )
        .unwrap();
        nbaops_shared::config::failover::from_settings(&s)
            .unwrap()
            .verify
    }

    fn healthy() -> Observation {
        Observation {
            instance_status: Some(Ok(Some("available".into()))),
            target: "h:5432/postgres".into(),
            connect: Some(Ok(())),
            in_recovery: Some(Ok(false)),
            write: Some(Ok(())),
            replicas: Some(Ok(vec![("r1".into(), "streaming".into())])),
        }
    }

    fn failed(checks: &[Check]) -> Vec<&str> {
        checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name.as_str())
            .collect()
    }

    #[test]
    fn a_healthy_primary_passes() {
        let c = judge(&healthy(), &cfg(), 1);
        assert!(failed(&c).is_empty(), "{c:?}");
        assert_eq!(c.len(), 5);
    }

    #[test]
    fn each_failure_is_named() {
        let mut o = healthy();
        o.instance_status = Some(Ok(Some("rebooting".into())));
        assert_eq!(failed(&judge(&o, &cfg(), 1)), vec!["instance"]);
        let mut o = healthy();
        o.in_recovery = Some(Ok(true));
        o.write = None;
        assert_eq!(failed(&judge(&o, &cfg(), 1)), vec!["primary"]);
        let mut o = healthy();
        o.write = Some(Err("read-only transaction".into()));
        assert_eq!(failed(&judge(&o, &cfg(), 1)), vec!["write"]);
        let mut o = healthy();
        o.replicas = Some(Ok(vec![("r1".into(), "catchup".into())]));
        let c = judge(&o, &cfg(), 1);
        assert_eq!(failed(&c), vec!["replicas"]);
        assert!(c[4].detail.contains("r1 catchup"), "{c:?}");
        // No replica expected: none visible is fine.
        o.replicas = Some(Ok(vec![]));
        assert!(failed(&judge(&o, &cfg(), 0)).is_empty());
        let o = Observation {
            instance_status: Some(Ok(Some("available".into()))),
            target: "h:1/p".into(),
            connect: Some(Err("Connection refused".into())),
            ..Default::default()
        };
        assert_eq!(failed(&judge(&o, &cfg(), 0)), vec!["connect"]);
        // A writable primary whose write was never tried is not a pass.
        let mut o = healthy();
        o.write = None;
        assert_eq!(failed(&judge(&o, &cfg(), 1)), vec!["write"]);
    }

    #[test]
    fn urls_get_a_timeout_and_reports_hide_credentials() {
        assert_eq!(
            sql::with_connect_timeout("postgres://u@h:5432/db", 5),
            "postgres://u@h:5432/db?connect_timeout=5"
        );
        assert_eq!(
            sql::with_connect_timeout("postgres://u@h/db?sslmode=require", 3),
            "postgres://u@h/db?sslmode=require&connect_timeout=3"
        );
        assert_eq!(
            describe_target("postgres://u:pw@h:5432/db?x=1"),
            "h:5432/db"
        );
    }
}
