//! The catalog: the committed runs, read from the manifests in the store.
//!
//! The bucket is the truth: a run exists exactly when its manifest does, so recovery on a new
//! machine needs nothing but the store and the key. Recovery picks a chain from here — the FULL
//! and the DIFFs up to the chosen point, in order. Every host's runs live under its own prefix
//! (`<host>/`), so another machine's are read the same way by naming its host
//! ([`require_host`] first, for a name given by hand), and [`load_all_hosts`] finds the hosts
//! by their prefixes. The catalog only ever reads.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use futures::stream::{self, StreamExt};

use crate::schema::layout::{self, Kind, RunId};
use crate::schema::manifest::Manifest;
use crate::store::DynStore;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{target}: unreadable manifest: {message}")]
    BadManifest { target: String, message: String },
    #[error(
        "no backups of host '{host}' in {root}: nothing is stored under {host}/ ({})",
        known_hosts(known)
    )]
    UnknownHost {
        host: String,
        /// The store's root, as it names it.
        root: String,
        /// The hosts that are there.
        known: Vec<String>,
    },
    #[error("set '{set}' has no complete run{when}")]
    NoRun { set: String, when: String },
    #[error("set '{set}': run {run} needs base run {base}, which is missing")]
    BrokenChain {
        set: String,
        run: RunId,
        base: RunId,
    },
    #[error("set '{set}': run {run} is a DIFF without a base run (damaged manifest)")]
    NoBase { set: String, run: RunId },
    #[error(
        "set '{set}': the chain of run {run} loops: run {looping} names base run {base}, which \
         is already in the chain (damaged manifest)"
    )]
    ChainLoop {
        set: String,
        /// The run whose chain was asked for.
        run: RunId,
        /// The run whose base points back into the chain.
        looping: RunId,
        base: RunId,
    },
}

fn known_hosts(known: &[String]) -> String {
    if known.is_empty() {
        "no host has backups there: check Bucket".to_string()
    } else {
        format!("hosts there: {}", known.join(", "))
    }
}

/// Checks that anything at all is stored under `host`'s prefix — a run, or an interrupted
/// run's debris — so that a host name given by hand (`--host`) that names nothing is an error
/// naming it and the hosts that are there, not an empty listing.
pub async fn require_host(store: &DynStore, host: &str) -> Result<(), CatalogError> {
    if !store.list(&format!("{host}/")).await?.is_empty() {
        return Ok(());
    }
    Err(CatalogError::UnknownHost {
        host: host.to_string(),
        root: store.locate(""),
        known: hosts_in(&store.list("").await?).into_keys().collect(),
    })
}

/// The hosts of `objects` (a listing of the store's root), each with its manifest keys in key
/// order. A host is a first key component under which s3nap's layout finds a run's object (a
/// manifest or an archive), so an interrupted run's debris makes a host known too, and foreign
/// objects beside the hosts do not.
fn hosts_in(objects: &[crate::store::ObjectInfo]) -> BTreeMap<String, Vec<String>> {
    let mut hosts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for o in objects {
        let Some((host, _)) = o.key.split_once('/') else {
            continue;
        };
        if layout::parse_manifest_key(host, &o.key).is_some() {
            hosts
                .entry(host.to_string())
                .or_default()
                .push(o.key.clone());
        } else if layout::parse_archive_key(host, &o.key).is_some() {
            hosts.entry(host.to_string()).or_default();
        }
    }
    hosts
}

/// Every host in the store (see [`hosts_in`]) with its committed runs (of one set when given),
/// sorted by set then run; a host with none has an empty list. One listing of the whole store.
pub async fn load_all_hosts(
    store: &DynStore,
    set: Option<&str>,
) -> Result<BTreeMap<String, Vec<Manifest>>, CatalogError> {
    let hosts = hosts_in(&store.list("").await?);
    let mut out = BTreeMap::new();
    for (host, keys) in hosts {
        let keys = keys.into_iter().filter(|key| {
            set.is_none_or(|set| {
                layout::parse_manifest_key(&host, key).is_some_and(|(s, _, _)| s == set)
            })
        });
        let mut runs: Vec<Manifest> = stream::iter(keys)
            .map(|key| {
                let host = host.as_str();
                async move { read_manifest(store, host, &key).await }
            })
            .buffered(8)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        runs.sort_by(|a, b| (&a.set, a.run).cmp(&(&b.set, b.run)));
        out.insert(host, runs);
    }
    Ok(out)
}

/// Every committed run of `host` (of one set when given), sorted by set then run.
pub async fn load(
    store: &DynStore,
    host: &str,
    set: Option<&str>,
) -> Result<Vec<Manifest>, CatalogError> {
    let mut manifests = load_each(store, host, set)
        .await?
        .into_iter()
        .map(|(_, manifest)| manifest)
        .collect::<Result<Vec<_>, _>>()?;
    manifests.sort_by(|a, b| (&a.set, a.run).cmp(&(&b.set, b.run)));
    Ok(manifests)
}

/// Every manifest key of `host` (of one set when given), in key order, each with what reading
/// it gave: `load` stops at the first that fails, `verify` reports each.
pub async fn load_each(
    store: &DynStore,
    host: &str,
    set: Option<&str>,
) -> Result<Vec<(String, Result<Manifest, CatalogError>)>, crate::store::StoreError> {
    let prefix = match set {
        Some(set) => layout::set_prefix(host, set),
        None => format!("{host}/"),
    };
    let keys: Vec<String> = store
        .list(&prefix)
        .await?
        .into_iter()
        .filter_map(|o| {
            let (s, _, _) = layout::parse_manifest_key(host, &o.key)?;
            // Sets nest as key prefixes (dir/etc, dir/etc/ssh): keep exact matches only.
            (set.is_none() || set == Some(s.as_str())).then_some(o.key)
        })
        .collect();
    Ok(stream::iter(keys)
        .map(|key| async move {
            let manifest = read_manifest(store, host, &key).await;
            (key, manifest)
        })
        .buffered(8)
        .collect()
        .await)
}

/// The manifest stored under `key`, which must describe exactly that key.
async fn read_manifest(store: &DynStore, host: &str, key: &str) -> Result<Manifest, CatalogError> {
    let data = store.get(key).await?;
    let manifest = Manifest::from_json(&data).map_err(|e| CatalogError::BadManifest {
        target: store.locate(key),
        message: e.to_string(),
    })?;
    let expected = layout::manifest_key(host, &manifest.set, manifest.run, manifest.kind);
    if expected != key {
        return Err(CatalogError::BadManifest {
            target: store.locate(key),
            message: format!("describes {expected}, not this key"),
        });
    }
    Ok(manifest)
}

/// The runs to replay to get the state of `set` at `at` (latest when `None`): a FULL and the
/// DIFFs that follow it, oldest first.
pub fn chain_at<'a>(
    set: &str,
    runs: &'a [Manifest],
    at: Option<DateTime<Utc>>,
) -> Result<Vec<&'a Manifest>, CatalogError> {
    chain_of(runs, latest_at(set, runs, at)?)
}

/// The latest run of `set` at or before `at` (the latest of all when `None`).
pub fn latest_at<'a>(
    set: &str,
    runs: &'a [Manifest],
    at: Option<DateTime<Utc>>,
) -> Result<&'a Manifest, CatalogError> {
    runs.iter()
        .filter(|m| m.set == set && at.is_none_or(|t| m.run.0 <= t))
        .max_by_key(|m| m.run)
        .ok_or_else(|| CatalogError::NoRun {
            set: set.to_string(),
            when: at.map(|t| format!(" at or before {t}")).unwrap_or_default(),
        })
}

/// The runs to replay to get the state `target` recorded: its FULL and the DIFFs up to it,
/// oldest first.
pub fn chain_of<'a>(
    runs: &'a [Manifest],
    target: &'a Manifest,
) -> Result<Vec<&'a Manifest>, CatalogError> {
    match walk_chain(runs, target) {
        (chain, None) => Ok(chain),
        (_, Some(e)) => Err(e),
    }
}

/// The chain of `target` as far as it can be followed (oldest first), and why it stops short of
/// a FULL, if it does.
pub fn walk_chain<'a>(
    runs: &'a [Manifest],
    target: &'a Manifest,
) -> (Vec<&'a Manifest>, Option<CatalogError>) {
    let set = target.set.as_str();
    let mut current = target;
    // Every run is visited at most once, so the walk ends however damaged the manifests are:
    // a base link back into the chain (a run naming itself, or any loop) is an error.
    let mut chain = vec![current];
    let mut seen = std::collections::HashSet::from([current.run]);
    let mut stop = None;
    while current.kind == Kind::Diff {
        let Some(base) = current.base_run else {
            stop = Some(CatalogError::NoBase {
                set: set.to_string(),
                run: current.run,
            });
            break;
        };
        if !seen.insert(base) {
            stop = Some(CatalogError::ChainLoop {
                set: set.to_string(),
                run: target.run,
                looping: current.run,
                base,
            });
            break;
        }
        // A base is always older than its DIFF: a manifest naming a newer run is damaged, and
        // following it would replay a newer FULL before an older DIFF.
        let found = runs
            .iter()
            .find(|m| m.set == set && m.run == base && base < current.run);
        let Some(found) = found else {
            stop = Some(CatalogError::BrokenChain {
                set: set.to_string(),
                run: current.run,
                base,
            });
            break;
        };
        current = found;
        chain.push(current);
    }
    chain.reverse();
    (chain, stop)
}

/// A point in time as users write it: a run id (`20261122T031500Z`), RFC 3339, or
/// `YYYY-MM-DD[ HH:MM[:SS]]` in UTC; a bare date means the end of that day.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(run) = text.parse::<RunId>() {
        return Ok(run.0);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(23, 59, 59).expect("valid").and_utc());
    }
    Err(format!(
        "'{text}' is not a time (use 20261122T031500Z, 2026-11-22T03:15:00Z, '2026-11-22 03:15' or 2026-11-22)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> RunId {
        text.parse().unwrap()
    }

    fn manifest(set: &str, id: &str, kind: Kind, base: Option<&str>) -> Manifest {
        crate::schema::manifest::sample(set, run(id), kind, base.map(run))
    }

    #[test]
    fn chains_follow_base_runs_back_to_their_full() {
        let runs = vec![
            manifest("dir/a", "20261101T000000Z", Kind::Full, None),
            manifest(
                "dir/a",
                "20261102T000000Z",
                Kind::Diff,
                Some("20261101T000000Z"),
            ),
            manifest(
                "dir/a",
                "20261103T000000Z",
                Kind::Diff,
                Some("20261102T000000Z"),
            ),
            manifest("dir/a", "20261104T000000Z", Kind::Full, None),
            manifest("dir/b", "20261105T000000Z", Kind::Full, None),
        ];
        let ids = |c: Vec<&Manifest>| c.iter().map(|m| m.run.to_string()).collect::<Vec<_>>();
        assert_eq!(
            ids(chain_at("dir/a", &runs, None).unwrap()),
            vec!["20261104T000000Z"]
        );
        let at = parse_time("2026-11-03").unwrap();
        assert_eq!(
            ids(chain_at("dir/a", &runs, Some(at)).unwrap()),
            vec!["20261101T000000Z", "20261102T000000Z", "20261103T000000Z"]
        );
        let early = parse_time("2026-10-01T00:00:00Z").unwrap();
        assert!(matches!(
            chain_at("dir/a", &runs, Some(early)),
            Err(CatalogError::NoRun { .. })
        ));
        let broken = vec![runs[0].clone(), runs[2].clone()];
        assert!(matches!(
            chain_at("dir/a", &broken, None),
            Err(CatalogError::BrokenChain { .. })
        ));
        // A damaged manifest naming a newer run as its base: never followed (a newer FULL
        // replayed before an older DIFF would undo the DIFF's changes).
        let forward = vec![
            runs[0].clone(),
            manifest(
                "dir/a",
                "20261102T000000Z",
                Kind::Diff,
                Some("20261104T000000Z"),
            ),
            runs[3].clone(),
        ];
        let at = parse_time("2026-11-02").unwrap();
        assert!(matches!(
            chain_at("dir/a", &forward, Some(at)),
            Err(CatalogError::BrokenChain { .. })
        ));
    }

    #[test]
    fn base_loops_and_missing_bases_are_errors_naming_the_run() {
        let full = manifest("dir/a", "20261101T000000Z", Kind::Full, None);
        // A DIFF that is its own base.
        let own = manifest(
            "dir/a",
            "20261102T000000Z",
            Kind::Diff,
            Some("20261102T000000Z"),
        );
        let runs = vec![full.clone(), own];
        let e = chain_at("dir/a", &runs, None).unwrap_err();
        assert!(
            matches!(&e, CatalogError::ChainLoop { looping, base, .. } if looping == base),
            "{e:?}"
        );
        assert!(e.to_string().contains("20261102T000000Z"), "{e}");
        // Two DIFFs naming each other, reached from a third.
        let runs = vec![
            full.clone(),
            manifest(
                "dir/a",
                "20261102T000000Z",
                Kind::Diff,
                Some("20261103T000000Z"),
            ),
            manifest(
                "dir/a",
                "20261103T000000Z",
                Kind::Diff,
                Some("20261102T000000Z"),
            ),
            manifest(
                "dir/a",
                "20261104T000000Z",
                Kind::Diff,
                Some("20261103T000000Z"),
            ),
        ];
        let e = chain_at("dir/a", &runs, None).unwrap_err();
        let CatalogError::ChainLoop { run: target, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(target.to_string(), "20261104T000000Z");
        assert!(e.to_string().contains("loops"), "{e}");
        // A DIFF without any base.
        let runs = vec![
            full,
            manifest("dir/a", "20261102T000000Z", Kind::Diff, None),
        ];
        let e = chain_at("dir/a", &runs, None).unwrap_err();
        assert!(matches!(e, CatalogError::NoBase { .. }), "{e:?}");
        assert!(e.to_string().contains("20261102T000000Z"), "{e}");
    }

    /// Stores `m` under `host` as a run commits it: its manifest, describing that key.
    async fn commit(store: &DynStore, host: &str, mut m: Manifest) {
        m.host = host.into();
        let key = layout::manifest_key(host, &m.set, m.run, m.kind);
        store.put(&key, m.to_json().into()).await.unwrap();
    }

    #[tokio::test]
    async fn hosts_are_found_by_their_prefixes_and_a_host_with_nothing_stored_is_named() {
        let store: DynStore = std::sync::Arc::new(crate::store::memory::MemoryStore::new());
        let full = |set: &str, id: &str| manifest(set, id, Kind::Full, None);
        commit(&store, "web1", full("dir/etc", "20261101T000000Z")).await;
        commit(&store, "web1", full("dir/srv", "20261102T000000Z")).await;
        commit(&store, "db1", full("mysql/shop", "20261101T000000Z")).await;
        // An interrupted run's archive: its host is there, with no committed run.
        let debris =
            layout::archive_key("old", "dir/etc", run("20261101T000000Z"), Kind::Full, "tar");
        store.put(&debris, bytes::Bytes::new()).await.unwrap();
        // Objects that are not s3nap's beside the hosts make no host.
        store.put("README.txt", bytes::Bytes::new()).await.unwrap();
        store
            .put("notes/todo.txt", bytes::Bytes::new())
            .await
            .unwrap();

        let hosts = load_all_hosts(&store, None).await.unwrap();
        let summary: Vec<(&str, Vec<&str>)> = hosts
            .iter()
            .map(|(h, runs)| (h.as_str(), runs.iter().map(|m| m.set.as_str()).collect()))
            .collect();
        assert_eq!(
            summary,
            [
                ("db1", vec!["mysql/shop"]),
                ("old", vec![]),
                ("web1", vec!["dir/etc", "dir/srv"])
            ]
        );
        let only = load_all_hosts(&store, Some("dir/etc")).await.unwrap();
        assert_eq!(only["web1"].len(), 1);
        assert!(only["db1"].is_empty());

        for known in ["web1", "db1", "old"] {
            require_host(&store, known).await.unwrap();
        }
        // `web` is a prefix of `web1`'s keys, not a host.
        let e = require_host(&store, "web").await.unwrap_err();
        assert!(matches!(e, CatalogError::UnknownHost { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "no backups of host 'web' in {}: nothing is stored under web/ (hosts there: db1, old, web1)",
                store.locate("")
            )
        );
        let empty: DynStore = std::sync::Arc::new(crate::store::memory::MemoryStore::new());
        let e = require_host(&empty, "web1").await.unwrap_err();
        assert!(e.to_string().contains("no host has backups there"), "{e}");
    }

    #[test]
    fn times_in_every_documented_form() {
        let want = parse_time("20261122T031500Z").unwrap();
        assert_eq!(parse_time("2026-11-22T03:15:00Z").unwrap(), want);
        assert_eq!(parse_time("2026-11-22 03:15").unwrap(), want);
        assert_eq!(parse_time("2026-11-22T04:15:00+01:00").unwrap(), want);
        assert_eq!(
            parse_time("2026-11-22").unwrap().to_rfc3339(),
            "2026-11-22T23:59:59+00:00"
        );
        assert!(parse_time("yesterday").is_err());
    }
}
