//! The image check: a fast checksum of a snapshot's whole image, recorded in its
//! manifest beside the image's blake3 hash, that a restore checks instead of
//! hashing the image with blake3 again.
//!
//! Why a second checksum: a restore exists to give back the bytes that were
//! captured, so it checks every byte it wrote. The blake3 hash of the image is
//! the snapshot's identity, but checking it costs ~0.3 s of CPU per GiB on this
//! project's reference machine, a third of a restore's CPU and more than the
//! zstd decoding it guards. XXH3-128 costs ~0.09 s per GiB and catches every
//! accidental change (damage, a bug that puts a wrong chunk somewhere) with the
//! same certainty in practice: a change escapes it with probability 2^-128. What
//! it does not resist is forgery, and neither does a check against a hash that
//! lives in the same unauthenticated store: whoever can rewrite a pack can
//! rewrite the manifest that names it. `verify --read-data` still checks the
//! blake3 hash (and this check).
//!
//! Definition (docs/FORMAT.md, "Image check"), all digests XXH3-128 with seed 0,
//! written as the little-endian bytes of the 128-bit value:
//!
//! ```text
//! chunk digest  d(c)  = XXH3-128(the chunk's bytes)   (a zero chunk: its zeros)
//! block         B_k   = chunks k*n .. k*n+n-1, n = max(1, 65536 / chunk_len)
//! block digest  D(B)  = XXH3-128(d(c_first) ‖ … ‖ d(c_last))
//! image check         = XXH3-128(image_len u64 LE ‖ chunk_len u64 LE ‖ D(B_0) ‖ … ‖ D(B_last))
//! ```
//!
//! Chunk digests make the check computable from chunks alone, in any order (as
//! `verify` reads them, pack by pack); blocks are the capture's and restore's unit
//! of work (the blake3 subtree), so each keeps 16 bytes per 64 KiB, not per chunk.

use xxhash_rust::xxh3::{xxh3_128, Xxh3Default as Xxh3};

/// The bytes of one digest.
pub type Digest = [u8; 16];

/// Blocks are at least this long (as the capture's blake3 subtrees).
const MIN_BLOCK: u64 = 64 * 1024;

/// Chunks per block for chunks of `chunk_len` bytes.
pub fn chunks_per_block(chunk_len: u64) -> usize {
    (MIN_BLOCK / chunk_len.max(1)).max(1) as usize
}

/// The digest of one chunk's bytes.
pub fn chunk_digest(bytes: &[u8]) -> Digest {
    xxh3_128(bytes).to_le_bytes()
}

/// A block's digest, built chunk by chunk in order.
#[derive(Default)]
pub struct BlockDigest(Xxh3);

impl BlockDigest {
    /// Adds the next chunk's bytes.
    pub fn add_chunk(&mut self, bytes: &[u8]) {
        self.add_digest(&chunk_digest(bytes));
    }

    /// Adds the next chunk, by its digest.
    pub fn add_digest(&mut self, digest: &Digest) {
        self.0.update(digest);
    }

    pub fn finish(self) -> Digest {
        self.0.digest128().to_le_bytes()
    }
}

/// The digest of a block from its bytes (every chunk of it, the last one possibly
/// shorter), cut into chunks of `chunk_len`.
pub fn block_digest(bytes: &[u8], chunk_len: usize) -> Digest {
    let mut d = BlockDigest::default();
    for chunk in bytes.chunks(chunk_len.max(1)) {
        d.add_chunk(chunk);
    }
    d.finish()
}

/// The image check of an image of `image_len` bytes in chunks of `chunk_len`, from
/// the digests of its blocks in order.
pub fn image_check(image_len: u64, chunk_len: u64, blocks: &[Digest]) -> Digest {
    let mut h = Xxh3::new();
    h.update(&image_len.to_le_bytes());
    h.update(&chunk_len.to_le_bytes());
    for d in blocks {
        h.update(d);
    }
    h.digest128().to_le_bytes()
}

/// The image check of `image` computed in one piece (tests, and images small
/// enough that nothing better is needed).
pub fn of_image(image: &[u8], chunk_len: u64) -> Digest {
    let block = chunks_per_block(chunk_len) * chunk_len as usize;
    let blocks: Vec<Digest> = image
        .chunks(block.max(1))
        .map(|b| block_digest(b, chunk_len as usize))
        .collect();
    image_check(image.len() as u64, chunk_len, &blocks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition of the module comment, written out the slow way.
    fn by_definition(image: &[u8], chunk_len: usize) -> Digest {
        let n = (65536 / chunk_len).max(1);
        let digests: Vec<[u8; 16]> = image
            .chunks(chunk_len)
            .map(|c| xxh3_128(c).to_le_bytes())
            .collect();
        let mut all = Vec::new();
        all.extend_from_slice(&(image.len() as u64).to_le_bytes());
        all.extend_from_slice(&(chunk_len as u64).to_le_bytes());
        for block in digests.chunks(n) {
            all.extend_from_slice(&xxh3_128(&block.concat()).to_le_bytes());
        }
        xxh3_128(&all).to_le_bytes()
    }

    #[test]
    fn known_value_of_an_empty_image() {
        // XXH3-128 of image_len 0 and chunk_len 4096, as two u64 LE.
        let mut header = [0u8; 16];
        header[8..].copy_from_slice(&4096u64.to_le_bytes());
        let want = xxh3_128(&header).to_le_bytes();
        assert_eq!(of_image(&[], 4096), want);
        assert_eq!(image_check(0, 4096, &[]), want);
    }

    #[test]
    fn pinned_values() {
        // The format depends on these: a change here is a new format version.
        let image: Vec<u8> = (0..20 * 4096u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(of_image(&image, 4096), by_definition(&image, 4096));
        assert_eq!(
            u128::from_le_bytes(of_image(&image, 4096)),
            PINNED_4K,
            "{:#x}",
            u128::from_le_bytes(of_image(&image, 4096))
        );
        assert_eq!(
            u128::from_le_bytes(of_image(&image[..3 * 4096], 1024)),
            PINNED_1K,
            "{:#x}",
            u128::from_le_bytes(of_image(&image[..3 * 4096], 1024))
        );
    }

    const PINNED_4K: u128 = 0x8b63a3093513b1449a391462c8612dd;
    const PINNED_1K: u128 = 0xb2ca1bd9306850722545e105ee024ce5;

    proptest! {
        #[test]
        fn pieces_agree_with_the_definition(
            pages in 1usize..40,
            page_shift in 9u32..13,
            chunk_shift in 0u32..6,
            seed in any::<u64>(),
            cut in 0usize..4,
        ) {
            let page = 1usize << page_shift;
            let chunk_len = page << chunk_shift;
            // An image is whole pages; its last chunk may be short.
            let len = (pages * page).saturating_sub(cut * page).max(page);
            let image: Vec<u8> = (0..len)
                .map(|i| ((i as u64).wrapping_mul(seed | 1) >> 7) as u8)
                .collect();
            prop_assert_eq!(of_image(&image, chunk_len as u64), by_definition(&image, chunk_len));
        }

        #[test]
        fn any_change_changes_the_check(
            len_pages in 1usize..24,
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let image: Vec<u8> = (0..len_pages * 4096).map(|i| (i / 7) as u8).collect();
            let mut changed = image.clone();
            let i = at.index(image.len());
            changed[i] ^= flip;
            prop_assert_ne!(of_image(&image, 4096), of_image(&changed, 4096));
        }
    }

    #[test]
    fn swapped_chunks_change_the_check() {
        let a = vec![1u8; 4096];
        let b = vec![2u8; 4096];
        let ab = [a.clone(), b.clone()].concat();
        let ba = [b, a].concat();
        assert_ne!(of_image(&ab, 4096), of_image(&ba, 4096));
        // Chunks moved between blocks, too.
        let mut long = vec![0u8; 40 * 4096];
        long[0] = 1;
        let mut moved = vec![0u8; 40 * 4096];
        moved[20 * 4096] = 1;
        assert_ne!(of_image(&long, 4096), of_image(&moved, 4096));
    }
}
