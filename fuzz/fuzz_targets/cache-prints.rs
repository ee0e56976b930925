//! Fuzzes a fingerprint file of this machine's cache (`backup/prints/file.rs`:
//! a database's newest snapshot as its next backup compares with it), as given
//! and with its checksum recomputed (see `pagesnap_core::format::fuzz`, shared
//! with the regression test).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagesnap_core::format::fuzz::Target;

fuzz_target!(|data: &[u8]| {
    let _ = Target::CachePrints.run(data);
});
