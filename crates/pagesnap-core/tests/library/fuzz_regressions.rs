//! Replays what fuzzing found, the hand-made hostile inputs and the fuzz seeds
//! through the same functions the fuzz targets run (`format::fuzz`), so a decoder
//! bug once found stays fixed without a nightly toolchain or cargo-fuzz.
//!
//! * `tests/fixtures/fuzz-regressions/<target>/`: artifacts `scripts/fuzz.sh`
//!   copied (must not panic) and `hostile-*` inputs (must also be rejected);
//! * `fuzz/seeds/<target>/`: valid objects (must decode).
//!
//! Both are written by `cargo run -p pagesnap-core --example fuzz_seeds`, except
//! the fuzzer's artifacts.

use pagesnap_core::format::fuzz::Target;
use pagesnap_core::format::FormatError;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The files of `dir`, sorted (none if it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.expect("list folder").path()).collect(),
        Err(_) => Vec::new(),
    };
    out.retain(|p| p.is_file());
    out.sort();
    out
}

/// Runs `target` on the file, turning a panic into an error message.
fn replay(target: Target, path: &Path) -> Result<Result<(), FormatError>, String> {
    let data = std::fs::read(path).expect("read input");
    catch_unwind(AssertUnwindSafe(|| target.run(&data)))
        .map_err(|_| format!("{}: {} panicked", target.name(), path.display()))
}

#[test]
fn regressions_and_hostile_inputs_are_rejected_without_panic() {
    let mut failures = Vec::new();
    for target in Target::ALL {
        let dir = root()
            .join("tests/fixtures/fuzz-regressions")
            .join(target.name());
        let inputs = files(&dir);
        let hostile = |p: &Path| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("hostile-"))
        };
        assert!(
            inputs.iter().any(|p| hostile(p)),
            "no hand-made hostile input in {}",
            dir.display()
        );
        for path in inputs {
            match replay(target, &path) {
                Err(panic) => failures.push(panic),
                Ok(Ok(())) if hostile(&path) => failures.push(format!(
                    "{}: {} was accepted",
                    target.name(),
                    path.display()
                )),
                Ok(_) => {}
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn seeds_decode() {
    let mut failures = Vec::new();
    for target in Target::ALL {
        let dir = root().join("fuzz/seeds").join(target.name());
        let inputs = files(&dir);
        assert!(!inputs.is_empty(), "no seeds in {}", dir.display());
        for path in inputs {
            match replay(target, &path) {
                Err(panic) => failures.push(panic),
                Ok(Err(e)) => failures.push(format!("{}: {}: {e}", target.name(), path.display())),
                Ok(Ok(())) => {}
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
