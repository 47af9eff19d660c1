//! The one error type of the shared crate, and its mapping to a Lambda `Diagnostic`.

use lambda_runtime::Diagnostic;

#[derive(Debug, thiserror::Error)]
pub enum NbaopsError {
    /// The payload is broken in a way we must not guess around.
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// Configuration is missing or wrong; names the key.
    #[error("config: {0}")]
    Config(String),
    /// An AWS service or PostgreSQL failed; `retryable` tells Lambda's async retry whether to bother.
    #[error("{service} failed: {message}")]
    Dependency {
        service: &'static str,
        message: String,
        retryable: bool,
    },
    /// A resource we were asked about does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A conditional write lost a race (used internally by the ledger).
    #[error("conflict: {0}")]
    Conflict(String),
}

impl NbaopsError {
    pub fn dependency(service: &'static str, message: impl Into<String>) -> Self {
        NbaopsError::Dependency {
            service,
            message: message.into(),
            retryable: true,
        }
    }

    pub fn config(message: impl Into<String>) -> Self {
        NbaopsError::Config(message.into())
    }

    /// Stable `errorType` for Lambda: alarms and dashboards group on it.
    pub fn error_type(&self) -> &'static str {
        match self {
            NbaopsError::InvalidEvent(_) => "InvalidEvent",
            NbaopsError::Config(_) => "Config",
            NbaopsError::Dependency {
                retryable: true, ..
            } => "Retryable",
            NbaopsError::Dependency { .. } => "Dependency",
            NbaopsError::NotFound(_) => "NotFound",
            NbaopsError::Conflict(_) => "Conflict",
        }
    }
}

impl From<NbaopsError> for Diagnostic {
    fn from(e: NbaopsError) -> Self {
        Diagnostic {
            error_type: e.error_type().to_string(),
            error_message: e.to_string(),
        }
    }
}

pub type Result<T, E = NbaopsError> = std::result::Result<T, E>;
