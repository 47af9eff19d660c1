//! A scripted `HttpPost`: records every request and answers from a queue of replies (then 200).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::lock;
use crate::error::{NbaopsError, Result};
use crate::ports::{HttpPost, HttpReply};

/// One scripted answer: a status, or a transport failure (timeout, refused connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scripted {
    Status(u16),
    Timeout,
}

#[derive(Default)]
pub struct FakeHttpPost {
    pub requests: Mutex<Vec<(String, Value)>>,
    /// Per URL prefix, the next answers; an empty script answers 200.
    pub script: Mutex<Vec<(String, VecDeque<Scripted>)>>,
}

impl FakeHttpPost {
    /// The next `n` requests to URLs starting with `prefix` get `answer`.
    pub fn fail(&self, prefix: &str, answer: Scripted, n: usize) {
        let mut script = lock(&self.script);
        let entry = match script.iter_mut().position(|(p, _)| p == prefix) {
            Some(i) => &mut script[i].1,
            None => {
                script.push((prefix.to_string(), VecDeque::new()));
                let last = script.len() - 1;
                &mut script[last].1
            }
        };
        entry.extend(std::iter::repeat_n(answer, n));
    }
    pub fn requests(&self) -> Vec<(String, Value)> {
        lock(&self.requests).clone()
    }
    pub fn requests_to(&self, prefix: &str) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|(u, _)| u.starts_with(prefix))
            .map(|(_, b)| b)
            .collect()
    }
}

#[async_trait]
impl HttpPost for FakeHttpPost {
    async fn post_json(&self, url: &str, body: &Value, _timeout: Duration) -> Result<HttpReply> {
        lock(&self.requests).push((url.to_string(), body.clone()));
        let next = lock(&self.script)
            .iter_mut()
            .find(|(p, _)| url.starts_with(p.as_str()))
            .and_then(|(_, q)| q.pop_front());
        match next {
            Some(Scripted::Timeout) => Err(NbaopsError::dependency("http", "timed out")),
            Some(Scripted::Status(status)) => Ok(HttpReply {
                status,
                body: String::new(),
            }),
            None => Ok(HttpReply {
                status: 200,
                body: "ok".into(),
            }),
        }
    }
}
