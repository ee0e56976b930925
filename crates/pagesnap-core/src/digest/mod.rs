//! digest: what proves a whole image right, computed the same way by capture,
//! restore and verify: the blake3 tree hash of out-of-order blocks and the image check.
//! Pure functions over bytes: no store, no backend, no I/O; nothing here may import another wing.

pub mod image_check;
pub(crate) mod tree_hash;
