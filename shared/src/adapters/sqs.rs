use async_trait::async_trait;

use super::dependency;
use crate::error::{NbaopsError, Result};
use crate::ports::{DeadLetter, WorkQueue};

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

/// `WorkQueue` on SQS `SendMessageBatch` (IAM: `sqs:SendMessage`, which authorises the batch
/// call: <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-api-permissions-reference.html>).
pub struct SdkWorkQueue(pub aws_sdk_sqs::Client);

#[async_trait]
impl WorkQueue for SdkWorkQueue {
    async fn send_batch(
        &self,
        queue_url: &str,
        entries: &[(String, String)],
    ) -> Result<Vec<(String, String)>> {
        let entries = entries
            .iter()
            .map(|(id, body)| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(id)
                    .message_body(body)
                    .build()
                    .map_err(|e| NbaopsError::dependency("sqs", e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let out = self
            .0
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| dependency("sqs", e))?;
        Ok(out
            .failed()
            .iter()
            .map(|f| {
                (
                    f.id().to_string(),
                    format!("{}: {}", f.code(), f.message().unwrap_or("")),
                )
            })
            .collect())
    }
}
