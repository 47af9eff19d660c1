//! offhours on the demo platform (env dev): the worker group is put on an office-hours
//! schedule (Paris, Mon-Fri 08:00-19:00) and time-travelling ticks stop it at 19:00 (size
//! saved) and bring it back at 08:00. RDS ordering, the 7-day auto-start and manual starts are
//! shown by tests/e2e_offhours.rs (the demo has no way to tag the RDS instance).

use super::{Before, Scene};
use crate::platform;

const OFFICE: &str = r#"{"office":{"tz":"Europe/Paris","periods":[{"days":["mon","tue","wed","thu","fri"],"start":"08:00","stop":"19:00"}],"holidays":["2026-12-25"]}}"#;

pub fn scenes() -> Vec<Scene> {
    use Before::*;
    vec![
        Scene {
            title: "offhours: Wednesday 18:55 Paris, nothing is tagged with a schedule yet",
            function: "offhours",
            fixture: "events/schedule/offhours-office-hours-tick.json",
            before: Param("offhours/schedules", OFFICE),
        },
        Scene {
            title: "offhours: the worker group is tagged nbaops:schedule=office; 19:00 Paris: saved, then 0/0/0",
            function: "offhours",
            fixture: "events/schedule/offhours-stop-tick.json",
            before: TagGroup(platform::WORKER, "nbaops:schedule", "office"),
        },
        Scene {
            title: "offhours: Thursday 08:00 Paris: the worker group back to the size it had",
            function: "offhours",
            fixture: "events/schedule/offhours-start-tick.json",
            before: Nothing,
        },
    ]
}
