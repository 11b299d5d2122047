//! What of the environment cargo hands a build script is keyed.

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

#[cfg(test)]
mod tests {
    use super::*;

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
