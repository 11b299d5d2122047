//! Putting stored files back into `target/`: reflink, else hardlink for
//! immutable outputs, else copy.
//!
//! A hardlink shares the blob's inode, so it is only used for outputs nothing
//! rewrites in place (rustc and cargo replace `.rlib`/`.rmeta` by rename),
//! and only while no other checkout links the same blob (a restore's fresh
//! mtime would reach that checkout's file too).
//! Executables, dylibs and proc-macros are copied unless a reflink (a
//! copy-on-write clone) is possible, so a later write never reaches a blob.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

use super::Store;
use super::blobs::write_atomic;

/// How a file was restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreMethod {
    Reflink,
    Hardlink,
    Copy,
    /// Rewritten from the blob (dep-info, whose paths are denormalised).
    Rewrite,
}

impl Store {
    /// Restores blob `hash` to `dest`, replacing whatever is there.
    /// `hardlink_ok` marks an immutable output; `executable` sets mode 0755.
    pub fn restore_file(
        &self,
        hash: &str,
        dest: &Path,
        hardlink_ok: bool,
        executable: bool,
    ) -> Result<RestoreMethod> {
        let blob = self.blob_path(hash);
        remove_if_present(dest)?;
        let mode = if executable { 0o755 } else { 0o644 };
        if reflink(&blob, dest).is_ok() {
            fs::set_permissions(dest, fs::Permissions::from_mode(mode))?;
            return Ok(RestoreMethod::Reflink);
        }
        // A link shares the blob's mode: an executable links only to a blob
        // that has the executable bit. Any file is linked only while no
        // other checkout shares the inode (the store's own link is the
        // only one): the fresh mtime a restore gives it would reach that
        // checkout's file too, and its cargo would then see a dependency
        // newer than its dependents (`StaleDependency`) and rebuild them,
        // rerunning the build scripts of packages with build-dependencies
        // although nothing changed for it; a script reading an undeclared
        // input, or an edit that kept its mtime, then gives what plain
        // cargo would not. The same checkout after `cargo clean` (its old
        // links gone) still links.
        let shared_elsewhere =
            fs::metadata(&blob).is_ok_and(|m| std::os::unix::fs::MetadataExt::nlink(&m) > 1);
        if hardlink_ok
            && !shared_elsewhere
            && self.blob_linkable(hash, executable)
            && fs::hard_link(&blob, dest).is_ok()
        {
            // A link keeps the inode's old mtime; cargo would then think
            // dependents built after that time are fresh (see `touch`).
            touch(dest)?;
            return Ok(RestoreMethod::Hardlink);
        }
        fs::copy(&blob, dest)
            .with_context(|| format!("copying blob {hash} to {}", dest.display()))?;
        fs::set_permissions(dest, fs::Permissions::from_mode(mode))?;
        Ok(RestoreMethod::Copy)
    }

    /// Writes `bytes` (a blob after path rewriting) to `dest` atomically.
    pub fn restore_bytes(&self, bytes: &[u8], dest: &Path) -> Result<RestoreMethod> {
        write_atomic(dest, bytes, 0o644)?;
        Ok(RestoreMethod::Rewrite)
    }
}

/// Sets a restored file's mtime (and atime) to now. Cargo decides what to
/// rebuild by comparing mtimes: a dependency output older than a dependent's
/// makes the dependent look fresh, so a restore that put back an output with
/// the time of its first compile (a revert, then `cargo build -p dep`) would
/// leave dependents built from the newer version in place. A fresh copy or
/// reflink is already new; a hardlink shares the blob's inode, so this also
/// moves the blob's times (its content is checked by hash, never by time).
fn touch(path: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("{} has a NUL byte", path.display()))?;
    // SAFETY: c_path is a valid NUL-terminated string for the call's
    // duration; a null `times` means "now" for both timestamps.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c_path.as_ptr(), std::ptr::null(), 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("setting the mtime of {}", path.display()));
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Clones `source` to a new file `dest` sharing extents (Linux `FICLONE`).
#[cfg(target_os = "linux")]
fn reflink(source: &Path, dest: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    const FICLONE: libc::c_ulong = 0x4004_9409;
    let src = fs::File::open(source)?;
    let dst = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)?;
    // SAFETY: both descriptors are open for the duration of the call and
    // FICLONE takes the source descriptor as its integer argument.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    drop(dst);
    let _ = fs::remove_file(dest);
    Err(err)
}

#[cfg(not(target_os = "linux"))]
fn reflink(_source: &Path, _dest: &Path) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}
