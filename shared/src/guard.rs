//! The one pipeline every action passes, in this order, each step recorded:
//! kill switch, dry-run, protected tag, bounds, cooldown, change window, blast radius, idempotency.
//! Its output is an audit record (ledger + JSON log line + "nbaops action" event on the actions
//! topic) for acted *and* skipped actions, naming the guard that stopped it.
//!
//! In dry-run every later step is still evaluated, read-only, so the operator sees exactly
//! which guard would have stopped the action or that it would have gone through.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::alerts::Severity;
use crate::config::{ChangeWindow, Config};
use crate::error::{NbaopsError, Result};
use crate::ports::{Ledger, Notifier, Params, Tags};

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Acted,
    WouldAct,
    Skipped,
    Failed,
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
}

pub const AUDIT_SCHEMA: &str = "nbaops.action/v1";

impl AuditRecord {
    /// The outcome in an operator's words, for notes and alert summaries.
    pub fn outcome_words(&self) -> String {
        match (self.outcome, self.stopped_by) {
            (Outcome::Acted, _) => "done".into(),
            (Outcome::WouldAct, _) => "dry-run: would have done it".into(),
            (Outcome::Failed, _) => format!("failed: {}", self.error.as_deref().unwrap_or("?")),
            (Outcome::Skipped, Some(step)) => format!("stopped by guard '{step}'"),
            (Outcome::Skipped, None) => "skipped".into(),
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

/// Kill switch and dry-run are re-read from SSM at most every `guard.switch_ttl_seconds`, so an
/// operator's flip reaches warm containers within seconds without a deploy.
#[derive(Default)]
pub struct Switches {
    cached: Mutex<Option<(Instant, bool, bool)>>,
}

impl Switches {
    /// (kill switch, dry run). An unreadable SSM counts as "kill switch on": we never act blind.
    pub async fn current(&self, cfg: &Config, params: Option<&dyn Params>) -> Result<(bool, bool)> {
        let Some(params) = params else {
            return Ok((cfg.guard.kill_switch, cfg.function_dry_run()));
        };
        let mut cached = self.cached.lock().await;
        if let Some((at, kill, dry)) = *cached {
            if at.elapsed() < Duration::from_secs(cfg.guard.switch_ttl_seconds) {
                return Ok((kill, dry));
            }
        }
        let base = format!("/nbaops/{}/guard/", cfg.env);
        let flag = |v: Option<String>, default: bool| match v.as_deref().map(str::trim) {
            Some("true" | "on" | "yes" | "1") => true,
            Some("false" | "off" | "no" | "0") => false,
            _ => default,
        };
        let kill = flag(
            params.get(&format!("{base}kill_switch")).await?,
            cfg.guard.kill_switch,
        );
        let dry_all = flag(
            params.get(&format!("{base}dry_run")).await?,
            cfg.guard.dry_run,
        );
        let dry = dry_all
            || cfg
                .guard
                .dry_run_functions
                .iter()
                .any(|f| f == &cfg.function);
        *cached = Some((Instant::now(), kill, dry));
        Ok((kill, dry))
    }
}

#[derive(Default)]
struct Trail {
    steps: Vec<StepResult>,
    stopped_by: Option<GuardStep>,
}

impl Trail {
    fn record(&mut self, step: GuardStep, passed: bool, note: String) {
        if !passed && self.stopped_by.is_none() {
            self.stopped_by = Some(step);
        }
        self.steps.push(StepResult { step, passed, note });
    }
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
    fleet_size: usize,
    admitted: usize,
}

fn idem_key(event_id: &str, a: &ProposedAction) -> (String, String) {
    (
        format!("idem#{event_id}"),
        format!("{}#{}", a.action, a.resource),
    )
}

fn cooldown_key(a: &ProposedAction) -> (String, String) {
    (format!("cooldown#{}", a.resource), a.cooldown_key.clone())
}

impl<'a> Guard<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &'a Config,
        ledger: &'a dyn Ledger,
        notifier: &'a dyn Notifier,
        params: Option<&'a dyn Params>,
        switches: &'a Switches,
        event_id: &str,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Self {
        Guard {
            cfg,
            ledger,
            notifier,
            params,
            switches,
            event_id: event_id.to_string(),
            request_id: request_id.to_string(),
            now,
            fleet_size: 1,
            admitted: 0,
        }
    }

    /// How many resources this run looks at, for the blast-radius percent.
    pub fn with_fleet_size(mut self, n: usize) -> Self {
        self.fleet_size = n.max(1);
        self
    }

    fn blast_limit(&self) -> usize {
        let pct = ((self.fleet_size as f64) * self.cfg.guard.max_percent / 100.0).floor() as usize;
        pct.max(1).min(self.cfg.guard.max_actions)
    }

    /// Runs every step. Writes nothing except the idempotency claim, and only when the action
    /// is about to happen for real.
    pub async fn check(&mut self, a: &ProposedAction) -> Result<Decision> {
        let mut t = Trail::default();
        let (kill, dry_run) = match self.switches.current(self.cfg, self.params).await {
            Ok(v) => v,
            Err(e) => {
                t.record(
                    GuardStep::KillSwitch,
                    false,
                    format!("kill switch unreadable, acting blind is not allowed: {e}"),
                );
                (true, true)
            }
        };
        if t.stopped_by.is_none() {
            t.record(
                GuardStep::KillSwitch,
                !kill,
                if kill {
                    "kill switch is on".into()
                } else {
                    "off".into()
                },
            );
        }
        // Dry-run never stops the evaluation: later steps still tell what would happen.
        t.steps.push(StepResult {
            step: GuardStep::DryRun,
            passed: true,
            note: if dry_run {
                "dry-run: nothing will be changed".into()
            } else {
                "live".into()
            },
        });

        let tag = &self.cfg.guard.protect_tag;
        let protected = a
            .tags
            .get(tag)
            .map(|v| v.trim().eq_ignore_ascii_case("true"))
            .unwrap_or(false);
        t.record(
            GuardStep::ProtectedTag,
            !protected,
            if protected {
                format!("resource carries {tag}=true")
            } else {
                format!("no {tag}=true")
            },
        );

        match a.bounds {
            Some(b) => {
                let ok = b.proposed >= b.min && b.proposed <= b.max && b.proposed.is_finite();
                t.record(
                    GuardStep::Bounds,
                    ok,
                    format!(
                        "{} within [{}, {}]: {}",
                        b.proposed,
                        b.min,
                        b.max,
                        if ok { "yes" } else { "no" }
                    ),
                );
            }
            None => t.record(GuardStep::Bounds, true, "no numeric bound applies".into()),
        }

        let (cpk, csk) = cooldown_key(a);
        let last = self.ledger.get(&cpk, &csk).await?;
        let last_at = last
            .as_ref()
            .and_then(|v| v.get("at"))
            .and_then(|v| v.as_str())
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc));
        match last_at {
            Some(at) if (self.now - at).num_seconds() < a.cooldown_seconds => t.record(
                GuardStep::Cooldown,
                false,
                format!(
                    "last {} on {} at {}, cooldown {} s ({} s left)",
                    a.cooldown_key,
                    a.resource,
                    at.to_rfc3339(),
                    a.cooldown_seconds,
                    a.cooldown_seconds - (self.now - at).num_seconds()
                ),
            ),
            Some(at) => t.record(
                GuardStep::Cooldown,
                true,
                format!("last at {}", at.to_rfc3339()),
            ),
            None => t.record(GuardStep::Cooldown, true, "no earlier action".into()),
        }

        let mut emergency_change = false;
        if a.disruptive {
            let open = in_change_window(&self.cfg.guard.window, self.now);
            if open {
                t.record(
                    GuardStep::ChangeWindow,
                    true,
                    "inside the change window".into(),
                );
            } else if a.severity == Severity::P1 {
                emergency_change = true;
                t.record(
                    GuardStep::ChangeWindow,
                    true,
                    "outside the change window: P1 emergency change".into(),
                );
            } else {
                let w = &self.cfg.guard.window;
                t.record(
                    GuardStep::ChangeWindow,
                    false,
                    format!(
                        "disruptive and outside the change window ({:?} {}-{} {})",
                        w.days,
                        w.start.format("%H:%M"),
                        w.end.format("%H:%M"),
                        w.tz.name()
                    ),
                );
            }
        } else {
            t.record(GuardStep::ChangeWindow, true, "not disruptive".into());
        }

        let limit = self.blast_limit();
        let within = self.admitted < limit;
        t.record(
            GuardStep::BlastRadius,
            within,
            format!(
                "{} of at most {} actions this run ({} resources in view)",
                self.admitted + 1,
                limit,
                self.fleet_size
            ),
        );

        let (ipk, isk) = idem_key(&self.event_id, a);
        if t.stopped_by.is_none() {
            if dry_run {
                let seen = self.ledger.get(&ipk, &isk).await?.is_some();
                t.record(
                    GuardStep::Idempotency,
                    !seen,
                    if seen {
                        "already done for this event".into()
                    } else {
                        "first time for this event (not claimed: dry-run)".into()
                    },
                );
            } else {
                let expires = self.now.timestamp() + self.cfg.guard.idempotency_ttl_hours * 3600;
                // A token unique to this write, so that the write can recognise itself below.
                static CLAIMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let token = format!(
                    "{}-{}",
                    std::process::id(),
                    CLAIMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                );
                let claim = json!({"at": self.now.to_rfc3339(), "request_id": self.request_id, "state": "in-progress", "claim": token});
                let mut won = self
                    .ledger
                    .put_if_absent(&ipk, &isk, &claim, expires)
                    .await?;
                if !won {
                    // The SDK retries a write whose answer was lost; the retry then finds the
                    // claim its own first attempt stored. That one is ours: a win.
                    won = self.ledger.get(&ipk, &isk).await?.is_some_and(|v| {
                        v.get("request_id").and_then(|r| r.as_str())
                            == Some(self.request_id.as_str())
                            && v.get("claim").and_then(|c| c.as_str()) == Some(token.as_str())
                    });
                }
                t.record(
                    GuardStep::Idempotency,
                    won,
                    if won {
                        "claimed".into()
                    } else {
                        "already claimed by another delivery of this event".into()
                    },
                );
            }
        } else {
            t.steps.push(StepResult {
                step: GuardStep::Idempotency,
                passed: true,
                note: "not reached".into(),
            });
        }

        if t.stopped_by.is_none() {
            self.admitted += 1;
        }
        Ok(Decision {
            proceed: t.stopped_by.is_none() && !dry_run,
            dry_run,
            stopped_by: t.stopped_by,
            steps: t.steps,
            emergency_change,
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

    /// Records the result. `result` is `None` when nothing was attempted.
    pub async fn finish(
        &self,
        a: &ProposedAction,
        d: &Decision,
        result: Option<std::result::Result<(), String>>,
    ) -> Result<AuditRecord> {
        let (outcome, error) = match (&result, d.proceed, d.stopped_by) {
            (Some(Ok(())), true, _) => (Outcome::Acted, None),
            (Some(Err(e)), _, _) => (Outcome::Failed, Some(e.clone())),
            (_, _, Some(_)) => (Outcome::Skipped, None),
            (_, false, None) if d.dry_run => (Outcome::WouldAct, None),
            _ => (Outcome::Skipped, None),
        };
        if outcome == Outcome::Acted {
            let (cpk, csk) = cooldown_key(a);
            let expires = self.now.timestamp() + a.cooldown_seconds.max(0) + 86_400;
            self.ledger
                .put(
                    &cpk,
                    &csk,
                    &json!({"at": self.now.to_rfc3339(), "event_id": self.event_id}),
                    Some(expires),
                )
                .await?;
            let (ipk, isk) = idem_key(&self.event_id, a);
            let expires = self.now.timestamp() + self.cfg.guard.idempotency_ttl_hours * 3600;
            self.ledger
                .put(&ipk, &isk, &json!({"at": self.now.to_rfc3339(), "request_id": self.request_id, "state": "done"}), Some(expires))
                .await?;
        }
        if outcome == Outcome::Failed && d.proceed {
            // Release the claim so Lambda's retry of this event may try again.
            let (ipk, isk) = idem_key(&self.event_id, a);
            self.ledger.delete(&ipk, &isk).await?;
        }
        let rec = AuditRecord {
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
            error,
        };
        write_audit(self.cfg, self.ledger, self.notifier, &rec).await?;
        Ok(rec)
    }
}

/// Ledger item + JSON log line + outbound event. The log line comes first so that even a
/// failing ledger leaves a trace, and the outbound event is attempted even when the ledger write
/// failed (after the SDK's retries): an action that happened is never known only to a log line.
/// The first error is returned.
pub async fn write_audit(
    cfg: &Config,
    ledger: &dyn Ledger,
    notifier: &dyn Notifier,
    rec: &AuditRecord,
) -> Result<()> {
    let body = serde_json::to_value(rec)
        .map_err(|e| NbaopsError::InvalidEvent(format!("audit record not serialisable: {e}")))?;
    tracing::info!(target: "nbaops::audit", audit = %body, outcome = ?rec.outcome, action = %rec.action, resource = %rec.resource, "audit");
    // Two records of one event (a retry, a dry-run then a live run) must not overwrite each other.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let sk = format!(
        "{}#{}#{}#{}#{seq}",
        rec.at.to_rfc3339(),
        rec.action,
        rec.event_id,
        rec.request_id
    );
    let expires = rec.at.timestamp() + cfg.guard.audit_ttl_days * 86_400;
    let stored = ledger
        .put(
            &format!("audit#{}", rec.resource),
            &sk,
            &body,
            Some(expires),
        )
        .await;
    if let Err(e) = &stored {
        tracing::error!(target: "nbaops::audit", error = %e, action = %rec.action, resource = %rec.resource, "audit record not stored in the ledger");
    }
    if !cfg.actions_topic_arn.is_empty() {
        let mut attrs = BTreeMap::new();
        attrs.insert(
            "outcome".into(),
            serde_json::to_value(rec.outcome)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
        );
        attrs.insert("function".into(), rec.function.clone());
        let subject = format!("nbaops action {} {}", rec.action, rec.resource);
        let subject: String = subject
            .chars()
            .filter(|c| c.is_ascii() && !c.is_ascii_control())
            .take(100)
            .collect();
        let published = notifier
            .publish(&cfg.actions_topic_arn, &subject, &body.to_string(), &attrs)
            .await;
        stored?;
        published?;
        return Ok(());
    }
    stored
}

/// Audit records of one resource, oldest first.
pub async fn audit_trail(ledger: &dyn Ledger, resource: &str) -> Result<Vec<AuditRecord>> {
    let items = ledger.query(&format!("audit#{resource}"), "").await?;
    Ok(items
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_value(v).ok())
        .collect())
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
        let mut g = Guard::new(c, ledger, &n, None, &sw, "evt-1", "req-1", now);
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
        // That success started the cooldown for the group.
        let r = run(
            &cfg(&[]),
            &action(),
            &l,
            wednesday_noon() + chrono::Duration::seconds(60),
        )
        .await;
        assert_eq!(r.stopped_by, Some(GuardStep::Cooldown));
        assert!(l.len_with_prefix("audit#asg:web") >= 7);
    }

    #[tokio::test]
    async fn blast_radius_and_idempotency() {
        let c = cfg(&[("NBAOPS_GUARD__BLAST__MAX_ACTIONS", "2")]);
        let l = FakeLedger::default();
        let n = FakeNotifier::default();
        let sw = Switches::default();
        let mut g =
            Guard::new(&c, &l, &n, None, &sw, "evt-9", "req", wednesday_noon()).with_fleet_size(10);
        let mut outcomes = vec![];
        for i in 0..3 {
            let mut a = action();
            a.resource = format!("asg:g{i}");
            outcomes.push(g.check(&a).await.unwrap().stopped_by);
        }
        assert_eq!(outcomes, vec![None, None, Some(GuardStep::BlastRadius)]);
        // Same event, same action, second delivery: refused by idempotency.
        let mut g2 = Guard::new(&c, &l, &n, None, &sw, "evt-9", "req2", wednesday_noon());
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
        let mut g = Guard::new(&c, &l, &n, Some(&p), &sw, "e", "r", wednesday_noon());
        let d = g.check(&action()).await.unwrap();
        assert!(!d.proceed);
        assert_eq!(d.stopped_by, Some(GuardStep::KillSwitch));
        // And a live flip through SSM is seen.
        let p = FakeParams::with(&[("/nbaops/dev/guard/kill_switch", "on")]);
        let sw = Switches::default();
        let mut g = Guard::new(&c, &l, &n, Some(&p), &sw, "e2", "r", wednesday_noon());
        assert_eq!(
            g.check(&action()).await.unwrap().stopped_by,
            Some(GuardStep::KillSwitch)
        );
    }
}
