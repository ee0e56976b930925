//! index: the chunk index as data: the in-memory index built from `index/` objects
//! (chunk_index.rs), the table of 4-byte slots that finds entries by id (id_table.rs),
//! and this machine's derived copy of the index (cache/). It must not touch the
//! `Store` handle or any operation's wing: the store reads index objects and hands them here.

pub(crate) mod cache;
pub(crate) mod chunk_index;
pub(crate) mod id_table;
