//! Translates Cost Anomaly Detection alerts, AWS Budgets notifications and the daily
//! `cost-daily-check` tick into enriched alerts and, where allowed, guarded containment of a
//! non-production environment (its Auto Scaling groups to zero, its RDS instances stopped).

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::{json, Value};

use nbaops_shared::adapters::{AwsClients, SdkAutoScaling, SdkCostExplorer, SdkRds, SdkRdsPower};
use nbaops_shared::alerts::Severity;
use nbaops_shared::config::cost::{self, CostConfig};
use nbaops_shared::config::Env;
use nbaops_shared::error::NbaopsError;
use nbaops_shared::events::{self, BudgetAlert, BudgetKind, Inbound, ScheduledTick};
use nbaops_shared::guard::{
    AuditRecord, Bounds, Explanation, GuardStep, Observation, Outcome, ProposedAction,
};
use nbaops_shared::ports::{AutoScaling, CostExplorer, CostGrouping, CostQuery, Rds, RdsPower};
use nbaops_shared::runtime::{Ctx, Deps, Function, InvocationReport, Live, RecordReport, Work};
use nbaops_shared::Result;

use crate::plan::{
    anomaly_evidence, anomaly_impact, attribute, budget_evidence, budget_overrun, containment,
    daily_window, env_in_name, env_tag_value, find_spikes, plan_db_containment,
    plan_group_containment, severity_for, tag_evidence, Attribution, Containment, DbStep, Evidence,
    GroupStep, Spike,
};

pub const FUNCTION: &str = "cost-anomaly";
/// Scheduler input `{"nbaops": {"task": "cost-daily-check"}}`.
pub const DAILY_TASK: &str = "cost-daily-check";

/// cost-anomaly's `cost` section and the ports it calls, built once at init.
pub struct CostAnomaly {
    pub cfg: CostConfig,
    pub ce: Box<dyn CostExplorer>,
    pub asg: Box<dyn AutoScaling>,
    pub rds: Box<dyn Rds>,
    pub power: Box<dyn RdsPower>,
}

impl Function for CostAnomaly {
    const NAME: &'static str = FUNCTION;
    const TAKES: &'static str =
        "Cost Anomaly Detection alerts, AWS Budgets notifications and the 'cost-daily-check' schedule";
    type Reply = InvocationReport;

    /// The `cost` section validated; Cost Explorer, Auto Scaling, RDS and RDS stop/start.
    async fn init(deps: &Deps, aws: &AwsClients) -> Result<Self> {
        Ok(CostAnomaly {
            cfg: cost::from_settings(&deps.cfg.settings)?,
            ce: Box::new(SdkCostExplorer(aws.costexplorer())),
            asg: Box::new(SdkAutoScaling(aws.autoscaling())),
            rds: Box::new(SdkRds(aws.rds())),
            power: Box::new(SdkRdsPower(aws.rds())),
        })
    }

    async fn on(&self, inbound: Inbound, ctx: &Ctx<'_>) -> Result<RecordReport> {
        match inbound {
            Inbound::CostAnomaly(a) => self.on_anomaly(&a, ctx).await,
            Inbound::Budget(b) => self.on_budget(&b, ctx).await,
            Inbound::Schedule(t) if t.task().as_deref() == Some(DAILY_TASK) => {
                self.on_daily_check(&t, ctx).await
            }
            other => Ok(ctx.not_mine(&other)),
        }
    }

    /// An approved containment (issue #19, `approval.asg.contain_to_zero` / `approval.rds.stop`,
    /// SPEC default `always`): the group's min / max / desired, or the instance's status, and the
    /// environment its env tag (`cost.env_tag`) names, in the shape of the plan's `before`. Those
    /// are exactly the facts the plan rests on (the sizes it saves for the undo, the instance
    /// being `available`, the resource belonging to the contained environment): a group resized,
    /// an instance stopped or re-tagged meanwhile makes the plan wrong, and the key that moved is
    /// named. Nothing volatile is compared.
    async fn live(&self, a: &ProposedAction, _ctx: &Ctx<'_>) -> Result<Live> {
        let tag = &self.cfg.env_tag;
        match contained_target(a) {
            Some(Target::Group(name)) => Ok(match self.asg.describe_group(name).await? {
                None => Live::Gone,
                Some(g) => Live::Is {
                    state: group_before(
                        g.min_size,
                        g.max_size,
                        g.desired,
                        env_tag_value(&g.tags, tag),
                    ),
                    tags: g.tags,
                },
            }),
            Some(Target::Db(id)) => Ok(match self.rds.describe_instance(id).await? {
                None => Live::Gone,
                Some(db) => Live::Is {
                    state: db_before(&db.status, env_tag_value(&db.tags, tag)),
                    tags: db.tags,
                },
            }),
            None => Ok(Live::NotCarriedOut),
        }
    }

    /// The approved plan, carried out as the immediate path does it ([`CostAnomaly::contain`]):
    /// the saved size / status under `contained#<env>` first, then 0/0/0 or the stop.
    async fn apply(&self, a: &ProposedAction, ctx: &Ctx<'_>) -> Result<()> {
        let env = plan_env(a)?;
        let by = format!("approved/{}", ctx.inv.request_id);
        self.contain(a, env, &by, ctx.deps, ctx.now()).await
    }
}

/// What a containment plan changes: an Auto Scaling group or an RDS instance.
enum Target<'a> {
    Group(&'a str),
    Db(&'a str),
}

/// The group or instance of a containment plan (`asg.contain_to_zero` on `asg:<name>`,
/// `rds.stop` on `rds:<id>`); `None` for anything else.
fn contained_target(a: &ProposedAction) -> Option<Target<'_>> {
    let (kind, name) = a.resource.split_once(':')?;
    if name.is_empty() {
        return None;
    }
    match (a.action.as_str(), kind) {
        ("asg.contain_to_zero", "asg") => Some(Target::Group(name)),
        ("rds.stop", "rds") => Some(Target::Db(name)),
        _ => None,
    }
}

/// A group containment plan's `before` (and [`Function::live`]'s state): its sizes and the
/// environment its env tag names.
fn group_before(min: i32, max: i32, desired: i32, env: Option<String>) -> Value {
    json!({"min": min, "max": max, "desired": desired, "env": env})
}

/// An instance stop plan's `before` (and [`Function::live`]'s state).
fn db_before(status: &str, env: Option<String>) -> Value {
    json!({"status": status, "env": env})
}

/// The non-production environment a containment plan's `before` names (production: refused,
/// whatever the plan says).
fn plan_env(a: &ProposedAction) -> Result<Env> {
    let env = a
        .before
        .get("env")
        .and_then(Value::as_str)
        .and_then(|e| e.parse::<Env>().ok())
        .ok_or_else(|| {
            NbaopsError::InvalidEvent(format!(
                "containment plan of {} names no environment: {}",
                a.resource, a.before
            ))
        })?;
    if env == Env::Prod {
        return Err(NbaopsError::InvalidEvent(format!(
            "{}: production is never contained",
            a.resource
        )));
    }
    Ok(env)
}

/// What containment saves before it acts, so offhours or an operator can undo it, read from the
/// plan alone (its `before`): the immediate path and an approved plan save the same record.
fn saved_of(a: &ProposedAction, by: &str, at: DateTime<Utc>) -> Option<Value> {
    let b = &a.before;
    match contained_target(a)? {
        Target::Group(name) => Some(
            json!({"kind": "asg", "name": name, "min": b.get("min")?, "max": b.get("max")?, "desired": b.get("desired")?, "event_id": by, "at": at.to_rfc3339()}),
        ),
        Target::Db(id) => Some(
            json!({"kind": "rds", "id": id, "status": b.get("status")?, "event_id": by, "at": at.to_rfc3339()}),
        ),
    }
}

fn money(v: f64) -> String {
    format!("${v:.2}")
}

fn day_of(s: Option<&str>) -> Option<NaiveDate> {
    s.and_then(|s| s.get(..10))
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
}

fn attribution_words(attr: &Attribution) -> String {
    match attr {
        Attribution::Env { env, evidence } => format!(
            "{env} (from {})",
            evidence
                .iter()
                .map(|e| e.source.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Attribution::Unattributable { reason } => format!("unattributed: {reason}"),
    }
}

/// "AWS Lambda (USE1-Lambda-GB-Second, us-east-1, nbaops-dev)" for each root cause.
fn root_cause_words(a: &events::CostAnomaly) -> Vec<String> {
    a.root_causes
        .iter()
        .map(|rc| {
            let mut s = rc
                .service
                .clone()
                .unwrap_or_else(|| "unknown service".into());
            let extra: Vec<&str> = [
                rc.usage_type.as_deref(),
                rc.region.as_deref(),
                rc.account_name.as_deref().or(rc.account.as_deref()),
            ]
            .into_iter()
            .flatten()
            .collect();
            if !extra.is_empty() {
                s.push_str(&format!(" ({})", extra.join(", ")));
            }
            s
        })
        .collect()
}

/// What an anomaly or a budget notification comes to: the one alert of the event, and whether
/// containment may act on it.
struct Finding {
    severity: Severity,
    attribution: Attribution,
    /// `cost:anomaly/<id>`, `cost:budget/<name>`.
    resource: String,
    dedup_key: String,
    details: Value,
    /// Spend (an anomaly, an ACTUAL budget), not a forecast.
    is_spend: bool,
    /// What was seen, in numbers, and the rule it fell under: the "because" of a containment.
    because: Explanation,
}

/// One containment of an environment: why and how urgent.
struct ContainmentRun {
    env: Env,
    reason: String,
    because: Explanation,
    severity: Severity,
}

/// Ledger key of what containment changed in `env`, so it can be undone.
pub fn contained_pk(env: Env) -> String {
    format!("contained#{env}")
}

impl CostAnomaly {
    /// A containment plan's effect, the one both paths run through the guard (the immediate path
    /// and an approved plan): first what undoes it (`saved_of`) under `contained#<env>`, kept
    /// `audit.ttl_days`, so `nbaops status` lists the environment as contained; then the group to
    /// 0/0/0 or the instance stopped. `by`: the event (or approval delivery) that did it.
    async fn contain(
        &self,
        a: &ProposedAction,
        env: Env,
        by: &str,
        deps: &Deps,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let bad = || NbaopsError::InvalidEvent(format!("containment plan not understood: {a:?}"));
        let saved = saved_of(a, by, now).ok_or_else(bad)?;
        let until = now.timestamp() + deps.cfg.guard.audit_ttl_days * 86_400;
        deps.ledger
            .put(&contained_pk(env), &a.resource, &saved, Some(until))
            .await?;
        match contained_target(a).ok_or_else(bad)? {
            Target::Group(name) => self.asg.update_group_size(name, 0, 0, 0).await,
            Target::Db(id) => self.power.stop_instance(id).await,
        }
    }

    /// The action through the guard, its effect [`CostAnomaly::contain`].
    async fn act(
        &self,
        action: &ProposedAction,
        env: Env,
        w: &mut Work<'_>,
    ) -> Result<AuditRecord> {
        let ctx = w.ctx;
        let by = w.rec.event_id.clone();
        w.act(action, || {
            self.contain(action, env, &by, ctx.deps, ctx.now())
        })
        .await
    }

    /// Cost allocation tag evidence from Cost Explorer: the root-cause services' cost over the
    /// anomaly's days, grouped by the env tag. A failure only costs the evidence, never the alert.
    async fn tag_attribution(&self, a: &events::CostAnomaly, w: &mut Work<'_>) -> Option<Evidence> {
        let services: Vec<String> = a
            .root_causes
            .iter()
            .filter_map(|rc| rc.service.clone())
            .collect();
        if !self.cfg.attribution_cost_explorer || services.is_empty() {
            return None;
        }
        let start = day_of(a.start.as_deref())?;
        let end = day_of(a.end.as_deref())
            .filter(|e| *e > start)
            .unwrap_or(start + Duration::days(1));
        let q = CostQuery {
            start,
            end,
            grouping: CostGrouping::Tag(self.cfg.env_tag.clone()),
            services,
            metric: self.cfg.metric.clone(),
        };
        match self.ce.daily_cost(&q).await {
            Ok(costs) => {
                let (ev, note) =
                    tag_evidence(&costs, &self.cfg.env_tag, self.cfg.min_share_percent);
                w.note(note);
                ev
            }
            Err(e) => {
                w.note(format!("Cost Explorer attribution unavailable: {e}"));
                None
            }
        }
    }

    async fn on_anomaly(&self, a: &events::CostAnomaly, ctx: &Ctx<'_>) -> Result<RecordReport> {
        // The summary needs the attribution, which may ask Cost Explorer (and note why not).
        let mut w = ctx.work(&a.event_id, "cost_anomaly", "");
        let (impact, percent) = anomaly_impact(a);
        let mut evidence = anomaly_evidence(a, &self.cfg);
        evidence.extend(self.tag_attribution(a, &mut w).await);
        let attribution = attribute(evidence);
        let causes = root_cause_words(a);
        let pct = percent
            .map(|p| format!(" ({p:.0} % above expected)"))
            .unwrap_or_default();
        let env_label = attribution
            .env()
            .map(|e| format!("in {e}"))
            .unwrap_or_else(|| "(environment unattributed)".into());
        w.rec.summary = format!(
            "cost anomaly {}{pct} {env_label}: {}",
            money(impact),
            if causes.is_empty() {
                "no root cause given".into()
            } else {
                causes.join("; ")
            }
        );
        let details = json!({
            "anomaly_id": a.anomaly_id,
            "monitor": a.monitor_name.as_deref().or(a.monitor_arn.as_deref()),
            "window": {"start": a.start, "end": a.end},
            "impact_usd": impact,
            "impact_percent": percent,
            "expected_usd": a.total_expected,
            "actual_usd": a.total_actual,
            "max_daily_impact_usd": a.max_impact,
            "root_causes": a.root_causes,
            "attribution": attribution,
            "link": a.anomaly_url,
            "delivery": a.delivery,
        });
        let finding = Finding {
            severity: severity_for(&self.cfg, impact, percent),
            because: self.cost_because(
                format!("SPEC 6 cost anomaly {}", a.anomaly_id),
                "impact",
                impact,
                percent,
            ),
            attribution,
            resource: format!("cost:anomaly/{}", a.anomaly_id),
            dedup_key: format!("cost-anomaly#{}", a.anomaly_id),
            details,
            is_spend: true,
        };
        self.finish(finding, w).await
    }

    async fn on_budget(&self, b: &BudgetAlert, ctx: &Ctx<'_>) -> Result<RecordReport> {
        let (overrun, percent) = budget_overrun(b);
        let attribution = attribute(budget_evidence(b, &self.cfg));
        let kind = match b.kind {
            BudgetKind::Actual => "ACTUAL",
            BudgetKind::Forecasted => "FORECASTED",
            BudgetKind::Unknown => "unknown-kind",
        };
        let spend = match b.kind {
            BudgetKind::Forecasted => b.forecast.or(b.actual),
            _ => b.actual.or(b.forecast),
        };
        let summary = format!(
            "budget {} {kind}: {} of {}{}{}",
            b.budget_name,
            spend.map(money).unwrap_or_else(|| "?".into()),
            b.limit.map(money).unwrap_or_else(|| "?".into()),
            b.threshold
                .as_deref()
                .map(|t| format!(" (alert threshold {t})"))
                .unwrap_or_default(),
            if overrun > 0.0 {
                format!(", {} over", money(overrun))
            } else {
                String::new()
            }
        );
        let w = ctx.work(&b.event_id, "budget", summary);
        let details = json!({
            "budget": b.budget_name,
            "kind": kind,
            "threshold": b.threshold,
            "actual": b.actual,
            "forecast": b.forecast,
            "limit": b.limit,
            "currency": b.currency,
            "overrun": overrun,
            "overrun_percent": percent,
            "attribution": attribution,
            "delivery": b.delivery,
        });
        let finding = Finding {
            severity: severity_for(&self.cfg, overrun, percent),
            because: self.cost_because(
                format!("SPEC 6 budget {} {kind}", b.budget_name),
                "overrun",
                overrun,
                percent,
            ),
            attribution,
            resource: format!("cost:budget/{}", b.budget_name),
            dedup_key: format!("cost-budget#{}#{kind}", b.budget_name),
            details,
            is_spend: b.kind == BudgetKind::Actual,
        };
        self.finish(finding, w).await
    }

    /// Contains when the plan says so, then publishes the one alert of the event, carrying what
    /// was done and how to undo it.
    async fn finish(&self, f: Finding, mut w: Work<'_>) -> Result<RecordReport> {
        w.note(format!(
            "environment: {}",
            attribution_words(&f.attribution)
        ));
        let summary = w.rec.summary.clone();
        let mut alert = w
            .ctx
            .alert(f.severity, &f.resource, f.dedup_key, summary.clone())
            .with_details(f.details);
        // The attributed environment's alert; unattributed, the one this function runs in.
        if let Some(env) = f.attribution.env() {
            alert.env = env.to_string();
        }
        match containment(&self.cfg, &f.attribution, f.severity, f.is_spend) {
            Containment::AlertOnly(why) => {
                w.note(why.clone());
                alert = alert.with_action(why);
            }
            Containment::Contain(env) => {
                let run = ContainmentRun {
                    env,
                    reason: format!("cost containment of {env}: {summary}"),
                    because: f
                        .because
                        .clone()
                        .key("cost.contain.envs")
                        .key("cost.contain.resources")
                        .key("cost.contain.min_severity"),
                    severity: f.severity,
                };
                w = w.with_fleet_size(self.cfg.resources(env).count());
                let undo = self.contain_env(&run, &mut w).await?;
                for a in &w.rec.actions {
                    alert = alert.with_action(a.sentence.clone());
                }
                if !undo.is_empty() {
                    alert = alert.with_runbook(format!(
                        "nbaops contained {env}. To undo: {}. (A stopped RDS instance starts again by itself after 7 days.)",
                        undo.join("; ")
                    ));
                }
            }
        }
        w.raise(alert).await?;
        Ok(w.rec)
    }

    /// Scales every listed group of the environment to zero (sizes saved first) and stops its
    /// RDS instances, each through the guard with the environment's resource count as the fleet.
    /// Returns the undo commands of what was actually done.
    async fn contain_env(&self, run: &ContainmentRun, w: &mut Work<'_>) -> Result<Vec<String>> {
        let resources = self.cfg.resources(run.env);
        let mut undo = Vec::new();
        for name in &resources.asgs {
            undo.extend(self.contain_group(name, run, w).await?);
        }
        for id in &resources.rds {
            undo.extend(self.stop_db(id, run, w).await?);
        }
        let stopped = w
            .rec
            .actions
            .iter()
            .filter(|a| a.stopped_by == Some(GuardStep::BlastRadius))
            .count();
        if stopped > 0 {
            w.note(format!(
                "containment partial: {stopped} action(s) stopped by the blast radius; raise guard.blast.max_percent to contain a whole environment in one run"
            ));
        }
        Ok(undo)
    }

    /// The amount and its share, each against the severity threshold it reached (SPEC 6: P2 at
    /// `cost.severity.high_usd` or more, or at `cost.severity.high_percent` or more with at
    /// least `cost.severity.percent_min_usd`).
    fn cost_because(
        &self,
        rule: String,
        what: &str,
        usd: f64,
        percent: Option<f64>,
    ) -> Explanation {
        let c = &self.cfg;
        let mut e = Explanation::new("", "", "", rule);
        e = e.observe(if usd >= c.high_usd {
            Observation::against(what, usd, "USD", ">=", c.high_usd)
        } else {
            Observation::value(what, usd, "USD")
        });
        if let Some(p) = percent {
            e = e.observe(if p >= c.high_percent && usd >= c.percent_min_usd {
                Observation::against(format!("{what} share"), p, "%", ">=", c.high_percent)
            } else {
                Observation::value(format!("{what} share"), p, "%")
            });
        }
        e.key("cost.severity.high_usd")
            .key("cost.severity.high_percent")
    }

    /// The note for a listed resource whose env tag names another environment.
    fn refused(&self, resource: &str, env: Env, seen: Option<String>) -> String {
        format!(
            "{resource}: tag {}={} is not {env}: refused (check cost.contain.resources)",
            self.cfg.env_tag,
            seen.unwrap_or_else(|| "(none)".into())
        )
    }

    /// One group to 0/0/0, its sizes saved first: the undo command when it was done.
    async fn contain_group(
        &self,
        name: &str,
        run: &ContainmentRun,
        w: &mut Work<'_>,
    ) -> Result<Option<String>> {
        let env = run.env;
        let resource = format!("asg:{name}");
        let group = self.asg.describe_group(name).await?;
        let (min, max, desired) =
            match plan_group_containment(group.as_ref(), env, &self.cfg.env_tag) {
                GroupStep::Missing => {
                    w.note(format!("{resource} does not exist: skipped"));
                    return Ok(None);
                }
                GroupStep::WrongEnv(seen) => {
                    w.note(self.refused(&resource, env, seen));
                    return Ok(None);
                }
                GroupStep::AlreadyZero => {
                    w.note(format!("{resource} is already at 0/0/0"));
                    return Ok(None);
                }
                GroupStep::ToZero { min, max, desired } => (min, max, desired),
            };
        let action = ProposedAction {
            action: "asg.contain_to_zero".into(),
            resource: resource.clone(),
            tags: group.map(|g| g.tags).unwrap_or_default(),
            reason: run.reason.clone(),
            severity: run.severity,
            // Opted in per non-production environment by cost.contain.envs.
            disruptive: false,
            bounds: Some(Bounds {
                proposed: 0.0,
                min: 0.0,
                max: desired as f64,
            }),
            cooldown_key: "cost.contain".into(),
            cooldown_seconds: self.cfg.contain_cooldown_seconds,
            before: group_before(min, max, desired, Some(env.to_string())),
            after: json!({"min": 0, "max": 0, "desired": 0}),
            // The environment in the change and the anomaly in the rule: an approval request
            // says what it is for.
            explanation: run.because.doing(
                "contain",
                "Contained",
                format!("{name} (env {env}) {min}/{max}/{desired} → 0/0/0"),
            ),
        };
        let audit = self.act(&action, env, w).await?;
        w.note(format!(
            "{resource}: {min}/{max}/{desired} -> 0/0/0: {}",
            audit.outcome_words()
        ));
        Ok((audit.outcome == Outcome::Acted).then(|| {
            format!(
                "aws autoscaling update-auto-scaling-group --auto-scaling-group-name {name} --min-size {min} --max-size {max} --desired-capacity {desired}"
            )
        }))
    }

    /// One RDS instance stopped: the undo command when it was done.
    async fn stop_db(
        &self,
        id: &str,
        run: &ContainmentRun,
        w: &mut Work<'_>,
    ) -> Result<Option<String>> {
        let env = run.env;
        let resource = format!("rds:{id}");
        let db = self.rds.describe_instance(id).await?;
        match plan_db_containment(db.as_ref(), env, &self.cfg.env_tag) {
            DbStep::Missing => {
                w.note(format!("{resource} does not exist: skipped"));
                return Ok(None);
            }
            DbStep::WrongEnv(seen) => {
                w.note(self.refused(&resource, env, seen));
                return Ok(None);
            }
            DbStep::AlreadyStopped(s) => {
                w.note(format!("{resource} is already {s}"));
                return Ok(None);
            }
            DbStep::NotAvailable(s) => {
                w.note(format!(
                    "{resource} is '{s}', not 'available': not stopping it now"
                ));
                return Ok(None);
            }
            DbStep::Stop => {}
        }
        let action = ProposedAction {
            action: "rds.stop".into(),
            resource: resource.clone(),
            tags: db.map(|d| d.tags).unwrap_or_default(),
            reason: run.reason.clone(),
            severity: run.severity,
            disruptive: false,
            bounds: None,
            cooldown_key: "cost.contain".into(),
            cooldown_seconds: self.cfg.contain_cooldown_seconds,
            before: db_before("available", Some(env.to_string())),
            after: json!({"status": "stopped"}),
            explanation: run
                .because
                .doing("stop", "Stopped", format!("{id} (env {env})")),
        };
        let audit = self.act(&action, env, w).await?;
        w.note(format!("{resource}: stop: {}", audit.outcome_words()));
        Ok((audit.outcome == Outcome::Acted)
            .then(|| format!("aws rds start-db-instance --db-instance-identifier {id}")))
    }

    async fn on_daily_check(&self, tick: &ScheduledTick, ctx: &Ctx<'_>) -> Result<RecordReport> {
        let (start, end, day) = daily_window(ctx.now(), self.cfg.baseline_days);
        let mut w = ctx.work(
            &tick.event_id,
            "schedule",
            format!(
                "daily cost check of {day} against the {} days before",
                self.cfg.baseline_days
            ),
        );
        let mut spikes: Vec<Spike> = Vec::new();
        for (grouping, dimension) in [
            (CostGrouping::Service, "service".to_string()),
            (
                CostGrouping::Tag(self.cfg.env_tag.clone()),
                self.cfg.env_tag.clone(),
            ),
        ] {
            let q = CostQuery {
                start,
                end,
                grouping,
                services: vec![],
                metric: self.cfg.metric.clone(),
            };
            let costs = self.ce.daily_cost(&q).await?;
            if costs.is_empty() {
                w.note(format!(
                    "Cost Explorer returned no cost by {dimension} for {start}..{end}"
                ));
                continue;
            }
            let found = find_spikes(&costs, &dimension, day, &self.cfg);
            w.note(format!(
                "by {dimension}: {} group(s), {} spike(s)",
                costs
                    .iter()
                    .map(|c| c.key.as_str())
                    .collect::<std::collections::BTreeSet<_>>()
                    .len(),
                found.len()
            ));
            spikes.extend(found);
        }
        for s in &spikes {
            self.raise_spike(s, &mut w).await?;
        }
        if spikes.is_empty() {
            w.note("no spike");
        }
        Ok(w.rec)
    }

    /// The alert of one daily spike (never containment).
    async fn raise_spike(&self, s: &Spike, w: &mut Work<'_>) -> Result<()> {
        let label = if s.key.is_empty() {
            "(untagged)".to_string()
        } else {
            s.key.clone()
        };
        let (env, what) = if s.dimension == "service" {
            (None, label.clone())
        } else {
            (env_in_name(&s.key), format!("{}={label}", s.dimension))
        };
        let summary = format!(
            "daily cost spike: {what} {} on {} vs {}/day baseline (+{}{})",
            money(s.cost),
            s.day,
            money(s.baseline),
            money(s.increase),
            s.percent
                .map(|p| format!(", +{p:.0} %"))
                .unwrap_or_else(|| ", new".into())
        );
        let mut alert = w
            .ctx
            .alert(
                s.severity,
                &format!("cost:{}/{}", s.dimension, label),
                format!("cost-spike#{}:{}#{}", s.dimension, label, s.day),
                summary.clone(),
            )
            .with_details(json!({"spike": s, "metric": self.cfg.metric, "baseline_days": self.cfg.baseline_days}))
            .with_action("alert only: the daily check never contains")
            .with_runbook("Open Cost Explorer on that day grouped by the same dimension, then by usage type, to find the resource behind it.");
        // The environment the tag names; otherwise the one this function runs in.
        if let Some(env) = env {
            alert.env = env.to_string();
        }
        w.raise(alert).await?;
        w.note(summary);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use nbaops_shared::fakes::*;
    use nbaops_shared::ports::*;
    use nbaops_shared::runtime::{dispatch, Invocation};

    const MULTI: &str = include_str!("../../../events/cost/sns-anomaly-multiple-root-causes.json");
    const SERVICE_ONLY: &str = include_str!("../../../events/cost/sns-anomaly-service-only.json");
    const EVENTBRIDGE: &str = include_str!("../../../events/cost/eventbridge-anomaly.json");
    const BUDGET_FORECAST: &str = include_str!("../../../events/cost/budget-json-forecast.json");
    const BUDGET_TEXT: &str = include_str!("../../../events/cost/budget-plain-text-actual.json");
    const DAILY: &str = include_str!("../../../events/schedule/cost-daily-check.json");
    const ALARM: &str =
        include_str!("../../../events/cloudwatch-alarm/eventbridge-single-metric-alarm.json");

    struct World {
        deps: &'static Deps,
        f: &'static CostAnomaly,
        asg: &'static FakeAutoScaling,
        power: &'static FakeRdsPower,
        ce: &'static FakeCostExplorer,
        notifier: &'static FakeNotifier,
        ledger: &'static FakeLedger,
    }

    fn tags(env: &str, protect: bool) -> Tags {
        let mut t = Tags::new();
        t.insert("env".into(), env.into());
        if protect {
            t.insert("nbaops:protect".into(), "true".into());
        }
        t
    }

    /// Containment of `test` on, with the SPEC's default approval policy (`always`): it asks.
    const CONTAIN_ASKS: &[(&str, &str)] = &[
        ("NBAOPS_COST__CONTAIN__ENVS", "test"),
        (
            "NBAOPS_COST__CONTAIN__RESOURCES",
            r#"{"test":{"asgs":["nbaops-test-web"],"rds":["nbaops-test-db"]}}"#,
        ),
        ("NBAOPS_GUARD__BLAST__MAX_PERCENT", "100"),
    ];

    /// The immediate path: containment of `test` on, and an operator who set both approval
    /// policies to `never` (the guard decides alone).
    const CONTAIN_TEST: &[(&str, &str)] = &[
        ("NBAOPS_COST__CONTAIN__ENVS", "test"),
        (
            "NBAOPS_COST__CONTAIN__RESOURCES",
            r#"{"test":{"asgs":["nbaops-test-web"],"rds":["nbaops-test-db"]}}"#,
        ),
        ("NBAOPS_GUARD__BLAST__MAX_PERCENT", "100"),
        ("NBAOPS_APPROVAL__ASG__CONTAIN_TO_ZERO", "never"),
        ("NBAOPS_APPROVAL__RDS__STOP", "never"),
    ];

    fn world(extra: &[(&str, &str)], protect: bool) -> World {
        let mut pairs = vec![(
            "NBAOPS_ALERTS_TOPIC_ARN",
            "arn:aws:sns:us-east-1:123456789012:nbaops-dev-alerts",
        )];
        pairs.extend_from_slice(extra);
        let t = test_deps(FUNCTION, &pairs).unwrap();
        let asg = leak(FakeAutoScaling::with(vec![GroupState {
            name: "nbaops-test-web".into(),
            min_size: 1,
            max_size: 4,
            desired: 2,
            in_service: 2,
            tags: tags("test", protect),
            activity_in_progress: false,
        }]));
        let rds = leak(FakeRds::with(vec![DbInstanceState {
            id: "nbaops-test-db".into(),
            arn: None,
            class: "db.t3.micro".into(),
            status: "available".into(),
            engine: "postgres".into(),
            multi_az: false,
            endpoint: None,
            pending_class: None,
            tags: tags("test", false),
        }]));
        let power = leak(FakeRdsPower::default());
        let ce = leak(FakeCostExplorer::default());
        let f = leak(CostAnomaly {
            cfg: cost::from_settings(&t.deps.cfg.settings).unwrap(),
            ce: Box::new(Shared(ce)),
            asg: Box::new(Shared(asg)),
            rds: Box::new(Shared(rds)),
            power: Box::new(Shared(power)),
        });
        World {
            deps: t.deps,
            f,
            asg,
            power,
            ce,
            notifier: t.notifier,
            ledger: t.ledger,
        }
    }

    fn now() -> chrono::DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }

    async fn handle(w: &World, payload: Value, request_id: &str) -> Result<InvocationReport> {
        let inv = Invocation::at(request_id, now());
        dispatch(w.f, payload, &Ctx::of::<CostAnomaly>(w.deps, &inv)).await
    }

    async fn run(w: &World, payload: Value) -> InvocationReport {
        handle(w, payload, "req").await.unwrap()
    }

    /// The fixture as if it came from the nbaops-test account and monitor.
    fn as_test_env(raw: &str) -> Value {
        serde_json::from_str(&raw.replace("nbaops-dev", "nbaops-test")).unwrap()
    }

    fn mutations(w: &World) -> usize {
        w.asg.mutations().len() + w.power.mutations().len()
    }

    #[tokio::test]
    async fn every_fixture_alerts_with_severity_and_attribution_and_never_acts_by_default() {
        let w = world(&[], false);
        let cases = [
            (MULTI, Severity::P2, "dev"),
            (SERVICE_ONLY, Severity::P3, "unattributed"),
            (EVENTBRIDGE, Severity::P2, "unattributed"),
            (BUDGET_FORECAST, Severity::P3, "dev"),
            (BUDGET_TEXT, Severity::P3, "dev"),
        ];
        for (raw, sev, env) in cases {
            let r = run(&w, serde_json::from_str(raw).unwrap()).await;
            let rec = &r.records[0];
            assert_eq!(rec.alerts.len(), 1, "{rec:?}");
            assert_eq!(rec.alerts[0].severity, sev, "{}", rec.summary);
            let env_note = rec
                .notes
                .iter()
                .find(|n| n.starts_with("environment:"))
                .unwrap();
            assert!(
                env_note.contains(env) || rec.summary.contains(env),
                "{env_note} / {}",
                rec.summary
            );
            assert!(rec.actions.is_empty());
        }
        assert_eq!(mutations(&w), 0);
        assert_eq!(w.notifier.published().len(), 5);
        let multi: Value = serde_json::from_str(&w.notifier.published()[0].message).unwrap();
        assert_eq!(multi["details"]["root_causes"].as_array().unwrap().len(), 2);
        assert_eq!(multi["details"]["impact_usd"], 182.4);
        assert!(multi["summary"]
            .as_str()
            .unwrap()
            .contains("USE1-BoxUsage:m6i.2xlarge"));
        assert!(multi["actions_taken"][0]
            .as_str()
            .unwrap()
            .contains("containment disabled for dev"));
        let unattributed: Value = serde_json::from_str(&w.notifier.published()[1].message).unwrap();
        assert!(unattributed["actions_taken"][0]
            .as_str()
            .unwrap()
            .contains("never acting"));
    }

    #[tokio::test]
    async fn cost_allocation_tag_attributes_a_service_only_anomaly() {
        let w = world(&[], false);
        let d = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
        w.ce.add(CostGrouping::Tag("env".into()), d, "test", 11.0);
        w.ce.add(CostGrouping::Tag("env".into()), d, "", 1.0);
        let r = run(&w, serde_json::from_str(SERVICE_ONLY).unwrap()).await;
        let q = &w.ce.queries()[0];
        assert_eq!(q.services, vec!["AWS Lambda"]);
        assert_eq!((q.start, q.end), (d, d + Duration::days(1)));
        assert_eq!(
            r.records[0].alerts[0].env, "test",
            "{:?}",
            r.records[0].notes
        );
        // A Cost Explorer outage costs the evidence, not the alert.
        *w.ce.fail.lock().unwrap() = true;
        let r = run(&w, serde_json::from_str(SERVICE_ONLY).unwrap()).await;
        assert_eq!(r.records[0].alerts.len(), 1);
        assert!(r.records[0].notes.iter().any(|n| n.contains("unavailable")));
    }

    #[tokio::test]
    async fn contains_test_env_saves_sizes_and_says_how_to_undo() {
        let w = world(CONTAIN_TEST, false);
        let r = run(&w, as_test_env(MULTI)).await;
        let rec = &r.records[0];
        assert_eq!(
            w.asg.mutations(),
            vec!["update_group_size nbaops-test-web 0 0 0"],
            "{:?}",
            rec.notes
        );
        assert_eq!(w.power.mutations(), vec!["stop_instance nbaops-test-db"]);
        assert!(rec.actions.iter().all(|a| a.outcome == Outcome::Acted));
        let saved = w
            .ledger
            .get("contained#test", "asg:nbaops-test-web")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                saved["min"].clone(),
                saved["max"].clone(),
                saved["desired"].clone()
            ),
            (json!(1), json!(4), json!(2))
        );
        let runbook = rec.alerts[0].runbook.clone().unwrap();
        assert!(runbook.contains("--auto-scaling-group-name nbaops-test-web --min-size 1 --max-size 4 --desired-capacity 2"), "{runbook}");
        assert!(
            runbook.contains("aws rds start-db-instance --db-instance-identifier nbaops-test-db")
        );
        assert_eq!(w.ledger.len_with_prefix("audit#"), 2);
        // The same event again: idempotent, and the group is already at zero anyway.
        run(&w, as_test_env(MULTI)).await;
        assert_eq!(mutations(&w), 2);
    }

    #[tokio::test]
    async fn guard_paths_make_zero_mutations() {
        // Dry-run.
        let mut dry = CONTAIN_TEST.to_vec();
        dry.push(("NBAOPS_GUARD__DRY_RUN", "true"));
        let w = world(&dry, false);
        let r = run(&w, as_test_env(MULTI)).await;
        assert!(r.records[0]
            .actions
            .iter()
            .all(|a| a.outcome == Outcome::WouldAct));
        assert_eq!(r.records[0].actions.len(), 2);
        assert_eq!(mutations(&w), 0);
        assert_eq!(
            w.ledger.len_with_prefix("contained#"),
            0,
            "nothing saved in dry-run"
        );

        // Protected tag on the group.
        let w = world(CONTAIN_TEST, true);
        let r = run(&w, as_test_env(MULTI)).await;
        assert_eq!(
            r.records[0].actions[0].stopped_by,
            Some(GuardStep::ProtectedTag)
        );
        assert!(w.asg.mutations().is_empty());

        // Blast radius at the default 50 %: of two resources, only the first is touched.
        let no_blast: Vec<_> = CONTAIN_TEST
            .iter()
            .filter(|(k, _)| !k.contains("BLAST"))
            .copied()
            .collect();
        let w = world(&no_blast, false);
        let r = run(&w, as_test_env(MULTI)).await;
        assert_eq!(
            r.records[0].actions[1].stopped_by,
            Some(GuardStep::BlastRadius)
        );
        assert!(w.power.mutations().is_empty());
        assert!(r.records[0]
            .notes
            .iter()
            .any(|n| n.contains("containment partial")));

        // Production: never, even with prod named by every source.
        let w = world(CONTAIN_TEST, false);
        let r = run(
            &w,
            serde_json::from_str(&MULTI.replace("nbaops-dev", "nbaops-prod")).unwrap(),
        )
        .await;
        assert!(r.records[0].actions.is_empty());
        assert!(r.records[0]
            .notes
            .iter()
            .any(|n| n.contains("production is never contained")));
        // Unattributable: conflicting names.
        let conflicting = MULTI.replace("nbaops-dev-services", "nbaops-test-services");
        let r = run(&w, serde_json::from_str(&conflicting).unwrap()).await;
        assert!(
            r.records[0]
                .notes
                .iter()
                .any(|n| n.contains("never acting")),
            "{:?}",
            r.records[0].notes
        );
        // Forecast budget for test.
        let r = run(
            &w,
            serde_json::from_str(&BUDGET_FORECAST.replace("nbaops-dev", "nbaops-test")).unwrap(),
        )
        .await;
        assert!(r.records[0].actions.is_empty());
        assert_eq!(mutations(&w), 0);
    }

    /// Issue #19: by default each containment asks a person (one request and one approval alert
    /// per resource, saying which environment and anomaly), nothing changes; approved, the plan
    /// is carried out once as the immediate path does it, the same record saved for the undo.
    #[tokio::test]
    async fn by_default_containment_asks_and_an_approved_plan_is_carried_out_as_planned() {
        use nbaops_shared::guard::{approved_input, decide, ApprovalRequest, Decided, Verdict};
        let w = world(CONTAIN_ASKS, false);
        let r = run(&w, as_test_env(MULTI)).await;
        let rec = &r.records[0];
        assert_eq!(rec.actions.len(), 2, "{:?}", rec.notes);
        assert!(rec
            .actions
            .iter()
            .all(|a| a.outcome == Outcome::NeedsApproval));
        assert_eq!(mutations(&w), 0);
        assert_eq!(w.ledger.len_with_prefix("contained#"), 0);
        let asked: Vec<_> = rec
            .alerts
            .iter()
            .filter(|a| a.approval_id.is_some())
            .collect();
        assert_eq!(asked.len(), 2, "{:?}", rec.alerts);
        for a in &asked {
            assert!(a.summary.contains("(env test)"), "{}", a.summary);
            assert!(
                a.summary
                    .contains("cost anomaly a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"),
                "{}",
                a.summary
            );
        }
        let ledger = w.deps.ledger.as_ref();
        let id = rec.actions[0].approval_id.clone().unwrap();
        let who = Decided {
            by: "alice".into(),
            from: "cli".into(),
            at: now(),
        };
        decide(ledger, "dev", &id, Verdict::Approve, who)
            .await
            .unwrap();
        let req = ApprovalRequest::load(ledger, "dev", &id)
            .await
            .unwrap()
            .unwrap();
        let r = run(&w, approved_input(&req)).await;
        assert_eq!(r.records[0].actions[0].outcome, Outcome::Acted, "{r:?}");
        assert_eq!(
            w.asg.mutations(),
            vec!["update_group_size nbaops-test-web 0 0 0"]
        );
        assert!(
            w.power.mutations().is_empty(),
            "the instance was not approved"
        );
        let saved = w
            .ledger
            .get("contained#test", "asg:nbaops-test-web")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                &saved["kind"],
                &saved["name"],
                &saved["min"],
                &saved["max"],
                &saved["desired"]
            ),
            (
                &json!("asg"),
                &json!("nbaops-test-web"),
                &json!(1),
                &json!(4),
                &json!(2)
            )
        );
        run(&w, approved_input(&req)).await;
        assert_eq!(mutations(&w), 1, "used once");
    }

    #[tokio::test]
    async fn live_is_the_plans_before_and_apply_refuses_what_is_not_a_containment() {
        let w = world(CONTAIN_ASKS, false);
        let inv = Invocation::at("live", now());
        let ctx = Ctx::of::<CostAnomaly>(w.deps, &inv);
        let r = run(&w, as_test_env(MULTI)).await;
        let mut plans = Vec::new();
        for a in &r.records[0].actions {
            let req = nbaops_shared::guard::ApprovalRequest::load(
                w.deps.ledger.as_ref(),
                "dev",
                a.approval_id.as_deref().unwrap(),
            )
            .await
            .unwrap()
            .unwrap();
            let Live::Is { state, .. } = w.f.live(&req.action, &ctx).await.unwrap() else {
                panic!("{a:?}")
            };
            assert_eq!(
                nbaops_shared::runtime::differs(&req.action.before, &state),
                None,
                "{state}"
            );
            plans.push(req.action);
        }
        let plan = |action: &str, resource: &str, before: Value| ProposedAction {
            action: action.into(),
            resource: resource.into(),
            before,
            ..plans[0].clone()
        };
        // Re-tagged since the request: the environment moved.
        w.asg
            .groups
            .lock()
            .unwrap()
            .get_mut("nbaops-test-web")
            .unwrap()
            .tags = tags("dev", false);
        let Live::Is { state, .. } = w.f.live(&plans[0], &ctx).await.unwrap() else {
            panic!()
        };
        assert_eq!(
            nbaops_shared::runtime::differs(&plans[0].before, &state).as_deref(),
            Some(r#"env was "test", now "dev""#)
        );
        // Not a containment, gone, production: nothing done.
        let other = plan("asg.scale_out", "asg:nbaops-test-web", json!({}));
        assert_eq!(w.f.live(&other, &ctx).await.unwrap(), Live::NotCarriedOut);
        let gone = plan("rds.stop", "rds:nope", json!({}));
        assert_eq!(w.f.live(&gone, &ctx).await.unwrap(), Live::Gone);
        let prod = plan(
            "asg.contain_to_zero",
            "asg:nbaops-test-web",
            json!({"min": 1, "max": 4, "desired": 2, "env": "prod"}),
        );
        assert!(w.f.apply(&prod, &ctx).await.is_err());
        let unnamed = plan(
            "rds.stop",
            "rds:nbaops-test-db",
            json!({"status": "available"}),
        );
        assert!(w.f.apply(&unnamed, &ctx).await.is_err());
        assert!(w.f.apply(&other, &ctx).await.is_err());
        assert_eq!(mutations(&w), 0);
        assert_eq!(w.ledger.len_with_prefix("contained#"), 0);
    }

    #[tokio::test]
    async fn listed_resource_with_another_env_tag_is_refused() {
        let w = world(
            &[
                ("NBAOPS_COST__CONTAIN__ENVS", "dev"),
                (
                    "NBAOPS_COST__CONTAIN__RESOURCES",
                    r#"{"dev":{"asgs":["nbaops-test-web"]}}"#,
                ),
            ],
            false,
        );
        let r = run(&w, serde_json::from_str(MULTI).unwrap()).await;
        assert!(r.records[0]
            .notes
            .iter()
            .any(|n| n.contains("is not dev: refused")));
        assert_eq!(mutations(&w), 0);
    }

    #[tokio::test]
    async fn daily_check_alerts_on_spikes_only() {
        let w = world(&[], false);
        let day = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
        for i in 1..=7 {
            let d = day - Duration::days(i);
            w.ce.add(CostGrouping::Service, d, "AWS Lambda", 5.0);
            w.ce.add(CostGrouping::Tag("env".into()), d, "dev", 30.0);
        }
        w.ce.add(CostGrouping::Service, day, "AWS Lambda", 60.0);
        w.ce.add(CostGrouping::Tag("env".into()), day, "dev", 33.0);
        let r = run(&w, serde_json::from_str(DAILY).unwrap()).await;
        let rec = &r.records[0];
        assert_eq!(rec.alerts.len(), 1, "{:?}", rec.notes);
        assert!(
            rec.alerts[0].summary.contains("AWS Lambda $60.00"),
            "{}",
            rec.alerts[0].summary
        );
        assert_eq!(
            rec.alerts[0].dedup_key,
            "cost-spike#service:AWS Lambda#2026-11-24"
        );
        let qs = w.ce.queries();
        assert_eq!(qs.len(), 2);
        assert_eq!(qs[0].grouping, CostGrouping::Service);
        assert_eq!(qs[1].grouping, CostGrouping::Tag("env".into()));
        assert_eq!(mutations(&w), 0);
        // No data at all: a note, no alert.
        let w = world(&[], false);
        let r = run(&w, serde_json::from_str(DAILY).unwrap()).await;
        assert!(r.records[0].alerts.is_empty());
        assert!(r.records[0].notes.iter().any(|n| n.contains("no cost")));
    }

    #[tokio::test]
    async fn other_events_are_not_for_me() {
        let w = world(&[], false);
        let r = run(&w, serde_json::from_str(ALARM).unwrap()).await;
        assert!(r.records[0].not_for_me.is_some());
        let r = run(&w, json!({"nbaops": {"task": "pg-health"}})).await;
        assert!(r.records[0].not_for_me.is_some());
        let r = run(&w, json!([1, 2])).await;
        assert!(r.records[0].not_for_me.is_some());
        assert!(w.notifier.published().is_empty());
    }

    mod properties {
        use super::*;
        use nbaops_shared::events::arbitrary;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(arbitrary::config(48))]

            /// Arbitrary JSON and damaged fixtures, with containment enabled: never a panic; what
            /// nothing understands is refused with no mutation, no state, no audit, no alert.
            #[test]
            fn any_payload_is_answered_and_only_an_understood_event_acts(payload in arbitrary::payload()) {
                let w = world(CONTAIN_TEST, false);
                let understood = arbitrary::understood(&payload);
                let res = arbitrary::block_on(handle(&w, payload, "prop"));
                if !understood {
                    arbitrary::refused_cleanly(&res)?;
                    prop_assert!(w.asg.mutations().is_empty());
                    prop_assert!(w.power.mutations().is_empty());
                    prop_assert!(w.notifier.published().is_empty());
                    prop_assert_eq!(w.ledger.len_with_prefix(""), 0);
                }
            }
        }
    }
}
