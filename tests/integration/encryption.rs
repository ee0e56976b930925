//! `init --encrypt` and `key` (issue #28, docs/ENCRYPTION.md): the passphrase
//! comes from PAGESNAP_PASSWORD_FILE, _COMMAND or PAGESNAP_PASSWORD; every
//! command works; no marker written into the database is in any stored byte; a
//! wrong or missing passphrase is one line, exit 1, nothing written; a tampered
//! byte is damage (exit 3); a write-only key backs up and cannot restore or
//! delete; no output ever shows the passphrase.

use crate::util::*;
use assert_cmd::Command;
use std::path::Path;

const PASS: &str = "tr0ub4dor&3 horse";
const MARKER: &str = "MARKER-7f3a-CONFIDENTIAL";

/// The binary on `fx`'s store with the passphrase in a file (and cheap
/// Argon2id parameters: a test build only).
fn enc(fx: &Fx, pass_file: &Path) -> Command {
    let mut c = fx.cmd();
    c.env("PAGESNAP_PASSWORD_FILE", pass_file)
        .env("PAGESNAP_TEST_CHEAP_KDF", "1")
        .env_remove("PAGESNAP_PASSWORD")
        .env_remove("PAGESNAP_PASSWORD_COMMAND");
    c
}

fn bare(fx: &Fx) -> Command {
    let mut c = fx.cmd();
    c.env_remove("PAGESNAP_PASSWORD_FILE")
        .env_remove("PAGESNAP_PASSWORD")
        .env_remove("PAGESNAP_PASSWORD_COMMAND")
        .env("PAGESNAP_TEST_CHEAP_KDF", "1");
    c
}

fn marker_db(fx: &Fx) -> std::path::PathBuf {
    let db = fx.path("app.db");
    let conn = create_db(&db, Journal::Wal, 2000, 3);
    conn.execute_batch(&format!(
        "CREATE TABLE secrets(v TEXT); INSERT INTO secrets VALUES ('{MARKER}');"
    ))
    .unwrap();
    db
}

fn all_bytes_free_of(dir: &Path, needle: &[u8]) {
    for (p, _) in tree(dir) {
        let bytes = std::fs::read(dir.join(&p)).unwrap();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{} holds {:?}",
            p.display(),
            String::from_utf8_lossy(needle)
        );
    }
}

#[test]
fn an_encrypted_store_works_through_every_command_and_holds_no_plaintext() {
    let fx = Fx::uninit();
    let pass = fx.path("pass");
    std::fs::write(&pass, format!("{PASS}\n")).unwrap();
    let init = ok_json(enc(&fx, &pass).args(["--json", "init", "--encrypt", "--deltas"]));
    assert_eq!(init["encrypted"], true, "{init}");
    assert_eq!(init["format_version"], 3, "{init}");

    let db = marker_db(&fx);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut refs = Vec::new();
    for round in 0..3u64 {
        if round > 0 {
            mutate(&conn, round);
        }
        let b = ok_json(enc(&fx, &pass).arg("--json").arg("backup").arg(&db));
        refs.push((
            b["id"].as_str().unwrap().to_string(),
            reference_copy(&db, &fx.path(&format!("ref{round}.db"))),
        ));
    }
    // The passphrase from a command, and from the variable, open it too.
    let listed = ok_json(
        bare(&fx)
            .env(
                "PAGESNAP_PASSWORD_COMMAND",
                format!("printf '%s\\n' '{PASS}'"),
            )
            .args(["--json", "snapshots"]),
    );
    assert_eq!(listed.as_array().unwrap().len(), 3);
    for (id, reference) in &refs {
        let out = fx.path(&format!("r-{id}.db"));
        ok(bare(&fx)
            .env("PAGESNAP_PASSWORD", PASS)
            .args(["restore", id, "-o"])
            .arg(&out));
        assert_eq!(&hash_file(&out), reference);
        assert_eq!(integrity(&out), "ok");
    }
    ok(enc(&fx, &pass).args(["verify", "--read-data"]));
    ok(enc(&fx, &pass).args(["stats"]));
    ok(enc(&fx, &pass).args(["forget", "--keep-last", "2"]));
    ok(enc(&fx, &pass).args(["prune"]));
    ok(enc(&fx, &pass).args(["verify", "--read-data"]));
    all_bytes_free_of(&fx.store, MARKER.as_bytes());
    all_bytes_free_of(&fx.store, b"SQLite format 3");
    all_bytes_free_of(&fx.store, PASS.as_bytes());
}

#[test]
fn a_wrong_or_missing_passphrase_is_one_line_exit_1_and_writes_nothing() {
    let fx = Fx::uninit();
    let pass = fx.path("pass");
    std::fs::write(&pass, PASS).unwrap();
    ok(enc(&fx, &pass).args(["init", "--encrypt"]));
    let db = marker_db(&fx);
    ok(enc(&fx, &pass).arg("backup").arg(&db));
    let before = tree(&fx.store);
    let wrong = fx.path("wrong");
    std::fs::write(&wrong, "not it").unwrap();
    let e = fails(enc(&fx, &wrong).arg("backup").arg(&db));
    assert!(e.contains("wrong passphrase"), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    // No source and no terminal: says where a passphrase may come from.
    let e = fails(bare(&fx).arg("snapshots"));
    assert!(e.contains("PAGESNAP_PASSWORD_FILE"), "{e}");
    // A missing password file names it.
    let e = fails(enc(&fx, &fx.path("absent")).arg("snapshots"));
    assert!(e.contains("absent"), "{e}");
    // A failing command.
    let e = fails(
        bare(&fx)
            .env("PAGESNAP_PASSWORD_COMMAND", "exit 3")
            .arg("snapshots"),
    );
    assert!(e.contains("PAGESNAP_PASSWORD_COMMAND"), "{e}");
    assert_eq!(tree(&fx.store), before);
}

#[test]
fn a_tampered_object_is_damage_exit_3() {
    let fx = Fx::uninit();
    let pass = fx.path("pass");
    std::fs::write(&pass, PASS).unwrap();
    ok(enc(&fx, &pass).args(["init", "--encrypt"]));
    let db = marker_db(&fx);
    ok(enc(&fx, &pass).arg("backup").arg(&db));
    let pack = tree(&fx.store)
        .into_keys()
        .find(|p| p.starts_with("packs"))
        .unwrap();
    let path = fx.store.join(&pack);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x04;
    std::fs::write(&path, &bytes).unwrap();
    let out = enc(&fx, &pass)
        .args(["verify", "--read-data"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let restored = fx.path("out.db");
    // A restore refuses it as it refuses any damage (docs/CLI.md: exit 1, no
    // output; 3 is `verify`'s and `--salvage`'s).
    let e = fails(
        enc(&fx, &pass)
            .args(["restore", "latest", "-o"])
            .arg(&restored),
    );
    assert!(e.contains("does not authenticate"), "{e}");
    assert_no_output(&restored);
}

#[test]
fn keys_are_listed_added_removed_and_a_write_only_key_cannot_read_or_delete() {
    let fx = Fx::uninit();
    let (pass, second, writer) = (fx.path("pass"), fx.path("second"), fx.path("writer"));
    std::fs::write(&pass, PASS).unwrap();
    std::fs::write(&second, "second passphrase").unwrap();
    std::fs::write(&writer, "backup host only").unwrap();
    ok(enc(&fx, &pass).args(["init", "--encrypt"]));
    let added = ok_json(
        enc(&fx, &pass)
            .args(["--json", "key", "add", "--new-password-file"])
            .arg(&second),
    );
    ok(enc(&fx, &pass)
        .args(["key", "add", "--write-only", "--new-password-file"])
        .arg(&writer));
    let keys = ok_json(enc(&fx, &pass).args(["--json", "key", "list"]));
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 3);
    for k in keys {
        assert_keys(
            k,
            &["id", "current", "write_only", "label", "created", "kdf"],
        );
    }
    assert_eq!(keys.iter().filter(|k| k["write_only"] == true).count(), 1);
    let text = String::from_utf8(ok(enc(&fx, &pass).args(["key", "list"]))).unwrap();
    assert!(
        text.contains("write-only") && !text.contains(PASS),
        "{text}"
    );

    // The write-only key backs up; it cannot restore, forget, prune or manage keys.
    let db = marker_db(&fx);
    let b = ok_json(enc(&fx, &writer).arg("--json").arg("backup").arg(&db));
    let id = b["id"].as_str().unwrap();
    let e = fails(
        enc(&fx, &writer)
            .args(["restore", id, "-o"])
            .arg(fx.path("wo.db")),
    );
    assert!(e.contains("write-only"), "{e}");
    assert_no_output(&fx.path("wo.db"));
    for args in [&["forget", id][..], &["prune"], &["key", "passwd"]] {
        let e = fails(enc(&fx, &writer).args(args));
        assert!(e.contains("write-only"), "{args:?}: {e}");
    }
    // The read key restores it.
    let out = fx.path("r.db");
    ok(enc(&fx, &second).args(["restore", id, "-o"]).arg(&out));
    assert_eq!(integrity(&out), "ok");

    // Not the key in use; then by the second key, the first goes.
    let first = keys.iter().find(|k| k["current"] == true).unwrap()["id"]
        .as_str()
        .unwrap();
    let e = fails(enc(&fx, &pass).args(["key", "remove", &first[..8]]));
    assert!(e.contains("in use"), "{e}");
    ok(enc(&fx, &second).args(["key", "remove", &first[..8]]));
    assert!(fails(enc(&fx, &pass).arg("snapshots")).contains("wrong passphrase"));
    // passwd replaces the key in use.
    let third = fx.path("third");
    std::fs::write(&third, "third one").unwrap();
    ok(enc(&fx, &second)
        .args(["key", "passwd", "--new-password-file"])
        .arg(&third));
    assert!(fails(enc(&fx, &second).arg("snapshots")).contains("wrong passphrase"));
    ok(enc(&fx, &third).arg("snapshots"));
    assert!(added["key"].is_string());
}

/// `copy` from an encrypted store (its passphrase in PAGESNAP_FROM_PASSWORD_FILE)
/// to another (PAGESNAP_PASSWORD_FILE) and back to a plain store: every
/// snapshot restores byte for byte at the end.
#[test]
fn copy_between_encrypted_and_plain_stores_with_their_own_passphrases() {
    let fx = Fx::uninit();
    let (pa, pb) = (fx.path("pa"), fx.path("pb"));
    std::fs::write(&pa, "passphrase of a").unwrap();
    std::fs::write(&pb, "passphrase of b").unwrap();
    let (a, b, plain) = (fx.path("a"), fx.path("b"), fx.path("plain"));
    let run = |store: &Path, pass: &Path| {
        let mut c = ps(store);
        c.env("PAGESNAP_PASSWORD_FILE", pass)
            .env("PAGESNAP_TEST_CHEAP_KDF", "1");
        c
    };
    ok(run(&a, &pa).args(["init", "--encrypt"]));
    ok(run(&b, &pb).args(["init", "--encrypt"]));
    ok(ps(&plain).arg("init"));
    let db = marker_db(&fx);
    let b1 = ok_json(run(&a, &pa).arg("--json").arg("backup").arg(&db));
    let reference = reference_copy(&db, &fx.path("ref.db"));
    // a → b: the source's passphrase from its own variable.
    let copied = ok_json(
        run(&a, &pb)
            .env("PAGESNAP_FROM_PASSWORD_FILE", &pa)
            .args(["--json", "copy", "--to"])
            .arg(&b),
    );
    assert!(copied.to_string().contains("copied"), "{copied}");
    // Without it the source is tried with the destination's passphrase.
    let e = fails(run(&a, &pb).args(["copy", "--to"]).arg(&b));
    assert!(e.contains("wrong passphrase"), "{e}");
    // b → plain.
    ok(run(&b, &pb).args(["copy", "--to"]).arg(&plain));
    let out = fx.path("back.db");
    ok(ps(&plain).args(["restore", "latest", "-o"]).arg(&out));
    assert_eq!(hash_file(&out), reference);
    assert_eq!(b1["image_hash"].as_str().unwrap().len(), 64);
    all_bytes_free_of(&b, MARKER.as_bytes());
}

/// `watch` on an encrypted store reads the passphrase once, at start (its
/// command runs once for a round of two databases and the prune), takes the
/// snapshots, and no log line, status file or output holds the passphrase.
#[test]
fn watch_reads_the_passphrase_once_and_never_shows_it() {
    let fx = Fx::uninit();
    let pass = fx.path("pass");
    std::fs::write(&pass, PASS).unwrap();
    ok(enc(&fx, &pass).args(["init", "--encrypt"]));
    let (a, b) = (fx.path("a.db"), fx.path("b.db"));
    drop(create_db(&a, Journal::Wal, 500, 1));
    drop(create_db(&b, Journal::Wal, 500, 2));
    let calls = fx.path("calls");
    std::fs::write(
        fx.path("watch.toml"),
        "status_file = \"st.json\"\nevery = \"1h\"\nprune = \"daily\"\n\
         [[database]]\npath = \"a.db\"\nkeep_last = 5\n[[database]]\npath = \"b.db\"\nkeep_last = 5\n",
    )
    .unwrap();
    let out = bare(&fx)
        .current_dir(fx.dir.path())
        .env_remove("NOTIFY_SOCKET")
        .env(
            "PAGESNAP_PASSWORD_COMMAND",
            format!("echo x >> '{}'; printf '%s\\n' '{PASS}'", calls.display()),
        )
        .args([
            "watch",
            "--config",
            "watch.toml",
            "--once",
            "--log-format",
            "json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(std::fs::read_to_string(&calls).unwrap().lines().count(), 1);
    let snaps = ok_json(enc(&fx, &pass).args(["--json", "snapshots"]));
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    let status = std::fs::read_to_string(fx.path("st.json")).unwrap();
    for text in [
        &stderr,
        &String::from_utf8_lossy(&out.stdout).into_owned(),
        &status,
    ] {
        assert!(!text.contains(PASS), "{text}");
    }
}
