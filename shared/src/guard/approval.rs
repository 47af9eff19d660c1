//! Human approval of a disruptive action (issue #19): the request as the ledger holds it, and its
//! one-way life — pending, then approved / denied / expired, then (approved only) used once.
//!
//! One item per request under `approval#<env>` / `<id>`. Every change of state is a
//! compare-and-swap on the whole item ([`Expect::Holds`]): two clicks on one link, a click racing
//! the expiry sweep, a replayed POST — exactly one of them changes the state, the others read
//! what happened. The item holds the plan's exact parameters (the [`ProposedAction`], with its
//! before/after and explanation), so what is approved is what is done, or nothing.

use chrono::{DateTime, Utc};
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
}
