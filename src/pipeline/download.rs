//! Download stage: an archive object in, its stored bytes out as a blocking `Read`.
//!
//! Ranged GETs run in parallel on the async side and arrive in order over a bounded channel
//! (memory stays below (depth + parallel) × range size). The reader checks the stream against
//! the manifest as it goes: a short object, an extra byte or a SHA-256 mismatch is an error that
//! names the object — the last read fails rather than returning a clean end of stream.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use futures::stream::{self, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::store::DynStore;

/// What the manifest promises about an object.
#[derive(Debug, Clone)]
pub struct Expected {
    pub key: String,
    pub size: u64,
    pub sha256: String,
}

/// The first integrity or transport error seen, kept so that the command can report it as is
/// even when a later stage (the decryptor) wraps it in its own message.
#[derive(Debug, Default, Clone)]
pub struct Failure(Arc<Mutex<Option<String>>>);

impl Failure {
    pub fn set(&self, message: String) {
        let mut slot = self.0.lock().expect("not poisoned");
        if slot.is_none() {
            *slot = Some(message);
        }
    }

    pub fn get(&self) -> Option<String> {
        self.0.lock().expect("not poisoned").clone()
    }
}

/// Starts fetching `expected` on `runtime` and returns the reader of its bytes.
pub fn fetch(
    runtime: &tokio::runtime::Handle,
    store: DynStore,
    expected: Expected,
    range_size: u64,
    parallel: usize,
    failure: Failure,
) -> ObjectReader {
    let (tx, rx) = mpsc::channel::<Result<Bytes, String>>(parallel.max(1));
    let target = store.locate(&expected.key);
    let key = expected.key.clone();
    let size = expected.size;
    runtime.spawn(async move {
        match store.head(&key).await {
            Ok(Some(info)) if info.size == size => {}
            Ok(Some(info)) => {
                let _ = tx
                    .send(Err(format!(
                        "{}: object holds {} bytes, its manifest says {size} (truncated or replaced)",
                        store.locate(&key),
                        info.size
                    )))
                    .await;
                return;
            }
            Ok(None) => {
                let _ = tx
                    .send(Err(format!("{}: object is missing", store.locate(&key))))
                    .await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(e.to_string())).await;
                return;
            }
        }
        let step = range_size.max(1);
        let ranges = (0..size.div_ceil(step)).map(move |i| i * step..((i + 1) * step).min(size));
        let mut parts = stream::iter(ranges)
            .map(|range| {
                let (store, key) = (store.clone(), key.clone());
                async move {
                    let want = range.end - range.start;
                    let data = store.get_range(&key, range).await.map_err(|e| e.to_string())?;
                    if data.len() as u64 != want {
                        return Err(format!(
                            "{}: short read ({} of {want} bytes): object truncated",
                            store.locate(&key),
                            data.len()
                        ));
                    }
                    Ok(data)
                }
            })
            .buffered(parallel.max(1));
        while let Some(part) = parts.next().await {
            let failed = part.is_err();
            if tx.send(part).await.is_err() || failed {
                return;
            }
        }
    });
    ObjectReader {
        rx,
        current: Bytes::new(),
        hasher: Sha256::new(),
        seen: 0,
        expected,
        target,
        failure,
        done: false,
    }
}

pub struct ObjectReader {
    rx: mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
    hasher: Sha256,
    seen: u64,
    expected: Expected,
    target: String,
    failure: Failure,
    done: bool,
}

impl ObjectReader {
    fn fail(&self, message: String) -> io::Error {
        self.failure.set(message.clone());
        io::Error::new(io::ErrorKind::InvalidData, message)
    }

    fn verify_end(&mut self) -> io::Result<()> {
        if self.seen != self.expected.size {
            return Err(self.fail(format!(
                "{}: got {} bytes, manifest says {}: object truncated",
                self.target, self.seen, self.expected.size
            )));
        }
        let digest = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if !digest.eq_ignore_ascii_case(&self.expected.sha256) {
            return Err(self.fail(format!(
                "{}: SHA-256 {digest} does not match the manifest's {}: object damaged",
                self.target, self.expected.sha256
            )));
        }
        Ok(())
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.current.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(data)) => {
                    self.hasher.update(&data);
                    self.seen += data.len() as u64;
                    self.current = data;
                }
                Some(Err(message)) => return Err(self.fail(message)),
                None => {
                    self.verify_end()?;
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}
