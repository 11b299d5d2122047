//! Moving entries between the local store and the remote (`kache sync`
//! now, the daemon later): push packs an entry from its blobs and uploads
//! pack then manifest; pull downloads a manifest and its pack, unpacks it
//! inside the store as hostile input, and imports only what checks out.
//!
//! The store is synchronous (SQLite); every step that touches it runs on a
//! blocking thread with its own `Store`, so transfers overlap freely.
//!
//! Trust (see [`crate::trust`]): a push signs its manifest with the run's
//! signing key, binding the key, crate, pack key and the pack's blake3 and
//! size; with trusted keys set, a pull refuses (as [`Pulled::Refused`], a
//! miss, never an error) a manifest no trusted key signed and a pack other
//! than the one signed, before anything is unpacked. A read-only run
//! writes nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use kache_core::manifest::{EntryManifest, MANIFEST_VERSION, Signature};
use kache_core::meta::EntryMeta;
use kache_remote::sign::{Refusal, SigningKey, TrustedKeys};
use kache_remote::{Layout, RemoteError, Storage, pack};

use crate::config::RemoteConfig;
use crate::store::Store;
use crate::trust::{Limits, MAX_ENTRY_MANIFEST_BYTES, Trust};

/// An open remote.
#[derive(Clone)]
pub struct Remote {
    storage: Arc<dyn Storage>,
    layout: Layout,
    level: i32,
    cache_dir: PathBuf,
    pub concurrency: usize,
    trust: Trust,
    trusted: TrustedKeys,
    /// The signing key, or why it could not be loaded (pushes then fail
    /// with that line; pulls are unaffected).
    signing: std::result::Result<Option<Arc<SigningKey>>, String>,
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Uploaded: the pack's compressed size and the files' total size.
    Uploaded {
        pack_bytes: u64,
        original_bytes: u64,
    },
    /// The bucket already had it.
    Present,
}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pulled {
    /// Imported: the pack's compressed size and the files' total size.
    Imported {
        pack_bytes: u64,
        original_bytes: u64,
    },
    /// The local store already had it.
    Present,
    /// The bucket does not have it.
    Missing,
    /// Trusted keys are set and the entry is not signed by one of them, or
    /// its pack is not the one signed: treated as absent.
    Refused(Refusal),
}

impl Remote {
    /// Opens the remote of `config` for the store in `cache_dir`.
    pub fn open(config: &RemoteConfig, level: i32, cache_dir: &Path) -> Result<Self> {
        let storage = kache_remote::open(&config.backend)?;
        let signing = match config.trust.signing_key() {
            Ok(key) => Ok(key.map(Arc::new)),
            Err(err) => Err(format!("{err:#}")),
        };
        Ok(Self {
            storage: Arc::from(storage),
            layout: Layout::new(&config.prefix),
            level,
            cache_dir: cache_dir.to_path_buf(),
            concurrency: config.concurrency,
            trusted: config.trust.trusted(),
            trust: config.trust.clone(),
            signing,
        })
    }

    /// Why this run writes nothing to the remote, if it does not.
    pub fn read_only(&self) -> Option<&str> {
        self.trust.read_only.as_deref()
    }

    pub fn limits(&self) -> &Limits {
        &self.trust.limits
    }

    /// Signs `message` with the run's key; `None` without one. Fails when a
    /// key is configured but cannot be read: uploading unsigned instead
    /// would make every reader that trusts the key refuse the entry.
    pub fn sign(&self, message: &[u8]) -> Result<Option<Signature>> {
        match &self.signing {
            Ok(key) => Ok(key.as_ref().map(|key| key.sign(message))),
            Err(why) => bail!("{why}"),
        }
    }

    /// Fails in a read-only run: nothing may be written.
    fn check_writable(&self) -> Result<()> {
        match self.read_only() {
            Some(why) => bail!("the remote is read-only for this run: {why}"),
            None => Ok(()),
        }
    }

    /// Where the remote is, for messages.
    pub fn location(&self) -> &str {
        self.storage.location()
    }

    /// Every `(crate_name, cache_key)` the bucket lists, for the crates
    /// `wanted` accepts. Objects with malformed names are ignored.
    pub async fn list_entries(
        &self,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Vec<(String, String)>, RemoteError> {
        let mut out = Vec::new();
        let crates = self
            .storage
            .list_dirs(&self.layout.manifests_root())
            .await?;
        for crate_name in crates.iter().filter(|c| wanted(c)) {
            for object in self
                .storage
                .list(&self.layout.crate_manifests(crate_name))
                .await?
            {
                if let Some(entry) = self.layout.parse_entry_manifest(&object) {
                    out.push(entry);
                }
            }
        }
        Ok(out)
    }

    /// Uploads the entry `cache_key` unless the bucket has it: the pack
    /// first, the manifest (the commit marker) last.
    pub async fn push(&self, cache_key: &str) -> Result<Pushed> {
        self.check_writable()?;
        // A key that cannot be read fails before anything is packed.
        if let Err(why) = &self.signing {
            bail!("{why}");
        }
        let cache_dir = self.cache_dir.clone();
        let key = cache_key.to_string();
        let meta = tokio::task::spawn_blocking(move || -> Result<EntryMeta> {
            let store = Store::open(&cache_dir)?;
            store
                .index
                .meta(&key)?
                .with_context(|| format!("no local entry {key}"))
        })
        .await??;
        let manifest_key = self
            .layout
            .entry_manifest(&meta.crate_name, &meta.cache_key);
        if self.storage.exists(&manifest_key).await? {
            return Ok(Pushed::Present);
        }
        let cache_dir = self.cache_dir.clone();
        let level = self.level;
        let packed_meta = meta.clone();
        let (file, original_bytes, pack_hash) = tokio::task::spawn_blocking(
            move || -> Result<(tempfile::NamedTempFile, u64, String)> {
                let store = Store::open(&cache_dir)?;
                let file = store.incoming_file()?;
                let mut writer = Hashing::new(std::io::BufWriter::new(file.as_file()));
                let total = pack::write(
                    &packed_meta,
                    |hash| store.open_blob(hash),
                    level,
                    &mut writer,
                )
                .context("packing the entry")?;
                let hash = writer.finish()?;
                Ok((file, total, hash))
            },
        )
        .await??;
        let pack_bytes = file.as_file().metadata()?.len();
        let pack_key = self.layout.pack(&meta.crate_name, &meta.cache_key);
        self.storage.put_file(&pack_key, file.path()).await?;
        crate::fault::point("after-pack-upload");
        let mut manifest = EntryManifest {
            version: MANIFEST_VERSION,
            cache_key: meta.cache_key.clone(),
            crate_name: meta.crate_name.clone(),
            pack_key,
            pack_bytes,
            original_bytes,
            file_count: meta.files.len() as u64,
            pack_blake3: Some(pack_hash),
            signature: None,
        };
        manifest.signature = self.sign(&manifest.signed_message())?;
        self.storage
            .put(&manifest_key, serde_json::to_vec(&manifest)?.into())
            .await?;
        let marker = self
            .layout
            .prekey_marker(&meta.crate_name, &meta.pre_key, &meta.cache_key);
        self.storage.put(&marker, bytes::Bytes::new()).await?;
        Ok(Pushed::Uploaded {
            pack_bytes,
            original_bytes,
        })
    }

    /// Writes a small document (a build manifest, a shard) as is.
    pub async fn put_document(&self, object: &str, body: Vec<u8>) -> Result<()> {
        self.check_writable()?;
        Ok(self.storage.put(object, body.into()).await?)
    }

    /// The cache keys the bucket holds for one compile's pre-key.
    pub async fn keys_for_prekey(
        &self,
        crate_name: &str,
        pre_key: &str,
    ) -> Result<Vec<String>, RemoteError> {
        let dir = self.layout.prekey_dir(crate_name, pre_key);
        Ok(self
            .storage
            .list(&dir)
            .await?
            .into_iter()
            .filter_map(|object| {
                let key = object.rsplit('/').next()?.to_string();
                kache_remote::layout::is_valid_key(&key).then_some(key)
            })
            .collect())
    }

    /// Downloads and imports the entry, unless the local store has it.
    /// `origin` (`remote`, `prefetch`) is recorded *before* the entry
    /// becomes visible, so its first hit is labelled whatever the timing.
    pub async fn pull(
        &self,
        crate_name: &str,
        cache_key: &str,
        origin: Option<&'static str>,
    ) -> Result<Pulled> {
        if !kache_remote::layout::is_valid_key(cache_key) {
            bail!("{cache_key:?} is not a cache key");
        }
        let cache_dir = self.cache_dir.clone();
        let key = cache_key.to_string();
        let present = tokio::task::spawn_blocking(move || -> Result<bool> {
            Ok(Store::open(&cache_dir)?.index.meta(&key)?.is_some())
        })
        .await??;
        if present {
            return Ok(Pulled::Present);
        }
        // An entry found impossible once is not downloaded again.
        if impossible_marker(&self.cache_dir, cache_key).exists() {
            return Ok(Pulled::Missing);
        }
        let manifest_key = self.layout.entry_manifest(crate_name, cache_key);
        let Some(bytes) = self
            .storage
            .get_bounded(&manifest_key, MAX_ENTRY_MANIFEST_BYTES)
            .await?
        else {
            return Ok(Pulled::Missing);
        };
        let manifest: EntryManifest = serde_json::from_slice(&bytes)
            .with_context(|| format!("{manifest_key} is not an entry manifest"))?;
        let pack_key = self.layout.pack(crate_name, cache_key);
        if manifest.cache_key != cache_key
            || manifest.crate_name != crate_name
            || manifest.pack_key != pack_key
        {
            bail!("{manifest_key} names another entry or pack");
        }
        // Checked before a byte of the pack is read.
        if !self.trusted.is_empty() {
            if manifest.pack_blake3.is_none() {
                note_refusal(&self.cache_dir, crate_name, cache_key, &Refusal::Unsigned);
                return Ok(Pulled::Refused(Refusal::Unsigned));
            }
            if let Err(refusal) = self
                .trusted
                .verify(&manifest.signed_message(), manifest.signature.as_ref())
            {
                note_refusal(&self.cache_dir, crate_name, cache_key, &refusal);
                return Ok(Pulled::Refused(refusal));
            }
        }
        let limit = self.trust.limits.max_entry_bytes;
        if manifest.pack_bytes > limit || manifest.original_bytes > limit {
            bail!(
                "{manifest_key}: the entry is larger than KACHE_REMOTE_MAX_ENTRY_BYTES ({limit} bytes)"
            );
        }
        let store = Store::open(&self.cache_dir)?;
        let dir = store.incoming_dir()?;
        drop(store);
        let pack_path = dir.path().join("pack.tar.zst");
        // With a pack hash in the manifest, exactly that many bytes.
        let download_limit = match manifest.pack_blake3 {
            Some(_) => manifest.pack_bytes,
            None => limit,
        };
        let downloaded = self
            .storage
            .get_to_file(&pack_key, &pack_path, download_limit)
            .await;
        let pack_bytes = match downloaded {
            // Larger than the manifest says: not the pack it describes.
            Err(RemoteError::TooLarge { .. })
                if manifest.pack_blake3.is_some() && !self.trusted.is_empty() =>
            {
                let refusal = Refusal::PackMismatch;
                note_refusal(&self.cache_dir, crate_name, cache_key, &refusal);
                return Ok(Pulled::Refused(refusal));
            }
            other => other?
                .ok_or_else(|| anyhow!("{pack_key} is missing although its manifest exists"))?,
        };
        if let Some(expected) = &manifest.pack_blake3 {
            let path = pack_path.clone();
            let actual = tokio::task::spawn_blocking(move || hash_file(&path)).await??;
            if &actual != expected || pack_bytes != manifest.pack_bytes {
                if !self.trusted.is_empty() {
                    let refusal = Refusal::PackMismatch;
                    note_refusal(&self.cache_dir, crate_name, cache_key, &refusal);
                    return Ok(Pulled::Refused(refusal));
                }
                bail!("{pack_key} is not the pack its manifest describes");
            }
        }
        let cache_dir = self.cache_dir.clone();
        let (crate_name, cache_key) = (crate_name.to_string(), cache_key.to_string());
        let original_bytes = tokio::task::spawn_blocking(move || -> Result<Option<u64>> {
            let files = dir.path().join("files");
            std::fs::create_dir(&files)?;
            let pack = std::fs::File::open(&pack_path)?;
            let meta = pack::unpack(
                std::io::BufReader::new(pack),
                &files,
                (&crate_name, &cache_key),
                limit,
            )
            .with_context(|| format!("refusing {pack_key}"))?;
            if let Some(input) = meta
                .inputs
                .iter()
                .find(|i| !kache_core::normalize::is_confined(&i.path))
            {
                let marker = impossible_marker(&cache_dir, &meta.cache_key);
                if let Some(dir) = marker.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                let _ = std::fs::write(&marker, input.path.as_bytes());
                bail!(
                    "refusing {pack_key}: its input {:?} lies outside the roots kache reads (not imported, not fetched again)",
                    input.path
                );
            }
            let mut store = Store::open(&cache_dir)?;
            // Another process (a `kache sync`, a second daemon's pull) may
            // have imported it meanwhile: its origin is not ours to set.
            if store.index.meta(&meta.cache_key)?.is_some() {
                return Ok(None);
            }
            if let Some(origin) = origin {
                store.index.set_origin(&meta.cache_key, origin)?;
            }
            store.import_entry(&meta, &files)?;
            Ok(Some(meta.size()))
        })
        .await??;
        Ok(match original_bytes {
            Some(original_bytes) => Pulled::Imported {
                pack_bytes,
                original_bytes,
            },
            None => Pulled::Present,
        })
    }
}

/// Records a refused entry: an event `kache stats` counts, and a warning
/// the first time this process meets that reason and key (a bucket full
/// of unsigned entries is one line, not thousands).
pub fn note_refusal(cache_dir: &Path, crate_name: &str, cache_key: &str, refusal: &Refusal) {
    use std::sync::Mutex;
    static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let what = format!("{}|{}", refusal.reason(), refusal.key().unwrap_or(""));
    let first = SEEN.lock().is_ok_and(|mut seen| {
        let new = !seen.contains(&what);
        if new {
            seen.push(what);
        }
        new
    });
    if first {
        tracing::warn!(
            crate_name,
            cache_key,
            "refusing remote entries: {refusal} (trusted keys are set; further refusals for this reason are counted in kache stats, not logged)"
        );
    }
    crate::events::append(
        cache_dir,
        &crate::events::Event {
            ts_ms: crate::events::now_ms(),
            crate_name: crate_name.to_string(),
            cache_key: Some(cache_key.to_string()),
            outcome: crate::events::Outcome::Refused,
            source: None,
            elapsed_ms: 0,
            bytes: 0,
            compile_ms: 0,
            verified: false,
            reason: Some(refusal.reason().to_string()),
            target_dir: None,
        },
    );
}

/// The denial behind an error, if any: a wrong secret or missing
/// permission is reported once, not per object.
pub fn denial(err: &anyhow::Error) -> Option<&RemoteError> {
    err.chain()
        .filter_map(|e| e.downcast_ref::<RemoteError>())
        .find(|e| matches!(e, RemoteError::Denied { .. } | RemoteError::Config(_)))
}

/// `{cache_dir}/refused/{cache_key}`: marks a remote entry whose recorded
/// inputs no honest compile could have (a device, a path outside every
/// root), so it is never downloaded again.
fn impossible_marker(cache_dir: &Path, cache_key: &str) -> PathBuf {
    cache_dir.join("refused").join(cache_key)
}

/// A writer that hashes what passes through it (the pack, as uploaded).
struct Hashing<W: std::io::Write> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: std::io::Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: blake3::Hasher::new(),
        }
    }

    /// Flushes and returns the blake3 hex of everything written.
    fn finish(mut self) -> std::io::Result<String> {
        self.inner.flush()?;
        Ok(self.hasher.finalize().to_hex().to_string())
    }
}

impl<W: std::io::Write> std::io::Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// blake3 hex of a file's bytes.
fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(path)?)?;
    Ok(hasher.finalize().to_hex().to_string())
}
