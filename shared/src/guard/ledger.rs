//! The ledger side of the guard: cooldown and idempotency as one conditional write (the claim),
//! a claim taken over after its deadline, a lost answer recognised by its token.

use super::*;

pub(super) fn idem_key(event_id: &str, a: &ProposedAction) -> (String, String) {
    (
        format!("idem#{event_id}"),
        format!("{}#{}", a.action, a.resource),
    )
}

pub(super) fn cooldown_key(a: &ProposedAction) -> (String, String) {
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
pub(super) fn already_reached(after: &Value, before: &Value) -> bool {
    match (after.as_object(), before.as_object()) {
        (Some(want), Some(now)) if !want.is_empty() => {
            want.iter().all(|(k, v)| now.get(k) == Some(v))
        }
        _ => false,
    }
}

/// What the ledger step (cooldown + idempotency) concluded.
pub(super) struct LedgerSteps {
    pub(super) cooldown: StepResult,
    pub(super) idempotency: StepResult,
    pub(super) claimed: bool,
}

impl<'a> Guard<'a> {
    /// When a claim's invocation had to be done. A claim without a deadline was written by a
    /// version that had none: it was held for at most the longest invocation.
    pub(super) fn claim_deadline(&self, c: &Claim) -> DateTime<Utc> {
        c.deadline
            .unwrap_or(c.at + chrono::Duration::seconds(self.cfg.guard.claim_seconds))
    }

    /// A ledger item the guard cannot read is never taken as "no state": the action stops and a
    /// P2 says which item (a newer version's format, or a corrupt write).
    pub(super) async fn unreadable(
        &self,
        a: &ProposedAction,
        what: &str,
        err: &str,
    ) -> Result<String> {
        let (note, _) =
            report_unreadable_state(self.cfg, self.notifier, &a.resource, what, err, self.now)
                .await?;
        Ok(note)
    }

    /// `same_event_claimed`: this event holds a claim on the action, so a cooldown mark it left
    /// itself does not count against it (the claim says whether it may go on).
    pub(super) async fn cooldown_step(
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
    pub(super) async fn ledger_steps_read(
        &self,
        a: &ProposedAction,
        stopped: bool,
    ) -> Result<LedgerSteps> {
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
    pub(super) async fn claim(&mut self, a: &ProposedAction) -> Result<LedgerSteps> {
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
}

/// A token unique to one claim write (process id, counter, clock).
pub(super) fn claim_token() -> String {
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
pub(super) async fn test_pause_after_claim() {
    let secs = std::env::var("NBAOPS_TEST_PAUSE_AFTER_CLAIM")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(secs) = secs {
        tracing::warn!(seconds = secs, "test pause after claim");
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
}
