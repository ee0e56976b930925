//! Finding a chunk's likely bases among a snapshot's chunks by their features
//! ([`super::features`]): the positions that share the most features with it.

use super::features::Features;
use std::sync::Arc;

/// A feature shared by more positions than this says little (a structure every
/// page repeats): it casts no vote.
const MAX_SHARED: usize = 4;

/// Every position's features, bucketed by their top bits: a feature's
/// positions are the entries of its bucket whose row holds it, in position
/// order.
///
/// Why buckets and not one sorted list: a backup builds this from its parent's
/// sketch (8 features a chunk: 2 M entries for a 1 GiB database), and sorting
/// them took a tenth of a second in every backup; features are hashes, evenly
/// spread, so two linear passes (count, then place) put a few entries in each
/// bucket, and a lookup scans one bucket. The answers are the sorted list's.
/// An entry is the position and the feature's low 16 bits (its tag), not the
/// whole feature: 4 MB less fresh memory at 1 GiB, whose page faults a backup
/// waits for. The bucket and the tag tell a feature whole from 2^16 buckets
/// up; below, a lookup reads the row of an entry whose tag matches. (Entries
/// of positions alone, every row read to tell, left a lookup a cache miss per
/// entry scanned: 50 ms a backup at 1 GiB, for thousands of lookups.)
#[derive(Default)]
pub struct FeatureIndex {
    /// Where each bucket's entries start in `entries` (one more than buckets).
    starts: Vec<u32>,
    /// Positions, bucket after bucket, each in position order (a position
    /// twice in a row when two of its features share the bucket).
    entries: Vec<u32>,
    /// Each entry's feature's low 16 bits.
    tags: Vec<u16>,
    /// Each position's features.
    rows: Arc<Vec<Features>>,
    /// Features are shifted right by this to give their bucket.
    shift: u32,
}

impl FeatureIndex {
    /// From each position's features (position `i` of `per_position`; zeros are
    /// "none").
    pub fn new(rows: Arc<Vec<Features>>) -> FeatureIndex {
        let per_position = rows.as_slice();
        let features = || {
            per_position
                .iter()
                .enumerate()
                .flat_map(|(pos, f)| f.iter().map(move |&x| (x, pos as u32)))
                .filter(|&(x, _)| x != 0)
        };
        let n = features().count();
        if n == 0 {
            return FeatureIndex::default();
        }
        // About 4 entries a bucket: between 1 and 2^24 buckets.
        let bits = (usize::BITS - (n / 4).max(1).leading_zeros()).clamp(1, 24);
        let shift = 32 - bits;
        let mut starts = vec![0u32; (1 << bits) + 1];
        for (x, _) in features() {
            starts[(x >> shift) as usize + 1] += 1;
        }
        for b in 1..starts.len() {
            starts[b] += starts[b - 1];
        }
        let mut next = starts.clone();
        let mut entries = vec![0u32; n];
        let mut tags = vec![0u16; n];
        for (x, pos) in features() {
            let b = (x >> shift) as usize;
            entries[next[b] as usize] = pos;
            tags[next[b] as usize] = x as u16;
            next[b] += 1;
        }
        FeatureIndex {
            starts,
            entries,
            tags,
            rows,
            shift,
        }
    }

    /// Whether a bucket (the feature's top `32 - shift` bits) and a tag (its
    /// low 16) are the whole feature: then no row is read.
    fn exact(&self) -> bool {
        self.shift <= 16
    }

    /// The positions holding feature `x`, in order, each once.
    fn positions(&self, x: u32) -> impl Iterator<Item = u32> + '_ {
        let b = (x >> self.shift) as usize;
        let (bucket, tags) = match (self.starts.get(b), self.starts.get(b + 1)) {
            (Some(&from), Some(&to)) => {
                let r = from as usize..to as usize;
                (&self.entries[r.clone()], &self.tags[r])
            }
            _ => (&[][..], &[][..]),
        };
        // A position's features were placed one after the other, so its
        // entries in a bucket (two of its features there) are adjacent: it
        // is given once.
        let mut last = None;
        let (rows, exact) = (&self.rows, self.exact());
        bucket
            .iter()
            .zip(tags)
            .filter(move |&(_, &tag)| tag == x as u16)
            .filter_map(move |(&pos, _)| {
                if last.replace(pos) == Some(pos) {
                    return None;
                }
                let holds = || rows.get(pos as usize).is_some_and(|r| r.contains(&x));
                (exact || holds()).then_some(pos)
            })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Up to `N` positions other than `skip` sharing features with `f`, most
    /// shared first (ties: nearest to `skip`, where the same rows likely were).
    pub fn best<const N: usize>(&self, f: &Features, skip: u64) -> [Option<u32>; N] {
        let mut votes: [(u32, u32); 16] = [(0, 0); 16];
        let mut n = 0;
        for &x in f.iter().filter(|&&x| x != 0) {
            // One scan: a feature at more than MAX_SHARED positions is skipped.
            let mut hits = [0u32; MAX_SHARED + 1];
            let mut k = 0;
            for (h, pos) in hits.iter_mut().zip(self.positions(x)) {
                *h = pos;
                k += 1;
            }
            if k > MAX_SHARED {
                continue;
            }
            for &pos in &hits[..k] {
                if pos as u64 == skip {
                    continue;
                }
                match votes[..n].iter().position(|&(p, _)| p == pos) {
                    Some(v) => votes[v].1 += 1,
                    None if n < votes.len() => {
                        votes[n] = (pos, 1);
                        n += 1;
                    }
                    None => {}
                }
            }
        }
        let votes = &mut votes[..n];
        votes.sort_unstable_by_key(|&(pos, v)| (std::cmp::Reverse(v), (pos as u64).abs_diff(skip)));
        let mut out = [None; N];
        for (o, &(pos, _)) in out.iter_mut().zip(votes.iter()) {
            *o = Some(pos);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::sketch::features::FEATURES;

    /// Features from a few values (the rest none).
    fn f(xs: &[u32]) -> Features {
        let mut f = [0; FEATURES];
        f[..xs.len()].copy_from_slice(xs);
        f
    }

    #[test]
    fn most_shared_first_and_common_features_ignored() {
        let per = [
            f(&f(&[1, 2, 3, 4])),
            f(&f(&[1, 2, 9, 9])),
            f(&f(&[5, 6, 7, 8])),
            f(&[]),
        ];
        let idx = FeatureIndex::new(Arc::new(per.to_vec()));
        assert_eq!(idx.best::<2>(&f(&[1, 2, 3, 10]), 9), [Some(0), Some(1)]);
        assert_eq!(idx.best::<2>(&f(&[1, 2, 3, 10]), 0), [Some(1), None]);
        assert_eq!(idx.best::<1>(&f(&[11, 12, 13, 14]), 0), [None]);
        // Feature 1 at more than MAX_SHARED positions votes for none of them.
        let per: Vec<Features> = (0..6).map(|i| f(&[1, 100 + i])).collect();
        let idx = FeatureIndex::new(Arc::new(per.to_vec()));
        assert_eq!(idx.best::<1>(&f(&[1, 0, 0, 0]), 99), [None]);
        assert_eq!(idx.best::<1>(&f(&[1, 103, 0, 0]), 99), [Some(3)]);
    }

    /// Below 2^16 buckets a tag does not tell a feature whole: one sharing
    /// the bucket and the low 16 bits is told apart by its row.
    #[test]
    fn a_feature_sharing_the_tag_and_the_bucket_is_not_counted() {
        let (x, y) = (0x0001_0007, 0x0002_0007);
        let per = [f(&[x, 50]), f(&[y, 51]), f(&[y, 52]), f(&[x, 53])];
        let idx = FeatureIndex::new(Arc::new(per.to_vec()));
        assert!(!idx.exact());
        assert_eq!(idx.best::<2>(&f(&[x]), 1), [Some(0), Some(3)]);
        assert_eq!(idx.best::<2>(&f(&[y, 51]), 9), [Some(1), Some(2)]);
    }

    /// From 2^16 buckets up the bucket and the tag are the feature: no row
    /// is read, and the answers are still the sorted list's.
    #[test]
    fn large_tables_answer_as_the_sorted_list_without_rows() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Features from a narrow range as well, so that many repeat.
            match state % 3 {
                0 => (state >> 32) as u32 % 5_000 + 1,
                _ => (state >> 32) as u32 | 1,
            }
        };
        let per: Vec<Features> = (0..20_000)
            .map(|_| std::array::from_fn(|_| next()))
            .collect();
        let idx = FeatureIndex::new(Arc::new(per.clone()));
        assert!(idx.exact());
        for i in 0..60u64 {
            let own = per[(i * 331) as usize % per.len()];
            let mixed: Features = std::array::from_fn(|k| match k % 2 {
                0 => own[k],
                _ => next(),
            });
            for q in [own, mixed] {
                assert_eq!(idx.best::<2>(&q, i * 331), best_sorted(&per, &q, i * 331));
            }
        }
    }

    /// The lookup as it was first built (one list sorted by feature), for
    /// the buckets to be checked against.
    fn best_sorted(per: &[Features], f: &Features, skip: u64) -> [Option<u32>; 2] {
        let mut entries: Vec<(u32, u32)> = per
            .iter()
            .enumerate()
            .flat_map(|(pos, f)| f.iter().map(move |&x| (x, pos as u32)))
            .filter(|&(x, _)| x != 0)
            .collect();
        entries.sort_unstable();
        entries.dedup();
        let mut votes: Vec<(u32, u32)> = Vec::new();
        for &x in f.iter().filter(|&&x| x != 0) {
            let hits: Vec<u32> = entries.iter().filter(|e| e.0 == x).map(|e| e.1).collect();
            if hits.len() > MAX_SHARED {
                continue;
            }
            for pos in hits.into_iter().filter(|&p| p as u64 != skip) {
                match votes.iter().position(|&(p, _)| p == pos) {
                    Some(v) => votes[v].1 += 1,
                    None if votes.len() < 16 => votes.push((pos, 1)),
                    None => {}
                }
            }
        }
        votes.sort_unstable_by_key(|&(pos, v)| (std::cmp::Reverse(v), (pos as u64).abs_diff(skip)));
        let mut out = [None; 2];
        for (o, &(pos, _)) in out.iter_mut().zip(votes.iter()) {
            *o = Some(pos);
        }
        out
    }

    proptest::proptest! {
        /// The buckets answer what one sorted list answered: features drawn
        /// from a few values (shared by many positions, repeated within one)
        /// or from all of them (a bucket of mostly other features).
        #[test]
        fn buckets_answer_as_the_sorted_list(
            per in proptest::collection::vec(proptest::array::uniform8(
                proptest::prop_oneof![0u32..24, proptest::num::u32::ANY]), 0..300),
            f in proptest::array::uniform8(proptest::prop_oneof![0u32..24, proptest::num::u32::ANY]),
            skip in 0u64..300,
        ) {
            let idx = FeatureIndex::new(Arc::new(per.to_vec()));
            proptest::prop_assert_eq!(idx.best::<2>(&f, skip), best_sorted(&per, &f, skip));
            // A feature of a position, looked up: the same answer too.
            if let Some(p) = per.get(skip as usize / 2) {
                proptest::prop_assert_eq!(idx.best::<2>(p, skip), best_sorted(&per, p, skip));
            }
        }
    }
}
