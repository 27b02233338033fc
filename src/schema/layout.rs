//! Storage layout: where each run's objects live (docs/ARCHITECTURE.md, "Storage layout and
//! formats").
//!
//! ```text
//! <host>/<set>/<run>.<kind>.<ext>            the archive
//! <host>/<set>/<run>.<kind>.manifest.json    written last: the run's commit marker
//! ```
//! The bucket prefix is the store's business. A run id is the UTC start time, so keys sort in
//! time order and never collide across days or years.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

pub const MANIFEST_SUFFIX: &str = ".manifest.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Full,
    Diff,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Full => "full",
            Kind::Diff => "diff",
        })
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(Kind::Full),
            "diff" => Ok(Kind::Diff),
            other => Err(format!("unknown run kind '{other}'")),
        }
    }
}

/// A run id: its UTC start time to the second, written `20261122T031500Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(pub DateTime<Utc>);

const RUN_FORMAT: &str = "%Y%m%dT%H%M%SZ";

impl RunId {
    pub fn at(time: DateTime<Utc>) -> Self {
        // Whole seconds: the id must round-trip through its text form.
        RunId(DateTime::from_timestamp(time.timestamp(), 0).expect("valid time"))
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format(RUN_FORMAT))
    }
}

impl FromStr for RunId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        NaiveDateTime::parse_from_str(s, RUN_FORMAT)
            .map(|t| RunId(t.and_utc()))
            .map_err(|_| format!("'{s}' is not a run id like 20261122T031500Z"))
    }
}

impl Serialize for RunId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RunId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A host name is one key component: non-empty, without `/`.
pub fn check_host(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('/') {
        return Err(format!(
            "'{name}' is not a host name: it must be non-empty, without '/'"
        ));
    }
    if name == super::quilt::QUILT_HOST {
        return Err(format!(
            "'{name}' is not a host name: the quilt's objects live under that prefix"
        ));
    }
    Ok(())
}

/// `<host>/<set>/`: everything of one set.
pub fn set_prefix(host: &str, set: &str) -> String {
    format!("{host}/{set}/")
}

pub fn archive_key(host: &str, set: &str, run: RunId, kind: Kind, ext: &str) -> String {
    format!("{}{run}.{kind}.{ext}", set_prefix(host, set))
}

/// What every object of one run begins with (its manifest, archive, range hashes, version ids).
pub fn run_prefix(host: &str, set: &str, run: RunId, kind: Kind) -> String {
    format!("{}{run}.{kind}.", set_prefix(host, set))
}

pub fn manifest_key(host: &str, set: &str, run: RunId, kind: Kind) -> String {
    format!("{}{run}.{kind}{MANIFEST_SUFFIX}", set_prefix(host, set))
}

/// Splits a manifest key into (set, run, kind); `None` for any other object.
pub fn parse_manifest_key(host: &str, key: &str) -> Option<(String, RunId, Kind)> {
    let rest = key.strip_prefix(host)?.strip_prefix('/')?;
    let stem = rest.strip_suffix(MANIFEST_SUFFIX)?;
    let (set, file) = stem.rsplit_once('/')?;
    let (run, kind) = file.split_once('.')?;
    Some((set.to_string(), run.parse().ok()?, kind.parse().ok()?))
}

/// Splits an archive key into (set, run, kind); `None` for manifests and foreign objects.
pub fn parse_archive_key(host: &str, key: &str) -> Option<(String, RunId, Kind)> {
    if key.ends_with(MANIFEST_SUFFIX) {
        return None;
    }
    let rest = key.strip_prefix(host)?.strip_prefix('/')?;
    let (set, file) = rest.rsplit_once('/')?;
    let mut parts = file.splitn(3, '.');
    let run = parts.next()?.parse().ok()?;
    let kind = parts.next()?.parse().ok()?;
    parts.next()?;
    Some((set.to_string(), run, kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn keys_round_trip() {
        let run = RunId::at(Utc.with_ymd_and_hms(2026, 11, 22, 3, 15, 0).unwrap());
        assert_eq!(run.to_string(), "20261122T031500Z");
        let key = archive_key("web1", "dir/etc", run, Kind::Full, "tar.zst.gpg");
        assert_eq!(key, "web1/dir/etc/20261122T031500Z.full.tar.zst.gpg");
        let m = manifest_key("web1", "dir/etc", run, Kind::Diff);
        assert_eq!(m, "web1/dir/etc/20261122T031500Z.diff.manifest.json");
        assert_eq!(
            parse_manifest_key("web1", &m),
            Some(("dir/etc".to_string(), run, Kind::Diff))
        );
        assert_eq!(parse_manifest_key("web1", &key), None);
        assert_eq!(
            parse_archive_key("web1", &key),
            Some(("dir/etc".to_string(), run, Kind::Full))
        );
        assert_eq!(parse_archive_key("web1", &m), None);
        assert_eq!(parse_archive_key("web1", "web1/dir/etc/notes.txt"), None);
        assert_eq!(parse_manifest_key("web2", &m), None);
        assert!(check_host("web1").is_ok());
        assert!(check_host("quilt").is_err());
        assert!(check_host("a/b").is_err());
    }
}
