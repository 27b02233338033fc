//! The manifest: one JSON document per committed run, written after its archive.
//!
//! Its existence is what makes a run complete (an archive without one is debris), and it holds
//! everything recovery needs to find, check and decode the archive without any local state:
//! the archive key, its stored size and SHA-256, the layers (compression, encryption), and the
//! chain (kind, base run). The rest documents the run for people: source details, counts,
//! warnings, times.
//!
//! From format 2 on, the archive's SHA-256 per fixed range ([`RANGE_SIZE`]) lives in a small
//! object of its own (`<run>.<kind>.sha256`, one hex digest per line), named and hashed here: a
//! multi-GiB archive has hundreds of ranges, which `list` and the catalog need not read.
//! Recovery checks each range before it goes on to decryption, so no unverified byte leaves.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::compression::Compression;
use super::layout::{Kind, RunId};
use super::quilt::{QuiltUse, QUILTED_FORMAT};
use super::report::{Counts, Warning};
use super::{FormatError, IntegrityError};

/// The format this s3nap writes for a run without quilted files; it reads every format from 1
/// up to [`NEWEST_FORMAT`].
pub const FORMAT_VERSION: u32 = 2;
/// The newest format this s3nap reads: a quilted run's (`schema::quilt`).
pub const NEWEST_FORMAT: u32 = QUILTED_FORMAT;

/// Bytes of the stored object covered by each range hash. Independent of the upload's part
/// sizes, so recovery holds a few ranges in memory whatever the part size was.
pub const RANGE_SIZE: u64 = 8 << 20;
/// The largest range size recovery accepts from a manifest (it holds a few ranges at once).
pub const MAX_RANGE_SIZE: u64 = 64 << 20;

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
    /// The configuration that made the run, which backs the set up under its Host; `None` in
    /// runs made before s3nap recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// A quilted run's references into the quilt (format 3 on; `schema::quilt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quilt: Option<QuiltUse>,
}

/// A configuration, as a run's manifest names it: the identity kept in its DiffDir
/// (`s3nap.id`), and where that DiffDir was, for messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub id: String,
    pub diff_dir: String,
    /// The host name of the machine (not the configured `Host`).
    pub machine: String,
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
    /// Format 2 on: where the per-range SHA-256s are. `None` in format 1 manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<RangeHashes>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeHashes {
    /// The object holding one lowercase hex SHA-256 per line, range by range.
    pub key: String,
    /// Bytes per range; the last range may be shorter.
    pub range_size: u64,
    /// Number of ranges (lines).
    pub count: u64,
    /// SHA-256 of the hash object itself.
    pub sha256: String,
}

impl RangeHashes {
    /// The hash object's content for `ranges`.
    pub fn encode(ranges: &[[u8; 32]]) -> Vec<u8> {
        let mut out = Vec::with_capacity(ranges.len() * 65);
        for r in ranges {
            out.extend_from_slice(hex::encode(r).as_bytes());
            out.push(b'\n');
        }
        out
    }

    /// Checks `data` (the hash object as read) against this description and the archive's
    /// `stored_size`, and returns the digests.
    pub fn decode(&self, data: &[u8], stored_size: u64) -> Result<Vec<[u8; 32]>, IntegrityError> {
        self.digests(data, stored_size).map_err(IntegrityError)
    }

    fn digests(&self, data: &[u8], stored_size: u64) -> Result<Vec<[u8; 32]>, String> {
        check_sha256(data, &self.sha256)?;
        if self.range_size == 0 || self.range_size > MAX_RANGE_SIZE {
            return Err(format!(
                "range size {} is outside 1..={MAX_RANGE_SIZE}",
                self.range_size
            ));
        }
        if stored_size.div_ceil(self.range_size) != self.count {
            return Err(format!(
                "{} ranges of {} bytes cannot cover {stored_size} bytes",
                self.count, self.range_size
            ));
        }
        let ranges = data
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| {
                let mut digest = [0u8; 32];
                hex::decode_to_slice(line, &mut digest)
                    .map_err(|e| format!("line '{}': {e}", String::from_utf8_lossy(line)))?;
                Ok(digest)
            })
            .collect::<Result<Vec<_>, String>>()?;
        if ranges.len() as u64 != self.count {
            return Err(format!(
                "holds {} hashes, the manifest says {}",
                ranges.len(),
                self.count
            ));
        }
        Ok(ranges)
    }
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
        run: super::program::ProgramRun,
    },
    /// A bucket's version index.
    Bucket(super::snapshot::SnapshotInfo),
}

impl Manifest {
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("manifest serializes");
        v.push(b'\n');
        v
    }

    pub fn from_json(data: &[u8]) -> Result<Self, FormatError> {
        #[derive(Deserialize)]
        struct Format {
            format: u32,
        }
        // The format first: a newer one may not parse as this version's fields at all.
        let Format { format } =
            serde_json::from_slice(data).map_err(|e| FormatError(e.to_string()))?;
        if !(1..=NEWEST_FORMAT).contains(&format) {
            return Err(FormatError(format!(
                "manifest format {format} is not one this s3nap understands (1 to {NEWEST_FORMAT})"
            )));
        }
        let m: Manifest = serde_json::from_slice(data).map_err(|e| FormatError(e.to_string()))?;
        if m.format >= 2 && m.archive.ranges.is_none() {
            return Err(FormatError(format!(
                "manifest format {} without the archive's range hashes",
                m.format
            )));
        }
        // A quilted archive holds placeholders: read without its references it would give
        // empty files, so the two come together or not at all.
        if (m.format >= QUILTED_FORMAT) != m.quilt.is_some() {
            return Err(FormatError(format!(
                "manifest format {} {} quilt references",
                m.format,
                if m.quilt.is_some() { "with" } else { "without" }
            )));
        }
        Ok(m)
    }

    /// The format a manifest of this content is written in.
    pub fn format_for(quilt: Option<&QuiltUse>) -> u32 {
        if quilt.is_some() {
            QUILTED_FORMAT
        } else {
            FORMAT_VERSION
        }
    }

    /// Every object of the run besides its manifest: the archive, its range hashes, and a
    /// snapshot's version ids.
    pub fn objects(&self) -> Vec<&str> {
        let mut keys = vec![self.archive.key.as_str()];
        if let Some(ranges) = &self.archive.ranges {
            keys.push(&ranges.key);
        }
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
/// SHA-256 of `data`, as manifests record it (lowercase hex).
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}

/// Checks `data` (an object as read) against the SHA-256 a manifest records for it.
pub fn check_sha256(data: &[u8], want: &str) -> Result<(), String> {
    let got = sha256_hex(data);
    if got.eq_ignore_ascii_case(want) {
        Ok(())
    } else {
        Err(format!(
            "SHA-256 {got} does not match the manifest's {want}: object damaged"
        ))
    }
}

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
            ranges: Some(RangeHashes {
                key: String::new(),
                range_size: RANGE_SIZE,
                count: 0,
                sha256: String::new(),
            }),
        },
        source: SourceInfo::Directory {
            path: "/x".into(),
            excludes: vec![],
        },
        counts: Default::default(),
        warnings: vec![],
        owner: None,
        quilt: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sample_json(format: u32, ranges: bool) -> Vec<u8> {
        let run = RunId::at(Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap());
        let mut m = sample("dir/x", run, Kind::Full, None);
        m.format = format;
        if !ranges {
            m.archive.ranges = None;
        }
        m.to_json()
    }

    #[test]
    fn known_formats_parse_and_unknown_ones_are_refused() {
        assert!(Manifest::from_json(&sample_json(2, true)).is_ok());
        let old = Manifest::from_json(&sample_json(1, false)).unwrap();
        assert!(old.archive.ranges.is_none());
        // Format 3 is a quilted run's, and needs its references.
        let err = Manifest::from_json(&sample_json(3, true))
            .unwrap_err()
            .to_string();
        assert!(err.contains("format 3 without quilt"), "{err}");
        let err = Manifest::from_json(&sample_json(4, true))
            .unwrap_err()
            .to_string();
        assert!(err.contains("format 4"), "{err}");
        assert!(Manifest::from_json(&sample_json(0, true)).is_err());
        let err = Manifest::from_json(&sample_json(2, false))
            .unwrap_err()
            .to_string();
        assert!(err.contains("range hashes"), "{err}");
    }

    #[test]
    fn range_hashes_are_checked_against_the_manifest() {
        use sha2::{Digest, Sha256};
        let digests = vec![[1u8; 32], [2u8; 32], [3u8; 32]];
        let data = RangeHashes::encode(&digests);
        let ranges = RangeHashes {
            key: "k".into(),
            range_size: 10,
            count: 3,
            sha256: hex::encode(Sha256::digest(&data)),
        };
        assert_eq!(ranges.decode(&data, 25).unwrap(), digests);
        // Sizes that three ranges of 10 bytes do not cover exactly.
        assert!(ranges.decode(&data, 30).is_ok());
        assert!(ranges.decode(&data, 31).is_err());
        assert!(ranges.decode(&data, 20).is_err());
        // A changed hash list no longer matches its own SHA-256.
        let mut bad = data.clone();
        bad[0] = b'f';
        assert!(ranges
            .decode(&bad, 25)
            .unwrap_err()
            .to_string()
            .contains("damaged"));
        // A range size recovery would have to hold too much of.
        let huge = RangeHashes {
            range_size: MAX_RANGE_SIZE + 1,
            ..ranges
        };
        assert!(huge.decode(&data, 25).is_err());
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
