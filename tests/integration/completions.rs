//! `pagesnap completions SHELL` and `pagesnap man DIR`: generated from the clap
//! definitions. These tests are also what generates them in CI.

use crate::util::*;

#[test]
fn every_shell_gets_a_script_naming_the_subcommands() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = ok(bin().args(["completions", shell]));
        let text = String::from_utf8(out).expect("a completion script is UTF-8");
        assert!(!text.trim().is_empty(), "{shell}: empty script");
        assert_has(&text, &["restore", "backup", "snapshots", "completions"]);
        // Subcommand flags too, not just the command names.
        assert!(
            text.contains("keep-last"),
            "{shell}: no --keep-last in {text}"
        );
    }
    let bash = String::from_utf8(ok(bin().args(["completions", "bash"]))).unwrap();
    assert!(bash.contains("complete -F"), "{bash}");
}

#[test]
fn a_bad_shell_name_is_a_usage_error() {
    let err = fails(bin().args(["completions", "tcsh"]));
    assert_has(&err, &["tcsh", "bash"]);
    // And no shell at all.
    fails(bin().arg("completions"));
}

#[test]
fn man_writes_one_roff_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = String::from_utf8(ok(bin().arg("man").arg(dir.path()))).unwrap();
    assert!(out.contains("man pages"), "{out}");
    for (file, title) in [
        ("pagesnap.1", "pagesnap"),
        ("pagesnap-backup.1", "pagesnap-backup"),
        ("pagesnap-restore.1", "pagesnap-restore"),
        ("pagesnap-watch.1", "pagesnap-watch"),
        ("pagesnap-policy-set.1", "pagesnap-policy-set"),
        ("pagesnap-cache.1", "pagesnap-cache"),
    ] {
        let page = std::fs::read_to_string(dir.path().join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        // The roff title header, within the first lines (after the string
        // definitions clap_mangen starts with).
        let th = page
            .lines()
            .take(5)
            .find(|l| l.starts_with(".TH "))
            .unwrap_or_else(|| panic!("{file}: no .TH header in {page}"));
        assert!(th.starts_with(&format!(".TH {title} 1")), "{file}: {th}");
        assert!(page.contains(".SH NAME"), "{file}");
    }
    let backup = std::fs::read_to_string(dir.path().join("pagesnap-backup.1")).unwrap();
    assert!(backup.contains("tag"), "the backup page lists its options");
    let top = std::fs::read_to_string(dir.path().join("pagesnap.1")).unwrap();
    assert_has(&top, &["backup", "restore", "completions"]);
    // No temporary files are left beside the pages.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| n.ends_with(".1")), "{names:?}");
}

#[test]
fn man_into_a_missing_or_unusable_directory_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir");
    let err = fails(bin().arg("man").arg(&missing));
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(!missing.exists());

    // A file where the directory should be.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = fails(bin().arg("man").arg(&file));
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"x");

    // A directory that cannot be written to. Root ignores permission bits: as
    // root the binary runs as nobody (`unprivileged`), who can reach the
    // directory (the temporary directory is made traversable) but not write it.
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    // `unprivileged` adds a --store, which `man` ignores.
    let err = fails(unprivileged(dir.path(), euid() == 0).arg("man").arg(&ro));
    assert!(err.contains(&ro.display().to_string()), "{err}");
    assert!(err.contains("cannot write the man page"), "{err}");
    assert!(std::fs::read_dir(&ro).unwrap().next().is_none());
}
