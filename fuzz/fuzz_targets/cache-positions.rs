//! Fuzzes a position file of this machine's cache (`restore/position_cache.rs`:
//! a snapshot opened in place, resolved), as given and with its block sums and
//! checksum recomputed (see `pagesnap_core::format::fuzz`, shared with the
//! regression test).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagesnap_core::format::fuzz::Target;

fuzz_target!(|data: &[u8]| {
    let _ = Target::CachePositions.run(data);
});
