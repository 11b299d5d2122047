//! `Cargo.lock`: the packages a workspace builds, as `(name, version)`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

use anyhow::{Context, Result};

fn read(path: &Path) -> Result<toml::Table> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Every `[[package]]` of the lock file at `path`, in file order.
pub fn packages(path: &Path) -> Result<Vec<(String, String)>> {
    Ok(packages_in(&read(path)?))
}

fn packages_in(lock: &toml::Table) -> Vec<(String, String)> {
    lock.get("package")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p.get("name")?.as_str()?.to_string(),
                p.get("version")?.as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Crate → the crates it uses directly.
pub type Graph = BTreeMap<String, Vec<String>>;

/// What a lock file says, read once: its packages and its resolved graph.
pub struct Resolved {
    /// `(name, version)` of every package, in file order.
    pub packages: Vec<(String, String)>,
    /// Library crate names (a package's name with `-` as `_`), a crate
    /// after everything it uses.
    pub order: Vec<String>,
    /// Each crate's direct dependencies (crates without any are absent).
    pub deps: Graph,
}

/// The lock file at `path`, packages and graph. Read from the file alone —
/// no `cargo metadata` process — so a build's plan can be asked for at once.
pub fn resolved(path: &Path) -> Result<Resolved> {
    let lock = read(path)?;
    let crate_of = |name: &str| name.replace('-', "_");
    let mut deps: Graph = BTreeMap::new();
    let mut file_order = Vec::new();
    for package in lock
        .get("package")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        let Some(name) = package.get("name").and_then(|n| n.as_str()) else {
            continue;
        };
        let name = crate_of(name);
        // Entries are `name`, `name version` or `name version (source)`.
        let used = package
            .get("dependencies")
            .and_then(|d| d.as_array())
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str()?.split_whitespace().next())
            .map(crate_of);
        let list = deps.entry(name.clone()).or_default();
        for dep in used {
            if dep != name && !list.contains(&dep) {
                list.push(dep);
            }
        }
        if !file_order.contains(&name) {
            file_order.push(name);
        }
    }
    // Kahn's algorithm: a crate after everything it uses.
    let mut remaining: BTreeMap<&str, usize> =
        deps.iter().map(|(n, d)| (n.as_str(), d.len())).collect();
    let mut users: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, list) in &deps {
        for dep in list {
            users.entry(dep.as_str()).or_default().push(name.as_str());
        }
    }
    let mut ready: VecDeque<&str> = file_order
        .iter()
        .map(String::as_str)
        .filter(|n| remaining.get(n) == Some(&0))
        .collect();
    let mut order: Vec<String> = Vec::with_capacity(file_order.len());
    while let Some(name) = ready.pop_front() {
        order.push(name.to_string());
        for user in users.get(name).into_iter().flatten() {
            if let Some(n) = remaining.get_mut(user) {
                *n -= 1;
                if *n == 0 {
                    ready.push_back(user);
                }
            }
        }
    }
    // A cycle cannot be in a valid lock file; if one is, keep file order.
    for name in &file_order {
        if !order.contains(name) {
            order.push(name.clone());
        }
    }
    deps.retain(|_, list| !list.is_empty());
    Ok(Resolved {
        packages: packages_in(&lock),
        order,
        deps,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_graph_orders_dependencies_first() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("Cargo.lock");
        std::fs::write(
            &lock,
            r#"version = 4

[[package]]
name = "app"
version = "0.1.0"
dependencies = ["serde-json", "itoa 1.0.15 (registry+https://github.com/rust-lang/crates.io-index)"]

[[package]]
name = "itoa"
version = "1.0.15"

[[package]]
name = "serde-json"
version = "1.0.1"
dependencies = ["itoa 1.0.15"]
"#,
        )
        .unwrap();
        let Resolved {
            packages,
            order,
            deps: graph,
        } = resolved(&lock).unwrap();
        assert_eq!(packages.len(), 3);
        assert_eq!(order, ["itoa", "serde_json", "app"]);
        assert_eq!(graph["app"], ["serde_json", "itoa"]);
        assert_eq!(graph["serde_json"], ["itoa"]);
        assert!(!graph.contains_key("itoa"));
    }
}
