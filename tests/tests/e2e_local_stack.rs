//! `make up` / `make invoke` / `make down` end to end: the real `nbaops-local` binary with a private
//! state dir (never a developer's stack) on the test clock. Two invocations go through the stack
//! that stays up — the second sees the ledger the first wrote — and `down` leaves no process of the
//! stack running and none of its ports open.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};

use nbaops_tests::local_stack::{self, StackState, STATE_DIR_VAR};
use nbaops_tests::platform::{self, Clients};
use nbaops_tests::{clock, function_binary, workspace_root};
use serde_json::Value;

const EVENT: &str = "events/cloudwatch-alarm/eventbridge-single-metric-alarm.json";

fn local(dir: &Path, args: &[&str]) -> Output {
    Command::new(function_binary("nbaops-local").unwrap())
        .args(args)
        .env(STATE_DIR_VAR, dir)
        .envs([clock::env()])
        .current_dir(workspace_root())
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn action(v: &Value) -> (&str, Option<&str>) {
    let a = &v["records"][0]["actions"][0];
    (
        a["outcome"].as_str().unwrap_or(""),
        a["stopped_by"].as_str(),
    )
}

fn port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Stops the stack even when an assertion fails half-way.
struct Down<'a>(&'a Path);
impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = local(self.0, &["down"]);
        let _ = std::fs::remove_dir_all(self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_invoke_twice_down() {
    let dir = std::env::temp_dir().join(format!("nbaops-local-stack-{}", std::process::id()));
    let _down = Down(&dir);

    let printed = ok(&local(&dir, &["up"]));
    let state: StackState = local_stack::read_state(&dir).unwrap().expect("state.json");
    assert!(printed.contains(&state.moto_endpoint), "{printed}");
    assert!(printed.contains(&state.cloudwatch_endpoint), "{printed}");
    let env = std::fs::read_to_string(dir.join("env")).unwrap();
    assert!(
        env.contains(&format!(
            "export AWS_ENDPOINT_URL='{}'",
            state.moto_endpoint
        )),
        "{env}"
    );
    assert!(
        env.contains("export NBAOPS_LEDGER_TABLE='nbaops-dev-ledger'"),
        "{env}"
    );
    assert!(local_stack::live(&dir).await.unwrap().is_some());
    let procs = state.procs();
    assert_eq!(procs.len(), 3, "holder, moto, postmaster: {procs:?}");
    assert!(procs.iter().all(|p| p.alive()));

    // A second `up` finds it up and starts nothing.
    let again = ok(&local(&dir, &["up"]));
    assert!(again.contains("already up"), "{again}");
    assert_eq!(
        local_stack::read_state(&dir).unwrap().unwrap().holder,
        state.holder
    );

    // Two invocations through the stack: the first scales out, the second is the same event and
    // the ledger the first wrote stops it.
    let first: Value =
        serde_json::from_str(&ok(&local(&dir, &["invoke", "scale-on-alarm", EVENT]))).unwrap();
    assert_eq!(action(&first), ("acted", None), "{first}");
    let second: Value =
        serde_json::from_str(&ok(&local(&dir, &["invoke", "scale-on-alarm", EVENT]))).unwrap();
    assert_eq!(
        action(&second),
        ("skipped", Some("idempotency")),
        "{second}"
    );
    // And the emulator the stack holds did change.
    let clients = Clients::new(&state.moto_endpoint, &state.cloudwatch_endpoint).await;
    assert_eq!(
        platform::group_view(&clients, platform::WEB)
            .await
            .unwrap()
            .desired,
        3
    );
    let counts = platform::ledger_counts(&clients).await.unwrap();
    assert!(counts.get("audit").copied().unwrap_or(0) >= 2, "{counts:?}");

    let stopped = ok(&local(&dir, &["down"]));
    assert!(stopped.contains("stopped"), "{stopped}");
    for p in &procs {
        assert!(!p.alive(), "process {} still runs after down", p.pid);
    }
    for port in state.ports() {
        assert!(!port_open(port), "port {port} still open after down");
    }
    for d in &state.dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    assert!(local_stack::read_state(&dir).unwrap().is_none());
    assert!(!dir.join("env").exists());

    // Idempotent.
    let twice = ok(&local(&dir, &["down"]));
    assert!(twice.contains("no local stack"), "{twice}");

    // A state file whose processes are gone is not a stack: invoke would start its own.
    std::fs::write(dir.join("state.json"), serde_json::to_vec(&state).unwrap()).unwrap();
    assert!(local_stack::live(&dir).await.unwrap().is_none());
    // ...and down clears it without signalling anything.
    ok(&local(&dir, &["down"]));
    assert!(local_stack::read_state(&dir).unwrap().is_none());
}
