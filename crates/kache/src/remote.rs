//! Moving entries between the local store and the remote (`kache sync`
//! now, the daemon later): push packs an entry from its blobs and uploads
//! pack then manifest; pull downloads a manifest and its pack, unpacks it
//! inside the store as hostile input, and imports only what checks out.
//!
//! The store is synchronous (SQLite); every step that touches it runs on a
//! blocking thread with its own `Store`, so transfers overlap freely.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use kache_core::manifest::{EntryManifest, MANIFEST_VERSION};
use kache_core::meta::EntryMeta;
use kache_remote::{Layout, RemoteError, Storage, pack};

use crate::config::RemoteConfig;
use crate::store::Store;

/// The largest pack accepted, compressed or unpacked: far above any real
/// crate, far below what a decompression bomb would fill.
pub const MAX_PACK_BYTES: u64 = 8 << 30;

/// An open remote.
#[derive(Clone)]
pub struct Remote {
    storage: Arc<dyn Storage>,
    layout: Layout,
    level: i32,
    cache_dir: PathBuf,
    pub concurrency: usize,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

impl Remote {
    /// Opens the remote of `config` for the store in `cache_dir`.
    pub fn open(config: &RemoteConfig, level: i32, cache_dir: &Path) -> Result<Self> {
        let storage = kache_remote::open(&config.backend)?;
        Ok(Self {
            storage: Arc::from(storage),
            layout: Layout::new(&config.prefix),
            level,
            cache_dir: cache_dir.to_path_buf(),
            concurrency: config.concurrency,
        })
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
        let (file, original_bytes) =
            tokio::task::spawn_blocking(move || -> Result<(tempfile::NamedTempFile, u64)> {
                let store = Store::open(&cache_dir)?;
                let file = store.incoming_file()?;
                let mut writer = std::io::BufWriter::new(file.as_file());
                let total = pack::write(
                    &packed_meta,
                    |hash| store.open_blob(hash),
                    level,
                    &mut writer,
                )
                .context("packing the entry")?;
                drop(writer);
                Ok((file, total))
            })
            .await??;
        let pack_bytes = file.as_file().metadata()?.len();
        let pack_key = self.layout.pack(&meta.crate_name, &meta.cache_key);
        self.storage.put_file(&pack_key, file.path()).await?;
        crate::wrapper::fault_point("after-pack-upload");
        let manifest = EntryManifest {
            version: MANIFEST_VERSION,
            cache_key: meta.cache_key.clone(),
            crate_name: meta.crate_name.clone(),
            pack_key,
            pack_bytes,
            original_bytes,
            file_count: meta.files.len() as u64,
        };
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
    pub async fn put_document(&self, object: &str, body: Vec<u8>) -> Result<(), RemoteError> {
        self.storage.put(object, body.into()).await
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
        let cache_dir = self.cache_dir.clone();
        let key = cache_key.to_string();
        let present = tokio::task::spawn_blocking(move || -> Result<bool> {
            Ok(Store::open(&cache_dir)?.index.meta(&key)?.is_some())
        })
        .await??;
        if present {
            return Ok(Pulled::Present);
        }
        let manifest_key = self.layout.entry_manifest(crate_name, cache_key);
        let Some(bytes) = self.storage.get(&manifest_key).await? else {
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
        let store = Store::open(&self.cache_dir)?;
        let dir = store.incoming_dir()?;
        drop(store);
        let pack_path = dir.path().join("pack.tar.zst");
        let pack_bytes = self
            .storage
            .get_to_file(&pack_key, &pack_path, MAX_PACK_BYTES)
            .await?
            .ok_or_else(|| anyhow!("{pack_key} is missing although its manifest exists"))?;
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
                MAX_PACK_BYTES,
            )
            .with_context(|| format!("refusing {pack_key}"))?;
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

/// The denial behind an error, if any: a wrong secret or missing
/// permission is reported once, not per object.
pub fn denial(err: &anyhow::Error) -> Option<&RemoteError> {
    err.chain()
        .filter_map(|e| e.downcast_ref::<RemoteError>())
        .find(|e| matches!(e, RemoteError::Denied { .. } | RemoteError::Config(_)))
}
