//! The same end-to-end build on every toolchain people really use: the
//! machine's own, the newest stable, that stable with `build.build-dir`
//! outside `target/`, a dated nightly (cargo's new build-dir layout, `-Z`
//! flags on every compile) and an old stable (no `--remap-path-scope`).
//!
//! Each case: a cold build misses every cacheable unit, `cargo clean` and a
//! warm build hit every one, a second checkout at another path hits every
//! one, and the program prints what plain cargo's build of it prints with the
//! same toolchain.
//!
//! The extra toolchains are installed by `scripts/install-toolchains.sh`
//! (which `scripts/test.sh` runs, so CI always has them) and found through
//! `KACHE_TOOLCHAIN_{OLD,NEWEST,NIGHTLY}`, each a directory holding that
//! toolchain's `cargo` and `rustc`. A missing one fails its test: a skipped
//! toolchain would read as a pass.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{LIBS, Run, World};
use serde_json::Value;

/// How cargo lays out a build directory.
#[derive(Debug, PartialEq, Clone, Copy)]
enum Layout {
    /// `<build-dir>/debug/build/<package>-<hash>/` (every stable to 1.99).
    Old,
    /// `<build-dir>/debug/build/<package>/<hash>/out` (nightly since 2026,
    /// the default from stable 1.100).
    New,
}

/// A toolchain to build with: `None` is the machine's own (`cargo` on PATH,
/// through rustup's proxy, as every other test builds); `Some(dir)` calls
/// `dir/cargo` by path with `RUSTC=dir/rustc`.
struct Toolchain {
    bin: Option<PathBuf>,
}

impl Toolchain {
    fn machine() -> Self {
        Self { bin: None }
    }

    /// The toolchain directory named by `var`; panics (never skips) when it
    /// is unset or holds no `cargo` and `rustc`.
    fn from_env(var: &str) -> Self {
        let hint = "run `bash scripts/install-toolchains.sh` and export the \
                    NAME=dir lines it prints (scripts/test.sh does this; CI always installs them)";
        let dir = std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("{var} is not set: {hint}"));
        for tool in ["cargo", "rustc"] {
            assert!(
                dir.join(tool).is_file(),
                "{var}={} holds no `{tool}`: {hint}",
                dir.display()
            );
        }
        Self { bin: Some(dir) }
    }

    /// The rustc this toolchain compiles with.
    fn rustc(&self) -> PathBuf {
        match &self.bin {
            Some(dir) => dir.join("rustc"),
            None => PathBuf::from("rustc"),
        }
    }

    /// The first line of `rustc -vV`, e.g. `rustc 1.85.0 (4d91de4e4 2025-02-17)`.
    fn release(&self) -> String {
        let out = Command::new(self.rustc())
            .arg("-vV")
            .output()
            .expect("run rustc -vV");
        assert!(out.status.success(), "rustc -vV failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// `(major, minor)` of this rustc, from its release line.
    fn version(&self) -> (u32, u32) {
        let release = self.release();
        let number = release.split_whitespace().nth(1).unwrap_or_default();
        let mut parts = number.split(['.', '-']).map(|p| p.parse().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }

    /// The build-dir layout this toolchain's cargo uses unless told: the new
    /// one on nightlies and from stable 1.100 on.
    fn default_layout(&self) -> Layout {
        if self.release().contains("-nightly") || self.version() >= (1, 100) {
            Layout::New
        } else {
            Layout::Old
        }
    }

    /// `cargo <args> --offline` in `dir` through kache (or plainly, without
    /// `RUSTC_WRAPPER`, when `through_kache` is false), with `env` added.
    /// A toolchain called by path also gets its directory first on PATH and
    /// no `RUSTUP_TOOLCHAIN` (the test runner inherits rustup's, which names
    /// the machine's toolchain), so nothing that looks `rustc` or `cargo`
    /// up by name reaches another toolchain.
    fn cargo(
        &self,
        world: &World,
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        through_kache: bool,
    ) -> Run {
        let before = world.events().len();
        let mut cmd = match &self.bin {
            None => world.command("cargo", dir),
            Some(bin) => {
                let mut cmd = world.command(&bin.join("cargo").to_string_lossy(), dir);
                let path = std::env::var_os("PATH").unwrap_or_default();
                let mut paths = vec![bin.clone()];
                paths.extend(std::env::split_paths(&path));
                cmd.env("PATH", std::env::join_paths(paths).expect("join PATH"))
                    .env("RUSTC", bin.join("rustc"))
                    .env_remove("RUSTUP_TOOLCHAIN");
                cmd
            }
        };
        if !through_kache {
            cmd.env_remove("RUSTC_WRAPPER");
        }
        cmd.args(args).arg("--offline");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let output = cmd.output().expect("run cargo");
        let events = world.events().split_off(before);
        Run { output, events }
    }
}

/// Every event of `run`, one line each, for failure messages.
fn describe(run: &Run) -> String {
    let mut text = String::new();
    for e in &run.events {
        let field = |name: &str| e[name].as_str().unwrap_or("-").to_string();
        text.push_str(&format!(
            "  {} {} {}\n",
            field("crate_name"),
            field("outcome"),
            field("reason")
        ));
    }
    if text.is_empty() {
        text.push_str("  (no events)\n");
    }
    let stderr = run.stderr();
    let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    format!("events:\n{text}cargo's stderr (end):\n{}", tail.join("\n"))
}

/// Panics with `run`'s events unless cargo succeeded, every library unit of
/// the fixture had exactly one cached outcome, `expected(unit)`, and the only
/// passthrough is the `fx-app` binary (an executable, uncached by default):
/// any other passthrough is a compile this toolchain loses.
fn assert_every_unit(run: &Run, expected: impl Fn(&str) -> &'static str, step: &str) {
    assert!(
        run.output.status.success(),
        "{step}: cargo failed\n{}",
        describe(run)
    );
    let outcomes = run.outcomes();
    for lib in LIBS {
        let expected = expected(lib);
        let cached: Vec<&String> = outcomes
            .get(*lib)
            .into_iter()
            .flatten()
            .filter(|o| *o != "passthrough")
            .collect();
        assert!(
            cached.len() == 1 && cached[0] == expected,
            "{step}: {lib} should be one `{expected}`, was {cached:?}\n{}",
            describe(run)
        );
    }
    let stray: Vec<&Value> = run
        .events
        .iter()
        .filter(|e| e["outcome"] == "passthrough" && e["crate_name"] != "fx_app")
        .collect();
    assert!(
        stray.is_empty(),
        "{step}: compiles passed through uncached\n{}",
        describe(run)
    );
}

/// What `project`'s fx-app prints.
fn app_output(project: &Path) -> String {
    let out = Command::new(project.join("target/debug/fx-app"))
        .output()
        .expect("run fx-app");
    assert!(out.status.success(), "fx-app failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The layout cargo gave `build_root` (a target or build directory), read
/// from where fx-gen's build-script outputs went.
fn layout(build_root: &Path) -> Option<Layout> {
    let build = build_root.join("debug/build");
    let entries: Vec<String> = std::fs::read_dir(&build)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    if entries.iter().any(|n| n == "fx-gen") {
        Some(Layout::New)
    } else if entries.iter().any(|n| n.starts_with("fx-gen-")) {
        Some(Layout::Old)
    } else {
        None
    }
}

/// The rustc banner cargo recorded for the build in `build_root`.
fn recorded_rustc(build_root: &Path) -> String {
    let path = build_root.join(".rustc_info.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let info: Value = serde_json::from_str(&text).expect(".rustc_info.json is JSON");
    info["outputs"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, v)| v["stdout"].as_str())
        .find_map(|s| s.lines().next().filter(|l| l.starts_with("rustc ")))
        .unwrap_or_default()
        .to_string()
}

/// One case: plain cargo, then cold → `cargo clean` → warm through kache,
/// then a second checkout, all with `toolchain`. With `build_dir`, each
/// checkout builds with `CARGO_BUILD_BUILD_DIR=<root>/<build_dir>-<checkout>`,
/// outside its `target/`. `layout` is the layout that build directory must
/// have, so the case covers what it says it covers. Returns plain cargo's
/// verbose log (`cargo build -v`), for what cargo passes to rustc there.
fn same_build_on(
    toolchain: &Toolchain,
    build_dir: Option<&str>,
    expected_layout: Layout,
) -> String {
    let world = World::new();
    let release = toolchain.release();
    let env_for = |checkout: &str| -> Vec<(String, String)> {
        build_dir
            .map(|name| {
                let dir = world.root.path().join(format!("{name}-{checkout}"));
                vec![(
                    "CARGO_BUILD_BUILD_DIR".to_string(),
                    dir.to_string_lossy().to_string(),
                )]
            })
            .unwrap_or_default()
    };
    let build_root = |project: &Path, checkout: &str| -> PathBuf {
        match build_dir {
            Some(name) => world.root.path().join(format!("{name}-{checkout}")),
            None => project.join("target"),
        }
    };
    let run = |project: &Path, checkout: &str, args: &[&str], kache: bool| -> Run {
        let env = env_for(checkout);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        toolchain.cargo(&world, project, args, &env, kache)
    };

    // What the program prints when plain cargo builds it with this toolchain.
    let plain = world.project("plain");
    let reference = run(&plain, "plain", &["build", "-v"], false);
    assert!(
        reference.output.status.success(),
        "plain cargo failed with {release}:\n{}",
        reference.stderr()
    );
    let expected = app_output(&plain);
    assert_eq!(
        expected,
        common::EXPECTED_LINE,
        "plain cargo with {release}"
    );

    let first = world.project("p");
    let cold = run(&first, "p", &["build"], true);
    assert_every_unit(&cold, |_| "miss", &format!("cold build with {release}"));
    assert_eq!(app_output(&first), expected, "cold build with {release}");
    let root = build_root(&first, "p");
    assert_eq!(
        recorded_rustc(&root),
        release,
        "cargo compiled with the toolchain under test"
    );
    assert_eq!(
        layout(&root),
        Some(expected_layout),
        "the build directory {} has the layout this case covers",
        root.display()
    );
    if build_dir.is_some() {
        assert!(
            !first.join("target/debug/build").exists(),
            "intermediate outputs went to the build dir, not target/"
        );
    }

    let clean = run(&first, "p", &["clean"], true);
    assert!(clean.output.status.success(), "cargo clean failed");
    assert!(
        !root.join("debug").exists(),
        "cargo clean removed {}",
        root.display()
    );
    let warm = run(&first, "p", &["build"], true);
    assert_every_unit(
        &warm,
        |_| "hit",
        &format!("warm build after cargo clean with {release}"),
    );
    assert_eq!(app_output(&first), expected, "warm build with {release}");

    let second = world.project("q");
    let other = run(&second, "q", &["build"], true);
    // fx_app bakes env!("CARGO_MANIFEST_DIR") into its code: the first
    // checkout's entry would be a wrong hit there, so it compiles again.
    assert_every_unit(
        &other,
        |lib| if lib == "fx_app" { "miss" } else { "hit" },
        &format!("second checkout with {release}"),
    );
    assert_eq!(
        app_output(&second),
        expected,
        "second checkout with {release}"
    );
    let dir = Command::new(second.join("target/debug/fx-app"))
        .arg("--dir")
        .output()
        .expect("run fx-app --dir");
    assert_eq!(
        String::from_utf8_lossy(&dir.stdout).trim(),
        second.join("app").to_string_lossy(),
        "the second checkout's fx-app names its own directory"
    );
    reference.stderr()
}

#[test]
fn the_machines_toolchain_builds_cold_then_hits_after_clean_and_in_a_second_checkout() {
    let machine = Toolchain::machine();
    same_build_on(&machine, None, machine.default_layout());
}

#[test]
fn the_newest_stable_builds_cold_then_hits_after_clean_and_in_a_second_checkout() {
    let newest = Toolchain::from_env("KACHE_TOOLCHAIN_NEWEST");
    assert!(
        newest.version() >= Toolchain::machine().version(),
        "KACHE_TOOLCHAIN_NEWEST ({}) is older than the machine's ({})",
        newest.release(),
        Toolchain::machine().release()
    );
    // Cargo's default layout there: 1.99.1 still has the old one (the new one
    // is behind -Zbuild-dir-new-layout).
    same_build_on(&newest, None, newest.default_layout());
}

#[test]
fn the_newest_stable_with_a_build_dir_outside_target_hits_after_clean_and_in_a_second_checkout() {
    let newest = Toolchain::from_env("KACHE_TOOLCHAIN_NEWEST");
    same_build_on(&newest, Some("build-dir"), newest.default_layout());
}

#[test]
fn a_dated_nightly_builds_cold_then_hits_after_clean_and_in_a_second_checkout() {
    let nightly = Toolchain::from_env("KACHE_TOOLCHAIN_NIGHTLY");
    assert!(
        nightly.release().contains("-nightly"),
        "KACHE_TOOLCHAIN_NIGHTLY is not a nightly: {}",
        nightly.release()
    );
    // Its cargo uses the new build-dir layout and passes `-Z
    // embed-metadata=no` to every library compile.
    let plain_log = same_build_on(&nightly, None, nightly.default_layout());
    assert!(
        plain_log.contains("-Z embed-metadata=no"),
        "this nightly's cargo passes -Z embed-metadata=no, which the case is about"
    );
}

#[test]
fn an_old_stable_builds_cold_then_hits_after_clean_and_in_a_second_checkout() {
    let old = Toolchain::from_env("KACHE_TOOLCHAIN_OLD");
    // The case is about a rustc without `--remap-path-scope` (stable in 1.95).
    assert!(
        old.version() < (1, 95),
        "KACHE_TOOLCHAIN_OLD should be older than 1.95: {}",
        old.release()
    );
    same_build_on(&old, None, old.default_layout());
}
