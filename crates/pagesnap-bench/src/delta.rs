//! The **delta bound** (issue #27): what a page-level store could reach if it kept a
//! changed page as a zstd delta against the previous version at the same position
//! ("patch-from": the previous version as a raw-content prefix), with a bounded chain
//! so that decoding any page needs at most K deltas.
//!
//! Accounted per page, the default chunk size of a store (1 page), on the same
//! image as the ideal page-level bound, with the same dedup: a content seen before
//! (or all zeros) costs nothing. Every other content at a position that changed is
//! charged min(zstd -3 alone, zstd -3 against the previous version at that
//! position), capped at the raw size like the ideal bound; a position new in this
//! image has no previous version and is charged alone. The chain bound turns a
//! delta into a keyframe (charged alone) when its base is already K deltas deep,
//! so with deltas always smaller a position gets a keyframe every K+1 versions.
//! So the bound is never above the ideal page-level bound.

use anyhow::{anyhow, Result};
use pagesnap_core::sketch::features::{features, Features};
use pagesnap_core::sketch::lookup::FeatureIndex;
use std::collections::HashMap;

/// The chain bounds simulated: at most this many deltas to decode any page
/// (`None`: unbounded).
pub const CHAINS: [Option<u32>; 4] = [Some(4), Some(8), Some(16), None];

/// Short name of a chain bound, the key of the `--json` objects.
pub fn chain_key(chain: Option<u32>) -> String {
    match chain {
        Some(k) => format!("k{k}"),
        None => "unbounded".into(),
    }
}

/// What one image cost under each chain bound of [`CHAINS`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeltaStep {
    pub bytes: [u64; CHAINS.len()],
    /// The same with content-found bases too: a changed page's base is the
    /// smallest delta of its previous version at its position and of the
    /// [`FOUND`] pages of the previous image sharing the most resemblance
    /// features with it (`pagesnap_core::sketch`), what a backup can find.
    pub found_bytes: [u64; CHAINS.len()],
    /// New contents stored whole: new positions, keyframes forced by the chain
    /// bound, and pages that a delta does not shrink further.
    pub keyframes: [u64; CHAINS.len()],
}

/// Content-found candidates tried per changed page, besides its position's.
pub const FOUND: usize = 1;

pub struct DeltaBound {
    /// [`DeltaBound::depths`] of the content-found variant, and the previous
    /// image's features.
    found_depths: HashMap<[u8; 32], [u32; CHAINS.len()]>,
    previous_features: FeatureIndex,
    /// Chain depth (deltas to decode) of every non-zero content stored so far, per
    /// chain bound; a content is stored once, at the depth it got first.
    depths: HashMap<[u8; 32], [u32; CHAINS.len()]>,
    /// The previous image and its page hashes: the bases of this step's deltas.
    previous: Vec<u8>,
    previous_hashes: Vec<[u8; 32]>,
    alone: zstd::bulk::Compressor<'static>,
    buf: Vec<u8>,
}

impl DeltaBound {
    pub fn new() -> Result<DeltaBound> {
        Ok(DeltaBound {
            found_depths: HashMap::new(),
            previous_features: FeatureIndex::default(),
            depths: HashMap::new(),
            previous: Vec::new(),
            previous_hashes: Vec::new(),
            alone: zstd::bulk::Compressor::new(3)?,
            buf: Vec::new(),
        })
    }

    /// Accounts `image` (pages of `page_size` bytes, `hashes` their blake3) and keeps
    /// it as the base of the next step.
    pub fn observe(
        &mut self,
        image: Vec<u8>,
        hashes: Vec<[u8; 32]>,
        page_size: usize,
    ) -> Result<DeltaStep> {
        let mut step = DeltaStep::default();
        // A context per step: its prefix borrows the previous image, and it is
        // single-use (cleared by each compression), so it is set for every page.
        let mut patch = zstd::zstd_safe::CCtx::create();
        patch
            .set_parameter(zstd::zstd_safe::CParameter::CompressionLevel(3))
            .map_err(zstd_error)?;
        self.buf = Vec::with_capacity(zstd::zstd_safe::compress_bound(page_size));
        let feats: Vec<Features> = image.chunks(page_size).map(features).collect();
        for (i, (page, h)) in image.chunks(page_size).zip(&hashes).enumerate() {
            let base = self.previous.get(i * page_size..i * page_size + page.len());
            if base == Some(page) || self.depths.contains_key(h) || page.iter().all(|&b| b == 0) {
                continue;
            }
            let alone = (self.alone.compress(page)?.len()).min(page.len()) as u64;
            let (delta, base_depth) = match base {
                Some(base) => {
                    patch.ref_prefix(base).map_err(zstd_error)?;
                    self.buf.clear();
                    patch.compress2(&mut self.buf, page).map_err(zstd_error)?;
                    // An all-zero base was never stored: it decodes from nothing.
                    let depth = self.depths.get(&self.previous_hashes[i]);
                    (self.buf.len() as u64, depth.copied().unwrap_or_default())
                }
                None => (u64::MAX, [0; CHAINS.len()]),
            };
            let mut depth = [0; CHAINS.len()];
            for (k, chain) in CHAINS.iter().enumerate() {
                let room = chain.is_none_or(|max| base_depth[k] < max);
                if delta < alone && room {
                    step.bytes[k] += delta;
                    depth[k] = base_depth[k] + 1;
                } else {
                    step.bytes[k] += alone;
                    step.keyframes[k] += 1;
                }
            }
            self.depths.insert(*h, depth);
        }
        drop(patch);
        self.found(&mut step, &image, &hashes, &feats, page_size)?;
        self.previous_features = FeatureIndex::new(std::sync::Arc::new(feats));
        self.previous = image;
        self.previous_hashes = hashes;
        Ok(step)
    }
}

impl DeltaBound {
    /// The content-found variant's charges for `image` (its `found_bytes`).
    fn found(
        &mut self,
        step: &mut DeltaStep,
        image: &[u8],
        hashes: &[[u8; 32]],
        feats: &[Features],
        page_size: usize,
    ) -> Result<()> {
        let mut patch = zstd::zstd_safe::CCtx::create();
        patch
            .set_parameter(zstd::zstd_safe::CParameter::CompressionLevel(3))
            .map_err(zstd_error)?;
        let previous = &self.previous;
        for (i, (page, h)) in image.chunks(page_size).zip(hashes).enumerate() {
            let same = previous.get(i * page_size..i * page_size + page.len());
            if same == Some(page)
                || self.found_depths.contains_key(h)
                || page.iter().all(|&b| b == 0)
            {
                continue;
            }
            let alone = (self.alone.compress(page)?.len()).min(page.len()) as u64;
            let mut candidates: Vec<usize> = Vec::new();
            if same.is_some() {
                candidates.push(i);
            }
            candidates.extend(
                self.previous_features
                    .best::<FOUND>(&feats[i], i as u64)
                    .into_iter()
                    .flatten()
                    .map(|p| p as usize),
            );
            // (delta bytes, base depth) per candidate.
            let mut tried = Vec::new();
            for c in candidates {
                let Some(base) = previous.get(c * page_size..(c + 1) * page_size) else {
                    continue;
                };
                patch.ref_prefix(base).map_err(zstd_error)?;
                self.buf.clear();
                patch.compress2(&mut self.buf, page).map_err(zstd_error)?;
                let depth = self.found_depths.get(&self.previous_hashes[c]);
                tried.push((self.buf.len() as u64, depth.copied().unwrap_or_default()));
            }
            let mut depth = [0; CHAINS.len()];
            for (k, chain) in CHAINS.iter().enumerate() {
                let best = tried
                    .iter()
                    .filter(|(_, d)| chain.is_none_or(|max| d[k] < max))
                    .min_by_key(|(len, _)| *len);
                match best {
                    Some(&(len, d)) if len < alone => {
                        step.found_bytes[k] += len;
                        depth[k] = d[k] + 1;
                    }
                    _ => step.found_bytes[k] += alone,
                }
            }
            self.found_depths.insert(*h, depth);
        }
        Ok(())
    }
}

fn zstd_error(code: usize) -> anyhow::Error {
    anyhow!(
        "zstd delta compression failed: {}",
        zstd::zstd_safe::get_error_name(code)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;

    const PAGE: usize = 4096;

    fn hashes(image: &[u8]) -> Vec<[u8; 32]> {
        image
            .chunks(PAGE)
            .map(|p| *blake3::hash(p).as_bytes())
            .collect()
    }

    fn alone(page: &[u8]) -> u64 {
        (zstd::bulk::compress(page, 3).unwrap().len()).min(page.len()) as u64
    }

    #[test]
    fn small_edits_cost_far_less_and_keyframes_come_every_k_plus_1_versions() {
        let mut rng = Rng::new(3);
        // Random bytes: zstd cannot shrink the page alone (it costs its raw size),
        // but against its previous version only the edited bytes cost anything.
        let mut page = rng.bytes(PAGE);
        let mut d = DeltaBound::new().unwrap();
        let (mut ideal, mut total, mut keyframes) = (0, [0; 4], [0; 4]);
        const VERSIONS: u64 = 20;
        for v in 0..VERSIONS {
            if v > 0 {
                for _ in 0..4 {
                    let at = rng.below(PAGE as u64) as usize;
                    page[at] = page[at].wrapping_add(1 + rng.below(250) as u8);
                }
            }
            ideal += alone(&page);
            let s = d.observe(page.clone(), hashes(&page), PAGE).unwrap();
            for k in 0..4 {
                total[k] += s.bytes[k];
                keyframes[k] += s.keyframes[k];
            }
        }
        assert_eq!(ideal, VERSIONS * PAGE as u64);
        // Versions 0, 5, 10, 15 with K = 4; 0, 9, 18 with 8; 0, 17 with 16; only
        // the first unbounded.
        assert_eq!(keyframes, [4, 3, 2, 1]);
        // Unbounded: one whole page and 19 deltas of a few bytes each.
        assert!(total[3] < ideal / 10, "{total:?} vs {ideal}");
        assert!(total[3] < PAGE as u64 + 19 * 100, "{total:?}");
        // Each keyframe costs a whole page, so the bound rises as K falls.
        assert!(total[0] > total[1] && total[1] > total[2] && total[2] > total[3]);
        assert!(total[0] >= 4 * PAGE as u64 && total[0] < 4 * PAGE as u64 + 16 * 100);
    }

    #[test]
    fn new_positions_are_charged_alone_and_seen_contents_nothing() {
        let mut rng = Rng::new(9);
        let first = rng.bytes(PAGE);
        let mut d = DeltaBound::new().unwrap();
        let s = d.observe(first.clone(), hashes(&first), PAGE).unwrap();
        assert_eq!(s.bytes, [PAGE as u64; 4]);
        assert_eq!(s.keyframes, [1; 4]);

        // Grown by a page of text that shares nothing with page 0: charged alone,
        // what it costs compressed by itself, even though page 0 is a good base.
        let text: Vec<u8> = rng.text(2000).into_bytes()[..PAGE].to_vec();
        let mut image = first.clone();
        image.extend_from_slice(&text);
        let s = d.observe(image.clone(), hashes(&image), PAGE).unwrap();
        assert_eq!(s.bytes, [alone(&text); 4]);
        assert!(alone(&text) < PAGE as u64 / 2);
        assert_eq!(s.keyframes, [1; 4]);

        // Unchanged, a zero page, and page 0's content moved to a new position:
        // nothing new to store.
        image.extend_from_slice(&[0; PAGE]);
        image.extend_from_slice(&first);
        let s = d.observe(image.clone(), hashes(&image), PAGE).unwrap();
        assert_eq!(s, DeltaStep::default());
    }

    #[test]
    fn content_found_bases_follow_pages_that_moved() {
        let mut rng = Rng::new(5);
        let (a, b) = (rng.bytes(PAGE), rng.bytes(PAGE));
        let mut d = DeltaBound::new().unwrap();
        let first = [a.clone(), b.clone()].concat();
        d.observe(first.clone(), hashes(&first), PAGE).unwrap();
        // Swapped (as a VACUUM moves rows), each with a few bytes edited: the
        // same position holds the other page, useless as a base; by content
        // each finds its previous version.
        let edit = |mut p: Vec<u8>, at: usize| {
            p[at] ^= 0x5a;
            p
        };
        let next = [edit(b, 10), edit(a, 20)].concat();
        let s = d.observe(next.clone(), hashes(&next), PAGE).unwrap();
        assert_eq!(s.bytes, [2 * PAGE as u64; 4]);
        for k in 0..4 {
            assert!(s.found_bytes[k] < PAGE as u64 / 8, "{:?}", s.found_bytes);
        }
    }
}
