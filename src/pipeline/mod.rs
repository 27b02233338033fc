//! The streaming stages (docs/ARCHITECTURE.md, "Data flow").
//!
//! ```text
//! backup:  Source ─► Counter ─► Compressor ─► Sealer ─► PartWriter ═► upload_parts ─► store
//! recover: store ─► fetch (ObjectReader) ─► decryptor ─► decompressor ─► TarSplicer ─► stdout
//! ```
//! The CPU stages are synchronous `Write`/`Read` adapters, finished explicitly outermost first;
//! on backup the sealer and the part writer each run on a thread of their own, on recovery the
//! decryptor and the decompressor (`stage`). Only
//! the store edge is async. Bounded queues and channels between them keep memory constant
//! whatever the data size.

pub mod budget;
pub mod compress;
pub mod decrypt;
pub mod download;
pub mod encrypt;
pub mod parts;
pub mod rate;
pub mod schedule;
pub mod stage;
pub mod upload;

use std::io::{self, Write};

/// Counts the bytes that pass, for the manifest's plaintext size, and tells `on_write` (the
/// progress display).
pub struct Counter<W: Write> {
    inner: W,
    count: u64,
    on_write: Box<dyn FnMut(u64) + Send>,
}

impl<W: Write> Counter<W> {
    pub fn new(inner: W, on_write: Box<dyn FnMut(u64) + Send>) -> Self {
        Counter {
            inner,
            count: 0,
            on_write,
        }
    }

    pub fn into_parts(self) -> (W, u64) {
        (self.inner, self.count)
    }
}

impl<W: Write> Write for Counter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        (self.on_write)(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
