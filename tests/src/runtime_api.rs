//! In-process Lambda Runtime API (polled by the function binary) and Invoke API (used by
//! the test), so a real function binary runs exactly as it does on Lambda.
//! One `RuntimeApi` serves one function; any number of its processes may poll it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};
use tokio::task::{JoinHandle, JoinSet};

use crate::http::{read_body, read_head, write_response};
use crate::{io_err, HarnessError};

/// What a function reports for one invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Response(Value),
    Error { error_type: String, message: String },
}

#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    pub outcome: Outcome,
    /// From queuing the event to the function's answer (includes waiting for a free process).
    pub elapsed: Duration,
}

pub struct RuntimeApi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

struct Shared {
    function_name: String,
    state: Mutex<State>,
    queued: Notify,
    idle_pollers: AtomicUsize,
    /// What `Lambda-Runtime-Deadline-Ms` gives each invocation from the moment it is handed out.
    deadline_ms: AtomicU64,
}

/// The deadline of an invocation unless a test sets another ([`RuntimeApi::set_deadline`]).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    waiting: HashMap<String, oneshot::Sender<Outcome>>,
    init_error: Option<Outcome>,
}

struct Queued {
    request_id: String,
    payload: Vec<u8>,
}

struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// The invocation this reply hands to a process; put back if the reply can't be sent.
    handed_out: Option<Queued>,
}

impl RuntimeApi {
    /// Binds 127.0.0.1 on a free port and serves until dropped. Needs a Tokio runtime.
    pub async fn start(function_name: &str) -> Result<RuntimeApi, HarnessError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(io_err("bind the Runtime API"))?;
        let addr = listener
            .local_addr()
            .map_err(io_err("Runtime API address"))?;
        let shared = Arc::new(Shared {
            function_name: function_name.to_string(),
            state: Mutex::default(),
            queued: Notify::new(),
            idle_pollers: AtomicUsize::new(0),
            deadline_ms: AtomicU64::new(DEFAULT_DEADLINE.as_millis() as u64),
        });
        let server = tokio::spawn(serve(listener, shared.clone()));
        Ok(RuntimeApi {
            shared,
            addr,
            server,
        })
    }

    /// The value for `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn function_name(&self) -> &str {
        &self.shared.function_name
    }

    /// Processes currently waiting in `next`, i.e. initialised and free for an invocation.
    pub fn idle_pollers(&self) -> usize {
        self.shared.idle_pollers.load(Ordering::SeqCst)
    }

    /// The time each invocation handed out from now on gets before its deadline (Lambda's
    /// function timeout): `Lambda-Runtime-Deadline-Ms` = hand-out time + `timeout`.
    pub fn set_deadline(&self, timeout: Duration) {
        self.shared
            .deadline_ms
            .store(timeout.as_millis() as u64, Ordering::SeqCst);
    }

    /// What the function reported on `init/error`, if it did.
    pub fn init_error(&self) -> Option<Outcome> {
        self.shared.lock().init_error.clone()
    }

    /// Queues `payload` for the next free process and waits for its answer. A function
    /// error is an `Ok` with [`Outcome::Error`]; no answer within `timeout` is an `Err`.
    pub async fn invoke(
        &self,
        payload: Value,
        timeout: Duration,
    ) -> Result<Invocation, HarnessError> {
        self.shared.invoke(payload, timeout).await
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The lock is never held across an await or a panic-prone call; a poisoned
        // lock would still hold consistent data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn invoke(&self, payload: Value, timeout: Duration) -> Result<Invocation, HarnessError> {
        let started = Instant::now();
        let request_id = new_request_id();
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.lock();
            if let Some(error) = &state.init_error {
                return Ok(Invocation {
                    request_id,
                    outcome: error.clone(),
                    elapsed: started.elapsed(),
                });
            }
            state.waiting.insert(request_id.clone(), tx);
            state.queue.push_back(Queued {
                request_id: request_id.clone(),
                payload: payload.to_string().into_bytes(),
            });
        }
        self.queued.notify_waiters();
        let answer = tokio::time::timeout(timeout, rx).await;
        if let Ok(Ok(outcome)) = answer {
            return Ok(Invocation {
                request_id,
                outcome,
                elapsed: started.elapsed(),
            });
        }
        // Withdraw it, so no process picks up an event nobody waits for; a late answer
        // then gets 410 Gone, as on Lambda.
        let mut state = self.lock();
        state.waiting.remove(&request_id);
        state.queue.retain(|q| q.request_id != request_id);
        Err(HarnessError::Timeout {
            what: format!(
                "invocation {request_id} of `{}` got no response ({} process(es) idle in `next`)",
                self.function_name,
                self.idle_pollers.load(Ordering::SeqCst)
            ),
            after: timeout,
        })
    }

    /// Waits for an event; `None` if the polling process hangs up first, so a dead
    /// process never swallows an invocation.
    async fn next_invocation(&self, reader: &mut BufReader<OwnedReadHalf>) -> Option<Queued> {
        self.idle_pollers.fetch_add(1, Ordering::SeqCst);
        let _idle = DecrementOnDrop(&self.idle_pollers);
        loop {
            // Registered before looking at the queue, so a push in between still wakes us.
            let mut queued = pin!(self.queued.notified());
            queued.as_mut().enable();
            if let Some(event) = self.lock().queue.pop_front() {
                return Some(event);
            }
            tokio::select! {
                _ = queued.as_mut() => {}
                read = reader.fill_buf() => {
                    if !matches!(read, Ok(bytes) if !bytes.is_empty()) {
                        return None;
                    }
                    // A pipelined request: it is read after this one is answered.
                    queued.await;
                }
            }
        }
    }

    fn complete(&self, request_id: &str, outcome: Outcome) -> Reply {
        match self.lock().waiting.remove(request_id) {
            Some(tx) => {
                let _ = tx.send(outcome);
                json_reply(202, json!({"status": "OK"}))
            }
            None => json_reply(
                410,
                json!({"errorType": "InvalidRequestID", "errorMessage": format!("request {request_id} is unknown, timed out or already answered")}),
            ),
        }
    }

    fn fail_init(&self, error: Outcome) {
        let mut state = self.lock();
        state.queue.clear();
        for (_, tx) in state.waiting.drain() {
            let _ = tx.send(error.clone());
        }
        state.init_error = Some(error);
    }

    fn requeue(&self, event: Queued) {
        self.lock().queue.push_front(event);
        self.queued.notify_waiters();
    }

    fn next_reply(&self, event: Queued) -> Reply {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let timeout = Duration::from_millis(self.deadline_ms.load(Ordering::SeqCst));
        let deadline_ms = (now + timeout).as_millis();
        let trace_id = format!(
            "Root=1-{:08x}-{:024x};Parent={:016x};Sampled=0",
            now.as_secs(),
            now.as_nanos() & ((1 << 96) - 1),
            now.subsec_nanos()
        );
        Reply {
            status: 200,
            headers: vec![
                ("Content-Type", "application/json".to_string()),
                ("Lambda-Runtime-Aws-Request-Id", event.request_id.clone()),
                ("Lambda-Runtime-Deadline-Ms", deadline_ms.to_string()),
                (
                    "Lambda-Runtime-Invoked-Function-Arn",
                    format!(
                        "arn:aws:lambda:us-east-1:123456789012:function:{}",
                        self.function_name
                    ),
                ),
                ("Lambda-Runtime-Trace-Id", trace_id),
            ],
            body: event.payload.clone(),
            handed_out: Some(event),
        }
    }
}

struct DecrementOnDrop<'a>(&'a AtomicUsize);

impl Drop for DecrementOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn new_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // UUID-shaped, like Lambda's; unique within this test process.
    format!(
        "{nanos:08x}-{:04x}-4000-8000-{n:012x}",
        std::process::id() & 0xffff
    )
}

fn json_reply(status: u16, body: Value) -> Reply {
    Reply {
        status,
        headers: vec![("Content-Type", "application/json".to_string())],
        body: body.to_string().into_bytes(),
        handed_out: None,
    }
}

fn json_or_string(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// Reads the runtime's `{"errorType", "errorMessage"}` body, tolerating anything else.
fn error_outcome(body: &[u8]) -> Outcome {
    let value = json_or_string(body);
    let field = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_string);
    Outcome::Error {
        error_type: field("errorType").unwrap_or_else(|| "Unknown".to_string()),
        message: field("errorMessage").unwrap_or_else(|| value.to_string()),
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    // Connection tasks live in this JoinSet, so aborting this task ends them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, shared.clone()));
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

/// Serves requests on one connection until the client closes it: the Rust runtime's
/// hyper client keeps connections alive and long-polls `next` on them.
async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    loop {
        let Ok(Some(head)) = read_head(&mut reader).await else {
            return;
        };
        let Ok(body) = read_body(&mut reader, &head, false).await else {
            return;
        };
        let mut start = head.start_line.split_whitespace();
        let (method, target, version) = (
            start.next().unwrap_or_default(),
            start.next().unwrap_or_default(),
            start.next().unwrap_or_default(),
        );
        let close = version == "HTTP/1.0"
            || head
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let Some(reply) = route(&shared, method, target, &body, &mut reader).await else {
            return;
        };
        let sent = write_response(
            &mut writer,
            reply.status,
            &reply.headers,
            &reply.body,
            close,
        )
        .await;
        if sent.is_err() {
            if let Some(event) = reply.handed_out {
                shared.requeue(event);
            }
            return;
        }
        if close {
            return;
        }
    }
}

async fn route(
    shared: &Shared,
    method: &str,
    target: &str,
    body: &[u8],
    reader: &mut BufReader<OwnedReadHalf>,
) -> Option<Reply> {
    let path = target.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let reply = match (method, segments.as_slice()) {
        ("GET", ["2018-06-01", "runtime", "invocation", "next"]) => {
            let event = shared.next_invocation(reader).await?;
            shared.next_reply(event)
        }
        ("POST", ["2018-06-01", "runtime", "invocation", id, "response"]) => {
            shared.complete(id, Outcome::Response(json_or_string(body)))
        }
        ("POST", ["2018-06-01", "runtime", "invocation", id, "error"]) => {
            shared.complete(id, error_outcome(body))
        }
        ("POST", ["2018-06-01", "runtime", "init", "error"]) => {
            shared.fail_init(error_outcome(body));
            json_reply(202, json!({"status": "OK"}))
        }
        // The Invoke API, for callers that speak HTTP (curl, an SDK, another function).
        ("POST", ["2015-03-31", "functions", _, "invocations"]) => {
            invoke_over_http(shared, body).await
        }
        _ => json_reply(
            404,
            json!({"errorType": "NotFound", "errorMessage": format!("no route for {method} {path}")}),
        ),
    };
    Some(reply)
}

async fn invoke_over_http(shared: &Shared, body: &[u8]) -> Reply {
    let payload = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(body) {
            Ok(payload) => payload,
            Err(e) => {
                return json_reply(
                    400,
                    json!({"Type": "User", "message": format!("Could not parse request body into json: {e}")}),
                )
            }
        }
    };
    let (error_type, message) = match shared.invoke(payload, Duration::from_secs(60)).await {
        Ok(Invocation {
            outcome: Outcome::Response(value),
            ..
        }) => return json_reply(200, value),
        Ok(Invocation {
            outcome:
                Outcome::Error {
                    error_type,
                    message,
                },
            ..
        }) => (error_type, message),
        Err(e) => ("Sandbox.Timedout".to_string(), e.to_string()),
    };
    // Like Lambda: a function error is still HTTP 200, flagged by a header.
    let mut reply = json_reply(
        200,
        json!({"errorType": error_type, "errorMessage": message}),
    );
    reply
        .headers
        .push(("X-Amz-Function-Error", "Unhandled".to_string()));
    reply
}
