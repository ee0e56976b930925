use super::{open_store, print_json, EXIT_DAMAGE};
use crate::cli::{Global, RestoreArgs};
use crate::output;
use anyhow::{anyhow, Result};
use pagesnap_core::types::to_hex;
use pagesnap_core::{PageOwner, RestoreReport, SalvageReport, Snapshot};
use serde_json::json;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::ExitCode;

pub fn run(g: &Global, a: &RestoreArgs) -> Result<ExitCode> {
    let selector = super::selector(a.snapshot.as_deref(), a.name.as_deref(), a.at.as_deref())?;
    let to_stdout = a.output == Path::new("-");
    if to_stdout && g.json {
        return Err(usage!(
            "--json cannot be combined with -o - (stdout carries the database image)"
        ));
    }
    if to_stdout && a.salvage {
        return Err(usage!(
            "--salvage writes a file (it lists what it lost afterwards): give -o FILE, not -o -"
        ));
    }
    let (store, bar) = crate::progress::attach(open_store(g)?, g, "restore");
    let snap = store.select_reporting(&selector, |d| {
        eprintln!(
            "pagesnap: warning: skipping unreadable snapshot: {}",
            d.error
        );
    })?;
    if a.salvage {
        let r = store
            .salvage_to_path(&snap, &a.output, a.force, !a.no_fsync)
            .map_err(|e| output_full(e, &a.output, snap.manifest.image_len))?;
        bar.finish();
        return salvaged(g, a, &snap, &r);
    }
    let report = if to_stdout {
        // The image goes to stdout's file descriptor directly: `Stdout` is line
        // buffered, and would search every window for its last newline and split
        // the writes there. The lock keeps anything else off stdout meanwhile.
        let stdout = std::io::stdout();
        let lock = stdout.lock();
        let mut out = std::fs::File::from(lock.as_fd().try_clone_to_owned()?);
        store.restore_to_writer(&snap, &mut out)?
    } else {
        store
            .restore_to_path_with(&snap, &a.output, a.force, !a.no_fsync)
            .map_err(|e| output_full(e, &a.output, snap.manifest.image_len))?
    };
    bar.finish();
    removed_temporaries(&report.removed_temporaries);
    if g.json {
        print_json(&restored_json(a, &snap, &report))?;
    } else if !to_stdout {
        println!(
            "restored snapshot {} of {} ({}, blake3 {}) to {}",
            snap.id.short(),
            snap.manifest.name,
            output::bytes(report.image_len),
            &to_hex(&report.image_hash)[..16],
            a.output.display()
        );
    } else {
        eprintln!(
            "restored snapshot {} ({}) to stdout",
            snap.id.short(),
            output::bytes(report.image_len)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The `--json` document of a restore (`restore --salvage` adds its members).
fn restored_json(a: &RestoreArgs, snap: &Snapshot, report: &RestoreReport) -> serde_json::Value {
    json!({
        "id": snap.id.to_hex(),
        "short_id": snap.id.short(),
        "name": snap.manifest.name,
        "output": a.output,
        "bytes": report.image_len,
        "image_hash": to_hex(&report.image_hash),
        // What the written bytes were checked against (docs/FORMAT.md,
        // "Image check"): snapshots from before the check have only the hash.
        "checked_against": if snap.manifest.image_check.is_some() { "image_check" } else { "image_hash" },
        "duration_secs": report.duration.as_secs_f64(),
    })
}

/// Temporary files of killed restores removed from the output's folder, said on stderr.
fn removed_temporaries(paths: &[std::path::PathBuf]) {
    for p in paths {
        eprintln!(
            "pagesnap: removed {}, left by a restore that was killed",
            p.display()
        );
    }
}

/// The report of `restore --salvage`: exit 0 when the file is the snapshot's
/// image byte for byte, else 3 with the lost pages listed.
fn salvaged(g: &Global, a: &RestoreArgs, snap: &Snapshot, r: &SalvageReport) -> Result<ExitCode> {
    removed_temporaries(&r.restore.removed_temporaries);
    let exact = r.is_exact();
    if g.json {
        let mut v = restored_json(a, snap, &r.restore);
        let salvage = json!({
            "salvaged": !exact,
            "image_matches": r.image_matches,
            "lost_chunks": r.lost.iter().map(|l| json!({
                "position": l.position,
                "first_page": l.first_page,
                "last_page": l.last_page,
                "chunk": l.chunk.to_hex(),
                "object": l.object,
                "problem": l.problem,
            })).collect::<Vec<_>>(),
            "lost_pages": r.pages.iter().map(|p| json!({
                "page": p.page,
                "chunk": p.chunk.to_hex(),
                "owner": owner_json(&p.owner),
            })).collect::<Vec<_>>(),
        });
        if let (Some(all), serde_json::Value::Object(salvage)) = (v.as_object_mut(), salvage) {
            all.extend(salvage);
        }
        print_json(&v)?;
    } else if exact {
        println!(
            "restored snapshot {} of {} ({}, blake3 {}) to {}: nothing to salvage, every chunk was read",
            snap.id.short(),
            snap.manifest.name,
            output::bytes(r.restore.image_len),
            &to_hex(&r.restore.image_hash)[..16],
            a.output.display()
        );
    } else {
        println!(
            "salvaged snapshot {} of {} to {}: {} chunk(s) could not be read and were written as zeros ({} page(s))",
            snap.id.short(),
            snap.manifest.name,
            a.output.display(),
            r.lost.len(),
            r.pages.len()
        );
        for l in &r.lost {
            let pages = if l.first_page == l.last_page {
                format!("page {}", l.first_page)
            } else {
                format!("pages {}-{}", l.first_page, l.last_page)
            };
            let object = l
                .object
                .as_deref()
                .map(|o| format!(" in {o}"))
                .unwrap_or_default();
            println!(
                "  {pages}: chunk {}{object}: {}",
                l.chunk.to_hex(),
                l.problem
            );
        }
        println!("lost pages and what they belonged to:");
        for p in &r.pages {
            println!("  page {}: {}", p.page, p.owner);
        }
        if r.lost.is_empty() {
            println!(
                "every chunk matches its id, yet the image does not match its recorded check: \
                 a page map or index object names the wrong chunks (see `pagesnap verify --read-data`)"
            );
        }
        println!(
            "the file is not the snapshot's image: check it (PRAGMA integrity_check) and copy out what you need"
        );
    }
    Ok(if exact {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DAMAGE)
    })
}

fn owner_json(o: &PageOwner) -> serde_json::Value {
    match o {
        PageOwner::Table(t) => json!({"kind": "table", "name": t}),
        PageOwner::Index { name, table } => json!({"kind": "index", "name": name, "table": table}),
        PageOwner::Schema => json!({"kind": "schema", "name": "sqlite_schema"}),
        PageOwner::FreeList => json!({"kind": "freelist"}),
        PageOwner::PointerMap => json!({"kind": "pointer-map"}),
        PageOwner::LockByte => json!({"kind": "lock-byte"}),
        PageOwner::Unknown(why) => json!({"kind": "unknown", "why": why}),
    }
}

/// A full disk under the output is said as such, naming the output (the I/O error
/// alone may name the temporary file beside it, which is gone by now).
fn output_full(e: pagesnap_core::Error, out: &Path, bytes: u64) -> anyhow::Error {
    let full = matches!(&e, pagesnap_core::Error::Io { source, .. }
        if source.kind() == std::io::ErrorKind::StorageFull || source.raw_os_error() == Some(28));
    if !full {
        return e.into();
    }
    anyhow!(
        "{}: cannot restore: the disk is full (no space left on device): the database needs {} \
         ({bytes} bytes); nothing was written",
        out.display(),
        output::bytes(bytes)
    )
}
