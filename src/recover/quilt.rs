//! A quilted run's content objects, read for the splicer: content key in, the file's plaintext
//! out (HEAD → ranged GETs → decryption, as the run's archive is decrypted → zstd).
//!
//! The splicer (`tarstream`) checks every byte against the member's reference before passing
//! it on; this only fetches and decodes, and keeps the first typed failure (a store error, a
//! missing object, one that cannot be decrypted or decompressed) with the object and the
//! member named, so that recovery reports it in those words and with its kind.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::pipeline::compress::decompressor;
use crate::pipeline::decrypt::{decryptor, DecryptWith};
use crate::schema::compression::Compression;
use crate::schema::manifest::Manifest;
use crate::schema::quilt::QuiltRef;
use crate::schema::IntegrityError;
use crate::store::{DynStore, StoreError};
use crate::tarstream::QuiltContent;

/// Bytes of a content object fetched by one GET.
const CONTENT_RANGE: u64 = 4 << 20;

/// The content objects one quilted run's archive references.
pub(super) struct StoreContent<'a> {
    handle: tokio::runtime::Handle,
    store: DynStore,
    decrypt: Option<&'a DecryptWith>,
    /// The content keys the run's manifest lists: the archive may reference no other.
    listed: std::collections::BTreeSet<String>,
    /// The first failure, typed, naming the object and the member.
    pub(super) failure: Option<anyhow::Error>,
}

impl<'a> StoreContent<'a> {
    /// The content source of `manifest`'s archive, if it is a quilted run's.
    pub(super) fn of(
        handle: &tokio::runtime::Handle,
        store: &DynStore,
        manifest: &Manifest,
        decrypt: Option<&'a DecryptWith>,
    ) -> Option<Self> {
        let quilt = manifest.quilt.as_ref()?;
        Some(StoreContent {
            handle: handle.clone(),
            store: store.clone(),
            decrypt: if manifest.encrypted() { decrypt } else { None },
            listed: quilt.content.iter().cloned().collect(),
            failure: None,
        })
    }

    /// Records `error` (the first one counts) and returns its text as an I/O error for the
    /// splicer.
    fn fail(&mut self, error: anyhow::Error) -> io::Error {
        let text = format!("{error:#}");
        self.failure.get_or_insert(error);
        io::Error::new(io::ErrorKind::InvalidData, text)
    }
}

impl QuiltContent for StoreContent<'_> {
    fn locate(&self, key: &str) -> String {
        self.store.locate(key)
    }

    fn open(&mut self, reference: &QuiltRef, name: &[u8]) -> io::Result<Box<dyn Read + '_>> {
        let target = self.store.locate(&reference.key);
        let member = String::from_utf8_lossy(name).into_owned();
        if !self.listed.contains(&reference.key) {
            return Err(self.fail(
                IntegrityError(format!(
                    "{target}: member {member} references it, but its run's manifest does not \
                     list it"
                ))
                .into(),
            ));
        }
        let size = match self.handle.block_on(self.store.head(&reference.key)) {
            Ok(Some(info)) => info.size,
            Ok(None) => {
                return Err(self.fail(
                    IntegrityError(format!(
                        "{target}: the content object of {member} is missing"
                    ))
                    .into(),
                ))
            }
            Err(e) => {
                return Err(
                    self.fail(anyhow::Error::from(e).context(format!("the content of {member}")))
                )
            }
        };
        let store_failure = Arc::new(Mutex::new(None));
        let stored = StoredReader {
            handle: self.handle.clone(),
            store: self.store.clone(),
            key: reference.key.clone(),
            size,
            at: 0,
            current: Bytes::new(),
            failure: store_failure.clone(),
        };
        let decrypted = match self.decrypt {
            Some(how) => decryptor(stored, how),
            None => Ok(Box::new(stored) as Box<dyn Read + Send>),
        };
        let decoded =
            decrypted.and_then(|plain| decompressor(Compression::Zstd { level: 3 }, plain));
        match decoded {
            Ok(inner) => Ok(Box::new(Decoded {
                inner,
                target,
                member,
                store_failure,
                source: self,
            })),
            Err(e) => {
                let error = decode_failure(&store_failure, &target, &member, e);
                Err(self.fail(error))
            }
        }
    }
}

/// The typed error behind a failed read of decoded content: the store's, when it was the
/// store that failed, else an integrity error (the object cannot be decrypted or decompressed).
fn decode_failure(
    store_failure: &Mutex<Option<StoreError>>,
    target: &str,
    member: &str,
    e: io::Error,
) -> anyhow::Error {
    match store_failure.lock().expect("not poisoned").take() {
        Some(store) => anyhow::Error::from(store).context(format!("the content of {member}")),
        None => IntegrityError(format!(
            "{target}: the content of {member} cannot be decrypted and decompressed: {e}"
        ))
        .into(),
    }
}

/// The decoded plaintext, its failures recorded with the object and the member named.
struct Decoded<'s, 'a> {
    inner: Box<dyn Read + 'a>,
    target: String,
    member: String,
    store_failure: Arc<Mutex<Option<StoreError>>>,
    source: &'s mut StoreContent<'a>,
}

impl Read for Decoded<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => {
                let error = decode_failure(&self.store_failure, &self.target, &self.member, e);
                Err(self.source.fail(error))
            }
            other => other,
        }
    }
}

/// A content object's stored bytes, one ranged GET at a time; the store's error is kept for
/// [`decode_failure`], since the decryption stage may rewrap it.
struct StoredReader {
    handle: tokio::runtime::Handle,
    store: DynStore,
    key: String,
    size: u64,
    at: u64,
    current: Bytes,
    failure: Arc<Mutex<Option<StoreError>>>,
}

impl Read for StoredReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.current.is_empty() {
            if self.at >= self.size {
                return Ok(0);
            }
            let range = self.at..(self.at + CONTENT_RANGE).min(self.size);
            let want = range.end - range.start;
            let data = self
                .handle
                .block_on(self.store.get_range(&self.key, range))
                .map_err(|e| {
                    let text = e.to_string();
                    self.failure.lock().expect("not poisoned").get_or_insert(e);
                    io::Error::other(text)
                })?;
            if data.len() as u64 != want {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("short read ({} of {want} bytes)", data.len()),
                ));
            }
            self.at += want;
            self.current = data;
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}
