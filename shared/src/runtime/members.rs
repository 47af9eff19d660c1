//! The fleet at run time (issue #20, [`crate::fleet`]): the hub's origin, the member accounts and
//! regions, and one instance of the function per member origin, built on first use with
//! [`Function::init`] on that origin's clients ([`AwsClients::for_member`]) and kept for the
//! process. The shared ports (config, ledger, topics, the guard's switches) stay the hub's.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::adapters::AwsClients;
use crate::config::Config;
use crate::error::{NbaopsError, Result};
use crate::events::Inbound;
use crate::fleet::{FleetConfig, Origin, Route};

use super::{Deps, Function};

type Built = &'static (dyn Any + Send + Sync);

pub struct Fleet {
    /// The hub's own account and region.
    pub hub: Origin,
    pub config: FleetConfig,
    clients: &'static AwsClients,
    members: Mutex<BTreeMap<Origin, Built>>,
    external_id: tokio::sync::OnceCell<String>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("hub", &self.hub)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// `None` when no fleet is configured (every record is the hub's, as before issue #20). A
    /// fleet whose hub cannot be told (no alerts topic ARN, no region) is a configuration error:
    /// the hub's own records would otherwise look like strangers'.
    pub fn new(cfg: &Config, clients: &'static AwsClients) -> Result<Option<Fleet>> {
        if cfg.fleet.is_empty() {
            return Ok(None);
        }
        let region = clients.conf().region().map(|r| r.to_string());
        let hub = Origin::hub(&cfg.alerts_topic_arn, region.as_deref()).ok_or_else(|| {
            NbaopsError::config(format!(
                "fleet.accounts/fleet.regions are set, but the hub's own account and region are unknown: they are read from alerts_topic_arn ('{}') and AWS_REGION ({})",
                cfg.alerts_topic_arn,
                region.as_deref().unwrap_or("unset")
            ))
        })?;
        Ok(Some(Fleet {
            hub,
            config: cfg.fleet.clone(),
            clients,
            members: Mutex::new(BTreeMap::new()),
            external_id: tokio::sync::OnceCell::new(),
        }))
    }

    /// Which clients handle this record.
    pub fn route(&self, inbound: &Inbound) -> Route {
        self.route_origin(inbound.origin().as_ref())
    }

    /// Which clients act in `origin` (`None`: the hub's): a record's, or an approved request's
    /// ([`super::approved`]).
    pub fn route_origin(&self, origin: Option<&Origin>) -> Route {
        self.config.route(Some(&self.hub), origin)
    }

    /// The external id of the member roles, read once (SecureString, decrypted).
    async fn external_id(&self, deps: &Deps) -> Result<String> {
        let name = &self.config.external_id_secret;
        self.external_id
            .get_or_try_init(|| async {
                let params = deps.params.as_deref().ok_or_else(|| {
                    NbaopsError::config(format!(
                        "fleet: the external id {name} cannot be read without SSM"
                    ))
                })?;
                match params.get(name).await? {
                    Some(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
                    _ => Err(NbaopsError::config(format!(
                        "fleet: the external id of the member roles is missing: SSM SecureString {name}"
                    ))),
                }
            })
            .await
            .cloned()
    }

    /// Function `F` for a member origin: built on first use, then the same for the process.
    pub async fn member<F: Function>(
        &self,
        origin: &Origin,
        role_arn: Option<&str>,
        deps: &Deps,
    ) -> Result<&'static F> {
        let known = self
            .members
            .lock()
            .ok()
            .and_then(|m| m.get(origin).copied());
        if let Some(f) = known.and_then(|b| b.downcast_ref::<F>()) {
            return Ok(f);
        }
        let external_id = match role_arn {
            Some(_) => Some(self.external_id(deps).await?),
            None => None,
        };
        let clients = AwsClients::for_member(
            self.clients,
            origin,
            role_arn,
            external_id.as_deref(),
            &format!("nbaops-{}-{}", deps.cfg.env, F::NAME),
        )
        .await;
        let f: &'static F = Box::leak(Box::new(F::init(deps, &clients).await?));
        tracing::info!(account = %origin.account, region = %origin.region, role = role_arn.unwrap_or("(hub credentials)"), "fleet member initialised");
        if let Ok(mut m) = self.members.lock() {
            m.insert(origin.clone(), f);
        }
        Ok(f)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::{json, Value};

    use super::*;
    use crate::fakes::test_deps;
    use crate::runtime::{dispatch, Ctx, Invocation, InvocationReport, RecordReport};

    /// A function that counts the records handed to it.
    struct Counting(AtomicUsize);

    impl Function for Counting {
        const NAME: &'static str = "scale-on-alarm";
        const TAKES: &'static str = "alarms";
        type Reply = InvocationReport;
        async fn init(_deps: &Deps, _aws: &AwsClients) -> Result<Self> {
            Ok(Counting(AtomicUsize::new(0)))
        }
        async fn on(&self, inbound: Inbound, ctx: &Ctx<'_>) -> Result<RecordReport> {
            self.0.fetch_add(1, Ordering::SeqCst);
            ctx.work(inbound.event_id().unwrap_or(""), "alarm", "seen")
                .done()
                .await
        }
    }

    fn alarm(account: &str, region: &str) -> Value {
        let mut a: Value = serde_json::from_str(include_str!(
            "../../../events/cloudwatch-alarm/eventbridge-single-metric-alarm.json"
        ))
        .unwrap();
        a["account"] = json!(account);
        a["region"] = json!(region);
        a["detail"]["alarmArn"] = json!(format!(
            "arn:aws:cloudwatch:{region}:{account}:alarm:nbaops-dev-web-cpu-high"
        ));
        a
    }

    #[tokio::test]
    async fn records_outside_the_fleet_never_reach_the_function_and_the_hubs_do() {
        let t = test_deps(
            "scale-on-alarm",
            &[
                (
                    "NBAOPS_ALERTS_TOPIC_ARN",
                    "arn:aws:sns:us-east-1:123456789012:nbaops-dev-alerts",
                ),
                (
                    "NBAOPS_FLEET__ACCOUNTS",
                    "222222222222=arn:aws:iam::222222222222:role/nbaops-member-dev",
                ),
            ],
        )
        .unwrap();
        let clients: &'static AwsClients = Box::leak(Box::new(
            AwsClients::for_member(
                &AwsClients::from_env().await,
                &Origin::new("123456789012", "us-east-1"),
                None,
                None,
                "t",
            )
            .await,
        ));
        let fleet = Fleet::new(&t.deps.cfg, clients).unwrap().unwrap();
        assert_eq!(fleet.hub, Origin::new("123456789012", "us-east-1"));
        let f = Counting(AtomicUsize::new(0));
        let inv = Invocation::at("r", chrono::Utc::now());
        let ctx = Ctx::of::<Counting>(t.deps, &inv).with_fleet(Some(&fleet));
        let out = dispatch(&f, alarm("333333333333", "us-east-1"), &ctx)
            .await
            .unwrap();
        assert_eq!(
            out.records[0].not_for_me.as_deref(),
            Some("account 333333333333 region us-east-1 is not in fleet.accounts")
        );
        assert!(!out.records[0].event_id.is_empty());
        assert_eq!(f.0.load(Ordering::SeqCst), 0, "the function never saw it");
        let out = dispatch(&f, alarm("123456789012", "us-east-1"), &ctx)
            .await
            .unwrap();
        assert!(out.records[0].not_for_me.is_none(), "{out:?}");
        assert_eq!(
            f.0.load(Ordering::SeqCst),
            1,
            "the hub's own record: the hub's function"
        );
        // Without a fleet configured, a stranger's record is the hub's, as before issue #20.
        let plain = test_deps("scale-on-alarm", &[]).unwrap();
        assert!(Fleet::new(&plain.deps.cfg, clients).unwrap().is_none());
        let ctx = Ctx::of::<Counting>(plain.deps, &inv);
        dispatch(&f, alarm("333333333333", "us-east-1"), &ctx)
            .await
            .unwrap();
        assert_eq!(f.0.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_fleet_without_a_known_hub_is_a_configuration_error() {
        let t = test_deps("scale-on-alarm", &[("NBAOPS_FLEET__REGIONS", "us-west-2")]).unwrap();
        let clients: &'static AwsClients = Box::leak(Box::new(AwsClients::from_env().await));
        let e = Fleet::new(&t.deps.cfg, clients).unwrap_err().to_string();
        assert!(
            e.contains("hub's own account and region are unknown"),
            "{e}"
        );
    }
}
