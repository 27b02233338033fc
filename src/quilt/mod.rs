//! The quilt's upkeep: the quilt secret made once ([`init`]), and content no manifest
//! references any more removed ([`gc`]). What a content object and a reference are is
//! `schema::quilt`; which content may go is `policy::quilt`. Backups write the quilt and
//! recovery reads it elsewhere; nothing here uploads content or reads a byte of it.

pub mod gc;
pub mod init;
