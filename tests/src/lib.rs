//! End-to-end test harness: real function binaries against a local Lambda Runtime API,
//! moto (AWS) and throwaway PostgreSQL clusters.

// Failures must reach the test as errors with context, never as a panic in the harness.
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod approval;
pub mod bench;
pub mod bench_fleet;
pub mod bench_fn;
pub mod bench_pg;
pub mod bench_replay;
pub mod cbor_bridge;
pub mod clock;
pub mod demo;
pub mod esm;
pub mod explain;
pub mod faultproxy;
pub mod function;
pub mod http;
pub mod local_stack;
pub mod moto;
pub mod platform;
pub mod ports;
pub mod postgres;
pub mod posture;
pub mod runtime_api;
pub mod scenes;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}):\n{output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
    #[error("{0}")]
    Setup(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("timed out after {after:?}: {what}")]
    Timeout { what: String, after: Duration },
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let context = context.into();
    move |source| HarnessError::Io { context, source }
}

/// The directory whose Cargo.toml has a `[workspace]` table, or this crate's own
/// directory when it is not part of a workspace.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|toml| {
                toml.lines()
                    .any(|line| line.trim_start().starts_with("[workspace"))
            })
        })
        .unwrap_or(manifest_dir)
        .to_path_buf()
}

/// Path of a workspace binary built by `cargo build --workspace --bins`.
pub fn function_binary(name: &str) -> Result<PathBuf, HarnessError> {
    let root = workspace_root();
    let mut target_dirs = Vec::new();
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        target_dirs.push(root.join(dir)); // join keeps an absolute path as is
    }
    // A test executable lives in <target>/debug/deps: this also finds a target dir set
    // in .cargo/config.toml, which cargo does not pass on to tests.
    if let Ok(exe) = std::env::current_exe() {
        if let Some(target) = exe.ancestors().nth(3).filter(|_| {
            exe.parent()
                .is_some_and(|deps| deps.file_name() == Some("deps".as_ref()))
        }) {
            target_dirs.push(target.to_path_buf());
        }
    }
    target_dirs.push(root.join("target"));
    let candidates: Vec<PathBuf> = target_dirs
        .iter()
        .map(|dir| dir.join("debug").join(name))
        .collect();
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .ok_or_else(|| {
            let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            HarnessError::Setup(format!(
                "function binary `{name}` not found (looked at {}): build it first: cargo build --workspace --bins",
                looked.join(", ")
            ))
        })
}

/// A fresh directory under the system temp dir; the caller removes it.
pub(crate) fn unique_temp_dir(prefix: &str) -> Result<PathBuf, HarnessError> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "nbaops-{prefix}-{}-{n}-{nanos:08x}",
        std::process::id()
    ));
    // create_dir (not create_dir_all) fails if the name is taken, so the dir is ours.
    std::fs::create_dir(&dir).map_err(io_err(format!("create {}", dir.display())))?;
    Ok(dir)
}

/// The last `lines` lines of a log file, for error messages.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl From<std::io::Error> for HarnessError {
    fn from(source: std::io::Error) -> Self {
        HarnessError::Io {
            context: "io".into(),
            source,
        }
    }
}

impl From<serde_json::Error> for HarnessError {
    fn from(e: serde_json::Error) -> Self {
        HarnessError::Setup(format!("JSON: {e}"))
    }
}
