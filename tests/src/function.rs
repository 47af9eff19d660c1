//! Function binaries as Lambda runs them: a clean environment, the Runtime API address,
//! and logs captured for assertions.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::oneshot;

use crate::runtime_api::{Invocation, RuntimeApi};
use crate::{io_err, HarnessError};

type Shared<T> = Arc<Mutex<T>>;

/// One running process of a function binary; killed on drop.
pub struct FunctionProcess {
    pid: u32,
    logs: Shared<Vec<u8>>,
    exit: Shared<Option<ExitStatus>>,
    // Dropping the sender tells the supervising task to kill the process.
    _kill: oneshot::Sender<()>,
}

impl FunctionProcess {
    /// Starts `bin` against the Runtime API at `runtime_api`. The environment is cleared
    /// (keeping PATH and HOME) so the developer's own AWS credentials never leak in;
    /// `env` comes last and may override the Lambda defaults. Needs a Tokio runtime.
    pub fn spawn(
        bin: &Path,
        name: &str,
        runtime_api: &str,
        env: &[(String, String)],
    ) -> Result<FunctionProcess, HarnessError> {
        let mut cmd = Command::new(bin);
        cmd.env_clear();
        for key in ["PATH", "HOME"] {
            if let Some(value) = std::env::var_os(key) {
                cmd.env(key, value);
            }
        }
        cmd.env("AWS_LAMBDA_RUNTIME_API", runtime_api)
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
            .envs([crate::clock::env()])
            // Names the caller in moto's request recording (`app/<function>` in the user agent).
            .env("AWS_SDK_UA_APP_ID", name)
            // The test clusters' certificates chain to the test CA, as RDS's to the RDS roots.
            .env(
                "NBAOPS_PG__CA_BUNDLE_PATH",
                crate::postgres::tls_dir().join("ca.pem"),
            )
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(io_err(format!("start function binary {}", bin.display())))?;
        let pid = child
            .id()
            .ok_or_else(|| HarnessError::Setup(format!("{} exited at once", bin.display())))?;

        let logs = Shared::default();
        if let Some(out) = child.stdout.take() {
            tokio::spawn(capture(out, Arc::clone(&logs)));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(capture(err, Arc::clone(&logs)));
        }
        let exit = Shared::default();
        let (kill, killed) = oneshot::channel::<()>();
        let exit_slot = Arc::clone(&exit);
        tokio::spawn(async move {
            let status = tokio::select! {
                status = child.wait() => status,
                _ = killed => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            if let Ok(status) = status {
                *exit_slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(status);
            }
        });
        Ok(FunctionProcess {
            pid,
            logs,
            exit,
            _kill: kill,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Everything the process wrote to stdout and stderr so far, line-interleaved.
    pub fn logs(&self) -> String {
        String::from_utf8_lossy(&self.logs.lock().unwrap_or_else(PoisonError::into_inner))
            .into_owned()
    }

    /// `Some` once the process has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.exit.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn capture(stream: impl AsyncRead + Unpin, logs: Shared<Vec<u8>>) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    // Whole lines, so stdout and stderr interleave without splitting a JSON log line.
    while reader
        .read_until(b'\n', &mut line)
        .await
        .is_ok_and(|n| n > 0)
    {
        logs.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(&line);
        line.clear();
    }
}

/// Peak resident set size (VmHWM) of a live process, in kB; Linux only.
pub fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A function under test: its own Runtime API plus `instances` processes polling it.
pub struct FunctionUnderTest {
    // Declared first so the processes go before the API they poll.
    procs: Vec<FunctionProcess>,
    api: RuntimeApi,
}

impl FunctionUnderTest {
    /// The function's name, which is also the task of its own schedule (`{"nbaops": {"task": "pg-health"}}`).
    pub fn name(&self) -> &str {
        self.api.function_name()
    }

    /// Starts the processes and waits (up to 30 s) until each has finished its init and
    /// is polling for events, so a broken init fails here with its logs, not at invoke.
    pub async fn start(
        bin: &Path,
        name: &str,
        env: &[(String, String)],
        instances: usize,
    ) -> Result<FunctionUnderTest, HarnessError> {
        let api = RuntimeApi::start(name).await?;
        let procs = (0..instances)
            .map(|_| FunctionProcess::spawn(bin, name, &api.address(), env))
            .collect::<Result<Vec<_>, _>>()?;
        let function = FunctionUnderTest { procs, api };
        let timeout = Duration::from_secs(30);
        let started = Instant::now();
        while function.api.idle_pollers() < instances {
            let exited = function.procs.iter().any(|p| p.exit_status().is_some());
            if exited || function.api.init_error().is_some() || started.elapsed() > timeout {
                return Err(HarnessError::Setup(format!(
                    "function `{name}` did not get ready ({} of {instances} polling after {:?}; {}); logs:\n{}",
                    function.api.idle_pollers(),
                    started.elapsed(),
                    function.status(),
                    function.logs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(function)
    }

    /// Invokes through the Runtime API; a timeout error carries the processes' state and logs.
    pub async fn invoke(
        &self,
        payload: Value,
        timeout: Duration,
    ) -> Result<Invocation, HarnessError> {
        match self.api.invoke(payload, timeout).await {
            Err(HarnessError::Timeout { what, after }) => Err(HarnessError::Timeout {
                what: format!("{what}; {}; logs:\n{}", self.status(), self.logs()),
                after,
            }),
            other => other,
        }
    }

    /// Invokes and expects a response: a function error becomes an error carrying its logs, and
    /// so does a decision in the response whose sentence does not explain it
    /// ([`crate::explain::check_sentence`]): every e2e test checks every decision it makes.
    pub async fn invoke_ok(&self, payload: Value) -> Result<Value, HarnessError> {
        match self.invoke(payload, Duration::from_secs(30)).await?.outcome {
            crate::runtime_api::Outcome::Response(v) => {
                crate::explain::check_response(&v).map_err(HarnessError::Setup)?;
                Ok(v)
            }
            crate::runtime_api::Outcome::Error {
                error_type,
                message,
            } => Err(HarnessError::Setup(format!(
                "function failed: {error_type}: {message}\n{}",
                self.logs()
            ))),
        }
    }

    /// All processes' output; with several instances, each under a `--- pid N ---` header.
    pub fn logs(&self) -> String {
        match self.procs.as_slice() {
            [single] => single.logs(),
            procs => procs
                .iter()
                .map(|p| format!("--- pid {} ---\n{}", p.pid(), p.logs()))
                .collect(),
        }
    }

    pub fn processes(&self) -> &[FunctionProcess] {
        &self.procs
    }

    pub fn api(&self) -> &RuntimeApi {
        &self.api
    }

    fn status(&self) -> String {
        let procs: Vec<String> = self
            .procs
            .iter()
            .map(|p| match p.exit_status() {
                Some(status) => format!("pid {} exited ({status})", p.pid()),
                None => format!("pid {} running", p.pid()),
            })
            .collect();
        let init = match self.api.init_error() {
            Some(error) => format!("; init error: {error:?}"),
            None => String::new(),
        };
        format!("{}{init}", procs.join(", "))
    }
}
