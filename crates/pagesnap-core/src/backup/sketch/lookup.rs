//! Finding a chunk's likely bases among a snapshot's chunks by their features
//! ([`super::features`]): the positions that share the most features with it.

use super::features::Features;

/// A feature shared by more positions than this says little (a structure every
/// page repeats): it casts no vote.
const MAX_SHARED: usize = 4;

/// Every position's features, sorted by feature.
#[derive(Default)]
pub struct FeatureIndex {
    entries: Vec<(u32, u32)>,
}

impl FeatureIndex {
    /// From each position's features (position `i` of `per_position`; zeros are
    /// "none").
    pub fn new(per_position: &[Features]) -> FeatureIndex {
        let mut entries: Vec<(u32, u32)> = per_position
            .iter()
            .enumerate()
            .flat_map(|(pos, f)| f.iter().map(move |&x| (x, pos as u32)))
            .filter(|&(x, _)| x != 0)
            .collect();
        entries.sort_unstable();
        entries.dedup();
        FeatureIndex { entries }
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
            let from = self.entries.partition_point(|&(y, _)| y < x);
            let to = self.entries[from..].partition_point(|&(y, _)| y == x) + from;
            if to - from > MAX_SHARED {
                continue;
            }
            for &(_, pos) in &self.entries[from..to] {
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
        let idx = FeatureIndex::new(&per);
        assert_eq!(idx.best::<2>(&f(&[1, 2, 3, 10]), 9), [Some(0), Some(1)]);
        assert_eq!(idx.best::<2>(&f(&[1, 2, 3, 10]), 0), [Some(1), None]);
        assert_eq!(idx.best::<1>(&f(&[11, 12, 13, 14]), 0), [None]);
        // Feature 1 at more than MAX_SHARED positions votes for none of them.
        let per: Vec<Features> = (0..6).map(|i| f(&[1, 100 + i])).collect();
        let idx = FeatureIndex::new(&per);
        assert_eq!(idx.best::<1>(&f(&[1, 0, 0, 0]), 99), [None]);
        assert_eq!(idx.best::<1>(&f(&[1, 103, 0, 0]), 99), [Some(3)]);
    }
}
