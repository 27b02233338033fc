//! Incremental state: what a directory set looked like at its last committed run, kept in
//! DiffDir and compared against at the next DIFF.
//!
//! One line per path with everything that decides "changed": type, mode, owner, size, mtime,
//! ctime (catches content rewritten with the old mtime, and mode/owner changes), inode and
//! device (catch a replaced file). The file names the run it describes; a DIFF only builds on a
//! state whose run is the DIFF's base, so a state from a failed run can never be used. It is
//! written atomically, and only after the run's manifest is committed.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::layout::RunId;

const MAGIC: &str = "s3nap-state 1";

/// What is compared of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// `d` directory, `f` file, `l` symlink, `p` FIFO, `c`/`b` device.
    pub kind: u8,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub ino: u64,
    pub dev: u64,
    /// Symlink target.
    pub target: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// The committed run this state describes (`None` until committed).
    pub run: Option<RunId>,
    /// Member name (path without its leading `/`) → metadata.
    pub entries: BTreeMap<Vec<u8>, Meta>,
}

/// Where the state of `set` in `cycle` lives.
pub fn path(diff_dir: &Path, set: &str, cycle: &str) -> PathBuf {
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    diff_dir.join(format!("{}@{}.state", safe(set), safe(cycle)))
}

impl State {
    /// `Ok(None)` when there is no state file; `Err` when it exists but cannot be used.
    pub fn load(path: &Path) -> Result<Option<State>, String> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let bad = |n: usize, what: &str| format!("{}:{}: {what}", path.display(), n + 1);
        let mut lines = BufReader::new(file).lines();
        let header = lines
            .next()
            .ok_or_else(|| bad(0, "empty"))?
            .map_err(|e| bad(0, &e.to_string()))?;
        let run = header
            .strip_prefix(MAGIC)
            .map(str::trim)
            .ok_or_else(|| bad(0, "not an s3nap state file"))?;
        let mut state = State {
            run: if run.is_empty() {
                None
            } else {
                Some(run.parse().map_err(|e: String| bad(0, &e))?)
            },
            entries: BTreeMap::new(),
        };
        for (n, line) in lines.enumerate() {
            let line = line.map_err(|e| bad(n + 1, &e.to_string()))?;
            let f: Vec<&str> = line.split('\t').collect();
            let parse = || -> Option<(Vec<u8>, Meta)> {
                let [path, kind, mode, uid, gid, size, mtime, ctime, ino, dev, target] =
                    f.as_slice()
                else {
                    return None;
                };
                Some((
                    hex::decode(path).ok()?,
                    Meta {
                        kind: *kind.as_bytes().first()?,
                        mode: mode.parse().ok()?,
                        uid: uid.parse().ok()?,
                        gid: gid.parse().ok()?,
                        size: size.parse().ok()?,
                        mtime_ns: mtime.parse().ok()?,
                        ctime_ns: ctime.parse().ok()?,
                        ino: ino.parse().ok()?,
                        dev: dev.parse().ok()?,
                        target: hex::decode(target).ok()?,
                    },
                ))
            };
            let (path, meta) = parse().ok_or_else(|| bad(n + 1, "malformed entry"))?;
            state.entries.insert(path, meta);
        }
        Ok(Some(state))
    }

    /// Replaces the file at `path` with this state: temporary file, fsync, rename.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let result = (|| {
            let mut w = BufWriter::new(File::create(&tmp)?);
            let run = self.run.map(|r| r.to_string()).unwrap_or_default();
            writeln!(w, "{MAGIC} {run}")?;
            for (p, m) in &self.entries {
                writeln!(
                    w,
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    hex::encode(p),
                    m.kind as char,
                    m.mode,
                    m.uid,
                    m.gid,
                    m.size,
                    m.mtime_ns,
                    m.ctime_ns,
                    m.ino,
                    m.dev,
                    hex::encode(&m.target)
                )?;
            }
            let file = w.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            fs::rename(&tmp, path)?;
            File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), "dir/etc", "daily");
        assert!(p.ends_with("dir_etc@daily.state"));
        assert_eq!(State::load(&p).unwrap(), None);
        let mut s = State {
            run: Some("20261122T031500Z".parse().unwrap()),
            entries: BTreeMap::new(),
        };
        s.entries.insert(
            b"etc/caf\xe9\tx".to_vec(),
            Meta {
                kind: b'l',
                mode: 0o777,
                uid: 0,
                gid: 0,
                size: 3,
                mtime_ns: 1_700_000_000_123_456_789,
                ctime_ns: -5,
                ino: 42,
                dev: 2049,
                target: b"a\nb".to_vec(),
            },
        );
        s.save(&p).unwrap();
        assert_eq!(State::load(&p).unwrap(), Some(s));
        fs::write(&p, format!("{MAGIC} 20261122T031500Z\nnot\ta\tstate\n")).unwrap();
        let e = State::load(&p).unwrap_err();
        assert!(e.contains(":2:"), "{e}");
        fs::write(&p, "garbage\n").unwrap();
        assert!(State::load(&p).is_err());
    }
}
