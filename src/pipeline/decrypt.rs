//! Decryption stage: stored bytes in, compressed bytes out.
//!
//! Either sequoia with the secret keys of an `--identity` file, or `gpg --decrypt` as a child
//! process (`--gpg`), so that gpg-agent, pinentry and smartcards work. Both refuse a message whose
//! integrity protection (MDC) fails; the gpg child counts as done only when its exit status has
//! been checked, and its stderr is part of the error.

use std::io::{self, Read};
use std::process::Command;

use sequoia_openpgp as openpgp;

use openpgp::crypto::SessionKey;
use openpgp::packet::{PKESK, SKESK};
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageStructure, VerificationHelper,
};
use openpgp::parse::Parse;
use openpgp::types::SymmetricAlgorithm;
use openpgp::{Cert, KeyHandle};

use crate::keys::Identity;
use crate::process::{ChildReader, Input};

/// Plaintext sequoia holds back before releasing any (see `decryptor`).
const HELD_BACK: usize = 256 * 1024;

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
            let helper = Helper {
                certs: &identity.certs,
            };
            // sequoia holds back up to 25 MiB by default so that a small message's MDC is
            // checked before any of it is released. Recovery has already checked every range
            // of the stored bytes against its SHA-256 (pipeline/download.rs) before it gets
            // here, so that copy would only cost memory and time; the MDC is still checked at
            // the end and its failure is still an error.
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
        for pkesk in pkesks {
            for cert in self.certs {
                for ka in cert.keys().unencrypted_secret() {
                    let matches = match pkesk.recipient() {
                        Some(handle) => ka.key().key_handle().aliases(&handle),
                        None => true,
                    };
                    if !matches {
                        continue;
                    }
                    let mut pair = ka.key().clone().into_keypair()?;
                    if let Some((algo, sk)) = pkesk.decrypt(&mut pair, sym_algo) {
                        if decrypt(algo, &sk) {
                            return Ok(Some(cert.clone()));
                        }
                    }
                }
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
