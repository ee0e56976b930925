//! The `pagesnap` command line.

#![forbid(unsafe_code)]

/// A [`UsageError`] (exit status 2) from a `format!`-style message: a value on
/// the command line that cannot be used, or options that do not go together.
macro_rules! usage {
    ($($arg:tt)*) => {
        anyhow::Error::from($crate::UsageError(format!($($arg)*)))
    };
}

mod cli;
mod commands;
mod hints;
mod output;
mod passphrase;
mod progress;
mod timearg;

use clap::Parser;
use std::process::ExitCode;

/// Exit statuses, one meaning each (the table is in docs/CLI.md). 3 (damage)
/// and 4 (`status`: the watcher needs attention) are returned by the commands.
const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
/// The store does not exist (restic: 10).
const EXIT_NO_STORE: u8 = 10;
/// The store's lock could not be taken (restic: 11).
const EXIT_LOCKED: u8 = 11;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_error(e),
    };
    let json = cli.global.json;
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
            let code = exit_code(&e);
            report_error(json, code, &message(&e));
            ExitCode::from(code)
        }
    }
}

/// The error on stderr: `pagesnap: error: …`, or with `--json` one line of JSON
/// as restic writes it, `{"message_type":"exit_error","code":N,"message":"…"}`,
/// so that a program reading JSON never has to parse text.
fn report_error(json: bool, code: u8, msg: &str) {
    if json {
        // Written by hand to keep restic's member order (serde_json sorts keys).
        let msg = serde_json::Value::from(msg);
        eprintln!(r#"{{"message_type":"exit_error","code":{code},"message":{msg}}}"#);
    } else {
        eprintln!("pagesnap: error: {msg}");
    }
}

/// clap's refusals (exit 2) and its help and version (exit 0, on stdout). With
/// `--json` anywhere among the options a refusal is the JSON error object too.
fn clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let wants_json = std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json");
    if !wants_json
        || matches!(
            e.kind(),
            ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        )
    {
        e.exit()
    }
    // The first line, without clap's `error: ` and styling; the usage and the
    // `--help` tip that follow are for people.
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    let msg = first.strip_prefix("error: ").unwrap_or(first);
    report_error(true, EXIT_USAGE, msg);
    ExitCode::from(EXIT_USAGE)
}

/// The exit status of a failed command, from the first cause that has one of
/// its own: a value the command line cannot use (2), a store that does not
/// exist (10), a lock that could not be taken (11); else 1.
fn exit_code(e: &anyhow::Error) -> u8 {
    use pagesnap_core::backend::BackendError;
    use pagesnap_core::retention::PolicyError;
    use pagesnap_core::Error;
    for cause in e.chain() {
        if cause.is::<UsageError>() || cause.is::<PolicyError>() {
            return EXIT_USAGE;
        }
        match cause.downcast_ref::<Error>() {
            Some(Error::NotAStore(_) | Error::StoreMissing(_)) => return EXIT_NO_STORE,
            Some(Error::Locked { .. }) => return EXIT_LOCKED,
            Some(
                Error::BadPolicy(_)
                | Error::BadSnapshotId(_)
                | Error::BadStoreParameters(_)
                | Error::BadSnapshotTime { .. },
            ) => return EXIT_USAGE,
            _ => {}
        }
        // An S3 store whose bucket does not exist does not exist either (the
        // library's `Backend` variant is transparent: it may be either).
        let backend = match cause.downcast_ref::<Error>() {
            Some(Error::Backend(b)) => Some(b),
            _ => cause.downcast_ref::<BackendError>(),
        };
        if let Some(BackendError::Io {
            op: "check bucket",
            source,
            ..
        }) = backend
        {
            if source.kind() == std::io::ErrorKind::NotFound {
                return EXIT_NO_STORE;
            }
        }
    }
    EXIT_FAILED
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

#[cfg(test)]
mod tests {
    use super::*;
    use pagesnap_core::backend::BackendError;
    use pagesnap_core::{Error, LockConflict};

    /// Each exit status is found through contexts, by the first cause that has one.
    #[test]
    fn exit_codes_come_from_the_cause() {
        let code = |e: anyhow::Error| exit_code(&e.context("while doing this"));
        assert_eq!(code(Error::StoreMissing("/s".into()).into()), EXIT_NO_STORE);
        assert_eq!(code(Error::NotAStore("/s".into()).into()), EXIT_NO_STORE);
        let locked = Error::Locked {
            location: "/s".into(),
            holder: "a shared lock of `backup`".into(),
            conflict: LockConflict::Exclusive,
        };
        assert_eq!(code(locked.into()), EXIT_LOCKED);
        let bucket = Error::Backend(BackendError::Io {
            location: "s3://b/p".into(),
            op: "check bucket",
            key: "b".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no bucket"),
        });
        assert_eq!(code(bucket.into()), EXIT_NO_STORE);
        let denied = Error::Backend(BackendError::Io {
            location: "s3://b/p".into(),
            op: "check bucket",
            key: "b".into(),
            source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied"),
        });
        assert_eq!(code(denied.into()), EXIT_FAILED);
        let span = pagesnap_core::retention::parse_span("30m").unwrap_err();
        assert_eq!(code(span.clone().into()), EXIT_USAGE);
        assert_eq!(code(Error::BadPolicy(span).into()), EXIT_USAGE);
        assert_eq!(code(Error::BadSnapshotId("x!".into()).into()), EXIT_USAGE);
        assert_eq!(code(usage!("--max-unused {}", "lots")), EXIT_USAGE);
        assert_eq!(
            code(Error::UnknownSnapshot("ab".into()).into()),
            EXIT_FAILED
        );
        assert_eq!(code(anyhow::anyhow!("failed")), EXIT_FAILED);
    }
}
