//! The queue an undeliverable message lands in, so it is never lost (SQS in production).

use async_trait::async_trait;

use crate::error::Result;

#[async_trait]
pub trait DeadLetter: Send + Sync {
    /// Sends `body` to the queue; returns the message id.
    async fn send(&self, queue_url: &str, body: &str) -> Result<String>;
}
