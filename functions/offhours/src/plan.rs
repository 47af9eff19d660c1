//! What to do with one scheduled resource, from what its schedule says (the last transition),
//! what nbaops remembers of it (the last transition acted on, the saved group size) and what
//! AWS reports now. Pure: the handler describes, plans, then acts through the guard.
//!
//! Transitions, not states: once a transition is acted on (or found already satisfied) the
//! resource is left alone until the next one, so a person who starts a stopped database at
//! 22:00 keeps it; that divergence is reported once (two-sided schedules only: a stop-only
//! schedule expects people to start things by hand). `enforce` acts on every tick instead.
//! Exception: a database RDS started by itself after 7 days stopped is stopped again.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::schedule::{Power, Transition};

/// Min / max / desired of an Auto Scaling group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSize {
    pub min: i32,
    pub max: i32,
    pub desired: i32,
}

impl GroupSize {
    pub const ZERO: GroupSize = GroupSize {
        min: 0,
        max: 0,
        desired: 0,
    };

    /// No instance and none wanted.
    pub fn is_off(&self) -> bool {
        self.desired == 0 && self.min == 0
    }
}

/// What nbaops remembers of one resource (ledger `offhours#<resource>` / `state`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceState {
    /// The last transition acted on or found already satisfied.
    #[serde(default)]
    pub acted: Option<Transition>,
    /// Groups: the size at the last stop, restored at the next start, then forgotten.
    #[serde(default)]
    pub saved: Option<GroupSize>,
    /// Databases: when nbaops started it (a start that never completes is reported).
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// Databases: RDS started it by itself after 7 days stopped (RDS-EVENT-0154).
    #[serde(default)]
    pub auto_started_at: Option<DateTime<Utc>>,
    /// The transition whose divergence was already alerted (once per transition).
    #[serde(default)]
    pub alerted: Option<DateTime<Utc>>,
    /// Why the last tick held (e.g. waiting for the database).
    #[serde(default)]
    pub waiting: Option<String>,
}

/// What AWS reports of the resource.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    Group(GroupSize),
    /// The RDS status (`available`, `stopped`, `starting`...).
    Db(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Step {
    /// Nothing now; the reason is reported (and remembered as `waiting`).
    Hold(String),
    /// Already as the schedule says: the transition counts as done.
    Satisfied(String),
    /// Save `save`, then 0/0/0.
    StopGroup {
        save: GroupSize,
    },
    RestoreGroup {
        to: GroupSize,
    },
    StopDb,
    StartDb,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourcePlan {
    pub step: Step,
    /// A P3 to raise: the resource is not in the state its schedule says.
    pub alert: Option<String>,
}

/// What the rest of the resource's set (same environment and schedule) allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SetContext {
    /// On a stop: every group of the set is down, so its databases may stop.
    pub groups_down: bool,
    /// On a start: every database of the set is available, so its groups may return.
    pub dbs_ready: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub enforce: bool,
    /// The schedule has starts and stops (divergence is worth an alert).
    pub two_sided: bool,
    pub start_grace: Duration,
}

/// Decides one resource at `at`, given the schedule's last transition `t`.
pub fn plan_resource(
    t: Transition,
    state: &ResourceState,
    observed: &Observed,
    set: SetContext,
    policy: Policy,
    at: DateTime<Utc>,
) -> ResourcePlan {
    let fresh = state.acted.is_none_or(|a| a.at < t.at);
    let auto_started = matches!(observed, Observed::Db(_))
        && state
            .auto_started_at
            .is_some_and(|s| state.acted.is_none_or(|a| s >= a.at));
    let act = fresh || policy.enforce || (t.power == Power::Off && auto_started);
    let since = t.at.format("%Y-%m-%d %H:%M UTC");
    // Not in the state the schedule says, and nbaops will not change it: report once.
    let diverged = |what: String| -> ResourcePlan {
        let alert = (policy.two_sided && state.alerted != Some(t.at)).then(|| {
            format!(
                "{what} while its schedule says {} since {since} (left as is: nbaops acts on transitions; set offhours.enforce to override)",
                t.power.state_name()
            )
        });
        ResourcePlan {
            step: Step::Hold(format!(
                "{what}; schedule says {} since {since}: respected until the next transition",
                t.power.state_name()
            )),
            alert,
        }
    };
    let plain = |step: Step| ResourcePlan { step, alert: None };
    match (t.power, observed) {
        (Power::Off, Observed::Group(size)) => {
            if size.is_off() {
                plain(Step::Satisfied(format!(
                    "already at {}/{}/{}",
                    size.min, size.max, size.desired
                )))
            } else if act {
                plain(Step::StopGroup { save: *size })
            } else {
                diverged(format!(
                    "running at {}/{}/{} (started by hand?)",
                    size.min, size.max, size.desired
                ))
            }
        }
        (Power::Off, Observed::Db(status)) => match status.as_str() {
            "stopped" | "stopping" => plain(Step::Satisfied(format!("already {status}"))),
            "available" if act && !set.groups_down => plain(Step::Hold(
                "waiting for the application groups of its schedule to stop first".into(),
            )),
            "available" if act => plain(Step::StopDb),
            "starting" if act => plain(Step::Hold("starting: stopped again once available".into())),
            other if act => plain(Step::Hold(format!("'{other}': stopped once available"))),
            other => diverged(format!("'{other}' (started by hand?)")),
        },
        (Power::On, Observed::Db(status)) => {
            let ours = state.started_at.is_some_and(|s| s >= t.at);
            let overdue = state
                .started_at
                .is_some_and(|s| at - s >= policy.start_grace);
            match status.as_str() {
                "available" => plain(Step::Satisfied("available".into())),
                "stopped" if act => plain(Step::StartDb),
                "stopped" if ours && overdue => ResourcePlan {
                    step: Step::Hold("still stopped after nbaops started it".into()),
                    alert: (state.alerted != Some(t.at)).then(|| {
                        format!(
                            "failed start: still 'stopped' {} minutes after nbaops started it",
                            (at - state.started_at.unwrap_or(at)).num_minutes()
                        )
                    }),
                },
                "stopped" => diverged("stopped (by hand?)".into()),
                other if ours && overdue => ResourcePlan {
                    step: Step::Hold(format!("'{other}', not yet available")),
                    alert: (state.alerted != Some(t.at)).then(|| {
                        format!(
                            "failed start: '{other}', not available {} minutes after nbaops started it",
                            (at - state.started_at.unwrap_or(at)).num_minutes()
                        )
                    }),
                },
                other => plain(Step::Hold(format!("'{other}', not yet available"))),
            }
        }
        (Power::On, Observed::Group(size)) => {
            if !size.is_off() {
                plain(Step::Satisfied(format!(
                    "running at {}/{}/{}",
                    size.min, size.max, size.desired
                )))
            } else if !act {
                diverged(format!(
                    "at {}/{}/{} (scaled to zero by hand or by cost containment?)",
                    size.min, size.max, size.desired
                ))
            } else if !set.dbs_ready {
                plain(Step::Hold(
                    "waiting for the databases of its schedule to be available".into(),
                ))
            } else {
                match state.saved {
                    Some(to) if !to.is_off() => plain(Step::RestoreGroup { to }),
                    _ => ResourcePlan {
                        step: Step::Satisfied(
                            "no saved size to restore: left at zero".into(),
                        ),
                        alert: (state.alerted != Some(t.at)).then(|| {
                            format!(
                                "at {}/{}/{} with no size saved by an off-hours stop: not restored (scaled to zero by hand or by cost containment?)",
                                size.min, size.max, size.desired
                            )
                        }),
                    },
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, h, 0, 0).unwrap()
    }
    fn tr(power: Power, h: u32) -> Transition {
        Transition { power, at: at(h) }
    }
    const SET: SetContext = SetContext {
        groups_down: true,
        dbs_ready: true,
    };
    fn policy(enforce: bool) -> Policy {
        Policy {
            enforce,
            two_sided: true,
            start_grace: Duration::minutes(30),
        }
    }
    const RUNNING: GroupSize = GroupSize {
        min: 1,
        max: 4,
        desired: 2,
    };

    #[test]
    fn a_new_stop_saves_the_current_size() {
        let p = plan_resource(
            tr(Power::Off, 19),
            &ResourceState::default(),
            &Observed::Group(RUNNING),
            SET,
            policy(false),
            at(19),
        );
        assert_eq!(p.step, Step::StopGroup { save: RUNNING });
    }

    #[test]
    fn manual_start_is_respected_and_reported_once() {
        let state = ResourceState {
            acted: Some(tr(Power::Off, 19)),
            ..Default::default()
        };
        // 22:00: someone started the database by hand.
        let p = plan_resource(
            tr(Power::Off, 19),
            &state,
            &Observed::Db("available".into()),
            SET,
            policy(false),
            at(22),
        );
        assert!(matches!(p.step, Step::Hold(_)), "{p:?}");
        assert!(p.alert.unwrap().contains("started by hand"));
        let told = ResourceState {
            alerted: Some(at(19)),
            ..state.clone()
        };
        let p = plan_resource(
            tr(Power::Off, 19),
            &told,
            &Observed::Db("available".into()),
            SET,
            policy(false),
            at(23),
        );
        assert_eq!(p.alert, None, "once per transition");
        // Enforce mode stops it again.
        let p = plan_resource(
            tr(Power::Off, 19),
            &state,
            &Observed::Db("available".into()),
            SET,
            policy(true),
            at(22),
        );
        assert_eq!(p.step, Step::StopDb);
        // A stop-only schedule expects manual starts: no alert.
        let one_sided = Policy {
            two_sided: false,
            ..policy(false)
        };
        let p = plan_resource(
            tr(Power::Off, 19),
            &state,
            &Observed::Db("available".into()),
            SET,
            one_sided,
            at(22),
        );
        assert_eq!(p.alert, None);
    }

    #[test]
    fn seven_day_auto_start_is_stopped_again_without_enforce() {
        let state = ResourceState {
            acted: Some(tr(Power::Off, 19)),
            auto_started_at: Some(at(21)),
            ..Default::default()
        };
        let p = plan_resource(
            tr(Power::Off, 19),
            &state,
            &Observed::Db("starting".into()),
            SET,
            policy(false),
            at(21),
        );
        assert!(matches!(p.step, Step::Hold(ref s) if s.contains("once available")));
        let p = plan_resource(
            tr(Power::Off, 19),
            &state,
            &Observed::Db("available".into()),
            SET,
            policy(false),
            at(22),
        );
        assert_eq!(p.step, Step::StopDb);
    }

    #[test]
    fn ordering_db_waits_for_groups_and_groups_wait_for_db() {
        let not_yet = SetContext {
            groups_down: false,
            dbs_ready: false,
        };
        let p = plan_resource(
            tr(Power::Off, 19),
            &ResourceState::default(),
            &Observed::Db("available".into()),
            not_yet,
            policy(false),
            at(19),
        );
        assert!(matches!(p.step, Step::Hold(_)));
        let stopped = ResourceState {
            acted: Some(Transition {
                power: Power::Off,
                at: at(19) - Duration::days(1),
            }),
            saved: Some(RUNNING),
            ..Default::default()
        };
        let p = plan_resource(
            tr(Power::On, 8),
            &stopped,
            &Observed::Group(GroupSize::ZERO),
            not_yet,
            policy(false),
            at(8),
        );
        assert!(matches!(p.step, Step::Hold(ref s) if s.contains("databases")));
        let p = plan_resource(
            tr(Power::On, 8),
            &stopped,
            &Observed::Group(GroupSize::ZERO),
            SET,
            policy(false),
            at(8),
        );
        assert_eq!(p.step, Step::RestoreGroup { to: RUNNING });
    }

    #[test]
    fn start_failures_and_missing_sizes_are_alerted() {
        let started = ResourceState {
            acted: Some(tr(Power::On, 8)),
            started_at: Some(at(8)),
            ..Default::default()
        };
        let early = plan_resource(
            tr(Power::On, 8),
            &started,
            &Observed::Db("starting".into()),
            SET,
            policy(false),
            at(8) + Duration::minutes(10),
        );
        assert_eq!(early.alert, None);
        let late = plan_resource(
            tr(Power::On, 8),
            &started,
            &Observed::Db("starting".into()),
            SET,
            policy(false),
            at(9),
        );
        assert!(late.alert.unwrap().contains("failed start"));
        // A group at zero that offhours did not stop (cost containment): left alone, reported.
        let p = plan_resource(
            tr(Power::On, 8),
            &ResourceState::default(),
            &Observed::Group(GroupSize::ZERO),
            SET,
            policy(false),
            at(8),
        );
        assert!(matches!(p.step, Step::Satisfied(_)));
        assert!(p.alert.unwrap().contains("no size saved"));
        // Already running at the start transition: nothing to do.
        let p = plan_resource(
            tr(Power::On, 8),
            &ResourceState::default(),
            &Observed::Group(RUNNING),
            SET,
            policy(false),
            at(8),
        );
        assert!(matches!(p.step, Step::Satisfied(_)));
    }
}
