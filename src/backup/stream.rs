//! A set's stream: the source's plaintext through the synchronous stages on a blocking thread
//! (source → counter → compressor → sealer → part writer), and the parts over a bounded channel
//! to the uploader on the async side. Part sizes follow a schedule made from the size expected
//! (the set's previous run), and the parts being filled, queued and in flight hold at most
//! `MemoryLimit` (a budget each part reserves before it is filled).

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
use crate::pipeline::stage::StageWriter;
use crate::pipeline::upload::upload_parts;
use crate::pipeline::Counter;
use crate::progress::Progress;
use crate::schema::manifest;
use crate::source::{Report, Source};
use crate::store::{DynStore, PartReceipt};

/// Parts waiting in the channel besides those in flight.
const CHANNEL_DEPTH: usize = 2;

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
    let schedule = Schedule::new(config.chunk_size, expected, config.memory_limit);
    log::debug!(
        "{}: parts of {} bytes (expected: {expected:?} bytes), MemoryLimit {} bytes",
        set.name,
        schedule.base,
        config.memory_limit
    );
    let budget = MemoryBudget::new(config.memory_limit);
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
/// writer each on a thread of its own, as `tar | zstd | gpg | split` would run.
fn produce(
    mut source: Box<dyn Source>,
    compression: Compression,
    certs: Arc<Vec<Cert>>,
    mut parts: PartWriter,
    on_read: Box<dyn FnMut(u64) + Send>,
) -> anyhow::Result<(Report, u64, Stored)> {
    let to_parts = StageWriter::spawn("parts", move |input| {
        input.copy_to(&mut parts)?;
        parts.finish()
    })
    .context("starting the part writer")?;
    let to_sealer = StageWriter::spawn("encryption", move |input| {
        let mut to_parts = to_parts;
        let mut sealer = Sealer::new(&mut to_parts, &certs)
            .map_err(|e| io::Error::other(format!("starting encryption: {e}")))?;
        input.copy_to(&mut sealer)?;
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
fn over_limit(stored: &Stored, limit: u64) -> Option<String> {
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

    use super::*;
    use crate::pipeline::parts::Part;

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
