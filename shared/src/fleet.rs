//! A fleet from one deployment (issue #20): the accounts and regions one hub deployment watches,
//! where each inbound record comes from ([`Origin`]), and which clients handle it ([`Route`]).
//!
//! - **Members** are data: `fleet.accounts` (`<account>=<role arn>`, comma list) names each
//!   member account and the role nbaops assumes there (`infra/member-role.yaml`), with the
//!   external id held as a SecureString at `fleet.external_id_secret`
//!   (`/nbaops/<env>/secrets/fleet/external_id`). `fleet.regions` says where: `<region>` entries
//!   apply to every account, `<account>:<region>` entries to one. An account with no region
//!   entry is watched in the hub's region only. The hub's own account may be listed with
//!   regions only (`fleet.regions = 123456789012:us-west-2`): its other regions use the hub's own
//!   credentials.
//! - **Targets inside a member** (groups, databases, clusters) are found as the functions find
//!   them in the hub: by name from their sections and by the tag `nbaops:env=<env>`, through the
//!   member's clients. There is no second inventory to keep in step.
//! - **Routing**: a record's origin is the account and region it came from (an alarm's, the
//!   EventBridge envelope's for an RDS event, a queued work item's `account`/`region` params).
//!   No fleet configured, no origin, or the hub's own account and region: the hub's clients,
//!   exactly as before. A member's account and region: that member's clients (the function's
//!   own `init` run once per member with clients built from `sts:AssumeRole`). Anything else is
//!   "not for me", with the account and region named, and no action.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::error::Result;
use crate::events::Inbound;

/// Where a record comes from: the AWS account and region of the resource it is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Origin {
    pub account: String,
    pub region: String,
}

impl Origin {
    pub fn new(account: impl Into<String>, region: impl Into<String>) -> Origin {
        Origin {
            account: account.into(),
            region: region.into(),
        }
    }

    /// The hub's own origin: the account of the deployment's alerts topic (an ARN of the stack's
    /// own account) and the region the functions run in. `None` when either is unknown.
    pub fn hub(alerts_topic_arn: &str, region: Option<&str>) -> Option<Origin> {
        let account = alerts_topic_arn
            .split(':')
            .nth(4)
            .filter(|a| is_account(a))?;
        let region = region.filter(|r| is_region(r))?;
        Some(Origin::new(account, region))
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "account {} region {}", self.account, self.region)
    }
}

impl Inbound {
    /// The account and region this record came from, when it says both: an alarm's (its ARN or
    /// envelope), an RDS event's EventBridge envelope, a scheduled tick's or queued work item's
    /// `account` and `region` params. Cost alerts and anything else: `None` (the hub's).
    pub fn origin(&self) -> Option<Origin> {
        let (account, region) = match self {
            Inbound::Alarm(a) => (a.account.clone(), a.region.clone()),
            Inbound::Rds(r) => (r.account.clone(), r.region.clone()),
            Inbound::Schedule(t) => (t.param("account"), t.param("region")),
            // A log subscription delivers the log groups of this account only (same-account
            // Lambda destinations).
            Inbound::CostAnomaly(_)
            | Inbound::Budget(_)
            | Inbound::Logs(_)
            | Inbound::NotForMe(_) => return None,
        };
        match (account, region) {
            (Some(a), Some(r)) if !a.is_empty() && !r.is_empty() => Some(Origin::new(a, r)),
            _ => None,
        }
    }
}

/// One member account: the role nbaops assumes there (`None`: the hub's own account, its own
/// credentials) and the regions watched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub account: String,
    pub role_arn: Option<String>,
    /// Empty: the hub's region only.
    pub regions: BTreeSet<String>,
}

/// `fleet.*`: the member accounts and regions ([`from_settings`]). Empty: no fleet, every record
/// is the hub's (the behaviour before issue #20).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FleetConfig {
    pub members: BTreeMap<String, Member>,
    /// `<region>` entries of `fleet.regions`: every account's.
    pub regions: BTreeSet<String>,
    /// SSM SecureString holding the external id of every member role.
    pub external_id_secret: String,
}

/// Which clients handle a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The hub's own clients: no fleet, no origin, or the hub's account and region.
    Hub,
    /// A member account (or the hub's account in another region): clients for that origin,
    /// through `role_arn` when set.
    Member {
        origin: Origin,
        role_arn: Option<String>,
    },
    /// Not watched by this deployment: the reason names the account and region.
    NotInFleet(String),
}

pub fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// A region code as AWS writes them (`us-east-1`, `ap-southeast-2`, `us-gov-west-1`).
pub fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// The role's account, when `arn` is an IAM role ARN (`arn:<partition>:iam::<account>:role/<name>`).
fn role_account(arn: &str) -> Option<&str> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, "iam", "", account, resource]
            if !partition.is_empty()
                && is_account(account)
                && resource
                    .strip_prefix("role/")
                    .is_some_and(|n| !n.is_empty()) =>
        {
            Some(account)
        }
        _ => None,
    }
}

/// Parses `fleet.accounts`, `fleet.regions` and `fleet.external_id_secret`; every error names the
/// key, its source and the entry.
pub fn from_settings(s: &Settings) -> Result<FleetConfig> {
    let mut members = BTreeMap::new();
    for entry in s.list("fleet.accounts") {
        let (account, role) = match entry.split_once('=') {
            Some((a, r)) => (a.trim().to_string(), Some(r.trim().to_string())),
            None => (entry.trim().to_string(), None),
        };
        if !is_account(&account) {
            return Err(s.bad(
                "fleet.accounts",
                &format!("<12-digit account>=<role arn> entries ('{entry}' has no account id)"),
            ));
        }
        if let Some(r) = &role {
            match role_account(r) {
                Some(a) if a == account => {}
                Some(a) => {
                    return Err(s.bad(
                        "fleet.accounts",
                        &format!("each role in its own account ('{entry}': the role is in {a})"),
                    ))
                }
                None => {
                    return Err(s.bad(
                        "fleet.accounts",
                        &format!("an IAM role ARN after '=' ('{entry}')"),
                    ))
                }
            }
        }
        if members.contains_key(&account) {
            return Err(s.bad(
                "fleet.accounts",
                &format!("each account once ({account} is listed twice)"),
            ));
        }
        members.insert(
            account.clone(),
            Member {
                account,
                role_arn: role,
                regions: BTreeSet::new(),
            },
        );
    }
    let mut regions = BTreeSet::new();
    for entry in s.list("fleet.regions") {
        let (account, region) = match entry.split_once(':') {
            Some((a, r)) => (Some(a.trim()), r.trim()),
            None => (None, entry.trim()),
        };
        if !is_region(region) {
            return Err(s.bad(
                "fleet.regions",
                &format!("<region> or <account>:<region> entries ('{entry}': not a region code)"),
            ));
        }
        match account {
            None => {
                regions.insert(region.to_string());
            }
            Some(a) if is_account(a) => {
                members
                    .entry(a.to_string())
                    .or_insert_with(|| Member {
                        account: a.to_string(),
                        role_arn: None,
                        regions: BTreeSet::new(),
                    })
                    .regions
                    .insert(region.to_string());
            }
            Some(_) => {
                return Err(s.bad(
                    "fleet.regions",
                    &format!(
                        "<region> or <account>:<region> entries ('{entry}': not an account id)"
                    ),
                ))
            }
        }
    }
    let external_id_secret = s.string("fleet.external_id_secret");
    if !members.is_empty()
        && (!external_id_secret.starts_with("/nbaops/")
            || !external_id_secret.contains("/secrets/"))
    {
        return Err(s.bad(
            "fleet.external_id_secret",
            "an SSM name under /nbaops/<env>/secrets/",
        ));
    }
    Ok(FleetConfig {
        members,
        regions,
        external_id_secret,
    })
}

impl FleetConfig {
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.regions.is_empty()
    }

    /// Every origin this deployment watches besides the hub's own (`hub` itself is never listed):
    /// each member account in its regions (`fleet.regions`' `<region>` entries and its own
    /// `<account>:<region>` ones, the hub's region when it has none), and the hub's account in
    /// the other regions listed. Exactly the origins [`FleetConfig::route`] hands to a member's
    /// clients, sorted; what a fan-out over the fleet covers besides the hub (issue #20).
    pub fn member_origins(&self, hub: &Origin) -> Vec<Origin> {
        let mut accounts: BTreeSet<&str> = self.members.keys().map(String::as_str).collect();
        if !self.regions.is_empty() {
            accounts.insert(hub.account.as_str());
        }
        let mut out = BTreeSet::new();
        for account in accounts {
            let own = self.members.get(account).map(|m| &m.regions);
            let mut regions: BTreeSet<&str> = self.regions.iter().map(String::as_str).collect();
            regions.extend(own.into_iter().flatten().map(String::as_str));
            if regions.is_empty() {
                regions.insert(hub.region.as_str());
            }
            for region in regions {
                let o = Origin::new(account, region);
                if o != *hub && matches!(self.route(Some(hub), Some(&o)), Route::Member { .. }) {
                    out.insert(o);
                }
            }
        }
        out.into_iter().collect()
    }

    /// Which clients handle a record from `origin`, for a hub at `hub`.
    pub fn route(&self, hub: Option<&Origin>, origin: Option<&Origin>) -> Route {
        let Some(origin) = origin else {
            return Route::Hub;
        };
        if self.is_empty() || Some(origin) == hub {
            return Route::Hub;
        }
        let hub_region = hub.map(|h| h.region.as_str());
        let is_hub_account = hub.is_some_and(|h| h.account == origin.account);
        let member = self.members.get(&origin.account);
        if member.is_none() && !is_hub_account {
            return Route::NotInFleet(format!("{origin} is not in fleet.accounts"));
        }
        let own = member.map(|m| &m.regions);
        let watched = self.regions.contains(&origin.region)
            || own.is_some_and(|r| r.contains(&origin.region))
            || (self.regions.is_empty()
                && own.is_none_or(|r| r.is_empty())
                && hub_region == Some(origin.region.as_str()));
        if !watched {
            return Route::NotInFleet(format!("{origin} is not in fleet.regions"));
        }
        let role_arn = member.and_then(|m| m.role_arn.clone());
        if role_arn.is_none() && !is_hub_account {
            return Route::NotInFleet(format!("{origin}: fleet.accounts names no role for it"));
        }
        Route::Member {
            origin: origin.clone(),
            role_arn: if is_hub_account { None } else { role_arn },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::{layer, Env};
    use crate::events::classify;
    use serde_json::json;

    const B_ROLE: &str = "arn:aws:iam::222222222222:role/nbaops-member-dev";

    fn fleet(pairs: &[(&str, &str)]) -> Result<FleetConfig> {
        let vars = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        from_settings(&layer(Env::Dev, &vars, &Default::default())?)
    }

    fn hub() -> Origin {
        Origin::new("123456789012", "us-east-1")
    }

    #[test]
    fn no_fleet_is_the_hub_for_everything() {
        let f = fleet(&[]).unwrap();
        assert!(f.is_empty());
        let b = Origin::new("222222222222", "us-west-2");
        assert_eq!(f.route(Some(&hub()), Some(&b)), Route::Hub);
        assert_eq!(f.route(None, Some(&b)), Route::Hub);
        assert_eq!(f.route(Some(&hub()), None), Route::Hub);
        assert_eq!(
            f.external_id_secret,
            "/nbaops/dev/secrets/fleet/external_id"
        );
    }

    #[test]
    fn members_and_regions_route_to_their_role_and_the_rest_is_not_for_me() {
        let accounts = format!("222222222222={B_ROLE}");
        let f = fleet(&[
            ("NBAOPS_FLEET__ACCOUNTS", &accounts),
            ("NBAOPS_FLEET__REGIONS", "us-east-1,us-west-2"),
        ])
        .unwrap();
        for region in ["us-east-1", "us-west-2"] {
            let b = Origin::new("222222222222", region);
            assert_eq!(
                f.route(Some(&hub()), Some(&b)),
                Route::Member {
                    origin: b.clone(),
                    role_arn: Some(B_ROLE.into())
                }
            );
        }
        // The hub's own account and region: the hub; its other watched region: its own credentials.
        assert_eq!(f.route(Some(&hub()), Some(&hub())), Route::Hub);
        let a_west = Origin::new("123456789012", "us-west-2");
        assert_eq!(
            f.route(Some(&hub()), Some(&a_west)),
            Route::Member {
                origin: a_west.clone(),
                role_arn: None
            }
        );
        let c = Origin::new("333333333333", "us-west-2");
        assert_eq!(
            f.route(Some(&hub()), Some(&c)),
            Route::NotInFleet(
                "account 333333333333 region us-west-2 is not in fleet.accounts".into()
            )
        );
        let b_eu = Origin::new("222222222222", "eu-west-1");
        assert_eq!(
            f.route(Some(&hub()), Some(&b_eu)),
            Route::NotInFleet(
                "account 222222222222 region eu-west-1 is not in fleet.regions".into()
            )
        );
    }

    #[test]
    fn per_account_regions_and_the_hub_region_by_default() {
        let accounts = format!("222222222222={B_ROLE}");
        let f = fleet(&[("NBAOPS_FLEET__ACCOUNTS", &accounts)]).unwrap();
        let b_east = Origin::new("222222222222", "us-east-1");
        let b_west = Origin::new("222222222222", "us-west-2");
        assert!(matches!(
            f.route(Some(&hub()), Some(&b_east)),
            Route::Member { .. }
        ));
        assert!(matches!(
            f.route(Some(&hub()), Some(&b_west)),
            Route::NotInFleet(_)
        ));
        let f = fleet(&[
            ("NBAOPS_FLEET__ACCOUNTS", &accounts),
            ("NBAOPS_FLEET__REGIONS", "222222222222:us-west-2"),
        ])
        .unwrap();
        assert!(matches!(
            f.route(Some(&hub()), Some(&b_west)),
            Route::Member { .. }
        ));
        assert!(matches!(
            f.route(Some(&hub()), Some(&b_east)),
            Route::NotInFleet(_)
        ));
        // A region entry alone does not make a member of an account without a role.
        let f = fleet(&[("NBAOPS_FLEET__REGIONS", "444444444444:us-west-2")]).unwrap();
        let d = Origin::new("444444444444", "us-west-2");
        assert!(
            matches!(f.route(Some(&hub()), Some(&d)), Route::NotInFleet(r) if r.contains("no role"))
        );
    }

    #[test]
    fn member_origins_are_what_routes_to_a_member() {
        let o = |a: &str, r: &str| Origin::new(a, r);
        // No fleet: nothing besides the hub.
        assert!(fleet(&[]).unwrap().member_origins(&hub()).is_empty());
        // Two members in two regions: each member in each, and the hub's account in its other
        // region; never the hub itself.
        let accounts = format!(
            "222222222222={B_ROLE},333333333333=arn:aws:iam::333333333333:role/nbaops-member-dev"
        );
        let f = fleet(&[
            ("NBAOPS_FLEET__ACCOUNTS", &accounts),
            ("NBAOPS_FLEET__REGIONS", "us-east-1,us-west-2"),
        ])
        .unwrap();
        let got = f.member_origins(&hub());
        assert_eq!(
            got,
            vec![
                o("123456789012", "us-west-2"),
                o("222222222222", "us-east-1"),
                o("222222222222", "us-west-2"),
                o("333333333333", "us-east-1"),
                o("333333333333", "us-west-2"),
            ]
        );
        for origin in &got {
            assert!(matches!(
                f.route(Some(&hub()), Some(origin)),
                Route::Member { .. }
            ));
        }
        // A member without region entries: the hub's region; per-account regions are its own;
        // an account named only in fleet.regions without a role is not watched.
        let f = fleet(&[
            ("NBAOPS_FLEET__ACCOUNTS", &format!("222222222222={B_ROLE}")),
            (
                "NBAOPS_FLEET__REGIONS",
                "123456789012:eu-west-1,444444444444:us-west-2",
            ),
        ])
        .unwrap();
        assert_eq!(
            f.member_origins(&hub()),
            vec![
                o("123456789012", "eu-west-1"),
                o("222222222222", "us-east-1")
            ]
        );
    }

    #[test]
    fn bad_entries_name_the_key_and_the_entry() {
        for (accounts, regions, needle) in [
            ("22222222222=arn:aws:iam::22222222222:role/x", "", "has no account id"),
            ("222222222222=arn:aws:iam::333333333333:role/x", "", "the role is in 333333333333"),
            ("222222222222=arn:aws:s3:::bucket", "", "an IAM role ARN"),
            ("222222222222=arn:aws:iam::222222222222:user/x", "", "an IAM role ARN"),
            (
                "222222222222=arn:aws:iam::222222222222:role/x,222222222222=arn:aws:iam::222222222222:role/y",
                "",
                "listed twice",
            ),
            ("", "US East", "not a region code"),
            ("", "abc:us-east-1", "not an account id"),
        ] {
            let e = fleet(&[
                ("NBAOPS_FLEET__ACCOUNTS", accounts),
                ("NBAOPS_FLEET__REGIONS", regions),
            ])
            .unwrap_err()
            .to_string();
            assert!(e.contains(needle) && e.contains("fleet."), "{accounts} {regions}: {e}");
        }
        let e = fleet(&[
            ("NBAOPS_FLEET__ACCOUNTS", &format!("222222222222={B_ROLE}")),
            ("NBAOPS_FLEET__EXTERNAL_ID_SECRET", "/elsewhere/x"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("fleet.external_id_secret"), "{e}");
    }

    #[test]
    fn origin_of_each_inbound_kind() {
        let alarm: serde_json::Value = serde_json::from_str(include_str!(
            "../../events/cloudwatch-alarm/eventbridge-single-metric-alarm.json"
        ))
        .unwrap();
        let mut b = alarm.clone();
        b["account"] = json!("222222222222");
        b["region"] = json!("us-west-2");
        b["detail"]["alarmArn"] =
            json!("arn:aws:cloudwatch:us-west-2:222222222222:alarm:nbaops-dev-web-cpu-high");
        assert_eq!(
            classify(&b)[0].origin(),
            Some(Origin::new("222222222222", "us-west-2"))
        );
        let rds: serde_json::Value = serde_json::from_str(include_str!(
            "../../events/rds/eventbridge-failover-started.json"
        ))
        .unwrap();
        let mut r = rds.clone();
        r["account"] = json!("222222222222");
        r["region"] = json!("eu-west-1");
        assert_eq!(
            classify(&r)[0].origin(),
            Some(Origin::new("222222222222", "eu-west-1"))
        );
        let tick = json!({"nbaops": {"task": "pg-health", "target": "app",
            "account": "222222222222", "region": "us-west-2", "dispatched_at": "2026-11-25T20:00:00Z"}});
        assert_eq!(
            classify(&tick)[0].origin(),
            Some(Origin::new("222222222222", "us-west-2"))
        );
        // A tick without both params, and cost alerts: the hub's.
        assert_eq!(
            classify(&json!({"nbaops": {"task": "pg-health", "account": "222222222222"}}))[0]
                .origin(),
            None
        );
        let cost: serde_json::Value =
            serde_json::from_str(include_str!("../../events/cost/eventbridge-anomaly.json"))
                .unwrap();
        assert_eq!(classify(&cost)[0].origin(), None);
    }

    #[test]
    fn hub_origin_from_the_alerts_topic_and_the_region() {
        assert_eq!(
            Origin::hub(
                "arn:aws:sns:us-east-1:123456789012:nbaops-dev-alerts",
                Some("us-east-1")
            ),
            Some(hub())
        );
        assert_eq!(Origin::hub("", Some("us-east-1")), None);
        assert_eq!(
            Origin::hub("arn:aws:sns:us-east-1:123456789012:x", None),
            None
        );
        assert!(is_region("us-gov-west-1") && is_region("ap-southeast-2"));
        assert!(!is_region("US East (N. Virginia)") && !is_region("us-east") && !is_region(""));
    }
}
