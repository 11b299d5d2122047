//! The local store: `index.db`, `store/blobs/<xx>/<blake3>` and
//! `store/<cache_key>/meta.json` under the cache directory.
//!
//! Architecture invariant: nothing outside this module reads or writes blob
//! files. Blobs are immutable: copied blobs are read-only, and blobs shared
//! with `target/` by hardlink are only ever replaced there by rename, and a
//! blob is verified before every restore. Every write is a temp file in the
//! destination directory and a rename, so a killed process leaves at most an
//! orphan temp file, never a half-written blob, entry or `meta.json`.

mod blobs;
mod hash_cache;
mod index;
mod restore;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use kache_core::meta::EntryMeta;

pub use blobs::BlobCheck;
pub use hash_cache::HashCache;
pub use index::{EntryRow, Index, Stat};

/// An open local store.
pub struct Store {
    root: PathBuf,
    pub index: Index,
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Store {
    /// Opens the store in `cache_dir`, creating its directories and index.
    pub fn open(cache_dir: &Path) -> Result<Self> {
        let blobs = cache_dir.join("store").join("blobs");
        std::fs::create_dir_all(&blobs)
            .with_context(|| format!("creating the store in {}", cache_dir.display()))?;
        let index = Index::open(&cache_dir.join("index.db"))?;
        Ok(Self {
            root: cache_dir.to_path_buf(),
            index,
        })
    }

    /// The cache directory this store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn store_dir(&self) -> PathBuf {
        self.root.join("store")
    }

    /// Writes `store/<key>/meta.json` atomically, then indexes the entry.
    /// The blobs it names must already be stored.
    pub fn commit_entry(&mut self, meta: &EntryMeta) -> Result<()> {
        let dir = self.store_dir().join(&meta.cache_key);
        std::fs::create_dir_all(&dir)?;
        let json = serde_json::to_vec_pretty(meta)?;
        blobs::write_atomic(&dir.join("meta.json"), &json, 0o644)?;
        self.index.insert(meta, now())
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

    /// Deletes every blob no entry references (and stale temp files).
    /// Returns `(files, bytes)` removed.
    pub fn remove_unused_blobs(&self) -> Result<(u64, u64)> {
        let mut removed = (0, 0);
        for blob in self.list_blobs()? {
            let unused = blob.temp || !self.index.blob_in_use(&blob.hash)?;
            if unused && std::fs::remove_file(&blob.path).is_ok() {
                removed.0 += 1;
                removed.1 += blob.size;
            }
        }
        Ok(removed)
    }

    /// `store/<key>` directories with no index row (left by a killed store).
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
}

/// Opens (creating) a lock file, without truncating it: index creation, the
/// per-key compile locks and the daemon's single-instance lock all `flock` one.
pub fn open_lock_file(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
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
