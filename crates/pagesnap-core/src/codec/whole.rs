//! What a delta would take stored alone (its base-table row's whole length,
//! FORMAT.md "Format version 2: deltas"): measured for a sample of the small
//! deltas and for every other delta, and estimated for the rest from that
//! sample ([`WholeTally`]: what `stats` and a backup's report add up).
//!
//! Why a sample: measuring means compressing the chunk as if it had no base,
//! a frame that is then thrown away. Most deltas are small (a changed row or
//! two: 1/8 of the chunk or less), and a small delta always beats the whole
//! frame by far, so a backup keeps a small delta against the same-position
//! base without making that frame (`backup/chunk_writer.rs`). That frame was
//! a third of what a backup with deltas spends beyond a plain one
//! (PERFORMANCE.md). Which small deltas are measured is a function of the
//! chunk's id alone, so that `repair index` rebuilds a row as the backup
//! wrote it (`maintenance/whole_len.rs`), and the sample is not biased
//! towards any kind of page.

use crate::types::ChunkId;

/// A delta at most 1/this of its chunk is small.
pub(crate) const SMALL_DELTA: usize = 8;

/// One small delta in this many (by id) has its whole length measured.
const SAMPLE: u8 = 16;

/// Whether a delta of `stored` bytes for a chunk of `raw` bytes is small.
pub(crate) fn is_small(stored: usize, raw: usize) -> bool {
    stored * SMALL_DELTA <= raw
}

/// Whether the whole length of delta `id` (`stored` bytes for a chunk of
/// `raw`) is measured and recorded: every delta but the small ones outside
/// the sample, whose rows say 0.
pub(crate) fn measured(id: &ChunkId, stored: usize, raw: usize) -> bool {
    !is_small(stored, raw) || in_sample(id)
}

/// Whether small delta `id` is in the measured sample (ids are uniform).
pub(crate) fn in_sample(id: &ChunkId) -> bool {
    id.0[31] % SAMPLE == 0
}

/// Deltas and their whole lengths, added up: measured where recorded, and
/// for a small delta whose length was not, estimated as its raw bytes times
/// the ratio of whole to raw bytes over the measured small deltas. Without
/// any measured small delta (a backup of a few pages, rows rebuilt without
/// their dictionary) an unmeasured delta counts at its stored size: it is
/// taken to have saved nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct WholeTally {
    pub chunks: u64,
    pub stored_bytes: u64,
    /// The measured deltas' whole lengths.
    measured_whole: u64,
    /// The measured small deltas' raw and whole bytes (the estimate's ratio).
    sample_raw: u64,
    sample_whole: u64,
    /// The unmeasured deltas' count, raw and stored bytes.
    pub unmeasured_chunks: u64,
    unmeasured_raw: u64,
    unmeasured_stored: u64,
}

impl WholeTally {
    /// Counts one delta of `stored` bytes for a chunk of `raw` bytes whose
    /// row says `whole` (0: not measured).
    pub(crate) fn add(&mut self, stored: u64, raw: u64, whole: u64) {
        self.chunks += 1;
        self.stored_bytes += stored;
        if whole == 0 {
            self.unmeasured_chunks += 1;
            self.unmeasured_raw += raw;
            self.unmeasured_stored += stored;
            return;
        }
        // A whole form never smaller than the delta (a writer keeps a delta
        // only when it is smaller); a row that says otherwise saved nothing.
        let whole = whole.max(stored);
        self.measured_whole += whole;
        if is_small(stored as usize, raw as usize) {
            self.sample_raw += raw;
            self.sample_whole += whole;
        }
    }

    /// The measured whole lengths plus the unmeasured ones' estimate.
    pub(crate) fn whole_bytes(&self) -> u64 {
        self.measured_whole + self.estimated_whole()
    }

    /// `whole_bytes - stored_bytes`.
    pub(crate) fn saved_bytes(&self) -> u64 {
        self.whole_bytes().saturating_sub(self.stored_bytes)
    }

    /// Whether some whole lengths are estimated (rather than counted as
    /// saving nothing, or all measured).
    pub(crate) fn estimated(&self) -> bool {
        self.unmeasured_chunks > 0 && self.sample_raw > 0
    }

    fn estimated_whole(&self) -> u64 {
        if !self.estimated() {
            return self.unmeasured_stored;
        }
        let est = self.unmeasured_raw as u128 * self.sample_whole as u128 / self.sample_raw as u128;
        (est as u64).max(self.unmeasured_stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_is_a_sixteenth_of_ids_and_only_small_deltas_go_unmeasured() {
        let ids: Vec<ChunkId> = (0..4096u32)
            .map(|i| crate::types::Id(*blake3::hash(&i.to_le_bytes()).as_bytes()))
            .collect();
        let n = ids.iter().filter(|id| in_sample(id)).count();
        assert!((200..312).contains(&n), "{n} of 4096 sampled");
        for id in &ids {
            // Over 1/8 of the chunk: always measured.
            assert!(measured(id, 513, 4096));
            assert_eq!(measured(id, 512, 4096), in_sample(id));
        }
    }

    #[test]
    fn unmeasured_deltas_are_estimated_from_the_measured_small_ones() {
        let mut t = WholeTally::default();
        // Two measured small deltas: 8,192 raw bytes take 4,000 whole.
        t.add(100, 4096, 1500);
        t.add(200, 4096, 2500);
        // A large measured one (not in the ratio) and two unmeasured.
        t.add(1000, 4096, 3000);
        t.add(50, 4096, 0);
        t.add(70, 2048, 0);
        assert_eq!(t.chunks, 5);
        assert_eq!(t.stored_bytes, 1420);
        assert_eq!(t.unmeasured_chunks, 2);
        assert!(t.estimated());
        // 6,144 unmeasured raw bytes × 4,000 / 8,192 = 3,000.
        assert_eq!(t.whole_bytes(), 1500 + 2500 + 3000 + 3000);
        assert_eq!(t.saved_bytes(), 10_000 - 1420);

        // Without a measured small delta: the unmeasured saved nothing.
        let mut u = WholeTally::default();
        u.add(1000, 4096, 3000);
        u.add(50, 4096, 0);
        assert!(!u.estimated());
        assert_eq!((u.whole_bytes(), u.saved_bytes()), (3050, 2000));
        // A row smaller than its delta counts at the delta's size.
        let mut v = WholeTally::default();
        v.add(300, 4096, 100);
        assert_eq!(v.saved_bytes(), 0);
    }
}
