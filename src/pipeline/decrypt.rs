//! Decryption stage: stored bytes in, compressed bytes out.
//!
//! Either the secret keys of an `--identity` file, or `gpg --decrypt` as a child process
//! (`--gpg`), so that gpg-agent, pinentry and smartcards work. Both refuse a message whose
//! integrity protection (MDC) fails; the gpg child counts as done only when its exit status has
//! been checked, and its stderr is part of the error.
//!
//! With an identity, a message shaped as s3nap writes it (PKESK v3 packets, then a SEIPD v1
//! packet holding one literal data packet and the MDC; `pipeline/encrypt.rs`) is decrypted
//! here, on sequoia's PKESK decryption and CFB decryptor, with the MDC checked in plain SHA-1
//! (docs/ARCHITECTURE.md, "Performance"). Anything else — gpg's own compressed messages, other
//! packets, other versions — goes to sequoia's general decryptor, which is given the message
//! from its first byte.

use std::io::{self, Cursor, Read};
use std::process::Command;

use sequoia_openpgp as openpgp;

use openpgp::crypto::symmetric::{BlockCipherMode, Decryptor, UnpaddingMode};
use openpgp::crypto::SessionKey;
use openpgp::packet::{PKESK, SKESK};
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageStructure, VerificationHelper,
};
use openpgp::parse::{Cookie, Parse};
use openpgp::policy::Policy;
use openpgp::types::SymmetricAlgorithm;
use openpgp::{Cert, KeyHandle, Packet};
use sha1::{Digest, Sha1};

use crate::keys::Identity;
use crate::process::{ChildReader, Input};

/// Plaintext sequoia holds back before releasing any (see `decryptor`).
const HELD_BACK: usize = 256 * 1024;
/// Tags of the packets the fast path reads (RFC 4880 4.3).
const PKESK_TAG: u8 = 1;
const LITERAL_TAG: u8 = 11;
const SEIPD_TAG: u8 = 18;
/// The MDC packet's header inside the encryption: new-format tag 19, length 20.
const MDC_HEADER: [u8; 2] = [0xC0 | 19, 20];

/// How recovery decrypts.
pub enum DecryptWith {
    Identity(Identity),
    Gpg,
}

/// Wraps `input` (the stored bytes) in the decryption stage.
pub fn decryptor<'a, R: Read + Send + Sync + 'static>(
    input: R,
    how: &'a DecryptWith,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    match how {
        DecryptWith::Identity(identity) => {
            let input = match open(Recorder::new(input), &identity.certs)? {
                Opened::Literal(unsealed) => return Ok(Box::new(unsealed)),
                Opened::Other(recorder) => recorder.replay(),
            };
            let helper = Helper {
                certs: &identity.certs,
            };
            // sequoia holds back up to 25 MiB by default so that a small message's MDC is
            // checked before any of it is released. Recovery has already checked every range
            // of an archive's stored bytes against its SHA-256 (pipeline/download.rs), and the
            // tar splicer passes no byte of quilt content on before the file's own SHA-256
            // matched (tarstream, recover/quilt.rs), so that copy would only cost memory and
            // time; the MDC is still checked at the end and its failure is still an error.
            let decryptor = DecryptorBuilder::from_reader(input)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
                .buffer_size(HELD_BACK)
                .with_policy(crate::keys::policy(), None, helper)
                .map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("cannot decrypt with {}: {e}", identity.path.display()),
                    )
                })?;
            Ok(Box::new(decryptor))
        }
        DecryptWith::Gpg => {
            // The end of the plaintext is only reported once gpg exited 0.
            let mut gpg = Command::new("gpg");
            gpg.args(["--quiet", "--decrypt"]);
            let input = Input::Feed(Box::new(input));
            Ok(Box::new(ChildReader::spawn(gpg, "gpg --decrypt", input)?))
        }
    }
}

/// The session keys `certs` can decrypt from `pkesks`, in the order they are found.
fn session_keys(
    pkesks: &[PKESK],
    certs: &[Cert],
    sym_algo: Option<SymmetricAlgorithm>,
) -> openpgp::Result<Vec<(Option<SymmetricAlgorithm>, SessionKey)>> {
    let mut found = Vec::new();
    for pkesk in pkesks {
        for cert in certs {
            for ka in cert.keys().unencrypted_secret() {
                let matches = match pkesk.recipient() {
                    Some(handle) => ka.key().key_handle().aliases(&handle),
                    None => true,
                };
                if !matches {
                    continue;
                }
                let mut pair = ka.key().clone().into_keypair()?;
                if let Some(key) = pkesk.decrypt(&mut pair, sym_algo) {
                    found.push(key);
                }
            }
        }
    }
    Ok(found)
}

/// The input, with the bytes read while the message's start is examined kept, so that sequoia
/// can be given the whole message if the fast path does not apply.
struct Recorder<R> {
    inner: R,
    seen: Option<Vec<u8>>,
}

impl<R: Read> Recorder<R> {
    fn new(inner: R) -> Self {
        Recorder {
            inner,
            seen: Some(Vec::new()),
        }
    }

    fn seen_len(&self) -> usize {
        self.seen.as_ref().map_or(0, Vec::len)
    }

    /// The whole message again: what was seen, then the rest.
    fn replay(self) -> io::Chain<Cursor<Vec<u8>>, R> {
        Cursor::new(self.seen.unwrap_or_default()).chain(self.inner)
    }
}

impl<R: Read> Read for Recorder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(seen) = &mut self.seen {
            seen.extend_from_slice(&buf[..n]);
        }
        Ok(n)
    }
}

fn byte(r: &mut impl Read) -> io::Result<Option<u8>> {
    let mut b = [0u8; 1];
    loop {
        match r.read(&mut b) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(b[0])),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// `UnexpectedEof` said as a message cut short inside `what`; any other error (the input's
/// own, such as the store's) as it is.
fn eof_as(what: &'static str) -> impl Fn(io::Error) -> io::Error {
    move |e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            cut_short(what)
        } else {
            e
        }
    }
}

fn cut_short(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the encrypted message is cut short ({what})"),
    )
}

/// A body length in the new packet format after its `first` octet (RFC 4880 4.2.2):
/// `(length, partial)`, where a partial length is one chunk of a body that goes on.
fn new_length(first: u8, r: &mut impl Read) -> io::Result<(u64, bool)> {
    let mut more = |n: usize| -> io::Result<u64> {
        let mut b = [0u8; 4];
        r.read_exact(&mut b[..n])
            .map_err(eof_as("a packet length"))?;
        Ok(b[..n].iter().fold(0, |v, &x| v << 8 | u64::from(x)))
    };
    Ok(match first {
        0..192 => (u64::from(first), false),
        192..224 => ((((u64::from(first) - 192) << 8) | more(1)?) + 192, false),
        224..255 => (1 << (first & 0x1f), true),
        255 => (more(4)?, false),
    })
}

/// A packet header after its first octet `ctb`: the tag and the body's length, `None` for
/// what the fast path leaves to sequoia (not a packet, an old-format indeterminate length).
fn header(ctb: u8, r: &mut impl Read) -> io::Result<Option<(u8, u64, bool)>> {
    if ctb & 0x80 == 0 {
        return Ok(None);
    }
    if ctb & 0x40 != 0 {
        let first = byte(r)?.ok_or_else(|| cut_short("a packet header"))?;
        let (len, partial) = new_length(first, r)?;
        return Ok(Some((ctb & 0x3f, len, partial)));
    }
    // Old format: the tag in bits 5-2, the length's size in bits 1-0.
    let size = match ctb & 3 {
        0 => 1,
        1 => 2,
        2 => 4,
        _ => return Ok(None),
    };
    let mut b = [0u8; 4];
    r.read_exact(&mut b[..size])
        .map_err(eof_as("a packet length"))?;
    let len = b[..size].iter().fold(0, |v, &x| v << 8 | u64::from(x));
    Ok(Some(((ctb >> 2) & 0x0f, len, false)))
}

/// How a message opened: the fast path's plaintext, or the input to hand to sequoia.
enum Opened<R> {
    Literal(Box<Unsealed>),
    Other(Recorder<R>),
}

/// Reads the message's PKESKs and the start of its SEIPD packet; takes the fast path when one
/// of `certs` decrypts a session key whose quick check passes and the first packet inside is
/// literal data. An I/O error of the input is returned as is; anything unexpected in the
/// message is left to sequoia, whose error then names it.
fn open<R: Read + Send + Sync + 'static>(
    mut input: Recorder<R>,
    certs: &[Cert],
) -> io::Result<Opened<R>> {
    let mut pkesks = Vec::new();
    let (len, partial) = loop {
        let start = input.seen_len();
        let Some(ctb) = byte(&mut input)? else {
            return Ok(Opened::Other(input));
        };
        match header(ctb, &mut input)? {
            Some((PKESK_TAG, len, false)) if len <= 1 << 16 => {
                let mut body = vec![0u8; len as usize];
                input
                    .read_exact(&mut body)
                    .map_err(eof_as("a PKESK packet"))?;
                let seen = input.seen.as_ref().expect("recording");
                match Packet::from_bytes(&seen[start..]) {
                    Ok(Packet::PKESK(pkesk)) => pkesks.push(pkesk),
                    _ => return Ok(Opened::Other(input)),
                }
            }
            Some((SEIPD_TAG, len, partial)) => break (len, partial),
            _ => return Ok(Opened::Other(input)),
        }
    };
    let keys = match session_keys(&pkesks, certs, None) {
        Ok(keys) if !keys.is_empty() => keys,
        _ => return Ok(Opened::Other(input)),
    };
    let mut body = Body {
        src: input,
        left: len,
        last: !partial,
        unread: Cursor::new(Vec::new()),
        failed: None,
    };
    // The version, then the random prefix, its repeated last two bytes and the first packet's
    // first octet: at most 1 + 16 + 3 bytes.
    let mut start = [0u8; 20];
    match body.read_exact(&mut start) {
        Ok(()) if start[0] == 1 => {}
        Ok(()) => return Ok(Opened::Other(body.src)),
        // Too short or malformed to be s3nap's: sequoia names the problem.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData
            ) =>
        {
            return Ok(Opened::Other(body.src))
        }
        Err(e) => return Err(e),
    }
    let head = &start[1..];
    for (algo, key) in keys {
        // Only what the policy allows; anything else is sequoia's (and its policy's) to refuse.
        let Some(algo) = algo.filter(|a| crate::keys::policy().symmetric_algorithm(*a).is_ok())
        else {
            continue;
        };
        match quick_check(algo, &key, head) {
            Some(first) if is_literal(first) => {
                body.src.seen = None;
                body.unread = Cursor::new(head.to_vec());
                let generic = buffered_reader::Generic::with_cookie(body, None, Cookie::default());
                let cfb = Decryptor::new(
                    algo,
                    BlockCipherMode::CFB,
                    UnpaddingMode::None,
                    &key,
                    None,
                    generic,
                )
                .map_err(io::Error::other)?;
                return Unsealed::start(cfb, algo).map(|u| Opened::Literal(Box::new(u)));
            }
            Some(_) => break,
            None => continue,
        }
    }
    Ok(Opened::Other(body.src))
}

fn is_literal(ctb: u8) -> bool {
    match ctb & 0xC0 {
        0xC0 => ctb & 0x3f == LITERAL_TAG,
        // Old format, but not of indeterminate length.
        0x80 => (ctb >> 2) & 0x0f == LITERAL_TAG && ctb & 3 != 3,
        _ => false,
    }
}

/// Decrypts `head` (the start of a SEIPD body after its version) with `key`: the first octet
/// of the first packet inside when the prefix's quick check passes (RFC 4880 5.13).
fn quick_check(algo: SymmetricAlgorithm, key: &SessionKey, head: &[u8]) -> Option<u8> {
    let bs = algo.block_size().ok()?;
    let head = head.get(..bs + 3)?;
    let source = buffered_reader::Memory::with_cookie(head, Cookie::default());
    let mut cfb = Decryptor::new(
        algo,
        BlockCipherMode::CFB,
        UnpaddingMode::None,
        key,
        None,
        source,
    )
    .ok()?;
    let mut plain = vec![0u8; head.len()];
    cfb.read_exact(&mut plain).ok()?;
    (plain[bs - 2..bs] == plain[bs..bs + 2]).then(|| plain[bs + 2])
}

/// A SEIPD packet's body, chunk headers taken out, bytes already read put back first; past
/// its last chunk the input must end.
struct Body<R> {
    src: Recorder<R>,
    /// Bytes left in the current chunk.
    left: u64,
    last: bool,
    unread: Cursor<Vec<u8>>,
    /// The first error, returned again by every later read.
    failed: Option<(io::ErrorKind, String)>,
}

impl<R: Read> Read for Body<R> {
    /// An error is returned again on every later read: sequoia's decryptor drops a source's
    /// error when it already has bytes to return, and must not see a clean end after it.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((kind, message)) = &self.failed {
            return Err(io::Error::new(*kind, message.clone()));
        }
        let read = self.read_on(buf);
        if let Err(e) = &read {
            self.failed = Some((e.kind(), e.to_string()));
        }
        read
    }
}

impl<R: Read> Body<R> {
    fn read_on(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.unread.read(buf)?;
        if n > 0 || buf.is_empty() {
            return Ok(n);
        }
        while self.left == 0 {
            if self.last {
                return match byte(&mut self.src)? {
                    None => Ok(0),
                    Some(_) => Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "data after the encrypted packet",
                    )),
                };
            }
            let first = byte(&mut self.src)?.ok_or_else(|| cut_short("a chunk header"))?;
            (self.left, self.last) =
                new_length(first, &mut self.src).map(|(len, partial)| (len, !partial))?;
        }
        let want = buf.len().min(self.left.try_into().unwrap_or(usize::MAX));
        let n = self.src.read(&mut buf[..want])?;
        if n == 0 {
            return Err(cut_short("the encrypted data"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The decrypted SEIPD body, hashed into the MDC as it is read.
struct Hashed {
    cfb: Decryptor<'static>,
    mdc: Sha1,
}

impl Read for Hashed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.cfb.read(buf)?;
        self.mdc.update(&buf[..n]);
        Ok(n)
    }
}

/// The literal data of a SEIPD v1 message; its end is reported only once the MDC matched and
/// nothing followed it.
pub struct Unsealed {
    plain: Hashed,
    /// Literal body bytes left in the current chunk.
    left: u64,
    last: bool,
    done: bool,
    /// An error was returned: every later read fails too, never ends cleanly.
    failed: bool,
}

impl Unsealed {
    /// Reads the prefix and the literal packet's header, up to its data.
    fn start(cfb: Decryptor<'static>, algo: SymmetricAlgorithm) -> io::Result<Unsealed> {
        let mut plain = Hashed {
            cfb,
            mdc: Sha1::new(),
        };
        let mut prefix = vec![0u8; algo.block_size().map_err(io::Error::other)? + 2];
        plain
            .read_exact(&mut prefix)
            .map_err(eof_as("the prefix"))?;
        let ctb = byte(&mut plain)?.ok_or_else(|| cut_short("the literal packet"))?;
        let (left, last) = match header(ctb, &mut plain)? {
            Some((LITERAL_TAG, len, partial)) => (len, !partial),
            _ => {
                return Err(invalid(
                    "the literal packet's header changed between two reads",
                ))
            }
        };
        let mut unsealed = Unsealed {
            plain,
            left,
            last,
            done: false,
            failed: false,
        };
        // Format, file name, date (RFC 4880 5.9): not part of the data.
        let mut format_and_name = [0u8; 2];
        unsealed.literal_exact(&mut format_and_name)?;
        let mut name_and_date = vec![0u8; usize::from(format_and_name[1]) + 4];
        unsealed.literal_exact(&mut name_and_date)?;
        Ok(unsealed)
    }

    /// Literal body bytes, across chunk headers; `Ok(0)` at the body's end.
    fn literal(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.left == 0 {
            if self.last {
                return Ok(0);
            }
            let first = byte(&mut self.plain)?.ok_or_else(|| cut_short("a chunk header"))?;
            (self.left, self.last) =
                new_length(first, &mut self.plain).map(|(len, partial)| (len, !partial))?;
        }
        let want = buf.len().min(self.left.try_into().unwrap_or(usize::MAX));
        let n = self.plain.read(&mut buf[..want])?;
        if n == 0 && want > 0 {
            return Err(cut_short("the literal data"));
        }
        self.left -= n as u64;
        Ok(n)
    }

    fn literal_exact(&mut self, mut buf: &mut [u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.literal(buf)?;
            if n == 0 {
                return Err(cut_short("the literal packet's header"));
            }
            buf = &mut buf[n..];
        }
        Ok(())
    }

    /// After the literal data: the MDC packet, matching what was hashed, then the end.
    fn finish(&mut self) -> io::Result<()> {
        let mut header = [0u8; 2];
        self.plain
            .read_exact(&mut header)
            .map_err(eof_as("the MDC"))?;
        if header != MDC_HEADER {
            return Err(invalid("no MDC packet after the literal data"));
        }
        let computed = self.plain.mdc.clone().finalize();
        let mut stored = [0u8; 20];
        self.plain
            .cfb
            .read_exact(&mut stored)
            .map_err(eof_as("the MDC"))?;
        if computed.as_slice() != stored {
            return Err(invalid(
                "the message's integrity check (MDC) failed: it was changed or damaged",
            ));
        }
        if byte(&mut self.plain.cfb)?.is_some() {
            return Err(invalid("data after the MDC packet"));
        }
        Ok(())
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

impl Read for Unsealed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            return Err(invalid(
                "the message failed to decrypt (see the error before)",
            ));
        }
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let read = self.literal(buf).and_then(|n| {
            if n == 0 {
                self.finish()?;
                self.done = true;
            }
            Ok(n)
        });
        self.failed = read.is_err();
        read
    }
}

struct Helper<'a> {
    certs: &'a [Cert],
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(Vec::new())
    }

    // Archives are encrypted, not signed: integrity comes from the MDC and the manifest's SHA-256.
    fn check(&mut self, _structure: MessageStructure) -> openpgp::Result<()> {
        Ok(())
    }
}

impl DecryptionHelper for Helper<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        for (algo, sk) in session_keys(pkesks, self.certs, sym_algo)? {
            if decrypt(algo, &sk) {
                return Ok(None);
            }
        }
        let wanted: Vec<String> = pkesks
            .iter()
            .filter_map(|p| p.recipient().map(|h| h.to_hex()))
            .collect();
        Err(anyhow::anyhow!(
            "no secret key for this archive (encrypted to {})",
            if wanted.is_empty() {
                "anonymous recipients".to_string()
            } else {
                wanted.join(", ")
            }
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use openpgp::cert::CertBuilder;
    use openpgp::serialize::stream::{Compressor, Encryptor, LiteralWriter, Message, Recipient};
    use openpgp::types::{CompressionAlgorithm, Features};

    use super::*;
    use crate::pipeline::encrypt::Sealer;

    fn identity() -> (DecryptWith, Cert) {
        let (cert, _) = CertBuilder::general_purpose(Some("t@example.org"))
            .generate()
            .unwrap();
        let public = cert.clone().strip_secret_key_material();
        let how = DecryptWith::Identity(Identity {
            certs: vec![cert],
            path: "key.asc".into(),
        });
        (how, public)
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 253) as u8).collect()
    }

    /// What s3nap writes (`Sealer`).
    fn sealed(data: &[u8], cert: &Cert) -> Vec<u8> {
        let mut sealer = Sealer::new(Vec::new(), std::slice::from_ref(cert)).unwrap();
        sealer.write_all(data).unwrap();
        sealer.finish().unwrap()
    }

    /// What sequoia's own writer makes (s3nap's archives before `Sealer` framed them itself),
    /// optionally compressed inside the encryption as gpg does by default.
    fn by_sequoia(data: &[u8], cert: &Cert, compressed: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let policy = crate::keys::policy();
        let recipients = cert
            .keys()
            .with_policy(policy, None)
            .for_storage_encryption()
            .map(|ka| {
                Recipient::new(
                    Features::empty().set_seipdv1(),
                    KeyHandle::from(ka.key().keyid()),
                    ka.key(),
                )
            });
        let message = Message::new(&mut out);
        let mut message = Encryptor::for_recipients(message, recipients)
            .build()
            .unwrap();
        if compressed {
            message = Compressor::new(message)
                .algo(CompressionAlgorithm::Zip)
                .build()
                .unwrap();
        }
        let mut message = LiteralWriter::new(message).build().unwrap();
        message.write_all(data).unwrap();
        message.finalize().unwrap();
        out
    }

    fn decrypt(message: Vec<u8>, how: &DecryptWith) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        decryptor(Cursor::new(message), how)?.read_to_end(&mut out)?;
        Ok(out)
    }

    fn fast_path(message: &[u8], how: &DecryptWith) -> bool {
        let DecryptWith::Identity(identity) = how else {
            unreachable!()
        };
        let input = Recorder::new(Cursor::new(message.to_vec()));
        matches!(open(input, &identity.certs).unwrap(), Opened::Literal(_))
    }

    #[test]
    fn what_s3nap_and_sequoia_wrote_decrypts_on_the_fast_path_and_the_rest_through_sequoia() {
        let (how, cert) = identity();
        for len in [0, 1, 8383, 65_536, 65_537, 300_000] {
            let data = data(len);
            let message = sealed(&data, &cert);
            assert!(fast_path(&message, &how));
            assert_eq!(decrypt(message, &how).unwrap(), data, "{len} bytes");
        }
        let data = data(200_000);
        let old = by_sequoia(&data, &cert, false);
        assert!(fast_path(&old, &how), "archives written before");
        assert_eq!(decrypt(old, &how).unwrap(), data);
        let compressed = by_sequoia(&data, &cert, true);
        assert!(!fast_path(&compressed, &how), "compressed: sequoia's");
        assert_eq!(decrypt(compressed, &how).unwrap(), data);
    }

    #[test]
    fn a_changed_cut_or_extended_message_is_an_error_never_an_end() {
        let (how, cert) = identity();
        let data = data(200_000);
        let message = sealed(&data, &cert);
        // A byte of the data, far from any header: only the MDC can tell.
        let mut changed = message.clone();
        changed[message.len() / 2] ^= 0x10;
        let err = decrypt(changed, &how).unwrap_err();
        assert!(err.to_string().contains("MDC"), "{err}");
        // The MDC itself.
        let mut changed = message.clone();
        *changed.last_mut().unwrap() ^= 1;
        let err = decrypt(changed, &how).unwrap_err();
        assert!(err.to_string().contains("MDC"), "{err}");
        for cut in [message.len() - 1, message.len() - 30, message.len() / 2] {
            let err = decrypt(message[..cut].to_vec(), &how).unwrap_err();
            assert!(err.to_string().contains("cut short"), "{cut}: {err}");
        }
        let mut extended = message.clone();
        extended.extend_from_slice(b"more");
        let err = decrypt(extended, &how).unwrap_err();
        assert!(err.to_string().contains("data after"), "{err}");
    }

    #[test]
    fn without_the_key_sequoia_names_the_recipients() {
        let (how, _) = identity();
        let (_, other) = identity();
        let err = match decryptor(Cursor::new(sealed(b"secret", &other)), &how) {
            Err(e) => e,
            Ok(_) => panic!("decrypted without the key"),
        };
        assert!(
            err.to_string().contains("no secret key for this archive"),
            "{err}"
        );
    }
}
