//! A fault-injecting HTTP proxy in front of moto: the function binaries get it as their AWS
//! endpoint, and a test chooses which operations it answers with a fault instead of forwarding.
//!
//! A request is matched on its service (the SigV4 credential scope of its `Authorization`
//! header) and its operation (`X-Amz-Target` for the JSON protocols, the `Action=` form field
//! for the query protocol), and optionally on a piece of its body. A rule answers the first N
//! matching requests, or every one, with:
//! - [`Fault::Throttle`]: HTTP 400 `ThrottlingException`, in the protocol's error shape
//!   (`{"__type": ...}` for JSON, `<ErrorResponse><Error><Code>` XML for query). AWS lists
//!   `ThrottlingException` as a common error of every API with status 400:
//!   <https://docs.aws.amazon.com/autoscaling/ec2/APIReference/CommonErrors.html>;
//! - [`Fault::Status`]: HTTP 500 (`InternalFailure`) or 503 (`ServiceUnavailable`), same page;
//! - [`Fault::Slow`]: waits before forwarding; a client that gives up meanwhile (its attempt
//!   timeout) closes the connection, and the request is then never forwarded;
//! - [`Fault::Reset`]: the connection is reset (TCP RST) without an answer and without
//!   forwarding;
//! - [`Fault::LoseAnswer`]: forwarded (AWS acts), then the connection is reset instead of
//!   answering, as when a network path breaks after the request got through.
//!
//! Every request is logged ([`FaultProxy::log`], and one stderr line per fault). The proxy
//! serves each connection in its own task (keep-alive, as the SDK's pool uses it), forwards on a
//! fresh connection to moto, and stops with every connection when dropped.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::http::{read_body, read_head, request, write_response, Head};
use crate::{io_err, HarnessError};

/// What the proxy answers instead of forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Throttle,
    /// 500 or 503 (other codes are sent as they are, with a generic body).
    Status(u16),
    /// Wait this long, then forward (unless the client hung up).
    Slow(Duration),
    Reset,
    /// Forward (AWS acts), then reset the connection instead of answering: the answer is lost.
    LoseAnswer,
}

/// How many matching requests a rule answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Times {
    First(u32),
    Always,
}

#[derive(Debug, Clone)]
struct Rule {
    service: String,
    operation: String,
    /// Only requests whose body contains this (empty: every request of the operation).
    body_contains: String,
    fault: Fault,
    left: Option<u32>,
}

/// One request the proxy saw and what it did with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// `app/<name>` of the caller's user agent (the function), when present.
    pub app: Option<String>,
    /// SigV4 signing name, e.g. `autoscaling`, `dynamodb`.
    pub service: String,
    /// e.g. `SetDesiredCapacity`, `PutItem`.
    pub operation: String,
    pub fault: Option<Fault>,
    /// Forwarded to moto, with moto's status; `false` for an injected answer, a reset, or a
    /// slow request the client abandoned.
    pub forwarded: bool,
    pub status: Option<u16>,
}

#[derive(Default)]
struct Shared {
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<Entry>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`, the value for a function's `AWS_ENDPOINT_URL`.
    pub endpoint: String,
    pub port: u16,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl FaultProxy {
    /// Binds 127.0.0.1 on a free port and forwards to `upstream` (`http://host:port`) until
    /// dropped. Needs a Tokio runtime.
    pub async fn start(upstream: &str) -> Result<FaultProxy, HarnessError> {
        let upstream = upstream.trim_end_matches('/').to_string();
        if !upstream.starts_with("http://") {
            return Err(HarnessError::Setup(format!(
                "fault proxy upstream must be http://: {upstream}"
            )));
        }
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(io_err("bind the fault proxy"))?;
        let port = listener
            .local_addr()
            .map_err(io_err("fault proxy address"))?
            .port();
        let shared = Arc::new(Shared::default());
        let server = tokio::spawn(serve(listener, shared.clone(), upstream));
        Ok(FaultProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            shared,
            server,
        })
    }

    /// From now on, answer `service`/`operation` with `fault`, `times` times. Rules are tried in
    /// the order they were added; a used-up rule no longer matches.
    pub fn inject(&self, service: &str, operation: &str, fault: Fault, times: Times) {
        self.inject_where(service, operation, "", fault, times);
    }

    /// Like [`FaultProxy::inject`], only for requests whose body contains `body_contains` (e.g.
    /// one ledger item's key in a DynamoDB `PutItem`).
    pub fn inject_where(
        &self,
        service: &str,
        operation: &str,
        body_contains: &str,
        fault: Fault,
        times: Times,
    ) {
        lock(&self.shared.rules).push(Rule {
            service: service.to_string(),
            operation: operation.to_string(),
            body_contains: body_contains.to_string(),
            fault,
            left: match times {
                Times::First(n) => Some(n),
                Times::Always => None,
            },
        });
    }

    /// Removes every rule: everything is forwarded again.
    pub fn clear(&self) {
        lock(&self.shared.rules).clear();
    }

    /// Every request seen so far, in arrival order.
    pub fn log(&self) -> Vec<Entry> {
        lock(&self.shared.log).clone()
    }

    /// How many `service`/`operation` requests were answered with a fault.
    pub fn faults(&self, service: &str, operation: &str) -> usize {
        self.log()
            .iter()
            .filter(|e| e.service == service && e.operation == operation && e.fault.is_some())
            .count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The server task owns the JoinSet of connection tasks: aborting it aborts them all.
        self.server.abort();
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, upstream: String) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(connection(stream, shared.clone(), upstream.clone()));
                }
            }
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// What a request is, for matching and the log.
struct Call {
    app: Option<String>,
    service: String,
    operation: String,
    json: bool,
}

fn classify(head: &Head, body: &[u8]) -> Call {
    let auth = head.header("authorization").unwrap_or("");
    // Credential=AKID/20260617/us-east-1/autoscaling/aws4_request
    let service = auth
        .split("Credential=")
        .nth(1)
        .and_then(|c| c.split(',').next())
        .and_then(|c| c.split('/').nth(3))
        .unwrap_or("")
        .to_string();
    let agent = format!(
        "{} {}",
        head.header("x-amz-user-agent").unwrap_or(""),
        head.header("user-agent").unwrap_or("")
    );
    let app = agent
        .split_whitespace()
        .find_map(|t| t.strip_prefix("app/"))
        .map(String::from);
    let target = head.header("x-amz-target");
    let operation = match target {
        Some(t) => t.rsplit('.').next().unwrap_or(t).to_string(),
        None => String::from_utf8_lossy(body)
            .split('&')
            .find_map(|kv| kv.strip_prefix("Action="))
            .unwrap_or("")
            .to_string(),
    };
    Call {
        app,
        service,
        operation,
        json: target.is_some(),
    }
}

fn take_fault(shared: &Shared, call: &Call, body: &[u8]) -> Option<Fault> {
    let mut rules = lock(&shared.rules);
    let rule = rules.iter_mut().find(|r| {
        r.service == call.service
            && r.operation == call.operation
            && r.left != Some(0)
            && (r.body_contains.is_empty()
                || String::from_utf8_lossy(body).contains(r.body_contains.as_str()))
    })?;
    if let Some(n) = rule.left.as_mut() {
        *n -= 1;
    }
    Some(rule.fault)
}

/// The error body AWS sends for `code`, in the request's protocol.
fn error_answer(call: &Call, head: &Head, code: &str, message: &str) -> (String, Vec<u8>) {
    if call.json {
        let content_type = head
            .header("content-type")
            .unwrap_or("application/x-amz-json-1.0")
            .to_string();
        let body = serde_json::json!({"__type": code, "message": message}).to_string();
        (content_type, body.into_bytes())
    } else {
        let body = format!(
            "<ErrorResponse><Error><Type>{}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>nbaops-fault-proxy</RequestId></ErrorResponse>",
            if code == "ThrottlingException" { "Sender" } else { "Receiver" }
        );
        ("text/xml".to_string(), body.into_bytes())
    }
}

async fn connection(stream: TcpStream, shared: Arc<Shared>, upstream: String) {
    // Small request/answer exchanges: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms a call.
    let _ = stream.set_nodelay(true);
    let mut conn = BufReader::new(stream);
    loop {
        let head = match read_head(&mut conn).await {
            Ok(Some(h)) => h,
            _ => return,
        };
        let Ok(body) = read_body(&mut conn, &head, false).await else {
            return;
        };
        let call = classify(&head, &body);
        let fault = take_fault(&shared, &call, &body);
        let mut entry = Entry {
            app: call.app.clone(),
            service: call.service.clone(),
            operation: call.operation.clone(),
            fault,
            forwarded: false,
            status: None,
        };
        if let Some(f) = fault {
            eprintln!(
                "fault-proxy: {:?} for {}:{} (from {})",
                f,
                call.service,
                call.operation,
                call.app.as_deref().unwrap_or("?")
            );
        }
        let close = head
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        match fault {
            Some(Fault::Reset) => {
                lock(&shared.log).push(entry);
                // SO_LINGER 0: closing sends RST instead of FIN.
                let _ = conn.get_ref().set_zero_linger();
                return;
            }
            Some(Fault::Throttle) => {
                let (ct, b) = error_answer(&call, &head, "ThrottlingException", "Rate exceeded");
                entry.status = Some(400);
                lock(&shared.log).push(entry);
                if write_response(&mut conn, 400, &[("Content-Type", ct)], &b, close)
                    .await
                    .is_err()
                    || close
                {
                    return;
                }
                continue;
            }
            Some(Fault::Status(status)) => {
                let (code, message) = match status {
                    503 => ("ServiceUnavailable", "The request has failed due to a temporary failure of the server."),
                    _ => ("InternalFailure", "The request processing has failed because of an unknown error, exception or failure."),
                };
                let (ct, b) = error_answer(&call, &head, code, message);
                entry.status = Some(status);
                lock(&shared.log).push(entry);
                if write_response(&mut conn, status, &[("Content-Type", ct)], &b, close)
                    .await
                    .is_err()
                    || close
                {
                    return;
                }
                continue;
            }
            Some(Fault::Slow(delay)) => {
                let sleep = tokio::time::sleep(delay);
                tokio::pin!(sleep);
                let hung_up = tokio::select! {
                    _ = &mut sleep => false,
                    // EOF (or an error) while we wait: the client gave up on this attempt.
                    r = conn.fill_buf() => r.map(|b| b.is_empty()).unwrap_or(true),
                };
                if hung_up {
                    eprintln!(
                        "fault-proxy: {}:{} abandoned by the client while delayed, not forwarded",
                        call.service, call.operation
                    );
                    lock(&shared.log).push(entry);
                    return;
                }
                sleep.await;
            }
            Some(Fault::LoseAnswer) | None => {}
        }
        let url = format!("{upstream}{}", path_of(&head));
        let method = head
            .start_line
            .split_whitespace()
            .next()
            .unwrap_or("POST")
            .to_string();
        let headers: Vec<(&str, &str)> = head
            .headers
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "host" | "connection" | "content-length" | "transfer-encoding" | "expect"
                )
            })
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let answer = request(&method, &url, Some(&body), &headers).await;
        let (status, resp_headers, resp_body) = match answer {
            Ok(r) => {
                let keep: Vec<(String, String)> = r
                    .head
                    .headers
                    .into_iter()
                    .filter(|(k, _)| {
                        !matches!(
                            k.as_str(),
                            "content-length" | "transfer-encoding" | "connection"
                        )
                    })
                    .collect();
                entry.forwarded = true;
                (r.status, keep, r.body)
            }
            Err(e) => {
                eprintln!("fault-proxy: upstream {url} failed: {e}");
                (
                    502,
                    Vec::new(),
                    format!("upstream failed: {e}").into_bytes(),
                )
            }
        };
        entry.status = Some(status);
        lock(&shared.log).push(entry);
        if fault == Some(Fault::LoseAnswer) {
            let _ = conn.get_ref().set_zero_linger();
            return;
        }
        let hdrs: Vec<(&str, String)> = resp_headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        if write_response(&mut conn, status, &hdrs, &resp_body, close)
            .await
            .is_err()
            || close
        {
            return;
        }
    }
}

fn path_of(head: &Head) -> &str {
    head.start_line.split_whitespace().nth(1).unwrap_or("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(headers: &[(&str, &str)]) -> Head {
        Head {
            start_line: "POST / HTTP/1.1".into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn classifies_query_and_json_requests() {
        let auth = "AWS4-HMAC-SHA256 Credential=testing/20260617/us-east-1/autoscaling/aws4_request, SignedHeaders=host, Signature=x";
        let h = head(&[
            ("authorization", auth),
            ("user-agent", "aws-sdk-rust/1 os/linux app/scale-on-alarm"),
        ]);
        let c = classify(
            &h,
            b"Action=SetDesiredCapacity&Version=2011-01-01&AutoScalingGroupName=w",
        );
        assert_eq!(
            (c.service.as_str(), c.operation.as_str(), c.json),
            ("autoscaling", "SetDesiredCapacity", false)
        );
        assert_eq!(c.app.as_deref(), Some("scale-on-alarm"));
        let h = head(&[
            ("authorization", &auth.replace("autoscaling", "dynamodb")),
            ("x-amz-target", "DynamoDB_20120810.PutItem"),
        ]);
        let c = classify(&h, b"{}");
        assert_eq!(
            (c.service.as_str(), c.operation.as_str(), c.json),
            ("dynamodb", "PutItem", true)
        );
        assert_eq!(c.app, None);
    }

    #[test]
    fn first_n_then_forward() {
        let shared = Shared::default();
        lock(&shared.rules).push(Rule {
            service: "rds".into(),
            operation: "StopDBInstance".into(),
            body_contains: String::new(),
            fault: Fault::Throttle,
            left: Some(2),
        });
        lock(&shared.rules).push(Rule {
            service: "dynamodb".into(),
            operation: "PutItem".into(),
            body_contains: "audit#".into(),
            fault: Fault::Reset,
            left: None,
        });
        let call = Call {
            app: None,
            service: "rds".into(),
            operation: "StopDBInstance".into(),
            json: false,
        };
        let other = Call {
            operation: "DescribeDBInstances".into(),
            ..call_clone(&call)
        };
        assert_eq!(take_fault(&shared, &other, b""), None);
        assert_eq!(take_fault(&shared, &call, b""), Some(Fault::Throttle));
        assert_eq!(take_fault(&shared, &call, b""), Some(Fault::Throttle));
        assert_eq!(take_fault(&shared, &call, b""), None);
        let put = Call {
            service: "dynamodb".into(),
            operation: "PutItem".into(),
            ..call_clone(&call)
        };
        assert_eq!(
            take_fault(&shared, &put, br#"{"pk":{"S":"idem#e1"}}"#),
            None
        );
        for _ in 0..3 {
            assert_eq!(
                take_fault(&shared, &put, br#"{"pk":{"S":"audit#asg:w"}}"#),
                Some(Fault::Reset)
            );
        }
    }

    fn call_clone(c: &Call) -> Call {
        Call {
            app: c.app.clone(),
            service: c.service.clone(),
            operation: c.operation.clone(),
            json: c.json,
        }
    }

    #[test]
    fn error_bodies_follow_the_protocol() {
        let json = Call {
            app: None,
            service: "dynamodb".into(),
            operation: "PutItem".into(),
            json: true,
        };
        let h = head(&[("content-type", "application/x-amz-json-1.0")]);
        let (ct, b) = error_answer(&json, &h, "ThrottlingException", "Rate exceeded");
        assert_eq!(ct, "application/x-amz-json-1.0");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
        assert_eq!(v["__type"], "ThrottlingException");
        let query = Call {
            json: false,
            ..call_clone(&json)
        };
        let (ct, b) = error_answer(&query, &h, "ThrottlingException", "Rate exceeded");
        assert_eq!(ct, "text/xml");
        assert!(String::from_utf8_lossy(&b)
            .contains("<Error><Type>Sender</Type><Code>ThrottlingException</Code>"));
    }
}
