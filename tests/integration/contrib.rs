//! contrib/: the systemd units are checked by `systemd-analyze verify` where it
//! is installed (CI runners and most Linux machines). Without it the test
//! prints why it checked nothing and passes: the units are plain text the
//! binary never reads. (contrib/watch.toml is parsed by a unit test of
//! src/commands/watch/config.rs, `the_contrib_example_parses`.)

use std::path::{Path, PathBuf};
use std::process::Command;

const UNITS: [&str; 3] = [
    "pagesnap-watch.service",
    "pagesnap-backup.service",
    "pagesnap-backup.timer",
];

fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd")
}

fn systemd_analyze() -> Option<PathBuf> {
    let found = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        println!("skipped: systemd-analyze is not installed, the units were not verified");
    }
    found
}

/// Copies of the units with ExecStart pointing at the built binary (the units
/// name /usr/local/bin/pagesnap, which verify checks for).
fn units_for_test(dir: &Path) -> Vec<PathBuf> {
    UNITS
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(contrib().join(name)).unwrap();
            assert!(
                !name.ends_with(".service") || text.contains("/usr/local/bin/pagesnap "),
                "{name}: ExecStart is expected at /usr/local/bin/pagesnap"
            );
            let text = text.replace("/usr/local/bin/pagesnap", env!("CARGO_BIN_EXE_pagesnap"));
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        })
        .collect()
}

fn verify(analyze: &Path, units: &[PathBuf]) -> (bool, String) {
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .args(units)
        .output()
        .expect("run systemd-analyze");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn systemd_units_verify_cleanly() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let units = units_for_test(dir.path());
    let (ok, stderr) = verify(&analyze, &units);
    // verify only warns about unknown keys and bad values (exit 0): any output is
    // a unit systemd would read differently from what it says.
    assert!(
        ok && stderr.trim().is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
}

#[test]
fn the_verification_catches_a_broken_unit() {
    // Proves the check above can fail: a misspelt key is reported.
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let units = units_for_test(dir.path());
    let watch = &units[0];
    let text = std::fs::read_to_string(watch).unwrap();
    std::fs::write(
        watch,
        text.replace("ProtectSystem=strict", "ProtectSystm=strict"),
    )
    .unwrap();
    let (ok, stderr) = verify(&analyze, &units);
    assert!(
        !ok || stderr.contains("ProtectSystm"),
        "not reported:\n{stderr}"
    );
}

#[test]
fn units_are_hardened_and_schedule_as_documented() {
    let read = |n: &str| std::fs::read_to_string(contrib().join(n)).unwrap();
    let watch = read("pagesnap-watch.service");
    for key in [
        "ExecStart=/usr/local/bin/pagesnap watch --config /etc/pagesnap/watch.toml",
        "Type=notify",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=",
        "ProtectHome=yes",
        "PrivateTmp=yes",
    ] {
        assert!(watch.contains(key), "pagesnap-watch.service lacks {key}");
    }
    let backup = read("pagesnap-backup.service");
    assert!(backup.contains("Type=oneshot"));
    assert!(backup.contains("ExecStart=/usr/local/bin/pagesnap backup "));
    assert!(backup.contains("ProtectSystem=strict") && backup.contains("ReadWritePaths="));
    assert!(read("pagesnap-backup.timer").contains("OnCalendar=*:0/10"));
}
