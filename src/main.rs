//! The `pagesnap` command line.

mod bench;
mod cli;
mod commands;
mod output;
mod progress;
mod svg_chart;
mod timearg;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pagesnap: error: {}", message(&e));
            ExitCode::from(1)
        }
    }
}

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
