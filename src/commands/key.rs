//! `pagesnap key list|add|remove|passwd`: an encrypted store's keys. New
//! passphrases come from `--new-password-file` or the terminal (asked twice);
//! the store is opened with the current one (crate::passphrase).

use super::{open_store, print_json};
use crate::cli::{Global, KeyCommand};
use crate::output;
use anyhow::{bail, Result};
use chrono::DateTime;
use pagesnap_core::crypto::KdfParams;
use pagesnap_core::{Error, Id, KeyInfo, Store};
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

fn new_passphrase(file: Option<&Path>) -> Result<pagesnap_core::Passphrase> {
    Ok(crate::passphrase::new(file, false).map_err(Error::Passphrase)?)
}

/// The key `prefix` names among the store's (a unique prefix of its id).
fn find(store: &Store, prefix: &str) -> Result<Id> {
    let prefix = prefix.to_ascii_lowercase();
    let keys = store.keys()?;
    let matching: Vec<&KeyInfo> = keys
        .iter()
        .filter(|k| k.id.to_hex().starts_with(&prefix))
        .collect();
    match matching.as_slice() {
        [one] if !prefix.is_empty() => Ok(one.id),
        [] | [_] => bail!(
            "{}: no key {prefix:?}; `pagesnap key list` shows them",
            store.location()
        ),
        _ => bail!(
            "{}: key id {prefix:?} is ambiguous; give more of it",
            store.location()
        ),
    }
}

fn key_json(k: &KeyInfo) -> serde_json::Value {
    json!({
        "id": k.id.to_hex(),
        "current": k.current,
        "write_only": k.write_only,
        "label": k.label,
        "created": DateTime::from_timestamp(k.created_unix, 0).map(|t| output::time_json(&t)),
        "kdf": {
            "algorithm": "argon2id",
            "memory_kib": k.params.memory_kib,
            "passes": k.params.passes,
            "lanes": k.params.lanes,
        },
    })
}

pub fn run(g: &Global, c: &KeyCommand) -> Result<ExitCode> {
    let mut store = open_store(g)?;
    match c {
        KeyCommand::List => {
            let keys = store.keys()?;
            if g.json {
                print_json(&json!(keys.iter().map(key_json).collect::<Vec<_>>()))?;
            } else {
                println!(
                    "{:<1} {:<16} {:<10} {:<24} created",
                    "", "id", "access", "label"
                );
                for k in &keys {
                    let created = DateTime::from_timestamp(k.created_unix, 0)
                        .map(|t| output::time(&t))
                        .unwrap_or_default();
                    println!(
                        "{:<1} {:<16} {:<10} {:<24} {created}",
                        if k.current { "*" } else { "" },
                        k.id.short(),
                        if k.write_only { "write-only" } else { "read" },
                        k.label,
                    );
                }
            }
        }
        KeyCommand::Add(a) => {
            // Refused before a passphrase is asked for.
            store.can_manage_keys()?;
            let pass = new_passphrase(a.new_password_file.as_deref())?;
            let id = store.add_key(&pass, KdfParams::for_new_key()?, a.write_only)?;
            done(g, "added", &id, a.write_only)?;
        }
        KeyCommand::Remove(a) => {
            let id = find(&store, &a.id)?;
            store.remove_key(&id)?;
            done(g, "removed", &id, false)?;
        }
        KeyCommand::Passwd(a) => {
            store.can_manage_keys()?;
            let pass = new_passphrase(a.new_password_file.as_deref())?;
            let id = store.change_passphrase(&pass, KdfParams::for_new_key()?)?;
            done(
                g,
                "changed the passphrase: the key in use is now",
                &id,
                false,
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn done(g: &Global, what: &str, id: &Id, write_only: bool) -> Result<()> {
    if g.json {
        print_json(&json!({ "key": id.to_hex(), "write_only": write_only }))
    } else {
        println!(
            "{what} key {}{}",
            id.short(),
            if write_only { " (write-only)" } else { "" }
        );
        Ok(())
    }
}
