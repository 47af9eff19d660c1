//! Ending a runaway transaction past the critical limit (`plan`): cancel, then terminate,
//! through the guard. An allow-listed one is `pg.end_transaction` (the guard decides alone); one
//! not on the allow-list is `pg.end_transaction_unlisted`, proposed only when
//! `approval.pg.end_transaction_unlisted = always` (the default): a person approves each one, and
//! the approved request is carried out by `crate::approved`.

use std::time::Duration as StdDuration;

use serde_json::{json, Value};

use nbaops_shared::alerts::Severity;
use nbaops_shared::guard::{Explanation, Observation, Outcome, ProposedAction};
use nbaops_shared::ports::{Postgres, Tags};
use nbaops_shared::runtime::Work;
use nbaops_shared::sql::{self, Row, Session};
use nbaops_shared::{NbaopsError, Result};

use crate::handler::first_row;
use crate::statement::DbSession;

/// Cancel, then terminate, re-checking before each signal that the pid still runs the same
/// transaction (a pid is reused; a transaction that ended on its own must not cost a session).
pub(crate) async fn signal_runaway(pg: &dyn Postgres, s: &Session) -> Result<&'static str> {
    let same = |rows: Vec<Row>| {
        rows.first().is_some_and(|r| {
            sql::str_of(r, "xact_start") == s.xact_start
                && sql::str_of(r, "backend_type").as_deref() == Some("client backend")
        })
    };
    if !same(pg.query(&sql::session_xact_start(s.pid)).await?) {
        return Ok("transaction already ended: nothing signalled");
    }
    pg.query(&sql::cancel_backend(s.pid)).await?;
    tokio::time::sleep(StdDuration::from_millis(1000)).await;
    if !same(pg.query(&sql::session_xact_start(s.pid)).await?) {
        return Ok("cancelled");
    }
    let r = first_row(pg, &sql::terminate_backend(s.pid)).await?;
    if sql::bool_of(&r, "signalled") {
        Ok("terminated")
    } else {
        Err(NbaopsError::dependency(
            "postgres",
            format!("pg_terminate_backend({}) returned false", s.pid),
        ))
    }
}

pub const END_TRANSACTION: &str = "pg.end_transaction";
pub const END_UNLISTED: &str = "pg.end_transaction_unlisted";

/// `crit_seconds`: `pg.long_tx.crit_seconds`, the limit the transaction is past. `listed`: its
/// role or application is allow-listed (`pg.end_transaction`), or not
/// (`pg.end_transaction_unlisted`: the guard asks a person).
pub async fn end_transaction(
    s: &DbSession<'_>,
    sess: &Session,
    crit_seconds: f64,
    listed: bool,
    w: &mut Work<'_>,
) -> Result<()> {
    let resource = format!("pg:{}/pid:{}", s.db, sess.pid);
    let (name, rule) = if listed {
        (
            END_TRANSACTION,
            "SPEC 3.2.2 long-running transactions: end an allow-listed runaway",
        )
    } else {
        (
            END_UNLISTED,
            "SPEC 3.2.2 long-running transactions: a runaway not on the allow-list is ended only with a person's approval",
        )
    };
    let mut action = ProposedAction {
        action: name.into(),
        resource: resource.clone(),
        tags: Tags::new(),
        reason: format!(
            "transaction open {:.0} s (> pg.long_tx.crit_seconds), role {}, application '{}'",
            sess.xact_seconds, sess.role, sess.application
        ),
        severity: Severity::P2,
        disruptive: false,
        bounds: None,
        cooldown_key: "pg.end_transaction".into(),
        cooldown_seconds: 0,
        before: json!({"pid": sess.pid, "role": sess.role, "application": sess.application, "backend_type": sess.backend_type, "state": sess.state, "xact_start": sess.xact_start, "xact_seconds": sess.xact_seconds, "query": sess.query}),
        after: Value::Null,
        explanation: Explanation::new(
            "end",
            "Ended",
            format!(
                "the transaction of pid {} on {} ({}, '{}')",
                sess.pid, s.db, sess.role, sess.application
            ),
            rule,
        )
        .observe(Observation::against(
            "open for",
            sess.xact_seconds,
            "s",
            ">",
            crit_seconds,
        ))
        .key("pg.long_tx.crit_seconds")
        .key("pg.terminate.enabled"),
    };
    let decision = w.guard.check(&action).await?;
    let result = if decision.proceed {
        let r = signal_runaway(s.pg, sess).await;
        if let Ok(how) = &r {
            action.after = json!({"result": how});
        }
        Some(r.map(|_| ()).map_err(|e| e.to_string()))
    } else {
        None
    };
    let audit = w.guard.finish(&action, &decision, result).await?;
    w.ask(&audit).await?;
    let words = audit.outcome_words();
    w.note(format!("{resource}: end transaction: {words}"));
    if matches!(audit.outcome, Outcome::Acted | Outcome::Failed) {
        let alert = w
            .ctx
            .alert(
                if audit.outcome == Outcome::Failed {
                    Severity::P2
                } else {
                    Severity::P3
                },
                &resource,
                format!("pg-end-transaction#{resource}"),
                format!(
                    "{}: runaway transaction of pid {} ({}, '{}', {:.0} min): {}",
                    s.db,
                    sess.pid,
                    sess.role,
                    sess.application,
                    sess.xact_seconds / 60.0,
                    action.after["result"].as_str().unwrap_or(&words)
                ),
            )
            .with_details(json!({"before": action.before, "after": action.after}))
            .with_action(audit.sentence.clone());
        w.raise(alert).await?;
    }
    w.rec.actions.push(audit);
    Ok(())
}
