//! The `pagesnap` command line.

mod cli;
mod commands;
mod output;
mod timearg;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pagesnap: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
