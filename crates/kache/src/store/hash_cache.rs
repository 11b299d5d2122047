//! Content hashes with a stat shortcut, backed by the index's `file_stats`.
//!
//! A file whose path, size, mtime, inode change time (ctime) and inode match
//! a remembered row is not read again. The ctime is what makes the shortcut
//! safe: tools can put an mtime back (`cp -p`, `rsync --inplace -t`,
//! git-restore-mtime, `touch -r`), but every write or `utime` moves the
//! ctime, and nothing can set it. Only files whose mtime and ctime are at
//! least two seconds old are remembered: a write within the same tick as the
//! hashing could otherwise go unnoticed (the "racy timestamp" problem). New
//! rows are batched and written in one transaction by [`HashCache::flush`].
//!
//! The wrapper hashes sources and externs through it. Blobs are *not*
//! verified through it: a restore re-reads every blob it hands out
//! (`Store::verify_blob`), since bit rot moves no timestamp at all.

use std::path::Path;

use anyhow::{Context, Result};

use super::blobs::hash_file;
use super::{Stat, Store};

const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// Hashes files, batching new stat rows for one write at the end.
#[derive(Default)]
pub struct HashCache {
    pending: Vec<(String, Stat, String)>,
}

/// A hashed file with its stat.
pub struct Hashed {
    pub hash: String,
    pub mtime_ns: i64,
}

impl HashCache {
    /// The blake3 hex of the regular file at `path` (absolute).
    pub fn hash(&mut self, store: &Store, path: &Path) -> Result<Hashed> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
        // A device or FIFO has no content to key (and reading one may never
        // end): callers treat the error as a miss.
        if !meta.is_file() {
            anyhow::bail!("{} is not a regular file", path.display());
        }
        let stat = Stat::of(&meta);
        let key = path.to_string_lossy();
        if let Some(hash) = store.index.cached_hash(&key, &stat)? {
            return Ok(Hashed {
                hash,
                mtime_ns: stat.mtime_ns,
            });
        }
        let (hash, size) =
            hash_file(path).with_context(|| format!("reading {}", path.display()))?;
        let now = crate::events::now_ms() as i64 * 1_000_000;
        if stat.mtime_ns.max(stat.ctime_ns) < now - RACY_WINDOW_NS && size == stat.size {
            self.pending
                .push((key.to_string(), stat.clone(), hash.clone()));
        }
        Ok(Hashed {
            hash,
            mtime_ns: stat.mtime_ns,
        })
    }

    /// Remembers the hash of a file kache itself just stored or restored,
    /// skipping the racy-timestamp wait: rustc and cargo replace these files
    /// by rename, so a rewrite always brings a new inode and the stat
    /// shortcut cannot match stale content. Downstream crates then key this
    /// file as an extern without reading it again.
    pub fn remember(&mut self, path: &Path, hash: &str) {
        if let Ok(meta) = std::fs::metadata(path) {
            let stat = Stat::of(&meta);
            self.pending
                .push((path.to_string_lossy().to_string(), stat, hash.to_string()));
        }
    }

    /// Hands over the rows not yet written, for a caller that writes them in
    /// its own transaction.
    pub fn take_pending(&mut self) -> Vec<(String, Stat, String)> {
        std::mem::take(&mut self.pending)
    }

    /// Writes the remembered hashes to the index.
    pub fn flush(&mut self, store: &mut Store) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        store.index.remember_hashes(&pending)
    }
}
