//! failover-notify: a Multi-AZ failover told by its RDS events (moto's reboot-with-failover does
//! nothing), verified on the demo PostgreSQL (the Stack passes its URL as the verification
//! target of nbaops-dev-db), a duplicate over the other delivery, an event without an ID, and a
//! cluster failover that never completes, raised by the sweep.

use super::{Before, Scene};

pub fn scenes() -> Vec<Scene> {
    use Before::*;
    vec![
        Scene {
            title: "failover-notify: RDS reports a Multi-AZ failover of nbaops-dev-db started (P2, thread opened)",
            function: "failover-notify",
            fixture: "events/rds/eventbridge-failover-started.json",
            before: Nothing,
        },
        Scene {
            title: "failover-notify: the same start again through the RDS event subscription (SNS): a duplicate, nothing sent",
            function: "failover-notify",
            fixture: "events/rds/sns-failover-started.json",
            before: Nothing,
        },
        Scene {
            title: "failover-notify: completed 92 s later; the new primary is verified for real (P2, resolved)",
            function: "failover-notify",
            fixture: "events/rds/eventbridge-failover-completed.json",
            before: Nothing,
        },
        Scene {
            title: "failover-notify: an RDS event without an event ID is classified by its category",
            function: "failover-notify",
            fixture: "events/rds/eventbridge-no-event-id.json",
            before: Nothing,
        },
        Scene {
            title: "failover-notify: a cross-AZ failover of the Aurora cluster starts ... and no completion ever arrives",
            function: "failover-notify",
            fixture: "events/rds/eventbridge-cluster-failover-started.json",
            before: Nothing,
        },
        Scene {
            title: "failover-notify: the scheduled sweep raises the stuck cluster failover as P1",
            function: "failover-notify",
            fixture: "events/schedule/failover-sweep.json",
            before: Nothing,
        },
    ]
}
