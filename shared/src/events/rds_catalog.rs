//! What an RDS event means, by its event ID (never by its message text, which AWS rewords:
//! the sample JSON for RDS-EVENT-0049 says "A Multi-AZ failover has completed."). Source:
//! "Amazon RDS event categories and event messages" (see reference/pg-checks.md §8).
//!
//! [`classify_rds_event`] gives every RDS event a [`RdsEventInfo`]: a kind, a default severity
//! and its role in a failover incident. An unknown ID, or an event without one, is classified
//! by its category (and source type) and says so; nothing is ever dropped silently.

use serde::Serialize;

use super::{RdsEvent, RdsSourceType};
use crate::alerts::Severity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RdsEventKind {
    FailoverStarted,
    FailoverCompleted,
    /// A Multi-AZ DB cluster failover that failed (0069).
    FailoverFailed,
    /// A cluster falling back to its previous primary (0070).
    FailoverReverted,
    /// A user-requested failover RDS abandoned (0034).
    FailoverNotAttempted,
    /// Recovered from a partial failover (0065).
    PartialFailoverRecovered,
    ActivationStarted,
    ActivationCompleted,
    MultiAzRecoveryStarted,
    MultiAzRecoveryCompleted,
    RecoveryStarted,
    RecoveryCompleted,
    Shutdown,
    /// A reboot (0006 "DB instance restarted").
    Reboot,
    StorageFull,
    LowStorage,
    MaintenanceStarted,
    MaintenanceFinished,
    TopologyChange,
    Stopped,
    Started,
    /// A stopped instance RDS starts again after 7 days (0154): it bills again.
    AutoStartAfter7Days,
    ReplicationStopped,
    ReplicationResumed,
    /// An ID we do not know, or no ID: classified by category only.
    Unrecognised,
}

/// The event's part in a failover incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum IncidentRole {
    /// Opens (or joins) a failover incident.
    Opens,
    /// Closes it as completed: the new primary is verified next.
    Closes,
    /// Closes it as failed.
    Fails,
    /// A step inside an open incident (activation, fallback); standalone otherwise.
    Phase,
    /// Not part of a failover: a notice of its own.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RdsEventInfo {
    /// `RDS-EVENT-NNNN`, or `None` when the event carried no ID.
    pub code: Option<String>,
    pub kind: RdsEventKind,
    pub severity: Severity,
    pub role: IncidentRole,
    /// Run the new-primary verification after this event.
    pub verify: bool,
    /// Operator words: "Multi-AZ instance failover started".
    pub title: String,
    /// How it was classified: "event ID", "category 'failover'", "unknown".
    pub classified_by: String,
}

impl RdsEventInfo {
    pub fn is_recognised(&self) -> bool {
        self.kind != RdsEventKind::Unrecognised
    }
}

type Entry = (
    &'static str,
    RdsEventKind,
    Severity,
    IncidentRole,
    bool,
    &'static str,
);

/// Event ID → meaning, for DB instances and Multi-AZ DB clusters.
const CATALOG: &[Entry] = {
    use IncidentRole::*;
    use RdsEventKind::*;
    use Severity::*;
    &[
        (
            "RDS-EVENT-0013",
            FailoverStarted,
            P2,
            Opens,
            false,
            "Multi-AZ instance failover started",
        ),
        (
            "RDS-EVENT-0015",
            FailoverCompleted,
            P2,
            Closes,
            true,
            "Multi-AZ failover to standby complete (DNS propagation may take a few minutes)",
        ),
        (
            "RDS-EVENT-0049",
            FailoverCompleted,
            P2,
            Closes,
            true,
            "Multi-AZ instance failover completed",
        ),
        (
            "RDS-EVENT-0050",
            ActivationStarted,
            P2,
            Phase,
            false,
            "Multi-AZ instance activation started",
        ),
        (
            "RDS-EVENT-0051",
            ActivationCompleted,
            P2,
            Closes,
            true,
            "Multi-AZ instance activation completed",
        ),
        (
            "RDS-EVENT-0034",
            FailoverNotAttempted,
            P3,
            None,
            false,
            "user-requested failover abandoned: a failover recently occurred",
        ),
        (
            "RDS-EVENT-0065",
            PartialFailoverRecovered,
            P3,
            None,
            true,
            "recovered from partial failover",
        ),
        (
            "RDS-EVENT-0069",
            FailoverFailed,
            P1,
            Fails,
            false,
            "DB cluster failover failed",
        ),
        (
            "RDS-EVENT-0070",
            FailoverReverted,
            P2,
            Phase,
            false,
            "DB cluster promoting its previous primary again",
        ),
        (
            "RDS-EVENT-0071",
            FailoverCompleted,
            P2,
            Closes,
            true,
            "DB cluster failover completed",
        ),
        (
            "RDS-EVENT-0072",
            FailoverStarted,
            P2,
            Opens,
            false,
            "DB cluster same-AZ failover started",
        ),
        (
            "RDS-EVENT-0073",
            FailoverStarted,
            P2,
            Opens,
            false,
            "DB cluster cross-AZ failover started",
        ),
        (
            "RDS-EVENT-0052",
            MultiAzRecoveryStarted,
            P3,
            None,
            false,
            "Multi-AZ instance recovery started (standby degraded)",
        ),
        (
            "RDS-EVENT-0053",
            MultiAzRecoveryCompleted,
            P4,
            None,
            false,
            "Multi-AZ instance recovery completed",
        ),
        (
            "RDS-EVENT-0020",
            RecoveryStarted,
            P2,
            None,
            false,
            "recovery of the DB instance started",
        ),
        (
            "RDS-EVENT-0021",
            RecoveryCompleted,
            P3,
            None,
            true,
            "recovery of the DB instance is complete",
        ),
        (
            "RDS-EVENT-0004",
            Shutdown,
            P2,
            None,
            false,
            "DB instance shut down",
        ),
        (
            "RDS-EVENT-0006",
            Reboot,
            P3,
            None,
            false,
            "DB instance restarted",
        ),
        (
            "RDS-EVENT-0221",
            StorageFull,
            P1,
            None,
            false,
            "storage-full threshold reached: database shut down",
        ),
        (
            "RDS-EVENT-0007",
            StorageFull,
            P1,
            None,
            false,
            "allocated storage exhausted",
        ),
        (
            "RDS-EVENT-0222",
            LowStorage,
            P2,
            None,
            false,
            "free storage low",
        ),
        (
            "RDS-EVENT-0089",
            LowStorage,
            P2,
            None,
            false,
            "free storage low (over 90 % used)",
        ),
        (
            "RDS-EVENT-0026",
            MaintenanceStarted,
            P3,
            None,
            false,
            "applying off-line patches (a listed failover reason)",
        ),
        (
            "RDS-EVENT-0027",
            MaintenanceFinished,
            P4,
            None,
            false,
            "finished applying off-line patches",
        ),
        (
            "RDS-EVENT-0047",
            MaintenanceFinished,
            P4,
            None,
            false,
            "DB instance patched",
        ),
        (
            "RDS-EVENT-0024",
            TopologyChange,
            P4,
            None,
            false,
            "converting to Multi-AZ",
        ),
        (
            "RDS-EVENT-0025",
            TopologyChange,
            P4,
            None,
            false,
            "finished converting to Multi-AZ",
        ),
        (
            "RDS-EVENT-0030",
            TopologyChange,
            P3,
            None,
            false,
            "converting to Single-AZ",
        ),
        (
            "RDS-EVENT-0029",
            TopologyChange,
            P3,
            None,
            false,
            "finished converting to Single-AZ",
        ),
        (
            "RDS-EVENT-0087",
            Stopped,
            P4,
            None,
            false,
            "DB instance stopped",
        ),
        (
            "RDS-EVENT-0088",
            Started,
            P4,
            None,
            false,
            "DB instance started",
        ),
        (
            "RDS-EVENT-0154",
            AutoStartAfter7Days,
            P3,
            None,
            false,
            "DB instance started automatically after 7 days stopped: it bills again",
        ),
        (
            "RDS-EVENT-0045",
            ReplicationStopped,
            P2,
            None,
            false,
            "read replica replication stopped",
        ),
        (
            "RDS-EVENT-0057",
            ReplicationStopped,
            P2,
            None,
            false,
            "read replica streaming terminated",
        ),
        (
            "RDS-EVENT-0062",
            ReplicationStopped,
            P3,
            None,
            false,
            "read replica replication manually stopped",
        ),
        (
            "RDS-EVENT-0046",
            ReplicationResumed,
            P4,
            None,
            false,
            "read replica replication resumed",
        ),
    ]
};

/// Every catalogued event ID, for tests and documentation.
pub fn catalogued_codes() -> impl Iterator<Item = &'static str> {
    CATALOG.iter().map(|e| e.0)
}

/// Severity of an event we could not identify, from its category.
fn by_category(category: &str) -> Severity {
    match category {
        "failover" | "availability" | "low storage" => Severity::P2,
        "recovery" | "read replica" | "failure" => Severity::P3,
        _ => Severity::P4,
    }
}

/// Classifies an RDS event by its ID; without a known ID, by category and source type.
pub fn classify_rds_event(ev: &RdsEvent) -> RdsEventInfo {
    if let Some(code) = ev.event_code.as_deref() {
        if let Some((_, kind, severity, role, verify, title)) = CATALOG.iter().find(|e| e.0 == code)
        {
            return RdsEventInfo {
                code: Some(code.to_string()),
                kind: *kind,
                severity: *severity,
                role: *role,
                verify: *verify,
                title: (*title).to_string(),
                classified_by: "event ID".into(),
            };
        }
    }
    let source = match &ev.source_type {
        RdsSourceType::Instance => "DB instance".to_string(),
        RdsSourceType::Cluster => "DB cluster".to_string(),
        other => format!("{other:?}"),
    };
    let category = ev
        .categories
        .iter()
        .map(|c| c.trim().to_ascii_lowercase())
        .find(|c| !c.is_empty());
    let id = ev.event_code.as_deref().unwrap_or("no event ID");
    let (severity, title, classified_by) = match &category {
        Some(c) => (
            by_category(c),
            format!("unrecognised {source} event ({id}) in category '{c}'"),
            format!("category '{c}'"),
        ),
        None => (
            Severity::P4,
            format!("unknown {source} event ({id}, no category)"),
            "unknown".to_string(),
        ),
    };
    RdsEventInfo {
        code: ev.event_code.clone(),
        kind: RdsEventKind::Unrecognised,
        severity,
        role: IncidentRole::None,
        verify: false,
        title,
        classified_by,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::events::{classify, Inbound};

    fn rds(text: &str) -> RdsEvent {
        match classify(&serde_json::from_str(text).unwrap()).remove(0) {
            Inbound::Rds(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn with_code(code: Option<&str>, categories: &[&str]) -> RdsEvent {
        let mut r = rds(include_str!(
            "../../../events/rds/eventbridge-failover-started.json"
        ));
        r.event_code = code.map(String::from);
        r.categories = categories.iter().map(|c| c.to_string()).collect();
        r
    }

    #[test]
    fn the_table() {
        use IncidentRole as R;
        use RdsEventKind as K;
        for (code, kind, sev, role) in [
            ("RDS-EVENT-0013", K::FailoverStarted, Severity::P2, R::Opens),
            (
                "RDS-EVENT-0015",
                K::FailoverCompleted,
                Severity::P2,
                R::Closes,
            ),
            (
                "RDS-EVENT-0049",
                K::FailoverCompleted,
                Severity::P2,
                R::Closes,
            ),
            (
                "RDS-EVENT-0050",
                K::ActivationStarted,
                Severity::P2,
                R::Phase,
            ),
            (
                "RDS-EVENT-0051",
                K::ActivationCompleted,
                Severity::P2,
                R::Closes,
            ),
            (
                "RDS-EVENT-0034",
                K::FailoverNotAttempted,
                Severity::P3,
                R::None,
            ),
            (
                "RDS-EVENT-0065",
                K::PartialFailoverRecovered,
                Severity::P3,
                R::None,
            ),
            ("RDS-EVENT-0069", K::FailoverFailed, Severity::P1, R::Fails),
            (
                "RDS-EVENT-0070",
                K::FailoverReverted,
                Severity::P2,
                R::Phase,
            ),
            (
                "RDS-EVENT-0071",
                K::FailoverCompleted,
                Severity::P2,
                R::Closes,
            ),
            ("RDS-EVENT-0072", K::FailoverStarted, Severity::P2, R::Opens),
            ("RDS-EVENT-0073", K::FailoverStarted, Severity::P2, R::Opens),
            ("RDS-EVENT-0006", K::Reboot, Severity::P3, R::None),
            ("RDS-EVENT-0020", K::RecoveryStarted, Severity::P2, R::None),
            ("RDS-EVENT-0221", K::StorageFull, Severity::P1, R::None),
            ("RDS-EVENT-0089", K::LowStorage, Severity::P2, R::None),
            (
                "RDS-EVENT-0026",
                K::MaintenanceStarted,
                Severity::P3,
                R::None,
            ),
            (
                "RDS-EVENT-0154",
                K::AutoStartAfter7Days,
                Severity::P3,
                R::None,
            ),
            (
                "RDS-EVENT-0045",
                K::ReplicationStopped,
                Severity::P2,
                R::None,
            ),
        ] {
            let i = classify_rds_event(&with_code(Some(code), &["whatever"]));
            assert_eq!((i.kind, i.severity, i.role), (kind, sev, role), "{code}");
            assert_eq!(i.classified_by, "event ID");
            assert!(i.is_recognised());
        }
        // Completions verify the new primary; starts do not.
        assert!(classify_rds_event(&with_code(Some("RDS-EVENT-0049"), &[])).verify);
        assert!(!classify_rds_event(&with_code(Some("RDS-EVENT-0013"), &[])).verify);
    }

    #[test]
    fn the_id_decides_never_the_message() {
        let mut r = with_code(Some("RDS-EVENT-0049"), &["failover"]);
        r.message = "Multi-AZ instance failover started.".into();
        assert_eq!(classify_rds_event(&r).kind, RdsEventKind::FailoverCompleted);
        let mut r = with_code(None, &["failover"]);
        r.message = "Multi-AZ instance failover completed.".into();
        let i = classify_rds_event(&r);
        assert_eq!(i.kind, RdsEventKind::Unrecognised);
        assert_eq!(i.role, IncidentRole::None);
    }

    #[test]
    fn unknown_ids_and_missing_ids_fall_back_to_the_category() {
        let i = classify_rds_event(&with_code(Some("RDS-EVENT-0999"), &["failover"]));
        assert_eq!(
            (i.kind, i.severity),
            (RdsEventKind::Unrecognised, Severity::P2)
        );
        assert!(i.title.contains("RDS-EVENT-0999") && i.title.contains("'failover'"));
        assert_eq!(i.classified_by, "category 'failover'");
        let i = classify_rds_event(&with_code(None, &["Notification"]));
        assert_eq!(i.severity, Severity::P4);
        assert!(i.title.contains("no event ID"), "{}", i.title);
        let i = classify_rds_event(&with_code(None, &[]));
        assert_eq!(
            (i.severity, i.classified_by.as_str()),
            (Severity::P4, "unknown")
        );
        let no_id = rds(include_str!(
            "../../../events/rds/eventbridge-no-event-id.json"
        ));
        assert_eq!(
            classify_rds_event(&no_id).classified_by,
            "category 'notification'"
        );
    }

    #[test]
    fn catalog_has_no_duplicate_ids_and_only_normalised_ones() {
        let codes: Vec<_> = catalogued_codes().collect();
        let mut sorted = codes.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), codes.len());
        for c in codes {
            assert_eq!(crate::events::normalise_event_code(c).as_deref(), Some(c));
        }
    }
}
