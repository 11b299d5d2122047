//! Per-key locks: a second compile of the same pre-key waits for the first
//! and then restores its result instead of compiling again.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};

/// A held lock; released on drop (or when the process dies).
pub struct KeyLock {
    _file: File,
}

impl KeyLock {
    /// Blocks until the lock for `pre_key` is held.
    pub fn acquire(cache_dir: &Path, pre_key: &str) -> Result<Self> {
        let dir = cache_dir.join("locks");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.lock", &pre_key[..pre_key.len().min(32)]));
        let file = crate::store::open_lock_file(&path)?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(Self { _file: file })
    }
}
