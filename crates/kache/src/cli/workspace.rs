//! The workspace the remote commands work for: its target directory (what
//! it built, from the event log) and its `Cargo.lock` (what it needs).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::events;

/// The workspace facts the remote commands need.
pub struct Workspace {
    pub target_dir: PathBuf,
    /// The workspace's `Cargo.lock`.
    pub lockfile: PathBuf,
    /// Package names in `Cargo.lock`.
    pub packages: BTreeSet<String>,
    /// `(name, version)` of every `Cargo.lock` package.
    pub lock: Vec<(String, String)>,
}

impl Workspace {
    /// Reads `cargo metadata --no-deps` and the workspace's `Cargo.lock`.
    pub fn load(manifest_path: Option<&Path>) -> Result<Self> {
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.args(["metadata", "--format-version", "1", "--no-deps"]);
        if let Some(path) = manifest_path {
            cmd.arg("--manifest-path").arg(path);
        }
        let output = cmd.output().context("running cargo metadata")?;
        if !output.status.success() {
            bail!(
                "cargo metadata failed (use --manifest-path, or --all outside a workspace): {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let json: serde_json::Value =
            serde_json::from_slice(&output.stdout).context("reading cargo metadata")?;
        let text = |name: &str| {
            json[name]
                .as_str()
                .map(PathBuf::from)
                .with_context(|| format!("cargo metadata has no {name}"))
        };
        let target_dir = text("target_directory")?;
        let lock = text("workspace_root")?.join("Cargo.lock");
        let lockfile = lock.clone();
        let lock: Vec<(String, String)> = crate::lockfile::packages(&lock)
            .context("run cargo generate-lockfile, or use --all")?;
        Ok(Self {
            target_dir,
            lockfile,
            packages: lock.iter().map(|(name, _)| name.clone()).collect(),
            lock,
        })
    }

    /// The `Cargo.lock` package an entry's crate belongs to (see
    /// [`crate::lockfile::package_of`]).
    pub fn package_of(&self, crate_name: &str) -> Option<&str> {
        crate::lockfile::package_of(&self.packages, crate_name)
    }

    /// Whether entries of `crate_name` belong to this `Cargo.lock` (see
    /// [`crate::lockfile::needs`]).
    pub fn wants(&self, crate_name: &str) -> bool {
        crate::lockfile::needs(&self.packages, crate_name)
    }

    /// The cache keys the event log shows were built into this workspace's
    /// target directory.
    pub fn built_keys(&self, cache_dir: &Path) -> BTreeSet<String> {
        let ours = canonical(&self.target_dir);
        let mut verdicts: BTreeMap<String, bool> = BTreeMap::new();
        let mut keys = BTreeSet::new();
        for event in events::read(cache_dir, 0) {
            let (Some(key), Some(dir)) = (event.cache_key, event.target_dir) else {
                continue;
            };
            let inside = *verdicts
                .entry(dir.clone())
                .or_insert_with(|| canonical(Path::new(&dir)).starts_with(&ours));
            if inside {
                keys.insert(key);
            }
        }
        keys
    }
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}
