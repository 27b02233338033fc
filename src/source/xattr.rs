//! Extended attributes and POSIX ACLs of a path, as the PAX records GNU tar reads with
//! `--xattrs --acls`: `SCHILY.xattr.NAME` with the raw value, and the ACLs in text form as
//! `SCHILY.acl.access` / `SCHILY.acl.default` (the kernel keeps them as binary xattrs
//! `system.posix_acl_*`, which GNU tar does not restore from raw bytes).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Calls a list/get-style function: first into a buffer on the stack, which answers the
/// common case (no attributes, or a few short ones) in one system call per path; only a longer
/// answer is asked for its size first and then fetched.
fn sized(mut call: impl FnMut(*mut libc::c_void, usize) -> isize) -> io::Result<Vec<u8>> {
    let mut first = [0u8; 1024];
    let n = call(first.as_mut_ptr().cast(), first.len());
    if n >= 0 {
        return Ok(first[..n as usize].to_vec());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::ERANGE) {
        return Err(e);
    }
    loop {
        let n = call(std::ptr::null_mut(), 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; n as usize];
        let m = call(buf.as_mut_ptr().cast(), buf.len());
        if m < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue; // grew in between
            }
            return Err(e);
        }
        buf.truncate(m as usize);
        return Ok(buf);
    }
}

/// Text form of a binary POSIX ACL xattr (`user::rw-,user:1000:r--,group::r--,mask::r--,other::r--`),
/// numeric ids; `None` if it is malformed.
pub fn acl_text(raw: &[u8]) -> Option<String> {
    let version = u32::from_le_bytes(raw.get(..4)?.try_into().ok()?);
    if version != 2 || (raw.len() - 4) % 8 != 0 {
        return None;
    }
    let mut parts = Vec::new();
    for e in raw[4..].chunks(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let rwx = format!(
            "{}{}{}",
            if perm & 4 != 0 { 'r' } else { '-' },
            if perm & 2 != 0 { 'w' } else { '-' },
            if perm & 1 != 0 { 'x' } else { '-' }
        );
        parts.push(match tag {
            0x01 => format!("user::{rwx}"),
            0x02 => format!("user:{id}:{rwx}"),
            0x04 => format!("group::{rwx}"),
            0x08 => format!("group:{id}:{rwx}"),
            0x10 => format!("mask::{rwx}"),
            0x20 => format!("other::{rwx}"),
            _ => return None,
        });
    }
    Some(parts.join(","))
}

/// The PAX records for `path`'s xattrs and ACLs (symlinks themselves, not their targets).
/// A file system without xattr support yields none.
pub fn pax_records(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let c = cpath(path)?;
    records(
        |buf, len| unsafe { libc::llistxattr(c.as_ptr(), buf.cast(), len) },
        |name, buf, len| unsafe { libc::lgetxattr(c.as_ptr(), name.as_ptr(), buf, len) },
    )
}

/// The PAX records of the file open as `fd`: what [`pax_records`] gives for its path, without
/// looking the path up again (and of the very file that is archived).
pub fn pax_records_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<(String, Vec<u8>)>> {
    let fd = fd.as_raw_fd();
    records(
        |buf, len| unsafe { libc::flistxattr(fd, buf.cast(), len) },
        |name, buf, len| unsafe { libc::fgetxattr(fd, name.as_ptr(), buf, len) },
    )
}

fn records(
    mut list: impl FnMut(*mut libc::c_void, usize) -> isize,
    mut get: impl FnMut(&CString, *mut libc::c_void, usize) -> isize,
) -> io::Result<Vec<(String, Vec<u8>)>> {
    let names = match sized(&mut list) {
        Ok(n) => n,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP)) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut records = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).expect("split on NUL");
        let value = match sized(|buf, len| get(&cname, buf, len)) {
            Ok(v) => v,
            // Removed in between.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => continue,
            Err(e) => return Err(e),
        };
        let name = String::from_utf8_lossy(name).into_owned();
        match name.as_str() {
            "system.posix_acl_access" => {
                if let Some(text) = acl_text(&value) {
                    records.push(("SCHILY.acl.access".to_string(), text.into_bytes()));
                }
            }
            "system.posix_acl_default" => {
                if let Some(text) = acl_text(&value) {
                    records.push(("SCHILY.acl.default".to_string(), text.into_bytes()));
                }
            }
            _ => records.push((format!("SCHILY.xattr.{name}"), value)),
        }
    }
    records.sort();
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_binary_to_text() {
        let mut raw = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 4, 1000),
            (4, 5, u32::MAX),
            (0x10, 5, u32::MAX),
            (0x20, 0, u32::MAX),
        ] {
            raw.extend_from_slice(&tag.to_le_bytes());
            raw.extend_from_slice(&perm.to_le_bytes());
            raw.extend_from_slice(&id.to_le_bytes());
        }
        assert_eq!(
            acl_text(&raw).unwrap(),
            "user::rw-,user:1000:r--,group::r-x,mask::r-x,other::---"
        );
        assert_eq!(acl_text(&raw[..7]), None);
    }

    #[test]
    fn reads_user_xattrs() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let c = cpath(&f).unwrap();
        let name = CString::new("user.s3nap.test").unwrap();
        let rc =
            unsafe { libc::setxattr(c.as_ptr(), name.as_ptr(), b"v\0al".as_ptr().cast(), 4, 0) };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        assert_eq!(
            pax_records(&f).unwrap(),
            vec![(
                "SCHILY.xattr.user.s3nap.test".to_string(),
                b"v\0al".to_vec()
            )]
        );
        // A value longer than the first buffer takes the sized path; both ways of asking give
        // the same records.
        let long = CString::new("user.s3nap.long").unwrap();
        let value: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let rc = unsafe {
            libc::setxattr(
                c.as_ptr(),
                long.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        let by_path = pax_records(&f).unwrap();
        assert_eq!(
            by_path,
            vec![
                ("SCHILY.xattr.user.s3nap.long".to_string(), value),
                (
                    "SCHILY.xattr.user.s3nap.test".to_string(),
                    b"v\0al".to_vec()
                ),
            ]
        );
        let file = std::fs::File::open(&f).unwrap();
        assert_eq!(
            pax_records_fd(std::os::fd::AsFd::as_fd(&file)).unwrap(),
            by_path
        );
        let bare = dir.path().join("bare");
        std::fs::write(&bare, b"x").unwrap();
        assert_eq!(pax_records(&bare).unwrap(), Vec::new());
    }
}
