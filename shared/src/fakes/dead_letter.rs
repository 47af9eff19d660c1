use std::sync::Mutex;

use async_trait::async_trait;

use super::lock;
use crate::error::{NbaopsError, Result};
use crate::ports::DeadLetter;

#[derive(Default)]
pub struct FakeDeadLetter {
    pub sent: Mutex<Vec<(String, String)>>,
    pub fail: Mutex<bool>,
}

impl FakeDeadLetter {
    pub fn sent(&self) -> Vec<(String, String)> {
        lock(&self.sent).clone()
    }
}

#[async_trait]
impl DeadLetter for FakeDeadLetter {
    async fn send(&self, queue_url: &str, body: &str) -> Result<String> {
        if *lock(&self.fail) {
            return Err(NbaopsError::dependency("sqs", "fake outage"));
        }
        let mut sent = lock(&self.sent);
        sent.push((queue_url.to_string(), body.to_string()));
        Ok(format!("dlq-{}", sent.len()))
    }
}
