//! Pure decisions: the incident record, what a repeat or a resolve means, when an unacknowledged
//! alert escalates (incl. "next business day" in the configured zone), and the backoff schedule.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Datelike, Duration as Span, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use nbaops_shared::alerts::{kind_of, Alert, Severity, APPROVAL_KIND};
use nbaops_shared::config::alerts::{
    AlertsConfig, BusinessHours, ResolutionSla, ResponseTime, RetryPolicy,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentStatus {
    Open,
    Acknowledged,
    Escalated,
    Resolved,
}

/// One alert key's incident: the ledger record (`alert#<dedup_key>` / `state`), kept for the
/// post-incident review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub dedup_key: String,
    pub severity: Severity,
    pub status: IncidentStatus,
    pub summary: String,
    pub resource: String,
    pub source_function: String,
    pub opened_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// When the last message went out; `None` while no channel took it.
    pub last_notified_at: Option<DateTime<Utc>>,
    /// Deliveries of this key since it opened (repeats included).
    pub count: u64,
    pub escalation_level: usize,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
    pub escalated_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// Last outcome per channel ("sent" or the failure).
    pub channels: BTreeMap<String, String>,
    /// What happened, in order, one line each.
    pub history: Vec<String>,
    /// The approval request the alert asks for (issue #19): its escalations carry the links too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// Issue #22. Who was on call when it opened (`alerts.oncall.rota`), and their mention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee_mention: Option<String>,
    /// When it must be resolved by (`alerts.resolution.*`; `None`: no SLA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve_by: Option<DateTime<Utc>>,
    /// Still open past `resolve_by` (set once by the sweep, with its reminder, or at resolution).
    #[serde(default)]
    pub breached: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breached_at: Option<DateTime<Utc>>,
    /// A member of a group: the key of the incident whose thread it joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grouped_into: Option<String>,
    /// A group's incident: the keys that joined its thread, and of those and its own key the
    /// ones that resolved. The group resolves when every key of it has.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub members: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub cleared: BTreeSet<String>,
}

impl Incident {
    pub fn open(alert: &Alert, now: DateTime<Utc>) -> Incident {
        Incident {
            dedup_key: alert.dedup_key.clone(),
            severity: alert.severity,
            status: IncidentStatus::Open,
            summary: alert.summary.clone(),
            resource: alert.resource.clone(),
            source_function: alert.source_function.clone(),
            opened_at: now,
            last_seen_at: now,
            last_notified_at: None,
            count: 1,
            escalation_level: 0,
            acknowledged_at: None,
            acknowledged_by: None,
            escalated_at: None,
            resolved_at: None,
            channels: BTreeMap::new(),
            history: vec![format!("{} opened ({})", now.to_rfc3339(), alert.severity)],
            approval_id: alert.approval_id.clone(),
            assignee: None,
            assignee_mention: None,
            resolve_by: None,
            breached: false,
            breached_at: None,
            grouped_into: None,
            members: BTreeSet::new(),
            cleared: BTreeSet::new(),
        }
    }

    /// Every key of its group still firing (its own included); empty when all resolved.
    pub fn still_firing(&self) -> Vec<&str> {
        std::iter::once(self.dedup_key.as_str())
            .chain(self.members.iter().map(String::as_str))
            .filter(|k| !self.cleared.contains(*k))
            .collect()
    }

    pub fn is_closed(&self) -> bool {
        self.status == IncidentStatus::Resolved
    }

    pub fn note(&mut self, now: DateTime<Utc>, what: impl AsRef<str>) {
        self.history
            .push(format!("{} {}", now.to_rfc3339(), what.as_ref()));
        // The record must stay well under DynamoDB's 400 KB item limit.
        if self.history.len() > 100 {
            self.history.drain(1..self.history.len() - 99);
        }
    }
}

/// What a firing alert means given the incident on record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firing {
    /// No open incident: open one and notify.
    New,
    /// Open, but the last message is older than the window (or never went out), or the severity
    /// rose: notify again on the same incident.
    Repeat,
    /// Open and notified within the window: count it, send nothing.
    Duplicate,
}

pub fn decide_firing(
    prev: Option<&Incident>,
    alert: &Alert,
    now: DateTime<Utc>,
    window: Span,
) -> Firing {
    match prev {
        None => Firing::New,
        Some(p) if p.is_closed() => Firing::New,
        Some(p) if alert.severity < p.severity => Firing::Repeat,
        Some(p) => match p.last_notified_at {
            Some(t) if now - t < window => Firing::Duplicate,
            _ => Firing::Repeat,
        },
    }
}

/// The start of the dedup window `now` falls in: one notification claim per key and window.
pub fn window_bucket(now: DateTime<Utc>, window: Span) -> i64 {
    now.timestamp() / window.num_seconds().max(1)
}

fn local_at(b: &BusinessHours, day: NaiveDate, t: chrono::NaiveTime) -> DateTime<Utc> {
    let naive = day.and_time(t);
    // A DST gap has no such local time: the first instant after it is what people mean.
    match b.tz.from_local_datetime(&naive).earliest() {
        Some(dt) => dt.with_timezone(&Utc),
        None => {
            b.tz.from_local_datetime(&(naive + Span::hours(1)))
                .earliest()
                .map(|dt| dt.with_timezone(&Utc))
                .unwrap_or_else(|| Utc.from_utc_datetime(&naive))
        }
    }
}

/// The end of the `n`-th business day after the local date of `from` (n >= 1).
pub fn business_day_end(b: &BusinessHours, from: DateTime<Utc>, n: usize) -> DateTime<Utc> {
    let mut day = from.with_timezone(&b.tz).date_naive();
    let mut found = 0;
    // At most a year of lookahead guards against a config with no reachable business day.
    for _ in 0..(366 * n.max(1)) {
        day = day.succ_opt().unwrap_or(day);
        if b.days.contains(&day.weekday()) {
            found += 1;
            if found >= n.max(1) {
                break;
            }
        }
    }
    local_at(b, day, b.end)
}

/// When escalation level `level` (1 = first) is due for an incident opened at `opened_at`:
/// `level` response times after opening.
pub fn escalation_due(
    cfg: &AlertsConfig,
    severity: Severity,
    opened_at: DateTime<Utc>,
    level: usize,
) -> DateTime<Utc> {
    match cfg.response_time(severity) {
        ResponseTime::Minutes(m) => opened_at + Span::minutes(m * level.max(1) as i64),
        ResponseTime::NextBusinessDay => business_day_end(&cfg.business, opened_at, level),
    }
}

/// The next level an unacknowledged incident should reach now, if any.
pub fn next_escalation(cfg: &AlertsConfig, inc: &Incident, now: DateTime<Utc>) -> Option<usize> {
    if !matches!(inc.status, IncidentStatus::Open | IncidentStatus::Escalated) {
        return None;
    }
    let level = inc.escalation_level + 1;
    if level > cfg.chain.len() {
        return None;
    }
    (now >= escalation_due(cfg, inc.severity, inc.opened_at, level)).then_some(level)
}

/// When an incident of `severity` opened at `opened_at` must be resolved by (`None`: no SLA).
/// `business-day`: the end of business hours of the local day it opened in when that is a
/// business day and it opened before the end of hours, else the end of the next business day.
pub fn resolution_due(
    cfg: &AlertsConfig,
    severity: Severity,
    opened_at: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match cfg.resolution_sla(severity) {
        ResolutionSla::None => None,
        ResolutionSla::Minutes(m) => Some(opened_at + Span::minutes(m)),
        ResolutionSla::BusinessDay => {
            let b = &cfg.business;
            let local = opened_at.with_timezone(&b.tz);
            let today = local.date_naive();
            if b.days.contains(&today.weekday()) && local.time() < b.end {
                Some(local_at(b, today, b.end))
            } else {
                Some(business_day_end(b, opened_at, 1))
            }
        }
    }
}

/// The earlier of two optional deadlines.
pub fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The scope of a resource: its name between the first ':' and the first '/' after it
/// (`rds:db1` and `pg:db1/standby:r1` are both `db1`; a resource without ':' is its own scope).
pub fn scope_of(resource: &str) -> &str {
    let rest = resource.split_once(':').map(|(_, r)| r).unwrap_or(resource);
    rest.split('/').next().unwrap_or(rest)
}

/// An open incident an arriving alert may join, as the open index lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenEntry {
    pub key: String,
    pub kind: String,
    pub resource: String,
    pub opened_at: DateTime<Utc>,
}

/// Why an alert joins an open incident's thread: the same resource, or a root-cause rule.
pub fn group_reason(cfg: &AlertsConfig, alert: &Alert, open: &OpenEntry) -> Option<String> {
    let kind = kind_of(&alert.dedup_key);
    // An approval request carries its own links: it always gets its own message.
    if alert.resource.is_empty()
        || open.key == alert.dedup_key
        || kind == APPROVAL_KIND
        || open.kind == APPROVAL_KIND
    {
        return None;
    }
    if open.resource == alert.resource {
        return Some(format!("same resource {}", alert.resource));
    }
    let scope = scope_of(&alert.resource);
    cfg.incidents
        .causes
        .iter()
        .find(|r| {
            r.cause == open.kind
                && r.effects.iter().any(|e| e == kind)
                && !scope.is_empty()
                && scope_of(&open.resource) == scope
        })
        .map(|r| format!("caused by {} on {scope}", r.cause))
}

/// The open incident an alert arriving at `now` joins, if any: the earliest opened within the
/// group window with a reason (see [`group_reason`]).
pub fn group_for(
    cfg: &AlertsConfig,
    alert: &Alert,
    open: &[OpenEntry],
    now: DateTime<Utc>,
) -> Option<(OpenEntry, String)> {
    let window = Span::minutes(cfg.incidents.group_window_minutes);
    if window <= Span::zero() {
        return None;
    }
    open.iter()
        .filter(|e| e.opened_at <= now && now - e.opened_at < window)
        .filter_map(|e| group_reason(cfg, alert, e).map(|why| (e.clone(), why)))
        .min_by_key(|(e, _)| e.opened_at)
}

/// The delays before attempts 2, 3, ...: doubling from `base_ms`, each capped at `max_ms`, and
/// cut where the total would pass `budget_ms`.
pub fn backoff_schedule(p: &RetryPolicy) -> Vec<Duration> {
    let mut out = Vec::new();
    let mut total = 0u64;
    for i in 1..p.max_attempts {
        let d = p
            .base_ms
            .saturating_mul(1u64 << (i - 1).min(20))
            .min(p.max_ms);
        if total + d > p.budget_ms {
            break;
        }
        total += d;
        out.push(Duration::from_millis(d));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::Weekday;
    use nbaops_shared::config::{alerts, layer, Env};

    fn cfg(pairs: &[(&str, &str)]) -> AlertsConfig {
        let vars = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        alerts::from_settings(&layer(Env::Dev, &vars, &BTreeMap::new()).unwrap()).unwrap()
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn alert(sev: Severity) -> Alert {
        Alert::new(sev, "dev", "f", "r", "k", "s", t("2026-11-25T10:00:00Z"))
    }

    #[test]
    fn dedup_window() {
        let now = t("2026-11-25T10:00:00Z");
        let w = Span::minutes(60);
        let a = alert(Severity::P2);
        assert_eq!(decide_firing(None, &a, now, w), Firing::New);
        let mut inc = Incident::open(&a, now);
        // Never delivered: a repeat tries again.
        assert_eq!(decide_firing(Some(&inc), &a, now, w), Firing::Repeat);
        inc.last_notified_at = Some(now);
        assert_eq!(
            decide_firing(Some(&inc), &a, now + Span::minutes(59), w),
            Firing::Duplicate
        );
        assert_eq!(
            decide_firing(Some(&inc), &a, now + Span::minutes(60), w),
            Firing::Repeat
        );
        // A rise in severity is news even inside the window; a fall is not.
        assert_eq!(
            decide_firing(Some(&inc), &alert(Severity::P1), now, w),
            Firing::Repeat
        );
        assert_eq!(
            decide_firing(Some(&inc), &alert(Severity::P3), now, w),
            Firing::Duplicate
        );
        inc.status = IncidentStatus::Resolved;
        assert_eq!(decide_firing(Some(&inc), &a, now, w), Firing::New);
        assert_eq!(
            window_bucket(now, w),
            window_bucket(now + Span::minutes(5), w)
        );
    }

    #[test]
    fn response_times_and_levels() {
        let c = cfg(&[]);
        let opened = t("2026-11-25T10:00:00Z");
        assert_eq!(
            escalation_due(&c, Severity::P1, opened, 1),
            t("2026-11-25T10:15:00Z")
        );
        assert_eq!(
            escalation_due(&c, Severity::P1, opened, 2),
            t("2026-11-25T10:30:00Z")
        );
        assert_eq!(
            escalation_due(&c, Severity::P2, opened, 1),
            t("2026-11-25T10:30:00Z")
        );
        assert_eq!(
            escalation_due(&c, Severity::P3, opened, 1),
            t("2026-11-25T14:00:00Z")
        );
    }

    #[test]
    fn next_business_day_across_a_weekend_and_a_time_zone() {
        let c = cfg(&[("NBAOPS_ALERTS__BUSINESS__TZ", "America/New_York")]);
        assert_eq!(c.business.days.len(), 5);
        assert!(!c.business.days.contains(&Weekday::Sat));
        // Friday 2026-11-27 22:30 New York = Saturday 03:30 UTC: the local date is Friday, so
        // the next business day is Monday 30 Nov, ending 18:00 EST = 23:00 UTC.
        let fri_night = t("2026-11-28T03:30:00Z");
        assert_eq!(
            business_day_end(&c.business, fri_night, 1),
            t("2026-11-30T23:00:00Z")
        );
        // Read in UTC the same instant is Saturday: the next business day is still Monday.
        let utc = cfg(&[]);
        assert_eq!(
            business_day_end(&utc.business, fri_night, 1),
            t("2026-11-30T18:00:00Z")
        );
        // Thursday -> Friday; level 2 -> Monday.
        let thu = t("2026-11-26T15:00:00Z");
        assert_eq!(
            escalation_due(&c, Severity::P4, thu, 1),
            t("2026-11-27T23:00:00Z")
        );
        assert_eq!(
            escalation_due(&c, Severity::P4, thu, 2),
            t("2026-11-30T23:00:00Z")
        );
        // Summer time: 18:00 EDT = 22:00 UTC.
        assert_eq!(
            business_day_end(&c.business, t("2026-07-09T12:00:00Z"), 1),
            t("2026-07-10T22:00:00Z")
        );
    }

    #[test]
    fn escalation_once_per_level_then_stops() {
        let c = cfg(&[]);
        assert_eq!(c.chain.len(), 2);
        let opened = t("2026-11-25T10:00:00Z");
        let mut inc = Incident::open(&alert(Severity::P1), opened);
        assert_eq!(next_escalation(&c, &inc, opened + Span::minutes(14)), None);
        assert_eq!(
            next_escalation(&c, &inc, opened + Span::minutes(15)),
            Some(1)
        );
        inc.escalation_level = 1;
        inc.status = IncidentStatus::Escalated;
        assert_eq!(next_escalation(&c, &inc, opened + Span::minutes(20)), None);
        assert_eq!(
            next_escalation(&c, &inc, opened + Span::minutes(30)),
            Some(2)
        );
        inc.escalation_level = 2;
        assert_eq!(
            next_escalation(&c, &inc, opened + Span::hours(9)),
            None,
            "end of chain"
        );
        let mut acked = Incident::open(&alert(Severity::P1), opened);
        acked.status = IncidentStatus::Acknowledged;
        assert_eq!(next_escalation(&c, &acked, opened + Span::hours(1)), None);
    }

    #[test]
    fn backoff_doubles_caps_and_stays_in_budget() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_ms: 250,
            max_ms: 800,
            budget_ms: 10_000,
        };
        let ms: Vec<u128> = backoff_schedule(&p).iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![250, 500, 800, 800]);
        let tight = RetryPolicy {
            budget_ms: 1000,
            ..p.clone()
        };
        let ms: Vec<u128> = backoff_schedule(&tight)
            .iter()
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(ms, vec![250, 500]);
        let once = RetryPolicy {
            max_attempts: 1,
            ..p
        };
        assert!(backoff_schedule(&once).is_empty());
    }

    #[test]
    fn resolution_due_business_day_across_weekends_and_dst() {
        let c = cfg(&[("NBAOPS_ALERTS__BUSINESS__TZ", "Europe/Paris")]);
        let due = |s: &str| resolution_due(&c, Severity::P2, t(s)).unwrap();
        // Friday 26 March 2027 19:00 Paris (18:00 UTC, CET) is after hours: Monday 29 March
        // 18:00 Paris, which is CEST after Sunday's change: 16:00 UTC.
        assert_eq!(due("2027-03-26T18:00:00Z"), t("2027-03-29T16:00:00Z"));
        // Before the end of hours on a business day (08:00 before opening too): that day.
        assert_eq!(due("2027-03-26T16:59:59Z"), t("2027-03-26T17:00:00Z"));
        assert_eq!(due("2027-03-26T07:00:00Z"), t("2027-03-26T17:00:00Z"));
        // On a Saturday: Monday. At 18:00 sharp: the next business day.
        assert_eq!(due("2027-03-27T10:00:00Z"), t("2027-03-29T16:00:00Z"));
        assert_eq!(due("2027-03-29T16:00:00Z"), t("2027-03-30T16:00:00Z"));
        // Autumn: Friday 29 Oct 2027 after hours, the clocks go back on Sunday: 17:00 UTC Monday.
        assert_eq!(due("2027-10-29T19:00:00Z"), t("2027-11-01T17:00:00Z"));
        // Year end: Thursday 31 Dec 2026 20:00 Paris -> Friday 1 Jan 2027 (a business day here).
        assert_eq!(due("2026-12-31T19:00:00Z"), t("2027-01-01T17:00:00Z"));
        // P3 48 h, P4 none; P1 4 h.
        let opened = t("2026-11-27T22:00:00Z");
        assert_eq!(
            resolution_due(&c, Severity::P3, opened),
            Some(t("2026-11-29T22:00:00Z"))
        );
        assert_eq!(resolution_due(&c, Severity::P4, opened), None);
        assert_eq!(
            resolution_due(&c, Severity::P1, opened),
            Some(t("2026-11-28T02:00:00Z"))
        );
        assert_eq!(earliest(None, Some(opened)), Some(opened));
        assert_eq!(
            earliest(Some(opened), Some(opened + Span::hours(1))),
            Some(opened)
        );
    }

    #[test]
    fn grouping_rules() {
        let c = cfg(&[]);
        let now = t("2026-11-25T10:30:00Z");
        let entry = |key: &str, resource: &str, at: &str| OpenEntry {
            key: key.into(),
            kind: kind_of(key).into(),
            resource: resource.into(),
            opened_at: t(at),
        };
        let on = |key: &str, resource: &str| {
            let mut a = Alert::new(Severity::P3, "dev", "f", resource, key, "s", now);
            a.resource = resource.into();
            a
        };
        let failover = entry("failover#rds:db1#x", "rds:db1", "2026-11-25T10:00:01Z");
        let open = vec![failover.clone()];
        let lag = on("pg-replication-lag#pg:db1/standby:a", "pg:db1/standby:a");
        assert_eq!(
            group_for(&c, &lag, &open, now).map(|(e, why)| (e.key, why)),
            Some((
                "failover#rds:db1#x".into(),
                "caused by failover on db1".into()
            ))
        );
        // 30 minutes after the cause opened: the window is over.
        assert!(group_for(&c, &lag, &open, now + Span::seconds(1)).is_none());
        // Not an effect of a failover, another scope, the cause itself: nothing.
        assert!(group_for(&c, &on("pg-bloat#pg:db1/t", "pg:db1/t"), &open, now).is_none());
        assert!(group_for(
            &c,
            &on("pg-replication-lag#pg:db10/s", "pg:db10/s"),
            &open,
            now
        )
        .is_none());
        assert!(group_for(&c, &on("failover#rds:db1#x", "rds:db1"), &open, now).is_none());
        // The reverse (a failover after the lag) is not a rule.
        let lag_open = vec![entry(
            "pg-replication-lag#pg:db1/s",
            "pg:db1/s",
            "2026-11-25T10:10:00Z",
        )];
        assert!(group_for(&c, &on("failover#rds:db1#y", "rds:db1"), &lag_open, now).is_none());
        // Same resource, any kind; the earliest open incident wins.
        let both = vec![
            entry("scale_out#asg:web", "asg:web", "2026-11-25T10:20:00Z"),
            entry(
                "capacity-exhausted#asg:web",
                "asg:web",
                "2026-11-25T10:10:00Z",
            ),
        ];
        let (e, why) = group_for(&c, &on("flapping#asg:web", "asg:web"), &both, now).unwrap();
        assert_eq!(
            (e.key.as_str(), why.as_str()),
            ("capacity-exhausted#asg:web", "same resource asg:web")
        );
        assert_eq!(scope_of("rds:db1"), "db1");
        assert_eq!(scope_of("pg:db1/standby:r1"), "db1");
        assert_eq!(scope_of("plain"), "plain");
    }
}
