use std::sync::Mutex;

use async_trait::async_trait;

use super::lock;
use crate::error::{NbaopsError, Result};
use crate::ports::{DeadLetter, WorkQueue};

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

/// One `send_batch` call: the queue URL and its `(id, body)` entries.
pub type SentBatch = (String, Vec<(String, String)>);

/// A work queue in memory: every batch sent, in order; `refuse` names entry ids it refuses.
#[derive(Default)]
pub struct FakeWorkQueue {
    pub batches: Mutex<Vec<SentBatch>>,
    pub refuse: Mutex<Vec<String>>,
}

impl FakeWorkQueue {
    /// Every body sent, in order.
    pub fn bodies(&self) -> Vec<String> {
        lock(&self.batches)
            .iter()
            .flat_map(|(_, b)| b.iter().map(|(_, body)| body.clone()))
            .collect()
    }

    pub fn batch_sizes(&self) -> Vec<usize> {
        lock(&self.batches).iter().map(|(_, b)| b.len()).collect()
    }
}

#[async_trait]
impl WorkQueue for FakeWorkQueue {
    async fn send_batch(
        &self,
        queue_url: &str,
        entries: &[(String, String)],
    ) -> Result<Vec<(String, String)>> {
        let refuse = lock(&self.refuse).clone();
        let (refused, sent): (Vec<_>, Vec<_>) = entries
            .iter()
            .cloned()
            .partition(|(id, _)| refuse.contains(id));
        lock(&self.batches).push((queue_url.to_string(), sent));
        Ok(refused
            .into_iter()
            .map(|(id, _)| (id, "InternalError: fake refusal".to_string()))
            .collect())
    }
}
