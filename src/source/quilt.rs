//! The tree sources' hook into the quilt: each regular file at or above the set's
//! `QuiltMinSize` (the first name of its inode only) is offered to a [`Quilter`], which either
//! stores its content in the quilt and answers with the reference that stands for the data in
//! the archive, or leaves the file inline (as without `Quilt`), with a warning if it has one.
//!
//! The trait lives here so that the sources know nothing of the store: the orchestration
//! (`backup::quilt`) implements it. It is called on the source's own (blocking) thread.

use std::fs::File;
use std::path::Path;

pub use crate::schema::quilt::QuiltRef;

/// What became of an offered file.
#[derive(Debug)]
pub enum Offered {
    /// Its content is in the quilt: the member gets the reference's PAX records and no data.
    Quilted(QuiltRef),
    /// The file goes into the archive as usual; with a problem worth a warning (it changed
    /// while its content was read).
    Inline(Option<String>),
}

pub trait Quilter: Send {
    /// Files of at least this size are offered.
    fn min_size(&self) -> u64;

    /// Offers `file` (open, `size` bytes by its metadata, found at `path`). The quilter reads
    /// it by position (`pread`), so the file's offset is unchanged for an inline member. An
    /// error fails the run (the store could not be reached: nothing is committed).
    fn offer(&mut self, file: &File, size: u64, path: &Path) -> anyhow::Result<Offered>;
}
