//! Fuzzes `ConfigObject::decode` (every version; a version-3 config's sealed part
//! opened with fixed keys) and its round trip.
//! Each input runs as given and with its checksums made right (see
//! `pagesnap_core::format::fuzz`, shared with the regression test).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagesnap_core::format::fuzz::Target;

fuzz_target!(|data: &[u8]| {
    let _ = Target::Config.run(data);
});
