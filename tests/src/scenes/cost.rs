//! cost-anomaly on the demo platform (env dev): anomalies and budget alerts are attributed and
//! alerted; containment stays off (the demo's only environment is dev and `cost.contain.envs` is
//! empty), so each alert says "alert only". Containment itself is shown by tests/e2e_cost.rs.

use super::{Before, Scene};

pub fn scenes() -> Vec<Scene> {
    use Before::*;
    vec![
        Scene {
            title: "cost anomaly, two root causes (SNS): dev by account and monitor names, P2, alert only",
            function: "cost-anomaly",
            fixture: "events/cost/sns-anomaly-multiple-root-causes.json",
            before: Nothing,
        },
        Scene {
            title: "cost anomaly (EventBridge) with no name and no mapping: unattributable, never acted on",
            function: "cost-anomaly",
            fixture: "events/cost/eventbridge-anomaly.json",
            before: Nothing,
        },
        Scene {
            title: "AWS Budgets: the monthly budget is forecast over its limit (JSON)",
            function: "cost-anomaly",
            fixture: "events/cost/budget-json-forecast.json",
            before: Nothing,
        },
        Scene {
            title: "AWS Budgets: actual spend crossed the 80 % threshold (plain text)",
            function: "cost-anomaly",
            fixture: "events/cost/budget-plain-text-actual.json",
            before: Nothing,
        },
        Scene {
            title: "daily Cost Explorer check (the emulator has no cost data unless a test injects it)",
            function: "cost-anomaly",
            fixture: "events/schedule/cost-daily-check.json",
            before: Nothing,
        },
    ]
}
