//! The `offhours` section: named schedules (time zone, weekday periods, holidays, one-sided
//! stop-only / start-only periods), the tags that put a resource on a schedule or take it off,
//! which environments may be scheduled (never prod unless `offhours.allow_prod`), and whether
//! the schedule is enforced on every tick or only acted on at its transitions.
//!
//! `offhours.schedules` is per environment like every key (SSM `/nbaops/<env>/offhours/schedules`):
//! ```json
//! {"office-hours": {"tz": "Europe/Paris",
//!   "periods": [{"days": ["mon","tue","wed","thu","fri"], "start": "08:00", "stop": "19:00"}],
//!   "holidays": ["2026-12-25"]},
//!  "nightly-stop": {"tz": "UTC", "periods": [{"days": ["mon","tue","wed","thu","fri","sat","sun"], "stop": "20:00"}]}}
//! ```
//! A period with both times whose stop is not after its start runs past midnight: the stop
//! falls on the next day. No start happens on a holiday (stops still do).

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use chrono::{NaiveDate, NaiveTime, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::{positive, Env, Settings};
use crate::alerts::Severity;
use crate::error::{NbaopsError, Result};

pub const KEYS: &[(&str, &str, &str)] = &[
    ("offhours.schedules", "{}", r#"JSON: schedule name -> {"tz": IANA zone, "periods": [{"days": [mon..sun], "start"?: "HH:MM", "stop"?: "HH:MM"}], "holidays"?: ["YYYY-MM-DD"]} (a period with only stop or only start is one-sided)"#),
    ("offhours.schedule_tag", "nbaops:schedule", "tag whose value names the schedule of an Auto Scaling group or RDS instance"),
    ("offhours.opt_out_tag", "nbaops:offhours-opt-out", "a resource with this tag (any value but false) is never scheduled"),
    ("offhours.env_tag", "env", "tag naming the environment of a scheduled resource (a resource without it is refused)"),
    ("offhours.envs", "dev,test", "comma list of environments whose tagged resources may be stopped and started"),
    ("offhours.allow_prod", "false", "true lets offhours.envs list prod (refused otherwise)"),
    ("offhours.enforce", "false", "true: bring every resource back to its schedule on every tick (a manual start outside the schedule is undone); false: act only on transitions"),
    ("offhours.start_grace_minutes", "30", "a database started this long ago and still not available is a failed start (alert)"),
    ("offhours.cooldown_seconds", "0", "minimum time between two power changes of one resource (transitions already pace offhours; raise it to throttle enforce mode against a person)"),
    ("offhours.alert_severity", "P3", "severity of the alert when a resource is not in the state its schedule says"),
];

/// One period: starts and/or stops on the listed weekdays, local time of the schedule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Period {
    pub days: Vec<Weekday>,
    pub start: Option<NaiveTime>,
    pub stop: Option<NaiveTime>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    pub name: String,
    #[serde(serialize_with = "tz_name")]
    pub tz: Tz,
    pub periods: Vec<Period>,
    pub holidays: BTreeSet<NaiveDate>,
}

fn tz_name<S: serde::Serializer>(tz: &Tz, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(tz.name())
}

impl Schedule {
    /// Both kinds of transition exist: a resource out of step with it is worth an alert. A
    /// stop-only schedule expects people to start things by hand (and start-only, to stop them).
    pub fn two_sided(&self) -> bool {
        self.periods.iter().any(|p| p.start.is_some())
            && self.periods.iter().any(|p| p.stop.is_some())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct OffhoursConfig {
    pub schedules: BTreeMap<String, Schedule>,
    pub schedule_tag: String,
    pub opt_out_tag: String,
    pub env_tag: String,
    pub envs: Vec<Env>,
    pub allow_prod: bool,
    pub enforce: bool,
    pub start_grace_minutes: i64,
    pub cooldown_seconds: i64,
    pub alert_severity: Severity,
}

impl OffhoursConfig {
    /// Resources of `env` may be scheduled (prod only when explicitly allowed).
    pub fn may_schedule(&self, env: Env) -> bool {
        self.envs.contains(&env) && (env != Env::Prod || self.allow_prod)
    }

    /// The tag opts the resource out (present, and not "false"/"no"/"off"/"0").
    pub fn opted_out(&self, tags: &crate::ports::Tags) -> bool {
        tags.get(&self.opt_out_tag).is_some_and(|v| {
            !matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "false" | "no" | "off" | "0"
            )
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeriod {
    days: Vec<String>,
    #[serde(default)]
    start: Option<String>,
    #[serde(default)]
    stop: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    tz: String,
    periods: Vec<RawPeriod>,
    #[serde(default)]
    holidays: Vec<String>,
}

fn parse_schedule(s: &Settings, name: &str, raw: RawSchedule) -> Result<Schedule> {
    let key = "offhours.schedules";
    let bad = |what: String| {
        NbaopsError::config(format!(
            "{key} (from {}): schedule '{name}': {what}",
            s.origin(key)
        ))
    };
    if name.trim().is_empty() {
        return Err(bad("an empty schedule name".into()));
    }
    let tz = Tz::from_str(raw.tz.trim())
        .map_err(|_| bad(format!("tz '{}' is not an IANA time zone", raw.tz)))?;
    if raw.periods.is_empty() {
        return Err(bad("no period".into()));
    }
    let time = |t: &Option<String>, which: &str| -> Result<Option<NaiveTime>> {
        t.as_deref()
            .map(|t| {
                NaiveTime::parse_from_str(t.trim(), "%H:%M")
                    .map_err(|_| bad(format!("{which} '{t}' is not HH:MM")))
            })
            .transpose()
    };
    let mut periods = Vec::new();
    for p in &raw.periods {
        let days: Vec<Weekday> = p
            .days
            .iter()
            .map(|d| d.trim().parse::<Weekday>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad(format!("days {:?} are not weekdays (mon..sun)", p.days)))?;
        if days.is_empty() {
            return Err(bad("a period without days".into()));
        }
        let start = time(&p.start, "start")?;
        let stop = time(&p.stop, "stop")?;
        if start.is_none() && stop.is_none() {
            return Err(bad("a period with neither start nor stop".into()));
        }
        if start.is_some() && start == stop {
            return Err(bad("a period whose start and stop are the same time".into()));
        }
        periods.push(Period { days, start, stop });
    }
    let mut holidays = BTreeSet::new();
    for h in &raw.holidays {
        let d = NaiveDate::parse_from_str(h.trim(), "%Y-%m-%d")
            .map_err(|_| bad(format!("holiday '{h}' is not YYYY-MM-DD")))?;
        holidays.insert(d);
    }
    Ok(Schedule {
        name: name.to_string(),
        tz,
        periods,
        holidays,
    })
}

pub fn from_settings(s: &Settings) -> Result<OffhoursConfig> {
    let raw: BTreeMap<String, RawSchedule> = s.json(
        "offhours.schedules",
        r#"a JSON object {"name": {"tz": "...", "periods": [...], "holidays": [...]}}"#,
    )?;
    let mut schedules = BTreeMap::new();
    for (name, r) in raw {
        schedules.insert(name.clone(), parse_schedule(s, &name, r)?);
    }
    let tag = |key: &str| -> Result<String> {
        let v = s.string(key);
        if v.is_empty() {
            return Err(s.bad(key, "a tag key"));
        }
        Ok(v)
    };
    let allow_prod = s.boolean("offhours.allow_prod")?;
    let mut envs = Vec::new();
    for raw in s.list("offhours.envs") {
        let env = Env::from_str(&raw).map_err(|_| s.bad("offhours.envs", "dev, test or prod"))?;
        if env == Env::Prod && !allow_prod {
            return Err(s.bad(
                "offhours.envs",
                "non-production environments only (prod needs offhours.allow_prod=true)",
            ));
        }
        if !envs.contains(&env) {
            envs.push(env);
        }
    }
    let cooldown_seconds: i64 = s.number("offhours.cooldown_seconds", "whole seconds >= 0")?;
    if cooldown_seconds < 0 {
        return Err(s.bad("offhours.cooldown_seconds", "whole seconds >= 0"));
    }
    Ok(OffhoursConfig {
        schedules,
        schedule_tag: tag("offhours.schedule_tag")?,
        opt_out_tag: tag("offhours.opt_out_tag")?,
        env_tag: tag("offhours.env_tag")?,
        envs,
        allow_prod,
        enforce: s.boolean("offhours.enforce")?,
        start_grace_minutes: positive(s, "offhours.start_grace_minutes", "whole minutes > 0")?,
        cooldown_seconds,
        alert_severity: Severity::from_str(&s.string("offhours.alert_severity"))
            .map_err(|_| s.bad("offhours.alert_severity", "P1, P2, P3 or P4"))?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::layer;

    fn load(pairs: &[(&str, &str)]) -> Result<OffhoursConfig> {
        let vars = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        from_settings(&layer(Env::Dev, &vars, &BTreeMap::new())?)
    }

    const OFFICE: &str = r#"{"office":{"tz":"Europe/Paris","periods":[{"days":["mon","tue","wed","thu","fri"],"start":"08:00","stop":"19:00"}],"holidays":["2026-12-25"]},"night":{"tz":"UTC","periods":[{"days":["mon"],"stop":"20:00"}]}}"#;

    #[test]
    fn defaults_are_safe() {
        let c = load(&[]).unwrap();
        assert!(c.schedules.is_empty());
        assert!(!c.enforce && !c.allow_prod);
        assert_eq!(c.envs, vec![Env::Dev, Env::Test]);
        assert!(!c.may_schedule(Env::Prod));
        assert_eq!(c.schedule_tag, "nbaops:schedule");
        assert_eq!(c.alert_severity, Severity::P3);
    }

    #[test]
    fn schedules_parse_with_holidays_and_one_sided_periods() {
        let c = load(&[("NBAOPS_OFFHOURS__SCHEDULES", OFFICE)]).unwrap();
        let office = &c.schedules["office"];
        assert_eq!(office.tz, chrono_tz::Europe::Paris);
        assert_eq!(office.periods[0].days.len(), 5);
        assert!(office
            .holidays
            .contains(&NaiveDate::from_ymd_opt(2026, 12, 25).unwrap()));
        assert!(office.two_sided());
        assert!(!c.schedules["night"].two_sided());
        assert_eq!(c.schedules["night"].periods[0].start, None);
    }

    #[test]
    fn prod_is_refused_unless_allowed() {
        let e = load(&[("NBAOPS_OFFHOURS__ENVS", "test,prod")]).unwrap_err();
        assert!(e.to_string().contains("offhours.envs"), "{e}");
        let c = load(&[
            ("NBAOPS_OFFHOURS__ENVS", "test,prod"),
            ("NBAOPS_OFFHOURS__ALLOW_PROD", "true"),
        ])
        .unwrap();
        assert!(c.may_schedule(Env::Prod));
    }

    #[test]
    fn bad_schedules_name_the_key_and_the_schedule() {
        for bad in [
            r#"{"x":{"tz":"Mars/Olympus","periods":[{"days":["mon"],"stop":"20:00"}]}}"#,
            r#"{"x":{"tz":"UTC","periods":[]}}"#,
            r#"{"x":{"tz":"UTC","periods":[{"days":["mon"]}]}}"#,
            r#"{"x":{"tz":"UTC","periods":[{"days":["someday"],"stop":"20:00"}]}}"#,
            r#"{"x":{"tz":"UTC","periods":[{"days":["mon"],"stop":"25:00"}]}}"#,
            r#"{"x":{"tz":"UTC","periods":[{"days":["mon"],"stop":"20:00","start":"20:00"}]}}"#,
            r#"{"x":{"tz":"UTC","periods":[{"days":["mon"],"stop":"20:00"}],"holidays":["25/12"]}}"#,
            r#"{"x":{"tz":"UTC","periods":[{"days":["mon"],"stop":"20:00","sttart":"08:00"}]}}"#,
        ] {
            let e = load(&[("NBAOPS_OFFHOURS__SCHEDULES", bad)]).unwrap_err();
            assert!(e.to_string().contains("offhours.schedules"), "{bad}: {e}");
        }
        assert!(load(&[("NBAOPS_OFFHOURS__ALERT_SEVERITY", "urgent")]).is_err());
        assert!(load(&[("NBAOPS_OFFHOURS__START_GRACE_MINUTES", "0")]).is_err());
    }

    #[test]
    fn opt_out_tag_values() {
        let c = load(&[]).unwrap();
        let mut t = crate::ports::Tags::new();
        assert!(!c.opted_out(&t));
        t.insert("nbaops:offhours-opt-out".into(), "true".into());
        assert!(c.opted_out(&t));
        t.insert("nbaops:offhours-opt-out".into(), "false".into());
        assert!(!c.opted_out(&t));
    }
}
