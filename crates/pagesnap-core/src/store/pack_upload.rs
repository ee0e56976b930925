//! Writes finished packs on a thread of their own, so that compression goes on
//! while a pack is written and fsynced (a first backup writes hundreds of MB of
//! packs; waiting for each fsync left both cores idle). A pack is handed over
//! only when the writer is free (one pack is written while the next is built),
//! and the writer gives each written pack's buffer back for the next one, so a
//! backup holds two pack buffers at most. (A backend that keeps the buffer, S3,
//! gives nothing back: the next pack gets a new one.)

use crate::backend::{Backend, PutMode};
use crate::{Error, Result};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub(crate) struct Uploader {
    backend: Arc<dyn Backend>,
    tx: Option<SyncSender<(String, Vec<u8>)>>,
    thread: Option<JoinHandle<Result<()>>>,
    /// A written pack's buffer, for the next pack.
    free: Arc<Mutex<Option<Vec<u8>>>>,
}

impl Uploader {
    pub(crate) fn new(backend: Arc<dyn Backend>) -> Self {
        Uploader {
            backend,
            tx: None,
            thread: None,
            free: Arc::new(Mutex::new(None)),
        }
    }

    /// The buffer of a pack already stored, if one is free.
    pub(crate) fn recycled(&self) -> Option<Vec<u8>> {
        self.free.lock().ok()?.take()
    }

    /// Queues `bytes` to be stored under `key`; reports an earlier upload's failure.
    pub(crate) fn put(&mut self, key: String, bytes: Vec<u8>) -> Result<()> {
        if self.tx.is_none() {
            let (tx, rx) = sync_channel::<(String, Vec<u8>)>(0);
            let backend = self.backend.clone();
            let free = self.free.clone();
            let thread = std::thread::Builder::new()
                .name("pagesnap-packs".into())
                .spawn(move || -> Result<()> {
                    for (key, bytes) in rx {
                        // Given away: S3 sends the buffer itself rather than a copy
                        // (and keeps it), a local store hands it back.
                        let back = backend.put_vec(&key, bytes, PutMode::Overwrite)?;
                        if let (Some(b), Ok(mut f)) = (back, free.lock()) {
                            *f = Some(b);
                        }
                    }
                    Ok(())
                })
                .map_err(|e| Error::Internal(format!("cannot start the pack writer: {e}")))?;
            self.tx = Some(tx);
            self.thread = Some(thread);
        }
        let sent = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send((key, bytes)).is_ok());
        if sent {
            Ok(())
        } else {
            // The writer stopped on an error: report it.
            self.wait()?;
            Err(Error::Internal("the pack writer stopped".into()))
        }
    }

    /// Waits until every queued pack is stored; returns the first failure.
    pub(crate) fn wait(&mut self) -> Result<()> {
        self.tx = None;
        match self.thread.take().map(JoinHandle::join) {
            None => Ok(()),
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Error::Internal("the pack writer panicked".into())),
        }
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        // On an error path the result no longer matters; never leave the thread behind.
        let _ = self.wait();
    }
}
