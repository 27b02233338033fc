//! The manifest: one JSON document per committed run, written after its archive.
//!
//! Its existence is what makes a run complete (an archive without one is debris), and it holds
//! everything recovery needs to find, check and decode the archive without any local state:
//! the archive key, its stored size and SHA-256, the layers (compression, encryption), and the
//! chain (kind, base run). The rest documents the run for people: source details, counts,
//! warnings, times.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::layout::{Kind, RunId};
use crate::pipeline::compress::Compression;
use crate::source::{Counts, Warning};

pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub tool: String,
    pub host: String,
    pub set: String,
    pub run: RunId,
    pub kind: Kind,
    /// The run this DIFF builds on; `None` for a FULL.
    #[serde(default)]
    pub base_run: Option<RunId>,
    #[serde(default)]
    pub cycle: Option<String>,
    #[serde(default)]
    pub slot: Option<u64>,
    /// The cycle's backup number this run belongs to.
    #[serde(default)]
    pub period: Option<u64>,
    /// Made with `-f` on a day that was not due or already done.
    #[serde(default)]
    pub forced: bool,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    /// The real clock when the source began to be read (`started` follows `--now`).
    #[serde(default)]
    pub source_started: Option<DateTime<Utc>>,
    pub archive: Archive,
    pub source: SourceInfo,
    #[serde(default)]
    pub counts: Counts,
    #[serde(default)]
    pub warnings: Vec<Warning>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Archive {
    pub key: String,
    /// Bytes as stored (after compression and encryption).
    pub stored_size: u64,
    pub sha256: String,
    /// Bytes of the source stream (before compression).
    pub plaintext_size: u64,
    /// `tar`, `sql`, … : the format of the plaintext.
    pub format: String,
    #[serde(with = "compression_text")]
    pub compression: Compression,
    /// Fingerprints of the certificates it is encrypted to; empty when not encrypted.
    pub recipients: Vec<String>,
    pub parts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SourceInfo {
    Directory {
        path: String,
        excludes: Vec<String>,
    },
    /// A dump, snapshot or picker program; `kind` is mysql, pgsql, svn, command or picker.
    Program {
        kind: String,
        #[serde(flatten)]
        run: crate::source::program::ProgramRun,
    },
    /// A bucket's version index.
    Bucket(crate::bucket::snapshot::SnapshotInfo),
}

impl Manifest {
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("manifest serializes");
        v.push(b'\n');
        v
    }

    pub fn from_json(data: &[u8]) -> Result<Self, String> {
        let m: Manifest = serde_json::from_slice(data).map_err(|e| e.to_string())?;
        if m.format > FORMAT_VERSION {
            return Err(format!(
                "manifest format {} is newer than this s3nap understands ({FORMAT_VERSION})",
                m.format
            ));
        }
        Ok(m)
    }

    /// Every object of the run besides its manifest: the archive, and a snapshot's version ids.
    pub fn objects(&self) -> Vec<&str> {
        let mut keys = vec![self.archive.key.as_str()];
        if let SourceInfo::Bucket(info) = &self.source {
            keys.push(&info.refs);
        }
        keys
    }

    pub fn encrypted(&self) -> bool {
        !self.archive.recipients.is_empty()
    }
}

/// A minimal manifest for tests of the logic above the store.
#[cfg(test)]
pub fn sample(set: &str, run: RunId, kind: Kind, base: Option<RunId>) -> Manifest {
    Manifest {
        format: FORMAT_VERSION,
        tool: "test".into(),
        host: "h".into(),
        set: set.into(),
        run,
        kind,
        base_run: base,
        cycle: None,
        slot: None,
        period: None,
        forced: false,
        started: run.0,
        finished: run.0,
        source_started: None,
        archive: Archive {
            key: String::new(),
            stored_size: 0,
            sha256: String::new(),
            plaintext_size: 0,
            format: "tar".into(),
            compression: Compression::None,
            recipients: vec![],
            parts: 1,
        },
        source: SourceInfo::Directory {
            path: "/x".into(),
            excludes: vec![],
        },
        counts: Default::default(),
        warnings: vec![],
    }
}

mod compression_text {
    use super::Compression;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(c: &Compression, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(c)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Compression, D::Error> {
        let text = String::deserialize(d)?;
        Compression::parse(&text).map_err(serde::de::Error::custom)
    }
}
