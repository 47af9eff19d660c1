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
use crate::fleet::{Origin, Route};
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
    let summary = format!("carry out approval {id}");
    let mut w = ctx.work(&format!("approved/{id}"), "approved", summary.clone());
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
    // Where the action is (issue #20): the hub's own account and region, or a fleet member's,
    // carried out there with that member's instance of the function (the clients of the role
    // assumed in it, exactly as `records_of` routes the member's records), or not at all.
    let Some(origin) = req.origin.clone() else {
        return carry_out(Ok(f), w, req, decided).await;
    };
    w.done().await?;
    let at = ctx.at(&origin);
    let w = at.work(&format!("approved/{id}"), "approved", summary);
    let member = match ctx
        .fleet
        .map(|fleet| (fleet, fleet.route_origin(Some(&origin))))
    {
        None => Err(format!(
            "{origin} is a fleet member's, and no fleet is configured here any more"
        )),
        Some((_, Route::Hub)) => Ok(f),
        Some((fleet, Route::Member { origin, role_arn })) => Ok(fleet
            .member::<F>(&origin, role_arn.as_deref(), ctx.deps)
            .await?),
        Some((_, Route::NotInFleet(why))) => Err(why),
    };
    carry_out(member, w, req, decided).await
}

/// Carries out the approved request `req` with `f` (the instance of the function of the
/// request's account and region; `Err`: why there is none, and nothing is done), in `w` (whose
/// context is that account's and region's). The plan's resource is handed to `f` unqualified,
/// as the function names it in its own account; the guard and the audit qualify it again.
async fn carry_out<F: Function>(
    f: std::result::Result<&F, String>,
    mut w: super::Work<'_>,
    req: ApprovalRequest,
    decided: crate::guard::Decided,
) -> Result<RecordReport> {
    let ctx = w.ctx;
    let id = req.id.clone();
    let ledger = ctx.deps.ledger.as_ref();
    let stored = req.action.clone();
    let mut action = unqualified(&stored, req.origin.as_ref());
    let live = match f {
        Ok(f) => f.live(&action, &ctx).await?,
        Err(_) => Live::NotCarriedOut,
    };
    let mismatch = match (&f, &live) {
        (Err(why), _) => Some(why.clone()),
        (Ok(_), Live::NotCarriedOut) => Some(format!(
            "{} does not carry out {}",
            ctx.function, action.action
        )),
        (Ok(_), Live::Gone) => Some(format!("{} is gone", stored.resource)),
        (Ok(_), Live::Is { state, .. }) => differs(&action.before, state),
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
    let audit = match (&mismatch, live, f) {
        (Some(why), live, _) => {
            let why = match live {
                Live::NotCarriedOut => format!("it is not carried out: {why}"),
                _ => format!("the plan no longer matches live state: {why}"),
            };
            let rec = w.guard.stale_approval(&stored, &why).await?;
            w.rec.actions.push(rec.clone());
            rec
        }
        (None, Live::Is { tags, .. }, Ok(f)) => {
            action.tags = tags;
            let audit = w.act(&action, || f.apply(&action, &ctx)).await?;
            let words = audit.outcome_words();
            let outcome = audit.sentence.clone();
            if claimed
                .transition(ledger, ApprovalState::Used, |r| r.outcome = Some(outcome))
                .await?
                .is_none()
            {
                tracing::warn!(id = %id, "approval changed while carried out; its outcome is in the audit trail");
            }
            w.note(format!("{}: {words}", stored.resource));
            audit
        }
        (None, _, _) => return w.done().await,
    };
    announce(&mut w, &id, &stored, &audit).await?;
    w.done().await
}

/// The plan as the function of `origin` names it: its resource and cooldown key without the
/// `@<account>/<region>` the guard added when it asked ([`crate::guard::Guard::with_origin`]).
pub fn unqualified(action: &ProposedAction, origin: Option<&Origin>) -> ProposedAction {
    let mut a = action.clone();
    if let Some(o) = origin {
        let at = format!("@{}/{}", o.account, o.region);
        for s in [&mut a.resource, &mut a.cooldown_key] {
            if let Some(bare) = s.strip_suffix(&at) {
                *s = bare.to_string();
            }
        }
    }
    a
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

/// Issue #20: an approved request is carried out where its action is, by that origin's instance
/// of the function, with the resource as the function names it there.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod origin_routing {
    use std::sync::Mutex;

    use chrono::{DateTime, Utc};

    use super::*;
    use crate::adapters::AwsClients;
    use crate::fakes::test_deps;
    use crate::guard::{approval_id, approved_input, decide, Decided, OnTimeout, Outcome, Verdict};
    use crate::runtime::{dispatch, Deps, Fleet, Invocation, InvocationReport};

    const HUB: &str = "123456789012";

    /// What each instance was asked: (call, the instance's region, resource, the context's origin).
    type Seen = Vec<(&'static str, String, String, Option<Origin>)>;
    static SEEN: Mutex<Seen> = Mutex::new(Vec::new());

    fn seen() -> Seen {
        SEEN.lock().unwrap().clone()
    }

    /// A function whose instance knows its clients' region; it finds every plan's `before` live.
    struct Where(String);

    impl Function for Where {
        const NAME: &'static str = "scale-on-alarm";
        const TAKES: &'static str = "alarms";
        type Reply = InvocationReport;
        async fn init(_deps: &Deps, aws: &AwsClients) -> Result<Self> {
            Ok(Where(
                aws.conf()
                    .region()
                    .map(|r| r.to_string())
                    .unwrap_or_default(),
            ))
        }
        async fn on(&self, inbound: crate::events::Inbound, ctx: &Ctx<'_>) -> Result<RecordReport> {
            Ok(ctx.not_mine(&inbound))
        }
        async fn live(&self, a: &ProposedAction, ctx: &Ctx<'_>) -> Result<Live> {
            SEEN.lock().unwrap().push((
                "live",
                self.0.clone(),
                a.resource.clone(),
                ctx.origin.cloned(),
            ));
            Ok(Live::Is {
                state: a.before.clone(),
                tags: Tags::default(),
            })
        }
        async fn apply(&self, a: &ProposedAction, ctx: &Ctx<'_>) -> Result<()> {
            SEEN.lock().unwrap().push((
                "apply",
                self.0.clone(),
                a.resource.clone(),
                ctx.origin.cloned(),
            ));
            Ok(())
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
            .unwrap()
            .to_utc()
    }

    /// An approved request for the web group in `origin` (`None`: the hub's), as the guard
    /// stores it: the resource and cooldown key qualified for a member.
    async fn approved_request(
        ledger: &dyn crate::ports::Ledger,
        event: &str,
        origin: Option<Origin>,
    ) -> ApprovalRequest {
        let at = origin
            .as_ref()
            .map(|o| format!("@{}/{}", o.account, o.region))
            .unwrap_or_default();
        let action: ProposedAction = serde_json::from_value(json!({
            "action": "asg.scale_out", "resource": format!("asg:web{at}"), "reason": "cpu",
            "severity": "P2", "disruptive": false, "bounds": null,
            "cooldown_key": format!("asg:web{at}"), "cooldown_seconds": 300,
            "before": {"desired": 2}, "after": {"desired": 3},
            "explanation": crate::guard::Explanation::default(),
        }))
        .unwrap();
        let req = ApprovalRequest {
            id: approval_id(event, &action.action, &action.resource),
            env: "dev".into(),
            function: "scale-on-alarm".into(),
            event_id: event.into(),
            action,
            sentence: "Would scale out".into(),
            requested_at: now(),
            expires_at: now() + chrono::Duration::hours(1),
            on_timeout: OnTimeout::Deny,
            approvers: vec![],
            state: ApprovalState::Pending,
            decided: None,
            outcome: None,
            origin,
        };
        assert!(req.create(ledger).await.unwrap());
        let who = Decided {
            by: "alice".into(),
            from: "cli".into(),
            at: now(),
        };
        decide(ledger, "dev", &req.id, Verdict::Approve, who)
            .await
            .unwrap();
        ApprovalRequest::load(ledger, "dev", &req.id)
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn a_members_approval_is_carried_out_by_the_members_instance_and_a_strangers_nowhere() {
        let t = test_deps(
            "scale-on-alarm",
            &[
                (
                    "NBAOPS_ALERTS_TOPIC_ARN",
                    "arn:aws:sns:us-east-1:123456789012:nbaops-dev-alerts",
                ),
                // The hub's own account in another region: a member reached without a role.
                ("NBAOPS_FLEET__REGIONS", "123456789012:us-west-2"),
            ],
        )
        .unwrap();
        let clients: &'static AwsClients = Box::leak(Box::new(
            AwsClients::for_member(
                &AwsClients::from_env().await,
                &Origin::new(HUB, "us-east-1"),
                None,
                None,
                "t",
            )
            .await,
        ));
        let fleet = Fleet::new(&t.deps.cfg, clients).unwrap().unwrap();
        let hub = Where("hub".into());
        let inv = Invocation::at("r", now() + chrono::Duration::minutes(5));
        let ctx = Ctx::of::<Where>(t.deps, &inv).with_fleet(Some(&fleet));
        let ledger = t.deps.ledger.as_ref();
        let member = Origin::new(HUB, "us-west-2");

        // A member's: its instance (clients of us-west-2), the bare name, the member's context;
        // audited with the qualified name and the approver.
        let req = approved_request(ledger, "ev-member", Some(member.clone())).await;
        let out = dispatch(&hub, approved_input(&req), &ctx).await.unwrap();
        let a = &out.records[0].actions[0];
        assert_eq!(a.outcome, Outcome::Acted, "{}", a.sentence);
        assert_eq!(a.resource, "asg:web@123456789012/us-west-2");
        assert_eq!(a.approval_id.as_deref(), Some(req.id.as_str()));
        let change_window = a
            .steps
            .iter()
            .find(|s| s.step == crate::guard::GuardStep::ChangeWindow);
        assert!(
            change_window.is_some_and(|s| s.note.starts_with("approved by alice")),
            "{a:?}"
        );
        let mine = seen();
        assert_eq!(
            mine,
            vec![
                (
                    "live",
                    "us-west-2".into(),
                    "asg:web".into(),
                    Some(member.clone())
                ),
                (
                    "apply",
                    "us-west-2".into(),
                    "asg:web".into(),
                    Some(member.clone())
                ),
            ],
            "never the hub's instance"
        );
        let used = ApprovalRequest::load(ledger, "dev", &req.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(used.state, ApprovalState::Used);
        // Delivered again: nothing.
        let again = dispatch(&hub, approved_input(&req), &ctx).await.unwrap();
        assert!(again.records[0].actions.is_empty(), "{again:?}");
        assert_eq!(seen().len(), 2);

        // A request of an origin no longer in the fleet: not carried out (nowhere, least of all
        // on the hub), used, audited saying why.
        let stranger = Origin::new("333333333333", "us-east-1");
        let req = approved_request(ledger, "ev-stranger", Some(stranger)).await;
        let out = dispatch(&hub, approved_input(&req), &ctx).await.unwrap();
        let a = &out.records[0].actions[0];
        assert_eq!(a.outcome, Outcome::Skipped, "{}", a.sentence);
        assert_eq!(a.resource, "asg:web@333333333333/us-east-1");
        assert!(
            a.sentence.contains("it is not carried out: account 333333333333 region us-east-1 is not in fleet.accounts"),
            "{}",
            a.sentence
        );
        assert_eq!(seen().len(), 2, "no instance was asked: {:?}", seen());
        let used = ApprovalRequest::load(ledger, "dev", &req.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(used.state, ApprovalState::Used);
        assert!(
            used.outcome
                .as_deref()
                .is_some_and(|o| o.starts_with("not carried out: ")),
            "{used:?}"
        );
        assert_eq!(out.records[0].alerts.len(), 1, "the outcome is announced");

        // A member's request where no fleet is configured any more: not carried out either.
        let req = approved_request(ledger, "ev-nofleet", Some(member.clone())).await;
        let plain = Ctx::of::<Where>(t.deps, &inv);
        let out = dispatch(&hub, approved_input(&req), &plain).await.unwrap();
        let a = &out.records[0].actions[0];
        assert_eq!(a.outcome, Outcome::Skipped, "{}", a.sentence);
        assert!(
            a.sentence.contains("no fleet is configured"),
            "{}",
            a.sentence
        );
        assert_eq!(seen().len(), 2, "{:?}", seen());

        // The hub's own (and every request stored before issue #20: no origin): the hub's
        // instance, the name as stored, no origin.
        let old = serde_json::to_value(approved_request(ledger, "ev-hub", None).await).unwrap();
        assert!(old.get("origin").is_none(), "{old}");
        let req: ApprovalRequest = serde_json::from_value(old).unwrap();
        assert_eq!(req.origin, None);
        let out = dispatch(&hub, approved_input(&req), &ctx).await.unwrap();
        assert_eq!(out.records[0].actions[0].outcome, Outcome::Acted);
        assert_eq!(out.records[0].actions[0].resource, "asg:web");
        assert_eq!(
            seen()[2..],
            [
                ("live", "hub".to_string(), "asg:web".to_string(), None),
                ("apply", "hub".to_string(), "asg:web".to_string(), None),
            ]
        );
    }

    #[test]
    fn the_plan_loses_only_its_own_origins_qualifier() {
        let a: ProposedAction = serde_json::from_value(json!({
            "action": "asg.scale_out", "resource": "asg:web@222222222222/us-west-2",
            "reason": "cpu", "severity": "P2", "disruptive": false, "bounds": null,
            "cooldown_key": "asg:web@222222222222/us-west-2", "cooldown_seconds": 300,
            "before": {}, "after": {}, "explanation": crate::guard::Explanation::default(),
        }))
        .unwrap();
        let b = Origin::new("222222222222", "us-west-2");
        let bare = unqualified(&a, Some(&b));
        assert_eq!(
            (bare.resource.as_str(), bare.cooldown_key.as_str()),
            ("asg:web", "asg:web")
        );
        assert_eq!(unqualified(&a, None), a);
        assert_eq!(
            unqualified(&a, Some(&Origin::new("222222222222", "us-east-1"))),
            a
        );
    }
}
