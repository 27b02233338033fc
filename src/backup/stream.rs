//! A set's stream: the source's plaintext through the synchronous stages on a blocking thread
//! (source → counter → compressor → sealer → part writer), and the parts over a bounded channel
//! to the uploader on the async side. Memory stays at the channel's parts plus those in flight.

use std::sync::Arc;

use anyhow::{anyhow, Context};
use sequoia_openpgp::Cert;
use tokio::sync::mpsc;

use crate::config::{Config, SetSpec};
use crate::pipeline::compress::{Compression, Compressor};
use crate::pipeline::encrypt::Sealer;
use crate::pipeline::parts::{PartWriter, Stored};
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

/// Streams `source` into `to`. Both sides run to their end; the upload's own error is the
/// cause when both failed (the pipeline only saw the channel close).
pub(super) async fn stream(
    config: &Config,
    set: &SetSpec,
    source: Box<dyn Source>,
    to: Target<'_>,
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
    let chunk = config.chunk_size;
    let progress = progress.clone();
    progress.start_set(&set.name);
    let on_read: Box<dyn FnMut(u64) + Send> = Box::new(move |n| progress.read(n));
    let producer = tokio::task::spawn_blocking(move || {
        produce(source, compression, &certs, tx, chunk, on_read)
    });
    let (produced, uploaded) = tokio::join!(producer, uploader);
    let produced = produced
        .map_err(|e| anyhow!("pipeline thread failed: {e}"))
        .and_then(|r| r);
    let uploaded = uploaded
        .map_err(|e| anyhow!("upload task failed: {e}"))
        .and_then(|r| r.map_err(anyhow::Error::from));
    match (produced, uploaded) {
        (Ok((report, plaintext, stored)), Ok(receipts)) => Ok(Streamed {
            report,
            plaintext,
            stored,
            receipts,
        }),
        (_, Err(e)) => Err(e.context(format!("uploading {}", store.locate(archive)))),
        (Err(e), Ok(_)) => Err(e),
    }
}

/// The synchronous stages, outermost finished first: source → counter → compressor → sealer →
/// part writer.
fn produce(
    mut source: Box<dyn Source>,
    compression: Compression,
    certs: &[Cert],
    tx: mpsc::Sender<bytes::Bytes>,
    chunk: u64,
    on_read: Box<dyn FnMut(u64) + Send>,
) -> anyhow::Result<(Report, u64, Stored)> {
    let mut parts = PartWriter::new(tx, chunk, manifest::RANGE_SIZE);
    let sealer = Sealer::new(&mut parts, certs).context("starting encryption")?;
    let compressor = Compressor::new(compression, sealer).context("starting compression")?;
    let mut counter = Counter::new(compressor, on_read);
    let report = source.write_to(&mut counter)?;
    let (compressor, plaintext) = counter.into_parts();
    let sealer = compressor.finish().context("finishing compression")?;
    sealer.finish().context("finishing encryption")?;
    let stored = parts.finish().context("sending the last part")?;
    Ok((report, plaintext, stored))
}
