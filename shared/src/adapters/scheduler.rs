use async_trait::async_trait;
use aws_sdk_scheduler::operation::create_schedule::CreateScheduleError;
use aws_sdk_scheduler::operation::delete_schedule::DeleteScheduleError;
use aws_sdk_scheduler::types::{
    ActionAfterCompletion, FlexibleTimeWindow, FlexibleTimeWindowMode, Target,
};

use super::dependency;
use crate::error::{NbaopsError, Result};
use crate::ports::{OneTimeSchedule, Scheduler};

pub struct SdkScheduler(pub aws_sdk_scheduler::Client);

#[async_trait]
impl Scheduler for SdkScheduler {
    async fn create_once(&self, s: &OneTimeSchedule) -> Result<bool> {
        s.check().map_err(|m| NbaopsError::Dependency {
            service: "scheduler",
            message: format!("ValidationException (checked before sending): {m}"),
            retryable: false,
        })?;
        let built = |e: aws_sdk_scheduler::error::BuildError| {
            NbaopsError::config(format!("schedule {}: {e}", s.name))
        };
        let target = Target::builder()
            .arn(&s.target_arn)
            .role_arn(&s.role_arn)
            .input(s.input.to_string())
            .build()
            .map_err(built)?;
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(built)?;
        match self
            .0
            .create_schedule()
            .group_name(&s.group)
            .name(&s.name)
            .schedule_expression(s.expression())
            .schedule_expression_timezone("UTC")
            .flexible_time_window(window)
            .action_after_completion(ActionAfterCompletion::Delete)
            .target(target)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(CreateScheduleError::ConflictException(_))
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(dependency("scheduler", e)),
        }
    }

    async fn delete(&self, group: &str, name: &str) -> Result<bool> {
        match self
            .0
            .delete_schedule()
            .group_name(group)
            .name(name)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(DeleteScheduleError::ResourceNotFoundException(_))
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(dependency("scheduler", e)),
        }
    }
}
