//! The differential tester. Seeded random sequences of what developers do —
//! edit a printed constant, revert it, switch branches, a same-size rewrite
//! that keeps the mtime, add or remove a file in a directory a build script
//! declares, flip an env var (`option_env!`, `rerun-if-env-changed`) or a
//! feature, `cargo build [-p X] [--release]`, `check`, `clippy`, `test`,
//! SIGKILL a build, `cargo clean`, build in a second checkout — run on
//! `tests/fixtures/dt/ws` under plain cargo and under kache with the same
//! seed. After every step both sides must agree on what the build said
//! (success, clippy's lints, which tests passed) and on what the programs
//! print. Plain cargo is the oracle: any difference is kache's.
//!
//! A divergence prints its seed and the shortest step list found that still
//! diverges (steps dropped greedily, within `KACHE_DIFFTEST_SHRINK` replays,
//! default 12), ready to replay:
//!
//! - `KACHE_DIFFTEST_SEEDS`: `1-40` or `7,9` (default: the CI set below).
//! - `KACHE_DIFFTEST_STEPS`: a number (steps per seed), or the exact steps,
//!   `;`-separated, as a divergence prints them.
//! - `KACHE_DIFFTEST_VERBOSE=1`: every step and what each side saw.
//! - `KACHE_DIFFTEST_BUILD_SCRIPTS=1`: the kache side caches build-script
//!   runs (`KACHE_CACHE_BUILD_SCRIPTS=1`, the default); without it the
//!   first test below turns them off (`=0`), to test the compiles alone;
//!   the flag-on test always caches them, on its own seed set.
//! - `KACHE_DIFFTEST_SELF_CHECK=1`: both sides plain cargo. Any divergence
//!   then is the tester's own (a step whose outcome depends on timing), not
//!   kache's: run it after changing the steps or the fixture.
//!
//! The two sides of a step run at the same time, each in its own directory
//! (`<tmp>/plain` and `<tmp>/kache`, same length); the kache side has its
//! own cache directory and `KACHE_LOCAL_ONLY=1`. Nothing printed is
//! normalised: the fixture prints no paths, only whether the paths baked
//! into it name the checkout it runs from.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::FileTimes;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{World, copy_dir, fixture_dir};

/// The seeds CI runs, and their length (about 3 minutes here, 2 cores).
const CI_SEEDS: &[u64] = &[1, 2, 3, 4, 7];
const CI_STEPS: usize = 24;
/// The seeds the flag-on test (`KACHE_CACHE_BUILD_SCRIPTS=1`) runs, picked
/// so that together they hold every step that matters to a build-script
/// run (see `the_build_script_seeds_hold_every_kind_of_step`). The fixture's
/// scripts: `app` (OUT_DIR, an undeclared read, `rustc-env`, `rustc-cfg`),
/// `leaf` (declares nothing; both read `src/lib.rs` under `DT_UNDECLARED`,
/// see `run_sequence`), `cdep` (C through `cc`, a declared folder),
/// `assets` (a declared folder and variable).
const CI_SCRIPT_SEEDS: &[u64] = &[1, 2, 3, 4, 7];
/// The build-script flag, for the kache side.
const SCRIPTS_FLAG: &str = "KACHE_CACHE_BUILD_SCRIPTS";

/// Files holding a `/*dt*/<number>` marker, the edit steps' targets.
const EDITABLE: &[&str] = &[
    "leaf/src/lib.rs",
    "cdep/csrc/val.c",
    "mid/src/lib.rs",
    "macros/src/lib.rs",
    "plug/src/lib.rs",
    "app/src/lib.rs",
    "app/build.rs",
];
/// Files whose other side lives in `tests/fixtures/dt/ws.branch`.
const BRANCH_FILES: &[&str] = &["leaf/src/lib.rs", "cdep/csrc/val.c", "mid/src/lib.rs"];
const PACKAGES: &[&str] = &[
    "dt-leaf",
    "dt-cdep",
    "dt-mid",
    "dt-macros",
    "dt-plug",
    "dt-app",
];
/// `DT_LEAF_TAG` is read by `option_env!`; `DT_MACRO_ENV` by a proc-macro,
/// declared by the build script with `rerun-if-env-changed`.
const ENV_VARS: &[&str] = &["DT_LEAF_TAG", "DT_MACRO_ENV"];
const MARKER: &str = "/*dt*/";
const FEATURE_FILE: &str = "mid/Cargo.toml";
const FEATURE_OFF: &str = "default = []";
const FEATURE_ON: &str = "default = [\"fancy\"]";

/// splitmix64: a tiny PRNG, the same sequence for a seed on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed ^ 0x6a09_e667_f3bc_c909)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// One thing a developer does. `Display` and `parse` round-trip, so a
/// printed step list replays exactly.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    /// Sets the number after the file's marker (new content, new mtime).
    Edit { file: String, value: u32 },
    /// The same, keeping size and mtime (`cp -p`, `touch -r old`).
    KeepMtimeEdit { file: String, value: u32 },
    /// Puts back the content the file had before its last change, with a
    /// new mtime, as `git checkout` would. Nothing to undo: a no-op.
    Revert { file: String },
    /// Swaps the branch files with their other side.
    SwitchBranch,
    /// Sets (or, with `None`, unsets) a variable for every later cargo run.
    Env { var: String, value: Option<String> },
    /// Turns `dt-mid`'s default feature `fancy` on or off in its manifest.
    FlipFeature,
    /// Writes `assets/data/<name>` (content: the name).
    AddData { name: String },
    /// Removes `assets/data/<name>`, if there.
    RemoveData { name: String },
    /// `cargo <args>`, compared.
    Cargo(Vec<String>),
    /// `cargo <args>`, SIGKILLed (the whole process group) after `ms`.
    Kill { ms: u64, args: Vec<String> },
    /// `cargo <args>` in the second checkout (same cache), after copying the
    /// first checkout's changed files there.
    Second(Vec<String>),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Edit { file, value } => write!(f, "edit {file}={value}"),
            Step::KeepMtimeEdit { file, value } => write!(f, "keep-mtime-edit {file}={value}"),
            Step::Revert { file } => write!(f, "revert {file}"),
            Step::SwitchBranch => write!(f, "switch-branch"),
            Step::Env {
                var,
                value: Some(v),
            } => write!(f, "env {var}={v}"),
            Step::Env { var, value: None } => write!(f, "env {var}"),
            Step::FlipFeature => write!(f, "flip-feature"),
            Step::AddData { name } => write!(f, "add-data {name}"),
            Step::RemoveData { name } => write!(f, "remove-data {name}"),
            Step::Cargo(args) => write!(f, "cargo {}", args.join(" ")),
            Step::Kill { ms, args } => write!(f, "kill-after-{ms}ms cargo {}", args.join(" ")),
            Step::Second(args) => write!(f, "second-checkout cargo {}", args.join(" ")),
        }
    }
}

impl Step {
    /// The inverse of `Display`.
    fn parse(text: &str) -> Result<Step, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let bad = || format!("not a step: {text:?}");
        let file_value = |word: Option<&&str>| -> Result<(String, u32), String> {
            let (file, value) = word.and_then(|w| w.split_once('=')).ok_or_else(bad)?;
            Ok((file.to_string(), value.parse().map_err(|_| bad())?))
        };
        let cargo_args = |rest: &[&str]| -> Result<Vec<String>, String> {
            match rest.split_first() {
                Some((&"cargo", args)) if !args.is_empty() => {
                    Ok(args.iter().map(|s| s.to_string()).collect())
                }
                _ => Err(bad()),
            }
        };
        let step = match words.first().copied().ok_or_else(bad)? {
            "edit" => {
                let (file, value) = file_value(words.get(1))?;
                Step::Edit { file, value }
            }
            "keep-mtime-edit" => {
                let (file, value) = file_value(words.get(1))?;
                Step::KeepMtimeEdit { file, value }
            }
            "revert" => Step::Revert {
                file: words.get(1).ok_or_else(bad)?.to_string(),
            },
            "switch-branch" => Step::SwitchBranch,
            "env" => {
                let word = words.get(1).ok_or_else(bad)?;
                match word.split_once('=') {
                    Some((var, v)) => Step::Env {
                        var: var.into(),
                        value: Some(v.into()),
                    },
                    None => Step::Env {
                        var: word.to_string(),
                        value: None,
                    },
                }
            }
            "flip-feature" => Step::FlipFeature,
            "add-data" => Step::AddData {
                name: words.get(1).ok_or_else(bad)?.to_string(),
            },
            "remove-data" => Step::RemoveData {
                name: words.get(1).ok_or_else(bad)?.to_string(),
            },
            "cargo" => Step::Cargo(cargo_args(&words)?),
            "second-checkout" => Step::Second(cargo_args(&words[1..])?),
            kill if kill.starts_with("kill-after-") => {
                let ms = kill
                    .trim_start_matches("kill-after-")
                    .trim_end_matches("ms")
                    .parse()
                    .map_err(|_| bad())?;
                Step::Kill {
                    ms,
                    args: cargo_args(&words[1..])?,
                }
            }
            _ => return Err(bad()),
        };
        Ok(step)
    }

    /// Whether the step runs cargo and compares (a shrunk list without one
    /// cannot diverge).
    fn compares(&self) -> bool {
        matches!(self, Step::Cargo(_) | Step::Second(_))
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// A random cargo command of the kinds developers run.
fn random_cargo(rng: &mut Rng) -> Vec<String> {
    let pkg = rng.pick(PACKAGES);
    match rng.below(13) {
        0..=2 => strings(&["build"]),
        3..=4 => strings(&["build", "-p", pkg]),
        5 => strings(&["build", "--release"]),
        6 => match rng.below(2) {
            0 => strings(&["check"]),
            _ => strings(&["check", "-p", pkg]),
        },
        7..=8 => {
            let mut args = strings(&["clippy", "-p", pkg]);
            if rng.below(2) == 0 {
                args.push("--no-deps".into());
            }
            if rng.below(2) == 0 {
                args.extend(strings(&["--", "-D", "warnings"]));
            }
            args
        }
        9..=10 => strings(&["test", "--no-fail-fast"]),
        11 => strings(&["test", "-p", pkg, "--no-fail-fast"]),
        _ => match rng.below(2) {
            0 => strings(&["clean"]),
            _ => strings(&["clean", "-p", pkg]),
        },
    }
}

fn random_step(rng: &mut Rng) -> Step {
    // Few values per knob, so sequences come back to states kache has
    // stored: that is where a wrong hit can happen.
    let value = |rng: &mut Rng| 100 + rng.below(6) as u32;
    let data_name = |rng: &mut Rng| format!("d{}.txt", rng.below(3));
    match rng.below(100) {
        0..=15 => Step::Edit {
            file: rng.pick(EDITABLE).into(),
            value: value(rng),
        },
        16..=21 => Step::KeepMtimeEdit {
            file: rng.pick(EDITABLE).into(),
            value: value(rng),
        },
        22..=28 => Step::Revert {
            file: rng.pick(EDITABLE).into(),
        },
        29..=32 => Step::SwitchBranch,
        33..=39 => Step::Env {
            var: rng.pick(ENV_VARS).into(),
            value: (rng.below(3) != 0).then(|| format!("t{}", rng.below(2))),
        },
        40..=43 => Step::FlipFeature,
        44..=47 => Step::AddData {
            name: data_name(rng),
        },
        48..=49 => Step::RemoveData {
            name: data_name(rng),
        },
        50..=53 => Step::Kill {
            ms: 200 + rng.below(3000),
            args: match rng.below(3) {
                0 => strings(&["build", "--release"]),
                _ => strings(&["build"]),
            },
        },
        54..=58 => Step::Second(strings(&["build"])),
        _ => Step::Cargo(random_cargo(rng)),
    }
}

/// The steps of `seed`: a pure function of the seed and the length.
fn generate(seed: u64, len: usize) -> Vec<Step> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| random_step(&mut rng)).collect()
}

/// What one side saw after a step; the sides must see the same.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    /// Whether cargo succeeded.
    ok: Option<bool>,
    /// Clippy's diagnostics (the lines starting with `warning:`/`error:`),
    /// where the run was not cut short by `-D warnings`.
    lints: Option<BTreeSet<String>>,
    /// `test <name> ... ok|FAILED` lines of every test binary, sorted.
    tests: Option<Vec<String>>,
    /// What `dt-app` printed (it loads `libdt_plug.so` too), and how it exited.
    program: Option<String>,
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ok) = self.ok {
            writeln!(f, "    cargo succeeded: {ok}")?;
        }
        if let Some(lints) = &self.lints {
            writeln!(f, "    lints: {lints:?}")?;
        }
        if let Some(tests) = &self.tests {
            writeln!(f, "    tests: {tests:?}")?;
        }
        if let Some(program) = &self.program {
            for line in program.lines() {
                writeln!(f, "    | {line}")?;
            }
        }
        Ok(())
    }
}

/// The cargo profile directory a command builds into.
fn profile(args: &[String]) -> &'static str {
    if args.iter().any(|a| a == "--release") {
        "release"
    } else {
        "debug"
    }
}

/// `-p <pkg>` of a command, if any.
fn package(args: &[String]) -> Option<&str> {
    args.iter()
        .position(|a| a == "-p")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// Which of (`dt-app`, `libdt_plug.so`) a successful command leaves fresh
/// in its profile directory.
fn refreshes(args: &[String]) -> (bool, bool) {
    let pkg = package(args);
    match args.first().map(String::as_str) {
        Some("build") => (
            pkg.is_none() || pkg == Some("dt-app"),
            pkg.is_none() || pkg == Some("dt-plug"),
        ),
        Some("test") => (pkg.is_none() || pkg == Some("dt-app"), false),
        _ => (false, false),
    }
}

/// One checkout pair's bookkeeping on one side: its directories and what
/// revert and switch-branch need to remember.
struct Side {
    kache: bool,
    dir: PathBuf,
    second: PathBuf,
    /// Per file, the contents it had before each change (newest last).
    undo: BTreeMap<String, Vec<Vec<u8>>>,
    /// The other branch's content of each branch file.
    other_branch: BTreeMap<String, Vec<u8>>,
}

/// The environment every cargo run of a sequence gets on both sides.
struct Shared<'w> {
    world: &'w World,
    env: BTreeMap<String, String>,
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// `text` with the number after its marker replaced by `value`.
fn set_marker(text: &[u8], value: u32) -> Vec<u8> {
    let text = String::from_utf8_lossy(text);
    let start = text.find(MARKER).expect("a /*dt*/ marker") + MARKER.len();
    let digits = text[start..]
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len() - start);
    format!("{}{value}{}", &text[..start], &text[start + digits..]).into_bytes()
}

impl Side {
    fn new(kache: bool, dir: PathBuf, second: PathBuf) -> Self {
        let other_branch = BRANCH_FILES
            .iter()
            .map(|f| (f.to_string(), read(&fixture_dir("dt/ws.branch").join(f))))
            .collect();
        Self {
            kache,
            dir,
            second,
            undo: BTreeMap::new(),
            other_branch,
        }
    }

    /// Replaces `file`'s content, remembering the old one for `revert`.
    fn change(&mut self, file: &str, new: &[u8]) {
        let path = self.dir.join(file);
        let old = read(&path);
        write(&path, new);
        self.undo.entry(file.to_string()).or_default().push(old);
    }

    fn cargo(&self, shared: &Shared, dir: &Path, args: &[String]) -> Command {
        let mut cmd = shared.world.command("cargo", dir);
        if !self.kache {
            cmd.env_remove("RUSTC_WRAPPER");
        }
        for var in ENV_VARS {
            cmd.env_remove(var);
        }
        cmd.envs(&shared.env);
        // Before the subcommand: after clippy's `--` it would be clippy's.
        cmd.arg("--offline").args(args);
        cmd
    }

    /// Runs `cargo <args>` in `dir` and returns what the user sees of it
    /// (the program is run by the caller, which knows whether it is fresh).
    fn run_cargo(&self, shared: &Shared, dir: &Path, args: &[String]) -> Seen {
        let output = self.cargo(shared, dir, args).output().expect("run cargo");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let mut seen = Seen {
            ok: Some(output.status.success()),
            ..Seen::default()
        };
        let denies = args.iter().any(|a| a == "warnings");
        if args[0] == "clippy" && !denies {
            seen.lints = Some(
                stderr
                    .lines()
                    .filter(|l| l.starts_with("warning:") || l.starts_with("error"))
                    .filter(|l| !l.contains("kache") && !l.contains("waiting for other jobs"))
                    .map(str::to_string)
                    .collect(),
            );
        }
        if args[0] == "test" {
            let mut tests: Vec<String> = stdout
                .lines()
                .filter(|l| l.starts_with("test ") && l.contains(" ... "))
                .map(str::to_string)
                .collect();
            tests.sort();
            seen.tests = Some(tests);
        }
        if verbose() && !output.status.success() {
            let side = if self.kache { "kache" } else { "plain" };
            eprintln!("    [{side}] cargo {} failed:\n{stderr}", args.join(" "));
        }
        seen
    }

    /// Runs cargo and SIGKILLs its whole process group after `ms`.
    fn kill_cargo(&self, shared: &Shared, args: &[String], ms: u64) {
        let mut child = self
            .cargo(shared, &self.dir, args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn cargo");
        std::thread::sleep(Duration::from_millis(ms));
        let group = -(child.id() as i32);
        // SAFETY: kill(2) on the process group this test created.
        unsafe {
            libc::kill(group, libc::SIGKILL);
        }
        let _ = child.wait();
    }

    /// Copies every file of the first checkout (but `target/`) whose content
    /// differs into the second, and removes what the first no longer has.
    fn sync_second(&self) {
        if !self.second.exists() {
            copy_dir(&self.dir, &self.second);
            return;
        }
        sync_dir(&self.dir, &self.second);
    }

    /// Applies a step that changes files or runs cargo; returns what the
    /// user saw of cargo, if it ran.
    fn apply(&mut self, step: &Step, shared: &Shared) -> Option<Seen> {
        match step {
            Step::Edit { file, value } => {
                let new = set_marker(&read(&self.dir.join(file)), *value);
                self.change(file, &new);
            }
            Step::KeepMtimeEdit { file, value } => {
                let path = self.dir.join(file);
                let meta = std::fs::metadata(&path).expect("stat");
                let new = set_marker(&read(&path), *value);
                self.change(file, &new);
                let times = FileTimes::new()
                    .set_modified(meta.modified().expect("mtime"))
                    .set_accessed(meta.accessed().expect("atime"));
                std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_times(times))
                    .expect("put the mtime back");
            }
            Step::Revert { file } => {
                if let Some(old) = self.undo.get_mut(file).and_then(Vec::pop) {
                    write(&self.dir.join(file), &old);
                }
            }
            Step::SwitchBranch => {
                for file in BRANCH_FILES {
                    let theirs = self.other_branch[*file].clone();
                    let ours = read(&self.dir.join(file));
                    self.change(file, &theirs);
                    self.other_branch.insert(file.to_string(), ours);
                }
            }
            Step::FlipFeature => {
                let text = String::from_utf8_lossy(&read(&self.dir.join(FEATURE_FILE))).to_string();
                let flipped = if text.contains(FEATURE_OFF) {
                    text.replace(FEATURE_OFF, FEATURE_ON)
                } else {
                    text.replace(FEATURE_ON, FEATURE_OFF)
                };
                self.change(FEATURE_FILE, flipped.as_bytes());
            }
            Step::AddData { name } => {
                write(&self.dir.join("assets/data").join(name), name.as_bytes())
            }
            Step::RemoveData { name } => {
                let _ = std::fs::remove_file(self.dir.join("assets/data").join(name));
            }
            Step::Env { .. } => {}
            Step::Cargo(args) => return Some(self.run_cargo(shared, &self.dir, args)),
            Step::Kill { ms, args } => self.kill_cargo(shared, args, *ms),
            Step::Second(args) => {
                self.sync_second();
                return Some(self.run_cargo(shared, &self.second, args));
            }
        }
        None
    }
}

/// Makes `to` hold exactly the files of `from` (but `target/`), rewriting
/// only those whose content differs, as a `git pull` would.
fn sync_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    let mut wanted = BTreeSet::new();
    for item in std::fs::read_dir(from).expect("read dir").flatten() {
        let name = item.file_name();
        if name == "target" {
            continue;
        }
        wanted.insert(name.clone());
        let dest = to.join(&name);
        if item.file_type().expect("type").is_dir() {
            sync_dir(&item.path(), &dest);
        } else {
            let bytes = read(&item.path());
            if std::fs::read(&dest).ok().as_deref() != Some(&bytes[..]) {
                write(&dest, &bytes);
            }
        }
    }
    for item in std::fs::read_dir(to).expect("read dir").flatten() {
        let name = item.file_name();
        if name != "target" && !wanted.contains(&name) {
            let path = item.path();
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
    }
}

/// What `<checkout>/target/<profile>/dt-app` prints, with its exit status.
fn run_program(checkout: &Path, profile: &str) -> String {
    let exe = checkout.join("target").join(profile).join("dt-app");
    if !exe.exists() {
        return "absent".into();
    }
    match Command::new(&exe).env_clear().output() {
        Ok(out) => format!(
            "{}exit: {}",
            String::from_utf8_lossy(&out.stdout),
            out.status
        ),
        Err(e) => format!("did not start: {}", e.kind()),
    }
}

fn verbose() -> bool {
    std::env::var_os("KACHE_DIFFTEST_VERBOSE").is_some_and(|v| v != "0")
}

/// The first step where the sides saw different things.
struct Divergence {
    step: usize,
    text: String,
}

/// Whether each profile's `dt-app` and `libdt_plug.so` are known to be what
/// the last successful build made on both sides (a killed build leaves
/// either side with whatever it got to; comparing those would be noise).
#[derive(Default)]
struct Fresh {
    stale_app: BTreeSet<&'static str>,
    stale_plug: BTreeSet<&'static str>,
}

/// Runs `steps` on a new pair of checkouts; stops at the first divergence.
/// Also returns how often each kache outcome happened (`hit=12 miss=30 …`),
/// so that a pass shows it was not a pass of a cache that never hit.
/// With `scripts`, the kache side caches build-script runs, else it sets
/// `KACHE_CACHE_BUILD_SCRIPTS=0` (plain cargo
/// never sees the flag's effect: it has no wrapper to install a launcher);
/// their outcomes count apart (`run-hit=3`). Both sides then also get
/// `DT_UNDECLARED=1`, for the whole sequence: the `app` and `leaf` scripts
/// read `src/lib.rs` (undeclared; in a package that declares nothing).
/// Without the flag, `KACHE_DIFFTEST_UNDECLARED=1` sets it too.
fn run_sequence(seed: u64, steps: &[Step], scripts: bool) -> (Option<Divergence>, String) {
    let mut env = vec![("KACHE_LOCAL_ONLY".to_string(), "1".to_string())];
    let switch = if scripts { "1" } else { "0" };
    env.push((SCRIPTS_FLAG.to_string(), switch.to_string()));
    if scripts || std::env::var_os("KACHE_DIFFTEST_UNDECLARED").is_some_and(|v| v == "1") {
        env.push(("DT_UNDECLARED".to_string(), "1".to_string()));
    }
    let world = World::with_env(env);
    let divergence = run_in(&world, seed, steps);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for event in world.events() {
        let outcome = event["outcome"].as_str().unwrap_or("?");
        let run = event["crate_name"]
            .as_str()
            .is_some_and(|c| c.ends_with(":build-script-run"));
        let outcome = if run {
            format!("run-{outcome}")
        } else {
            outcome.to_string()
        };
        *counts.entry(outcome).or_default() += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(k, n)| format!("{k}={n}")).collect();
    (divergence, counts.join(" "))
}

fn run_in(world: &World, seed: u64, steps: &[Step]) -> Option<Divergence> {
    let plain_dir = world.project_from("dt/ws", "plain");
    let kache_dir = world.root.path().join("kache");
    copy_dir(&plain_dir, &kache_dir);
    let mut plain = Side::new(false, plain_dir, world.root.path().join("plain2"));
    let self_check = std::env::var_os("KACHE_DIFFTEST_SELF_CHECK").is_some_and(|v| v != "0");
    let mut kache = Side::new(!self_check, kache_dir, world.root.path().join("kache2"));
    let mut shared = Shared {
        world,
        env: BTreeMap::new(),
    };
    let mut fresh = Fresh::default();
    for (index, step) in steps.iter().enumerate() {
        if let Step::Env { var, value } = step {
            match value {
                Some(v) => shared.env.insert(var.clone(), v.clone()),
                None => shared.env.remove(var),
            };
        }
        let started = Instant::now();
        let (mut seen_plain, mut seen_kache) = std::thread::scope(|scope| {
            let shared = &shared;
            let plain_run = scope.spawn(|| plain.apply(step, shared));
            let kache_seen = kache.apply(step, shared);
            (
                plain_run.join().expect("the plain side panicked"),
                kache_seen,
            )
        });
        match step {
            Step::Kill { args, .. } => {
                fresh.stale_app.insert(profile(args));
                fresh.stale_plug.insert(profile(args));
            }
            Step::Cargo(args) if args.len() == 1 && args[0] == "clean" => fresh = Fresh::default(),
            _ => {}
        }
        let program_dir = |side: &Side| match step {
            Step::Second(_) => side.second.clone(),
            _ => side.dir.clone(),
        };
        if let (Step::Cargo(args) | Step::Second(args), Some(p), Some(k)) =
            (step, seen_plain.as_mut(), seen_kache.as_mut())
        {
            let prof = profile(args);
            let built = p.ok == Some(true) || args[0] == "test";
            let (app, plug) = refreshes(args);
            if built && p.ok == k.ok && matches!(step, Step::Cargo(_)) {
                if app {
                    fresh.stale_app.remove(prof);
                }
                if plug {
                    fresh.stale_plug.remove(prof);
                }
            }
            let comparable = matches!(step, Step::Second(_))
                || (!fresh.stale_app.contains(prof) && !fresh.stale_plug.contains(prof));
            if (app || plug) && built && comparable {
                p.program = Some(run_program(&program_dir(&plain), prof));
                k.program = Some(run_program(&program_dir(&kache), prof));
            }
        }
        if verbose() {
            eprintln!("  [{seed}] {index:>2} {step}  ({:.1?})", started.elapsed());
            if let Some(seen) = &seen_kache {
                eprint!("{seen}");
            }
        }
        if seen_plain != seen_kache {
            let text = format!(
                "at step {index} `{step}`:\n  plain cargo:\n{}  kache:\n{}",
                seen_plain.unwrap_or_default(),
                seen_kache.unwrap_or_default()
            );
            return Some(Divergence { step: index, text });
        }
    }
    None
}

/// Drops steps from a diverging list while it still diverges: halves
/// first, then smaller chunks down to single steps, at most `budget` replays.
/// Returns the shortest list found and its divergence.
fn shrink(
    seed: u64,
    steps: Vec<Step>,
    first: Divergence,
    budget: usize,
    scripts: bool,
) -> (Vec<Step>, Divergence) {
    let mut best = steps[..=first.step].to_vec();
    let mut found = first;
    let mut replays = 0;
    let mut chunk = best.len().div_ceil(2);
    while replays < budget && !best.is_empty() {
        let mut start = 0;
        while start < best.len() && replays < budget {
            let mut candidate = best.clone();
            candidate.drain(start..(start + chunk).min(best.len()));
            if !candidate.iter().any(Step::compares) {
                start += chunk;
                continue;
            }
            replays += 1;
            match run_sequence(seed, &candidate, scripts).0 {
                Some(divergence) => {
                    best = candidate[..=divergence.step].to_vec();
                    found = divergence;
                }
                None => start += chunk,
            }
        }
        if chunk == 1 {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    println!("  (shrunk with {replays} replays)");
    (best, found)
}

/// `1-40`, `7,9`, `3` → the seeds.
fn parse_seeds(text: &str) -> Vec<u64> {
    let mut seeds = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let number = |s: &str| -> u64 {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("KACHE_DIFFTEST_SEEDS: not a seed: {s:?}"))
        };
        match part.split_once('-') {
            Some((a, b)) => seeds.extend(number(a)..=number(b)),
            None => seeds.push(number(part)),
        }
    }
    seeds
}

/// `KACHE_DIFFTEST_STEPS`: a length, or the exact steps.
enum StepsChoice {
    Length(usize),
    Exact(Vec<Step>),
}

fn parse_steps(text: &str) -> StepsChoice {
    if let Ok(n) = text.trim().parse() {
        return StepsChoice::Length(n);
    }
    let steps = text
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| Step::parse(s).unwrap_or_else(|e| panic!("KACHE_DIFFTEST_STEPS: {e}")))
        .collect();
    StepsChoice::Exact(steps)
}

fn replay_line(seed: u64, steps: &[Step], scripts: bool) -> String {
    let list: Vec<String> = steps.iter().map(Step::to_string).collect();
    format!(
        "{}KACHE_DIFFTEST_SEEDS={seed} KACHE_DIFFTEST_STEPS='{}' \
         cargo nextest run -p kache --test difftest -j 1 --no-capture kache_matches_plain_cargo",
        if scripts {
            "KACHE_DIFFTEST_BUILD_SCRIPTS=1 "
        } else {
            ""
        },
        list.join("; ")
    )
}

/// A second checkout's restore of a build script must not make cargo rerun
/// that script in the first checkout: a hardlinked executable shares its
/// inode, and the fresh mtime the restore gives it reached the first
/// checkout, whose script then read an undeclared input plain cargo's did not.
#[test]
fn a_second_checkout_never_reruns_the_first_ones_build_script() {
    // SAFETY: nextest runs each test in its own process; nothing else reads
    // the environment while this is set.
    unsafe { std::env::set_var("KACHE_DIFFTEST_UNDECLARED", "1") };
    let steps: Vec<Step> = [
        "cargo build",
        "edit app/src/lib.rs=101",
        "second-checkout cargo build",
        "cargo build",
    ]
    .iter()
    .map(|s| Step::parse(s).expect("a step"))
    .collect();
    let (divergence, counts) = run_sequence(1, &steps, false);
    if let Some(d) = divergence {
        panic!("step {}: {} ({counts})", d.step, d.text);
    }
}

/// Nor may it make cargo in the first checkout rebuild anything: a
/// restored rlib linked to a blob the first checkout links too got a fresh
/// mtime there, so its dependents looked stale and `cdep`'s build script
/// (it has `cc` as a build-dependency) ran again, picking up an edit that
/// kept its mtime, which plain cargo never sees (seed 919's sequence, and
/// the same through a build-script run).
#[test]
fn a_second_checkout_leaves_the_first_ones_dependencies_untouched() {
    for (scripts, edit) in [
        (false, "keep-mtime-edit plug/src/lib.rs=103"),
        (true, "keep-mtime-edit cdep/csrc/val.c=104"),
    ] {
        let steps: Vec<Step> = [
            "cargo build",
            edit,
            "second-checkout cargo build",
            "cargo build",
        ]
        .iter()
        .map(|s| Step::parse(s).expect("a step"))
        .collect();
        let (divergence, counts) = run_sequence(1, &steps, scripts);
        if let Some(d) = divergence {
            panic!("{edit}: step {}: {} ({counts})", d.step, d.text);
        }
    }
}

#[test]
fn steps_print_as_they_parse() {
    for seed in 0..50 {
        for step in generate(seed, 40) {
            assert_eq!(Step::parse(&step.to_string()), Ok(step.clone()), "{step}");
        }
    }
    assert_eq!(parse_seeds("1-3,7"), vec![1, 2, 3, 7]);
    assert_eq!(set_marker(b"a /*dt*/101; b", 7), b"a /*dt*/7; b".to_vec());
}

#[test]
fn kache_matches_plain_cargo_over_random_developer_sequences() {
    let scripts = std::env::var_os("KACHE_DIFFTEST_BUILD_SCRIPTS").is_some_and(|v| v == "1");
    differential(CI_SEEDS, scripts);
}

/// The same with build-script runs cached, on seeds that edit, revert and
/// switch what the scripts read, flip features and variables, clean and
/// build `--release` and `-p`.
#[test]
fn build_script_runs_cached_agree_with_plain_cargo() {
    differential(CI_SCRIPT_SEEDS, true);
}

#[test]
fn the_build_script_seeds_hold_every_kind_of_step() {
    let steps: Vec<Step> = CI_SCRIPT_SEEDS
        .iter()
        .flat_map(|&seed| generate(seed, CI_STEPS))
        .collect();
    let has = |what: &str, f: &dyn Fn(&Step) -> bool| {
        assert!(steps.iter().any(f), "no {what} step in CI_SCRIPT_SEEDS");
    };
    let cargo = |step: &Step, first: &str, flag: &str| matches!(step, Step::Cargo(a) if a[0] == first && (flag.is_empty() || a.iter().any(|x| x == flag)));
    has(
        "revert of a script's input",
        &|s| matches!(s, Step::Revert { file } if file.starts_with("leaf/") || file.starts_with("app/") || file.starts_with("cdep/")),
    );
    has(
        "edit of app/build.rs",
        &|s| matches!(s, Step::Edit { file, .. } if file == "app/build.rs"),
    );
    has(
        "edit of the undeclared app/src/lib.rs",
        &|s| matches!(s, Step::Edit { file, .. } if file == "app/src/lib.rs"),
    );
    has("feature flip", &|s| *s == Step::FlipFeature);
    has(
        "declared variable",
        &|s| matches!(s, Step::Env { var, .. } if var == "DT_MACRO_ENV"),
    );
    has("declared folder change", &|s| {
        matches!(s, Step::AddData { .. })
    });
    has("branch switch", &|s| *s == Step::SwitchBranch);
    has(
        "cargo clean",
        &|s| matches!(s, Step::Cargo(a) if a.len() == 1 && a[0] == "clean"),
    );
    has("cargo clean -p", &|s| cargo(s, "clean", "-p"));
    has("cargo build --release", &|s| cargo(s, "build", "--release"));
    has("cargo build -p", &|s| cargo(s, "build", "-p"));
    has("second checkout", &|s| matches!(s, Step::Second(_)));
}

/// Runs `KACHE_DIFFTEST_SEEDS` (default `default_seeds`) and fails on any
/// divergence; `scripts`: build-script runs cached on the kache side.
fn differential(default_seeds: &[u64], scripts: bool) {
    let seeds = std::env::var("KACHE_DIFFTEST_SEEDS")
        .map(|s| parse_seeds(&s))
        .unwrap_or_else(|_| default_seeds.to_vec());
    let choice = std::env::var("KACHE_DIFFTEST_STEPS")
        .map(|s| parse_steps(&s))
        .unwrap_or(StepsChoice::Length(CI_STEPS));
    let budget = std::env::var("KACHE_DIFFTEST_SHRINK")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let started = Instant::now();
    let mut total_steps = 0;
    let mut divergences = Vec::new();
    for &seed in &seeds {
        let steps = match &choice {
            StepsChoice::Length(n) => generate(seed, *n),
            StepsChoice::Exact(list) => list.clone(),
        };
        let seed_started = Instant::now();
        let (divergence, outcomes) = run_sequence(seed, &steps, scripts);
        let ran = divergence.as_ref().map_or(steps.len(), |d| d.step + 1);
        total_steps += ran;
        println!(
            "difftest seed {seed}: {ran}/{} steps, {} divergence(s), {:.0?} (kache: {outcomes})",
            steps.len(),
            usize::from(divergence.is_some()),
            seed_started.elapsed()
        );
        if let Some(first) = divergence {
            println!("DIVERGENCE seed {seed} {}", first.text);
            let (minimal, found) = shrink(seed, steps, first, budget, scripts);
            println!(
                "  minimal ({} steps), {}\n  replay: {}",
                minimal.len(),
                found.text,
                replay_line(seed, &minimal, scripts)
            );
            divergences.push(replay_line(seed, &minimal, scripts));
        }
    }
    println!(
        "difftest summary: sequences={} steps={} divergences={} time={:.0?}",
        seeds.len(),
        total_steps,
        divergences.len(),
        started.elapsed()
    );
    assert!(
        divergences.is_empty(),
        "kache diverged from plain cargo; replay with:\n{}",
        divergences.join("\n")
    );
}
