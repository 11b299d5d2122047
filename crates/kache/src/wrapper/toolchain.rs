//! Toolchain identity: the `rustc -vV` banner, remembered per rustc binary
//! (path, size, mtime) so a hit never spawns a process to learn it.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::store::{Stat, Store};

/// The output of `<binary> <probe>` (`rustc -vV`, `clippy-driver --version`),
/// from the index when the binary is unchanged.
pub fn identity(store: &Store, rustc: &Path, probe: &str) -> Result<String> {
    let resolved = resolve(rustc);
    let meta =
        std::fs::metadata(&resolved).with_context(|| format!("reading {}", resolved.display()))?;
    let stat = Stat::of(&meta);
    let key = resolved.to_string_lossy();
    if let Some(banner) = store.index.toolchain(&key, &stat)? {
        return Ok(banner);
    }
    let output = Command::new(rustc)
        .arg(probe)
        .output()
        .with_context(|| format!("running {} {probe}", rustc.display()))?;
    if !output.status.success() {
        bail!("{} {probe} failed with {}", rustc.display(), output.status);
    }
    let banner = String::from_utf8(output.stdout).context("the version probe printed non-UTF-8")?;
    store.index.remember_toolchain(&key, &stat, &banner)?;
    Ok(banner)
}

/// A bare `rustc` is looked up on `PATH`, as the OS would.
fn resolve(rustc: &Path) -> std::path::PathBuf {
    if rustc.components().count() > 1 {
        return rustc.to_path_buf();
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(rustc))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| rustc.to_path_buf())
}
