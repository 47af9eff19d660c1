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
        // Instances still launching or terminating are a scaling activity in progress, whatever
        // describe_scaling_activities says (the emulator always answers it with an empty list).
        let transitioning = instances.iter().any(|i| {
            let s = i.lifecycle_state().map(|s| s.as_str()).unwrap_or("");
            s.starts_with("Pending") || s.starts_with("Terminating")
        });
        let activities = self
            .0
            .describe_scaling_activities()
            .auto_scaling_group_name(name)
            .max_records(10)
            .send()
            .await
            .map_err(|e| dependency("autoscaling", e))?;
        let activity_running = activities.activities().iter().any(|a| {
            let code = a.status_code().map(|c| c.as_str()).unwrap_or("");
            !matches!(code, "Successful" | "Failed" | "Cancelled")
        });
        Ok(Some(GroupState {
            name: name.to_string(),
            min_size: g.min_size().unwrap_or(0),
            max_size: g.max_size().unwrap_or(0),
            desired: g.desired_capacity().unwrap_or(0),
            in_service,
            tags,
            activity_in_progress: transitioning || activity_running || g.status().is_some(),
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
