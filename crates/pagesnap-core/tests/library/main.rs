//! Tests of the library through its public API, in one test binary (each binary
//! links the whole crate; one builds much faster than a dozen). `common` holds the
//! helpers they share.
//!
//! Everything here runs in one process: a test that sets an environment variable
//! sets it for all of them (`index_cache` sets `PAGESNAP_CACHE_DIR` once, to a
//! folder of its own; stores keep their caches under their own ids there).

#![forbid(unsafe_code)]

mod common;

mod abandon;
mod base_cache;
mod concurrent_writer;
mod content_bases;
mod copy;
mod deltas;
mod dictionary;
mod encryption;
mod fixtures;
// `cargo test` builds it: the crate is its own dev-dependency with `fuzzing`.
#[cfg(feature = "fuzzing")]
mod fuzz_regressions;
mod index_cache;
mod large;
mod listing;
mod page_maps;
mod prints;
mod proptest_sequences;
mod query;
mod retag;
mod roundtrip;
mod verify;
mod wal_guided;
mod watcher;
