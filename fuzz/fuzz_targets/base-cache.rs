//! Fuzzes the reader of this machine's base cache segments (`store/base_cache.rs`) and the round trip.
//! Each input runs as given and with its table checksum made right (see
//! `pagesnap_core::format::fuzz`, shared with the regression test).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagesnap_core::format::fuzz::Target;

fuzz_target!(|data: &[u8]| {
    let _ = Target::BaseCache.run(data);
});
