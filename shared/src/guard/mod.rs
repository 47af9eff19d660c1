//! The one pipeline every action passes, in this order, each step recorded:
//! kill switch, dry-run, protected tag, bounds, cooldown, change window, blast radius, idempotency.
//! Its output is an audit record (ledger + JSON log line + "nbaops action" event on the actions
//! topic) for acted *and* skipped actions, naming the guard that stopped it.
//!
//! In dry-run every later step is still evaluated, read-only, so the operator sees exactly
//! which guard would have stopped the action or that it would have gone through.
//!
//! Split by seam: [`switches`] (kill switch and dry-run as last read), `ledger` (the cooldown and
//! idempotency claim, one conditional write), [`audit`] (audit records, ledger state decoding).

pub mod approval;
mod audit;
pub mod explain;
mod ledger;
mod switches;

pub use approval::{
    approval_id, approved_input, decide, expire_due, ApprovalRequest, ApprovalState, Decided,
    Decision as ApprovalDecision, OnTimeout, Verdict, APPROVED_TASK,
};
pub use audit::{
    audit_day, audit_of_day, audit_trail, decode_state, report_unreadable_state, write_audit,
    write_audit_with,
};
pub use explain::{Explanation, Observation};
pub use ledger::{Claim, CooldownMark};
pub use switches::Switches;

#[cfg(debug_assertions)]
use ledger::test_pause_after_claim;
use ledger::{cooldown_key, idem_key};
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::alerts::{Alert, AlertPublisher, Severity};
use crate::config::{ApprovalPolicy, ChangeWindow, Config};
use crate::error::{NbaopsError, Result};
use crate::ports::{Expect, Ledger, LedgerWrite, Notifier, Params, Tags};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardStep {
    KillSwitch,
    DryRun,
    ProtectedTag,
    Bounds,
    Cooldown,
    ChangeWindow,
    BlastRadius,
    Idempotency,
}

impl fmt::Display for GuardStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self).ok();
        f.write_str(s.as_ref().and_then(|v| v.as_str()).unwrap_or("?"))
    }
}

/// A numeric limit the proposed value must respect (e.g. desired capacity within MinSize..ceiling).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    pub proposed: f64,
    pub min: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposedAction {
    /// What, in the operator's words: "asg.scale_out", "rds.modify_class", "cache.add_node".
    pub action: String,
    /// "asg:nbaops-dev-web", "rds:nbaops-dev-db", "cache:nbaops-dev-cache".
    pub resource: String,
    #[serde(skip)]
    pub tags: Tags,
    pub reason: String,
    pub severity: Severity,
    /// Disruptive actions wait for the change window unless the incident is P1.
    pub disruptive: bool,
    pub bounds: Option<Bounds>,
    /// Cooldown bucket: actions sharing a key share a cooldown on one resource.
    pub cooldown_key: String,
    pub cooldown_seconds: i64,
    pub before: Value,
    pub after: Value,
    /// Why, structured: the rule, the numbers, the threshold ([`explain`]).
    pub explanation: Explanation,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    pub step: GuardStep,
    pub passed: bool,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// True only when the effect may happen now (not dry-run, every step passed).
    pub proceed: bool,
    pub dry_run: bool,
    pub stopped_by: Option<GuardStep>,
    pub steps: Vec<StepResult>,
    pub emergency_change: bool,
    /// Set when the action waits for a person instead (`approval.<action>`): every other step
    /// passed and the change window step asks. [`Guard::finish`] stores the request (not in
    /// dry-run) and records the outcome [`Outcome::NeedsApproval`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ask: Option<Ask>,
    /// What this invocation wrote to claim the action (idempotency and cooldown items), so
    /// [`Guard::finish`] can mark it done or release it.
    #[serde(skip)]
    pub claimed: bool,
}

/// The approval a decision asks for: the request's id and until when a person may answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ask {
    pub id: String,
    pub until: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Acted,
    WouldAct,
    Skipped,
    Failed,
    /// Not done: a person was asked (issue #19); the owner carries it out once approved.
    NeedsApproval,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub schema: String,
    pub at: DateTime<Utc>,
    pub env: String,
    pub function: String,
    pub request_id: String,
    pub event_id: String,
    pub action: String,
    pub resource: String,
    pub reason: String,
    pub severity: Severity,
    pub outcome: Outcome,
    pub dry_run: bool,
    pub stopped_by: Option<GuardStep>,
    pub emergency_change: bool,
    pub steps: Vec<StepResult>,
    pub before: Value,
    pub after: Value,
    pub error: Option<String>,
    /// The action's explanation (empty in records written before explanations existed).
    #[serde(default)]
    pub explanation: Explanation,
    /// The decision in one plain sentence ([`explain::sentence`]): what the alert, the CLI and
    /// the replay print. Empty in older records.
    #[serde(default)]
    pub sentence: String,
    /// The approval request this decision asked for, or carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
}

pub const AUDIT_SCHEMA: &str = "nbaops.action/v1";

impl AuditRecord {
    /// The decision as one sentence: the record's own [`AuditRecord::sentence`], or for a record
    /// written before explanations existed, its action, resource, outcome and reason.
    pub fn explained(&self) -> String {
        if self.sentence.is_empty() {
            format!(
                "{} {}: {} ({})",
                self.action,
                self.resource,
                self.outcome_words(),
                self.reason
            )
        } else {
            self.sentence.clone()
        }
    }

    /// The outcome in an operator's words, for notes and alert summaries.
    pub fn outcome_words(&self) -> String {
        match (self.outcome, self.stopped_by) {
            (Outcome::Acted, _) => "done".into(),
            (Outcome::WouldAct, _) => "dry-run: would have done it".into(),
            (Outcome::Failed, _) => format!("failed: {}", self.error.as_deref().unwrap_or("?")),
            (Outcome::Skipped, Some(step)) => format!("stopped by guard '{step}'"),
            (Outcome::Skipped, None) => "skipped".into(),
            (Outcome::NeedsApproval, _) if self.dry_run => "dry-run: would ask for approval".into(),
            (Outcome::NeedsApproval, _) => format!(
                "waiting for approval (id {})",
                self.approval_id.as_deref().unwrap_or("?")
            ),
        }
    }
}

/// True when `now` falls in the change window (a window whose end is before its start runs
/// past midnight and belongs to the day it starts).
pub fn in_change_window(window: &ChangeWindow, now: DateTime<Utc>) -> bool {
    let local = now.with_timezone(&window.tz);
    let t = local.time();
    let today = local.weekday();
    if window.start <= window.end {
        window.days.contains(&today) && t >= window.start && t < window.end
    } else {
        (window.days.contains(&today) && t >= window.start)
            || (window.days.contains(&today.pred()) && t < window.end)
    }
}

/// What a guard reads and writes: the config, the ledger, the alerts topic, SSM (live switches).
#[derive(Clone, Copy)]
pub struct GuardPorts<'a> {
    pub cfg: &'a Config,
    pub ledger: &'a dyn Ledger,
    pub notifier: &'a dyn Notifier,
    pub params: Option<&'a dyn Params>,
    pub switches: &'a Switches,
}

/// One guard per invocation: it counts the blast radius of that run.
pub struct Guard<'a> {
    cfg: &'a Config,
    ledger: &'a dyn Ledger,
    notifier: &'a dyn Notifier,
    params: Option<&'a dyn Params>,
    switches: &'a Switches,
    event_id: String,
    request_id: String,
    now: DateTime<Utc>,
    /// When this invocation must be done: a claim it writes is held until then.
    deadline: DateTime<Utc>,
    fleet_size: usize,
    admitted: usize,
    /// Unconditional writes that ride along the next claim (one ledger request), or are written
    /// on their own when no claim is made.
    riders: Vec<LedgerWrite>,
    /// The approval this run carries out (the approved task): the change window step passes.
    approved: Option<(String, Decided)>,
    /// The fleet member the actions are in (issue #20); `None`: the hub's account and region.
    origin: Option<crate::fleet::Origin>,
}

pub(super) fn step(step: GuardStep, passed: bool, note: impl Into<String>) -> StepResult {
    StepResult {
        step,
        passed,
        note: note.into(),
    }
}

impl<'a> Guard<'a> {
    pub fn new(
        ports: GuardPorts<'a>,
        event_id: &str,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Self {
        let GuardPorts {
            cfg,
            ledger,
            notifier,
            params,
            switches,
        } = ports;
        Guard {
            cfg,
            ledger,
            notifier,
            params,
            switches,
            event_id: event_id.to_string(),
            request_id: request_id.to_string(),
            now,
            deadline: now + chrono::Duration::seconds(cfg.guard.claim_seconds),
            fleet_size: 1,
            admitted: 0,
            riders: Vec::new(),
            approved: None,
            origin: None,
        }
    }

    /// Actions in a fleet member's account and region (issue #20): each action's resource and
    /// cooldown key are qualified with `@<account>/<region>`, so the audit record names where it
    /// acted, and the idempotency claim, the cooldown and the approval of a group in one account
    /// are never another account's group of the same name.
    pub fn with_origin(mut self, origin: Option<crate::fleet::Origin>) -> Self {
        self.origin = origin;
        self
    }

    /// The action as this guard checks, claims and audits it ([`Guard::with_origin`]).
    fn qualified<'x>(&self, a: &'x ProposedAction) -> std::borrow::Cow<'x, ProposedAction> {
        match &self.origin {
            None => std::borrow::Cow::Borrowed(a),
            Some(o) => {
                let at = format!("@{}/{}", o.account, o.region);
                let mut q = a.clone();
                if !q.resource.ends_with(&at) {
                    q.resource.push_str(&at);
                }
                if !q.cooldown_key.ends_with(&at) {
                    q.cooldown_key.push_str(&at);
                }
                std::borrow::Cow::Owned(q)
            }
        }
    }

    /// This run carries out an approved request: the change window step passes with "approved
    /// by <who> at <when>"; every other step is evaluated live.
    pub fn with_approval(mut self, id: &str, decided: Decided) -> Self {
        self.approved = Some((id.to_string(), decided));
        self
    }

    /// A handler's own record (unconditional) to write with the next action's claim, saving a
    /// request; written by the next [`Guard::check`] either way, or by [`Guard::flush`].
    pub fn ride_along(&mut self, w: LedgerWrite) {
        self.riders.push(w);
    }

    /// Writes the records no check has taken yet (the handler decided not to act).
    pub async fn flush(&mut self) -> Result<()> {
        let riders = std::mem::take(&mut self.riders);
        if riders.is_empty() {
            return Ok(());
        }
        match self.ledger.write_all(&riders).await? {
            None => Ok(()),
            Some(i) => Err(NbaopsError::dependency(
                "dynamodb",
                format!("unconditional record {i} refused"),
            )),
        }
    }

    /// How many resources this run looks at, for the blast-radius percent.
    pub fn with_fleet_size(mut self, n: usize) -> Self {
        self.fleet_size = n.max(1);
        self
    }

    /// The invocation's deadline (Lambda's, when known): claims are held until then, and a retry
    /// after it may take them over. Unknown: `guard.claim_seconds` from now.
    pub fn with_deadline(mut self, deadline: Option<DateTime<Utc>>) -> Self {
        if let Some(d) = deadline {
            self.deadline = d.max(self.now);
        }
        self
    }

    fn blast_limit(&self) -> usize {
        let pct = ((self.fleet_size as f64) * self.cfg.guard.max_percent / 100.0).floor() as usize;
        pct.max(1).min(self.cfg.guard.max_actions)
    }
}

impl<'a> Guard<'a> {
    /// Runs every step. Writes nothing except the claim (idempotency + cooldown, one conditional
    /// write), and only when the action is about to happen for real.
    pub async fn check(&mut self, a: &ProposedAction) -> Result<Decision> {
        let a = &*self.qualified(a);
        let (kill_step, dry_run) = match self.switches.current(self.cfg, self.params).await {
            Ok((kill, dry)) => (
                step(
                    GuardStep::KillSwitch,
                    !kill,
                    if kill { "kill switch is on" } else { "off" },
                ),
                dry,
            ),
            Err(e) => (
                step(
                    GuardStep::KillSwitch,
                    false,
                    format!("kill switch unreadable, acting blind is not allowed: {e}"),
                ),
                true,
            ),
        };
        // Dry-run never stops the evaluation: later steps still tell what would happen.
        let dry_step = step(
            GuardStep::DryRun,
            true,
            if dry_run {
                "dry-run: nothing will be changed"
            } else {
                "live"
            },
        );

        let tag = &self.cfg.guard.protect_tag;
        let protected = a
            .tags
            .get(tag)
            .map(|v| v.trim().eq_ignore_ascii_case("true"))
            .unwrap_or(false);
        let protect_step = step(
            GuardStep::ProtectedTag,
            !protected,
            if protected {
                format!("resource carries {tag}=true")
            } else {
                format!("no {tag}=true")
            },
        );

        let bounds_step = match a.bounds {
            Some(b) => {
                let ok = b.proposed >= b.min && b.proposed <= b.max && b.proposed.is_finite();
                step(
                    GuardStep::Bounds,
                    ok,
                    format!(
                        "{} within [{}, {}]: {}",
                        b.proposed,
                        b.min,
                        b.max,
                        if ok { "yes" } else { "no" }
                    ),
                )
            }
            None => step(GuardStep::Bounds, true, "no numeric bound applies"),
        };

        let mut emergency_change = false;
        let policy = self.cfg.approval.policy(&a.action);
        let window_step = if let Some((_, by)) = &self.approved {
            step(
                GuardStep::ChangeWindow,
                true,
                format!(
                    "approved by {} at {}",
                    by.by,
                    by.at.format("%Y-%m-%d %H:%M UTC")
                ),
            )
        } else if policy == ApprovalPolicy::Always {
            step(
                GuardStep::ChangeWindow,
                false,
                format!("approval.{} = always: a person approves it first", a.action),
            )
        } else if a.disruptive {
            let open = in_change_window(&self.cfg.guard.window, self.now);
            if open {
                step(GuardStep::ChangeWindow, true, "inside the change window")
            } else if a.severity == Severity::P1 {
                emergency_change = true;
                step(
                    GuardStep::ChangeWindow,
                    true,
                    "outside the change window: P1 emergency change",
                )
            } else {
                let w = &self.cfg.guard.window;
                step(
                    GuardStep::ChangeWindow,
                    false,
                    format!(
                        "disruptive and outside the change window ({:?} {}-{} {})",
                        w.days,
                        w.start.format("%H:%M"),
                        w.end.format("%H:%M"),
                        w.tz.name()
                    ),
                )
            }
        } else {
            step(GuardStep::ChangeWindow, true, "not disruptive")
        };

        let limit = self.blast_limit();
        let blast_step = step(
            GuardStep::BlastRadius,
            self.admitted < limit,
            format!(
                "{} of at most {} actions this run ({} resources in view)",
                self.admitted + 1,
                limit,
                self.fleet_size
            ),
        );

        let window_stopped = !window_step.passed;
        let stopped = [
            &kill_step,
            &protect_step,
            &bounds_step,
            &window_step,
            &blast_step,
        ]
        .iter()
        .any(|s| !s.passed);
        let ledger = if stopped || dry_run {
            self.ledger_steps_read(a, stopped).await?
        } else {
            self.claim(a).await?
        };
        self.flush().await?;
        #[cfg(debug_assertions)]
        if ledger.claimed {
            test_pause_after_claim().await;
        }

        let steps = vec![
            kill_step,
            dry_step,
            protect_step,
            bounds_step,
            ledger.cooldown,
            window_step,
            blast_step,
            ledger.idempotency,
        ];
        let stopped_by = steps.iter().find(|s| !s.passed).map(|s| s.step);
        if stopped_by.is_none() {
            self.admitted += 1;
        }
        // Asked only where the window alone stops it: every other step still applies.
        let only_window = window_stopped
            && steps
                .iter()
                .all(|s| s.passed || s.step == GuardStep::ChangeWindow);
        // One open request per action and resource: while one waits for a person (or was
        // approved and is on its way), a later run or event asks nothing new and points to it.
        let ask = if only_window && policy != ApprovalPolicy::Never && self.approved.is_none() {
            let env = self.cfg.env.to_string();
            let open =
                ApprovalRequest::open_for(self.ledger, &env, &a.action, &a.resource, self.now)
                    .await?;
            Some(match open {
                Some(r) => Ask {
                    id: r.id,
                    until: r.expires_at,
                },
                None => Ask {
                    id: approval_id(&self.event_id, &a.action, &a.resource),
                    until: self.now + self.cfg.approval.timeout(),
                },
            })
        } else {
            None
        };
        Ok(Decision {
            proceed: stopped_by.is_none() && !dry_run,
            dry_run,
            stopped_by,
            steps,
            emergency_change,
            ask,
            claimed: ledger.claimed,
        })
    }

    /// The whole pipeline for one action: check, the effect only if allowed, audit either way.
    pub async fn run<F, Fut>(&mut self, a: &ProposedAction, effect: F) -> Result<AuditRecord>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let decision = self.check(a).await?;
        let result = if decision.proceed {
            Some(effect().await.map_err(|e| e.to_string()))
        } else {
            None
        };
        self.finish(a, &decision, result).await
    }

    /// The record of an approved plan not carried out (`why`, after "approved by <who> at <when>,
    /// but": the live state moved since it was asked, or it cannot be carried out where it is):
    /// skipped, nothing claimed, the approval named.
    pub async fn stale_approval(&self, a: &ProposedAction, why: &str) -> Result<AuditRecord> {
        let Some((id, by)) = &self.approved else {
            return Err(NbaopsError::InvalidEvent(
                "a stale approval without an approval".into(),
            ));
        };
        let note = format!(
            "approved by {} at {}, but {why}",
            by.by,
            by.at.format("%Y-%m-%d %H:%M UTC")
        );
        let d = Decision {
            proceed: false,
            dry_run: false,
            stopped_by: None,
            steps: vec![step(GuardStep::ChangeWindow, true, note.clone())],
            emergency_change: false,
            ask: None,
            claimed: false,
        };
        let mut rec = self.record(a, &d, Outcome::Skipped, None);
        let e = &a.explanation;
        let verb = if e.verb.is_empty() {
            &a.action
        } else {
            &e.verb
        };
        let change = if e.change.is_empty() {
            &a.resource
        } else {
            &e.change
        };
        rec.sentence = format!("Did not {verb} {change}: {}; {note}.", e.because());
        rec.approval_id = Some(id.clone());
        write_audit_with(self.cfg, self.ledger, self.notifier, &rec, Vec::new()).await?;
        Ok(rec)
    }

    /// Stores the request a decision asks for: the exact plan, its sentence, the expiry and the
    /// approvers from config. A retried event finds its request there and asks nothing new.
    async fn ask_approval(&self, a: &ProposedAction, ask: &Ask, sentence: String) -> Result<()> {
        let req = ApprovalRequest {
            id: ask.id.clone(),
            env: self.cfg.env.to_string(),
            function: self.cfg.function.clone(),
            event_id: self.event_id.clone(),
            action: a.clone(),
            sentence,
            requested_at: self.now,
            expires_at: ask.until,
            on_timeout: self.cfg.approval.on_timeout,
            approvers: self.cfg.approval.approvers.clone(),
            state: ApprovalState::Pending,
            decided: None,
            outcome: None,
            origin: self.origin.clone(),
        };
        if !req.create(self.ledger).await? {
            tracing::info!(id = %ask.id, "approval already asked by an earlier delivery");
        }
        Ok(())
    }

    /// Records the result. `result` is `None` when nothing was attempted. The claim's fate (done,
    /// or released so a retry may try again) goes in the same ledger write as the audit record.
    pub async fn finish(
        &self,
        a: &ProposedAction,
        d: &Decision,
        result: Option<std::result::Result<(), String>>,
    ) -> Result<AuditRecord> {
        let a = &*self.qualified(a);
        let (outcome, error) = match (&result, d.proceed, d.stopped_by) {
            (Some(Ok(())), true, _) => (Outcome::Acted, None),
            (Some(Err(e)), _, _) => (Outcome::Failed, Some(e.clone())),
            (None, false, _) if d.ask.is_some() => (Outcome::NeedsApproval, None),
            (_, _, Some(_)) => (Outcome::Skipped, None),
            (_, false, None) if d.dry_run => (Outcome::WouldAct, None),
            _ => (Outcome::Skipped, None),
        };
        let (ipk, isk) = idem_key(&self.event_id, a);
        let (cpk, csk) = cooldown_key(a);
        let mut writes = Vec::new();
        if d.claimed {
            if outcome == Outcome::Acted {
                let expires = self.now.timestamp() + self.cfg.guard.idempotency_ttl_hours * 3600;
                writes.push(LedgerWrite::put(
                    &ipk,
                    &isk,
                    json!({"at": self.now.to_rfc3339(), "request_id": self.request_id, "state": "done", "after": a.after}),
                    Some(expires),
                ));
            } else {
                // Nothing happened: release the claim and the cooldown so a retry may try again.
                writes.push(LedgerWrite::delete(&ipk, &isk));
                writes.push(LedgerWrite::delete(&cpk, &csk));
            }
        }
        if let (Outcome::NeedsApproval, Some(ask), false) = (outcome, &d.ask, d.dry_run) {
            self.ask_approval(a, ask, explain::sentence(a, d, outcome, None))
                .await?;
        }
        let rec = self.record(a, d, outcome, error);
        write_audit_with(self.cfg, self.ledger, self.notifier, &rec, writes).await?;
        Ok(rec)
    }

    fn record(
        &self,
        a: &ProposedAction,
        d: &Decision,
        outcome: Outcome,
        error: Option<String>,
    ) -> AuditRecord {
        AuditRecord {
            schema: AUDIT_SCHEMA.into(),
            at: self.now,
            env: self.cfg.env.to_string(),
            function: self.cfg.function.clone(),
            request_id: self.request_id.clone(),
            event_id: self.event_id.clone(),
            action: a.action.clone(),
            resource: a.resource.clone(),
            reason: a.reason.clone(),
            severity: a.severity,
            outcome,
            dry_run: d.dry_run,
            stopped_by: d.stopped_by,
            emergency_change: d.emergency_change,
            steps: d.steps.clone(),
            before: a.before.clone(),
            after: a.after.clone(),
            sentence: explain::sentence(a, d, outcome, error.as_deref()),
            error,
            explanation: a.explanation.clone(),
            approval_id: match (&d.ask, &self.approved) {
                (Some(ask), _) => Some(ask.id.clone()),
                (None, Some((id, _))) => Some(id.clone()),
                _ => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{layer, Env};
    use crate::fakes::{FakeLedger, FakeNotifier, FakeParams};
    use chrono::TimeZone;

    fn cfg(pairs: &[(&str, &str)]) -> Config {
        let vars = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let s = layer(Env::Dev, &vars, &Default::default()).unwrap();
        Config::from_settings(Env::Dev, "scale-on-alarm", s).unwrap()
    }

    fn action() -> ProposedAction {
        ProposedAction {
            action: "asg.scale_out".into(),
            resource: "asg:web".into(),
            tags: Tags::new(),
            reason: "cpu".into(),
            severity: Severity::P3,
            disruptive: false,
            bounds: Some(Bounds {
                proposed: 3.0,
                min: 2.0,
                max: 4.0,
            }),
            cooldown_key: "asg.scale".into(),
            cooldown_seconds: 300,
            before: json!({"desired": 2}),
            after: json!({"desired": 3}),
            explanation: Explanation::new("scale", "Scaled", "web 2 → 3", "SPEC 2.5")
                .observe(Observation::against("CPU", 75.0, "%", ">", 70.0)),
        }
    }

    // Tuesday 2026-11-24 21:00 UTC is inside the default window (Tue/Thu 20:00-23:00 UTC).
    fn tuesday_evening() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 21, 0, 0).unwrap()
    }
    fn wednesday_noon() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }

    #[test]
    fn change_window_days_hours_and_midnight() {
        let c = cfg(&[]);
        assert!(in_change_window(&c.guard.window, tuesday_evening()));
        assert!(!in_change_window(&c.guard.window, wednesday_noon()));
        assert!(!in_change_window(
            &c.guard.window,
            Utc.with_ymd_and_hms(2026, 11, 24, 23, 0, 0).unwrap()
        ));
        let c = cfg(&[
            ("NBAOPS_GUARD__WINDOW__START", "22:00"),
            ("NBAOPS_GUARD__WINDOW__END", "02:00"),
        ]);
        // Wednesday 01:00 belongs to Tuesday's window.
        assert!(in_change_window(
            &c.guard.window,
            Utc.with_ymd_and_hms(2026, 11, 25, 1, 0, 0).unwrap()
        ));
        let c = cfg(&[("NBAOPS_GUARD__WINDOW__TZ", "America/New_York")]);
        // 21:00 UTC is 16:00 in New York: closed.
        assert!(!in_change_window(&c.guard.window, tuesday_evening()));
    }

    async fn run(
        c: &Config,
        a: &ProposedAction,
        ledger: &FakeLedger,
        now: DateTime<Utc>,
    ) -> AuditRecord {
        let n = FakeNotifier::default();
        let sw = Switches::default();
        let mut g = Guard::new(
            GuardPorts {
                cfg: c,
                ledger,
                notifier: &n,
                params: None,
                switches: &sw,
            },
            "evt-1",
            "req-1",
            now,
        );
        let d = g.check(a).await.unwrap();
        let result = if d.proceed { Some(Ok(())) } else { None };
        g.finish(a, &d, result).await.unwrap()
    }

    #[tokio::test]
    async fn each_step_stops_and_is_named() {
        let l = FakeLedger::default();
        let r = run(
            &cfg(&[("NBAOPS_GUARD__KILL_SWITCH", "true")]),
            &action(),
            &l,
            wednesday_noon(),
        )
        .await;
        assert_eq!(
            (r.outcome, r.stopped_by),
            (Outcome::Skipped, Some(GuardStep::KillSwitch))
        );

        let r = run(
            &cfg(&[("NBAOPS_GUARD__DRY_RUN", "true")]),
            &action(),
            &l,
            wednesday_noon(),
        )
        .await;
        assert_eq!(
            (r.outcome, r.stopped_by, r.dry_run),
            (Outcome::WouldAct, None, true)
        );
        assert_eq!(l.len_with_prefix("idem#"), 0, "dry-run must not claim");

        let mut a = action();
        a.tags.insert("nbaops:protect".into(), "TRUE".into());
        let r = run(&cfg(&[]), &a, &l, wednesday_noon()).await;
        assert_eq!(r.stopped_by, Some(GuardStep::ProtectedTag));

        let mut a = action();
        a.bounds = Some(Bounds {
            proposed: 5.0,
            min: 2.0,
            max: 4.0,
        });
        assert_eq!(
            run(&cfg(&[]), &a, &l, wednesday_noon()).await.stopped_by,
            Some(GuardStep::Bounds)
        );

        let mut a = action();
        a.disruptive = true;
        assert_eq!(
            run(&cfg(&[]), &a, &l, wednesday_noon()).await.stopped_by,
            Some(GuardStep::ChangeWindow)
        );
        a.severity = Severity::P1;
        let r = run(&cfg(&[]), &a, &l, wednesday_noon()).await;
        assert_eq!((r.outcome, r.emergency_change), (Outcome::Acted, true));
        // That success started the cooldown for the group: another event is stopped by it.
        let n = FakeNotifier::default();
        let sw = Switches::default();
        let c = cfg(&[]);
        let later = wednesday_noon() + chrono::Duration::seconds(60);
        let mut g = Guard::new(
            GuardPorts {
                cfg: &c,
                ledger: &l,
                notifier: &n,
                params: None,
                switches: &sw,
            },
            "evt-2",
            "req-2",
            later,
        );
        assert_eq!(
            g.check(&action()).await.unwrap().stopped_by,
            Some(GuardStep::Cooldown)
        );
        // The same event again is idempotency's to stop.
        let r = run(&c, &action(), &l, later).await;
        assert_eq!(r.stopped_by, Some(GuardStep::Idempotency));
        assert!(l.len_with_prefix("audit#asg:web") >= 7);
    }

    #[tokio::test]
    async fn the_record_carries_the_explanation_and_its_sentence() {
        let l = FakeLedger::default();
        let a = action();
        let r = run(&cfg(&[]), &a, &l, wednesday_noon()).await;
        assert_eq!(r.explanation, a.explanation);
        assert!(
            r.sentence.starts_with("Scaled web 2 → 3: CPU 75 % > 70 %"),
            "{}",
            r.sentence
        );
        assert_eq!(r.explained(), r.sentence);
        // Stored in the ledger as it was rendered.
        let trail = audit_trail(&l, "asg:web").await.unwrap();
        assert_eq!(
            trail.last().map(|t| t.sentence.clone()),
            Some(r.sentence.clone())
        );
        // Stopped: the same rule and numbers, and the step that stopped it.
        let r = run(
            &cfg(&[("NBAOPS_GUARD__KILL_SWITCH", "true")]),
            &a,
            &l,
            wednesday_noon(),
        )
        .await;
        assert!(
            r.sentence
                .starts_with("Did not scale web 2 → 3: CPU 75 % > 70 %")
                && r.sentence
                    .ends_with("stopped by kill switch (kill switch is on)."),
            "{}",
            r.sentence
        );
        // A record written before explanations existed still decodes, and still reads.
        let mut old = serde_json::to_value(&r).unwrap();
        let o = old.as_object_mut().unwrap();
        o.remove("explanation");
        o.remove("sentence");
        let old: AuditRecord = serde_json::from_value(old).unwrap();
        assert_eq!(old.sentence, "");
        assert!(old.explained().contains("stopped by guard 'kill_switch'"));
    }

    #[tokio::test]
    async fn blast_radius_and_idempotency() {
        let c = cfg(&[("NBAOPS_GUARD__BLAST__MAX_ACTIONS", "2")]);
        let l = FakeLedger::default();
        let n = FakeNotifier::default();
        let sw = Switches::default();
        let mut g = Guard::new(
            GuardPorts {
                cfg: &c,
                ledger: &l,
                notifier: &n,
                params: None,
                switches: &sw,
            },
            "evt-9",
            "req",
            wednesday_noon(),
        )
        .with_fleet_size(10);
        let mut outcomes = vec![];
        for i in 0..3 {
            let mut a = action();
            a.resource = format!("asg:g{i}");
            outcomes.push(g.check(&a).await.unwrap().stopped_by);
        }
        assert_eq!(outcomes, vec![None, None, Some(GuardStep::BlastRadius)]);
        // Same event, same action, second delivery: refused by idempotency.
        let mut g2 = Guard::new(
            GuardPorts {
                cfg: &c,
                ledger: &l,
                notifier: &n,
                params: None,
                switches: &sw,
            },
            "evt-9",
            "req2",
            wednesday_noon(),
        );
        let mut a = action();
        a.resource = "asg:g0".into();
        assert_eq!(
            g2.check(&a).await.unwrap().stopped_by,
            Some(GuardStep::Idempotency)
        );
    }

    #[tokio::test]
    async fn unreadable_switches_mean_no_action() {
        let c = cfg(&[]);
        let p = FakeParams::default();
        *p.fail.lock().unwrap() = true;
        let (l, n, sw) = (
            FakeLedger::default(),
            FakeNotifier::default(),
            Switches::default(),
        );
        let mut g = Guard::new(
            GuardPorts {
                cfg: &c,
                ledger: &l,
                notifier: &n,
                params: Some(&p),
                switches: &sw,
            },
            "e",
            "r",
            wednesday_noon(),
        );
        let d = g.check(&action()).await.unwrap();
        assert!(!d.proceed);
        assert_eq!(d.stopped_by, Some(GuardStep::KillSwitch));
        // And a live flip through SSM is seen.
        let p = FakeParams::with(&[("/nbaops/dev/guard/kill_switch", "on")]);
        let sw = Switches::default();
        let mut g = Guard::new(
            GuardPorts {
                cfg: &c,
                ledger: &l,
                notifier: &n,
                params: Some(&p),
                switches: &sw,
            },
            "e2",
            "r",
            wednesday_noon(),
        );
        assert_eq!(
            g.check(&action()).await.unwrap().stopped_by,
            Some(GuardStep::KillSwitch)
        );
    }

    #[tokio::test]
    async fn a_stalled_claim_is_refused_until_its_deadline_then_taken_over() {
        let c = cfg(&[]);
        let (l, n, sw) = (
            FakeLedger::default(),
            FakeNotifier::default(),
            Switches::default(),
        );
        let t0 = wednesday_noon();
        let deadline = t0 + chrono::Duration::seconds(60);
        let mut g = Guard::new(
            GuardPorts {
                cfg: &c,
                ledger: &l,
                notifier: &n,
                params: None,
                switches: &sw,
            },
            "evt",
            "req-1",
            t0,
        )
        .with_deadline(Some(deadline));
        assert!(g.check(&action()).await.unwrap().proceed, "claimed");
        // req-1 dies here. A retry before its deadline is refused, naming it.
        let mut g = Guard::new(
            GuardPorts {
                cfg: &c,
                ledger: &l,
                notifier: &n,
                params: None,
                switches: &sw,
            },
            "evt",
            "req-2",
            t0 + chrono::Duration::seconds(30),
        );
        let d = g.check(&action()).await.unwrap();
        assert_eq!(d.stopped_by, Some(GuardStep::Idempotency));
        assert!(
            d.steps[7]
                .note
                .contains("in progress by request req-1 until"),
            "{:?}",
            d.steps
        );
        // After it: taken over, and the action goes on; another event is then held by the cooldown.
        let later = deadline + chrono::Duration::seconds(1);
        let mut g = Guard::new(
            GuardPorts {
                cfg: &c,
                ledger: &l,
                notifier: &n,
                params: None,
                switches: &sw,
            },
            "evt",
            "req-3",
            later,
        );
        let d = g.check(&action()).await.unwrap();
        assert!(d.proceed, "{:?}", d.steps);
        assert!(
            d.steps[7]
                .note
                .contains("took over the claim of request req-1"),
            "{:?}",
            d.steps
        );
        let r = g.finish(&action(), &d, Some(Ok(()))).await.unwrap();
        assert_eq!(r.outcome, Outcome::Acted);
        let mut g = Guard::new(
            GuardPorts {
                cfg: &c,
                ledger: &l,
                notifier: &n,
                params: None,
                switches: &sw,
            },
            "evt",
            "req-4",
            later,
        );
        assert_eq!(
            g.check(&action()).await.unwrap().stopped_by,
            Some(GuardStep::Idempotency)
        );
        let mut g = Guard::new(
            GuardPorts {
                cfg: &c,
                ledger: &l,
                notifier: &n,
                params: None,
                switches: &sw,
            },
            "evt-other",
            "req-5",
            later,
        );
        assert_eq!(
            g.check(&action()).await.unwrap().stopped_by,
            Some(GuardStep::Cooldown)
        );
    }

    #[tokio::test]
    async fn a_stalled_claim_whose_change_happened_is_marked_done_not_repeated() {
        let c = cfg(&[]);
        let (l, n, sw) = (
            FakeLedger::default(),
            FakeNotifier::default(),
            Switches::default(),
        );
        let t0 = wednesday_noon();
        let mut g = Guard::new(
            GuardPorts {
                cfg: &c,
                ledger: &l,
                notifier: &n,
                params: None,
                switches: &sw,
            },
            "evt",
            "req-1",
            t0,
        )
        .with_deadline(Some(t0));
        assert!(g.check(&action()).await.unwrap().proceed);
        // req-1's change (desired 2 -> 3) took effect, then it died: now desired is 3.
        let mut a = action();
        a.before = json!({"desired": 3});
        a.after = json!({"desired": 4});
        let mut g = Guard::new(
            GuardPorts {
                cfg: &c,
                ledger: &l,
                notifier: &n,
                params: None,
                switches: &sw,
            },
            "evt",
            "req-2",
            t0 + chrono::Duration::seconds(5),
        );
        let d = g.check(&a).await.unwrap();
        assert_eq!(d.stopped_by, Some(GuardStep::Idempotency), "{:?}", d.steps);
        assert!(
            d.steps[7].note.contains("marked done, not repeated"),
            "{:?}",
            d.steps
        );
    }

    #[tokio::test]
    async fn unreadable_ledger_state_stops_the_action_with_a_p2() {
        let c = cfg(&[(
            "NBAOPS_ALERTS_TOPIC_ARN",
            "arn:aws:sns:us-east-1:123456789012:alerts",
        )]);
        let (l, n, sw) = (
            FakeLedger::default(),
            FakeNotifier::default(),
            Switches::default(),
        );
        l.put(
            "cooldown#asg:web",
            "asg.scale",
            &json!({"at": "yesterday-ish"}),
            None,
        )
        .await
        .unwrap();
        let mut g = Guard::new(
            GuardPorts {
                cfg: &c,
                ledger: &l,
                notifier: &n,
                params: None,
                switches: &sw,
            },
            "evt",
            "req",
            wednesday_noon(),
        );
        let d = g.check(&action()).await.unwrap();
        assert!(!d.proceed);
        assert_eq!(d.stopped_by, Some(GuardStep::Cooldown));
        assert!(d.steps[4].note.contains("unreadable"), "{:?}", d.steps);
        assert!(
            n.published().iter().any(|p| p.message.contains("\"P2\"")),
            "{:?}",
            n.published()
        );
        // A newer version's extra field is not an error.
        let newer = json!({"at": wednesday_noon().to_rfc3339(), "request_id": "r", "state": "done", "written_by": "v9", "deadline": wednesday_noon().to_rfc3339()});
        assert_eq!(
            serde_json::from_value::<Claim>(newer).unwrap().state,
            "done"
        );
        let mark = json!({"at": wednesday_noon().to_rfc3339(), "event_id": "e", "shard": 3});
        assert!(serde_json::from_value::<CooldownMark>(mark).is_ok());
    }
}

#[cfg(test)]
mod approval_tests {
    use super::*;
    use crate::config::{layer, Env};
    use crate::fakes::{FakeLedger, FakeNotifier};
    use chrono::TimeZone;

    fn cfg(policy: &str, dry: bool) -> Config {
        let vars = [
            ("NBAOPS_APPROVAL__RDS__MODIFY_CLASS", policy),
            ("NBAOPS_GUARD__DRY_RUN", if dry { "true" } else { "false" }),
            ("NBAOPS_APPROVAL__APPROVERS", "alice, bob"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let s = layer(Env::Dev, &vars, &Default::default()).unwrap();
        Config::from_settings(Env::Dev, "scale-on-alarm", s).unwrap()
    }

    fn class_change(severity: Severity) -> ProposedAction {
        ProposedAction {
            action: "rds.modify_class".into(),
            resource: "rds:db".into(),
            tags: Tags::new(),
            reason: "memory".into(),
            severity,
            disruptive: true,
            bounds: None,
            cooldown_key: "rds.class".into(),
            cooldown_seconds: 3600,
            before: json!({"class": "db.t3.micro", "status": "available"}),
            after: json!({"class": "db.t3.small", "apply_immediately": true}),
            explanation: Explanation::new("move", "Moved", "db micro → small", "SPEC 2.5"),
        }
    }

    fn tuesday_evening() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 21, 0, 0).unwrap()
    }
    fn wednesday_noon() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }

    async fn run_with(
        c: &Config,
        a: &ProposedAction,
        l: &FakeLedger,
        now: DateTime<Utc>,
        approved: Option<Decided>,
    ) -> AuditRecord {
        let (n, sw) = (FakeNotifier::default(), Switches::default());
        let mut g = Guard::new(
            GuardPorts {
                cfg: c,
                ledger: l,
                notifier: &n,
                params: None,
                switches: &sw,
            },
            "evt-1",
            "req-1",
            now,
        );
        if let Some(d) = approved {
            g = g.with_approval("abc", d);
        }
        let d = g.check(a).await.unwrap();
        let result = if d.proceed { Some(Ok(())) } else { None };
        g.finish(a, &d, result).await.unwrap()
    }

    #[tokio::test]
    async fn the_policy_matrix() {
        use Outcome::*;
        // (policy, in window, severity) -> outcome when live; dry-run turns Acted into WouldAct.
        let cases = [
            ("never", true, Severity::P2, Acted),
            ("never", false, Severity::P1, Acted),
            ("never", false, Severity::P2, Skipped),
            ("outside_window", true, Severity::P2, Acted),
            ("outside_window", false, Severity::P1, Acted),
            ("outside_window", false, Severity::P2, NeedsApproval),
            ("always", true, Severity::P2, NeedsApproval),
            ("always", true, Severity::P1, NeedsApproval),
            ("always", false, Severity::P1, NeedsApproval),
            ("always", false, Severity::P2, NeedsApproval),
        ];
        for (policy, inside, sev, want) in cases {
            for dry in [false, true] {
                let l = FakeLedger::default();
                let now = if inside {
                    tuesday_evening()
                } else {
                    wednesday_noon()
                };
                let r = run_with(&cfg(policy, dry), &class_change(sev), &l, now, None).await;
                let want = if dry && want == Acted { WouldAct } else { want };
                let case = format!("{policy} inside={inside} {sev:?} dry={dry}: {}", r.sentence);
                assert_eq!(r.outcome, want, "{case}");
                let stored = l.len_with_prefix("approval#");
                if want == NeedsApproval {
                    assert_eq!(r.stopped_by, Some(GuardStep::ChangeWindow), "{case}");
                    let id = approval_id("evt-1", "rds.modify_class", "rds:db");
                    assert_eq!(r.approval_id.as_deref(), Some(id.as_str()), "{case}");
                    if dry {
                        assert_eq!(stored, 0, "dry-run asks nobody: {case}");
                        assert!(
                            r.sentence.starts_with("Would ask for approval to move db"),
                            "{case}"
                        );
                    } else {
                        assert_eq!(stored, 1, "{case}");
                        assert!(
                            r.sentence.starts_with(&format!(
                                "Asked for approval to move db micro → small until {} (id {id})",
                                (now + chrono::Duration::minutes(60)).format("%Y-%m-%d %H:%M UTC")
                            )),
                            "{case}"
                        );
                        let req = ApprovalRequest::load(&l, "dev", &id)
                            .await
                            .unwrap()
                            .unwrap();
                        assert_eq!(req.state, ApprovalState::Pending);
                        assert_eq!(req.action, class_change(sev));
                        assert_eq!(req.approvers, vec!["alice", "bob"]);
                        assert_eq!(req.expires_at, now + chrono::Duration::minutes(60));
                        assert_eq!(req.sentence, r.sentence);
                    }
                } else {
                    assert_eq!(stored, 0, "{case}");
                    assert_eq!(r.approval_id, None, "{case}");
                }
            }
        }
    }

    #[tokio::test]
    async fn every_other_step_still_applies_and_an_approval_passes_the_window_only() {
        let c = cfg("always", false);
        let l = FakeLedger::default();
        let mut a = class_change(Severity::P2);
        a.tags.insert("nbaops:protect".into(), "true".into());
        let r = run_with(&c, &a, &l, wednesday_noon(), None).await;
        assert_eq!(
            (r.outcome, r.stopped_by),
            (Outcome::Skipped, Some(GuardStep::ProtectedTag)),
            "a protected resource is not even asked about"
        );
        assert_eq!(l.len_with_prefix("approval#"), 0);
        let who = Decided {
            by: "alice".into(),
            from: "cli".into(),
            at: wednesday_noon(),
        };
        let r = run_with(&c, &a, &l, wednesday_noon(), Some(who.clone())).await;
        assert_eq!(
            r.stopped_by,
            Some(GuardStep::ProtectedTag),
            "approved, still protected"
        );
        let a = class_change(Severity::P2);
        let r = run_with(&c, &a, &l, wednesday_noon(), Some(who.clone())).await;
        assert_eq!(r.outcome, Outcome::Acted, "{}", r.sentence);
        assert_eq!(r.approval_id.as_deref(), Some("abc"));
        assert!(r.steps[5]
            .note
            .starts_with("approved by alice at 2026-11-25 12:00"));
        // The cooldown it started stops the next approved run of another event.
        let (n, sw) = (FakeNotifier::default(), Switches::default());
        let mut g = Guard::new(
            GuardPorts {
                cfg: &c,
                ledger: &l,
                notifier: &n,
                params: None,
                switches: &sw,
            },
            "evt-2",
            "req-2",
            wednesday_noon(),
        )
        .with_approval("def", who);
        assert_eq!(
            g.check(&a).await.unwrap().stopped_by,
            Some(GuardStep::Cooldown)
        );
    }

    #[tokio::test]
    async fn one_open_request_per_action_and_resource() {
        let c = cfg("always", false);
        let l = FakeLedger::default();
        let a = class_change(Severity::P2);
        let ask = |event: &'static str, now: DateTime<Utc>| {
            let (c, l, a) = (&c, &l, &a);
            async move {
                let (n, sw) = (FakeNotifier::default(), Switches::default());
                let mut g = Guard::new(
                    GuardPorts {
                        cfg: c,
                        ledger: l,
                        notifier: &n,
                        params: None,
                        switches: &sw,
                    },
                    event,
                    "req",
                    now,
                );
                let d = g.check(a).await.unwrap();
                g.finish(a, &d, None).await.unwrap()
            }
        };
        let t0 = wednesday_noon();
        let first = ask("evt-1", t0).await;
        let id = approval_id("evt-1", "rds.modify_class", "rds:db");
        assert_eq!(first.approval_id.as_deref(), Some(id.as_str()));
        // A later event for the same change is pointed to the open request: nothing new stored.
        let second = ask("evt-2", t0 + chrono::Duration::minutes(5)).await;
        assert_eq!(second.outcome, Outcome::NeedsApproval);
        assert_eq!(second.approval_id.as_deref(), Some(id.as_str()));
        assert_eq!(l.len_with_prefix("approval#"), 1);
        // Another resource is its own request.
        let mut other = class_change(Severity::P2);
        other.resource = "rds:db2".into();
        let (n, sw) = (FakeNotifier::default(), Switches::default());
        let mut g = Guard::new(
            GuardPorts {
                cfg: &c,
                ledger: &l,
                notifier: &n,
                params: None,
                switches: &sw,
            },
            "evt-3",
            "req",
            t0,
        );
        let d = g.check(&other).await.unwrap();
        assert_ne!(d.ask.map(|k| k.id), Some(id.clone()));
        // Denied, or past its expiry: the next event asks anew.
        let req = ApprovalRequest::load(&l, "dev", &id)
            .await
            .unwrap()
            .unwrap();
        req.transition(&l, ApprovalState::Denied, |_| {})
            .await
            .unwrap();
        let third = ask("evt-4", t0 + chrono::Duration::minutes(10)).await;
        let id4 = approval_id("evt-4", "rds.modify_class", "rds:db");
        assert_eq!(third.approval_id.as_deref(), Some(id4.as_str()));
        let late = ask("evt-5", t0 + chrono::Duration::minutes(80)).await;
        assert_eq!(
            late.approval_id.as_deref(),
            Some(approval_id("evt-5", "rds.modify_class", "rds:db").as_str()),
            "the request of evt-4 expired at +70 min"
        );
    }

    #[test]
    fn only_actions_whose_owner_carries_approvals_out_may_ask() {
        let vars = [("NBAOPS_APPROVAL__PG__VACUUM_FULL", "always")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let s = layer(Env::Dev, &vars, &Default::default()).unwrap();
        let e = Config::from_settings(Env::Dev, "vacuum-trigger", s)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("approval.pg.vacuum_full"), "{e}");
        let c = cfg("never", false);
        assert_eq!(c.approval.policy("pg.vacuum_full"), ApprovalPolicy::Never);
        assert_eq!(c.approval.timeout_minutes, 60);
        assert_eq!(c.approval.on_timeout, OnTimeout::Deny);
        let bad = [("NBAOPS_APPROVAL__RDS__MODIFY_CLASS", "sometimes")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let s = layer(Env::Dev, &bad, &Default::default()).unwrap();
        assert!(Config::from_settings(Env::Dev, "scale-on-alarm", s).is_err());
    }
}
