//! `s3nap quilt init`: 32 random bytes in, a new quilt key file (`QuiltKeyFile`, 0600) and the
//! secret's fingerprint out.
//!
//! Every host that shares a quilt needs the same secret (content keys are HMACs keyed with it),
//! so the operator makes it once and installs the file on each host; the bucket only ever
//! keeps its fingerprint (`quilt/secret.id`, claimed by the first quilted run). An existing
//! file is never replaced: a new secret would silently start another quilt, and the secret it
//! replaced could not be made again.

use std::io;
use std::path::{Path, PathBuf};

use crate::atomic;
use crate::schema::quilt::{QuiltSecret, SECRET_LEN};

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(
        "{0}: exists already; `s3nap quilt init` never replaces a quilt key file (every host \
         sharing the quilt needs the same secret, and one replaced cannot be made again): \
         install this one, or remove it first to start a new quilt"
    )]
    Exists(PathBuf),
    #[error("{path}: cannot write the quilt key file: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("no random bytes from the kernel (getrandom): {0}")]
    Random(io::Error),
}

/// Creates the quilt key file `path` (owner-only) with a new random secret, and returns it.
pub fn create(path: &Path) -> Result<QuiltSecret, InitError> {
    let mut bytes = [0u8; SECRET_LEN];
    random(&mut bytes).map_err(InitError::Random)?;
    let secret = QuiltSecret::from_bytes(bytes);
    let text = secret.to_file_text();
    atomic::write_new(path, |w| w.write_all(text.as_bytes())).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            InitError::Exists(path.to_path_buf())
        } else {
            InitError::Write {
                path: path.to_path_buf(),
                source: e,
            }
        }
    })?;
    Ok(secret)
}

/// Fills `buf` from the kernel's random source (getrandom(2), blocking until it is seeded).
fn random(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is valid for writes of `rest.len()` bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_new_key_file_is_owner_only_readable_back_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quilt.key");
        let secret = create(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(QuiltSecret::parse(&text).unwrap(), secret);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Another call makes another secret, but never over the file.
        let err = create(&path).unwrap_err();
        assert!(matches!(err, InitError::Exists(_)), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        let other = create(&dir.path().join("other.key")).unwrap();
        assert_ne!(other, secret);
    }
}
