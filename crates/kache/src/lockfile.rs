//! `Cargo.lock`: the packages a workspace builds, as `(name, version)`.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};

/// Every `[[package]]` of the lock file at `path`, in file order.
pub fn packages(path: &Path) -> Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let lock: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(lock
        .get("package")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p.get("name")?.as_str()?.to_string(),
                p.get("version")?.as_str()?.to_string(),
            ))
        })
        .collect())
}

/// The package an entry's crate belongs to: its library (`serde_json` →
/// `serde-json`) or a C unit (`zstd-sys:zstd.c`). Build scripts
/// (`build_script_build`) belong to no single package.
pub fn package_of<'a>(packages: &'a BTreeSet<String>, crate_name: &str) -> Option<&'a str> {
    if let Some((package, _)) = crate_name.split_once(':') {
        return packages.get(package).map(String::as_str);
    }
    packages
        .iter()
        .find(|p| p.replace('-', "_") == crate_name)
        .map(String::as_str)
}

/// Whether entries of `crate_name` are needed by a build of `packages`:
/// those of a package, and build scripts (every package's build script is
/// `build_script_build`, so all of them are taken).
pub fn needs(packages: &BTreeSet<String>, crate_name: &str) -> bool {
    crate_name == "build_script_build" || package_of(packages, crate_name).is_some()
}
