//! digest: what proves a whole image right, computed alike by capture, restore and
//! verify: the blake3 tree hash of out-of-order blocks, and the image check.
//! Pure functions over bytes: no store, no I/O, no import of any other wing.
//!
//! * `image_check.rs`: the XXH3-128 image check recorded in manifests (public as
//!   `pagesnap_core::image_check`).
//! * `tree_hash.rs`: the image's blake3 hash from the chaining values of its blocks.

pub mod image_check;
pub(crate) mod tree_hash;
