//! Tar stream splicing: tar archives in, one tar stream out.
//!
//! Recovery writes what `tar -x` reads. This works on raw 512-byte blocks, not on parsed
//! entries, so every member leaves exactly as it was stored (GNU long names, PAX records, and
//! later GNU dumpdirs), with two changes: members outside the requested paths are dropped, and
//! the end-of-archive marker of each input is dropped so several archives (a chain) become one
//! stream, closed once by [`TarSplicer::finish`]. Each input is read to its very end, so that
//! the stages below it (decryption, hashing) get to verify their trailers.

use std::io::{self, Read, Write};

const BLOCK: usize = 512;

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

/// Name from PAX records (`path=`), if present.
fn pax_path(data: &[u8]) -> Option<Vec<u8>> {
    let mut rest = data;
    let mut found = None;
    while !rest.is_empty() {
        let space = rest.iter().position(|b| *b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
        if len == 0 || len > rest.len() {
            return None;
        }
        let record = &rest[space + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(v) = record.strip_prefix(b"path=") {
            found = Some(v.to_vec());
        }
        rest = &rest[len..];
    }
    found
}

pub struct TarSplicer<W: Write> {
    out: W,
    pub members: u64,
    /// List member names (one line each, with a `/` after directories) instead of copying.
    listing: bool,
}

impl<W: Write> TarSplicer<W> {
    pub fn new(out: W) -> Self {
        TarSplicer {
            out,
            members: 0,
            listing: false,
        }
    }

    /// Writes `TYPE NAME` lines (as `tar t` names them) instead of a tar stream.
    pub fn listing(out: W) -> Self {
        TarSplicer {
            out,
            members: 0,
            listing: true,
        }
    }

    /// Copies the members of one archive that `filter` keeps.
    pub fn append<R: Read>(&mut self, mut input: R, filter: &mut PathFilter) -> io::Result<()> {
        let mut block = [0u8; BLOCK];
        // Raw blocks of GNU long-name and PAX entries that belong to the next header.
        let mut pending: Vec<u8> = Vec::new();
        let mut long_name: Option<Vec<u8>> = None;
        let mut pax_name: Option<Vec<u8>> = None;
        loop {
            if !read_block(&mut input, &mut block)? {
                return Err(bad(
                    "ends without an end-of-archive marker (archive truncated)",
                ));
            }
            if block.iter().all(|b| *b == 0) {
                // End of archive: drain the padding and whatever trails it to the very end.
                io::copy(&mut input, &mut io::sink())?;
                if !pending.is_empty() {
                    return Err(bad("extended header without a member"));
                }
                return Ok(());
            }
            if !checksum_ok(&block) {
                return Err(bad("header checksum mismatch (archive damaged)"));
            }
            let size = parse_octal(&block[124..136])?;
            let padded = size
                .div_ceil(BLOCK as u64)
                .checked_mul(BLOCK as u64)
                .ok_or_else(|| bad("size field overflows"))?;
            let typeflag = block[156];
            match typeflag {
                b'L' | b'K' | b'x' => {
                    if size > 16 << 20 {
                        return Err(bad("extended header larger than 16 MiB"));
                    }
                    pending.extend_from_slice(&block);
                    let mut data = vec![0u8; padded as usize];
                    input.read_exact(&mut data)?;
                    match typeflag {
                        b'L' => long_name = Some(cstr(&data[..size as usize]).to_vec()),
                        b'x' => {
                            if let Some(p) = pax_path(&data[..size as usize]) {
                                pax_name = Some(p);
                            }
                        }
                        _ => {}
                    }
                    pending.extend_from_slice(&data);
                }
                _ => {
                    let name = match (pax_name.take(), long_name.take()) {
                        (Some(n), _) | (None, Some(n)) => n,
                        (None, None) => {
                            let name = cstr(&block[0..100]);
                            let ustar = &block[257..263] == b"ustar\0";
                            let prefix = cstr(&block[345..500]);
                            if ustar && !prefix.is_empty() {
                                [prefix, b"/", name].concat()
                            } else {
                                name.to_vec()
                            }
                        }
                    };
                    // Global PAX headers apply to everything after them: always kept.
                    let keep = typeflag == b'g' || filter.keep(&name);
                    if keep && self.listing {
                        if typeflag != b'g' {
                            let code = if typeflag == 0 { b'0' } else { typeflag };
                            self.out.write_all(&[code, b' '])?;
                            self.out.write_all(&name)?;
                            self.out.write_all(b"\n")?;
                            self.members += 1;
                        }
                        let skipped = io::copy(&mut (&mut input).take(padded), &mut io::sink())?;
                        if skipped != padded {
                            return Err(bad("member data cut short (archive truncated)"));
                        }
                    } else if keep {
                        self.out.write_all(&pending)?;
                        self.out.write_all(&block)?;
                        let copied = io::copy(&mut (&mut input).take(padded), &mut self.out)?;
                        if copied != padded {
                            return Err(bad("member data cut short (archive truncated)"));
                        }
                        if typeflag != b'g' {
                            self.members += 1;
                        }
                    } else {
                        let skipped = io::copy(&mut (&mut input).take(padded), &mut io::sink())?;
                        if skipped != padded {
                            return Err(bad("member data cut short (archive truncated)"));
                        }
                    }
                    pending.clear();
                }
            }
        }
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

#[cfg(test)]
mod tests {
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
}
