//! Kill switch and dry-run, as the container last read them.

use super::*;

/// Kill switch and dry-run as the container last read them. They come with the configuration read
/// at init (SSM by path, the `guard` section included) and are re-read — one `GetParametersByPath`
/// of `/nbaops/<env>/guard/` — once `guard.switch_ttl_seconds` have passed: an operator's flip
/// reaches warm containers within that many seconds, without a deploy, and a warm invocation
/// within the TTL makes no SSM call.
#[derive(Default)]
pub struct Switches {
    cached: Mutex<Option<(Instant, bool, bool)>>,
    /// Dry-run whatever SSM says (the operator's `nbaops plan`): a re-read can turn the kill
    /// switch on, never dry-run off.
    forced_dry_run: bool,
}

impl Switches {
    /// Switches as the configuration just loaded says, fresh for `guard.switch_ttl_seconds`.
    pub fn seeded(cfg: &Config) -> Switches {
        Switches {
            cached: Mutex::new(Some((
                Instant::now(),
                cfg.guard.kill_switch,
                cfg.function_dry_run(),
            ))),
            forced_dry_run: false,
        }
    }

    /// [`Switches::seeded`], dry-run forced on for the life of the process.
    pub fn forced_dry_run(cfg: &Config) -> Switches {
        Switches {
            cached: Mutex::new(Some((Instant::now(), cfg.guard.kill_switch, true))),
            forced_dry_run: true,
        }
    }

    /// True in `nbaops plan` ([`Switches::forced_dry_run`]): effects outside the guard that even
    /// a dry-run deployment makes (alert deliveries) are described, not made.
    pub fn is_forced_dry_run(&self) -> bool {
        self.forced_dry_run
    }

    /// (kill switch, dry run). An unreadable SSM counts as "kill switch on": we never act blind.
    pub async fn current(&self, cfg: &Config, params: Option<&dyn Params>) -> Result<(bool, bool)> {
        let Some(params) = params else {
            return Ok((
                cfg.guard.kill_switch,
                self.forced_dry_run || cfg.function_dry_run(),
            ));
        };
        let mut cached = self.cached.lock().await;
        if let Some((at, kill, dry)) = *cached {
            if at.elapsed() < Duration::from_secs(cfg.guard.switch_ttl_seconds) {
                return Ok((kill, dry));
            }
        }
        let base = format!("/nbaops/{}/guard/", cfg.env);
        let flag = |v: Option<&String>, default: bool| match v.map(|s| s.trim()) {
            Some("true" | "on" | "yes" | "1") => true,
            Some("false" | "off" | "no" | "0") => false,
            _ => default,
        };
        let read = params.get_by_path(&base).await?;
        let kill = flag(
            read.get(&format!("{base}kill_switch")),
            cfg.guard.kill_switch,
        );
        let dry_all = flag(read.get(&format!("{base}dry_run")), cfg.guard.dry_run);
        let dry = self.forced_dry_run
            || dry_all
            || cfg
                .guard
                .dry_run_functions
                .iter()
                .any(|f| f == &cfg.function);
        *cached = Some((Instant::now(), kill, dry));
        Ok((kill, dry))
    }
}
