//! Stores on S3, against a local Garage server started by `scripts/garage.sh`.
//! The server's endpoint and key are read from its env file (`$GARAGE_ENV`, else
//! `${TMPDIR:-/tmp}/pagesnap-garage/env`). Without it the tests print
//! "skipped: no Garage server" and pass, unless `PAGESNAP_REQUIRE_GARAGE` is set
//! (as CI does), when they fail. Each test works under its own prefix.

use crate::util::*;
use assert_cmd::Command;
use pagesnap_core::backend::{Backend, BackendError, PutMode, S3Backend, S3Settings, S3Url};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

const AWS_VARS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT",
    "AWS_PROFILE",
];

struct Garage {
    vars: BTreeMap<String, String>,
    bucket: String,
}

fn env_file() -> PathBuf {
    match std::env::var_os("GARAGE_ENV").filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => std::env::temp_dir().join("pagesnap-garage").join("env"),
    }
}

fn skip_or_fail(why: &str) -> Option<Garage> {
    let required = std::env::var_os("PAGESNAP_REQUIRE_GARAGE").is_some_and(|v| !v.is_empty());
    if required {
        panic!("PAGESNAP_REQUIRE_GARAGE is set but {why} (run scripts/garage.sh)");
    }
    eprintln!("skipped: no Garage server ({why})");
    None
}

/// The Garage server of `scripts/garage.sh`, if there is one.
fn garage() -> Option<Garage> {
    let path = env_file();
    let Ok(text) = std::fs::read_to_string(&path) else {
        return skip_or_fail(&format!("{} is missing", path.display()));
    };
    let vars: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    for k in [
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "PAGESNAP_TEST_BUCKET",
    ] {
        if !vars.contains_key(k) {
            return skip_or_fail(&format!("{} has no {k}", path.display()));
        }
    }
    let endpoint = &vars["AWS_ENDPOINT_URL"];
    let hostport = endpoint
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(hostport)
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| {
            std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(2)).is_ok()
        });
    if !reachable {
        return skip_or_fail(&format!("nothing answers at {endpoint}"));
    }
    let bucket = vars["PAGESNAP_TEST_BUCKET"].clone();
    Some(Garage { vars, bucket })
}

impl Garage {
    /// A fresh store URL in the test bucket.
    fn url(&self, test: &str) -> String {
        format!("s3://{}/{}", self.bucket, unique(test))
    }

    /// The binary with this server's environment, pointed at `url`.
    fn ps(&self, url: &str) -> Command {
        let mut c = bin();
        for v in AWS_VARS {
            c.env_remove(v);
        }
        c.envs(self.vars.iter().filter(|(k, _)| k.starts_with("AWS_")));
        c.arg("--store").arg(url);
        c
    }

    fn settings(&self) -> S3Settings {
        S3Settings {
            access_key_id: Some(self.vars["AWS_ACCESS_KEY_ID"].clone()),
            secret_access_key: Some(self.vars["AWS_SECRET_ACCESS_KEY"].clone()),
            region: Some(self.vars["AWS_REGION"].clone()),
            endpoint: Some(self.vars["AWS_ENDPOINT_URL"].clone()),
        }
    }
}

fn unique(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{test}-{}-{nanos}", std::process::id())
}

#[test]
fn s3_backend_objects() {
    let Some(g) = garage() else { return };
    let url = S3Url::parse(&g.url("backend")).unwrap();
    let b = S3Backend::with_settings(url.clone(), &g.settings()).unwrap();
    b.check_bucket().unwrap();
    assert_eq!(b.location(), url.to_string());
    assert!(matches!(
        b.get("snapshots/none"),
        Err(BackendError::NotFound { .. })
    ));
    assert_eq!(b.size("snapshots/none").unwrap(), None);
    b.put("packs/ab/abcd", b"hello", PutMode::Overwrite)
        .unwrap();
    b.put("snapshots/x", b"12", PutMode::Overwrite).unwrap();
    assert_eq!(b.get("packs/ab/abcd").unwrap(), b"hello");
    assert_eq!(b.get_range("packs/ab/abcd", 1..3).unwrap(), b"el");
    assert_eq!(b.get_range("packs/ab/abcd", 5..5).unwrap(), b"");
    let err = b.get_range("packs/ab/abcd", 3..9).unwrap_err();
    assert!(matches!(err, BackendError::Range { len: 5, .. }), "{err}");
    assert!(matches!(
        b.get_range("packs/ab/none", 0..2),
        Err(BackendError::NotFound { .. })
    ));
    let mut buf = vec![9; 10];
    b.get_range_into("packs/ab/abcd", 0..4, &mut buf).unwrap();
    assert_eq!(buf, b"hell");
    let keys = |p: &str| -> Vec<(String, u64)> {
        b.list(p)
            .unwrap()
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect()
    };
    assert_eq!(keys("packs/"), vec![("packs/ab/abcd".to_string(), 5)]);
    assert_eq!(keys("").len(), 2);
    assert_eq!(b.size("snapshots/x").unwrap(), Some(2));
    // Conditional put: a second create of the same key is refused.
    b.put("config", b"one", PutMode::Create).unwrap();
    let err = b.put("config", b"two", PutMode::Create).unwrap_err();
    assert!(matches!(err, BackendError::AlreadyExists { .. }), "{err}");
    assert!(err.to_string().contains(&url.to_string()), "{err}");
    assert_eq!(b.get("config").unwrap(), b"one");
    b.delete("snapshots/x").unwrap();
    b.delete("snapshots/x").unwrap();
    assert_eq!(b.size("snapshots/x").unwrap(), None);
    for bad in ["../x", "/x", "a//b", ""] {
        assert!(b.put(bad, b"x", PutMode::Overwrite).is_err(), "{bad:?}");
    }
    let n = b.requests();
    // Three objects written; the refused create and the invalid keys sent no PUT.
    assert!(
        n.put == 3 && n.get >= 4 && n.list >= 3 && n.head >= 3 && n.delete == 2,
        "{n:?}"
    );
    assert_eq!(n.total(), n.put + n.get + n.list + n.head + n.delete);
    // Another store under another prefix sees none of it.
    let other = S3Backend::with_settings(
        S3Url::parse(&g.url("backend-other")).unwrap(),
        &g.settings(),
    )
    .unwrap();
    assert!(other.list("").unwrap().is_empty());
}

#[test]
fn s3_full_cycle_with_the_cli() {
    let Some(g) = garage() else { return };
    let url = g.url("cycle");
    let dir = tempfile::tempdir().unwrap();
    let init = ok_json(g.ps(&url).args(["--json", "init"]));
    assert_eq!(init["store"], url.as_str());
    // A second init on the same prefix is refused (conditional put of `config`).
    let err = fails(g.ps(&url).arg("init"));
    assert_has(&err, &[&url, "already"]);

    let db = dir.path().join("app.db");
    let conn = create_db(&db, Journal::Wal, 2000, 7);
    let ref1 = reference_copy(&db, &dir.path().join("ref1.db"));
    let b1 = ok_json(
        g.ps(&url)
            .args(["--json", "backup"])
            .arg(&db)
            .args(["--time", &t(0)]),
    );
    mutate(&conn, 1);
    let ref2 = reference_copy(&db, &dir.path().join("ref2.db"));
    let b2 = ok_json(
        g.ps(&url)
            .args(["--json", "backup"])
            .arg(&db)
            .args(["--time", &t(10)]),
    );
    assert_ne!(b1["image_hash"], b2["image_hash"]);
    assert!(
        b2["new_chunks"].as_u64().unwrap() < b2["chunks"].as_u64().unwrap(),
        "the second backup reused chunks: {b2}"
    );
    let snaps = ok_json(g.ps(&url).args(["--json", "snapshots"]));
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[0]["id"], b1["id"]);
    assert_eq!(snaps[1]["id"], b2["id"]);

    let out = dir.path().join("latest.db");
    ok(g.ps(&url).args(["restore", "latest", "-o"]).arg(&out));
    assert_restored(&out, &b2["image_hash"], &ref2);
    let out1 = dir.path().join("first.db");
    ok(g.ps(&url)
        .args(["restore", b1["short_id"].as_str().unwrap(), "-o"])
        .arg(&out1));
    assert_restored(&out1, &b1["image_hash"], &ref1);

    let forget = ok_json(g.ps(&url).args(["--json", "forget", "--keep-last", "1"]));
    assert_eq!(forget["removed"], 1, "{forget}");
    let prune = ok_json(g.ps(&url).args(["--json", "prune", "--max-unused", "0"]));
    assert!(prune["bytes_freed"].as_u64().unwrap() > 0, "{prune}");

    let verify = g.ps(&url).args(["verify", "--read-data"]).output().unwrap();
    assert_eq!(
        verify.status.code(),
        Some(0),
        "verify --read-data: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let stats = ok_json(g.ps(&url).args(["--json", "stats"]));
    assert_eq!(stats["snapshots"], 1, "{stats}");
    assert!(stats["stored_bytes"]["total"].as_u64().unwrap() > 0);

    // The snapshot left still restores byte-exactly after the prune.
    let again = dir.path().join("again.db");
    ok(g.ps(&url).args(["restore", "latest", "-o"]).arg(&again));
    assert_restored(&again, &b2["image_hash"], &ref2);
    let err = fails(
        g.ps(&url)
            .args(["restore", b1["short_id"].as_str().unwrap(), "-o"])
            .arg(dir.path().join("gone.db")),
    );
    assert!(!err.is_empty());
    drop(conn);
}

#[test]
fn s3_missing_bucket_is_named() {
    let Some(g) = garage() else { return };
    let url = format!("s3://pagesnap-no-such-bucket/{}", unique("nobucket"));
    for args in [&["init"][..], &["snapshots"][..]] {
        let err = fails(g.ps(&url).args(args));
        assert_has(&err, &[&url, "bucket", "does not exist"]);
    }
}

#[test]
fn s3_wrong_credentials_are_named() {
    let Some(g) = garage() else { return };
    let url = g.url("creds");
    ok(g.ps(&url).arg("init"));
    for (var, value) in [
        (
            "AWS_SECRET_ACCESS_KEY",
            "0000000000000000000000000000000000000000000000000000000000000000",
        ),
        ("AWS_ACCESS_KEY_ID", "GK000000000000000000000000"),
    ] {
        let err = fails(g.ps(&url).env(var, value).arg("snapshots"));
        assert_has(&err, &[&url, "access denied", "AWS_ACCESS_KEY_ID"]);
    }
    let err = fails(
        g.ps(&url)
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .arg("snapshots"),
    );
    assert_has(&err, &[&url, "no credentials"]);
}

#[test]
fn s3_prefix_without_a_store() {
    let Some(g) = garage() else { return };
    let url = g.url("empty");
    let err = fails(g.ps(&url).arg("snapshots"));
    assert_has(&err, &[&url]);
}

#[test]
fn s3_copy_local_to_garage_and_restore() {
    let Some(g) = garage() else { return };
    let url = g.url("copy");
    ok(g.ps(&url).arg("init"));
    let local = Fx::new();
    let db = local.path("app.db");
    let conn = create_db(&db, Journal::Wal, 2000, 21);
    let b1 = local.backup(&db, &["--time", &t(0)]);
    let ref1 = reference_copy(&db, &local.path("ref1.db"));
    mutate(&conn, 1);
    let b2 = local.backup(&db, &["--time", &t(10)]);
    let ref2 = reference_copy(&db, &local.path("ref2.db"));

    // Local store as --store, the S3 store as --to.
    let r = ok_json(
        g.ps(&url)
            .args(["--json", "copy", "--to", &url, "--from"])
            .arg(&local.store),
    );
    assert_eq!(
        (r["copied"].as_u64(), r["failed"].as_u64()),
        (Some(2), Some(0)),
        "{r}"
    );
    assert_eq!(r["to"], url.as_str());
    let first = r["bytes_uploaded"].as_u64().unwrap();
    assert!(first > 0);

    // Restores from S3 are byte-exact.
    let snaps = ok_json(g.ps(&url).args(["--json", "snapshots"]));
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 2);
    for (s, b, reference) in [(&snaps[0], &b1, &ref1), (&snaps[1], &b2, &ref2)] {
        assert_eq!(s["time"], b["time"]);
        assert_eq!(s["image_hash"], b["image_hash"]);
        let out = local.path(&format!("from-s3-{}.db", s["short_id"].as_str().unwrap()));
        ok(g.ps(&url)
            .args(["restore", s["id"].as_str().unwrap(), "-o"])
            .arg(&out));
        assert_restored(&out, &b["image_hash"], reference);
    }

    // An hour later: one new snapshot; only it is uploaded, and only its new chunks.
    mutate(&conn, 2);
    let b3 = local.backup(&db, &["--time", &t(60)]);
    let r = ok_json(
        g.ps(&url)
            .args(["--json", "copy", "--from"])
            .arg(&local.store),
    );
    assert_eq!(
        (r["copied"].as_u64(), r["skipped"].as_u64()),
        (Some(1), Some(2)),
        "{r}"
    );
    assert!(r["bytes_uploaded"].as_u64().unwrap() * 2 < first, "{r}");
    let out = local.path("latest-from-s3.db");
    ok(g.ps(&url).args(["restore", "latest", "-o"]).arg(&out));
    assert_eq!(Value::String(hash_file(&out)), b3["image_hash"]);
    assert_eq!(integrity(&out), "ok");
    let verify = g
        .ps(&url)
        .args(["--json", "verify", "--read-data"])
        .output()
        .unwrap();
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // And back: S3 to a fresh local store.
    let back = Fx::new();
    let r = ok_json(g.ps(&url).args(["--json", "copy", "--to"]).arg(&back.store));
    assert_eq!(r["copied"], 3, "{r}");
    let out = back.path("back.db");
    back.restore(&["latest"], &out);
    assert_eq!(Value::String(hash_file(&out)), b3["image_hash"]);
    drop(conn);
}
