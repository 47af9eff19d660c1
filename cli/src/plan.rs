//! `nbaops plan`: not built yet.

use crate::output::{CliError, CliResult, Output};

#[derive(clap::Args)]
pub struct Args {}

pub async fn run(_args: Args, _out: &Output) -> CliResult<i32> {
    Err(CliError::Usage("nbaops plan: not built yet".into()))
}
