//! What a backup knows of the store's `packs/` and `index/` without listing
//! them: this machine's record of its last full listing, trusted while the
//! store's `marker` object still holds the value recorded with it. Bytes of
//! both: FORMAT.md, "The marker, and local listing files".
//!
//! Why: on object storage a listing costs a request per 1,000 keys, and each
//! folder grows by an object per backup (52,000 a year at one per 10 minutes).
//! A backup needs the listing for correctness in one way only: it must never
//! dedup against a chunk whose pack is gone. Packs and index objects are
//! deleted (or replaced) only by prune and `repair index`, under the exclusive
//! lock, and they delete the marker first ([`Store::drop_marker`]); a backup
//! holds its shared lock from before it reads the marker until after it
//! records. So a record made under the marker's present value lacks no
//! deletion. What it may lack are additions (another machine's backup running
//! at the same time): that costs dedup, never correctness. Every backup that
//! adds objects writes a new marker, so the other machines list again.
//!
//! A full listing is made anyway when the record is missing, damaged, made
//! under another marker value or older than [`FULL_LISTING_EVERY`] (a pack lost
//! outside pagesnap is noticed within a day), and by a `--paranoid` backup.
//! Only stores that pay per request (S3) are concerned: a local store is
//! listed by every backup, as cheap as reading the record, and so a pack
//! deleted there by hand is noticed at once.

use super::Store;
use crate::backend::{ObjectInfo, PutMode};
use crate::format::envelope::{self, Kind};
use crate::format::{FormatError, LeReader};
use crate::types::{Id, IdMap};
use crate::{layout, Result};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The store's marker: 16 random bytes, written anew by a backup or a copy
/// that added packs or index objects, deleted by prune and repair before
/// they delete or replace any.
pub(crate) type Marker = [u8; 16];

/// How long a record is trusted at most, whatever the marker says.
pub const FULL_LISTING_EVERY: Duration = Duration::from_secs(24 * 3600);

/// A record claiming a listing from further in the future than this is not
/// trusted (the clock was set back since).
const CLOCK_SLACK: i64 = 3600;

const MAGIC: &[u8; 8] = b"PSNLISTS";
const VERSION: u32 = 1;
/// Magic, version, flags, marker, listing time, index objects, packs.
const HEADER_LEN: usize = 8 + 4 + 4 + 16 + 8 + 8 + 8;
/// An id and a size.
const ROW_LEN: usize = 32 + 8;
/// blake3 of everything before.
const TRAILER_LEN: usize = 32;
/// The most objects a record holds per folder (a century of 10-minute
/// backups is 5.3 million): a header claiming more is damage.
const MAX_ROWS: u64 = 1 << 26;

/// What a backup knows of the store's index objects and packs.
#[derive(Clone, Debug)]
pub(crate) struct Listing {
    /// Index objects, with their sizes.
    pub index: Vec<ObjectInfo>,
    /// Packs by id, with their sizes.
    pub packs: IdMap<u64>,
    /// When the full listing this derives from was made (Unix seconds).
    pub listed_at: i64,
    /// Whether it is this machine's record (no listing was sent).
    pub cached: bool,
    /// The store's marker as the backup read it: `None` if it had none (a
    /// store of a pagesnap before markers) or a damaged one.
    pub marker: Option<Marker>,
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub marker: Marker,
    pub listed_at: i64,
    /// Sorted by id, each once.
    pub index: Vec<(Id, u64)>,
    pub packs: Vec<(Id, u64)>,
}

impl Record {
    /// Whether a backup at `now` (Unix seconds) that read `marker` from the
    /// store may take this record for a listing.
    pub(crate) fn trusted(&self, marker: &Marker, now: i64) -> bool {
        let age = now.saturating_sub(self.listed_at);
        self.marker == *marker && age > -CLOCK_SLACK && age < FULL_LISTING_EVERY.as_secs() as i64
    }
}

fn path(store: &Id) -> Option<PathBuf> {
    Some(crate::cache_root()?.join(store.to_hex()).join("listing"))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A new marker value: random, else unique (all a marker needs).
fn new_marker() -> Marker {
    static TURN: AtomicU64 = AtomicU64::new(0);
    let mut m = [0u8; 16];
    if getrandom::getrandom(&mut m).is_err() {
        let seed = format!(
            "{:?} {} {:?} {}",
            std::time::SystemTime::now(),
            std::process::id(),
            hostname::get(),
            TURN.fetch_add(1, Ordering::Relaxed)
        );
        m.copy_from_slice(&blake3::hash(seed.as_bytes()).as_bytes()[..16]);
    }
    m
}

/// The marker object's bytes.
pub(crate) fn encode_marker(m: &Marker) -> Vec<u8> {
    envelope::encode(Kind::Marker, m)
}

pub(crate) fn decode_marker(bytes: &[u8]) -> crate::format::Result<Marker> {
    envelope::decode(Kind::Marker, bytes)
}

/// A record's bytes: rows sorted by id and each once, as the decoder demands.
pub(crate) fn encode(
    marker: &Marker,
    listed_at: i64,
    index: &mut Vec<(Id, u64)>,
    packs: &mut Vec<(Id, u64)>,
) -> Vec<u8> {
    for rows in [&mut *index, &mut *packs] {
        rows.sort_unstable_by_key(|r| r.0);
        rows.dedup_by_key(|r| r.0);
    }
    let mut out = Vec::with_capacity(HEADER_LEN + (index.len() + packs.len()) * ROW_LEN + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(marker);
    out.extend_from_slice(&listed_at.to_le_bytes());
    out.extend_from_slice(&(index.len() as u64).to_le_bytes());
    out.extend_from_slice(&(packs.len() as u64).to_le_bytes());
    for (id, size) in index.iter().chain(packs.iter()) {
        out.extend_from_slice(&id.0);
        out.extend_from_slice(&size.to_le_bytes());
    }
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

fn invalid(why: String) -> FormatError {
    FormatError::Invalid(format!("listing record: {why}"))
}

/// Decodes a record; every length is checked before anything is allocated.
pub(crate) fn decode(bytes: &[u8]) -> crate::format::Result<Record> {
    if bytes.len() < HEADER_LEN + TRAILER_LEN {
        return Err(FormatError::Truncated {
            needed: (HEADER_LEN + TRAILER_LEN) as u64,
            have: bytes.len() as u64,
        });
    }
    let mut r = LeReader::new(bytes);
    if r.bytes(8)? != MAGIC {
        return Err(FormatError::BadMagic {
            expected: "listing record",
        });
    }
    let version = r.u32()?;
    if version != VERSION {
        return Err(invalid(format!(
            "version {version}, this pagesnap reads {VERSION}"
        )));
    }
    let flags = r.u32()?;
    if flags != 0 {
        return Err(invalid(format!("unknown flags {flags:#x}")));
    }
    let marker: Marker = r.array()?;
    let listed_at = r.u64()? as i64;
    let counts = [r.u64()?, r.u64()?];
    for n in counts {
        if n > MAX_ROWS {
            return Err(FormatError::TooLarge {
                what: "listing record rows",
                value: n,
                limit: MAX_ROWS,
            });
        }
    }
    let want = HEADER_LEN as u64 + (counts[0] + counts[1]) * ROW_LEN as u64 + TRAILER_LEN as u64;
    if bytes.len() as u64 != want {
        return Err(invalid(format!(
            "{} bytes, its counts make {want}",
            bytes.len()
        )));
    }
    let body = bytes.len() - TRAILER_LEN;
    if blake3::hash(&bytes[..body]).as_bytes() != &bytes[body..] {
        return Err(FormatError::BodyChecksum);
    }
    let mut rows = |n: u64| -> crate::format::Result<Vec<(Id, u64)>> {
        let mut out: Vec<(Id, u64)> = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let id = Id(r.array()?);
            let size = r.u64()?;
            if out.last().is_some_and(|(last, _)| *last >= id) {
                return Err(invalid("ids not in ascending order".into()));
            }
            out.push((id, size));
        }
        Ok(out)
    };
    let index = rows(counts[0])?;
    let packs = rows(counts[1])?;
    Ok(Record {
        marker,
        listed_at,
        index,
        packs,
    })
}

impl Store {
    /// The store's marker; `None` if it has none (a store of a pagesnap before
    /// markers) or its bytes are wrong (the next backup writes a sound one).
    /// An error reading it is the store's: the backup stops.
    pub(crate) fn read_marker(&self) -> Result<Option<Marker>> {
        match self.backend().get(layout::MARKER) {
            Ok(bytes) => Ok(decode_marker(&bytes).ok()),
            Err(e) if e.is_damage() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the marker: every machine's record of the listing is stale from
    /// now on (the next backup lists in full, and writes a new one). The one
    /// step before packs or index objects are deleted or replaced, under the
    /// exclusive lock. A deletion, not a new value: it needs no space, and a
    /// prune on a full disk must still be able to run.
    pub(crate) fn drop_marker(&self) -> Result<()> {
        Ok(self.backend().delete(layout::MARKER)?)
    }

    /// Whether backups keep a record of the listing and a marker: on a store
    /// that pays per request.
    fn records_listing(&self) -> bool {
        self.backend().requests().is_some()
    }

    /// Writes a new marker value, after a backup added objects: other
    /// machines' records of the listing lack them.
    fn change_marker(&self) -> Result<Marker> {
        let m = new_marker();
        self.backend()
            .put(layout::MARKER, &encode_marker(&m), PutMode::Overwrite)?;
        Ok(m)
    }

    /// After objects were added other than by a backup (`copy` into this
    /// store): a new marker, so that every machine's next backup lists them.
    /// Returns a warning if it could not be written.
    pub(crate) fn note_added(&self) -> Option<String> {
        if !self.records_listing() {
            return None;
        }
        self.change_marker().err().map(|e| {
            format!("the store's marker could not be written ({e}); other machines' backups may not deduplicate against the copied chunks until they list the store in full")
        })
    }

    /// What a backup knows of the index objects and packs: this machine's
    /// record if it may be trusted (the module comment says when), else a full
    /// listing. `full`: list in full whatever the record says.
    pub(crate) fn backup_listing(&self, full: bool) -> Result<Listing> {
        if !self.records_listing() {
            return self.full_listing(None);
        }
        // The marker first: a listing made after reading it holds every object
        // added before it was written.
        let marker = self.read_marker()?;
        if !full && self.uses_local_cache() {
            let record = marker.and_then(|m| {
                let bytes = std::fs::read(path(&self.config().store_id)?).ok()?;
                decode(&bytes).ok().filter(|r| r.trusted(&m, now()))
            });
            if let Some(r) = record {
                return Ok(Listing {
                    index: r
                        .index
                        .iter()
                        .map(|(id, size)| ObjectInfo {
                            key: layout::index(id),
                            size: *size,
                        })
                        .collect(),
                    packs: r.packs.into_iter().collect(),
                    listed_at: r.listed_at,
                    cached: true,
                    marker,
                });
            }
        }
        self.full_listing(marker)
    }

    /// Lists `index/` and `packs/` in full.
    pub(crate) fn full_listing(&self, marker: Option<Marker>) -> Result<Listing> {
        Ok(Listing {
            index: self.backend().list(layout::INDEX)?,
            packs: self.pack_sizes()?,
            listed_at: now(),
            cached: false,
            marker,
        })
    }

    /// After a backup is published: a new marker if it added index objects or
    /// packs (`added`), so that other machines list again, then this machine's
    /// record of `listing` with them, under the marker the store now holds.
    /// `index_sizes`: the listing's index objects by id, as the backup took
    /// them from it. Best effort: a failure is a warning, and the next backup
    /// lists in full.
    pub(crate) fn record_listing(
        &self,
        listing: &Listing,
        index_sizes: &IdMap<u64>,
        added_index: &[(Id, u64)],
        added_packs: &[(Id, u64)],
    ) -> Option<String> {
        if !self.records_listing() {
            return None;
        }
        let file = path(&self.config().store_id).filter(|_| self.uses_local_cache());
        let added = !added_index.is_empty() || !added_packs.is_empty();
        let marker = match listing.marker {
            Some(m) if !added => m,
            _ => match self.change_marker() {
                Ok(m) => m,
                Err(e) => {
                    if let Some(f) = &file {
                        let _ = std::fs::remove_file(f);
                    }
                    return Some(format!(
                        "the store's marker could not be written ({e}); other machines' backups may not deduplicate against this one's chunks until they list the store in full"
                    ));
                }
            },
        };
        let file = file?;
        if listing.cached && !added {
            // The record it came from, unchanged.
            return None;
        }
        let mut index: Vec<(Id, u64)> = index_sizes
            .iter()
            .map(|(id, size)| (*id, *size))
            .chain(added_index.iter().copied())
            .collect();
        let mut packs: Vec<(Id, u64)> = listing
            .packs
            .iter()
            .map(|(id, size)| (*id, *size))
            .chain(added_packs.iter().copied())
            .collect();
        let bytes = encode(&marker, listing.listed_at, &mut index, &mut packs);
        // A torn file fails its checksum, and costs a listing.
        if let Err(e) = crate::replace_cache_file(&file, &bytes) {
            let _ = std::fs::remove_file(&file);
            return Some(format!(
                "the local listing record {} could not be written: {e}",
                file.display()
            ));
        }
        None
    }
}

/// The fuzz target `cache-listing` (see `format::fuzz`).
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzz {
    use super::*;

    /// Decodes `data`; a record that decodes must encode to the same bytes.
    pub(crate) fn run(data: &[u8]) -> crate::format::Result<()> {
        let mut r = decode(data)?;
        let again = encode(&r.marker, r.listed_at, &mut r.index, &mut r.packs);
        assert_eq!(again, data, "a decoded record encodes to itself");
        Ok(())
    }

    /// `data` with its checksum (the trailing blake3) made right.
    pub(crate) use crate::index::cache::fuzz::seal_trailing_hash as seal;

    type Named = Vec<(&'static str, Vec<u8>)>;

    /// Seeds (sound records) and hostile records (sealed, to be refused).
    pub(crate) fn files() -> (Named, Named) {
        let rows = |n: u8, salt: u8| -> Vec<(Id, u64)> {
            (0..n)
                .map(|i| (Id([i ^ salt; 32]), 1000 + i as u64))
                .collect()
        };
        let record =
            |i: u8, p: u8| encode(&[7; 16], 1_800_000_000, &mut rows(i, 0), &mut rows(p, 0x80));
        let seeds = vec![
            ("listing-empty", record(0, 0)),
            ("listing-3-and-5", record(3, 5)),
        ];
        let lie = |at: usize, value: u64| {
            let mut b = record(3, 5);
            b[at..at + 8].copy_from_slice(&value.to_le_bytes());
            seal(&b)
        };
        let mut unsorted = record(3, 5);
        unsorted.swap(HEADER_LEN, HEADER_LEN + ROW_LEN);
        let hostile = vec![
            ("hostile-index-count-huge", lie(40, u64::MAX)),
            ("hostile-pack-count-one-more", lie(48, 6)),
            ("hostile-unsorted", seal(&unsorted)),
        ];
        (seeds, hostile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        let rows = |salt: u8| {
            (0..4u8)
                .map(|i| (Id([i * 16 + salt; 32]), i as u64))
                .collect()
        };
        Record {
            marker: [9; 16],
            listed_at: 1_000_000,
            index: rows(1),
            packs: rows(2),
        }
    }

    fn bytes(r: &Record) -> Vec<u8> {
        let (mut i, mut p) = (r.index.clone(), r.packs.clone());
        encode(&r.marker, r.listed_at, &mut i, &mut p)
    }

    #[test]
    fn round_trip_and_every_flipped_byte_is_refused() {
        let r = record();
        let b = bytes(&r);
        assert_eq!(decode(&b).unwrap(), r);
        for at in 0..b.len() {
            let mut d = b.clone();
            d[at] ^= 0x40;
            assert!(decode(&d).is_err(), "a flip at {at} was taken");
        }
        for len in 0..b.len() {
            assert!(decode(&b[..len]).is_err(), "{len} bytes were taken");
        }
    }

    #[test]
    fn encode_sorts_and_dedups_rows() {
        let (mut i, mut p) = (
            vec![(Id([3; 32]), 1), (Id([1; 32]), 2), (Id([3; 32]), 1)],
            vec![],
        );
        let r = decode(&encode(&[0; 16], 5, &mut i, &mut p)).unwrap();
        assert_eq!(r.index, vec![(Id([1; 32]), 2), (Id([3; 32]), 1)]);
    }

    /// When a record is trusted, at a fixed "now".
    #[test]
    fn trusted_only_under_the_same_marker_within_a_day() {
        let day = FULL_LISTING_EVERY.as_secs() as i64;
        let now = 2_000_000_000;
        let at = |listed_at, marker: u8| Record {
            marker: [marker; 16],
            listed_at,
            index: vec![],
            packs: vec![],
        };
        let table = [
            (at(now, 9), true, "just listed"),
            (
                at(now - day + 1, 9),
                true,
                "listed a day ago, less a second",
            ),
            (at(now - day, 9), false, "listed a day ago"),
            (at(now, 8), false, "another marker"),
            (at(now + 60, 9), true, "a clock a minute behind"),
            (
                at(now + 2 * 3600, 9),
                false,
                "listed two hours in the future",
            ),
            (at(i64::MIN, 9), false, "listed at the dawn of time"),
        ];
        for (r, want, why) in table {
            assert_eq!(r.trusted(&[9; 16], now), want, "{why}");
        }
    }

    #[test]
    fn marker_round_trips_and_refuses_damage() {
        let m = new_marker();
        assert_ne!(m, new_marker(), "markers differ");
        let b = encode_marker(&m);
        assert_eq!(decode_marker(&b).unwrap(), m);
        let mut d = b.clone();
        let last = d.len() - 1;
        d[last] ^= 1;
        assert!(decode_marker(&d).is_err());
    }
}
