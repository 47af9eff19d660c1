use super::{Before, Scene};
use crate::platform;

pub fn scenes() -> Vec<Scene> {
    use Before::*;
    vec![
        Scene {
            title: "Web/API CPU > 70 % for 5 min (EventBridge)",
            function: "scale-on-alarm",
            fixture: "events/cloudwatch-alarm/eventbridge-single-metric-alarm.json",
            before: Nothing,
        },
        Scene {
            title: "the same alarm event delivered twice",
            function: "scale-on-alarm",
            fixture: "events/cloudwatch-alarm/eventbridge-single-metric-alarm.json",
            before: Nothing,
        },
        Scene {
            title: "Web/API CPU alarm again via SNS, inside the cooldown",
            function: "scale-on-alarm",
            fixture: "events/cloudwatch-alarm/sns-single-metric-alarm.json",
            before: Nothing,
        },
        Scene {
            title: "worker CPU alarm while the operator set dry-run",
            function: "scale-on-alarm",
            fixture: "events/cloudwatch-alarm/eventbridge-worker-cpu-alarm.json",
            before: Param("guard/dry_run", "true"),
        },
        Scene {
            title: "worker CPU alarm, group protected by tag",
            function: "scale-on-alarm",
            fixture: "events/cloudwatch-alarm/eventbridge-worker-cpu-alarm.json",
            before: TagGroup(platform::WORKER, "nbaops:protect", "true"),
        },
        Scene {
            title: "worker CPU alarm with the kill switch on",
            function: "scale-on-alarm",
            fixture: "events/cloudwatch-alarm/eventbridge-worker-cpu-alarm.json",
            before: Param("guard/kill_switch", "true"),
        },
        Scene {
            title: "worker CPU alarm, all switches back to normal",
            function: "scale-on-alarm",
            fixture: "events/cloudwatch-alarm/eventbridge-worker-cpu-alarm.json",
            before: UntagGroup(platform::WORKER, "nbaops:protect"),
        },
        Scene {
            title: "RDS memory > 80 % (EventBridge)",
            function: "scale-on-alarm",
            fixture: "events/cloudwatch-alarm/eventbridge-rds-memory-alarm.json",
            before: Nothing,
        },
        Scene {
            title: "Memcached memory > 75 % for 15 min (SNS)",
            function: "scale-on-alarm",
            fixture: "events/cloudwatch-alarm/sns-memcached-memory-alarm.json",
            before: Nothing,
        },
        Scene {
            title: "alarm with INSUFFICIENT_DATA (direct alarm action)",
            function: "scale-on-alarm",
            fixture: "events/cloudwatch-alarm/direct-action-insufficient-data.json",
            before: Nothing,
        },
        Scene {
            title: "metric-math alarm without a mapping",
            function: "scale-on-alarm",
            fixture: "events/cloudwatch-alarm/sns-metric-math.json",
            before: Nothing,
        },
        Scene {
            title: "an S3 event sent to the wrong function",
            function: "scale-on-alarm",
            fixture: "events/not-for-me/s3-put.json",
            before: Nothing,
        },
        Scene {
            title: "off-peak schedule seconds after those scale-outs, CPU quiet (12 %): the checks pass, the cooldown holds both groups",
            function: "scale-on-alarm",
            fixture: "events/schedule/off-peak-scale-in.json",
            before: Cpu(12.0),
        },
    ]
}
