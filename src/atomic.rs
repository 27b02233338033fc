//! Atomic file replacement: the bytes a caller writes in, a file out that every reader sees
//! either as it was or as it is now, never in part — also after a crash.
//!
//! The one way s3nap replaces a file (state and revision files, upload records, the metrics
//! file, the local store's objects): a hidden temporary file beside the target, written,
//! fsynced, renamed over the target, then an fsync of the directory so the new name itself is
//! durable. On any error the temporary file is removed. It depends on nothing else in s3nap.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Replaces `path` with `bytes`.
pub fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, |w| w.write_all(bytes))
}

/// Replaces `path` with what `fill` writes (a stream: the parts of an upload, a state's
/// entries). The parent directory is created if missing. An error from `fill` leaves the
/// target as it was.
pub fn write_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let tmp = temporary_name(dir, path)?;
    let result = (|| {
        let mut w = BufWriter::new(File::create(&tmp)?);
        fill(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Renames `from` over `to` (on the same file system) and makes the new name durable by
/// syncing `to`'s directory: what turns a complete file into the one readers see.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    let dir = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Whether `name` is one of the temporary files `write_with` makes (a crash may leave one):
/// what directory listings of objects or records pass over.
pub fn is_temporary(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with('.') && name.contains(".tmp-")
}

/// `.NAME.tmp-PID-N` beside the target: hidden, unique to this process and this write (two
/// threads may replace the same file), and never taken for the file itself.
fn temporary_name(dir: &Path, path: &Path) -> io::Result<PathBuf> {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file name", path.display()),
        )
    })?;
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    Ok(dir.join(format!(
        ".{}.tmp-{}-{n}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The names in `dir`, sorted: what a test expects to find there.
    pub(crate) fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_the_content_and_leaves_no_temporary_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state");
        replace_file(&path, b"old").unwrap();
        replace_file(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(names(tmp.path()), ["state"]);
    }

    #[test]
    fn a_failing_writer_keeps_the_old_content_and_removes_its_temporary_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state");
        replace_file(&path, b"old").unwrap();
        let err = write_with(&path, |w| {
            w.write_all(&[7u8; 100_000])?;
            Err(io::Error::other("disk on fire"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "disk on fire");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(names(tmp.path()), ["state"]);
    }

    #[test]
    fn a_failing_rename_removes_the_temporary_file() {
        let tmp = tempfile::tempdir().unwrap();
        // A non-empty directory cannot be replaced by a file, even by root.
        let path = tmp.path().join("taken");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inside"), b"x").unwrap();
        assert!(replace_file(&path, b"new").is_err());
        assert_eq!(names(tmp.path()), ["taken"]);
        assert_eq!(fs::read(path.join("inside")).unwrap(), b"x");
    }

    #[test]
    fn creates_missing_parents_but_fails_where_a_parent_is_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a/b/state");
        replace_file(&deep, b"x").unwrap();
        assert_eq!(fs::read(&deep).unwrap(), b"x");
        let blocked = tmp.path().join("a/b/state/inner");
        assert!(replace_file(&blocked, b"y").is_err());
        assert_eq!(names(&tmp.path().join("a/b")), ["state"]);
    }

    #[test]
    fn temporary_names_are_hidden_unique_and_recognised() {
        let dir = Path::new("/d");
        let a = temporary_name(dir, Path::new("/d/x.json")).unwrap();
        let b = temporary_name(dir, Path::new("/d/x.json")).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(dir));
        assert!(is_temporary(a.file_name().unwrap()));
        assert_ne!(a.extension().unwrap(), "json");
        assert!(!is_temporary("x.json".as_ref()));
        assert!(!is_temporary(".hidden".as_ref()));
    }
}
