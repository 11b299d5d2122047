//! `kache save-manifest`: tell the planner what this workspace's build
//! produced.
//!
//! Writes `{prefix}/_manifests/{manifest_key}.json` (default key: the host
//! target triple) listing one entry per unit this workspace built — every
//! key the event log shows was compiled or restored into its target
//! directory — and only keys the bucket holds (missing ones are pushed
//! first). With a namespace (`--namespace` or `KACHE_NAMESPACE`) it also
//! writes the `Cargo.lock` shards of `DESIGN.md`: packages spread over 64
//! buckets, a shard named by the blake3 of its sorted `name@version`s,
//! holding the entries of its packages; empty shards are not written.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use kache_core::manifest::{
    BuildManifest, MANIFEST_VERSION, ManifestEntry, Shard, ShardEntry, shard_bucket, shard_hash,
};
use kache_remote::Layout;

use super::workspace::Workspace;
use crate::config::Config;
use crate::remote::{Pushed, Remote};

#[derive(clap::Args)]
pub struct Args {
    /// Also write Cargo.lock shards for this namespace (default: KACHE_NAMESPACE).
    #[arg(long, env = "KACHE_NAMESPACE")]
    namespace: Option<String>,
    /// The manifest's name (default: the host target triple).
    #[arg(long)]
    manifest_key: Option<String>,
    /// Print what would be written; write and push nothing.
    #[arg(long)]
    dry_run: bool,
    /// The workspace's Cargo.toml.
    #[arg(long, value_name = "PATH")]
    manifest_path: Option<PathBuf>,
}

pub fn run(config: &Config, args: Args) -> Result<ExitCode> {
    let remote_config = super::remote_of(config)?;
    let workspace = Workspace::load(args.manifest_path.as_deref())?;
    let manifest_key = match args.manifest_key {
        Some(key) => key,
        None => host_triple()?,
    };
    if manifest_key.is_empty() || manifest_key.contains("..") || manifest_key.starts_with('/') {
        bail!("--manifest-key {manifest_key:?} is not a usable object name");
    }
    let store = super::open_store(config)?;
    let mut metas = Vec::new();
    for key in workspace.built_keys(&config.cache_dir) {
        if let Some(meta) = store.index.meta(&key)? {
            metas.push(meta);
        }
    }
    metas.sort_by(|a, b| {
        a.crate_name
            .cmp(&b.crate_name)
            .then(a.cache_key.cmp(&b.cache_key))
    });
    let remote = Remote::open(remote_config, config.compression_level, &config.cache_dir)?;
    let layout = Layout::new(&remote_config.prefix);
    let runtime = super::transfer_runtime()?;

    let mut pushed = 0;
    if !args.dry_run {
        // Only keys the bucket holds: push what is missing first.
        let results: Vec<(String, Result<Pushed>)> = runtime.block_on(
            futures::stream::iter(metas.iter().map(|meta| {
                let remote = remote.clone();
                let key = meta.cache_key.clone();
                async move { (key.clone(), remote.push(&key).await) }
            }))
            .buffer_unordered(remote.concurrency)
            .collect(),
        );
        for (key, result) in results {
            match result {
                Ok(Pushed::Uploaded { .. }) => pushed += 1,
                Ok(Pushed::Present) => {}
                Err(err) => {
                    if let Some(denied) = crate::remote::denial(&err) {
                        bail!("{denied}");
                    }
                    bail!("pushing {key} before writing the manifest: {err:#}");
                }
            }
        }
    }
    let entries: Vec<ManifestEntry> = metas
        .iter()
        .map(|meta| ManifestEntry {
            cache_key: meta.cache_key.clone(),
            crate_name: meta.crate_name.clone(),
            compile_time_ms: meta.compile_time_ms,
            artifact_size: meta.size(),
        })
        .collect();
    let manifest = BuildManifest {
        version: MANIFEST_VERSION,
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        manifest_key: manifest_key.clone(),
        entries,
    };
    let mut documents = vec![(
        layout.build_manifest(&manifest_key),
        serde_json::to_vec(&manifest)?,
    )];
    let mut shard_count = 0;
    if let Some(namespace) = args.namespace.as_deref().filter(|n| !n.is_empty()) {
        if namespace.contains('/') || namespace.contains("..") {
            bail!("namespace {namespace:?} may not contain / or ..");
        }
        for (name, shard) in shards(&workspace, &manifest) {
            documents.push((layout.shard(namespace, &name), serde_json::to_vec(&shard)?));
            shard_count += 1;
        }
    }
    for (object, _) in &documents {
        let verb = if args.dry_run {
            "would write"
        } else {
            "writing"
        };
        println!("{verb} {object}");
    }
    if !args.dry_run {
        runtime.block_on(async {
            for (object, body) in documents {
                remote
                    .put_document(&object, body)
                    .await
                    .with_context(|| format!("writing {object}"))?;
            }
            anyhow::Ok(())
        })?;
    }
    println!(
        "{} {} entries and {shard_count} shards to {} ({pushed} entries pushed first)",
        if args.dry_run { "would write" } else { "wrote" },
        manifest.entries.len(),
        remote.location()
    );
    Ok(ExitCode::SUCCESS)
}

/// The non-empty shards of `manifest` for this workspace's `Cargo.lock`:
/// `(shard hash, document)`.
pub fn shards(workspace: &Workspace, manifest: &BuildManifest) -> Vec<(String, Shard)> {
    let mut buckets: BTreeMap<u64, Vec<(String, String)>> = BTreeMap::new();
    for (name, version) in &workspace.lock {
        buckets
            .entry(shard_bucket(name))
            .or_default()
            .push((name.clone(), version.clone()));
    }
    let mut out = Vec::new();
    for packages in buckets.values() {
        let names: Vec<&str> = packages.iter().map(|(n, _)| n.as_str()).collect();
        let entries: Vec<ShardEntry> = manifest
            .entries
            .iter()
            .filter(|e| {
                workspace
                    .package_of(&e.crate_name)
                    .is_some_and(|p| names.contains(&p))
            })
            .map(|e| ShardEntry {
                cache_key: e.cache_key.clone(),
                crate_name: e.crate_name.clone(),
            })
            .collect();
        if !entries.is_empty() {
            out.push((
                shard_hash(packages),
                Shard {
                    version: MANIFEST_VERSION,
                    entries,
                },
            ));
        }
    }
    out
}

/// `rustc -vV`'s host triple.
fn host_triple() -> Result<String> {
    let output =
        std::process::Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
            .arg("-vV")
            .output()
            .context("running rustc -vV for the host triple")?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(String::from))
        .context("rustc -vV printed no host line")
}
