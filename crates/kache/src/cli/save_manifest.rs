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
//!
//! Both documents carry the build's identity (an addition the original's
//! readers ignore) when it is certain: every library entry built by the
//! current toolchain for one target, and one profile's output directory in
//! the target dir (`--profile` says it outright). Otherwise it is left out
//! ("unknown"), which never hides an entry from a plan.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use kache_core::manifest::{
    BuildManifest, Identity, MANIFEST_VERSION, ManifestEntry, Shard, ShardEntry, shard_bucket,
    shard_hash,
};
use kache_core::meta::EntryMeta;
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
    /// The cargo profile built (`dev`, `release`); default: the one whose
    /// output directory the target dir holds, if only one.
    #[arg(long)]
    profile: Option<String>,
}

pub fn run(config: &Config, args: Args) -> Result<ExitCode> {
    let remote_config = super::remote_of(config)?;
    let workspace = Workspace::load(args.manifest_path.as_deref())?;
    let root = workspace
        .lockfile
        .parent()
        .unwrap_or(std::path::Path::new("."));
    let rustc_vv = super::rustc_vv(root)?;
    let manifest_key = match args.manifest_key {
        Some(key) => key,
        None => Identity::host_of(&rustc_vv)
            .context("rustc -vV printed no host line")?
            .to_string(),
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
    if let Some(why) = remote.read_only() {
        println!("kache: the remote is read-only for this run ({why}): nothing written");
        return Ok(ExitCode::SUCCESS);
    }
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
    let identity = identity_of(&metas, &rustc_vv, &workspace, args.profile.as_deref());
    match &identity {
        Some(id) => println!(
            "identity: {} {} (toolchain {})",
            id.target,
            id.profile,
            &id.toolchain[..16]
        ),
        None => println!("identity: unknown (left out)"),
    }
    let mut manifest = BuildManifest {
        version: MANIFEST_VERSION,
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        manifest_key: manifest_key.clone(),
        entries,
        identity,
        signature: None,
    };
    let object = layout.build_manifest(&manifest_key);
    manifest.signature = remote.sign(&manifest.signed_message(&object))?;
    let mut documents = vec![(object, serde_json::to_vec(&manifest)?)];
    let mut shard_count = 0;
    if let Some(namespace) = args.namespace.as_deref().filter(|n| !n.is_empty()) {
        if namespace.contains('/') || namespace.contains("..") {
            bail!("namespace {namespace:?} may not contain / or ..");
        }
        for (name, mut shard) in shards(&workspace, &manifest) {
            let object = layout.shard(namespace, &name);
            shard.signature = remote.sign(&shard.signed_message(&object))?;
            documents.push((object, serde_json::to_vec(&shard)?));
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
                    identity: manifest.identity.clone(),
                    signature: None,
                },
            ));
        }
    }
    out
}

/// The identity every library entry shares, or `None` when it is not
/// certain. Build scripts, proc-macros and C objects are host-side helpers
/// of any build and do not count; an entry of another toolchain, or two
/// targets, or no single profile, make it unknown.
fn identity_of(
    metas: &[EntryMeta],
    rustc_vv: &str,
    workspace: &Workspace,
    profile: Option<&str>,
) -> Option<Identity> {
    let toolchain = Identity::toolchain_of(rustc_vv);
    let host = Identity::host_of(rustc_vv)?;
    let mut target: Option<String> = None;
    for meta in metas {
        let helper = meta.crate_name.starts_with("build_script_")
            || meta.crate_name.contains(':')
            || meta.crate_types.iter().any(|t| t == "proc-macro");
        if helper {
            continue;
        }
        if meta.components.get("toolchain").map(String::as_str) != Some(&toolchain[..16]) {
            return None;
        }
        let this = if meta.target == "host" {
            host.to_string()
        } else {
            meta.target.clone()
        };
        match &target {
            None => target = Some(this),
            Some(seen) if *seen == this => {}
            Some(_) => return None,
        }
    }
    let target = target?;
    let profile = match profile {
        Some("dev" | "test") => "dev".to_string(),
        Some("release" | "bench") => "release".to_string(),
        Some(_) => return None,
        None => {
            // Cargo's directories: `debug` for dev and test, `release` for
            // release and bench (under `<triple>/` for a `--target` build).
            let base = if target == host {
                workspace.target_dir.clone()
            } else {
                workspace.target_dir.join(&target)
            };
            match (base.join("debug").is_dir(), base.join("release").is_dir()) {
                (true, false) => "dev".to_string(),
                (false, true) => "release".to_string(),
                _ => return None,
            }
        }
    };
    Some(Identity {
        target,
        toolchain,
        profile,
    })
}
