use async_trait::async_trait;

use super::{dependency, SdkAutoScaling};
use crate::error::Result;
use crate::ports::{AutoScaling, GroupState, Tags};

#[async_trait]
impl AutoScaling for SdkAutoScaling {
    async fn describe_group(&self, name: &str) -> Result<Option<GroupState>> {
        let out = self
            .0
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(|e| dependency("autoscaling", e))?;
        let Some(g) = out
            .auto_scaling_groups()
            .iter()
            .find(|g| g.auto_scaling_group_name() == Some(name))
        else {
            return Ok(None);
        };
        let tags: Tags = g
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
            .collect();
        let instances = g.instances();
        let in_service = instances
            .iter()
            .filter(|i| i.lifecycle_state().map(|s| s.as_str()) == Some("InService"))
            .count() as i32;
        // A scaling activity in progress shows in the group itself, so one describe call tells
        // it: instances still launching or terminating (lifecycle `Pending*`/`Terminating*`), or
        // fewer/more instances counting toward the desired capacity than it asks for (a change
        // accepted but not yet started; `Standby` instances do not count toward it, nor do
        // detaching ones) — https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-lifecycle.html
        // and https://docs.aws.amazon.com/autoscaling/ec2/userguide/as-enter-exit-standby.html.
        let states: Vec<&str> = instances
            .iter()
            .map(|i| i.lifecycle_state().map(|s| s.as_str()).unwrap_or(""))
            .collect();
        let desired = g.desired_capacity().unwrap_or(0);
        let activity = activity_in_progress(&states, desired);
        Ok(Some(GroupState {
            name: name.to_string(),
            min_size: g.min_size().unwrap_or(0),
            max_size: g.max_size().unwrap_or(0),
            desired: g.desired_capacity().unwrap_or(0),
            in_service,
            tags,
            activity_in_progress: activity || g.status().is_some(),
        }))
    }

    async fn set_desired_capacity(&self, name: &str, desired: i32) -> Result<()> {
        self.0
            .set_desired_capacity()
            .auto_scaling_group_name(name)
            .desired_capacity(desired)
            .honor_cooldown(false)
            .send()
            .await
            .map_err(|e| dependency("autoscaling", e))?;
        Ok(())
    }

    async fn update_group_size(&self, name: &str, min: i32, max: i32, desired: i32) -> Result<()> {
        self.0
            .update_auto_scaling_group()
            .auto_scaling_group_name(name)
            .min_size(min)
            .max_size(max)
            .desired_capacity(desired)
            .send()
            .await
            .map_err(|e| dependency("autoscaling", e))?;
        Ok(())
    }
}

/// True when the group's instances show a scaling activity not yet finished (see `describe_group`).
pub(crate) fn activity_in_progress(states: &[&str], desired: i32) -> bool {
    let transitioning = states
        .iter()
        .any(|s| s.starts_with("Pending") || s.starts_with("Terminating"));
    let counted = states
        .iter()
        .filter(|s| !s.contains("Standby") && !s.starts_with("Detach") && !s.starts_with("Warmed"))
        .count();
    transitioning || i32::try_from(counted).ok() != Some(desired)
}

#[cfg(test)]
mod tests {
    use super::activity_in_progress;

    #[test]
    fn an_activity_shows_in_the_instances() {
        assert!(!activity_in_progress(&["InService", "InService"], 2));
        assert!(activity_in_progress(&["InService", "Pending"], 2));
        assert!(activity_in_progress(&["InService", "Terminating:Wait"], 1));
        // Accepted, not started yet: desired 3, two instances.
        assert!(activity_in_progress(&["InService", "InService"], 3));
        // Standby instances do not count toward the desired capacity.
        assert!(!activity_in_progress(&["InService", "Standby"], 1));
    }
}
