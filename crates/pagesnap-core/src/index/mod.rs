//! index: the chunk index as data: built in memory from index objects, searched by
//! id, and kept as this machine's derived copy. It must not touch the `Store` handle
//! nor any operation's wing: store/ reads the objects and hands them here.
//!
//! * `chunk_index.rs`: the in-memory index (where each chunk is, the names page maps
//!   use for chunks), built from `index/` objects.
//! * `id_table.rs`: positions by chunk id in 4-byte slots (a backup's new chunks).
//! * `cache/`: this machine's derived copy of a store's index (the sorted chunk file,
//!   resolved page maps), never the truth: backup/index.rs checks it before use.

pub(crate) mod cache;
pub(crate) mod chunk_index;
pub(crate) mod id_table;
