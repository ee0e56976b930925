//! Resemblance features of a chunk, to find a delta base by content (DELTAS.md,
//! "Content-found bases"): two chunks that share a long enough run of bytes
//! probably share some of their features, wherever in the chunk the run sits.
//!
//! After Shilane et al. ("WAN optimized replication of backup datasets using
//! stream-informed delta compression", FAST '12), made cheap: a Gear rolling hash
//! over 32-byte windows, sampled where its top bits are zero (one window in 8 on
//! average, chosen by content so the same bytes are sampled wherever they are),
//! and [`FEATURES`] features each the maximum of one linear transform of the
//! sampled hashes. Runs of zeros (a page's free space) are never sampled: every
//! page with free space would share them. Features are used one by one (no
//! "super-features" grouping several): a page VACUUM refilled from the tail of
//! one old page and the head of the next shares about half its features with
//! each, and a group of several would rarely match whole.

/// Features per chunk.
pub const FEATURES: usize = 8;

/// The features of a chunk; 0 is "none" (a chunk with nothing sampled, e.g. all
/// zeros), never a feature.
pub type Features = [u32; FEATURES];

/// Random 64-bit values per byte (splitmix64 of the byte), fixed forever: the
/// sketch file (FORMAT.md) stores features, so changing these is a new version.
const GEAR: [u64; 256] = gear();

const fn gear() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut i = 0;
    let mut x: u64 = 0x5053_4e53_4b45_5431; // "PSNSKET1"
    while i < 256 {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        t[i] = z ^ (z >> 31);
        i += 1;
    }
    t
}

/// The transforms (odd multiplier, addend) whose maxima are the features.
const TRANSFORMS: [(u64, u64); FEATURES] = [
    (0x9e37_79b9_7f4a_7c15, 0x632b_e59b_d9b4_e019),
    (0xc2b2_ae3d_27d4_eb4f, 0x1656_67b1_9e37_79f9),
    (0xd6e8_feb8_6659_fd93, 0x27d4_eb2f_1656_67c5),
    (0xff51_afd7_ed55_8ccd, 0xc4ce_b9fe_1a85_ec53),
    (0xa076_1d64_78bd_642f, 0xe703_7ed1_a0b4_28db),
    (0x8ebc_6af0_9c88_c6e3, 0x5899_65cc_7537_4cc3),
    (0x1d8e_4e27_c47d_124f, 0xbf58_476d_1ce4_e5b9),
    (0x94d0_49bb_1331_11eb, 0x2545_f491_4f6c_dd1d),
];

/// Window of the rolling hash: the hash shifts 2 bits per byte, so its top bits
/// depend on the last 32 bytes.
const WINDOW: u32 = 32;

/// The features of `data`.
pub fn features(data: &[u8]) -> Features {
    let mut max = [0u64; FEATURES];
    let mut sampled = false;
    let mut h: u64 = 0;
    let mut zeros: u32 = 0;
    for (i, &b) in data.iter().enumerate() {
        h = (h << 2).wrapping_add(GEAR[b as usize]);
        zeros = if b == 0 { zeros.saturating_add(1) } else { 0 };
        // One window in 8, by content; not before a whole window was hashed,
        // nor inside a run of zeros.
        if h >> 61 != 0 || (i as u32) < WINDOW - 1 || zeros >= WINDOW / 2 {
            continue;
        }
        sampled = true;
        for (m, &(a, c)) in max.iter_mut().zip(&TRANSFORMS) {
            *m = (*m).max(h.wrapping_mul(a).wrapping_add(c));
        }
    }
    if !sampled {
        return [0; FEATURES];
    }
    max.map(|m| ((m >> 32) as u32).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                b"abcdefghijklmnopqrstuvwxyz 0123456789"[(x >> 33) as usize % 37]
            })
            .collect()
    }

    #[test]
    fn zeros_have_no_features_and_content_is_found_where_it_moved() {
        assert_eq!(features(&[0; 4096]), [0; FEATURES]);
        let a = text(1, 4096);
        let f = features(&a);
        assert!(f.iter().all(|&x| x != 0));
        // The same bytes shifted by 100 and padded with zeros: the same features.
        let mut moved = vec![0u8; 100];
        moved.extend_from_slice(&a[..3996]);
        let g = features(&moved);
        let shared = f.iter().filter(|x| g.contains(x)).count();
        assert!(shared >= FEATURES - 1, "{f:?} {g:?}");
        // Unrelated bytes share none.
        let other = features(&text(2, 4096));
        assert!(f.iter().all(|x| !other.contains(x)), "{f:?} {other:?}");
    }
}
