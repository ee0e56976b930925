//! `pagesnap bench`: every built-in workload on a tiny database, the JSON shape and
//! its invariants (stored ≥ ideal bound, full copies > ideal), `--plot`, `--keep`,
//! replay of a user's SQL, and bad input leaving nothing behind.

use crate::util::*;
use serde_json::{json, Value};
use std::path::Path;

/// The quick defaults' configurations.
const DEFAULT_CONFIGS: [&str; 4] = ["c1-z3", "c4-z3", "c1-z3-nodict", "c1-z3-deltas"];

/// `--full`'s: docs/BENCHMARKS.md.
const FULL_CONFIGS: [&str; 8] = [
    "c1-z3",
    "c2-z3",
    "c4-z3",
    "c16-z3",
    "c1-z1",
    "c1-z9",
    "c1-z3-nodict",
    "c1-z3-deltas",
];

/// `pagesnap bench ARGS`, with its temporary directory inside `tmp` so a test can
/// check that nothing was left there. The cache directory is `tmp` too: the
/// stores' cache folders (head hints, index cache) must be gone with them.
fn bench(tmp: &Path) -> assert_cmd::Command {
    let mut c = bin();
    c.env("TMPDIR", tmp)
        .env("PAGESNAP_CACHE_DIR", tmp)
        .arg("bench");
    c
}

#[track_caller]
fn assert_empty_dir(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "left behind in {}: {left:?}",
        dir.display()
    );
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Checks the invariants every run must satisfy; returns the config names.
#[track_caller]
fn check_report(v: &Value, steps: usize) -> Vec<String> {
    assert_keys(
        v,
        &[
            "workload",
            "parameters",
            "configs",
            "baselines",
            "notes",
            "verified_snapshots",
            "duration_secs",
            "steps",
        ],
    );
    let full = num(&v["baselines"]["full"]["stored_bytes"]);
    let ideal = num(&v["baselines"]["ideal"]["stored_bytes"]);
    assert!(ideal > 0.0 && full > ideal, "full {full}, ideal {ideal}");
    assert!(
        num(&v["workload"]["pages_changed_mean"]) > 0.0,
        "{}",
        v["workload"]
    );
    let mut names = Vec::new();
    for c in v["configs"].as_array().unwrap() {
        let stored = num(&c["stored_bytes"]);
        // The bound ignores metadata: a store that compresses as the bound does
        // (each page alone, zstd 3, no dictionary) cannot be below it.
        // (Deltas are how a store goes below it.)
        if c["dictionary"] == false && c["zstd_level"] == 3 && c["deltas"] == false {
            assert!(stored >= ideal, "{c}: below the ideal bound {ideal}");
        }
        for k in [
            "ratio_to_full",
            "ratio_to_ideal",
            "bytes_per_snapshot",
            "ratio_to_ideal_per_snapshot",
            "median_backup_secs",
        ] {
            let x = num(&c[k]);
            assert!(x.is_finite() && x > 0.0, "{k} = {x} in {c}");
        }
        // Per snapshot after the first, against the ideal bound's.
        let per =
            num(&c["bytes_per_snapshot"]) / num(&v["baselines"]["ideal"]["bytes_per_snapshot"]);
        assert!(
            (num(&c["ratio_to_ideal_per_snapshot"]) - per).abs() < 1e-9,
            "{c}"
        );
        let key = c["name"].as_str().unwrap();
        assert_eq!(c["dictionary"], !key.ends_with("-nodict"), "{c}");
        let parts = &c["stored"];
        let sum: f64 = ["packs", "index", "maps", "snapshots", "dicts", "other"]
            .iter()
            .map(|k| num(&parts[k]))
            .sum();
        assert_eq!(sum, stored, "{c}");
        names.push(c["name"].as_str().unwrap().to_string());
    }
    let series = v["steps"].as_array().unwrap();
    assert_eq!(
        series.len(),
        steps + 1,
        "the initial snapshot and one per step"
    );
    let last = &series[steps];
    assert_eq!(num(&last["ideal_cumulative"]), ideal);
    assert_eq!(num(&last["full_cumulative"]), full);
    // The delta bound (#27): per chain bound, never above the ideal bound (it may
    // only replace a page's charge by a smaller delta), the sum of its per-step
    // charges, the first snapshot charged as the ideal bound charges it.
    let chains = &v["baselines"]["delta"]["chains"];
    for (key, max) in [
        ("k4", json!(4)),
        ("k8", json!(8)),
        ("k16", json!(16)),
        ("unbounded", Value::Null),
    ] {
        let c = &chains[key];
        assert_eq!(c["max_chain"], max, "{c}");
        let total = num(&c["stored_bytes"]);
        assert!(total > 0.0 && total <= ideal, "{key}: {total} vs {ideal}");
        let r = num(&c["ratio_to_ideal"]);
        assert!((r - total / ideal).abs() < 1e-9, "{c}");
        assert_eq!(
            v["steps"][0]["delta_bytes"][key], v["steps"][0]["ideal_bytes"],
            "{key}"
        );
        assert!(num(&c["keyframes"]) >= 1.0, "{c}");
        let steps_sum: f64 = v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| num(&s["delta_bytes"][key]))
            .sum();
        assert_eq!(steps_sum, total, "{key}");
    }
    for (c, name) in v["configs"].as_array().unwrap().iter().zip(&names) {
        assert_eq!(last["configs"][name]["stored_bytes"], c["stored_bytes"]);
    }
    assert!(v["notes"][0].as_str().unwrap().contains("ideal bound"));
    names
}

fn builtin(workload: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let v = ok_json(bench(tmp.path()).args([
        "--workload",
        workload,
        "--size",
        "4MiB",
        "--steps",
        "6",
        "--json",
        "--verify",
    ]));
    assert_eq!(v["workload"]["name"], workload);
    let size = num(&v["workload"]["initial_size"]);
    assert!((4.0 * 1048576.0..5.0 * 1048576.0).contains(&size), "{size}");
    assert_eq!(v["workload"]["page_size"], 4096);
    assert_eq!(check_report(&v, 6), DEFAULT_CONFIGS);
    assert_eq!(v["verified_snapshots"], 4 * 7);
    assert_empty_dir(tmp.path());
}

#[test]
fn oltp() {
    builtin("oltp");
}

#[test]
fn append() {
    builtin("append");
}

#[test]
fn kv() {
    builtin("kv");
}

#[test]
fn cms() {
    builtin("cms");
}

/// VACUUM runs every 24 steps: 25 steps on a small database include one, which
/// rewrites most pages; every snapshot must still restore.
#[test]
fn vacuum() {
    let tmp = tempfile::tempdir().unwrap();
    let v = ok_json(bench(tmp.path()).args([
        "--workload",
        "vacuum",
        "--size",
        "1MiB",
        "--steps",
        "25",
        "--configs",
        "1,16:3:nodict",
        "--json",
        "--verify",
    ]));
    assert_eq!(v["workload"]["name"], "vacuum");
    check_report(&v, 25);
    assert_eq!(v["verified_snapshots"], 2 * 26);
    let changed = |s: usize| num(&v["steps"][s]["pages_changed"]);
    assert!(
        changed(24) > 3.0 * changed(23),
        "VACUUM at step 24: {}",
        v["steps"][24]
    );
    assert_empty_dir(tmp.path());
}

/// `--full` takes the configurations of docs/BENCHMARKS.md; `--size` and
/// `--steps` still override its day of a 256 MiB database.
#[test]
fn full_uses_the_documented_configurations() {
    let tmp = tempfile::tempdir().unwrap();
    let v =
        ok_json(bench(tmp.path()).args(["--full", "--size", "512KiB", "--steps", "1", "--json"]));
    assert_eq!(check_report(&v, 1), FULL_CONFIGS);
    assert_eq!(v["parameters"]["configs"], serde_json::json!(FULL_CONFIGS));
    assert_eq!(v["parameters"]["size"], 512 * 1024);
    assert_eq!(v["parameters"]["steps"], 1);
    // And the stores' cache folders were removed with the stores.
    assert_empty_dir(tmp.path());
}

#[test]
fn same_seed_same_results() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |seed: &str| {
        let v = ok_json(bench(tmp.path()).args([
            "--workload",
            "kv",
            "--size",
            "1MiB",
            "--steps",
            "2",
            "--configs",
            "1",
            "--seed",
            seed,
            "--json",
        ]));
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["ideal_bytes"].clone(),
                    s["configs"]["c1-z3"]["bytes_added"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run("5"), run("5"));
    assert_ne!(run("5"), run("6"));
}

#[test]
fn table_plot_and_keep() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let svg = out.path().join("cost.svg");
    let kept = out.path().join("kept");
    let text = String::from_utf8(ok(bench(tmp.path())
        .args([
            "--size",
            "1MiB",
            "--steps",
            "3",
            "--configs",
            "1,4:6,1:3:nodict",
            "--plot",
        ])
        .arg(&svg)
        .arg("--keep")
        .arg(&kept)))
    .unwrap();
    assert_has(
        &text,
        &[
            "workload oltp",
            "pages changed per step",
            "× ideal",
            "× ideal/snap",
            "chunk 1 zstd 3",
            "chunk 4 zstd 6",
            "full copies",
            "ideal page-level bound",
            "delta bound",
            "K = 16:",
            "unbounded:",
            "chunk 1 zstd 3 no dict",
        ],
    );
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(
        plot.starts_with("<svg") || plot.starts_with("<?xml"),
        "{}",
        &plot[..80]
    );
    assert_has(
        &plot,
        &[
            "chunk 4 zstd 6",
            "full copies",
            "ideal bound",
            "delta bound (K = 8)",
            "</svg>",
        ],
    );
    // --keep: the final database and a usable store per configuration.
    assert_eq!(integrity(&kept.join("bench.db")), "ok");
    let snaps = ok_json(ps(&kept.join("stores/c4-z6")).args(["--json", "snapshots"]));
    assert_eq!(snaps.as_array().unwrap().len(), 4);
    assert_empty_dir(tmp.path());
}

/// A user's database and script: replayed on a copy, the original untouched.
#[test]
fn replay_db_and_sql() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = Fx::uninit();
    let db = fx.path("app.db");
    drop(create_db(&db, Journal::Wal, 800, 91));
    let sql = fx.path("changes.sql");
    std::fs::write(
        &sql,
        "INSERT INTO items(name, body, n) VALUES ('new', 'row', 1);
         UPDATE items SET n = n + 1 WHERE id % 7 = 0;",
    )
    .unwrap();
    let before = hash_file(&db);
    let keep = fx.path("kept");
    let v = ok_json(
        bench(tmp.path())
            .args([
                "--steps",
                "4",
                "--configs",
                "1,2",
                "--json",
                "--verify",
                "--db",
            ])
            .arg(&db)
            .arg("--sql")
            .arg(&sql)
            .arg("--keep")
            .arg(&keep),
    );
    assert_eq!(v["workload"]["name"], "replay");
    assert_eq!(check_report(&v, 4), ["c1-z3", "c2-z3"]);
    assert_eq!(v["verified_snapshots"], 2 * 5);
    assert_eq!(v["parameters"]["size"], Value::Null);
    assert_eq!(hash_file(&db), before, "the user's database was modified");
    assert_eq!(row_count(&keep.join("bench.db")), 800 + 4);
    assert_empty_dir(tmp.path());
}

#[test]
fn bad_input_fails_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = Fx::uninit();
    let db = small_db(&fx, "app.db", 92);
    let good_sql = fx.path("ok.sql");
    std::fs::write(&good_sql, "UPDATE items SET n = n + 1 WHERE id = 1;").unwrap();
    let bad_sql = fx.path("bad.sql");
    std::fs::write(
        &bad_sql,
        "UPDATE items SET n = 1; INSERT INTO nope VALUES (1);",
    )
    .unwrap();
    let open_sql = fx.path("open.sql");
    std::fs::write(&open_sql, "BEGIN; UPDATE items SET n = 2;").unwrap();
    let missing = fx.path("missing.sql");
    let keep = fx.path("kept");
    let before = hash_file(&db);
    let run = |args: &[&str], db: &Path, sql: &Path| {
        fails(
            bench(tmp.path())
                .args(args)
                .arg("--db")
                .arg(db)
                .arg("--sql")
                .arg(sql)
                .arg("--keep")
                .arg(&keep),
        )
    };

    let err = run(&["--steps", "2"], &db, &missing);
    assert_has(&err, &[&missing.display().to_string(), "cannot read"]);
    let err = run(&["--steps", "2"], &fx.path("nope.db"), &good_sql);
    assert_has(&err, &["nope.db", "no such database file"]);
    let err = run(&["--steps", "2"], &db, &bad_sql);
    assert_has(
        &err,
        &[
            &bad_sql.display().to_string(),
            "step 1",
            "no such table: nope",
        ],
    );
    let err = run(&["--steps", "2"], &db, &open_sql);
    assert_has(&err, &[&open_sql.display().to_string(), "transaction open"]);
    let notdb = fx.path("notes.txt");
    std::fs::write(&notdb, "not a database\n".repeat(100)).unwrap();
    let err = run(&["--steps", "2"], &notdb, &good_sql);
    assert_has(&err, &["notes.txt"]);
    assert!(!keep.exists(), "--keep directory created by a failed run");
    assert_eq!(hash_file(&db), before);

    let err = fails(bench(tmp.path()).args(["--workload", "graph"]));
    assert_has(&err, &["invalid value", "graph"]);
    for size in ["12 parsecs", "MiB", "-1MiB"] {
        let err = fails_usage(bench(tmp.path()).arg(format!("--size={size}")));
        assert_has(&err, &["invalid size", size]);
    }
    let err = fails_usage(bench(tmp.path()).args(["--size", "4KiB"]));
    assert_has(&err, &["too small"]);
    let err = fails_usage(bench(tmp.path()).args(["--configs", "1,3"]));
    assert_has(&err, &["\"3\"", "power of two"]);
    let err = fails_usage(bench(tmp.path()).args(["--steps", "0"]));
    assert_has(&err, &["--steps"]);
    let err = fails(bench(tmp.path()).arg("--db").arg(&db));
    assert_has(&err, &["--sql"]);
    let err = fails(
        bench(tmp.path())
            .arg("--plot")
            .arg(fx.path("no/such/dir/p.svg")),
    );
    assert_has(&err, &["does not exist"]);
    assert_empty_dir(tmp.path());
}
