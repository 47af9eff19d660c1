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

use crate::alerts::{Alert, AlertPublisher, Severity};
use crate::config::{ChangeWindow, Config};
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
    /// What this invocation wrote to claim the action (idempotency and cooldown items), so
    /// [`Guard::finish`] can mark it done or release it.
    #[serde(skip)]
    pub claimed: bool,
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

/// Kill switch and dry-run as the container last read them. They come with the configuration read
/// at init (SSM by path, the `guard` section included) and are re-read — one `GetParametersByPath`
/// of `/nbaops/<env>/guard/` — once `guard.switch_ttl_seconds` have passed: an operator's flip
/// reaches warm containers within that many seconds, without a deploy, and a warm invocation
/// within the TTL makes no SSM call.
#[derive(Default)]
pub struct Switches {
    cached: Mutex<Option<(Instant, bool, bool)>>,
}

impl Switches {
    /// Switches as the configuration just loaded says, fresh for `guard.switch_ttl_seconds`.
    pub fn seeded(cfg: &Config) -> Switches {
        Switches {
            cached: Mutex::new(Some((
                Instant::now(),
                cfg.guard.kill_switch,
                cfg.function_dry_run(),
            ))),
        }
    }

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
        let flag = |v: Option<&String>, default: bool| match v.map(|s| s.trim()) {
            Some("true" | "on" | "yes" | "1") => true,
            Some("false" | "off" | "no" | "0") => false,
            _ => default,
        };
        let read = params.get_by_path(&base).await?;
        let kill = flag(
            read.get(&format!("{base}kill_switch")),
            cfg.guard.kill_switch,
        );
        let dry_all = flag(read.get(&format!("{base}dry_run")), cfg.guard.dry_run);
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

/// An idempotency item as the guard writes it. Unknown fields (a newer version's) are ignored;
/// `deadline` is absent from the claims of versions before it existed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub at: DateTime<Utc>,
    pub request_id: String,
    /// "in-progress" or "done".
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub after: Value,
    /// Unique to the write that stored it: when the answer to that write is lost and the SDK's
    /// retry finds the claim already there, the guard recognises its own claim by this token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// A cooldown item: when the last action of its bucket on its resource was claimed, by which event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CooldownMark {
    pub at: DateTime<Utc>,
    #[serde(default)]
    pub event_id: String,
}

/// True when every field of `after` already has that value in `before`: the state an earlier
/// claim meant to reach is the state the resource is in now.
fn already_reached(after: &Value, before: &Value) -> bool {
    match (after.as_object(), before.as_object()) {
        (Some(want), Some(now)) if !want.is_empty() => {
            want.iter().all(|(k, v)| now.get(k) == Some(v))
        }
        _ => false,
    }
}

/// What the ledger step (cooldown + idempotency) concluded.
struct LedgerSteps {
    cooldown: StepResult,
    idempotency: StepResult,
    claimed: bool,
}

fn step(step: GuardStep, passed: bool, note: impl Into<String>) -> StepResult {
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
        }
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

    /// When a claim's invocation had to be done. A claim without a deadline was written by a
    /// version that had none: it was held for at most the longest invocation.
    fn claim_deadline(&self, c: &Claim) -> DateTime<Utc> {
        c.deadline
            .unwrap_or(c.at + chrono::Duration::seconds(self.cfg.guard.claim_seconds))
    }

    /// A ledger item the guard cannot read is never taken as "no state": the action stops and a
    /// P2 says which item (a newer version's format, or a corrupt write).
    async fn unreadable(&self, a: &ProposedAction, what: &str, err: &str) -> Result<String> {
        let (note, _) =
            report_unreadable_state(self.cfg, self.notifier, &a.resource, what, err, self.now)
                .await?;
        Ok(note)
    }

    /// `same_event_claimed`: this event holds a claim on the action, so a cooldown mark it left
    /// itself does not count against it (the claim says whether it may go on).
    async fn cooldown_step(
        &self,
        a: &ProposedAction,
        held: Option<&Value>,
        same_event_claimed: bool,
    ) -> Result<StepResult> {
        let Some(v) = held else {
            return Ok(step(GuardStep::Cooldown, true, "no earlier action"));
        };
        let mark: CooldownMark = match serde_json::from_value(v.clone()) {
            Ok(m) => m,
            Err(e) => {
                let note = self
                    .unreadable(a, "cooldown record", &e.to_string())
                    .await?;
                return Ok(step(GuardStep::Cooldown, false, note));
            }
        };
        let since = (self.now - mark.at).num_seconds();
        Ok(if same_event_claimed && mark.event_id == self.event_id {
            step(
                GuardStep::Cooldown,
                true,
                format!(
                    "last at {} by this same event's claim",
                    mark.at.to_rfc3339()
                ),
            )
        } else if since < a.cooldown_seconds {
            step(
                GuardStep::Cooldown,
                false,
                format!(
                    "last {} on {} at {}, cooldown {} s ({} s left)",
                    a.cooldown_key,
                    a.resource,
                    mark.at.to_rfc3339(),
                    a.cooldown_seconds,
                    a.cooldown_seconds - since
                ),
            )
        } else {
            step(
                GuardStep::Cooldown,
                true,
                format!("last at {}", mark.at.to_rfc3339()),
            )
        })
    }

    /// Read-only: what the ledger steps would say (dry-run, or an earlier step stopped).
    async fn ledger_steps_read(&self, a: &ProposedAction, stopped: bool) -> Result<LedgerSteps> {
        let (cpk, csk) = cooldown_key(a);
        let cooldown = self
            .cooldown_step(a, self.ledger.get(&cpk, &csk).await?.as_ref(), false)
            .await?;
        let idempotency = if stopped || !cooldown.passed {
            step(GuardStep::Idempotency, true, "not reached")
        } else {
            let (ipk, isk) = idem_key(&self.event_id, a);
            let seen = self.ledger.get(&ipk, &isk).await?.is_some();
            step(
                GuardStep::Idempotency,
                !seen,
                if seen {
                    "already done for this event"
                } else {
                    "first time for this event (not claimed: dry-run)"
                },
            )
        };
        Ok(LedgerSteps {
            cooldown,
            idempotency,
            claimed: false,
        })
    }

    /// Cooldown and idempotency in one conditional ledger write: the claim (held until this
    /// invocation's deadline) and the cooldown mark go in together, only if no claim of this
    /// event exists and the cooldown has run out. When the write is refused, the items are read
    /// to say why — or to take over a claim whose invocation passed its deadline.
    async fn claim(&mut self, a: &ProposedAction) -> Result<LedgerSteps> {
        let (ipk, isk) = idem_key(&self.event_id, a);
        let (cpk, csk) = cooldown_key(a);
        let claim = Claim {
            at: self.now,
            request_id: self.request_id.clone(),
            state: "in-progress".into(),
            deadline: Some(self.deadline),
            after: a.after.clone(),
            token: Some(claim_token()),
        };
        let token = claim.token.clone();
        let claim = serde_json::to_value(&claim)
            .map_err(|e| NbaopsError::InvalidEvent(format!("claim not serialisable: {e}")))?;
        let mark = json!({"at": self.now.to_rfc3339(), "event_id": self.event_id, "request_id": self.request_id});
        let idem_expires = self.now.timestamp() + self.cfg.guard.idempotency_ttl_hours * 3600;
        // The cooldown item expires when the cooldown ends: an expired mark no longer blocks.
        let cool_expires = self.now.timestamp() + a.cooldown_seconds.max(0);
        let mut idem_expect = vec![Expect::Absent];
        let mut cool_expect = vec![Expect::Absent, Expect::ExpiredBy(self.now.timestamp())];
        let mut cooldown_note = "no earlier action".to_string();
        let mut took_over = None;
        for _ in 0..3 {
            let mut writes = vec![
                LedgerWrite::put(&ipk, &isk, claim.clone(), Some(idem_expires))
                    .expecting(idem_expect.clone()),
                LedgerWrite::put(&cpk, &csk, mark.clone(), Some(cool_expires))
                    .expecting(cool_expect.clone()),
            ];
            writes.extend(self.riders.iter().cloned());
            if self.ledger.write_all(&writes).await?.is_none() {
                self.riders.clear();
                let note = match &took_over {
                    Some(t) => format!("claimed until {} ({t})", self.deadline.to_rfc3339()),
                    None => format!("claimed until {}", self.deadline.to_rfc3339()),
                };
                return Ok(LedgerSteps {
                    cooldown: step(GuardStep::Cooldown, true, cooldown_note),
                    idempotency: step(GuardStep::Idempotency, true, note),
                    claimed: true,
                });
            }
            // Refused: read both items and say why, or retry expecting exactly what is there.
            let held_idem = self.ledger.get(&ipk, &isk).await?;
            let held_cool = self.ledger.get(&cpk, &csk).await?;
            // A cooldown mark this same event left is idempotency's business, not cooldown's.
            let cooldown = self
                .cooldown_step(a, held_cool.as_ref(), held_idem.is_some())
                .await?;
            if !cooldown.passed {
                return Ok(LedgerSteps {
                    cooldown,
                    idempotency: step(GuardStep::Idempotency, true, "not reached"),
                    claimed: false,
                });
            }
            cooldown_note = cooldown.note;
            if let Some(v) = held_cool {
                cool_expect.push(Expect::Holds(v));
            }
            let Some(held) = held_idem else {
                idem_expect = vec![Expect::Absent];
                continue;
            };
            let refuse = |note: String| LedgerSteps {
                cooldown: step(GuardStep::Cooldown, true, cooldown_note.clone()),
                idempotency: step(GuardStep::Idempotency, false, note),
                claimed: false,
            };
            let old: Claim = match serde_json::from_value(held.clone()) {
                Ok(c) => c,
                Err(e) => {
                    let note = self
                        .unreadable(a, "idempotency claim", &e.to_string())
                        .await?;
                    return Ok(refuse(note));
                }
            };
            if old.state == "in-progress" && old.token.is_some() && old.token == token {
                // Our own earlier attempt of this write stored it (its answer was lost and the
                // SDK retried): the claim is ours.
                self.riders.clear();
                return Ok(LedgerSteps {
                    cooldown: step(GuardStep::Cooldown, true, cooldown_note),
                    idempotency: step(
                        GuardStep::Idempotency,
                        true,
                        format!(
                            "claimed until {} (an earlier attempt of this write stored it)",
                            self.deadline.to_rfc3339()
                        ),
                    ),
                    claimed: true,
                });
            }
            if old.state != "in-progress" {
                return Ok(refuse(format!(
                    "already {} for this event by request {} at {}",
                    old.state,
                    old.request_id,
                    old.at.to_rfc3339()
                )));
            }
            let deadline = self.claim_deadline(&old);
            if deadline > self.now {
                return Ok(refuse(format!(
                    "in progress by request {} until {}",
                    old.request_id,
                    deadline.to_rfc3339()
                )));
            }
            if already_reached(&old.after, &a.before) {
                // The stalled invocation's effect happened: record it as done, do not repeat it.
                let done = json!({"at": self.now.to_rfc3339(), "request_id": self.request_id, "state": "done", "after": old.after});
                let w = [LedgerWrite::put(&ipk, &isk, done, Some(idem_expires))
                    .expecting(vec![Expect::Holds(held)])];
                if self.ledger.write_all(&w).await?.is_none() {
                    return Ok(refuse(format!(
                        "request {} stopped at its deadline {} after its change took effect ({}): marked done, not repeated",
                        old.request_id,
                        deadline.to_rfc3339(),
                        old.after
                    )));
                }
                idem_expect = vec![Expect::Absent];
                continue;
            }
            took_over = Some(format!(
                "took over the claim of request {}, which stopped at its deadline {} before its change took effect",
                old.request_id,
                deadline.to_rfc3339()
            ));
            idem_expect = vec![Expect::Holds(held)];
        }
        Ok(LedgerSteps {
            cooldown: step(GuardStep::Cooldown, true, cooldown_note),
            idempotency: step(
                GuardStep::Idempotency,
                false,
                "the claim kept changing under this invocation: not acting",
            ),
            claimed: false,
        })
    }

    /// Runs every step. Writes nothing except the claim (idempotency + cooldown, one conditional
    /// write), and only when the action is about to happen for real.
    pub async fn check(&mut self, a: &ProposedAction) -> Result<Decision> {
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
        let window_step = if a.disruptive {
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
        Ok(Decision {
            proceed: stopped_by.is_none() && !dry_run,
            dry_run,
            stopped_by,
            steps,
            emergency_change,
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

    /// Records the result. `result` is `None` when nothing was attempted. The claim's fate (done,
    /// or released so a retry may try again) goes in the same ledger write as the audit record.
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
        write_audit_with(self.cfg, self.ledger, self.notifier, &rec, writes).await?;
        Ok(rec)
    }
}

/// A token unique to one claim write (process id, counter, clock).
fn claim_token() -> String {
    static CLAIMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        CLAIMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    )
}

/// Debug builds only: `NBAOPS_TEST_PAUSE_AFTER_CLAIM=<seconds>` holds the invocation between its
/// claim and its effect, so a test can kill the process there (tests/tests/e2e_crash.rs).
#[cfg(debug_assertions)]
async fn test_pause_after_claim() {
    let secs = std::env::var("NBAOPS_TEST_PAUSE_AFTER_CLAIM")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(secs) = secs {
        tracing::warn!(seconds = secs, "test pause after claim");
        tokio::time::sleep(Duration::from_secs(secs)).await;
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
    write_audit_with(cfg, ledger, notifier, rec, Vec::new()).await
}

/// [`write_audit`], the audit item written in one ledger request with `with` (the claim's fate).
pub async fn write_audit_with(
    cfg: &Config,
    ledger: &dyn Ledger,
    notifier: &dyn Notifier,
    rec: &AuditRecord,
    with: Vec<LedgerWrite>,
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
    let pk = format!("audit#{}", rec.resource);
    let stored = if with.is_empty() {
        ledger.put(&pk, &sk, &body, Some(expires)).await
    } else {
        let mut writes = with;
        writes.push(LedgerWrite::put(&pk, &sk, body.clone(), Some(expires)));
        match ledger.write_all(&writes).await {
            Ok(None) => Ok(()),
            Ok(Some(i)) => Err(NbaopsError::dependency(
                "dynamodb",
                format!("audit write refused at item {i}, which carries no condition"),
            )),
            Err(e) => Err(e),
        }
    };
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

/// Ledger state as stored: `Ok(None)` when there is none, `Err` (the decode error) when there is
/// an item this version cannot read — never silently "no state".
pub fn decode_state<T: serde::de::DeserializeOwned>(
    item: Option<Value>,
) -> std::result::Result<Option<T>, String> {
    match item {
        None => Ok(None),
        Some(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| e.to_string()),
    }
}

/// A ledger item a function cannot read (a newer version's format, a corrupt write): a P2 on the
/// alerts topic, and the note for the report. The caller takes no action on that resource.
pub async fn report_unreadable_state(
    cfg: &Config,
    notifier: &dyn Notifier,
    resource: &str,
    what: &str,
    err: &str,
    now: DateTime<Utc>,
) -> Result<(String, Alert)> {
    let note = format!("{resource}: {what} unreadable ({err}): not acting on state it cannot read");
    let alert = Alert::new(
        Severity::P2,
        &cfg.env.to_string(),
        &cfg.function,
        resource,
        format!("ledger-unreadable#{resource}#{what}"),
        note.clone(),
        now,
    )
    .with_runbook(
        "Inspect the ledger item (a newer version's format or a corrupt write); fix or delete it, then re-run.",
    );
    AlertPublisher {
        notifier,
        topic_arn: &cfg.alerts_topic_arn,
    }
    .publish(&alert)
    .await?;
    Ok((note, alert))
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
