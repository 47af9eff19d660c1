//! The shape every function shares: a [`Function`] says which inbound kinds it takes and what it
//! does with each; [`dispatch`] classifies the payload, hands each record to it and builds the
//! report once. A handler works on one record through [`Work`]: `note`, `raise` (an alert,
//! published and recorded), `act` (an action through the guard, audited and recorded), `done`.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::adapters::AwsClients;
use crate::alerts::APPROVAL_KIND;
use crate::alerts::{Alert, Severity};
use crate::config::Config;
use crate::error::Result;
use crate::events::{classify, Inbound};
use crate::fleet::{Origin, Route};
use crate::guard::{ApprovalRequest, AuditRecord, Guard, Outcome, ProposedAction};

use super::{Deps, Reply};

/// What the runtime hands the handler besides the payload.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    pub now: DateTime<Utc>,
    /// When Lambda will stop this invocation (`Lambda-Runtime-Deadline-Ms`); `None` in tests
    /// and wherever no deadline is known. Long-running work plans its last step against it.
    pub deadline: Option<DateTime<Utc>>,
}

impl Invocation {
    /// An invocation at `now` with no known deadline (tests, the local driver).
    pub fn at(request_id: &str, now: DateTime<Utc>) -> Invocation {
        Invocation {
            request_id: request_id.into(),
            now,
            deadline: None,
        }
    }
}

/// The response of every function: per input record, what was understood and what was done.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InvocationReport {
    pub function: String,
    pub env: String,
    pub records: Vec<RecordReport>,
    /// Only for an SQS batch (issue #20, [`super::fanout::consume`]): the messages that failed,
    /// for the event source mapping's `ReportBatchItemFailures` to make visible again (the others
    /// are deleted). Lambda reads this key of the response and ignores the report's others.
    #[serde(rename = "batchItemFailures", skip_serializing_if = "Option::is_none")]
    pub batch_item_failures: Option<Vec<BatchItemFailure>>,
}

/// One failed message of an SQS batch: `{"itemIdentifier": "<messageId>"}`
/// (<https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html>).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchItemFailure {
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RecordReport {
    pub event_id: String,
    pub kind: String,
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_for_me: Option<String>,
    pub actions: Vec<AuditRecord>,
    pub alerts: Vec<Alert>,
    pub notes: Vec<String>,
    /// The handler could not do its work on this record's target (pg-health: the database is
    /// unreachable), though it reported what it saw: a work item from SQS so marked is failed
    /// for SQS to deliver again ([`super::fanout::consume`]); elsewhere it is information.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

impl RecordReport {
    pub fn not_for_me(event_id: &str, kind: &str, reason: impl Into<String>) -> RecordReport {
        let reason = reason.into();
        RecordReport {
            event_id: event_id.into(),
            kind: kind.into(),
            summary: format!("not for me: {reason}"),
            not_for_me: Some(reason),
            ..Default::default()
        }
    }
}

/// A Lambda function of nbaops: its name, what it takes, the ports it built at init, and what
/// it does with each inbound record it takes.
pub trait Function: Sized + Send + Sync + 'static {
    /// The function's name (`scale-on-alarm`): config sections, audit records, alerts.
    const NAME: &'static str;
    /// Completes "`<NAME>` takes ..." in the answer to a record it does not take.
    const TAKES: &'static str;
    /// What an invocation answers: [`InvocationReport`] for most.
    type Reply: Reply + From<InvocationReport>;

    /// Built once at init from the shared ports and the SDK clients: the function's own
    /// config sections and the ports it calls (and only those).
    fn init(deps: &Deps, aws: &AwsClients) -> impl Future<Output = Result<Self>>;

    /// One classified record. A kind the function does not take: `Ok(ctx.not_mine(&inbound))`.
    fn on(&self, inbound: Inbound, ctx: &Ctx<'_>) -> impl Future<Output = Result<RecordReport>>;

    /// The live state of an approved action's resource (issue #19, [`super::approved`]), to
    /// compare with the plan's `before`. Default: this function carries out no approvals (and
    /// the config refuses to ask for its actions).
    fn live(
        &self,
        _action: &ProposedAction,
        _ctx: &Ctx<'_>,
    ) -> impl Future<Output = Result<super::Live>> {
        async { Ok(super::Live::NotCarriedOut) }
    }

    /// Applies an approved plan's `after` (called through the guard, by [`super::approved`]).
    fn apply(&self, action: &ProposedAction, _ctx: &Ctx<'_>) -> impl Future<Output = Result<()>> {
        let what = action.action.clone();
        async move {
            Err(crate::error::NbaopsError::InvalidEvent(format!(
                "{} carries out no approval of {what}",
                Self::NAME
            )))
        }
    }

    /// What one classified record becomes in the report: [`Function::on`]'s one record. A
    /// function that reports per thing it looks after (pg-health, vacuum-trigger: one record per
    /// database a tick covers) overrides it.
    fn records(
        &self,
        inbound: Inbound,
        ctx: &Ctx<'_>,
    ) -> impl Future<Output = Result<Vec<RecordReport>>> {
        async move { Ok(vec![self.on(inbound, ctx).await?]) }
    }

    /// The targets a `dispatch` tick fans `work` out to, one work item on the function's SQS
    /// queue each (issue #20, [`super::fanout`]): `None` when this function does not fan `work`
    /// out (the default), an empty list when it does and has nothing to look at now.
    fn targets(
        &self,
        _work: &str,
        _ctx: &Ctx<'_>,
    ) -> impl Future<Output = Result<Option<Vec<super::fanout::Target>>>> {
        async { Ok(None) }
    }

    /// The whole payload. The default classifies it and hands each record to [`Function::on`];
    /// a function with another entry (an HTTP request) overrides it.
    fn handle(&self, payload: Value, ctx: &Ctx<'_>) -> impl Future<Output = Result<Self::Reply>> {
        async move { dispatch(self, payload, ctx).await.map(Into::into) }
    }
}

/// Classifies the payload and hands each record to the function: the report is built here, once.
pub async fn dispatch<F: Function>(
    f: &F,
    payload: Value,
    ctx: &Ctx<'_>,
) -> Result<InvocationReport> {
    // An SQS batch: each message on its own, failures reported per message (issue #20).
    if let Some(records) = super::fanout::sqs_records(&payload) {
        return super::fanout::consume(f, records, ctx).await;
    }
    let mut report = ctx.report();
    for inbound in classify(&payload) {
        let recs = match inbound {
            Inbound::NotForMe(n) => vec![RecordReport::not_for_me("", "unknown", n.reason)],
            inbound => records_of(f, inbound, ctx).await?,
        };
        report.records.extend(recs);
    }
    Ok(report)
}

/// What one understood record becomes: an approval carried out, a dispatch of work items, or
/// the function's own records.
pub(super) async fn records_of<F: Function>(
    f: &F,
    inbound: Inbound,
    ctx: &Ctx<'_>,
) -> Result<Vec<RecordReport>> {
    Ok(match inbound {
        Inbound::Schedule(tick) if super::is_approved_task(&tick) => {
            vec![super::approved(f, &tick, ctx).await?]
        }
        Inbound::Schedule(tick) if super::fanout::is_dispatch(&tick) => {
            vec![super::fanout::dispatch_work(f, &tick, ctx).await?]
        }
        // Each record with the ports of the account and region it came from (issue #20).
        inbound => match ctx.fleet.map(|fleet| (fleet, fleet.route(&inbound))) {
            None | Some((_, Route::Hub)) => f.records(inbound, ctx).await?,
            Some((fleet, Route::Member { origin, role_arn })) => {
                let member = fleet
                    .member::<F>(&origin, role_arn.as_deref(), ctx.deps)
                    .await?;
                member.records(inbound, &ctx.at(&origin)).await?
            }
            Some((_, Route::NotInFleet(reason))) => vec![RecordReport::not_for_me(
                inbound.event_id().unwrap_or(""),
                inbound.kind(),
                reason,
            )],
        },
    })
}

/// One invocation as a handler sees it: the shared ports, the clock, the function's name.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub function: &'static str,
    pub deps: &'a Deps,
    pub inv: &'a Invocation,
    takes: &'static str,
    /// The fleet this deployment watches (issue #20); `None`: the hub only.
    pub fleet: Option<&'a super::Fleet>,
    /// The member account and region the record being handled came from; `None`: the hub's.
    pub origin: Option<&'a Origin>,
}

impl<'a> Ctx<'a> {
    pub fn new(function: &'static str, deps: &'a Deps, inv: &'a Invocation) -> Ctx<'a> {
        Ctx {
            function,
            deps,
            inv,
            takes: "",
            fleet: None,
            origin: None,
        }
    }

    /// The context of function `F` (its name and what it takes).
    pub fn of<F: Function>(deps: &'a Deps, inv: &'a Invocation) -> Ctx<'a> {
        Ctx {
            function: F::NAME,
            deps,
            inv,
            takes: F::TAKES,
            fleet: None,
            origin: None,
        }
    }

    /// This context, routing records by origin over `fleet` ([`dispatch`]).
    pub fn with_fleet(self, fleet: Option<&'a super::Fleet>) -> Ctx<'a> {
        Ctx { fleet, ..self }
    }

    /// This context for a record from member `origin`: its actions are audited, claimed and
    /// cooled down as that account's and region's ([`Guard::with_origin`]).
    pub fn at<'b>(&self, origin: &'b Origin) -> Ctx<'b>
    where
        'a: 'b,
    {
        Ctx {
            origin: Some(origin),
            ..*self
        }
    }

    pub fn cfg(&self) -> &'a Config {
        &self.deps.cfg
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.inv.now
    }

    pub fn env(&self) -> String {
        self.deps.cfg.env.to_string()
    }

    /// Whether this function is in dry-run now, as the guard's live switches say (global or per
    /// function, re-read after `guard.switch_ttl_seconds`; `nbaops plan` forces it). For the
    /// effects a handler makes outside the guard (a follow-up schedule): in dry-run it notes what
    /// it would do instead. Switches it cannot read count as dry-run: nothing is done blind.
    pub async fn dry_run(&self) -> bool {
        self.deps
            .switches
            .current(self.cfg(), self.deps.params.as_deref())
            .await
            .map(|(_, dry)| dry)
            .unwrap_or(true)
    }

    /// An empty report of this function in this environment.
    pub fn report(&self) -> InvocationReport {
        InvocationReport {
            function: self.function.into(),
            env: self.env(),
            records: vec![],
            batch_item_failures: None,
        }
    }

    /// The same function and ports for another invocation (a work item of an SQS batch, with
    /// its own deadline: [`super::fanout::consume`]).
    pub fn with_inv<'b>(&self, inv: &'b Invocation) -> Ctx<'b>
    where
        'a: 'b,
    {
        Ctx {
            function: self.function,
            deps: self.deps,
            inv,
            takes: self.takes,
            fleet: self.fleet,
            origin: self.origin,
        }
    }

    /// The guard for the actions one event leads to.
    pub fn guard(&self, event_id: &str) -> Guard<'a> {
        self.deps
            .guard(event_id, self.inv)
            .with_origin(self.origin.cloned())
    }

    /// An alert from this function, in this environment, at this invocation's time.
    pub fn alert(
        &self,
        severity: Severity,
        resource: &str,
        dedup_key: impl Into<String>,
        summary: impl Into<String>,
    ) -> Alert {
        Alert::new(
            severity,
            &self.env(),
            self.function,
            resource,
            dedup_key,
            summary,
            self.inv.now,
        )
    }

    pub async fn publish(&self, alert: &Alert) -> Result<()> {
        self.deps.alerts().publish(alert).await.map(|_| ())
    }

    /// The work on one record: its report and the guard of its actions.
    pub fn work(&self, event_id: &str, kind: &str, summary: impl Into<String>) -> Work<'a> {
        Work {
            ctx: *self,
            guard: self.guard(event_id),
            rec: RecordReport {
                event_id: event_id.into(),
                kind: kind.into(),
                summary: summary.into(),
                ..Default::default()
            },
        }
    }

    /// The answer to a record of a kind this function does not take.
    pub fn not_mine(&self, inbound: &Inbound) -> RecordReport {
        RecordReport::not_for_me(
            inbound.event_id().unwrap_or(""),
            inbound.kind(),
            format!("{} takes {}", self.function, self.takes),
        )
    }
}

/// The work on one record: what the handler noted, raised and did, and the guard its actions
/// pass. [`Work::done`] writes what rode along with the guard and hands back the record.
pub struct Work<'a> {
    pub ctx: Ctx<'a>,
    pub guard: Guard<'a>,
    pub rec: RecordReport,
}

impl<'a> Work<'a> {
    /// How many resources this run looks at, for the blast-radius percent.
    pub fn with_fleet_size(mut self, n: usize) -> Self {
        self.guard = self.guard.with_fleet_size(n);
        self
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.rec.notes.push(note.into());
    }

    /// Publishes the alert and records it.
    pub async fn raise(&mut self, alert: Alert) -> Result<()> {
        self.ctx.publish(&alert).await?;
        self.rec.alerts.push(alert);
        Ok(())
    }

    /// The action through the guard (the effect runs only if every check passes), audited and
    /// recorded either way.
    pub async fn act<E, Fut>(&mut self, action: &ProposedAction, effect: E) -> Result<AuditRecord>
    where
        E: FnOnce() -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let audit = self.guard.run(action, effect).await?;
        self.rec.actions.push(audit.clone());
        self.ask(&audit).await?;
        Ok(audit)
    }

    /// The one alert of a decision that asked a person (not in dry-run: nothing was asked):
    /// it carries the request's id, and alert-router puts the signed Approve / Deny links in it.
    /// [`Work::act`] raises it; a function that checks and finishes with the guard itself calls it.
    pub async fn ask(&mut self, audit: &AuditRecord) -> Result<()> {
        let (Outcome::NeedsApproval, false, Some(id)) =
            (audit.outcome, audit.dry_run, &audit.approval_id)
        else {
            return Ok(());
        };
        // Asked by an earlier run or event (the guard pointed this one to the open request):
        // announced then, not again.
        let env = self.ctx.env();
        if let Some(req) = ApprovalRequest::load(self.ctx.deps.ledger.as_ref(), &env, id).await? {
            if req.event_id != audit.event_id {
                self.note(format!(
                    "approval {id} already asked at {} (until {}): not announced again",
                    req.requested_at.format("%Y-%m-%d %H:%M UTC"),
                    req.expires_at.format("%Y-%m-%d %H:%M UTC")
                ));
                return Ok(());
            }
        }
        let alert = self
            .ctx
            .alert(
                audit.severity,
                &audit.resource,
                format!("{APPROVAL_KIND}#{id}"),
                audit.sentence.clone(),
            )
            .with_details(serde_json::json!({
                "action": audit.action, "before": audit.before, "after": audit.after,
                "reason": audit.reason,
            }))
            .with_action("approve or deny with the links in this message, or `nbaops approve|deny`; unanswered, the request comes to approval.on_timeout")
            .asking(id);
        self.raise(alert).await
    }

    /// Marks the record "not for me" (a record of a kind taken, but not about anything this
    /// function looks after).
    pub fn not_for_me(mut self, reason: impl Into<String>) -> RecordReport {
        let reason = reason.into();
        self.rec.notes.push(format!("not for me: {reason}"));
        self.rec.not_for_me = Some(reason);
        self.rec
    }

    /// Writes what rode along with the guard (no action took it) and hands back the record.
    pub async fn done(mut self) -> Result<RecordReport> {
        self.guard.flush().await?;
        Ok(self.rec)
    }
}
