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
    /// This test's metadata cache (`PAGESNAP_CACHE_DIR`), apart from the user's.
    cache: tempfile::TempDir,
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
    let cache = tempfile::tempdir().expect("a temporary cache folder");
    Some(Garage {
        vars,
        bucket,
        cache,
    })
}

impl Garage {
    /// A fresh store URL in the test bucket.
    fn url(&self, test: &str) -> String {
        format!("s3://{}/{}", self.bucket, unique(test))
    }

    /// The binary with this server's environment, pointed at `url`.
    fn ps(&self, url: &str) -> Command {
        Command::from_std(self.std_cmd(url))
    }

    /// [`Garage::ps`] as a `std` command, for tests that spawn it.
    fn std_cmd(&self, url: &str) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin!("pagesnap"));
        for v in AWS_VARS {
            c.env_remove(v);
        }
        c.env_remove("PAGESNAP_STORE")
            .env_remove("PAGESNAP_NO_CACHE")
            .envs(self.vars.iter().filter(|(k, _)| k.starts_with("AWS_")))
            .env("PAGESNAP_CACHE_DIR", self.cache.path())
            .arg("--store")
            .arg(url);
        c
    }

    fn settings(&self) -> S3Settings {
        S3Settings {
            access_key_id: Some(self.vars["AWS_ACCESS_KEY_ID"].clone()),
            secret_access_key: Some(self.vars["AWS_SECRET_ACCESS_KEY"].clone()),
            region: Some(self.vars["AWS_REGION"].clone()),
            endpoint: Some(self.vars["AWS_ENDPOINT_URL"].clone()),
            ..S3Settings::default()
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
    // Three objects written (one a pack); the refused create and the invalid
    // keys sent no PUT.
    assert!(
        n.put == 2 && n.get >= 4 && n.list >= 3 && n.head >= 3 && n.delete == 2,
        "{n:?}"
    );
    assert_eq!(n.pack_put, 1, "{n:?}");
    assert_eq!(
        n.total(),
        n.put + n.pack_put + n.get + n.list + n.head + n.delete
    );
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

/// The `requests` member of a `--json` document: the first (only) store's counts.
fn requests(v: &serde_json::Value) -> (u64, u64, u64, u64) {
    let r = &v["requests"][0];
    let n = |k: &str| {
        r[k].as_u64()
            .unwrap_or_else(|| panic!("no requests.{k} in {v}"))
    };
    // (requests besides pack uploads, pack uploads, gets, reads from the cache)
    (
        n("total") - n("pack_put"),
        n("pack_put"),
        n("get"),
        n("cached"),
    )
}

#[test]
fn s3_incremental_backup_request_budget_and_cache() {
    let Some(g) = garage() else { return };
    let url = g.url("budget");
    let dir = tempfile::tempdir().unwrap();
    ok(g.ps(&url).arg("init"));
    let db = dir.path().join("app.db");
    let conn = create_db(&db, Journal::Wal, 4000, 11);
    ok(g.ps(&url).arg("backup").arg(&db).args(["--time", &t(0)]));
    // Rows changed for `round`, then a backup at minute 10·round.
    let step = |round| {
        mutate(&conn, round);
        ok_json(
            g.ps(&url)
                .args(["--json", "backup"])
                .arg(&db)
                .args(["--time", &t(10 * round as u32)]),
        )
    };
    let mut last = serde_json::Value::Null;
    for round in 1..=3 {
        let b = step(round);
        let (meta, packs, _, cached) = requests(&b);
        // Users pay per request: beyond its packs, an incremental backup costs
        // config and the marker (gets), its lock (put, list, delete), and its
        // index object, page map, manifest and a new marker (puts). Which packs
        // and index objects exist comes from this machine's record of its last
        // listing (the marker is unchanged): no listing but the locks'.
        assert!(meta <= 9, "backup {round} sent {meta} requests: {b}");
        assert_eq!(b["requests"][0]["list"], 1, "{b}");
        assert_eq!(b["store_listed"], false, "{b}");
        assert!(packs >= 1, "{b}");
        assert!(
            cached >= 2,
            "the parent's manifest and map come from the cache: {b}"
        );
        assert!(b["new_chunks"].as_u64().unwrap() > 0, "{b}");
        last = b;
    }

    // Listing metadata comes from the cache after the first read, and deleting
    // the cache changes no result, only the requests.
    let strip = |mut v: serde_json::Value| {
        v.as_object_mut().unwrap().remove("requests");
        v
    };
    let first = ok_json(g.ps(&url).args(["--json", "stats"]));
    let second = ok_json(g.ps(&url).args(["--json", "stats"]));
    let (_, _, gets, cached) = requests(&second);
    assert_eq!(gets, 1, "only `config` is read from the store: {second}");
    assert!(cached >= 8, "{second}");
    std::fs::remove_dir_all(g.cache.path()).unwrap();
    let third = ok_json(g.ps(&url).args(["--json", "stats"]));
    let (_, _, gets3, _) = requests(&third);
    assert!(gets3 > 4, "{third}");
    let fourth = ok_json(g.ps(&url).args(["--no-cache", "--json", "stats"]));
    let (_, _, gets4, cached4) = requests(&fourth);
    assert!(gets4 > 4 && cached4 == 0, "{fourth}");
    let first = strip(first);
    assert_eq!(first, strip(second));
    assert_eq!(first, strip(third));
    assert_eq!(first, strip(fourth));

    // Text output names the requests on stderr; stats prints them itself.
    let out = g.ps(&url).arg("snapshots").output().unwrap();
    assert!(out.status.success());
    assert_has(
        &String::from_utf8_lossy(&out.stderr),
        &[&url, "requests (get", "reads from the local cache"],
    );
    let stats = String::from_utf8(ok(g.ps(&url).arg("stats"))).unwrap();
    assert_has(&stats, &["requests to", &url]);

    // A cached copy that was damaged locally is fetched again, not trusted.
    let cached_manifests: Vec<_> = walk(g.cache.path())
        .into_iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("snapshots")))
        .collect();
    assert_eq!(cached_manifests.len(), 4, "{cached_manifests:?}");
    for p in &cached_manifests {
        std::fs::write(p, b"damaged").unwrap();
    }
    let after = strip(ok_json(g.ps(&url).args(["--json", "stats"])));
    assert_eq!(first, after);
    let out = dir.path().join("latest.db");
    let reference = reference_copy(&db, &dir.path().join("ref.db"));
    ok(g.ps(&url).args(["restore", "latest", "-o"]).arg(&out));
    assert_restored(&out, &last["image_hash"], &reference);

    // gc (forget + prune) on S3; the cache follows (forgotten manifests leave it).
    let gc = ok_json(g.ps(&url).args(["--json", "gc", "--keep-last", "2"]));
    assert_eq!(gc["forget"]["removed"], 2, "{gc}");
    let v = ok_json(g.ps(&url).args(["--json", "verify", "--read-data"]));
    assert_eq!(v["healthy"], true, "{v}");
    let stats = strip(ok_json(g.ps(&url).args(["--json", "stats"])));
    assert_eq!(stats["snapshots"], 2, "{stats}");
    let manifests_cached = walk(g.cache.path())
        .into_iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("snapshots")))
        .count();
    assert_eq!(manifests_cached, 2);
    let again = dir.path().join("again.db");
    ok(g.ps(&url).args(["restore", "latest", "-o"]).arg(&again));
    assert_restored(&again, &last["image_hash"], &reference);

    // A prune that deletes packs deletes the marker: the next backup lists
    // the store in full, the one after is back to the record.
    ok(g.ps(&url).args(["forget", "--keep-last", "1"]));
    let p = ok_json(g.ps(&url).args(["--json", "prune", "--max-unused", "0%"]));
    assert!(
        p["packs_deleted"].as_u64().unwrap() + p["packs_rewritten"].as_u64().unwrap() > 0,
        "{p}"
    );
    for (round, listed) in [(4, true), (5, false)] {
        let b = step(round);
        assert_eq!(b["store_listed"], listed, "backup {round}: {b}");
        last = b;
    }
    let newest = dir.path().join("newest.db");
    let reference = reference_copy(&db, &dir.path().join("ref-newest.db"));
    ok(g.ps(&url).args(["restore", "latest", "-o"]).arg(&newest));
    assert_restored(&newest, &last["image_hash"], &reference);
    drop(conn);
}

fn walk(root: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn s3_large_objects_go_in_parts() {
    let Some(g) = garage() else { return };
    let url = S3Url::parse(&g.url("multipart")).unwrap();
    let b = S3Backend::with_settings(url, &g.settings()).unwrap();
    let mut x = 0x9e3779b97f4a7c15u64;
    let data: Vec<u8> = (0..(30usize << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    b.put("packs/ab/big", &data, PutMode::Overwrite).unwrap();
    let n = b.requests();
    // Create, four parts of 8 MiB (the last one 6 MiB), complete.
    assert_eq!(n.pack_put, 6, "{n:?}");
    assert_eq!(n.put, 0, "{n:?}");
    assert_eq!(b.size("packs/ab/big").unwrap(), Some(data.len() as u64));
    let back = b.get("packs/ab/big").unwrap();
    assert!(back == data, "the object read back differs");
    assert_eq!(
        b.get_range("packs/ab/big", (9 << 20)..(9 << 20) + 5)
            .unwrap(),
        &data[9 << 20..(9 << 20) + 5]
    );
    // A buffer given away is sent as it is (parts are slices of it) and kept:
    // nothing comes back to reuse.
    let back = b
        .put_vec("packs/ab/given", data.clone(), PutMode::Overwrite)
        .unwrap();
    assert!(back.is_none());
    assert_eq!(b.requests().pack_put, 12);
    assert!(
        b.get("packs/ab/given").unwrap() == data,
        "the given object read back differs"
    );
    let small = data[..1000].to_vec();
    assert!(b
        .put_vec("maps/given", small.clone(), PutMode::Overwrite)
        .unwrap()
        .is_none());
    assert_eq!(b.requests().put, 1);
    assert_eq!(b.get("maps/given").unwrap(), small);
}

/// A Garage server of this test's own (the shared one must not be killed under
/// the other tests), in `dir`, on free ports.
struct OwnGarage {
    dir: PathBuf,
    env_file: PathBuf,
    s3_port: u16,
    rpc_port: u16,
}

impl OwnGarage {
    /// `scripts/garage.sh ACTION` for this server.
    fn script_cmd(&self, action: &str) -> std::process::Command {
        let mut c = std::process::Command::new("bash");
        c.arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/garage.sh"))
            .arg(action)
            .env("GARAGE_DIR", &self.dir)
            .env("GARAGE_ENV", &self.env_file)
            .env("GARAGE_S3_PORT", self.s3_port.to_string())
            .env("GARAGE_RPC_PORT", self.rpc_port.to_string());
        c
    }

    fn script(&self, action: &str) {
        let out = self
            .script_cmd(action)
            .output()
            .expect("run scripts/garage.sh");
        assert!(
            out.status.success(),
            "garage.sh {action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pid(&self) -> i32 {
        std::fs::read_to_string(self.dir.join("garage.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn kill(&self) {
        let pid = self.pid();
        let st = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        // Until the process is gone (the restart needs its ports).
        for _ in 0..100 {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Bytes the server holds on disk (its data and metadata).
    fn disk_bytes(&self) -> u64 {
        walk(&self.dir)
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
}

impl Drop for OwnGarage {
    fn drop(&mut self) {
        let _ = self.script_cmd("stop").output();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A database of `mib` MiB of incompressible rows: every backup of a new one
/// uploads about that much.
fn random_db(path: &std::path::Path, mib: usize, seed: u64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(b BLOB);")
        .unwrap();
    let mut x = seed | 1;
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut ins = tx.prepare("INSERT INTO t VALUES (?1)").unwrap();
        for _ in 0..mib * 1024 / 3 {
            let row: Vec<u8> = (0..3000)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            ins.execute([row]).unwrap();
        }
    }
    tx.commit().unwrap();
}

#[test]
fn s3_server_killed_mid_upload() {
    // Needs garage (the shared server shows it is installed); runs its own.
    let Some(shared) = garage() else { return };
    let dir = tempfile::tempdir().unwrap();
    let own = OwnGarage {
        dir: dir.path().join("garage"),
        env_file: dir.path().join("garage.env"),
        s3_port: free_port(),
        rpc_port: free_port(),
    };
    own.script("start");
    let text = std::fs::read_to_string(&own.env_file).unwrap();
    let vars: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let g = Garage {
        bucket: vars["PAGESNAP_TEST_BUCKET"].clone(),
        vars,
        cache: tempfile::tempdir().unwrap(),
    };
    drop(shared);
    let url = g.url("killed");
    // Short retries: the server stays down until the command gives up.
    let quick = |url: &str| {
        let mut c = g.std_cmd(url);
        c.env("PAGESNAP_S3_RETRIES", "2")
            .env("PAGESNAP_S3_RETRY_TIMEOUT", "2")
            .env("PAGESNAP_S3_TIMEOUT", "20");
        c
    };
    let ps = |url: &str| Command::from_std(quick(url));
    ok(ps(&url).arg("init"));
    let small = dir.path().join("small.db");
    let conn = create_db(&small, Journal::Wal, 1000, 5);
    let ref1 = reference_copy(&small, &dir.path().join("ref1.db"));
    let b1 = ok_json(ps(&url).args(["--json", "backup"]).arg(&small));
    drop(conn);

    // A backup that uploads ~96 MiB (6 packs); the server dies once the upload
    // is under way.
    let big = dir.path().join("big.db");
    random_db(&big, 96, 42);
    let before = own.disk_bytes();
    let child = quick(&url)
        .arg("backup")
        .arg(&big)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while own.disk_bytes() < before + (4 << 20) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "the backup uploaded nothing in 2 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    own.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "the backup failed: {stderr}");
    assert_has(&stderr, &["pagesnap: error:", &url]);

    own.script("restart");
    // Only the published snapshot exists, and it restores byte-exactly.
    let snaps = ok_json(ps(&url).args(["--json", "snapshots"]));
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["id"], b1["id"]);
    let out1 = dir.path().join("out1.db");
    ok(ps(&url).args(["restore", "latest", "-o"]).arg(&out1));
    assert_restored(&out1, &b1["image_hash"], &ref1);
    let verify = ps(&url).args(["verify", "--read-data"]).output().unwrap();
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // The next backup succeeds; prune removes what the failed one left.
    let ref2 = reference_copy(&big, &dir.path().join("ref2.db"));
    let b2 = ok_json(ps(&url).args(["--json", "backup"]).arg(&big));
    let out2 = dir.path().join("out2.db");
    ok(ps(&url)
        .args(["restore", "latest", "--name", "big", "-o"])
        .arg(&out2));
    assert_restored(&out2, &b2["image_hash"], &ref2);
    // The killed backup could not delete its lock: prune (exclusive) names it,
    // `unlock` removes it (its process is gone), then prune removes the orphans.
    let err = fails(ps(&url).args(["prune", "--max-unused", "0"]));
    assert_has(&err, &[&url, "stale", "pagesnap unlock"]);
    ok(ps(&url).arg("unlock"));
    let pruned = ok_json(ps(&url).args(["--json", "prune", "--max-unused", "0"]));
    // (Whether the killed upload left a pack depends on when it died: an
    // unfinished PUT leaves nothing, a finished one an unindexed pack.)
    assert_eq!(pruned["missing_chunks"], 0, "{pruned}");
    assert_eq!(pruned["snapshots"], 2, "{pruned}");
    let verify = ps(&url).args(["verify", "--read-data"]).output().unwrap();
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    ok(ps(&url)
        .args(["restore", b1["short_id"].as_str().unwrap(), "-o"])
        .arg(dir.path().join("out3.db")));
}

#[test]
fn s3_local_store_uploaded_file_by_file_opens_as_is() {
    // What `rclone copy STORE s3:bucket/prefix` does: every file becomes the
    // object of the same relative key. The format is the same on both.
    let Some(g) = garage() else { return };
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("store");
    ok(ps(&local).arg("init"));
    let db = dir.path().join("app.db");
    let conn = create_db(&db, Journal::Wal, 1500, 9);
    let b1 = ok_json(ps(&local).args(["--json", "backup"]).arg(&db));
    let ref1 = reference_copy(&db, &dir.path().join("ref1.db"));
    mutate(&conn, 1);
    let b2 = ok_json(ps(&local).args(["--json", "backup"]).arg(&db));
    let ref2 = reference_copy(&db, &dir.path().join("ref2.db"));
    drop(conn);

    let url = g.url("rclone");
    let b = S3Backend::with_settings(S3Url::parse(&url).unwrap(), &g.settings()).unwrap();
    let files = walk(&local);
    assert!(files.len() > 5, "{files:?}");
    for f in files {
        let key = f
            .strip_prefix(&local)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        b.put(&key, &std::fs::read(&f).unwrap(), PutMode::Overwrite)
            .unwrap();
    }
    let local_list = ok_json(ps(&local).args(["--json", "snapshots"]));
    let s3_list = ok_json(g.ps(&url).args(["--json", "snapshots"]));
    assert_eq!(local_list, s3_list);
    for (snap, reference) in [(&b1, &ref1), (&b2, &ref2)] {
        let out = dir
            .path()
            .join(format!("{}.db", snap["short_id"].as_str().unwrap()));
        ok(g.ps(&url)
            .args(["restore", snap["short_id"].as_str().unwrap(), "-o"])
            .arg(&out));
        assert_restored(&out, &snap["image_hash"], reference);
    }
    let v = ok_json(g.ps(&url).args(["--json", "verify", "--read-data"]));
    assert_eq!(v["healthy"], true, "{v}");
    // And it keeps working as an S3 store.
    let db2 = dir.path().join("app.db");
    ok(g.ps(&url).arg("backup").arg(&db2));
}

#[test]
fn s3_watch_backs_up_to_an_s3_store() {
    let Some(g) = garage() else { return };
    let url = g.url("watch");
    let dir = tempfile::tempdir().unwrap();
    ok(g.ps(&url).arg("init"));
    let db = dir.path().join("app.db");
    let conn = create_db(&db, Journal::Wal, 500, 3);
    let log = dir.path().join("watch.log");
    let mut child = g
        .std_cmd(&url)
        .env_remove("NOTIFY_SOCKET")
        .args(["watch", "--every", "1s", "--status-file"])
        .arg(dir.path().join("status.json"))
        .arg(&db)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let count = || {
        ok_json(g.ps(&url).args(["--json", "snapshots"]))
            .as_array()
            .map(|a| a.len())
            .unwrap_or(0)
    };
    let wait_for = |n: usize| {
        let started = std::time::Instant::now();
        while count() < n {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "watch made no snapshot {n}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    wait_for(1);
    mutate(&conn, 1);
    wait_for(2);
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let reference = reference_copy(&db, &dir.path().join("ref.db"));
    let out = dir.path().join("out.db");
    ok(g.ps(&url).args(["restore", "latest", "-o"]).arg(&out));
    assert_eq!(hash_file(&out), reference);
    assert_eq!(integrity(&out), "ok");
    drop(conn);
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

/// A store made with `--deltas` on S3: the bases of its deltas come from this
/// machine's base cache, so an incremental backup stores deltas and still
/// costs no more requests than the budget (no pack is read); every snapshot
/// restores byte for byte. With `--base-cache 0` the chunks are stored whole.
#[test]
fn s3_deltas_from_the_base_cache_within_the_request_budget() {
    let Some(g) = garage() else { return };
    let url = g.url("deltas-budget");
    let dir = tempfile::tempdir().unwrap();
    ok(g.ps(&url).args(["init", "--deltas"]));
    let db = dir.path().join("app.db");
    let conn = create_db(&db, Journal::Wal, 4000, 11);
    let mut copies = Vec::new();
    for round in 0..4u32 {
        if round > 0 {
            mutate(&conn, round as u64);
        }
        let b = ok_json(
            g.ps(&url)
                .args(["--json", "backup"])
                .arg(&db)
                .args(["--time", &t(10 * round)]),
        );
        if round > 0 {
            let (meta, _, _, _) = requests(&b);
            assert!(meta <= 10, "backup {round} sent {meta} requests: {b}");
            assert!(b["delta_chunks"].as_u64().unwrap() > 0, "{b}");
        }
        let reference = reference_copy(&db, &dir.path().join(format!("ref{round}.db")));
        copies.push((b["id"].as_str().unwrap().to_string(), reference));
    }
    let bases: Vec<_> = walk(g.cache.path())
        .into_iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("bases")))
        .collect();
    assert!(
        !bases.is_empty(),
        "no base cache under {:?}",
        g.cache.path()
    );
    for (id, reference) in &copies {
        let out = dir.path().join(format!("restored-{id}.db"));
        ok(g.ps(&url).arg("restore").arg(id).arg("-o").arg(&out));
        assert_eq!(&hash_file(&out), reference);
        assert_eq!(integrity(&out), "ok");
    }
    mutate(&conn, 9);
    let b = ok_json(
        g.ps(&url)
            .args(["--json", "backup", "--base-cache", "0"])
            .arg(&db)
            .args(["--time", &t(100)]),
    );
    assert_eq!(b["delta_chunks"], 0, "{b}");
    ok(g.ps(&url).args(["verify", "--read-data"]));
}

/// `copy` from a local store with deltas into a store with deltas on S3
/// carries the deltas as they are (their bases went with earlier snapshots):
/// the bucket holds as many deltas as the source, every snapshot restores byte
/// for byte from it, `verify --read-data` decodes every chain there, and a
/// backup made on S3 afterwards continues from the copied history.
#[test]
fn s3_copy_carries_deltas_into_a_store_with_deltas() {
    let Some(g) = garage() else { return };
    let url = g.url("copy-deltas");
    ok(g.ps(&url).args(["init", "--deltas"]));
    let local = Fx::uninit();
    ok(local.cmd().args(["init", "--deltas"]));
    let db = local.path("app.db");
    let conn = create_db(&db, Journal::Wal, 3000, 31);
    let mut copies = Vec::new();
    for round in 0..4u32 {
        if round > 0 {
            mutate(&conn, round as u64);
        }
        let b = local.backup(&db, &["--time", &t(10 * round)]);
        let reference = reference_copy(&db, &local.path(&format!("ref{round}.db")));
        copies.push((b["image_hash"].clone(), reference));
    }
    let deltas = |stats: &Value| stats["deltas"]["chunks"].as_u64().unwrap();
    let source = ok_json(local.cmd().args(["--json", "stats"]));
    assert!(deltas(&source) > 0, "{source}");

    let r = ok_json(
        g.ps(&url)
            .args(["--json", "copy", "--from"])
            .arg(&local.store),
    );
    assert_eq!(r["copied"], 4, "{r}");
    let there = ok_json(g.ps(&url).args(["--json", "stats"]));
    assert_eq!(deltas(&there), deltas(&source), "{there}");
    let snaps = ok_json(g.ps(&url).args(["--json", "snapshots"]));
    for s in snaps.as_array().unwrap() {
        let (_, reference) = copies.iter().find(|(h, _)| *h == s["image_hash"]).unwrap();
        let out = local.path(&format!("from-s3-{}.db", s["short_id"].as_str().unwrap()));
        ok(g.ps(&url)
            .args(["restore", s["id"].as_str().unwrap(), "-o"])
            .arg(&out));
        assert_eq!(&hash_file(&out), reference);
        assert_eq!(integrity(&out), "ok");
    }
    ok(g.ps(&url).args(["verify", "--read-data"]));

    mutate(&conn, 9);
    let b = ok_json(
        g.ps(&url)
            .args(["--json", "backup"])
            .arg(&db)
            .args(["--time", &t(100)]),
    );
    let out = local.path("after.db");
    ok(g.ps(&url).args(["restore", "latest", "-o"]).arg(&out));
    assert_eq!(Value::String(hash_file(&out)), b["image_hash"]);
    ok(g.ps(&url).args(["verify", "--read-data"]));
    drop(conn);
}

/// An encrypted store on Garage (issue #28): backups with deltas stay within
/// the request budget, every snapshot restores byte for byte, `verify
/// --read-data` authenticates every object, and no object in the bucket holds
/// the marker written into the database.
#[test]
fn s3_encrypted_store_round_trips_within_the_request_budget() {
    let Some(g) = garage() else { return };
    let url = g.url("encrypted");
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "garage passphrase\n").unwrap();
    let enc = |c: &mut Command| {
        c.env("PAGESNAP_PASSWORD_FILE", &pass)
            .env("PAGESNAP_TEST_CHEAP_KDF", "1");
    };
    let mut init = g.ps(&url);
    enc(&mut init);
    let v = ok_json(init.args(["--json", "init", "--encrypt", "--deltas"]));
    assert_eq!(v["format_version"], 3, "{v}");
    let db = dir.path().join("app.db");
    let conn = create_db(&db, Journal::Wal, 3000, 17);
    conn.execute_batch("CREATE TABLE s(v TEXT); INSERT INTO s VALUES ('S3-MARKER-91c2');")
        .unwrap();
    let mut copies = Vec::new();
    for round in 0..3u32 {
        if round > 0 {
            mutate(&conn, round as u64);
        }
        let mut c = g.ps(&url);
        enc(&mut c);
        let b = ok_json(
            c.args(["--json", "backup"])
                .arg(&db)
                .args(["--time", &t(10 * round)]),
        );
        if round > 0 {
            let (meta, _, _, _) = requests(&b);
            assert!(meta <= 10, "backup {round} sent {meta} requests: {b}");
            assert!(b["delta_chunks"].as_u64().unwrap() > 0, "{b}");
        }
        let reference = reference_copy(&db, &dir.path().join(format!("ref{round}.db")));
        copies.push((b["id"].as_str().unwrap().to_string(), reference));
    }
    for (id, reference) in &copies {
        let out = dir.path().join(format!("restored-{id}.db"));
        let mut c = g.ps(&url);
        enc(&mut c);
        ok(c.arg("restore").arg(id).arg("-o").arg(&out));
        assert_eq!(&hash_file(&out), reference);
        assert_eq!(integrity(&out), "ok");
    }
    let mut c = g.ps(&url);
    enc(&mut c);
    ok(c.args(["verify", "--read-data"]));
    // Every object in the bucket under this store's prefix, read raw.
    let raw = S3Backend::with_settings(S3Url::parse(&url).unwrap(), &g.settings()).unwrap();
    let objects = raw.list("").unwrap();
    assert!(objects.iter().any(|o| o.key.starts_with("packs/")));
    for o in objects {
        let bytes = raw.get(&o.key).unwrap();
        assert!(
            !bytes.windows(14).any(|w| w == b"S3-MARKER-91c2"),
            "{} holds the marker",
            o.key
        );
    }
    // Without the passphrase: one line, exit 1.
    let e = fails(
        g.ps(&url)
            .env("PAGESNAP_PASSWORD", "wrong")
            .arg("snapshots"),
    );
    assert!(e.contains("wrong passphrase"), "{e}");
}

/// The requests `pagesnap` reported on stderr in text mode: `N requests (get G, …)`.
fn requests_of_stderr(stderr: &str) -> u64 {
    let at = stderr
        .find(" requests (get")
        .unwrap_or_else(|| panic!("no request count in {stderr}"));
    let digits: String = stderr[..at]
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().unwrap()
}

/// A snapshot on Garage queried in place (issue #29): a primary-key lookup
/// answers as the restored snapshot does within 10 requests (the metadata
/// cache warm, as after any first command on a machine), `ls` and `diff` work,
/// and a query reads far less than the snapshot holds.
#[test]
fn s3_query_in_place_within_the_request_budget() {
    let Some(g) = garage() else { return };
    let url = g.url("query");
    let dir = tempfile::tempdir().unwrap();
    ok(g.ps(&url).arg("init"));
    let db = dir.path().join("app.db");
    let conn = create_db(&db, Journal::Wal, 20_000, 5);
    ok(g.ps(&url).arg("backup").arg(&db).args(["--time", &t(0)]));
    mutate(&conn, 1);
    ok(g.ps(&url).arg("backup").arg(&db).args(["--time", &t(10)]));
    let restored = dir.path().join("r.db");
    ok(g.ps(&url).args(["restore", "latest", "-o"]).arg(&restored));
    let file = rusqlite::Connection::open(&restored).unwrap();
    for id in [17, 9_000, 19_999] {
        let sql = format!("SELECT id, name, n FROM items WHERE id = {id}");
        let (stdout, stderr) = ok_output(g.ps(&url).args(["sql", "latest", "--csv", &sql]));
        let want: String = file
            .query_row(&sql, [], |r| {
                Ok(format!(
                    "{},{},{}",
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?
                ))
            })
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&stdout),
            format!("id,name,n\n{want}\n")
        );
        let n = requests_of_stderr(&stderr);
        assert!(n <= 10, "a lookup sent {n} requests: {stderr}");
    }
    let ls = ok_json(g.ps(&url).args(["--json", "ls", "latest"]));
    assert!(
        ls["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["name"] == "items"),
        "{ls}"
    );
    let snaps = ok_json(g.ps(&url).args(["--json", "snapshots"]));
    let (a, b) = (
        snaps[0]["id"].as_str().unwrap(),
        snaps[1]["id"].as_str().unwrap(),
    );
    let d = ok_json(g.ps(&url).args(["--json", "diff", a, b]));
    assert!(
        d["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["name"] == "items"),
        "{d}"
    );
}
