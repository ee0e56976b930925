//! The `pagesnap` command line.

#![forbid(unsafe_code)]

mod cli;
mod commands;
mod output;
mod progress;
mod timearg;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // What a command cost on a remote store (users pay per request): one line on
    // stderr, or the `requests` member of the `--json` document.
    let report = !cli.global.json && !matches!(cli.command, cli::Command::Watch(_));
    let result = commands::run(cli);
    if report && result.is_ok() {
        for line in commands::requests_text() {
            eprintln!("pagesnap: {line}");
        }
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pagesnap: error: {}", message(&e));
            // A value refused on the command line is a usage error, as clap's are.
            match e.downcast_ref::<UsageError>() {
                Some(_) => ExitCode::from(2),
                None => ExitCode::from(1),
            }
        }
    }
}

/// A value given on the command line that cannot be used (a time, a duration):
/// exit status 2, like clap's own usage errors.
#[derive(Debug)]
pub(crate) struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The error and its causes, each stated once: the library's errors already
/// include their source in their own message, so `{e:#}` would repeat it.
pub(crate) fn message(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}
