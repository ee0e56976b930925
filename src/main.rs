//! The `pagesnap` command line.

#![forbid(unsafe_code)]

mod cli;
mod commands;
mod hints;
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
/// Library errors get their command-line remedy (see [`hints`]).
pub(crate) fn message(e: &anyhow::Error) -> String {
    let mut msg = hints::render_any(e);
    for cause in e.chain().skip(1) {
        let c = hints::render_dyn(cause);
        if msg.contains(&c) {
            continue;
        }
        // Already stated without its remedy (a context that quotes it).
        let plain = cause.to_string();
        if plain != c && msg.contains(&plain) {
            msg = msg.replacen(&plain, &c, 1);
            continue;
        }
        msg.push_str(": ");
        msg.push_str(&c);
    }
    msg
}
