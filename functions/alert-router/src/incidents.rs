//! The incident store: alert-router's items in the ledger. Per dedup key, under
//! `alert#<key>`: the incident (`state`), the last alarm notification seen (`alarm-seen`) and the
//! claims that make one delivery of many send (`notify#…`, `resolve#…`, `escalation#…`); and the
//! index of open incidents the sweep walks (`alert-open`).

use chrono::{DateTime, Duration as Span, Utc};
use serde_json::{json, Value};

use nbaops_shared::alerts::kind_of;
use nbaops_shared::events::AlarmChange;
use nbaops_shared::ports::Ledger;
use nbaops_shared::{NbaopsError, Result};

use crate::channels::Sent;
use crate::plan::{Incident, OpenEntry};

/// Ledger partition listing the keys of open incidents, for the sweep.
pub const OPEN_PK: &str = "alert-open";
const STATE_SK: &str = "state";
/// Sort key of the last alarm notification seen for a key (its state and state-change time).
const ALARM_SEEN_SK: &str = "alarm-seen";

pub fn incident_pk(dedup_key: &str) -> String {
    format!("alert#{dedup_key}")
}

/// The incidents, on the ledger, kept `record_ttl_days` after their last write.
pub struct Incidents<'a> {
    pub ledger: &'a dyn Ledger,
    pub record_ttl_days: i64,
}

impl Incidents<'_> {
    /// When a record written at `now` expires (epoch seconds).
    pub fn expiry(&self, now: DateTime<Utc>) -> i64 {
        (now + Span::days(self.record_ttl_days)).timestamp()
    }

    pub async fn load(&self, dedup_key: &str) -> Result<Option<Incident>> {
        let Some(v) = self.ledger.get(&incident_pk(dedup_key), STATE_SK).await? else {
            return Ok(None);
        };
        match serde_json::from_value::<Incident>(v) {
            Ok(i) => Ok(Some(i)),
            Err(e) => {
                // A record we cannot read must not block new alerts: start over, say so.
                tracing::warn!(dedup_key, error = %e, "unreadable incident record: treated as absent");
                Ok(None)
            }
        }
    }

    /// Writes the incident and keeps the open index in step with it.
    pub async fn save(&self, inc: &Incident, now: DateTime<Utc>) -> Result<()> {
        let expires = self.expiry(now);
        let data = serde_json::to_value(inc)
            .map_err(|e| NbaopsError::InvalidEvent(format!("incident not serialisable: {e}")))?;
        self.ledger
            .put(&incident_pk(&inc.dedup_key), STATE_SK, &data, Some(expires))
            .await?;
        // A group's member is not an incident of its own: its group's incident is the one listed.
        if inc.is_closed() || inc.grouped_into.is_some() {
            self.ledger.delete(OPEN_PK, &inc.dedup_key).await
        } else {
            self.ledger
                .put(
                    OPEN_PK,
                    &inc.dedup_key,
                    &json!({
                        "severity": inc.severity,
                        "opened_at": inc.opened_at,
                        "resource": inc.resource,
                        "kind": kind_of(&inc.dedup_key),
                    }),
                    Some(expires),
                )
                .await
        }
    }

    /// The open index as the grouping reads it (entries written before it had the resource are
    /// left out: they join nothing).
    pub async fn open_entries(&self) -> Result<Vec<OpenEntry>> {
        Ok(self
            .ledger
            .query(OPEN_PK, "")
            .await?
            .into_iter()
            .filter_map(|(key, v)| {
                Some(OpenEntry {
                    kind: v.get("kind")?.as_str()?.to_string(),
                    resource: v.get("resource")?.as_str()?.to_string(),
                    opened_at: serde_json::from_value(v.get("opened_at")?.clone()).ok()?,
                    key,
                })
            })
            .collect())
    }

    /// Takes the claim `claim` of the key's incident: `Ok(false)` when another delivery has it.
    pub async fn claim(
        &self,
        dedup_key: &str,
        claim: &str,
        data: &Value,
        expires_at: i64,
    ) -> Result<bool> {
        self.ledger
            .put_if_absent(&incident_pk(dedup_key), claim, data, expires_at)
            .await
    }

    /// Gives the claim back, so that a retry may try again.
    pub async fn release(&self, dedup_key: &str, claim: &str) -> Result<()> {
        self.ledger.delete(&incident_pk(dedup_key), claim).await
    }

    /// The keys in the open index.
    pub async fn open_keys(&self) -> Result<Vec<String>> {
        Ok(self
            .ledger
            .query(OPEN_PK, "")
            .await?
            .into_iter()
            .map(|(key, _)| key)
            .collect())
    }

    /// Drops a key from the open index (its incident is gone or closed).
    pub async fn forget_open(&self, dedup_key: &str) -> Result<()> {
        self.ledger.delete(OPEN_PK, dedup_key).await
    }

    /// The state-change time of the last alarm notification seen for the key.
    pub async fn alarm_seen_at(&self, dedup_key: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(self
            .ledger
            .get(&incident_pk(dedup_key), ALARM_SEEN_SK)
            .await?
            .and_then(|v| v.get("changed_at").cloned())
            .and_then(|v| serde_json::from_value::<DateTime<Utc>>(v).ok()))
    }

    /// Records this notification as the last seen for the key.
    pub async fn see_alarm(
        &self,
        dedup_key: &str,
        alarm: &AlarmChange,
        event_id: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.ledger
            .put(
                &incident_pk(dedup_key),
                ALARM_SEEN_SK,
                &json!({"state": alarm.state, "changed_at": alarm.changed_at, "event_id": event_id}),
                Some(self.expiry(now)),
            )
            .await
    }
}

/// Writes into the incident where each send went and what it did.
pub fn record_sends(inc: &mut Incident, sends: &[Sent], now: DateTime<Utc>, what: &str) {
    for s in sends {
        inc.channels.insert(
            s.channel.clone(),
            if s.ok {
                "sent".into()
            } else {
                format!("failed: {}", s.detail)
            },
        );
    }
    let ok: Vec<&str> = sends
        .iter()
        .filter(|s| s.ok)
        .map(|s| s.channel.as_str())
        .collect();
    inc.note(
        now,
        format!(
            "{what} -> {}",
            if ok.is_empty() {
                "no channel".to_string()
            } else {
                ok.join(",")
            }
        ),
    );
}
