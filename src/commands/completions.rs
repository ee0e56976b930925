//! `pagesnap completions SHELL`: the shell's completion script, generated from the
//! clap definitions (so it never lags behind the commands), printed on stdout.

use crate::cli::{Cli, CompletionsArgs};
use anyhow::{Context, Result};
use clap::CommandFactory;
use std::io::Write;
use std::process::ExitCode;

pub fn run(a: &CompletionsArgs) -> Result<ExitCode> {
    let mut cmd = Cli::command();
    // Rendered in memory first: a closed pipe or full disk fails the command
    // instead of leaving half a script behind a success.
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "pagesnap", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .context("cannot write the completion script to stdout")?;
    Ok(ExitCode::SUCCESS)
}
