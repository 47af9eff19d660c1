//! The owner carries out an approved request (issue #19): the `approved` task
//! (`{"nbaops":{"task":"approved","id":…,"env":…}}`, scheduled once a person approved) reaches the
//! function that asked, and [`approved`] does the rest the same way for every function.
//!
//! Only an approved request is carried out, once: the move from approved to used is the claim,
//! made before anything is done, so a second delivery (a replayed POST, a retried schedule) finds
//! it used and does nothing. Before acting, the function re-reads the live state of the resource
//! ([`Function::live`]); when it differs from the plan's `before` (the group was resized meanwhile)
//! nothing is done and the audit record and the alert say what differs. Otherwise the guard runs
//! again with the approval — the change window step passes as "approved by <who> at <when>", every
//! other step is evaluated live — and [`Function::apply`] applies the plan's `after`.

use serde_json::{json, Value};

use super::context::{Ctx, Function, RecordReport};
use crate::alerts::APPROVAL_KIND;
use crate::error::Result;
use crate::events::ScheduledTick;
use crate::guard::{ApprovalRequest, ApprovalState, AuditRecord, ProposedAction, APPROVED_TASK};
use crate::ports::Tags;

/// What a function sees of an action's resource now, to compare with the plan's `before`.
#[derive(Debug, Clone, PartialEq)]
pub enum Live {
    /// This function carries out no approval of this action.
    NotCarriedOut,
    /// The resource is not there any more.
    Gone,
    /// Its state, in the shape of the plan's `before` (at least its keys), and its tags (the
    /// protected-tag step is evaluated on them).
    Is { state: Value, tags: Tags },
}

/// Whether a tick is the approved task.
pub fn is_approved_task(tick: &ScheduledTick) -> bool {
    tick.task().as_deref() == Some(APPROVED_TASK)
}

/// What differs between the plan's `before` and the live state, key by key; `None`: the same.
pub fn differs(before: &Value, live: &Value) -> Option<String> {
    let Some(keys) = before.as_object() else {
        return (before != live).then(|| format!("was {before}, now {live}"));
    };
    let diffs: Vec<String> = keys
        .iter()
        .filter_map(|(k, was)| {
            let now = live.get(k).unwrap_or(&Value::Null);
            (now != was).then(|| format!("{k} was {was}, now {now}"))
        })
        .collect();
    (!diffs.is_empty()).then(|| diffs.join(", "))
}

/// The approved task for function `f`: see the module documentation.
pub async fn approved<F: Function>(
    f: &F,
    tick: &ScheduledTick,
    ctx: &Ctx<'_>,
) -> Result<RecordReport> {
    let id = tick.param("id").unwrap_or_default();
    let env = tick.param("env").unwrap_or_default();
    let mut w = ctx.work(
        &format!("approved/{id}"),
        "approved",
        format!("carry out approval {id}"),
    );
    if id.is_empty() {
        return Ok(w.not_for_me("an approved task without the request's id"));
    }
    if env != ctx.env() {
        return Ok(w.not_for_me(format!(
            "approval {id} is of environment '{env}', this is '{}'",
            ctx.env()
        )));
    }
    let ledger = ctx.deps.ledger.as_ref();
    let Some(req) = ApprovalRequest::load(ledger, &env, &id).await? else {
        w.note(format!("no approval request {id}: nothing done"));
        return w.done().await;
    };
    if req.function != ctx.function {
        return Ok(w.not_for_me(format!(
            "approval {id} belongs to {}, not {}",
            req.function, ctx.function
        )));
    }
    let Some(decided) = req.decided.clone() else {
        w.note(format!(
            "approval {id} is {:?}, undecided: nothing done",
            req.state
        ));
        return w.done().await;
    };
    if req.state != ApprovalState::Approved {
        let what = match req.state {
            ApprovalState::Used => format!(
                "already used ({})",
                req.outcome.as_deref().unwrap_or("no outcome recorded")
            ),
            other => format!("{other:?} by {}", decided.by).to_lowercase(),
        };
        w.note(format!("approval {id} is {what}: nothing done"));
        return w.done().await;
    }
    let mut action = req.action.clone();
    let live = f.live(&action, ctx).await?;
    let mismatch = match &live {
        Live::NotCarriedOut => Some(format!(
            "{} does not carry out {}",
            ctx.function, action.action
        )),
        Live::Gone => Some(format!("{} is gone", action.resource)),
        Live::Is { state, .. } => differs(&action.before, state),
    };
    // The claim: approved -> used, before anything is done. Lost: someone else carries it out.
    let first_outcome = match (&mismatch, &live) {
        (Some(why), Live::NotCarriedOut) => format!("not carried out: {why}"),
        (Some(why), _) => format!("no longer matches live state: {why}"),
        (None, _) => "being carried out".to_string(),
    };
    let Some(claimed) = req
        .transition(ledger, ApprovalState::Used, |r| {
            r.outcome = Some(first_outcome)
        })
        .await?
    else {
        w.note(format!(
            "approval {id} was taken by another delivery: nothing done"
        ));
        return w.done().await;
    };
    w.guard = ctx
        .guard(&format!("approval/{id}"))
        .with_approval(&id, decided);
    let audit = match (&mismatch, live) {
        (Some(why), _) => {
            let rec = w.guard.stale_approval(&action, why).await?;
            w.rec.actions.push(rec.clone());
            rec
        }
        (None, Live::Is { tags, .. }) => {
            action.tags = tags;
            let audit = w.act(&action, || f.apply(&action, ctx)).await?;
            let words = audit.outcome_words();
            let outcome = audit.sentence.clone();
            if claimed
                .transition(ledger, ApprovalState::Used, |r| r.outcome = Some(outcome))
                .await?
                .is_none()
            {
                tracing::warn!(id = %id, "approval changed while carried out; its outcome is in the audit trail");
            }
            w.note(format!("{}: {words}", action.resource));
            audit
        }
        (None, _) => return w.done().await,
    };
    announce(&mut w, &id, &action, &audit).await?;
    w.done().await
}

/// One alert saying what came of the approval (done, failed, or why not).
async fn announce(
    w: &mut super::Work<'_>,
    id: &str,
    action: &ProposedAction,
    audit: &AuditRecord,
) -> Result<()> {
    let alert = w
        .ctx
        .alert(
            action.severity,
            &action.resource,
            format!("{APPROVAL_KIND}#{id}#outcome"),
            audit.sentence.clone(),
        )
        .with_details(json!({"approval_id": id, "outcome": audit.outcome, "before": action.before, "after": action.after}))
        .with_action(audit.sentence.clone());
    w.raise(alert).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_key_that_moved() {
        let before = json!({"desired": 2, "min": 1, "max": 6});
        assert_eq!(
            differs(
                &before,
                &json!({"desired": 2, "min": 1, "max": 6, "extra": 1})
            ),
            None
        );
        assert_eq!(
            differs(&before, &json!({"desired": 4, "min": 1, "max": 6})).as_deref(),
            Some("desired was 2, now 4")
        );
        assert!(differs(&before, &json!({})).is_some());
        assert!(differs(&json!("a"), &json!("b")).is_some());
    }
}
