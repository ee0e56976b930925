//! The query wing's errors: the store's (a snapshot that cannot be read, a
//! damaged chunk), and SQLite's on a snapshot opened in place.

/// What went wrong querying a snapshot in place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The store failed: a snapshot or an index that cannot be read, or a
    /// chunk that is missing or damaged (named, with its snapshot). A query
    /// that met one gives this, never rows of a damaged page.
    #[error(transparent)]
    Store(#[from] crate::Error),
    /// SQLite's own error on the snapshot (a mistake in the SQL, a write
    /// refused): its message as it gave it.
    #[error("{}", sqlite_message(error))]
    Sql {
        // Not a `source`: the message is SQLite's whole story, said once.
        error: rusqlite::Error,
    },
    /// The SQLite library refused to register the snapshot VFS (its code).
    #[error("SQLite refused the pagesnap-snapshot VFS (code {0})")]
    Vfs(i32),
    /// `diff --rows` was given a table the snapshots do not both hold, or one
    /// it cannot compare.
    #[error("{0}")]
    Table(String),
}

impl QueryError {
    /// Whether this is damage in the store (see [`crate::Error::is_damage`]).
    pub fn is_damage(&self) -> bool {
        matches!(self, QueryError::Store(e) if e.is_damage())
    }
}

/// SQLite's message of `e`, as SQLite gives it (rusqlite's display adds the
/// statement and the code on more lines).
fn sqlite_message(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqlInputError { msg, offset, .. } if *offset >= 0 => {
            format!("{msg} (at byte {offset} of the SQL)")
        }
        rusqlite::Error::SqlInputError { msg, .. }
        | rusqlite::Error::SqliteFailure(_, Some(msg)) => msg.clone(),
        e => e.to_string(),
    }
}
