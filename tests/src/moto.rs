//! A private moto server (AWS emulator) per test group.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cbor_bridge::CborBridge;
use crate::http::http;
use crate::ports::{free_port, listener_owned_by};
use crate::{io_err, log_tail, unique_temp_dir, HarnessError};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// moto_server with its clock (snapshot times, restore points, alarm timestamps) on the test clock.
///
/// DynamoDB requests are served one at a time: moto 5.2's `TransactWriteItems` deep-copies the
/// tables (to roll back) while other request threads write them, and fails with "dictionary
/// changed size during iteration", a bare HTTP 500 (422 of them in one run of e2e_storm's 1,000
/// deliveries, 8 in flight). DynamoDB itself isolates a transaction from concurrent writes.
///
/// One speed fix, same answers: moto 5.2's SQS queue counts its visible / delayed / in-flight
/// messages reading the clock once per message, and `SendMessage` reads every queue attribute
/// (those counts included) for each message it adds, so filling a queue is quadratic (500
/// messages: ~10 s under freezegun, ~0.33 s per `SendMessageBatch` of 10 near the end). The three
/// counts below read the clock once per count; they keep moto's comparisons
/// (`now > visible_at`, `now < delayed_until`).
const MOTO_ON_TEST_CLOCK: &str = "\
import sys
from freezegun import freeze_time
freeze_time(sys.argv.pop(1), tick=True).start()
import moto.sqs.models as sqs
from moto.core.utils import unix_time_millis as now_ms
def _visible(q):
    now = now_ms()
    return [m for m in q._messages if now > m.visible_at and not now < m.delayed_until]
def _delayed(q):
    now = now_ms()
    return sum(1 for m in q._messages if now < m.delayed_until)
def _in_flight(q):
    now = now_ms()
    return sum(1 for m in q._messages if not now > m.visible_at)
import os
if os.environ.get('NBAOPS_MOTO_SQS_COUNTS', 'fast') == 'fast':
    sqs.Queue.messages = property(_visible)
    sqs.Queue.approximate_number_of_messages_delayed = property(_delayed)
    sqs.Queue.approximate_number_of_messages_not_visible = property(_in_flight)
import threading
import moto.dynamodb.responses as ddb
_ddb_lock = threading.Lock()
_ddb_call = ddb.DynamoHandler.call_action
def _ddb_serialised(self):
    with _ddb_lock:
        return _ddb_call(self)
ddb.DynamoHandler.call_action = _ddb_serialised
from moto.server import main
main(sys.argv[1:])
";

pub struct Moto {
    /// `http://127.0.0.1:PORT`, the value for `AWS_ENDPOINT_URL`.
    pub endpoint: String,
    pub port: u16,
    /// CloudWatch's CBOR protocol bridged to moto's JSON (see [`crate::cbor_bridge`]): the
    /// value of `AWS_ENDPOINT_URL_CLOUDWATCH`.
    pub cloudwatch: CborBridge,
    child: Child,
    dir: PathBuf,
}

impl Moto {
    /// Starts moto's server from `<venv_dir>` on a free loopback port, its clock set to the
    /// test clock (freezegun, ticking), and waits until it answers. Killed (and its log dir
    /// removed) on drop.
    pub async fn start(venv_dir: &Path) -> Result<Moto, HarnessError> {
        let bin = venv_dir.join("bin").join("python");
        if !venv_dir.join("bin").join("moto_server").is_file() || !bin.is_file() {
            return Err(HarnessError::Setup(format!(
                "{} not found: run scripts/setup.sh to create the venv",
                venv_dir.join("bin").join("moto_server").display()
            )));
        }
        let dir = unique_temp_dir("moto")?;
        // A free port can be taken by someone else before moto binds it: then try another.
        let mut last_error = None;
        for _ in 0..3 {
            match start_on_free_port(&bin, &dir).await {
                Ok((child, port)) => {
                    let endpoint = format!("http://127.0.0.1:{port}");
                    let cloudwatch = CborBridge::start(&endpoint).await?;
                    return Ok(Moto {
                        endpoint,
                        port,
                        cloudwatch,
                        child,
                        dir,
                    });
                }
                Err(Attempt::PortTaken(e)) => last_error = Some(e),
                Err(Attempt::Failed(e)) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(e);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last_error.unwrap_or_else(|| HarnessError::Setup("moto did not start".into())))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The directory holding moto's log and request recording (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Wipes all emulated AWS state.
    pub async fn reset(&self) -> Result<(), HarnessError> {
        let url = format!("{}/moto-api/reset", self.endpoint);
        match http("POST", &url, None, &[]).await? {
            (200, _) => Ok(()),
            (status, body) => Err(HarnessError::Http(format!(
                "POST {url}: {status} {}",
                String::from_utf8_lossy(&body)
            ))),
        }
    }

    /// Environment for a function (or SDK) talking to this moto with dummy credentials.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            // The SDK's service-specific endpoint variable
            // (https://docs.aws.amazon.com/sdkref/latest/guide/ss-endpoints-table.html).
            (
                "AWS_ENDPOINT_URL_CLOUDWATCH",
                self.cloudwatch.endpoint.as_str(),
            ),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    pub fn logs(&self) -> String {
        log_tail(&self.dir.join("moto.log"), usize::MAX)
    }
}

/// Where moto's request recordings are kept after the server stops (`make test` sets it and then
/// checks every call a function made against the operations its crate declares:
/// infra/tests/check_observed_calls.py). Unset: recordings are dropped with the server.
pub const CALLS_DIR_VAR: &str = "NBAOPS_AWS_CALLS_DIR";

/// EventBridge Scheduler is REST-JSON: the method and path name the operation
/// (<https://docs.aws.amazon.com/scheduler/latest/APIReference/API_Operations.html>), as
/// infra/tests/check_observed_calls.py reads them too.
fn rest_operation(service: &str, method: &str, url: &str) -> Option<String> {
    if service == "s3" {
        return s3_operation(method, url);
    }
    if service != "scheduler" {
        return None;
    }
    let path = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or(url);
    let parts: Vec<&str> = path
        .split('?')
        .next()
        .unwrap_or("")
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let op = match (method.to_ascii_uppercase().as_str(), parts.as_slice()) {
        ("POST", ["schedules", _]) => "CreateSchedule",
        ("DELETE", ["schedules", _]) => "DeleteSchedule",
        ("GET", ["schedules", _]) => "GetSchedule",
        ("PUT", ["schedules", _]) => "UpdateSchedule",
        ("GET", ["schedules"]) => "ListSchedules",
        _ => return None,
    };
    Some(op.to_string())
}

/// S3 is REST-XML: the one S3 operation a function makes, ListObjectsV2 (`GET /<bucket>?list-type=2`,
/// path-style against moto), is authorised as `s3:ListBucket`
/// (<https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html>), as
/// infra/tests/check_observed_calls.py names it too. Anything else stays unnamed (`?GET ...`).
fn s3_operation(method: &str, url: &str) -> Option<String> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    let listing = query.split('&').any(|kv| kv == "list-type=2");
    (method.eq_ignore_ascii_case("GET") && listing).then(|| "ListBucket".to_string())
}

impl Moto {
    /// Every request this server received so far, one JSON object a line (moto's recorder:
    /// headers — the caller's `app/<function>` user agent, the signing scope — method, url, body).
    pub fn recording(&self) -> String {
        std::fs::read_to_string(self.dir.join("recording.jsonl")).unwrap_or_default()
    }
}

/// One request moto received, as `infra/tests/check_observed_calls.py` reads the recording: what
/// really got to "AWS", as opposed to what a function or a test believes it sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsCall {
    /// `app/<name>` of the user agent: the function binary that made the call (`None` for the
    /// harness's own set-up and inspection calls).
    pub app: Option<String>,
    /// SigV4 signing name (`autoscaling`, `rds`, `dynamodb`...).
    pub service: String,
    /// `X-Amz-Target`'s operation or the query protocol's `Action`.
    pub operation: String,
}

/// The name the fault-injection tests use.
pub type RecordedCall = AwsCall;

impl AwsCall {
    /// `service:Operation`, as IAM names it (`monitoring` is IAM's `cloudwatch`).
    pub fn iam_action(&self) -> String {
        let service = if self.service == "monitoring" {
            "cloudwatch"
        } else {
            &self.service
        };
        format!("{service}:{}", self.operation)
    }

    /// Read-only by name (Describe/Get/List/Query/Scan/BatchGet): everything else changes state.
    pub fn is_mutating(&self) -> bool {
        !["Describe", "Get", "List", "Query", "Scan", "BatchGet"]
            .iter()
            .any(|p| self.operation.starts_with(p))
    }

    /// `None` for an unsigned request (moto's own API, not an AWS call).
    fn from_recorded(line: &str) -> Option<AwsCall> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let headers = v.get("headers")?.as_object()?;
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let ua = format!("{} {}", header("x-amz-user-agent"), header("user-agent"));
        let app = ua
            .split_whitespace()
            .find_map(|w| w.strip_prefix("app/"))
            .map(String::from);
        // SigV4: Credential=<key>/<date>/<region>/<service>/aws4_request
        let service = header("authorization")
            .split("Credential=")
            .nth(1)?
            .split(',')
            .next()?
            .split('/')
            .nth(3)?
            .to_string();
        let target = header("x-amz-target");
        let operation = if !target.is_empty() {
            target.rsplit('.').next().unwrap_or(target).to_string()
        } else {
            let raw = v.get("body").and_then(|b| b.as_str()).unwrap_or("");
            let body = if v.get("body_encoded") == Some(&serde_json::Value::Bool(true)) {
                aws_smithy_types::base64::decode(raw)
                    .ok()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default()
            } else {
                raw.to_string()
            };
            let method = v.get("method").and_then(|m| m.as_str()).unwrap_or("");
            let url = v.get("url").and_then(|m| m.as_str()).unwrap_or("");
            body.split('&')
                .find_map(|kv| kv.strip_prefix("Action="))
                .map(String::from)
                .or_else(|| rest_operation(&service, method, url))
                .unwrap_or_else(|| {
                    format!(
                        "?{} {}",
                        v.get("method").and_then(|m| m.as_str()).unwrap_or(""),
                        v.get("url").and_then(|m| m.as_str()).unwrap_or("")
                    )
                })
        };
        Some(AwsCall {
            app,
            service,
            operation,
        })
    }
}

impl Moto {
    /// Every signed AWS request received so far, in order (see [`AwsCall`]).
    pub fn calls(&self) -> Vec<AwsCall> {
        self.recording()
            .lines()
            .filter_map(AwsCall::from_recorded)
            .collect()
    }

    /// Same as [`Moto::calls`].
    pub fn recorded_calls(&self) -> Vec<AwsCall> {
        self.calls()
    }

    /// The calls `app` made after the first `since` recorded calls (take `calls().len()` before
    /// an invocation, then this after it: the invocation's own calls).
    pub fn calls_of(&self, app: &str, since: usize) -> Vec<AwsCall> {
        self.calls()
            .into_iter()
            .skip(since)
            .filter(|c| c.app.as_deref() == Some(app))
            .collect()
    }

    /// The calls `app` made so far, as IAM actions (`dynamodb:PutItem`) in order.
    pub fn actions_of(&self, app: &str) -> Vec<String> {
        self.calls_of(app, 0)
            .iter()
            .map(AwsCall::iam_action)
            .collect()
    }

    /// How many `service`/`operation` requests of function `app` reached moto.
    pub fn count_calls(&self, app: &str, service: &str, operation: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| {
                c.app.as_deref() == Some(app) && c.service == service && c.operation == operation
            })
            .count()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = std::env::var_os(CALLS_DIR_VAR) {
            let dir = PathBuf::from(dir);
            let _ = std::fs::create_dir_all(&dir);
            let name = self
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("moto-{}", self.port));
            let _ = std::fs::copy(
                self.dir.join("recording.jsonl"),
                dir.join(format!("{name}.jsonl")),
            );
        }
        // NBAOPS_KEEP_MOTO_LOG=<dir>: the server's log kept there (to read an emulator's 500).
        if let Some(dir) = std::env::var_os("NBAOPS_KEEP_MOTO_LOG") {
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::copy(
                self.dir.join("moto.log"),
                PathBuf::from(dir).join(format!("moto-{}.log", self.port)),
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

enum Attempt {
    PortTaken(HarnessError),
    Failed(HarnessError),
}

async fn start_on_free_port(bin: &Path, dir: &Path) -> Result<(Child, u16), Attempt> {
    let failed = Attempt::Failed;
    let port = free_port().map_err(|e| failed(io_err("pick a free port")(e)))?;
    let log_path = dir.join("moto.log");
    let log = File::create(&log_path)
        .map_err(|e| failed(io_err(format!("create {}", log_path.display()))(e)))?;
    let log_err = log
        .try_clone()
        .map_err(|e| failed(io_err("clone the log handle")(e)))?;
    // The server runs in this python process, not behind a shell, so the pid we kill is the server's.
    let mut child = Command::new(bin)
        .env("MOTO_ENABLE_RECORDING", "True")
        .env("MOTO_RECORDER_FILEPATH", dir.join("recording.jsonl"))
        .args([
            "-c",
            MOTO_ON_TEST_CLOCK,
            &crate::clock::env().1,
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|e| failed(io_err(format!("start {}", bin.display()))(e)))?;
    match wait_ready(&mut child, port, &log_path).await {
        Ok(()) => Ok((child, port)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

async fn wait_ready(child: &mut Child, port: u16, log_path: &Path) -> Result<(), Attempt> {
    let url = format!("http://127.0.0.1:{port}/moto-api/");
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let tail = log_tail(log_path, 20);
            let error = HarnessError::Setup(format!(
                "moto_server exited ({status}) before it was ready:\n{tail}"
            ));
            return Err(if tail.contains("Address already in use") {
                Attempt::PortTaken(error)
            } else {
                Attempt::Failed(error)
            });
        }
        let probe =
            tokio::time::timeout(Duration::from_secs(2), http("GET", &url, None, &[])).await;
        if let Ok(Ok((200, _))) = probe {
            // Something answers: make sure it is our moto, not a server that took the
            // port between free_port() and moto's bind.
            return match listener_owned_by(child.id(), port) {
                Some(false) => Err(Attempt::PortTaken(HarnessError::Setup(format!(
                    "port {port} is held by another process, not moto_server (pid {})",
                    child.id()
                )))),
                _ => Ok(()),
            };
        }
        if started.elapsed() > READY_TIMEOUT {
            return Err(Attempt::Failed(HarnessError::Timeout {
                what: format!(
                    "moto_server ready at {url}; log:\n{}",
                    log_tail(log_path, 20)
                ),
                after: READY_TIMEOUT,
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::{rest_operation, AwsCall};

    #[test]
    fn scheduler_rest_calls_are_named_by_method_and_path() {
        let url = "http://127.0.0.1:1234/schedules/recheck-web-1?groupName=g";
        assert_eq!(
            rest_operation("scheduler", "POST", url).as_deref(),
            Some("CreateSchedule")
        );
        assert_eq!(
            rest_operation("scheduler", "DELETE", url).as_deref(),
            Some("DeleteSchedule")
        );
        assert_eq!(
            rest_operation("scheduler", "GET", url).as_deref(),
            Some("GetSchedule")
        );
        assert_eq!(
            rest_operation("scheduler", "GET", "http://127.0.0.1:1/schedules").as_deref(),
            Some("ListSchedules")
        );
        assert_eq!(
            rest_operation("scheduler", "POST", "http://h/schedule-groups/x"),
            None
        );
        assert_eq!(rest_operation("s3", "POST", url), None);
    }

    #[test]
    fn recorded_requests_name_their_operation_and_caller() {
        let json_protocol = r#"{"headers": {"X-Amz-Target": "DynamoDB_20120810.TransactWriteItems", "x-amz-user-agent": "aws-sdk-rust/1 app/scale-on-alarm", "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260617/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=x"}, "method": "POST", "url": "/", "body": ""}"#;
        let c = AwsCall::from_recorded(json_protocol).unwrap();
        assert_eq!(c.app.as_deref(), Some("scale-on-alarm"));
        assert_eq!(c.iam_action(), "dynamodb:TransactWriteItems");
        assert!(c.is_mutating());
        // Query protocol, body base64-encoded as moto records it.
        let body =
            aws_smithy_types::base64::encode("Action=DescribeAutoScalingGroups&Version=2011-01-01");
        let query = format!(
            r#"{{"headers": {{"User-Agent": "aws-sdk-rust app/offhours", "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260617/us-east-1/autoscaling/aws4_request"}}, "method": "POST", "url": "/", "body": "{body}", "body_encoded": true}}"#
        );
        let c = AwsCall::from_recorded(&query).unwrap();
        assert_eq!(c.iam_action(), "autoscaling:DescribeAutoScalingGroups");
        assert!(!c.is_mutating());
        // The harness's own set-up calls carry no app id; unsigned requests are not AWS calls.
        let harness = json_protocol.replace(" app/scale-on-alarm", "");
        assert_eq!(AwsCall::from_recorded(&harness).unwrap().app, None);
        assert!(AwsCall::from_recorded(r#"{"headers": {}, "url": "/moto-api/"}"#).is_none());
    }
}
