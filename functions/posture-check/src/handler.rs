//! posture-check's dispatcher (issue #21): its daily Scheduler task `posture-check`.
//!
//! One run: read the account and region ([`PostureCheck::gather`], every source on its own, a
//! source that fails is named and its rules neither raise nor resolve anything), judge
//! ([`crate::rules::evaluate`]), remember (ledger `posture#open` / `<rule>#<resource>`: first and
//! last seen, whether alerted), alert (each new P1/P2 finding once, `posture#<rule>#<resource>`;
//! resolved when a later run no longer finds it), fix (the two safe fixes, only where
//! `posture.fix.envs` allows, each through the guard and audited) and summarise (one P4
//! `posture-summary#<day>` with counts per rule and the monthly cost of what is unused).
//!
//! The run is on the tick's `at` (ages of unused resources, the summary's day, cooldowns), so a
//! test or an operator replaying a day can move time.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use nbaops_shared::adapters::{AwsClients, SdkPosture};
use nbaops_shared::alerts::{AlertStatus, Severity};
use nbaops_shared::config::posture::{self, PostureConfig};
use nbaops_shared::events::{Inbound, ScheduledTick};
use nbaops_shared::guard::{Explanation, Observation, Outcome, ProposedAction};
use nbaops_shared::ports::Posture;
use nbaops_shared::runtime::{
    Ctx, Deps, Function, Invocation, InvocationReport, RecordReport, Work,
};
use nbaops_shared::Result;

use crate::rules::{self, Evaluation, Facts, Finding, Fix};

pub const FUNCTION: &str = "posture-check";
/// Scheduler input `{"nbaops": {"task": "posture-check", "at"?: "..."}}`.
pub const TASK: &str = "posture-check";
/// The ledger partition of the open findings (sort key `<rule>#<resource>`).
pub const OPEN_PK: &str = "posture#open";

pub struct PostureCheck {
    pub cfg: PostureConfig,
    pub posture: Box<dyn Posture>,
    /// The region checked (the fix commands name it).
    pub region: String,
}

impl Function for PostureCheck {
    const NAME: &'static str = FUNCTION;
    const TAKES: &'static str = "its daily 'posture-check' schedule";
    type Reply = InvocationReport;

    async fn init(deps: &Deps, aws: &AwsClients) -> Result<Self> {
        Ok(PostureCheck {
            cfg: posture::from_settings(&deps.cfg.settings)?,
            posture: Box::new(SdkPosture::new(aws)),
            region: aws
                .conf()
                .region()
                .map(|r| r.to_string())
                .unwrap_or_default(),
        })
    }

    async fn on(&self, inbound: Inbound, ctx: &Ctx<'_>) -> Result<RecordReport> {
        match inbound {
            Inbound::Schedule(tick) if tick.task().as_deref() == Some(TASK) => {
                let inv = Invocation {
                    now: tick.at,
                    ..ctx.inv.clone()
                };
                self.run(&tick, &ctx.with_inv(&inv)).await
            }
            Inbound::Schedule(tick) => Ok(RecordReport::not_for_me(
                &tick.event_id,
                "schedule",
                format!(
                    "task {:?}: {FUNCTION} runs '{TASK}'",
                    tick.task().unwrap_or_default()
                ),
            )),
            other => Ok(ctx.not_mine(&other)),
        }
    }
}

/// An open finding as the ledger keeps it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Open {
    rule: String,
    resource: String,
    severity: Severity,
    detail: String,
    fix: String,
    first_seen: DateTime<Utc>,
    /// When the finding last changed (severity, detail or fix); an unchanged finding is not
    /// written again (one write per new or changed finding, not one per finding per day).
    last_changed: DateTime<Utc>,
    /// An individual alert was raised (P1/P2): its resolution is announced too.
    alerted: bool,
}

/// A source read: its value, or `None` and a note saying what could not be read.
fn read<T>(notes: &mut Vec<String>, what: &str, r: Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            notes.push(format!(
                "could not read {what}: {e}; its rules neither raise nor resolve anything this run"
            ));
            None
        }
    }
}

fn open_sk(rule: &str, resource: &str) -> String {
    format!("{rule}#{resource}")
}

impl PostureCheck {
    /// Reads every source; each failure is a note and an unread source (`None`), never a guess.
    pub async fn gather(&self, now: DateTime<Utc>, notes: &mut Vec<String>) -> Facts {
        let p = self.posture.as_ref();
        let since = now - Duration::days(self.cfg.lb_days);
        let replicated = async {
            match &self.cfg.dr_region {
                Some(r) => Some(p.replicated_backups(r).await),
                None => None,
            }
        };
        let (dbs, snapshots, caches, volumes, addresses, instances, lbs, tagged, replicated) = tokio::join!(
            p.db_instances(),
            p.db_snapshots(),
            p.caches(),
            p.volumes(),
            p.addresses(),
            p.instances(),
            p.load_balancers(since, now),
            p.tagged_resources(&self.cfg.tag_types),
            replicated,
        );
        let mut facts = Facts {
            dbs: read(notes, "DB instances", dbs),
            snapshots: read(notes, "DB snapshots", snapshots),
            caches: read(notes, "caches", caches),
            volumes: read(notes, "EBS volumes", volumes),
            addresses: read(notes, "Elastic IPs", addresses),
            instances: read(notes, "EC2 instances", instances),
            load_balancers: read(notes, "load balancers", lbs),
            tagged: read(notes, "the Tagging API", tagged),
            ..Default::default()
        };
        facts.replicated = match replicated {
            Some(r) => {
                read(notes, "the DR region's automated backups", r).map(|v| v.into_iter().collect())
            }
            // No DR region configured: nothing to read, the rule does not run.
            None => Some(BTreeSet::new()),
        };
        let group_ids: BTreeSet<String> = facts
            .caches
            .iter()
            .flatten()
            .flat_map(|c| c.security_groups.iter().cloned())
            .collect();
        facts.security_groups = if group_ids.is_empty() {
            Some(Vec::new())
        } else {
            let ids: Vec<String> = group_ids.into_iter().collect();
            read(notes, "security groups", p.security_groups(&ids).await)
        };
        // The TLS parameter of each database, from its parameter group(s): each group read once
        // (DescribeDBParameters pages through every parameter of a group; databases share groups).
        let mut read_groups: BTreeMap<(String, &str), Option<String>> = BTreeMap::new();
        for db in facts.dbs.iter().flatten() {
            let Some(param) = rules::tls_parameter(&db.engine) else {
                continue;
            };
            let mut value = Ok(None);
            for g in &db.parameter_groups {
                let key = (g.clone(), param);
                let got = match read_groups.get(&key) {
                    Some(v) => Ok(v.clone()),
                    None => p.db_parameter(g, param).await.inspect(|v| {
                        read_groups.insert(key, v.clone());
                    }),
                };
                match got {
                    Ok(Some(v)) => {
                        value = Ok(Some(v));
                        break;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        value = Err(e);
                        break;
                    }
                }
            }
            match value {
                Ok(v) => {
                    facts.tls_params.insert(db.id.clone(), v);
                }
                Err(e) => notes.push(format!(
                    "could not read {param} of {}: {e}; rds.force_ssl not judged for it",
                    db.id
                )),
            }
        }
        facts
    }

    async fn run(&self, tick: &ScheduledTick, ctx: &Ctx<'_>) -> Result<RecordReport> {
        let now = tick.at;
        let env = ctx.cfg().env;
        let mut notes = Vec::new();
        let facts = self.gather(now, &mut notes).await;
        let unread = facts.unread();
        let eval = rules::evaluate(&self.cfg, env, &self.region, now, &facts);
        let mut w = ctx
            .work(&tick.event_id, "schedule", "")
            .with_fleet_size(eval.in_scope.max(1));
        w.rec.notes.extend(notes);
        let judged = |rule: &str| rules::sources_of(rule).iter().all(|s| !unread.contains(s));

        // What was open before this run.
        let ledger = ctx.deps.ledger.as_ref();
        let mut before: BTreeMap<String, Open> = BTreeMap::new();
        for (sk, v) in ledger.query(OPEN_PK, "").await? {
            match serde_json::from_value::<Open>(v) {
                Ok(o) => {
                    before.insert(sk, o);
                }
                Err(e) => w.note(format!("open finding {sk} unreadable ({e}): left as it is")),
            }
        }

        let mut new = 0usize;
        let mut still = 0usize;
        let mut current: BTreeSet<String> = BTreeSet::new();
        for f in &eval.findings {
            let sk = open_sk(f.rule, &f.resource);
            current.insert(sk.clone());
            let prev = before.get(&sk);
            let alert_now = prev.is_none() && f.severity <= Severity::P2;
            let fix = f.fix.command();
            let unchanged = prev
                .is_some_and(|p| p.severity == f.severity && p.detail == f.detail && p.fix == fix);
            let open = Open {
                rule: f.rule.to_string(),
                resource: f.resource.clone(),
                severity: f.severity,
                detail: f.detail.clone(),
                fix,
                first_seen: prev.map_or(now, |p| p.first_seen),
                last_changed: now,
                alerted: prev.is_some_and(|p| p.alerted) || alert_now,
            };
            if !unchanged {
                ledger.put(OPEN_PK, &sk, &json!(open), None).await?;
            }
            if prev.is_some() {
                still += 1;
            } else {
                new += 1;
            }
            if alert_now {
                self.raise_finding(f, &mut w).await?;
            }
        }

        // Open before, not found now: resolved, but only where the rule's sources were read.
        let mut resolved = Vec::new();
        for (sk, o) in &before {
            if current.contains(sk) {
                continue;
            }
            if !judged(&o.rule) {
                w.note(format!(
                    "{sk}: not judged this run (a source was unreadable), still open"
                ));
                continue;
            }
            ledger.delete(OPEN_PK, sk).await?;
            resolved.push(sk.clone());
            if o.alerted {
                let mut a = ctx
                    .alert(
                        o.severity,
                        &o.resource,
                        format!("posture#{}#{}", o.rule, o.resource),
                        format!("{} {}: resolved ({})", o.rule, o.resource, o.detail),
                    )
                    .with_details(json!({"rule": o.rule, "first_seen": o.first_seen}));
                a.status = AlertStatus::Resolved;
                w.raise(a).await?;
            }
        }

        let fixes = self.fix(&eval, &mut w).await?;
        let summary = self.summary(&eval, &unread, new, still, &resolved, now, ctx);
        w.rec.summary = summary.summary.clone();
        w.raise(summary).await?;
        if fixes > 0 {
            w.note(format!(
                "{fixes} fix(es) carried out: their findings close when the next run no longer finds them"
            ));
        }
        w.done().await
    }

    async fn raise_finding(&self, f: &Finding, w: &mut Work<'_>) -> Result<()> {
        let alert = w
            .ctx
            .alert(
                f.severity,
                &f.resource,
                format!("posture#{}#{}", f.rule, f.resource),
                format!("{}: {}", f.rule, f.detail),
            )
            .with_details(json!({
                "rule": f.rule, "env": f.env, "fix": f.fix, "monthly_usd": f.monthly_usd,
            }))
            .with_action(if f.fix.automatic() {
                format!("nbaops fixes it through the guard: {}", f.fix.command())
            } else {
                format!("recommended: {}", f.fix.command())
            })
            .with_runbook(format!(
                "docs/runbooks/posture.md#{}",
                f.rule.replace('.', "")
            ));
        w.raise(alert).await
    }

    /// The safe fixes, each through the guard (dry-run, kill switch, protected tag, cooldown,
    /// blast radius, approval if configured) and audited whether it ran or not. Returns how many
    /// ran.
    async fn fix(&self, eval: &Evaluation, w: &mut Work<'_>) -> Result<usize> {
        let mut done = 0;
        for f in eval.findings.iter().filter(|f| f.fix.automatic()) {
            let (action, before, after, change) = match &f.fix {
                Fix::DeletionProtection { db_instance } => (
                    "rds.enable_deletion_protection",
                    json!({"deletion_protection": false}),
                    json!({"deletion_protection": true}),
                    format!("{db_instance} deletion protection off → on"),
                ),
                Fix::RdsTags { tags, .. } => (
                    "rds.add_tags",
                    json!({"missing": tags.keys().collect::<Vec<_>>()}),
                    json!({"tags": tags}),
                    format!(
                        "{} + {}",
                        f.resource,
                        tags.iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
                Fix::Command { .. } => continue,
            };
            let explanation = Explanation::new("fix", "Fixed", change, "SPEC 4/6 posture")
                .key("posture.fix.envs")
                .key(if action == "rds.add_tags" {
                    "posture.fix.default_tags"
                } else {
                    "posture.prod_only_rules"
                })
                .observe(Observation::value(f.rule, 1.0, ""));
            let proposed = ProposedAction {
                action: action.into(),
                resource: f.resource.clone(),
                tags: f.tags.clone(),
                reason: format!("{}: {}", f.rule, f.detail),
                severity: f.severity,
                disruptive: false,
                bounds: None,
                // Per fix: turning deletion protection on must not hold back the tags of the
                // same database (one cooldown key = one cooldown per resource).
                cooldown_key: format!("posture-fix#{action}"),
                cooldown_seconds: self.cfg.fix_cooldown_seconds,
                before,
                after,
                explanation,
            };
            let fix = f.fix.clone();
            let posture = self.posture.as_ref();
            let audit = w
                .act(&proposed, || async move {
                    match &fix {
                        Fix::DeletionProtection { db_instance } => {
                            posture.enable_deletion_protection(db_instance).await
                        }
                        Fix::RdsTags { arn, tags } => posture.add_rds_tags(arn, tags).await,
                        Fix::Command { .. } => Ok(()),
                    }
                })
                .await?;
            match audit.outcome {
                Outcome::Acted => done += 1,
                Outcome::Failed => {
                    let alert = w
                        .ctx
                        .alert(
                            Severity::P3,
                            &f.resource,
                            format!("posture-fix#{}#{}", f.rule, f.resource),
                            format!(
                                "{action} on {} failed: {}",
                                f.resource,
                                audit.error.clone().unwrap_or_default()
                            ),
                        )
                        .with_action(format!("by hand: {}", f.fix.command()));
                    w.raise(alert).await?;
                }
                _ => {}
            }
        }
        Ok(done)
    }

    #[allow(clippy::too_many_arguments)]
    fn summary(
        &self,
        eval: &Evaluation,
        unread: &BTreeSet<&'static str>,
        new: usize,
        still: usize,
        resolved: &[String],
        now: DateTime<Utc>,
        ctx: &Ctx<'_>,
    ) -> nbaops_shared::alerts::Alert {
        let mut per_rule: BTreeMap<&str, usize> = BTreeMap::new();
        for f in &eval.findings {
            *per_rule.entry(f.rule).or_default() += 1;
        }
        let usd = eval.unused_monthly_usd();
        let counts = per_rule
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let text = if eval.findings.is_empty() {
            format!(
                "posture {}: {} resource(s) checked, all meet the strategy",
                now.format("%Y-%m-%d"),
                eval.in_scope
            )
        } else {
            format!(
                "posture {}: {} finding(s) on {} resource(s) checked ({new} new, {still} still open, {} resolved): {counts}; unused resources ~${:.2}/month",
                now.format("%Y-%m-%d"),
                eval.findings.len(),
                eval.in_scope,
                resolved.len(),
                usd
            )
        };
        let text = if unread.is_empty() {
            text
        } else {
            format!(
                "{text}; NOT READ: {}",
                unread.iter().copied().collect::<Vec<_>>().join(", ")
            )
        };
        let findings: Vec<Value> = eval
            .findings
            .iter()
            .map(|f| {
                json!({"rule": f.rule, "resource": f.resource, "severity": f.severity,
                       "detail": f.detail, "fix": f.fix.command(), "automatic": f.fix.automatic(),
                       "monthly_usd": f.monthly_usd})
            })
            .collect();
        ctx.alert(
            Severity::P4,
            "posture",
            format!("posture-summary#{}", now.format("%Y-%m-%d")),
            text,
        )
        .with_details(json!({
            "per_rule": per_rule, "checked": eval.checked, "findings": findings,
            "resolved": resolved, "unused_monthly_usd": usd, "unread": unread,
            "other_envs": eval.other_envs,
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use nbaops_shared::fakes::*;
    use nbaops_shared::ports::*;
    use nbaops_shared::runtime::dispatch;

    struct World {
        deps: &'static Deps,
        f: &'static PostureCheck,
        aws: &'static FakePosture,
        notifier: &'static FakeNotifier,
        ledger: &'static FakeLedger,
    }

    use crate::rules::tests::{good_db, tags};

    /// A compliant development database (PostgreSQL 16: TLS on by default).
    fn db(id: &str) -> DbFacts {
        DbFacts {
            engine_version: "16.3".into(),
            parameter_groups: vec!["default.postgres16".into()],
            tags: tags("dev"),
            ..good_db(id)
        }
    }

    fn world(extra: &[(&str, &str)]) -> World {
        let mut pairs = vec![(
            "NBAOPS_ALERTS_TOPIC_ARN",
            "arn:aws:sns:us-east-1:123456789012:nbaops-dev-alerts",
        )];
        pairs.extend_from_slice(extra);
        let t = test_deps(FUNCTION, &pairs).unwrap();
        let aws = leak(FakePosture::default());
        let mut public = db("nbaops-dev-db");
        public.publicly_accessible = true;
        *aws.dbs.lock().unwrap() = vec![public, db("nbaops-dev-ok")];
        *aws.volumes.lock().unwrap() = vec![VolumeFacts {
            id: "vol-orphan".into(),
            state: "available".into(),
            size_gb: 20,
            volume_type: "gp3".into(),
            created: Some(now() - Duration::days(30)),
            tags: tags("dev"),
        }];
        let f = leak(PostureCheck {
            cfg: posture::from_settings(&t.deps.cfg.settings).unwrap(),
            posture: Box::new(Shared(aws)),
            region: "us-east-1".into(),
        });
        World {
            deps: t.deps,
            f,
            aws,
            notifier: t.notifier,
            ledger: t.ledger,
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, 6, 0, 0).unwrap()
    }

    /// The daily tick at `at`, its one record.
    async fn tick(w: &World, at: DateTime<Utc>) -> RecordReport {
        let inv = Invocation::at("req", at);
        let payload =
            json!({"nbaops": {"task": TASK, "at": at.to_rfc3339(), "id": format!("exec-{at}")}});
        let r = dispatch(w.f, payload, &Ctx::of::<PostureCheck>(w.deps, &inv))
            .await
            .unwrap();
        r.records.into_iter().next().unwrap()
    }

    /// (dedup key, severity, status) of every alert published so far.
    fn published(w: &World) -> Vec<(String, String, String)> {
        w.notifier
            .published()
            .iter()
            .map(|p| {
                let v: Value = serde_json::from_str(&p.message).unwrap();
                (
                    v["dedup_key"].as_str().unwrap().to_string(),
                    v["severity"].as_str().unwrap().to_string(),
                    v["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn a_finding_alerts_once_and_resolves_when_fixed() {
        let w = world(&[]);
        let rec = tick(&w, now()).await;
        assert!(rec.failed.is_none() && rec.not_for_me.is_none(), "{rec:?}");
        let p = published(&w);
        assert_eq!(
            p,
            [
                (
                    "posture#rds.public#rds:nbaops-dev-db".to_string(),
                    "P1".to_string(),
                    "firing".to_string()
                ),
                (
                    "posture-summary#2026-11-30".into(),
                    "P4".into(),
                    "firing".into()
                ),
            ]
        );
        assert!(rec.summary.contains("2 finding(s)"), "{}", rec.summary);
        assert!(
            rec.summary.contains("unused resources ~$1.60/month"),
            "{}",
            rec.summary
        );
        assert_eq!(w.ledger.len_with_prefix(OPEN_PK), 2);

        // Next day, unchanged: no second P1, only the day's summary.
        let rec = tick(&w, now() + Duration::days(1)).await;
        assert!(
            rec.summary.contains("0 new, 2 still open"),
            "{}",
            rec.summary
        );
        assert_eq!(published(&w).len(), 3);
        assert_eq!(published(&w)[2].0, "posture-summary#2026-12-01");

        // Someone made it private: the P1 resolves, the ledger forgets it.
        w.aws.dbs.lock().unwrap()[0].publicly_accessible = false;
        let rec = tick(&w, now() + Duration::days(2)).await;
        let p = published(&w);
        assert_eq!(
            p[3],
            (
                "posture#rds.public#rds:nbaops-dev-db".to_string(),
                "P1".to_string(),
                "resolved".to_string()
            )
        );
        assert!(rec.summary.contains("1 resolved"), "{}", rec.summary);
        assert_eq!(w.ledger.len_with_prefix(OPEN_PK), 1);
    }

    #[tokio::test]
    async fn a_finding_is_written_when_new_or_changed_and_each_parameter_group_read_once() {
        let w = world(&[]);
        let sk = open_sk("unused.volume", "ec2-volume:vol-orphan");
        let changed = |w: &World| -> String {
            let items = w.ledger.items.lock().unwrap();
            items[&(OPEN_PK.to_string(), sk.clone())]["last_changed"]
                .as_str()
                .unwrap()
                .to_string()
        };
        tick(&w, now()).await;
        let first = changed(&w);
        // Both databases share default.postgres16: one read.
        assert_eq!(w.aws.param_reads.lock().unwrap().len(), 1);
        tick(&w, now() + Duration::days(1)).await;
        assert_eq!(changed(&w), first, "unchanged: not written again");
        w.aws.volumes.lock().unwrap()[0].size_gb = 40;
        tick(&w, now() + Duration::days(2)).await;
        assert_ne!(changed(&w), first, "its detail changed: written");
        let items = w.ledger.items.lock().unwrap();
        let item = &items[&(OPEN_PK.to_string(), sk.clone())];
        assert_eq!(item["first_seen"], json!(now()));
    }

    #[tokio::test]
    async fn an_unreadable_source_resolves_nothing_and_says_so() {
        let w = world(&[]);
        tick(&w, now()).await;
        w.aws.fail("volumes");
        w.aws.volumes.lock().unwrap().clear();
        let rec = tick(&w, now() + Duration::days(1)).await;
        assert!(rec.summary.contains("NOT READ: volumes"), "{}", rec.summary);
        assert!(rec
            .notes
            .iter()
            .any(|n| n.contains("could not read EBS volumes")));
        assert_eq!(
            w.ledger.len_with_prefix(OPEN_PK),
            2,
            "the volume's finding stays open"
        );
        w.aws.heal();
        let rec = tick(&w, now() + Duration::days(2)).await;
        assert!(rec.summary.contains("1 resolved"), "{}", rec.summary);
        assert_eq!(w.ledger.len_with_prefix(OPEN_PK), 1);
    }

    const FIX_DEV: &[(&str, &str)] = &[
        ("NBAOPS_POSTURE__FIX__ENVS", "dev"),
        ("NBAOPS_POSTURE__PROD_ONLY_RULES", "rds.multi_az"),
        ("NBAOPS_GUARD__BLAST__MAX_PERCENT", "100"),
    ];

    fn unprotected(w: &World, protect: bool) {
        let mut dbs = w.aws.dbs.lock().unwrap();
        dbs[1].deletion_protection = false;
        if protect {
            dbs[1].tags.insert("nbaops:protect".into(), "true".into());
        }
    }

    #[tokio::test]
    async fn deletion_protection_is_turned_on_through_the_guard_where_fixes_run() {
        let w = world(FIX_DEV);
        unprotected(&w, false);
        let rec = tick(&w, now()).await;
        assert_eq!(rec.actions.len(), 1, "{:?}", rec.actions);
        let a = &rec.actions[0];
        assert_eq!(
            (a.action.as_str(), a.resource.as_str(), a.outcome),
            (
                "rds.enable_deletion_protection",
                "rds:nbaops-dev-ok",
                Outcome::Acted
            )
        );
        assert_eq!(
            *w.aws.log.lock().unwrap(),
            ["deletion_protection nbaops-dev-ok"]
        );
        // The next run finds it fixed and closes the finding.
        let rec = tick(&w, now() + Duration::days(1)).await;
        assert!(rec.actions.is_empty());
        assert!(rec.summary.contains("1 resolved"), "{}", rec.summary);
    }

    #[tokio::test]
    async fn dry_run_and_the_protect_tag_stop_the_fix_and_are_audited() {
        let w = world(&[FIX_DEV, &[("NBAOPS_GUARD__DRY_RUN", "true")]].concat());
        unprotected(&w, false);
        let rec = tick(&w, now()).await;
        assert_eq!(rec.actions[0].outcome, Outcome::WouldAct);
        assert!(w.aws.log.lock().unwrap().is_empty());

        let w = world(FIX_DEV);
        unprotected(&w, true);
        let rec = tick(&w, now()).await;
        assert_eq!(rec.actions[0].outcome, Outcome::Skipped);
        assert!(w.aws.log.lock().unwrap().is_empty());
        // No fix outside posture.fix.envs: a recommendation, no action at all.
        let w = world(&[("NBAOPS_POSTURE__PROD_ONLY_RULES", "rds.multi_az")]);
        unprotected(&w, false);
        let rec = tick(&w, now()).await;
        assert!(rec.actions.is_empty());
        assert!(w.aws.log.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn both_fixes_of_one_database_run_in_one_run() {
        let w = world(
            &[
                FIX_DEV,
                &[(
                    "NBAOPS_POSTURE__FIX__DEFAULT_TAGS",
                    r#"{"cost-center":"nba"}"#,
                )],
            ]
            .concat(),
        );
        unprotected(&w, false);
        w.aws.dbs.lock().unwrap()[1].tags.remove("cost-center");
        let rec = tick(&w, now()).await;
        let got: Vec<(&str, Outcome)> = rec
            .actions
            .iter()
            .map(|a| (a.action.as_str(), a.outcome))
            .collect();
        assert_eq!(
            got,
            [
                ("rds.enable_deletion_protection", Outcome::Acted),
                ("rds.add_tags", Outcome::Acted)
            ]
        );
        assert_eq!(
            *w.aws.log.lock().unwrap(),
            [
                "deletion_protection nbaops-dev-ok",
                "tags arn:aws:rds:us-east-1:123456789012:db:nbaops-dev-ok cost-center=nba"
            ]
        );
    }

    #[tokio::test]
    async fn a_failed_fix_is_a_p3_with_the_command() {
        let w = world(FIX_DEV);
        unprotected(&w, false);
        w.aws.fail("enable_deletion_protection");
        let rec = tick(&w, now()).await;
        assert_eq!(rec.actions[0].outcome, Outcome::Failed);
        let a = rec
            .alerts
            .iter()
            .find(|a| a.dedup_key.starts_with("posture-fix#"))
            .unwrap();
        assert_eq!(a.severity, Severity::P3);
        assert!(
            a.actions_taken
                .iter()
                .any(|t| t.contains("modify-db-instance")),
            "{a:?}"
        );
    }

    #[tokio::test]
    async fn other_tasks_and_events_are_not_for_me() {
        let w = world(&[]);
        let inv = Invocation::at("req", now());
        let ctx = Ctx::of::<PostureCheck>(w.deps, &inv);
        let r = dispatch(w.f, json!({"nbaops": {"task": "offhours"}}), &ctx)
            .await
            .unwrap();
        assert!(r.records[0]
            .not_for_me
            .as_deref()
            .unwrap()
            .contains("runs 'posture-check'"));
        let sns: Value = serde_json::from_str(include_str!(
            "../../../events/cloudwatch-alarm/eventbridge-single-metric-alarm.json"
        ))
        .unwrap();
        let r = dispatch(w.f, sns, &ctx).await.unwrap();
        assert!(r.records[0].not_for_me.is_some());
        assert!(w.notifier.published().is_empty());
        assert!(w.aws.log.lock().unwrap().is_empty());
    }
}
