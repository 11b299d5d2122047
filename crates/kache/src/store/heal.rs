//! How the store repairs itself, without the user.
//!
//! - An `index.db` that SQLite cannot read (not a database, malformed,
//!   truncated) is moved aside as `index.db.broken-<time>` (its `-wal` with
//!   it) and a new index is built from the entries on disk: each
//!   `store/<key>/meta.json` that describes a whole entry. This happens once,
//!   under the exclusive lock on `index.db.lock`, by whichever process finds
//!   the damage first; the others find a different file there and reopen it.
//!   An `index.db` that is missing while entries are on disk is refilled the
//!   same way. Either prints one line.
//! - A temp file whose writer is gone (a kill) or that is older than an
//!   hour is removed by the next `gc`, `doctor --repair`, or, at most once
//!   an hour, by a compile that stores an entry.
//!
//! What a rebuild loses: hit counts and last-use times (every entry counts
//! as used now), the upload queue, the origins of imported entries, and the
//! stat and toolchain caches, which refill as compiles run.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use kache_core::meta::{EntryMeta, META_VERSION};

use super::blobs::{TEMP_PREFIX, blob_path_in, temp_writer};
use super::index::{self, Index};
use super::{Store, file_id, is_hex_key, now, open_lock_file};

/// A temp file is stale after this long even if a process with its
/// writer's pid runs (the pid was reused, or lives in another namespace).
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// How often a compile that stores an entry sweeps stale temp files.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// A stale temp file that a sweep removed.
#[derive(Debug, Clone)]
pub struct StaleTemp {
    pub size: u64,
}

/// How many entries a rebuild or refill indexed from their `meta.json`.
#[derive(Debug, Clone, Copy, Default)]
struct Adopted(usize);

/// Moves the unreadable index of the cache `root` aside and builds a new one
/// from the entries on disk, under the index lock. `seen` is the file that
/// was found unreadable (device, inode): when `index.db` is another file by
/// the time the lock is held, another process already rebuilt it and this
/// returns `None`. Otherwise returns how many entries the new index holds.
pub(super) fn rebuild_index(
    root: &Path,
    seen: Option<(u64, u64)>,
    damage: &anyhow::Error,
) -> Result<Option<usize>> {
    let db = root.join("index.db");
    let lock_path = index::lock_path(&db);
    let lock = open_lock_file(&lock_path)?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    if seen.is_none() || file_id(&db) != seen {
        return Ok(None);
    }
    let broken = broken_name(&db);
    fs::rename(&db, &broken).with_context(|| format!("moving {} aside", db.display()))?;
    // SQLite pairs `<file>-wal` with `<file>`: the log goes with its file.
    // The shared-memory file only indexes the log; SQLite makes a new one.
    let _ = fs::rename(suffixed(&db, "-wal"), suffixed(&broken, "-wal"));
    let _ = fs::remove_file(suffixed(&db, "-shm"));
    let mut fresh = Index::open_locked(&db).context("creating a new index")?;
    let Adopted(entries) = adopt_all(root, &mut fresh)?;
    drop(lock);
    let why = index::sqlite_failure(damage).map_or_else(|| format!("{damage:#}"), |(_, m)| m);
    crate::events::tell(&format!(
        "kache: {} could not be read ({why}); kept it as {} and rebuilt the index from {entries} entries in the store\n",
        db.display(),
        broken.file_name().unwrap_or_default().to_string_lossy(),
    ));
    Ok(Some(entries))
}

/// After `index.db` was created anew: if entries are on disk and the index
/// is still empty, indexes them (under the index lock, so once). A cache
/// whose index was deleted keeps its entries.
pub(super) fn refill(root: &Path, index: &mut Index) {
    let db = root.join("index.db");
    let Ok(lock) = open_lock_file(&index::lock_path(&db)) else {
        return;
    };
    if lock.lock().is_err() || !matches!(index.entry_count(), Ok(0)) {
        return;
    }
    if let Ok(Adopted(n)) = adopt_all(root, index)
        && n > 0
    {
        crate::events::tell(&format!(
            "kache: {} was missing; rebuilt it from {n} entries in the store\n",
            db.display()
        ));
    }
}

/// Indexes every entry directory of `root` that the index does not know and
/// whose `meta.json` describes a whole entry.
fn adopt_all(root: &Path, index: &mut Index) -> Result<Adopted> {
    let store = root.join("store");
    let mut adopted = 0;
    for item in fs::read_dir(&store).with_context(|| format!("reading {}", store.display()))? {
        let Ok(item) = item else { continue };
        let name = item.file_name().to_string_lossy().to_string();
        if !is_hex_key(&name) || index.meta(&name).ok().flatten().is_some() {
            continue;
        }
        if let Some(meta) = whole_entry(root, &item.path()) {
            index.insert(&meta, now())?;
            adopted += 1;
        }
    }
    Ok(Adopted(adopted))
}

/// Indexes the entry directory `dir` of `store` if it holds a whole entry.
pub(super) fn adopt(store: &mut Store, dir: &Path) -> Result<bool> {
    match whole_entry(&store.root, dir) {
        Some(meta) => {
            store.index.insert(&meta, now())?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// The entry `dir` describes, when it is whole: its `meta.json` parses, is
/// of this format, names the directory's key, that key follows from its
/// pre-key and inputs, and every blob it names is stored with its size.
/// (Every byte is verified again before any restore.)
fn whole_entry(root: &Path, dir: &Path) -> Option<EntryMeta> {
    let name = dir.file_name()?.to_str()?;
    let text = fs::read(dir.join("meta.json")).ok()?;
    let meta: EntryMeta = serde_json::from_slice(&text).ok()?;
    let whole = meta.version == META_VERSION
        && meta.cache_key == name
        && kache_core::key::full_key(&meta.pre_key, &meta.inputs, &meta.env_deps) == meta.cache_key
        && meta.files.iter().all(|file| {
            is_hex_key(&file.hash)
                && fs::metadata(blob_path_in(root, &file.hash))
                    .is_ok_and(|m| m.is_file() && m.len() == file.size)
        });
    whole.then_some(meta)
}

/// `index.db.broken-20261201T111500Z` (a `-<pid>` added if that exists).
fn broken_name(db: &Path) -> PathBuf {
    let time = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace(['-', ':'], "");
    let name = db.file_name().unwrap_or_default().to_string_lossy();
    let path = db.with_file_name(format!("{name}.broken-{time}"));
    if path.exists() {
        db.with_file_name(format!("{name}.broken-{time}-{}", std::process::id()))
    } else {
        path
    }
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut text = path.as_os_str().to_owned();
    text.push(suffix);
    PathBuf::from(text)
}

/// Whether the temp file `name` (modified at `modified`) is stale: its
/// writer (the pid in its name) no longer runs, or it is older than
/// [`STALE_AFTER`]. A temp file without a writer's pid only ages out.
fn is_stale(name: &str, modified: Option<SystemTime>) -> bool {
    let old = modified
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age >= STALE_AFTER);
    old || temp_writer(name).is_some_and(|pid| !process_runs(pid))
}

fn process_runs(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let sent = unsafe { libc::kill(pid, 0) };
    sent == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

impl Store {
    /// Removes every stale temp file of the store (see `is_stale`): in the
    /// blob shards, in entry directories (`meta.json` being written), the
    /// downloads and packs under `store/incoming`, and a rewrite of the
    /// event log. Returns what it removed.
    pub fn sweep_stale_temps(&self) -> Result<Vec<StaleTemp>> {
        self.stale_temps(true)
    }

    /// The stale temp files [`Store::sweep_stale_temps`] would remove;
    /// with `remove`, removes them and returns those it could.
    pub fn stale_temps(&self, remove: bool) -> Result<Vec<StaleTemp>> {
        let store = self.root.join("store");
        let mut removed = Vec::new();
        let mut sweep = |path: PathBuf, name: &str, meta: &fs::Metadata| {
            if is_stale(name, meta.modified().ok()) {
                let gone = if !remove {
                    Ok(())
                } else if meta.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                if gone.is_ok() {
                    tracing::debug!(path = %path.display(), "stale temp file");
                    removed.push(StaleTemp { size: meta.len() });
                }
            }
        };
        let blobs = store.join("blobs");
        for dir in [&store, &blobs] {
            let Ok(items) = fs::read_dir(dir) else {
                continue;
            };
            for item in items.flatten() {
                let name = item.file_name().to_string_lossy().to_string();
                let Ok(meta) = item.metadata() else { continue };
                if !meta.is_dir() || !(is_hex_key(&name) || (dir == &blobs && name.len() == 2)) {
                    continue;
                }
                for inner in fs::read_dir(item.path()).into_iter().flatten().flatten() {
                    let inner_name = inner.file_name().to_string_lossy().to_string();
                    let temp = inner_name.starts_with(TEMP_PREFIX)
                        || (dir == &blobs && !is_hex_key(&inner_name));
                    if temp && let Ok(meta) = inner.metadata() {
                        sweep(inner.path(), &inner_name, &meta);
                    }
                }
            }
        }
        for item in fs::read_dir(store.join("incoming"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = item.file_name().to_string_lossy().to_string();
            if let Ok(meta) = item.metadata() {
                sweep(item.path(), &name, &meta);
            }
        }
        let log_temp = self.root.join("events.jsonl.tmp");
        if let Ok(meta) = fs::metadata(&log_temp) {
            sweep(log_temp, "events.jsonl.tmp", &meta);
        }
        Ok(removed)
    }
}

/// Sweeps stale temp files when the last sweep (the mtime of `store/.swept`)
/// is more than [`SWEEP_EVERY`] ago: what a killed writer left is found by
/// the next process that stores, without a scan on every compile.
pub(super) fn sweep_now_and_then(store: &Store) {
    let stamp = store.root.join("store").join(".swept");
    let due = fs::metadata(&stamp)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_none_or(|age| age >= SWEEP_EVERY);
    if due && fs::write(&stamp, b"").is_ok() {
        let _ = store.sweep_stale_temps();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temp_file_is_stale_when_its_writer_is_gone_or_it_is_old() {
        let me = std::process::id();
        let now = Some(SystemTime::now());
        assert!(!is_stale(&format!(".tmp-{me}-0-abc"), now));
        let old = SystemTime::now().checked_sub(STALE_AFTER * 2);
        assert!(is_stale(&format!(".tmp-{me}-0-abc"), old));
        // pid_max on Linux is at most 2^22: this pid never runs.
        assert!(is_stale(".tmp-4194305-0-abc", now));
        assert!(!is_stale("pack-Xa3b9", now));
        assert!(is_stale("pack-Xa3b9", old));
    }
}
