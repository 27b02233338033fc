//! Atomic file replacement: the bytes a caller writes in, a file out that every reader sees
//! either as it was or as it is now, never in part — also after a crash.
//!
//! The one way s3nap replaces a file (state and revision files, upload records, the metrics
//! file, the local store's objects): a hidden temporary file beside the target, written,
//! fsynced, renamed over the target, then an fsync of the directory so the new name itself is
//! durable. On any error the temporary file is removed. It depends on nothing else in s3nap.
//!
//! What it creates is the owner's only (files 0600, directories 0700, whatever the umask):
//! DiffDir's state names every backed-up path, and the local store holds the backups
//! themselves. Only the metrics file, which node_exporter reads as another user, is made
//! readable ([`replace_readable_file`]). [`write_new`] and [`rename_new`] never replace an
//! existing file: the local store's objects, like S3's conditional PUTs, are written once.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The mode of the files s3nap creates: the owner's only.
pub const FILE_MODE: u32 = 0o600;
/// The mode of the directories s3nap creates.
pub const DIR_MODE: u32 = 0o700;

/// Replaces `path` with `bytes`.
pub fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, |w| w.write_all(bytes))
}

/// Replaces `path` with `bytes`, readable by everyone (0644): for a file that another user's
/// program reads (the metrics file, read by node_exporter).
pub fn replace_readable_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write(path, 0o644, Target::Replace, |w| w.write_all(bytes))
}

/// Replaces `path` with what `fill` writes (a stream: the parts of an upload, a state's
/// entries). The parent directory is created if missing. An error from `fill` leaves the
/// target as it was.
pub fn write_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    write(path, FILE_MODE, Target::Replace, fill)
}

/// As [`write_with`], but fails with [`io::ErrorKind::AlreadyExists`] if `path` exists,
/// leaving it as it was: an object of the local store is never replaced.
pub fn write_new(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    write(path, FILE_MODE, Target::New, fill)
}

/// Whether the target may be replaced.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Replace,
    New,
}

fn write(
    path: &Path,
    mode: u32,
    target: Target,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    create_dirs(dir)?;
    let tmp = temporary_name(dir, path)?;
    let result = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        let mut w = BufWriter::new(file);
        fill(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        // The umask may have taken bits of a readable mode away; the owner-only ones it
        // cannot widen.
        if mode != FILE_MODE {
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        }
        file.sync_all()?;
        match target {
            Target::Replace => rename(&tmp, path),
            Target::New => rename_new(&tmp, path),
        }
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates (or truncates) `path` for writing in place, owner-only if it is created: what is
/// not replaced atomically (a local upload's data and part files) has the same mode.
pub fn create_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Creates `dir` and its missing parents owner-only (0700); existing ones keep their mode.
pub fn create_dirs(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Renames `from` over `to` (on the same file system) and makes the new name durable by
/// syncing `to`'s directory: what turns a complete file into the one readers see.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    sync_parent(to)
}

/// As [`rename`], but fails with [`io::ErrorKind::AlreadyExists`] if `to` exists, leaving both
/// as they were: `renameat2(RENAME_NOREPLACE)`, or where the file system lacks it, a hard link
/// (which fails on an existing name as well) and the removal of `from`.
pub fn rename_new(from: &Path, to: &Path) -> io::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags};
    match renameat2(None, from, None, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => {}
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)?;
        }
        Err(e) => return Err(e.into()),
    }
    sync_parent(to)
}

fn sync_parent(to: &Path) -> io::Result<()> {
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
    fn new_files_never_replace_an_existing_one() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("object");
        write_new(&path, |w| w.write_all(b"first")).unwrap();
        let err = write_new(&path, |w| w.write_all(b"second")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(names(tmp.path()), ["object"]);
        let from = tmp.path().join("data");
        fs::write(&from, b"third").unwrap();
        let err = rename_new(&from, &path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"first");
        rename_new(&from, &tmp.path().join("other")).unwrap();
        assert_eq!(names(tmp.path()), ["object", "other"]);
    }

    #[test]
    fn files_and_directories_are_created_owner_only_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        // The usual umask (022) would make them 0755/0644.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
        let file = tmp.path().join("a/b/state");
        let written = replace_file(&file, b"x");
        let readable = tmp.path().join("metrics.prom");
        let metrics = replace_readable_file(&readable, b"m");
        nix::sys::stat::umask(old);
        written.unwrap();
        metrics.unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        assert_eq!(mode(&tmp.path().join("a/b")), 0o700);
        assert_eq!(mode(&readable), 0o644);
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
