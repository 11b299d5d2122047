//! Shared harness for the end-to-end tests: a private copy of the fixture
//! workspace, a private cache directory, and real `cargo` runs through the
//! real `kache` binary.

#![allow(dead_code)]

pub mod garage;
pub mod service;
pub mod tmux;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub const KACHE: &str = env!("CARGO_BIN_EXE_kache");

/// The fixture: `fx-app` (bin + lib + integration test) → `fx-core` (warns,
/// `include_str!`, `option_env!`, a feature) → `fx-gen` (build.rs writing to
/// `OUT_DIR`), and `fx-macros` (a proc-macro).
pub fn fixture_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/fx")
}

/// `tests/fixtures/<name>`.
pub fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

/// One test's world: a temp root holding project copies and a cache.
pub struct World {
    pub root: tempfile::TempDir,
    pub cache: PathBuf,
    pub env: Vec<(String, String)>,
}

/// The result of one cargo run.
pub struct Run {
    pub output: Output,
    pub events: Vec<Value>,
}

impl World {
    pub fn new() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let cache = root.path().join("cache");
        Self {
            root,
            cache,
            env: Vec::new(),
        }
    }

    /// A world whose commands all get `env` (a remote's settings, say).
    pub fn with_env(env: Vec<(String, String)>) -> Self {
        Self { env, ..Self::new() }
    }

    /// Copies the fixture to `<root>/<name>` and returns its path.
    pub fn project(&self, name: &str) -> PathBuf {
        let dest = self.root.path().join(name);
        copy_dir(&fixture_source(), &dest);
        dest
    }

    /// Copies `tests/fixtures/<fixture>` to `<root>/<name>` and fetches its
    /// locked registry dependencies into `CARGO_HOME` (a no-op once they
    /// are there), so the builds can run `--offline`.
    pub fn project_from(&self, fixture: &str, name: &str) -> PathBuf {
        let dest = self.root.path().join(name);
        copy_dir(&fixture_dir(fixture), &dest);
        let fetched = self
            .command("cargo", &dest)
            .args(["fetch", "--locked", "--quiet"])
            .status()
            .expect("run cargo fetch");
        assert!(fetched.success(), "cargo fetch failed for {fixture}");
        dest
    }

    /// A command with the test's environment: kache as the wrapper, the
    /// private cache, and nothing inherited that could change the build.
    pub fn command(&self, program: &str, dir: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(dir);
        for (name, _) in std::env::vars() {
            let build_env = name.starts_with("KACHE_")
                || name.starts_with("CARGO_")
                || name.starts_with("RUST");
            let toolchain_env =
                ["RUSTUP_HOME", "CARGO_HOME", "RUSTUP_TOOLCHAIN"].contains(&name.as_str());
            if build_env && !toolchain_env {
                cmd.env_remove(&name);
            }
        }
        cmd.env("RUSTC_WRAPPER", KACHE)
            .env("KACHE_CACHE_DIR", &self.cache)
            .env("KACHE_PROGRESS", "all")
            .env("CARGO_TERM_COLOR", "never")
            .env("CARGO_INCREMENTAL", "0")
            // Daemons a test starts do not outlive it for long.
            .env("KACHE_DAEMON_IDLE_TIMEOUT", "20")
            .env("XDG_CONFIG_HOME", self.root.path().join("xdg"));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `cargo <args>` in `dir` and returns its output and the events it
    /// added to the log.
    pub fn cargo(&self, dir: &Path, args: &[&str]) -> Run {
        self.cargo_with(dir, args, &[])
    }

    pub fn cargo_with(&self, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
        let before = self.events().len();
        let mut cmd = self.command("cargo", dir);
        cmd.args(args).arg("--offline");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let output = cmd.output().expect("run cargo");
        let events = self.events().split_off(before);
        Run { output, events }
    }

    /// Runs `kache <args>`.
    pub fn kache(&self, args: &[&str]) -> Output {
        self.command(KACHE, self.root.path())
            .args(args)
            .output()
            .expect("run kache")
    }

    /// Runs `kache <args>` in `dir` with extra environment.
    pub fn kache_in(&self, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(KACHE, dir);
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run kache")
    }

    /// A config file putting the remote in the shared directory `shared`
    /// (`type = "fs"`), as the `KACHE_CONFIG` variable to set.
    pub fn fs_remote(&self, shared: &Path) -> (String, String) {
        let config = self.root.path().join("kache-fs.toml");
        std::fs::write(
            &config,
            format!(
                "[cache.remote]\ntype = \"fs\"\npath = \"{}\"\n",
                shared.display()
            ),
        )
        .expect("write the config");
        ("KACHE_CONFIG".into(), config.to_string_lossy().to_string())
    }

    /// Every event in the log.
    pub fn events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.cache.join("events.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Panics unless `kache doctor --checksums` finds every blob holding the
    /// bytes it is named after and every entry whole.
    pub fn assert_store_verifies(&self) {
        let out = self.kache(&["doctor", "--checksums"]);
        assert!(
            out.status.success(),
            "the store does not verify:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Paths of every blob file in the store.
    pub fn blobs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let Ok(shards) = std::fs::read_dir(self.cache.join("store/blobs")) else {
            return out;
        };
        for shard in shards.flatten() {
            for blob in std::fs::read_dir(shard.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                out.push(blob.path());
            }
        }
        out
    }
}

impl Run {
    /// Panics with cargo's stderr unless it succeeded, or if any compile fell
    /// back because the store itself failed (contention on the index).
    pub fn ok(self) -> Self {
        assert!(
            self.output.status.success(),
            "cargo failed:\n{}",
            String::from_utf8_lossy(&self.output.stderr)
        );
        for event in &self.events {
            let reason = event["reason"].as_str().unwrap_or_default();
            assert!(
                !reason.contains("locked"),
                "the store failed a compile: {event}"
            );
        }
        self
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).to_string()
    }

    /// The outcome of every C-family unit of this run (`crate_name`s with
    /// a `:`, like `cfx:add.c`), ignoring passthroughs.
    pub fn c_units(&self) -> BTreeMap<String, String> {
        self.outcomes()
            .into_iter()
            .filter(|(name, _)| name.contains(':'))
            .filter_map(|(name, list)| {
                let cached: Vec<String> = list.into_iter().filter(|o| o != "passthrough").collect();
                (!cached.is_empty()).then(|| (name, cached.join(",")))
            })
            .collect()
    }

    /// `crate → [outcome, …]` for this run.
    pub fn outcomes(&self) -> BTreeMap<String, Vec<String>> {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for event in &self.events {
            map.entry(event["crate_name"].as_str().unwrap_or_default().to_string())
                .or_default()
                .push(event["outcome"].as_str().unwrap_or_default().to_string());
        }
        map
    }

    /// The single cached outcome (hit, dup or miss) of `crate_name`, panicking
    /// unless exactly one cacheable unit of that name ran. Passthrough events
    /// (a bin or test harness sharing the crate name) are ignored.
    pub fn outcome(&self, crate_name: &str) -> String {
        let outcomes = self.outcomes();
        let list: Vec<&String> = outcomes
            .get(crate_name)
            .unwrap_or_else(|| panic!("{crate_name} did not run: {outcomes:?}"))
            .iter()
            .filter(|o| *o != "passthrough")
            .collect();
        assert_eq!(
            list.len(),
            1,
            "{crate_name}: expected one cached unit: {outcomes:?}"
        );
        list[0].clone()
    }
}

/// Runs the fixture binary and returns its stdout line.
pub fn run_app(project: &Path) -> String {
    let output = Command::new(project.join("target/debug/fx-app"))
        .output()
        .expect("run fx-app");
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The library crates of the fixture (rustc crate names).
pub const LIBS: &[&str] = &[
    "fx_gen",
    "fx_core",
    "fx_macros",
    "fx_app",
    "build_script_build",
];

/// The entry of `fx-gen`'s build-script run (runs are cached by default).
pub const GEN_RUN: &str = "fx-gen:build-script-run";

/// Every entry one build of the fixture stores (`crate_name`s): the
/// library units ([`LIBS`]) and `fx-gen`'s build-script run ([`GEN_RUN`]).
pub const ENTRIES: &[&str] = &[
    "fx_gen",
    "fx_core",
    "fx_macros",
    "fx_app",
    "build_script_build",
    GEN_RUN,
];

/// What `fx-gen`'s build script left for cargo in `project`'s debug
/// profile: the `output` file (its stdout) and `OUT_DIR/gen.rs`. Panics
/// unless exactly one run of it is there.
pub fn gen_run_output(project: &Path) -> (String, String) {
    let runs: Vec<PathBuf> = std::fs::read_dir(project.join("target/debug/build"))
        .expect("read target/debug/build")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("fx-gen-"))
                && p.join("output").is_file()
        })
        .collect();
    assert_eq!(runs.len(), 1, "fx-gen's script ran once: {runs:?}");
    let read = |path: PathBuf| {
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    (
        read(runs[0].join("output")),
        read(runs[0].join("out/gen.rs")),
    )
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for item in std::fs::read_dir(from).expect("read fixture") {
        let item = item.expect("entry");
        let name = item.file_name();
        if name == "target" {
            continue;
        }
        let dest = to.join(&name);
        if item.file_type().expect("type").is_dir() {
            copy_dir(&item.path(), &dest);
        } else {
            std::fs::copy(item.path(), &dest).expect("copy");
        }
    }
}

/// Replaces `from` with `to` in a project file.
pub fn edit(project: &Path, file: &str, from: &str, to: &str) {
    let path = project.join(file);
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains(from), "{file} does not contain {from:?}");
    std::fs::write(&path, text.replace(from, to)).expect("write");
}

/// What the unmodified fixture binary prints.
pub const EXPECTED_LINE: &str = "hello v0.1.0 alpha/none | answer=42";
