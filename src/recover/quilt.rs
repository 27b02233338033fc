//! A quilted run's content objects, read for the splicer: content key in, the file's plaintext
//! out (HEAD → ranged GETs → decryption, as the run's archive is decrypted → zstd).
//!
//! The splicer (`tarstream`) checks every byte against the member's reference before passing
//! it on; this fetches and decodes, and keeps the first typed failure (a store error, a
//! missing object, one that cannot be decrypted or decompressed) with the object and the
//! member named, so that recovery reports it in those words and with its kind.
//!
//! A large file is read twice (the splicer's checking pass, then its output pass), and the
//! output pass writes before it reaches the end that its SHA-256 covers. So the first read of
//! an object records its stored size and the SHA-256 of each stored range, and every later
//! read checks each range against that record before it goes to decryption: the output pass
//! decrypts exactly the stored bytes whose plaintext was checked (decryption and decompression
//! are deterministic), and an object replaced in between ends the stream before a byte of the
//! replacement is decoded.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::pipeline::compress::decompressor;
use crate::pipeline::decrypt::{decryptor, DecryptWith};
use crate::schema::compression::Compression;
use crate::schema::manifest::Manifest;
use crate::schema::quilt::QuiltRef;
use crate::schema::IntegrityError;
use crate::store::DynStore;
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
    /// What the first read of each object saw, which every later read must see again.
    seen: HashMap<String, Arc<Mutex<Seen>>>,
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
            seen: HashMap::new(),
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
        let ranges = match self.seen.get(&reference.key) {
            Some(seen) => {
                let then = seen.lock().expect("not poisoned").size;
                if then != size {
                    return Err(self.fail(
                        IntegrityError(format!(
                            "{target}: the content object of {member} changed while it was \
                             read: {size} bytes stored now, {then} when it was checked"
                        ))
                        .into(),
                    ));
                }
                Ranges::Check(seen.clone())
            }
            None => {
                let seen = Arc::new(Mutex::new(Seen {
                    size,
                    ranges: Vec::new(),
                }));
                self.seen.insert(reference.key.clone(), seen.clone());
                Ranges::Record(seen)
            }
        };
        let store_failure = Arc::new(Mutex::new(None));
        let stored = StoredReader {
            handle: self.handle.clone(),
            store: self.store.clone(),
            key: reference.key.clone(),
            target: target.clone(),
            member: member.clone(),
            size,
            at: 0,
            current: Bytes::new(),
            ranges,
            failure: store_failure.clone(),
        };
        let decrypted = match self.decrypt {
            Some(how) => decryptor(stored, how),
            None => Ok(Box::new(stored) as Box<dyn Read + Send>),
        };
        let decoded = decrypted.and_then(|plain| {
            // Reads of zstd's own input size, as its decoder buffers them (8 KiB are slower).
            let input = std::io::BufReader::with_capacity(zstd::zstd_safe::DCtx::in_size(), plain);
            decompressor(Compression::Zstd { level: 3 }, input)
        });
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

/// The typed error behind a failed read of decoded content: the stored reader's (the store's,
/// or a range that differs from its first read), when it failed, else an integrity error (the
/// object cannot be decrypted or decompressed).
fn decode_failure(
    store_failure: &Mutex<Option<anyhow::Error>>,
    target: &str,
    member: &str,
    e: io::Error,
) -> anyhow::Error {
    match store_failure.lock().expect("not poisoned").take() {
        Some(stored) => stored,
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
    store_failure: Arc<Mutex<Option<anyhow::Error>>>,
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

/// What the first read of a content object saw: its stored size and the SHA-256 of each
/// [`CONTENT_RANGE`] of it (32 bytes per 4 MiB).
struct Seen {
    size: u64,
    ranges: Vec<[u8; 32]>,
}

/// What a read does with each stored range's SHA-256.
enum Ranges {
    /// The object's first read: remember them.
    Record(Arc<Mutex<Seen>>),
    /// A later read: each must be what the first read saw.
    Check(Arc<Mutex<Seen>>),
}

/// A content object's stored bytes, one ranged GET at a time, each range recorded or checked
/// ([`Ranges`]) before it is passed on; the failure is kept, typed and naming the object and
/// the member, for [`decode_failure`], since the decryption stage may rewrap it.
struct StoredReader {
    handle: tokio::runtime::Handle,
    store: DynStore,
    key: String,
    target: String,
    member: String,
    size: u64,
    at: u64,
    current: Bytes,
    ranges: Ranges,
    failure: Arc<Mutex<Option<anyhow::Error>>>,
}

impl StoredReader {
    /// Keeps `error` for [`decode_failure`] and returns its text as an I/O error.
    fn fail(&self, error: anyhow::Error) -> io::Error {
        let text = format!("{error:#}");
        self.failure
            .lock()
            .expect("not poisoned")
            .get_or_insert(error);
        io::Error::new(io::ErrorKind::InvalidData, text)
    }

    /// Records the SHA-256 of the range at `self.at` holding `data`, or checks it against the
    /// record of the first read.
    fn record_or_check(&self, data: &[u8]) -> io::Result<()> {
        let digest: [u8; 32] = Sha256::digest(data).into();
        let index = (self.at / CONTENT_RANGE) as usize;
        match &self.ranges {
            Ranges::Record(seen) => {
                let mut seen = seen.lock().expect("not poisoned");
                if seen.ranges.len() == index {
                    seen.ranges.push(digest);
                }
                Ok(())
            }
            Ranges::Check(seen) => {
                if seen.lock().expect("not poisoned").ranges.get(index) == Some(&digest) {
                    return Ok(());
                }
                let end = self.at + data.len() as u64;
                Err(self.fail(
                    IntegrityError(format!(
                        "{}: the content object of {} changed while it was read: bytes {}..{end} \
                         differ from those checked before",
                        self.target, self.member, self.at
                    ))
                    .into(),
                ))
            }
        }
    }
}

impl Read for StoredReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.current.is_empty() {
            if self.at >= self.size {
                return Ok(0);
            }
            let range = self.at..(self.at + CONTENT_RANGE).min(self.size);
            let want = range.end - range.start;
            let data = match self.handle.block_on(self.store.get_range(&self.key, range)) {
                Ok(data) => data,
                Err(e) => {
                    let member = self.member.clone();
                    return Err(self
                        .fail(anyhow::Error::from(e).context(format!("the content of {member}"))));
                }
            };
            if data.len() as u64 != want {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("short read ({} of {want} bytes)", data.len()),
                ));
            }
            self.record_or_check(&data)?;
            self.at += want;
            self.current = data;
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}
