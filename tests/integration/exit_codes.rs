//! Exit statuses have one meaning each (docs/CLI.md), and with `--json` an
//! error is a JSON object on stderr.

use crate::util::*;
use serde_json::Value;
use std::time::Duration;

/// Runs `cmd`, asserts exit status `code`, nothing on stdout; returns stderr.
fn fails_with(cmd: &mut assert_cmd::Command, code: i32) -> String {
    let out = cmd.output().expect("run pagesnap");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// The one line of JSON a failed `--json` command writes on stderr.
fn json_error(stderr: &str) -> Value {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    let v: Value = serde_json::from_str(lines[0]).expect("stderr is one JSON object");
    assert_keys(&v, &["message_type", "code", "message"]);
    assert_eq!(v["message_type"], "exit_error");
    v
}

#[test]
fn a_missing_store_is_10_and_a_lock_is_11() {
    let fx = Fx::uninit();
    let e = fails_with(fx.cmd().arg("snapshots"), 10);
    assert_has(&e, &["pagesnap: error: ", "store directory does not exist"]);
    std::fs::create_dir(&fx.store).unwrap();
    let e = fails_with(fx.cmd().arg("snapshots"), 10);
    assert_has(&e, &["not a pagesnap store"]);

    let fx = Fx::new();
    let db = small_db(&fx, "app.db", 7);
    fx.backup(&db, &[]);
    let store = pagesnap_core::Store::open(&fx.store).unwrap();
    let lock = store.lock(false, "backup", Duration::ZERO).unwrap();
    let e = fails_with(fx.cmd().arg("prune"), 11);
    assert_has(&e, &["the store is locked by a shared lock of `backup`"]);
    let v = json_error(&fails_with(fx.cmd().args(["--json", "prune"]), 11));
    assert_eq!(v["code"], 11);
    assert_has(v["message"].as_str().unwrap(), &["shared lock of `backup`"]);
    drop(lock);
    ok(fx.cmd().arg("prune"));
}

#[test]
fn values_the_command_line_cannot_use_are_2() {
    let fx = Fx::new();
    let db = small_db(&fx, "app.db", 8);
    fx.backup(&db, &[]);
    let before = fx.state();
    for (args, needle) in [
        (
            &["restore", "xyz!", "-o", "out.db"][..],
            "not a hexadecimal snapshot id",
        ),
        (&["forget", "zz"], "not a hexadecimal snapshot id"),
        (&["prune", "--max-unused", "lots"], "--max-unused"),
        (
            &["gc", "--keep-last", "1", "--max-unused", "150%"],
            "--max-unused",
        ),
        (&["verify", "--read-data-subset", "0%"], "data subset"),
        (&["verify", "--read-data-subset", "3/2"], "data subset"),
        (&["policy", "set", "--keep-daily", "0"], "at least 1"),
        (
            &["forget", "--keep-within", "30m"],
            "30min for minutes or 30mo for months",
        ),
        (&["backup", "--busy-timeout", "1mo", "app.db"], "is months"),
        (&["backup", "--time", "yesterday", "app.db"], "invalid time"),
    ] {
        let e = fails_usage(fx.cmd().current_dir(fx.path("")).args(args));
        assert_has(&e, &[needle]);
        fx.assert_unchanged(&before);
    }
    let new = Fx::uninit();
    let e = fails_usage(new.cmd().args(["init", "--chunk-pages", "3"]));
    assert_has(&e, &["invalid store parameters"]);
    assert!(!new.store.exists());
    // Checked before the store is opened: a bad value is 2, not 10.
    let missing = fx.path("nowhere");
    let e = fails_usage(ps(&missing).args(["forget", "--keep-within", "30m"]));
    assert_has(&e, &["is ambiguous"]);
    let e = fails_usage(ps(&missing).args(["policy", "set", "--keep-within", "1m"]));
    assert_has(&e, &["is ambiguous"]);
}

#[test]
fn json_errors_are_one_object_on_stderr() {
    let fx = Fx::new();
    // A refused value.
    let v = json_error(&fails_with(
        fx.cmd().args(["--json", "forget", "--keep-within", "30m"]),
        2,
    ));
    assert_eq!(v["code"], 2);
    assert_eq!(
        v["message"],
        "\"30m\" is ambiguous: write 30min for minutes or 30mo for months"
    );
    // A failure.
    let v = json_error(&fails_with(
        fx.cmd().args(["--json", "restore", "latest", "-o", "x.db"]),
        1,
    ));
    assert_eq!(v["code"], 1);
    assert_has(v["message"].as_str().unwrap(), &["no snapshots"]);
    // clap's own refusals, with --json anywhere before `--`.
    let v = json_error(&fails_with(
        fx.cmd().args(["--json", "snapshots", "--bogus"]),
        2,
    ));
    assert_has(v["message"].as_str().unwrap(), &["--bogus"]);
    let v = json_error(&fails_with(
        fx.cmd().args(["prune", "--json", "--max-unused"]),
        2,
    ));
    assert_has(v["message"].as_str().unwrap(), &["--max-unused"]);
    // Without --json: text, as before.
    let e = fails_with(fx.cmd().args(["snapshots", "--bogus"]), 2);
    assert!(e.starts_with("error: "), "{e}");
    // Help is not an error.
    let out = fx.cmd().args(["--json", "--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
}
