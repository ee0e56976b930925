//! Choosing a snapshot: by (abbreviated) id, or the newest one, optionally at or
//! before a time and of one database. Pure functions over the snapshot list.

use crate::store::Snapshot;
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;

/// Which snapshot a command means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotSelector {
    /// A full id or a unique prefix of one (like git).
    Id(String),
    /// The newest snapshot (of `name`), or the newest at or before `at`.
    Latest {
        name: Option<String>,
        at: Option<DateTime<Utc>>,
    },
}

pub fn select<'a>(snapshots: &'a [Snapshot], sel: &SnapshotSelector) -> Result<&'a Snapshot> {
    match sel {
        SnapshotSelector::Id(prefix) => by_prefix(snapshots, prefix),
        SnapshotSelector::Latest { name, at } => latest(snapshots, name.as_deref(), *at),
    }
}

fn by_prefix<'a>(snapshots: &'a [Snapshot], prefix: &str) -> Result<&'a Snapshot> {
    let p = prefix.to_ascii_lowercase();
    if p.is_empty() || p.len() > 64 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Invalid {
            what: "snapshot id",
            detail: format!("{prefix:?} is not a hexadecimal snapshot id (or `latest`)"),
        });
    }
    let found: Vec<&Snapshot> = snapshots
        .iter()
        .filter(|s| s.id.to_hex().starts_with(&p))
        .collect();
    match found.as_slice() {
        [] => Err(Error::UnknownSnapshot(prefix.to_string())),
        [one] => Ok(one),
        many => Err(Error::AmbiguousSnapshot {
            prefix: prefix.to_string(),
            candidates: many.iter().map(|s| s.id.short()).collect(),
        }),
    }
}

fn latest<'a>(
    snapshots: &'a [Snapshot],
    name: Option<&str>,
    at: Option<DateTime<Utc>>,
) -> Result<&'a Snapshot> {
    let of_name: Vec<&Snapshot> = snapshots
        .iter()
        .filter(|s| name.is_none_or(|n| s.manifest.name == n))
        .collect();
    let names: BTreeSet<&str> = of_name.iter().map(|s| s.manifest.name.as_str()).collect();
    if names.len() > 1 {
        return Err(Error::AmbiguousName {
            names: names.into_iter().map(String::from).collect(),
        });
    }
    let no_name = || name.map(String::from);
    let earliest = match of_name.iter().map(|s| s.time()).min() {
        Some(t) => t,
        None => return Err(Error::NoSnapshots { name: no_name() }),
    };
    of_name
        .into_iter()
        .filter(|s| at.is_none_or(|at| s.time() <= at))
        .max_by_key(|s| (s.time(), s.id))
        .ok_or_else(|| Error::NoSnapshotAt {
            name: no_name(),
            at: at.map(|t| t.to_rfc3339()).unwrap_or_default(),
            earliest: earliest.to_rfc3339(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::Manifest;
    use crate::types::Id;
    use chrono::TimeZone;

    fn snap(id_byte: u8, name: &str, t: i64) -> Snapshot {
        let mut id = [0u8; 32];
        id[0] = id_byte;
        Snapshot {
            id: Id(id),
            manifest: Manifest {
                time_unix: t,
                time_nanos: 0,
                name: name.into(),
                source_path: String::new(),
                host: String::new(),
                tags: vec![],
                page_size: 4096,
                page_count: 0,
                image_len: 0,
                image_hash: [0; 32],
                sqlite_version: String::new(),
                pagesnap_version: String::new(),
                chunk_pages: 1,
                chunk_count: 0,
                map: Id([0; 32]),
                parent: None,
                dict: None,
                retrain_dict: false,
            },
        }
    }

    fn at(t: i64) -> Option<DateTime<Utc>> {
        Some(Utc.timestamp_opt(t, 0).unwrap())
    }

    #[test]
    fn prefixes() {
        let s = vec![snap(0xab, "a", 1), snap(0xac, "a", 2)];
        assert_eq!(
            select(&s, &SnapshotSelector::Id("ab".into())).unwrap().id,
            s[0].id
        );
        assert_eq!(
            select(&s, &SnapshotSelector::Id("AC00".into())).unwrap().id,
            s[1].id
        );
        assert!(matches!(
            select(&s, &SnapshotSelector::Id("a".into())),
            Err(Error::AmbiguousSnapshot { .. })
        ));
        assert!(matches!(
            select(&s, &SnapshotSelector::Id("ff".into())),
            Err(Error::UnknownSnapshot(_))
        ));
        assert!(matches!(
            select(&s, &SnapshotSelector::Id("xyz".into())),
            Err(Error::Invalid { .. })
        ));
    }

    #[test]
    fn latest_and_at() {
        let s = vec![snap(1, "a", 100), snap(2, "a", 200), snap(3, "a", 300)];
        let l = |at| select(&s, &SnapshotSelector::Latest { name: None, at }).map(|x| x.id.0[0]);
        assert_eq!(l(None).unwrap(), 3);
        assert_eq!(l(at(250)).unwrap(), 2);
        assert_eq!(l(at(200)).unwrap(), 2, "at is inclusive");
        assert!(matches!(l(at(99)), Err(Error::NoSnapshotAt { .. })));
    }

    #[test]
    fn several_databases_need_a_name() {
        let s = vec![snap(1, "a", 100), snap(2, "b", 200)];
        let sel = |name: Option<&str>| SnapshotSelector::Latest {
            name: name.map(String::from),
            at: None,
        };
        assert!(matches!(
            select(&s, &sel(None)),
            Err(Error::AmbiguousName { .. })
        ));
        assert_eq!(select(&s, &sel(Some("a"))).unwrap().id.0[0], 1);
        assert!(matches!(
            select(&s, &sel(Some("c"))),
            Err(Error::NoSnapshots { .. })
        ));
    }

    #[test]
    fn ties_break_by_id() {
        let s = vec![snap(2, "a", 100), snap(1, "a", 100)];
        let got = select(
            &s,
            &SnapshotSelector::Latest {
                name: None,
                at: None,
            },
        )
        .unwrap();
        assert_eq!(got.id.0[0], 2);
    }
}
