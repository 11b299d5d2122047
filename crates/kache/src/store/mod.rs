//! The local store: `index.db`, `store/blobs/<xx>/<blake3>` and
//! `store/<cache_key>/meta.json` under the cache directory.
//!
//! Architecture invariant: nothing outside this module reads or writes blob
//! files. Blobs are immutable: copied blobs are read-only, and blobs shared
//! with `target/` by hardlink are only ever replaced there by rename, and a
//! blob is verified before every restore. Every write is a temp file in the
//! destination directory and a rename, so a killed process leaves at most an
//! orphan temp file, never a half-written blob, entry or `meta.json`.
//!
//! The store heals what it can (`heal.rs`): an unreadable index is moved
//! aside and rebuilt from the `meta.json` files, stale temp files are swept,
//! an entry whose `meta.json` is gone is dropped. When the cache cannot work
//! at all, `health.rs` says why, once per build.

mod blobs;
mod hash_cache;
mod heal;
mod health;
mod index;
mod restore;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use kache_core::meta::EntryMeta;

pub use blobs::BlobCheck;
pub use hash_cache::HashCache;
pub use health::{after_error, last_disabled, probe_writable, unusable};
pub use index::{EntryRow, Index, Stat, is_corruption};

/// An open local store.
pub struct Store {
    root: PathBuf,
    pub index: Index,
    /// The `index.db` file the index was opened from (device, inode): a
    /// rebuild replaces only that file, never one another process already
    /// rebuilt.
    index_file: Option<(u64, u64)>,
}

/// The device and inode of `path`, if it exists.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Opens the index at `db` and says which file the connection holds: the
/// same file before and after the open, or `None` when another process
/// kept replacing it meanwhile (a heal then assumes it is not this
/// process's to move aside, and only reopens). Reading the name after the
/// open alone is not enough: a rebuild that renamed the damaged file and
/// created the new one in between would make this process believe it held
/// the new one, and move that healthy index aside too.
fn open_identified(db: &Path, create: bool) -> Result<(Index, Option<(u64, u64)>)> {
    let mut index = None;
    for _ in 0..3 {
        let before = file_id(db);
        let opened = Index::open(db, create)?;
        let after = file_id(db);
        if before.is_none() || before == after {
            return Ok((opened, after));
        }
        index = Some(opened);
    }
    Ok((index.expect("opened at least once"), None))
}

/// The cache directory a daemon serves, as it was when it started.
static PINNED: OnceLock<(PathBuf, Option<(u64, u64)>)> = OnceLock::new();

/// Opens (creating) the store in `cache_dir`, then pins it for this process
/// (the daemon): from now on a store there is only opened while that very
/// directory exists with its index, and nothing of it is created again. A
/// daemon whose cache directory was deleted must not bring it back (a
/// fresh `index.db` and `store/`): it sees it gone and exits.
pub fn pin_cache_dir(cache_dir: &Path) {
    // A store that cannot be opened now fails each request later, as before.
    let _ = Store::open(cache_dir);
    let _ = PINNED.set((cache_dir.to_path_buf(), file_id(cache_dir)));
}

/// Whether the pinned `cache_dir` (see [`pin_cache_dir`]) is gone: deleted,
/// replaced by another directory, or without its index. Unpinned, whether
/// its index is missing.
pub fn cache_dir_gone(cache_dir: &Path) -> bool {
    if let Some((pinned, id)) = PINNED.get()
        && pinned == cache_dir
        && file_id(cache_dir) != *id
    {
        return true;
    }
    !cache_dir.join("index.db").is_file()
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Store {
    /// Opens the store in `cache_dir`, creating its directories and index.
    ///
    /// An index SQLite cannot read (garbage, truncation) is moved aside and
    /// rebuilt from the entries on disk; a missing one is recreated and
    /// refilled from them the same way (see `heal.rs`). Either prints one
    /// line. In a process that pinned `cache_dir` (the daemon) nothing is
    /// created: a cache directory that is gone stays gone.
    pub fn open(cache_dir: &Path) -> Result<Self> {
        let pinned = PINNED.get().is_some_and(|(dir, _)| dir == cache_dir);
        if pinned && cache_dir_gone(cache_dir) {
            anyhow::bail!("the cache directory {} is gone", cache_dir.display());
        }
        // 0700 and ours, or refused (`owner::Foreign`): another user's
        // cache directory could feed this build their artifacts.
        crate::owner::private_dir(cache_dir)?;
        let blobs = cache_dir.join("store").join("blobs");
        std::fs::create_dir_all(&blobs)
            .with_context(|| format!("creating the store in {}", cache_dir.display()))?;
        let db = cache_dir.join("index.db");
        let seen = file_id(&db);
        let (mut index, index_file) = match open_identified(&db, !pinned) {
            Ok(opened) => opened,
            Err(err) if is_corruption(&err) => heal::rebuild_index(cache_dir, seen, &err)
                .and_then(|_| open_identified(&db, true))
                .map_err(|e| e.context(health::IndexLost))?,
            Err(err) => return Err(err),
        };
        if seen.is_none() && !pinned {
            heal::refill(cache_dir, &mut index);
        }
        Ok(Self {
            root: cache_dir.to_path_buf(),
            index,
            index_file,
        })
    }

    /// After an index operation failed: when SQLite says the file is
    /// damaged, moves it aside and rebuilds it (once, whoever finds it
    /// first) and reopens the index. Returns whether it rebuilt.
    pub fn heal_index(&mut self, err: &anyhow::Error) -> Result<bool> {
        if !is_corruption(err) {
            return Ok(false);
        }
        Ok(self.rebuild_index(err)?.is_some())
    }

    /// Moves the index this store opened aside as `index.db.broken-<time>`
    /// and rebuilds it from the entries on disk (`damage` says why, in the
    /// line printed), then reopens it. `None` when another process already
    /// replaced that file. For a damage SQLite reported (see
    /// [`Store::heal_index`]) or `doctor` found.
    pub fn rebuild_index(&mut self, damage: &anyhow::Error) -> Result<Option<usize>> {
        let db = self.root.join("index.db");
        let rebuilt = heal::rebuild_index(&self.root, self.index_file, damage)?;
        (self.index, self.index_file) = open_identified(&db, true)?;
        Ok(rebuilt)
    }

    /// Files `index.db.broken-*` that rebuilds kept, with their sizes.
    pub fn broken_indexes(&self) -> Vec<(PathBuf, u64)> {
        let mut out: Vec<(PathBuf, u64)> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|item| {
                item.file_name()
                    .to_string_lossy()
                    .starts_with("index.db.broken-")
            })
            .map(|item| (item.path(), item.metadata().map_or(0, |m| m.len())))
            .collect();
        out.sort();
        out
    }

    /// The cache directory this store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn store_dir(&self) -> PathBuf {
        self.root.join("store")
    }

    /// Writes `store/<key>/meta.json` atomically, then indexes the entry.
    /// The blobs it names must already be stored. A failed write (a full
    /// disk) leaves no temp file and no empty entry directory behind. A
    /// stored entry also means the cache works: a "cache disabled" notice
    /// of an earlier build is withdrawn, and now and then stale temp files
    /// are swept (see [`Store::sweep_stale_temps`]).
    pub fn commit_entry(&mut self, meta: &EntryMeta) -> Result<()> {
        if !is_hex_key(&meta.cache_key) {
            anyhow::bail!("{:?} is not a cache key", meta.cache_key);
        }
        let dir = self.store_dir().join(&meta.cache_key);
        std::fs::create_dir_all(&dir)?;
        let json = serde_json::to_vec_pretty(meta)?;
        if let Err(err) = blobs::write_atomic(&dir.join("meta.json"), &json, 0o600) {
            // Only removes the directory if nothing else is in it.
            let _ = std::fs::remove_dir(&dir);
            return Err(err);
        }
        self.index.insert(meta, now())?;
        health::clear_disabled(&self.root);
        heal::sweep_now_and_then(self);
        Ok(())
    }

    /// Opens a stored blob for reading (to pack an entry for upload).
    pub fn open_blob(&self, hash: &str) -> std::io::Result<std::fs::File> {
        std::fs::File::open(self.blob_path(hash))
    }

    /// A new empty directory inside the store to unpack a download into,
    /// removed when dropped. Inside the store so an import renames, never
    /// copies, and a crash leaves it where `gc` finds it.
    pub fn incoming_dir(&self) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix("pack-")
            .tempdir_in(self.incoming()?)
            .context("creating a directory for a download")
    }

    /// A new temporary file inside the store (a pack being built for
    /// upload), removed when dropped.
    pub fn incoming_file(&self) -> Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix("pack-")
            .tempfile_in(self.incoming()?)
            .context("creating a file for a pack")
    }

    fn incoming(&self) -> Result<PathBuf> {
        let dir = self.store_dir().join("incoming");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// Imports an entry whose files, named as in `meta.files` and already
    /// verified against their hashes, are in `dir`. Blobs first, then the
    /// entry: a crash in between leaves unused blobs, never a half entry.
    pub fn import_entry(&mut self, meta: &EntryMeta, dir: &Path) -> Result<()> {
        for file in &meta.files {
            let path = dir.join(&file.name);
            let stored = self.put_file(&path, file.linkable())?;
            if stored.hash != file.hash {
                anyhow::bail!("{} changed while it was imported", file.name);
            }
        }
        self.commit_entry(meta)
    }

    /// Removes entries from the index and their `meta.json` directories.
    /// Blobs are left to [`Store::remove_unused_blobs`].
    pub fn remove_entries(&mut self, keys: &[String]) -> Result<usize> {
        let removed = self.index.remove(keys)?;
        for key in keys {
            if is_hex_key(key) {
                let _ = std::fs::remove_dir_all(self.store_dir().join(key));
            }
        }
        Ok(removed)
    }

    /// Deletes every blob no entry references, and every stale temp file
    /// in the store (see [`Store::sweep_stale_temps`]; a temp file another
    /// process is still writing is left alone). Returns `(files, bytes)`
    /// removed.
    pub fn remove_unused_blobs(&self) -> Result<(u64, u64)> {
        let mut removed = (0, 0);
        for blob in self.list_blobs()? {
            // Temp files are the sweep's: only a stale one goes.
            if blob.temp || self.index.blob_in_use(&blob.hash)? {
                continue;
            }
            if std::fs::remove_file(&blob.path).is_ok() {
                removed.0 += 1;
                removed.1 += blob.size;
            }
        }
        for temp in self.sweep_stale_temps()? {
            removed.0 += 1;
            removed.1 += temp.size;
        }
        Ok(removed)
    }

    /// Index rows whose `store/<key>/meta.json` is gone: the entry is no
    /// longer in the store, and a repair or gc drops the row.
    pub fn entries_without_meta(&self) -> Result<Vec<EntryRow>> {
        Ok(self
            .index
            .rows()?
            .into_iter()
            .filter(|row| !self.index.meta_file_exists(&row.cache_key))
            .collect())
    }

    /// `store/<key>` directories with no index row (left by a killed store
    /// or a failed index write).
    pub fn orphan_entry_dirs(&self) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for item in std::fs::read_dir(self.store_dir())? {
            let item = item?;
            let name = item.file_name().to_string_lossy().to_string();
            if is_hex_key(&name) && self.index.meta(&name)?.is_none() {
                out.push(item.path());
            }
        }
        Ok(out)
    }

    /// Indexes the orphan entry directory `dir` again when its `meta.json`
    /// describes a whole entry (its key follows from its inputs, every blob
    /// is there with its size); else removes the directory. A `meta.json`
    /// is written only after every blob it names, so a complete orphan is
    /// an entry whose index write was lost (a kill, a full disk).
    pub fn adopt_or_remove(&mut self, dir: &Path) -> Result<bool> {
        if heal::adopt(self, dir)? {
            return Ok(true);
        }
        let _ = std::fs::remove_dir_all(dir);
        Ok(false)
    }
}

/// Opens (creating) a lock file, without truncating it: index creation, the
/// per-key compile locks and the daemon's single-instance lock all `flock` one.
pub fn open_lock_file(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .mode(0o600)
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// A cache key is 64 lowercase hex digits; anything else is never a path part.
pub fn is_hex_key(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
