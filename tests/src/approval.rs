//! Issue #19's approval chain, the pieces more than one e2e suite needs: a change window the test
//! clock is always outside of (so a P2 change asks a person at any `make test-dates` date), and
//! the real alert-router wired for approvals on a [`Stack`] (signing key and Slack stand-in in
//! SSM, an email topic with an SQS tap, the approvals schedule group), with the acknowledgement
//! URL's request shape and the links its Slack messages carry.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::QueueAttributeName;
use chrono::Datelike;
use serde_json::{json, Value};
use tokio::io::BufReader;
use tokio::net::TcpListener;

use crate::demo::Stack;
use crate::function::FunctionUnderTest;
use crate::http::{read_body, read_head, write_response};
use crate::platform::{self, dbg_err, FollowUp};
use crate::runtime_api::Outcome;
use crate::{clock, function_binary, io_err, workspace_root, HarnessError};

pub const SIGNING_KEY: &str = "e2e-link-signing-key-0123456789abcdef";
pub const ACK_BASE: &str = "https://ack-e2e.lambda-url.us-east-1.on.aws/";
pub const GROUP: &str = "nbaops-dev-approvals";
pub const ROLE: &str = "arn:aws:iam::123456789012:role/nbaops-dev-approvals";
/// scale-on-alarm's alias, the one owner alert-router's config names for approved actions.
pub const TARGET: &str =
    "arn:aws:lambda:us-east-1:123456789012:function:nbaops-dev-scale-on-alarm:live";
/// The address the acknowledgement URL sees the approver's POST come from.
pub const SOURCE_IP: &str = "198.51.100.7";

/// A change window two days from the test clock's today, one minute long: whatever date the
/// suite runs at (`make test-dates`), now is outside it.
pub fn window_elsewhere() -> Vec<(&'static str, String)> {
    let day = (clock::now() + chrono::Duration::days(2)).weekday();
    vec![
        ("NBAOPS_GUARD__WINDOW__DAYS", day.to_string().to_lowercase()),
        ("NBAOPS_GUARD__WINDOW__START", "00:00".into()),
        ("NBAOPS_GUARD__WINDOW__END", "00:01".into()),
    ]
}

/// A change window open from two hours before the test clock's now to two hours after, every
/// day (it may wrap past midnight): a disruptive action at now (backup-guard's drill start) acts
/// without asking, whatever the date.
pub fn window_around_now() -> Vec<(&'static str, String)> {
    let now = clock::now();
    let hm = |t: chrono::DateTime<chrono::Utc>| t.format("%H:%M").to_string();
    vec![
        (
            "NBAOPS_GUARD__WINDOW__DAYS",
            "mon,tue,wed,thu,fri,sat,sun".into(),
        ),
        (
            "NBAOPS_GUARD__WINDOW__START",
            hm(now - chrono::Duration::hours(2)),
        ),
        (
            "NBAOPS_GUARD__WINDOW__END",
            hm(now + chrono::Duration::hours(2)),
        ),
    ]
}

/// The real scale-on-alarm (the owner that carries approved actions out) outside the change
/// window ([`window_elsewhere`]), with `extra` configuration.
pub async fn scale_on_alarm(
    stack: &Stack,
    extra: &[(&str, &str)],
) -> Result<FunctionUnderTest, HarnessError> {
    let window = window_elsewhere();
    let mut env: Vec<(&str, &str)> = window.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend_from_slice(extra);
    let name = "scale-on-alarm";
    FunctionUnderTest::start(&function_binary(name)?, name, &stack.function_env(&env), 1).await
}

/// The Slack stand-in: records every body, answers 200.
async fn slack() -> Result<(String, Arc<Mutex<Vec<Value>>>), HarnessError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io_err("binding the Slack stand-in"))?;
    let port = listener
        .local_addr()
        .map_err(io_err("the Slack stand-in's address"))?
        .port();
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let me = got.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let me = me.clone();
            tokio::spawn(async move {
                let (rd, mut wr) = stream.into_split();
                let mut rd = BufReader::new(rd);
                while let Ok(Some(head)) = read_head(&mut rd).await {
                    let Ok(body) = read_body(&mut rd, &head, false).await else {
                        return;
                    };
                    if let Ok(mut bodies) = me.lock() {
                        bodies.push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                    }
                    if write_response(&mut wr, 200, &[], b"ok", false)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    Ok((
        format!("http://127.0.0.1:{port}/services/T0E2E/B0E2E/approvals"),
        got,
    ))
}

/// The real alert-router, configured to send approval links and schedule approved actions.
pub struct Router {
    pub f: FunctionUnderTest,
    /// Every body the Slack stand-in received, in order.
    pub slack: Arc<Mutex<Vec<Value>>>,
    /// The queue subscribed (raw) to the email topic.
    pub email_tap: String,
    /// The function's environment (the `nbaops` CLI runs with it too).
    pub env: Vec<(String, String)>,
}

fn approval_vars(topic: &str) -> Vec<(String, String)> {
    [
        ("NBAOPS_ALERTS__EMAIL_TOPIC_ARN", topic),
        ("NBAOPS_ALERTS__ACK__BASE_URL", ACK_BASE),
        ("NBAOPS_ALERTS__APPROVAL__GROUP", GROUP),
        ("NBAOPS_ALERTS__APPROVAL__ROLE_ARN", ROLE),
        (
            "NBAOPS_ALERTS__APPROVAL__TARGETS",
            &format!("scale-on-alarm={TARGET}"),
        ),
        ("NBAOPS_ALERTS__RETRY__BASE_MS", "20"),
        ("NBAOPS_ALERTS__RETRY__MAX_MS", "50"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl Router {
    /// Prepares the stack for approvals and starts alert-router on it.
    pub async fn start(stack: &Stack) -> Result<Router, HarnessError> {
        let c = &stack.clients;
        let (slack_url, slack) = slack().await?;
        for (name, value) in [
            ("slack_webhook_url", slack_url.as_str()),
            ("link_signing_key", SIGNING_KEY),
        ] {
            stack
                .put_secret(&format!("/nbaops/dev/secrets/alerts/{name}"), value)
                .await?;
        }
        c.scheduler
            .create_schedule_group()
            .name(GROUP)
            .send()
            .await
            .map_err(|e| dbg_err("create_schedule_group", e))?;
        let topic = c
            .sns
            .create_topic()
            .name("nbaops-dev-email")
            .send()
            .await
            .map_err(|e| dbg_err("create_topic", e))?
            .topic_arn()
            .unwrap_or_default()
            .to_string();
        let tap = c
            .sqs
            .create_queue()
            .queue_name("nbaops-dev-email-tap")
            .send()
            .await
            .map_err(|e| dbg_err("create_queue", e))?
            .queue_url()
            .unwrap_or_default()
            .to_string();
        let tap_arn = c
            .sqs
            .get_queue_attributes()
            .queue_url(&tap)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| dbg_err("get_queue_attributes", e))?
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .ok_or_else(|| HarnessError::Setup("the email tap has no ARN".into()))?;
        c.sns
            .subscribe()
            .topic_arn(&topic)
            .protocol("sqs")
            .endpoint(tap_arn)
            .attributes("RawMessageDelivery", "true")
            .send()
            .await
            .map_err(|e| dbg_err("subscribe", e))?;
        let vars = approval_vars(&topic);
        let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let env = stack.function_env(&pairs);
        let f =
            FunctionUnderTest::start(&function_binary("alert-router")?, "alert-router", &env, 1)
                .await?;
        Ok(Router {
            f,
            slack,
            email_tap: tap,
            env,
        })
    }

    /// Invokes alert-router; its error answer is an error carrying its logs.
    pub async fn invoke(&self, payload: Value) -> Result<Value, HarnessError> {
        match self
            .f
            .invoke(payload, Duration::from_secs(30))
            .await?
            .outcome
        {
            Outcome::Response(v) => Ok(v),
            Outcome::Error {
                error_type,
                message,
            } => Err(HarnessError::Setup(format!(
                "alert-router answered {error_type}: {message}\n{}",
                self.f.logs()
            ))),
        }
    }

    /// A request to the acknowledgement URL from [`SOURCE_IP`]: (status, body).
    pub async fn http(
        &self,
        method: &str,
        query: &BTreeMap<String, String>,
    ) -> Result<(u64, String), HarnessError> {
        let v = self.invoke(url_request(method, query)).await?;
        let status = v["statusCode"]
            .as_u64()
            .ok_or_else(|| HarnessError::Setup(format!("no statusCode in {v}")))?;
        Ok((status, v["body"].as_str().unwrap_or("").to_string()))
    }

    /// The approval links (label, url) of the last Slack message; none when there was none.
    pub fn slack_links(&self) -> Vec<(String, String)> {
        let last = self
            .slack
            .lock()
            .ok()
            .and_then(|all| all.last().cloned())
            .unwrap_or(Value::Null);
        let text = last["text"].as_str().unwrap_or("");
        text.split('<')
            .skip(1)
            .filter_map(|p| p.split_once('|'))
            .filter(|(url, _)| url.contains("approval="))
            .filter_map(|(url, rest)| {
                rest.split('>')
                    .next()
                    .map(|label| (label.to_string(), url.to_string()))
            })
            .collect()
    }

    /// The bodies on the email tap now (each received once).
    pub async fn emails(&self, stack: &Stack) -> Result<Vec<String>, HarnessError> {
        let got = stack
            .clients
            .sqs
            .receive_message()
            .queue_url(&self.email_tap)
            .max_number_of_messages(10)
            .send()
            .await
            .map_err(|e| dbg_err("receive_message", e))?;
        Ok(got
            .messages()
            .iter()
            .filter_map(|m| m.body().map(String::from))
            .collect())
    }
}

/// The Function URL event for `method /?<query>` from [`SOURCE_IP`].
pub fn url_request(method: &str, query: &BTreeMap<String, String>) -> Value {
    json!({
        "version": "2.0", "rawPath": "/", "rawQueryString": "",
        "headers": {"host": "ack-e2e.lambda-url.us-east-1.on.aws"},
        "queryStringParameters": query,
        "requestContext": {"http": {"method": method, "path": "/", "sourceIp": SOURCE_IP}},
        "isBase64Encoded": false
    })
}

/// The schedules in the approvals group.
pub async fn schedules(stack: &Stack) -> Result<Vec<FollowUp>, HarnessError> {
    platform::follow_ups(&stack.clients, GROUP).await
}

/// The audit records of `resource` (e.g. `rds:nbaops-dev-db`), as stored in the ledger.
pub async fn audit(stack: &Stack, resource: &str) -> Result<Vec<Value>, HarnessError> {
    let out = stack
        .clients
        .ddb
        .query()
        .table_name(platform::LEDGER)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(format!("audit#{resource}")))
        .send()
        .await
        .map_err(|e| dbg_err("query audit", e))?;
    Ok(out
        .items()
        .iter()
        .filter_map(|i| i.get("data").and_then(|d| d.as_s().ok()))
        .filter_map(|s| serde_json::from_str(s).ok())
        .collect())
}

/// The SNS record Lambda hands alert-router for `message` (an alert as published on the alerts
/// topic), its `MessageId` `<id_prefix>-<approval_id>`.
pub fn sns_record(stack: &Stack, message: &Value, id_prefix: &str) -> Result<Value, HarnessError> {
    let path = workspace_root().join("events/alerts/sns/p1-db-down.json");
    let text =
        std::fs::read_to_string(&path).map_err(io_err(format!("read {}", path.display())))?;
    let mut a: Value = serde_json::from_str(&text)
        .map_err(|e| HarnessError::Setup(format!("{}: {e}", path.display())))?;
    let field = |k: &str| message[k].as_str().unwrap_or_default().to_string();
    let sns = &mut a["Records"][0]["Sns"];
    sns["TopicArn"] = json!(stack.platform.alerts_topic);
    sns["Subject"] = json!(format!("[{}][dev] {}", field("severity"), field("summary")));
    sns["MessageId"] = json!(format!("{id_prefix}-{}", field("approval_id")));
    sns["Message"] = json!(message.to_string());
    sns["MessageAttributes"]["severity"]["Value"] = message["severity"].clone();
    sns["MessageAttributes"]["dedup_key"]["Value"] = message["dedup_key"].clone();
    Ok(a)
}
