//! Download stage: an archive object in, its stored bytes out as a blocking `Read`.
//!
//! Ranged GETs run in parallel on the async side (a task each) and arrive in order over a
//! bounded channel (memory stays below (`QUEUED` + parallel + 1) × range size). When the
//! manifest has a SHA-256 per range (format 2), each range is checked before it is handed on —
//! a mismatch is read once more, then ends the stream with an error naming the object and the
//! range — so no byte that was not verified ever reaches decryption (and the ranges together
//! prove the whole object). The reader also checks the whole stream against the manifest: a
//! short object or an extra byte (and, for a format 1 manifest, a SHA-256 mismatch) is an
//! error that names the object — the last read fails rather than returning a clean end of
//! stream.

use std::io::{self, BufRead, Read};
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use futures::stream::{self, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use crate::schema::IntegrityError;
use crate::store::{DynStore, StoreError};

/// The SHA-256 of each range of an object, in order.
pub type RangeDigests = Arc<Vec<[u8; 32]>>;

/// What the manifest promises about an object.
#[derive(Debug, Clone)]
pub struct Expected {
    pub key: String,
    pub size: u64,
    pub sha256: String,
    /// The SHA-256 of each range (of the `range_size` passed to [`fetch`]); `None` for a
    /// format 1 manifest, whose object can only be checked as a whole at its end.
    pub ranges: Option<RangeDigests>,
}

/// Why a download stopped; the message names the object.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DownloadError {
    /// The store failed, and kept failing through its retries.
    #[error("{0}")]
    Store(StoreError),
    /// The bytes are not what the manifest promises.
    #[error("{0}")]
    Integrity(IntegrityError),
    /// The check itself could not run (its task died).
    #[error("{0}")]
    Other(String),
}

impl DownloadError {
    fn integrity(message: String) -> Self {
        DownloadError::Integrity(IntegrityError(message))
    }

    /// As an error whose chain holds the typed cause, so that its kind (transient, integrity)
    /// decides how it is reported.
    pub fn into_anyhow(self) -> anyhow::Error {
        match self {
            DownloadError::Store(e) => e.into(),
            DownloadError::Integrity(e) => e.into(),
            DownloadError::Other(message) => anyhow::Error::msg(message),
        }
    }
}

/// The first error the reader saw, kept so that the command can report it as is even when a
/// later stage (the decryptor, or gpg fed from the reader) rewraps it or swallows it.
#[derive(Debug, Default, Clone)]
pub struct Failure(Arc<Mutex<Option<DownloadError>>>);

impl Failure {
    pub fn set(&self, error: DownloadError) {
        let mut slot = self.0.lock().expect("not poisoned");
        if slot.is_none() {
            *slot = Some(error);
        }
    }

    pub fn get(&self) -> Option<DownloadError> {
        self.0.lock().expect("not poisoned").clone()
    }
}

/// Checked ranges waiting for the reader besides those being fetched: the GETs already run
/// ahead, so more would only hold memory.
const QUEUED: usize = 1;

/// Starts fetching `expected` on `runtime` and returns the reader of its bytes.
pub fn fetch(
    runtime: &tokio::runtime::Handle,
    store: DynStore,
    expected: Expected,
    range_size: u64,
    parallel: usize,
    failure: Failure,
) -> ObjectReader {
    let (tx, rx) = mpsc::channel::<Result<Bytes, DownloadError>>(QUEUED);
    let target = store.locate(&expected.key);
    let download = Download {
        store,
        key: expected.key.clone(),
        size: expected.size,
        hashes: expected.ranges.clone(),
    };
    runtime.spawn(download.run(tx, range_size.max(1), parallel.max(1)));
    ObjectReader {
        rx,
        current: Bytes::new(),
        // Verified ranges, authenticated by the manifest through the hash list's own SHA-256,
        // already prove the whole object: hashing it once more would only cost a second pass.
        hasher: expected.ranges.is_none().then(Sha256::new),
        seen: 0,
        expected,
        target,
        failure,
        done: false,
    }
}

/// The async side of one object's download: what it needs of [`Expected`].
struct Download {
    store: DynStore,
    key: String,
    size: u64,
    hashes: Option<RangeDigests>,
}

impl Download {
    /// Sends the object's ranges of `step` bytes, in order, `parallel` GETs at a time, down
    /// `tx`; the first error is sent last.
    async fn run(self, tx: mpsc::Sender<Result<Bytes, DownloadError>>, step: u64, parallel: usize) {
        if let Err(e) = self.check_size().await {
            let _ = tx.send(Err(e)).await;
            return;
        }
        let size = self.size;
        let count = size.div_ceil(step);
        let ranges = (0..count).map(move |i| (i, i * step..((i + 1) * step).min(size)));
        let this = Arc::new(self);
        // Each range is read and checked by a task of its own: a future polled only by this
        // loop would make no progress while the loop waits for room in the queue, so the
        // reads ahead would stall just when the reader is busiest. The tasks end with this
        // one (a reader that went away stops them).
        let mut parts = stream::iter(ranges)
            .map(|(index, range)| {
                let this = this.clone();
                AbortOnDropHandle::new(tokio::spawn(async move {
                    this.read_checked(index, range, count).await
                }))
            })
            .buffered(parallel);
        while let Some(joined) = parts.next().await {
            let part = joined.unwrap_or_else(|e| {
                let target = this.store.locate(&this.key);
                Err(DownloadError::Other(format!("reading {target}: {e}")))
            });
            let failed = part.is_err();
            if tx.send(part).await.is_err() || failed {
                return;
            }
        }
    }

    /// Fails unless the object is there with the size its manifest says, before any range is
    /// read.
    async fn check_size(&self) -> Result<(), DownloadError> {
        let size = self.size;
        match self.store.head(&self.key).await {
            Ok(Some(info)) if info.size == size => Ok(()),
            Ok(Some(info)) => Err(DownloadError::integrity(format!(
                "{}: object holds {} bytes, its manifest says {size} (truncated or replaced)",
                self.store.locate(&self.key),
                info.size
            ))),
            Ok(None) => Err(DownloadError::integrity(format!(
                "{}: object is missing",
                self.store.locate(&self.key)
            ))),
            Err(e) => Err(DownloadError::Store(e)),
        }
    }

    /// Range `index` (of `count`), checked against its SHA-256 when the manifest has range
    /// hashes.
    async fn read_checked(
        &self,
        index: u64,
        range: std::ops::Range<u64>,
        count: u64,
    ) -> Result<Bytes, DownloadError> {
        let (store, key) = (&self.store, self.key.as_str());
        let Some(hashes) = &self.hashes else {
            return read_range(store, key, range).await?.whole();
        };
        let Some(&want) = hashes.get(index as usize) else {
            return Err(DownloadError::integrity(format!(
                "{}: no SHA-256 for range {}",
                store.locate(key),
                index + 1
            )));
        };
        // A damaged or cut-short range may be a passing fault on the way: read it once more.
        // (A store error has been retried by the store already.)
        let mut short = None;
        for attempt in 0..2 {
            // Said, so that an operator learns of a damaged transfer even when it passes.
            let again = |what: &str| {
                if attempt == 0 {
                    log::warn!(
                        "{}: bytes {}..{} (range {} of {count}) {what}; reading them again",
                        store.locate(key),
                        range.start,
                        range.end,
                        index + 1
                    );
                }
            };
            let data = match read_range(store, key, range.clone()).await? {
                RangeRead::Whole(data) => data,
                RangeRead::Short(e) => {
                    again("came back cut short");
                    short = Some(e);
                    continue;
                }
            };
            short = None;
            let check = data.clone();
            let digest: [u8; 32] =
                tokio::task::spawn_blocking(move || Sha256::digest(&check).into())
                    .await
                    .map_err(|e| DownloadError::Other(e.to_string()))?;
            if digest == want {
                return Ok(data);
            }
            again("did not match their SHA-256");
        }
        if let Some(e) = short {
            return Err(e);
        }
        Err(DownloadError::integrity(format!(
            "{}: bytes {}..{} (range {} of {count}) do not match their SHA-256 in the manifest, also when read again: object damaged; nothing from this range on was passed on",
            store.locate(key),
            range.start,
            range.end,
            index + 1
        )))
    }
}

/// What one read of a range gave.
enum RangeRead {
    Whole(Bytes),
    /// Fewer bytes than asked for: why, naming the object.
    Short(DownloadError),
}

impl RangeRead {
    fn whole(self) -> Result<Bytes, DownloadError> {
        match self {
            RangeRead::Whole(data) => Ok(data),
            RangeRead::Short(e) => Err(e),
        }
    }
}

/// Bytes `range` of `key`; `Err` is the store's error.
async fn read_range(
    store: &DynStore,
    key: &str,
    range: std::ops::Range<u64>,
) -> Result<RangeRead, DownloadError> {
    let want = range.end - range.start;
    let data = store
        .get_range(key, range)
        .await
        .map_err(DownloadError::Store)?;
    if data.len() as u64 != want {
        return Ok(RangeRead::Short(DownloadError::integrity(format!(
            "{}: short read ({} of {want} bytes): object truncated",
            store.locate(key),
            data.len()
        ))));
    }
    Ok(RangeRead::Whole(data))
}

pub struct ObjectReader {
    rx: mpsc::Receiver<Result<Bytes, DownloadError>>,
    current: Bytes,
    /// The whole object's SHA-256, for a format 1 manifest (no range hashes).
    hasher: Option<Sha256>,
    seen: u64,
    expected: Expected,
    target: String,
    failure: Failure,
    done: bool,
}

impl ObjectReader {
    fn fail(&self, error: DownloadError) -> io::Error {
        let message = error.to_string();
        self.failure.set(error);
        io::Error::new(io::ErrorKind::InvalidData, message)
    }

    fn verify_end(&mut self) -> io::Result<()> {
        if self.seen != self.expected.size {
            return Err(self.fail(DownloadError::integrity(format!(
                "{}: got {} bytes, manifest says {}: object truncated",
                self.target, self.seen, self.expected.size
            ))));
        }
        // Finalised from a copy: a reader that reads again after the error gets it again,
        // never a clean end.
        let Some(hasher) = self.hasher.clone() else {
            return Ok(());
        };
        let digest = hex::encode(hasher.finalize());
        if !digest.eq_ignore_ascii_case(&self.expected.sha256) {
            return Err(self.fail(DownloadError::integrity(format!(
                "{}: SHA-256 {digest} does not match the manifest's {}: object damaged",
                self.target, self.expected.sha256
            ))));
        }
        Ok(())
    }
}

/// A `BufRead`, so that the next stage reads straight from the downloaded ranges.
impl BufRead for ObjectReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.current.is_empty() && !self.done {
            match self.rx.blocking_recv() {
                Some(Ok(data)) => {
                    if let Some(hasher) = &mut self.hasher {
                        hasher.update(&data);
                    }
                    self.seen += data.len() as u64;
                    self.current = data;
                }
                Some(Err(e)) => return Err(self.fail(e)),
                None => {
                    self.verify_end()?;
                    self.done = true;
                }
            }
        }
        Ok(&self.current)
    }

    fn consume(&mut self, amount: usize) {
        self.current.advance(amount.min(self.current.len()));
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        super::stage::read_buffered(self, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, Kind};
    use crate::store::faulty::{Fault, Faults, FaultyStore, Op, Rule};
    use crate::store::memory::MemoryStore;

    const RANGE: u64 = 1000;

    /// Reads a 3,500-byte object through a store with `rules`, its range hashes in the
    /// manifest unless `format1`; returns what the reader passed on, how it ended, and the
    /// store's calls.
    fn read_through(
        rules: Vec<Rule>,
        format1: bool,
    ) -> (Vec<u8>, io::Result<usize>, Failure, Faults) {
        let data: Vec<u8> = (0..3500u32).map(|i| (i % 253) as u8).collect();
        let memory = MemoryStore::new();
        memory.insert("obj", data.clone(), chrono::Utc::now());
        let faulty = FaultyStore::new(Arc::new(memory), rules);
        let faults = faulty.faults();
        let ranges: Vec<[u8; 32]> = data
            .chunks(RANGE as usize)
            .map(|c| Sha256::digest(c).into())
            .collect();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let failure = Failure::default();
        let mut reader = fetch(
            runtime.handle(),
            Arc::new(faulty),
            Expected {
                key: "obj".into(),
                size: data.len() as u64,
                sha256: hex::encode(Sha256::digest(&data)),
                ranges: (!format1).then(|| Arc::new(ranges)),
            },
            RANGE,
            2,
            failure.clone(),
        );
        let mut out = Vec::new();
        let end = loop {
            let mut buf = [0u8; 300];
            match reader.read(&mut buf) {
                Ok(0) => break Ok(0),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => break Err(e),
            }
        };
        if end.is_err() {
            // A failed stream stays failed: reading on gives no clean end.
            let again = reader.read(&mut [0u8; 300]);
            assert!(again.is_err(), "read again after {end:?}: {again:?}");
        }
        if !format1 {
            assert_eq!(&out[..], &data[..out.len()], "only original bytes pass");
        }
        (out, end, failure, faults)
    }

    /// Reads of the range holding byte 1,500 come back with `fault` the first `times` times.
    fn read_with_damage(fault: Fault, times: u32) -> (Vec<u8>, io::Result<usize>, Failure, Faults) {
        let rule = Rule::new(Op::GetRange, fault).covering(1500).first(times);
        read_through(vec![rule], false)
    }

    /// The reads of range 2 (bytes 1000..2000).
    fn reads_of_range_2(faults: &Faults) -> usize {
        faults
            .calls_of(Op::GetRange)
            .iter()
            .filter(|c| c.range == Some(1000..2000))
            .count()
    }

    #[test]
    fn a_range_damaged_once_is_read_again_and_passes() {
        let (out, end, failure, faults) = read_with_damage(Fault::FlipBit, 1);
        assert!(end.is_ok(), "{end:?}");
        assert_eq!(out.len(), 3500);
        assert!(failure.get().is_none());
        assert_eq!(reads_of_range_2(&faults), 2);
    }

    #[test]
    fn a_range_damaged_twice_stops_the_stream_before_it() {
        let (out, end, failure, faults) = read_with_damage(Fault::FlipBit, 2);
        assert_eq!(end.unwrap_err().kind(), io::ErrorKind::InvalidData);
        // Range 1 (bytes 0..1000) was verified and passed on; nothing of range 2.
        assert_eq!(out.len(), 1000);
        let message = failure.get().unwrap().to_string();
        assert!(message.contains("range 2 of 4"), "{message}");
        assert!(
            message.contains("memory:/obj"),
            "names the object: {message}"
        );
        assert_eq!(reads_of_range_2(&faults), 2, "read once more, no more");
        let kind = Error::from(failure.get().unwrap().into_anyhow()).kind();
        assert_eq!(kind, Kind::Integrity);
    }

    #[test]
    fn a_range_cut_short_is_read_again_and_twice_ends_the_stream_before_it() {
        let (out, end, failure, faults) = read_with_damage(Fault::Truncate, 1);
        assert!(end.is_ok(), "{end:?}");
        assert_eq!(out.len(), 3500);
        assert!(failure.get().is_none());
        assert_eq!(reads_of_range_2(&faults), 2);
        let (out, end, failure, faults) = read_with_damage(Fault::Truncate, 2);
        assert!(end.is_err());
        assert_eq!(out.len(), 1000);
        let message = failure.get().unwrap().to_string();
        assert!(
            message.contains("short read (500 of 1000 bytes)"),
            "{message}"
        );
        assert_eq!(reads_of_range_2(&faults), 2, "read once more, no more");
    }

    #[test]
    fn a_damaged_format_1_object_fails_at_its_end() {
        let rule = Rule::new(Op::GetRange, Fault::FlipBit).covering(1500);
        let (out, end, failure, _) = read_through(vec![rule], true);
        assert!(end.is_err());
        assert_eq!(
            out.len(),
            3500,
            "without range hashes, only the end can tell"
        );
        let message = failure.get().unwrap().to_string();
        assert!(message.contains("does not match the manifest"), "{message}");
    }

    #[test]
    fn a_store_error_on_a_range_ends_the_stream_with_it() {
        let rule = Rule::new(Op::GetRange, Fault::Permanent).covering(2500);
        let (out, end, failure, faults) = read_through(vec![rule], false);
        assert!(end.is_err());
        assert_eq!(out.len(), 2000, "the ranges before it pass");
        let reads = faults.calls_of(Op::GetRange);
        let of_range_3 = reads.iter().filter(|c| c.range == Some(2000..3000)).count();
        assert_eq!(
            of_range_3, 1,
            "a store error is the store's to retry, not read again"
        );
        let message = failure.get().unwrap().to_string();
        assert!(message.contains("injected permanent fault"), "{message}");
        let error = Error::from(failure.get().unwrap().into_anyhow());
        assert_eq!(
            error.kind(),
            Kind::Failed,
            "a permanent store error, not damage"
        );
    }

    #[test]
    fn a_store_fault_before_or_during_the_reads_ends_the_stream_in_its_own_kind() {
        use Fault::*;
        // (rule, bytes passed on before the stream ends, the kind of its error)
        let rows = [
            // The size is checked before any range is read: nothing passes.
            (Rule::new(Op::Head, Transient), 0, Kind::Transient),
            (Rule::new(Op::Head, Permanent), 0, Kind::Failed),
            (Rule::new(Op::Head, LostReply), 0, Kind::Transient),
            // A range the store kept failing: the ranges before it pass, none after.
            (
                Rule::new(Op::GetRange, Transient).covering(2500),
                2000,
                Kind::Transient,
            ),
            (
                Rule::new(Op::GetRange, LostReply).covering(2500),
                2000,
                Kind::Transient,
            ),
        ];
        for (rule, passed, kind) in rows {
            let row = format!("{rule:?}");
            for format1 in [false, true] {
                let (out, end, failure, _) = read_through(vec![rule.clone()], format1);
                assert!(end.is_err(), "{row}, format 1: {format1}");
                assert_eq!(out.len(), passed, "{row}, format 1: {format1}");
                let error = Error::from(failure.get().unwrap().into_anyhow());
                assert_eq!(error.kind(), kind, "{row}, format 1: {format1}");
            }
        }
    }
}
