//! OpenPGP certificates for encryption and secret keys for decryption.
//!
//! Recipients (`GpgRecipient`) are looked up in `GpgKeyring` (a keyring or certificate file) or,
//! without one, exported from the user's GnuPG with `gpg --export`. A recipient names a
//! certificate by fingerprint, key ID or a part of a user ID (usually the e-mail address), as gpg
//! does. Secret keys for recovery come from an `--identity` file; a passphrase-protected key is
//! unlocked with `S3NAP_PASSPHRASE_FILE` or a prompt on the terminal, never a command argument.

use std::path::{Path, PathBuf};
use std::process::Command;

use sequoia_openpgp as openpgp;

use openpgp::cert::amalgamation::key::PrimaryKey;
use openpgp::cert::{Cert, CertParser};
use openpgp::crypto::Password;
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("GpgKeyring {path}: {message}")]
    Keyring { path: PathBuf, message: String },
    #[error("GpgRecipient '{recipient}': {message}")]
    Recipient { recipient: String, message: String },
    #[error("identity {path}: {message}")]
    Identity { path: PathBuf, message: String },
}

static POLICY: StandardPolicy<'static> = StandardPolicy::new();

/// The policy for choosing keys and accepting algorithms: sequoia's standard one.
pub fn policy() -> &'static StandardPolicy<'static> {
    &POLICY
}

/// The keys of `cert` that archives are encrypted to: valid now, not revoked, flagged for
/// storage or transport encryption, with an algorithm sequoia supports.
pub fn encryption_keys(
    cert: &Cert,
) -> impl Iterator<
    Item = openpgp::cert::amalgamation::key::ValidErasedKeyAmalgamation<
        '_,
        openpgp::packet::key::PublicParts,
    >,
> {
    cert.keys()
        .with_policy(policy(), None)
        .supported()
        .alive()
        .revoked(false)
        .for_storage_encryption()
        .for_transport_encryption()
}

/// The fingerprints of the keys of `certs` that data is encrypted to ([`encryption_keys`], as
/// the Sealer chooses them): what a quilt content key covers, so that content encrypted before
/// an encryption key was added, rotated or expired is not reused.
pub fn encryption_fingerprints(certs: &[Cert]) -> Vec<String> {
    certs
        .iter()
        .flat_map(|c| encryption_keys(c).map(|ka| ka.key().fingerprint().to_hex()))
        .collect()
}

/// Does `cert` answer to `query` (fingerprint, key ID, or part of a user ID)?
pub fn cert_matches(cert: &Cert, query: &str) -> bool {
    let hex: String = query
        .trim_start_matches("0x")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    let is_hex = hex.len() >= 8 && hex.chars().all(|c| c.is_ascii_hexdigit());
    if is_hex {
        let hit = cert.keys().any(|ka| {
            let fpr = ka.key().fingerprint().to_hex();
            fpr == hex || (hex.len() >= 8 && fpr.ends_with(&hex))
        });
        if hit {
            return true;
        }
    }
    let needle = query.trim_matches(|c| c == '<' || c == '>').to_lowercase();
    cert.userids().any(|ua| {
        String::from_utf8_lossy(ua.userid().value())
            .to_lowercase()
            .contains(&needle)
    })
}

fn parse_certs(bytes: &[u8]) -> Result<Vec<Cert>, String> {
    let mut certs = Vec::new();
    for cert in CertParser::from_bytes(bytes).map_err(|e| e.to_string())? {
        certs.push(cert.map_err(|e| e.to_string())?);
    }
    Ok(certs)
}

/// The certificates of every recipient; an error names the recipient that has none usable.
pub fn recipient_certs(
    recipients: &[String],
    keyring: Option<&Path>,
) -> Result<Vec<Cert>, KeyError> {
    let ring = match keyring {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| KeyError::Keyring {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            Some(parse_certs(&bytes).map_err(|message| KeyError::Keyring {
                path: path.to_path_buf(),
                message,
            })?)
        }
        None => None,
    };
    let mut out: Vec<Cert> = Vec::new();
    for recipient in recipients {
        let found = match &ring {
            Some(certs) => certs
                .iter()
                .filter(|c| cert_matches(c, recipient))
                .cloned()
                .collect::<Vec<_>>(),
            None => gpg_export(recipient)?,
        };
        if found.is_empty() {
            return Err(KeyError::Recipient {
                recipient: recipient.clone(),
                message: match keyring {
                    Some(path) => format!("no certificate in {} matches", path.display()),
                    None => "gpg --export found no certificate".into(),
                },
            });
        }
        for cert in found {
            if encryption_keys(&cert).next().is_none() {
                return Err(KeyError::Recipient {
                    recipient: recipient.clone(),
                    message: format!(
                        "certificate {} has no valid encryption key (expired, revoked or unsupported)",
                        cert.fingerprint()
                    ),
                });
            }
            if !out.iter().any(|c| c.fingerprint() == cert.fingerprint()) {
                out.push(cert);
            }
        }
    }
    Ok(out)
}

fn gpg_export(recipient: &str) -> Result<Vec<Cert>, KeyError> {
    let fail = |message: String| KeyError::Recipient {
        recipient: recipient.to_string(),
        message,
    };
    let mut gpg = Command::new("gpg");
    gpg.args(["--batch", "--export", "--", recipient]);
    let exported = crate::process::output(gpg, "gpg --export", crate::process::Input::Closed)
        .map_err(|e| fail(e.to_string()))?;
    let certs = parse_certs(&exported).map_err(fail)?;
    // gpg --export matches user IDs loosely; keep what our own matching agrees with.
    Ok(certs
        .into_iter()
        .filter(|c| cert_matches(c, recipient))
        .collect())
}

/// Secret keys read from an identity file, unlocked if they were protected.
pub struct Identity {
    pub certs: Vec<Cert>,
    pub path: PathBuf,
}

impl Identity {
    pub fn load(path: &Path) -> Result<Identity, KeyError> {
        let err = |message: String| KeyError::Identity {
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let certs = parse_certs(&bytes).map_err(err)?;
        if !certs.iter().any(|c| c.is_tsk()) {
            return Err(err("holds no secret key".into()));
        }
        let mut password: Option<Password> = None;
        let mut unlocked = Vec::new();
        for cert in certs {
            let mut packets: Vec<openpgp::Packet> = Vec::new();
            let mut changed = false;
            for ka in cert.keys().secret() {
                if !ka.key().secret().is_encrypted() {
                    continue;
                }
                if password.is_none() {
                    password = Some(read_passphrase(path).map_err(err)?);
                }
                let key = ka
                    .key()
                    .clone()
                    .decrypt_secret(password.as_ref().expect("set above"))
                    .map_err(|_| err("wrong passphrase".into()))?;
                changed = true;
                packets.push(if ka.primary() {
                    key.role_into_primary().into()
                } else {
                    key.role_into_subordinate().into()
                });
            }
            let cert = if changed {
                cert.insert_packets(packets)
                    .map_err(|e| err(e.to_string()))?
                    .0
            } else {
                cert
            };
            unlocked.push(cert);
        }
        Ok(Identity {
            certs: unlocked,
            path: path.to_path_buf(),
        })
    }
}

fn read_passphrase(key_path: &Path) -> Result<Password, String> {
    if let Some(file) = std::env::var_os("S3NAP_PASSPHRASE_FILE") {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("S3NAP_PASSPHRASE_FILE {}: {e}", Path::new(&file).display()))?;
        let line = text.lines().next().unwrap_or("");
        return Ok(Password::from(line));
    }
    let prompt = format!("Passphrase for {}: ", key_path.display());
    rpassword::prompt_password(prompt)
        .map(Password::from)
        .map_err(|e| format!("the key is protected and no passphrase could be read ({e}); set S3NAP_PASSPHRASE_FILE"))
}
