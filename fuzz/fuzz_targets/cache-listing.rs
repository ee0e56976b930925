//! Fuzzes this machine's record of a store's listing (`store/listing.rs`:
//! the index objects and packs a backup trusts while the store's marker holds
//! its value), as given and with its checksum recomputed (see
//! `pagesnap_core::format::fuzz`, shared with the regression test).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagesnap_core::format::fuzz::Target;

fuzz_target!(|data: &[u8]| {
    let _ = Target::CacheListing.run(data);
});
