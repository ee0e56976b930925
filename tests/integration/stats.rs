//! `pagesnap stats`: figures checked against stores of known content.

use crate::util::*;
use serde_json::Value;
use std::path::Path;

fn stats(fx: &Fx, args: &[&str]) -> Value {
    ok_json(fx.cmd().args(["--json", "stats"]).args(args))
}

fn dir_bytes(root: &Path) -> u64 {
    files_under(root)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

#[test]
fn two_identical_databases_dedup_two_to_one() {
    let fx = Fx::new();
    let a = small_db(&fx, "a.db", 7);
    let b = fx.path("b.db");
    std::fs::copy(&a, &b).unwrap();
    let first = fx.backup(&a, &["--time", &t(0)]);
    let second = fx.backup(&b, &["--time", &t(10)]);
    assert_eq!(first["image_hash"], second["image_hash"]);
    assert_eq!(second["new_chunks"], 0);

    let s = stats(&fx, &[]);
    assert_eq!(s["snapshots"], 2);
    assert_eq!(s["databases"], serde_json::json!(["a", "b"]));
    let image = first["image_size"].as_u64().unwrap();
    assert_eq!(s["logical_bytes"].as_u64().unwrap(), 2 * image);
    assert_eq!(s["dedup_ratio"].as_f64().unwrap(), 2.0, "{s}");
    assert_eq!(s["unique_raw_bytes"].as_u64().unwrap(), image, "{s}");
    // Stored bytes are exactly the files in the store, split by kind.
    let st = &s["stored_bytes"];
    assert_eq!(st["total"].as_u64().unwrap(), dir_bytes(&fx.store));
    let parts: u64 = ["packs", "index", "manifests", "maps", "other"]
        .iter()
        .map(|k| st[k].as_u64().unwrap())
        .sum();
    assert_eq!(parts, st["total"].as_u64().unwrap());
    let comp = s["compression_ratio"].as_f64().unwrap();
    assert!(comp > 1.0, "text rows compress: {comp}");
    // The second snapshot stored no chunk: it added only its manifest.
    let per = s["per_snapshot"].as_array().unwrap();
    assert_eq!(per.len(), 2);
    assert_eq!(per[1]["new_chunks"], 0);
    assert_eq!(per[1]["new_chunk_bytes"], 0);
    assert!(per[0]["added_bytes"].as_u64().unwrap() > per[1]["added_bytes"].as_u64().unwrap());
    assert_eq!(
        per[1]["cumulative_logical"].as_u64().unwrap(),
        2 * image,
        "{s}"
    );
}

#[test]
fn name_filter_and_per_day_figures() {
    let fx = Fx::new();
    let a = small_db(&fx, "a.db", 1);
    let b = small_db(&fx, "b.db", 2);
    fx.backup(&a, &["--time", "2026-01-01T23:50:00Z"]);
    fx.backup(&a, &["--time", "2026-01-02T00:10:00Z"]);
    fx.backup(&b, &["--time", "2026-01-02T00:20:00Z"]);
    let s = stats(&fx, &["--name", "a"]);
    assert_eq!(s["snapshots"], 2);
    assert_eq!(s["dedup_ratio"].as_f64().unwrap(), 2.0, "{s}");
    let days = s["per_day"].as_array().unwrap();
    assert_eq!(days.len(), 2);
    assert_eq!(days[0]["day"], "2026-01-01");
    assert_eq!(days[1]["snapshots"], 1);
    let per = s["per_snapshot"].as_array().unwrap();
    let mean = s["added_per_snapshot"]["mean"].as_f64().unwrap();
    let sum: u64 = per.iter().map(|p| p["added_bytes"].as_u64().unwrap()).sum();
    assert_eq!(mean, sum as f64 / 2.0);
    assert_eq!(
        s["added_per_snapshot"]["max"].as_u64().unwrap(),
        per.iter()
            .map(|p| p["added_bytes"].as_u64().unwrap())
            .max()
            .unwrap()
    );
}

#[test]
fn plot_is_an_svg_and_human_output_names_the_ratios() {
    let fx = Fx::new();
    let a = small_db(&fx, "a.db", 3);
    fx.backup(&a, &["--time", &t(0)]);
    fx.backup(&a, &["--time", &t(10)]);
    let svg = fx.path("growth.svg");
    let out = ok(fx.cmd().args(["stats", "--plot"]).arg(&svg));
    let text = String::from_utf8(out).unwrap();
    assert_has(
        &text,
        &["dedup ratio", "compression ratio", "added per snapshot"],
    );
    let body = std::fs::read_to_string(&svg).unwrap();
    assert!(body.starts_with("<svg"), "{}", &body[..body.len().min(80)]);
    assert_eq!(body.matches("<polyline").count(), 2);
}

#[test]
fn plot_of_an_empty_store_and_of_one_snapshot() {
    // Degenerate axes (no time span, no bytes) still make a whole SVG.
    let fx = Fx::new();
    let svg = fx.path("empty.svg");
    ok(fx.cmd().args(["stats", "--plot"]).arg(&svg));
    let body = std::fs::read_to_string(&svg).unwrap();
    assert!(body.starts_with("<svg"), "{}", &body[..body.len().min(80)]);
    assert!(body.trim_end().ends_with("</svg>"));

    let a = small_db(&fx, "a.db", 3);
    fx.backup(&a, &["--time", &t(0)]);
    ok(fx.cmd().args(["stats", "--plot"]).arg(&svg));
    let body = std::fs::read_to_string(&svg).unwrap();
    assert_has(
        &body,
        &["logical (sum of images)", "stored (cumulative)", "</svg>"],
    );
    assert_eq!(body.matches("<polyline").count(), 2);
}

#[test]
fn stats_of_a_missing_store_fails_cleanly() {
    let fx = Fx::uninit();
    let err = fails(fx.cmd().arg("stats"));
    assert_has(&err, &["store"]);
}
