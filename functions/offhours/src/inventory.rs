//! Which resources offhours schedules: every Auto Scaling group and RDS instance carrying the
//! schedule tag, admitted (a valid environment tag, not opted out, an environment offhours may
//! schedule, a schedule that is defined) and gathered into sets of one environment and one
//! schedule.

use std::collections::BTreeMap;
use std::str::FromStr;

use nbaops_shared::config::offhours::OffhoursConfig;
use nbaops_shared::config::Env;
use nbaops_shared::ports::{Inventory, Tags};
use nbaops_shared::Result;

use crate::plan::{GroupSize, Observed};

/// One scheduled resource as seen now.
#[derive(Debug, Clone)]
pub struct ScheduledResource {
    /// `asg:<name>` or `rds:<id>`.
    pub resource: String,
    pub name: String,
    pub env: Env,
    pub tags: Tags,
    pub observed: Observed,
}

impl ScheduledResource {
    pub fn is_db(&self) -> bool {
        matches!(self.observed, Observed::Db(_))
    }
}

/// A set: resources sharing an environment and a schedule, as (env, schedule name).
pub type SetKey = (String, String);

/// The scheduled resources, by set.
pub type ScheduleSets = BTreeMap<SetKey, Vec<ScheduledResource>>;

/// What the tag inventory holds: the scheduled sets, and why each other tagged resource is
/// left alone (one note each, `<resource>: ...`).
#[derive(Debug, Default)]
pub struct Discovery {
    pub sets: ScheduleSets,
    pub left_alone: Vec<String>,
}

/// Whether a tagged resource is scheduled, and in which set.
enum Admission {
    Scheduled {
        env: Env,
        schedule: String,
    },
    LeftAlone(String),
    /// In another environment than the one the tick is for: not mentioned.
    OtherEnv,
}

fn admit(cfg: &OffhoursConfig, resource: &str, tags: &Tags, only_env: Option<Env>) -> Admission {
    let schedule = tags
        .get(&cfg.schedule_tag)
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if cfg.opted_out(tags) {
        return Admission::LeftAlone(format!("{resource}: opted out ({})", cfg.opt_out_tag));
    }
    let Some(env) = tags.get(&cfg.env_tag).and_then(|e| Env::from_str(e).ok()) else {
        return Admission::LeftAlone(format!(
            "{resource}: no valid '{}' tag (dev, test or prod): refused, never scheduled blind",
            cfg.env_tag
        ));
    };
    if only_env.is_some_and(|o| o != env) {
        return Admission::OtherEnv;
    }
    if !cfg.may_schedule(env) {
        return Admission::LeftAlone(format!(
            "{resource}: environment {env} is not in offhours.envs{}: left alone",
            if env == Env::Prod {
                " (prod needs offhours.allow_prod)"
            } else {
                ""
            }
        ));
    }
    if !cfg.schedules.contains_key(&schedule) {
        return Admission::LeftAlone(format!(
            "{resource}: schedule '{schedule}' is not defined in offhours.schedules: left alone"
        ));
    }
    Admission::Scheduled { env, schedule }
}

/// Lists the tagged groups, then the tagged instances, and admits each (only those of
/// `only_env` when the tick names one).
pub async fn discover(
    inventory: &dyn Inventory,
    cfg: &OffhoursConfig,
    only_env: Option<Env>,
) -> Result<Discovery> {
    let tag = &cfg.schedule_tag;
    // (resource, name, tags, observed) of every tagged resource, groups first.
    let mut tagged = Vec::new();
    for g in inventory.list_groups_with_tag(tag).await? {
        let size = GroupSize {
            min: g.min_size,
            max: g.max_size,
            desired: g.desired,
        };
        let resource = format!("asg:{}", g.name);
        tagged.push((resource, g.name, g.tags, Observed::Group(size)));
    }
    for d in inventory.list_db_instances_with_tag(tag).await? {
        let resource = format!("rds:{}", d.id);
        tagged.push((resource, d.id, d.tags, Observed::Db(d.status)));
    }
    let mut found = Discovery::default();
    for (resource, name, tags, observed) in tagged {
        match admit(cfg, &resource, &tags, only_env) {
            Admission::Scheduled { env, schedule } => found
                .sets
                .entry((env.to_string(), schedule))
                .or_default()
                .push(ScheduledResource {
                    resource,
                    name,
                    env,
                    tags,
                    observed,
                }),
            Admission::LeftAlone(why) => found.left_alone.push(why),
            Admission::OtherEnv => {}
        }
    }
    Ok(found)
}
