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
    /// The target directory, when found.
    pub target_dir: Option<PathBuf>,
    /// Set when the target directory could not be found: the output
    /// directory that stays in the key as is, and why.
    pub unnormalised: Option<String>,
    /// `(real prefix, remapped name)`, shortest prefix first, so the most
    /// specific one is the last rustc sees (the last matching flag wins).
    remaps: Vec<(String, String)>,
}

impl Roots {
    /// Finds the roots for a call running in `cwd` writing to `out_dir`,
    /// compiling for `triple` (rustc's `--target`, a build script's
    /// `TARGET`; `None` for the host layout).
    pub fn discover(cwd: &Path, out_dir: &Path, triple: Option<&str>) -> Self {
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
        let (target_dir, unnormalised) = match target_dir(&out_dir, triple) {
            Ok(target) => {
                add(&target, normalize::TARGET, Some("/kache/target"));
                (Some(target), None)
            }
            Err(why) => {
                tracing::info!("target directory not normalised: {why}");
                (None, Some(why))
            }
        };
        remaps.sort_by_key(|(prefix, _)| prefix.len());
        Self {
            normalizer,
            cwd: cwd.to_path_buf(),
            target_dir,
            unnormalised,
            remaps,
        }
    }

    /// `--remap-path-prefix` flags, most specific last. No
    /// `--remap-path-scope` is added: every scope is remapped (as on every
    /// toolchain before 1.95), because a narrower one leaves the real source
    /// paths in the crate metadata (for downstream diagnostics), which would
    /// make every `.rmeta` machine-local. Diagnostics get their real paths
    /// back from [`Roots::display_paths`] as rustc prints them.
    pub fn remap_args(&self) -> Vec<String> {
        self.remaps
            .iter()
            .map(|(from, to)| format!("--remap-path-prefix={from}={to}"))
            .collect()
    }

    /// `(remapped name, real prefix)` pairs that turn rustc's diagnostics
    /// back into this checkout's paths, longest name first. The workspace,
    /// remapped to `.`, is left out: `./x` cannot be told from a relative
    /// path, and cargo passes workspace sources as relative paths anyway.
    /// A real prefix that JSON would escape (a `"` or `\`) is left out too.
    pub fn display_paths(&self) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = self
            .remaps
            .iter()
            .filter(|(from, to)| to.starts_with('/') && !from.contains(['"', '\\']))
            .map(|(from, to)| (to.clone(), from.clone()))
            .collect();
        pairs.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        pairs
    }

    /// Keeps the target directory's real path in what rustc writes (it
    /// stays normalised in the key), by remapping it to itself so neither
    /// `/kache/target` nor the workspace's `.` applies. For `-C
    /// split-debuginfo=unpacked`: objects name their `.dwo` files by path,
    /// and a debugger must find them. The output then holds the target
    /// directory, so its entry is keyed by it (`linked::baked_roots`).
    pub fn keep_target_dir_in_outputs(&mut self) {
        if let Some(target) = &self.target_dir {
            let real = target.to_string_lossy().trim_end_matches('/').to_string();
            for (from, to) in &mut self.remaps {
                if *from == real {
                    to.clone_from(from);
                }
            }
        }
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

/// The target directory of a compile writing to `out_dir`: the nearest
/// ancestor holding cargo's `CACHEDIR.TAG`, else the root of cargo's layout
/// around `out_dir` (see [`layout_target_dir`]). `Err` says why neither
/// applies.
fn target_dir(out_dir: &Path, triple: Option<&str>) -> Result<PathBuf, String> {
    if let Some(dir) = out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
    {
        // `--target` builds tag `<target>/<triple>` too (and only that one
        // when `<target>` existed before cargo ran): the target directory is
        // the one above it.
        let triple = triple_dir_name(triple);
        return Ok(match dir.parent() {
            Some(parent) if triple.is_some_and(|t| dir.ends_with(t)) => parent.to_path_buf(),
            _ => dir.to_path_buf(),
        });
    }
    layout_target_dir(out_dir, triple).ok_or_else(|| {
        format!(
            "{} is neither under a directory holding cargo's CACHEDIR.TAG nor in \
             cargo's <target>/[<triple>/]<profile>/{{deps,examples,build/<unit>}} layout; \
             it is keyed as is",
            out_dir.display()
        )
    })
}

/// The target directory read from cargo's layout, for the directories
/// cargo leaves without `CACHEDIR.TAG` (`cargo install`'s temporary
/// directory, `cargo package`'s verify build): the output directory is
/// `<target>/[<triple>/]<profile>/deps` or `…/examples`, or is (or is under)
/// `…/<profile>/build/<package>-<16 hex digits>` for build scripts and
/// their `OUT_DIR`. The `<triple>` level exists exactly when the unit is
/// compiled for an explicit `--target`, whose name it bears.
pub fn layout_target_dir(out_dir: &Path, triple: Option<&str>) -> Option<PathBuf> {
    let profile = out_dir.ancestors().find_map(|dir| {
        let name = dir.file_name()?.to_str()?;
        let parent = dir.parent()?;
        if name == "deps" || name == "examples" {
            return Some(parent);
        }
        let in_build = parent.file_name().is_some_and(|n| n == "build");
        (in_build && is_unit_dir_name(name))
            .then(|| parent.parent())
            .flatten()
    })?;
    let mut target = profile.parent()?;
    if let Some(triple) = triple_dir_name(triple)
        && target.file_name().is_some_and(|n| n == triple)
    {
        target = target.parent()?;
    }
    (target.parent().is_some()).then(|| target.to_path_buf())
}

/// The directory cargo names after a `--target` (a custom target spec
/// `specs/custom.json` gives `custom`).
fn triple_dir_name(triple: Option<&str>) -> Option<&str> {
    let triple = triple?;
    let triple = triple.strip_suffix(".json").unwrap_or(triple);
    Path::new(triple).file_name()?.to_str()
}

/// `<package>-<16 hex digits>`: cargo's name for a unit's directory.
fn is_unit_dir_name(name: &str) -> bool {
    name.rsplit_once('-').is_some_and(|(package, hash)| {
        !package.is_empty() && hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit())
    })
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
    // CARGO_PRIMARY_PACKAGE decides whether clippy lints the crate at all
    // (`--no-deps` lints only primary packages): a `-p b` entry must not
    // serve `-p a`.
    for name in ["CLIPPY_ARGS", "CLIPPY_CONF_DIR", "CARGO_PRIMARY_PACKAGE"] {
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
        let roots = Roots::discover(&ws, &out, None);
        let args = roots.remap_args();
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
        assert!(!args.iter().any(|a| a.starts_with("--remap-path-scope")));
        let display = roots.display_paths();
        assert!(
            display.contains(&(
                "/kache/target".to_string(),
                ws.join("target").display().to_string()
            )),
            "{display:?}"
        );
        assert!(!display.iter().any(|(to, _)| to == "."));
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
    fn the_target_dir_is_read_from_cargos_layout_without_a_tag() {
        let cases = [
            (
                "/tmp/cargo-installAb12/release/deps",
                None,
                Some("/tmp/cargo-installAb12"),
            ),
            (
                "/w/t/x86_64-unknown-linux-gnu/debug/deps",
                Some("x86_64-unknown-linux-gnu"),
                Some("/w/t"),
            ),
            (
                "/w/t/debug/deps",
                Some("x86_64-unknown-linux-gnu"),
                Some("/w/t"),
            ),
            ("/w/t/my-profile/examples", None, Some("/w/t")),
            (
                "/w/t/debug/build/zstd-sys-0123456789abcdef",
                None,
                Some("/w/t"),
            ),
            (
                "/w/t/debug/build/zstd-sys-0123456789abcdef/out/sub",
                None,
                Some("/w/t"),
            ),
            (
                "/w/t/aarch64-linux-android/release/build/ring-fedcba9876543210/out",
                Some("aarch64-linux-android"),
                Some("/w/t"),
            ),
            (
                "/w/t/custom/debug/deps",
                Some("specs/custom.json"),
                Some("/w/t"),
            ),
            ("/w/t/debug/build/not-a-unit/out", None, None),
            ("/w/somewhere/else", None, None),
            ("/deps", None, None),
        ];
        for (out_dir, triple, expected) in cases {
            assert_eq!(
                layout_target_dir(Path::new(out_dir), triple).as_deref(),
                expected.map(Path::new),
                "{out_dir} {triple:?}"
            );
        }
    }

    #[test]
    fn an_unknown_target_dir_is_said_not_guessed() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("odd/place");
        let roots = Roots::discover(root.path(), &out, None);
        let why = roots.unnormalised.expect("no target dir found");
        assert!(why.contains(&out.display().to_string()), "{why}");
        assert!(
            !roots
                .normalizer
                .roots()
                .iter()
                .any(|(_, s)| *s == normalize::TARGET)
        );
    }

    #[test]
    fn only_out_dir_is_normalised_among_env_values() {
        assert!(env_dep_is_path_root("OUT_DIR"));
        assert!(!env_dep_is_path_root("CARGO_MANIFEST_DIR"));
        assert!(!env_dep_is_path_root("HOME"));
    }
}
