//! Part stage: the stored byte stream in, fixed-size `Bytes` parts out over a bounded channel.
//!
//! This is the border between the synchronous CPU stages (tar, compression, encryption, all on
//! one blocking thread) and the async uploader. The channel is bounded, so when the uploads fall
//! behind, `write` blocks and the whole pipeline slows down instead of buffering: memory stays
//! below (channel depth + parts in flight + 1) × part size. Every stored byte also passes through
//! the SHA-256 and the counter that end up in the manifest, and through one SHA-256 per fixed
//! range of the object (independent of the part sizes), which lets recovery verify each range
//! before any of its bytes go on.

use std::io::{self, Write};

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc::Sender;

/// S3's limits for multipart uploads.
pub const MIN_PART: u64 = 5 * 1024 * 1024;
pub const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;
pub const MAX_PARTS: u32 = 10_000;
/// Parts per step of the part size schedule.
const STEP: u32 = 1_000;

/// Size of part `number` (from 1): `base` for the first thousand parts, then doubling every
/// thousand, so 10,000 parts of a 5 MiB base reach ~5 TiB and a stream of unknown length never
/// needs to know its size in advance.
pub fn part_size(base: u64, number: u32) -> u64 {
    let doublings = (number.saturating_sub(1) / STEP).min(20);
    (base.max(MIN_PART) << doublings).min(MAX_PART)
}

/// What was stored, for the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub size: u64,
    pub sha256: String,
    pub parts: u32,
    /// The SHA-256 of each `range_size` bytes of the object, the last range possibly shorter.
    pub ranges: Vec<[u8; 32]>,
}

/// SHA-256 of each consecutive `size`-byte range of a stream.
struct RangeHasher {
    size: u64,
    filled: u64,
    current: Sha256,
    done: Vec<[u8; 32]>,
}

impl RangeHasher {
    fn new(size: u64) -> Self {
        RangeHasher {
            size: size.max(1),
            filled: 0,
            current: Sha256::new(),
            done: Vec::new(),
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = ((self.size - self.filled) as usize).min(data.len());
            self.current.update(&data[..take]);
            self.filled += take as u64;
            data = &data[take..];
            if self.filled == self.size {
                self.done
                    .push(std::mem::take(&mut self.current).finalize().into());
                self.filled = 0;
            }
        }
    }

    fn finish(mut self) -> Vec<[u8; 32]> {
        if self.filled > 0 {
            self.done.push(self.current.finalize().into());
        }
        self.done
    }
}

pub struct PartWriter {
    tx: Sender<Bytes>,
    base: u64,
    buf: BytesMut,
    parts: u32,
    size: u64,
    hasher: Sha256,
    ranges: RangeHasher,
}

impl PartWriter {
    pub fn new(tx: Sender<Bytes>, base_part_size: u64, range_size: u64) -> Self {
        let base = base_part_size.max(MIN_PART);
        PartWriter {
            tx,
            base,
            buf: BytesMut::with_capacity(part_size(base, 1) as usize),
            parts: 0,
            size: 0,
            hasher: Sha256::new(),
            ranges: RangeHasher::new(range_size),
        }
    }

    fn current_limit(&self) -> usize {
        part_size(self.base, self.parts + 1) as usize
    }

    fn send(&mut self) -> io::Result<()> {
        if self.parts >= MAX_PARTS {
            return Err(io::Error::other(format!(
                "stream exceeds {MAX_PARTS} parts; raise ChunkSize"
            )));
        }
        let next_limit = part_size(self.base, self.parts + 2) as usize;
        let part = std::mem::replace(&mut self.buf, BytesMut::with_capacity(next_limit)).freeze();
        self.parts += 1;
        self.tx.blocking_send(part).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the upload stopped (see its error)",
            )
        })
    }

    /// Sends the last part and reports what was stored. Until this returns, nothing of the
    /// stream can be committed.
    pub fn finish(mut self) -> io::Result<Stored> {
        if !self.buf.is_empty() || self.parts == 0 {
            self.send()?;
        }
        Ok(Stored {
            size: self.size,
            sha256: hex::encode(self.hasher.finalize()),
            parts: self.parts,
            ranges: self.ranges.finish(),
        })
    }
}

impl Write for PartWriter {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let total = data.len();
        self.hasher.update(data);
        self.ranges.update(data);
        self.size += total as u64;
        while !data.is_empty() {
            let room = self.current_limit() - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == self.current_limit() {
                self.send()?;
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_grow_to_reach_five_tebibytes_within_the_part_limit() {
        let base = MIN_PART;
        assert_eq!(part_size(base, 1), base);
        assert_eq!(part_size(base, 1000), base);
        assert_eq!(part_size(base, 1001), 2 * base);
        let total: u64 = (1..=MAX_PARTS).map(|n| part_size(base, n)).sum();
        assert!(
            total >= 5 * (1u64 << 40) - (1u64 << 40) / 4,
            "reaches {total}"
        );
        assert!((1..=MAX_PARTS).all(|n| part_size(base, n) <= MAX_PART));
        assert_eq!(
            part_size(1, 1),
            MIN_PART,
            "S3's minimum part size is enforced"
        );
    }

    #[test]
    fn parts_are_cut_at_the_limit_and_hashed() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(100);
        let mut w = PartWriter::new(tx, MIN_PART, 3 << 20);
        let data: Vec<u8> = (0..MIN_PART as usize * 2 + 10)
            .map(|i| (i % 251) as u8)
            .collect();
        for chunk in data.chunks(65_536) {
            w.write_all(chunk).unwrap();
        }
        let stored = w.finish().unwrap();
        let mut sizes = Vec::new();
        while let Ok(p) = rx.try_recv() {
            sizes.push(p.len());
        }
        assert_eq!(sizes, vec![MIN_PART as usize, MIN_PART as usize, 10]);
        assert_eq!(stored.parts, 3);
        assert_eq!(stored.size, data.len() as u64);
        assert_eq!(stored.sha256, hex::encode(Sha256::digest(&data)));
        // Ranges are cut by their own size, not at part boundaries.
        let want: Vec<[u8; 32]> = data
            .chunks(3 << 20)
            .map(|c| Sha256::digest(c).into())
            .collect();
        assert_eq!(want.len(), 4);
        assert_eq!(stored.ranges, want);
    }

    #[test]
    fn a_stopped_upload_fails_the_writer() {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        drop(rx);
        let mut w = PartWriter::new(tx, MIN_PART, MIN_PART);
        let err = w.write_all(&vec![0u8; MIN_PART as usize]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
