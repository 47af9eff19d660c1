//! The Lambda deadline for runs that loop over many actions (vacuum-trigger, offhours,
//! backup-guard, pg-health): an action that could not finish before Lambda stops the process is
//! not started, and the run's report names what it left and why (a partial report).
//!
//! Lambda hands each invocation its deadline in `Lambda-Runtime-Deadline-Ms` ("the date that the
//! function times out in Unix time milliseconds",
//! <https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html>, Next invocation, response
//! headers; tests/tests/e2e_deadline.rs sends it as Lambda does); [`crate::runtime`] turns
//! it into [`Invocation::deadline`] on [`crate::clock`]. When the function times out, Lambda stops
//! it wherever it is: nothing after that point runs, not even the audit record.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::runtime::Invocation;

/// What one AWS action takes at most: the SDK's operation timeout, which bounds every call with
/// its retries and backoff ([`crate::adapters::SDK_OPERATION_TIMEOUT`]). An action admitted with
/// less room could be cut by Lambda after AWS acted and before its audit record.
pub const ONE_AWS_ACTION: Duration = crate::adapters::SDK_OPERATION_TIMEOUT;

/// Kept after the last action for its audit record, the alerts and the response.
pub const MARGIN: Duration = Duration::from_secs(2);

/// What is left before a deadline, keeping `margin` for what must run after the last action
/// (its audit record, the alerts, the response).
#[derive(Debug, Clone, PartialEq)]
pub enum Room {
    /// No deadline is known (unit tests, local runs): unbounded.
    Unbounded,
    /// This long may still be spent on one action.
    Usable(Duration),
    /// Too little left to start anything: why, in words.
    Stop(String),
}

/// `deadline - now - margin`, or why nothing may start: less than `needs` left after the margin.
pub fn room(
    deadline: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    margin: Duration,
    needs: Duration,
) -> Room {
    let Some(deadline) = deadline else {
        return Room::Unbounded;
    };
    let left_ms = (deadline - now).num_milliseconds();
    let usable_ms = left_ms - margin.as_millis() as i64;
    if usable_ms < needs.as_millis() as i64 {
        return Room::Stop(format!(
            "Lambda deadline: {:.1} s left, less than the {} s margin + {} s an action needs",
            left_ms as f64 / 1000.0,
            margin.as_secs_f64(),
            needs.as_secs_f64()
        ));
    }
    Room::Usable(Duration::from_millis(usable_ms as u64))
}

/// One run's deadline bookkeeping: [`Budget::admit`] before each action; once one is refused
/// every later one is too (no small action slipping in after a big one was left), and each is
/// recorded as left. [`Budget::report`] is the line the partial report carries.
#[derive(Debug, Clone)]
pub struct Budget {
    deadline: Option<DateTime<Utc>>,
    margin: Duration,
    needs: Duration,
    stopped: Option<String>,
    left: Vec<String>,
}

impl Budget {
    /// `needs`: what one action of this run takes at most (its AWS calls with their retries,
    /// or one statement); `margin`: kept for the audit, alerts and response after it.
    pub fn new(inv: &Invocation, margin: Duration, needs: Duration) -> Budget {
        Budget {
            deadline: inv.deadline,
            margin,
            needs,
            stopped: None,
            left: Vec::new(),
        }
    }

    /// The room now, on the clock the deadline is on (never `inv.now`, which a handler may have
    /// moved to the event's time).
    pub fn room(&self) -> Room {
        if let Some(why) = &self.stopped {
            return Room::Stop(why.clone());
        }
        room(self.deadline, crate::clock::now(), self.margin, self.needs)
    }

    /// Whether `item` may start now; if not, it is recorded as left for the next run.
    pub fn admit(&mut self, item: impl Into<String>) -> bool {
        match self.room() {
            Room::Stop(why) => {
                self.stopped = Some(why);
                self.left.push(item.into());
                false
            }
            _ => true,
        }
    }

    /// Records `item` as left without asking (it depends on one that was left).
    pub fn leave(&mut self, item: impl Into<String>) {
        self.left.push(item.into());
    }

    pub fn stopped(&self) -> bool {
        self.stopped.is_some()
    }

    /// What was left, in order.
    pub fn left(&self) -> &[String] {
        &self.left
    }

    /// `"<why>: N item(s) left for the next run: a, b"`, or `None` when nothing was left.
    pub fn report(&self) -> Option<String> {
        Some(left_note(self.stopped.as_deref()?, &self.left))
    }
}

/// The partial report's line: why the run stopped and each item it left, in order.
pub fn left_note(why: &str, left: &[String]) -> String {
    format!(
        "{why}: {} item(s) left for the next run: {}",
        left.len(),
        left.join(", ")
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn inv(deadline_in: Option<chrono::Duration>) -> Invocation {
        let now = crate::clock::now();
        Invocation {
            request_id: "r".into(),
            // A handler may move `now` to the event's time: the budget must not use it.
            now: Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap(),
            deadline: deadline_in.map(|d| now + d),
        }
    }

    #[test]
    fn room_is_the_time_left_minus_the_margin() {
        let now = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap();
        let s = Duration::from_secs;
        assert_eq!(room(None, now, s(30), s(1)), Room::Unbounded);
        let d = Some(now + chrono::Duration::seconds(120));
        assert_eq!(room(d, now, s(30), s(1)), Room::Usable(s(90)));
        // 20 s left, a 30 s margin: nothing starts.
        let d = Some(now + chrono::Duration::seconds(20));
        assert!(matches!(room(d, now, s(30), s(1)), Room::Stop(w) if w.contains("20.0 s left")));
        // Past the deadline.
        let d = Some(now - chrono::Duration::seconds(5));
        assert!(matches!(room(d, now, s(0), s(0)), Room::Stop(_)));
        // Exactly what an action needs is enough; a millisecond less is not.
        let d = Some(now + chrono::Duration::milliseconds(6000));
        assert_eq!(room(d, now, s(1), s(5)), Room::Usable(s(5)));
        let d = Some(now + chrono::Duration::milliseconds(5999));
        assert!(matches!(room(d, now, s(1), s(5)), Room::Stop(_)));
    }

    #[test]
    fn a_budget_stops_for_good_and_names_what_it_left() {
        let s = Duration::from_secs;
        let mut far = Budget::new(&inv(Some(chrono::Duration::minutes(10))), s(5), s(5));
        assert!(far.admit("a") && far.admit("b"));
        assert_eq!(far.report(), None);
        let mut none = Budget::new(&inv(None), s(5), s(5));
        assert!(none.admit("a"));
        let mut near = Budget::new(&inv(Some(chrono::Duration::seconds(8))), s(5), s(5));
        assert!(!near.admit("rds:db-1"));
        near.leave("asg:web (waits for rds:db-1)");
        assert!(!near.admit("rds:db-2"));
        assert!(near.stopped());
        let r = near.report().unwrap();
        assert!(r.starts_with("Lambda deadline: "), "{r}");
        assert!(
            r.ends_with(
                "3 item(s) left for the next run: rds:db-1, asg:web (waits for rds:db-1), rds:db-2"
            ),
            "{r}"
        );
    }
}
