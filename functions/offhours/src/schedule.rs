//! Schedule maths: which transition (start or stop) of a schedule was the last one at an
//! instant. Pure, in the schedule's own time zone, DST-correct: a local time inside the spring
//! gap fires when the gap ends, an ambiguous autumn time fires at its first occurrence.

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use nbaops_shared::config::offhours::Schedule;
use serde::{Deserialize, Serialize};

/// What the schedule wants: the resource running or stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Power {
    Off,
    On,
}

impl Power {
    /// The state the schedule wants, as people read it: `running` or `stopped`.
    pub fn state_name(self) -> &'static str {
        match self {
            Power::On => "running",
            Power::Off => "stopped",
        }
    }
}

/// One scheduled start or stop, at a UTC instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub power: Power,
    pub at: DateTime<Utc>,
}

/// How far back (and ahead) transitions are looked for: a week plus a run of holidays.
const HORIZON_DAYS: i64 = 22;

/// `date` at `time` in `tz`, as UTC.
pub fn local_to_utc(tz: &Tz, date: NaiveDate, time: NaiveTime) -> Option<DateTime<Utc>> {
    let naive = date.and_time(time);
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
        // The clocks jumped over it: the first local minute that exists after it.
        LocalResult::None => (1..=180).find_map(|m| {
            tz.from_local_datetime(&(naive + Duration::minutes(m)))
                .earliest()
                .map(|t| t.with_timezone(&Utc))
        }),
    }
}

/// Every transition anchored on local `date` (a period's day): its start (not on a holiday)
/// and its stop (the next day when the period runs past midnight).
fn transitions_anchored_on(s: &Schedule, date: NaiveDate) -> Vec<Transition> {
    let mut out = Vec::new();
    for p in &s.periods {
        if !p.days.contains(&date.weekday()) {
            continue;
        }
        if let Some(start) = p.start {
            if !s.holidays.contains(&date) {
                if let Some(at) = local_to_utc(&s.tz, date, start) {
                    out.push(Transition {
                        power: Power::On,
                        at,
                    });
                }
            }
        }
        if let Some(stop) = p.stop {
            let overnight = p.start.is_some_and(|start| stop <= start);
            let day = if overnight {
                date.succ_opt().unwrap_or(date)
            } else {
                date
            };
            if let Some(at) = local_to_utc(&s.tz, day, stop) {
                out.push(Transition {
                    power: Power::Off,
                    at,
                });
            }
        }
    }
    out
}

/// Transitions between `from` and `to` local dates, in time order; at one instant a start
/// sorts after a stop, so back-to-back periods (08-12, 12-18) keep the resource running.
fn transitions_between(s: &Schedule, from: NaiveDate, to: NaiveDate) -> Vec<Transition> {
    let mut all: Vec<Transition> = from
        .iter_days()
        .take_while(|d| *d <= to)
        .flat_map(|d| transitions_anchored_on(s, d))
        .collect();
    all.sort_by_key(|t| (t.at, t.power));
    all
}

/// The last transition at or before `at`: what the schedule says now, and since when.
/// `None` when the schedule has had none for three weeks (no opinion: nothing is done).
pub fn last_transition(s: &Schedule, at: DateTime<Utc>) -> Option<Transition> {
    let today = at.with_timezone(&s.tz).date_naive();
    transitions_between(
        s,
        today - Duration::days(HORIZON_DAYS),
        today + Duration::days(1),
    )
    .into_iter()
    .rfind(|t| t.at <= at)
}

/// The first transition after `at`, for the report.
pub fn next_transition(s: &Schedule, at: DateTime<Utc>) -> Option<Transition> {
    let today = at.with_timezone(&s.tz).date_naive();
    transitions_between(
        s,
        today - Duration::days(1),
        today + Duration::days(HORIZON_DAYS),
    )
    .into_iter()
    .find(|t| t.at > at)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use nbaops_shared::config::offhours::Period;
    use Power::*;

    fn sched(tz: Tz, periods: Vec<Period>, holidays: &[(i32, u32, u32)]) -> Schedule {
        Schedule {
            name: "t".into(),
            tz,
            periods,
            holidays: holidays
                .iter()
                .map(|(y, m, d)| NaiveDate::from_ymd_opt(*y, *m, *d).unwrap())
                .collect(),
        }
    }

    fn hm(s: &str) -> Option<NaiveTime> {
        Some(NaiveTime::parse_from_str(s, "%H:%M").unwrap())
    }

    fn weekdays() -> Vec<chrono::Weekday> {
        use chrono::Weekday::*;
        vec![Mon, Tue, Wed, Thu, Fri]
    }

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    /// Walks `from..to` in 15-minute steps and lists every change of what the schedule says.
    fn travel(s: &Schedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<(Power, DateTime<Utc>)> {
        let mut seen = Vec::new();
        let mut last = last_transition(s, from).map(|t| t.power);
        let mut t = from;
        while t <= to {
            let now = last_transition(s, t).map(|t| t.power);
            if now != last {
                seen.push((now.unwrap(), last_transition(s, t).unwrap().at));
                last = now;
            }
            t += Duration::minutes(15);
        }
        seen
    }

    #[test]
    fn a_paris_week_with_a_holiday_and_the_spring_dst_change() {
        // Office hours Mon-Fri 08:00-19:00 Paris; Friday 27 March 2026 a holiday; the clocks go
        // forward on Sunday 29 March (UTC+1 -> UTC+2).
        let s = sched(
            chrono_tz::Europe::Paris,
            vec![Period {
                days: weekdays(),
                start: hm("08:00"),
                stop: hm("19:00"),
            }],
            &[(2026, 3, 27)],
        );
        let changes = travel(&s, utc(2026, 3, 23, 0, 0), utc(2026, 3, 31, 0, 0));
        assert_eq!(
            changes,
            vec![
                (On, utc(2026, 3, 23, 7, 0)),
                (Off, utc(2026, 3, 23, 18, 0)),
                (On, utc(2026, 3, 24, 7, 0)),
                (Off, utc(2026, 3, 24, 18, 0)),
                (On, utc(2026, 3, 25, 7, 0)),
                (Off, utc(2026, 3, 25, 18, 0)),
                (On, utc(2026, 3, 26, 7, 0)),
                (Off, utc(2026, 3, 26, 18, 0)),
                // Friday is a holiday: no start; its 19:00 stop changes nothing.
                // Monday after the change: 08:00 is now 06:00 UTC, 19:00 is 17:00 UTC.
                (On, utc(2026, 3, 30, 6, 0)),
                (Off, utc(2026, 3, 30, 17, 0)),
            ]
        );
        // On the holiday the last transition is still Thursday's stop, then Friday's stop.
        let friday_noon = utc(2026, 3, 27, 11, 0);
        assert_eq!(
            last_transition(&s, friday_noon),
            Some(Transition {
                power: Off,
                at: utc(2026, 3, 26, 18, 0)
            })
        );
        assert_eq!(
            last_transition(&s, utc(2026, 3, 28, 12, 0)).unwrap().at,
            utc(2026, 3, 27, 18, 0)
        );
        assert_eq!(
            next_transition(&s, friday_noon).unwrap().at,
            utc(2026, 3, 27, 18, 0)
        );
    }

    #[test]
    fn new_york_autumn_change_moves_the_utc_start() {
        // America/New_York leaves daylight time on Sunday 1 November 2026.
        let s = sched(
            chrono_tz::America::New_York,
            vec![Period {
                days: weekdays(),
                start: hm("08:00"),
                stop: hm("18:00"),
            }],
            &[],
        );
        assert_eq!(
            last_transition(&s, utc(2026, 10, 30, 12, 30)).unwrap(),
            Transition {
                power: On,
                at: utc(2026, 10, 30, 12, 0)
            }
        );
        // Monday 2 November 12:30 UTC is 07:30 EST: still the Friday stop.
        let t = last_transition(&s, utc(2026, 11, 2, 12, 30)).unwrap();
        assert_eq!((t.power, t.at), (Off, utc(2026, 10, 30, 22, 0)));
        assert_eq!(
            next_transition(&s, utc(2026, 11, 2, 12, 30)).unwrap().at,
            utc(2026, 11, 2, 13, 0)
        );
    }

    #[test]
    fn gap_and_ambiguous_local_times() {
        let paris = chrono_tz::Europe::Paris;
        // 02:30 does not exist on 29 March 2026: fires at 03:00 CEST (01:00 UTC).
        let gap = NaiveDate::from_ymd_opt(2026, 3, 29).unwrap();
        assert_eq!(
            local_to_utc(&paris, gap, hm("02:30").unwrap()),
            Some(utc(2026, 3, 29, 1, 0))
        );
        // 02:30 happens twice on 25 October 2026: the first (CEST, 00:30 UTC).
        let twice = NaiveDate::from_ymd_opt(2026, 10, 25).unwrap();
        assert_eq!(
            local_to_utc(&paris, twice, hm("02:30").unwrap()),
            Some(utc(2026, 10, 25, 0, 30))
        );
    }

    #[test]
    fn one_sided_schedules() {
        use chrono::Weekday::*;
        let stop_only = sched(
            Tz::UTC,
            vec![Period {
                days: vec![Mon, Tue, Wed, Thu, Fri, Sat, Sun],
                start: None,
                stop: hm("20:00"),
            }],
            &[],
        );
        // Only stops, ever: whatever time it is, the schedule says "off since the last 20:00".
        let t = last_transition(&stop_only, utc(2026, 11, 25, 10, 0)).unwrap();
        assert_eq!((t.power, t.at), (Off, utc(2026, 11, 24, 20, 0)));
        assert!(
            travel(&stop_only, utc(2026, 11, 23, 0, 0), utc(2026, 11, 30, 0, 0))
                .iter()
                .all(|(p, _)| *p == Off)
        );
        let start_only = sched(
            Tz::UTC,
            vec![Period {
                days: vec![Mon],
                start: hm("07:00"),
                stop: None,
            }],
            &[(2026, 11, 30)],
        );
        let t = last_transition(&start_only, utc(2026, 11, 27, 10, 0)).unwrap();
        assert_eq!((t.power, t.at), (On, utc(2026, 11, 23, 7, 0)));
        // The holiday Monday has no start: the previous Monday's still stands.
        assert_eq!(
            last_transition(&start_only, utc(2026, 11, 30, 12, 0))
                .unwrap()
                .at,
            utc(2026, 11, 23, 7, 0)
        );
        // No transition within the horizon: no opinion.
        let never = sched(
            Tz::UTC,
            vec![Period {
                days: vec![Mon],
                start: hm("07:00"),
                stop: None,
            }],
            &[(2026, 11, 2), (2026, 11, 9), (2026, 11, 16), (2026, 11, 23)],
        );
        assert_eq!(last_transition(&never, utc(2026, 11, 24, 0, 0)), None);
    }

    #[test]
    fn overnight_and_back_to_back_periods() {
        use chrono::Weekday::*;
        // Friday 20:00 to Saturday 06:00 (a night batch window).
        let night = sched(
            Tz::UTC,
            vec![Period {
                days: vec![Fri],
                start: hm("20:00"),
                stop: hm("06:00"),
            }],
            &[],
        );
        assert_eq!(
            travel(&night, utc(2026, 11, 26, 0, 0), utc(2026, 11, 29, 0, 0)),
            vec![
                (On, utc(2026, 11, 27, 20, 0)),
                (Off, utc(2026, 11, 28, 6, 0))
            ]
        );
        // 08-12 then 12-18: no stop at noon.
        let split = sched(
            Tz::UTC,
            vec![
                Period {
                    days: vec![Wed],
                    start: hm("08:00"),
                    stop: hm("12:00"),
                },
                Period {
                    days: vec![Wed],
                    start: hm("12:00"),
                    stop: hm("18:00"),
                },
            ],
            &[],
        );
        assert_eq!(
            last_transition(&split, utc(2026, 11, 25, 12, 0))
                .unwrap()
                .power,
            On
        );
    }
}
