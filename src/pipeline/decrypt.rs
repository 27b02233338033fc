//! Decryption stage: stored bytes in, compressed bytes out.
//!
//! Either sequoia with the secret keys of an `--identity` file, or `gpg --decrypt` as a child
//! process (`--gpg`), so that gpg-agent, pinentry and smartcards work. Both refuse a message whose
//! integrity protection (MDC) fails; the gpg child counts as done only when its exit status has
//! been checked, and its stderr is part of the error.

use std::io::{self, Read};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;

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
            let decryptor = DecryptorBuilder::from_reader(input)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
                .with_policy(crate::keys::policy(), None, helper)
                .map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("cannot decrypt with {}: {e}", identity.path.display()),
                    )
                })?;
            Ok(Box::new(decryptor))
        }
        DecryptWith::Gpg => Ok(Box::new(GpgReader::spawn(input)?)),
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

/// `gpg --decrypt` as a `Read`: a thread feeds the ciphertext to gpg's stdin, we read its stdout,
/// and the end of the stream is only reported once gpg exited successfully.
struct GpgReader {
    child: Option<Child>,
    stdout: std::process::ChildStdout,
    feeder: Option<JoinHandle<io::Result<()>>>,
    stderr: Option<JoinHandle<String>>,
}

impl GpgReader {
    fn spawn<R: Read + Send + 'static>(mut input: R) -> io::Result<Self> {
        let mut child = Command::new("gpg")
            .args(["--quiet", "--decrypt"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run gpg --decrypt: {e}")))?;
        let mut stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let feeder = std::thread::spawn(move || {
            let r = io::copy(&mut input, &mut stdin);
            drop(stdin);
            match r {
                Ok(_) => Ok(()),
                // gpg may stop reading early on failure; its exit status tells why.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
                Err(e) => Err(e),
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        Ok(GpgReader {
            child: Some(child),
            stdout,
            feeder: Some(feeder),
            stderr: Some(stderr),
        })
    }

    fn finish(&mut self) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = child.wait()?;
        let fed = self.feeder.take().map(|h| h.join());
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        match fed {
            Some(Ok(Err(e))) => return Err(e),
            Some(Err(_)) => return Err(io::Error::other("gpg input thread panicked")),
            _ => {}
        }
        if !status.success() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("gpg --decrypt failed ({status}): {}", stderr.trim()),
            ));
        }
        Ok(())
    }
}

impl Read for GpgReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.finish()?;
        }
        Ok(n)
    }
}

impl Drop for GpgReader {
    fn drop(&mut self) {
        // Only reached on an error path: do not leave a gpg process behind.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
