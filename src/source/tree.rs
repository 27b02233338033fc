//! Directory tree source: a tree on disk (and, for a DIFF, the state of the base run) in, a GNU
//! listed-incremental tar stream and the new state out.
//!
//! The stream is what `tar -g` writes, so `tar -x -G` replays it, deletions and renames
//! included: first a dumpdir entry (type `D`) for every directory, listing its members (`Y` in
//! this archive, `N` unchanged since the base run, `D` a directory), then the members marked
//! `Y`. A FULL marks everything `Y`. Members are named like `tar -C / PATH` names them (the
//! absolute path without its leading `/`). Headers are GNU format — long names and link targets
//! through GNU long-name entries, raw name bytes, setuid/setgid/sticky bits, owner ids and
//! names, mtime — with a PAX header before any member that has extended attributes or ACLs.
//!
//! Hard links become link entries to the first name seen; FIFOs and device nodes are stored,
//! never read; sockets are skipped. A file that shrinks while it is read is padded with zeros
//! and one that grows is cut at its announced size (the archive stays valid); both are
//! warnings. A file or directory that cannot be read is a warning that marks the run unreadable
//! (exit status 1); it is left out of the new state, so the next DIFF sends it again.

use std::collections::{btree_map, BTreeMap, HashMap};
use std::ffi::{CStr, CString, OsStr};
use std::fs::{self, File, Metadata};
use std::io::{self, BufWriter, Read, Write};
use std::mem::MaybeUninit;
use std::ops::Bound;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use tar::{Builder, EntryType, Header};

use super::quilt::{Offered, Quilter};
use super::state::{Identity, Meta, State};
use super::{Report, Source, Warning};
use crate::schema::layout::RunId;

pub struct TreeSource {
    pub root: PathBuf,
    /// Absolute paths or globs (`*`, `?`, `[…]`, not crossing `/`) left out with everything
    /// below them.
    pub excludes: Vec<PathBuf>,
    /// Do not descend into directories on other file systems (their mount points are kept).
    pub one_file_system: bool,
    /// What a DIFF compares against; [`Base::Full`] for a FULL.
    pub base: Base,
    /// `Quilt yes`: large files are offered to it (see `source::quilt`).
    pub quilter: Option<Box<dyn Quilter>>,
}

/// The base run's state, if any.
pub enum Base {
    Full,
    Loaded(State),
    /// In a state file whose header names `run` (checked by the planner): its entries are
    /// parsed on a thread of their own while the tree is walked, which otherwise takes turns
    /// with the walk for a third of a DIFF of a large unchanged tree.
    File {
        path: PathBuf,
        id: Identity,
        run: RunId,
    },
}

/// What the archive and the state need of one `lstat`. Kept instead of `std::fs::Metadata`
/// because the walk stats each entry relative to its directory (`fstatat`), which costs a
/// fraction of a lookup by full path.
#[derive(Debug, Clone, Copy)]
struct Stat {
    /// Type and permission bits (`st_mode`).
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
    ino: u64,
    dev: u64,
    nlink: u64,
    rdev: u64,
}

impl Stat {
    fn of_metadata(m: &Metadata) -> Stat {
        Stat {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ctime: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
            ino: m.ino(),
            dev: m.dev(),
            nlink: m.nlink(),
            rdev: m.rdev(),
        }
    }

    #[allow(clippy::unnecessary_cast)] // the field types differ between architectures
    fn of_stat(st: &libc::stat) -> Stat {
        Stat {
            mode: st.st_mode as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            mtime: st.st_mtime as i64,
            mtime_nsec: st.st_mtime_nsec as i64,
            ctime: st.st_ctime as i64,
            ctime_nsec: st.st_ctime_nsec as i64,
            ino: st.st_ino as u64,
            dev: st.st_dev as u64,
            nlink: st.st_nlink as u64,
            rdev: st.st_rdev as u64,
        }
    }

    fn format(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
    fn is_dir(&self) -> bool {
        self.format() == libc::S_IFDIR
    }
    fn is_file(&self) -> bool {
        self.format() == libc::S_IFREG
    }
    fn is_symlink(&self) -> bool {
        self.format() == libc::S_IFLNK
    }
    fn is_fifo(&self) -> bool {
        self.format() == libc::S_IFIFO
    }
    fn is_char_device(&self) -> bool {
        self.format() == libc::S_IFCHR
    }
    fn is_block_device(&self) -> bool {
        self.format() == libc::S_IFBLK
    }
    fn is_socket(&self) -> bool {
        self.format() == libc::S_IFSOCK
    }
}

/// One scanned path.
struct Node {
    /// The member name: the absolute path without its leading `/` (`.` for `/`).
    name: Vec<u8>,
    /// The directory node this was listed in (`None` for the root and picked paths): files are
    /// opened relative to it.
    parent: Option<usize>,
    stat: Stat,
    /// Symlinks: the target.
    target: Option<Vec<u8>>,
    /// Directories: the nodes of the members, in name order.
    children: Vec<usize>,
    /// A directory whose listing failed: no dumpdir for it (that would delete its contents on
    /// replay), and nothing of it in the new state.
    unlisted: bool,
}

impl Node {
    /// The absolute path (member names are made from absolute paths only).
    fn path(&self) -> PathBuf {
        path_of(&self.name)
    }
}

fn path_of(name: &[u8]) -> PathBuf {
    if name == b"." {
        return PathBuf::from("/");
    }
    let mut path = Vec::with_capacity(name.len() + 1);
    path.push(b'/');
    path.extend_from_slice(name);
    PathBuf::from(OsStr::from_bytes(&path))
}

/// The member name of `entry` in the directory named `parent`: what `Path::join` and
/// [`member_name`] would make of the two.
fn child_name(parent: &[u8], entry: &[u8]) -> Vec<u8> {
    let mut name = Vec::with_capacity(parent.len() + entry.len() + 1);
    if parent != b"." {
        name.extend_from_slice(parent);
        if !parent.ends_with(b"/") {
            name.push(b'/');
        }
    }
    name.extend_from_slice(entry);
    name
}

fn kind_of(stat: &Stat) -> u8 {
    if stat.is_dir() {
        b'd'
    } else if stat.is_symlink() {
        b'l'
    } else if stat.is_fifo() {
        b'p'
    } else if stat.is_char_device() {
        b'c'
    } else if stat.is_block_device() {
        b'b'
    } else {
        b'f'
    }
}

fn meta_of(s: &Stat, target: Vec<u8>) -> Meta {
    Meta {
        kind: kind_of(s),
        mode: s.mode & 0o7777,
        uid: s.uid,
        gid: s.gid,
        size: if s.is_dir() { 0 } else { s.size },
        mtime_ns: i128::from(s.mtime) * 1_000_000_000 + i128::from(s.mtime_nsec),
        ctime_ns: i128::from(s.ctime) * 1_000_000_000 + i128::from(s.ctime_nsec),
        ino: s.ino,
        dev: s.dev,
        target,
    }
}

/// Whether the base run's entry `base` still describes `node` (without copying its target).
fn unchanged(base: &Meta, node: &Node) -> bool {
    let Meta {
        kind,
        mode,
        uid,
        gid,
        size,
        mtime_ns,
        ctime_ns,
        ino,
        dev,
        target,
    } = base;
    let now = meta_of(&node.stat, Vec::new());
    (
        *kind, *mode, *uid, *gid, *size, *mtime_ns, *ctime_ns, *ino, *dev,
    ) == (
        now.kind,
        now.mode,
        now.uid,
        now.gid,
        now.size,
        now.mtime_ns,
        now.ctime_ns,
        now.ino,
        now.dev,
    ) && target.as_slice() == node.target.as_deref().unwrap_or_default()
}

/// The member name of an absolute path: tar's `-C /` naming.
fn member_name(path: &Path) -> Vec<u8> {
    let bytes = path.as_os_str().as_bytes();
    let stripped = bytes.strip_prefix(b"/").unwrap_or(bytes);
    if stripped.is_empty() {
        b".".to_vec()
    } else {
        stripped.to_vec()
    }
}

fn display(path: &Path) -> String {
    String::from_utf8_lossy(path.as_os_str().as_bytes()).into_owned()
}

fn basename(name: &[u8]) -> &[u8] {
    name.rsplit(|b| *b == b'/').next().unwrap_or(name)
}

/// Excludes as a glob set: plain paths match themselves, `*` does not cross `/`.
pub fn exclude_matcher(patterns: &[PathBuf]) -> anyhow::Result<GlobSet> {
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        let text = p
            .to_str()
            .with_context(|| format!("Exclude {}: not UTF-8", p.display()))?;
        set.add(
            GlobBuilder::new(text)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .with_context(|| format!("Exclude {text}"))?,
        );
    }
    Ok(set.build()?)
}

/// Bytes of tar stream handed on at once: a small file's header, body and padding would
/// otherwise each be a call into the compressor.
const OUT_BUFFER: usize = 256 << 10;

impl Source for TreeSource {
    fn format(&self) -> &'static str {
        "tar"
    }

    fn write_to(&mut self, out: &mut dyn Write) -> anyhow::Result<Report> {
        let (scan, base) = std::thread::scope(|threads| {
            let loading = match std::mem::replace(&mut self.base, Base::Full) {
                Base::File { path, id, run } => Some((
                    path.clone(),
                    std::thread::Builder::new()
                        .name("s3nap state".into())
                        .spawn_scoped(threads, move || State::load_describing(&path, &id, run)),
                )),
                Base::Loaded(state) => return (self.scan(), Ok(Some(state))),
                Base::Full => None,
            };
            let scan = self.scan();
            let base = match loading {
                None => Ok(None),
                Some((path, Err(e))) => Err((path, e.to_string())),
                Some((path, Ok(thread))) => match thread.join() {
                    Ok(loaded) => loaded.map(Some).map_err(|e| (path, e)),
                    Err(panic) => std::panic::resume_unwind(panic),
                },
            };
            (scan, base)
        });
        let Scan {
            nodes, mut report, ..
        } = scan?;
        // The planner read a sound header; entries that will not parse leave nothing to
        // compare with, so this DIFF holds every file (still restorable on its base) and says
        // so.
        let base = base.unwrap_or_else(|(path, e)| {
            report.warnings.push(Warning {
                path: path.display().to_string(),
                problem: format!(
                    "incremental state unusable: {e}; this DIFF holds every file instead of the \
                     changed ones"
                ),
                unreadable: false,
            });
            None
        });
        let changes = Changes::new(&nodes, base.as_ref());
        let mut out = BufWriter::with_capacity(OUT_BUFFER, out);
        let mut emit = Emit::new(&mut out, &mut report);
        emit.quilter = self.quilter.take();
        emit_tree(&mut emit, &nodes, &changes)?;
        let failed = std::mem::take(&mut emit.failed);
        self.quilter = emit.quilter.take();
        emit.builder.into_inner()?.flush()?;
        report.state = Some(new_state(nodes, failed));
        // Freeing the base's 100,000 entries is a tenth of an unchanged DIFF's time after the
        // walk: nothing waits for it.
        if let Some(base) = base {
            // (Should no thread start, the closure and the base are dropped here instead.)
            let _ = std::thread::Builder::new()
                .name("s3nap free".into())
                .spawn(move || drop(base));
        }
        Ok(report)
    }
}

impl TreeSource {
    /// Every path under the root that is not excluded, in pre-order. An unreadable root fails
    /// the run; anything below it is a warning.
    fn scan(&self) -> anyhow::Result<Scan> {
        // Member names are the path without its leading `/`, and paths are made back from
        // them: the configuration only takes absolute directories.
        anyhow::ensure!(
            self.root.is_absolute(),
            "the tree root {} is not an absolute path",
            self.root.display()
        );
        let root_meta = fs::symlink_metadata(&self.root)
            .with_context(|| format!("cannot read the tree root {}", self.root.display()))?;
        if root_meta.is_dir() {
            fs::read_dir(&self.root)
                .with_context(|| format!("cannot read the tree root {}", self.root.display()))?;
        }
        let mut scan = Scan {
            excludes: exclude_matcher(&self.excludes)?,
            one_file_system: self.one_file_system.then(|| root_meta.dev()),
            nodes: Vec::new(),
            report: Report::default(),
        };
        let root = listed(
            member_name(&self.root),
            Stat::of_metadata(&root_meta),
            || Ok(fs::read_link(&self.root)?.into_os_string().into_vec()),
        );
        scan.visit(root, None);
        Ok(scan)
    }
}

/// Which scanned nodes go into this archive (`Y`) rather than being unchanged since the base
/// run (`N`), by index.
struct Changes {
    changed: Vec<bool>,
}

impl Changes {
    fn new(nodes: &[Node], base: Option<&State>) -> Self {
        let mut cursor = base.map(|b| BaseCursor::new(&b.entries));
        // Y or N for every non-directory: unchanged means the base state has it, identical.
        // Directories are looked up too, so that the cursor keeps pace with the walk.
        let changed = nodes
            .iter()
            .map(|n| match &mut cursor {
                None => true,
                Some(cursor) => {
                    let found = cursor.get(&n.name);
                    n.stat.is_dir() || !found.is_some_and(|m| unchanged(m, n))
                }
            })
            .collect();
        Changes { changed }
    }
}

/// The base state's entries looked up in the walk's order. The walk's pre-order is the
/// entries' byte order except where a name sorts before `/` (`a.b` comes after the subtree of
/// `a` in the walk, before it in bytes): a cursor that moves on with each name found and is
/// set again by one search where the orders part. Searching the map for each of 100,000 names
/// compared each some 17 times with names sharing long prefixes: most of an unchanged DIFF's
/// time after the walk itself.
struct BaseCursor<'a> {
    entries: &'a BTreeMap<Vec<u8>, Meta>,
    at: std::iter::Peekable<btree_map::Range<'a, Vec<u8>, Meta>>,
}

impl<'a> BaseCursor<'a> {
    fn new(entries: &'a BTreeMap<Vec<u8>, Meta>) -> Self {
        BaseCursor {
            entries,
            at: entries.range::<[u8], _>(..).peekable(),
        }
    }

    fn get(&mut self, name: &[u8]) -> Option<&'a Meta> {
        if self
            .at
            .peek()
            .is_none_or(|(next, _)| next.as_slice() != name)
        {
            self.at = self
                .entries
                .range::<[u8], _>((Bound::Included(name), Bound::Unbounded))
                .peekable();
        }
        match self.at.peek() {
            Some((next, _)) if next.as_slice() == name => self.at.next().map(|(_, m)| m),
            _ => None,
        }
    }
}

/// The dumpdir of directory `node`: per member a code (`D` a directory, `Y` in this archive,
/// `N` unchanged) and its name, each ended by a NUL, then a closing NUL.
fn dumpdir_listing(node: &Node, nodes: &[Node], changes: &Changes) -> Vec<u8> {
    let mut dumpdir = Vec::new();
    for &child in &node.children {
        let code = if nodes[child].stat.is_dir() {
            b'D'
        } else if changes.changed[child] {
            b'Y'
        } else {
            b'N'
        };
        dumpdir.push(code);
        dumpdir.extend_from_slice(basename(&nodes[child].name));
        dumpdir.push(0);
    }
    dumpdir.push(0);
    dumpdir
}

/// Writes the scanned tree: directories, then the members that changed.
fn emit_tree<W: Write>(
    emit: &mut Emit<'_, W>,
    nodes: &[Node],
    changes: &Changes,
) -> anyhow::Result<()> {
    // Dumpdirs first, as GNU tar writes them: extraction purges each directory before any
    // member lands in it.
    // Mount points not entered and directories that could not be listed: the directory
    // itself, without a dumpdir (which would purge its contents on replay).
    for node in nodes.iter().filter(|n| n.stat.is_dir() && n.unlisted) {
        emit.plain_dir(node)?;
    }
    for node in nodes.iter().filter(|n| n.stat.is_dir() && !n.unlisted) {
        emit.dumpdir(node, &dumpdir_listing(node, nodes, changes))?;
    }
    for (i, node) in nodes.iter().enumerate() {
        if node.stat.is_dir() {
            continue;
        }
        if changes.changed[i] {
            let parent = node.parent.map(|p| (p, &nodes[p]));
            emit.member(node, parent)?;
        } else {
            emit.remember_link(node);
            emit.report.counts.unchanged += 1;
        }
    }
    Ok(())
}

/// The state the next DIFF compares against. What was not listed or could not be archived
/// (`failed`) is left out of it, so that the next DIFF sends it again.
fn new_state(nodes: Vec<Node>, failed: Vec<Vec<u8>>) -> State {
    // Pre-order is nearly name order: collecting sorts it in about one pass, where inserting
    // one by one would search the map for each.
    let mut entries: BTreeMap<Vec<u8>, Meta> = nodes
        .into_iter()
        .filter(|n| !n.unlisted)
        .map(|n| {
            let meta = meta_of(&n.stat, n.target.unwrap_or_default());
            (n.name, meta)
        })
        .collect();
    for name in failed {
        entries.remove(&name);
    }
    State { run: None, entries }
}

/// s3-sysbackup's picker: a program prints paths, one per line; the archive holds exactly those
/// (a listed directory without what is below it), each after its parent directories, so their
/// owners and modes come back too. A path that vanished is a warning; a relative one an error.
pub struct PickedPaths {
    pub command: Vec<String>,
    /// `Quilt yes`: large files are offered to it (see `source::quilt`).
    pub quilter: Option<Box<dyn Quilter>>,
}

fn node_at(path: &Path) -> io::Result<Node> {
    let stat = Stat::of_metadata(&fs::symlink_metadata(path)?);
    let target = if stat.is_symlink() {
        Some(fs::read_link(path)?.into_os_string().into_vec())
    } else {
        None
    };
    Ok(Node {
        name: member_name(path),
        parent: None,
        stat,
        target,
        children: Vec::new(),
        unlisted: false,
    })
}

impl Source for PickedPaths {
    fn format(&self) -> &'static str {
        "tar"
    }

    fn write_to(&mut self, out: &mut dyn Write) -> anyhow::Result<Report> {
        let mut listing = Vec::new();
        let (_, run) = super::program::ProgramSource {
            command: self.command.clone(),
            format: "tar",
            descriptor_mode: false,
            restore: None,
        }
        .run(&mut listing)?;
        let mut paths: Vec<PathBuf> = Vec::new();
        for line in listing.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let path = PathBuf::from(std::ffi::OsStr::from_bytes(line));
            if !path.is_absolute() {
                anyhow::bail!(
                    "picker {} printed a relative path: {}",
                    self.command[0],
                    display(&path)
                );
            }
            paths.push(path);
        }
        let mut report = Report::default();
        let mut out = BufWriter::with_capacity(OUT_BUFFER, out);
        let mut emit = Emit::new(&mut out, &mut report);
        emit.quilter = self.quilter.take();
        let mut done = std::collections::HashSet::new();
        for path in &paths {
            let mut chain: Vec<&Path> = path
                .ancestors()
                .skip(1)
                .filter(|a| a.parent().is_some())
                .collect();
            chain.reverse();
            chain.push(path);
            for p in chain {
                if !done.insert(p.to_path_buf()) {
                    continue;
                }
                match node_at(p) {
                    Ok(node) if node.stat.is_dir() => emit.plain_dir(&node)?,
                    Ok(node) => emit.member(&node, None)?,
                    Err(e) => {
                        let vanished = e.kind() == io::ErrorKind::NotFound;
                        warn(emit.report, p, format!("cannot read: {e}"), !vanished);
                    }
                }
            }
        }
        self.quilter = emit.quilter.take();
        emit.builder.into_inner()?.flush()?;
        report.program = Some(run);
        Ok(report)
    }
}

struct Scan {
    excludes: GlobSet,
    one_file_system: Option<u64>,
    nodes: Vec<Node>,
    report: Report,
}

/// A path the walk found: to add, or to warn about.
enum Listed {
    Entry {
        name: Vec<u8>,
        stat: Stat,
        target: Option<Vec<u8>>,
    },
    Problem {
        name: Vec<u8>,
        problem: String,
        unreadable: bool,
    },
}

/// `name` as found with `stat`, its target read by `read_link` if it is a symlink.
fn listed(name: Vec<u8>, stat: Stat, read_link: impl FnOnce() -> io::Result<Vec<u8>>) -> Listed {
    if !stat.is_symlink() {
        return Listed::Entry {
            name,
            stat,
            target: None,
        };
    }
    match read_link() {
        Ok(t) => Listed::Entry {
            name,
            stat,
            target: Some(t),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Listed::Problem {
            name,
            problem: "vanished before it was read".into(),
            unreadable: false,
        },
        Err(e) => Listed::Problem {
            name,
            problem: format!("cannot read link: {e}"),
            unreadable: true,
        },
    }
}

impl Scan {
    /// Adds `found` (and below it) in pre-order; returns its node, if it was added.
    fn visit(&mut self, found: Listed, parent: Option<usize>) -> Option<usize> {
        let (name, stat, target) = match found {
            Listed::Entry { name, stat, target } => (name, stat, target),
            Listed::Problem {
                name,
                problem,
                unreadable,
            } => {
                warn(&mut self.report, &path_of(&name), problem, unreadable);
                return None;
            }
        };
        if stat.is_socket() {
            log::debug!("{}: socket skipped", display(&path_of(&name)));
            return None;
        }
        let index = self.nodes.len();
        self.nodes.push(Node {
            name,
            parent,
            stat,
            target,
            children: Vec::new(),
            unlisted: false,
        });
        if !stat.is_dir() {
            return Some(index);
        }
        if self
            .one_file_system
            .is_some_and(|root_dev| root_dev != stat.dev)
        {
            // A mount point: kept, not entered (and its contents never purged on replay).
            self.nodes[index].unlisted = true;
            return Some(index);
        }
        let path = self.nodes[index].path();
        let entries = match self.list(&path, &self.nodes[index].name, &stat) {
            Ok(entries) => entries,
            Err(e) => {
                let unreadable = e.kind() != io::ErrorKind::NotFound;
                warn(
                    &mut self.report,
                    &path,
                    format!("cannot list directory: {e}"),
                    unreadable,
                );
                self.nodes[index].unlisted = true;
                return Some(index);
            }
        };
        // The directory is closed again before descending: open directories never pile up
        // with the depth of the tree.
        let mut children = Vec::with_capacity(entries.len());
        for found in entries {
            children.extend(self.visit(found, Some(index)));
        }
        self.nodes[index].children = children;
        Some(index)
    }

    /// The members of the directory at `path` (named `name`) that are not excluded, in name
    /// order, each stat'ed (and its link read) relative to the open directory. Listing it
    /// fails as a whole: entries silently missing would be deleted on replay.
    fn list(&self, path: &Path, name: &[u8], stat: &Stat) -> io::Result<Vec<Listed>> {
        let mut dir = DirStream::open(path, stat)?;
        let mut entries = dir.names()?;
        entries.sort_unstable();
        let mut found = Vec::with_capacity(entries.len());
        for entry in entries {
            let child = child_name(name, entry.as_bytes());
            if !self.excludes.is_empty() && self.excludes.is_match(path_of(&child)) {
                continue;
            }
            found.push(match dir.lstat(&entry) {
                Ok(stat) => listed(child, stat, || dir.read_link(&entry)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Listed::Problem {
                    name: child,
                    problem: "vanished before it was read".into(),
                    unreadable: false,
                },
                Err(e) => Listed::Problem {
                    name: child,
                    problem: format!("cannot stat: {e}"),
                    unreadable: true,
                },
            });
        }
        Ok(found)
    }
}

/// An open directory: its entries, and `lstat` and `readlink` relative to it.
struct DirStream(std::ptr::NonNull<libc::DIR>);

impl DirStream {
    /// Opens the directory at `path`, which lstat saw as `scanned`.
    fn open(path: &Path, scanned: &Stat) -> io::Result<DirStream> {
        let fd = open_dir(path, Some(scanned), libc::O_RDONLY)?;
        // SAFETY: `fd` is an open directory; on success the stream owns it.
        match std::ptr::NonNull::new(unsafe { libc::fdopendir(fd.as_raw_fd()) }) {
            Some(dir) => {
                std::mem::forget(fd);
                Ok(DirStream(dir))
            }
            None => Err(io::Error::last_os_error()),
        }
    }

    fn fd(&self) -> RawFd {
        // SAFETY: the stream is open until drop.
        unsafe { libc::dirfd(self.0.as_ptr()) }
    }

    /// The names in the directory, `.` and `..` left out, in the order read.
    fn names(&mut self) -> io::Result<Vec<CString>> {
        let mut names = Vec::new();
        loop {
            // SAFETY: readdir reports an error only through errno, which must be cleared first.
            unsafe { *libc::__errno_location() = 0 };
            let entry = unsafe { libc::readdir(self.0.as_ptr()) };
            if entry.is_null() {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(0) | None => Ok(names),
                    Some(_) => Err(e),
                };
            }
            // SAFETY: a non-null entry is valid until the next readdir on this stream.
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
            if name.to_bytes() != b"." && name.to_bytes() != b".." {
                names.push(name.to_owned());
            }
        }
    }

    fn lstat(&self, name: &CStr) -> io::Result<Stat> {
        let mut st = MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `st` is written in full when fstatat succeeds.
        let rc = unsafe {
            libc::fstatat(
                self.fd(),
                name.as_ptr(),
                st.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Stat::of_stat(unsafe { &st.assume_init() }))
    }

    fn read_link(&self, name: &CStr) -> io::Result<Vec<u8>> {
        let mut buf: Vec<u8> = Vec::with_capacity(256);
        loop {
            // SAFETY: readlinkat writes at most `capacity` bytes into the buffer.
            let n = unsafe {
                libc::readlinkat(
                    self.fd(),
                    name.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.capacity(),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            if n < buf.capacity() {
                unsafe { buf.set_len(n) };
                return Ok(buf);
            }
            // Possibly cut short: again with more room.
            buf.reserve(buf.capacity() * 2);
        }
    }
}

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: the stream is open; closedir closes its descriptor too.
        unsafe { libc::closedir(self.0.as_ptr()) };
    }
}

fn c_path(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Opens the directory at `path` (with `flags`); when `scanned` is given, only if it is still
/// that directory — the same device and inode. A directory, or one above it, replaced by a
/// symbolic link after the scan saw it would otherwise lead the walk (run as root) into
/// another tree, whose files would be stored under this one's names.
fn open_dir(path: &Path, scanned: Option<&Stat>, flags: libc::c_int) -> io::Result<OwnedFd> {
    let fd = open_at(
        libc::AT_FDCWD,
        &c_path(path.as_os_str().as_bytes())?,
        flags | libc::O_DIRECTORY,
    )?;
    if let Some(scanned) = scanned {
        let now = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(io::Error::from)?;
        if (now.st_dev as u64, now.st_ino as u64) != (scanned.dev, scanned.ino) {
            return Err(io::Error::other(
                "replaced after the scan (no longer the same directory); not followed",
            ));
        }
    }
    Ok(fd)
}

/// How a file is opened to be read: never through a symbolic link nor blocking on a FIFO, so
/// that a file replaced by either after the scan cannot pass another file's (or no) contents
/// off under its name — on a host an attacker may have write access to.
const OPEN_FILE: libc::c_int = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK;

/// `openat(2)` with close-on-exec.
fn open_at(dir: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    loop {
        // SAFETY: a valid C string; the descriptor returned is ours.
        let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC) };
        if fd >= 0 {
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn warn(report: &mut Report, path: &Path, problem: impl Into<String>, unreadable: bool) {
    let w = Warning {
        path: display(path),
        problem: problem.into(),
        unreadable,
    };
    log::warn!("{}: {}", w.path, w.problem);
    report.warnings.push(w);
}

struct Emit<'r, W: Write> {
    builder: Builder<W>,
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
    /// (device, inode) → first member name, for hard links.
    links: HashMap<(u64, u64), Vec<u8>>,
    report: &'r mut Report,
    /// Members that could not be archived: left out of the new state.
    failed: Vec<Vec<u8>>,
    /// The directory files are opened in (node, descriptor; `None` if it could not be
    /// opened): members come in directory order, so one open serves a directory's files.
    dir: Option<(usize, Result<OwnedFd, String>)>,
    /// What files are read through: one buffer for the run (a large one, so that large files
    /// take few system calls), not one per file.
    buffer: Vec<u8>,
    /// Where large files go first (`Quilt yes`).
    quilter: Option<Box<dyn Quilter>>,
}

/// Bytes of a file read at once.
const READ_BUFFER: usize = 1 << 20;

/// A PAX extended header (`x`) with `records`, for the member that follows.
fn pax_header(records: &[(String, Vec<u8>)], name: &[u8]) -> (Header, Vec<u8>) {
    let mut data = Vec::new();
    for (key, value) in records {
        let body = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        data.extend_from_slice(format!("{len} {key}=").as_bytes());
        data.extend_from_slice(value);
        data.push(b'\n');
    }
    let mut h = Header::new_ustar();
    let base = basename(name);
    let short: Vec<u8> = [b"PaxHeaders/".as_slice(), &base[..base.len().min(80)]].concat();
    let field = &mut h.as_old_mut().name;
    let n = short.len().min(field.len());
    field[..n].copy_from_slice(&short[..n]);
    h.set_entry_type(EntryType::XHeader);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    (h, data)
}

impl<'r, W: Write> Emit<'r, W> {
    fn new(out: W, report: &'r mut Report) -> Self {
        let mut builder = Builder::new(out);
        builder.follow_symlinks(false);
        Emit {
            builder,
            users: HashMap::new(),
            groups: HashMap::new(),
            links: HashMap::new(),
            report,
            failed: Vec::new(),
            dir: None,
            buffer: Vec::new(),
            quilter: None,
        }
    }

    fn header(&mut self, stat: &Stat, kind: EntryType) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(stat.mode & 0o7777);
        h.set_uid(u64::from(stat.uid));
        h.set_gid(u64::from(stat.gid));
        h.set_mtime(stat.mtime.max(0) as u64);
        h.set_size(0);
        let uid = stat.uid;
        let user = self.users.entry(uid).or_insert_with(|| {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.name)
        });
        if let Some(name) = user {
            let _ = h.set_username(name);
        }
        let gid = stat.gid;
        let group = self.groups.entry(gid).or_insert_with(|| {
            nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
                .ok()
                .flatten()
                .map(|g| g.name)
        });
        if let Some(name) = group {
            let _ = h.set_groupname(name);
        }
        h
    }

    /// The PAX header of `node`'s extended attributes, read by path.
    fn xattrs(&mut self, node: &Node) -> io::Result<()> {
        let records = super::xattr::pax_records(&node.path());
        self.pax(node, records)
    }

    /// The same for a file already open (no second lookup of its path).
    fn xattrs_of(&mut self, node: &Node, file: &File) -> io::Result<()> {
        let records = super::xattr::pax_records_fd(file.as_fd());
        self.pax(node, records)
    }

    /// A quilted file's member: one PAX header with its extended attributes and the quilt
    /// reference, then the file's header with size 0 (its data is in the quilt).
    fn quilted(
        &mut self,
        node: &Node,
        name: &Path,
        file: &File,
        stat: &Stat,
        reference: &super::quilt::QuiltRef,
    ) -> io::Result<()> {
        let mut records = self.readable(node, super::xattr::pax_records_fd(file.as_fd()));
        records.extend(reference.pax_records());
        let (header, data) = pax_header(&records, &node.name);
        self.builder.append(&header, &data[..])?;
        let mut header = self.header(stat, EntryType::Regular);
        header.set_size(0);
        self.builder.append_data(&mut header, name, io::empty())
    }

    /// `node`'s extended attributes as read: none when it has gone (it is reported where its
    /// data is read), none with a warning when they could not be read.
    fn readable(
        &mut self,
        node: &Node,
        records: io::Result<Vec<(String, Vec<u8>)>>,
    ) -> Vec<(String, Vec<u8>)> {
        match records {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                warn(
                    self.report,
                    &node.path(),
                    format!("cannot read extended attributes: {e}"),
                    true,
                );
                Vec::new()
            }
        }
    }

    fn pax(&mut self, node: &Node, records: io::Result<Vec<(String, Vec<u8>)>>) -> io::Result<()> {
        let records = self.readable(node, records);
        if !records.is_empty() {
            let (header, data) = pax_header(&records, &node.name);
            self.builder.append(&header, &data[..])?;
        }
        Ok(())
    }

    fn dumpdir(&mut self, node: &Node, dumpdir: &[u8]) -> io::Result<()> {
        self.xattrs(node)?;
        let mut header = self.header(&node.stat, EntryType::new(b'D'));
        header.set_size(dumpdir.len() as u64);
        let mut name = node.name.clone();
        name.push(b'/');
        self.builder
            .append_data(&mut header, Path::new(OsStr::from_bytes(&name)), dumpdir)?;
        self.report.counts.directories += 1;
        Ok(())
    }

    /// A directory as a plain member (no dumpdir), for pickers.
    fn plain_dir(&mut self, node: &Node) -> io::Result<()> {
        self.xattrs(node)?;
        let mut header = self.header(&node.stat, EntryType::Directory);
        let name = Path::new(OsStr::from_bytes(&node.name));
        self.builder.append_data(&mut header, name, io::empty())?;
        self.report.counts.directories += 1;
        Ok(())
    }

    /// Records an unchanged file's name as the target later links of its inode point at.
    fn remember_link(&mut self, node: &Node) {
        if node.stat.is_file() && node.stat.nlink > 1 {
            self.links
                .entry((node.stat.dev, node.stat.ino))
                .or_insert_with(|| node.name.clone());
        }
    }

    /// `node`, listed in the directory `parent` (its node and name) if it was walked.
    fn member(&mut self, node: &Node, parent: Option<(usize, &Node)>) -> anyhow::Result<()> {
        let name = Path::new(OsStr::from_bytes(&node.name));
        if node.stat.is_file() {
            return self.file(node, name, parent);
        }
        self.xattrs(node)?;
        if let Some(target) = &node.target {
            let mut header = self.header(&node.stat, EntryType::Symlink);
            self.builder
                .append_link(&mut header, name, Path::new(OsStr::from_bytes(target)))?;
            self.report.counts.symlinks += 1;
        } else {
            let kind = if node.stat.is_fifo() {
                EntryType::Fifo
            } else if node.stat.is_char_device() {
                EntryType::Char
            } else {
                EntryType::Block
            };
            let mut header = self.header(&node.stat, kind);
            if kind != EntryType::Fifo {
                let rdev = node.stat.rdev;
                header.set_device_major(libc::major(rdev))?;
                header.set_device_minor(libc::minor(rdev))?;
            }
            self.builder.append_data(&mut header, name, io::empty())?;
            self.report.counts.special += 1;
        }
        Ok(())
    }

    /// Opens the file of `node` relative to its directory, opened once for all its files (a
    /// lookup of one name instead of the whole path) and only if it is still the directory
    /// the scan saw; never by a path that may lead elsewhere.
    fn open(&mut self, node: &Node, parent: Option<(usize, &Node)>) -> io::Result<File> {
        let Some((index, dir)) = parent else {
            // The root itself: a file, named in the configuration.
            return std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(OPEN_FILE)
                .open(node.path());
        };
        if self.dir.as_ref().is_none_or(|(open, _)| *open != index) {
            let opened = open_dir(&dir.path(), Some(&dir.stat), libc::O_PATH)
                .map_err(|e| format!("its directory cannot be opened: {e}"));
            self.dir = Some((index, opened));
        }
        match &self.dir {
            Some((_, Ok(dir))) => {
                let base = c_path(basename(&node.name))?;
                open_at(dir.as_raw_fd(), &base, OPEN_FILE).map(File::from)
            }
            Some((_, Err(e))) => Err(io::Error::other(e.clone())),
            None => unreachable!("opened above"),
        }
    }

    fn file(
        &mut self,
        node: &Node,
        name: &Path,
        parent: Option<(usize, &Node)>,
    ) -> anyhow::Result<()> {
        let key = (node.stat.dev, node.stat.ino);
        if node.stat.nlink > 1 {
            if let Some(first) = self.links.get(&key).cloned() {
                let mut header = self.header(&node.stat, EntryType::Link);
                let target = Path::new(OsStr::from_bytes(&first));
                self.builder.append_link(&mut header, name, target)?;
                self.report.counts.hardlinks += 1;
                return Ok(());
            }
        }
        let file = match self.open(node, parent) {
            Ok(f) => f,
            Err(e) => {
                let vanished = e.kind() == io::ErrorKind::NotFound;
                let problem = if vanished {
                    "vanished before it was read".to_string()
                } else if e.raw_os_error() == Some(libc::ELOOP) {
                    "was replaced by a symbolic link after the scan; not archived".to_string()
                } else {
                    format!("cannot open: {e}")
                };
                warn(self.report, &node.path(), problem, !vanished);
                self.failed.push(node.name.clone());
                return Ok(());
            }
        };
        // The open file's own metadata: the path may have been replaced since the scan.
        let stat = file
            .metadata()
            .map(|m| Stat::of_metadata(&m))
            .unwrap_or(node.stat);
        if !stat.is_file() {
            warn(
                self.report,
                &node.path(),
                "is no longer a regular file (replaced after the scan); not archived",
                true,
            );
            self.failed.push(node.name.clone());
            return Ok(());
        }
        // A regular file: reads may wait as usual again (FUSE, leases). F_SETFL cannot fail
        // on an open descriptor with these flags.
        // SAFETY: an open descriptor owned by `file`.
        unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, 0) };
        let size = stat.size;
        if let Some(quilter) = self.quilter.as_deref_mut().filter(|q| size >= q.min_size()) {
            match quilter.offer(&file, size, &node.path())? {
                Offered::Quilted(reference) => {
                    self.quilted(node, name, &file, &stat, &reference)?;
                    if stat.nlink > 1 {
                        self.links.insert(key, node.name.clone());
                    }
                    self.report.counts.files += 1;
                    self.report.counts.content_bytes += size;
                    return Ok(());
                }
                Offered::Inline(Some(problem)) => warn(self.report, &node.path(), problem, false),
                Offered::Inline(None) => {}
            }
        }
        self.xattrs_of(node, &file)?;
        let mut header = self.header(&stat, EntryType::Regular);
        header.set_size(size);
        if self.buffer.is_empty() {
            self.buffer = vec![0; READ_BUFFER];
        }
        let mut body = ExactSize {
            inner: Buffered {
                file,
                buffer: &mut self.buffer,
                at: 0,
                end: 0,
            }
            .take(size),
            remaining: size,
            padded: 0,
            error: None,
        };
        self.builder.append_data(&mut header, name, &mut body)?;
        let mut grew = || {
            let mut probe = [0u8; 1];
            matches!(body.inner.get_mut().read(&mut probe), Ok(1))
        };
        let problem = if let Some(e) = &body.error {
            Some((
                format!(
                    "read failed after {} bytes, rest zero-filled: {e}",
                    size - body.padded
                ),
                true,
            ))
        } else if body.padded > 0 {
            Some((
                format!(
                    "shrank by {} bytes while being read; zero-filled",
                    body.padded
                ),
                false,
            ))
        } else if grew() {
            Some((
                format!("grew while being read; archived its first {size} bytes"),
                false,
            ))
        } else {
            None
        };
        if let Some((problem, unreadable)) = problem {
            warn(self.report, &node.path(), problem, unreadable);
            // Not as the state says it is: the next DIFF sends it again.
            self.failed.push(node.name.clone());
        }
        if stat.nlink > 1 {
            self.links.insert(key, node.name.clone());
        }
        self.report.counts.files += 1;
        self.report.counts.content_bytes += size;
        Ok(())
    }
}

/// A file read through a borrowed buffer (`std::io::BufReader` owns its own).
struct Buffered<'b> {
    file: File,
    buffer: &'b mut [u8],
    at: usize,
    end: usize,
}

impl Read for Buffered<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == self.end {
            if out.len() >= self.buffer.len() {
                return self.file.read(out);
            }
            self.end = self.file.read(self.buffer)?;
            self.at = 0;
        }
        let n = out.len().min(self.end - self.at);
        out[..n].copy_from_slice(&self.buffer[self.at..self.at + n]);
        self.at += n;
        Ok(n)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        let (h, data) = pax_header(
            &[("SCHILY.xattr.user.a".into(), b"xyz".to_vec())],
            b"dir/file",
        );
        let text = String::from_utf8(data.clone()).unwrap();
        let (len, _) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), data.len());
        assert_eq!(h.entry_type(), EntryType::XHeader);
        // 9 + 99 crosses a digit boundary: the length must still be exact.
        let (_, data) = pax_header(&[("k".into(), vec![b'v'; 95])], b"f");
        let text = String::from_utf8(data.clone()).unwrap();
        assert_eq!(
            text.split_once(' ').unwrap().0.parse::<usize>().unwrap(),
            data.len()
        );
    }

    #[test]
    fn a_file_that_shrank_is_zero_filled_to_its_announced_size() {
        let data = b"only ten b";
        let mut r = ExactSize {
            inner: (&data[..]).take(16),
            remaining: 16,
            padded: 0,
            error: None,
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 16);
        assert_eq!(&out[..10], data);
        assert!(out[10..].iter().all(|b| *b == 0));
        assert_eq!(r.padded, 6);
    }

    #[test]
    fn member_names_of_children_are_those_of_their_joined_paths() {
        for (dir, entry) in [
            ("/", "etc"),
            ("/srv", "a"),
            ("/srv/", "a"),
            ("//srv", "a b"),
            ("/srv/.", "x"),
        ] {
            let joined = Path::new(dir).join(entry);
            let parent = member_name(Path::new(dir));
            let name = child_name(&parent, entry.as_bytes());
            assert_eq!(name, member_name(&joined), "{dir} {entry}");
            assert_eq!(path_of(&name).as_os_str(), joined.as_os_str());
            assert_eq!(path_of(&parent).as_os_str(), dir);
        }
    }

    #[test]
    fn the_walk_finds_each_member_once_in_order_and_compares_it_with_the_base() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        fs::create_dir_all(root.join("b/c")).unwrap();
        fs::write(root.join("a"), b"1").unwrap();
        fs::write(root.join("b/c/d"), b"2").unwrap();
        std::os::unix::fs::symlink("a", root.join("l")).unwrap();
        fs::write(root.join("skip"), b"3").unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(root.join("s")).unwrap();
        let source = |base| TreeSource {
            root: root.clone(),
            excludes: vec![root.join("sk*")],
            one_file_system: false,
            base,
            quilter: None,
        };
        let scan = source(Base::Full).scan().unwrap();
        assert!(
            scan.report.warnings.is_empty(),
            "{:?}",
            scan.report.warnings
        );
        let names: Vec<PathBuf> = scan
            .nodes
            .iter()
            .map(|n| n.path().strip_prefix(&root).unwrap().to_path_buf())
            .collect();
        let expected = ["", "a", "b", "b/c", "b/c/d", "l"].map(PathBuf::from);
        assert_eq!(names, expected, "sockets and excluded paths left out");
        assert_eq!(scan.nodes[0].children, vec![1, 2, 5]);
        assert_eq!(scan.nodes[4].parent, Some(3));
        assert_eq!(scan.nodes[5].target.as_deref(), Some(&b"a"[..]));
        let metadata = fs::symlink_metadata(root.join("b/c/d")).unwrap();
        assert_eq!(scan.nodes[4].stat.ino, metadata.ino());
        assert_eq!(scan.nodes[4].stat.dev, metadata.dev());
        assert_eq!(scan.nodes[4].stat.ctime_nsec, metadata.ctime_nsec());

        let base = new_state(scan.nodes, Vec::new());
        assert_eq!(base.entries.len(), 6);
        let again = source(Base::Loaded(base.clone())).scan().unwrap();
        let changes = Changes::new(&again.nodes, Some(&base));
        assert_eq!(changes.changed, [true, false, true, true, false, false]);
        assert_eq!(
            dumpdir_listing(&again.nodes[0], &again.nodes, &changes),
            b"Na\0Db\0Nl\0\0"
        );
        fs::write(root.join("b/c/d"), b"22").unwrap();
        let changed = source(Base::Loaded(base.clone())).scan().unwrap();
        let changes = Changes::new(&changed.nodes, Some(&base));
        assert_eq!(changes.changed, [true, false, true, true, true, false]);
        assert_eq!(
            dumpdir_listing(&changed.nodes[3], &changed.nodes, &changes),
            b"Yd\0\0"
        );
    }

    #[test]
    fn names_that_sort_before_a_slash_are_compared_with_their_own_base_entries() {
        // The walk's pre-order is `a, a/x, a/y, a-b, a.c, b`; byte order puts `a-b` and `a.c`
        // before `a/x`. Every unchanged file must be found, whichever order it comes in, and
        // a new one (`a/new`) in between must not throw the others off.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        fs::create_dir_all(root.join("a")).unwrap();
        for name in ["a/x", "a/y", "a-b", "a.c", "b"] {
            fs::write(root.join(name), name).unwrap();
        }
        let source = |base| TreeSource {
            root: root.clone(),
            excludes: vec![],
            one_file_system: false,
            base,
            quilter: None,
        };
        let base = new_state(source(Base::Full).scan().unwrap().nodes, Vec::new());
        fs::write(root.join("a/new"), b"n").unwrap();
        fs::write(root.join("a.c"), b"changed size").unwrap();
        let again = source(Base::Loaded(base.clone())).scan().unwrap();
        let changes = Changes::new(&again.nodes, Some(&base));
        let changed: Vec<String> = again
            .nodes
            .iter()
            .zip(&changes.changed)
            .filter(|(n, changed)| **changed && !n.stat.is_dir())
            .map(|(n, _)| display(n.path().strip_prefix(&root).unwrap()))
            .collect();
        assert_eq!(changed, ["a/new", "a.c"]);
    }

    /// The files a stream holds (not its directories' dumpdirs).
    fn files_in(stream: &[u8]) -> Vec<String> {
        let mut archive = tar::Archive::new(stream);
        let mut names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.header().entry_type() == EntryType::Regular)
            .map(|e| {
                e.path()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }

    /// Quilts files named `big*` (by reference to a fixed key), leaves `changing*` inline
    /// with a warning, and records what it was offered.
    struct FakeQuilter(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl Quilter for FakeQuilter {
        fn min_size(&self) -> u64 {
            10
        }
        fn offer(&mut self, file: &File, size: u64, path: &Path) -> anyhow::Result<Offered> {
            assert_eq!(file.metadata().unwrap().len(), size);
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            self.0.lock().unwrap().push(name.clone());
            Ok(if name.starts_with("big") {
                Offered::Quilted(crate::schema::quilt::QuiltRef {
                    key: format!("quilt/content/{}.zst.gpg", "c".repeat(64)),
                    size,
                    sha256: [7; 32],
                })
            } else {
                Offered::Inline(Some("file changed as we read it".into()))
            })
        }
    }

    #[test]
    fn large_files_are_offered_to_the_quilter_and_quilted_ones_become_references() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("big"), vec![1u8; 100]).unwrap();
        fs::hard_link(root.join("big"), root.join("big-link")).unwrap();
        fs::write(root.join("changing"), vec![2u8; 50]).unwrap();
        fs::write(root.join("small"), b"tiny").unwrap();
        let offered = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut source = TreeSource {
            root: root.clone(),
            excludes: Vec::new(),
            one_file_system: false,
            base: Base::Full,
            quilter: Some(Box::new(FakeQuilter(offered.clone()))),
        };
        let mut out = Vec::new();
        let report = source.write_to(&mut out).unwrap();
        // Each inode once, at or above the size only.
        let mut seen = offered.lock().unwrap().clone();
        seen.sort();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[1], "changing");
        assert!(seen[0].starts_with("big"), "{seen:?}");
        assert_eq!(report.counts.content_bytes, 100 + 50 + 4);
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert!(report.warnings[0].problem.contains("changed as we read it"));
        let mut archive = tar::Archive::new(&out[..]);
        let mut quilted = 0;
        for entry in archive.entries().unwrap() {
            let mut e = entry.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let kind = e.header().entry_type();
            if kind != EntryType::Regular {
                continue;
            }
            let size = e.header().size().unwrap();
            let reference = e.pax_extensions().unwrap().map(|records| {
                let records: Vec<(String, Vec<u8>)> = records
                    .map(|r| {
                        let r = r.unwrap();
                        (r.key().unwrap().to_string(), r.value_bytes().to_vec())
                    })
                    .collect();
                let view = records.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
                crate::schema::quilt::QuiltRef::from_pax(view)
                    .unwrap()
                    .unwrap()
            });
            if name.ends_with("/changing") {
                assert_eq!((size, reference.is_none()), (50, true), "inline");
            } else if name.ends_with("/small") {
                assert_eq!((size, reference.is_none()), (4, true));
            } else {
                assert!(name.contains("/big"), "{name}");
                assert_eq!(size, 0, "{name}: the data is in the quilt");
                assert_eq!(reference.unwrap().size, 100);
                quilted += 1;
            }
        }
        assert_eq!(quilted, 1, "the second name is a link to the first");
    }

    #[test]
    fn a_state_file_is_parsed_during_the_walk_and_a_damaged_one_makes_a_diff_of_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("a"), b"1").unwrap();
        fs::write(root.join("b"), b"2").unwrap();
        let source = |base| TreeSource {
            root: root.clone(),
            excludes: Vec::new(),
            one_file_system: false,
            base,
            quilter: None,
        };
        let mut full = Vec::new();
        let report = source(Base::Full).write_to(&mut full).unwrap();
        assert_eq!(files_in(&full), ["a", "b"]);
        let run: RunId = "20261101T030000Z".parse().unwrap();
        let mut state = report.state.unwrap();
        state.run = Some(run);
        let id = Identity::new("dir/t", None);
        let path = dir.path().join("t.state");
        state.save(&path, &id).unwrap();
        fs::write(root.join("b"), b"22").unwrap();
        let file = || Base::File {
            path: path.clone(),
            id: id.clone(),
            run,
        };

        let mut diff = Vec::new();
        let report = source(file()).write_to(&mut diff).unwrap();
        assert_eq!(files_in(&diff), ["b"], "only the changed file");
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);

        // A sound header (the planner read it) over an entry that does not parse.
        let mut text = fs::read(&path).unwrap();
        text.extend_from_slice(b"garbage\n");
        fs::write(&path, text).unwrap();
        let mut diff = Vec::new();
        let report = source(file()).write_to(&mut diff).unwrap();
        assert_eq!(
            files_in(&diff),
            ["a", "b"],
            "nothing to compare with: every file"
        );
        let [w] = &report.warnings[..] else {
            panic!("{:?}", report.warnings)
        };
        assert_eq!(w.path, path.display().to_string());
        assert!(
            w.problem.contains("malformed entry") && w.problem.contains("holds every file"),
            "{}",
            w.problem
        );

        // The state of another run (replaced after planning) is not compared with either.
        state.run = Some("20261102T030000Z".parse().unwrap());
        state.save(&path, &id).unwrap();
        let mut diff = Vec::new();
        let report = source(file()).write_to(&mut diff).unwrap();
        assert_eq!(files_in(&diff), ["a", "b"]);
        assert!(report.warnings[0].problem.contains("not 20261101T030000Z"));
    }

    #[test]
    fn a_file_or_directory_replaced_after_the_scan_is_not_read_through_its_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        fs::create_dir_all(&root).unwrap();
        fs::write(dir.path().join("secret"), b"not in the tree").unwrap();
        fs::write(root.join("link"), b"1").unwrap();
        fs::write(root.join("fifo"), b"2").unwrap();
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("sub/secret"), b"3").unwrap();
        let source = TreeSource {
            root: root.clone(),
            excludes: Vec::new(),
            one_file_system: false,
            base: Base::Full,
            quilter: None,
        };
        let Scan {
            nodes, mut report, ..
        } = source.scan().unwrap();
        // Between the scan and the read, each file is replaced.
        fs::remove_file(root.join("link")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();
        fs::remove_file(root.join("fifo")).unwrap();
        nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        // And a directory, by a link to one holding a file of the same name.
        fs::rename(root.join("sub"), dir.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("sub")).unwrap();
        let changes = Changes::new(&nodes, None);
        let mut out = Vec::new();
        let failed = {
            let mut emit = Emit::new(&mut out, &mut report);
            // (A FIFO opened to be read would block here for ever.)
            emit_tree(&mut emit, &nodes, &changes).unwrap();
            let failed = std::mem::take(&mut emit.failed);
            emit.builder.into_inner().unwrap().flush().unwrap();
            failed
        };
        assert!(
            out.windows(5).any(|w| w == b"ustar"),
            "a tar stream came out"
        );
        assert_eq!(failed.len(), 3, "{failed:?}");
        let problems: Vec<&str> = report.warnings.iter().map(|w| w.problem.as_str()).collect();
        assert!(
            problems.iter().any(|p| p.contains("symbolic link")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("no longer a regular file")),
            "{problems:?}"
        );
        let swapped = |p: &&str| p.contains("no longer the same directory");
        assert!(problems.iter().any(swapped), "{problems:?}");
        assert!(!out.windows(15).any(|w| w == b"not in the tree"));
    }

    #[test]
    fn excludes_are_paths_or_globs() {
        let m = exclude_matcher(&["/home/*/cache".into(), "/opt/useless".into()]).unwrap();
        assert!(m.is_match("/home/alice/cache"));
        assert!(!m.is_match("/home/alice/deep/cache"), "* does not cross /");
        assert!(m.is_match("/opt/useless"));
        assert!(!m.is_match("/opt/useless2"));
    }
}
