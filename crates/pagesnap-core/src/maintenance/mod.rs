//! maintenance: the store once its snapshots are taken: forgetting and pruning,
//! verifying, repairing, copying between stores, statistics. It builds on store/,
//! index/ and restore/'s rebuilding; nothing in backup/, restore/ or store/ may use it.
//! Every chunk it reads back (verify, copy, prune's rewrite, repair) is decoded and
//! checked against its id by the codec (`codec::Decoder::decode_checked`).
//!
//! * `prune.rs`: forget and prune; `retention.rs` (+ `retention/tests.rs`): which
//!   snapshots a policy keeps.
//! * `verify/`: proves what the store holds restores (structure, then data).
//! * `repair.rs`: `repair index` and `repair snapshots`.
//! * `copy.rs`: copying snapshots to another store; `stats.rs`: what a store holds.
//! * `retag.rs`: changing a snapshot's tags (a new manifest replaces the old one).
//! * `upgrade.rs`: turning deltas on in an existing store (its config replaced).

pub mod copy;
mod prune;
pub mod repair;
pub mod retag;
pub mod retention;
pub mod stats;
mod upgrade;
pub mod verify;
mod whole_len;

pub use prune::{PruneOptions, PruneReport};
pub use upgrade::UpgradeReport;
