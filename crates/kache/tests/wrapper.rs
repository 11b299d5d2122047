//! End-to-end behaviour of kache as cargo's RUSTC_WRAPPER, on real cargo
//! builds of the fixture workspace (see `common::fixture_source`).

mod common;

use common::{LIBS, World, edit, run_app};

use common::EXPECTED_LINE as EXPECTED;

#[test]
fn clean_rebuild_hits_every_cacheable_unit_and_prints_the_same() {
    let world = World::new();
    let project = world.project("p");
    let cold = world.cargo(&project, &["build"]).ok();
    for lib in LIBS {
        assert_eq!(cold.outcome(lib), "miss", "{lib}");
    }
    assert_eq!(cold.outcome("fx_app").as_str(), "miss");
    assert_eq!(run_app(&project), EXPECTED);

    world.cargo(&project, &["clean"]).ok();
    let warm = world.cargo(&project, &["build"]).ok();
    for lib in LIBS {
        assert_eq!(warm.outcome(lib), "hit", "{lib}: {:?}", warm.outcomes());
    }
    // The binary is a user-facing executable: compiled, not cached.
    let app = warm.outcomes();
    assert!(app["fx_app"].contains(&"hit".to_string()));
    assert_eq!(run_app(&project), EXPECTED);
    assert!(
        warm.stderr().contains("[kache] fx_core: local hit ("),
        "{}",
        warm.stderr()
    );
}

#[test]
fn warnings_are_shown_on_a_hit() {
    let world = World::new();
    let project = world.project("p");
    let cold = world.cargo(&project, &["build"]).ok();
    assert!(cold.stderr().contains("unused_on_purpose"));
    world.cargo(&project, &["clean"]).ok();
    let warm = world.cargo(&project, &["build"]).ok();
    assert_eq!(warm.outcome("fx_core"), "hit");
    assert!(
        warm.stderr()
            .contains("unused variable: `unused_on_purpose`"),
        "{}",
        warm.stderr()
    );
    assert!(
        warm.stderr().contains("core/src/lib.rs"),
        "the warning points at the source"
    );
}

/// Builds, applies `change`, checks the new output and which crates missed,
/// then reverts and checks the original output comes back from the cache.
fn assert_change_rebuilds(
    change: impl Fn(&World, &std::path::Path),
    revert: impl Fn(&World, &std::path::Path),
    extra_env: &[(&str, &str)],
    expected: &str,
    must_miss: &[&str],
) {
    let world = World::new();
    let project = world.project("p");
    world.cargo(&project, &["build"]).ok();
    assert_eq!(run_app(&project), EXPECTED);

    change(&world, &project);
    let changed = world.cargo_with(&project, &["build"], extra_env).ok();
    assert_eq!(run_app(&project), expected, "{:?}", changed.outcomes());
    for name in must_miss {
        let outcomes = changed.outcomes();
        let list = outcomes
            .get(*name)
            .unwrap_or_else(|| panic!("{name} did not rebuild: {outcomes:?}"));
        let cached: Vec<_> = list.iter().filter(|o| *o != "passthrough").collect();
        assert!(
            !cached.is_empty() && cached.iter().all(|o| *o == "miss" || *o == "dup"),
            "{name}: {list:?}"
        );
    }

    revert(&world, &project);
    world.cargo(&project, &["clean"]).ok();
    let back = world.cargo(&project, &["build"]).ok();
    for lib in LIBS {
        assert_eq!(
            back.outcome(lib),
            "hit",
            "{lib} after revert: {:?}",
            back.outcomes()
        );
    }
    assert_eq!(run_app(&project), EXPECTED, "nothing stale after reverting");
}

#[test]
fn editing_a_source_file_rebuilds_it() {
    assert_change_rebuilds(
        |_, p| {
            edit(
                p,
                "core/src/lib.rs",
                "GREETING.trim()",
                "GREETING.trim().replace('h', \"j\")",
            )
        },
        |_, p| {
            edit(
                p,
                "core/src/lib.rs",
                "GREETING.trim().replace('h', \"j\")",
                "GREETING.trim()",
            )
        },
        &[],
        "jello v0.1.0 alpha/none | answer=42",
        &["fx_core"],
    );
}

#[test]
fn editing_a_build_script_input_regenerates_and_rebuilds() {
    assert_change_rebuilds(
        |_, p| edit(p, "gen/schema.txt", "alpha", "beta"),
        |_, p| edit(p, "gen/schema.txt", "beta", "alpha"),
        &[],
        "hello v0.1.0 beta/none | answer=42",
        &["fx_gen"],
    );
}

#[test]
fn editing_an_included_file_rebuilds() {
    assert_change_rebuilds(
        |_, p| edit(p, "core/greeting.txt", "hello", "howdy"),
        |_, p| edit(p, "core/greeting.txt", "howdy", "hello"),
        &[],
        "howdy v0.1.0 alpha/none | answer=42",
        &["fx_core"],
    );
}

#[test]
fn changing_an_env_value_rebuilds() {
    assert_change_rebuilds(
        |_, _| {},
        |_, _| {},
        &[("FX_SUFFIX", "set")],
        "hello v0.1.0 alpha/set | answer=42",
        &["fx_core"],
    );
}

#[test]
fn changing_rustflags_rebuilds() {
    assert_change_rebuilds(
        |_, _| {},
        |_, _| {},
        &[("RUSTFLAGS", "--cfg fx_flag")],
        "hello v0.1.0 alpha/none | answer=42 | flag",
        &["fx_app", "fx_core", "fx_gen"],
    );
}

#[test]
fn toggling_a_feature_rebuilds_and_both_variants_are_cached() {
    let world = World::new();
    let project = world.project("p");
    world.cargo(&project, &["build"]).ok();
    let shout = world
        .cargo(&project, &["build", "--features", "shout"])
        .ok();
    assert_eq!(shout.outcome("fx_core"), "miss");
    assert_eq!(run_app(&project), "HELLO V0.1.0 ALPHA/NONE | answer=42");
    world.cargo(&project, &["clean"]).ok();
    let quiet = world.cargo(&project, &["build"]).ok();
    assert_eq!(quiet.outcome("fx_core"), "hit");
    assert_eq!(run_app(&project), EXPECTED);
    let loud = world
        .cargo(&project, &["build", "--features", "shout"])
        .ok();
    assert_eq!(loud.outcome("fx_core"), "hit");
    assert_eq!(run_app(&project), "HELLO V0.1.0 ALPHA/NONE | answer=42");
}

#[test]
fn a_check_entry_never_serves_a_build() {
    let world = World::new();
    let project = world.project("p");
    let check = world.cargo(&project, &["check"]).ok();
    assert_eq!(check.outcome("fx_core"), "miss");
    let build = world.cargo(&project, &["build"]).ok();
    for lib in ["fx_core", "fx_gen", "fx_app"] {
        assert_ne!(
            build.outcome(lib),
            "hit",
            "{lib} must not be served by a check entry"
        );
    }
    assert_eq!(run_app(&project), EXPECTED);
    world.cargo(&project, &["clean"]).ok();
    let check_again = world.cargo(&project, &["check"]).ok();
    assert_eq!(
        check_again.outcome("fx_core"),
        "hit",
        "the check entry still serves checks"
    );
}

#[test]
fn the_same_project_in_another_directory_hits() {
    let world = World::new();
    let first = world.project("first");
    world.cargo(&first, &["build"]).ok();
    let second = world.project("elsewhere/second-checkout");
    let run = world.cargo(&second, &["build"]).ok();
    for lib in LIBS.iter().filter(|l| **l != "fx_app") {
        assert_eq!(run.outcome(lib), "hit", "{lib}: {:?}", run.outcomes());
    }
    // fx_app bakes env!("CARGO_MANIFEST_DIR") into its code: serving the first
    // checkout's entry would be a wrong hit, so it must compile again.
    assert_eq!(run.outcome("fx_app"), "miss", "{:?}", run.outcomes());
    assert_eq!(run_app(&second), EXPECTED);
    let dir = std::process::Command::new(second.join("target/debug/fx-app"))
        .arg("--dir")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&dir.stdout).trim(),
        second.join("app").to_str().unwrap()
    );
    // Restored dep-info names the second checkout, so cargo tracks its files.
    let deps = std::fs::read_dir(second.join("target/debug/deps")).unwrap();
    let dep_info = deps
        .flatten()
        .find(|e| {
            e.file_name().to_string_lossy().starts_with("fx_core-")
                && e.file_name().to_string_lossy().ends_with(".d")
        })
        .expect("fx_core dep-info");
    let text = std::fs::read_to_string(dep_info.path()).unwrap();
    assert!(text.contains(second.to_str().unwrap()), "{text}");
    assert!(!text.contains(first.to_str().unwrap()), "{text}");
    // An edit in the second checkout is still seen.
    edit(&second, "core/greeting.txt", "hello", "hi");
    world.cargo(&second, &["build"]).ok();
    assert_eq!(run_app(&second), "hi v0.1.0 alpha/none | answer=42");
}

#[test]
fn racing_builds_on_one_store_both_succeed_and_compile_each_key_once() {
    let world = World::new();
    let a = world.project("a");
    let b = world.project("b");
    let spawn = |dir: &std::path::Path| {
        world
            .command("cargo", dir)
            .args(["build", "--offline"])
            .spawn()
            .expect("spawn cargo")
    };
    let (mut first, mut second) = (spawn(&a), spawn(&b));
    assert!(first.wait().unwrap().success());
    assert!(second.wait().unwrap().success());
    assert_eq!(run_app(&a), EXPECTED);
    assert_eq!(run_app(&b), EXPECTED);
    let mut misses = std::collections::BTreeMap::<String, usize>::new();
    for event in world.events() {
        if event["outcome"] == "miss" {
            *misses
                .entry(event["crate_name"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    for lib in ["fx_core", "fx_gen", "fx_macros"] {
        assert_eq!(
            misses.get(lib),
            Some(&1),
            "{lib} compiled once, restored once: {misses:?}"
        );
    }
}

#[test]
fn integration_tests_build_and_pass_with_cached_libraries() {
    let world = World::new();
    let project = world.project("p");
    world.cargo(&project, &["test"]).ok();
    world.cargo(&project, &["clean"]).ok();
    let again = world.cargo(&project, &["test"]).ok();
    assert_eq!(again.outcome("fx_core"), "hit");
    let stdout = String::from_utf8_lossy(&again.output.stdout);
    assert!(
        stdout.contains("test line_mentions_the_answer ... ok"),
        "{stdout}"
    );
    // Test harnesses are user-facing executables: not cached by default.
    assert!(again.events.iter().any(|e| e["outcome"] == "passthrough"));
}

#[test]
fn executables_are_cached_only_when_asked() {
    let mut world = World::new();
    world
        .env
        .push(("KACHE_CACHE_EXECUTABLES".into(), "1".into()));
    let project = world.project("p");
    let cold = world.cargo(&project, &["build"]).ok();
    assert!(cold.outcomes()["fx_app"].iter().all(|o| o == "miss"));
    world.cargo(&project, &["clean"]).ok();
    let warm = world.cargo(&project, &["build"]).ok();
    assert!(
        warm.outcomes()["fx_app"].iter().all(|o| o == "hit"),
        "{:?}",
        warm.outcomes()
    );
    assert_eq!(
        run_app(&project),
        EXPECTED,
        "a restored binary is executable and runs"
    );
}

#[test]
fn disabled_passes_everything_through() {
    let mut world = World::new();
    world.env.push(("KACHE_DISABLED".into(), "true".into()));
    let project = world.project("p");
    let run = world.cargo(&project, &["build"]).ok();
    assert!(run.events.is_empty(), "{:?}", run.outcomes());
    assert!(world.blobs().is_empty());
    assert_eq!(run_app(&project), EXPECTED);
}

#[test]
fn progress_hits_prints_only_hit_lines() {
    let mut world = World::new();
    world.env.push(("KACHE_PROGRESS".into(), "hits".into()));
    let project = world.project("p");
    let cold = world.cargo(&project, &["build"]).ok();
    assert!(!cold.stderr().contains("[kache]"), "{}", cold.stderr());
    world.cargo(&project, &["clean"]).ok();
    let warm = world.cargo(&project, &["build"]).ok();
    let stderr = warm.stderr();
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("[kache] "))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[kache] fx_gen: local hit (") && l.ends_with(')')),
        "{lines:?}"
    );
    assert!(
        lines.iter().all(|l| l.contains(": local hit (")),
        "{lines:?}"
    );
}

#[test]
fn a_wrong_toolchain_state_or_unusable_store_never_fails_the_build() {
    let mut world = World::new();
    // A cache directory that cannot be created: a regular file is in the way.
    let blocker = world.root.path().join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    world.env.push((
        "KACHE_CACHE_DIR".into(),
        blocker.join("cache").to_string_lossy().into(),
    ));
    let project = world.project("p");
    world.cargo(&project, &["build"]).ok();
    assert_eq!(run_app(&project), EXPECTED);
}

#[test]
fn a_build_without_kache_after_kache_restored_files_still_works() {
    let world = World::new();
    let project = world.project("p");
    world.cargo(&project, &["build"]).ok();
    world.cargo(&project, &["clean"]).ok();
    world.cargo(&project, &["build"]).ok();
    edit(&project, "core/greeting.txt", "hello", "plain");
    let plain = world
        .command("cargo", &project)
        .env_remove("RUSTC_WRAPPER")
        .args(["build", "--offline"])
        .output()
        .unwrap();
    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    assert_eq!(run_app(&project), "plain v0.1.0 alpha/none | answer=42");
}

#[test]
fn a_blob_written_through_a_hardlink_is_never_restored() {
    let world = World::new();
    let project = world.project("p");
    world.cargo(&project, &["build"]).ok();
    world.cargo(&project, &["clean"]).ok();
    assert_eq!(
        world.cargo(&project, &["build"]).ok().outcome("fx_core"),
        "hit"
    );

    // Some tool rewrites fx_core's rlib in place. It shares its inode with
    // the blob, so the stored bytes change too (same size, new content).
    let deps = project.join("target/debug/deps");
    let rlib = std::fs::read_dir(&deps)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("libfx_core-")
                && p.extension().is_some_and(|e| e == "rlib")
        })
        .expect("fx_core rlib");
    let mut bytes = std::fs::read(&rlib).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().write(true).open(&rlib).unwrap();
        file.write_all(&bytes).unwrap();
    }

    world.cargo(&project, &["clean"]).ok();
    let after = world.cargo(&project, &["build"]).ok();
    assert_eq!(
        after.outcome("fx_core"),
        "miss",
        "corrupt bytes are never restored: {:?}",
        after.outcomes()
    );
    assert_eq!(run_app(&project), EXPECTED);
    world.cargo(&project, &["clean"]).ok();
    let healed = world.cargo(&project, &["build"]).ok();
    assert_eq!(
        healed.outcome("fx_core"),
        "hit",
        "the fresh compile was stored again"
    );
    assert_eq!(run_app(&project), EXPECTED);
}

#[test]
fn a_corrupt_index_never_fails_the_build_and_commands_say_why() {
    let world = World::new();
    let project = world.project("p");
    world.cargo(&project, &["build"]).ok();
    let index = world.cache.join("index.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", index.display()));
    }
    std::fs::write(&index, vec![0x42u8; 8192]).unwrap();
    world.cargo(&project, &["clean"]).ok();
    let healed = world.cargo(&project, &["build"]).ok();
    assert_eq!(run_app(&project), EXPECTED);
    // The build says why and heals it (crates/kache/tests/self_heal.rs):
    // the damaged file is kept aside, a new index is built from the store.
    assert!(
        healed
            .stderr()
            .lines()
            .any(|l| l.starts_with("kache: ") && l.contains("index.db")),
        "{}",
        healed.stderr()
    );
    let stats = world.kache(&["stats"]);
    assert!(stats.status.success());
    let kept = std::fs::read_dir(&world.cache)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("index.db.broken-"))
        .expect("the damaged index is kept");
    assert_eq!(
        std::fs::read(&kept).unwrap(),
        vec![0x42u8; 8192],
        "kache never overwrote the damaged index"
    );
}

#[test]
fn clippy_runs_are_cached_apart_from_checks_and_follow_clippy_toml() {
    let world = World::new();
    let project = world.project("p");
    let first = world.cargo(&project, &["clippy"]).ok();
    assert_eq!(first.outcome("fx_core"), "miss");
    assert!(
        first.stderr().contains("clippy::clone_on_copy"),
        "{}",
        first.stderr()
    );

    world.cargo(&project, &["clean"]).ok();
    let again = world.cargo(&project, &["clippy"]).ok();
    assert_eq!(again.outcome("fx_core"), "hit");
    assert!(
        again.stderr().contains("clippy::clone_on_copy"),
        "lints replay: {}",
        again.stderr()
    );

    world.cargo(&project, &["clean"]).ok();
    let check = world.cargo(&project, &["check"]).ok();
    assert_eq!(
        check.outcome("fx_core"),
        "miss",
        "a clippy entry never serves a plain check"
    );
    assert!(!check.stderr().contains("clippy::"), "{}", check.stderr());

    std::fs::write(
        project.join("clippy.toml"),
        "too-many-arguments-threshold = 2\n",
    )
    .unwrap();
    world.cargo(&project, &["clean"]).ok();
    let configured = world.cargo(&project, &["clippy"]).ok();
    assert_eq!(
        configured.outcome("fx_core"),
        "miss",
        "a new clippy.toml is a new key"
    );
    assert!(
        configured.stderr().contains("too many arguments"),
        "{}",
        configured.stderr()
    );
}
