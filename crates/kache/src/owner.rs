//! Who owns what kache reads and writes: the cache directory, the daemon's
//! socket and the config files must belong to the user kache runs as, or
//! another local account could steer the cache or collect its secrets.
//!
//! The contract: [`private_dir`] is the only way a cache directory is
//! created (mode 0700) or accepted; [`check_socket`] and [`peer_uid`] are
//! what the daemon client asks before it sends anything; [`trusted_file`]
//! decides whether a config file may be read at all.

use std::fmt;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The effective uid of this process.
pub fn my_uid() -> u32 {
    // SAFETY: geteuid() has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Something kache refuses to use because another user controls it. Its
/// `Display` is the one line printed for it (after `kache: `).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Foreign {
    pub what: &'static str,
    pub path: PathBuf,
    /// The owner's uid, or `None` when it is ours but others may write it.
    pub owner: Option<u32>,
}

impl fmt::Display for Foreign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.owner {
            Some(uid) => write!(
                f,
                "refusing the {} {}: it belongs to uid {uid}, not to you (uid {})",
                self.what,
                self.path.display(),
                my_uid()
            ),
            None => write!(
                f,
                "refusing the {} {}: other users may write to it",
                self.what,
                self.path.display()
            ),
        }
    }
}

impl std::error::Error for Foreign {}

/// Creates `dir` (and missing parents) mode 0700, or accepts an existing
/// one that belongs to this user, tightening it to 0700. A directory of
/// another user (or a symlink to one) is [`Foreign`]; other I/O errors are
/// returned as they are.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => {
            return Err(anyhow::Error::new(err).context(format!("creating {}", dir.display())));
        }
    }
    let meta = std::fs::metadata(dir)?;
    if meta.uid() != my_uid() {
        return Err(Foreign {
            what: "cache directory",
            path: dir.to_path_buf(),
            owner: Some(meta.uid()),
        }
        .into());
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Whether `err` (or its cause) is a [`Foreign`] refusal.
pub fn as_foreign(err: &anyhow::Error) -> Option<&Foreign> {
    err.chain().find_map(|e| e.downcast_ref::<Foreign>())
}

/// The daemon socket at `path` must be ours; `Ok(false)` when there is none.
pub fn check_socket(path: &Path) -> Result<bool, Foreign> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.uid() != my_uid() => Err(Foreign {
            what: "daemon socket",
            path: path.to_path_buf(),
            owner: Some(meta.uid()),
        }),
        Ok(_) => Ok(true),
        Err(_) => Ok(false),
    }
}

/// The uid and pid of the process at the other end of a Unix socket
/// (`SO_PEERCRED`: for a client, the process that listened).
pub fn peer_cred(socket: &impl AsRawFd) -> std::io::Result<(u32, i32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((cred.uid, cred.pid))
}

/// Whether a config file may be read: it belongs to this user (or root)
/// and no one else may write to it, nor to the directory it is in (a
/// `/tmp/.kache.toml` any local user created is refused).
pub fn trusted_file(path: &Path) -> Result<(), Foreign> {
    let foreign = |owner| Foreign {
        what: "config file",
        path: path.to_path_buf(),
        owner,
    };
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let me = my_uid();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(foreign(Some(meta.uid())));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(foreign(None));
    }
    if let Some(parent) = path.parent().and_then(|p| std::fs::metadata(p).ok()) {
        // A directory others may write to (without the sticky bit, or with
        // it but not ours) lets them replace the file.
        let shared = parent.mode() & 0o022 != 0;
        let sticky = parent.mode() & 0o1000 != 0;
        if shared && (!sticky || meta.uid() != me) {
            return Err(foreign(None));
        }
    }
    Ok(())
}

/// Prints `line` (one refusal) on cargo's stderr once per cargo process,
/// remembered in [`fallback_cache_dir`]`/said` (every time when even that
/// directory is not ours).
pub fn say_once_per_build(line: &str) {
    // SAFETY: getppid() has no preconditions.
    let cargo_pid = unsafe { libc::getppid() };
    let said = fallback_cache_dir().join("said");
    let tag = blake3::hash(line.as_bytes()).to_hex()[..12].to_string();
    let first = private_dir(&said).is_err()
        || std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(said.join(format!("{cargo_pid}-{tag}")))
            .is_ok();
    if first {
        crate::events::tell(&format!("{line}\n"));
    }
}

/// Where the cache goes without `HOME` and `XDG_CACHE_HOME`:
/// `{tmp}/kache-<uid>`, never a name another user can take first
/// ([`private_dir`] refuses it if they did).
pub fn fallback_cache_dir() -> PathBuf {
    std::env::temp_dir().join(format!("kache-{}", my_uid()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_dir_is_created_0700_and_loose_modes_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("a/b");
        private_dir(&cache).unwrap();
        let mode = std::fs::metadata(&cache).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
        private_dir(&cache).unwrap();
        assert_eq!(std::fs::metadata(&cache).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_world_writable_config_file_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".kache.toml");
        std::fs::write(&file, "").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(trusted_file(&file), Ok(()));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(trusted_file(&file).is_err());
    }
}
