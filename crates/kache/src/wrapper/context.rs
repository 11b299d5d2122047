//! The machine-local facts of one rustc call: the roots its paths are
//! normalised against, the `--remap-path-prefix` flags that make outputs
//! portable, and the environment that goes into the key.

use std::path::{Path, PathBuf};

use kache_core::normalize::{self, PathNormalizer};

use crate::config::home_dir;

/// Roots and their remapped names inside compiled outputs.
pub struct Roots {
    pub normalizer: PathNormalizer,
    pub cwd: PathBuf,
    /// `(real prefix, remapped name)`, shortest prefix first, so the most
    /// specific one is the last rustc sees (the last matching flag wins).
    remaps: Vec<(String, String)>,
}

impl Roots {
    /// Finds the roots for a call running in `cwd` writing to `out_dir`.
    pub fn discover(cwd: &Path, out_dir: &Path) -> Self {
        let mut normalizer = PathNormalizer::default();
        let mut remaps = Vec::new();
        let mut add = |path: &Path, sentinel: &'static str, remap: Option<&str>| {
            let text = path.to_string_lossy();
            if !path.is_absolute() || text.len() <= 1 {
                return;
            }
            normalizer.add(&text, sentinel);
            if let Some(remap) = remap {
                remaps.push((text.trim_end_matches('/').to_string(), remap.to_string()));
            }
        };
        let home = home_dir();
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".cargo")));
        let rustup_home = std::env::var_os("RUSTUP_HOME")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".rustup")));
        if let Some(home) = &home {
            add(home, normalize::HOME, Some("/kache/home"));
        }
        if let Some(path) = &cargo_home {
            add(path, normalize::CARGO_HOME, Some("/kache/cargo"));
        }
        if let Some(path) = &rustup_home {
            add(path, normalize::RUSTUP_HOME, Some("/kache/rustup"));
        }
        // Registry and git packages run with their cwd inside CARGO_HOME; the
        // cargo-home root already names them better than a workspace would.
        let cwd_in_cargo_home = cargo_home.as_ref().is_some_and(|h| cwd.starts_with(h));
        if !cwd_in_cargo_home {
            add(cwd, normalize::WORKSPACE, Some("."));
        }
        let out_dir = if out_dir.is_absolute() {
            out_dir.to_path_buf()
        } else {
            cwd.join(out_dir)
        };
        if let Some(target) = target_dir(&out_dir) {
            add(&target, normalize::TARGET, Some("/kache/target"));
        }
        remaps.sort_by_key(|(prefix, _)| prefix.len());
        Self {
            normalizer,
            cwd: cwd.to_path_buf(),
            remaps,
        }
    }

    /// `--remap-path-prefix` flags (and a scope that keeps diagnostics real).
    pub fn remap_args(&self, user_scope: bool) -> Vec<String> {
        let mut args: Vec<String> = self
            .remaps
            .iter()
            .map(|(from, to)| format!("--remap-path-prefix={from}={to}"))
            .collect();
        if !user_scope && !args.is_empty() {
            args.push("--remap-path-scope=macro,debuginfo".to_string());
        }
        args
    }

    /// `(real prefix, remapped name)` pairs, shortest prefix first: the
    /// order in which both rustc and the C compilers let the most specific
    /// (last) match win.
    pub fn remaps(&self) -> &[(String, String)] {
        &self.remaps
    }

    /// Resolves a path as rustc would: relative paths are relative to the cwd.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.cwd.join(path)
        }
    }
}

/// The target directory: the nearest ancestor of `out_dir` holding cargo's
/// `CACHEDIR.TAG`.
fn target_dir(out_dir: &Path) -> Option<PathBuf> {
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
}

/// Environment variables cargo sets that can change rustc's output through
/// macros or that name the package. `env!` reads are keyed separately, by
/// exact value, from dep-info.
pub fn keyed_env() -> Vec<(String, String)> {
    const NAMES: &[&str] = &[
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_MANIFEST_LINKS",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
        // Read by rustc itself: they change metadata hashes or the target.
        "RUSTC_BOOTSTRAP",
        "RUSTC_FORCE_RUSTC_VERSION",
        "MACOSX_DEPLOYMENT_TARGET",
        "IPHONEOS_DEPLOYMENT_TARGET",
        "TVOS_DEPLOYMENT_TARGET",
        "WATCHOS_DEPLOYMENT_TARGET",
        "SDKROOT",
    ];
    let mut vars: Vec<(String, String)> = std::env::vars()
        .filter(|(name, _)| name.starts_with("CARGO_PKG_") || NAMES.contains(&name.as_str()))
        .collect();
    vars.sort();
    vars
}

/// What selects clippy's configuration: `CLIPPY_ARGS`, `CLIPPY_CONF_DIR`,
/// and every `clippy.toml` / `.clippy.toml` from the configuration directory
/// (else the package directory) up to the root, by content. clippy's own
/// dep-info names the file it read, but not the ones that did not exist yet;
/// keying them here makes a newly added `clippy.toml` a miss.
pub fn clippy_config(roots: &Roots) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for name in ["CLIPPY_ARGS", "CLIPPY_CONF_DIR"] {
        if let Ok(value) = std::env::var(name) {
            out.push((name.to_string(), roots.normalizer.normalize(&value)));
        }
    }
    let start = std::env::var_os("CLIPPY_CONF_DIR")
        .or_else(|| std::env::var_os("CARGO_MANIFEST_DIR"))
        .map_or_else(|| roots.cwd.clone(), PathBuf::from);
    for dir in start.ancestors() {
        for file in ["clippy.toml", ".clippy.toml"] {
            let path = dir.join(file);
            if let Ok(bytes) = std::fs::read(&path) {
                let name = roots.normalizer.normalize(&path.to_string_lossy());
                out.push((name, blake3::hash(&bytes).to_hex().to_string()));
            }
        }
    }
    out
}

/// Whether an `env!` value may be normalised for the key. Only `OUT_DIR`: it is
/// read to locate generated files, whose contents are keyed anyway. Any other
/// value (say `CARGO_MANIFEST_DIR`) may be baked into the output as a string,
/// so it is keyed exactly and differs across checkouts.
pub fn env_dep_is_path_root(name: &str) -> bool {
    name == "OUT_DIR"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_remap_comes_last_and_the_target_dir_is_found() {
        let root = tempfile::tempdir().unwrap();
        let ws = root.path().join("ws");
        let out = ws.join("target/debug/deps");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(
            ws.join("target/CACHEDIR.TAG"),
            "Signature: 8a477f597d28d172789f06886806bc55",
        )
        .unwrap();
        let roots = Roots::discover(&ws, &out);
        let args = roots.remap_args(false);
        let ws_flag = format!("--remap-path-prefix={}=.", ws.display());
        let target_flag = format!(
            "--remap-path-prefix={}=/kache/target",
            ws.join("target").display()
        );
        let at = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .unwrap_or_else(|| panic!("{flag} in {args:?}"))
        };
        assert!(
            at(&ws_flag) < at(&target_flag),
            "rustc applies the last matching prefix"
        );
        assert_eq!(args.last().unwrap(), "--remap-path-scope=macro,debuginfo");
        assert!(
            !roots
                .remap_args(true)
                .iter()
                .any(|a| a.starts_with("--remap-path-scope"))
        );
        let text = format!(
            "{}/debug/deps/libx.rlib {}/src/lib.rs",
            ws.join("target").display(),
            ws.display()
        );
        assert_eq!(
            roots.normalizer.normalize(&text),
            "{kache:target}/debug/deps/libx.rlib {kache:ws}/src/lib.rs"
        );
        assert_eq!(roots.resolve("src/lib.rs"), ws.join("src/lib.rs"));
    }

    #[test]
    fn only_out_dir_is_normalised_among_env_values() {
        assert!(env_dep_is_path_root("OUT_DIR"));
        assert!(!env_dep_is_path_root("CARGO_MANIFEST_DIR"));
        assert!(!env_dep_is_path_root("HOME"));
    }
}
