//! Encryption stage: compressed bytes in, an OpenPGP message out (or the bytes unchanged when
//! no recipient is configured).
//!
//! The message is what GnuPG 2.2 decrypts: a PKESK v3 per recipient encryption key and a SEIPD v1
//! (MDC) packet around one literal data packet, no OpenPGP compression (the data is already
//! compressed). SEIPD v1 is forced whatever a certificate advertises, because sequoia would
//! otherwise pick SEIPD v2 for certificates that announce it and gpg 2.2 cannot read that.

use std::io::{self, Write};

use sequoia_openpgp as openpgp;

use openpgp::cert::Cert;
use openpgp::serialize::stream::{Encryptor, LiteralWriter, Message, Recipient};
use openpgp::types::{DataFormat, Features};

/// A `Write` adapter that encrypts into `W`. Call [`Sealer::finish`]: an unfinished message has
/// no MDC, is never committed, and `gpg` would reject it.
pub enum Sealer<'a, W: Write + Send + Sync + 'a> {
    OpenPgp(Message<'a>),
    Plain(W),
}

impl<'a, W: Write + Send + Sync + 'a> Sealer<'a, W> {
    /// Encrypts to every valid storage/transport encryption key of `certs`; with no
    /// certificates the data passes through unencrypted.
    pub fn new(inner: W, certs: &'a [Cert]) -> openpgp::Result<Self> {
        if certs.is_empty() {
            return Ok(Sealer::Plain(inner));
        }
        let mut recipients = Vec::new();
        for cert in certs {
            for ka in crate::keys::encryption_keys(cert) {
                recipients.push(Recipient::new(
                    Features::empty().set_seipdv1(),
                    openpgp::KeyHandle::from(ka.key().keyid()),
                    ka.key(),
                ));
            }
        }
        if recipients.is_empty() {
            return Err(anyhow::anyhow!(
                "no usable encryption key among the recipients"
            ));
        }
        let message = Message::new(inner);
        let message = Encryptor::for_recipients(message, recipients).build()?;
        let message = LiteralWriter::new(message)
            .format(DataFormat::Binary)
            .build()?;
        Ok(Sealer::OpenPgp(message))
    }

    /// Writes the MDC and closes every OpenPGP layer.
    pub fn finish(self) -> io::Result<()> {
        match self {
            Sealer::OpenPgp(message) => message.finalize().map_err(io::Error::other),
            Sealer::Plain(mut w) => w.flush(),
        }
    }
}

impl<'a, W: Write + Send + Sync + 'a> Write for Sealer<'a, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sealer::OpenPgp(m) => m.write(buf),
            Sealer::Plain(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sealer::OpenPgp(m) => m.flush(),
            Sealer::Plain(w) => w.flush(),
        }
    }
}
