//! Human approval of a disruptive action (issue #19): the request as the ledger holds it, and its
//! one-way life — pending, then approved / denied / expired, then (approved only) used once.
//!
//! One item per request under `approval#<env>` / `<id>`. Every change of state is a
//! compare-and-swap on the whole item ([`Expect::Holds`]): two clicks on one link, a click racing
//! the expiry sweep, a replayed POST — exactly one of them changes the state, the others read
//! what happened. The item holds the plan's exact parameters (the [`ProposedAction`], with its
//! before/after and explanation), so what is approved is what is done, or nothing.

use chrono::{DateTime, Timelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ProposedAction;
use crate::error::{NbaopsError, Result};
use crate::ports::{Expect, Ledger, LedgerWrite};

/// The ledger partition of an environment's approval requests.
pub fn approvals_pk(env: &str) -> String {
    format!("approval#{env}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApprovalState {
    Pending,
    Approved,
    Denied,
    Expired,
    /// Approved and carried out (acted, or refused by the live re-check): never again.
    Used,
}

/// What happens when nobody answers before `expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnTimeout {
    #[default]
    Deny,
    Approve,
}

/// Who decided, from where, when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decided {
    /// The approver named in the signed link (or the operator of the CLI), or "timeout".
    pub by: String,
    /// The source address of the request ("cli", "timeout" where there is none).
    pub from: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// Stable for one event's action on one resource ([`approval_id`]): a retried event finds
    /// its request instead of asking twice.
    pub id: String,
    pub env: String,
    /// The function that proposed the action and carries it out once approved.
    pub function: String,
    pub event_id: String,
    /// The plan, exactly: carried out as written or not at all.
    pub action: ProposedAction,
    /// The sentence of the decision that asked for approval.
    pub sentence: String,
    pub requested_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub on_timeout: OnTimeout,
    /// Who may approve (names as in the signed links); empty: anyone holding a valid link.
    pub approvers: Vec<String>,
    pub state: ApprovalState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided: Option<Decided>,
    /// What carrying it out came to (the audit sentence), once used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The fleet member (account and region) the action is in (issue #20); `None`: the hub's own
    /// (and every request stored before members could ask). The action's resource is then
    /// qualified `<resource>@<account>/<region>`; the owner carries it out there, with that
    /// member's clients, or not at all ([`crate::runtime::approved`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<crate::fleet::Origin>,
}

/// The id of the approval of `action` asked by `event_id`: 16 hex digits of SHA-256 over the
/// event, the action and the resource, safe in a URL and a schedule name.
pub fn approval_id(event_id: &str, action: &str, resource: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{event_id}\n{action}\n{resource}").as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl ApprovalRequest {
    /// How long the item is kept after it expires (the audit records keep the story longer).
    const KEEP_SECONDS: i64 = 30 * 86_400;

    fn ttl(&self) -> i64 {
        self.expires_at.timestamp() + Self::KEEP_SECONDS
    }

    fn value(&self) -> Result<Value> {
        serde_json::to_value(self)
            .map_err(|e| NbaopsError::InvalidEvent(format!("approval not serialisable: {e}")))
    }

    /// Stores a new request. `Ok(false)`: one with this id already exists (a retried event).
    pub async fn create(&self, ledger: &dyn Ledger) -> Result<bool> {
        ledger
            .put_if_absent(
                &approvals_pk(&self.env),
                &self.id,
                &self.value()?,
                self.ttl(),
            )
            .await
    }

    /// The request `id` of `env`. `Err` when an item is there but unreadable: never "none".
    pub async fn load(ledger: &dyn Ledger, env: &str, id: &str) -> Result<Option<ApprovalRequest>> {
        match ledger.get(&approvals_pk(env), id).await? {
            None => Ok(None),
            Some(v) => serde_json::from_value(v).map(Some).map_err(|e| {
                NbaopsError::InvalidEvent(format!("approval {id} of {env} unreadable: {e}"))
            }),
        }
    }

    /// Every request of `env` (any state), oldest id order; unreadable items are returned as
    /// errors beside the readable ones.
    pub async fn all(
        ledger: &dyn Ledger,
        env: &str,
    ) -> Result<Vec<std::result::Result<ApprovalRequest, String>>> {
        Ok(ledger
            .query(&approvals_pk(env), "")
            .await?
            .into_iter()
            .map(|(sk, v)| serde_json::from_value(v).map_err(|e| format!("{sk}: {e}")))
            .collect())
    }

    /// The request still open for `action` on `resource` in `env` at `now`, if any: pending and
    /// not past its expiry, or approved and not yet used. A second run that would ask for the same
    /// change is pointed to it instead of asking (and alerting) again. Unreadable items are skipped
    /// here (`nbaops status` names them).
    pub async fn open_for(
        ledger: &dyn Ledger,
        env: &str,
        action: &str,
        resource: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ApprovalRequest>> {
        Ok(Self::all(ledger, env)
            .await?
            .into_iter()
            .filter_map(std::result::Result::ok)
            .filter(|r| r.action.action == action && r.action.resource == resource)
            .find(|r| match r.state {
                ApprovalState::Pending => !r.expired_at(now),
                ApprovalState::Approved => true,
                _ => false,
            }))
    }

    /// `self` moved to `next` (with `change` applied) only if the stored item is still exactly
    /// `self`. `Ok(Some(new))` when this call changed it; `Ok(None)` when someone else did first
    /// (read it again to see what happened).
    pub async fn transition(
        &self,
        ledger: &dyn Ledger,
        next: ApprovalState,
        change: impl FnOnce(&mut ApprovalRequest),
    ) -> Result<Option<ApprovalRequest>> {
        let mut new = self.clone();
        new.state = next;
        change(&mut new);
        let write = LedgerWrite::put(
            &approvals_pk(&self.env),
            &self.id,
            new.value()?,
            Some(new.ttl()),
        )
        .expecting(vec![Expect::Holds(self.value()?)]);
        match ledger.write_all(&[write]).await? {
            None => Ok(Some(new)),
            Some(_) => Ok(None),
        }
    }

    /// True when nobody may decide any more at `now` (past its expiry).
    pub fn expired_at(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires_at
    }
}

/// An approver's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Approve,
    Deny,
}

/// What one decision on a request came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// This call decided: the request as now stored (approved or denied).
    Decided(ApprovalRequest),
    /// Someone (or the timeout) decided before: nothing changed.
    AlreadyDecided(ApprovalRequest),
    /// Past its expiry: nothing changed (the expiry sweep applies `on_timeout`).
    Expired(ApprovalRequest),
    /// The named approver is not among the request's approvers: nothing changed.
    NotAnApprover(ApprovalRequest),
    NotFound,
}

/// One answer to request `id`: approve or deny it if, at `who.at`, it is pending, unexpired and
/// `who.by` may approve; exactly once however many answers race. The caller that gets
/// [`Decision::Decided`] with an approval invokes the owning function with [`approved_input`]
/// (alert-router's POST, `nbaops approve`); every caller audits what it got.
pub async fn decide(
    ledger: &dyn Ledger,
    env: &str,
    id: &str,
    verdict: Verdict,
    who: Decided,
) -> Result<Decision> {
    let Some(req) = ApprovalRequest::load(ledger, env, id).await? else {
        return Ok(Decision::NotFound);
    };
    if req.state != ApprovalState::Pending {
        return Ok(Decision::AlreadyDecided(req));
    }
    if req.expired_at(who.at) {
        return Ok(Decision::Expired(req));
    }
    if !req.approvers.is_empty() && !req.approvers.iter().any(|a| a == &who.by) {
        return Ok(Decision::NotAnApprover(req));
    }
    let next = match verdict {
        Verdict::Approve => ApprovalState::Approved,
        Verdict::Deny => ApprovalState::Denied,
    };
    match req
        .transition(ledger, next, |n| n.decided = Some(who))
        .await?
    {
        Some(new) => Ok(Decision::Decided(new)),
        None => match ApprovalRequest::load(ledger, env, id).await? {
            Some(now) => Ok(Decision::AlreadyDecided(now)),
            None => Ok(Decision::NotFound),
        },
    }
}

/// Every pending request of `env` whose expiry is at or before `now`, moved to what its
/// `on_timeout` says (expired = denied by nobody, or approved by "timeout"), each exactly once
/// (a request decided meanwhile is left as decided). Returns the requests this call moved, as
/// stored, and the unreadable items it skipped (the caller reports those; it never guesses).
pub async fn expire_due(
    ledger: &dyn Ledger,
    env: &str,
    now: DateTime<Utc>,
) -> Result<(Vec<ApprovalRequest>, Vec<String>)> {
    let mut moved = Vec::new();
    let mut unreadable = Vec::new();
    for item in ApprovalRequest::all(ledger, env).await? {
        let req = match item {
            Ok(r) => r,
            Err(e) => {
                unreadable.push(e);
                continue;
            }
        };
        if req.state != ApprovalState::Pending || !req.expired_at(now) {
            continue;
        }
        let next = match req.on_timeout {
            OnTimeout::Deny => ApprovalState::Expired,
            OnTimeout::Approve => ApprovalState::Approved,
        };
        let who = Decided {
            by: "timeout".into(),
            from: "timeout".into(),
            at: now,
        };
        if let Some(new) = req
            .transition(ledger, next, |n| n.decided = Some(who))
            .await?
        {
            moved.push(new);
        }
    }
    Ok((moved, unreadable))
}

/// The task an approved request is carried out by: the owning function receives
/// `{"nbaops": {"task": "approved", "id": <id>, "env": <env>}}` (a one-time schedule's input)
/// and re-checks the live state and every other guard step before acting.
pub const APPROVED_TASK: &str = "approved";

pub fn approved_input(req: &ApprovalRequest) -> Value {
    serde_json::json!({"nbaops": {"task": APPROVED_TASK, "id": req.id, "env": req.env}})
}

/// The name of the one-time schedule that carries out approved request `id`: one per request, so
/// a second dispatch of it (a replayed POST, a retried sweep) creates nothing.
pub fn schedule_name(id: &str) -> String {
    crate::ports::OneTimeSchedule::name_for(&format!("approval-{id}"))
}

/// Sends an approved request to its owning function: a one-time EventBridge Scheduler schedule
/// `approval-<id>` in `group`, one minute after `now`, invoking `target_arn` (the owner's live
/// alias) as `role_arn` with [`approved_input`]. `Ok(true)` when this call created it,
/// `Ok(false)` when it already existed (nothing changed). Anything but an approved request is
/// refused: only an approval is ever carried out.
pub async fn dispatch(
    scheduler: &dyn crate::ports::Scheduler,
    req: &ApprovalRequest,
    group: &str,
    role_arn: &str,
    target_arn: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    if req.state != ApprovalState::Approved {
        return Err(NbaopsError::InvalidEvent(format!(
            "approval {} is {:?}, not approved: not dispatched",
            req.id, req.state
        )));
    }
    let at = now + chrono::Duration::minutes(1);
    let at = at.with_nanosecond(0).unwrap_or(at);
    let schedule = crate::ports::OneTimeSchedule {
        group: group.to_string(),
        name: schedule_name(&req.id),
        at,
        target_arn: target_arn.to_string(),
        role_arn: role_arn.to_string(),
        input: approved_input(req),
    };
    scheduler.create_once(&schedule).await
}

/// The audit record of one answer to approval `id` (a decision is not an action on the platform:
/// it passes no guard step; the approved action passes the owner's guard when carried out).
/// `changed`: this answer moved the request (outcome acted); otherwise it was refused and nothing
/// changed (outcome skipped). `what` says what it came to, in words.
pub struct DecisionAudit<'a> {
    pub env: &'a str,
    pub function: &'a str,
    pub request_id: &'a str,
    pub id: &'a str,
    pub verdict: Verdict,
    pub who: &'a Decided,
    pub request: Option<&'a ApprovalRequest>,
    pub changed: bool,
    pub what: String,
}

impl DecisionAudit<'_> {
    pub fn record(&self) -> super::AuditRecord {
        let verb = match self.verdict {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        };
        let (resource, severity, asked) = match self.request {
            Some(r) => (
                r.action.resource.clone(),
                r.action.severity,
                format!(" ({} {})", r.action.action, r.action.resource),
            ),
            None => (
                format!("approval:{}", self.id),
                crate::alerts::Severity::P3,
                String::new(),
            ),
        };
        let state = |r: Option<&ApprovalRequest>| {
            r.map(|r| serde_json::json!({"approval": r.id, "state": r.state}))
                .unwrap_or(Value::Null)
        };
        super::AuditRecord {
            schema: super::AUDIT_SCHEMA.into(),
            at: self.who.at,
            env: self.env.to_string(),
            function: self.function.to_string(),
            request_id: self.request_id.to_string(),
            event_id: format!("approval-{}", self.id),
            action: format!("approval.{verb}"),
            resource,
            reason: format!("{verb} by {} from {}", self.who.by, self.who.from),
            severity,
            outcome: if self.changed {
                super::Outcome::Acted
            } else {
                super::Outcome::Skipped
            },
            dry_run: false,
            stopped_by: None,
            emergency_change: false,
            steps: Vec::new(),
            before: Value::Null,
            after: state(self.request),
            error: None,
            approval_id: Some(self.id.to_string()),
            explanation: super::Explanation::default(),
            sentence: format!(
                "{} from {} answered {verb} to approval {}{asked} at {}: {}",
                self.who.by,
                self.who.from,
                self.id,
                self.who.at.to_rfc3339(),
                self.what
            ),
        }
    }
}

/// What an answer to a request needs: the deployment's config, the ledger, the notifier the audit
/// records go through, the scheduler an approval is dispatched with, and who answers through what.
/// Shared by alert-router's links and `nbaops approve`/`deny`.
pub struct Answering<'a> {
    pub cfg: &'a crate::config::Config,
    pub ledger: &'a dyn Ledger,
    pub notifier: &'a dyn crate::ports::Notifier,
    /// `None`: nothing is scheduled (`nbaops plan`); the answer says so.
    pub scheduler: Option<&'a dyn crate::ports::Scheduler>,
    pub dispatch: &'a crate::config::alerts::ApprovalDispatch,
    /// The function (or command) recording the answer, and its request id.
    pub function: &'a str,
    pub request_id: &'a str,
}

/// What one answer came to.
#[derive(Debug, Clone, PartialEq)]
pub struct Answered {
    /// This answer decided the request (otherwise it was refused and nothing changed).
    pub decided: bool,
    pub request: Option<ApprovalRequest>,
    /// In words, as audited.
    pub what: String,
}

/// A request's state in words: "approved by alice from 192.0.2.1 at …".
pub fn state_words(r: &ApprovalRequest) -> String {
    let state = serde_json::to_value(r.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    match &r.decided {
        Some(d) => format!(
            "{state} by {} from {} at {}",
            d.by,
            d.from,
            d.at.to_rfc3339()
        ),
        None => state,
    }
}

impl Answering<'_> {
    /// One answer to request `id`: [`decide`]d once, audited, an approval dispatched. A request
    /// found already approved is dispatched again (one schedule per request: nothing new unless
    /// the first dispatch failed), so answering again retries a failed dispatch.
    pub async fn answer(&self, id: &str, verdict: Verdict, who: Decided) -> Result<Answered> {
        let env = self.cfg.env.to_string();
        let d = decide(self.ledger, &env, id, verdict, who.clone()).await?;
        let (req, decided, what) = match d {
            Decision::Decided(r) => {
                let what = if r.state == ApprovalState::Approved {
                    format!("approved; {}", self.dispatch_approved(&r, who.at).await)
                } else {
                    "denied: nothing is done".to_string()
                };
                (Some(r), true, what)
            }
            Decision::AlreadyDecided(r) => {
                let mut what = format!("refused: already {}", state_words(&r));
                if r.state == ApprovalState::Approved {
                    what.push_str(&format!("; {}", self.dispatch_approved(&r, who.at).await));
                }
                (Some(r), false, what)
            }
            Decision::Expired(r) => {
                let what = format!(
                    "refused: the request expired at {}",
                    r.expires_at.to_rfc3339()
                );
                (Some(r), false, what)
            }
            Decision::NotAnApprover(r) => (
                Some(r),
                false,
                format!("refused: {} is not an approver of this request", who.by),
            ),
            Decision::NotFound => (None, false, "refused: no such approval request".into()),
        };
        self.audit(id, verdict, &who, req.as_ref(), decided, &what)
            .await?;
        Ok(Answered {
            decided,
            request: req,
            what,
        })
    }

    /// Sends an approved request to its owner ([`dispatch`]), in words. No target configured for
    /// its function, no scheduler, or the schedule refused: said (a failure logged as an error),
    /// nothing scheduled — the approval stays recorded, and answering it again (a link's POST,
    /// `nbaops approve`) dispatches it again.
    pub async fn dispatch_approved(&self, r: &ApprovalRequest, now: DateTime<Utc>) -> String {
        match self.try_dispatch(r, now).await {
            Ok(words) => words,
            Err(e) => {
                tracing::error!(approval = %r.id, function = %r.function, error = %e, "approved, but its schedule could not be created");
                format!(
                    "NOT dispatched ({e}): answer again (`nbaops approve {} --as NAME`) to retry",
                    r.id
                )
            }
        }
    }

    async fn try_dispatch(&self, r: &ApprovalRequest, now: DateTime<Utc>) -> Result<String> {
        let Some((group, role, target)) = self.dispatch.for_function(&r.function) else {
            tracing::error!(approval = %r.id, function = %r.function, "approved, but alerts.approval.group/role_arn/targets name no target for its function: not dispatched");
            return Ok(format!(
                "NOT dispatched: alerts.approval.group/role_arn/targets have no target for {}",
                r.function
            ));
        };
        let Some(scheduler) = self.scheduler else {
            return Ok(format!(
                "dry-run: would schedule approval-{} for {}",
                r.id, r.function
            ));
        };
        Ok(if dispatch(scheduler, r, group, role, target, now).await? {
            format!(
                "{} carries it out within a minute (schedule approval-{})",
                r.function, r.id
            )
        } else {
            format!(
                "already sent to {} (schedule approval-{})",
                r.function, r.id
            )
        })
    }

    /// The audit record of one answer ([`DecisionAudit`]).
    pub async fn audit(
        &self,
        id: &str,
        verdict: Verdict,
        who: &Decided,
        req: Option<&ApprovalRequest>,
        changed: bool,
        what: &str,
    ) -> Result<()> {
        let env = self.cfg.env.to_string();
        let rec = DecisionAudit {
            env: &env,
            function: self.function,
            request_id: self.request_id,
            id,
            verdict,
            who,
            request: req,
            changed,
            what: what.to_string(),
        }
        .record();
        super::write_audit(self.cfg, self.ledger, self.notifier, &rec).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::FakeLedger;

    fn request(now: DateTime<Utc>) -> ApprovalRequest {
        let action: ProposedAction = serde_json::from_value(serde_json::json!({
            "action": "rds.modify_class", "resource": "rds:db", "reason": "memory",
            "severity": "P2", "disruptive": true, "bounds": null, "cooldown_key": "class",
            "cooldown_seconds": 3600, "before": {"class": "db.t3.micro"},
            "after": {"class": "db.t3.small"},
            "explanation": crate::guard::Explanation::default(),
        }))
        .unwrap();
        ApprovalRequest {
            id: approval_id("ev-1", &action.action, &action.resource),
            env: "dev".into(),
            function: "scale-on-alarm".into(),
            event_id: "ev-1".into(),
            action,
            sentence: "Would change …".into(),
            requested_at: now,
            expires_at: now + chrono::Duration::hours(1),
            on_timeout: OnTimeout::Deny,
            approvers: vec!["alice".into()],
            state: ApprovalState::Pending,
            decided: None,
            outcome: None,
            origin: None,
        }
    }

    #[tokio::test]
    async fn created_once_and_decided_once() {
        let ledger = FakeLedger::default();
        let now = chrono::DateTime::parse_from_rfc3339("2026-06-17T14:00:00Z")
            .unwrap()
            .to_utc();
        let r = request(now);
        assert!(r.create(&ledger).await.unwrap());
        assert!(
            !r.create(&ledger).await.unwrap(),
            "a retried event asks once"
        );
        let loaded = ApprovalRequest::load(&ledger, "dev", &r.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(loaded, r);
        let decided = Decided {
            by: "alice".into(),
            from: "192.0.2.1".into(),
            at: now,
        };
        let approved = loaded
            .transition(&ledger, ApprovalState::Approved, |n| {
                n.decided = Some(decided.clone())
            })
            .await
            .unwrap()
            .unwrap();
        // A second decision from the same (now stale) view changes nothing.
        let again = loaded
            .transition(&ledger, ApprovalState::Denied, |_| {})
            .await
            .unwrap();
        assert!(again.is_none());
        let stored = ApprovalRequest::load(&ledger, "dev", &r.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored, approved);
        assert_eq!(stored.state, ApprovalState::Approved);
        assert_eq!(ApprovalRequest::all(&ledger, "dev").await.unwrap().len(), 1);
    }

    #[test]
    fn ids_are_stable_and_url_safe() {
        let a = approval_id("e", "rds.modify_class", "rds:db");
        assert_eq!(a, approval_id("e", "rds.modify_class", "rds:db"));
        assert_ne!(a, approval_id("f", "rds.modify_class", "rds:db"));
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[tokio::test]
    async fn decide_once_only_by_an_approver_and_before_expiry() {
        let ledger = FakeLedger::default();
        let now = chrono::DateTime::parse_from_rfc3339("2026-06-17T14:00:00Z")
            .unwrap()
            .to_utc();
        let r = request(now);
        r.create(&ledger).await.unwrap();
        let who = |by: &str, at| Decided {
            by: by.into(),
            from: "192.0.2.1".into(),
            at,
        };
        let d = decide(&ledger, "dev", &r.id, Verdict::Approve, who("mallory", now))
            .await
            .unwrap();
        assert!(matches!(d, Decision::NotAnApprover(_)), "{d:?}");
        let late = now + chrono::Duration::hours(2);
        let d = decide(&ledger, "dev", &r.id, Verdict::Approve, who("alice", late))
            .await
            .unwrap();
        assert!(matches!(d, Decision::Expired(_)), "{d:?}");
        let d = decide(&ledger, "dev", &r.id, Verdict::Deny, who("alice", now))
            .await
            .unwrap();
        let Decision::Decided(denied) = d else {
            panic!("{d:?}")
        };
        assert_eq!(denied.state, ApprovalState::Denied);
        assert_eq!(
            denied.decided.as_ref().map(|x| x.by.as_str()),
            Some("alice")
        );
        let d = decide(&ledger, "dev", &r.id, Verdict::Approve, who("alice", now))
            .await
            .unwrap();
        assert!(
            matches!(d, Decision::AlreadyDecided(ref x) if x.state == ApprovalState::Denied),
            "{d:?}"
        );
        let d = decide(
            &ledger,
            "dev",
            "0000000000000000",
            Verdict::Approve,
            who("alice", now),
        )
        .await
        .unwrap();
        assert_eq!(d, Decision::NotFound);
        assert_eq!(approved_input(&r)["nbaops"]["task"], "approved");
    }

    #[tokio::test]
    async fn expiry_applies_on_timeout_once_and_leaves_decided_requests() {
        let ledger = FakeLedger::default();
        let now = chrono::DateTime::parse_from_rfc3339("2026-06-17T14:00:00Z")
            .unwrap()
            .to_utc();
        let mut a = request(now);
        a.create(&ledger).await.unwrap();
        let mut b = request(now);
        b.id = approval_id("ev-2", "rds.modify_class", "rds:db");
        b.on_timeout = OnTimeout::Approve;
        b.create(&ledger).await.unwrap();
        let (moved, bad) = expire_due(&ledger, "dev", now).await.unwrap();
        assert!(moved.is_empty() && bad.is_empty(), "not due yet");
        let later = now + chrono::Duration::hours(1);
        let (moved, _) = expire_due(&ledger, "dev", later).await.unwrap();
        let mut states: Vec<_> = moved.iter().map(|r| (r.id.clone(), r.state)).collect();
        states.sort_by(|x, y| x.0.cmp(&y.0));
        a.state = ApprovalState::Expired;
        b.state = ApprovalState::Approved;
        let mut want = vec![(a.id.clone(), a.state), (b.id.clone(), b.state)];
        want.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(states, want);
        let (again, _) = expire_due(&ledger, "dev", later).await.unwrap();
        assert!(again.is_empty(), "each once");
    }

    #[tokio::test]
    async fn dispatch_schedules_an_approval_once_and_nothing_else() {
        use crate::fakes::FakeScheduler;
        let ledger = FakeLedger::default();
        let now = chrono::DateTime::parse_from_rfc3339("2026-06-17T14:00:00.500Z")
            .unwrap()
            .to_utc();
        let r = request(now);
        r.create(&ledger).await.unwrap();
        let sched = FakeScheduler::default();
        let err = dispatch(&sched, &r, "g", "arn:role", "arn:fn", now).await;
        assert!(err.is_err(), "a pending request is not dispatched");
        let who = Decided {
            by: "alice".into(),
            from: "cli".into(),
            at: now,
        };
        let Decision::Decided(ok) = decide(&ledger, "dev", &r.id, Verdict::Approve, who)
            .await
            .unwrap()
        else {
            panic!()
        };
        assert!(dispatch(&sched, &ok, "g", "arn:role", "arn:fn", now)
            .await
            .unwrap());
        assert!(!dispatch(&sched, &ok, "g", "arn:role", "arn:fn", now)
            .await
            .unwrap());
        let all = sched.all();
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(all[0].name, format!("approval-{}", r.id));
        assert_eq!(all[0].input, approved_input(&ok));
        assert_eq!(all[0].expression(), "at(2026-06-17T14:01:00)");
    }
}
