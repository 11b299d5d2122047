//! Every target by the same rules: cross-compiled libraries for
//! WebAssembly, an embedded `no_std` target and Windows hit after a clean
//! build, nightly's split metadata (`-Z embed-metadata=no`) restores both
//! halves, and split debuginfo (`.dwo` / `.dwp`) is stored and restored.
//! Each is a real cargo build, cold → `cargo clean` → warm.
//!
//! Needs the rustup targets `wasm32-unknown-unknown`,
//! `thumbv7em-none-eabihf` and `x86_64-pc-windows-gnu` (added here if
//! missing) and a nightly toolchain (`KACHE_TOOLCHAIN_NIGHTLY`, the
//! `bin` directory scripts/install-toolchains.sh prints, else rustup's
//! `KACHE_TEST_NIGHTLY`, default `nightly`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{EXPECTED_LINE, LIBS, Run, World, run_app};

/// Adds a rustup target to the toolchain the tests' `cargo` runs
/// (idempotent; a no-op when it is installed). It runs where the builds
/// run, outside this repository, so a toolchain file here does not count.
fn add_target(triple: &str) {
    let out = Command::new("rustup")
        .current_dir(std::env::temp_dir())
        .args(["target", "add", triple])
        .output()
        .expect("run rustup");
    assert!(
        out.status.success(),
        "rustup target add {triple} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `bin` directory of the nightly toolchain.
fn nightly_bin() -> PathBuf {
    // The dated nightly scripts/install-toolchains.sh installs (as CI does).
    if let Some(dir) = std::env::var_os("KACHE_TOOLCHAIN_NIGHTLY") {
        return PathBuf::from(dir);
    }
    let toolchain = std::env::var("KACHE_TEST_NIGHTLY").unwrap_or_else(|_| "nightly".into());
    let out = Command::new("rustup")
        .args(["which", "--toolchain", &toolchain, "cargo"])
        .output()
        .expect("run rustup");
    assert!(
        out.status.success(),
        "no {toolchain} toolchain (scripts/install-toolchains.sh installs it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cargo = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    cargo.parent().expect("cargo's directory").to_path_buf()
}

/// Runs `<cargo> <args> --offline` in `dir` through kache, like
/// `World::cargo_with` but with a cargo and rustc of our choice.
fn cargo_by_path(
    world: &World,
    cargo: &Path,
    rustc: &Path,
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Run {
    let before = world.events().len();
    let mut cmd = world.command(&cargo.to_string_lossy(), dir);
    cmd.args(args).arg("--offline");
    cmd.env("RUSTC", rustc);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = cmd.output().expect("run cargo");
    let events = world.events().split_off(before);
    Run { output, events }
}

/// Writes `files` (relative path, text) under `dir`.
fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
}

/// A workspace of a `no_std` library `tiny` and `web`, a cdylib + rlib
/// using it.
fn small_workspace(world: &World, name: &str) -> PathBuf {
    let dir = world.root.path().join(name);
    write_files(
        &dir,
        &[
            (
                "Cargo.toml",
                "[workspace]\nresolver = \"2\"\nmembers = [\"tiny\", \"web\"]\n",
            ),
            (
                "tiny/Cargo.toml",
                "[package]\nname = \"tiny\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
            ),
            (
                "tiny/src/lib.rs",
                "#![no_std]\n/// Adds.\npub fn add(a: i32, b: i32) -> i32 { a.wrapping_add(b) }\n",
            ),
            (
                "web/Cargo.toml",
                "[package]\nname = \"web\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
                 [lib]\ncrate-type = [\"cdylib\", \"rlib\"]\n\n\
                 [dependencies]\ntiny = { path = \"../tiny\" }\n",
            ),
            (
                "web/src/lib.rs",
                "#[no_mangle]\npub extern \"C\" fn sum(a: i32, b: i32) -> i32 { tiny::add(a, b) }\n",
            ),
        ],
    );
    dir
}

/// Every file directly in `dir` whose name ends with `suffix`, sorted.
fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|list| {
            list.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.ends_with(suffix))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The names of every file below `dir`.
fn collect_files(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(entry.file_name().to_string_lossy().to_string());
        }
    }
}

#[test]
fn wasm_libraries_and_cdylibs_hit_after_a_clean() {
    add_target("wasm32-unknown-unknown");
    let world = World::new();
    let project = small_workspace(&world, "w");
    let build = ["build", "--target", "wasm32-unknown-unknown"];
    let cold = world.cargo(&project, &build).ok();
    assert_eq!(cold.outcome("tiny"), "miss");
    assert_eq!(cold.outcome("web"), "miss");
    let wasm = project.join("target/wasm32-unknown-unknown/debug/web.wasm");
    let built = std::fs::read(&wasm).expect("cargo wrote web.wasm");
    assert!(built.starts_with(b"\0asm"), "a WebAssembly module");

    world.cargo(&project, &["clean"]).ok();
    let warm = world.cargo(&project, &build).ok();
    assert_eq!(warm.outcome("tiny"), "hit", "{:?}", warm.events);
    assert_eq!(warm.outcome("web"), "hit", "{:?}", warm.events);
    assert_eq!(std::fs::read(&wasm).expect("web.wasm restored"), built);
    world.assert_store_verifies();
}

#[test]
fn a_no_std_embedded_library_hits_after_a_clean() {
    add_target("thumbv7em-none-eabihf");
    let world = World::new();
    let project = small_workspace(&world, "e");
    let build = ["build", "-p", "tiny", "--target", "thumbv7em-none-eabihf"];
    let cold = world.cargo(&project, &build).ok();
    assert_eq!(cold.outcome("tiny"), "miss");
    world.cargo(&project, &["clean"]).ok();
    let warm = world.cargo(&project, &build).ok();
    assert_eq!(warm.outcome("tiny"), "hit", "{:?}", warm.events);
    let deps = project.join("target/thumbv7em-none-eabihf/debug/deps");
    assert_eq!(files_ending(&deps, ".rlib").len(), 1, "the rlib is back");
    // A check build of the same crate is its own entry, and hits too.
    let check = ["check", "-p", "tiny", "--target", "thumbv7em-none-eabihf"];
    assert_eq!(world.cargo(&project, &check).ok().outcome("tiny"), "miss");
    world.cargo(&project, &["clean"]).ok();
    assert_eq!(world.cargo(&project, &check).ok().outcome("tiny"), "hit");
}

#[test]
fn windows_libraries_hit_after_a_clean() {
    add_target("x86_64-pc-windows-gnu");
    let world = World::new();
    let project = world.project("p");
    // Libraries for Windows need no linker; the build script and the
    // proc-macro are built for the host.
    let build = ["build", "--lib", "--target", "x86_64-pc-windows-gnu"];
    let cold = world.cargo(&project, &build).ok();
    for lib in LIBS {
        assert_eq!(cold.outcome(lib), "miss", "{lib}");
    }
    world.cargo(&project, &["clean"]).ok();
    let warm = world.cargo(&project, &build).ok();
    for lib in LIBS {
        assert_eq!(warm.outcome(lib), "hit", "{lib}: {:?}", warm.outcomes());
    }
    let deps = project.join("target/x86_64-pc-windows-gnu/debug/deps");
    assert_eq!(files_ending(&deps, ".rlib").len(), 3, "{deps:?}");
    world.assert_store_verifies();
}

#[test]
fn nightly_split_metadata_hits_and_restores_both_halves() {
    let bin = nightly_bin();
    let (cargo, rustc) = (bin.join("cargo"), bin.join("rustc"));
    let world = World::new();
    let project = world.project("p");
    // What nightly cargo does on every library compile since mid 2026;
    // older nightlies do it when asked.
    let help = Command::new(&cargo)
        .args(["-Z", "help"])
        .output()
        .expect("run cargo -Z help");
    let asked = String::from_utf8_lossy(&help.stdout).contains("no-embed-metadata");
    let build: &[&str] = if asked {
        &["-Zno-embed-metadata", "build", "-v"]
    } else {
        &["build", "-v"]
    };
    let cold = cargo_by_path(&world, &cargo, &rustc, &project, build, &[]).ok();
    assert!(
        cold.stderr().contains("-Z embed-metadata=no"),
        "cargo did not split the metadata:\n{}",
        cold.stderr()
    );
    for lib in LIBS {
        assert_eq!(cold.outcome(lib), "miss", "{lib}");
    }
    assert_eq!(run_app(&project), EXPECTED_LINE);
    world.cargo(&project, &["clean"]).ok();
    let warm = cargo_by_path(&world, &cargo, &rustc, &project, build, &[]).ok();
    for lib in LIBS {
        assert_eq!(warm.outcome(lib), "hit", "{lib}: {:?}", warm.outcomes());
    }
    // The binary was linked from the restored rlibs and read their
    // metadata from the restored `.rmeta` files.
    assert_eq!(run_app(&project), EXPECTED_LINE);
    // Cargo's older layout puts them in `debug/deps`, the newer one (the
    // default of recent nightlies) in `debug/build/<pkg>/<hash>/out`.
    let mut written = Vec::new();
    collect_files(&project.join("target/debug"), &mut written);
    for lib in ["fx_core", "fx_gen", "fx_app"] {
        let prefix = format!("lib{lib}-");
        for ext in [".rlib", ".rmeta"] {
            assert!(
                written
                    .iter()
                    .any(|n| n.starts_with(&prefix) && n.ends_with(ext)),
                "{lib}{ext} missing from {written:?}"
            );
        }
    }
    // The same unit with embedded metadata is another entry.
    if asked {
        world.cargo(&project, &["clean"]).ok();
        let embedded = cargo_by_path(&world, &cargo, &rustc, &project, &["build"], &[]).ok();
        assert_eq!(embedded.outcome("fx_core"), "miss");
    }
}

#[test]
fn an_unknown_side_file_is_a_miss_that_names_it() {
    // `-Z split-dwarf-kind=single` keeps each object (`.rcgu.o`) beside the
    // rlib: a file kache does not know, so nothing may be stored.
    let bin = nightly_bin();
    let (cargo, rustc) = (bin.join("cargo"), bin.join("rustc"));
    let world = World::new();
    let project = small_workspace(&world, "s");
    let env = [
        ("CARGO_PROFILE_DEV_SPLIT_DEBUGINFO", "unpacked"),
        ("RUSTFLAGS", "-Zsplit-dwarf-kind=single"),
    ];
    let build = ["build", "-p", "tiny"];
    for _ in 0..2 {
        let run = cargo_by_path(&world, &cargo, &rustc, &project, &build, &env).ok();
        assert_eq!(run.outcome("tiny"), "miss");
        let event = run
            .events
            .iter()
            .find(|e| e["crate_name"] == "tiny")
            .expect("an event for tiny");
        let reason = event["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("rustc also wrote tiny") && reason.contains(".rcgu.o"),
            "{event}"
        );
        world.cargo(&project, &["clean"]).ok();
    }
}

#[test]
fn split_debuginfo_unpacked_restores_every_dwo_file() {
    let world = World::new();
    let project = world.project("p");
    let env = [("CARGO_PROFILE_DEV_SPLIT_DEBUGINFO", "unpacked")];
    let cold = world.cargo_with(&project, &["build"], &env).ok();
    for lib in LIBS {
        assert_eq!(cold.outcome(lib), "miss", "{lib}");
    }
    let deps = project.join("target/debug/deps");
    let dwo = files_ending(&deps, ".dwo");
    let lib_dwo = |names: &[String]| {
        names
            .iter()
            .filter(|n| n.starts_with("fx_core-") || n.starts_with("fx_gen-"))
            .count()
    };
    assert!(lib_dwo(&dwo) >= 2, "rustc wrote .dwo files: {dwo:?}");
    let contents: Vec<Vec<u8>> = dwo
        .iter()
        .map(|n| std::fs::read(deps.join(n)).expect("read"))
        .collect();

    world.cargo(&project, &["clean"]).ok();
    let warm = world.cargo_with(&project, &["build"], &env).ok();
    for lib in LIBS {
        assert_eq!(warm.outcome(lib), "hit", "{lib}: {:?}", warm.events);
    }
    assert_eq!(files_ending(&deps, ".dwo"), dwo, "the same .dwo files");
    for (name, bytes) in dwo.iter().zip(&contents) {
        assert_eq!(
            &std::fs::read(deps.join(name)).expect("read"),
            bytes,
            "{name}"
        );
    }
    assert_eq!(run_app(&project), EXPECTED_LINE);
    // The objects name their `.dwo` files by this checkout's path, so a
    // debugger finds them (readelf follows the links and warns when not)…
    let readelf = Command::new("readelf")
        .args(["--debug-dump=info"])
        .arg(project.join("target/debug/fx-app"))
        .output()
        .expect("run readelf");
    let warnings = String::from_utf8_lossy(&readelf.stderr);
    assert!(!warnings.contains("Unable to load dwo"), "{warnings}");
    assert!(String::from_utf8_lossy(&readelf.stdout).contains("dwo_name"));
    world.assert_store_verifies();
    // …and another checkout, whose objects must name its own, misses.
    let other = world.project("q");
    let second = world.cargo_with(&other, &["build"], &env).ok();
    assert_eq!(second.outcome("fx_core"), "miss", "{:?}", second.events);
    assert_eq!(run_app(&other), EXPECTED_LINE);
}

#[test]
fn split_debuginfo_packed_restores_the_dwp_of_a_cached_binary() {
    let world = World::new();
    let project = world.project("p");
    let env = [
        ("CARGO_PROFILE_DEV_SPLIT_DEBUGINFO", "packed"),
        ("KACHE_CACHE_EXECUTABLES", "1"),
    ];
    let cold = world.cargo_with(&project, &["build"], &env).ok();
    assert!(cold.outcomes()["fx_app"].iter().all(|o| o == "miss"));
    let dwp = project.join("target/debug/fx-app.dwp");
    let built = std::fs::read(&dwp).expect("cargo wrote fx-app.dwp");
    let deps = project.join("target/debug/deps");
    assert_eq!(files_ending(&deps, ".dwo"), Vec::<String>::new());

    world.cargo(&project, &["clean"]).ok();
    let warm = world.cargo_with(&project, &["build"], &env).ok();
    let outcomes = warm.outcomes();
    assert_eq!(outcomes["fx_app"], ["hit", "hit"], "the lib and the bin");
    for lib in LIBS {
        assert!(
            outcomes[*lib].iter().all(|o| o == "hit"),
            "{lib}: {outcomes:?}"
        );
    }
    assert_eq!(std::fs::read(&dwp).expect("fx-app.dwp restored"), built);
    // The proc-macro's too: `libfx_macros-<hash>.so.dwp`.
    let dwps = files_ending(&deps, ".dwp");
    assert_eq!(dwps.len(), 2, "{dwps:?}");
    assert!(dwps.iter().any(|n| n.starts_with("fx_app-")), "{dwps:?}");
    assert!(
        dwps.iter()
            .any(|n| n.starts_with("libfx_macros-") && n.ends_with(".so.dwp"))
    );
    assert_eq!(run_app(&project), EXPECTED_LINE);
}

#[test]
fn a_custom_target_spec_is_named_and_keyed_by_its_content() {
    let bin = nightly_bin();
    let rustc = bin.join("rustc");
    let world = World::new();
    let dir = world.root.path().join("spec");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let spec = Command::new(&rustc)
        .args(["-Zunstable-options", "--print", "target-spec-json"])
        .args(["--target", "thumbv7em-none-eabihf"])
        .output()
        .expect("run rustc");
    assert!(spec.status.success());
    let spec = String::from_utf8(spec.stdout).expect("UTF-8");
    write_files(
        &dir,
        &[
            ("my-thumb.json", spec.as_str()),
            // No `core` is built for a custom target here: a `no_core`
            // crate needs none.
            ("lib.rs", "#![feature(no_core)]\n#![no_core]\n"),
        ],
    );
    let compile = || {
        let out = dir.join("out");
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).expect("mkdir");
        let before = world.events().len();
        let status = world
            .command(common::KACHE, &dir)
            .arg(&rustc)
            .args(["--crate-name", "spec", "lib.rs", "--crate-type", "rlib"])
            .args(["--emit=dep-info,metadata,link", "--target", "my-thumb.json"])
            .args([
                "-Zunstable-options",
                "--out-dir",
                "out",
                "-C",
                "extra-filename=-1",
            ])
            .status()
            .expect("run kache");
        assert!(status.success());
        assert!(out.join("libspec-1.rlib").is_file());
        let events = world.events().split_off(before);
        assert_eq!(events.len(), 1, "{events:?}");
        events[0]["outcome"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(compile(), "miss");
    assert_eq!(compile(), "hit");
    let edited = spec.replace("\"c-enum-min-bits\": 8", "\"c-enum-min-bits\": 16");
    assert_ne!(edited, spec, "the spec has the field this test edits");
    write_files(&dir, &[("my-thumb.json", edited.as_str())]);
    assert_eq!(compile(), "miss", "an edited spec is another target");
    assert_eq!(compile(), "hit");
}

/// The `.dwo` members of the rlib in `deps` whose name starts with `prefix`.
fn rlib_dwo_members(deps: &Path, prefix: &str) -> Vec<String> {
    let rlib = files_ending(deps, ".rlib")
        .into_iter()
        .find(|n| n.starts_with(prefix))
        .expect("the rlib");
    let out = Command::new("ar")
        .arg("t")
        .arg(deps.join(rlib))
        .output()
        .expect("run ar");
    assert!(out.status.success());
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|n| n.ends_with(".dwo"))
        .map(String::from)
        .collect();
    names.sort();
    names
}

#[test]
fn an_incremental_rebuild_stores_only_the_dwo_files_its_rlib_names() {
    let world = World::new();
    let project = small_workspace(&world, "i");
    let lib = "tiny/src/lib.rs";
    let modules = "pub mod a { pub fn f(x: i32) -> i32 { x * 2 } }\n\
                   pub mod b { pub fn f(x: i32) -> i32 { x - 1 } }\n\
                   pub mod c { pub fn f(x: i32) -> i32 { x + 1 } }\n";
    let text = std::fs::read_to_string(project.join(lib)).expect("read") + modules;
    write_files(&project, &[(lib, text.as_str())]);
    let env = [
        ("CARGO_PROFILE_DEV_SPLIT_DEBUGINFO", "unpacked"),
        ("CARGO_INCREMENTAL", "1"),
    ];
    let build = ["build", "-p", "tiny"];
    assert_eq!(
        world
            .cargo_with(&project, &build, &env)
            .ok()
            .outcome("tiny"),
        "miss"
    );
    // A new incremental session names its `.dwo` files anew; the first
    // session's stay in the directory, written moments before.
    common::edit(&project, lib, "x + 1", "x + 2");
    assert_eq!(
        world
            .cargo_with(&project, &build, &env)
            .ok()
            .outcome("tiny"),
        "miss"
    );
    let deps = project.join("target/debug/deps");
    let members = rlib_dwo_members(&deps, "libtiny-");
    assert!(members.len() >= 2, "{members:?}");
    assert!(
        files_ending(&deps, ".dwo").len() > members.len(),
        "stale ones"
    );

    world.cargo(&project, &["clean"]).ok();
    let warm = world.cargo_with(&project, &build, &env).ok();
    assert_eq!(warm.outcome("tiny"), "hit", "{:?}", warm.events);
    assert_eq!(files_ending(&deps, ".dwo"), members, "exactly the rlib's");
}
