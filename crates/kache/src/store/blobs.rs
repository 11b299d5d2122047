//! Content-addressed blob files: `store/blobs/<first two hex>/<blake3 hex>`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

use super::{Store, is_hex_key};

/// The result of storing one file's bytes.
#[derive(Debug, Clone)]
pub struct Stored {
    pub hash: String,
    pub size: u64,
    /// The blob was already present: these bytes cost no new disk.
    pub existed: bool,
}

/// A blob file found on disk.
#[derive(Debug, Clone)]
pub struct BlobOnDisk {
    pub hash: String,
    pub path: PathBuf,
    pub size: u64,
    /// A leftover temp file from an interrupted write.
    pub temp: bool,
}

/// What `doctor` found for one referenced blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobCheck {
    Ok,
    Missing,
    WrongSize { actual: u64 },
    WrongHash { actual: String },
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How every temp file the store writes is named: `.tmp-<pid>-<n>-<name>`,
/// so a sweep can tell whether its writer still runs.
pub(super) const TEMP_PREFIX: &str = ".tmp-";

/// The pid of the process writing the temp file `name`, if `name` is one.
pub(super) fn temp_writer(name: &str) -> Option<u32> {
    name.strip_prefix(TEMP_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// A unique temp path beside `dest`.
fn temp_beside(dest: &Path) -> PathBuf {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    dest.with_file_name(format!("{TEMP_PREFIX}{}-{n}-{name}", std::process::id()))
}

/// Writes `bytes` to `dest` through a temp file and a rename.
pub(super) fn write_atomic(dest: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let temp = temp_beside(dest);
    let result = (|| -> io::Result<()> {
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        fs::rename(&temp, dest)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.with_context(|| format!("writing {}", dest.display()))
}

/// blake3 hex of a file's contents.
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut hasher = blake3::Hasher::new();
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    if size > 1 << 20 {
        hasher.update_reader(file)?;
    } else {
        hasher.update(&fs::read(path)?);
    }
    Ok((hasher.finalize().to_hex().to_string(), size))
}

/// The path of the blob named `hash` in the cache directory `root`.
pub(super) fn blob_path_in(root: &Path, hash: &str) -> PathBuf {
    root.join("store")
        .join("blobs")
        .join(hash.get(..2).unwrap_or("__"))
        .join(hash)
}

impl Store {
    /// The path of the blob named `hash`.
    pub(super) fn blob_path(&self, hash: &str) -> PathBuf {
        blob_path_in(&self.root, hash)
    }

    /// Where a new blob `hash` goes (its shard directory created), or `None`
    /// when the blob is already stored: content addressing makes it the same.
    fn new_blob_path(&self, hash: &str) -> Result<Option<PathBuf>> {
        let dest = self.blob_path(hash);
        if dest.exists() {
            return Ok(None);
        }
        fs::create_dir_all(dest.parent().expect("blob has a parent"))?;
        Ok(Some(dest))
    }

    /// Stores the file at `source`. With `link`, the blob becomes a hardlink to
    /// `source`: one inode serves both, no copy. Use it only for files nothing
    /// rewrites in place. Such a blob keeps its owner-write bit, because rustc
    /// refuses to replace an output it sees as read-only; every writer of
    /// `.rlib`/`.rmeta` replaces by rename, so the inode is never written
    /// through. Copied blobs are read-only. Falls back to a copy when linking
    /// is impossible (another filesystem).
    pub fn put_file(&self, source: &Path, link: bool) -> Result<Stored> {
        let (hash, size) =
            hash_file(source).with_context(|| format!("hashing {}", source.display()))?;
        let Some(dest) = self.new_blob_path(&hash)? else {
            return Ok(Stored {
                hash,
                size,
                existed: true,
            });
        };
        let temp = temp_beside(&dest);
        let written = (|| -> Result<()> {
            let linked = link && fs::hard_link(source, &temp).is_ok();
            if !linked {
                fs::copy(source, &temp).with_context(|| format!("copying {}", source.display()))?;
                // The compile's own read and execute bits, never more: a
                // private output stays private in the store.
                let mode = fs::metadata(&temp)?.mode() & 0o555;
                fs::set_permissions(&temp, fs::Permissions::from_mode(mode))?;
            }
            fs::rename(&temp, &dest).with_context(|| format!("storing blob {hash}"))
        })();
        if written.is_err() {
            // A copy cut short (a full disk) is never left behind.
            let _ = fs::remove_file(&temp);
        }
        written?;
        Ok(Stored {
            hash,
            size,
            existed: false,
        })
    }

    /// Stores `bytes` as a blob.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Stored> {
        let hash = blake3::hash(bytes).to_hex().to_string();
        let size = bytes.len() as u64;
        let Some(dest) = self.new_blob_path(&hash)? else {
            return Ok(Stored {
                hash,
                size,
                existed: true,
            });
        };
        write_atomic(&dest, bytes, 0o400)?;
        Ok(Stored {
            hash,
            size,
            existed: false,
        })
    }

    /// Reads a whole blob (small ones: dep-info).
    pub fn read_blob(&self, hash: &str) -> Result<Vec<u8>> {
        fs::read(self.blob_path(hash)).with_context(|| format!("reading blob {hash}"))
    }

    /// Whether the blob may be shared by hardlink: it was stored by linking and
    /// so carries the owner-write bit rustc checks for. A read-only blob linked
    /// into `target/` would make the next rustc run refuse to overwrite it.
    pub(super) fn blob_linkable(&self, hash: &str, executable: bool) -> bool {
        let wanted = if executable { 0o300 } else { 0o200 };
        fs::metadata(self.blob_path(hash)).is_ok_and(|m| m.mode() & wanted == wanted)
    }

    /// Proves, before a restore, that blob `hash` holds exactly its bytes.
    ///
    /// Every byte is re-read and hashed, on every restore: a stat shortcut
    /// cannot see bit rot, nor a write through a hardlink in `target/` whose
    /// tool put the mtime back, and a wrong blob restored is a wrong hit. A
    /// blob that fails is deleted and the caller misses instead.
    pub fn verify_blob(&self, hash: &str, size: u64) -> Result<()> {
        let path = self.blob_path(hash);
        let on_disk = fs::metadata(&path)
            .with_context(|| format!("blob {hash} is missing"))?
            .len();
        if on_disk != size {
            anyhow::bail!("blob {hash} has {on_disk} bytes, expected {size}");
        }
        let (actual, _) = hash_file(&path).with_context(|| format!("reading blob {hash}"))?;
        if actual != hash {
            let _ = fs::remove_file(&path);
            anyhow::bail!("blob {hash} is corrupt (its bytes hash to {actual}); removed it");
        }
        Ok(())
    }

    /// Checks a referenced blob; with `checksum`, re-hashes its contents.
    pub fn check_blob(&self, hash: &str, size: u64, checksum: bool) -> BlobCheck {
        let path = self.blob_path(hash);
        let Ok(meta) = fs::metadata(&path) else {
            return BlobCheck::Missing;
        };
        if meta.len() != size {
            return BlobCheck::WrongSize { actual: meta.len() };
        }
        if checksum {
            match hash_file(&path) {
                Ok((actual, _)) if actual != hash => return BlobCheck::WrongHash { actual },
                Err(_) => return BlobCheck::Missing,
                Ok(_) => {}
            }
        }
        BlobCheck::Ok
    }

    /// Deletes one blob file (a corrupt one, during repair).
    pub fn delete_blob(&self, hash: &str) -> Result<()> {
        match fs::remove_file(self.blob_path(hash)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Every file under `store/blobs`.
    pub fn list_blobs(&self) -> Result<Vec<BlobOnDisk>> {
        let mut out = Vec::new();
        let dir = self.root.join("store").join("blobs");
        for shard in fs::read_dir(&dir)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for item in fs::read_dir(shard.path())? {
                let item = item?;
                let name = item.file_name().to_string_lossy().to_string();
                let size = item.metadata().map_or(0, |m| m.len());
                out.push(BlobOnDisk {
                    temp: !is_hex_key(&name),
                    hash: name,
                    path: item.path(),
                    size,
                });
            }
        }
        Ok(out)
    }

    /// Total bytes of blob files on disk.
    pub fn disk_usage(&self) -> Result<u64> {
        Ok(self.list_blobs()?.iter().map(|b| b.size).sum())
    }
}
