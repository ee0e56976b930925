//! The two baselines, computed on the same image the stores capture:
//!
//! * **full**: what `sqlite3 db ".backup copy" && zstd -3 copy` every step costs,
//!   the whole image compressed at level 3;
//! * **ideal**: the page-level bound, the sum of the zstd -3 sizes of each page whose
//!   content was never seen before in this run, each compressed alone (all-zero
//!   pages cost nothing, and a page zstd cannot shrink costs its raw size: a store
//!   keeps such chunks raw). A page-level store can do no better without
//!   cross-page compression, and it still has metadata to write on top;
//! * **delta** ([`crate::delta`]): the same, but a changed page may be charged as a
//!   zstd delta against the previous version at its position, under chain bounds.
//!
//! The image comes from SQLite's backup API through a fresh read-only connection:
//! the same bytes `pagesnap backup` captures, so its hash is what every restore of
//! that step must reproduce.

use crate::delta::{DeltaBound, DeltaStep};
use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What one step's image cost the baselines, and how it differs from the last one.
#[derive(Clone, Debug)]
pub struct Observation {
    pub page_size: u32,
    pub pages: u64,
    pub image_len: u64,
    pub image_hash: [u8; 32],
    /// Page positions whose content differs from the previous step's image
    /// (pages beyond its end count as changed).
    pub pages_changed: u64,
    /// Distinct non-zero page contents never seen before in this run.
    pub new_pages: u64,
    /// zstd -3 of the whole image.
    pub full_bytes: u64,
    /// Sum of the zstd -3 sizes of the new pages.
    pub ideal_bytes: u64,
    /// The delta bound of this image, per chain bound of [`CHAINS`](crate::delta::CHAINS).
    pub delta: DeltaStep,
}

pub struct Baselines {
    copy: PathBuf,
    seen: HashSet<[u8; 32]>,
    previous: Vec<[u8; 32]>,
    compressor: zstd::bulk::Compressor<'static>,
    delta: DeltaBound,
}

impl Baselines {
    /// `copy` is a scratch path for the backup-API copy of each step.
    pub fn new(copy: PathBuf) -> Result<Baselines> {
        Ok(Baselines {
            copy,
            seen: HashSet::new(),
            previous: Vec::new(),
            compressor: zstd::bulk::Compressor::new(3)?,
            delta: DeltaBound::new()?,
        })
    }

    /// Copies `db` and accounts its image.
    pub fn observe(&mut self, db: &Path) -> Result<Observation> {
        let image = self.copy_image(db)?;
        self.account(image)
    }

    /// Accounts one image (a database file's bytes, its page size in its header).
    pub(crate) fn account(&mut self, image: Vec<u8>) -> Result<Observation> {
        let page_size = match u16::from_be_bytes([image[16], image[17]]) {
            1 => 65536,
            n => n as u32,
        };
        let mut full = CountingWriter(0);
        zstd::stream::copy_encode(&image[..], &mut full, 3)?;

        let mut hashes = Vec::with_capacity(image.len() / page_size as usize);
        let (mut pages_changed, mut new_pages, mut ideal_bytes) = (0, 0, 0);
        for (i, page) in image.chunks(page_size as usize).enumerate() {
            let h = *blake3::hash(page).as_bytes();
            if self.previous.get(i) != Some(&h) {
                pages_changed += 1;
            }
            hashes.push(h);
            if page.iter().all(|&b| b == 0) || !self.seen.insert(h) {
                continue;
            }
            new_pages += 1;
            let z = self.compressor.compress(page)?.len();
            ideal_bytes += z.min(page.len()) as u64;
        }
        self.previous = hashes.clone();
        let (pages, image_len) = (image.len() as u64 / page_size as u64, image.len() as u64);
        let image_hash = *blake3::hash(&image).as_bytes();
        let delta = self.delta.observe(image, hashes, page_size as usize)?;
        Ok(Observation {
            page_size,
            pages,
            image_len,
            image_hash,
            pages_changed,
            new_pages,
            full_bytes: full.0,
            ideal_bytes,
            delta,
        })
    }

    /// The backup-API copy, read back whole (the scratch file is replaced each step:
    /// backing up into an existing copy would open it in the source's WAL mode).
    fn copy_image(&self, db: &Path) -> Result<Vec<u8>> {
        self.remove_copy()?;
        let src = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("{}: cannot open the database", db.display()))?;
        src.backup(
            rusqlite::MAIN_DB,
            &self.copy,
            None::<fn(rusqlite::backup::Progress)>,
        )
        .with_context(|| format!("{}: backup-API copy failed", db.display()))?;
        drop(src);
        let image = std::fs::read(&self.copy)
            .with_context(|| format!("{}: cannot read the copy", self.copy.display()))?;
        self.remove_copy()?;
        anyhow::ensure!(
            image.len() >= 100,
            "{}: the copy is not a database",
            db.display()
        );
        Ok(image)
    }

    fn remove_copy(&self) -> Result<()> {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let mut p = self.copy.clone().into_os_string();
            p.push(suffix);
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("remove {}", self.copy.display()))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// A sink that only counts bytes: the full baseline needs the compressed size, not
/// the compressed bytes.
struct CountingWriter(u64);

impl Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_bound_is_never_above_the_ideal_bound() {
        let mut rng = crate::Rng::new(5);
        // Four pages of 4 KiB, the page size in the header as SQLite writes it.
        let mut image = rng.text(4000).into_bytes();
        image.truncate(4 * 4096);
        image.resize(4 * 4096, 7);
        image[16..18].copy_from_slice(&4096u16.to_be_bytes());
        let mut b = Baselines::new(PathBuf::from("unused")).unwrap();
        let first = b.account(image.clone()).unwrap();
        assert_eq!(first.delta.bytes, [first.ideal_bytes; 4]);
        // A few bytes of pages 1 and 3 change: the ideal bound charges both pages
        // whole, the delta bound a few bytes each.
        image[4096 + 100] ^= 0x55;
        image[3 * 4096 + 7] ^= 0x55;
        let next = b.account(image).unwrap();
        assert_eq!((next.pages_changed, next.new_pages), (2, 2));
        for bytes in next.delta.bytes {
            assert!(
                bytes * 4 < next.ideal_bytes,
                "{bytes} vs {}",
                next.ideal_bytes
            );
        }
    }
}
