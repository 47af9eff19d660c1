//! `make bench`, per function: every measured invocation is given real work, and the bench fails
//! if any of them answers with an error or does nothing (a "not for me", no action taken, no alert
//! sent, nothing checked). A figure of a run that did no work would flatter: it is never printed.
//!
//! Per function and run: a fresh process (cold start: spawn to first answer, init included), then
//! a second invocation in the same process (warm), the peak RSS, and the AWS calls each invocation
//! made, counted from the emulator's own request recording (not from the function's word).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::BufReader;
use tokio::net::TcpListener;

use crate::demo::Stack;
use crate::function::{peak_rss_kb, FunctionUnderTest};
use crate::platform;
use crate::runtime_api::Outcome;
use crate::{workspace_root, HarnessError};

pub const RUNS: usize = 7;

/// What each function is given to do, run after run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// A CPU alarm on the web group: scale out 2 -> 3 (cold) and 3 -> 4 (warm), then back to 2.
    ScaleOut,
    /// A `scale-recheck` of a CPU alarm still in ALARM (CloudWatch, read through the harness's
    /// bridge): the web group stepped 2 -> 3 (cold; the next re-check scheduled) and 3 -> 4 (warm).
    ScaleRecheck,
    /// A full scan of the demo database, where a bulk delete has just left a table 80 % dead.
    PgHealth,
    /// The scheduled maintenance run, each time on a table a bulk delete has just bloated.
    Vacuum,
    /// A new Multi-AZ failover each run: its start (cold) and its completion, verified on the
    /// demo PostgreSQL (warm).
    Failover,
    /// A new cost anomaly each invocation (two root causes): attributed, alerted.
    Cost,
    /// A new P3 alert each invocation, delivered to a Slack stand-in that answers 200.
    AlertRouter,
    /// The RPO check of nbaops-dev-db (restore point, retention, daily snapshot).
    Backup,
    /// The worker group on an office-hours schedule: stopped at 19:00 (cold), started at 08:00 (warm).
    Offhours,
    /// The daily posture check of the seeded platform (`crate::posture::seed`: a compliant and a
    /// non-compliant resource per rule), judged 40 days after the seed: every source read, every
    /// rule run, the findings remembered and summarised.
    Posture,
}

pub const SUBJECTS: &[Subject] = &[
    Subject::ScaleOut,
    Subject::ScaleRecheck,
    Subject::PgHealth,
    Subject::Vacuum,
    Subject::Failover,
    Subject::Cost,
    Subject::AlertRouter,
    Subject::Backup,
    Subject::Offhours,
    Subject::Posture,
];

const OFFICE: &str = r#"{"office":{"tz":"Europe/Paris","periods":[{"days":["mon","tue","wed","thu","fri"],"start":"08:00","stop":"19:00"}],"holidays":["2026-12-25"]}}"#;
const BLOAT: &str =
    "insert into demo_events select g, repeat('x', 100) from generate_series(1, 50000) g; \
                     delete from demo_events where id % 5 <> 0";

/// What the bench keeps between invocations: the stack, and a Slack stand-in counting deliveries.
pub struct Bench<'a> {
    pub stack: &'a Stack,
    slack_deliveries: Arc<AtomicUsize>,
    tag: String,
}

/// One function's figures (medians) and what its last runs did.
pub struct Measured {
    pub cold_ms: f64,
    pub warm_ms: f64,
    pub rss_mb: f64,
    pub cold_calls: usize,
    pub warm_calls: usize,
    pub cold_did: String,
    pub warm_did: String,
    pub cold_ops: Vec<String>,
    pub warm_ops: Vec<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn median_usize(mut v: Vec<usize>) -> usize {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn fixture(path: &str) -> Result<Value, HarnessError> {
    Ok(serde_json::from_str(&std::fs::read_to_string(
        workspace_root().join(path),
    )?)?)
}

/// Replaces `from` by `to` in every string of `v` (message bodies are JSON inside strings).
fn replace_all(v: &mut Value, from: &str, to: &str) {
    match v {
        Value::String(s) if s.contains(from) => *s = s.replace(from, to),
        Value::Array(a) => a.iter_mut().for_each(|x| replace_all(x, from, to)),
        Value::Object(m) => m.values_mut().for_each(|x| replace_all(x, from, to)),
        _ => {}
    }
}

fn set_ids(p: &mut Value, id: &str) {
    if p.get("id").is_some() {
        p["id"] = Value::String(id.to_string());
    }
    if let Some(records) = p.get_mut("Records").and_then(Value::as_array_mut) {
        for r in records {
            if r.pointer("/Sns/MessageId").is_some() {
                r["Sns"]["MessageId"] = Value::String(id.to_string());
            }
        }
    }
    if let Some(n) = p.get_mut("nbaops").and_then(Value::as_object_mut) {
        n.insert("id".into(), Value::String(id.to_string()));
    }
}

impl Subject {
    pub fn function(self) -> &'static str {
        match self {
            Subject::ScaleOut | Subject::ScaleRecheck => "scale-on-alarm",
            Subject::PgHealth => "pg-health",
            Subject::Vacuum => "vacuum-trigger",
            Subject::Failover => "failover-notify",
            Subject::Cost => "cost-anomaly",
            Subject::AlertRouter => "alert-router",
            Subject::Backup => "backup-guard",
            Subject::Offhours => "offhours",
            Subject::Posture => "posture-check",
        }
    }

    /// The row's name in the report: the function, or what of it is measured.
    pub fn label(self) -> &'static str {
        match self {
            Subject::ScaleRecheck => "scale-recheck",
            other => other.function(),
        }
    }

    pub fn work(self) -> &'static str {
        match self {
            Subject::ScaleOut => {
                "CPU alarm: web group scaled out, its re-check scheduled (cold 2->3, warm 3->4)"
            }
            Subject::ScaleRecheck => {
                "re-check of a sustained CPU alarm: still ALARM, stepped (cold 2->3 + next re-check, warm 3->4)"
            }
            Subject::PgHealth => "full scan of a database with a freshly 80 %-dead table",
            Subject::Vacuum => "VACUUM (ANALYZE) of a freshly bloated table",
            Subject::Failover => {
                "new failover: start (cold), completion verified on PostgreSQL (warm)"
            }
            Subject::Cost => "new cost anomaly, 2 root causes, attributed and alerted",
            Subject::AlertRouter => "new P3 alert delivered to Slack (a local stand-in)",
            Subject::Backup => "RPO check of nbaops-dev-db",
            Subject::Offhours => "worker group stopped at 19:00 (cold), started at 08:00 (warm)",
            Subject::Posture => {
                "daily posture check of the seeded platform (a compliant and a non-compliant resource per rule), judged 40 days on"
            }
        }
    }

    fn env(self, bench: &Bench<'_>) -> Vec<(String, String)> {
        // The production switch TTL (the harness sets 0 so that tests see a flip at once).
        let mut extra: Vec<(&str, &str)> = vec![("NBAOPS_GUARD__SWITCH_TTL_SECONDS", "30")];
        match self {
            // Both as the template deploys them: a scale-out also schedules its re-check.
            Subject::ScaleOut | Subject::ScaleRecheck => extra.extend([
                ("NBAOPS_SCALE__ASG__COOLDOWN_SECONDS", "0"),
                ("NBAOPS_SCALE__FOLLOWUP__GROUP", RECHECK_GROUP),
                ("NBAOPS_SCALE__FOLLOWUP__TARGET_ARN", RECHECK_TARGET),
                ("NBAOPS_SCALE__FOLLOWUP__ROLE_ARN", RECHECK_ROLE),
            ]),
            Subject::Vacuum => extra.push(("NBAOPS_PG__VACUUM__COOLDOWN_SECONDS", "0")),
            // The seed is tagged for production: a production deployment judges it.
            Subject::Posture => extra.push(("NBAOPS_ENV", "prod")),
            _ => {}
        }
        bench.stack.env_for(self.function(), &extra)
    }

    /// The world each invocation finds: the work is there to be done.
    async fn before(self, bench: &Bench<'_>, warm: bool) -> Result<(), HarnessError> {
        let c = &bench.stack.clients;
        match self {
            Subject::ScaleOut | Subject::ScaleRecheck if !warm => {
                set_desired(bench, platform::WEB, 2).await
            }
            Subject::PgHealth | Subject::Vacuum => {
                let pg = bench.stack.postgres.as_ref().ok_or_else(|| {
                    HarnessError::Setup("the bench stack has no PostgreSQL".into())
                })?;
                pg.psql_app("app", BLOAT).map(drop)
            }
            Subject::Offhours if !warm => set_desired(bench, platform::WORKER, 2).await,
            Subject::Backup => platform::put_params(c, &[("backup/instances", platform::DB)]).await,
            Subject::Posture => {
                // Seeded once per emulator: the same named resources cannot be made twice.
                let seeded = c
                    .rds
                    .describe_db_instances()
                    .db_instance_identifier(crate::posture::OK_DB)
                    .send()
                    .await
                    .is_ok();
                if !seeded {
                    crate::posture::seed(c, crate::clock::now()).await?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The payload of run `run`, cold or warm: always a new event (a fresh id; a new anomaly,
    /// alert or failover where the function deduplicates on those).
    fn payload(self, bench: &Bench<'_>, run: usize, warm: bool) -> Result<Value, HarnessError> {
        let id = format!("bench-{}-{run}-{}", bench.tag, if warm { "w" } else { "c" });
        let mut p = match self {
            Subject::ScaleOut => {
                // The common case: the alarm had been OK for hours before this transition (a
                // recent previous transition costs one more call, the flap history read).
                let mut p =
                    fixture("events/cloudwatch-alarm/eventbridge-single-metric-alarm.json")?;
                // (The state changed at 2026-11-25T20:01:02Z; before that, OK since 17:01.)
                if let Some(prev) = p.pointer_mut("/detail/previousState") {
                    prev["timestamp"] = Value::String("2026-11-25T17:01:02.001+0000".into());
                }
                p
            }
            Subject::ScaleRecheck => {
                // A new episode each run; re-check 1 of 2 cold, 2 of 2 warm.
                return Ok(serde_json::json!({"nbaops": {
                    "task": "scale-recheck",
                    "alarm": RECHECK_ALARM,
                    "target": format!("asg:{}", platform::WEB),
                    "episode": format!("bench{}r{run}", bench.tag),
                    "n": if warm { 2 } else { 1 },
                    "limit": 2,
                }}));
            }
            Subject::PgHealth => fixture("events/schedule/pg-health.json")?,
            Subject::Vacuum => fixture("events/schedule/vacuum-trigger.json")?,
            Subject::Failover => {
                let mut p = fixture(if warm {
                    "events/rds/eventbridge-failover-completed.json"
                } else {
                    "events/rds/eventbridge-failover-started.json"
                })?;
                // A failover a day apart each run, on the fixture's own time of day.
                let day = format!("2026-10-{:02}", run + 1);
                replace_all(&mut p, "2026-11-25", &day);
                p
            }
            Subject::Cost => {
                let mut p = fixture("events/cost/sns-anomaly-multiple-root-causes.json")?;
                replace_all(&mut p, "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d", &id);
                p
            }
            Subject::AlertRouter => {
                let mut p = fixture("events/alerts/sns/p3-table-bloat.json")?;
                replace_all(
                    &mut p,
                    "bloat#app.public.orders",
                    &format!("bloat#app.public.orders-{id}"),
                );
                p
            }
            Subject::Backup => fixture("events/schedule/backup-rpo-check.json")?,
            Subject::Offhours => {
                // A week apart each run: Wednesday 19:00 Paris (stop), Thursday 08:00 (start).
                let week = chrono::Duration::weeks(run as i64);
                let at = if warm {
                    "2026-12-03T07:00:00Z"
                } else {
                    "2026-12-02T18:00:00Z"
                };
                let at = nbaops_shared::clock::parse(at)
                    .ok_or_else(|| HarnessError::Setup(format!("bad instant {at}")))?
                    + week;
                serde_json::json!({"nbaops": {"task": "offhours", "at": at.to_rfc3339()}})
            }
            Subject::Posture => {
                // Past every age threshold of the seed's unused resources.
                let at = crate::clock::now()
                    + chrono::Duration::days(crate::posture::JUDGE_AFTER_DAYS)
                    + chrono::Duration::days(run as i64);
                serde_json::json!({"nbaops": {"task": "posture-check", "at": at.to_rfc3339()}})
            }
        };
        set_ids(&mut p, &id);
        Ok(p)
    }

    /// What the invocation did, or why it counts as no work.
    fn did(self, v: &Value, delivered: usize) -> Result<String, String> {
        let records = v["records"].as_array().cloned().unwrap_or_default();
        if records.is_empty() {
            return Err("no record in the report".into());
        }
        if let Some(r) = records.iter().find_map(|r| r["not_for_me"].as_str()) {
            return Err(format!("not for me: {r}"));
        }
        let all = |key: &str| -> Vec<Value> {
            records
                .iter()
                .flat_map(|r| r[key].as_array().cloned().unwrap_or_default())
                .collect()
        };
        let acted: Vec<String> = all("actions")
            .iter()
            .filter(|a| a["outcome"] == "acted")
            .map(|a| {
                format!(
                    "{} {}",
                    a["action"].as_str().unwrap_or("?"),
                    a["resource"].as_str().unwrap_or("?")
                )
            })
            .collect();
        let not_acted: Vec<String> = all("actions")
            .iter()
            .filter(|a| a["outcome"] != "acted")
            .map(|a| {
                format!(
                    "{} {}: {}",
                    a["action"].as_str().unwrap_or("?"),
                    a["outcome"].as_str().unwrap_or("?"),
                    a["error"]
                        .as_str()
                        .or(a["stopped_by"].as_str())
                        .unwrap_or("")
                )
            })
            .collect();
        let alerts: Vec<String> = all("alerts")
            .iter()
            .map(|a| format!("{} alert", a["severity"].as_str().unwrap_or("?")))
            .collect();
        let summary = records[0]["summary"].as_str().unwrap_or("").to_string();
        let acted_line = || format!("acted: {}", acted.join(", "));
        match self {
            Subject::ScaleOut | Subject::ScaleRecheck | Subject::Vacuum | Subject::Offhours => {
                if acted.is_empty() {
                    Err(format!(
                        "no action taken ({}; {})",
                        summary,
                        not_acted.join("; ")
                    ))
                } else {
                    Ok(acted_line())
                }
            }
            Subject::PgHealth => {
                let findings: usize = summary
                    .split_whitespace()
                    .zip(summary.split_whitespace().skip(1))
                    .find(|(_, w)| w.starts_with("finding"))
                    .and_then(|(n, _)| n.parse().ok())
                    .unwrap_or(0);
                if findings == 0 {
                    Err(format!("the scan found nothing: {summary}"))
                } else {
                    Ok(format!("{summary}; {}", alerts.join(", ")))
                }
            }
            Subject::Failover | Subject::Cost => {
                if alerts.is_empty() {
                    Err(format!("no alert: {summary}"))
                } else {
                    Ok(format!("{}: {}", alerts.join(", "), truncate(&summary, 60)))
                }
            }
            Subject::AlertRouter => {
                if delivered == 0 {
                    Err(format!("nothing reached Slack: {v}"))
                } else {
                    Ok(format!("{delivered} delivery to Slack"))
                }
            }
            Subject::Posture => {
                let findings: usize = summary
                    .split_whitespace()
                    .zip(summary.split_whitespace().skip(1))
                    .find(|(_, w)| w.starts_with("finding"))
                    .and_then(|(n, _)| n.parse().ok())
                    .unwrap_or(0);
                if findings == 0 || summary.contains("NOT READ") {
                    Err(format!("nothing found, or a source unread: {summary}"))
                } else {
                    Ok(truncate(&summary, 90))
                }
            }
            Subject::Backup => {
                let checked: usize = summary
                    .split_whitespace()
                    .skip_while(|w| *w != "of")
                    .nth(1)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                if checked == 0 {
                    Err(format!("no instance checked: {summary}"))
                } else {
                    let notes = all("notes").len();
                    Ok(format!(
                        "{summary}, {notes} finding(s)/note(s), {} alert(s)",
                        alerts.len()
                    ))
                }
            }
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

async fn set_desired(bench: &Bench<'_>, group: &str, n: i32) -> Result<(), HarnessError> {
    bench
        .stack
        .clients
        .asg
        .set_desired_capacity()
        .auto_scaling_group_name(group)
        .desired_capacity(n)
        .send()
        .await
        .map(drop)
        .map_err(|e| HarnessError::Setup(format!("set_desired_capacity {group}: {e:?}")))
}

const RECHECK_ALARM: &str = "nbaops-dev-web-cpu-high";
const RECHECK_GROUP: &str = "nbaops-dev-scale-followups";
const RECHECK_TARGET: &str =
    "arn:aws:lambda:us-east-1:123456789012:function:nbaops-dev-scale-on-alarm:live";
const RECHECK_ROLE: &str = "arn:aws:iam::123456789012:role/nbaops-dev-scale-followups";

/// What a re-check finds: the web CPU alarm in ALARM, and the group its next re-check goes to.
async fn sustained_alarm(stack: &Stack) -> Result<(), HarnessError> {
    use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, StateValue, Statistic};
    let setup = |what: &str, e: String| HarnessError::Setup(format!("bench: {what}: {e}"));
    // Already there from an earlier bench on the same emulator: fine.
    let _ = stack
        .clients
        .scheduler
        .create_schedule_group()
        .name(RECHECK_GROUP)
        .send()
        .await;
    let cw = &stack.clients.cw;
    cw.put_metric_alarm()
        .alarm_name(RECHECK_ALARM)
        .namespace("AWS/EC2")
        .metric_name("CPUUtilization")
        .dimensions(
            Dimension::builder()
                .name("AutoScalingGroupName")
                .value(platform::WEB)
                .build(),
        )
        .statistic(Statistic::Average)
        .period(300)
        .evaluation_periods(1)
        .threshold(70.0)
        .comparison_operator(ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .map_err(|e| setup("put_metric_alarm", format!("{e:?}")))?;
    cw.set_alarm_state()
        .alarm_name(RECHECK_ALARM)
        .state_value(StateValue::Alarm)
        .state_reason("bench: sustained")
        .send()
        .await
        .map_err(|e| setup("set_alarm_state", format!("{e:?}")))?;
    Ok(())
}

/// A Slack stand-in: answers every request `200 ok` and counts them.
async fn slack_stand_in(count: Arc<AtomicUsize>) -> Result<u16, HarnessError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let (rd, mut wr) = stream.into_split();
                let mut rd = BufReader::new(rd);
                while let Ok(Some(head)) = crate::http::read_head(&mut rd).await {
                    if crate::http::read_body(&mut rd, &head, false).await.is_err() {
                        return;
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    if crate::http::write_response(&mut wr, 200, &[], b"ok", false)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    Ok(port)
}

impl<'a> Bench<'a> {
    /// The world every subject needs, set up once: the bloat-prone table, the schedules and tags,
    /// the Slack webhook.
    pub async fn prepare(stack: &'a Stack) -> Result<Bench<'a>, HarnessError> {
        let pg = stack
            .postgres
            .as_ref()
            .ok_or_else(|| HarnessError::Setup("the bench stack has no PostgreSQL".into()))?;
        pg.psql_app(
            "app",
            "create table if not exists demo_events (id int, payload text) with (autovacuum_enabled = false)",
        )?;
        let slack_deliveries = Arc::new(AtomicUsize::new(0));
        let port = slack_stand_in(slack_deliveries.clone()).await?;
        stack
            .put_secret(
                &format!("/nbaops/{}/secrets/alerts/slack_webhook_url", platform::ENV),
                &format!("http://127.0.0.1:{port}/services/T0BENCH/B0BENCH/bench-webhook-secret"),
            )
            .await?;
        platform::put_params(&stack.clients, &[("offhours/schedules", OFFICE)]).await?;
        platform::tag_group(
            &stack.clients,
            platform::WORKER,
            "nbaops:schedule",
            "office",
        )
        .await?;
        sustained_alarm(stack).await?;
        Ok(Bench {
            stack,
            slack_deliveries,
            tag: std::process::id().to_string(),
        })
    }

    async fn invoke(
        &self,
        f: &FunctionUnderTest,
        subject: Subject,
        run: usize,
        warm: bool,
    ) -> Result<String, HarnessError> {
        let name = subject.function();
        let which = if warm { "warm" } else { "cold" };
        let delivered_before = self.slack_deliveries.load(Ordering::SeqCst);
        let out = f
            .invoke(subject.payload(self, run, warm)?, Duration::from_secs(60))
            .await?;
        let v = match out.outcome {
            Outcome::Response(v) => v,
            Outcome::Error {
                error_type,
                message,
            } => {
                return Err(HarnessError::Setup(format!(
                    "bench: {name} run {run} ({which}) failed: {error_type}: {message}\n{}",
                    f.logs()
                )))
            }
        };
        let delivered = self.slack_deliveries.load(Ordering::SeqCst) - delivered_before;
        let did = subject.did(&v, delivered).map_err(|why| {
            HarnessError::Setup(format!(
                "bench: {name} run {run} ({which}) did no work, its figures would flatter: {why}"
            ))
        })?;
        Ok(did)
    }

    /// `RUNS` cold starts, each followed by a warm invocation in the same process.
    pub async fn measure(&self, subject: Subject) -> Result<Measured, HarnessError> {
        let name = subject.function();
        let bin = crate::bench::release_binary(name)?;
        let env = subject.env(self);
        let (mut cold, mut warm, mut rss) = (vec![], vec![], vec![]);
        let (mut cold_calls, mut warm_calls) = (vec![], vec![]);
        let (mut cold_did, mut warm_did) = (String::new(), String::new());
        let (mut cold_ops, mut warm_ops) = (vec![], vec![]);
        for run in 0..RUNS {
            subject.before(self, false).await?;
            let since = self.stack.moto.calls().len();
            let t0 = Instant::now();
            let f = FunctionUnderTest::start(&bin, name, &env, 1).await?;
            let did = self.invoke(&f, subject, run, false).await?;
            cold.push(t0.elapsed().as_secs_f64() * 1000.0);
            let calls = self.stack.moto.calls_of(name, since);
            cold_calls.push(calls.len());
            cold_ops = calls.iter().map(|c| c.iam_action()).collect();
            cold_did = did;

            subject.before(self, true).await?;
            let since = self.stack.moto.calls().len();
            let t1 = Instant::now();
            let did = self.invoke(&f, subject, run, true).await?;
            warm.push(t1.elapsed().as_secs_f64() * 1000.0);
            let calls = self.stack.moto.calls_of(name, since);
            warm_calls.push(calls.len());
            warm_ops = calls.iter().map(|c| c.iam_action()).collect();
            warm_did = did;
            if let Some(kb) = f.processes().first().and_then(|p| peak_rss_kb(p.pid())) {
                rss.push(kb as f64 / 1024.0);
            }
            drop(f);
        }
        if matches!(subject, Subject::ScaleOut | Subject::ScaleRecheck) {
            set_desired(self, platform::WEB, 2).await?;
        }
        Ok(Measured {
            cold_ms: median(cold),
            warm_ms: median(warm),
            rss_mb: median(rss),
            cold_calls: median_usize(cold_calls),
            warm_calls: median_usize(warm_calls),
            cold_did,
            warm_did,
            cold_ops,
            warm_ops,
        })
    }
}
