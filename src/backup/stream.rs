//! A set's stream: the source's plaintext through the synchronous stages (source → counter →
//! compressor on a blocking thread, then the sealer and the part writer on a thread each,
//! joined by bounded queues), and the parts over a bounded channel to the uploader on the async
//! side. Part sizes follow a schedule made from the size expected (the set's previous run), and
//! the parts being filled, queued and in flight hold at most `MemoryLimit` (a budget each part
//! reserves before it is filled).

use std::io;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use sequoia_openpgp::Cert;
use tokio::sync::mpsc;

use crate::config::{Config, SetSpec};
use crate::pipeline::budget::MemoryBudget;
use crate::pipeline::compress::{Compression, Compressor};
use crate::pipeline::encrypt::Sealer;
use crate::pipeline::parts::{PartWriter, Stored};
use crate::pipeline::schedule::Schedule;
use crate::pipeline::stage::{self, StageWriter};
use crate::pipeline::upload::upload_parts;
use crate::pipeline::Counter;
use crate::progress::Progress;
use crate::schema::manifest;
use crate::source::{Report, Source};
use crate::store::{DynStore, PartReceipt};

/// Parts waiting in the channel besides those in flight.
const CHANNEL_DEPTH: usize = 1;

/// What the stream produced and stored.
pub(super) struct Streamed {
    pub report: Report,
    /// Bytes of plaintext the source wrote.
    pub plaintext: u64,
    pub stored: Stored,
    pub receipts: Vec<PartReceipt>,
    /// Parts larger than MemoryLimit allows were needed (the limit was exceeded), and how.
    pub over_limit: Option<String>,
}

/// Where a stream goes: the open upload `upload_id` of `archive` in `store`, encrypted to
/// `certs` (none: unencrypted).
pub(super) struct Target<'a> {
    pub store: &'a DynStore,
    pub archive: &'a str,
    pub upload_id: &'a str,
    pub certs: Arc<Vec<Cert>>,
    pub progress: &'a Progress,
    /// The memory its parts may hold: MemoryLimit, or its share when the quilt's uploads
    /// run beside it (`quilt::quilt_share`).
    pub memory_limit: u64,
}

/// Streams `source` into `to`, its size expected to be about `expected` stored bytes. Both
/// sides run to their end; the upload's own error is the cause when both failed (the pipeline
/// only saw the channel close).
pub(super) async fn stream(
    config: &Config,
    set: &SetSpec,
    source: Box<dyn Source>,
    to: Target<'_>,
    expected: Option<u64>,
) -> anyhow::Result<Streamed> {
    let Target {
        store,
        archive,
        upload_id,
        certs,
        progress,
        memory_limit,
    } = to;
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let in_flight = progress.clone();
    let uploader = tokio::spawn(upload_parts(
        store.clone(),
        archive.to_string(),
        upload_id.to_string(),
        rx,
        config.parallel_uploads,
        move |n| in_flight.in_flight(n),
    ));
    let compression = set.compression;
    let schedule = Schedule::new(config.chunk_size, expected, memory_limit);
    log::debug!(
        "{}: parts of {} bytes (expected: {expected:?} bytes), memory for parts {memory_limit} bytes",
        set.name,
        schedule.base,
    );
    let budget = MemoryBudget::new(memory_limit);
    let parts = PartWriter::new(tx, schedule, budget.clone(), manifest::RANGE_SIZE);
    let progress = progress.clone();
    progress.start_set(&set.name);
    let on_read: Box<dyn FnMut(u64) + Send> = Box::new(move |n| progress.read(n));
    let producer =
        tokio::task::spawn_blocking(move || produce(source, compression, certs, parts, on_read));
    let (produced, uploaded) = tokio::join!(producer, uploader);
    let produced = produced
        .map_err(|e| anyhow!("pipeline thread failed: {e}"))
        .and_then(|r| r);
    let uploaded = uploaded
        .map_err(|e| anyhow!("upload task failed: {e}"))
        .and_then(|r| r.map_err(anyhow::Error::from));
    match (produced, uploaded) {
        (Ok((report, plaintext, stored)), Ok(receipts)) => Ok(Streamed {
            over_limit: over_limit(&stored, budget.limit()),
            report,
            plaintext,
            stored,
            receipts,
        }),
        (_, Err(e)) => Err(e.context(format!("uploading {}", store.locate(archive)))),
        (Err(e), Ok(_)) => Err(e),
    }
}

/// The synchronous stages, outermost finished first: source → counter → compressor on this
/// thread (zstd and xz compress on their own worker threads), then the sealer and the part
/// writer each on a thread of its own, as `tar | zstd | gpg | split` would run. The quilt's
/// content uploads go through it too (`quilt`).
pub(super) fn produce(
    mut source: Box<dyn Source>,
    compression: Compression,
    certs: Arc<Vec<Cert>>,
    mut parts: PartWriter,
    on_read: Box<dyn FnMut(u64) + Send>,
) -> anyhow::Result<(Report, u64, Stored)> {
    let to_parts = StageWriter::spawn("parts", move |input| {
        stage::copy_buffered(input, &mut parts)?;
        parts.finish()
    })
    .context("starting the part writer")?;
    let to_sealer = StageWriter::spawn("encryption", move |input| {
        let mut to_parts = to_parts;
        let mut sealer = Sealer::new(&mut to_parts, &certs)
            .map_err(|e| io::Error::other(format!("starting encryption: {e}")))?;
        stage::copy_buffered(input, &mut sealer)?;
        sealer.finish()?;
        to_parts.finish()
    })
    .context("starting encryption")?;
    let compressor = Compressor::new(compression, to_sealer).context("starting compression")?;
    let mut counter = Counter::new(compressor, on_read);
    let report = source.write_to(&mut counter)?;
    let (compressor, plaintext) = counter.into_parts();
    let to_sealer = compressor.finish().context("finishing compression")?;
    let stored = to_sealer
        .finish()
        .context("finishing encryption and sending the last part")?;
    Ok((report, plaintext, stored))
}

/// A part larger than the whole limit was held alone, over the limit: the stream outgrew what
/// MemoryLimit allows (about limit × 10,000 bytes).
pub(super) fn over_limit(stored: &Stored, limit: u64) -> Option<String> {
    (stored.largest_part > limit).then(|| {
        format!(
            "a stream of {} bytes needed parts of {} bytes, more than MemoryLimit ({limit} bytes) \
             holds: memory went over the limit; raise MemoryLimit to at least {} bytes",
            stored.size,
            stored.largest_part,
            2 * stored.largest_part
        )
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use sequoia_openpgp::cert::CertBuilder;

    use super::*;
    use crate::pipeline::parts::Part;

    /// A source of `len` bytes that fails after them when `fail` is set.
    struct Bytes {
        len: usize,
        fail: bool,
    }

    impl Source for Bytes {
        fn format(&self) -> &'static str {
            "raw"
        }
        fn write_to(&mut self, out: &mut dyn Write) -> anyhow::Result<Report> {
            // Incompressible, so that the parts hold about as much as the source wrote.
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
            let mut block = vec![0u8; 64 * 1024];
            let mut left = self.len;
            while left > 0 {
                for chunk in block.chunks_mut(8) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    chunk.copy_from_slice(&x.to_le_bytes());
                }
                let n = left.min(block.len());
                out.write_all(&block[..n])?;
                left -= n;
            }
            if self.fail {
                anyhow::bail!("the source broke");
            }
            Ok(Report::default())
        }
    }

    /// Runs the synchronous stages into a channel whose parts are counted; returns what
    /// `produce` said and how many parts came out.
    fn produce_with(
        source: Bytes,
        compression: Compression,
        certs: Vec<Cert>,
    ) -> (anyhow::Result<Stored>, usize) {
        let (tx, mut rx) = mpsc::channel::<Part>(64);
        let drain = std::thread::spawn(move || {
            let mut parts = 0;
            while rx.blocking_recv().is_some() {
                parts += 1;
            }
            parts
        });
        let parts = PartWriter::new(
            tx,
            Schedule::new(5 << 20, None, 64 << 20),
            MemoryBudget::new(64 << 20),
            1 << 20,
        );
        let result = produce(
            Box::new(source),
            compression,
            Arc::new(certs),
            parts,
            Box::new(|_| {}),
        )
        .map(|(_, _, stored)| stored);
        (result, drain.join().unwrap())
    }

    #[test]
    fn every_stage_runs_to_its_end_and_the_parts_come_out() {
        let (cert, _) = CertBuilder::general_purpose(Some("t@example.org"))
            .generate()
            .unwrap();
        let (stored, parts) = produce_with(
            Bytes {
                len: 3 << 20,
                fail: false,
            },
            Compression::Zstd { level: 1 },
            vec![cert],
        );
        let stored = stored.unwrap();
        assert_eq!(parts as u32, stored.parts);
        assert!(stored.size > 0);
    }

    #[test]
    fn a_failing_stage_ends_the_stream_with_its_own_error_and_no_last_part() {
        // The source fails after 12 MiB: the stages after it are not finished, so only the two
        // full 5 MiB parts went out, never a last part that could let the upload complete; the
        // source's error is the one reported.
        let (result, parts) = produce_with(
            Bytes {
                len: 12 << 20,
                fail: true,
            },
            // (zstd would hold the bytes back in its own buffers)
            Compression::None,
            Vec::new(),
        );
        let err = format!("{:#}", result.unwrap_err());
        assert!(err.contains("the source broke"), "{err}");
        assert_eq!(parts, 2, "a stream cut short sends no last part");

        // The encryption stage fails (a certificate without an encryption key): its error.
        let (cert, _) = CertBuilder::new()
            .add_userid("no-encryption@example.org")
            .generate()
            .unwrap();
        let (result, parts) = produce_with(
            Bytes {
                len: 1 << 20,
                fail: false,
            },
            Compression::None,
            vec![cert],
        );
        let err = format!("{:#}", result.unwrap_err());
        assert!(err.contains("no usable encryption key"), "{err}");
        assert_eq!(parts, 0);
    }

    #[test]
    fn a_part_larger_than_the_limit_is_held_alone_and_reported() {
        // Parts of 8 MiB under a limit of 6 MiB: each is held alone, over the limit.
        let limit = 6 << 20;
        let budget = MemoryBudget::new(limit);
        let (tx, mut rx) = mpsc::channel::<Part>(8);
        let drain = std::thread::spawn(move || {
            let mut total = 0;
            while let Some(part) = rx.blocking_recv() {
                total += part.data.len();
            }
            total
        });
        let mut parts = PartWriter::new(
            tx,
            Schedule::new(8 << 20, None, limit),
            budget.clone(),
            1 << 20,
        );
        parts.write_all(&vec![1u8; 20 << 20]).unwrap();
        let stored = parts.finish().unwrap();
        assert_eq!(drain.join().unwrap(), 20 << 20);
        assert_eq!(budget.peak(), limit, "the whole budget, no more reserved");
        let problem = over_limit(&stored, limit).expect("reported");
        assert!(
            problem.contains("memory went over the limit")
                && problem.contains(&format!("at least {} bytes", 2 * (8 << 20))),
            "{problem}"
        );
        // Within the limit: nothing to report.
        assert_eq!(over_limit(&stored, 8 << 20), None);
    }
}
