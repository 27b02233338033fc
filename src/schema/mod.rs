//! The stored formats: what s3nap writes to the store and reads back, with no knowledge of
//! how it is produced. Object keys (`layout`), the manifest that commits a run, and the
//! records the manifest carries (counts and warnings, a program's run, a bucket snapshot's
//! listing), plus the compression layer's name.
//!
//! This is the bottom layer: it depends on nothing else in s3nap, so every other module may
//! use it and a change here is a change of the storage format (docs/ARCHITECTURE.md, "Storage
//! layout and formats").

pub mod compression;
pub mod layout;
pub mod manifest;
pub mod program;
pub mod quilt;
pub mod report;
pub mod snapshot;

/// Stored data that does not have the form its format promises (a manifest that does not
/// parse, a format this s3nap does not know); the message says what.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FormatError(pub String);

/// Stored bytes that do not match what their manifest promises: damaged, truncated or
/// replaced. The message names what.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct IntegrityError(pub String);
