//! What of the environment cargo hands a build script is keyed.

use std::path::{Path, PathBuf};

/// What cargo passes a build script that can change what it produces, by
/// name, sorted: every `CARGO_*` variable (features, `CARGO_CFG_*`,
/// `CARGO_ENCODED_RUSTFLAGS`, the package's metadata and paths) but the
/// jobserver's `CARGO_MAKEFLAGS` and cargo's terminal, network, registry
/// and parallelism settings, and `TARGET`, `HOST`, `PROFILE`,
/// `OPT_LEVEL`, `DEBUG`, `OUT_DIR`, `RUSTC`, `RUSTDOC`, `RUSTC_LINKER`,
/// `RUSTC_WORKSPACE_WRAPPER`, `RUSTC_BOOTSTRAP`. Not keyed: `NUM_JOBS`
/// (parallelism, not content) and `RUSTC_WRAPPER` (kache itself). Paths
/// are normalised by the caller.
pub(super) fn keyed_env() -> Vec<(String, String)> {
    keyed_env_of(std::env::vars())
}

/// [`keyed_env`] of the variables `vars`.
pub(super) fn keyed_env_of(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    const NAMES: &[&str] = &[
        "TARGET",
        "HOST",
        "PROFILE",
        "OPT_LEVEL",
        "DEBUG",
        "OUT_DIR",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_LINKER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_BOOTSTRAP",
    ];
    // cargo's own settings that cannot change what a script produces: the
    // jobserver, parallelism, the terminal, the network and registries
    // (whose tokens have no business in a key).
    const NOT_KEYED: &[&str] = &[
        "CARGO_MAKEFLAGS",
        "CARGO_BUILD_JOBS",
        "CARGO_TERM_",
        "CARGO_HTTP_",
        "CARGO_NET_",
        "CARGO_REGISTRY_",
        "CARGO_REGISTRIES_",
    ];
    let mut vars: Vec<(String, String)> = vars
        .filter(|(name, _)| {
            (name.starts_with("CARGO_") && !NOT_KEYED.iter().any(|p| name.starts_with(p)))
                || NAMES.contains(&name.as_str())
        })
        .collect();
    vars.sort();
    vars
}

/// The compiler variable the `cc` crate would read first for `name`
/// (`CC_<target>`, `CC_<target_with_underscores>`, `TARGET_CC`, `CC`).
pub(super) fn compiler_var(name: &str, target: &str) -> Option<String> {
    [
        format!("{name}_{target}"),
        format!("{name}_{}", target.replace('-', "_")),
        format!("TARGET_{name}"),
        name.to_string(),
    ]
    .iter()
    .find_map(|var| std::env::var(var).ok().filter(|v| !v.trim().is_empty()))
}

/// The variables the `[env]` tables of cargo's configuration set, by name:
/// cargo hands them to every build script, and a script may read one
/// without declaring it (cargo then reruns nothing, but `cargo clean`
/// does, and a replay must not be staler than that). Read from
/// `.cargo/config.toml` (and `.cargo/config`) in each of `starts` and every
/// folder above them (the package, and `OUT_DIR`, which lies in the
/// workspace's target directory when the package is a registry one), and
/// from `$CARGO_HOME`. A file that cannot be read or parsed adds nothing:
/// cargo would have refused it. `--config` on cargo's command line is not
/// seen (a documented risk).
pub(super) fn cargo_config_env_names(starts: &[&Path]) -> Vec<String> {
    let mut files: Vec<PathBuf> = starts
        .iter()
        .flat_map(|start| start.ancestors())
        .flat_map(|dir| ["config.toml", "config"].map(|name| dir.join(".cargo").join(name)))
        .collect();
    files.sort();
    files.dedup();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")));
    if let Some(home) = cargo_home {
        files.extend(["config.toml", "config"].map(|name| home.join(name)));
    }
    let mut names: Vec<String> = files
        .iter()
        .filter_map(|file| std::fs::read_to_string(file).ok())
        .filter_map(|text| text.parse::<toml::Table>().ok())
        .filter_map(|table| match table.get("env") {
            Some(toml::Value::Table(env)) => Some(env.keys().cloned().collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_env_tables_of_cargo_configuration_above_the_package_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let package = dir.path().join("ws/app");
        std::fs::create_dir_all(package.join(".cargo")).unwrap();
        std::fs::create_dir_all(dir.path().join("ws/.cargo")).unwrap();
        std::fs::write(
            package.join(".cargo/config.toml"),
            "[env]\nGREETING = \"a\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("ws/.cargo/config.toml"),
            "[env]\nAPI = { value = \"x\", force = true }\n[build]\njobs = 2\n",
        )
        .unwrap();
        let names = cargo_config_env_names(&[&package]);
        assert!(names.contains(&"GREETING".to_string()), "{names:?}");
        assert!(names.contains(&"API".to_string()), "{names:?}");
        assert!(!names.contains(&"jobs".to_string()));
    }

    #[test]
    fn a_run_is_keyed_by_what_cargo_passes_but_not_the_jobserver() {
        let vars = [
            ("CARGO_MAKEFLAGS", "-j --jobserver-fds=3,4"),
            ("CARGO_TERM_COLOR", "always"),
            ("CARGO_REGISTRY_TOKEN", "secret"),
            ("CARGO_FEATURE_EXTRA", "1"),
            ("CARGO_CFG_TARGET_OS", "linux"),
            ("CARGO_ENCODED_RUSTFLAGS", ""),
            ("NUM_JOBS", "2"),
            ("RUSTC_WRAPPER", "/usr/bin/kache"),
            ("TARGET", "x86_64-unknown-linux-gnu"),
            ("PROFILE", "debug"),
            ("PATH", "/usr/bin"),
        ]
        .map(|(n, v)| (n.to_string(), v.to_string()));
        let names: Vec<String> = keyed_env_of(vars.into_iter())
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            names,
            [
                "CARGO_CFG_TARGET_OS",
                "CARGO_ENCODED_RUSTFLAGS",
                "CARGO_FEATURE_EXTRA",
                "PROFILE",
                "TARGET"
            ]
        );
    }
}
