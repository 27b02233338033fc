//! Encryption stage: compressed bytes in, an OpenPGP message out (or the bytes unchanged when
//! no recipient is configured).
//!
//! The message is what GnuPG 2.2 decrypts (RFC 4880): a PKESK v3 per recipient encryption key,
//! then a SEIPD v1 packet whose CFB-encrypted body is one binary literal data packet and the
//! MDC — no OpenPGP compression (the data is already compressed). SEIPD v1 is used whatever a
//! certificate advertises, because gpg 2.2 cannot read SEIPD v2.
//!
//! sequoia-openpgp makes the session key, the PKESKs and the CFB encryption. The framing is
//! written here because sequoia's own SEIPD v1 writer hashes the MDC with collision-detecting
//! SHA-1, which took a fifth of a backup's CPU time (docs/ARCHITECTURE.md, "Performance"). Here
//! the MDC is plain SHA-1 (hardware-accelerated where the CPU has it): the same digest for any
//! input except one crafted as a SHA-1 collision, where the collision-detecting variant would
//! write a digest that gpg — which verifies with plain SHA-1 — rejects. Detection protects a
//! verifier against forged input; a writer hashing its own stream gains nothing from it.

use std::io::{self, Write};

use sequoia_openpgp as openpgp;

use openpgp::cert::Cert;
use openpgp::crypto::symmetric::{BlockCipherMode, Encryptor, PaddingMode};
use openpgp::crypto::SessionKey;
use openpgp::packet::pkesk::PKESK3;
use openpgp::serialize::Marshal;
use openpgp::types::SymmetricAlgorithm;
use openpgp::Packet;
use sha1::{Digest, Sha1};

/// The session key's cipher: what sequoia and gpg choose by default.
const CIPHER: SymmetricAlgorithm = SymmetricAlgorithm::AES256;
/// New-format packet tags (RFC 4880 4.2, 4.3): 0xC0 | tag.
const SEIPD_TAG: u8 = 0xC0 | 18;
const LITERAL_TAG: u8 = 0xC0 | 11;
const MDC_TAG: u8 = 0xC0 | 19;
/// Partial body chunks of 2^16 bytes (RFC 4880 4.2.2.4: a power of two, at least 512).
const CHUNK_BITS: u8 = 16;
const CHUNK: usize = 1 << CHUNK_BITS;

/// A `Write` adapter that encrypts into `W`. Call [`Sealer::finish`]: an unfinished message has
/// no MDC and no last chunk, is never committed, and `gpg` would reject it.
pub enum Sealer<W: Write> {
    OpenPgp(Box<Literal<W>>),
    Plain(W),
}

impl<W: Write> Sealer<W> {
    /// Encrypts to every valid storage/transport encryption key of `certs`; with no
    /// certificates the data passes through unencrypted.
    pub fn new(mut inner: W, certs: &[Cert]) -> openpgp::Result<Self> {
        if certs.is_empty() {
            return Ok(Sealer::Plain(inner));
        }
        let session_key = SessionKey::new(CIPHER.key_size()?)?;
        let mut recipients = 0;
        for cert in certs {
            for ka in crate::keys::encryption_keys(cert) {
                let pkesk = PKESK3::for_recipient(CIPHER, &session_key, ka.key())?;
                Packet::PKESK(pkesk.into()).serialize(&mut inner)?;
                recipients += 1;
            }
        }
        if recipients == 0 {
            return Err(anyhow::anyhow!(
                "no usable encryption key among the recipients"
            ));
        }
        inner.write_all(&[SEIPD_TAG])?;
        let mut seipd = Chunked::new(inner);
        seipd.write_all(&[1])?; // SEIPD version 1
        let cfb = Encryptor::new(
            CIPHER,
            BlockCipherMode::CFB,
            PaddingMode::None,
            &session_key,
            None, // RFC 4880 5.13: an IV of zeros, the random prefix serves as IV
            seipd,
        )?;
        let mut protected = Protected {
            cfb,
            mdc: Sha1::new(),
        };
        // The random prefix, its last two bytes repeated (RFC 4880 5.13), hashed into the MDC.
        let mut prefix = vec![0u8; CIPHER.block_size()?];
        openpgp::crypto::random(&mut prefix)?;
        protected.write_all(&prefix)?;
        protected.write_all(&prefix[prefix.len() - 2..])?;
        protected.write_all(&[LITERAL_TAG])?;
        let mut literal = Chunked::new(protected);
        // Binary data, no file name, no date (RFC 4880 5.9).
        literal.write_all(&[b'b', 0, 0, 0, 0, 0])?;
        Ok(Sealer::OpenPgp(Box::new(Literal(literal))))
    }

    /// Writes the last chunks and the MDC, and returns the writer the message went to.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Sealer::OpenPgp(literal) => {
                let mut protected = literal.0.finish()?;
                // The MDC packet's header is hashed, its digest only encrypted (RFC 4880 5.14).
                protected.write_all(&[MDC_TAG, 20])?;
                let Protected { mut cfb, mdc } = protected;
                cfb.write_all(&mdc.finalize())?;
                let seipd = cfb.finalize().map_err(io::Error::other)?;
                seipd.finish()
            }
            Sealer::Plain(mut w) => {
                w.flush()?;
                Ok(w)
            }
        }
    }
}

/// The literal data packet's body, inside the encryption.
pub struct Literal<W: Write>(Chunked<Protected<W>>);

impl<W: Write> Write for Sealer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sealer::OpenPgp(literal) => literal.0.write(buf),
            Sealer::Plain(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The encrypted part of a SEIPD packet: everything written is hashed into the MDC, then
/// CFB-encrypted into the packet's chunked body.
struct Protected<W: Write> {
    cfb: Encryptor<Chunked<W>>,
    mdc: Sha1,
}

impl<W: Write> Write for Protected<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.cfb.write(buf)?;
        self.mdc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A packet body of unknown length, as partial body chunks (RFC 4880 4.2.2.4): full chunks of
/// [`CHUNK`] bytes while more follows, then a last one with its definite length.
struct Chunked<W: Write> {
    inner: W,
    /// Up to one chunk; a full one is written only once a byte beyond it arrives, so the last
    /// chunk is never empty unless the whole body is.
    buffer: Vec<u8>,
}

impl<W: Write> Chunked<W> {
    fn new(inner: W) -> Self {
        Chunked {
            inner,
            buffer: Vec::with_capacity(CHUNK),
        }
    }

    /// Writes the last chunk and returns the writer.
    fn finish(mut self) -> io::Result<W> {
        let len = self.buffer.len();
        match len {
            0..192 => self.inner.write_all(&[len as u8])?,
            192..8384 => {
                let v = len - 192;
                self.inner.write_all(&[(v >> 8) as u8 + 192, v as u8])?
            }
            _ => {
                self.inner.write_all(&[255])?;
                self.inner.write_all(&(len as u32).to_be_bytes())?
            }
        }
        self.inner.write_all(&self.buffer)?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for Chunked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.buffer.len() == CHUNK {
            self.inner.write_all(&[224 + CHUNK_BITS])?;
            self.inner.write_all(&self.buffer)?;
            self.buffer.clear();
        }
        // A whole chunk with a byte beyond it goes straight through, not through the buffer:
        // the stage queue hands over 256 KiB blocks, so the literal data is not copied here.
        if self.buffer.is_empty() && buf.len() > CHUNK {
            self.inner.write_all(&[224 + CHUNK_BITS])?;
            self.inner.write_all(&buf[..CHUNK])?;
            return Ok(CHUNK);
        }
        let n = (CHUNK - self.buffer.len()).min(buf.len());
        self.buffer.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use openpgp::cert::CertBuilder;
    use openpgp::parse::stream::{
        DecryptionHelper, DecryptorBuilder, MessageStructure, VerificationHelper,
    };
    use openpgp::parse::Parse;
    use openpgp::policy::StandardPolicy;

    use super::*;

    struct Key(Cert);

    impl VerificationHelper for &Key {
        fn get_certs(&mut self, _: &[openpgp::KeyHandle]) -> openpgp::Result<Vec<Cert>> {
            Ok(Vec::new())
        }
        fn check(&mut self, _: MessageStructure) -> openpgp::Result<()> {
            Ok(())
        }
    }

    impl DecryptionHelper for &Key {
        fn decrypt(
            &mut self,
            pkesks: &[openpgp::packet::PKESK],
            _: &[openpgp::packet::SKESK],
            sym_algo: Option<SymmetricAlgorithm>,
            decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
        ) -> openpgp::Result<Option<Cert>> {
            let policy = StandardPolicy::new();
            let ka = self
                .0
                .keys()
                .unencrypted_secret()
                .with_policy(&policy, None);
            let ka = ka.for_transport_encryption().next().unwrap();
            let mut pair = ka.key().clone().into_keypair()?;
            for pkesk in pkesks {
                if let Some((algo, sk)) = pkesk.decrypt(&mut pair, sym_algo) {
                    if decrypt(algo, &sk) {
                        return Ok(None);
                    }
                }
            }
            Err(anyhow::anyhow!("no key"))
        }
    }

    /// `data` sealed in writes of `piece` bytes.
    fn seal_in(data: &[u8], certs: &[Cert], piece: usize) -> Vec<u8> {
        let mut sealer = Sealer::new(Vec::new(), certs).unwrap();
        for piece in data.chunks(piece) {
            sealer.write_all(piece).unwrap();
        }
        sealer.finish().unwrap()
    }

    /// Uneven writes, so chunks and cipher blocks are cut mid-write.
    fn seal(data: &[u8], certs: &[Cert]) -> Vec<u8> {
        seal_in(data, certs, 7777)
    }

    fn open(message: &[u8], key: &Key) -> io::Result<Vec<u8>> {
        let policy = StandardPolicy::new();
        let mut reader = DecryptorBuilder::from_bytes(message)
            .unwrap()
            .with_policy(&policy, None, key)
            .map_err(io::Error::other)?;
        let mut out = Vec::new();
        reader.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn every_chunk_boundary_decrypts_to_the_same_bytes_with_the_mdc_checked() {
        let (cert, _) = CertBuilder::general_purpose(Some("t@example.org"))
            .generate()
            .unwrap();
        let key = Key(cert.clone());
        let public = vec![cert.strip_secret_key_material()];
        for len in [
            0,
            1,
            191,
            192,
            8383,
            8384,
            CHUNK - 7,
            CHUNK - 6,
            CHUNK,
            3 * CHUNK + 1,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let message = seal(&data, &public);
            assert_eq!(open(&message, &key).unwrap(), data, "{len} bytes");
            // Writes larger than a chunk, as the stage queue makes them.
            let message = seal_in(&data, &public, 256 * 1024);
            assert_eq!(open(&message, &key).unwrap(), data, "{len} bytes at once");
        }
    }

    #[test]
    fn a_changed_byte_fails_the_mdc() {
        let (cert, _) = CertBuilder::general_purpose(Some("t@example.org"))
            .generate()
            .unwrap();
        let key = Key(cert.clone());
        let data = vec![5u8; 100_000];
        let mut message = seal(&data, &[cert.strip_secret_key_material()]);
        // A byte of the literal data, far from the headers: only the MDC can notice.
        let at = message.len() / 2;
        message[at] ^= 1;
        assert!(open(&message, &key).is_err());
    }

    #[test]
    fn no_recipient_passes_the_bytes_through() {
        assert_eq!(seal(b"plain", &[]), b"plain");
    }
}
