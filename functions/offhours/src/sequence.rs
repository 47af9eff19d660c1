//! The order within one set (same environment, same schedule): on a stop, groups first (their
//! size saved, then 0/0/0) and databases only once every group is down; on a start, databases
//! first and groups restored only once every database is `available` (a later tick continues,
//! never a sleep). The Lambda deadline is checked before each resource.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use nbaops_shared::config::offhours::Schedule;
use nbaops_shared::deadline::{Budget, MARGIN, ONE_AWS_ACTION};
use nbaops_shared::runtime::Work;
use nbaops_shared::Result;

use crate::execution::{Progress, ScheduleVerdict};
use crate::handler::Offhours;
use crate::inventory::ScheduledResource;
use crate::plan::{Policy, SetContext};
use crate::schedule::{last_transition, next_transition, Power};

/// One set: its environment, its schedule and its resources.
struct ScheduleSet<'a> {
    env: &'a str,
    schedule: &'a Schedule,
    members: &'a [ScheduledResource],
}

/// Nothing in the set stops the resource: every group down, every database ready.
const UNCONSTRAINED: SetContext = SetContext {
    groups_down: true,
    dbs_ready: true,
};

impl Offhours {
    /// Every set of `sets` at `at`, within the Lambda deadline; what the deadline leaves is
    /// noted last.
    pub(crate) async fn run_sets<'s>(
        &self,
        sets: impl IntoIterator<Item = (&'s (String, String), &'s Vec<ScheduledResource>)>,
        at: DateTime<Utc>,
        w: &mut Work<'_>,
    ) -> Result<()> {
        let mut budget = Budget::new(w.ctx.inv, MARGIN, ONE_AWS_ACTION);
        for ((env, name), members) in sets {
            if let Some(schedule) = self.cfg.schedules.get(name) {
                let set = ScheduleSet {
                    env,
                    schedule,
                    members,
                };
                self.run_set(set, at, &mut budget, w).await?;
            }
        }
        w.rec.notes.extend(budget.report());
        Ok(())
    }

    /// One set at `at`: the schedule's last transition, then groups before databases on a stop,
    /// databases before groups on a start. A member the Lambda deadline leaves is named in the
    /// budget's report, and so is every member after it.
    async fn run_set(
        &self,
        set: ScheduleSet<'_>,
        at: DateTime<Utc>,
        budget: &mut Budget,
        w: &mut Work<'_>,
    ) -> Result<()> {
        let ScheduleSet {
            env,
            schedule,
            members,
        } = set;
        let Some(t) = last_transition(schedule, at) else {
            w.note(format!(
                "schedule '{}' ({env}): no transition in the last three weeks: nothing to do",
                schedule.name
            ));
            return Ok(());
        };
        let next = next_transition(schedule, at)
            .map(|n| {
                format!(
                    ", next {} at {}",
                    n.power.state_name(),
                    n.at.format("%Y-%m-%d %H:%M UTC")
                )
            })
            .unwrap_or_default();
        w.note(format!(
            "schedule '{}' ({env}, {}): {} since {}{next}",
            schedule.name,
            schedule.tz.name(),
            t.power.state_name(),
            t.at.format("%Y-%m-%d %H:%M UTC")
        ));
        let verdict = ScheduleVerdict {
            transition: t,
            at,
            policy: Policy {
                enforce: self.cfg.enforce,
                two_sided: schedule.two_sided(),
                start_grace: Duration::minutes(self.cfg.start_grace_minutes),
            },
            schedule: &schedule.name,
        };
        let (groups, dbs): (Vec<&ScheduledResource>, Vec<&ScheduledResource>) =
            members.iter().partition(|m| !m.is_db());
        match t.power {
            Power::Off => {
                let mut all_down = true;
                for m in groups {
                    if !budget.admit(&m.resource) {
                        all_down = false;
                        continue;
                    }
                    let progress = self
                        .bring_to_schedule(m, UNCONSTRAINED, &[], &verdict, w)
                        .await?;
                    all_down &= progress != Progress::NotYet;
                }
                let set = SetContext {
                    groups_down: all_down,
                    dbs_ready: true,
                };
                for m in dbs {
                    if budget.admit(&m.resource) {
                        self.bring_to_schedule(m, set, &[], &verdict, w).await?;
                    }
                }
            }
            Power::On => {
                let mut dbs_seen = Vec::new();
                let mut all_ready = true;
                for m in dbs {
                    if !budget.admit(&m.resource) {
                        all_ready = false;
                        continue;
                    }
                    let progress = self
                        .bring_to_schedule(m, UNCONSTRAINED, &[], &verdict, w)
                        .await?;
                    // Described again after a start: the groups wait for `available`, not for the call.
                    let status = match self.rds.describe_instance(&m.name).await? {
                        Some(d) => d.status,
                        None => "missing".into(),
                    };
                    let is_ready = status == "available" || progress == Progress::Previewed;
                    if !is_ready {
                        w.note(format!("{}: '{status}': its groups wait", m.resource));
                    }
                    all_ready &= is_ready;
                    dbs_seen.push(json!({"db": m.resource, "status": status}));
                }
                let set = SetContext {
                    groups_down: true,
                    dbs_ready: all_ready,
                };
                for m in groups {
                    if budget.admit(&m.resource) {
                        self.bring_to_schedule(m, set, &dbs_seen, &verdict, w)
                            .await?;
                    }
                }
            }
        }
        Ok(())
    }
}
