//! The failover timeline of one database, as pure functions of (incidents, event, config, now).
//!
//! RDS delivers events best effort: twice (EventBridge and an event subscription), out of order
//! (the completion before the start) or not at all. So an incident is keyed by the time of the
//! first event seen (stable: it names the notification thread), events are remembered by
//! (event ID, event time) so a duplicate changes nothing, a start arriving after its completion
//! fills in the duration, and a completion without a start is still verified and reported.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use nbaops_shared::alerts::Severity;
use nbaops_shared::config::failover::FailoverConfig;
use nbaops_shared::events::rds_catalog::IncidentRole;

use crate::verify::Verification;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Started, no completion yet.
    InProgress,
    /// Completed, verification pending (transient within one invocation).
    Completed,
    Verified,
    VerificationFailed,
    /// RDS reported the failover failed.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenEvent {
    pub code: String,
    pub at: DateTime<Utc>,
    pub event_id: String,
    pub title: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub db: String,
    /// Time of the first event seen, `20261125T200102.123Z`: never changes.
    pub id: String,
    pub cluster: bool,
    pub phase: Phase,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    /// The worst severity this incident reached.
    pub severity: Severity,
    pub events: Vec<SeenEvent>,
    /// Notices already sent: "start", "stuck", "failed", "completion", "resolution".
    pub notified: Vec<String>,
    pub verification: Option<Verification>,
}

/// One failover-relevant event, already classified by ID.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub db: String,
    pub cluster: bool,
    pub code: String,
    pub role: IncidentRole,
    pub at: DateTime<Utc>,
    pub event_id: String,
    pub title: String,
}

/// A notification to publish on the incident's thread.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// Which notice of the incident: "start", "stuck", "failed", "completion", "resolution".
    pub what: &'static str,
    pub severity: Severity,
    pub resolved: bool,
    pub summary: String,
    pub details: Value,
}

pub fn incident_id(at: DateTime<Utc>) -> String {
    at.format("%Y%m%dT%H%M%S%.3fZ").to_string()
}

fn worst(a: Severity, b: Severity) -> Severity {
    a.min(b)
}

impl Incident {
    /// One failover = one thread.
    pub fn dedup_key(&self) -> String {
        format!("failover#rds:{}#{}", self.db, self.id)
    }

    pub fn duration_seconds(&self) -> Option<f64> {
        let (s, c) = (self.started_at?, self.completed_at?);
        Some((c - s).num_milliseconds() as f64 / 1000.0)
    }

    /// Kept in the sweep's index while something may still happen.
    pub fn is_open(&self) -> bool {
        matches!(
            self.phase,
            Phase::InProgress | Phase::Completed | Phase::VerificationFailed
        )
    }

    fn end(&self) -> Option<DateTime<Utc>> {
        self.completed_at.or(self.failed_at)
    }

    fn has_seen(&self, code: &str, at: DateTime<Utc>) -> bool {
        self.events.iter().any(|e| e.code == code && e.at == at)
    }

    fn record(&mut self, s: &Signal) {
        self.events.push(SeenEvent {
            code: s.code.clone(),
            at: s.at,
            event_id: s.event_id.clone(),
            title: s.title.clone(),
        });
        self.events.sort_by_key(|e| e.at);
    }

    fn notified(&self, what: &str) -> bool {
        self.notified.iter().any(|n| n == what)
    }

    fn mark(&mut self, what: &str) {
        if !self.notified(what) {
            self.notified.push(what.into());
        }
    }

    /// What kind of failover this is, for the summaries.
    fn kind(&self) -> &'static str {
        if self.cluster {
            "Multi-AZ DB cluster failover"
        } else {
            "Multi-AZ failover"
        }
    }

    pub fn timeline(&self) -> Value {
        json!({
            "incident": self.id,
            "phase": self.phase,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "failed_at": self.failed_at,
            "duration_seconds": self.duration_seconds(),
            "events": self.events.iter().map(|e| json!({"code": e.code, "at": e.at, "title": e.title})).collect::<Vec<_>>(),
        })
    }
}

fn expected_max(cfg: &FailoverConfig, cluster: bool) -> i64 {
    if cluster {
        cfg.cluster_expected_max_seconds
    } else {
        cfg.expected_max_seconds
    }
}

/// "in 92 s (expected 60–120 s)" and whether the limit was passed.
fn duration_words(inc: &Incident, cfg: &FailoverConfig) -> (String, bool) {
    let max = expected_max(cfg, inc.cluster);
    let min = if inc.cluster {
        0
    } else {
        cfg.expected_min_seconds
    };
    match inc.duration_seconds() {
        None => (
            "(duration unknown: the start event never arrived)".into(),
            false,
        ),
        Some(d) => {
            let over = d > cfg.limit_seconds as f64;
            let judgement = if over {
                format!("beyond the {} s limit", cfg.limit_seconds)
            } else if d > max as f64 {
                "slower than expected".into()
            } else {
                "as expected".into()
            };
            (
                format!("in {d:.0} s (expected {min}–{max} s: {judgement})"),
                over,
            )
        }
    }
}

/// Which stored incident an event belongs to; `None` = a new one (or, for a phase, none).
/// `incidents` are in id (time) order; the latest match wins.
pub fn find_incident(incidents: &[Incident], s: &Signal, cfg: &FailoverConfig) -> Option<usize> {
    if let Some(i) = incidents
        .iter()
        .rposition(|inc| inc.has_seen(&s.code, s.at))
    {
        return Some(i);
    }
    let corr = Duration::seconds(cfg.correlation_seconds);
    let near = |t: DateTime<Utc>| (s.at - t).abs() <= corr;
    incidents.iter().rposition(|inc| match s.role {
        IncidentRole::Opens => match (inc.started_at, inc.end()) {
            // A second start event of a failover under way.
            (Some(st), None) => near(st),
            // The start arriving after its completion (or a second start ID of it).
            (_, Some(end)) => s.at <= end && end - s.at <= corr,
            (None, None) => false,
        },
        IncidentRole::Closes | IncidentRole::Fails => match (inc.started_at, inc.end()) {
            // Whatever it took, a completion closes the failover under way.
            (Some(st), None) => st <= s.at + corr,
            // A second completion ID (0015 and 0049, 0049 and 0051) of the same failover.
            (_, Some(end)) => near(end),
            (None, None) => false,
        },
        IncidentRole::Phase => inc.started_at.is_some_and(near) || inc.end().is_some_and(near),
        IncidentRole::None => false,
    })
}

/// What one event does to its incident.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub incident: Incident,
    pub duplicate: bool,
    /// The new primary must be verified, then [`conclude`] called.
    pub verify: bool,
    pub notices: Vec<Notice>,
    pub notes: Vec<String>,
}

pub fn apply(existing: Option<Incident>, s: &Signal, cfg: &FailoverConfig) -> Step {
    if let Some(inc) = existing.as_ref().filter(|i| i.has_seen(&s.code, s.at)) {
        return Step {
            incident: inc.clone(),
            duplicate: true,
            verify: false,
            notices: vec![],
            notes: vec![format!(
                "duplicate {} at {} of incident {}: nothing new",
                s.code,
                s.at.to_rfc3339(),
                inc.id
            )],
        };
    }
    let mut inc = existing.unwrap_or_else(|| Incident {
        db: s.db.clone(),
        id: incident_id(s.at),
        cluster: s.cluster,
        phase: Phase::InProgress,
        started_at: None,
        completed_at: None,
        failed_at: None,
        severity: Severity::P2,
        events: vec![],
        notified: vec![],
        verification: None,
    });
    inc.record(s);
    let mut step = Step {
        incident: inc.clone(),
        duplicate: false,
        verify: false,
        notices: vec![],
        notes: vec![],
    };
    let inc = &mut step.incident;
    match s.role {
        IncidentRole::Opens => {
            let late = inc.end().is_some();
            inc.started_at = Some(inc.started_at.map_or(s.at, |t| t.min(s.at)));
            if late && inc.completed_at.is_some() {
                // Out of order: the completion was already handled; the duration is now known.
                let (words, over) = duration_words(inc, cfg);
                if over {
                    inc.severity = worst(inc.severity, Severity::P1);
                }
                step.notes
                    .push(format!("start event arrived after the completion: {words}"));
                step.notices.push(Notice {
                    what: "timeline",
                    severity: inc.severity,
                    resolved: inc.phase == Phase::Verified,
                    summary: format!(
                        "{}: {} started {} before its completion (start event delivered late): completed {words}",
                        inc.db,
                        inc.kind(),
                        inc.duration_seconds().map(|d| format!("{d:.0} s")).unwrap_or_default()
                    ),
                    details: inc.timeline(),
                });
            } else if !inc.notified("start") && !late {
                inc.mark("start");
                let max = expected_max(cfg, inc.cluster);
                step.notices.push(Notice {
                    what: "start",
                    severity: Severity::P2,
                    resolved: false,
                    summary: format!(
                        "{}: {} started ({}); expected to complete within {max} s, P1 after {} s",
                        inc.db,
                        inc.kind(),
                        s.code,
                        cfg.limit_seconds
                    ),
                    details: inc.timeline(),
                });
            } else {
                step.notes.push(format!(
                    "{} joins incident {} (start already known)",
                    s.code, inc.id
                ));
            }
        }
        IncidentRole::Closes => match inc.phase {
            Phase::InProgress | Phase::Failed => {
                inc.completed_at = Some(s.at);
                inc.phase = Phase::Completed;
                step.verify = true;
            }
            Phase::VerificationFailed => {
                inc.completed_at = Some(inc.completed_at.map_or(s.at, |t| t.min(s.at)));
                inc.phase = Phase::Completed;
                step.verify = true;
                step.notes.push(format!(
                    "{} after a failed verification: verifying again",
                    s.code
                ));
            }
            Phase::Completed | Phase::Verified => {
                inc.completed_at = Some(inc.completed_at.map_or(s.at, |t| t.min(s.at)));
                step.notes.push(format!(
                    "{} joins incident {} (completion already known)",
                    s.code, inc.id
                ));
            }
        },
        IncidentRole::Fails => {
            inc.failed_at = Some(s.at);
            inc.phase = Phase::Failed;
            inc.severity = Severity::P1;
            if !inc.notified("failed") {
                inc.mark("failed");
                step.notices.push(Notice {
                    what: "failed",
                    severity: Severity::P1,
                    resolved: false,
                    summary: format!(
                        "{}: {} FAILED ({}): {}",
                        inc.db,
                        inc.kind(),
                        s.code,
                        s.title
                    ),
                    details: inc.timeline(),
                });
            }
        }
        IncidentRole::Phase | IncidentRole::None => {
            step.notes.push(format!(
                "{} ({}) recorded on incident {}",
                s.code, s.title, inc.id
            ));
        }
    }
    step
}

/// The verdict after a completion (or a re-verification by the sweep). `None` = nothing new to say.
pub fn conclude(
    mut inc: Incident,
    v: Verification,
    cfg: &FailoverConfig,
) -> (Incident, Option<Notice>) {
    let was_failing = inc.phase == Phase::VerificationFailed && inc.notified("completion");
    let (words, over) = duration_words(&inc, cfg);
    let mut severity = Severity::P2;
    if over || !v.passed {
        severity = Severity::P1;
    }
    inc.severity = worst(inc.severity, severity);
    inc.phase = if v.passed {
        Phase::Verified
    } else {
        Phase::VerificationFailed
    };
    let vwords = v.words();
    inc.verification = Some(v);
    let mut details = inc.timeline();
    details["verification"] = serde_json::to_value(&inc.verification).unwrap_or(Value::Null);
    details["expected_seconds"] = json!([
        if inc.cluster {
            0
        } else {
            cfg.expected_min_seconds
        },
        expected_max(cfg, inc.cluster)
    ]);
    details["limit_seconds"] = json!(cfg.limit_seconds);
    let passed = inc.phase == Phase::Verified;
    let notice = if was_failing {
        if !passed {
            return (inc, None);
        }
        inc.mark("resolution");
        Notice {
            what: "resolution",
            severity: inc.severity,
            resolved: true,
            summary: format!(
                "{}: new primary verified after the failover; {vwords}",
                inc.db
            ),
            details,
        }
    } else {
        inc.mark("completion");
        if passed {
            inc.mark("resolution");
        }
        Notice {
            what: "completion",
            severity: inc.severity,
            resolved: passed,
            summary: format!("{}: {} completed {words}; {vwords}", inc.db, inc.kind()),
            details,
        }
    };
    (inc, Some(notice))
}

/// What the scheduled sweep does with one open incident.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepStep {
    pub incident: Incident,
    pub notice: Option<Notice>,
    pub reverify: bool,
    /// Drop from the open index: nothing more will happen by itself.
    pub close: bool,
    pub note: String,
}

pub fn sweep(mut inc: Incident, now: DateTime<Utc>, cfg: &FailoverConfig) -> SweepStep {
    let give_up = Duration::hours(cfg.reverify_hours);
    match (inc.phase, inc.started_at) {
        (Phase::InProgress, Some(st)) => {
            let open_for = (now - st).num_seconds();
            if open_for > cfg.limit_seconds && !inc.notified("stuck") {
                inc.mark("stuck");
                inc.severity = Severity::P1;
                let notice = Notice {
                    what: "stuck",
                    severity: Severity::P1,
                    resolved: false,
                    summary: format!(
                        "{}: {} started at {} and has not completed after {open_for} s (limit {} s)",
                        inc.db,
                        inc.kind(),
                        st.format("%H:%M:%S UTC"),
                        cfg.limit_seconds
                    ),
                    details: inc.timeline(),
                };
                SweepStep {
                    incident: inc,
                    notice: Some(notice),
                    reverify: false,
                    close: false,
                    note: format!("open for {open_for} s: P1 raised"),
                }
            } else {
                let close = now - st > give_up;
                SweepStep {
                    incident: inc,
                    notice: None,
                    reverify: false,
                    close,
                    note: format!("open for {open_for} s"),
                }
            }
        }
        (Phase::VerificationFailed, _) | (Phase::Completed, _) => {
            let since = inc.completed_at.unwrap_or(now);
            let stale = now - since > give_up;
            SweepStep {
                incident: inc,
                notice: None,
                reverify: !stale,
                close: stale,
                note: if stale {
                    "verification failing for too long: left to people".into()
                } else {
                    "verification failed before: verifying again".into()
                },
            }
        }
        _ => SweepStep {
            incident: inc,
            notice: None,
            reverify: false,
            close: true,
            note: "closed".into(),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn cfg() -> FailoverConfig {
        let s = nbaops_shared::config::layer(
            nbaops_shared::config::Env::Dev,
            &Default::default(),
            &Default::default(),
        )
        .unwrap();
        nbaops_shared::config::failover::from_settings(&s).unwrap()
    }

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 20, 0, 0).unwrap() + Duration::seconds(secs)
    }

    fn sig(code: &str, role: IncidentRole, at: i64) -> Signal {
        Signal {
            db: "nbaops-dev-db".into(),
            cluster: false,
            code: code.into(),
            role,
            at: t(at),
            event_id: format!("{code}-{at}"),
            title: code.into(),
        }
    }
    fn start(at: i64) -> Signal {
        sig("RDS-EVENT-0013", IncidentRole::Opens, at)
    }
    fn done(at: i64) -> Signal {
        sig("RDS-EVENT-0049", IncidentRole::Closes, at)
    }

    fn verification(passed: bool) -> Verification {
        Verification {
            passed,
            target: "h:5432/postgres".into(),
            checks: vec![crate::verify::Check {
                name: "primary".into(),
                passed,
                detail: if passed {
                    "not in recovery".into()
                } else {
                    "still a standby".into()
                },
            }],
            attempts: 1,
            at: t(500),
            wrote_heartbeat: passed,
        }
    }

    /// Plays signals through find/apply/conclude like the handler does, over a store.
    fn play(store: &mut Vec<Incident>, s: &Signal, passed: bool) -> Vec<Notice> {
        let c = cfg();
        let idx = find_incident(store, s, &c);
        let step = apply(idx.map(|i| store[i].clone()), s, &c);
        let mut notices = step.notices.clone();
        let mut inc = step.incident;
        if step.verify {
            let (i, n) = conclude(inc, verification(passed), &c);
            inc = i;
            notices.extend(n);
        }
        if !step.duplicate {
            match idx {
                Some(i) => store[i] = inc,
                None => {
                    store.push(inc);
                    store.sort_by(|a, b| a.id.cmp(&b.id));
                }
            }
        }
        notices
    }

    #[test]
    fn start_then_completion_is_one_p2_thread_with_duration() {
        let mut store = vec![];
        let n = play(&mut store, &start(0), true);
        assert_eq!(n.len(), 1);
        assert_eq!(
            (n[0].what, n[0].severity, n[0].resolved),
            ("start", Severity::P2, false)
        );
        let n = play(&mut store, &done(92), true);
        assert_eq!(n.len(), 1);
        assert_eq!(
            (n[0].what, n[0].severity, n[0].resolved),
            ("completion", Severity::P2, true)
        );
        assert!(
            n[0].summary
                .contains("in 92 s (expected 60–120 s: as expected)"),
            "{}",
            n[0].summary
        );
        assert_eq!(n[0].details["duration_seconds"], 92.0);
        assert_eq!(store.len(), 1);
        assert_eq!(store[0].phase, Phase::Verified);
        assert!(!store[0].is_open());
    }

    #[test]
    fn duplicates_change_nothing_and_send_nothing() {
        let mut store = vec![];
        play(&mut store, &start(0), true);
        play(&mut store, &done(92), true);
        let before = store.clone();
        // Same event again (EventBridge and SNS), and a second completion ID of the same failover.
        assert!(play(&mut store, &start(0), true).is_empty());
        assert!(play(&mut store, &done(92), true).is_empty());
        assert!(play(
            &mut store,
            &sig("RDS-EVENT-0015", IncidentRole::Closes, 93),
            true
        )
        .is_empty());
        assert_eq!(store.len(), 1);
        assert_eq!(store[0].completed_at, before[0].completed_at);
        assert_eq!(store[0].events.len(), 3);
    }

    #[test]
    fn completion_before_start_then_the_late_start_fills_the_duration() {
        let mut store = vec![];
        let n = play(&mut store, &done(92), true);
        assert_eq!(n.len(), 1);
        assert!(
            n[0].summary.contains("duration unknown"),
            "{}",
            n[0].summary
        );
        assert_eq!(n[0].severity, Severity::P2);
        let n = play(&mut store, &start(0), true);
        assert_eq!(store.len(), 1, "{store:#?}");
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].what, "timeline");
        assert!(n[0].resolved);
        assert_eq!(store[0].duration_seconds(), Some(92.0));
        // The thread keeps the key of the first event seen.
        assert_eq!(store[0].id, incident_id(t(92)));
    }

    #[test]
    fn missing_start_is_still_verified_and_a_slow_failover_is_p1() {
        let mut store = vec![];
        play(&mut store, &start(0), true);
        let n = play(&mut store, &done(150), true);
        assert_eq!(n[0].severity, Severity::P2);
        assert!(n[0].summary.contains("slower than expected"));
        let mut store = vec![];
        play(&mut store, &start(0), true);
        let n = play(&mut store, &done(301), true);
        assert_eq!(n[0].severity, Severity::P1);
        assert!(n[0].summary.contains("beyond the 300 s limit"));
    }

    #[test]
    fn failed_verification_is_p1_and_a_later_pass_resolves_it() {
        let c = cfg();
        let mut store = vec![];
        play(&mut store, &start(0), true);
        let n = play(&mut store, &done(90), false);
        assert_eq!((n[0].severity, n[0].resolved), (Severity::P1, false));
        assert!(
            n[0].summary.contains("verification FAILED"),
            "{}",
            n[0].summary
        );
        assert!(store[0].is_open());
        let s = sweep(store[0].clone(), t(600), &c);
        assert!(s.reverify && s.notice.is_none());
        let (inc, n) = conclude(s.incident.clone(), verification(false), &c);
        assert!(n.is_none(), "a second failure says nothing new");
        let (inc, n) = conclude(inc, verification(true), &c);
        let n = n.unwrap();
        assert_eq!(
            (n.what, n.severity, n.resolved),
            ("resolution", Severity::P1, true)
        );
        assert!(!inc.is_open());
    }

    #[test]
    fn sweep_raises_a_stuck_failover_once() {
        let c = cfg();
        let mut store = vec![];
        play(&mut store, &start(0), true);
        let s = sweep(store[0].clone(), t(200), &c);
        assert!(s.notice.is_none() && !s.close);
        let s = sweep(store[0].clone(), t(301), &c);
        let n = s.notice.clone().unwrap();
        assert_eq!((n.what, n.severity), ("stuck", Severity::P1));
        assert!(n.summary.contains("limit 300 s"), "{}", n.summary);
        let again = sweep(s.incident.clone(), t(400), &c);
        assert!(again.notice.is_none());
        // The completion arriving later closes the P1 thread.
        store[0] = s.incident;
        let n = play(&mut store, &done(420), true);
        assert_eq!((n[0].severity, n[0].resolved), (Severity::P1, true));
    }

    #[test]
    fn a_new_failover_after_a_completed_one_is_a_new_incident() {
        let mut store = vec![];
        play(&mut store, &start(0), true);
        play(&mut store, &done(90), true);
        let n = play(&mut store, &start(5000), true);
        assert_eq!(n[0].what, "start");
        assert_eq!(store.len(), 2);
        assert_ne!(store[0].dedup_key(), store[1].dedup_key());
    }

    #[test]
    fn cluster_failure_is_p1_and_phases_only_join() {
        let mut store = vec![];
        let mut s = sig("RDS-EVENT-0073", IncidentRole::Opens, 0);
        s.cluster = true;
        let n = play(&mut store, &s, true);
        assert!(n[0].summary.contains("within 35 s"), "{}", n[0].summary);
        let c = cfg();
        let phase = sig("RDS-EVENT-0070", IncidentRole::Phase, 10);
        assert_eq!(find_incident(&store, &phase, &c), Some(0));
        assert!(play(&mut store, &phase, true).is_empty());
        let n = play(
            &mut store,
            &sig("RDS-EVENT-0069", IncidentRole::Fails, 20),
            true,
        );
        assert_eq!((n[0].what, n[0].severity), ("failed", Severity::P1));
        assert_eq!(store[0].phase, Phase::Failed);
        // A phase far from any incident joins nothing.
        assert_eq!(
            find_incident(
                &store,
                &sig("RDS-EVENT-0050", IncidentRole::Phase, 9000),
                &c
            ),
            None
        );
    }
}
