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

/// The snapshots `selectors` name (ids, unique prefixes, `latest`) among those of
/// database `name`, each once, in the order named; all of `name`'s (or all) when
/// `selectors` is empty. An id that matches nothing is an error unless `ignore`
/// (given the prefix) says otherwise, e.g. because it names a damaged manifest.
pub fn select_many(
    snapshots: &[Snapshot],
    name: Option<&str>,
    selectors: &[String],
    mut ignore: impl FnMut(&str) -> bool,
) -> Result<Vec<Snapshot>> {
    let of_name: Vec<Snapshot> = snapshots
        .iter()
        .filter(|s| name.is_none_or(|n| s.manifest.name == n))
        .cloned()
        .collect();
    if selectors.is_empty() {
        return Ok(of_name);
    }
    let mut out: Vec<Snapshot> = Vec::new();
    for sel in selectors {
        let sel = if sel == "latest" {
            SnapshotSelector::Latest {
                name: name.map(String::from),
                at: None,
            }
        } else {
            SnapshotSelector::Id(sel.clone())
        };
        match select(&of_name, &sel) {
            Ok(s) => {
                if !out.iter().any(|o| o.id == s.id) {
                    out.push(s.clone());
                }
            }
            Err(e) => match &sel {
                SnapshotSelector::Id(p) if ignore(p) => {}
                _ => return Err(e),
            },
        }
    }
    Ok(out)
}

fn by_prefix<'a>(snapshots: &'a [Snapshot], prefix: &str) -> Result<&'a Snapshot> {
    let p = prefix.to_ascii_lowercase();
    if p.is_empty() || p.len() > 64 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::BadSnapshotId(prefix.to_string()));
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
            // RFC 3339 with `Z` (UTC) and every digit, so that the time can
            // be given back as it is.
            at: at
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
                .unwrap_or_default(),
            earliest: earliest.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
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
                tags: vec![],
                ..Manifest::sample()
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
            Err(Error::BadSnapshotId(_))
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
    fn select_many_names_each_once_in_order() {
        let s = vec![
            snap(0xa1, "a", 100),
            snap(0xb2, "b", 200),
            snap(0xa3, "a", 300),
        ];
        let ids = |v: Vec<Snapshot>| v.iter().map(|x| x.id.0[0]).collect::<Vec<_>>();
        let none = |_: &str| false;
        assert_eq!(
            ids(select_many(&s, None, &[], none).unwrap()),
            [0xa1, 0xb2, 0xa3]
        );
        assert_eq!(
            ids(select_many(&s, Some("a"), &[], none).unwrap()),
            [0xa1, 0xa3]
        );
        let sel = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            ids(select_many(&s, Some("a"), &sel(&["latest", "a1", "a3"]), none).unwrap()),
            [0xa3, 0xa1]
        );
        // An id of another database than `name` is not found.
        assert!(matches!(
            select_many(&s, Some("a"), &sel(&["b2"]), none),
            Err(Error::UnknownSnapshot(_))
        ));
        // ... unless the caller ignores it.
        assert_eq!(
            ids(select_many(&s, Some("a"), &sel(&["b2", "a1"]), |p| p == "b2").unwrap()),
            [0xa1]
        );
        // `latest` over several databases needs a name, ignored or not.
        assert!(matches!(
            select_many(&s, None, &sel(&["latest"]), |_| true),
            Err(Error::AmbiguousName { .. })
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
