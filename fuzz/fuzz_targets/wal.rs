//! Fuzzes what a direct capture reads of a source database: the wal-index
//! header and the WAL's frames, checked against each other
//! (`backup/capture/wal.rs`), as given and with its checksums recomputed (see
//! `pagesnap_core::format::fuzz`, shared with the regression test).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagesnap_core::format::fuzz::Target;

fuzz_target!(|data: &[u8]| {
    let _ = Target::Wal.run(data);
});
