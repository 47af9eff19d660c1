//! Pure decisions: (observed state, config, now) -> what is wrong / what to do. No I/O here.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use nbaops_shared::alerts::Severity;
use nbaops_shared::config::backup::BackupConfig;
use nbaops_shared::guard::{Explanation, ProposedAction};
use nbaops_shared::ports::{DbSnapshot, InstanceBackup, ReplicatedBackup, Replication, Site, Tags};
use nbaops_shared::sql::{i64_of, str_of, time_of, Row};

/// The tag backup-guard puts on the snapshots it owns; retention only ever touches these.
pub const OWNER_TAG: (&str, &str) = ("nbaops:backup", "monthly");
pub use nbaops_shared::config::backup::MONTHLY_PREFIX;
pub const DRILL_PREFIX: &str = "nbaops-drill-";

/// Every backup action (a snapshot created, copied or deleted; a drill instance restored or
/// deleted): P3, no cooldown (the snapshot and instance names make them idempotent), and
/// non-disruptive but for the drill's restore, which the drill marks disruptive itself.
pub fn backup_action(
    name: &str,
    resource: String,
    tags: Tags,
    reason: String,
    explanation: Explanation,
    before: Value,
    after: Value,
) -> ProposedAction {
    ProposedAction {
        action: name.into(),
        cooldown_key: name.into(),
        resource,
        tags,
        reason,
        severity: Severity::P3,
        disruptive: false,
        bounds: None,
        cooldown_seconds: 0,
        before,
        after,
        explanation,
    }
}

// ---- RPO check ----

/// What one RPO check saw of an instance.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupObservation {
    pub instance: Option<InstanceBackup>,
    pub latest_automated: Option<DateTime<Utc>>,
    /// A WAL archiving problem read from pg_stat_archiver (None: healthy or not reachable).
    pub wal_problem: Option<String>,
}

/// Every way the instance misses the backup promises, in the operator's words.
pub fn rpo_breaches(
    obs: &BackupObservation,
    cfg: &BackupConfig,
    now: DateTime<Utc>,
) -> Vec<String> {
    let Some(i) = &obs.instance else {
        return vec!["instance not found: its backups cannot be checked".into()];
    };
    let mut out = Vec::new();
    if i.backup_retention_days == 0 {
        out.push("automated backups are disabled (BackupRetentionPeriod 0)".into());
    } else if i.backup_retention_days < cfg.retention_min_days {
        out.push(format!(
            "automated backup retention {} days < {} days",
            i.backup_retention_days, cfg.retention_min_days
        ));
    }
    match i.latest_restorable_time {
        None if i.backup_retention_days > 0 => {
            out.push("no LatestRestorableTime: point-in-time restore impossible".into())
        }
        None => {}
        Some(t) => {
            let lag = now - t;
            if lag > Duration::minutes(cfg.rpo_minutes) {
                out.push(format!(
                    "LatestRestorableTime {} is {} min behind (RPO {} min)",
                    t.to_rfc3339(),
                    lag.num_minutes(),
                    cfg.rpo_minutes
                ));
            }
        }
    }
    match obs.latest_automated {
        None => out.push("no automated snapshot".into()),
        Some(t) if now - t > Duration::hours(cfg.automated_max_age_hours) => out.push(format!(
            "latest automated snapshot {} is {} h old (max {} h)",
            t.to_rfc3339(),
            (now - t).num_hours(),
            cfg.automated_max_age_hours
        )),
        Some(_) => {}
    }
    if let Some(w) = &obs.wal_problem {
        out.push(w.clone());
    }
    out
}

/// A WAL archiving problem from a `sql::ARCHIVER` row: off, failing, or stalled. The age of the
/// last archived segment is measured on the server's clock (`server_now`) when the row has it.
pub fn archiver_problem(r: &Row, now: DateTime<Utc>, max_age_minutes: i64) -> Option<String> {
    let now = time_of(r, "server_now").unwrap_or(now);
    let mode = str_of(r, "archive_mode").unwrap_or_default();
    if mode == "off" {
        return Some("WAL archiving is off (archive_mode = off)".into());
    }
    let ok = time_of(r, "last_archived_time");
    if let Some(failed) = time_of(r, "last_failed_time") {
        if ok.is_none_or(|ok| ok < failed) {
            return Some(format!(
                "WAL archiving is failing: {} failure(s), last {} (WAL {}), last success {}",
                i64_of(r, "failed_count").unwrap_or(0),
                failed.to_rfc3339(),
                str_of(r, "last_failed_wal").unwrap_or_default(),
                ok.map(|t| t.to_rfc3339()).unwrap_or_else(|| "never".into())
            ));
        }
    }
    match ok {
        Some(ok) if max_age_minutes > 0 && now - ok > Duration::minutes(max_age_minutes) => {
            Some(format!(
                "WAL archiving stalled: last archived {} ({} min ago, max {})",
                ok.to_rfc3339(),
                (now - ok).num_minutes(),
                max_age_minutes
            ))
        }
        _ => None,
    }
}

/// A breach being tracked across invocations (ledger).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenBreach {
    pub since: DateTime<Utc>,
    pub severity: Severity,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Announce {
    Nothing,
    /// New, or escalated from P2 to P1.
    Firing(Severity),
    Resolved,
}

/// P2 when a breach starts; P1 once it has lasted longer than the RPO; resolved when healthy.
pub fn breach_transition(
    prev: Option<&OpenBreach>,
    reasons: &[String],
    now: DateTime<Utc>,
    rpo_minutes: i64,
) -> (Option<OpenBreach>, Announce) {
    breach_transition_at_least(prev, reasons, now, rpo_minutes, Severity::P2)
}

/// [`breach_transition`], at least `floor` (P1 when a reason is already past the RPO, the DR
/// region's recovery point); an open breach never drops back to a lower severity.
pub fn breach_transition_at_least(
    prev: Option<&OpenBreach>,
    reasons: &[String],
    now: DateTime<Utc>,
    rpo_minutes: i64,
    floor: Severity,
) -> (Option<OpenBreach>, Announce) {
    if reasons.is_empty() {
        return match prev {
            Some(_) => (None, Announce::Resolved),
            None => (None, Announce::Nothing),
        };
    }
    let since = prev.map(|p| p.since).unwrap_or(now);
    let by_age = if now - since > Duration::minutes(rpo_minutes) {
        Severity::P1
    } else {
        Severity::P2
    };
    // Severity orders P1 first: the smaller is the more severe.
    let severity = by_age
        .min(floor)
        .min(prev.map(|p| p.severity).unwrap_or(Severity::P2));
    let announce = match prev {
        Some(p) if p.severity == severity => Announce::Nothing,
        _ => Announce::Firing(severity),
    };
    (
        Some(OpenBreach {
            since,
            severity,
            reasons: reasons.to_vec(),
        }),
        announce,
    )
}

// ---- DR replication of automated backups (issue #22) ----

/// What the RPO check read of the DR region for one instance.
#[derive(Debug, Clone, PartialEq)]
pub enum DrView {
    /// `backup.dr_replication.enabled` off, or not this origin's to check: not judged.
    NotChecked,
    /// The DR region could not be read (or the instance has no ARN to match): the recovery point
    /// there is unknown, never "fine".
    Unreadable(String),
    /// The DR region's automated backups of this instance, any status.
    Read(Vec<ReplicatedBackup>),
}

/// What the DR region's backups mean against the promises.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DrFindings {
    /// Breach reasons (operator's words), added to the instance's RPO breach.
    pub reasons: Vec<String>,
    /// A reason is already past the RPO (the DR recovery point is older than it): P1 now.
    pub p1: bool,
    /// Nothing replicates (none, or only retained backups): replication has to be started.
    pub needs_start: bool,
    /// What was seen, for the record's notes.
    pub note: Option<String>,
}

/// The DR region's view of one instance: not replicated (P2, start it), replicating with
/// `RestoreWindow.LatestTime` older than the RPO (P1), no LatestTime (P2), starting (noted:
/// no recovery point there yet, nothing to hold to the RPO), unreadable (P2, named).
pub fn dr_findings(
    view: &DrView,
    region: &str,
    rpo_minutes: i64,
    now: DateTime<Utc>,
) -> DrFindings {
    let mut f = DrFindings::default();
    let backups = match view {
        DrView::NotChecked => return f,
        DrView::Unreadable(e) => {
            f.reasons.push(format!(
                "DR region {region}: replicated automated backups unreadable ({e}): the DR recovery point is unknown"
            ));
            return f;
        }
        DrView::Read(b) => b,
    };
    let pick = |want: Replication| {
        backups
            .iter()
            .filter(|b| b.replication() == want)
            .max_by_key(|b| b.latest_restorable_time)
    };
    if let Some(b) = pick(Replication::Replicating) {
        match b.latest_restorable_time {
            None => f.reasons.push(format!(
                "DR region {region}: replicated automated backups have no RestoreWindow.LatestTime"
            )),
            Some(t) => {
                let lag = now - t;
                if lag > Duration::minutes(rpo_minutes) {
                    f.p1 = true;
                    f.reasons.push(format!(
                        "DR region {region}: LatestTime {} is {} min behind (RPO {rpo_minutes} min)",
                        t.to_rfc3339(),
                        lag.num_minutes()
                    ));
                } else {
                    f.note = Some(format!(
                        "DR {region}: replicating, LatestTime {} ({} min behind, RPO {rpo_minutes} min)",
                        t.to_rfc3339(),
                        lag.num_minutes()
                    ));
                }
            }
        }
        return f;
    }
    if let Some(b) = pick(Replication::Starting) {
        f.note = Some(format!(
            "DR {region}: replication is starting ({}): no recovery point there until the first automated snapshot arrives",
            b.status
        ));
        return f;
    }
    let retained = backups
        .iter()
        .filter_map(|b| b.latest_restorable_time)
        .max()
        .map(|t| format!(", its last recovery point there {}", t.to_rfc3339()))
        .unwrap_or_default();
    f.needs_start = true;
    f.reasons.push(format!(
        "automated backups are not replicated to DR region {region}{retained}: a region loss falls back to the monthly snapshot"
    ));
    f
}

// ---- monthly snapshots ----

/// RDS identifiers: letters, digits and single hyphens, starting with a letter, no trailing hyphen.
pub fn rds_identifier(raw: &str, max_len: usize) -> String {
    let mut out = String::new();
    for c in raw.chars() {
        let c = if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '-'
        };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
    }
    out.truncate(max_len);
    while out.ends_with('-') {
        out.pop();
    }
    if !out.starts_with(|c: char| c.is_ascii_alphabetic()) {
        out.insert(0, 'x');
    }
    out
}

/// One name per instance and month: a second run in the same month finds it and does nothing.
pub fn monthly_snapshot_id(instance: &str, now: DateTime<Utc>) -> String {
    rds_identifier(
        &format!("{MONTHLY_PREFIX}{instance}-{}", now.format("%Y-%m")),
        255,
    )
}

/// Snapshots backup-guard made (tagged, or named by it): the only ones retention may delete.
pub fn is_ours(s: &DbSnapshot) -> bool {
    s.tags.get(OWNER_TAG.0).map(String::as_str) == Some(OWNER_TAG.1)
        || s.id.starts_with(MONTHLY_PREFIX)
}

fn expired(s: &DbSnapshot, now: DateTime<Utc>, retention_days: i64) -> bool {
    s.created
        .is_some_and(|c| now - c > Duration::days(retention_days))
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct CopyPlan {
    /// Newest first, at most the free slots.
    pub copy: Vec<DbSnapshot>,
    /// Copies into the DR region already running (they hold slots).
    pub in_flight: usize,
    /// Candidates left for a later run because every slot is taken.
    pub deferred: Vec<String>,
}

/// Which of our primary snapshots to copy now: available, within retention, not yet in the DR
/// region, no more than the free copy slots. Copies that failed before (`retries`) go first —
/// a month's copy that failed on its last day must not lose its slot to the new month's — then
/// newest first.
pub fn plan_copies(
    primary: &[DbSnapshot],
    dr: &[DbSnapshot],
    retries: &[String],
    max_concurrent: usize,
    retention_days: i64,
    now: DateTime<Utc>,
) -> CopyPlan {
    let in_flight = dr.iter().filter(|s| s.in_flight()).count();
    let mut candidates: Vec<&DbSnapshot> = primary
        .iter()
        .filter(|s| is_ours(s) && s.is_available() && !expired(s, now, retention_days))
        .filter(|s| !dr.iter().any(|d| d.id == s.id))
        .collect();
    let retry = |s: &DbSnapshot| retries.contains(&s.id);
    candidates.sort_by(|a, b| {
        retry(b)
            .cmp(&retry(a))
            .then(b.created.cmp(&a.created))
            .then(a.id.cmp(&b.id))
    });
    let slots = max_concurrent.saturating_sub(in_flight);
    CopyPlan {
        copy: candidates
            .iter()
            .take(slots)
            .map(|s| (*s).clone())
            .collect(),
        in_flight,
        deferred: candidates
            .iter()
            .skip(slots)
            .map(|s| s.id.clone())
            .collect(),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Deletion {
    pub site: Site,
    pub snapshot: DbSnapshot,
    pub reason: String,
}

/// Our snapshots past retention, in both regions, except: the newest of a region (never leave a
/// region without its most recent copy), and any whose counterpart in the other region is still
/// being copied (it is the only complete copy).
pub fn plan_retention(
    primary: &[DbSnapshot],
    dr: &[DbSnapshot],
    retention_days: i64,
    now: DateTime<Utc>,
) -> (Vec<Deletion>, Vec<String>) {
    let mut deletions = Vec::new();
    let mut kept = Vec::new();
    for (site, mine, other) in [(Site::Primary, primary, dr), (Site::Dr, dr, primary)] {
        let ours: Vec<&DbSnapshot> = mine.iter().filter(|s| is_ours(s)).collect();
        let newest = ours
            .iter()
            .filter(|s| s.is_available())
            .max_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)))
            .map(|s| s.id.clone());
        for s in ours {
            if !expired(s, now, retention_days) {
                continue;
            }
            if newest.as_deref() == Some(s.id.as_str()) {
                kept.push(format!(
                    "{} {}: past {} days but the only recent copy there: kept",
                    site.as_str(),
                    s.id,
                    retention_days
                ));
                continue;
            }
            if other.iter().any(|o| o.id == s.id && o.in_flight()) || !s.is_available() {
                kept.push(format!(
                    "{} {}: past retention but a copy is in flight: kept for now",
                    site.as_str(),
                    s.id
                ));
                continue;
            }
            deletions.push(Deletion {
                site,
                snapshot: s.clone(),
                reason: format!(
                    "monthly snapshot taken {} is older than {} days",
                    s.created.map(|c| c.to_rfc3339()).unwrap_or_default(),
                    retention_days
                ),
            });
        }
    }
    (deletions, kept)
}

/// The snapshot a drill restores: the newest available one, automated or manual.
pub fn latest_snapshot(snaps: &[DbSnapshot]) -> Option<&DbSnapshot> {
    snaps
        .iter()
        .filter(|s| s.is_available() && s.created.is_some())
        .max_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)))
}

// ---- restore drill ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrillPhase {
    /// The temporary instance is being restored.
    Restoring,
    /// The data verified (the database RTO recorded); the application health queries are not
    /// all healthy yet: asked again on later ticks until give-up (issue #22).
    AppHealth,
    /// The full-system drill's isolated Auto Scaling group is launching: watched on later ticks
    /// until an instance is InService and Healthy, or give-up (issue #22).
    FullSystem,
    /// Verified (or failed) and reported; the temporary instance still has to go.
    Deleting,
    Done,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub check: String,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drill {
    pub source: String,
    pub drill_instance: String,
    pub snapshot_id: String,
    pub started_at: DateTime<Utc>,
    pub phase: DrillPhase,
    pub verified_at: Option<DateTime<Utc>>,
    pub rto_seconds: Option<i64>,
    pub rto_met: Option<bool>,
    pub checks: Vec<CheckResult>,
    pub passed: Option<bool>,
    /// The "RTO passed while still restoring" alert went out.
    pub overdue_alerted: bool,
    pub connect_failures: u32,
    /// Issue #22, the application RTO: the first time every health query answered healthy.
    #[serde(default)]
    pub app_healthy_at: Option<DateTime<Utc>>,
    /// Drill start to `app_healthy_at` (or to give-up, never healthy).
    #[serde(default)]
    pub app_rto_seconds: Option<i64>,
    /// None: not measured (no health queries, or the data did not verify).
    #[serde(default)]
    pub app_rto_met: Option<bool>,
    /// The health queries' last answers.
    #[serde(default)]
    pub app_checks: Vec<CheckResult>,
    /// Issue #22, the full-system drill's smoke test (None: not a full-system drill, or not yet).
    #[serde(default)]
    pub smoke: Option<SmokeTest>,
}

/// The full-system drill's isolated Auto Scaling group and what it showed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmokeTest {
    pub group: String,
    pub launch_template: String,
    pub created_at: Option<DateTime<Utc>>,
    /// The first time an instance was InService and Healthy.
    pub in_service_at: Option<DateTime<Utc>>,
    /// Group created to InService and Healthy.
    pub seconds: Option<i64>,
    pub passed: Option<bool>,
    pub detail: String,
    /// The group is gone (deleted by the drill, or never created).
    pub deleted: bool,
}

/// The temporary instance's name: `nbaops-drill-<source>-<yyyymmddhhmm>`, at most 63 characters.
pub fn drill_instance_id(source: &str, now: DateTime<Utc>) -> String {
    let stamp = now.format("%Y%m%d%H%M").to_string();
    let head = rds_identifier(&format!("{DRILL_PREFIX}{source}"), 63 - stamp.len() - 1);
    format!("{head}-{stamp}")
}

#[derive(Debug, Clone, PartialEq)]
pub enum DrillStep {
    /// Not available yet: come back on a later tick or event.
    Wait(String),
    /// Still restoring and the RTO has passed: alert once, keep waiting.
    Overdue(String),
    /// Available: connect and run the validation queries.
    Validate,
    /// Failed before validation (gone, failed state, too long): report the failure, clean up.
    Fail(String),
    /// Reported: delete the temporary instance.
    Delete,
    /// Ask the application health queries again.
    AppHealth,
    /// Look at the smoke-test group again.
    Smoke,
    Finished,
}

const FAILED_STATES: &[&str] = &[
    "failed",
    "incompatible-restore",
    "incompatible-parameters",
    "incompatible-network",
    "storage-full",
    "inaccessible-encryption-credentials",
];

/// What to do next with a drill, from the temporary instance's status (`None`: not found).
pub fn next_drill_step(
    d: &Drill,
    status: Option<&str>,
    now: DateTime<Utc>,
    rto_minutes: i64,
    give_up_hours: i64,
) -> DrillStep {
    match d.phase {
        DrillPhase::Done => DrillStep::Finished,
        DrillPhase::Deleting => DrillStep::Delete,
        DrillPhase::AppHealth => DrillStep::AppHealth,
        DrillPhase::FullSystem => DrillStep::Smoke,
        DrillPhase::Restoring => {
            let age = now - d.started_at;
            match status {
                None => DrillStep::Fail(format!(
                    "temporary instance {} does not exist (restore refused or deleted)",
                    d.drill_instance
                )),
                Some("available") => DrillStep::Validate,
                Some(s) if FAILED_STATES.contains(&s) => {
                    DrillStep::Fail(format!("temporary instance is '{s}'"))
                }
                Some(s) if age > Duration::hours(give_up_hours) => DrillStep::Fail(format!(
                    "temporary instance still '{s}' after {} h (give up after {give_up_hours} h)",
                    age.num_hours()
                )),
                Some(s) if age > Duration::minutes(rto_minutes) && !d.overdue_alerted => {
                    DrillStep::Overdue(format!(
                        "restore still '{s}' after {} min: RTO of {rto_minutes} min missed",
                        age.num_minutes()
                    ))
                }
                Some(s) => DrillStep::Wait(format!(
                    "temporary instance '{s}' ({} min since start)",
                    age.num_minutes()
                )),
            }
        }
    }
}

/// Records the verification: RTO = start to verified, compared with the target.
pub fn conclude(
    d: &mut Drill,
    checks: Vec<CheckResult>,
    verified_at: DateTime<Utc>,
    rto_minutes: i64,
) {
    let rto = (verified_at - d.started_at).num_seconds();
    let passed = checks.iter().all(|c| c.passed) && !checks.is_empty();
    d.verified_at = Some(verified_at);
    d.rto_seconds = Some(rto);
    d.rto_met = Some(rto <= rto_minutes * 60);
    d.passed = Some(passed);
    d.checks = checks;
    d.phase = DrillPhase::Deleting;
}

// ---- issue #22: application RTO and full-system drill ----

/// A health query's answer is healthy when it has at least one row and no value of its first row
/// is null, false, 0, an empty string, or the strings `f` / `false` (PostgreSQL's text booleans).
pub fn healthy_answer(rows: &[Row]) -> bool {
    rows.first().is_some_and(|r| r.values().all(truthy))
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        Value::String(s) => {
            let s = s.trim();
            !(s.is_empty() || s.eq_ignore_ascii_case("f") || s.eq_ignore_ascii_case("false"))
        }
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Records the health queries' answers at `now`: all healthy = the application RTO (start to
/// now) measured and compared with the target; not all healthy past give-up = missed, never
/// healthy. Returns false while the drill should ask again on a later tick.
pub fn record_app_health(
    d: &mut Drill,
    checks: Vec<CheckResult>,
    now: DateTime<Utc>,
    app_rto_minutes: i64,
    give_up_hours: i64,
) -> bool {
    let healthy = !checks.is_empty() && checks.iter().all(|c| c.passed);
    d.app_checks = checks;
    let age = (now - d.started_at).num_seconds();
    if healthy {
        d.app_healthy_at = Some(now);
        d.app_rto_seconds = Some(age);
        d.app_rto_met = Some(age <= app_rto_minutes * 60);
        return true;
    }
    if now - d.started_at > Duration::hours(give_up_hours) {
        d.app_rto_seconds = Some(age);
        d.app_rto_met = Some(false);
        return true;
    }
    false
}

#[derive(Debug, Clone, PartialEq)]
pub enum SmokeStep {
    Wait(String),
    Passed,
    Fail(String),
}

/// What the smoke-test group shows (`None`: gone): an instance InService and Healthy passes;
/// none past give-up (counted from the drill's start, like the restore) fails.
pub fn smoke_step(
    d: &Drill,
    group: Option<(usize, usize)>,
    now: DateTime<Utc>,
    give_up_hours: i64,
) -> SmokeStep {
    let Some((instances, healthy)) = group else {
        return SmokeStep::Fail("the smoke-test group does not exist (deleted by someone?)".into());
    };
    if healthy > 0 {
        return SmokeStep::Passed;
    }
    if now - d.started_at > Duration::hours(give_up_hours) {
        return SmokeStep::Fail(format!(
            "no instance InService and Healthy after {} h ({instances} instance(s); give up after {give_up_hours} h)",
            (now - d.started_at).num_hours()
        ));
    }
    SmokeStep::Wait(format!(
        "{instances} instance(s), none InService and Healthy yet"
    ))
}

/// The drill passed: data verified within the database RTO, the application RTO met (when
/// measured) and the smoke test passed (when a full-system drill).
pub fn drill_passed(d: &Drill) -> bool {
    d.passed == Some(true)
        && d.rto_met == Some(true)
        && d.app_rto_met != Some(false)
        && d.smoke.as_ref().is_none_or(|s| s.passed == Some(true))
}

/// Fills `{host}` `{port}` `{instance}` `{source}`; an override for the temporary or the
/// source instance wins over the template.
pub fn drill_url(
    cfg: &BackupConfig,
    d: &Drill,
    endpoint: Option<&(String, u16)>,
) -> Option<String> {
    let raw = cfg
        .drill
        .url_overrides
        .get(&d.drill_instance)
        .or_else(|| cfg.drill.url_overrides.get(&d.source))
        .unwrap_or(&cfg.drill.url_template);
    let needs_endpoint = raw.contains("{host}") || raw.contains("{port}");
    if needs_endpoint && endpoint.is_none() {
        return None;
    }
    let (host, port) = endpoint
        .map(|(h, p)| (h.clone(), p.to_string()))
        .unwrap_or_default();
    Some(
        raw.replace("{host}", &host)
            .replace("{port}", &port)
            .replace("{instance}", &d.drill_instance)
            .replace("{source}", &d.source),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use nbaops_shared::config::{layer, Env};
    use nbaops_shared::fakes::fake_snapshot;
    use nbaops_shared::ports::{SnapshotKind, Tags};
    use serde_json::json;
    use std::collections::BTreeMap;

    fn cfg(pairs: &[(&str, &str)]) -> BackupConfig {
        let vars: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        nbaops_shared::config::backup::from_settings(
            &layer(Env::Dev, &vars, &BTreeMap::new()).unwrap(),
        )
        .unwrap()
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }

    fn instance(retention: i32, lrt: Option<DateTime<Utc>>) -> InstanceBackup {
        InstanceBackup {
            id: "db".into(),
            arn: None,
            status: "available".into(),
            engine: "postgres".into(),
            backup_retention_days: retention,
            latest_restorable_time: lrt,
            endpoint: None,
            tags: Tags::new(),
        }
    }

    fn obs(i: InstanceBackup, auto: Option<DateTime<Utc>>) -> BackupObservation {
        BackupObservation {
            instance: Some(i),
            latest_automated: auto,
            wal_problem: None,
        }
    }

    #[test]
    fn rpo_math_at_the_edges() {
        let c = cfg(&[]);
        let fresh = obs(
            instance(7, Some(now() - Duration::minutes(5))),
            Some(now() - Duration::hours(3)),
        );
        assert!(rpo_breaches(&fresh, &c, now()).is_empty());
        // Exactly 15 minutes is still within the RPO; 16 is not.
        let edge = obs(
            instance(7, Some(now() - Duration::minutes(15))),
            Some(now()),
        );
        assert!(rpo_breaches(&edge, &c, now()).is_empty());
        let late = obs(
            instance(7, Some(now() - Duration::minutes(16))),
            Some(now()),
        );
        let r = rpo_breaches(&late, &c, now());
        assert_eq!(r.len(), 1);
        assert!(r[0].contains("16 min behind"), "{r:?}");
        // Retention 3 days, automated snapshot 25 h old: two breaches.
        let weak = obs(instance(3, Some(now())), Some(now() - Duration::hours(25)));
        let r = rpo_breaches(&weak, &c, now());
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r[0].contains("retention 3 days < 7"));
        assert!(r[1].contains("25 h old"));
        // Disabled backups.
        let off = obs(instance(0, None), None);
        let r = rpo_breaches(&off, &c, now());
        assert!(r[0].contains("disabled"), "{r:?}");
        let missing = BackupObservation {
            instance: None,
            latest_automated: None,
            wal_problem: None,
        };
        assert!(rpo_breaches(&missing, &c, now())[0].contains("not found"));
    }

    #[test]
    fn breach_is_p2_then_p1_after_the_rpo_then_resolved() {
        let reasons = vec!["late".to_string()];
        let (open, a) = breach_transition(None, &reasons, now(), 15);
        assert_eq!(a, Announce::Firing(Severity::P2));
        let open = open.unwrap();
        // 10 minutes on: still P2, nothing new to say.
        let (o2, a) = breach_transition(Some(&open), &reasons, now() + Duration::minutes(10), 15);
        assert_eq!((a, o2.as_ref().unwrap().since), (Announce::Nothing, now()));
        // 16 minutes on: escalated.
        let (o3, a) = breach_transition(Some(&open), &reasons, now() + Duration::minutes(16), 15);
        assert_eq!(a, Announce::Firing(Severity::P1));
        let (_, a) = breach_transition(o3.as_ref(), &reasons, now() + Duration::minutes(30), 15);
        assert_eq!(a, Announce::Nothing);
        let (o4, a) = breach_transition(o3.as_ref(), &[], now() + Duration::minutes(31), 15);
        assert_eq!((o4, a), (None, Announce::Resolved));
        assert_eq!(breach_transition(None, &[], now(), 15).1, Announce::Nothing);
    }

    fn replicated(status: &str, latest: Option<DateTime<Utc>>) -> ReplicatedBackup {
        ReplicatedBackup {
            source_arn: "arn:aws:rds:us-east-1:123456789012:db:db".into(),
            instance_id: "db".into(),
            status: status.into(),
            latest_restorable_time: latest,
            arn: None,
        }
    }

    #[test]
    fn dr_recovery_point_against_the_rpo() {
        let at = |m: i64| Some(now() - Duration::minutes(m));
        let read = |b: Vec<ReplicatedBackup>| dr_findings(&DrView::Read(b), "us-west-2", 15, now());
        // Not judged: nothing.
        assert_eq!(
            dr_findings(&DrView::NotChecked, "us-west-2", 15, now()),
            DrFindings::default()
        );
        // Replicating within the RPO (exactly 15 min is within): noted only.
        let f = read(vec![replicated("replicating", at(15))]);
        assert!(f.reasons.is_empty() && !f.p1 && !f.needs_start, "{f:?}");
        assert!(f.note.unwrap().contains("15 min behind"));
        // 16 minutes behind: P1 at once.
        let f = read(vec![replicated("replicating", at(16))]);
        assert!(f.p1 && !f.needs_start, "{f:?}");
        assert!(f.reasons[0].contains("16 min behind (RPO 15 min)"), "{f:?}");
        // Replicating without a LatestTime: P2, not P1.
        let f = read(vec![replicated("replicating", None)]);
        assert!(!f.p1 && f.reasons[0].contains("no RestoreWindow.LatestTime"));
        // Starting: no breach, nothing to start.
        let f = read(vec![replicated("pending", None)]);
        assert!(f.reasons.is_empty() && !f.needs_start);
        assert!(f.note.unwrap().contains("starting"));
        // None, or only a retained one (replication stopped): not replicated, start it.
        let f = read(vec![]);
        assert!(f.needs_start && !f.p1 && f.reasons[0].contains("not replicated"));
        let f = read(vec![replicated("retained", at(600))]);
        assert!(f.needs_start, "{f:?}");
        assert!(f.reasons[0].contains("last recovery point there"), "{f:?}");
        // A retained one beside a replicating one: the replicating one decides.
        let f = read(vec![
            replicated("retained", at(6000)),
            replicated("replicating", at(2)),
        ]);
        assert!(f.reasons.is_empty() && !f.needs_start, "{f:?}");
        // Unreadable: a reason that names it, never a start.
        let f = dr_findings(
            &DrView::Unreadable("AccessDenied".into()),
            "us-west-2",
            15,
            now(),
        );
        assert!(!f.needs_start && f.reasons[0].contains("unreadable (AccessDenied)"));
    }

    #[test]
    fn a_floor_of_p1_fires_p1_at_once_and_never_drops_back() {
        let reasons = vec!["DR late".to_string()];
        let (open, a) = breach_transition_at_least(None, &reasons, now(), 15, Severity::P1);
        assert_eq!(a, Announce::Firing(Severity::P1));
        // The DR point caught up but another reason stays: still P1, nothing new said.
        let (o2, a) = breach_transition_at_least(
            open.as_ref(),
            &["other".to_string()],
            now() + Duration::minutes(5),
            15,
            Severity::P2,
        );
        assert_eq!((o2.unwrap().severity, a), (Severity::P1, Announce::Nothing));
    }

    #[test]
    fn archiver_off_failing_stalled_healthy() {
        let row = |v: serde_json::Value| v.as_object().unwrap().clone();
        let t = |m: i64| (now() - Duration::minutes(m)).to_rfc3339();
        assert!(
            archiver_problem(&row(json!({"archive_mode": "off"})), now(), 15)
                .unwrap()
                .contains("off")
        );
        let failing = row(
            json!({"archive_mode": "on", "failed_count": 3, "last_failed_time": t(1), "last_archived_time": t(5), "last_failed_wal": "0001"}),
        );
        assert!(archiver_problem(&failing, now(), 15)
            .unwrap()
            .contains("failing: 3 failure(s)"));
        let recovered = row(
            json!({"archive_mode": "on", "failed_count": 3, "last_failed_time": t(5), "last_archived_time": t(1)}),
        );
        assert_eq!(archiver_problem(&recovered, now(), 15), None);
        let stalled = row(json!({"archive_mode": "on", "last_archived_time": t(40)}));
        assert!(archiver_problem(&stalled, now(), 15)
            .unwrap()
            .contains("stalled"));
        assert_eq!(archiver_problem(&stalled, now(), 0), None);
        // The server's clock decides the age, whatever the function's clock says.
        let on_server =
            row(json!({"archive_mode": "on", "last_archived_time": t(2), "server_now": t(0)}));
        assert_eq!(
            archiver_problem(&on_server, now() + Duration::days(30), 15),
            None
        );
        let stalled_on_server =
            row(json!({"archive_mode": "on", "last_archived_time": t(40), "server_now": t(0)}));
        assert!(
            archiver_problem(&stalled_on_server, now() - Duration::days(30), 15)
                .unwrap()
                .contains("40 min ago")
        );
        // Nothing archived yet and nothing failed: not judged.
        assert_eq!(
            archiver_problem(&row(json!({"archive_mode": "on"})), now(), 15),
            None
        );
    }

    fn ours(id: &str, days_old: i64) -> DbSnapshot {
        let mut s = fake_snapshot(
            id,
            "db",
            SnapshotKind::Manual,
            now() - Duration::days(days_old),
        );
        s.tags.insert(OWNER_TAG.0.into(), OWNER_TAG.1.into());
        s
    }

    #[test]
    fn monthly_names_are_deterministic_and_valid() {
        assert_eq!(
            monthly_snapshot_id("nbaops-dev-db", now()),
            "nbaops-monthly-nbaops-dev-db-2026-11"
        );
        assert_eq!(
            monthly_snapshot_id("nbaops-dev-db", now() + Duration::days(2)),
            "nbaops-monthly-nbaops-dev-db-2026-11"
        );
        assert_eq!(
            monthly_snapshot_id("Odd__Name", now()),
            "nbaops-monthly-odd-name-2026-11"
        );
        let d = drill_instance_id(&"x".repeat(80), now());
        assert!(
            d.len() <= 63 && d.ends_with("-202611251200") && !d.contains("--"),
            "{d}"
        );
        assert_eq!(
            drill_instance_id("nbaops-dev-db", now()),
            "nbaops-drill-nbaops-dev-db-202611251200"
        );
    }

    #[test]
    fn copies_newest_first_within_the_free_slots() {
        let primary = vec![
            ours("m-1", 90),
            ours("m-2", 60),
            ours("m-3", 30),
            ours("m-4", 1),
        ];
        let mut busy = ours("m-0", 120);
        busy.status = "copying".into();
        let dr = vec![busy, ours("m-1", 90)];
        let p = plan_copies(&primary, &dr, &[], 2, 365, now());
        assert_eq!(p.in_flight, 1);
        assert_eq!(
            p.copy.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            vec!["m-4"]
        );
        assert_eq!(p.deferred, vec!["m-3", "m-2"]);
        // A copy that failed before goes ahead of the newer ones.
        let p = plan_copies(&primary, &dr, &["m-2".to_string()], 2, 365, now());
        assert_eq!(
            p.copy.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            vec!["m-2"]
        );
        assert_eq!(p.deferred, vec!["m-4", "m-3"]);
        // All slots taken: nothing now, everything deferred.
        let p = plan_copies(&primary, &dr, &[], 1, 365, now());
        assert!(p.copy.is_empty() && p.deferred.len() == 3);
        // Not ours, not available or expired: never copied.
        let mut foreign = fake_snapshot("human", "db", SnapshotKind::Manual, now());
        foreign.tags.clear();
        let mut creating = ours("m-5", 0);
        creating.status = "creating".into();
        let p = plan_copies(
            &[foreign, creating, ours("old", 400)],
            &[],
            &[],
            5,
            365,
            now(),
        );
        assert!(p.copy.is_empty(), "{p:?}");
    }

    #[test]
    fn retention_never_deletes_the_only_recent_copy() {
        // Primary: two expired, one recent. DR: only expired copies.
        let primary = vec![ours("m-a", 500), ours("m-b", 400), ours("m-c", 10)];
        let dr = vec![ours("m-a", 500), ours("m-b", 400)];
        let (del, kept) = plan_retention(&primary, &dr, 365, now());
        let ids: Vec<(Site, &str)> = del
            .iter()
            .map(|d| (d.site, d.snapshot.id.as_str()))
            .collect();
        assert_eq!(
            ids,
            vec![
                (Site::Primary, "m-a"),
                (Site::Primary, "m-b"),
                (Site::Dr, "m-a")
            ]
        );
        assert!(
            kept.iter()
                .any(|k| k.starts_with("dr m-b") && k.contains("only recent copy")),
            "{kept:?}"
        );
        // A human's manual snapshot is never touched, however old.
        let mut human = fake_snapshot(
            "before-upgrade",
            "db",
            SnapshotKind::Manual,
            now() - Duration::days(900),
        );
        human.tags.clear();
        let (del, _) = plan_retention(&[human, ours("m-c", 10)], &[], 365, now());
        assert!(del.is_empty());
        // An expired primary whose DR copy is still in flight is kept.
        let mut copying = ours("m-a", 500);
        copying.status = "copying".into();
        let (del, kept) = plan_retention(
            &[ours("m-a", 500), ours("m-c", 10)],
            &[copying, ours("m-c", 10)],
            365,
            now(),
        );
        assert!(del.is_empty(), "{del:?}");
        assert!(kept.iter().any(|k| k.contains("in flight")));
    }

    fn drill(started: DateTime<Utc>) -> Drill {
        Drill {
            source: "db".into(),
            drill_instance: drill_instance_id("db", started),
            snapshot_id: "rds:db-1".into(),
            started_at: started,
            phase: DrillPhase::Restoring,
            verified_at: None,
            rto_seconds: None,
            rto_met: None,
            checks: vec![],
            passed: None,
            overdue_alerted: false,
            connect_failures: 0,
            app_healthy_at: None,
            app_rto_seconds: None,
            app_rto_met: None,
            app_checks: vec![],
            smoke: None,
        }
    }

    fn row(v: serde_json::Value) -> Row {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn healthy_answers() {
        assert!(healthy_answer(&[row(json!({"ok": true}))]));
        assert!(healthy_answer(&[row(json!({"n": 3, "s": "up"}))]));
        assert!(!healthy_answer(&[]), "no row");
        for bad in [
            json!({"ok": false}),
            json!({"n": 0}),
            json!({"x": null}),
            json!({"s": ""}),
            json!({"s": "f"}),
            json!({"s": "FALSE"}),
            json!({"ok": true, "n": 0}),
        ] {
            assert!(!healthy_answer(&[row(bad.clone())]), "{bad}");
        }
        // Only the first row counts.
        assert!(healthy_answer(&[
            row(json!({"ok": 1})),
            row(json!({"ok": 0}))
        ]));
    }

    #[test]
    fn application_rto_and_smoke_test() {
        let at = |m: i64| now() + Duration::minutes(m);
        let ok = |p: bool| CheckResult {
            check: "health query 1".into(),
            passed: p,
            detail: String::new(),
        };
        // Not healthy yet, within give-up: ask again, nothing recorded.
        let mut d = drill(now());
        assert!(!record_app_health(&mut d, vec![ok(false)], at(20), 30, 6));
        assert_eq!((d.app_rto_seconds, d.app_rto_met), (None, None));
        assert!(
            !record_app_health(&mut d, vec![], at(21), 30, 6),
            "no answer is not healthy"
        );
        // Healthy at 30 min: met (the edge); at 31: missed.
        let mut m = d.clone();
        assert!(record_app_health(&mut m, vec![ok(true)], at(30), 30, 6));
        assert_eq!(
            (m.app_rto_seconds, m.app_rto_met),
            (Some(30 * 60), Some(true))
        );
        assert_eq!(m.app_healthy_at, Some(at(30)));
        let mut late = d.clone();
        assert!(record_app_health(
            &mut late,
            vec![ok(true), ok(true)],
            at(31),
            30,
            6
        ));
        assert_eq!(late.app_rto_met, Some(false));
        // One of two unhealthy past give-up: missed, never healthy.
        let mut never = d.clone();
        assert!(record_app_health(
            &mut never,
            vec![ok(true), ok(false)],
            at(6 * 60 + 1),
            30,
            6
        ));
        assert_eq!(
            (never.app_rto_met, never.app_healthy_at),
            (Some(false), None)
        );

        // drill_passed: the application RTO and the smoke test count.
        let mut p = drill(now());
        conclude(&mut p, vec![ok(true)], at(20), 60);
        assert!(drill_passed(&p));
        let mut q = p.clone();
        q.app_rto_met = Some(false);
        assert!(!drill_passed(&q));
        let mut q = p.clone();
        q.smoke = Some(SmokeTest {
            group: "g".into(),
            launch_template: "lt".into(),
            created_at: None,
            in_service_at: None,
            seconds: None,
            passed: None,
            detail: String::new(),
            deleted: false,
        });
        assert!(!drill_passed(&q), "a smoke test not passed");
        q.smoke.as_mut().unwrap().passed = Some(true);
        assert!(drill_passed(&q));

        // The smoke test: healthy passes, gone fails, none past give-up fails.
        assert_eq!(smoke_step(&p, Some((1, 1)), at(40), 6), SmokeStep::Passed);
        assert!(matches!(
            smoke_step(&p, Some((1, 0)), at(40), 6),
            SmokeStep::Wait(_)
        ));
        assert!(matches!(
            smoke_step(&p, Some((0, 0)), at(6 * 60 + 1), 6),
            SmokeStep::Fail(_)
        ));
        assert!(matches!(
            smoke_step(&p, None, at(40), 6),
            SmokeStep::Fail(_)
        ));
        let mut ph = p.clone();
        ph.phase = DrillPhase::AppHealth;
        assert_eq!(
            next_drill_step(&ph, Some("available"), at(40), 60, 6),
            DrillStep::AppHealth
        );
        ph.phase = DrillPhase::FullSystem;
        assert_eq!(
            next_drill_step(&ph, Some("available"), at(40), 60, 6),
            DrillStep::Smoke
        );
    }

    #[test]
    fn drill_state_machine() {
        let d = drill(now());
        let at = |m: i64| now() + Duration::minutes(m);
        assert!(matches!(
            next_drill_step(&d, Some("creating"), at(10), 60, 6),
            DrillStep::Wait(_)
        ));
        assert_eq!(
            next_drill_step(&d, Some("available"), at(20), 60, 6),
            DrillStep::Validate
        );
        assert!(matches!(
            next_drill_step(&d, Some("creating"), at(61), 60, 6),
            DrillStep::Overdue(_)
        ));
        let mut alerted = d.clone();
        alerted.overdue_alerted = true;
        assert!(matches!(
            next_drill_step(&alerted, Some("creating"), at(90), 60, 6),
            DrillStep::Wait(_)
        ));
        assert!(matches!(
            next_drill_step(&alerted, Some("creating"), at(7 * 60), 60, 6),
            DrillStep::Fail(_)
        ));
        assert!(matches!(
            next_drill_step(&d, Some("incompatible-restore"), at(5), 60, 6),
            DrillStep::Fail(_)
        ));
        assert!(matches!(
            next_drill_step(&d, None, at(5), 60, 6),
            DrillStep::Fail(_)
        ));

        let mut v = d.clone();
        let ok = CheckResult {
            check: "rows public.players".into(),
            passed: true,
            detail: "12".into(),
        };
        conclude(&mut v, vec![ok.clone()], at(42), 60);
        assert_eq!(
            (v.rto_seconds, v.rto_met, v.passed, v.phase),
            (Some(42 * 60), Some(true), Some(true), DrillPhase::Deleting)
        );
        assert_eq!(
            next_drill_step(&v, Some("available"), at(43), 60, 6),
            DrillStep::Delete
        );
        let mut slow = d.clone();
        conclude(&mut slow, vec![ok], at(75), 60);
        assert_eq!((slow.rto_met, slow.passed), (Some(false), Some(true)));
        let mut bad = d.clone();
        conclude(
            &mut bad,
            vec![CheckResult {
                check: "rows public.gone".into(),
                passed: false,
                detail: "missing".into(),
            }],
            at(10),
            60,
        );
        assert_eq!(bad.passed, Some(false));
        let mut none = d.clone();
        conclude(&mut none, vec![], at(10), 60);
        assert_eq!(none.passed, Some(false), "no check at all proves nothing");
        let mut done = v;
        done.phase = DrillPhase::Done;
        assert_eq!(
            next_drill_step(&done, None, at(50), 60, 6),
            DrillStep::Finished
        );
    }

    #[test]
    fn drill_url_template_and_overrides() {
        let d = drill(now());
        let c = cfg(&[]);
        let ep = ("h.rds".to_string(), 5433u16);
        assert_eq!(
            drill_url(&c, &d, Some(&ep)).unwrap(),
            "postgres://nbaops_drill@h.rds:5433/postgres?sslmode=require"
        );
        assert_eq!(drill_url(&c, &d, None), None);
        let c = cfg(&[(
            "NBAOPS_BACKUP__DRILL__URL_OVERRIDES",
            r#"{"db": "postgres://postgres@127.0.0.1:6000/app?application_name={instance}"}"#,
        )]);
        assert_eq!(
            drill_url(&c, &d, None).unwrap(),
            format!(
                "postgres://postgres@127.0.0.1:6000/app?application_name={}",
                d.drill_instance
            )
        );
    }
}
