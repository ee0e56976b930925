//! Fuzzes `KeyFile::decode` of an encrypted store's key files, the round trip
//! and, for files of cheap Argon2id parameters, the unwrap with a fixed
//! passphrase (see `pagesnap_core::format::fuzz`, shared with the regression test).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagesnap_core::format::fuzz::Target;

fuzz_target!(|data: &[u8]| {
    let _ = Target::KeyFile.run(data);
});
