//! When the cache cannot work: the build goes on without it (every unit runs
//! rustc as if kache were not there), and the user is told why, once per
//! build, whatever `KACHE_PROGRESS` says:
//!
//! ```text
//! kache: cache disabled for this build: /ci/cache is on a read-only filesystem
//! ```
//!
//! "Once per build" is once per cargo process (our parent, by pid and start
//! time), as the daemon client announces a build once. The markers and the
//! last notice live outside the cache directory, which may be the thing that
//! is broken: in `$XDG_RUNTIME_DIR/kache`, else `<temp dir>/kache-<uid>`.
//! `kache stats` and `kache doctor` show the last notice until an entry is
//! stored again.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::Result;
use rusqlite::ErrorCode;
use serde::{Deserialize, Serialize};

use super::Store;
use super::index::sqlite_failure;

/// The context of an error whose cause is an index that could not be read
/// and could not be rebuilt from the store either.
#[derive(Debug)]
pub(super) struct IndexLost;

impl std::fmt::Display for IndexLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the index is unreadable and could not be rebuilt")
    }
}

/// The last "cache disabled" notice of a cache directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Disabled {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub reason: String,
    /// The build it happened in (see `build_id`).
    #[serde(default)]
    pub build: Option<String>,
}

/// Why the cache in `cache_dir` cannot work, when `err` says it cannot: the
/// directory is read-only, not writable, not a directory, out of space, or
/// its index is lost. `None` for any other error (a compile that cannot be
/// keyed, a busy index), which costs one unit, not the cache.
pub fn unusable(cache_dir: &Path, err: &anyhow::Error) -> Option<String> {
    let dir = cache_dir.display();
    if err.downcast_ref::<IndexLost>().is_some() {
        let why = err
            .chain()
            .last()
            .map_or_else(String::new, |c| format!(": {c}"));
        return Some(format!(
            "the index {dir}/index.db is unreadable and could not be rebuilt{why}"
        ));
    }
    for cause in err.chain() {
        let Some(io) = cause.downcast_ref::<std::io::Error>() else {
            continue;
        };
        // An error of another file (rustc, a source) is not the cache's:
        // these count only when the cache directory really refuses a write.
        let refused = || probe_writable(cache_dir).is_err();
        match io.raw_os_error() {
            Some(libc::EROFS) if refused() => {
                return Some(format!("{dir} is on a read-only filesystem"));
            }
            Some(libc::EACCES | libc::EPERM) if refused() => {
                return Some(format!("{dir} is not writable (permission denied)"));
            }
            Some(libc::ENOSPC | libc::EDQUOT) => {
                return Some(format!("no space left on the filesystem of {dir}"));
            }
            Some(libc::ENOTDIR | libc::EEXIST) => {
                if let Some(file) = not_a_directory(cache_dir) {
                    return Some(format!("{} is not a directory", file.display()));
                }
            }
            _ => {}
        }
    }
    let (code, message) = sqlite_failure(err)?;
    match code {
        ErrorCode::ReadOnly => Some(format!("the index {dir}/index.db is read-only")),
        ErrorCode::DiskFull => Some(format!("no space left on the filesystem of {dir}")),
        ErrorCode::CannotOpen => Some(format!(
            "the index {dir}/index.db cannot be opened ({message})"
        )),
        ErrorCode::SystemIoFailure => Some(format!(
            "the index {dir}/index.db cannot be read or written ({message})"
        )),
        _ => None,
    }
}

/// The first of the cache directory, its ancestors and the store's folders
/// that exists and is not a directory.
fn not_a_directory(cache_dir: &Path) -> Option<PathBuf> {
    let inner = [
        cache_dir.join("store").join("blobs"),
        cache_dir.join("store"),
    ];
    inner
        .iter()
        .map(PathBuf::as_path)
        .chain(cache_dir.ancestors())
        .find(|p| p.exists() && !p.is_dir())
        .map(Path::to_path_buf)
}

/// After a cache error in a compile (the unit goes on without the cache):
/// an index SQLite calls damaged is rebuilt for the units that follow; a
/// cache that cannot work is announced (see [`unusable`]), and on a full
/// disk what stale temp files hold is given back.
pub fn after_error(cache_dir: &Path, store: Option<&mut Store>, err: &anyhow::Error) {
    let mut store = store;
    if let Some(store) = store.as_deref_mut()
        && super::is_corruption(err)
    {
        match store.heal_index(err) {
            Ok(_) => return,
            Err(lost) => {
                cache_disabled(
                    cache_dir,
                    &unusable(cache_dir, &lost.context(IndexLost)).unwrap_or_default(),
                );
                return;
            }
        }
    }
    let Some(reason) = unusable(cache_dir, err) else {
        return;
    };
    if let Some(store) = store
        && reason.starts_with("no space")
    {
        let _ = store.sweep_stale_temps();
    }
    cache_disabled(cache_dir, &reason);
}

/// Tells the user, once per build, that the cache in `cache_dir` is off for
/// this build and why, and remembers it for `stats` and `doctor`.
pub fn cache_disabled(cache_dir: &Path, reason: &str) {
    tracing::warn!("cache disabled: {reason}");
    let state = state_dir();
    let id = cache_id(cache_dir);
    let build = build_id();
    if let Some(state) = &state {
        let record = Disabled {
            at_ms: crate::events::now_ms(),
            reason: reason.to_string(),
            build: build.clone(),
        };
        if let Ok(text) = serde_json::to_vec(&record) {
            let temp = state.join(format!("{id}.disabled.{}", std::process::id()));
            if fs::write(&temp, text).is_err()
                || fs::rename(&temp, state.join(format!("{id}.disabled"))).is_err()
            {
                let _ = fs::remove_file(&temp);
            }
        }
    }
    let first = match (&state, build) {
        (Some(state), Some(build)) => {
            forget_old_markers(state);
            let marker = state.join(format!("{id}.build-{build}"));
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(marker)
            {
                Ok(_) => true,
                Err(e) => e.kind() != std::io::ErrorKind::AlreadyExists,
            }
        }
        // Nowhere to remember it: better every unit than never.
        _ => true,
    };
    if first {
        crate::events::tell(&format!("kache: cache disabled for this build: {reason}\n"));
    }
}

/// The last "cache disabled" notice for `cache_dir`, unless a later build
/// stored an entry there.
pub fn last_disabled(cache_dir: &Path) -> Option<Disabled> {
    let path = state_dir_path()?.join(format!("{}.disabled", cache_id(cache_dir)));
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

/// The cache in `cache_dir` just stored an entry: a notice of an earlier
/// build is withdrawn (one of this build stays: that build did lose units).
/// Costs one failed `open` when there is no notice.
pub(super) fn clear_disabled(cache_dir: &Path) {
    let Some(notice) = last_disabled(cache_dir) else {
        return;
    };
    if (notice.build.is_none() || notice.build != build_id())
        && let Some(state) = state_dir_path()
    {
        let _ = fs::remove_file(state.join(format!("{}.disabled", cache_id(cache_dir))));
    }
}

/// Names a cache directory in the state directory.
fn cache_id(cache_dir: &Path) -> String {
    let hash = blake3::hash(cache_dir.as_os_str().as_encoded_bytes());
    hash.to_hex()[..16].to_string()
}

fn state_dir_path() -> Option<PathBuf> {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir).join("kache")),
        None => {
            // SAFETY: getuid() has no preconditions.
            let uid = unsafe { libc::getuid() };
            Some(std::env::temp_dir().join(format!("kache-{uid}")))
        }
    }
}

/// The state directory, created (mode 0700) if needed; `None` when it is
/// not a directory of ours (another user's, or a symlink).
fn state_dir() -> Option<PathBuf> {
    let dir = state_dir_path()?;
    let _ = fs::DirBuilder::new().mode(0o700).create(&dir);
    let meta = fs::symlink_metadata(&dir).ok()?;
    // SAFETY: getuid() has no preconditions.
    let uid = unsafe { libc::getuid() };
    (meta.is_dir() && meta.uid() == uid).then_some(dir)
}

/// The build this compile belongs to: the cargo process that runs it, by
/// pid and start time (a pid is reused; the pair is not).
fn build_id() -> Option<String> {
    // SAFETY: getppid() has no preconditions.
    let parent = unsafe { libc::getppid() };
    let stat = fs::read_to_string(format!("/proc/{parent}/stat")).ok()?;
    // Field 22, counted after the command name (which may hold spaces).
    let start = stat.rsplit_once(')')?.1.split_whitespace().nth(19)?;
    Some(format!("{parent}-{start}"))
}

/// Removes build markers older than a day.
fn forget_old_markers(state: &Path) {
    let day = std::time::Duration::from_secs(24 * 3600);
    for item in fs::read_dir(state).into_iter().flatten().flatten() {
        let old = item
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > day);
        if old && item.file_name().to_string_lossy().contains(".build-") {
            let _ = fs::remove_file(item.path());
        }
    }
}

/// Writes a probe file into `cache_dir` and removes it: whether a store
/// there could write at all right now (`doctor`).
pub fn probe_writable(cache_dir: &Path) -> Result<()> {
    let probe = cache_dir.join(format!(".kache-probe-{}", std::process::id()));
    let written = fs::File::create(&probe).and_then(|mut f| f.write_all(b"probe"));
    let _ = fs::remove_file(&probe);
    Ok(written?)
}
