//! [`DrillGroups`] on the Auto Scaling SDK: CreateAutoScalingGroup (launch template, subnets,
//! tags propagated at launch), DescribeAutoScalingGroups, DeleteAutoScalingGroup ForceDelete
//! (https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_DeleteAutoScalingGroup.html).

use async_trait::async_trait;
use aws_sdk_autoscaling::types::{LaunchTemplateSpecification, Tag};

use super::{dependency, SdkAutoScaling};
use crate::error::Result;
use crate::ports::{DrillGroupRequest, DrillGroupState, DrillGroups, Tags};

#[async_trait]
impl DrillGroups for SdkAutoScaling {
    async fn create_group(&self, req: &DrillGroupRequest) -> Result<()> {
        let lt = LaunchTemplateSpecification::builder()
            .launch_template_name(&req.launch_template)
            .version(&req.launch_template_version)
            .build();
        let mut call = self
            .0
            .create_auto_scaling_group()
            .auto_scaling_group_name(&req.name)
            .launch_template(lt)
            .min_size(0)
            .max_size(1)
            .desired_capacity(1)
            // Nothing else scales the drill's instance in while the smoke test waits for it.
            .new_instances_protected_from_scale_in(true)
            .vpc_zone_identifier(req.subnets.join(","));
        for (k, v) in &req.tags {
            call = call.tags(
                Tag::builder()
                    .resource_id(&req.name)
                    .resource_type("auto-scaling-group")
                    .key(k)
                    .value(v)
                    .propagate_at_launch(true)
                    .build(),
            );
        }
        call.send()
            .await
            .map_err(|e| dependency("autoscaling", e))?;
        Ok(())
    }

    async fn describe_group(&self, name: &str) -> Result<Option<DrillGroupState>> {
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
        let healthy_in_service = g
            .instances()
            .iter()
            .filter(|i| {
                i.lifecycle_state().map(|s| s.as_str()) == Some("InService")
                    && i.health_status() == Some("Healthy")
            })
            .count();
        Ok(Some(DrillGroupState {
            name: name.to_string(),
            status: g.status().map(str::to_string),
            instances: g.instances().len(),
            healthy_in_service,
            tags,
        }))
    }

    async fn force_delete_group(&self, name: &str) -> Result<()> {
        self.0
            .delete_auto_scaling_group()
            .auto_scaling_group_name(name)
            .force_delete(true)
            .send()
            .await
            .map_err(|e| dependency("autoscaling", e))?;
        Ok(())
    }
}
