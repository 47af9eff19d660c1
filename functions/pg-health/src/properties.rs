//! Property test of the handler with the fakes: arbitrary JSON and every fixture damaged
//! (`nbaops_shared::events::arbitrary`). Never a panic; what nothing understands is refused
//! without opening a session, writing state or publishing anything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{TimeZone, Utc};
use nbaops_shared::config::{layer, Config, Env};
use nbaops_shared::events::arbitrary;
use nbaops_shared::fakes::*;
use nbaops_shared::guard::Switches;
use nbaops_shared::ports::{PgConnector, Postgres};
use nbaops_shared::runtime::{Deps, Invocation};
use proptest::prelude::*;

use crate::handler::{handle, PgHealth, FUNCTION};

/// Records every connection attempt and refuses it (a valid tick then fails cleanly, fast).
#[derive(Default)]
struct Refusing {
    urls: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl PgConnector for Refusing {
    async fn connect(
        &self,
        url: &str,
        _password: Option<&str>,
    ) -> nbaops_shared::Result<Box<dyn Postgres>> {
        self.urls.lock().unwrap().push(url.to_string());
        Err(nbaops_shared::NbaopsError::dependency(
            "postgres",
            "connection refused (test)",
        ))
    }
}

struct World {
    deps: &'static Deps,
    x: &'static PgHealth,
    pg: &'static Refusing,
    notifier: &'static FakeNotifier,
    ledger: &'static FakeLedger,
}

fn world() -> World {
    let vars: BTreeMap<String, String> = [
        (
            "NBAOPS_ALERTS_TOPIC_ARN",
            "arn:aws:sns:us-east-1:123456789012:nbaops-dev-alerts",
        ),
        (
            "NBAOPS_PG__DATABASES",
            "app=postgres://nbaops_monitor@db.nbaops.test:5432/app",
        ),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let s = layer(Env::Dev, &vars, &BTreeMap::new()).unwrap();
    let pg_cfg = nbaops_shared::config::pg::from_settings(&s).unwrap();
    let cfg = Config::from_settings(Env::Dev, FUNCTION, s).unwrap();
    let pg = leak(Refusing::default());
    let notifier = leak(FakeNotifier::default());
    let ledger = leak(FakeLedger::default());
    let deps = leak(Deps {
        cfg,
        asg: Box::new(FakeAutoScaling::default()),
        rds: Box::new(FakeRds::default()),
        cache: Box::new(FakeElastiCache::default()),
        notifier: Box::new(Shared(notifier)),
        params: Some(Box::new(FakeParams::default())),
        ledger: Box::new(Shared(ledger)),
        switches: Switches::default(),
    });
    let x = leak(PgHealth {
        pg: pg_cfg,
        connector: Box::new(Shared(pg)),
    });
    World {
        deps,
        x,
        pg,
        notifier,
        ledger,
    }
}

proptest! {
    #![proptest_config(arbitrary::config(48))]

    #[test]
    fn any_payload_is_answered_and_garbage_opens_no_session(payload in arbitrary::payload()) {
        let w = world();
        let understood = arbitrary::understood(&payload);
        let inv = Invocation {
            request_id: "prop".into(),
            now: Utc.with_ymd_and_hms(2026, 11, 26, 21, 0, 0).unwrap(),
            deadline: None,
        };
        let res = arbitrary::block_on(handle(payload, inv, w.deps, w.x));
        if !understood {
            arbitrary::refused_cleanly(&res)?;
            prop_assert!(w.pg.urls.lock().unwrap().is_empty(), "a session for garbage");
            prop_assert!(w.notifier.published().is_empty());
            prop_assert_eq!(w.ledger.len_with_prefix(""), 0);
        }
    }
}
