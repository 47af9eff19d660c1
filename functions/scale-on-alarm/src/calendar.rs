//! The game calendar and what it plans, pure: parsing the CSV text (`date,tipoff,load` in the
//! platform's time zone), and the two one-time schedules of each slate (pre-scale at tip-off minus
//! the lead, return at tip-off plus the hold). Nothing here reads a clock or calls AWS.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};

/// The scheduler input task that raises every managed group to the slate's level.
pub const PRESCALE_TASK: &str = "game-night-prescale";
/// The scheduler input task that brings every managed group back to its baseline.
pub const RETURN_TASK: &str = "game-night-return";
/// The daily task that reads the calendar and creates the two schedules of each near slate.
pub const PLAN_TASK: &str = "game-night-plan";

/// One game night: its local date, the tip-off (local and as the UTC instant), its load.
#[derive(Debug, Clone, PartialEq)]
pub struct Slate {
    pub line: usize,
    pub date: NaiveDate,
    pub local_tipoff: NaiveTime,
    pub tipoff: DateTime<Utc>,
    pub load: String,
    pub level: i32,
}

/// A line that is not planned, and why (1-based line number).
#[derive(Debug, Clone, PartialEq)]
pub struct LineError {
    pub line: usize,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Calendar {
    /// One per date, in date order.
    pub slates: Vec<Slate>,
    pub errors: Vec<LineError>,
}

/// Parses the calendar. `levels` is the configured load -> desired capacity. Each line is
/// `YYYY-MM-DD,HH:MM,load` (spaces around fields allowed, load case-insensitive); blank lines
/// and lines starting with `#` are skipped. A line that is not understood is reported with its
/// number and reason and not planned; a local time that does not exist (spring-forward gap) or
/// exists twice (fall-back fold) is reported, never guessed. Two lines for one date: the busier
/// (higher level; on a tie, the earlier line) is planned and the other reported as not planned.
pub fn parse(text: &str, tz: Tz, levels: &BTreeMap<String, i32>) -> Calendar {
    let mut by_date: BTreeMap<NaiveDate, Slate> = BTreeMap::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim().trim_start_matches('\u{feff}');
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match parse_line(trimmed, tz, levels) {
            Err(reason) => errors.push(LineError { line, reason }),
            Ok((date, local_tipoff, tipoff, load, level)) => {
                let slate = Slate {
                    line,
                    date,
                    local_tipoff,
                    tipoff,
                    load,
                    level,
                };
                match by_date.get(&date) {
                    None => {
                        by_date.insert(date, slate);
                    }
                    Some(kept) if kept.level >= slate.level => errors.push(LineError {
                        line,
                        reason: format!(
                            "{date} is already on line {} with a load as busy ({}={} >= {}={}): this line is not planned",
                            kept.line, kept.load, kept.level, slate.load, slate.level
                        ),
                    }),
                    Some(kept) => {
                        errors.push(LineError {
                            line: kept.line,
                            reason: format!(
                                "{date} is also on line {line} with a busier load ({}={} > {}={}): this line is not planned",
                                slate.load, slate.level, kept.load, kept.level
                            ),
                        });
                        by_date.insert(date, slate);
                    }
                }
            }
        }
    }
    errors.sort_by_key(|e| e.line);
    Calendar {
        slates: by_date.into_values().collect(),
        errors,
    }
}

type Parsed = (NaiveDate, NaiveTime, DateTime<Utc>, String, i32);

fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if s.chars().count() > 40 {
        out.push_str("...");
    }
    out
}

fn parse_line(line: &str, tz: Tz, levels: &BTreeMap<String, i32>) -> Result<Parsed, String> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let [date, time, load] = fields.as_slice() else {
        return Err(format!(
            "expected 3 fields date,tipoff,load, got {}: '{}'",
            fields.len(),
            shorten(line)
        ));
    };
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .ok()
        .filter(|_| date.len() == 10)
        .ok_or_else(|| format!("bad date '{}': expected YYYY-MM-DD", shorten(date)))?;
    let time = NaiveTime::parse_from_str(time, "%H:%M")
        .ok()
        .filter(|_| time.len() == 5)
        .ok_or_else(|| format!("bad tip-off time '{}': expected HH:MM", shorten(time)))?;
    let load_name = load.to_ascii_lowercase();
    let Some(&level) = levels.get(&load_name) else {
        let known: Vec<&str> = levels.keys().map(String::as_str).collect();
        return Err(format!(
            "unknown load '{}': scale.gamenight.levels knows {}",
            shorten(load),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ));
    };
    let tipoff = match tz.from_local_datetime(&date.and_time(time)) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::None => {
            return Err(format!(
                "{date} {} does not exist in {} (the clocks skip it: daylight saving time starts); not guessed",
                time.format("%H:%M"),
                tz.name()
            ))
        }
        LocalResult::Ambiguous(a, b) => {
            return Err(format!(
                "{date} {} happens twice in {} (the clocks fall back: {} or {}); not guessed",
                time.format("%H:%M"),
                tz.name(),
                a.with_timezone(&Utc).format("%H:%MZ"),
                b.with_timezone(&Utc).format("%H:%MZ")
            ))
        }
    };
    Ok((date, time, tipoff, load_name, level))
}

/// One one-time schedule a slate needs: its name (from the slate's date: re-planning the same
/// slate finds it and creates nothing), when, and the input the function then receives.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub name: String,
    pub at: DateTime<Utc>,
    pub input: Value,
    pub date: NaiveDate,
    pub task: &'static str,
}

/// Whole minutes: the scheduler's `at()` runs to the second, the calendar to the minute.
fn whole_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp().div_euclid(60) * 60, 0).unwrap_or(t)
}

/// What planning decided for one slate.
#[derive(Debug, Clone, PartialEq)]
pub enum SlatePlan {
    /// Not today or tomorrow (local): a later run plans it.
    NotYet,
    /// Its return time has passed: nothing to do.
    Over,
    /// The two schedules. `late` when the pre-scale instant has passed: it runs at the next minute.
    Schedules {
        prescale: Planned,
        back: Planned,
        late: bool,
    },
}

/// Plans a slate at `now`: today's and tomorrow's slates (local dates) get their two schedules.
pub fn plan_slate(slate: &Slate, now: DateTime<Utc>, tz: Tz, lead: i64, hold: i64) -> SlatePlan {
    let today = now.with_timezone(&tz).date_naive();
    let Some(tomorrow) = today.succ_opt() else {
        return SlatePlan::NotYet;
    };
    if slate.date != today && slate.date != tomorrow {
        return if slate.date < today {
            SlatePlan::Over
        } else {
            SlatePlan::NotYet
        };
    }
    let back_at = slate.tipoff + Duration::minutes(hold);
    if back_at <= now {
        return SlatePlan::Over;
    }
    let mut prescale_at = slate.tipoff - Duration::minutes(lead);
    let next_minute = whole_minute(now) + Duration::minutes(1);
    let late = prescale_at < next_minute;
    if late {
        prescale_at = next_minute.min(back_at);
    }
    let make = |task: &'static str, at: DateTime<Utc>| {
        let name = format!("{task}-{}", slate.date.format("%Y-%m-%d"));
        Planned {
            input: json!({"nbaops": {
                "task": task,
                "id": name,
                "date": slate.date.format("%Y-%m-%d").to_string(),
                "tipoff": slate.tipoff.to_rfc3339(),
                "load": slate.load,
            }}),
            name,
            at: whole_minute(at),
            date: slate.date,
            task,
        }
    };
    SlatePlan::Schedules {
        prescale: make(PRESCALE_TASK, prescale_at),
        back: make(RETURN_TASK, back_at),
        late,
    }
}

/// The desired capacity a pre-scale sets: the level, capped by the ceiling and MaxSize; `None`
/// when the group is already at or above it (a pre-scale never lowers a group).
pub fn prescale_target(level: i32, ceiling: i32, max_size: i32, desired: i32) -> Option<i32> {
    let target = level.min(ceiling).min(max_size);
    (target > desired).then_some(target)
}

/// The desired capacity a return sets: the baseline (never below MinSize); `None` when the group
/// is already at or below it.
pub fn return_target(baseline: i32, min_size: i32, desired: i32) -> Option<i32> {
    let target = baseline.max(min_size);
    (target < desired).then_some(target)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono_tz::America::New_York;

    fn levels() -> BTreeMap<String, i32> {
        BTreeMap::from([("high".to_string(), 4), ("medium".to_string(), 3)])
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn good_lines_comments_and_blanks() {
        let c = parse(
            "# NBA slate\n\n2026-12-25,12:00,high\n 2026-12-26 , 19:30 , Medium \n",
            New_York,
            &levels(),
        );
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        assert_eq!(c.slates.len(), 2);
        assert_eq!(c.slates[0].line, 3);
        assert_eq!(c.slates[0].tipoff, utc("2026-12-25T17:00:00Z"));
        assert_eq!(c.slates[0].level, 4);
        assert_eq!(c.slates[1].load, "medium");
        assert_eq!(c.slates[1].tipoff, utc("2026-12-27T00:30:00Z"));
    }

    #[test]
    fn every_error_kind_names_its_line() {
        let text = "2026-13-01,19:30,high\n\
                    2026-12-25,7pm,high\n\
                    2026-12-25,19:30,extreme\n\
                    2026-12-25,19:30\n\
                    2027-03-14,02:30,high\n\
                    2026-11-01,01:30,high\n\
                    26-12-25,19:30,high\n\
                    2026-12-25,9:30,high\n";
        let c = parse(text, New_York, &levels());
        assert!(c.slates.is_empty(), "{:?}", c.slates);
        let lines: Vec<usize> = c.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![1, 2, 3, 4, 5, 6, 7, 8]);
        let r = |i: usize| c.errors[i].reason.as_str();
        assert!(r(0).contains("bad date"), "{}", r(0));
        assert!(r(1).contains("bad tip-off time"), "{}", r(1));
        assert!(
            r(2).contains("unknown load 'extreme'") && r(2).contains("high, medium"),
            "{}",
            r(2)
        );
        assert!(r(3).contains("expected 3 fields"), "{}", r(3));
        assert!(
            r(4).contains("does not exist") && r(4).contains("America/New_York"),
            "{}",
            r(4)
        );
        assert!(
            r(5).contains("happens twice") && r(5).contains("05:30Z") && r(5).contains("06:30Z"),
            "{}",
            r(5)
        );
        assert!(r(6).contains("bad date"), "{}", r(6));
        assert!(r(7).contains("bad tip-off time"), "{}", r(7));
    }

    /// 19:30 in New York on the Sundays the clocks change, and the days around: EDT is UTC-4,
    /// EST UTC-5 (2027: DST starts March 14, ends November 7).
    #[test]
    fn tipoff_across_dst_changes_is_the_right_utc_instant() {
        let c = parse(
            "2027-03-13,19:30,high\n2027-03-14,19:30,high\n2027-11-06,19:30,high\n2027-11-07,19:30,high\n",
            New_York,
            &levels(),
        );
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        let got: Vec<_> = c.slates.iter().map(|s| s.tipoff).collect();
        assert_eq!(
            got,
            vec![
                utc("2027-03-14T00:30:00Z"),
                utc("2027-03-14T23:30:00Z"),
                utc("2027-11-06T23:30:00Z"),
                utc("2027-11-08T00:30:00Z"),
            ]
        );
    }

    #[test]
    fn duplicate_dates_the_busiest_wins_and_the_other_is_reported() {
        let c = parse(
            "2026-12-25,12:00,medium\n2026-12-25,20:00,high\n2026-12-25,14:00,medium\n",
            New_York,
            &levels(),
        );
        assert_eq!(c.slates.len(), 1);
        assert_eq!(c.slates[0].line, 2);
        assert_eq!(c.slates[0].load, "high");
        let lines: Vec<usize> = c.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![1, 3]);
        assert!(c.errors[0].reason.contains("line 2"), "{:?}", c.errors);
        // A tie keeps the earlier line.
        let c = parse(
            "2026-12-25,12:00,high\n2026-12-25,20:00,high\n",
            New_York,
            &levels(),
        );
        assert_eq!(c.slates[0].line, 1);
        assert_eq!(c.errors[0].line, 2);
    }

    fn slate(text: &str) -> Slate {
        parse(text, New_York, &levels()).slates.remove(0)
    }

    #[test]
    fn planning_lead_hold_and_names() {
        let s = slate("2027-03-14,19:30,high");
        // The plan runs the morning before, local 06:00 (EDT already).
        let now = utc("2027-03-13T11:00:00Z");
        let SlatePlan::Schedules {
            prescale,
            back,
            late,
        } = plan_slate(&s, now, New_York, 60, 240)
        else {
            panic!("not planned")
        };
        assert!(!late);
        assert_eq!(prescale.at, utc("2027-03-14T22:30:00Z"));
        assert_eq!(back.at, utc("2027-03-15T03:30:00Z"));
        assert_eq!(prescale.name, "game-night-prescale-2027-03-14");
        assert_eq!(back.name, "game-night-return-2027-03-14");
        assert_eq!(prescale.input["nbaops"]["task"], "game-night-prescale");
        assert_eq!(prescale.input["nbaops"]["id"], prescale.name.as_str());
        assert_eq!(back.input["nbaops"]["load"], "high");
        // Re-planning later the same day plans the same names and instants.
        let again = plan_slate(&s, now + Duration::hours(20), New_York, 60, 240);
        assert_eq!(
            again,
            SlatePlan::Schedules {
                prescale: prescale.clone(),
                back: back.clone(),
                late: false
            }
        );
        // Two days ahead: not yet; the day after its return: over.
        assert_eq!(
            plan_slate(&s, now - Duration::days(1), New_York, 60, 240),
            SlatePlan::NotYet
        );
        assert_eq!(plan_slate(&s, back.at, New_York, 60, 240), SlatePlan::Over);
        // Planned after the pre-scale instant: the next minute, flagged late.
        let SlatePlan::Schedules { prescale, late, .. } =
            plan_slate(&s, utc("2027-03-14T23:10:30Z"), New_York, 60, 240)
        else {
            panic!("not planned")
        };
        assert!(late);
        assert_eq!(prescale.at, utc("2027-03-14T23:11:00Z"));
    }

    #[test]
    fn targets_never_lower_a_prescale_nor_raise_a_return() {
        assert_eq!(prescale_target(4, 4, 6, 2), Some(4));
        assert_eq!(prescale_target(6, 4, 6, 2), Some(4));
        assert_eq!(prescale_target(4, 6, 3, 2), Some(3));
        assert_eq!(prescale_target(3, 4, 6, 3), None);
        assert_eq!(prescale_target(3, 4, 6, 4), None);
        assert_eq!(return_target(2, 1, 4), Some(2));
        assert_eq!(return_target(2, 3, 4), Some(3));
        assert_eq!(return_target(2, 1, 2), None);
        assert_eq!(return_target(2, 1, 1), None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any text: no panic; every non-blank, non-comment line is a slate or an error.
            #[test]
            fn any_text_never_panics(text in "(?s).{0,400}", lines in proptest::collection::vec(
                "[0-9]{2,4}-[0-9]{1,2}-[0-9]{1,2},[0-9]{1,2}:[0-9]{2},(high|medium|low|HIGH)", 0..8)) {
                for tz in [New_York, chrono_tz::UTC, chrono_tz::Australia::Lord_Howe] {
                    let c = parse(&text, tz, &levels());
                    let counted = text.lines().filter(|l| {
                        let t = l.trim().trim_start_matches('\u{feff}');
                        !t.is_empty() && !t.starts_with('#')
                    }).count();
                    prop_assert_eq!(c.slates.len() + c.errors.len(), counted);
                    let joined = lines.join("\n");
                    let c = parse(&joined, tz, &levels());
                    prop_assert_eq!(c.slates.len() + c.errors.len(), lines.len());
                    for s in &c.slates {
                        let _ = plan_slate(s, s.tipoff, tz, 60, 240);
                    }
                }
            }
        }
    }
}
