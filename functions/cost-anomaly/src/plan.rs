//! Pure decisions: severity from impact, the environment a cost belongs to, whether to contain,
//! what to do with each resource, and what the daily check calls a spike.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;

use nbaops_shared::alerts::Severity;
use nbaops_shared::config::cost::CostConfig;
use nbaops_shared::config::Env;
use nbaops_shared::events::{BudgetAlert, BudgetKind, CostAnomaly};
use nbaops_shared::ports::{DailyCost, DbInstanceState, GroupState};

/// P2 when the impact reaches `cost.severity.high_usd`, or reaches `cost.severity.high_percent`
/// of the expected spend while being at least `cost.severity.percent_min_usd`; P3 otherwise.
pub fn severity_for(cfg: &CostConfig, impact_usd: f64, percent: Option<f64>) -> Severity {
    let by_amount = impact_usd >= cfg.high_usd;
    let by_percent =
        percent.is_some_and(|p| p >= cfg.high_percent) && impact_usd >= cfg.percent_min_usd;
    if by_amount || by_percent {
        Severity::P2
    } else {
        Severity::P3
    }
}

/// The anomaly's impact in dollars and percent of the expected spend.
pub fn anomaly_impact(a: &CostAnomaly) -> (f64, Option<f64>) {
    let impact = a
        .total_impact
        .or(match (a.total_actual, a.total_expected) {
            (Some(act), Some(exp)) => Some(act - exp),
            _ => None,
        })
        .or(a.max_impact)
        .unwrap_or(0.0)
        .max(0.0);
    let percent = a.impact_percentage.or_else(|| match a.total_expected {
        Some(exp) if exp > 0.0 => Some(impact / exp * 100.0),
        _ => None,
    });
    (impact, percent)
}

/// A budget's overrun: spend (actual, or forecast for a forecast alert) above the budgeted
/// amount, in dollars and percent of it. Zero when the threshold was crossed below the limit.
pub fn budget_overrun(b: &BudgetAlert) -> (f64, Option<f64>) {
    let spend = match b.kind {
        BudgetKind::Forecasted => b.forecast.or(b.actual),
        _ => b.actual.or(b.forecast),
    };
    match (spend, b.limit) {
        (Some(s), Some(l)) if l > 0.0 => {
            let over = (s - l).max(0.0);
            (over, Some(over / l * 100.0))
        }
        _ => (0.0, None),
    }
}

/// The environment a name speaks of: `nbaops-dev-services`, `nbaops-test`, `fantasy-production`.
/// `None` when no token names one, or when tokens name several.
pub fn env_in_name(name: &str) -> Option<Env> {
    let mut found: Vec<Env> = name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter_map(|t| match t.to_ascii_lowercase().as_str() {
            "dev" | "development" => Some(Env::Dev),
            "test" | "testing" => Some(Env::Test),
            "prod" | "production" => Some(Env::Prod),
            _ => None,
        })
        .collect();
    found.dedup();
    match found.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// One piece of evidence for an environment, with where it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    pub env: Env,
    pub source: String,
}

fn push(out: &mut Vec<Evidence>, env: Option<Env>, source: String) {
    if let Some(env) = env {
        out.push(Evidence { env, source });
    }
}

/// Evidence the anomaly itself carries: linked accounts (`cost.account_envs`), account and
/// monitor names.
pub fn anomaly_evidence(a: &CostAnomaly, cfg: &CostConfig) -> Vec<Evidence> {
    let mut out = Vec::new();
    let mut accounts: Vec<&str> = a
        .root_causes
        .iter()
        .filter_map(|rc| rc.account.as_deref())
        .collect();
    if accounts.is_empty() {
        accounts.extend(a.account.as_deref());
    }
    accounts.dedup();
    for acct in accounts {
        push(
            &mut out,
            cfg.account_envs.get(acct).copied(),
            format!("account {acct} (cost.account_envs)"),
        );
    }
    for rc in &a.root_causes {
        if let Some(name) = &rc.account_name {
            push(
                &mut out,
                env_in_name(name),
                format!("linked account name '{name}'"),
            );
        }
    }
    if let Some(m) = &a.monitor_name {
        push(&mut out, env_in_name(m), format!("monitor name '{m}'"));
    }
    out
}

/// Evidence a budget notification carries: its account and its name.
pub fn budget_evidence(b: &BudgetAlert, cfg: &CostConfig) -> Vec<Evidence> {
    let mut out = Vec::new();
    if let Some(acct) = &b.account {
        push(
            &mut out,
            cfg.account_envs.get(acct).copied(),
            format!("account {acct} (cost.account_envs)"),
        );
    }
    push(
        &mut out,
        env_in_name(&b.budget_name),
        format!("budget name '{}'", b.budget_name),
    );
    out
}

/// Cost allocation tag evidence: the tag value holding at least `min_share_percent` of the cost.
/// Also says why there is none, for the notes.
pub fn tag_evidence(
    costs: &[DailyCost],
    tag: &str,
    min_share_percent: f64,
) -> (Option<Evidence>, String) {
    let mut per_value: BTreeMap<&str, f64> = BTreeMap::new();
    for c in costs {
        *per_value.entry(c.key.as_str()).or_insert(0.0) += c.amount.max(0.0);
    }
    let total: f64 = per_value.values().sum();
    let Some((value, amount)) = per_value
        .iter()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(v, a)| (*v, *a))
        .filter(|_| total > 0.0)
    else {
        return (
            None,
            format!("Cost Explorer: no cost by tag '{tag}' for the root-cause services"),
        );
    };
    let share = amount / total * 100.0;
    let label = if value.is_empty() {
        "(untagged)"
    } else {
        value
    };
    if share < min_share_percent {
        return (
            None,
            format!("Cost Explorer: {tag}={label} holds only {share:.0} % of the cost (needs {min_share_percent:.0} %)"),
        );
    }
    match value.parse::<Env>() {
        Ok(env) if !value.is_empty() => (
            Some(Evidence {
                env,
                source: format!("cost allocation tag {tag}={value} ({share:.0} % of the cost)"),
            }),
            format!("Cost Explorer: {tag}={value} holds {share:.0} % of the cost"),
        ),
        _ => (
            None,
            format!("Cost Explorer: {share:.0} % of the cost is {tag}={label}, not an nbaops environment"),
        ),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "attribution", rename_all = "snake_case")]
pub enum Attribution {
    Env { env: Env, evidence: Vec<Evidence> },
    Unattributable { reason: String },
}

impl Attribution {
    pub fn env(&self) -> Option<Env> {
        match self {
            Attribution::Env { env, .. } => Some(*env),
            Attribution::Unattributable { .. } => None,
        }
    }
}

/// Every source must agree: no evidence, or evidence for two environments, is unattributable.
pub fn attribute(evidence: Vec<Evidence>) -> Attribution {
    let mut envs: Vec<Env> = evidence.iter().map(|e| e.env).collect();
    envs.sort_by_key(|e| e.to_string());
    envs.dedup();
    match envs.as_slice() {
        [] => Attribution::Unattributable {
            reason: "no linked-account mapping, no environment in the account/monitor/budget names, no env-tagged cost".into(),
        },
        [env] => Attribution::Env {
            env: *env,
            evidence,
        },
        _ => Attribution::Unattributable {
            reason: format!(
                "conflicting evidence: {}",
                evidence
                    .iter()
                    .map(|e| format!("{} says {}", e.source, e.env))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        },
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Containment {
    AlertOnly(String),
    Contain(Env),
}

/// Containment only for an attributed, non-production environment listed in
/// `cost.contain.envs`, for spend (never a forecast) at least `cost.contain.min_severity`.
pub fn containment(
    cfg: &CostConfig,
    attribution: &Attribution,
    severity: Severity,
    is_spend: bool,
) -> Containment {
    let env = match attribution {
        Attribution::Unattributable { reason } => {
            return Containment::AlertOnly(format!(
                "not attributable to an environment ({reason}): alert only, never acting"
            ))
        }
        Attribution::Env { env, .. } => *env,
    };
    if env == Env::Prod {
        return Containment::AlertOnly("production is never contained: alert only".into());
    }
    if !cfg.may_contain(env) {
        return Containment::AlertOnly(format!(
            "alert only, containment disabled for {env} (cost.contain.envs)"
        ));
    }
    if !is_spend {
        return Containment::AlertOnly("a forecast is not spend: alert only".into());
    }
    if severity > cfg.contain_min_severity {
        return Containment::AlertOnly(format!(
            "{severity} is below cost.contain.min_severity {}: alert only",
            cfg.contain_min_severity
        ));
    }
    Containment::Contain(env)
}

/// What containment does to one Auto Scaling group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum GroupStep {
    Missing,
    /// Its env tag does not say this environment: a listing mistake is never acted on.
    WrongEnv(Option<String>),
    AlreadyZero,
    ToZero {
        min: i32,
        max: i32,
        desired: i32,
    },
}

fn env_tag_of(tags: &nbaops_shared::ports::Tags, tag: &str) -> Option<String> {
    tags.get(tag).map(|v| v.trim().to_string())
}

/// The environment a resource's `tag` names, as a containment plan's `before` holds it
/// (lowercase, as [`Env`] prints it); `None` when untagged.
pub fn env_tag_value(tags: &nbaops_shared::ports::Tags, tag: &str) -> Option<String> {
    env_tag_of(tags, tag).map(|v| v.to_ascii_lowercase())
}

pub fn plan_group_containment(g: Option<&GroupState>, env: Env, tag: &str) -> GroupStep {
    let Some(g) = g else {
        return GroupStep::Missing;
    };
    let seen = env_tag_of(&g.tags, tag);
    if seen.as_deref().map(str::to_ascii_lowercase) != Some(env.to_string()) {
        return GroupStep::WrongEnv(seen);
    }
    if g.min_size == 0 && g.max_size == 0 && g.desired == 0 {
        return GroupStep::AlreadyZero;
    }
    GroupStep::ToZero {
        min: g.min_size,
        max: g.max_size,
        desired: g.desired,
    }
}

/// What containment does to one RDS instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum DbStep {
    Missing,
    WrongEnv(Option<String>),
    AlreadyStopped(String),
    /// Only an `available` instance can be stopped.
    NotAvailable(String),
    Stop,
}

pub fn plan_db_containment(db: Option<&DbInstanceState>, env: Env, tag: &str) -> DbStep {
    let Some(db) = db else {
        return DbStep::Missing;
    };
    let seen = env_tag_of(&db.tags, tag);
    if seen.as_deref().map(str::to_ascii_lowercase) != Some(env.to_string()) {
        return DbStep::WrongEnv(seen);
    }
    match db.status.as_str() {
        "stopped" | "stopping" => DbStep::AlreadyStopped(db.status.clone()),
        "available" => DbStep::Stop,
        other => DbStep::NotAvailable(other.to_string()),
    }
}

/// The daily check looks at yesterday (UTC, the last complete Cost Explorer day) against the
/// `baseline_days` before it. Returns (query start, query end exclusive, the day judged).
pub fn daily_window(now: DateTime<Utc>, baseline_days: i64) -> (NaiveDate, NaiveDate, NaiveDate) {
    let today = now.date_naive();
    let day = today - Duration::days(1);
    (day - Duration::days(baseline_days), today, day)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spike {
    /// "service" or the tag key.
    pub dimension: String,
    pub key: String,
    pub day: NaiveDate,
    pub cost: f64,
    /// Mean daily cost over the baseline days (a missing day counts as zero).
    pub baseline: f64,
    pub increase: f64,
    pub percent: Option<f64>,
    pub severity: Severity,
}

/// Keys whose cost on `day` is at least `spike_factor` x their baseline and at least
/// `min_increase_usd` above it, biggest increase first.
pub fn find_spikes(
    costs: &[DailyCost],
    dimension: &str,
    day: NaiveDate,
    cfg: &CostConfig,
) -> Vec<Spike> {
    let first = day - Duration::days(cfg.baseline_days);
    let mut per_key: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for c in costs {
        let e = per_key.entry(c.key.as_str()).or_insert((0.0, 0.0));
        if c.day == day {
            e.0 += c.amount;
        } else if c.day >= first && c.day < day {
            e.1 += c.amount;
        }
    }
    let mut spikes: Vec<Spike> = per_key
        .into_iter()
        .filter_map(|(key, (cost, base_sum))| {
            let baseline = base_sum / cfg.baseline_days as f64;
            let increase = cost - baseline;
            let spiking = cost >= baseline * cfg.spike_factor && increase >= cfg.min_increase_usd;
            spiking.then(|| {
                let percent = (baseline > 0.0).then(|| increase / baseline * 100.0);
                Spike {
                    dimension: dimension.to_string(),
                    key: key.to_string(),
                    day,
                    cost,
                    baseline,
                    increase,
                    percent,
                    severity: severity_for(cfg, increase, percent),
                }
            })
        })
        .collect();
    spikes.sort_by(|a, b| b.increase.total_cmp(&a.increase));
    spikes
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use nbaops_shared::config::{cost, layer};
    use nbaops_shared::events::{classify_str, Inbound};
    use nbaops_shared::ports::Tags;

    const MULTI: &str = include_str!("../../../events/cost/sns-anomaly-multiple-root-causes.json");
    const SERVICE_ONLY: &str = include_str!("../../../events/cost/sns-anomaly-service-only.json");
    const EVENTBRIDGE: &str = include_str!("../../../events/cost/eventbridge-anomaly.json");
    const BUDGET_FORECAST: &str = include_str!("../../../events/cost/budget-json-forecast.json");
    const BUDGET_TEXT: &str = include_str!("../../../events/cost/budget-plain-text-actual.json");

    fn cfg(pairs: &[(&str, &str)]) -> CostConfig {
        let vars = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        cost::from_settings(&layer(Env::Dev, &vars, &Default::default()).unwrap()).unwrap()
    }

    fn anomaly(raw: &str) -> CostAnomaly {
        match classify_str(raw).remove(0) {
            Inbound::CostAnomaly(a) => a,
            other => panic!("{other:?}"),
        }
    }

    fn budget(raw: &str) -> BudgetAlert {
        match classify_str(raw).remove(0) {
            Inbound::Budget(b) => b,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn multi_root_causes_is_p2_and_attributed_to_dev_by_names() {
        let c = cfg(&[]);
        let a = anomaly(MULTI);
        let (impact, pct) = anomaly_impact(&a);
        assert_eq!((impact, pct), (182.4, Some(442.72)));
        assert_eq!(severity_for(&c, impact, pct), Severity::P2);
        let ev = anomaly_evidence(&a, &c);
        // Both root causes name account nbaops-dev, the monitor is nbaops-dev-services.
        assert_eq!(ev.len(), 3, "{ev:?}");
        assert!(ev.iter().all(|e| e.env == Env::Dev));
        assert_eq!(attribute(ev).env(), Some(Env::Dev));
    }

    #[test]
    fn service_only_root_cause_is_p3_and_unattributable_without_help() {
        let c = cfg(&[]);
        let a = anomaly(SERVICE_ONLY);
        let (impact, pct) = anomaly_impact(&a);
        assert_eq!((impact, pct), (12.5, None));
        assert_eq!(severity_for(&c, impact, pct), Severity::P3);
        let attr = attribute(anomaly_evidence(&a, &c));
        assert_eq!(attr.env(), None, "{attr:?}");
        // With the account mapped, the top-level account attributes it.
        let c = cfg(&[("NBAOPS_COST__ACCOUNT_ENVS", r#"{"123456789012":"test"}"#)]);
        assert_eq!(attribute(anomaly_evidence(&a, &c)).env(), Some(Env::Test));
    }

    #[test]
    fn eventbridge_anomaly_percent_rule_and_account_mapping() {
        let a = anomaly(EVENTBRIDGE);
        let (impact, pct) = anomaly_impact(&a);
        assert_eq!(impact, 64.0);
        // 64 $ < 100 $, but 263 % >= 200 % with at least 20 $: P2.
        assert_eq!(severity_for(&cfg(&[]), impact, pct), Severity::P2);
        let c = cfg(&[("NBAOPS_COST__SEVERITY__HIGH_PERCENT", "300")]);
        assert_eq!(severity_for(&c, impact, pct), Severity::P3);
        // No names at all: only the account map can say.
        assert_eq!(attribute(anomaly_evidence(&a, &cfg(&[]))).env(), None);
        let c = cfg(&[("NBAOPS_COST__ACCOUNT_ENVS", r#"{"123456789012":"prod"}"#)]);
        assert_eq!(attribute(anomaly_evidence(&a, &c)).env(), Some(Env::Prod));
    }

    #[test]
    fn budget_forecast_vs_actual() {
        let c = cfg(&[]);
        let f = budget(BUDGET_FORECAST);
        assert_eq!(f.kind, BudgetKind::Forecasted);
        let (over, pct) = budget_overrun(&f);
        assert!((over - 12.75).abs() < 1e-9 && (pct.unwrap() - 12.75).abs() < 1e-9);
        assert_eq!(severity_for(&c, over, pct), Severity::P3);
        assert_eq!(attribute(budget_evidence(&f, &c)).env(), Some(Env::Dev));

        let t = budget(BUDGET_TEXT);
        assert_eq!(t.kind, BudgetKind::Actual);
        // 85.12 of 100: the threshold was crossed, the budget was not: no overrun.
        assert_eq!(budget_overrun(&t), (0.0, Some(0.0)));
        assert_eq!(severity_for(&c, 0.0, Some(0.0)), Severity::P3);
        assert_eq!(attribute(budget_evidence(&t, &c)).env(), Some(Env::Dev));
        // A forecast never contains, even when dev may be contained and the severity is high.
        let c = cfg(&[
            ("NBAOPS_COST__CONTAIN__ENVS", "dev"),
            (
                "NBAOPS_COST__CONTAIN__RESOURCES",
                r#"{"dev":{"asgs":["g"]}}"#,
            ),
        ]);
        let attr = attribute(budget_evidence(&f, &c));
        assert!(matches!(
            containment(&c, &attr, Severity::P2, false),
            Containment::AlertOnly(r) if r.contains("forecast")
        ));
        assert_eq!(
            containment(&c, &attr, Severity::P2, true),
            Containment::Contain(Env::Dev)
        );
        assert!(matches!(
            containment(&c, &attr, Severity::P3, true),
            Containment::AlertOnly(r) if r.contains("min_severity")
        ));
    }

    #[test]
    fn names_conflicts_and_tags() {
        assert_eq!(env_in_name("nbaops-dev-services"), Some(Env::Dev));
        assert_eq!(env_in_name("fantasy_production"), Some(Env::Prod));
        assert_eq!(env_in_name("contest-platform"), None, "no whole token");
        assert_eq!(
            env_in_name("dev-to-prod-copy"),
            None,
            "two environments named"
        );
        let conflict = attribute(vec![
            Evidence {
                env: Env::Dev,
                source: "a".into(),
            },
            Evidence {
                env: Env::Test,
                source: "b".into(),
            },
        ]);
        assert!(
            matches!(conflict, Attribution::Unattributable { ref reason } if reason.contains("conflicting"))
        );
        let day = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
        let dc = |k: &str, a: f64| DailyCost {
            day,
            key: k.into(),
            amount: a,
            unit: "USD".into(),
        };
        let (ev, _) = tag_evidence(&[dc("test", 90.0), dc("", 10.0)], "env", 80.0);
        assert_eq!(ev.unwrap().env, Env::Test);
        let (ev, note) = tag_evidence(&[dc("test", 60.0), dc("dev", 40.0)], "env", 80.0);
        assert!(ev.is_none() && note.contains("only 60"), "{note}");
        let (ev, note) = tag_evidence(&[dc("", 100.0)], "env", 80.0);
        assert!(ev.is_none() && note.contains("untagged"), "{note}");
        assert!(tag_evidence(&[], "env", 80.0).0.is_none());
    }

    #[test]
    fn containment_refuses_unattributable_prod_and_unlisted() {
        let c = cfg(&[
            ("NBAOPS_COST__CONTAIN__ENVS", "test"),
            (
                "NBAOPS_COST__CONTAIN__RESOURCES",
                r#"{"test":{"asgs":["g"]}}"#,
            ),
        ]);
        let un = Attribution::Unattributable { reason: "x".into() };
        assert!(
            matches!(containment(&c, &un, Severity::P1, true), Containment::AlertOnly(r) if r.contains("never acting"))
        );
        let on = |env| Attribution::Env {
            env,
            evidence: vec![],
        };
        assert!(
            matches!(containment(&c, &on(Env::Prod), Severity::P1, true), Containment::AlertOnly(r) if r.contains("production"))
        );
        assert!(
            matches!(containment(&c, &on(Env::Dev), Severity::P1, true), Containment::AlertOnly(r) if r.contains("disabled for dev"))
        );
        assert_eq!(
            containment(&c, &on(Env::Test), Severity::P2, true),
            Containment::Contain(Env::Test)
        );
    }

    #[test]
    fn resource_steps_check_the_env_tag_and_state() {
        let mut tags = Tags::new();
        tags.insert("env".into(), "test".into());
        let g = GroupState {
            name: "g".into(),
            min_size: 1,
            max_size: 4,
            desired: 2,
            in_service: 2,
            tags: tags.clone(),
            activity_in_progress: false,
        };
        assert_eq!(
            plan_group_containment(Some(&g), Env::Test, "env"),
            GroupStep::ToZero {
                min: 1,
                max: 4,
                desired: 2
            }
        );
        assert_eq!(
            plan_group_containment(Some(&g), Env::Dev, "env"),
            GroupStep::WrongEnv(Some("test".into()))
        );
        let zero = GroupState {
            min_size: 0,
            max_size: 0,
            desired: 0,
            ..g.clone()
        };
        assert_eq!(
            plan_group_containment(Some(&zero), Env::Test, "env"),
            GroupStep::AlreadyZero
        );
        assert_eq!(
            plan_group_containment(None, Env::Test, "env"),
            GroupStep::Missing
        );
        let db = DbInstanceState {
            id: "d".into(),
            arn: None,
            class: "db.t3.micro".into(),
            status: "available".into(),
            engine: "postgres".into(),
            multi_az: false,
            endpoint: None,
            pending_class: None,
            tags,
        };
        assert_eq!(
            plan_db_containment(Some(&db), Env::Test, "env"),
            DbStep::Stop
        );
        let stopped = DbInstanceState {
            status: "stopped".into(),
            ..db.clone()
        };
        assert!(matches!(
            plan_db_containment(Some(&stopped), Env::Test, "env"),
            DbStep::AlreadyStopped(_)
        ));
        let untagged = DbInstanceState {
            tags: Tags::new(),
            ..db
        };
        assert_eq!(
            plan_db_containment(Some(&untagged), Env::Test, "env"),
            DbStep::WrongEnv(None)
        );
    }

    #[test]
    fn daily_spikes_against_trailing_baseline() {
        let c = cfg(&[]);
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 6, 0, 0).unwrap();
        let (start, end, day) = daily_window(now, c.baseline_days);
        assert_eq!(day, NaiveDate::from_ymd_opt(2026, 11, 24).unwrap());
        assert_eq!(
            (start, end),
            (day - Duration::days(7), day + Duration::days(1))
        );
        let mut costs = vec![];
        for i in 1..=7 {
            let d = day - Duration::days(i);
            costs.push(DailyCost {
                day: d,
                key: "AWS Lambda".into(),
                amount: 5.0,
                unit: "USD".into(),
            });
            costs.push(DailyCost {
                day: d,
                key: "Amazon EC2".into(),
                amount: 20.0,
                unit: "USD".into(),
            });
            costs.push(DailyCost {
                day: d,
                key: "Tiny".into(),
                amount: 0.01,
                unit: "USD".into(),
            });
        }
        costs.push(DailyCost {
            day,
            key: "AWS Lambda".into(),
            amount: 45.0,
            unit: "USD".into(),
        });
        costs.push(DailyCost {
            day,
            key: "Amazon EC2".into(),
            amount: 30.0,
            unit: "USD".into(),
        });
        costs.push(DailyCost {
            day,
            key: "Tiny".into(),
            amount: 1.0,
            unit: "USD".into(),
        });
        costs.push(DailyCost {
            day,
            key: "New Service".into(),
            amount: 150.0,
            unit: "USD".into(),
        });
        let spikes = find_spikes(&costs, "service", day, &c);
        let keys: Vec<&str> = spikes.iter().map(|s| s.key.as_str()).collect();
        // EC2 x1.5 is no spike, Tiny x100 is below min_increase_usd.
        assert_eq!(keys, vec!["New Service", "AWS Lambda"]);
        assert_eq!(spikes[0].severity, Severity::P2, "150 $ >= high_usd");
        assert_eq!(spikes[0].percent, None);
        assert_eq!(spikes[1].baseline, 5.0);
        assert_eq!(spikes[1].increase, 40.0);
        assert_eq!(spikes[1].severity, Severity::P2, "800 % with 40 $");
        assert!(find_spikes(&[], "service", day, &c).is_empty());
    }
}
