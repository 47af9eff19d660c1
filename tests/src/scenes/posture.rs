//! posture-check on the demo platform (env dev): its daily run over what the emulator holds —
//! the platform's database, cache and groups — against the strategy's rules, with the findings,
//! what each would take to fix, and the daily summary. Nothing is fixed: `posture.fix.envs` is
//! empty by default, so every finding is a recommendation. Every rule with a compliant and a
//! non-compliant resource is in tests/e2e_posture.rs.

use super::{Before, Scene};

pub fn scenes() -> Vec<Scene> {
    vec![Scene {
        title: "posture-check: the daily check of the dev platform (encryption, TLS, exposure, backups, tags, unused resources)",
        function: "posture-check",
        fixture: "events/schedule/posture-check.json",
        before: Before::Nothing,
    }]
}
