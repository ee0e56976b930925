//! Fuzzes the opening of an encrypted store's sealed objects (either key kind,
//! whole and by range, with fixed keys) and their lengths (see
//! `pagesnap_core::format::fuzz`, shared with the regression test).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagesnap_core::format::fuzz::Target;

fuzz_target!(|data: &[u8]| {
    let _ = Target::Sealed.run(data);
});
