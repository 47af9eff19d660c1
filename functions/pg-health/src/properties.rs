//! Property test of the handler with the fakes (`nbaops_shared::fakes::any_payload_is_answered`):
//! arbitrary JSON and every fixture damaged, never a panic; what nothing understands is refused
//! without opening a session, writing state or publishing anything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use nbaops_shared::events::arbitrary;
use nbaops_shared::fakes::*;
use proptest::prelude::*;

use crate::handler::{PgHealth, FUNCTION};

proptest! {
    #![proptest_config(arbitrary::config(48))]

    #[test]
    fn any_payload_is_answered_and_garbage_opens_no_session(payload in arbitrary::payload()) {
        let t = test_deps(FUNCTION, &[
            ("NBAOPS_ALERTS_TOPIC_ARN", "arn:aws:sns:us-east-1:123456789012:nbaops-dev-alerts"),
            ("NBAOPS_PG__DATABASES", "app=postgres://nbaops_monitor@db.nbaops.test:5432/app"),
        ]).unwrap();
        let pg = leak(RefusingPg::default());
        let f = PgHealth {
            pg: nbaops_shared::config::pg::from_settings(&t.deps.cfg.settings).unwrap(),
            connector: Box::new(Shared(pg)),
            scheduler: Box::new(FakeScheduler::default()),
        };
        any_payload_is_answered(&f, &t, pg, payload)?;
    }
}
