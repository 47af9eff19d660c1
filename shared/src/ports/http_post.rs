//! Posting JSON to a URL (Slack incoming webhooks, the PagerDuty Events API).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::error::Result;

/// What came back: the status and (the start of) the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    pub status: u16,
    pub body: String,
}

impl HttpReply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
    /// 5xx and 429 are worth another attempt; any other refusal is not.
    pub fn is_retryable(&self) -> bool {
        self.status >= 500 || self.status == 429
    }
}

#[async_trait]
pub trait HttpPost: Send + Sync {
    /// POSTs `body` as JSON. `Err` only when no response came (connect error, timeout); the
    /// error message never carries the URL, which may itself be a secret.
    async fn post_json(&self, url: &str, body: &Value, timeout: Duration) -> Result<HttpReply>;
}
