use async_trait::async_trait;

use super::dependency;
use crate::error::Result;
use crate::ports::DeadLetter;

/// `DeadLetter` on SQS `SendMessage`.
pub struct SdkDeadLetter(pub aws_sdk_sqs::Client);

#[async_trait]
impl DeadLetter for SdkDeadLetter {
    async fn send(&self, queue_url: &str, body: &str) -> Result<String> {
        let out = self
            .0
            .send_message()
            .queue_url(queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| dependency("sqs", e))?;
        Ok(out.message_id().unwrap_or("").to_string())
    }
}
