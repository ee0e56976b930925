//! Fuzzes the b-tree page-owner walker `diff` runs on SQLite pages read from a
//! snapshot (`query/btree.rs`): a page size, roots and an image, every page read
//! counted (see `pagesnap_core::format::fuzz`, shared with the regression test).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagesnap_core::format::fuzz::Target;

fuzz_target!(|data: &[u8]| {
    let _ = Target::Btree.run(data);
});
