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

    /// The `Cargo.lock` package an entry's crate belongs to: its library
    /// (`serde_json` → `serde-json`) or a C unit (`zstd-sys:zstd.c`). Build
    /// scripts (`build_script_build`) belong to no single package.
    pub fn package_of(&self, crate_name: &str) -> Option<&str> {
        if let Some((package, _)) = crate_name.split_once(':') {
            return self.packages.get(package).map(String::as_str);
        }
        self.packages
            .iter()
            .find(|p| p.replace('-', "_") == crate_name)
            .map(String::as_str)
    }

    /// Whether entries of `crate_name` belong to this `Cargo.lock`: a
    /// package's library (`serde_json` for `serde-json`), its C units
    /// (`zstd-sys:zstd.c`), and build scripts (every package's build script
    /// is `build_script_build`, so all of them are taken).
    pub fn wants(&self, crate_name: &str) -> bool {
        if crate_name == "build_script_build" {
            return true;
        }
        if let Some((package, _)) = crate_name.split_once(':') {
            return self.packages.contains(package);
        }
        self.packages
            .iter()
            .any(|p| p.replace('-', "_") == crate_name)
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
