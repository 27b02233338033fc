//! Tar stream splicing: tar archives in, one tar stream out.
//!
//! Recovery writes what `tar -x` reads. This works on raw 512-byte blocks, not on parsed
//! entries, so every member leaves exactly as it was stored (GNU long names, PAX records, and
//! later GNU dumpdirs), with two changes: members outside the requested paths are dropped, and
//! the end-of-archive marker of each input is dropped so several archives (a chain) become one
//! stream, closed once by [`TarSplicer::finish`]. Each input is read to its very end, so that
//! the stages below it (decryption, hashing) get to verify their trailers.
//!
//! A quilted run's archive (`schema::quilt`) leaves the data of its large files out: such a
//! member has size 0 and `S3NAP.quilt.*` PAX records naming its content object. Given a
//! [`QuiltContent`] (recovery's store reader), the splicer puts the content back: the PAX
//! header without the quilt's records (dropped when nothing else is left), the member's header
//! with the real size, the content and its padding. No byte of it goes out before its size and
//! SHA-256 matched the reference: a small file is held in memory and checked first, a larger
//! one is read twice, a checking pass and then the output pass. The source guarantees that the
//! output pass decodes the very stored bytes the checking pass did (`recover::quilt` checks
//! each stored range against the first read's SHA-256 before decryption, failing otherwise);
//! the pass is also checked again here, its last piece held back until it matched (so a second
//! pass that differs ends the stream inside the member, which tar refuses). Members outside
//! the requested paths cost no fetch.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

use crate::schema::quilt::{QuiltRef, PAX_PREFIX};
use crate::schema::{FormatError, IntegrityError};

const BLOCK: usize = 512;

/// Quilted content up to this size is fetched once and held in memory until checked; larger
/// content is read twice (well within `MemoryLimit`, at least 10 MiB).
pub const HELD_IN_MEMORY: u64 = 4 << 20;

/// Where the content of quilted members comes from: recovery's reader of the quilt's content
/// objects (fetched, decrypted, decompressed). The splicer checks every byte it gives against
/// the member's reference; its own errors name the object and the member.
pub trait QuiltContent {
    /// Where `key` is, as errors name it (`s3://bucket/prefix/quilt/content/…`).
    fn locate(&self, key: &str) -> String;

    /// The plaintext of the content object `reference` names, for member `name`, from its
    /// start. Called once for a file of up to [`HELD_IN_MEMORY`] bytes, twice for a larger one:
    /// a later call must give the plaintext of the stored bytes the first call read, or fail
    /// before it gives any other (the splicer writes the second pass before its end is checked).
    fn open(&mut self, reference: &QuiltRef, name: &[u8]) -> io::Result<Box<dyn Read + '_>>;
}

/// Which members to keep: all, or those at or below one of the given paths.
#[derive(Debug, Clone, Default)]
pub struct PathFilter {
    paths: Vec<Vec<u8>>,
    matched: Vec<bool>,
}

fn normalize(name: &[u8]) -> &[u8] {
    let mut n = name;
    loop {
        if let Some(rest) = n.strip_prefix(b"./") {
            n = rest;
        } else if let Some(rest) = n.strip_prefix(b"/") {
            n = rest;
        } else {
            break;
        }
    }
    while let Some(rest) = n.strip_suffix(b"/") {
        n = rest;
    }
    n
}

impl PathFilter {
    pub fn new<I: IntoIterator<Item = Vec<u8>>>(paths: I) -> Self {
        let paths: Vec<Vec<u8>> = paths.into_iter().map(|p| normalize(&p).to_vec()).collect();
        let matched = vec![false; paths.len()];
        PathFilter { paths, matched }
    }

    fn keep(&mut self, name: &[u8]) -> bool {
        if self.paths.is_empty() {
            return true;
        }
        let name = normalize(name);
        let mut keep = false;
        for (i, p) in self.paths.iter().enumerate() {
            let hit = p.is_empty()
                || name == p.as_slice()
                || (name.starts_with(p) && name.get(p.len()) == Some(&b'/'));
            if hit {
                self.matched[i] = true;
                keep = true;
            }
        }
        keep
    }

    /// The requested paths that matched no member.
    pub fn unmatched(&self) -> Vec<String> {
        self.paths
            .iter()
            .zip(&self.matched)
            .filter(|(_, m)| !**m)
            .map(|(p, _)| String::from_utf8_lossy(p).into_owned())
            .collect()
    }
}

fn parse_octal(field: &[u8]) -> io::Result<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256 for values that do not fit in octal.
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            // `checked_shl` only refuses shift amounts of 64 and more, never lost bits: a
            // corrupt high byte would be dropped silently and the size read wrong.
            if v >> 56 != 0 {
                return Err(bad("size field overflows"));
            }
            v = v << 8 | u64::from(*b);
        }
        return Ok(v);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(std::str::from_utf8(&text).expect("octal digits"), 8)
        .map_err(|_| bad("size field is not octal"))
}

fn bad(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("tar stream: {message}"))
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    &field[..end]
}

fn checksum_ok(block: &[u8; BLOCK]) -> bool {
    let stored = match parse_octal(&block[148..156]) {
        Ok(v) => v,
        Err(_) => return false,
    };
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(*b)
            }
        })
        .sum();
    sum == stored
}

fn read_block<R: Read>(input: &mut R, block: &mut [u8; BLOCK]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < BLOCK {
        match input.read(&mut block[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(bad("ends inside a block")),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Name from PAX records (`path=`, the last one if several), if present and the records are
/// well formed.
fn pax_path(data: &[u8]) -> Option<Vec<u8>> {
    pax_records(data)?
        .into_iter()
        .rev()
        .find(|(_, key, _)| *key == b"path")
        .map(|(_, _, value)| value.to_vec())
}

/// The size of the member data that follows header `block`, and that size padded to whole
/// blocks; a damaged header is refused before its size is trusted.
fn data_size(block: &[u8; BLOCK]) -> io::Result<(u64, u64)> {
    if !checksum_ok(block) {
        return Err(bad("header checksum mismatch (archive damaged)"));
    }
    let size = parse_octal(&block[124..136])?;
    let padded = size
        .div_ceil(BLOCK as u64)
        .checked_mul(BLOCK as u64)
        .ok_or_else(|| bad("size field overflows"))?;
    Ok((size, padded))
}

/// Copies `padded` bytes of member data from `input` to `out`, all of which must be there.
fn copy_data<R: Read, W: Write>(input: &mut R, padded: u64, out: &mut W) -> io::Result<()> {
    let copied = io::copy(&mut input.by_ref().take(padded), out)?;
    if copied != padded {
        return Err(bad("member data cut short (archive truncated)"));
    }
    Ok(())
}

/// A member's name as its own header gives it, the ustar prefix joined on.
fn header_name(block: &[u8; BLOCK]) -> Vec<u8> {
    let name = cstr(&block[0..100]);
    let ustar = &block[257..263] == b"ustar\0";
    let prefix = cstr(&block[345..500]);
    if ustar && !prefix.is_empty() {
        [prefix, b"/", name].concat()
    } else {
        name.to_vec()
    }
}

/// The GNU long-name and PAX entries read since the last member: they belong to the next
/// member's header.
#[derive(Default)]
struct Extended {
    /// Their raw blocks, passed on in front of that header.
    blocks: Vec<u8>,
    long_name: Option<Vec<u8>>,
    pax_name: Option<Vec<u8>>,
    /// A quilt reference among the PAX records (read only when content can be spliced in).
    quilt: Option<Result<QuiltRef, FormatError>>,
}

/// One PAX record: its raw bytes (`LEN KEY=VALUE\n`), its key and its value.
type PaxRecord<'a> = (&'a [u8], &'a [u8], &'a [u8]);

/// The records of PAX data, in order; `None` when it is malformed.
fn pax_records(data: &[u8]) -> Option<Vec<PaxRecord<'_>>> {
    let mut rest = data;
    let mut records = Vec::new();
    while !rest.is_empty() {
        let space = rest.iter().position(|b| *b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
        if len <= space + 1 || len > rest.len() {
            return None;
        }
        let raw = &rest[..len];
        let record = &raw[space + 1..];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        let eq = record.iter().position(|b| *b == b'=')?;
        records.push((raw, &record[..eq], &record[eq + 1..]));
        rest = &rest[len..];
    }
    Some(records)
}

/// Sets a header's size field (octal when it fits, GNU base-256 when not) and its checksum.
fn set_size(block: &mut [u8; BLOCK], size: u64) {
    if size < 8u64.pow(11) {
        block[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    } else {
        block[124] = 0x80;
        block[125..128].fill(0);
        block[128..136].copy_from_slice(&size.to_be_bytes());
    }
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

impl Extended {
    /// Reads the data of extended header `block` (`size` bytes, `padded` to whole blocks) and
    /// keeps both, noting the name it gives.
    /// With `quilted`, a PAX header's `S3NAP.quilt.*` records are taken out (and `size`
    /// records with them: the spliced member's header carries the real size) and kept as the
    /// next member's reference; a header left with no record is dropped.
    fn read<R: Read>(
        &mut self,
        block: &[u8; BLOCK],
        size: u64,
        padded: u64,
        input: &mut R,
        quilted: bool,
    ) -> io::Result<()> {
        if size > 16 << 20 {
            return Err(bad("extended header larger than 16 MiB"));
        }
        let mut data = vec![0u8; padded as usize];
        input.read_exact(&mut data)?;
        if quilted && block[156] == b'x' {
            let records = pax_records(&data[..size as usize])
                .ok_or_else(|| bad("malformed PAX extended header"))?;
            if records
                .iter()
                .any(|(_, k, _)| k.starts_with(PAX_PREFIX.as_bytes()))
            {
                let view = records
                    .iter()
                    .filter_map(|(_, k, v)| std::str::from_utf8(k).ok().map(|k| (k, *v)));
                self.quilt = QuiltRef::from_pax(view);
                let kept: Vec<u8> = records
                    .iter()
                    .filter(|(_, k, _)| !k.starts_with(PAX_PREFIX.as_bytes()) && *k != b"size")
                    .flat_map(|(raw, _, _)| raw.iter().copied())
                    .collect();
                if kept.is_empty() {
                    return Ok(());
                }
                if let Some(p) = pax_path(&kept) {
                    self.pax_name = Some(p);
                }
                let mut header = *block;
                set_size(&mut header, kept.len() as u64);
                self.blocks.extend_from_slice(&header);
                self.blocks.extend_from_slice(&kept);
                let pad = kept.len().div_ceil(BLOCK) * BLOCK - kept.len();
                self.blocks.extend_from_slice(&vec![0u8; pad]);
                return Ok(());
            }
        }
        self.blocks.extend_from_slice(block);
        match block[156] {
            b'L' => self.long_name = Some(cstr(&data[..size as usize]).to_vec()),
            b'x' => {
                if let Some(p) = pax_path(&data[..size as usize]) {
                    self.pax_name = Some(p);
                }
            }
            _ => {}
        }
        self.blocks.extend_from_slice(&data);
        Ok(())
    }

    /// The name of the member whose header is `block`: a PAX path beats a GNU long name,
    /// which beats the header's own.
    fn take_name(&mut self, block: &[u8; BLOCK]) -> Vec<u8> {
        match (self.pax_name.take(), self.long_name.take()) {
            (Some(n), _) | (None, Some(n)) => n,
            (None, None) => header_name(block),
        }
    }
}

pub struct TarSplicer<W: Write> {
    out: W,
    pub members: u64,
    /// List member names (one line each, with a `/` after directories) instead of copying.
    listing: bool,
    /// The output ends between members (not inside a member's headers or data).
    between_members: bool,
}

impl<W: Write> TarSplicer<W> {
    pub fn new(out: W) -> Self {
        TarSplicer {
            out,
            members: 0,
            listing: false,
            between_members: true,
        }
    }

    /// Writes `TYPE NAME` lines (as `tar t` names them) instead of a tar stream.
    pub fn listing(out: W) -> Self {
        TarSplicer {
            out,
            members: 0,
            listing: true,
            between_members: true,
        }
    }

    /// Copies the members of one archive that `filter` keeps.
    pub fn append<R: Read>(&mut self, input: R, filter: &mut PathFilter) -> io::Result<()> {
        self.append_with(input, filter, None)
    }

    /// Copies the members of one archive that `filter` keeps; with `quilt`, the archive is a
    /// quilted run's, whose quilted members get their content back from it (checked).
    pub fn append_with<R: Read>(
        &mut self,
        mut input: R,
        filter: &mut PathFilter,
        mut quilt: Option<&mut dyn QuiltContent>,
    ) -> io::Result<()> {
        let mut block = [0u8; BLOCK];
        let mut extended = Extended::default();
        loop {
            if !read_block(&mut input, &mut block)? {
                return Err(bad(
                    "ends without an end-of-archive marker (archive truncated)",
                ));
            }
            if block.iter().all(|b| *b == 0) {
                // End of archive: drain the padding and whatever trails it to the very end.
                io::copy(&mut input, &mut io::sink())?;
                if !extended.blocks.is_empty() || extended.quilt.is_some() {
                    return Err(bad("extended header without a member"));
                }
                return Ok(());
            }
            let (size, padded) = data_size(&block)?;
            match block[156] {
                b'L' | b'K' | b'x' => {
                    extended.read(&block, size, padded, &mut input, quilt.is_some())?
                }
                _ => {
                    let name = extended.take_name(&block);
                    let pending = std::mem::take(&mut extended.blocks);
                    let member = Member {
                        block: &block,
                        name: &name,
                        pending: &pending,
                        padded,
                    };
                    match extended.quilt.take() {
                        None => self.member(member, &mut input, filter)?,
                        Some(reference) => {
                            let reference = reference.map_err(|e| {
                                bad(&format!("member {}: {e}", String::from_utf8_lossy(&name)))
                            })?;
                            let source = quilt
                                .as_deref_mut()
                                .expect("quilt references are read only with a source");
                            self.quilted(member, &reference, source, filter)?;
                        }
                    }
                }
            }
        }
    }

    /// Passes on, lists or skips `member`, reading its data from `input` in every case.
    fn member<R: Read>(
        &mut self,
        member: Member,
        input: &mut R,
        filter: &mut PathFilter,
    ) -> io::Result<()> {
        let Member {
            block,
            name,
            pending,
            padded,
        } = member;
        let typeflag = block[156];
        // Global PAX headers apply to everything after them: always kept.
        let keep = typeflag == b'g' || filter.keep(name);
        if !keep {
            return copy_data(input, padded, &mut io::sink());
        }
        if self.listing {
            if typeflag != b'g' {
                self.list(typeflag, name)?;
            }
            return copy_data(input, padded, &mut io::sink());
        }
        self.between_members = false;
        self.out.write_all(pending)?;
        self.out.write_all(block)?;
        copy_data(input, padded, &mut self.out)?;
        self.between_members = true;
        if typeflag != b'g' {
            self.members += 1;
        }
        Ok(())
    }

    fn list(&mut self, typeflag: u8, name: &[u8]) -> io::Result<()> {
        let code = if typeflag == 0 { b'0' } else { typeflag };
        self.out.write_all(&[code, b' '])?;
        self.out.write_all(name)?;
        self.out.write_all(b"\n")?;
        self.members += 1;
        Ok(())
    }

    /// Passes on (with its content, checked), lists (after checking its content) or skips
    /// (fetching nothing) the quilted `member`.
    fn quilted(
        &mut self,
        member: Member,
        reference: &QuiltRef,
        source: &mut dyn QuiltContent,
        filter: &mut PathFilter,
    ) -> io::Result<()> {
        let Member {
            block,
            name,
            pending,
            padded,
        } = member;
        let typeflag = block[156];
        if !matches!(typeflag, b'0' | 0) || padded != 0 {
            return Err(bad(&format!(
                "member {} carries a quilt reference but is not an empty regular file",
                String::from_utf8_lossy(name)
            )));
        }
        if !filter.keep(name) {
            return Ok(());
        }
        if self.listing {
            pass_content(source, reference, name, &mut |_| Ok(()))?;
            return self.list(typeflag, name);
        }
        let mut header = *block;
        set_size(&mut header, reference.size);
        let padding = reference.size.div_ceil(BLOCK as u64) * BLOCK as u64 - reference.size;
        if reference.size <= HELD_IN_MEMORY {
            let mut held = Vec::with_capacity(reference.size as usize);
            pass_content(source, reference, name, &mut |piece| {
                held.extend_from_slice(piece);
                Ok(())
            })?;
            self.between_members = false;
            self.out.write_all(pending)?;
            self.out.write_all(&header)?;
            self.out.write_all(&held)?;
        } else {
            // Checked once before its header goes out, so that a bad object leaves the stream
            // between members; checked again as it goes out, its last piece held back.
            pass_content(source, reference, name, &mut |_| Ok(()))?;
            self.between_members = false;
            self.out.write_all(pending)?;
            self.out.write_all(&header)?;
            let out = &mut self.out;
            pass_content(source, reference, name, &mut |piece| out.write_all(piece))?;
        }
        self.out.write_all(&vec![0u8; padding as usize])?;
        self.between_members = true;
        self.members += 1;
        Ok(())
    }

    /// Ends a stream that could not be completed so that tar fails on it, and flushes it. Cut
    /// inside a member, the stream already makes tar fail ("Unexpected EOF"); cut between
    /// members, GNU tar would take it for a whole archive and exit 0, so a GNU long-name header
    /// follows that announces a name which never comes: tar fails there, creating nothing.
    /// Not a byte of member data is written. A listing is left as it is.
    pub fn abandon(mut self) -> io::Result<()> {
        if !self.listing && self.between_members {
            self.out.write_all(&truncation_marker())?;
        }
        self.out.flush()
    }

    /// Writes the end-of-archive marker (not in a listing) and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.listing {
            self.out.write_all(&[0u8; BLOCK * 2])?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

/// A member as the archive holds it: its header, its name, the extended headers' blocks that
/// go in front of it, and the length of its data padded to whole blocks.
struct Member<'a> {
    block: &'a [u8; BLOCK],
    name: &'a [u8],
    pending: &'a [u8],
    padded: u64,
}

/// Reads the content `reference` names through `source` to its end, giving it to `each` piece
/// by piece, the last piece only once the size and SHA-256 matched the reference: an error
/// otherwise, naming the object and the member.
fn pass_content(
    source: &mut dyn QuiltContent,
    reference: &QuiltRef,
    name: &[u8],
    each: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let target = source.locate(&reference.key);
    let mismatch = |what: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            IntegrityError(format!(
                "{target}: the content of {} {what}: replaced or damaged",
                String::from_utf8_lossy(name)
            )),
        )
    };
    let (mut seen, mut hasher, mut held) = (0u64, Sha256::new(), Vec::new());
    {
        let mut reader = source.open(reference, name)?;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            seen += n as u64;
            if seen > reference.size {
                return Err(mismatch(format!(
                    "holds more than the {} bytes its reference says",
                    reference.size
                )));
            }
            hasher.update(&buf[..n]);
            if !held.is_empty() {
                each(&held)?;
                held.clear();
            }
            held.extend_from_slice(&buf[..n]);
        }
    }
    if seen != reference.size {
        return Err(mismatch(format!(
            "holds {seen} bytes, its reference says {}",
            reference.size
        )));
    }
    let digest: [u8; 32] = hasher.finalize().into();
    if digest != reference.sha256 {
        return Err(mismatch(format!(
            "has SHA-256 {}, its reference says {}",
            hex::encode(digest),
            hex::encode(reference.sha256)
        )));
    }
    each(&held)
}

/// A GNU long-name header (`././@LongLink`, type `L`) for a 512-byte name.
fn truncation_marker() -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    let name = b"././@LongLink";
    block[..name.len()].copy_from_slice(name);
    block[100..108].copy_from_slice(b"0000644\0");
    block[108..116].copy_from_slice(b"0000000\0");
    block[116..124].copy_from_slice(b"0000000\0");
    block[124..136].copy_from_slice(b"00000001000\0");
    block[136..148].copy_from_slice(b"00000000000\0");
    block[156] = b'L';
    block[257..265].copy_from_slice(b"ustar  \0");
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    block
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn names(stream: &[u8]) -> Vec<String> {
        tar::Archive::new(stream)
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    /// A GNU header whose 12-byte size field is base-256 `size_field`, checksum fixed.
    fn header_with_size_field(size_field: [u8; 12]) -> [u8; BLOCK] {
        let mut h = tar::Header::new_gnu();
        h.set_path("big").unwrap();
        h.set_mode(0o644);
        h.set_size(0);
        let mut block = [0u8; BLOCK];
        block.copy_from_slice(h.as_bytes());
        block[124..136].copy_from_slice(&size_field);
        block[148..156].fill(b' ');
        let sum: u64 = block.iter().map(|b| u64::from(*b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        block
    }

    #[test]
    fn base256_sizes_that_do_not_fit_64_bits_are_errors() {
        // 2^64 + 5: the dropped high byte used to leave a plausible 5.
        let mut field = [0u8; 12];
        field[0] = 0x80;
        field[3] = 1;
        field[11] = 5;
        let err = parse_octal(&field).unwrap_err();
        assert!(err.to_string().contains("size field overflows"), "{err}");
        let mut stream = header_with_size_field(field).to_vec();
        stream.extend_from_slice(&[b'x'; BLOCK]);
        stream.extend_from_slice(&[0u8; BLOCK * 2]);
        let err = TarSplicer::new(Vec::new())
            .append(&stream[..], &mut PathFilter::default())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("size field overflows"), "{err}");

        // The largest that fits still reads, and so does an ordinary base-256 size; a size too
        // large to pad to whole blocks is refused rather than wrapped around.
        let mut field = [0xffu8; 12];
        field[0] = 0x80;
        field[1..4].fill(0);
        assert_eq!(parse_octal(&field).unwrap(), u64::MAX);
        let stream = header_with_size_field(field);
        let err = TarSplicer::new(Vec::new())
            .append(&stream[..], &mut PathFilter::default())
            .unwrap_err();
        assert!(err.to_string().contains("size field overflows"), "{err}");
        let mut field = [0u8; 12];
        field[0] = 0x80;
        field[10] = 0x02;
        field[11] = 0x01;
        assert_eq!(parse_octal(&field).unwrap(), 513);
    }

    #[test]
    fn splices_archives_and_filters_paths() {
        let long = format!("dir/{}", "n".repeat(150));
        let a = archive(&[("dir/a", b"1"), (long.as_str(), b"22"), ("dirx/b", b"3")]);
        let b = archive(&[("other/c", b"4444")]);
        let mut all = TarSplicer::new(Vec::new());
        all.append(&a[..], &mut PathFilter::default()).unwrap();
        all.append(&b[..], &mut PathFilter::default()).unwrap();
        let out = all.finish().unwrap();
        assert_eq!(
            names(&out),
            vec!["dir/a", long.as_str(), "dirx/b", "other/c"]
        );

        let mut filter = PathFilter::new([b"/dir".to_vec(), b"missing".to_vec()]);
        let mut some = TarSplicer::new(Vec::new());
        some.append(&a[..], &mut filter).unwrap();
        let out = some.finish().unwrap();
        assert_eq!(
            names(&out),
            vec!["dir/a", long.as_str()],
            "dirx is not under dir"
        );
        assert_eq!(filter.unmatched(), vec!["missing"]);
    }

    #[test]
    fn truncated_and_damaged_archives_are_errors() {
        let a = archive(&[("f", &[9u8; 2000])]);
        let cut = &a[..a.len() - 1024 - 512];
        let err = TarSplicer::new(Vec::new())
            .append(cut, &mut PathFilter::default())
            .unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        let mut damaged = a.clone();
        damaged[10] ^= 0xff;
        let err = TarSplicer::new(Vec::new())
            .append(&damaged[..], &mut PathFilter::default())
            .unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    /// What GNU tar makes of `stream`: its success, and the files it extracted.
    fn gnu_tar_extract(stream: &[u8]) -> (bool, Vec<String>) {
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().unwrap();
        let mut tar = Command::new("tar")
            .args(["-x", "-C"])
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        tar.stdin.take().unwrap().write_all(stream).unwrap();
        let ok = tar.wait().unwrap().success();
        let mut files: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        (ok, files)
    }

    /// A reader that fails once `data` is used up, as a stopped download does.
    struct FailsAfter<'a>(&'a [u8]);

    impl Read for FailsAfter<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::other("range damaged"));
            }
            self.0.read(buf)
        }
    }

    #[test]
    fn an_abandoned_stream_cut_between_members_makes_gnu_tar_fail() {
        let full = archive(&[("a", b"first"), ("b", b"second")]);
        // The input stops right after member a: the output ends between members.
        let mut s = TarSplicer::new(Vec::new());
        let err = s
            .append(FailsAfter(&full[..1024]), &mut PathFilter::new(Vec::new()))
            .unwrap_err();
        assert!(err.to_string().contains("range damaged"));
        let mut cut = s.out.clone();
        assert_eq!(gnu_tar_extract(&cut), (true, vec!["a".to_string()]));
        cut.clear();
        let mut s = TarSplicer::new(&mut cut);
        let _ = s.append(FailsAfter(&full[..1024]), &mut PathFilter::new(Vec::new()));
        s.abandon().unwrap();
        assert_eq!(gnu_tar_extract(&cut), (false, vec!["a".to_string()]));

        // Cut inside member b's data: no marker (it would become b's bytes); tar fails anyway.
        let mut inside = Vec::new();
        let mut s = TarSplicer::new(&mut inside);
        let _ = s.append(
            FailsAfter(&full[..1024 + 512 + 3]),
            &mut PathFilter::new(Vec::new()),
        );
        s.abandon().unwrap();
        assert_eq!(
            inside.len(),
            1024 + 512 + 3,
            "nothing added inside a member"
        );
        assert!(!gnu_tar_extract(&inside).0);
    }

    /// One PAX record, its length counting itself.
    pub(crate) fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
        let body = [b" ".as_slice(), key.as_bytes(), b"=", value, b"\n"].concat();
        let mut len = body.len() + 1;
        while len.to_string().len() + body.len() != len {
            len += 1;
        }
        [len.to_string().into_bytes(), body].concat()
    }

    /// A member of a hand-made quilted archive: its name, its bytes, whether it is quilted, and
    /// PAX records of its own (an xattr).
    pub(crate) struct Entry<'a> {
        pub name: &'a str,
        pub data: &'a [u8],
        pub quilted: bool,
        pub xattr: bool,
    }

    /// The content key of `data` in these tests (any 64 hex digits will do).
    pub(crate) fn key_of(data: &[u8]) -> String {
        format!(
            "{}{}{}",
            crate::schema::quilt::CONTENT_PREFIX,
            hex::encode(Sha256::digest(data)),
            crate::schema::quilt::CONTENT_SUFFIX
        )
    }

    /// A quilted run's tar archive as the backup side writes it: a quilted member is a PAX
    /// header with its reference (and its own records) and a regular-file header of size 0.
    pub(crate) fn quilted_archive(entries: &[Entry]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut records = Vec::new();
            if e.xattr {
                records.extend(pax_record("SCHILY.xattr.user.note", b"kept"));
            }
            if e.quilted {
                let reference = QuiltRef {
                    key: key_of(e.data),
                    size: e.data.len() as u64,
                    sha256: Sha256::digest(e.data).into(),
                };
                for (k, v) in reference.pax_records() {
                    records.extend(pax_record(&k, &v));
                }
            }
            if !records.is_empty() {
                let mut h = tar::Header::new_ustar();
                h.set_path(format!("PaxHeaders/{}", e.name)).unwrap();
                h.set_entry_type(tar::EntryType::XHeader);
                h.set_mode(0o644);
                h.set_size(records.len() as u64);
                h.set_cksum();
                b.append(&h, &records[..]).unwrap();
            }
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o640);
            h.set_mtime(1_700_000_000);
            let data: &[u8] = if e.quilted { b"" } else { e.data };
            h.set_size(data.len() as u64);
            b.append_data(&mut h, e.name, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// Quilt content from memory; counts what it was asked for, and can give other bytes from
    /// the second read of an object on (a store whose object was replaced meanwhile).
    #[derive(Default)]
    struct Content {
        objects: std::collections::HashMap<String, Vec<u8>>,
        opened: Vec<String>,
        later: Option<Vec<u8>>,
    }

    impl Content {
        fn of(files: &[&[u8]]) -> Self {
            let mut c = Content::default();
            for f in files {
                c.objects.insert(key_of(f), f.to_vec());
            }
            c
        }
    }

    impl QuiltContent for Content {
        fn locate(&self, key: &str) -> String {
            format!("mem://{key}")
        }

        fn open(&mut self, reference: &QuiltRef, _: &[u8]) -> io::Result<Box<dyn Read + '_>> {
            let again = self.opened.contains(&reference.key);
            self.opened.push(reference.key.clone());
            let data = match (&self.later, again) {
                (Some(later), true) => later.clone(),
                _ => self
                    .objects
                    .get(&reference.key)
                    .cloned()
                    .ok_or_else(|| io::Error::other(format!("{} is missing", reference.key)))?,
            };
            Ok(Box::new(io::Cursor::new(data)))
        }
    }

    /// What GNU tar extracts from `stream` into a new directory: its success, and each
    /// regular file's bytes by name.
    fn gnu_tar_files(stream: &[u8]) -> (bool, std::collections::BTreeMap<String, Vec<u8>>) {
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().unwrap();
        let mut tar = Command::new("tar")
            .args(["-x", "--xattrs", "--xattrs-include=user.*", "-C"])
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        tar.stdin.take().unwrap().write_all(stream).unwrap();
        let out = tar.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !stderr.contains("S3NAP"),
            "no quilt record reaches tar: {stderr}"
        );
        let mut files = std::collections::BTreeMap::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            files.insert(name, std::fs::read(&path).unwrap());
        }
        (out.status.success(), files)
    }

    fn splice(
        archive: &[u8],
        content: &mut Content,
        filter: &mut PathFilter,
    ) -> (Vec<u8>, io::Result<()>) {
        let mut s = TarSplicer::new(Vec::new());
        let result = s.append_with(archive, filter, Some(content));
        match result {
            Ok(()) => (s.finish().unwrap(), Ok(())),
            Err(e) => {
                let mut out = Vec::new();
                std::mem::swap(&mut out, &mut s.out);
                let mut cut = TarSplicer::new(&mut out);
                cut.between_members = s.between_members;
                cut.abandon().unwrap();
                (out, Err(e))
            }
        }
    }

    fn big() -> Vec<u8> {
        (0..HELD_IN_MEMORY as usize + 70_000)
            .map(|i| (i * 7 % 253) as u8)
            .collect()
    }

    #[test]
    fn quilted_members_get_their_exact_content_back_and_gnu_tar_sees_no_reference() {
        let small = b"small quilted file\n".repeat(100);
        let big = big();
        let archive = quilted_archive(&[
            Entry {
                name: "plain",
                data: b"as stored",
                quilted: false,
                xattr: false,
            },
            Entry {
                name: "small",
                data: &small,
                quilted: true,
                xattr: true,
            },
            Entry {
                name: "big",
                data: &big,
                quilted: true,
                xattr: false,
            },
            Entry {
                name: "empty",
                data: b"",
                quilted: true,
                xattr: false,
            },
        ]);
        let mut content = Content::of(&[&small, &big, b""]);
        let (out, result) = splice(&archive, &mut content, &mut PathFilter::default());
        result.unwrap();
        let (ok, files) = gnu_tar_files(&out);
        assert!(ok);
        assert_eq!(files["plain"], b"as stored");
        assert_eq!(files["small"], small);
        assert_eq!(files["big"], big);
        assert_eq!(files["empty"], b"");
        // The member's own PAX record stays, the quilt's go.
        let dir = tempfile::tempdir().unwrap();
        untar_with_xattrs(&out, dir.path());
        assert_eq!(
            xattr_of(&dir.path().join("small"), "user.note").as_deref(),
            Some(b"kept".as_slice())
        );
        assert!(!out.windows(12).any(|w| w == b"S3NAP.quilt."));
        // A big file is read twice (checked, then passed on, checked again); small ones once.
        let count = |data: &[u8]| {
            content
                .opened
                .iter()
                .filter(|k| **k == key_of(data))
                .count()
        };
        assert_eq!((count(&small), count(&big)), (1, 2));
        // Listed, the content is checked too (once), and nothing fetched twice.
        let mut listed = TarSplicer::listing(Vec::new());
        let mut content = Content::of(&[&small, &big, b""]);
        listed
            .append_with(&archive[..], &mut PathFilter::default(), Some(&mut content))
            .unwrap();
        assert_eq!(content.opened.len(), 3);
        assert_eq!(
            String::from_utf8(listed.finish().unwrap()).unwrap(),
            "0 plain\n0 small\n0 big\n0 empty\n"
        );
    }

    fn untar_with_xattrs(stream: &[u8], dest: &std::path::Path) {
        use std::process::{Command, Stdio};
        let mut tar = Command::new("tar")
            .args(["-x", "--xattrs", "--xattrs-include=user.*", "-C"])
            .arg(dest)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        tar.stdin.take().unwrap().write_all(stream).unwrap();
        assert!(tar.wait().unwrap().success());
    }

    fn xattr_of(path: &std::path::Path, name: &str) -> Option<Vec<u8>> {
        crate::source::xattr::pax_records(path)
            .unwrap()
            .into_iter()
            .find(|(k, _)| k.strip_prefix("SCHILY.xattr.") == Some(name))
            .map(|(_, v)| v)
    }

    #[test]
    fn poisoned_short_or_missing_content_never_reaches_the_output_and_names_object_and_member() {
        let small = b"the real bytes".repeat(50);
        let big = big();
        let archive = |data: &[u8]| {
            quilted_archive(&[
                Entry {
                    name: "first",
                    data: b"before",
                    quilted: false,
                    xattr: false,
                },
                Entry {
                    name: "victim",
                    data,
                    quilted: true,
                    xattr: false,
                },
            ])
        };
        let mut poisoned_big = big.clone();
        poisoned_big[1000] ^= 1;
        let cases: Vec<(&[u8], Vec<u8>, &str)> = vec![
            // Other content under the same key: its SHA-256 differs.
            (&small, b"the fake bytes".repeat(50), "has SHA-256"),
            (&small, small[..small.len() - 1].to_vec(), "holds 699 bytes"),
            (&small, [small.as_slice(), b"+"].concat(), "holds more than"),
            (&big, poisoned_big.clone(), "has SHA-256"),
        ];
        for (real, stored, said) in cases {
            let mut content = Content::default();
            content.objects.insert(key_of(real), stored.clone());
            let (out, result) = splice(&archive(real), &mut content, &mut PathFilter::default());
            let err = result.unwrap_err();
            let text = err.to_string();
            assert!(text.contains(said), "{text}");
            assert!(text.contains(&format!("mem://{}", key_of(real))), "{text}");
            assert!(text.contains("victim"), "{text}");
            assert!(
                err.get_ref().is_some_and(|e| e.is::<IntegrityError>()),
                "an integrity error: {err:?}"
            );
            // The stream ends before the victim's header: the first member (header and data) and
            // the marker.
            assert_eq!(out.len(), 3 * BLOCK, "none of the stored bytes went out");
            let (ok, files) = gnu_tar_files(&out);
            assert!(!ok, "tar fails on the cut stream");
            assert_eq!(files.keys().collect::<Vec<_>>(), vec!["first"]);
        }

        // Missing: the source's own error, nothing of the member out, tar fails.
        let mut content = Content::default();
        let (out, result) = splice(&archive(&small), &mut content, &mut PathFilter::default());
        assert!(result.unwrap_err().to_string().contains("is missing"));
        assert!(!gnu_tar_files(&out).0);

        // A big object replaced between the checking pass and the output pass: the stream is
        // cut inside the member, before its last piece, and tar fails.
        let mut content = Content::of(&[&big]);
        content.later = Some(poisoned_big);
        let (out, result) = splice(&archive(&big), &mut content, &mut PathFilter::default());
        assert!(result.unwrap_err().to_string().contains("has SHA-256"));
        assert!(
            !out.ends_with(&big[big.len() - 1000..]),
            "the last piece is held back"
        );
        assert!(!gnu_tar_files(&out).0);
    }

    #[test]
    fn a_path_filter_fetches_only_the_content_of_members_it_keeps() {
        let (a, b) = (b"content a".repeat(9), b"content b".repeat(9));
        let archive = quilted_archive(&[
            Entry {
                name: "dir/a",
                data: &a,
                quilted: true,
                xattr: false,
            },
            Entry {
                name: "other/b",
                data: &b,
                quilted: true,
                xattr: false,
            },
        ]);
        let mut content = Content::of(&[&a, &b]);
        let (out, result) = splice(
            &archive,
            &mut content,
            &mut PathFilter::new([b"dir".to_vec()]),
        );
        result.unwrap();
        assert_eq!(content.opened, vec![key_of(&a)]);
        assert_eq!(names(&out), vec!["dir/a"]);

        // Without a content source (a run of an earlier format), the records pass as they are.
        let mut plain = TarSplicer::new(Vec::new());
        plain
            .append(&archive[..], &mut PathFilter::default())
            .unwrap();
        let out = plain.finish().unwrap();
        assert_eq!(out[..archive.len() - 1024], archive[..archive.len() - 1024]);

        // A reference on anything but an empty regular file is refused.
        let mut odd = archive.clone();
        let header = 1024; // after the first PAX header and its data
        odd[header + 156] = b'5';
        let mut block = [0u8; BLOCK];
        block.copy_from_slice(&odd[header..header + BLOCK]);
        set_size(&mut block, 0);
        odd[header..header + BLOCK].copy_from_slice(&block);
        let err = splice(&odd, &mut Content::of(&[&a]), &mut PathFilter::default())
            .1
            .unwrap_err();
        assert!(
            err.to_string().contains("not an empty regular file"),
            "{err}"
        );
    }

    #[test]
    fn a_malformed_pax_record_leaves_the_header_name_and_is_passed_on() {
        // A record whose length ends inside its own length field ("1 …"): the name comes from
        // the member's own header, the records pass on as they are, and nothing panics.
        for records in [
            b"1 x".as_slice(),
            b"0 path=y\n",
            b"9 nokey\n",
            b"12 path=y\n",
        ] {
            let mut pax = tar::Header::new_ustar();
            pax.set_path("PaxHeaders/file").unwrap();
            pax.set_entry_type(tar::EntryType::XHeader);
            pax.set_size(records.len() as u64);
            pax.set_cksum();
            let mut b = tar::Builder::new(Vec::new());
            b.append(&pax, records).unwrap();
            let mut h = tar::Header::new_ustar();
            h.set_size(4);
            h.set_mode(0o644);
            b.append_data(&mut h, "file", &b"data"[..]).unwrap();
            let stored = b.into_inner().unwrap();
            let mut filter = PathFilter::new([b"file".to_vec()]);
            let mut s = TarSplicer::new(Vec::new());
            s.append(&stored[..], &mut filter).unwrap();
            let out = s.finish().unwrap();
            assert_eq!(out[..stored.len() - 1024], stored[..stored.len() - 1024]);
            assert!(filter.unmatched().is_empty(), "{records:?}");
        }
        // Well formed, the last `path` record names the member.
        let data = [pax_record("path", b"a"), pax_record("path", b"b")].concat();
        assert_eq!(pax_path(&data).as_deref(), Some(b"b".as_slice()));
    }

    #[test]
    fn spliced_sizes_of_8_gib_and_more_are_written_in_base_256() {
        // Octal's 11 digits end below 8 GiB: a larger quilted file's header says its size in
        // GNU base-256, which GNU tar and the splicer itself read back.
        let mut block = [0u8; BLOCK];
        block.copy_from_slice(tar::Header::new_ustar().as_bytes());
        for size in [0, 8u64.pow(11) - 1, 8u64.pow(11), 5 << 40] {
            set_size(&mut block, size);
            assert_eq!(data_size(&block).unwrap().0, size, "{size}");
        }
        assert_eq!(block[124], 0x80);
    }
}
