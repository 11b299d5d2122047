//! Incremental compilation through kache: cargo's `-C incremental=<dir>`
//! reaches rustc, the incremental directory stays rustc's alone (a hit leaves
//! it as it was, so the next edit is still an incremental compile), and an
//! entry compiled incrementally never serves a non-incremental build.
//!
//! `World` sets `CARGO_INCREMENTAL=0` for every other test; these set it
//! explicitly (or remove it, to let the profile decide).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{EXPECTED_LINE as EXPECTED, LIBS, Run, World, edit, run_app};

const ON: &[(&str, &str)] = &[("CARGO_INCREMENTAL", "1")];
const OFF: &[(&str, &str)] = &[("CARGO_INCREMENTAL", "0")];
/// Plain cargo: an empty `RUSTC_WRAPPER` turns the wrapper off.
const PLAIN_ON: &[(&str, &str)] = &[("CARGO_INCREMENTAL", "1"), ("RUSTC_WRAPPER", "")];

const CORE: &str = "core/src/lib.rs";
const FORMAT: &str = r#""{} v{} {}/{}""#;
const ONCE: &str = r#""{} v{} {}/{} once""#;
const TWICE: &str = r#""{} v{} {}/{} twice""#;

/// rustc's incremental directories of `crate_name` under
/// `target/<profile>/incremental` (`<crate>-<hash>`).
fn crate_dirs(project: &Path, profile: &str, crate_name: &str) -> Vec<PathBuf> {
    let root = project.join("target").join(profile).join("incremental");
    let prefix = format!("{crate_name}-");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

/// The finalized session directories (`s-…`, not `-working`) rustc left for
/// `crate_name`.
fn sessions(project: &Path, profile: &str, crate_name: &str) -> BTreeSet<PathBuf> {
    crate_dirs(project, profile, crate_name)
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().flatten())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.starts_with("s-") && !name.ends_with("-working")
        })
        .map(|e| e.path())
        .collect()
}

/// The one session directory of `crate_name` that is not in `before`.
fn new_session(
    project: &Path,
    profile: &str,
    crate_name: &str,
    before: &BTreeSet<PathBuf>,
) -> PathBuf {
    let now = sessions(project, profile, crate_name);
    let new: Vec<&PathBuf> = now.difference(before).collect();
    assert_eq!(
        new.len(),
        1,
        "one new incremental session for {crate_name}: before {before:?}, now {now:?}"
    );
    new[0].clone()
}

/// The single session directory of `crate_name`.
fn only_session(project: &Path, profile: &str, crate_name: &str) -> PathBuf {
    new_session(project, profile, crate_name, &BTreeSet::new())
}

/// Every file under `dir` with its identity: inode, size and modification
/// time. Two paths with the same identity are hard links of one file.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, u64, i64, i64)> {
    files(dir)
        .into_iter()
        .map(|(path, meta)| {
            let id = (meta.ino(), meta.size(), meta.mtime(), meta.mtime_nsec());
            (path, id)
        })
        .collect()
}

/// Every file under `dir` with its inode and bytes. Times are left out: a
/// hit restores `libfx_core-….rmeta` by hardlinking a blob that is the very
/// inode rustc hard-linked into its session as `metadata.rmeta`, and the
/// restore sets that inode's mtime to now (cargo compares mtimes); rustc
/// finds its work products by name and hash, never by time.
fn contents(dir: &Path) -> BTreeMap<PathBuf, (u64, Vec<u8>)> {
    files(dir)
        .into_iter()
        .map(|(path, meta)| {
            let bytes = std::fs::read(&path).expect("read incremental file");
            (path, (meta.ino(), bytes))
        })
        .collect()
}

fn files(dir: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)
            .expect("read incremental dir")
            .flatten()
        {
            let meta = entry.metadata().expect("stat");
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                out.push((entry.path(), meta));
            }
        }
    }
    out
}

fn identities(dir: &Path) -> BTreeSet<(u64, u64, i64, i64)> {
    snapshot(dir).into_values().collect()
}

/// Panics unless session `new` holds files carried over (hard-linked by
/// rustc) from `old`'s identities: rustc loaded that state and reused the
/// work products an edit did not touch, rather than starting from scratch.
fn assert_carried_over(old: &BTreeSet<(u64, u64, i64, i64)>, new: &Path) {
    let now = identities(new);
    let reused = now.intersection(old).count();
    assert!(
        reused > 0,
        "{} shares no file with the previous session: not an incremental compile from it",
        new.display()
    );
}

/// File names inside a session directory (rustc names them after its
/// codegen units, so the same source gives the same names).
fn names(session: &Path) -> BTreeSet<String> {
    std::fs::read_dir(session)
        .expect("read session")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect()
}

/// `cargo <args>` through kache with `CARGO_INCREMENTAL` unset, so the
/// profile's `incremental` setting decides.
fn cargo_profile_decides(world: &World, dir: &Path, args: &[&str]) -> Run {
    cargo_env(world, dir, args, &[], &["CARGO_INCREMENTAL"])
}

/// `cargo <args>` through kache with `set` added to and `remove` taken out
/// of the test's environment.
fn cargo_env(
    world: &World,
    dir: &Path,
    args: &[&str],
    set: &[(&str, &str)],
    remove: &[&str],
) -> Run {
    let before = world.events().len();
    let mut cmd = world.command("cargo", dir);
    cmd.args(args).arg("--offline");
    for name in remove {
        cmd.env_remove(name);
    }
    for (name, value) in set {
        cmd.env(name, value);
    }
    let output = cmd.output().expect("run cargo");
    let events = world.events().split_off(before);
    Run { output, events }
}

/// Panics unless every cached unit of every library crate of the fixture
/// had `outcome` (a release build compiles `fx_macros` twice: as a member
/// and, with the build-override profile, as fx_app's proc-macro).
fn assert_libs(run: &Run, outcome: &str) {
    let outcomes = run.outcomes();
    for lib in LIBS {
        let cached: Vec<&String> = outcomes
            .get(*lib)
            .unwrap_or_else(|| panic!("{lib} did not run: {outcomes:?}"))
            .iter()
            .filter(|o| *o != "passthrough")
            .collect();
        assert!(
            !cached.is_empty() && cached.iter().all(|o| *o == outcome),
            "{lib}: expected {outcome}: {outcomes:?}"
        );
    }
}

fn run_release_app(project: &Path) -> String {
    let output = Command::new(project.join("target/release/fx-app"))
        .output()
        .expect("run fx-app");
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Every path an entry in the store restores to: `meta.json` names flat
/// files, restored into the compile's `--out-dir` (`deps/`).
fn stored_file_names(world: &World) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(world.cache.join("store"))
        .expect("read store")
        .flatten()
    {
        let meta = entry.path().join("meta.json");
        let Ok(text) = std::fs::read_to_string(&meta) else {
            continue;
        };
        let json: serde_json::Value = serde_json::from_str(&text).expect("meta.json is JSON");
        for file in json["files"].as_array().into_iter().flatten() {
            names.push(file["name"].as_str().unwrap_or_default().to_string());
        }
    }
    names
}

#[test]
fn an_edit_after_a_warm_build_and_after_a_hit_is_an_incremental_compile() {
    let world = World::new();
    let project = world.project("p");
    // Plain cargo does the same edits beside it: what rustc itself leaves.
    let plain = world.project("plain");

    let cold = world.cargo_with(&project, &["build"], ON).ok();
    assert_eq!(cold.outcome("fx_core"), "miss");
    assert_eq!(run_app(&project), EXPECTED);
    let first = only_session(&project, "debug", "fx_core");
    world.cargo_with(&plain, &["build"], PLAIN_ON).ok();

    // An edit: rustc compiles fx_core from the state it wrote.
    let before = sessions(&project, "debug", "fx_core");
    let first_files = identities(&first);
    edit(&project, CORE, FORMAT, ONCE);
    let once = world.cargo_with(&project, &["build"], ON).ok();
    assert_eq!(once.outcome("fx_core"), "miss");
    assert_eq!(
        run_app(&project),
        "hello v0.1.0 alpha/none once | answer=42"
    );
    let after_once = new_session(&project, "debug", "fx_core", &before);
    assert_carried_over(&first_files, &after_once);
    edit(&plain, CORE, FORMAT, ONCE);
    world.cargo_with(&plain, &["build"], PLAIN_ON).ok();

    // Reverting is a hit: the entry of the first build is restored, and
    // rustc's directory for fx_core is left exactly as it was.
    let kept: Vec<_> = crate_dirs(&project, "debug", "fx_core")
        .iter()
        .map(|d| contents(d))
        .collect();
    assert!(!kept.is_empty());
    edit(&project, CORE, ONCE, FORMAT);
    let back = world.cargo_with(&project, &["build"], ON).ok();
    assert_eq!(back.outcome("fx_core"), "hit", "{:?}", back.outcomes());
    assert_eq!(run_app(&project), EXPECTED);
    let after_hit: Vec<_> = crate_dirs(&project, "debug", "fx_core")
        .iter()
        .map(|d| contents(d))
        .collect();
    let changed: Vec<&PathBuf> = kept
        .iter()
        .chain(&after_hit)
        .flat_map(|dir| dir.keys())
        .filter(|path| {
            let was = kept.iter().find_map(|d| d.get(*path));
            let is = after_hit.iter().find_map(|d| d.get(*path));
            was != is
        })
        .collect();
    assert!(
        changed.is_empty(),
        "a hit changed rustc's incremental directory: {changed:?}"
    );
    edit(&plain, CORE, ONCE, FORMAT);
    world.cargo_with(&plain, &["build"], PLAIN_ON).ok();

    // The next edit after the hit is still incremental, from the state
    // rustc last wrote (the `once` compile), and the program is right.
    let before = sessions(&project, "debug", "fx_core");
    let once_files = identities(&after_once);
    edit(&project, CORE, FORMAT, TWICE);
    let twice = world.cargo_with(&project, &["build"], ON).ok();
    assert_eq!(twice.outcome("fx_core"), "miss");
    assert_eq!(
        run_app(&project),
        "hello v0.1.0 alpha/none twice | answer=42"
    );
    let after_twice = new_session(&project, "debug", "fx_core", &before);
    assert_carried_over(&once_files, &after_twice);
    edit(&plain, CORE, FORMAT, TWICE);
    world.cargo_with(&plain, &["build"], PLAIN_ON).ok();
    assert_eq!(run_app(&plain), "hello v0.1.0 alpha/none twice | answer=42");

    // Nothing in the session is kache's: it holds the files plain cargo's
    // rustc writes for the same source, and the store restores only flat
    // names into `deps/`.
    let plain_latest = sessions(&plain, "debug", "fx_core")
        .into_iter()
        .max_by_key(|s| std::fs::metadata(s).and_then(|m| m.modified()).ok())
        .expect("plain cargo's fx_core session");
    let rustc_names = names(&plain_latest);
    assert_eq!(names(&after_twice), rustc_names);
    let stored = stored_file_names(&world);
    assert!(!stored.is_empty());
    for name in stored {
        assert!(
            !name.contains('/') && !name.starts_with('.') && !rustc_names.contains(&name),
            "an entry restores {name:?}"
        );
    }
}

#[test]
fn a_crate_under_work_gets_its_incremental_state_back_after_cargo_clean() {
    // Three versions of fx_core stored within hours make it a crate under
    // work: after `cargo clean` (no session left) it is compiled, not
    // restored, so the next edit is incremental again; outside CI only.
    let world = World::new();
    let project = world.project("p");
    let local = |world: &World, args: &[&str]| cargo_env(world, &project, args, ON, &["CI"]).ok();
    local(&world, &["build"]);
    edit(&project, CORE, FORMAT, ONCE);
    local(&world, &["build"]);
    edit(&project, CORE, ONCE, TWICE);
    local(&world, &["build"]);

    local(&world, &["clean"]);
    let warm = local(&world, &["build"]);
    assert_eq!(warm.outcome("fx_core"), "miss", "{:?}", warm.outcomes());
    let reason = warm
        .events
        .iter()
        .find(|e| e["crate_name"] == "fx_core")
        .and_then(|e| e["reason"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("incremental state"), "reason: {reason:?}");
    for lib in ["fx_gen", "fx_macros", "build_script_build"] {
        assert_eq!(warm.outcome(lib), "hit", "{lib}: {:?}", warm.outcomes());
    }
    assert_eq!(
        run_app(&project),
        "hello v0.1.0 alpha/none twice | answer=42"
    );
    let state = only_session(&project, "debug", "fx_core");

    let before = sessions(&project, "debug", "fx_core");
    let state_files = identities(&state);
    edit(&project, CORE, TWICE, ONCE);
    let next = local(&world, &["build"]);
    assert_eq!(
        next.outcome("fx_core"),
        "hit",
        "an older version is still served"
    );
    assert_eq!(
        run_app(&project),
        "hello v0.1.0 alpha/none once | answer=42"
    );
    edit(&project, CORE, ONCE, r#""{} v{} {}/{} thrice""#);
    let edited = local(&world, &["build"]);
    assert_eq!(edited.outcome("fx_core"), "miss");
    assert_eq!(
        run_app(&project),
        "hello v0.1.0 alpha/none thrice | answer=42"
    );
    let after = new_session(&project, "debug", "fx_core", &before);
    assert_carried_over(&state_files, &after);

    // In CI nobody edits: every hit counts.
    local(&world, &["clean"]);
    let ci = cargo_env(
        &world,
        &project,
        &["build"],
        &[("CARGO_INCREMENTAL", "1"), ("CI", "true")],
        &[],
    )
    .ok();
    assert_eq!(ci.outcome("fx_core"), "hit", "{:?}", ci.outcomes());
}

#[test]
fn an_incremental_entry_never_serves_a_non_incremental_build() {
    let world = World::new();
    let project = world.project("p");
    let incremental = world.cargo_with(&project, &["build"], ON).ok();
    for lib in LIBS {
        assert_eq!(incremental.outcome(lib), "miss", "{lib}");
    }
    assert!(!sessions(&project, "debug", "fx_core").is_empty());

    world.cargo(&project, &["clean"]).ok();
    let whole = world.cargo_with(&project, &["build"], OFF).ok();
    for lib in LIBS {
        assert_eq!(
            whole.outcome(lib),
            "miss",
            "{lib}: an incremental entry served a non-incremental build: {:?}",
            whole.outcomes()
        );
    }
    assert_eq!(run_app(&project), EXPECTED);
    assert!(
        crate_dirs(&project, "debug", "fx_core").is_empty(),
        "no incremental state without CARGO_INCREMENTAL"
    );

    // Both kinds are cached side by side.
    for env in [ON, OFF] {
        world.cargo(&project, &["clean"]).ok();
        let warm = world.cargo_with(&project, &["build"], env).ok();
        for lib in LIBS {
            assert_eq!(
                warm.outcome(lib),
                "hit",
                "{lib} with {env:?}: {:?}",
                warm.outcomes()
            );
        }
        assert_eq!(run_app(&project), EXPECTED);
    }
}

#[test]
fn the_same_rustc_call_with_and_without_incremental_has_two_keys() {
    // Cargo already gives the two builds above different `-C metadata`;
    // this is the key's own promise: rustc called through kache with
    // nothing but `-C incremental` differing.
    let world = World::new();
    let dir = world.root.path().join("direct");
    let target = dir.join("target");
    std::fs::create_dir_all(target.join("debug/deps")).expect("mkdir");
    std::fs::write(
        target.join("CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n",
    )
    .expect("write the tag");
    std::fs::write(dir.join("lib.rs"), "pub fn seven() -> u8 { 7 }\n").expect("write lib.rs");
    let deps = target.join("debug/deps").to_string_lossy().to_string();
    let state = format!("incremental={}", target.join("debug/incremental").display());
    let rustc = |incremental: bool| -> String {
        let before = world.events().len();
        let mut cmd = world.command(common::KACHE, &dir);
        cmd.args([
            "rustc",
            "--crate-name",
            "direct",
            "--edition=2021",
            "lib.rs",
            "--crate-type",
            "lib",
            "--emit=dep-info,metadata,link",
            "-C",
            "metadata=0123456789abcdef",
            "-C",
            "extra-filename=-0123456789abcdef",
            "--out-dir",
            &deps,
        ]);
        if incremental {
            cmd.args(["-C", &state]);
        }
        let status = cmd.status().expect("run kache rustc");
        assert!(status.success());
        let events = world.events().split_off(before);
        assert_eq!(events.len(), 1, "{events:?}");
        events[0]["outcome"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(rustc(true), "miss");
    assert_eq!(
        rustc(false),
        "miss",
        "an incremental entry served a non-incremental call"
    );
    assert_eq!(rustc(true), "hit");
    assert_eq!(rustc(false), "hit");
    assert!(
        !crate_dirs(&dir, "debug", "direct").is_empty(),
        "rustc wrote its incremental state"
    );
}

#[test]
fn release_profile_with_incremental_on_compiles_hits_and_stays_incremental() {
    let world = World::new();
    let project = world.project("p");
    let manifest = project.join("Cargo.toml");
    let mut text = std::fs::read_to_string(&manifest).expect("read Cargo.toml");
    text.push_str("\n[profile.release]\nincremental = true\n");
    std::fs::write(&manifest, text).expect("write Cargo.toml");

    let cold = cargo_profile_decides(&world, &project, &["build", "--release"]).ok();
    assert_libs(&cold, "miss");
    assert_eq!(run_release_app(&project), EXPECTED);
    let first = only_session(&project, "release", "fx_core");

    world.cargo(&project, &["clean"]).ok();
    let warm = cargo_profile_decides(&world, &project, &["build", "--release"]).ok();
    assert_libs(&warm, "hit");
    assert_eq!(run_release_app(&project), EXPECTED);
    assert!(
        crate_dirs(&project, "release", "fx_core").is_empty(),
        "cargo clean removed rustc's state and a hit wrote none"
    );

    // After a clean there is no state: the first edit compiles fx_core
    // whole (and writes a session), the next one incrementally from it.
    edit(&project, CORE, FORMAT, ONCE);
    let once = cargo_profile_decides(&world, &project, &["build", "--release"]).ok();
    assert_eq!(once.outcome("fx_core"), "miss");
    assert_eq!(
        run_release_app(&project),
        "hello v0.1.0 alpha/none once | answer=42"
    );
    let after_once = only_session(&project, "release", "fx_core");
    assert_ne!(after_once, first);

    let before = sessions(&project, "release", "fx_core");
    let once_files = identities(&after_once);
    edit(&project, CORE, ONCE, TWICE);
    let twice = cargo_profile_decides(&world, &project, &["build", "--release"]).ok();
    assert_eq!(twice.outcome("fx_core"), "miss");
    assert_eq!(
        run_release_app(&project),
        "hello v0.1.0 alpha/none twice | answer=42"
    );
    let after_twice = new_session(&project, "release", "fx_core", &before);
    assert_carried_over(&once_files, &after_twice);
}
