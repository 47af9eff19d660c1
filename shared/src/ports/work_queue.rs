//! The queue a `dispatch` tick sends work items to (issue #20; SQS in production).

use async_trait::async_trait;

use crate::error::Result;

/// At most this many messages per `SendMessageBatch` call: "A batch can contain up to 10
/// messages" (<https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessageBatch.html>).
pub const MAX_BATCH: usize = 10;

#[async_trait]
pub trait WorkQueue: Send + Sync {
    /// Sends at most [`MAX_BATCH`] `(id, body)` entries in one call; returns the entries the
    /// queue refused, with the reason (an empty list: every one was sent).
    async fn send_batch(
        &self,
        queue_url: &str,
        entries: &[(String, String)],
    ) -> Result<Vec<(String, String)>>;
}
