//! One run per configuration at a time: an exclusive `flock` on `DiffDir/s3nap.lock`.
//!
//! The kernel releases the lock when the process dies, so a killed run never leaves a stale
//! lock behind. The file holds the holder's PID and start time for the message the second run
//! prints.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another s3nap run holds {path} ({holder})")]
    Held { path: PathBuf, holder: String },
}

pub struct RunLock {
    _lock: Flock<File>,
}

impl RunLock {
    pub fn acquire(dir: &Path, wait: bool) -> Result<RunLock, LockError> {
        let path = dir.join("s3nap.lock");
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(crate::atomic::FILE_MODE)
            .open(&path)
            .map_err(io)?;
        let arg = if wait {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockExclusiveNonblock
        };
        let mut lock = match Flock::lock(file, arg) {
            Ok(lock) => lock,
            Err((mut file, _)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(LockError::Held {
                    path,
                    holder: if holder.is_empty() {
                        "holder unknown".into()
                    } else {
                        holder.to_string()
                    },
                });
            }
        };
        let stamp = format!(
            "pid {} since {}\n",
            std::process::id(),
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
        );
        lock.set_len(0).map_err(io)?;
        lock.seek(SeekFrom::Start(0)).map_err(io)?;
        lock.write_all(stamp.as_bytes()).map_err(io)?;
        Ok(RunLock { _lock: lock })
    }
}
