//! Opening a snapshot in place: a read-only `rusqlite::Connection` whose main
//! database (or an attached one) is the snapshot's image, read through the
//! snapshot VFS. The connection holds the store's read lock (in its image)
//! until it is closed, so no prune deletes what it reads.

use super::pages::{CachedImage, ReadStats};
use super::{vfs, QueryError, Result};
use crate::restore::SnapshotReader;
use crate::store::{Snapshot, Store};
use rusqlite::{Connection, OpenFlags};
use std::sync::Arc;

/// How a snapshot is opened in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryOptions {
    /// Bytes of chunks kept in memory besides SQLite's own page cache (which
    /// is 2 MB unless the connection sets `cache_size`). Read-ahead of scans
    /// takes at most a quarter of it.
    pub cache_bytes: u64,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            cache_bytes: 8 << 20,
        }
    }
}

impl Store {
    /// `snap` opened in place as a read-only database: queries read its pages
    /// from the store (each chunk checked against its id), nothing is restored.
    /// A write, a journal or a WAL is refused; a damaged chunk fails the query
    /// with SQLite's I/O error, which [`explain`] turns into the store's error
    /// naming the chunk and the snapshot.
    pub fn open_snapshot(&self, snap: &Snapshot) -> Result<Connection> {
        self.open_snapshot_with(snap, &QueryOptions::default())
    }

    /// [`Store::open_snapshot`] with options.
    pub fn open_snapshot_with(&self, snap: &Snapshot, opts: &QueryOptions) -> Result<Connection> {
        Ok(self.open_image(snap, opts)?.0)
    }

    /// [`Store::open_snapshot_with`], and the image it reads (to read pages
    /// directly, as SQLite would, through the same cache).
    pub(crate) fn open_image(
        &self,
        snap: &Snapshot,
        opts: &QueryOptions,
    ) -> Result<(Connection, Arc<CachedImage>)> {
        let (name, image) = self.register_image(snap, opts)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(vfs::uri(&name), flags).map_err(|source| {
            // Not opened (opening reads the header): the entry would never
            // be closed.
            let e = read_error_or(&name, || QueryError::Sql { error: source });
            vfs::unregister(&name);
            e
        })?;
        // A second guard: SQLite refuses every statement that would write.
        // The first statement reads the schema: an image that cannot be read
        // fails here, with the store's error.
        conn.pragma_update(None, "query_only", true)
            .map_err(|e| read_error_or(&name, || explain(&conn, e)))?;
        Ok((conn, image))
    }

    /// Attaches `snap` to `conn` as database `schema` (read-only, in place),
    /// as [`Store::open_snapshot`] opens one: `SELECT … FROM schema.t`.
    pub fn attach_snapshot(
        &self,
        conn: &Connection,
        snap: &Snapshot,
        schema: &str,
        opts: &QueryOptions,
    ) -> Result<()> {
        let (name, _) = self.register_image(snap, opts)?;
        conn.execute(
            "ATTACH DATABASE ?1 AS ?2",
            [vfs::uri(&name), schema.to_string()],
        )
        .map_err(|source| {
            // Not attached (or closed again by SQLite).
            let e = read_error_or(&name, || explain(conn, source));
            vfs::unregister(&name);
            e
        })?;
        Ok(())
    }

    /// Resolves `snap` and files its image with the VFS, under the read lock.
    fn register_image(
        &self,
        snap: &Snapshot,
        opts: &QueryOptions,
    ) -> Result<(String, Arc<CachedImage>)> {
        let lock = self.read_lock("query")?;
        let reader = SnapshotReader::open(self, snap)?;
        let image = Arc::new(CachedImage::new(reader, opts.cache_bytes, lock));
        let name = vfs::register(image.clone()).map_err(QueryError::Vfs)?;
        Ok((name, image))
    }
}

/// What failed while the image `name` was being opened or attached: its read
/// error if it had one (SQLite may have closed the file since, and the
/// connection cannot name it), else `other`.
fn read_error_or(name: &str, other: impl FnOnce() -> QueryError) -> QueryError {
    match vfs::take_error(name) {
        Some(read) => QueryError::Store(read),
        None => other(),
    }
}

/// The file names of `conn`'s databases: main's first (asked of SQLite
/// directly: a statement would need the schema, which a failed read of main
/// leaves unread), then the attached ones'.
fn files(conn: &Connection) -> Vec<String> {
    let mut out: Vec<String> = conn.path().map(str::to_string).into_iter().collect();
    let Ok(mut stmt) = conn.prepare("SELECT file FROM pragma_database_list") else {
        return out;
    };
    let rows = stmt.query_map([], |r| r.get::<_, Option<String>>(0));
    let listed = rows.map(|r| r.flatten().flatten().collect::<Vec<_>>());
    for f in listed.unwrap_or_default() {
        // Main is listed again: counted once.
        if !out.contains(&f) {
            out.push(f);
        }
    }
    out
}

/// `e`, an SQLite error on `conn`, explained: when a snapshot's image failed to
/// read (a damaged or missing chunk, a store that cannot be reached), that
/// error, which names the chunk and the snapshot; else SQLite's own.
pub fn explain(conn: &Connection, e: rusqlite::Error) -> QueryError {
    files(conn)
        .iter()
        .find_map(|f| vfs::take_error(f))
        .map(QueryError::Store)
        .unwrap_or(QueryError::Sql { error: e })
}

/// What reading `conn`'s snapshots in place has cost so far (all of them, the
/// main one and any attached).
pub fn read_stats(conn: &Connection) -> ReadStats {
    let mut total = ReadStats::default();
    for s in files(conn).iter().filter_map(|f| vfs::stats(f)) {
        total.reads += s.reads;
        total.chunks += s.chunks;
        total.bytes += s.bytes;
        total.cache_hits += s.cache_hits;
    }
    total
}
