//! Fuzzes the decoder of this machine's placement files (`resolved::decode_placement`) and the round trip.
//! Each input runs as given and with its checksums made right (see
//! `pagesnap_core::format::fuzz`, shared with the regression test).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagesnap_core::format::fuzz::Target;

fuzz_target!(|data: &[u8]| {
    let _ = Target::CachePlaced.run(data);
});
