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

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use tar::{Builder, EntryType, Header};

use super::state::{Meta, State};
use super::{Report, Source, Warning};

pub struct TreeSource {
    pub root: PathBuf,
    /// Absolute paths or globs (`*`, `?`, `[…]`, not crossing `/`) left out with everything
    /// below them.
    pub excludes: Vec<PathBuf>,
    /// Do not descend into directories on other file systems (their mount points are kept).
    pub one_file_system: bool,
    /// The base run's state: a DIFF against it, or a FULL when `None`.
    pub base: Option<State>,
}

/// One scanned path.
struct Node {
    path: PathBuf,
    name: Vec<u8>,
    meta: Metadata,
    target: Option<PathBuf>,
    /// Directories: member names and whether each is a directory.
    children: Vec<(Vec<u8>, bool)>,
    /// A directory whose listing failed: no dumpdir for it (that would delete its contents on
    /// replay), and nothing of it in the new state.
    unlisted: bool,
}

fn kind_of(meta: &Metadata) -> u8 {
    let ft = meta.file_type();
    if ft.is_dir() {
        b'd'
    } else if ft.is_symlink() {
        b'l'
    } else if ft.is_fifo() {
        b'p'
    } else if ft.is_char_device() {
        b'c'
    } else if ft.is_block_device() {
        b'b'
    } else {
        b'f'
    }
}

fn state_meta(node: &Node) -> Meta {
    let m = &node.meta;
    Meta {
        kind: kind_of(m),
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        size: if m.is_dir() { 0 } else { m.len() },
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        ino: m.ino(),
        dev: m.dev(),
        target: node
            .target
            .as_ref()
            .map(|t| t.as_os_str().as_bytes().to_vec())
            .unwrap_or_default(),
    }
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

fn basename(name: &[u8]) -> Vec<u8> {
    name.rsplit(|b| *b == b'/').next().unwrap_or(name).to_vec()
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

impl Source for TreeSource {
    fn format(&self) -> &'static str {
        "tar"
    }

    fn write_to(&mut self, out: &mut dyn Write) -> anyhow::Result<Report> {
        let Scan {
            nodes, mut report, ..
        } = self.scan()?;
        let changes = Changes::new(&nodes, self.base.as_ref());
        let mut emit = Emit::new(out, &mut report);
        emit_tree(&mut emit, &nodes, &changes)?;
        let failed = std::mem::take(&mut emit.failed);
        emit.builder.into_inner()?;
        report.state = Some(new_state(&nodes, failed));
        Ok(report)
    }
}

impl TreeSource {
    /// Every path under the root that is not excluded, in pre-order. An unreadable root fails
    /// the run; anything below it is a warning.
    fn scan(&self) -> anyhow::Result<Scan> {
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
        scan.visit(&self.root, root_meta);
        Ok(scan)
    }
}

/// Which scanned nodes go into this archive (`Y`) rather than being unchanged since the base
/// run (`N`), by index and by member name.
struct Changes<'n> {
    changed: Vec<bool>,
    by_name: HashMap<&'n [u8], usize>,
}

impl<'n> Changes<'n> {
    fn new(nodes: &'n [Node], base: Option<&State>) -> Self {
        // Y or N for every non-directory: unchanged means the base state has it, identical.
        let changed = nodes
            .iter()
            .map(|n| {
                n.meta.is_dir()
                    || base.is_none_or(|b| b.entries.get(&n.name) != Some(&state_meta(n)))
            })
            .collect();
        let by_name = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_slice(), i))
            .collect();
        Changes { changed, by_name }
    }

    fn named(&self, name: &[u8]) -> bool {
        self.by_name.get(name).is_some_and(|i| self.changed[*i])
    }
}

/// The dumpdir of directory `node`: per member a code (`D` a directory, `Y` in this archive,
/// `N` unchanged) and its name, each ended by a NUL, then a closing NUL.
fn dumpdir_listing(node: &Node, changes: &Changes) -> Vec<u8> {
    let mut dumpdir = Vec::new();
    for (child, is_dir) in &node.children {
        let mut full = node.name.clone();
        if full != b"." {
            full.push(b'/');
        } else {
            full.clear();
        }
        full.extend_from_slice(child);
        let code = if *is_dir {
            b'D'
        } else if changes.named(&full) {
            b'Y'
        } else {
            b'N'
        };
        dumpdir.push(code);
        dumpdir.extend_from_slice(child);
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
    for node in nodes.iter().filter(|n| n.meta.is_dir() && n.unlisted) {
        emit.plain_dir(node)?;
    }
    for node in nodes.iter().filter(|n| n.meta.is_dir() && !n.unlisted) {
        emit.dumpdir(node, &dumpdir_listing(node, changes))?;
    }
    for (i, node) in nodes.iter().enumerate() {
        if node.meta.is_dir() {
            continue;
        }
        if changes.changed[i] {
            emit.member(node)?;
        } else {
            emit.remember_link(node);
            emit.report.counts.unchanged += 1;
        }
    }
    Ok(())
}

/// The state the next DIFF compares against. What was not listed or could not be archived
/// (`failed`) is left out of it, so that the next DIFF sends it again.
fn new_state(nodes: &[Node], failed: Vec<Vec<u8>>) -> State {
    let mut state = State::default();
    for node in nodes.iter().filter(|n| !n.unlisted) {
        state.entries.insert(node.name.clone(), state_meta(node));
    }
    for name in failed {
        state.entries.remove(&name);
    }
    state
}

/// s3-sysbackup's picker: a program prints paths, one per line; the archive holds exactly those
/// (a listed directory without what is below it), each after its parent directories, so their
/// owners and modes come back too. A path that vanished is a warning; a relative one an error.
pub struct PickedPaths {
    pub command: Vec<String>,
}

impl Node {
    fn new(path: &Path, meta: Metadata, target: Option<PathBuf>) -> Node {
        Node {
            path: path.to_path_buf(),
            name: member_name(path),
            meta,
            target,
            children: Vec::new(),
            unlisted: false,
        }
    }
}

fn node_at(path: &Path) -> io::Result<Node> {
    let meta = fs::symlink_metadata(path)?;
    let target = if meta.file_type().is_symlink() {
        Some(fs::read_link(path)?)
    } else {
        None
    };
    Ok(Node::new(path, meta, target))
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
        let mut emit = Emit::new(out, &mut report);
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
                    Ok(node) if node.meta.is_dir() => emit.plain_dir(&node)?,
                    Ok(node) => emit.member(&node)?,
                    Err(e) => {
                        let vanished = e.kind() == io::ErrorKind::NotFound;
                        warn(emit.report, p, format!("cannot read: {e}"), !vanished);
                    }
                }
            }
        }
        emit.builder.into_inner()?;
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

impl Scan {
    fn warn(&mut self, path: &Path, problem: impl Into<String>, unreadable: bool) {
        warn(&mut self.report, path, problem, unreadable);
    }

    /// Adds `path` (and below it) in pre-order; returns whether it was added.
    fn visit(&mut self, path: &Path, meta: Metadata) -> bool {
        let ft = meta.file_type();
        if ft.is_socket() {
            log::debug!("{}: socket skipped", display(path));
            return false;
        }
        let target = if ft.is_symlink() {
            match fs::read_link(path) {
                Ok(t) => Some(t),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.warn(path, "vanished before it was read", false);
                    return false;
                }
                Err(e) => {
                    self.warn(path, format!("cannot read link: {e}"), true);
                    return false;
                }
            }
        } else {
            None
        };
        let index = self.nodes.len();
        let is_dir = ft.is_dir();
        let dev = meta.dev();
        self.nodes.push(Node::new(path, meta, target));
        if !is_dir {
            return true;
        }
        if self.one_file_system.is_some_and(|root_dev| root_dev != dev) {
            // A mount point: kept, not entered (and its contents never purged on replay).
            self.nodes[index].unlisted = true;
            return true;
        }
        let mut children: Vec<PathBuf> = match fs::read_dir(path) {
            Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
            Err(e) => {
                let unreadable = e.kind() != io::ErrorKind::NotFound;
                self.warn(path, format!("cannot list directory: {e}"), unreadable);
                self.nodes[index].unlisted = true;
                return true;
            }
        };
        children.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
        let mut listed = Vec::new();
        for child in children {
            if self.excludes.is_match(&child) {
                continue;
            }
            match fs::symlink_metadata(&child) {
                Ok(m) => {
                    let child_is_dir = m.is_dir();
                    if self.visit(&child, m) {
                        listed.push((basename(child.as_os_str().as_bytes()), child_is_dir));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.warn(&child, "vanished before it was read", false)
                }
                Err(e) => self.warn(&child, format!("cannot stat: {e}"), true),
            }
        }
        self.nodes[index].children = listed;
        true
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
}

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
        }
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

    fn xattrs(&mut self, node: &Node) -> io::Result<()> {
        let records = match super::xattr::pax_records(&node.path) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                warn(
                    self.report,
                    &node.path,
                    format!("cannot read extended attributes: {e}"),
                    true,
                );
                return Ok(());
            }
        };
        if !records.is_empty() {
            let (header, data) = pax_header(&records, &node.name);
            self.builder.append(&header, &data[..])?;
        }
        Ok(())
    }

    fn dumpdir(&mut self, node: &Node, dumpdir: &[u8]) -> io::Result<()> {
        self.xattrs(node)?;
        let mut header = self.header(&node.meta, EntryType::new(b'D'));
        header.set_size(dumpdir.len() as u64);
        let mut name = node.name.clone();
        name.push(b'/');
        self.builder.append_data(
            &mut header,
            Path::new(std::ffi::OsStr::from_bytes(&name)),
            dumpdir,
        )?;
        self.report.counts.directories += 1;
        Ok(())
    }

    /// A directory as a plain member (no dumpdir), for pickers.
    fn plain_dir(&mut self, node: &Node) -> io::Result<()> {
        self.xattrs(node)?;
        let mut header = self.header(&node.meta, EntryType::Directory);
        let name = Path::new(std::ffi::OsStr::from_bytes(&node.name)).to_path_buf();
        self.builder.append_data(&mut header, &name, io::empty())?;
        self.report.counts.directories += 1;
        Ok(())
    }

    /// Records an unchanged file's name as the target later links of its inode point at.
    fn remember_link(&mut self, node: &Node) {
        if node.meta.is_file() && node.meta.nlink() > 1 {
            self.links
                .entry((node.meta.dev(), node.meta.ino()))
                .or_insert_with(|| node.name.clone());
        }
    }

    fn member(&mut self, node: &Node) -> anyhow::Result<()> {
        let name = Path::new(std::ffi::OsStr::from_bytes(&node.name)).to_path_buf();
        let ft = node.meta.file_type();
        if ft.is_file() {
            return self.file(node, &name);
        }
        self.xattrs(node)?;
        if let Some(target) = &node.target {
            let mut header = self.header(&node.meta, EntryType::Symlink);
            self.builder.append_link(&mut header, &name, target)?;
            self.report.counts.symlinks += 1;
        } else {
            let kind = if ft.is_fifo() {
                EntryType::Fifo
            } else if ft.is_char_device() {
                EntryType::Char
            } else {
                EntryType::Block
            };
            let mut header = self.header(&node.meta, kind);
            if kind != EntryType::Fifo {
                let rdev = node.meta.rdev();
                header.set_device_major(libc::major(rdev))?;
                header.set_device_minor(libc::minor(rdev))?;
            }
            self.builder.append_data(&mut header, &name, io::empty())?;
            self.report.counts.special += 1;
        }
        Ok(())
    }

    fn file(&mut self, node: &Node, name: &Path) -> anyhow::Result<()> {
        let key = (node.meta.dev(), node.meta.ino());
        if node.meta.nlink() > 1 {
            if let Some(first) = self.links.get(&key).cloned() {
                let mut header = self.header(&node.meta, EntryType::Link);
                let target = Path::new(std::ffi::OsStr::from_bytes(&first));
                self.builder.append_link(&mut header, name, target)?;
                self.report.counts.hardlinks += 1;
                return Ok(());
            }
        }
        let file = match File::open(&node.path) {
            Ok(f) => f,
            Err(e) => {
                let vanished = e.kind() == io::ErrorKind::NotFound;
                let problem = if vanished {
                    "vanished before it was read".to_string()
                } else {
                    format!("cannot open: {e}")
                };
                warn(self.report, &node.path, problem, !vanished);
                self.failed.push(node.name.clone());
                return Ok(());
            }
        };
        // The open file's own metadata: the path may have been replaced since the scan.
        let meta = file.metadata().unwrap_or_else(|_| node.meta.clone());
        let size = meta.len();
        self.xattrs(node)?;
        let mut header = self.header(&meta, EntryType::Regular);
        header.set_size(size);
        let mut body = ExactSize {
            inner: BufReader::with_capacity(1 << 20, file).take(size),
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
            warn(self.report, &node.path, problem, unreadable);
            // Not as the state says it is: the next DIFF sends it again.
            self.failed.push(node.name.clone());
        }
        if meta.nlink() > 1 {
            self.links.insert(key, node.name.clone());
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
    fn excludes_are_paths_or_globs() {
        let m = exclude_matcher(&["/home/*/cache".into(), "/opt/useless".into()]).unwrap();
        assert!(m.is_match("/home/alice/cache"));
        assert!(!m.is_match("/home/alice/deep/cache"), "* does not cross /");
        assert!(m.is_match("/opt/useless"));
        assert!(!m.is_match("/opt/useless2"));
    }
}
