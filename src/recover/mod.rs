//! Recovery: a set and a point in time in, one tar stream out (README, "Commands" and
//! "Recovering without s3nap"; docs/ARCHITECTURE.md, "Data flow").
//!
//! The chain current at the chosen time (a FULL and its DIFFs) is read archive by archive:
//! ranged GETs → each range checked against its SHA-256 from the manifest's range hashes →
//! decryption → decompression → tar splicing (path filter, one end-of-archive marker). Nothing
//! local is needed but the key. Any integrity failure ends the stream where the damage starts
//! (the output is then a truncated tar, which tar refuses) and the command with an error that
//! names the object; a failure to write the output (the reader went away) is told apart as the
//! output's.
//!
//! Before any byte is read, [`ready`] HEADs every archive of the chain, and unless listing,
//! every quilt content object its manifests list: archived ones (GLACIER, DEEP_ARCHIVE, also
//! when a lifecycle rule moved them) have their retrieval requested, and recovery either stops
//! with `RetrievalPending` (exit status 5, nothing written) or waits; missing content objects
//! are warned about up front, each named.
//!
//! A quilted run's archive (manifest format 3) gets the content of its quilted members back
//! from the quilt's content objects ([`quilt`]), checked by the splicer against each member's
//! reference; a missing, replaced or undecryptable object fails the recovery naming it and the
//! member, the stream cut so that tar fails. A listing reads the archives only. Runs of earlier
//! formats are read exactly as before.

mod quilt;

use std::cell::RefCell;
use std::io::{BufRead, Read, Write};
use std::rc::Rc;

use anyhow::{anyhow, bail};
use chrono::{DateTime, Utc};
use futures::stream::{self as futures_stream, StreamExt};

use crate::catalog;
use crate::pipeline::compress::decompressor;
use crate::pipeline::decrypt::{decryptor, DecryptWith};
use crate::pipeline::download::{fetch, Expected, Failure, ObjectReader, RangeDigests};
use crate::pipeline::stage;
use crate::schema::manifest::Manifest;
use crate::schema::IntegrityError;
use crate::store::retrieval::{self, Retrieval};
use crate::store::DynStore;
use crate::tarstream::{PathFilter, QuiltContent, TarSplicer};

use self::quilt::StoreContent;

/// How many ranged GETs run at once (each of the manifest's range size).
const PARALLEL_GETS: usize = 4;

pub struct Request {
    pub set: String,
    pub at: Option<DateTime<Utc>>,
    /// Member paths to keep (as `tar t` shows them; a leading `/` is ignored). Empty: all.
    pub paths: Vec<Vec<u8>>,
}

pub struct Summary {
    pub runs: Vec<Manifest>,
    pub members: u64,
}

/// Picks the chain for `request`; async, so that the caller can run it on the runtime.
pub async fn plan(
    store: &DynStore,
    host: &str,
    request: &Request,
) -> anyhow::Result<Vec<Manifest>> {
    let runs = catalog::load(store, host, Some(&request.set)).await?;
    let chain = catalog::chain_at(&request.set, &runs, request.at)?;
    Ok(chain.into_iter().cloned().collect())
}

/// Makes sure every object of `chain` (archives, and their range hashes and refs, which a
/// lifecycle rule on the whole prefix moves too) can be read before a byte of it is: archived ones have
/// their retrieval requested (unless it is on its way). Unless `list` (a listing reads the
/// archives only), so do the quilt content objects the manifests list, and each missing one is
/// warned about now (the recovery fails at the member that needs it, after the others went
/// out). Without `wait`, any that cannot be read yet end the recovery with `RetrievalPending`
/// (exit status 5); with it, they are checked again until they can, each wait said on stderr.
pub async fn ready(
    store: &DynStore,
    chain: &[Manifest],
    retrieval: &Retrieval,
    wait: bool,
    list: bool,
) -> anyhow::Result<()> {
    let mut keys: Vec<String> = chain
        .iter()
        .flat_map(|m| m.objects())
        .map(String::from)
        .collect();
    if !list {
        let content = head_content(store, chain).await?;
        for (key, run) in &content.missing {
            log::warn!(
                "{}: quilt content object is missing (listed by {run}); recovering the file(s) \
                 that reference it will fail",
                store.locate(key)
            );
        }
        keys.extend(content.archived);
    }
    if !wait {
        return retrieval::require_readable(store, &keys, retrieval).await;
    }
    retrieval::wait(store, &keys, retrieval, |report, pause| {
        if pause.is_zero() {
            for waiting in &report.waiting {
                log::info!("{waiting}");
            }
            return;
        }
        log::info!(
            "waiting for the retrieval of {} archived object(s) (up to {} hour(s)); next check in {} s",
            report.waiting.len(),
            report.longest_wait(retrieval.tier).as_secs().div_ceil(3600),
            pause.as_secs()
        );
    })
    .await?;
    log::info!("every archive of the recovery can be read");
    Ok(())
}

/// HEAD requests of quilt content in flight at once.
const PARALLEL_HEADS: usize = 16;

/// What HEAD said of the quilt content objects a chain's manifests list.
#[derive(Debug, Default, PartialEq, Eq)]
struct ContentState {
    /// Keys of those that must be retrieved before they can be read.
    archived: Vec<String>,
    /// Keys of those that do not exist, each with the first run that lists it.
    missing: Vec<(String, String)>,
}

/// HEADs every content object `chain`'s manifests list, each once (a chain's runs share them),
/// in key order. A key that is no content key (a damaged manifest) is left to the splicer,
/// which refuses what it names.
async fn head_content(store: &DynStore, chain: &[Manifest]) -> anyhow::Result<ContentState> {
    let mut listed: std::collections::BTreeMap<&str, String> = Default::default();
    for m in chain {
        for key in m.quilt.iter().flat_map(|q| &q.content) {
            if crate::schema::quilt::is_content_key(key) {
                listed
                    .entry(key.as_str())
                    .or_insert_with(|| format!("run {} of {}", m.run, m.set));
            }
        }
    }
    let mut heads: Vec<_> = futures_stream::iter(listed.keys().copied())
        .map(|key| async move { (key, store.head(key).await) })
        .buffer_unordered(PARALLEL_HEADS)
        .collect()
        .await;
    heads.sort_by_key(|(key, _)| *key);
    let mut state = ContentState::default();
    for (key, head) in heads {
        match head? {
            None => state.missing.push((key.to_string(), listed[key].clone())),
            Some(info) if info.needs_retrieval() => state.archived.push(key.to_string()),
            Some(_) => {}
        }
    }
    Ok(state)
}

/// The range size and the SHA-256 of each range of `manifest`'s archive, read from its hash
/// object and checked against the manifest. A format 1 manifest has none: its archive can only
/// be checked as a whole, at its end.
fn range_hashes(
    handle: &tokio::runtime::Handle,
    store: &DynStore,
    manifest: &Manifest,
) -> anyhow::Result<(u64, Option<RangeDigests>)> {
    let Some(ranges) = &manifest.archive.ranges else {
        log::info!(
            "{} run {}: manifest format {} has no range hashes; its archive is verified as a whole at its end, after its bytes were passed on",
            manifest.set,
            manifest.run,
            manifest.format
        );
        return Ok((crate::schema::manifest::RANGE_SIZE, None));
    };
    let target = store.locate(&ranges.key);
    let data = handle.block_on(store.get(&ranges.key))?;
    let hashes = ranges
        .decode(&data, manifest.archive.stored_size)
        .map_err(|e| IntegrityError(format!("{target}: {e}")))?;
    Ok((ranges.range_size, Some(std::sync::Arc::new(hashes))))
}

/// The reader of the recovered stream went away (`recover … | head`, a restore command that
/// exited early): the output's doing, not the backup's.
#[derive(Debug, thiserror::Error)]
#[error("the reader closed the output (broken pipe) after {bytes} bytes")]
pub struct OutputClosed {
    pub bytes: u64,
}

/// What reached the output, and the error that stopped it, if writing is what failed.
#[derive(Default)]
struct Written {
    bytes: u64,
    failed: Option<std::io::Error>,
}

/// The caller's output, recording what [`Written`] says: an I/O error surfacing from the
/// pipeline could come from the archive as well as from the output, and only this knows which.
struct Output<W> {
    inner: W,
    written: Rc<RefCell<Written>>,
}

impl<W: Write> Write for Output<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let result = self.inner.write(buf);
        let mut w = self.written.borrow_mut();
        match &result {
            Ok(n) => w.bytes += *n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => w.failed = Some(std::io::Error::new(e.kind(), e.to_string())),
        }
        result
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let result = self.inner.flush();
        if let Err(e) = &result {
            self.written.borrow_mut().failed = Some(std::io::Error::new(e.kind(), e.to_string()));
        }
        result
    }
}

impl Written {
    /// The error to report when writing the output is what failed.
    fn blame(&self) -> Option<anyhow::Error> {
        let e = self.failed.as_ref()?;
        Some(if e.kind() == std::io::ErrorKind::BrokenPipe {
            OutputClosed { bytes: self.bytes }.into()
        } else {
            anyhow!(
                "writing the recovered output after {} bytes: {e}",
                self.bytes
            )
        })
    }
}

/// What the decoded archives go into.
enum Sink<W: Write> {
    /// Tar archives spliced into one stream (or listed).
    Tar(TarSplicer<W>, PathFilter),
    /// Dumps passed through, a chain's archives concatenated in order.
    Raw(W),
}

impl<W: Write> Sink<W> {
    /// The sink `chain`'s archives call for: a dump has no members to pick or list.
    fn new(chain: &[Manifest], out: W, paths: Vec<Vec<u8>>, list: bool) -> anyhow::Result<Self> {
        if chain.iter().all(is_tar) {
            let splicer = if list {
                TarSplicer::listing(out)
            } else {
                TarSplicer::new(out)
            };
            return Ok(Sink::Tar(splicer, PathFilter::new(paths)));
        }
        if list || !paths.is_empty() {
            bail!("member paths and --list apply to tar archives, not to dumps");
        }
        Ok(Sink::Raw(out))
    }

    /// One decoded archive in; `quilt` gives a quilted run's content back.
    fn append(
        &mut self,
        mut data: impl BufRead,
        quilt: Option<&mut dyn QuiltContent>,
    ) -> anyhow::Result<()> {
        match self {
            Sink::Tar(splicer, filter) => {
                splicer.append_with(data, filter, quilt).map_err(typed)?
            }
            Sink::Raw(w) => {
                stage::copy_buffered(&mut data, w)?;
            }
        }
        Ok(())
    }

    /// Ends the tar stream so that tar fails on it too (see `TarSplicer::abandon`).
    fn abandon(self) {
        if let Sink::Tar(splicer, _) = self {
            // Best effort: the output may be what failed.
            let _ = splicer.abandon();
        }
    }

    /// Completes the output and returns the number of members passed on; a member path asked
    /// for that no archive held is an error.
    fn finish(self, written: &RefCell<Written>) -> anyhow::Result<u64> {
        match self {
            Sink::Tar(splicer, filter) => {
                let members = splicer.members;
                if let Err(e) = splicer.finish() {
                    return Err(written.borrow().blame().unwrap_or_else(|| e.into()));
                }
                let missing = filter.unmatched();
                if !missing.is_empty() {
                    bail!("not found in the recovered run(s): {}", missing.join(", "));
                }
                Ok(members)
            }
            Sink::Raw(mut w) => {
                if let Err(e) = w.flush() {
                    return Err(written.borrow().blame().unwrap_or_else(|| e.into()));
                }
                Ok(0)
            }
        }
    }
}

/// Streams `chain` into `out`. Blocking: call it outside the async runtime, whose `handle`
/// runs the downloads.
pub fn stream<W: Write>(
    handle: &tokio::runtime::Handle,
    store: &DynStore,
    chain: Vec<Manifest>,
    paths: Vec<Vec<u8>>,
    decrypt: Option<&DecryptWith>,
    list: bool,
    out: W,
) -> anyhow::Result<Summary> {
    let written = Rc::new(RefCell::new(Written::default()));
    let out = std::io::BufWriter::with_capacity(
        1 << 20,
        Output {
            inner: out,
            written: written.clone(),
        },
    );
    let mut sink = Sink::new(&chain, out, paths, list)?;
    // Every archive of the chain into the sink; on any failure the tar stream is ended so that
    // tar fails on it too.
    let streamed = chain.iter().try_for_each(|manifest| {
        stream_archive(handle, store, manifest, decrypt, list, &mut sink, &written)
    });
    if let Err(e) = streamed {
        sink.abandon();
        return Err(e);
    }
    let members = sink.finish(&written)?;
    Ok(Summary {
        runs: chain,
        members,
    })
}

/// Starts the checked download of `manifest`'s archive (ranged GETs in parallel, each range
/// against its SHA-256): its reader, and the first integrity or store failure it met.
fn open_archive(
    handle: &tokio::runtime::Handle,
    store: &DynStore,
    manifest: &Manifest,
) -> anyhow::Result<(ObjectReader, Failure)> {
    let (range_size, ranges) = range_hashes(handle, store, manifest)?;
    let failure = Failure::default();
    let reader = fetch(
        handle,
        store.clone(),
        Expected {
            key: manifest.archive.key.clone(),
            size: manifest.archive.stored_size,
            sha256: manifest.archive.sha256.clone(),
            ranges,
        },
        range_size,
        PARALLEL_GETS,
        failure.clone(),
    );
    Ok((reader, failure))
}

/// Downloads, checks and decodes `manifest`'s archive into `sink`, reporting a failure in the
/// words of whoever caused it: the output, the integrity check, or a later stage. A listing
/// (`list`) gets no content source: it reads the archive only, and a quilted member is listed
/// from its header like any other.
fn stream_archive<W: Write>(
    handle: &tokio::runtime::Handle,
    store: &DynStore,
    manifest: &Manifest,
    decrypt: Option<&DecryptWith>,
    list: bool,
    sink: &mut Sink<W>,
    written: &RefCell<Written>,
) -> anyhow::Result<()> {
    let target = store.locate(&manifest.archive.key);
    let (reader, failure) = open_archive(handle, store, manifest)?;
    let mut content = if list {
        None
    } else {
        StoreContent::of(handle, store, manifest, decrypt)
    };
    let quilt = content.as_mut().map(|c| c as &mut dyn QuiltContent);
    if let Err(e) = decode_into(reader, manifest, decrypt, sink, quilt) {
        if let Some(e) = written.borrow().blame() {
            return Err(e);
        }
        // The integrity check's own words beat whatever a later stage made of them: the
        // archive's, then the content object's.
        return Err(match failure.get() {
            Some(first) => first.into_anyhow(),
            None => match content.and_then(|c| c.failure) {
                Some(first) => first.context(format!("recovering {target}")),
                None => e.context(format!("recovering {target}")),
            },
        });
    }
    if let Some(first) = failure.get() {
        return Err(first.into_anyhow());
    }
    log::info!(
        "recovered {} run {} from {target}",
        manifest.kind,
        manifest.run
    );
    Ok(())
}

/// How far [`check_archive`] takes an archive.
#[derive(Clone, Copy)]
pub enum Check<'a> {
    /// Every stored byte, each range against its SHA-256: no key needed.
    Read,
    /// Also decrypted, decompressed and parsed to its end (a tar's members, a dump's length),
    /// as a recovery would.
    Decode(&'a DecryptWith),
}

/// Reads `manifest`'s archive as a recovery would, writing nothing (`s3nap verify --read` and
/// `--deep`); the error names the object. Blocking, like [`stream`].
pub fn check_archive(
    handle: &tokio::runtime::Handle,
    store: &DynStore,
    manifest: &Manifest,
    how: Check,
) -> anyhow::Result<()> {
    let target = store.locate(&manifest.archive.key);
    let (mut reader, failure) = open_archive(handle, store, manifest)?;
    let mut content = None;
    let checked = match how {
        // Each checked range is dropped as it comes, never copied.
        Check::Read => stage::copy_buffered(&mut reader, &mut std::io::sink())
            .map(drop)
            .map_err(anyhow::Error::from),
        Check::Decode(decrypt) => {
            // Tar members are parsed (and listed into nothing); a dump passes through.
            let mut sink = if is_tar(manifest) {
                Sink::Tar(TarSplicer::listing(std::io::sink()), PathFilter::default())
            } else {
                Sink::Raw(std::io::sink())
            };
            // A quilted run's content objects are fetched, decrypted and checked too.
            content = StoreContent::of(handle, store, manifest, Some(decrypt));
            let quilt = content.as_mut().map(|c| c as &mut dyn QuiltContent);
            decode_into(reader, manifest, Some(decrypt), &mut sink, quilt).and_then(|plaintext| {
                let want = manifest.archive.plaintext_size;
                if plaintext != want {
                    return Err(IntegrityError(format!(
                        "{target}: decodes to {plaintext} bytes, its manifest says {want}"
                    ))
                    .into());
                }
                Ok(())
            })
        }
    };
    // The integrity check's own words beat whatever a later stage made of them.
    if let Some(first) = failure.get() {
        return Err(first.into_anyhow());
    }
    if let Some(first) = content.and_then(|c| c.failure) {
        return Err(first.context(format!("checking {target}")));
    }
    checked.map_err(|e| e.context(format!("checking {target}")))
}

/// `e` as an error whose chain holds the integrity error it carries, if it carries one (the
/// splicer's verdict on quilted content), so that it is reported as one.
fn typed(e: std::io::Error) -> anyhow::Error {
    if e.get_ref()
        .is_some_and(|inner| inner.is::<IntegrityError>())
    {
        if let Ok(integrity) = e
            .into_inner()
            .expect("checked")
            .downcast::<IntegrityError>()
        {
            return (*integrity).into();
        }
        unreachable!("checked to be an IntegrityError");
    }
    e.into()
}

fn is_tar(manifest: &Manifest) -> bool {
    manifest.archive.format == "tar"
}

/// A reader counting the bytes read through it (consumed from its buffer).
struct Counted<R> {
    inner: R,
    bytes: u64,
}

impl<R: BufRead> BufRead for Counted<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.inner.consume(amount);
        self.bytes += amount as u64;
    }
}

impl<R: BufRead> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        stage::read_buffered(self, buf)
    }
}

/// Decrypts (when the archive is encrypted) and decompresses the archive's bytes into `sink`,
/// decryption and decompression each on a thread of their own, as `gpg -d | zstd -d | tar -x`
/// would run; returns the plaintext's length (the archive's, without spliced content). A
/// quilted run's members get their content from `quilt`.
fn decode_into<W: Write>(
    reader: ObjectReader,
    manifest: &Manifest,
    decrypt: Option<&DecryptWith>,
    sink: &mut Sink<W>,
    quilt: Option<&mut dyn QuiltContent>,
) -> anyhow::Result<u64> {
    let how = match (manifest.encrypted(), decrypt) {
        (false, _) => None,
        (true, Some(how)) => Some(how),
        (true, None) => bail!("the archive is encrypted and no way to decrypt was given"),
    };
    let compression = manifest.archive.compression;
    std::thread::scope(|scope| {
        let compressed: Box<dyn BufRead + Send> = match how {
            Some(how) => Box::new(stage::spawn_reader(scope, "decryption", move |out| {
                out.fill_from(&mut decryptor(reader, how)?).map(drop)
            })?),
            None => Box::new(reader),
        };
        let plain = stage::spawn_reader(scope, "decompression", move |out| {
            out.fill_from(&mut decompressor(compression, compressed)?)
                .map(drop)
        })?;
        let mut counted = Counted {
            inner: plain,
            bytes: 0,
        };
        sink.append(&mut counted, quilt)?;
        Ok(counted.bytes)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sha2::Digest;

    use super::*;
    use crate::schema::compression::Compression;
    use crate::schema::layout::{self, Kind, RunId};
    use crate::schema::manifest::{sample, RangeHashes};
    use crate::store::faulty::{Fault, FaultyStore, Op, Rule};
    use crate::store::memory::MemoryStore;
    use crate::tarstream::tests::{key_of, quilted_archive, Entry};

    const RANGE: u64 = 1000;

    /// The archive's bytes: a dump (passed through as is), three and a half ranges long.
    fn data() -> Vec<u8> {
        (0..3500u32).map(|i| (i % 251) as u8).collect()
    }

    /// Stores a committed run of set "sql/x" at `second`s past a fixed time holding `data`:
    /// its dump, range hashes (of `RANGE` bytes) and manifest; returns the manifest and its JSON.
    fn put_run(memory: &MemoryStore, second: i64, data: Vec<u8>) -> (Manifest, Vec<u8>) {
        let run = RunId::at(chrono::DateTime::from_timestamp(1_800_000_000 + second, 0).unwrap());
        let digests: Vec<[u8; 32]> = data
            .chunks(RANGE as usize)
            .map(|c| sha2::Sha256::digest(c).into())
            .collect();
        let hashes = RangeHashes::encode(&digests);
        let mut m = sample("sql/x", run, Kind::Full, None);
        m.archive.key = layout::archive_key("h", "sql/x", run, Kind::Full, "sql");
        m.archive.format = "sql".into();
        m.archive.stored_size = data.len() as u64;
        m.archive.sha256 = hex::encode(sha2::Sha256::digest(&data));
        m.archive.ranges = Some(RangeHashes {
            key: layout::archive_key("h", "sql/x", run, Kind::Full, "sha256"),
            range_size: RANGE,
            count: digests.len() as u64,
            sha256: hex::encode(sha2::Sha256::digest(&hashes)),
        });
        let now = chrono::Utc::now();
        memory.insert(&m.archive.key, data, now);
        memory.insert(&m.archive.ranges.as_ref().unwrap().key, hashes, now);
        let json = m.to_json();
        memory.insert(
            &layout::manifest_key("h", "sql/x", run, Kind::Full),
            json.clone(),
            now,
        );
        (m, json)
    }

    /// A memory store holding two runs of "sql/x" of the same size, one second apart (their
    /// keys one flipped bit apart); the latest, holding `data()`, is returned with its JSON.
    fn committed() -> (Arc<MemoryStore>, Manifest, Vec<u8>) {
        let memory = Arc::new(MemoryStore::new());
        put_run(&memory, 0, data().into_iter().rev().collect());
        let (m, json) = put_run(&memory, 1, data());
        (memory, m, json)
    }

    /// Plans and streams the latest run of "sql/x" through `store`: what reached the output,
    /// and how it ended.
    fn recover(
        runtime: &tokio::runtime::Runtime,
        store: DynStore,
    ) -> (Vec<u8>, anyhow::Result<()>) {
        let request = Request {
            set: "sql/x".into(),
            at: None,
            paths: vec![],
        };
        let mut out = Vec::new();
        let result = runtime
            .block_on(plan(&store, "h", &request))
            .and_then(|chain| {
                stream(
                    runtime.handle(),
                    &store,
                    chain,
                    vec![],
                    None,
                    false,
                    &mut out,
                )
                .map(drop)
            });
        (out, result)
    }

    /// Streams `manifest`'s archive (stored as `put_run` stores it) with `decrypt`: the output and
    /// the error.
    fn decode(
        memory: Arc<MemoryStore>,
        manifest: Manifest,
        decrypt: Option<&DecryptWith>,
    ) -> (Vec<u8>, String) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let store: DynStore = memory;
        let mut out = Vec::new();
        let result = stream(
            runtime.handle(),
            &store,
            vec![manifest],
            vec![],
            decrypt,
            false,
            &mut out,
        );
        (
            out,
            format!("{:#}", result.err().expect("the stream fails")),
        )
    }

    #[test]
    fn a_failing_decryption_or_decompression_stage_ends_the_stream_with_its_own_error() {
        // Stored bytes that pass every range check but are no zstd frame: the decompression
        // thread's error, and nothing written.
        let memory = Arc::new(MemoryStore::new());
        let (mut m, _) = put_run(&memory, 0, data());
        m.archive.compression = Compression::Zstd { level: 3 };
        let (out, err) = decode(memory, m, None);
        assert!(out.is_empty());
        assert!(err.contains("Unknown frame descriptor"), "{err}");

        // The same bytes said to be encrypted: the decryption thread's error.
        let memory = Arc::new(MemoryStore::new());
        let (mut m, _) = put_run(&memory, 0, data());
        m.archive.recipients = vec!["0123456789ABCDEF".into()];
        let (cert, _) = sequoia_openpgp::cert::CertBuilder::general_purpose(Some("t@example.org"))
            .generate()
            .unwrap();
        let identity = DecryptWith::Identity(crate::keys::Identity {
            certs: vec![cert],
            path: "key.asc".into(),
        });
        let (out, err) = decode(memory, m, Some(&identity));
        assert!(out.is_empty());
        assert!(err.contains("cannot decrypt with key.asc"), "{err}");
    }

    #[test]
    fn recovery_under_any_read_fault_gives_the_exact_bytes_or_an_error() {
        use Fault::*;
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (_, m, _) = committed();
        let manifest = layout::manifest_key("h", "sql/x", m.run, Kind::Full);
        let ranges = m.archive.ranges.as_ref().unwrap().key.clone();
        let archive = m.archive.key.clone();
        // (rule, whether the exact bytes still come out)
        let mut rows = Vec::new();
        for fault in [Transient, Permanent, LostReply] {
            rows.push((Rule::new(Op::List, fault), false));
            rows.push((Rule::new(Op::Get, fault).key(&manifest), false));
            rows.push((Rule::new(Op::Get, fault).key(&ranges), false));
            rows.push((Rule::new(Op::Head, fault).key(&archive), false));
            rows.push((Rule::new(Op::GetRange, fault).covering(2500), false));
        }
        for fault in [Truncate, FlipBit] {
            rows.push((Rule::new(Op::Get, fault).key(&manifest), false));
            rows.push((Rule::new(Op::Get, fault).key(&ranges), false));
            // A damaged range is read once more: damaged once, it passes.
            rows.push((Rule::new(Op::GetRange, fault).covering(2500).nth(1), true));
            rows.push((Rule::new(Op::GetRange, fault).covering(2500), false));
        }
        for (rule, exact) in rows {
            let row = format!("{rule:?}");
            let (memory, _, _) = committed();
            let store: DynStore = Arc::new(FaultyStore::new(memory, [rule]));
            let (out, result) = recover(&runtime, store);
            assert_eq!(result.is_ok(), exact, "{row}: {result:?}");
            assert!(
                data().starts_with(&out),
                "{row}: only verified bytes reach the output"
            );
            if exact {
                assert_eq!(out, data(), "{row}");
            }
        }
    }

    #[test]
    fn a_bit_flipped_anywhere_in_the_manifest_or_range_hashes_never_gives_wrong_bytes() {
        // The manifest is the root of trust and carries no checksum of its own: whatever one
        // flipped bit makes of it — even a key naming the other run's objects — the archive's
        // bytes are still checked against the range hashes, and those against the manifest.
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (_, m, json) = committed();
        let manifest = layout::manifest_key("h", "sql/x", m.run, Kind::Full);
        let ranges = m.archive.ranges.as_ref().unwrap();
        let targets = [(manifest, json.len()), (ranges.key.clone(), 65 * 4)];
        let mut passed = 0;
        for (key, len) in targets {
            for at in 0..len as u64 {
                let (memory, _, _) = committed();
                let rule = Rule::new(Op::Get, Fault::FlipBit).key(&key).covering(at);
                let store: DynStore = Arc::new(FaultyStore::new(memory, [rule]));
                let (out, result) = recover(&runtime, store);
                assert!(
                    data().starts_with(&out),
                    "{key} flipped at {at}: wrong bytes out"
                );
                if result.is_ok() {
                    assert_eq!(out, data(), "{key} flipped at {at}");
                    passed += 1;
                }
            }
        }
        // Some flips change nothing that matters (a letter's case in a hex digest, a warning):
        // the archive then comes out whole, and the test saw both outcomes.
        assert!(passed > 0);
    }

    /// zstd, then OpenPGP to `cert`: a content object's and a quilted archive's stored form.
    fn seal(data: &[u8], cert: &sequoia_openpgp::Cert) -> Vec<u8> {
        let compressed = zstd::encode_all(data, 3).unwrap();
        let mut sealer =
            crate::pipeline::encrypt::Sealer::new(Vec::new(), std::slice::from_ref(cert)).unwrap();
        sealer.write_all(&compressed).unwrap();
        sealer.finish().unwrap()
    }

    fn identity() -> (sequoia_openpgp::Cert, DecryptWith) {
        let (cert, _) = sequoia_openpgp::cert::CertBuilder::general_purpose(Some("t@example.org"))
            .generate()
            .unwrap();
        let identity = DecryptWith::Identity(crate::keys::Identity {
            certs: vec![cert.clone()],
            path: "key.asc".into(),
        });
        (cert, identity)
    }

    /// Stores a quilted run (format 3) of set "dir/x" holding `entries`: its archive, range
    /// hashes and manifest, and a content object for each quilted file.
    fn put_quilted(
        memory: &MemoryStore,
        cert: &sequoia_openpgp::Cert,
        entries: &[Entry],
    ) -> Manifest {
        put_quilted_run(memory, cert, entries, 0, None)
    }

    /// As [`put_quilted`], a run `second`s past a fixed time: a DIFF on `base` when given.
    fn put_quilted_run(
        memory: &MemoryStore,
        cert: &sequoia_openpgp::Cert,
        entries: &[Entry],
        second: i64,
        base: Option<RunId>,
    ) -> Manifest {
        use crate::schema::quilt::QuiltUse;
        let run = RunId::at(chrono::DateTime::from_timestamp(1_800_000_000 + second, 0).unwrap());
        let kind = if base.is_some() {
            Kind::Diff
        } else {
            Kind::Full
        };
        let plain = quilted_archive(entries);
        let data = seal(&plain, cert);
        let digests: Vec<[u8; 32]> = data
            .chunks(RANGE as usize)
            .map(|c| sha2::Sha256::digest(c).into())
            .collect();
        let hashes = RangeHashes::encode(&digests);
        let mut m = sample("dir/x", run, kind, base);
        m.archive.key = layout::archive_key("h", "dir/x", run, kind, "tar.zst.gpg");
        m.archive.compression = Compression::Zstd { level: 3 };
        m.archive.recipients = vec![cert.fingerprint().to_hex()];
        m.archive.plaintext_size = plain.len() as u64;
        m.archive.stored_size = data.len() as u64;
        m.archive.sha256 = hex::encode(sha2::Sha256::digest(&data));
        m.archive.ranges = Some(RangeHashes {
            key: layout::archive_key("h", "dir/x", run, kind, "sha256"),
            range_size: RANGE,
            count: digests.len() as u64,
            sha256: hex::encode(sha2::Sha256::digest(&hashes)),
        });
        let mut content: Vec<String> = entries
            .iter()
            .filter(|e| e.quilted)
            .map(|e| key_of(e.data))
            .collect();
        content.sort();
        content.dedup();
        m.quilt = Some(QuiltUse {
            fingerprint: "f".repeat(64),
            min_size: 0,
            content,
            uploaded: 0,
            uploaded_bytes: 0,
            reused: 0,
        });
        m.format = Manifest::format_for(m.quilt.as_ref());
        let now = chrono::Utc::now();
        memory.insert(&m.archive.key, data, now);
        memory.insert(&m.archive.ranges.as_ref().unwrap().key, hashes, now);
        for e in entries.iter().filter(|e| e.quilted) {
            memory.insert(&key_of(e.data), seal(e.data, cert), now);
        }
        let m = Manifest::from_json(&m.to_json()).expect("a valid manifest");
        memory.insert(
            &layout::manifest_key("h", "dir/x", run, kind),
            m.to_json(),
            now,
        );
        m
    }

    const A: &[u8] = b"first quilted file\n";
    const B: &[u8] = b"second quilted file, in another directory\n";

    fn tree() -> [Entry<'static>; 3] {
        [
            Entry {
                name: "srv/a",
                data: A,
                quilted: true,
                xattr: true,
            },
            Entry {
                name: "srv/small",
                data: b"kept in the archive",
                quilted: false,
                xattr: false,
            },
            Entry {
                name: "etc/b",
                data: B,
                quilted: true,
                xattr: false,
            },
        ]
    }

    /// Streams the run of `put_quilted` from `store` (members `paths`): the output and how it
    /// ended.
    fn recover_quilted(
        store: DynStore,
        decrypt: &DecryptWith,
        paths: Vec<Vec<u8>>,
    ) -> (Vec<u8>, anyhow::Result<Summary>) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let request = Request {
            set: "dir/x".into(),
            at: None,
            paths: paths.clone(),
        };
        let chain = runtime.block_on(plan(&store, "h", &request)).unwrap();
        let mut out = Vec::new();
        let result = stream(
            runtime.handle(),
            &store,
            chain,
            paths,
            Some(decrypt),
            false,
            &mut out,
        );
        (out, result)
    }

    fn files(stream: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut archive = tar::Archive::new(stream);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().display().to_string();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (name, data)
            })
            .collect()
    }

    #[test]
    fn a_quilted_run_recovers_its_files_and_a_path_filter_fetches_only_their_content() {
        let (cert, decrypt) = identity();
        let memory = Arc::new(MemoryStore::new());
        let m = put_quilted(&memory, &cert, &tree());
        assert_eq!(m.format, 3);
        let faulty = Arc::new(FaultyStore::new(memory, []));
        let faults = faulty.faults();
        let (out, result) = recover_quilted(faulty.clone(), &decrypt, vec![]);
        assert_eq!(result.unwrap().members, 3);
        assert_eq!(
            files(&out),
            vec![
                ("srv/a".to_string(), A.to_vec()),
                ("srv/small".to_string(), b"kept in the archive".to_vec()),
                ("etc/b".to_string(), B.to_vec()),
            ]
        );
        let fetched = |faults: &crate::store::faulty::Faults| {
            let mut keys: Vec<String> = faults
                .calls_of(Op::GetRange)
                .into_iter()
                .map(|c| c.key)
                .filter(|k| k.starts_with("quilt/"))
                .collect();
            keys.dedup();
            keys
        };
        assert_eq!(fetched(&faults), vec![key_of(A), key_of(B)]);

        faults.forget_calls();
        let (out, result) = recover_quilted(faulty, &decrypt, vec![b"/etc".to_vec()]);
        result.unwrap();
        assert_eq!(files(&out), vec![("etc/b".to_string(), B.to_vec())]);
        assert_eq!(
            fetched(&faults),
            vec![key_of(B)],
            "only what the filter keeps"
        );
    }

    /// The error's text (with its causes), after checking that it is an integrity error.
    fn integrity(err: anyhow::Error) -> String {
        assert!(
            err.chain().any(|c| c.is::<IntegrityError>()),
            "an integrity error: {err:#}"
        );
        format!("{err:#}")
    }

    #[test]
    fn missing_poisoned_or_undecryptable_content_fails_naming_object_and_member() {
        let (cert, decrypt) = identity();
        let (other, _) = identity();
        let cases: Vec<(Option<Vec<u8>>, &str)> = vec![
            (None, "the content object of etc/b is missing"),
            // Other content under the same key, sealed like the real one.
            (
                Some(seal(b"poison", &cert)),
                "the content of etc/b holds 6 bytes",
            ),
            (
                Some(seal(&B.repeat(2)[..B.len()], &other)),
                "the content of etc/b cannot be decrypted",
            ),
        ];
        for (stored, said) in cases {
            let memory = Arc::new(MemoryStore::new());
            let m = put_quilted(&memory, &cert, &tree());
            let key = key_of(B);
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime
                .block_on(crate::store::Store::delete(&*memory, &key))
                .unwrap();
            if let Some(stored) = stored {
                memory.insert(&key, stored, chrono::Utc::now());
            }
            let store: DynStore = memory.clone();
            let (out, result) = recover_quilted(store.clone(), &decrypt, vec![]);
            let text = integrity(result.err().expect("recovery fails"));
            assert!(text.contains(said), "{text}");
            assert!(text.contains(&store.locate(&key)), "{text}");
            // srv/a and srv/small went out, then the stream was cut so that tar fails.
            let names: Vec<String> = tar::Archive::new(&out[..])
                .entries()
                .unwrap()
                .map_while(|e| e.ok().map(|e| e.path().unwrap().display().to_string()))
                .collect();
            assert_eq!(names[..2], ["srv/a", "srv/small"]);
            assert!(!names.contains(&"etc/b".to_string()));

            // Deep verification fetches and checks the content too, naming the object.
            let err =
                check_archive(runtime.handle(), &store, &m, Check::Decode(&decrypt)).unwrap_err();
            let text = integrity(err);
            assert!(text.contains(&store.locate(&key)), "{text}");
            assert!(text.contains("etc/b"), "{text}");
        }
        // Whole, it verifies.
        let memory = Arc::new(MemoryStore::new());
        let m = put_quilted(&memory, &cert, &tree());
        let store: DynStore = memory;
        let runtime = tokio::runtime::Runtime::new().unwrap();
        check_archive(runtime.handle(), &store, &m, Check::Decode(&decrypt)).unwrap();
    }

    #[test]
    fn a_format_2_run_passes_quilt_records_on_untouched_and_fetches_nothing() {
        // An archive that happens to carry such records, in a run of format 2: recovered
        // exactly as before quilting existed (the records reach tar; no content is fetched).
        let (cert, decrypt) = identity();
        let memory = Arc::new(MemoryStore::new());
        let mut m = put_quilted(&memory, &cert, &tree());
        m.quilt = None;
        m.format = 2;
        memory.insert(
            &layout::manifest_key("h", "dir/x", m.run, Kind::Full),
            m.to_json(),
            chrono::Utc::now(),
        );
        let faulty = Arc::new(FaultyStore::new(memory, []));
        let faults = faulty.faults();
        let (out, result) = recover_quilted(faulty, &decrypt, vec![]);
        result.unwrap();
        let plain = quilted_archive(&tree());
        assert_eq!(out[..plain.len() - 1024], plain[..plain.len() - 1024]);
        assert!(faults.calls().iter().all(|c| !c.key.starts_with("quilt/")));
    }

    #[test]
    fn a_chain_gets_each_archives_quilted_content() {
        let (cert, decrypt) = identity();
        let memory = Arc::new(MemoryStore::new());
        let full = put_quilted_run(&memory, &cert, &tree(), 0, None);
        let changed = b"srv/a as changed since the FULL\n";
        let diff_entries = [Entry {
            name: "srv/a",
            data: changed,
            quilted: true,
            xattr: false,
        }];
        let diff = put_quilted_run(&memory, &cert, &diff_entries, 60, Some(full.run));
        // Each run's manifest lists its own content only.
        assert_eq!(diff.quilt.as_ref().unwrap().content, vec![key_of(changed)]);
        let (out, result) = recover_quilted(memory, &decrypt, vec![]);
        assert_eq!(result.unwrap().runs.len(), 2);
        let got = files(&out);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0], ("srv/a".to_string(), A.to_vec()));
        assert_eq!(got[3], ("srv/a".to_string(), changed.to_vec()));
    }

    /// `len` bytes no compressor shrinks, different for each `seed`.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn a_large_content_object_replaced_between_the_passes_gives_no_byte_of_the_replacement() {
        // Above HELD_IN_MEMORY the splicer reads the content twice and writes the second pass
        // before its end is checked: every stored range of that pass must be the one whose
        // plaintext the first pass checked, else not a byte of it reaches the output.
        let (cert, decrypt) = identity();
        let len = crate::tarstream::HELD_IN_MEMORY as usize + 100_000;
        let (real, other) = (noise(1, len), noise(2, len));
        let entries = [Entry {
            name: "srv/big",
            data: &real,
            quilted: true,
            xattr: false,
        }];
        let key = key_of(&real);
        // Replaced by other content of the same stored size (sealed to the same key), and by
        // one of another size.
        let cases = [seal(&other, &cert), seal(&other[..len - 1000], &cert)];
        assert_eq!(cases[0].len(), seal(&real, &cert).len(), "same stored size");
        for replacement in cases {
            let memory = Arc::new(MemoryStore::new());
            put_quilted(&memory, &cert, &entries);
            // The object is replaced once its last byte was read: between the splicer's
            // checking pass and its output pass.
            let last = memory.object(&key).unwrap().len() as u64 - 1;
            let (m, theirs) = (memory.clone(), replacement.clone());
            let swap = Rule::pass(Op::GetRange)
                .key(key.clone())
                .covering(last)
                .nth(1)
                .then(move |c| m.insert(&c.key, theirs.clone(), chrono::Utc::now()));
            let store: DynStore = Arc::new(FaultyStore::new(memory.clone(), [swap]));
            let (out, result) = recover_quilted(store.clone(), &decrypt, vec![]);
            assert_eq!(memory.object(&key).unwrap(), replacement, "swapped");
            for at in [0, 1 << 20, len - 70_000] {
                let piece = &other[at..at + 4096];
                assert!(
                    !out.windows(piece.len()).any(|w| w == piece),
                    "bytes {at}.. of the replacement reached the output"
                );
            }
            let text = integrity(result.err().expect("the recovery fails"));
            assert!(text.contains(&store.locate(&key)), "{text}");
            assert!(text.contains("srv/big changed while it was read"), "{text}");
        }
    }

    #[test]
    fn a_listing_reads_no_content_and_ready_needs_the_content_only_to_recover() {
        use crate::store::retrieval::{Retrieval, RetrievalPending};
        use crate::store::{StorageClass, Store};
        let (cert, decrypt) = identity();
        let memory = Arc::new(MemoryStore::new());
        let m = put_quilted(&memory, &cert, &tree());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        // etc/b's content is gone, srv/a's moved to GLACIER by a lifecycle rule.
        runtime.block_on(memory.delete(&key_of(B))).unwrap();
        memory.set_storage_class(&key_of(A), StorageClass::Glacier);
        let faulty = Arc::new(FaultyStore::new(memory.clone(), []));
        let faults = faulty.faults();
        let store: DynStore = faulty;
        let chain = vec![m.clone()];
        let retrieval = Retrieval::default();
        let quilt_calls = || {
            faults
                .calls()
                .into_iter()
                .filter(|c| c.key.starts_with("quilt/"))
                .count()
        };

        // A listing needs the archive only: no content is HEADed, retrieved or fetched.
        runtime
            .block_on(ready(&store, &chain, &retrieval, false, true))
            .unwrap();
        let mut out = Vec::new();
        let listed = stream(
            runtime.handle(),
            &store,
            chain.clone(),
            vec![],
            Some(&decrypt),
            true,
            &mut out,
        );
        assert_eq!(listed.unwrap().members, 3);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "0 srv/a\n0 srv/small\n0 etc/b\n"
        );
        assert_eq!(quilt_calls(), 0, "{:?}", faults.calls());
        assert!(memory.restore_requests().is_empty());

        // A recovery has srv/a's content retrieved first (exit status 5, nothing read), and
        // knows up front that etc/b's is missing.
        let err = runtime
            .block_on(ready(&store, &chain, &retrieval, false, false))
            .unwrap_err();
        let pending = err.downcast_ref::<RetrievalPending>().expect("pending");
        let waiting: Vec<&str> = pending
            .report
            .waiting
            .iter()
            .map(|w| w.target.as_str())
            .collect();
        assert_eq!(waiting, [store.locate(&key_of(A))]);
        let requested: Vec<String> = memory
            .restore_requests()
            .into_iter()
            .map(|(k, _, _)| k)
            .collect();
        assert_eq!(requested, [key_of(A)]);
        let content = runtime.block_on(head_content(&store, &chain)).unwrap();
        assert_eq!(content.archived, [key_of(A)]);
        assert_eq!(
            content.missing,
            [(key_of(B), format!("run {} of dir/x", m.run))]
        );
        // Retrieved, the recovery goes ahead: the missing object fails only its member.
        memory.finish_retrievals();
        runtime
            .block_on(ready(&store, &chain, &retrieval, false, false))
            .unwrap();
        let (out, result) = recover_quilted(store, &decrypt, vec![]);
        let text = integrity(result.err().expect("etc/b cannot be recovered"));
        assert!(text.contains("etc/b is missing"), "{text}");
        assert_eq!(files_before_the_cut(&out), ["srv/a", "srv/small"]);
    }

    /// The names of the members tar reads from a cut stream before it fails.
    fn files_before_the_cut(stream: &[u8]) -> Vec<String> {
        tar::Archive::new(stream)
            .entries()
            .unwrap()
            .map_while(|e| e.ok().map(|e| e.path().unwrap().display().to_string()))
            .collect()
    }
}
