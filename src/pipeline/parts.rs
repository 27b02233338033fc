//! Part stage: the stored byte stream in, `Bytes` parts out over a bounded channel, each with
//! its reservation of the memory budget.
//!
//! This is the border between the synchronous CPU stages (tar, compression, encryption) and the
//! async uploader; it runs on a thread of its own, fed by the sealer's stage queue. Part sizes
//! follow the stream's [`Schedule`]; a part's memory is reserved from the [`MemoryBudget`]
//! before it is filled and released once it is stored, so when the uploads fall behind, `write`
//! blocks and the whole pipeline slows down instead of buffering: the parts being filled,
//! queued and in flight stay within `MemoryLimit`. Every stored byte also passes through the
//! SHA-256 and the counter that end up in the manifest, and through one SHA-256 per fixed range
//! of the object (independent of the part sizes), which lets recovery verify each range before
//! any of its bytes go on.

use std::io::{self, Write};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc::Sender;

use super::budget::{MemoryBudget, Reservation};
use super::schedule::{Parts, Schedule, MAX_PARTS};

/// One part on its way to the store, with the memory it holds until it is stored.
#[derive(Debug)]
pub struct Part {
    pub data: Bytes,
    pub reservation: Reservation,
}

/// What was stored, for the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub size: u64,
    pub sha256: String,
    pub parts: u32,
    /// The largest part.
    pub largest_part: u64,
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
    tx: Sender<Part>,
    schedule: Parts,
    budget: Arc<MemoryBudget>,
    /// The part being filled, its memory, and its size.
    filling: Option<(BytesMut, Reservation, usize)>,
    parts: u32,
    /// Bytes in the parts sent (all of the stream, once finished).
    sent: u64,
    largest: u64,
    hasher: Sha256,
    ranges: RangeHasher,
}

impl PartWriter {
    pub fn new(
        tx: Sender<Part>,
        schedule: Schedule,
        budget: Arc<MemoryBudget>,
        range_size: u64,
    ) -> Self {
        PartWriter {
            tx,
            schedule: schedule.start(),
            budget,
            filling: None,
            parts: 0,
            sent: 0,
            largest: 0,
            hasher: Sha256::new(),
            ranges: RangeHasher::new(range_size),
        }
    }

    /// The part being filled; a new one once its memory is free (this waits for the budget).
    fn filling(&mut self) -> io::Result<&mut (BytesMut, Reservation, usize)> {
        if self.filling.is_none() {
            let number = self.parts + 1;
            if number > MAX_PARTS {
                return Err(io::Error::other(format!(
                    "stream exceeds {MAX_PARTS} parts ({} bytes so far): larger than S3's largest object",
                    self.sent
                )));
            }
            let size = self.schedule.size(number, self.sent);
            let reservation = self.budget.reserve(size);
            self.filling = Some((
                BytesMut::with_capacity(size as usize),
                reservation,
                size as usize,
            ));
        }
        Ok(self.filling.as_mut().expect("just filled"))
    }

    fn send(&mut self) -> io::Result<()> {
        let Some((buf, reservation, _)) = self.filling.take() else {
            return Ok(());
        };
        let data = buf.freeze();
        self.parts += 1;
        self.sent += data.len() as u64;
        self.largest = self.largest.max(data.len() as u64);
        self.tx
            .blocking_send(Part { data, reservation })
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the upload stopped (see its error)",
                )
            })
    }

    /// Sends the last part and reports what was stored. Until this returns, nothing of the
    /// stream can be committed.
    pub fn finish(mut self) -> io::Result<Stored> {
        if self.parts == 0 {
            self.filling()?; // an empty stream is one empty part
        }
        self.send()?;
        Ok(Stored {
            size: self.sent,
            sha256: hex::encode(self.hasher.finalize()),
            parts: self.parts,
            largest_part: self.largest,
            ranges: self.ranges.finish(),
        })
    }
}

impl Write for PartWriter {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let total = data.len();
        self.hasher.update(data);
        self.ranges.update(data);
        while !data.is_empty() {
            let (buf, _, limit) = self.filling()?;
            let take = (*limit - buf.len()).min(data.len());
            buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if buf.len() == *limit {
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
    use crate::pipeline::schedule::MIN_PART;

    #[test]
    fn parts_are_cut_at_the_limit_and_hashed() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(100);
        let budget = MemoryBudget::new(u64::MAX);
        let mut w = PartWriter::new(tx, Schedule::new(MIN_PART, None, u64::MAX), budget, 3 << 20);
        let data: Vec<u8> = (0..MIN_PART as usize * 2 + 10)
            .map(|i| (i % 251) as u8)
            .collect();
        for chunk in data.chunks(65_536) {
            w.write_all(chunk).unwrap();
        }
        let stored = w.finish().unwrap();
        let mut sizes = Vec::new();
        while let Ok(p) = rx.try_recv() {
            sizes.push(p.data.len());
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
    fn parts_being_filled_queued_and_stored_stay_within_the_memory_limit() {
        // Room for two smallest parts and a bit: a third waits until one is stored, however
        // many the channel and the uploads could take.
        let limit = 2 * MIN_PART + MIN_PART / 2;
        let budget = MemoryBudget::new(limit);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Part>(100);
        let uploader = std::thread::spawn(move || {
            let (mut held, mut total) = (Vec::new(), 0usize);
            while let Some(part) = rx.blocking_recv() {
                total += part.data.len();
                // A slow store: each part is stored only once the next arrived.
                held.push(part);
                if held.len() > 1 {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    held.remove(0);
                }
            }
            total
        });
        let mut w = PartWriter::new(
            tx,
            Schedule::new(MIN_PART, None, u64::MAX),
            budget.clone(),
            MIN_PART,
        );
        let data = vec![7u8; 8 * MIN_PART as usize + 3];
        for chunk in data.chunks(1 << 20) {
            w.write_all(chunk).unwrap();
        }
        let stored = w.finish().unwrap();
        assert_eq!(uploader.join().unwrap(), data.len());
        assert_eq!(stored.parts, 9);
        assert_eq!(stored.largest_part, MIN_PART);
        assert!(
            budget.peak() <= limit,
            "peak {} over {limit}",
            budget.peak()
        );
        assert_eq!(
            budget.peak(),
            2 * MIN_PART,
            "two parts held at once, not more"
        );
    }

    #[test]
    fn a_stopped_upload_fails_the_writer() {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        drop(rx);
        let budget = MemoryBudget::new(u64::MAX);
        let mut w = PartWriter::new(
            tx,
            Schedule::new(MIN_PART, None, u64::MAX),
            budget,
            MIN_PART,
        );
        let err = w.write_all(&vec![0u8; MIN_PART as usize]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
