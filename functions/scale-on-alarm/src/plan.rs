//! Pure decisions: (observed state, config) -> what to change. No I/O here.

use nbaops_shared::config::{AlarmRoute, GroupPlan, ScaleConfig};
use nbaops_shared::events::AlarmChange;
use nbaops_shared::ports::{CacheClusterState, DbInstanceState, GroupState};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Out,
    In,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Group(String),
    Db(String),
    Cache(String),
}

impl Target {
    pub fn resource(&self) -> String {
        match self {
            Target::Group(n) => format!("asg:{n}"),
            Target::Db(n) => format!("rds:{n}"),
            Target::Cache(n) => format!("cache:{n}"),
        }
    }
}

/// What the alarm asks for, or why it asks for nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum Intent {
    Scale {
        target: Target,
        direction: Direction,
        route: Option<AlarmRoute>,
    },
    Nothing(String),
    NotForMe(String),
}

fn parse_target(t: &str) -> Option<Target> {
    let (kind, id) = t.split_once(':')?;
    match kind {
        "asg" => Some(Target::Group(id.into())),
        "rds" => Some(Target::Db(id.into())),
        "cache" => Some(Target::Cache(id.into())),
        _ => None,
    }
}

/// Maps an alarm to its target: the config map (name or ARN) first, then the metric dimensions.
pub fn intent_for(alarm: &AlarmChange, cfg: &ScaleConfig) -> Intent {
    use nbaops_shared::events::AlarmState;
    let route = cfg
        .alarm_map
        .get(&alarm.alarm_name)
        .or_else(|| alarm.alarm_arn.as_ref().and_then(|a| cfg.alarm_map.get(a)))
        .cloned();
    let (target, on_alarm, on_ok) = match &route {
        Some(r) => match parse_target(&r.target) {
            Some(t) => (t, r.on_alarm.clone(), r.on_ok.clone()),
            None => {
                return Intent::NotForMe(format!(
                    "alarm_map target '{}' is not understood",
                    r.target
                ))
            }
        },
        None => {
            // Only a plain single-metric alarm says by its dimension what it is about; the rest
            // (metric math, anomaly bands, composites) must be mapped by an operator.
            if !matches!(
                alarm.trigger,
                nbaops_shared::events::AlarmTrigger::SingleMetric(_)
            ) {
                return Intent::NotForMe(format!(
                    "alarm '{}' is a metric-math, anomaly-detection or composite alarm: scale.alarm_map must say what it scales",
                    alarm.alarm_name
                ));
            }
            // A transaction-ID or storage alarm on the same instance must not buy a bigger class.
            let metric = alarm.metric_name().unwrap_or("");
            if !cfg.signal_metrics.iter().any(|m| m == metric) {
                return Intent::NotForMe(format!(
                    "alarm '{}' watches {metric:?}, not a scaling signal (scale.signal_metrics); map it in scale.alarm_map to scale on it",
                    alarm.alarm_name
                ));
            }
            let t = if let Some(g) = alarm.dimension("AutoScalingGroupName") {
                Target::Group(g.into())
            } else if let Some(d) = alarm.dimension("DBInstanceIdentifier") {
                Target::Db(d.into())
            } else if let Some(c) = alarm.dimension("CacheClusterId") {
                Target::Cache(c.into())
            } else {
                return Intent::NotForMe(format!(
                    "alarm '{}' has no AutoScalingGroupName, DBInstanceIdentifier or CacheClusterId dimension and no scale.alarm_map entry",
                    alarm.alarm_name
                ));
            };
            let up = if matches!(t, Target::Db(_)) {
                "up"
            } else {
                "out"
            };
            (t, up.to_string(), "none".to_string())
        }
    };
    let managed = match &target {
        Target::Group(g) => cfg.groups.contains(g),
        Target::Db(d) => cfg.rds_instances.contains(d),
        Target::Cache(c) => cfg.cache_clusters.contains(c),
    };
    if !managed {
        return Intent::NotForMe(format!(
            "{} is not managed by nbaops here (not in scale.groups / scale.rds.instances / scale.cache.clusters)",
            target.resource()
        ));
    }
    let wanted = match alarm.state {
        AlarmState::InsufficientData => {
            return Intent::Nothing("INSUFFICIENT_DATA: no decision on missing data".into())
        }
        AlarmState::Alarm => on_alarm,
        AlarmState::Ok => on_ok,
    };
    let direction = match (wanted.as_str(), &target) {
        ("none", _) => {
            return Intent::Nothing(format!(
                "{} -> {}: nothing configured for this transition",
                alarm.previous_state.map(|s| s.as_str()).unwrap_or("?"),
                alarm.state.as_str()
            ))
        }
        ("in", Target::Group(_)) => Direction::In,
        ("out" | "up", _) => Direction::Out,
        (other, t) => {
            return Intent::NotForMe(format!(
                "'{other}' is not an action nbaops knows for {}",
                t.resource()
            ))
        }
    };
    Intent::Scale {
        target,
        direction,
        route,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupChange {
    To {
        from: i32,
        to: i32,
        min: i32,
        max: i32,
    },
    AtCeiling {
        desired: i32,
        ceiling: i32,
    },
    AtBaseline {
        desired: i32,
        floor: i32,
    },
    Busy,
}

/// Scale out by a step, capped by the plan's ceiling and the group's MaxSize; scale in towards
/// the baseline, never below MinSize.
pub fn plan_group(g: &GroupState, plan: &GroupPlan, dir: Direction) -> GroupChange {
    if g.activity_in_progress {
        return GroupChange::Busy;
    }
    let step = plan.step.of(g.desired);
    match dir {
        Direction::Out => {
            let cap = plan.ceiling.min(g.max_size);
            let to = (g.desired + step).min(cap);
            if to <= g.desired {
                GroupChange::AtCeiling {
                    desired: g.desired,
                    ceiling: cap,
                }
            } else {
                GroupChange::To {
                    from: g.desired,
                    to,
                    min: g.min_size,
                    max: cap,
                }
            }
        }
        Direction::In => {
            let floor = plan.baseline.max(g.min_size);
            let to = (g.desired - step).max(floor);
            if to >= g.desired {
                GroupChange::AtBaseline {
                    desired: g.desired,
                    floor,
                }
            } else {
                GroupChange::To {
                    from: g.desired,
                    to,
                    min: g.min_size,
                    max: g.max_size,
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbChange {
    Up {
        from: String,
        to: String,
        rung: usize,
        top: usize,
    },
    AtTop {
        class: String,
    },
    NotOnLadder {
        class: String,
    },
    NotAvailable {
        status: String,
    },
    AlreadyPending {
        class: String,
    },
}

pub fn plan_db(db: &DbInstanceState, ladder: &[String]) -> DbChange {
    if db.status != "available" {
        return DbChange::NotAvailable {
            status: db.status.clone(),
        };
    }
    let Some(i) = ladder.iter().position(|c| c == &db.class) else {
        return DbChange::NotOnLadder {
            class: db.class.clone(),
        };
    };
    let Some(next) = ladder.get(i + 1) else {
        return DbChange::AtTop {
            class: db.class.clone(),
        };
    };
    if db.pending_class.as_deref() == Some(next.as_str()) {
        return DbChange::AlreadyPending {
            class: next.clone(),
        };
    }
    DbChange::Up {
        from: db.class.clone(),
        to: next.clone(),
        rung: i + 1,
        top: ladder.len() - 1,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheChange {
    AddNode { from: i32, to: i32, cap: i32 },
    AtCap { nodes: i32, cap: i32 },
    NotMemcached { engine: String },
    NotAvailable { status: String },
}

pub fn plan_cache(c: &CacheClusterState, cap: i32) -> CacheChange {
    if c.engine != "memcached" {
        return CacheChange::NotMemcached {
            engine: c.engine.clone(),
        };
    }
    if c.status != "available" {
        return CacheChange::NotAvailable {
            status: c.status.clone(),
        };
    }
    if c.num_nodes >= cap {
        return CacheChange::AtCap {
            nodes: c.num_nodes,
            cap,
        };
    }
    CacheChange::AddNode {
        from: c.num_nodes,
        to: c.num_nodes + 1,
        cap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nbaops_shared::config::Step;
    use nbaops_shared::ports::Tags;

    fn group(desired: i32, min: i32, max: i32) -> GroupState {
        GroupState {
            name: "web".into(),
            min_size: min,
            max_size: max,
            desired,
            in_service: desired,
            tags: Tags::new(),
            activity_in_progress: false,
        }
    }
    fn plan(step: Step) -> GroupPlan {
        GroupPlan {
            step,
            ceiling: 4,
            baseline: 2,
        }
    }

    #[test]
    fn scale_out_is_capped_by_ceiling_and_max_size() {
        assert_eq!(
            plan_group(&group(2, 1, 10), &plan(Step::Count(1)), Direction::Out),
            GroupChange::To {
                from: 2,
                to: 3,
                min: 1,
                max: 4
            }
        );
        assert_eq!(
            plan_group(&group(3, 1, 10), &plan(Step::Count(5)), Direction::Out),
            GroupChange::To {
                from: 3,
                to: 4,
                min: 1,
                max: 4
            }
        );
        assert_eq!(
            plan_group(&group(4, 1, 10), &plan(Step::Count(1)), Direction::Out),
            GroupChange::AtCeiling {
                desired: 4,
                ceiling: 4
            }
        );
        assert_eq!(
            plan_group(&group(3, 1, 3), &plan(Step::Count(1)), Direction::Out),
            GroupChange::AtCeiling {
                desired: 3,
                ceiling: 3
            }
        );
        assert_eq!(
            plan_group(&group(2, 1, 10), &plan(Step::Percent(50.0)), Direction::Out),
            GroupChange::To {
                from: 2,
                to: 3,
                min: 1,
                max: 4
            }
        );
    }

    #[test]
    fn scale_in_stops_at_baseline_and_min_size() {
        assert_eq!(
            plan_group(&group(4, 1, 10), &plan(Step::Count(1)), Direction::In),
            GroupChange::To {
                from: 4,
                to: 3,
                min: 1,
                max: 10
            }
        );
        assert_eq!(
            plan_group(&group(3, 1, 10), &plan(Step::Count(5)), Direction::In),
            GroupChange::To {
                from: 3,
                to: 2,
                min: 1,
                max: 10
            }
        );
        assert_eq!(
            plan_group(&group(2, 1, 10), &plan(Step::Count(1)), Direction::In),
            GroupChange::AtBaseline {
                desired: 2,
                floor: 2
            }
        );
        assert_eq!(
            plan_group(&group(3, 3, 10), &plan(Step::Count(1)), Direction::In),
            GroupChange::AtBaseline {
                desired: 3,
                floor: 3
            }
        );
        let mut busy = group(2, 1, 10);
        busy.activity_in_progress = true;
        assert_eq!(
            plan_group(&busy, &plan(Step::Count(1)), Direction::Out),
            GroupChange::Busy
        );
    }

    fn db(class: &str, status: &str) -> DbInstanceState {
        DbInstanceState {
            id: "db".into(),
            arn: None,
            class: class.into(),
            status: status.into(),
            engine: "postgres".into(),
            multi_az: true,
            endpoint: None,
            pending_class: None,
            tags: Tags::new(),
        }
    }

    #[test]
    fn db_ladder() {
        let ladder = vec!["db.t3.micro".to_string(), "db.t3.small".to_string()];
        assert!(
            matches!(plan_db(&db("db.t3.micro", "available"), &ladder), DbChange::Up { ref to, .. } if to == "db.t3.small")
        );
        assert!(matches!(
            plan_db(&db("db.t3.small", "available"), &ladder),
            DbChange::AtTop { .. }
        ));
        assert!(matches!(
            plan_db(&db("db.r6g.large", "available"), &ladder),
            DbChange::NotOnLadder { .. }
        ));
        assert!(matches!(
            plan_db(&db("db.t3.micro", "modifying"), &ladder),
            DbChange::NotAvailable { .. }
        ));
        let mut pending = db("db.t3.micro", "available");
        pending.pending_class = Some("db.t3.small".into());
        assert!(matches!(
            plan_db(&pending, &ladder),
            DbChange::AlreadyPending { .. }
        ));
    }

    #[test]
    fn cache_cap() {
        let c = CacheClusterState {
            id: "c".into(),
            arn: None,
            engine: "memcached".into(),
            node_type: "cache.t3.micro".into(),
            num_nodes: 2,
            status: "available".into(),
            tags: Tags::new(),
        };
        assert_eq!(
            plan_cache(&c, 4),
            CacheChange::AddNode {
                from: 2,
                to: 3,
                cap: 4
            }
        );
        assert_eq!(plan_cache(&c, 2), CacheChange::AtCap { nodes: 2, cap: 2 });
        let mut r = c.clone();
        r.engine = "redis".into();
        assert!(matches!(
            plan_cache(&r, 4),
            CacheChange::NotMemcached { .. }
        ));
    }
}
