//! CLI integration tests of `pagesnap`: every test runs the real binary against
//! stores and SQLite databases in temporary directories.

#![forbid(unsafe_code)]

mod bad_source;
mod bad_store;
mod bench;
mod cache;
mod completions;
mod contrib;
mod copy;
mod damage;
mod deltas;
mod encryption;
mod exit_codes;
mod gc_crash;
mod json_shapes;
mod metrics;
mod query;
mod reliability;
mod restore_output;
mod retention;
// The library tests' generator of test data: one copy for both test trees.
#[path = "../../crates/pagesnap-core/tests/library/common/rng.rs"]
mod rng;
mod roundtrip;
mod s3;
mod selection;
mod shapes;
mod stats;
mod status;
mod tag;
mod unreadable;
mod util;
mod verify;
mod watch;
mod watch_util;
