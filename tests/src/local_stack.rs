//! The local stack that stays up: `make up` starts the emulator (moto and the CloudWatch CBOR
//! bridge) and PostgreSQL once, seeds the platform as `make invoke` does, writes a state file and
//! returns; `make invoke` then starts only the function binary against it; `make down` stops it.
//!
//! The CBOR bridge is in-process Rust and moto/PostgreSQL are owned by the harness's `Moto` and
//! `Postgres` values (they stop them on drop), so one long-running process holds the whole
//! [`Stack`]: `nbaops-local serve`, started by `up` in its own process group so it outlives `make`.
//! It writes `state.json` (pids with their start times, endpoints, the platform, the clock) and
//! `env` (a file to `source` for `cargo lambda watch`, the AWS CLI or psql), then waits for
//! SIGTERM/SIGINT and drops the stack. `down` signals only processes it can prove are the ones
//! `up` started: the pid recorded *and* the start time /proc gives for it, so a recycled pid is
//! never signalled.
//!
//! The state directory is `target/local-stack` unless `NBAOPS_LOCAL_STACK_DIR` names another:
//! tests use a private one and never touch a developer's stack.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::demo::{local_env_for, print_invocation, Stack};
use crate::function::FunctionUnderTest;
use crate::platform::Platform;
use crate::{function_binary, io_err, log_tail, workspace_root, HarnessError};

/// Overrides the state directory (tests: a private one per run).
pub const STATE_DIR_VAR: &str = "NBAOPS_LOCAL_STACK_DIR";
const STATE_FILE: &str = "state.json";
const ENV_FILE: &str = "env";
const LOG_FILE: &str = "stack.log";
/// Starting moto, PostgreSQL (initdb, infra/sql) and the platform takes 10–20 s on 2 cores.
const UP_TIMEOUT: Duration = Duration::from_secs(180);
const DOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// `$NBAOPS_LOCAL_STACK_DIR`, else `<target>/local-stack`.
pub fn state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(STATE_DIR_VAR) {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| workspace_root().join(d))
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("local-stack")
}

/// A process `up` started: its pid and its start time in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`), which together name it even after the pid is reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proc {
    pub pid: u32,
    pub start_ticks: u64,
}

impl Proc {
    pub fn of(pid: u32) -> Option<Proc> {
        start_ticks(pid).map(|start_ticks| Proc { pid, start_ticks })
    }

    /// Whether this very process still runs (not a zombie, not another process on its pid).
    pub fn alive(&self) -> bool {
        start_ticks(self.pid) == Some(self.start_ticks)
    }
}

/// Start time of `pid` in ticks since boot; `None` when there is no such (live) process.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parens: the fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state): a zombie has exited and only waits for its parent.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// What `up` leaves for `invoke` and `down` (`state.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StackState {
    /// `nbaops-local serve`: holds the stack, drops it on SIGTERM.
    pub holder: Proc,
    pub moto: Proc,
    pub postmaster: Option<Proc>,
    pub moto_endpoint: String,
    pub cloudwatch_endpoint: String,
    pub pg_port: Option<u16>,
    /// Temp dirs of moto and PostgreSQL: the holder removes them; `down` too if the holder died.
    pub dirs: Vec<PathBuf>,
    /// The AWS variables of the emulator (endpoints, dummy credentials, region).
    pub aws_env: Vec<(String, String)>,
    pub platform: Platform,
    /// The stack's clock (moto runs under freezegun on it) at `wall_ms`, the system time in ms
    /// since the epoch when it was read: a later process continues this clock by the time
    /// elapsed since, so its functions and moto agree even when the stack runs on a test clock.
    pub clock_at: String,
    pub wall_ms: u128,
}

impl StackState {
    /// The stack's clock now, as `NBAOPS_TEST_NOW` for a process started now.
    pub fn clock_now(&self) -> Result<String, HarnessError> {
        let at = nbaops_shared::clock::parse(&self.clock_at)
            .ok_or_else(|| HarnessError::Setup(format!("state: bad clock {}", self.clock_at)))?;
        let elapsed = wall_ms().saturating_sub(self.wall_ms);
        let elapsed = i64::try_from(elapsed).unwrap_or(0);
        Ok((at + chrono::Duration::milliseconds(elapsed))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    }

    /// The environment `function` gets on this stack (as in the demo).
    pub fn env_for(&self, function: &str) -> Vec<(String, String)> {
        local_env_for(&self.aws_env, &self.platform, self.pg_port, function, &[])
    }

    /// Every process this stack consists of, holder first.
    pub fn procs(&self) -> Vec<Proc> {
        let mut all = vec![self.holder, self.moto];
        all.extend(self.postmaster);
        all
    }

    /// The TCP ports the stack listens on (moto, the CBOR bridge, PostgreSQL).
    pub fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = [&self.moto_endpoint, &self.cloudwatch_endpoint]
            .iter()
            .filter_map(|e| e.rsplit(':').next()?.parse().ok())
            .collect();
        ports.extend(self.pg_port);
        ports
    }
}

fn wall_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Reads `dir/state.json`; `None` when there is none.
pub fn read_state(dir: &Path) -> Result<Option<StackState>, HarnessError> {
    let path = dir.join(STATE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| HarnessError::Setup(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(format!("read {}", path.display()))(e)),
    }
}

/// The stack in `dir` when its state file is there, its processes are the ones it names and
/// every endpoint answers; `None` otherwise (with the reason on stderr when a state file was found).
pub async fn live(dir: &Path) -> Result<Option<StackState>, HarnessError> {
    let Some(state) = read_state(dir)? else {
        return Ok(None);
    };
    match not_live_because(&state).await {
        None => Ok(Some(state)),
        Some(why) => {
            eprintln!(
                "nbaops-local: the local stack in {} is not up ({why}): starting a private one",
                dir.display()
            );
            Ok(None)
        }
    }
}

async fn not_live_because(state: &StackState) -> Option<String> {
    if let Some(p) = state.procs().iter().find(|p| !p.alive()) {
        return Some(format!("process {} is gone", p.pid));
    }
    let url = format!("{}/moto-api/", state.moto_endpoint);
    match tokio::time::timeout(
        Duration::from_secs(2),
        crate::http::http("GET", &url, None, &[]),
    )
    .await
    {
        Ok(Ok((200, _))) => {}
        _ => return Some(format!("{url} does not answer")),
    }
    for port in state.ports() {
        let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
        if !matches!(
            tokio::time::timeout(Duration::from_secs(2), connect).await,
            Ok(Ok(_))
        ) {
            return Some(format!("nothing listens on 127.0.0.1:{port}"));
        }
    }
    None
}

/// `make invoke` on the stack that is up: only the function binary starts, on the stack's clock.
pub async fn invoke(
    state: &StackState,
    function: &str,
    payload: Value,
) -> Result<i32, HarnessError> {
    // Before anything reads the harness clock in this process: the function continues the stack's.
    std::env::set_var(crate::clock::TEST_NOW_VAR, state.clock_now()?);
    eprintln!(
        "nbaops-local: on the local stack of `make up` ({}; make down stops it)",
        state.moto_endpoint
    );
    let f = FunctionUnderTest::start(
        &function_binary(function)?,
        function,
        &state.env_for(function),
        1,
    )
    .await?;
    print_invocation(function, &f, payload).await
}

/// `nbaops-local up`: starts the holder unless the stack is already up, waits for its state file
/// and prints the endpoints. Returns the exit code.
pub async fn up() -> Result<i32, HarnessError> {
    let dir = state_dir();
    if let Some(state) = live(&dir).await? {
        println!("the local stack is already up");
        print_endpoints(&dir, &state);
        return Ok(0);
    }
    // A stale state (holder gone): clear what is left of it first.
    if read_state(&dir)?.is_some() {
        down_in(&dir)?;
    }
    std::fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
    let log_path = dir.join(LOG_FILE);
    let log = std::fs::File::create(&log_path)
        .map_err(io_err(format!("create {}", log_path.display())))?;
    let log_err = log.try_clone().map_err(io_err("clone the log handle"))?;
    let exe = std::env::current_exe().map_err(io_err("locate nbaops-local"))?;
    let mut holder = {
        use std::os::unix::process::CommandExt;
        Command::new(&exe)
            .arg("serve")
            .env(STATE_DIR_VAR, &dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group: a Ctrl-C at the terminal or the end of `make` does not reach it.
            .process_group(0)
            .spawn()
            .map_err(io_err(format!("start {} serve", exe.display())))?
    };
    let started = Instant::now();
    loop {
        if let Some(state) = read_state(&dir)? {
            print_endpoints(&dir, &state);
            return Ok(0);
        }
        if let Ok(Some(status)) = holder.try_wait() {
            return Err(HarnessError::Setup(format!(
                "the local stack did not start ({status}); {}:\n{}",
                log_path.display(),
                log_tail(&log_path, 30)
            )));
        }
        if started.elapsed() > UP_TIMEOUT {
            let _ = holder.kill();
            let _ = holder.wait();
            return Err(HarnessError::Timeout {
                what: format!(
                    "the local stack's state file; {}:\n{}",
                    log_path.display(),
                    log_tail(&log_path, 30)
                ),
                after: UP_TIMEOUT,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_endpoints(dir: &Path, state: &StackState) {
    println!(
        "emulator (AWS_ENDPOINT_URL)                 : {}",
        state.moto_endpoint
    );
    println!(
        "CloudWatch (AWS_ENDPOINT_URL_CLOUDWATCH)    : {}",
        state.cloudwatch_endpoint
    );
    if let Some(port) = state.pg_port {
        println!("postgresql (TLS, roles as on RDS)           : 127.0.0.1:{port}, database app");
    }
    println!(
        "clock                                       : {}",
        state.clock_at
    );
    println!(
        "state                                       : {}",
        dir.join(STATE_FILE).display()
    );
    println!(
        "environment                                 : source {}",
        dir.join(ENV_FILE).display()
    );
    println!("stop it with                                : make down");
}

/// `nbaops-local serve` (started by `up`): holds the stack until SIGTERM or SIGINT.
pub async fn serve() -> Result<i32, HarnessError> {
    use tokio::signal::unix::{signal, SignalKind};
    let dir = state_dir();
    // Listen before the stack exists, so a `down` racing `up` still stops it cleanly.
    let mut term = signal(SignalKind::terminate()).map_err(io_err("listen for SIGTERM"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io_err("listen for SIGINT"))?;
    // The terminal that ran `make up` may close: that is no reason to stop.
    let mut hup = signal(SignalKind::hangup()).map_err(io_err("listen for SIGHUP"))?;
    let stack = Stack::start(true).await?;
    let state = describe(&stack)?;
    write_files(&dir, &state, &stack)?;
    eprintln!("local stack up: {}", stack.moto.endpoint);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => continue,
        }
    }
    eprintln!("local stack: stopping");
    drop(stack);
    Ok(0)
}

fn describe(stack: &Stack) -> Result<StackState, HarnessError> {
    let me = Proc::of(std::process::id())
        .ok_or_else(|| HarnessError::Setup("cannot read /proc/self/stat".into()))?;
    let moto = Proc::of(stack.moto.pid())
        .ok_or_else(|| HarnessError::Setup("moto_server is not running".into()))?;
    let postmaster = match &stack.postgres {
        Some(pg) => Some(
            crate::postgres::postmaster_pid(&pg.data_dir)
                .and_then(Proc::of)
                .ok_or_else(|| HarnessError::Setup("no postmaster pid".into()))?,
        ),
        None => None,
    };
    let mut dirs = vec![stack.moto.dir().to_path_buf()];
    dirs.extend(stack.postgres.as_ref().map(|pg| pg.dir.clone()));
    Ok(StackState {
        holder: me,
        moto,
        postmaster,
        moto_endpoint: stack.moto.endpoint.clone(),
        cloudwatch_endpoint: stack.moto.cloudwatch.endpoint.clone(),
        pg_port: stack.postgres.as_ref().map(|pg| pg.port),
        dirs,
        aws_env: stack.aws_env(),
        platform: stack.platform.clone(),
        clock_at: crate::clock::env().1,
        wall_ms: wall_ms(),
    })
}

/// Single-quoted for a POSIX shell.
fn sh_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}

/// `env`: what a shell needs to reach the stack (`source` it), then `state.json`, last and by
/// rename, so a reader never sees half a state and `up` returns only once both are there.
fn write_files(dir: &Path, state: &StackState, stack: &Stack) -> Result<(), HarnessError> {
    let mut env = String::from(
        "# The local stack (make up). `source` this file, then cargo lambda watch / invoke, the AWS\n\
         # CLI or psql reach it. Written by nbaops-local; removed by make down.\n",
    );
    let mut pairs = state.env_for("");
    pairs.push((
        "NBAOPS_PG__CA_BUNDLE_PATH".into(),
        crate::postgres::tls_dir()
            .join("ca.pem")
            .display()
            .to_string(),
    ));
    if let Some(pg) = &stack.postgres {
        // psql as the cluster's superuser (trust on loopback): the stack's own set-up role.
        pairs.extend([
            ("PGHOST".into(), "127.0.0.1".into()),
            ("PGPORT".into(), pg.port.to_string()),
            ("PGUSER".into(), "postgres".into()),
            ("PGDATABASE".into(), "app".into()),
        ]);
    }
    for (k, v) in &pairs {
        env.push_str(&format!("export {k}={}\n", sh_quote(v)));
    }
    write_atomic(&dir.join(ENV_FILE), env.as_bytes())?;
    write_atomic(&dir.join(STATE_FILE), &serde_json::to_vec_pretty(state)?)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), HarnessError> {
    let tmp = path.with_extension("tmp");
    std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(io_err(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io_err(format!("rename to {}", path.display())))
}

/// `nbaops-local down`: stops what `up` started, removes the state. Idempotent.
pub fn down() -> Result<i32, HarnessError> {
    let dir = state_dir();
    if read_state(&dir)?.is_none() {
        println!("no local stack in {}", dir.display());
        return Ok(0);
    }
    down_in(&dir)?;
    println!("local stack stopped");
    Ok(0)
}

fn down_in(dir: &Path) -> Result<(), HarnessError> {
    let Some(state) = read_state(dir)? else {
        return Ok(());
    };
    // The holder stops moto and PostgreSQL and removes their dirs as it drops the stack.
    if state.holder.alive() {
        signal(state.holder, "TERM")?;
        wait_gone(&[state.holder], DOWN_TIMEOUT);
    }
    // Whatever is still running (the holder was killed, or did not finish): stop it ourselves.
    // PostgreSQL: SIGQUIT is its immediate shutdown.
    let stragglers: Vec<(Proc, &str)> = [(state.holder, "KILL"), (state.moto, "KILL")]
        .into_iter()
        .chain(state.postmaster.map(|p| (p, "QUIT")))
        .filter(|(p, _)| p.alive())
        .collect();
    for (p, sig) in &stragglers {
        signal(*p, sig)?;
    }
    let left: Vec<Proc> = stragglers.iter().map(|(p, _)| *p).collect();
    if !wait_gone(&left, DOWN_TIMEOUT) {
        return Err(HarnessError::Setup(format!(
            "the local stack's processes {:?} did not stop; state kept in {}",
            left.iter()
                .filter(|p| p.alive())
                .map(|p| p.pid)
                .collect::<Vec<_>>(),
            dir.display()
        )));
    }
    for d in &state.dirs {
        if d.exists() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    for f in [STATE_FILE, ENV_FILE] {
        match std::fs::remove_file(dir.join(f)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_err(format!("remove {}", dir.join(f).display()))(e))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Sends `sig` to `p` only if it is still the process we started.
fn signal(p: Proc, sig: &str) -> Result<(), HarnessError> {
    if !p.alive() {
        return Ok(());
    }
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(p.pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(io_err("run kill"))?;
    // It may have exited between the check and the signal: that is what we want anyway.
    if !status.success() && p.alive() {
        return Err(HarnessError::Setup(format!(
            "kill -{sig} {} failed ({status})",
            p.pid
        )));
    }
    Ok(())
}

/// Waits until none of `procs` runs; false after `timeout`.
fn wait_gone(procs: &[Proc], timeout: Duration) -> bool {
    let started = Instant::now();
    while procs.iter().any(Proc::alive) {
        if started.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = Proc::of(std::process::id()).unwrap();
        assert!(me.alive());
        let impostor = Proc {
            pid: me.pid,
            start_ticks: me.start_ticks + 1,
        };
        assert!(!impostor.alive());
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
        assert_eq!(sh_quote(r#"{"x":1}"#), r#"'{"x":1}'"#);
    }
}
