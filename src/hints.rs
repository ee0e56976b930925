//! The command line's remedies for the library's errors.
//!
//! `pagesnap_core` says what is wrong ("{path}: already exists") and puts what is
//! needed to act in the error's fields; which flag or command fixes it is the
//! CLI's business, added here. Every library error shown to a user goes through
//! [`render`] (directly, or through [`crate::message`]).

use pagesnap_core::capture::CaptureError;
use pagesnap_core::{Error, LockConflict};

/// The error's message followed by its command-line remedy, if it has one.
pub(crate) fn render(e: &Error) -> String {
    match e {
        // The remedy belongs to the inner error, whose message ends the outer one.
        Error::InStore { store, source } => format!("{store}: {}", render(source)),
        // Said inside the parenthesis that closes the library's message.
        Error::Capture(CaptureError::Locked { .. }) => {
            let msg = e.to_string();
            match msg.strip_suffix(')') {
                Some(head) => format!("{head}; try a longer --busy-timeout)"),
                None => msg,
            }
        }
        _ => match hint(e) {
            Some(h) => format!("{e}{h}"),
            None => e.to_string(),
        },
    }
}

/// The text of any error: a library error with its remedy (see [`render`]).
pub(crate) fn render_dyn(e: &(dyn std::error::Error + 'static)) -> String {
    match e.downcast_ref::<Error>() {
        Some(e) => render(e),
        None => e.to_string(),
    }
}

/// The text of an error, without its causes: see [`crate::message`] for those.
pub(crate) fn render_any(e: &anyhow::Error) -> String {
    // Not `anyhow::Error::downcast_ref`, which sees through a context to the
    // error it wraps: only the outermost error's own text is wanted here.
    match e.chain().next() {
        Some(outer) => render_dyn(outer),
        None => e.to_string(),
    }
}

/// What to run or pass to get past `e`, written after the library's message.
fn hint(e: &Error) -> Option<String> {
    Some(match e {
        Error::NotAStore(_) => "; create one with `pagesnap init`".into(),
        Error::Encrypted(_) => format!(
            ": set {}, {} or {}, or run on a terminal",
            crate::passphrase::FILE_ENV,
            crate::passphrase::COMMAND_ENV,
            crate::passphrase::VALUE_ENV
        ),
        Error::AmbiguousName { .. } => ": choose one with --name".into(),
        Error::OutputExists(_) => "; pass --force to overwrite it".into(),
        Error::WouldForgetAll { .. } => "; pass --allow-empty to really do that".into(),
        Error::Locked { conflict, .. } => match conflict {
            LockConflict::Unreadable => "; run `pagesnap unlock` to remove stale locks".into(),
            LockConflict::Stale => ": run `pagesnap unlock` to remove it".into(),
            _ => return None,
        },
        Error::IndexUnusable { .. } => " (see `pagesnap verify` and `pagesnap repair`)".into(),
        Error::ChunkSizeMismatch { from_pages, .. } => {
            format!("; create the destination with `pagesnap init --chunk-pages {from_pages}`")
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    #[test]
    fn hints_follow_the_library_message() {
        assert_eq!(
            render(&Error::WouldForgetAll { name: "app".into() }),
            "invalid forget: this would remove every snapshot of \"app\"; pass --allow-empty to really do that"
        );
        assert_eq!(
            render(&Error::OutputExists(PathBuf::from("/tmp/x.db"))),
            "/tmp/x.db: already exists; pass --force to overwrite it"
        );
        assert_eq!(
            render(&Error::AmbiguousName {
                names: vec!["a".into(), "b".into()]
            }),
            "the store holds snapshots of several databases (a, b): choose one with --name"
        );
        assert_eq!(
            render(&Error::NotAStore("/s".into())),
            "/s: not a pagesnap store (no config object); create one with `pagesnap init`"
        );
        let stale = Error::Locked {
            location: "/s".into(),
            holder: "stale lock".into(),
            conflict: LockConflict::Stale,
        };
        assert_eq!(
            render(&stale),
            "/s: the store is locked by stale lock; its process is gone: run `pagesnap unlock` to remove it"
        );
        let unusable = Error::IndexUnusable {
            map: "maps/ab".into(),
            index: "index/cd".into(),
            why: "it is missing from the store".into(),
        };
        assert_eq!(
            render(&unusable),
            "maps/ab: names chunks through index/cd, but it is missing from the store; the snapshots using this map cannot be restored (see `pagesnap verify` and `pagesnap repair`)"
        );
        let in_store = Error::InStore {
            store: "/from".into(),
            source: Box::new(Error::NotAStore("/from".into())),
        };
        assert!(render(&in_store).ends_with("; create one with `pagesnap init`"));
        let busy = Error::Capture(CaptureError::Locked {
            path: PathBuf::from("/db"),
            timeout: Duration::from_secs(5),
        });
        assert_eq!(
            render(&busy),
            "/db: database is locked by another process (gave up after 5s; try a longer --busy-timeout)"
        );
        let waited = Error::Locked {
            location: "/s".into(),
            holder: "an exclusive lock of `prune`".into(),
            conflict: LockConflict::Waited(Duration::from_secs(1)),
        };
        assert_eq!(render(&waited), waited.to_string());
    }

    #[test]
    fn a_context_is_said_before_the_error_it_wraps() {
        let e = anyhow::Error::new(Error::OutputExists(PathBuf::from("/o"))).context("restoring");
        assert_eq!(render_any(&e), "restoring");
        assert_eq!(
            crate::message(&e),
            "restoring: /o: already exists; pass --force to overwrite it"
        );
        let e = anyhow::Error::new(Error::OutputExists(PathBuf::from("/o")));
        assert_eq!(
            crate::message(&e),
            "/o: already exists; pass --force to overwrite it"
        );
    }
}
