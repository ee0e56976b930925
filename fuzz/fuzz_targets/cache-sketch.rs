//! Fuzzes a sketch file of this machine's cache (`backup/sketch/file.rs`: a
//! database's newest snapshot's resemblance features and skip-delta states, as
//! its next backup picks delta bases with them), as given and with its
//! checksum recomputed (see `pagesnap_core::format::fuzz`, shared with the
//! regression test).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagesnap_core::format::fuzz::Target;

fuzz_target!(|data: &[u8]| {
    let _ = Target::CacheSketch.run(data);
});
