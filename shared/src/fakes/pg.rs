//! PostgreSQL for the unit and property tests of the functions that open sessions: a connector
//! that refuses every connection and remembers it was asked, and the property every such
//! handler keeps.

use std::sync::Mutex;

use async_trait::async_trait;

use super::lock;
use crate::error::{NbaopsError, Result};
use crate::ports::{PgConnector, Postgres};

/// Records every connection attempt and refuses it (a valid tick then fails cleanly, fast).
#[derive(Default)]
pub struct RefusingPg {
    urls: Mutex<Vec<String>>,
}

impl RefusingPg {
    /// The URLs it was asked to connect to.
    pub fn urls(&self) -> Vec<String> {
        lock(&self.urls).clone()
    }
}

#[async_trait]
impl PgConnector for RefusingPg {
    async fn connect(&self, url: &str, _password: Option<&str>) -> Result<Box<dyn Postgres>> {
        lock(&self.urls).push(url.to_string());
        Err(NbaopsError::dependency(
            "postgres",
            "connection refused (test)",
        ))
    }
}

/// The property of every PostgreSQL function's handler, for any payload
/// (`events::arbitrary::payload`): it is answered, never a panic; one nothing understands is
/// refused without opening a session, writing state or publishing anything.
#[cfg(feature = "proptest")]
pub fn any_payload_is_answered<F: crate::runtime::Function>(
    f: &F,
    t: &super::TestDeps,
    pg: &RefusingPg,
    payload: serde_json::Value,
) -> std::result::Result<(), proptest::test_runner::TestCaseError> {
    use crate::events::arbitrary;
    use crate::runtime::{dispatch, Ctx, Invocation};
    use chrono::TimeZone;
    use proptest::{prop_assert, prop_assert_eq};
    let understood = arbitrary::understood(&payload);
    let now = chrono::Utc
        .with_ymd_and_hms(2026, 11, 26, 21, 0, 0)
        .single()
        .unwrap_or_default();
    let inv = Invocation::at("prop", now);
    let res = arbitrary::block_on(dispatch(f, payload, &Ctx::of::<F>(t.deps, &inv)));
    if !understood {
        arbitrary::refused_cleanly(&res)?;
        prop_assert!(pg.urls().is_empty(), "a session for garbage");
        prop_assert!(t.notifier.published().is_empty());
        prop_assert_eq!(t.ledger.len_with_prefix(""), 0);
    }
    Ok(())
}
