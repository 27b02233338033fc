//! Directory tree source: a tree on disk in, a GNU tar stream out.
//!
//! Members are named like `tar -C / PATH` names them (the absolute path without its leading
//! `/`), so `tar -x -C DEST` recreates the tree under DEST. Headers are GNU format: long names
//! and link targets through GNU long-name entries, raw (non-UTF-8) name bytes kept, mode with
//! setuid/setgid/sticky bits, owner and group by id and name, mtime. Hard links become link
//! entries to the first path seen; FIFOs and device nodes are stored as such and never read;
//! sockets are skipped. A file that shrinks while it is read is padded with zeros and one that
//! grows is cut at the size its header announced, so the archive stays valid; both are warnings.
//! A file that cannot be read is a warning that marks the run unreadable (exit status 1).

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use tar::{Builder, EntryType, Header};

use super::{Report, Source, Warning};

pub struct TreeSource {
    pub root: PathBuf,
    /// Absolute paths left out with everything below them.
    pub excludes: Vec<PathBuf>,
    /// For a DIFF: the start of the base run. Entries whose mtime and ctime are both older are
    /// left out (directories always go in, so the tree's shape and modes are restored).
    pub since: Option<DateTime<Utc>>,
}

impl Source for TreeSource {
    fn format(&self) -> &'static str {
        "tar"
    }

    fn write_to(&mut self, out: &mut dyn Write) -> anyhow::Result<Report> {
        let root_meta = fs::symlink_metadata(&self.root)
            .with_context(|| format!("cannot read the tree root {}", self.root.display()))?;
        if root_meta.is_dir() {
            fs::read_dir(&self.root)
                .with_context(|| format!("cannot read the tree root {}", self.root.display()))?;
        }
        let mut walker = Walker {
            builder: Builder::new(out),
            excludes: &self.excludes,
            // One second of slack for file systems with coarse timestamps.
            since: self.since.map(|t| t.timestamp() - 1),
            links: HashMap::new(),
            users: HashMap::new(),
            groups: HashMap::new(),
            report: Report::default(),
        };
        walker.builder.follow_symlinks(false);
        walker.entry(&self.root, root_meta)?;
        let Walker {
            builder, report, ..
        } = walker;
        // Writes the end-of-archive blocks.
        builder.into_inner()?;
        Ok(report)
    }
}

struct Walker<'a, W: Write> {
    builder: Builder<W>,
    excludes: &'a [PathBuf],
    since: Option<i64>,
    /// (device, inode) → first archived name, for hard links.
    links: HashMap<(u64, u64), PathBuf>,
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
    report: Report,
}

/// The member name of an absolute path: tar's `-C /` naming.
fn member_name(path: &Path) -> PathBuf {
    let stripped = path.strip_prefix("/").unwrap_or(path);
    if stripped.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        stripped.to_path_buf()
    }
}

fn display(path: &Path) -> String {
    String::from_utf8_lossy(path.as_os_str().as_bytes()).into_owned()
}

impl<W: Write> Walker<'_, W> {
    fn warn(&mut self, path: &Path, problem: impl Into<String>, unreadable: bool) {
        let w = Warning {
            path: display(path),
            problem: problem.into(),
            unreadable,
        };
        log::warn!("{}: {}", w.path, w.problem);
        self.report.warnings.push(w);
    }

    fn header(&mut self, meta: &Metadata, kind: EntryType) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(meta.mode() & 0o7777);
        h.set_uid(meta.uid() as u64);
        h.set_gid(meta.gid() as u64);
        h.set_mtime(meta.mtime().max(0) as u64);
        h.set_size(0);
        let uid = meta.uid();
        let user = self
            .users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .clone();
        if let Some(name) = user {
            let _ = h.set_username(&name);
        }
        let gid = meta.gid();
        let group = self
            .groups
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
                    .ok()
                    .flatten()
                    .map(|g| g.name)
            })
            .clone();
        if let Some(name) = group {
            let _ = h.set_groupname(&name);
        }
        h
    }

    fn excluded(&self, path: &Path) -> bool {
        self.excludes.iter().any(|x| path.starts_with(x))
    }

    fn entry(&mut self, path: &Path, meta: Metadata) -> anyhow::Result<()> {
        let name = member_name(path);
        let ft = meta.file_type();
        if let Some(since) = self.since {
            if !ft.is_dir() && meta.mtime() < since && meta.ctime() < since {
                self.report.counts.unchanged += 1;
                return Ok(());
            }
        }
        if ft.is_dir() {
            let mut header = self.header(&meta, EntryType::Directory);
            self.builder.append_data(&mut header, &name, io::empty())?;
            self.report.counts.directories += 1;
            let mut children = match fs::read_dir(path) {
                Ok(rd) => rd
                    .filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .collect::<Vec<_>>(),
                Err(e) => {
                    let unreadable = e.kind() != io::ErrorKind::NotFound;
                    self.warn(path, format!("cannot list directory: {e}"), unreadable);
                    return Ok(());
                }
            };
            children.sort();
            for child in children {
                if self.excluded(&child) {
                    continue;
                }
                match fs::symlink_metadata(&child) {
                    Ok(m) => self.entry(&child, m)?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        self.warn(&child, "vanished before it was read", false)
                    }
                    Err(e) => self.warn(&child, format!("cannot stat: {e}"), true),
                }
            }
        } else if ft.is_file() {
            self.file(path, &name, meta)?;
        } else if ft.is_symlink() {
            let target = match fs::read_link(path) {
                Ok(t) => t,
                Err(e) => {
                    let unreadable = e.kind() != io::ErrorKind::NotFound;
                    self.warn(path, format!("cannot read link: {e}"), unreadable);
                    return Ok(());
                }
            };
            let mut header = self.header(&meta, EntryType::Symlink);
            self.builder.append_link(&mut header, &name, &target)?;
            self.report.counts.symlinks += 1;
        } else if ft.is_socket() {
            log::debug!("{}: socket skipped", display(path));
        } else {
            let kind = if ft.is_fifo() {
                EntryType::Fifo
            } else if ft.is_char_device() {
                EntryType::Char
            } else {
                EntryType::Block
            };
            let mut header = self.header(&meta, kind);
            if kind != EntryType::Fifo {
                let rdev = meta.rdev();
                header.set_device_major(libc::major(rdev))?;
                header.set_device_minor(libc::minor(rdev))?;
            }
            self.builder.append_data(&mut header, &name, io::empty())?;
            self.report.counts.special += 1;
        }
        Ok(())
    }

    fn file(&mut self, path: &Path, name: &Path, meta: Metadata) -> anyhow::Result<()> {
        if meta.nlink() > 1 {
            if let Some(first) = self.links.get(&(meta.dev(), meta.ino())).cloned() {
                let mut header = self.header(&meta, EntryType::Link);
                self.builder.append_link(&mut header, name, &first)?;
                self.report.counts.hardlinks += 1;
                return Ok(());
            }
        }
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.warn(path, "vanished before it was read", false);
                return Ok(());
            }
            Err(e) => {
                self.warn(path, format!("cannot open: {e}"), true);
                return Ok(());
            }
        };
        // The open file's own metadata: the path may have been replaced since the listing.
        let meta = file.metadata().unwrap_or(meta);
        let size = meta.len();
        let mut header = self.header(&meta, EntryType::Regular);
        header.set_size(size);
        let mut body = ExactSize {
            inner: BufReader::with_capacity(1 << 20, file).take(size),
            remaining: size,
            padded: 0,
            error: None,
        };
        self.builder.append_data(&mut header, name, &mut body)?;
        if let Some(e) = body.error.take() {
            self.warn(
                path,
                format!(
                    "read failed after {} bytes, rest zero-filled: {e}",
                    size - body.padded
                ),
                true,
            );
        } else if body.padded > 0 {
            self.warn(
                path,
                format!(
                    "shrank by {} bytes while being read; zero-filled",
                    body.padded
                ),
                false,
            );
        } else {
            let mut probe = [0u8; 1];
            if matches!(body.inner.into_inner().read(&mut probe), Ok(1)) {
                self.warn(
                    path,
                    format!("grew while being read; archived its first {size} bytes"),
                    false,
                );
            }
        }
        if meta.nlink() > 1 {
            self.links
                .insert((meta.dev(), meta.ino()), name.to_path_buf());
        }
        self.report.counts.files += 1;
        self.report.counts.content_bytes += size;
        Ok(())
    }
}

/// Yields exactly the size a header announced: the file's bytes, then zeros if it came up short
/// or failed, so a changing or failing file never breaks the archive's framing.
struct ExactSize<R: Read> {
    inner: io::Take<R>,
    remaining: u64,
    padded: u64,
    error: Option<io::Error>,
}

impl<R: Read> Read for ExactSize<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(self.remaining as usize);
        let n = if self.padded > 0 || self.error.is_some() {
            0
        } else {
            match self.inner.read(&mut buf[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
                Err(e) => {
                    self.error = Some(e);
                    0
                }
            }
        };
        if n == 0 {
            buf[..want].fill(0);
            self.padded += want as u64;
            self.remaining -= want as u64;
            return Ok(want);
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}
