//! Content-found delta bases (DELTAS.md): each chunk's resemblance features
//! (`features.rs`), the lookup of a new chunk's likely bases among the parent
//! snapshot's chunks (`lookup.rs`).

pub mod features;
pub mod lookup;
