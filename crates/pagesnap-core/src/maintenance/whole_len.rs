//! What a delta chunk would take stored alone: the base-table row's whole
//! length (docs/FORMAT.md, "Format version 2: deltas"), measured again for a
//! row `repair index` rebuilds from a blob, which does not hold it.
//!
//! Measured as the backup that made the delta measured it: the smallest of the
//! dictionary frame (with the pack's dictionary), the plain frame and the raw
//! bytes, at the store's level (`Encoder::encode`, both frames). zstd is
//! deterministic, so the row comes back as the backup wrote it, and a rebuilt
//! index object can be byte for byte the damaged one (kept under its name:
//! repair.rs), unless that backup had stopped making one of the frames
//! (chunk_writer.rs, `PlainTrial`): then this measure is the smaller, still
//! what the chunk takes whole. 0 (unknown) when it cannot be measured (the
//! dictionary cannot be read), and for the small deltas a backup does not
//! measure either (codec/whole.rs).

use crate::backend::Backend;
use crate::codec::{self, slot_len, whole, Attempt, Encoder};
use crate::format::pack::PackEntry;
use crate::types::Id;
use std::collections::HashMap;
use std::sync::Arc;

pub(crate) struct WholeLen {
    backend: Arc<dyn Backend>,
    level: i32,
    /// One encoder per dictionary met (`None`: without); `None` when it could
    /// not be built.
    encoders: HashMap<Option<Id>, Option<Encoder>>,
    out: Vec<u8>,
}

impl WholeLen {
    pub(crate) fn new(backend: Arc<dyn Backend>, level: i32) -> WholeLen {
        WholeLen {
            backend,
            level,
            encoders: HashMap::new(),
            out: Vec::new(),
        }
    }

    /// The whole length of delta `e`, chunk `raw`, stored in a pack with
    /// dictionary `dict`; 0 for a small delta outside the sample a backup
    /// measures (codec/whole.rs), as the backup recorded it.
    pub(crate) fn of(&mut self, e: &PackEntry, dict: Option<Id>, raw: &[u8]) -> u32 {
        if !whole::measured(&e.id, e.stored_len as usize, e.raw_len as usize) {
            return 0;
        }
        let (backend, level) = (&self.backend, self.level);
        let enc = self.encoders.entry(dict).or_insert_with(|| {
            let bytes = match dict {
                Some(id) => Some(codec::load_dict(backend.as_ref(), &id).ok()?.dict),
                None => None,
            };
            Encoder::new(level, dict.zip(bytes.as_deref())).ok()
        });
        let Some(enc) = enc else {
            return 0;
        };
        self.out.resize(slot_len(raw.len()), 0);
        match enc.encode(raw, &mut self.out, Attempt::Both) {
            Ok(s) => s.len as u32,
            Err(_) => 0,
        }
    }
}
