//! prints: recognising the pages that did not change since the parent snapshot
//! without hashing them with blake3 (issue #30; docs/PERFORMANCE.md, SECURITY.md).
//!
//! Each chunk of a snapshot gets a *print*, XXH3-128 under a secret of this
//! machine (`secret.rs`), recorded with each 64 KiB block's blake3 chaining
//! value and image-check digest in a local file (`file.rs`). The next backup of
//! the database computes the prints of what it captures and, for a whole block
//! whose prints and image-check digest both equal the parent's, takes the
//! parent's chunks and chaining value instead of hashing the block with blake3
//! twice (chunk ids and the image hash). Only changed blocks are hashed,
//! compressed and looked up as before.
//!
//! Why this is safe: a block is taken as unchanged only if two independent
//! 128-bit digests of each of its bytes match the parent's, one of them keyed
//! with a secret no one else holds, so neither accident nor a page crafted by
//! someone who can write to the database (but cannot read this machine's cache)
//! makes a changed block look unchanged. Anything wrong with the file (missing,
//! damaged, another snapshot's, another secret's, another store's) only costs
//! this backup the full hashing. `--paranoid` hashes every page with blake3.

pub(crate) mod file;
mod secret;
#[cfg(feature = "fuzzing")]
pub(crate) use file::fuzz;

use crate::digest::image_check::Digest;
use crate::types::Id;
use blake3::hazmat::ChainingValue;
use file::{Recorded, Recorder};
pub(crate) use secret::Printer;

/// One chunk's print: XXH3-128 of its bytes under this machine's secret.
pub(crate) type Print = [u8; 16];

/// How a capture prints its chunks: the printer, the parent to compare with
/// (none to hash every page), and where its own prints go.
pub(crate) struct Printing {
    pub printer: Printer,
    pub parent: Option<Parent>,
    /// The store and database whose file the capture writes.
    record_as: (Id, String),
    recorder: Option<Recorder>,
}

impl Printing {
    pub(crate) fn new(printer: Printer, parent: Option<Parent>, store: Id, name: &str) -> Self {
        Printing {
            printer,
            parent,
            record_as: (store, name.to_string()),
            recorder: None,
        }
    }

    /// Readies a capture in chunks of `chunk_len` bytes: a parent of another
    /// chunk length (the page size changed) has nothing to compare, and the
    /// file this capture records is made.
    pub(crate) fn begin(&mut self, chunk_len: u64) {
        if self
            .parent
            .as_ref()
            .is_some_and(|p| p.file.chunk_len() != chunk_len)
        {
            self.parent = None;
        }
        let (store, name) = &self.record_as;
        self.recorder = Recorder::create(store, name, chunk_len, self.printer.id());
    }

    /// Records where in its WAL the snapshot was captured (capture/guide.rs).
    pub(crate) fn mark(&mut self, wal: Option<crate::backup::capture::guide::WalMark>) {
        if let Some(r) = &mut self.recorder {
            r.mark(wal);
        }
    }

    /// Records block `b`; a failure only stops recording (the next backup
    /// then hashes every page).
    pub(crate) fn record(&mut self, b: u64, cv: &ChainingValue, check: &Digest, prints: &[Print]) {
        if let Some(r) = &self.recorder {
            if r.put(b, cv, check, prints).is_err() {
                self.recorder = None;
            }
        }
    }

    /// The file recorded so far, to seal once the image is complete.
    pub(crate) fn take_recorder(&mut self) -> Option<Recorder> {
        self.recorder.take()
    }
}

/// The parent snapshot as the capture compares blocks with it: this machine's
/// checked record of it. (Its chunks, for a block found unchanged, come from
/// the index: `ChunkLookup::parent_at`.)
pub(crate) struct Parent {
    file: Recorded,
    image_len: u64,
    block_len: u64,
    per_block: usize,
}

impl Parent {
    /// The parent of `image_len` bytes in `chunks` chunks whose record is
    /// `file`, if the record describes as many.
    pub(crate) fn new(file: Recorded, image_len: u64, chunks: u64) -> Option<Parent> {
        let (chunk_len, per_block) = (file.chunk_len(), file.per_block());
        let block_len = crate::backup::capture::block_len(chunk_len);
        // The capture's blocks are whole records' worth of chunks.
        let sound = block_len == chunk_len * per_block as u64
            && file.chunks() == chunks
            && image_len.div_ceil(chunk_len) == chunks;
        sound.then_some(Parent {
            file,
            image_len,
            block_len,
            per_block,
        })
    }

    /// Block `b` now (a whole block of `len` bytes whose prints are `prints`
    /// and image-check digest `check`) against the parent's, if it was whole
    /// there too: the parent's record is read once for both answers.
    pub(crate) fn compare(
        &self,
        b: u64,
        len: usize,
        prints: &[Print],
        check: &Digest,
    ) -> Option<Compared> {
        let whole_there = (b + 1).checked_mul(self.block_len)? <= self.image_len;
        if len as u64 != self.block_len || !whole_there || prints.len() != self.per_block {
            return None;
        }
        let was = self.file.block(b)?;
        Some(match was.check == *check && was.prints == prints {
            true => Compared::Same(was.cv),
            false => {
                Compared::Changed(was.prints.iter().zip(prints).map(|(a, b)| a == b).collect())
            }
        })
    }

    /// Where in its WAL the parent was captured, if this machine recorded it.
    pub(crate) fn wal(&self) -> Option<crate::backup::capture::guide::WalMark> {
        self.file.wal()
    }

    /// The parent's record of block `b`, if the block was whole there.
    pub(crate) fn whole_block(&self, b: u64) -> Option<file::BlockRecord> {
        let whole_there = (b + 1).checked_mul(self.block_len)? <= self.image_len;
        let was = self.file.block(b).filter(|_| whole_there)?;
        (was.prints.len() == self.per_block).then_some(was)
    }

    /// The parent's chaining value of block `b`, if the block is the same.
    #[cfg(test)]
    fn same_block(
        &self,
        b: u64,
        len: usize,
        prints: &[Print],
        check: &Digest,
    ) -> Option<ChainingValue> {
        match self.compare(b, len, prints, check)? {
            Compared::Same(cv) => Some(cv),
            Compared::Changed(_) => None,
        }
    }
}

/// How a block compares with the parent's.
pub(crate) enum Compared {
    /// Every print and the image-check digest are the parent's: its chaining value.
    Same(ChainingValue),
    /// It changed: which of its chunks have the print the parent's chunk at the
    /// same position had. Those keep the parent's ids; the block is still
    /// hashed whole for the image hash, so a chunk taken wrongly would show as
    /// a snapshot that fails its check, never as one that passes it.
    Changed(Vec<bool>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A parent of `image_len` bytes in 4 KiB chunks: block b's cv and check
    /// are all b, chunk c's print all c; the record as a file in `dir`.
    fn parent(dir: &std::path::Path, image_len: u64) -> Option<Parent> {
        let chunks = image_len.div_ceil(4096) as usize;
        let blocks = image_len.div_ceil(65536);
        let snap = Id([1; 32]);
        let rows: Vec<_> = (0..blocks)
            .map(|b| {
                let first = b as usize * 16;
                let prints = (first..chunks.min(first + 16)).map(|c| [c as u8; 16]);
                ([b as u8; 32], [b as u8; 16], prints.collect())
            })
            .collect();
        let path = dir.join("f");
        let bytes = file::encode(&snap, &[1; 16], 4096, image_len, &rows);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&bytes)
            .unwrap();
        let want = file::Expected {
            snapshot: &snap,
            secret_id: [1; 16],
            chunk_len: 4096,
            image_len,
        };
        let rec = Recorded::open(&path, &want)?;
        Parent::new(rec, image_len, chunks as u64)
    }

    #[test]
    fn a_block_is_the_same_only_if_whole_and_every_print_and_the_check_match() {
        let d = tempfile::tempdir().unwrap();
        let p = parent(d.path(), 3 * 65536 + 4096).unwrap();
        let prints = |b: u8| (0..16u8).map(|i| [b * 16 + i; 16]).collect::<Vec<_>>();
        let cv = p.same_block(1, 65536, &prints(1), &[1; 16]).unwrap();
        assert_eq!(cv, [1; 32]);
        assert!(
            p.same_block(1, 65536, &prints(1), &[2; 16]).is_none(),
            "check"
        );
        let mut one_off = prints(1);
        one_off[7][0] ^= 1;
        assert!(
            p.same_block(1, 65536, &one_off, &[1; 16]).is_none(),
            "one print"
        );
        assert!(
            p.same_block(2, 65536, &prints(1), &[2; 16]).is_none(),
            "another block's"
        );
        assert!(
            p.same_block(1, 4096, &prints(1)[..1], &[1; 16]).is_none(),
            "cut short"
        );
        // The last block was partial in the parent, and there is none after it.
        assert!(p.same_block(3, 65536, &prints(3), &[3; 16]).is_none());
        assert!(p.same_block(4, 65536, &prints(4), &[4; 16]).is_none());
    }

    #[test]
    fn a_changed_block_names_the_chunks_whose_prints_did_not_change() {
        let d = tempfile::tempdir().unwrap();
        let p = parent(d.path(), 3 * 65536 + 4096).unwrap();
        let prints = |b: u8| (0..16u8).map(|i| [b * 16 + i; 16]).collect::<Vec<_>>();
        // A check digest no block of the parent has: every block compared changed.
        let same_chunks =
            |b: u64, len: usize, prints: &[Print]| match p.compare(b, len, prints, &[0xEE; 16]) {
                None => None,
                Some(Compared::Changed(same)) => Some(same),
                Some(Compared::Same(_)) => panic!("block {b} compared the same"),
            };
        let mut changed = prints(1);
        changed[3][15] ^= 1;
        changed[9] = prints(1)[10];
        let same = same_chunks(1, 65536, &changed).unwrap();
        let want: Vec<bool> = (0..16).map(|i| i != 3 && i != 9).collect();
        assert_eq!(same, want);
        // Another block's prints are not this one's, even if equal among themselves.
        assert!(same_chunks(2, 65536, &prints(1))
            .unwrap()
            .iter()
            .all(|s| !s));
        // Only whole blocks, whole in the parent too.
        assert!(same_chunks(1, 4096, &prints(1)[..1]).is_none(), "cut short");
        assert!(same_chunks(3, 65536, &prints(3)).is_none(), "partial there");
        assert!(same_chunks(4, 65536, &prints(4)).is_none(), "beyond it");
    }

    #[test]
    fn a_record_that_does_not_describe_the_chunks_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = parent(d.path(), 65536).unwrap();
        assert!(Parent::new(p.file, 65536, 15).is_none(), "fewer chunks");
        let p = parent(d.path(), 65536).unwrap();
        assert!(
            Parent::new(p.file, 65536 + 4096, 17).is_none(),
            "a longer image"
        );
    }
}
