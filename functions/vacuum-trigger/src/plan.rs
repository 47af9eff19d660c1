//! Which runaway transactions may be ended. Tables to maintain are chosen by the shared
//! `sql::plan_maintenance`, which pg-health's reading of a table shares.

use chrono::{DateTime, Utc};

use std::time::Duration as StdDuration;

use nbaops_shared::config::pg::{PgConfig, VacuumLimits};
use nbaops_shared::deadline::{room, Room};
use nbaops_shared::sql::Session;

/// Whether one more table (or index) may be started, and the statement_timeout it runs under.
#[derive(Debug, Clone, PartialEq)]
pub enum Budget {
    Go { statement_timeout_ms: u64 },
    Stop(String),
}

/// The run's time budget is the smaller of `pg.vacuum.time_budget_seconds` since the run
/// started and the Lambda deadline minus `pg.vacuum.deadline_margin_seconds`: nothing new is
/// started past it, and a statement started before it is cut (statement_timeout) in time for
/// the audit to be written before Lambda kills the process.
pub fn budget(
    elapsed: std::time::Duration,
    now: DateTime<Utc>,
    deadline: Option<DateTime<Utc>>,
    v: &VacuumLimits,
) -> Budget {
    if elapsed.as_secs() >= v.time_budget_seconds {
        return Budget::Stop(format!(
            "time budget spent ({} s, pg.vacuum.time_budget_seconds)",
            v.time_budget_seconds
        ));
    }
    let mut timeout_ms = v.statement_timeout_seconds * 1000;
    // Less than a second of work is no work.
    match room(
        deadline,
        now,
        StdDuration::from_secs(v.deadline_margin_seconds),
        StdDuration::from_secs(1),
    ) {
        Room::Unbounded => {}
        Room::Usable(usable) => timeout_ms = timeout_ms.min(usable.as_millis() as u64),
        Room::Stop(why) => {
            return Budget::Stop(format!("{why} (pg.vacuum.deadline_margin_seconds)"))
        }
    }
    Budget::Go {
        statement_timeout_ms: timeout_ms,
    }
}

/// Client sessions past the critical long-transaction threshold whose role or application is
/// allow-listed and whose role is not protected. Never autovacuum, walsenders, background
/// workers or our own session (`Session::is_client`). Oldest first.
pub fn runaway_transactions<'a>(sessions: &'a [Session], cfg: &PgConfig) -> Vec<&'a Session> {
    runaways(sessions, cfg, true)
}

/// The runaways [`runaway_transactions`] leaves alone because neither their role nor their
/// application is allow-listed (protected roles and non-client backends still excluded): ended
/// only when a person approves each one (`approval.pg.end_transaction_unlisted = always`).
pub fn unlisted_runaways<'a>(sessions: &'a [Session], cfg: &PgConfig) -> Vec<&'a Session> {
    runaways(sessions, cfg, false)
}

fn runaways<'a>(sessions: &'a [Session], cfg: &PgConfig, listed: bool) -> Vec<&'a Session> {
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
            let allowed = t.allow_roles.iter().any(|r| r == &s.role)
                || (!s.application.is_empty()
                    && t.allow_applications.iter().any(|a| a == &s.application));
            allowed == listed
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
    use chrono::{Duration, TimeZone};
    use nbaops_shared::config::{layer, Env};
    use std::time::Duration as Std;

    #[test]
    fn budget_is_the_smaller_of_config_and_deadline() {
        let c = cfg(&[]);
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
        // No deadline known: the configured budget and statement timeout.
        assert_eq!(
            budget(Std::from_secs(10), now, None, &c.vacuum),
            Budget::Go {
                statement_timeout_ms: 600_000
            }
        );
        assert!(matches!(
            budget(Std::from_secs(720), now, None, &c.vacuum),
            Budget::Stop(r) if r.contains("time_budget_seconds")
        ));
        // 14 min left: the 10-min statement timeout stands.
        let far = Some(now + Duration::minutes(14));
        assert_eq!(
            budget(Std::from_secs(10), now, far, &c.vacuum),
            Budget::Go {
                statement_timeout_ms: 600_000
            }
        );
        // 2 min left: a statement may run 90 s (30 s margin), then it is cancelled.
        let near = Some(now + Duration::minutes(2));
        assert_eq!(
            budget(Std::from_secs(10), now, near, &c.vacuum),
            Budget::Go {
                statement_timeout_ms: 90_000
            }
        );
        // 20 s left, within the margin: nothing new starts, whatever the config budget says.
        let close = Some(now + Duration::seconds(20));
        assert!(matches!(
            budget(Std::from_secs(1), now, close, &c.vacuum),
            Budget::Stop(r) if r.contains("deadline")
        ));
        let past = Some(now - Duration::seconds(5));
        assert!(matches!(
            budget(Std::ZERO, now, past, &c.vacuum),
            Budget::Stop(_)
        ));
    }

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
        // The others past critical are the unlisted ones (7 only: not our own 3, not the
        // protected 6, not the autovacuum worker or the walsender, not 4 below critical).
        let unlisted: Vec<i64> = unlisted_runaways(&all, &c).iter().map(|s| s.pid).collect();
        assert_eq!(unlisted, vec![7]);
        assert!(unlisted_runaways(&all, &cfg(&[])).is_empty(), "disabled");
    }
}
