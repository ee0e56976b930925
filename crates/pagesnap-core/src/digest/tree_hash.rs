//! The plain blake3 hash of an image whose blocks are hashed out of order.
//!
//! SQLite hands pages over nearly in order, but page 1 comes near the end. blake3
//! is a tree hash, so each aligned block can be hashed as a subtree (a "chaining
//! value") when it is complete, and the root computed at the end from those values,
//! without holding the image. `block_len` is a power of two ≥ 1024, so every block
//! is a whole subtree of the blake3 tree.

use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};

/// Chaining value of the block at byte `offset` (a multiple of the block length).
pub fn block_cv(offset: u64, bytes: &[u8]) -> ChainingValue {
    let mut h = blake3::Hasher::new();
    h.set_input_offset(offset);
    h.update(bytes);
    h.finalize_non_root()
}

/// Root hash of `total_len` bytes (more than one block) from the chaining values
/// of its blocks, in order.
pub fn root_from_blocks(cvs: &[ChainingValue], block_len: u64, total_len: u64) -> blake3::Hash {
    debug_assert!(total_len > block_len && block_len.is_power_of_two() && block_len >= 1024);
    let left = left_subtree_len(total_len);
    merge_subtrees_root(
        &subtree(cvs, block_len, 0, left),
        &subtree(cvs, block_len, left, total_len - left),
        Mode::Hash,
    )
}

fn subtree(cvs: &[ChainingValue], block_len: u64, start: u64, len: u64) -> ChainingValue {
    if len <= block_len {
        return cvs[(start / block_len) as usize];
    }
    let left = left_subtree_len(len);
    merge_subtrees_non_root(
        &subtree(cvs, block_len, start, left),
        &subtree(cvs, block_len, start + left, len - left),
        Mode::Hash,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(len: usize, block_len: usize) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 1000) as u8).collect();
        let cvs: Vec<_> = data
            .chunks(block_len)
            .enumerate()
            .map(|(i, b)| block_cv((i * block_len) as u64, b))
            .collect();
        assert_eq!(
            root_from_blocks(&cvs, block_len as u64, len as u64),
            blake3::hash(&data),
            "len {len} block {block_len}"
        );
    }

    #[test]
    fn matches_plain_blake3_at_edges() {
        for block in [1024usize, 4096, 65536] {
            for blocks in [2usize, 3, 4, 5, 7, 8, 9, 16, 17] {
                check(block * blocks, block);
                check(block * (blocks - 1) + 1, block);
                check(block * blocks - 512, block);
            }
        }
    }

    proptest! {
        #[test]
        fn matches_plain_blake3(len in 1025usize..300_000, shift in 0u32..4) {
            check(len.max((1024 << shift) + 1), 1024 << shift);
        }
    }
}
