//! Every decision explained as one plain sentence (issue #18).
//!
//! A [`ProposedAction`] carries a structured [`Explanation`]: the rule it follows (the SPEC
//! section in words and the config keys that hold its numbers), what was observed (values with
//! their units), the threshold each value was compared with, and how long it held. The guard
//! renders it, with its own [`Decision`], into ONE sentence — "Scaled nbaops-dev-web 2 → 3: CPU
//! 75.2 % > 70 % for 5 min (SPEC 2.5 scale out on load; scale.asg.step, scale.asg.ceiling);
//! cooldown clear; inside bounds 2..4." — stored in the audit record beside the structure. The
//! alert announcing the action, the CLI and the replay print that same string, never their own
//! paraphrase, so a person reads the same words wherever the decision shows up.
//!
//! Why structured and not a free string: the numbers stay checkable (a test compares the
//! sentence with the record's own fields), and a later reader (the CLI, a dashboard) can show
//! the threshold or the config key without parsing prose.

use serde::{Deserialize, Serialize};

use super::{Decision, GuardStep, Outcome, ProposedAction, StepResult};

/// One observed value, optionally compared with its threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Observation {
    /// What was measured, in words: "CPU", "dead tuples", "last snapshot age".
    pub what: String,
    pub value: f64,
    /// "%", "s", "min", "GB", "nodes", "" for a bare count.
    #[serde(default)]
    pub unit: String,
    /// ">", ">=", "<", "<=", "=" — how `value` was compared with `threshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
}

/// Why an action is proposed: the rule, the numbers, the threshold, the duration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Explanation {
    /// The verb in its base form: "scale", "stop", "vacuum".
    pub verb: String,
    /// The verb in the past tense: "Scaled", "Stopped", "Vacuumed".
    pub did: String,
    /// What and how: "nbaops-dev-web 2 → 3".
    pub change: String,
    /// The rule in SPEC words: "SPEC 2.5 scale out on load".
    pub rule: String,
    /// The config keys that hold the rule's numbers.
    pub keys: Vec<String>,
    pub observed: Vec<Observation>,
    /// How long the condition held: "5 min".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

/// A number as the sentence shows it: at most two decimals, no trailing zeros.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let s = format!("{:.2}", v);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// A value with its unit: "75.2 %", "300 s", "3" (no unit).
pub fn with_unit(v: f64, unit: &str) -> String {
    if unit.is_empty() {
        num(v)
    } else {
        format!("{} {unit}", num(v))
    }
}

impl Observation {
    /// An observed value without a threshold.
    pub fn value(what: impl Into<String>, value: f64, unit: impl Into<String>) -> Self {
        Observation {
            what: what.into(),
            value,
            unit: unit.into(),
            comparison: None,
            threshold: None,
        }
    }

    /// An observed value and the threshold it was compared with.
    pub fn against(
        what: impl Into<String>,
        value: f64,
        unit: impl Into<String>,
        comparison: impl Into<String>,
        threshold: f64,
    ) -> Self {
        Observation {
            what: what.into(),
            value,
            unit: unit.into(),
            comparison: Some(comparison.into()),
            threshold: Some(threshold),
        }
    }

    /// "CPU 75.2 % > 70 %".
    pub fn words(&self) -> String {
        let mut s = format!("{} {}", self.what, with_unit(self.value, &self.unit));
        if let (Some(c), Some(t)) = (&self.comparison, self.threshold) {
            s.push_str(&format!(" {c} {}", with_unit(t, &self.unit)));
        }
        s
    }
}

impl Explanation {
    /// `verb` (base form), `did` (past tense), `change` ("nbaops-dev-web 2 → 3"), `rule`
    /// (SPEC words).
    pub fn new(
        verb: impl Into<String>,
        did: impl Into<String>,
        change: impl Into<String>,
        rule: impl Into<String>,
    ) -> Self {
        Explanation {
            verb: verb.into(),
            did: did.into(),
            change: change.into(),
            rule: rule.into(),
            ..Default::default()
        }
    }

    /// A copy of this "because" (rule, keys, observations) for one concrete change.
    pub fn doing(
        &self,
        verb: impl Into<String>,
        did: impl Into<String>,
        change: impl Into<String>,
    ) -> Self {
        Explanation {
            verb: verb.into(),
            did: did.into(),
            change: change.into(),
            ..self.clone()
        }
    }

    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.keys.push(key.into());
        self
    }

    pub fn observe(mut self, o: Observation) -> Self {
        self.observed.push(o);
        self
    }

    pub fn lasting(mut self, duration: impl Into<String>) -> Self {
        self.duration = Some(duration.into());
        self
    }

    /// "CPU 75.2 % > 70 % for 5 min (SPEC 2.5 scale out on load; scale.asg.step)". The
    /// duration belongs to the first observation, the condition that held.
    pub fn because(&self) -> String {
        let mut words: Vec<String> = self.observed.iter().map(Observation::words).collect();
        if let Some(d) = &self.duration {
            match words.first_mut() {
                Some(first) => first.push_str(&format!(" for {d}")),
                None => words.push(format!("for {d}")),
            }
        }
        let s = words.join(", ");
        let mut rule = self.rule.clone();
        if !self.keys.is_empty() {
            if !rule.is_empty() {
                rule.push_str("; ");
            }
            rule.push_str(&self.keys.join(", "));
        }
        match (s.is_empty(), rule.is_empty()) {
            (true, true) => "no reason given".into(),
            (true, false) => rule,
            (false, true) => s,
            (false, false) => format!("{s} ({rule})"),
        }
    }
}

/// The passing guard steps, briefly: "cooldown clear; inside bounds 2..4". Only what an operator
/// asks about (the cooldown, the bounds, the change window when it mattered).
fn passed_summary(a: &ProposedAction, d: &Decision) -> String {
    let mut parts = Vec::new();
    let passed = |s: GuardStep| d.steps.iter().any(|r| r.step == s && r.passed);
    if passed(GuardStep::Cooldown) {
        parts.push("cooldown clear".to_string());
    }
    if let (Some(b), true) = (a.bounds, passed(GuardStep::Bounds)) {
        parts.push(format!("inside bounds {}..{}", num(b.min), num(b.max)));
    }
    if d.emergency_change {
        parts.push("outside the change window as a P1 emergency change".into());
    } else if a.disruptive && passed(GuardStep::ChangeWindow) {
        parts.push("inside the change window".into());
    }
    if parts.is_empty() {
        "guard passed".into()
    } else {
        parts.join("; ")
    }
}

fn stop_words(step: &StepResult) -> String {
    let name = step.step.to_string().replace('_', " ");
    format!("stopped by {name} ({})", step.note)
}

/// The one sentence for an action, the guard's decision and what happened.
pub fn sentence(a: &ProposedAction, d: &Decision, outcome: Outcome, error: Option<&str>) -> String {
    let e = &a.explanation;
    let because = e.because();
    let change = if e.change.is_empty() {
        a.resource.clone()
    } else {
        e.change.clone()
    };
    let did = if e.did.is_empty() {
        "Did".to_string()
    } else {
        e.did.clone()
    };
    let verb = if e.verb.is_empty() {
        a.action.clone()
    } else {
        e.verb.clone()
    };
    match outcome {
        Outcome::Acted => format!("{did} {change}: {because}; {}.", passed_summary(a, d)),
        Outcome::WouldAct => format!(
            "Would {verb} {change} (dry-run): {because}; {}.",
            passed_summary(a, d)
        ),
        Outcome::Skipped => {
            let stop = d
                .stopped_by
                .and_then(|s| d.steps.iter().find(|r| r.step == s && !r.passed))
                .map(stop_words)
                .unwrap_or_else(|| "skipped".into());
            format!("Did not {verb} {change}: {because}; {stop}.")
        }
        Outcome::Failed => format!(
            "Tried to {verb} {change}: {because}; failed: {}.",
            error.unwrap_or("unknown error")
        ),
        Outcome::NeedsApproval => {
            let why = d
                .steps
                .iter()
                .find(|r| r.step == crate::guard::GuardStep::ChangeWindow)
                .map(|r| r.note.clone())
                .unwrap_or_default();
            match &d.ask {
                Some(ask) if !d.dry_run => format!(
                    "Asked for approval to {verb} {change} until {} (id {}): {because}; {why}.",
                    ask.until.format("%Y-%m-%d %H:%M UTC"),
                    ask.id
                ),
                _ => format!(
                    "Would ask for approval to {verb} {change} (dry-run): {because}; {why}."
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::Severity;
    use crate::guard::{step, Bounds};
    use crate::ports::Tags;
    use serde_json::json;

    fn action() -> ProposedAction {
        ProposedAction {
            action: "asg.scale_out".into(),
            resource: "asg:web-api".into(),
            tags: Tags::new(),
            reason: "cpu".into(),
            severity: Severity::P3,
            disruptive: false,
            bounds: Some(Bounds {
                proposed: 3.0,
                min: 2.0,
                max: 4.0,
            }),
            cooldown_key: "asg.scale".into(),
            cooldown_seconds: 300,
            before: json!({"desired": 2}),
            after: json!({"desired": 3}),
            explanation: Explanation::new(
                "scale",
                "Scaled",
                "web-api 2 → 3",
                "SPEC 2.5 scale out on load",
            )
            .key("scale.asg.cpu_threshold")
            .observe(Observation::against("CPU", 83.0, "%", ">", 70.0))
            .lasting("5 min"),
        }
    }

    fn decision(stop: Option<(GuardStep, &str)>, dry_run: bool) -> Decision {
        let steps = [
            GuardStep::KillSwitch,
            GuardStep::DryRun,
            GuardStep::ProtectedTag,
            GuardStep::Bounds,
            GuardStep::Cooldown,
            GuardStep::ChangeWindow,
            GuardStep::BlastRadius,
            GuardStep::Idempotency,
        ]
        .into_iter()
        .map(|s| match stop {
            Some((at, note)) if at == s => step(s, false, note),
            _ => step(s, true, "ok"),
        })
        .collect();
        Decision {
            proceed: stop.is_none() && !dry_run,
            dry_run,
            stopped_by: stop.map(|(s, _)| s),
            steps,
            emergency_change: false,
            ask: None,
            claimed: false,
        }
    }

    #[test]
    fn acted_reads_like_the_issue_example() {
        assert_eq!(
            sentence(&action(), &decision(None, false), Outcome::Acted, None),
            "Scaled web-api 2 → 3: CPU 83 % > 70 % for 5 min (SPEC 2.5 scale out on load; \
             scale.asg.cpu_threshold); cooldown clear; inside bounds 2..4."
        );
    }

    #[test]
    fn dry_run_says_would() {
        let s = sentence(&action(), &decision(None, true), Outcome::WouldAct, None);
        assert!(
            s.starts_with("Would scale web-api 2 → 3 (dry-run): CPU 83 % > 70 %"),
            "{s}"
        );
    }

    #[test]
    fn failed_says_tried_and_the_error() {
        let s = sentence(
            &action(),
            &decision(None, false),
            Outcome::Failed,
            Some("Throttling"),
        );
        assert!(
            s.starts_with("Tried to scale web-api 2 → 3: CPU 83 %"),
            "{s}"
        );
        assert!(s.ends_with("failed: Throttling."), "{s}");
    }

    #[test]
    fn each_guard_stop_is_named_with_its_note() {
        for (stepped, name) in [
            (GuardStep::KillSwitch, "kill switch"),
            (GuardStep::ProtectedTag, "protected tag"),
            (GuardStep::Bounds, "bounds"),
            (GuardStep::Cooldown, "cooldown"),
            (GuardStep::ChangeWindow, "change window"),
            (GuardStep::BlastRadius, "blast radius"),
            (GuardStep::Idempotency, "idempotency"),
        ] {
            let note = format!("the {name} note");
            let s = sentence(
                &action(),
                &decision(Some((stepped, &note)), false),
                Outcome::Skipped,
                None,
            );
            assert!(
                s.starts_with("Did not scale web-api 2 → 3: CPU 83 % > 70 %"),
                "{s}"
            );
            assert!(
                s.ends_with(&format!("; stopped by {name} ({note}).")),
                "{s}"
            );
            assert!(s.contains("scale.asg.cpu_threshold"), "{s}");
        }
    }

    #[test]
    fn emergency_and_window_are_summarised() {
        let mut a = action();
        a.disruptive = true;
        let mut d = decision(None, false);
        assert!(sentence(&a, &d, Outcome::Acted, None).contains("inside the change window"));
        d.emergency_change = true;
        assert!(sentence(&a, &d, Outcome::Acted, None).contains("P1 emergency change"));
    }

    #[test]
    fn numbers_and_units() {
        assert_eq!(num(75.2), "75.2");
        assert_eq!(num(70.0), "70");
        assert_eq!(num(1.0 / 3.0), "0.33");
        assert_eq!(num(-0.001), "0");
        assert_eq!(with_unit(300.0, "s"), "300 s");
        assert_eq!(with_unit(3.0, ""), "3");
        // An explanation without observations still names its rule.
        let e = Explanation::new("stop", "Stopped", "db", "SPEC 4.1 off-hours").key("offhours.x");
        assert_eq!(e.because(), "SPEC 4.1 off-hours; offhours.x");
    }

    #[test]
    fn an_older_record_without_explanation_still_decodes() {
        let e: Explanation = serde_json::from_value(json!({
            "verb": "scale", "did": "Scaled", "change": "x", "rule": "r", "keys": [],
            "observed": [{"what": "CPU", "value": 1.0}]
        }))
        .unwrap();
        assert_eq!(e.observed[0].unit, "");
    }
}
