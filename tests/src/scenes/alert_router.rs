//! alert-router in the demo. The demo starts no Slack or PagerDuty stand-in, so the Slack secret
//! points at a closed loopback port: the P3 alert shows the bounded retry and the "never lost"
//! path (no dead-letter queue in the demo config: an error outcome and the alert in the log).
//! The sweep then finds the open incident with its next escalation time.

use super::{Before, Scene};

pub fn scenes() -> Vec<Scene> {
    use Before::*;
    vec![
        Scene {
            title: "P3 alert (table bloat) with the Slack webhook unreachable",
            function: "alert-router",
            fixture: "events/alerts/sns/p3-table-bloat.json",
            before: Param(
                "secrets/alerts/slack_webhook_url",
                "http://127.0.0.1:9/services/T0DEMO/B0DEMO/demo-webhook-secret",
            ),
        },
        Scene {
            title: "the same P3 alert again: a retry of an undelivered alert tries again",
            function: "alert-router",
            fixture: "events/alerts/sns/p3-table-bloat.json",
            before: Nothing,
        },
        Scene {
            title: "escalation sweep (scheduled): open incidents and their next escalation",
            function: "alert-router",
            fixture: "events/schedule/alert-escalation-sweep.json",
            before: Nothing,
        },
        Scene {
            title: "nbaops's own Errors alarm on the alerts topic: routed as a P2 incident keyed by the alarm ARN (the demo's Slack is unreachable: retried, then the invocation fails so nothing is lost)",
            function: "alert-router",
            fixture: "events/cloudwatch-alarm/sns-nbaops-function-errors-alarm.json",
            before: Nothing,
        },
        Scene {
            title: "the same alarm back to OK: the resolve goes the same way (Slack unreachable: retried, error)",
            function: "alert-router",
            fixture: "events/cloudwatch-alarm/sns-nbaops-function-errors-ok.json",
            before: Nothing,
        },
        Scene {
            title: "an SNS message that is neither an alert nor an alarm: not for me",
            function: "alert-router",
            fixture: "events/not-for-me/sns-unknown-message.json",
            before: Nothing,
        },
    ]
}
