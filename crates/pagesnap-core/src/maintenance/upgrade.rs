//! `upgrade --deltas`: turning deltas on in an existing store. The config is the
//! one object that is ever replaced: under the exclusive lock (no backup, prune
//! or older build's command runs meanwhile), checked before it is written and
//! read back after. Nothing else changes: the chunks already stored stay as
//! they are (a mixed store restores), and later backups store deltas.

use crate::backend::PutMode;
use crate::format::config::StoreConfig;
use crate::{layout, Error, Result, Store};
use std::time::Duration;

/// What `upgrade` did.
#[derive(Clone, Debug)]
pub struct UpgradeReport {
    /// False when the store already stored deltas (nothing was written).
    pub changed: bool,
    /// The config's format version now.
    pub format_version: u16,
}

impl Store {
    /// Makes this store store changed chunks as deltas from its next backup on
    /// (config version 2: pagesnap builds without deltas no longer open it).
    /// Re-open the store to see the new config. `lock_wait` is how long to wait
    /// for running commands to release the store.
    pub fn enable_deltas(&self, lock_wait: Duration) -> Result<UpgradeReport> {
        self.check_may_delete("upgrade the store")?;
        let _lock = self.lock(true, "upgrade", lock_wait)?;
        let backend = self.backend();
        // The config as it is now (another process may have upgraded it since
        // this handle opened the store).
        let object = || format!("{}/{}", backend.location(), layout::CONFIG);
        let current = self.config_now()?;
        if current.deltas {
            return Ok(UpgradeReport {
                changed: false,
                format_version: current.version(),
            });
        }
        let next = StoreConfig {
            deltas: true,
            ..current
        };
        next.validate().map_err(Error::BadStoreParameters)?;
        let bytes = self.config_bytes(&next)?;
        // Validate before writing: what is put must decode to what was meant.
        if !next.encrypted && StoreConfig::decode(&bytes).ok().as_ref() != Some(&next) {
            return Err(Error::Internal(
                "the upgraded config does not decode to itself".into(),
            ));
        }
        backend.put(layout::CONFIG, &bytes, PutMode::Overwrite)?;
        let back = self.config_now()?;
        if back != next {
            return Err(Error::Internal(format!(
                "{} does not read back as written",
                object()
            )));
        }
        Ok(UpgradeReport {
            changed: true,
            format_version: back.version(),
        })
    }
}
