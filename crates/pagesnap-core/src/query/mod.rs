//! query: any snapshot opened in place as a read-only SQLite database (a VFS over
//! the snapshot reader), and what is built on that: table listings and diffs.
//!
//! * `vfs.rs`: the snapshot VFS (`unsafe`: SQLite's C callbacks), serving an image.
//! * `pages.rs`: the image, a snapshot's chunks through a bounded cache with read-ahead.
//! * `open.rs`: `Store::open_snapshot` and `attach_snapshot`; errors and read counts.
//! * `tables.rs`: every table and index of a snapshot, with rows, pages and bytes.
//! * `diff.rs`: what changed between two snapshots, per table and index, from
//!   their page maps; `btree.rs` finds which b-tree owns a page, reading only
//!   interior pages; `rows.rs`: the rows of one table added, removed and changed.
//! * `fuzz.rs`: the fuzz entry point of `btree.rs`, which reads SQLite's bytes
//!   from a snapshot (feature `fuzzing`).

mod btree;
mod diff;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;
mod open;
mod pages;
mod rows;
mod tables;
// The one other place with `unsafe`: a VFS is a table of C callbacks SQLite calls.
#[allow(unsafe_code)]
mod vfs;

pub use diff::{ObjectDiff, SnapshotDiff};
pub use error::QueryError;
pub use open::{explain, read_stats, QueryOptions};
pub use pages::ReadStats;
pub use rows::{RowChange, RowChangeKind, RowDiff};
pub use tables::TableUsage;

/// Results of the query wing.
pub type Result<T, E = QueryError> = std::result::Result<T, E>;
