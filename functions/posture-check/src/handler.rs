//! posture-check's dispatcher (issue #21). STUB.

use nbaops_shared::adapters::{AwsClients, SdkPosture};
use nbaops_shared::config::posture::{self, PostureConfig};
use nbaops_shared::events::Inbound;
use nbaops_shared::ports::Posture;
use nbaops_shared::runtime::{Ctx, Deps, Function, InvocationReport, RecordReport};
use nbaops_shared::Result;

pub const FUNCTION: &str = "posture-check";
/// Scheduler input `{"nbaops": {"task": "posture-check"}}`.
pub const TASK: &str = "posture-check";

pub struct PostureCheck {
    pub cfg: PostureConfig,
    pub posture: Box<dyn Posture>,
}

impl Function for PostureCheck {
    const NAME: &'static str = FUNCTION;
    const TAKES: &'static str = "its daily 'posture-check' schedule";
    type Reply = InvocationReport;

    async fn init(deps: &Deps, aws: &AwsClients) -> Result<Self> {
        Ok(PostureCheck {
            cfg: posture::from_settings(&deps.cfg.settings)?,
            posture: Box::new(SdkPosture::new(aws)),
        })
    }

    async fn on(&self, inbound: Inbound, ctx: &Ctx<'_>) -> Result<RecordReport> {
        Ok(ctx.not_mine(&inbound))
    }
}
