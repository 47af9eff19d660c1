//! How a command prints: plain lines for a person, one JSON document with `--json`, progress
//! bars only on a terminal.

use std::io::IsTerminal;

use serde::Serialize;

/// The error of a command: what went wrong, in words.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Nbaops(#[from] nbaops_shared::error::NbaopsError),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: {1}")]
    Json(String, serde_json::Error),
}

pub type CliResult<T> = std::result::Result<T, CliError>;

pub struct Output {
    pub json: bool,
    pub terminal: bool,
}

impl Output {
    pub fn new(json: bool) -> Output {
        Output {
            json,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// With `--json`: the document on stdout. Without: `text` on stdout.
    pub fn emit<T: Serialize>(&self, doc: &T, text: &str) -> CliResult<()> {
        if self.json {
            let s = serde_json::to_string_pretty(doc)
                .map_err(|e| CliError::Json("output".into(), e))?;
            println!("{s}");
        } else {
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
        }
        Ok(())
    }

    /// A progress bar on a terminal (and not with `--json`); plain lines on stderr otherwise.
    pub fn progress(&self, len: u64, what: &str) -> Progress {
        if self.terminal && !self.json {
            let bar = indicatif::ProgressBar::new(len);
            bar.set_message(what.to_string());
            Progress::Bar(bar)
        } else {
            Progress::Lines {
                what: what.to_string(),
                len,
                step: (len / 10).max(1),
            }
        }
    }
}

pub enum Progress {
    Bar(indicatif::ProgressBar),
    Lines { what: String, len: u64, step: u64 },
}

impl Progress {
    pub fn set(&self, done: u64) {
        match self {
            Progress::Bar(b) => b.set_position(done),
            Progress::Lines { what, len, step } => {
                if done.is_multiple_of(*step) || done == *len {
                    eprintln!("{what}: {done}/{len}");
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Progress::Bar(b) = self {
            b.finish_and_clear();
        }
    }
}

/// One decision in one line, as every command prints it (plan, replay, audit): the audit record's
/// own sentence (the guard's explanation), after its time.
pub fn decision_line(rec: &nbaops_shared::guard::AuditRecord) -> String {
    format!(
        "{} {}",
        rec.at.format("%Y-%m-%d %H:%M:%SZ"),
        rec.explained()
    )
}
