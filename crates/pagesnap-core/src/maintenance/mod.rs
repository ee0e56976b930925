//! maintenance: keeping a store in shape once snapshots exist: forget and prune
//! (prune.rs, by retention.rs's policies), verify/, repair.rs, copy.rs between
//! stores, and stats.rs. It works through store/, index/ and restore/'s rebuilding;
//! nothing in backup/ or restore/ may depend on it.

pub mod copy;
mod prune;
pub mod repair;
pub mod retention;
pub mod stats;
pub mod verify;

pub use prune::{PruneOptions, PruneReport};
