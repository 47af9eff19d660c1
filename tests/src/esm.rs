//! A local SQS event source mapping (issue #20): what Lambda's poller does for a work queue, on
//! moto. `concurrency` pollers (the mapping's `ScalingConfig.MaximumConcurrency`) each receive up
//! to `batch_size` messages (`AttributeNames=All`, so `ApproximateReceiveCount` is there), hand
//! them to the function binary as Lambda's SQS event through the Runtime API harness, then, as
//! `FunctionResponseTypes: [ReportBatchItemFailures]` does, delete the messages the answer does
//! not name in `batchItemFailures` and leave the named ones (all of them when the invocation
//! failed) for a later receive. SQS itself counts the receives and moves a message past the
//! queue's `maxReceiveCount` to its dead-letter queue.
//!
//! One shortcut, for the tests' time only: a failed message is made visible again after
//! `retry_after` (`ChangeMessageVisibility`) where Lambda leaves it invisible for the rest of the
//! queue's visibility timeout (360 s in the template).
//!
//! Used by tests/tests/e2e_fleet_sweep.rs and the bench (`nbaops-local bench`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName, QueueAttributeName,
};
use serde_json::{json, Value};

use crate::function::FunctionUnderTest;
use crate::runtime_api::Outcome;
use crate::HarnessError;

/// How the mapping polls and invokes.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub queue_url: String,
    pub queue_arn: String,
    pub region: String,
    /// Concurrent pollers, each with at most one invocation in flight: `MaximumConcurrency`.
    pub concurrency: usize,
    /// Messages per invocation (1..=10, `BatchSize`).
    pub batch_size: i32,
    /// When a failed message is visible again (see the module's note).
    pub retry_after: Duration,
    /// The whole run gives up after this long.
    pub timeout: Duration,
}

/// What one invocation got and answered.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message_ids: Vec<String>,
    /// `ApproximateReceiveCount` per message, in order.
    pub receives: Vec<u32>,
    pub outcome: Outcome,
    /// From handing the event to the Runtime API to the function's answer.
    pub elapsed: Duration,
    /// The messages left for a later receive (the answer's `batchItemFailures`, or all).
    pub failed: Vec<String>,
}

/// What the run did.
#[derive(Debug, Clone, Default)]
pub struct Sweep {
    pub deliveries: Vec<Delivery>,
    /// The most invocations in flight at once.
    pub peak_concurrency: usize,
    pub deleted: usize,
    pub elapsed: Duration,
}

impl Sweep {
    /// Every response (function errors left out).
    pub fn responses(&self) -> Vec<&Value> {
        self.deliveries
            .iter()
            .filter_map(|d| match &d.outcome {
                Outcome::Response(v) => Some(v),
                Outcome::Error { .. } => None,
            })
            .collect()
    }

    /// How many times each message was received.
    pub fn receives_by_message(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for d in &self.deliveries {
            for id in &d.message_ids {
                *out.entry(id.clone()).or_default() += 1;
            }
        }
        out
    }
}

struct Shared {
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    deleted: AtomicUsize,
    stop: AtomicBool,
    deliveries: Mutex<Vec<Delivery>>,
}

fn sqs_err(what: &str) -> impl Fn(String) -> HarnessError + '_ {
    move |e| HarnessError::Setup(format!("sqs {what}: {e}"))
}

/// Polls until the queue holds nothing (visible or in flight) and every poller is idle, or
/// `timeout`: messages past `maxReceiveCount` are then in the dead-letter queue.
pub async fn run(
    sqs: &aws_sdk_sqs::Client,
    function: &FunctionUnderTest,
    mapping: &Mapping,
) -> Result<Sweep, HarnessError> {
    let started = Instant::now();
    let shared = Shared {
        in_flight: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
        deleted: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        deliveries: Mutex::new(Vec::new()),
    };
    let pollers = (0..mapping.concurrency).map(|_| poll(sqs, function, mapping, &shared));
    let results = futures_join_all(pollers).await;
    for r in results {
        r?;
    }
    let deliveries = shared
        .deliveries
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    Ok(Sweep {
        deliveries,
        peak_concurrency: shared.peak.load(Ordering::SeqCst),
        deleted: shared.deleted.load(Ordering::SeqCst),
        elapsed: started.elapsed(),
    })
}

async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    // tokio has no join_all: pin each, poll them together on this task.
    let mut set: Vec<std::pin::Pin<Box<F>>> = futs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// Messages visible + in flight, as SQS counts them.
pub async fn depth(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Result<(i64, i64), HarnessError> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|e| HarnessError::Setup(format!("sqs GetQueueAttributes: {e:?}")))?;
    let n = |k: QueueAttributeName| {
        out.attributes()
            .and_then(|a| a.get(&k))
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    };
    Ok((
        n(QueueAttributeName::ApproximateNumberOfMessages),
        n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    ))
}

async fn poll(
    sqs: &aws_sdk_sqs::Client,
    function: &FunctionUnderTest,
    mapping: &Mapping,
    shared: &Shared,
) -> Result<(), HarnessError> {
    let started = Instant::now();
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        if started.elapsed() > mapping.timeout {
            return Err(HarnessError::Timeout {
                what: format!("the event source mapping on {}", mapping.queue_url),
                after: mapping.timeout,
            });
        }
        #[allow(deprecated)] // AttributeNames=All: what moto 5 answers with the receive count
        let received = sqs
            .receive_message()
            .queue_url(&mapping.queue_url)
            .max_number_of_messages(mapping.batch_size)
            .attribute_names(QueueAttributeName::All)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| HarnessError::Setup(format!("sqs ReceiveMessage: {e:?}")))?;
        let messages = received.messages().to_vec();
        if messages.is_empty() {
            let (visible, in_flight) = depth(sqs, &mapping.queue_url).await?;
            if visible == 0 && in_flight == 0 && shared.in_flight.load(Ordering::SeqCst) == 0 {
                shared.stop.store(true, Ordering::SeqCst);
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak.fetch_max(now, Ordering::SeqCst);
        let event = lambda_event(&messages, mapping);
        let invoked = function.invoke(event, Duration::from_secs(120)).await;
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        let invoked = invoked?;
        let (outcome, elapsed) = (invoked.outcome, invoked.elapsed);
        let ids: Vec<String> = messages
            .iter()
            .map(|m| m.message_id().unwrap_or("").to_string())
            .collect();
        let failed: Vec<String> = match &outcome {
            Outcome::Response(v) => v["batchItemFailures"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            Outcome::Error { .. } => ids.clone(),
        };
        let (gone, back): (Vec<&Message>, Vec<&Message>) = messages
            .iter()
            .partition(|m| !failed.iter().any(|f| Some(f.as_str()) == m.message_id()));
        if !gone.is_empty() {
            let entries = gone
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(format!("d{i}"))
                        .receipt_handle(m.receipt_handle().unwrap_or(""))
                        .build()
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(sqs_err("DeleteMessageBatch entry"))?;
            let out = sqs
                .delete_message_batch()
                .queue_url(&mapping.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| HarnessError::Setup(format!("sqs DeleteMessageBatch: {e:?}")))?;
            if !out.failed().is_empty() {
                return Err(HarnessError::Setup(format!(
                    "sqs DeleteMessageBatch refused {:?}",
                    out.failed()
                )));
            }
            shared.deleted.fetch_add(gone.len(), Ordering::SeqCst);
        }
        // One call each: the SDK leaves a batch entry's VisibilityTimeout of 0 out (a default
        // value), which moto refuses as invalid.
        for m in &back {
            sqs.change_message_visibility()
                .queue_url(&mapping.queue_url)
                .receipt_handle(m.receipt_handle().unwrap_or(""))
                .visibility_timeout(mapping.retry_after.as_secs() as i32)
                .send()
                .await
                .map_err(|e| HarnessError::Setup(format!("sqs ChangeMessageVisibility: {e:?}")))?;
        }
        let receives = messages.iter().map(receive_count).collect();
        shared
            .deliveries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Delivery {
                message_ids: ids,
                receives,
                outcome,
                elapsed,
                failed,
            });
    }
}

fn receive_count(m: &Message) -> u32 {
    m.attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Lambda's SQS event for these messages
/// (<https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html>, "Example standard queue message event").
pub fn lambda_event(messages: &[Message], mapping: &Mapping) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let attributes: serde_json::Map<String, Value> = m
                .attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| (k.as_str().to_string(), Value::from(v.as_str())))
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": attributes,
                "messageAttributes": {},
                "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": mapping.queue_arn,
                "awsRegion": mapping.region,
            })
        })
        .collect();
    json!({ "Records": records })
}

/// A work queue and its dead-letter queue as the template makes them (`RedrivePolicy` with
/// `max_receive_count`); returns (queue URL, queue ARN, DLQ URL).
pub async fn create_work_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    max_receive_count: u32,
) -> Result<(String, String, String), HarnessError> {
    let arn_of = |url: String| async move {
        let out = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| HarnessError::Setup(format!("sqs GetQueueAttributes: {e:?}")))?;
        let arn = out
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .cloned()
            .unwrap_or_default();
        Ok::<_, HarnessError>((url, arn))
    };
    let dlq = sqs
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await
        .map_err(|e| HarnessError::Setup(format!("sqs CreateQueue: {e:?}")))?;
    let (dlq_url, dlq_arn) = arn_of(dlq.queue_url().unwrap_or("").to_string()).await?;
    let queue = sqs
        .create_queue()
        .queue_name(name)
        // Longer than any invocation here: a message is only seen again when the mapping says so.
        .attributes(QueueAttributeName::VisibilityTimeout, "360")
        .attributes(
            QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count})
                .to_string(),
        )
        .send()
        .await
        .map_err(|e| HarnessError::Setup(format!("sqs CreateQueue: {e:?}")))?;
    let (url, arn) = arn_of(queue.queue_url().unwrap_or("").to_string()).await?;
    Ok((url, arn, dlq_url))
}

/// Every message body in a queue (received once, not deleted), e.g. the dead-letter queue's.
pub async fn peek_bodies(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> Result<Vec<Value>, HarnessError> {
    let mut out = Vec::new();
    loop {
        let r = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(300)
            .send()
            .await
            .map_err(|e| HarnessError::Setup(format!("sqs ReceiveMessage: {e:?}")))?;
        if r.messages().is_empty() {
            return Ok(out);
        }
        out.extend(
            r.messages()
                .iter()
                .map(|m| serde_json::from_str(m.body().unwrap_or("null")).unwrap_or(Value::Null)),
        );
    }
}
