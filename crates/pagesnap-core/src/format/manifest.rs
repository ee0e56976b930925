//! Snapshot manifests. A snapshot exists once its manifest object exists; the
//! manifest's object id is the snapshot id.

use super::envelope::{self, Kind};
use super::pack::MAX_CHUNK_LEN;
use super::pagemap::MAX_CHUNKS;
use super::{FormatError, Result};
use crate::types::Id;
use serde::{Deserialize, Serialize};

/// Everything recorded about one snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Snapshot time, Unix seconds (UTC) and nanoseconds.
    pub time_unix: i64,
    pub time_nanos: u32,
    /// Database name (the file stem unless the user chose one).
    pub name: String,
    /// Absolute path of the source database, as given at backup time.
    pub source_path: String,
    pub host: String,
    pub tags: Vec<String>,
    pub page_size: u32,
    pub page_count: u64,
    pub image_len: u64,
    /// blake3 of the captured image (plain, unkeyed).
    pub image_hash: [u8; 32],
    pub sqlite_version: String,
    pub pagesnap_version: String,
    /// Pages per chunk at capture time.
    pub chunk_pages: u32,
    pub chunk_count: u64,
    /// The page map holding this snapshot's chunk list.
    pub map: Id,
    /// The snapshot whose page map the backup continued from, if any (informative).
    pub parent: Option<Id>,
    /// The zstd dictionary this backup compressed new chunks with, if any; the next
    /// backup of the same database uses it too.
    pub dict: Option<Id>,
    /// The new chunks compressed much worse than the dictionary did on its training
    /// samples: the next backup trains a new one.
    pub retrain_dict: bool,
    /// The image check (XXH3-128 over chunk digests, see `image_check`) that a
    /// restore verifies instead of hashing the image with blake3 again. Stored as
    /// the first extension after the fields above; manifests written before it
    /// have none, and their restores check `image_hash`.
    #[serde(skip)]
    pub image_check: Option<[u8; 16]>,
}

/// Length of the image-check extension.
const CHECK_LEN: usize = 16;

impl Manifest {
    /// The body is the fields above (postcard), then the extensions this build
    /// knows: the image check, when there is one. Extensions are appended, never
    /// reordered: a reader decodes those it knows and ignores the bytes after them
    /// (pagesnap before the image check read such manifests unchanged, since
    /// postcard ignores bytes after a value).
    pub fn encode(&self) -> Vec<u8> {
        match &self.image_check {
            Some(check) => envelope::encode(Kind::Manifest, &(self, check)),
            None => envelope::encode(Kind::Manifest, self),
        }
    }

    /// Decodes and checks that the recorded sizes agree with each other.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let raw = envelope::open(Kind::Manifest, bytes)?;
        let (mut m, rest): (Manifest, &[u8]) = postcard::take_from_bytes(&raw)?;
        m.image_check = match rest.len() {
            0 => None,
            n if n < CHECK_LEN => {
                return Err(FormatError::Invalid(format!(
                    "{n} bytes after the manifest's fields, too few for its image check"
                )))
            }
            _ => {
                let mut check = [0u8; CHECK_LEN];
                check.copy_from_slice(&rest[..CHECK_LEN]);
                Some(check)
            }
        };
        m.validate()?;
        Ok(m)
    }

    /// Bytes of one chunk.
    pub fn chunk_len(&self) -> u64 {
        self.page_size as u64 * self.chunk_pages as u64
    }

    fn validate(&self) -> Result<()> {
        let bad = |s: String| Err(FormatError::Invalid(s));
        if !(512..=65536).contains(&self.page_size) || !self.page_size.is_power_of_two() {
            return bad(format!("page size {}", self.page_size));
        }
        if self.chunk_pages == 0
            || !self.chunk_pages.is_power_of_two()
            || self.chunk_len() > MAX_CHUNK_LEN as u64
        {
            return bad(format!("chunk pages {}", self.chunk_pages));
        }
        if self.page_count.checked_mul(self.page_size as u64) != Some(self.image_len) {
            return bad(format!(
                "{} pages of {} bytes do not make {} bytes",
                self.page_count, self.page_size, self.image_len
            ));
        }
        if self.chunk_count > MAX_CHUNKS
            || self.chunk_count != self.image_len.div_ceil(self.chunk_len())
        {
            return bad(format!(
                "chunk count {} does not cover {} bytes",
                self.chunk_count, self.image_len
            ));
        }
        Self::check_time(self.time_nanos)
    }

    /// The snapshot time's nanoseconds must be below one second: a leap second
    /// (which chrono holds as nanoseconds ≥ 1e9) has no Unix time.
    pub fn check_time(nanos: u32) -> Result<()> {
        if nanos >= 1_000_000_000 {
            return Err(FormatError::Invalid(format!(
                "nanoseconds {nanos} (a leap second has no Unix time)"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
impl Manifest {
    /// A consistent manifest (10 pages of 4 KiB in chunks of 4 pages, an image
    /// check) for the crate's unit tests: they set the fields they are about,
    /// `Manifest { name, ..Manifest::sample() }`, rather than all of them.
    pub(crate) fn sample() -> Manifest {
        Manifest {
            time_unix: 1_767_225_600,
            time_nanos: 5,
            name: "app".into(),
            source_path: "/srv/app.db".into(),
            host: "h".into(),
            tags: vec!["nightly".into()],
            page_size: 4096,
            page_count: 10,
            image_len: 40960,
            image_hash: [9; 32],
            sqlite_version: "3.54.1".into(),
            pagesnap_version: "0.1.0".into(),
            chunk_pages: 4,
            chunk_count: 3,
            map: Id([1; 32]),
            parent: Some(Id([2; 32])),
            dict: None,
            retrain_dict: false,
            image_check: Some([7; 16]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn opt_id() -> impl Strategy<Value = Option<Id>> {
        proptest::option::of(proptest::array::uniform32(any::<u8>()).prop_map(Id))
    }

    proptest! {
        /// Any manifest whose sizes agree round-trips, strings and tags included.
        #[test]
        fn consistent_manifests_round_trip(
            time in (any::<i64>(), 0u32..1_000_000_000),
            texts in proptest::collection::vec(".{0,40}", 5),
            tags in proptest::collection::vec(".{0,20}", 0..5),
            (page_shift, chunk_shift) in (9u32..=16, 0u32..=8),
            page_count in 0u64..(1 << 30),
            hash in proptest::array::uniform32(any::<u8>()),
            (map, parent, dict) in (proptest::array::uniform32(any::<u8>()), opt_id(), opt_id()),
            retrain_dict in any::<bool>(),
            image_check in proptest::option::of(proptest::array::uniform16(any::<u8>())),
        ) {
            let page_size = 1u32 << page_shift;
            let chunk_len = (page_size as u64) << chunk_shift;
            let image_len = page_count * page_size as u64;
            let m = Manifest {
                time_unix: time.0,
                time_nanos: time.1,
                name: texts[0].clone(),
                source_path: texts[1].clone(),
                host: texts[2].clone(),
                tags,
                page_size,
                page_count,
                image_len,
                image_hash: hash,
                sqlite_version: texts[3].clone(),
                pagesnap_version: texts[4].clone(),
                chunk_pages: 1 << chunk_shift,
                chunk_count: image_len.div_ceil(chunk_len),
                map: Id(map),
                parent,
                dict,
                retrain_dict,
                image_check,
            };
            prop_assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn round_trips() {
        let m = Manifest::sample();
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
    }

    /// The manifest as pagesnap wrote it before the image check: the same
    /// fields, nothing after them.
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Before {
        time_unix: i64,
        time_nanos: u32,
        name: String,
        source_path: String,
        host: String,
        tags: Vec<String>,
        page_size: u32,
        page_count: u64,
        image_len: u64,
        image_hash: [u8; 32],
        sqlite_version: String,
        pagesnap_version: String,
        chunk_pages: u32,
        chunk_count: u64,
        map: Id,
        parent: Option<Id>,
        dict: Option<Id>,
        retrain_dict: bool,
    }

    #[test]
    fn manifests_without_a_check_decode_and_older_readers_ignore_it() {
        let m = Manifest::sample();
        // Written before the image check existed: decodes with none.
        let old = Manifest {
            image_check: None,
            ..m.clone()
        };
        let bytes = old.encode();
        let plain: Before = envelope::decode(Kind::Manifest, &bytes).unwrap();
        assert_eq!(plain.image_hash, m.image_hash);
        assert_eq!(Manifest::decode(&bytes).unwrap(), old);
        // Written now: the check is the 16 bytes after the fields, and a reader
        // that knows only the fields (the decoder of earlier builds) reads them.
        let bytes = m.encode();
        let raw = envelope::open(Kind::Manifest, &bytes).unwrap();
        assert_eq!(&raw[raw.len() - 16..], &[7u8; 16]);
        let older: Before = envelope::decode(Kind::Manifest, &bytes).unwrap();
        assert_eq!(older.name, m.name);
        assert_eq!(older.image_hash, m.image_hash);
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn later_extensions_are_ignored_and_a_cut_check_is_rejected() {
        let m = Manifest::sample();
        // A later build may append more: this one keeps the check and ignores the rest.
        let longer = envelope::encode(Kind::Manifest, &(&m, [7u8; 16], [1u8; 5]));
        assert_eq!(Manifest::decode(&longer).unwrap(), m);
        // Fewer than 16 bytes after the fields is damage, not a check.
        let cut = envelope::encode(Kind::Manifest, &(&m, [7u8; 10]));
        let err = Manifest::decode(&cut).unwrap_err().to_string();
        assert!(err.contains("too few for its image check"), "{err}");
    }

    #[test]
    fn inconsistent_sizes_are_rejected() {
        let mut m = Manifest::sample();
        m.image_len += 1;
        assert!(Manifest::decode(&m.encode()).is_err());
        let mut m = Manifest::sample();
        m.chunk_count = 4;
        assert!(Manifest::decode(&m.encode()).is_err());
        let mut m = Manifest::sample();
        m.page_size = 1000;
        assert!(Manifest::decode(&m.encode()).is_err());
    }
}
