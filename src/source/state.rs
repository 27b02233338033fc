//! Incremental state: what a directory set looked like at its last committed run, kept in
//! DiffDir and compared against at the next DIFF; and, for a Subversion set, the last revision
//! its last committed run dumped.
//!
//! One line per path with everything that decides "changed": type, mode, owner, size, mtime,
//! ctime (catches content rewritten with the old mtime, and mode/owner changes), inode and
//! device (catch a replaced file). The file names the run it describes; a DIFF only builds on a
//! state whose run is the DIFF's base, so a state from a failed run can never be used. It is
//! written atomically, and only after the run's manifest is committed.
//!
//! Every file belongs to one set in one cycle: its name encodes both injectively (no two
//! identities share a file), and the identity is also written inside and checked on load, so a
//! file can never serve as another set's base. Files of s3nap before that (format 1, named
//! lossily: `/srv/a_b` and `/srv/a/b` shared one) are read only where their content proves
//! whose they are ([`legacy_path`]).

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};

use crate::schema::layout::RunId;

const MAGIC: &str = "s3nap-state";
const VERSION: &str = "2";
const LEGACY_VERSION: &str = "1";
const REVISION_MAGIC: &str = "s3nap-svnrev";
const IDENTITY: &str = "identity";

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

/// Whose a state file is: a set in a cycle (`None` outside any `<Cycle>`, as in manifests).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub set: String,
    pub cycle: Option<String>,
}

/// Bytes kept as they are in file names; everything else (`%`, `+` and `~` included) is `%XX`.
const KEEP: &AsciiSet = &NON_ALPHANUMERIC.remove(b'.').remove(b'-').remove(b'_');

/// Longest file name stem written as the plain encoding; longer ones are shortened and made
/// unique by a hash (file names end at 255 bytes).
const MAX_STEM: usize = 160;

impl Identity {
    pub fn new(set: &str, cycle: Option<&str>) -> Identity {
        Identity {
            set: set.to_string(),
            cycle: cycle.map(str::to_string),
        }
    }

    /// Whose files a set's runs keep.
    pub fn of(set: &crate::config::SetSpec) -> Identity {
        Identity::new(&set.name, set.cycle.name.as_deref())
    }

    /// The injective text form: the set, then `+` and the cycle when there is one, each with
    /// every byte outside `[A-Za-z0-9._-]` written `%XX`. Different identities never share it,
    /// and it never equals an old-format name (those have an `@`, and never a `+` or `%`).
    pub fn key(&self) -> String {
        let mut key = utf8_percent_encode(&self.set, KEEP).to_string();
        if let Some(cycle) = &self.cycle {
            key.push('+');
            key.push_str(&utf8_percent_encode(cycle, KEEP).to_string());
        }
        key
    }

    /// The inverse of [`Identity::key`].
    pub fn from_key(key: &str) -> Option<Identity> {
        let decode = |s: &str| {
            let text = percent_decode_str(s).decode_utf8().ok()?.into_owned();
            // Only the canonical encoding: one identity, one key.
            (utf8_percent_encode(&text, KEEP).to_string() == s).then_some(text)
        };
        let (set, cycle) = match key.split_once('+') {
            Some((set, cycle)) => (set, Some(cycle)),
            None => (key, None),
        };
        Some(Identity {
            set: decode(set)?,
            cycle: match cycle {
                Some(c) => Some(decode(c)?),
                None => None,
            },
        })
    }

    /// The file name stem: the key, or for a very long one its beginning, `~` and the SHA-256
    /// of the whole key (`~` never occurs in a key, so the two forms cannot meet).
    fn file_stem(&self) -> String {
        let key = self.key();
        if key.len() <= MAX_STEM {
            return key;
        }
        let digest = hex::encode(Sha256::digest(key.as_bytes()));
        // The key is ASCII: any byte index is a character boundary.
        format!("{}~{digest}", &key[..MAX_STEM - 1 - digest.len()])
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cycle {
            Some(c) => write!(f, "set {} in cycle '{c}'", self.set),
            None => write!(f, "set {} outside any cycle", self.set),
        }
    }
}

/// Where the tree state of `id` lives.
pub fn path(diff_dir: &Path, id: &Identity) -> PathBuf {
    diff_dir.join(format!("{}.state", id.file_stem()))
}

/// Where the last dumped Subversion revision of `id` lives.
pub fn revision_path(diff_dir: &Path, id: &Identity) -> PathBuf {
    diff_dir.join(format!("{}.svnrev", id.file_stem()))
}

/// Where a run stages its file at `path` before its commit: the same name with `.staged`
/// appended, promoted over `path` once the run is committed.
pub fn staged_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(STAGED);
    PathBuf::from(name)
}

/// The file a staged file (from [`staged_path`]) replaces.
pub fn committed_path(staged: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let name = staged.as_os_str().as_bytes();
    let name = name.strip_suffix(STAGED.as_bytes()).unwrap_or(name);
    PathBuf::from(std::ffi::OsStr::from_bytes(name))
}

const STAGED: &str = ".staged";

/// Where s3nap kept the state (`ext` `state`) or revision (`svnrev`) of `id` before files
/// recorded their identity: every character outside `[A-Za-z0-9.-]` became `_`, so several sets
/// may share this name, and nothing read from it counts unless its content proves whose it is.
pub fn legacy_path(diff_dir: &Path, id: &Identity, ext: &str) -> PathBuf {
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
    let cycle = id.cycle.as_deref().unwrap_or("-");
    diff_dir.join(format!("{}@{}.{ext}", safe(&id.set), safe(cycle)))
}

/// Checks the `identity` line of a state or revision file written for `id`.
fn check_identity(path: &Path, line: Option<&str>, id: &Identity) -> Result<(), String> {
    let key = line
        .and_then(|l| l.strip_prefix(IDENTITY))
        .and_then(|k| k.strip_prefix(' '))
        .ok_or_else(|| format!("{}:2: no identity line", path.display()))?;
    if key == id.key() {
        return Ok(());
    }
    let whose = Identity::from_key(key)
        .map(|other| other.to_string())
        .unwrap_or_else(|| format!("'{key}'"));
    Err(format!(
        "{}: holds the state of {whose}, not of {id}",
        path.display()
    ))
}

/// The last revision a committed Subversion run of `id` dumped: `Ok(None)` without a file,
/// `Err` when it is unreadable, malformed or another set's.
pub fn load_revision(path: &Path, id: &Identity) -> Result<Option<(RunId, u64)>, String> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut lines = text.lines();
    let malformed = || format!("{}: malformed", path.display());
    let header = lines.next().ok_or_else(malformed)?;
    let fields = header
        .strip_prefix(REVISION_MAGIC)
        .and_then(|rest| rest.strip_prefix(' '))
        .and_then(|rest| rest.strip_prefix(VERSION))
        .and_then(|rest| rest.strip_prefix(' '))
        .ok_or_else(|| format!("{}: not an s3nap revision file", path.display()))?;
    check_identity(path, lines.next(), id)?;
    parse_revision(fields).ok_or_else(malformed).map(Some)
}

/// A revision file of the old format (`RUN REVISION`, no identity).
pub fn load_legacy_revision(path: &Path) -> Result<Option<(RunId, u64)>, String> {
    match fs::read_to_string(path) {
        Ok(text) => parse_revision(text.trim_end())
            .map(Some)
            .ok_or_else(|| format!("{}: malformed", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn parse_revision(text: &str) -> Option<(RunId, u64)> {
    let mut parts = text.split(' ');
    let run = parts.next()?.parse().ok()?;
    let revision = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((run, revision))
}

pub fn save_revision(path: &Path, id: &Identity, run: RunId, revision: u64) -> io::Result<()> {
    crate::atomic::write_with(path, |w| {
        writeln!(w, "{REVISION_MAGIC} {VERSION} {run} {revision}")?;
        writeln!(w, "{IDENTITY} {}", id.key())
    })
}

impl State {
    /// The state of `id` at `path`: `Ok(None)` when there is no state file; `Err` when it
    /// exists but cannot be used (damaged, of an older format, or another set's).
    pub fn load(path: &Path, id: &Identity) -> Result<Option<State>, String> {
        Self::read(path, Some(id))
    }

    /// A state file of the old format (no identity inside): whose it is, the caller must
    /// prove from its entries.
    pub fn load_legacy(path: &Path) -> Result<Option<State>, String> {
        Self::read(path, None)
    }

    /// The run the state file at `path` describes, from its header alone (`Ok(None)` when
    /// there is no file): enough to decide whether a DIFF can build on it, so that parsing the
    /// entries ([`State::load_describing`]) can overlap the tree walk.
    pub fn peek(path: &Path, id: &Identity) -> Result<Option<Option<RunId>>, String> {
        use std::io::BufRead;
        let file = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let mut head = Vec::new();
        let mut reader = io::BufReader::new(file);
        for _ in 0..2 {
            reader
                .read_until(b'\n', &mut head)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let run = header(path, &mut lines(&head).enumerate(), Some(id))?;
        Ok(Some(run))
    }

    /// The state of `id` at `path`, which must exist and describe `run`.
    pub fn load_describing(path: &Path, id: &Identity, run: RunId) -> Result<State, String> {
        match Self::load(path, id)? {
            Some(state) if state.run == Some(run) => Ok(state),
            Some(state) => Err(format!(
                "{}: describes run {}, not {run}",
                path.display(),
                state
                    .run
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "none".into())
            )),
            None => Err(format!("{}: no longer exists", path.display())),
        }
    }

    fn read(path: &Path, id: Option<&Identity>) -> Result<Option<State>, String> {
        // The whole file at once, parsed as bytes: a state holds a line per path (100,000
        // lines are some 15 MB), so a String and a Vec of fields per line would cost more than
        // reading it.
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let mut lines = lines(&bytes).enumerate();
        let run = header(path, &mut lines, id)?;
        let bad = |n: usize, what: &str| format!("{}:{}: {what}", path.display(), n + 1);
        let mut entries = Vec::new();
        for (n, line) in lines {
            entries.push(parse_entry(line).ok_or_else(|| bad(n, "malformed entry"))?);
        }
        // Written in order, so collecting builds the map in one pass (a later duplicate wins,
        // as inserting one by one would have it).
        Ok(Some(State {
            run,
            entries: entries.into_iter().collect(),
        }))
    }

    /// Whether every entry lies at or below `root` (a member name: `srv/a_b`, or `.` for `/`)
    /// and there is at least one: what proves an old-format state to be a tree's.
    pub fn covers_only(&self, root: &[u8]) -> bool {
        let root = match root {
            b"." => return !self.entries.is_empty(),
            r => r.strip_suffix(b"/").unwrap_or(r),
        };
        !self.entries.is_empty()
            && self.entries.keys().all(|name| {
                name.strip_prefix(root)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"))
            })
    }

    /// Replaces the file at `path` with this state of `id`, atomically.
    pub fn save(&self, path: &Path, id: &Identity) -> io::Result<()> {
        crate::atomic::write_with(path, |w| {
            let run = self.run.map(|r| r.to_string()).unwrap_or_default();
            writeln!(w, "{MAGIC} {VERSION} {run}")?;
            writeln!(w, "{IDENTITY} {}", id.key())?;
            // Lines formatted by hand into large chunks: `write!` per field was most of the
            // time a save took.
            let mut chunk = Vec::with_capacity(CHUNK + 4096);
            for (p, m) in &self.entries {
                format_entry(&mut chunk, p, m);
                if chunk.len() >= CHUNK {
                    w.write_all(&chunk)?;
                    chunk.clear();
                }
            }
            w.write_all(&chunk)
        })
    }
}

/// Bytes of state lines written at once.
const CHUNK: usize = 64 << 10;

/// Checks a state file's header lines (format, and identity unless `id` is `None`: an old
/// format file) and returns the run it describes.
fn header<'a>(
    path: &Path,
    lines: &mut impl Iterator<Item = (usize, &'a [u8])>,
    id: Option<&Identity>,
) -> Result<Option<RunId>, String> {
    let bad = |n: usize, what: &str| format!("{}:{}: {what}", path.display(), n + 1);
    let mut next_text = || -> Result<Option<(usize, &str)>, String> {
        match lines.next() {
            None => Ok(None),
            Some((n, line)) => std::str::from_utf8(line)
                .map(|l| Some((n, l)))
                .map_err(|_| bad(n, "stream did not contain valid UTF-8")),
        }
    };
    let (_, header) = next_text()?.ok_or_else(|| bad(0, "empty"))?;
    let (version, run) = header
        .strip_prefix(MAGIC)
        .and_then(|rest| rest.strip_prefix(' '))
        .and_then(|rest| rest.split_once(' ').or(Some((rest, ""))))
        .ok_or_else(|| bad(0, "not an s3nap state file"))?;
    let expected = if id.is_some() {
        VERSION
    } else {
        LEGACY_VERSION
    };
    if version != expected {
        return Err(bad(
            0,
            &format!("state format {version}, where format {expected} is expected here"),
        ));
    }
    if let Some(id) = id {
        let line = next_text()?.map(|(_, l)| l);
        check_identity(path, line, id)?;
    }
    match run.trim() {
        "" => Ok(None),
        run => run.parse().map(Some).map_err(|e: String| bad(0, &e)),
    }
}

/// The lines of a file as `BufRead::lines` gives them: split at `\n`, a `\r` before it dropped,
/// no empty line after a final `\n`.
fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut pieces = (!bytes.is_empty()).then(|| body.split(|b| *b == b'\n'));
    std::iter::from_fn(move || pieces.as_mut()?.next())
        .map(|l: &[u8]| l.strip_suffix(b"\r").unwrap_or(l))
}

/// One entry line: the hex name, then type, mode, uid, gid, size, mtime, ctime, inode, device
/// and the hex link target, separated by tabs.
fn parse_entry(line: &[u8]) -> Option<(Vec<u8>, Meta)> {
    fn num<T: std::str::FromStr>(field: Option<&[u8]>) -> Option<T> {
        std::str::from_utf8(field?).ok()?.parse().ok()
    }
    fn nanos(field: Option<&[u8]>) -> Option<i128> {
        let text = std::str::from_utf8(field?).ok()?;
        // i64 parses several times faster and holds every time until 2262.
        text.parse::<i64>()
            .map(i128::from)
            .or_else(|_| text.parse())
            .ok()
    }
    let mut f = line.split(|b| *b == b'\t');
    let name = hex::decode(f.next()?).ok()?;
    let meta = Meta {
        kind: *f.next()?.first()?,
        mode: num(f.next())?,
        uid: num(f.next())?,
        gid: num(f.next())?,
        size: num(f.next())?,
        mtime_ns: nanos(f.next())?,
        ctime_ns: nanos(f.next())?,
        ino: num(f.next())?,
        dev: num(f.next())?,
        target: hex::decode(f.next()?).ok()?,
    };
    f.next().is_none().then_some((name, meta))
}

/// Appends the line `parse_entry` reads.
fn format_entry(out: &mut Vec<u8>, name: &[u8], m: &Meta) {
    push_hex(out, name);
    out.push(b'\t');
    let mut kind = [0u8; 4];
    out.extend_from_slice((m.kind as char).encode_utf8(&mut kind).as_bytes());
    for n in [
        u64::from(m.mode),
        u64::from(m.uid),
        u64::from(m.gid),
        m.size,
    ] {
        out.push(b'\t');
        push_decimal(out, n);
    }
    for t in [m.mtime_ns, m.ctime_ns] {
        out.push(b'\t');
        match u64::try_from(t) {
            Ok(t) => push_decimal(out, t),
            Err(_) => out.extend_from_slice(t.to_string().as_bytes()),
        }
    }
    for n in [m.ino, m.dev] {
        out.push(b'\t');
        push_decimal(out, n);
    }
    out.push(b'\t');
    push_hex(out, &m.target);
    out.push(b'\n');
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn id(set: &str, cycle: Option<&str>) -> Identity {
        Identity::new(set, cycle)
    }

    fn sample() -> State {
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
        s
    }

    #[test]
    fn round_trips_and_rejects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let etc = id("dir/etc", Some("daily"));
        let p = path(dir.path(), &etc);
        assert!(p.ends_with("dir%2Fetc+daily.state"), "{}", p.display());
        assert_eq!(State::load(&p, &etc).unwrap(), None);
        let s = sample();
        s.save(&p, &etc).unwrap();
        assert_eq!(State::load(&p, &etc).unwrap(), Some(s));
        fs::write(
            &p,
            format!(
                "{MAGIC} {VERSION} 20261122T031500Z\n{IDENTITY} {}\nnot\ta\tstate\n",
                etc.key()
            ),
        )
        .unwrap();
        let e = State::load(&p, &etc).unwrap_err();
        assert!(e.contains(":3:"), "{e}");
        fs::write(&p, "garbage\n").unwrap();
        assert!(State::load(&p, &etc).is_err());
        // An old-format file is never taken for a current one.
        fs::write(&p, format!("{MAGIC} {LEGACY_VERSION} 20261122T031500Z\n")).unwrap();
        let e = State::load(&p, &etc).unwrap_err();
        assert!(e.contains("format 1"), "{e}");
    }

    /// Lines as the first format-2 writer made them (`writeln!` per field): what every
    /// existing state file holds.
    fn written_by_writeln(p: &[u8], m: &Meta) -> Vec<u8> {
        let mut line = Vec::new();
        writeln!(
            line,
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
        )
        .unwrap();
        line
    }

    #[test]
    fn entries_are_written_and_read_as_the_format_always_had_them() {
        let base = sample().entries.into_values().next().unwrap();
        let cases = [
            (b"".to_vec(), base.clone()),
            (
                b"\x00\xff/x".to_vec(),
                Meta {
                    mode: u32::MAX,
                    uid: u32::MAX,
                    gid: 0,
                    size: u64::MAX,
                    mtime_ns: 0,
                    ctime_ns: i128::MIN,
                    ino: u64::MAX,
                    dev: 0,
                    target: Vec::new(),
                    ..base.clone()
                },
            ),
            (
                b"a".to_vec(),
                Meta {
                    kind: b'f',
                    mtime_ns: i128::from(u64::MAX) + 1,
                    ctime_ns: 9,
                    ..base.clone()
                },
            ),
        ];
        for (name, meta) in &cases {
            let old = written_by_writeln(name, meta);
            let mut new = Vec::new();
            format_entry(&mut new, name, meta);
            assert_eq!(String::from_utf8_lossy(&new), String::from_utf8_lossy(&old));
            let line = old.strip_suffix(b"\n").unwrap();
            assert_eq!(
                parse_entry(line).as_ref(),
                Some(&(name.clone(), meta.clone()))
            );
        }
        // Damage is refused, field by field.
        let good = written_by_writeln(b"x", &base);
        let good = good.strip_suffix(b"\n").unwrap();
        let fields: Vec<&[u8]> = good.split(|b| *b == b'\t').collect();
        for i in 0..fields.len() {
            let mut bad = fields.clone();
            bad[i] = b"zz";
            if i == 1 {
                bad[i] = b""; // a type of no byte
            }
            assert_eq!(parse_entry(&bad.join(&b'\t')), None, "field {i}");
        }
        assert_eq!(parse_entry(&[good, b"\textra"].concat()), None);
        assert_eq!(parse_entry(&good[..good.len() - 3]), None);
    }

    #[test]
    fn lines_split_as_bufread_lines_does() {
        for text in [
            &b""[..],
            b"\n",
            b"a",
            b"a\n",
            b"a\r\nb",
            b"a\n\nb\n",
            b"a\rb\r\n",
        ] {
            let ours: Vec<Vec<u8>> = lines(text).map(<[u8]>::to_vec).collect();
            let std: Vec<Vec<u8>> = std::io::BufRead::lines(text)
                .map(|l| l.unwrap().into_bytes())
                .collect();
            assert_eq!(ours, std, "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn a_state_names_its_set_and_cycle_and_serves_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let mine = id("dir/srv/a/b", None);
        let p = path(dir.path(), &mine);
        sample().save(&p, &mine).unwrap();
        for other in [
            id("dir/srv/a_b", None),
            id("dir/srv/a/b", Some("-")),
            id("dir/srv/a/b", Some("daily")),
        ] {
            let e = State::load(&p, &other).unwrap_err();
            assert!(
                e.contains("holds the state of set dir/srv/a/b outside any cycle"),
                "{e}"
            );
            assert!(e.contains(&other.to_string()), "{e}");
        }
        let rev = revision_path(dir.path(), &mine);
        assert_eq!(load_revision(&rev, &mine).unwrap(), None);
        let run: RunId = "20261122T031500Z".parse().unwrap();
        save_revision(&rev, &mine, run, 5).unwrap();
        assert_eq!(load_revision(&rev, &mine).unwrap(), Some((run, 5)));
        let e = load_revision(&rev, &id("dir/srv/a_b", None)).unwrap_err();
        assert!(e.contains("not of set dir/srv/a_b"), "{e}");
        // The old revision format is read only as such.
        fs::write(&rev, format!("{run} 3\n")).unwrap();
        assert!(load_revision(&rev, &mine).is_err());
        assert_eq!(load_legacy_revision(&rev).unwrap(), Some((run, 3)));
    }

    #[test]
    fn file_names_never_collide() {
        let identities = [
            id("svn/srv/a_b", None),
            id("svn/srv/a/b", None),
            id("svn/srv/a b", None),
            id("svn/srv/a%2Fb", None),
            id("svn/srv/a+b", None),
            id("svn/srv/a", Some("b")),
            id("svn/srv/a+b", Some("")),
            id("dir", None),
            id("dir", Some("-")),
            id("dir", Some("")),
            id("dir", Some("daily")),
            id("dir", Some("dai ly")),
            id("dir", Some("dai_ly")),
            id("cmd/caf\u{e9}", None),
            id("cmd/cafe\u{301}", None),
        ];
        let dir = Path::new("/d");
        let mut names = std::collections::HashSet::new();
        for i in &identities {
            assert_eq!(Identity::from_key(&i.key()).as_ref(), Some(i));
            assert!(names.insert(path(dir, i)), "{i}");
            // Never the name an old version gave any set.
            for j in &identities {
                assert_ne!(path(dir, i), legacy_path(dir, j, "state"), "{i} / {j}");
            }
        }
        // The old names were shared.
        assert_eq!(
            legacy_path(dir, &identities[0], "svnrev"),
            legacy_path(dir, &identities[1], "svnrev")
        );
        // Names too long for a file get a bounded, still distinct one.
        let deep = |leaf: &str| id(&format!("svn{}/{leaf}", "/deep".repeat(60)), Some("c"));
        let (a, b) = (path(dir, &deep("a_b")), path(dir, &deep("a/b")));
        assert_ne!(a, b);
        for p in [&a, &b] {
            let name = p.file_name().unwrap().len();
            assert!(name <= MAX_STEM + ".svnrev".len(), "{}", p.display());
        }
    }

    #[test]
    fn legacy_states_prove_their_tree() {
        let mut s = sample();
        s.entries.clear();
        assert!(!s.covers_only(b"srv/a_b"), "an empty state proves nothing");
        for name in [&b"srv/a_b"[..], b"srv/a_b/x", b"srv/a_b/y/z"] {
            s.entries.insert(
                name.to_vec(),
                sample().entries.into_values().next().unwrap(),
            );
        }
        assert!(s.covers_only(b"srv/a_b"));
        assert!(s.covers_only(b"srv/a_b/"));
        assert!(s.covers_only(b"."));
        assert!(!s.covers_only(b"srv/a/b"));
        assert!(!s.covers_only(b"srv/a_"));
        s.entries.insert(
            b"srv/a_bc".to_vec(),
            sample().entries.into_values().next().unwrap(),
        );
        assert!(!s.covers_only(b"srv/a_b"));
    }

    proptest::proptest! {
        #[test]
        fn keys_decode_to_their_identity(set in "\\PC{0,40}", cycle in proptest::option::of("\\PC{0,12}")) {
            let i = Identity { set, cycle };
            proptest::prop_assert_eq!(Identity::from_key(&i.key()), Some(i.clone()));
        }
    }
}
