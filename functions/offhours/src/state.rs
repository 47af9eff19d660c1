//! What offhours remembers of each resource between runs ([`ResourceState`]), in the ledger
//! under `offhours#<resource>` / `state`; a fleet member's resource (issue #20) under
//! `offhours#<resource>@<account>/<region>`, as the guard qualifies it: the same group name in
//! two accounts is two groups, with two states.

use chrono::{DateTime, Utc};
use serde_json::Value;

use nbaops_shared::fleet::Origin;
use nbaops_shared::guard::{decode_state, report_unreadable_state};
use nbaops_shared::ports::Ledger;
use nbaops_shared::runtime::Work;
use nbaops_shared::Result;

use crate::plan::ResourceState;

fn state_pk(resource: &str, origin: Option<&Origin>) -> String {
    match origin {
        Some(o) => format!("offhours#{resource}@{}/{}", o.account, o.region),
        None => format!("offhours#{resource}"),
    }
}

/// The resource's state as stored (default when there is none). An item this version cannot
/// read is a P2 (raised at `at`, noted and recorded in `w`) and `None`: the caller does not act
/// on that resource.
pub async fn load(
    w: &mut Work<'_>,
    resource: &str,
    at: DateTime<Utc>,
) -> Result<Option<ResourceState>> {
    let deps = w.ctx.deps;
    match decode_state(
        deps.ledger
            .get(&state_pk(resource, w.ctx.origin), "state")
            .await?,
    ) {
        Ok(s) => Ok(Some(s.unwrap_or_default())),
        Err(e) => {
            let (note, alert) = report_unreadable_state(
                &deps.cfg,
                deps.notifier.as_ref(),
                resource,
                "offhours state",
                &e,
                at,
            )
            .await?;
            w.note(note);
            w.rec.alerts.push(alert);
            Ok(None)
        }
    }
}

/// Stores the resource's state for `origin` (the hub's: `None`).
pub async fn save(
    ledger: &dyn Ledger,
    origin: Option<&Origin>,
    resource: &str,
    s: &ResourceState,
) -> Result<()> {
    let v = serde_json::to_value(s).unwrap_or(Value::Null);
    ledger
        .put(&state_pk(resource, origin), "state", &v, None)
        .await
}
