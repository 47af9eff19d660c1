//! Which runaway transactions may be ended. Tables to maintain are chosen by the shared
//! `sql::plan_maintenance`, which pg-health's reading of a table shares.

use nbaops_shared::config::pg::PgConfig;
use nbaops_shared::sql::Session;

/// Client sessions past the critical long-transaction threshold whose role or application is
/// allow-listed and whose role is not protected. Never autovacuum, walsenders, background
/// workers or our own session (`Session::is_client`). Oldest first.
pub fn runaway_transactions<'a>(sessions: &'a [Session], cfg: &PgConfig) -> Vec<&'a Session> {
    let t = &cfg.terminate;
    if !t.enabled {
        return vec![];
    }
    let mut out: Vec<&Session> = sessions
        .iter()
        .filter(|s| s.is_client())
        .filter(|s| s.xact_seconds > cfg.long_tx_seconds.crit)
        .filter(|s| !t.protected_roles.iter().any(|r| r == &s.role))
        .filter(|s| {
            t.allow_roles.iter().any(|r| r == &s.role)
                || (!s.application.is_empty()
                    && t.allow_applications.iter().any(|a| a == &s.application))
        })
        .collect();
    out.sort_by(|a, b| {
        b.xact_seconds
            .partial_cmp(&a.xact_seconds)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nbaops_shared::config::{layer, Env};

    fn cfg(pairs: &[(&str, &str)]) -> PgConfig {
        let vars = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        nbaops_shared::config::pg::from_settings(
            &layer(Env::Dev, &vars, &Default::default()).unwrap(),
        )
        .unwrap()
    }

    fn s(pid: i64, backend: &str, role: &str, app: &str, xact: f64, ours: bool) -> Session {
        Session {
            pid,
            role: role.into(),
            application: app.into(),
            backend_type: backend.into(),
            state: "idle in transaction".into(),
            xact_start: Some("2026-11-25T11:00:00+00:00".into()),
            xact_seconds: xact,
            state_seconds: xact,
            query: String::new(),
            ours,
            lock_wait_seconds: None,
        }
    }

    #[test]
    fn only_allow_listed_client_sessions_past_critical() {
        let all = vec![
            s(1, "autovacuum worker", "app", "", 5000.0, false),
            s(2, "walsender", "app", "", 5000.0, false),
            s(3, "client backend", "app", "web", 5000.0, true),
            s(4, "client backend", "app", "web", 800.0, false),
            s(5, "client backend", "app", "web", 1000.0, false),
            s(6, "client backend", "rdsadmin", "web", 9000.0, false),
            s(7, "client backend", "reporting", "psql", 9000.0, false),
            s(8, "client backend", "batch", "", 2000.0, false),
        ];
        assert!(
            runaway_transactions(&all, &cfg(&[])).is_empty(),
            "disabled by default"
        );
        let c = cfg(&[
            ("NBAOPS_PG__TERMINATE__ENABLED", "true"),
            ("NBAOPS_PG__TERMINATE__ALLOW_ROLES", "batch,rdsadmin"),
            ("NBAOPS_PG__TERMINATE__ALLOW_APPLICATIONS", "web"),
        ]);
        let pids: Vec<i64> = runaway_transactions(&all, &c)
            .iter()
            .map(|s| s.pid)
            .collect();
        // 8 (role allowed, oldest), 5 (app allowed); never 6: rdsadmin is protected even if listed.
        assert_eq!(pids, vec![8, 5]);
    }
}
