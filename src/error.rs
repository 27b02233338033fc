//! Errors and the exit statuses of the contract: the one place where an error becomes a status.
//!
//! Library code returns `anyhow` errors with context; what kind of failure an error is follows
//! from the first typed error in its chain, outermost first ([`StoreError`], [`LockError`],
//! [`IntegrityError`], [`RetrievalPending`]), or from the step that labelled it (a configuration that cannot be
//! loaded). Commands return [`Error`]; `main` prints it and exits with [`Error::exit_status`].
//! A command that ran to its end returns an [`ExitStatus`] itself: a run from its sets'
//! outcomes (`backup::exit_status`), `prune` and `bucket restore` from whether anything failed.

use std::fmt;

use crate::lock::LockError;
pub use crate::schema::IntegrityError;
use crate::store::retrieval::RetrievalPending;
use crate::store::{ErrorKind as StoreErrorKind, StoreError};

/// The exit statuses of the contract (README, "Exit status"; `s3nap --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitStatus {
    /// Every set succeeded.
    Ok = 0,
    /// Completed, with warnings.
    Warnings = 1,
    /// A set (or the command) failed.
    Failed = 2,
    /// Configuration or usage error: nothing was done.
    Configuration = 3,
    /// Another run holds the lock.
    Locked = 4,
    /// Archived objects are being retrieved (GLACIER, DEEP_ARCHIVE): nothing was read; run
    /// again once they are.
    RetrievalPending = 5,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// What the status says, for notifications.
    pub fn meaning(self) -> &'static str {
        match self {
            ExitStatus::Ok => "all sets succeeded",
            ExitStatus::Warnings => "completed with warnings",
            ExitStatus::Failed => "at least one set failed",
            ExitStatus::Configuration => "configuration or usage error",
            ExitStatus::Locked => "another run holds the lock",
            ExitStatus::RetrievalPending => "retrieval of archived objects requested",
        }
    }
}

/// What kind of failure an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The configuration or the command line is wrong: nothing was done.
    Configuration,
    /// Another run of the configuration holds its lock.
    Locked,
    /// Stored data failed its check: damaged, truncated or replaced.
    Integrity,
    /// The data is archived and its retrieval was requested (or is still on its way).
    RetrievalPending,
    /// The store or the network failed, and kept failing through the retries.
    Transient,
    /// Anything else.
    Failed,
}

impl Kind {
    pub fn exit_status(self) -> ExitStatus {
        match self {
            Kind::Configuration => ExitStatus::Configuration,
            Kind::Locked => ExitStatus::Locked,
            Kind::RetrievalPending => ExitStatus::RetrievalPending,
            Kind::Integrity | Kind::Transient | Kind::Failed => ExitStatus::Failed,
        }
    }

    /// The kind of `e`, from the first typed error in its chain (outermost first).
    fn of(e: &anyhow::Error) -> Kind {
        for cause in e.chain() {
            if let Some(store) = cause.downcast_ref::<StoreError>() {
                return match store.kind {
                    StoreErrorKind::Transient => Kind::Transient,
                    _ => Kind::Failed,
                };
            }
            if let Some(LockError::Held { .. }) = cause.downcast_ref::<LockError>() {
                return Kind::Locked;
            }
            if cause.is::<IntegrityError>() {
                return Kind::Integrity;
            }
            if cause.is::<RetrievalPending>() {
                return Kind::RetrievalPending;
            }
        }
        Kind::Failed
    }
}

/// An error with its kind.
pub struct Error {
    kind: Kind,
    inner: anyhow::Error,
}

impl Error {
    pub fn new(kind: Kind, e: impl Into<anyhow::Error>) -> Self {
        Error {
            kind,
            inner: e.into(),
        }
    }

    /// An error of the configuration (or the command line).
    pub fn configuration(e: impl Into<anyhow::Error>) -> Self {
        Error::new(Kind::Configuration, e)
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn exit_status(&self) -> ExitStatus {
        self.kind.exit_status()
    }
}

/// Any error, of the kind its chain shows.
impl<E: Into<anyhow::Error>> From<E> for Error {
    fn from(e: E) -> Self {
        let inner = e.into();
        Error {
            kind: Kind::of(&inner),
            inner,
        }
    }
}

/// One line: the cause chain joined (`{:#}`); `{:?}` shows the chain line by line.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.inner)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn kinds_come_from_the_chain_and_map_to_the_contract() {
        let transient = StoreError::new(StoreErrorKind::Transient, "get", "s3://b/k", "503");
        let e = Error::from(anyhow::Error::from(transient).context("recovering"));
        assert_eq!((e.kind(), e.exit_status().code()), (Kind::Transient, 2));
        let held = LockError::Held {
            path: "/var/lib/s3nap/s3nap.lock".into(),
            holder: "pid 1".into(),
        };
        assert_eq!(Error::from(held).exit_status().code(), 4);
        let damaged: anyhow::Result<()> = Err(IntegrityError("s3://b/k: damaged".into()).into());
        let e = Error::from(damaged.context("range 3").unwrap_err());
        assert_eq!((e.kind(), e.exit_status().code()), (Kind::Integrity, 2));
        assert_eq!(e.to_string(), "range 3: s3://b/k: damaged");
        let config = Error::configuration(anyhow::anyhow!("s3nap.conf line 3: unknown"));
        assert_eq!(config.exit_status().code(), 3);
        assert_eq!(
            Error::from(anyhow::anyhow!("other")).exit_status().code(),
            2
        );
        assert_eq!(ExitStatus::Warnings.code(), 1);
        let pending = RetrievalPending {
            report: Default::default(),
            after: chrono::Utc::now(),
        };
        let e = Error::from(anyhow::Error::from(pending).context("recovering dir/etc"));
        assert_eq!(
            (e.kind(), e.exit_status().code()),
            (Kind::RetrievalPending, 5)
        );
    }
}
