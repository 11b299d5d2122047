//! The target directory is found for every layout cargo produces, so the
//! same crate compiled the same way has the same key wherever cargo put its
//! outputs: `cargo install`'s temporary directory (no `CACHEDIR.TAG`), a
//! `CARGO_TARGET_DIR` outside the workspace, and `--target <triple>`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{EXPECTED_LINE, LIBS, Run, World};

fn host_triple() -> String {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc -vV");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(String::from))
        .expect("host line")
}

/// `cargo install --path <project>/app --root <root> [extra…]` building in
/// a fresh, already existing directory as `cargo install` of a registry
/// package does (`/tmp/cargo-installXXXXXX`): cargo writes no
/// `CACHEDIR.TAG` into a target directory that already exists.
fn install(world: &World, project: &Path, root: &Path, extra: &[&str]) -> Run {
    let app = project.join("app");
    let temp = tempfile::Builder::new()
        .prefix("cargo-install")
        .tempdir_in(world.root.path())
        .expect("temp target dir")
        .keep();
    let mut args = vec![
        "install",
        "--path",
        app.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
        "--target-dir",
        temp.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    world.cargo(project, &args).ok()
}

fn installed_output(root: &Path) -> String {
    let out = Command::new(root.join("bin/fx-app"))
        .output()
        .expect("run the installed fx-app");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn assert_all_libs(run: &Run, outcome: &str) {
    for lib in LIBS {
        assert_eq!(run.outcome(lib), outcome, "{lib}: {:?}", run.outcomes());
    }
}

#[test]
fn a_second_cargo_install_into_another_root_hits_every_library_unit() {
    let world = World::new();
    let project = world.project("p");
    let first_root = world.root.path().join("root-a");
    let first = install(&world, &project, &first_root, &[]);
    assert_all_libs(&first, "miss");
    assert_eq!(installed_output(&first_root), EXPECTED_LINE);

    let second_root = world.root.path().join("root-b");
    let second = install(&world, &project, &second_root, &[]);
    assert_all_libs(&second, "hit");
    assert!(
        !world.root.path().read_dir().unwrap().flatten().any(|e| e
            .file_name()
            .to_string_lossy()
            .starts_with("cargo-install")
            && e.path().join("CACHEDIR.TAG").exists()),
        "the build directories hold no CACHEDIR.TAG"
    );
    assert_eq!(installed_output(&second_root), EXPECTED_LINE);
    // Nothing was left unnormalised: the temporary target directory was
    // recognised from cargo's layout.
    let why = world.kache(&["why-miss", "fx_core"]);
    assert!(
        !String::from_utf8_lossy(&why.stdout).contains("not recognised"),
        "{}",
        String::from_utf8_lossy(&why.stdout)
    );

    // The same with an explicit --target: its own keys, shared again.
    let triple = host_triple();
    let third_root = world.root.path().join("root-c");
    let third = install(&world, &project, &third_root, &["--target", &triple]);
    assert_eq!(
        third.outcome("fx_core"),
        "miss",
        "--target is a different compile"
    );
    let fourth_root = world.root.path().join("root-d");
    let fourth = install(&world, &project, &fourth_root, &["--target", &triple]);
    assert_all_libs(&fourth, "hit");
    assert_eq!(installed_output(&fourth_root), EXPECTED_LINE);
}

#[test]
fn target_dirs_outside_the_workspace_and_target_triples_share_entries() {
    let world = World::new();
    let triple = host_triple();
    let first = world.project("first");
    let outside_a = world.root.path().join("elsewhere/a");
    world
        .cargo_with(
            &first,
            &["build", "--target", &triple],
            &[("CARGO_TARGET_DIR", outside_a.to_str().unwrap())],
        )
        .ok();
    let second = world.project("second");
    let outside_b = world.root.path().join("other/place/b");
    let run = world
        .cargo_with(
            &second,
            &["build", "--target", &triple],
            &[("CARGO_TARGET_DIR", outside_b.to_str().unwrap())],
        )
        .ok();
    for lib in LIBS.iter().filter(|l| **l != "fx_app") {
        assert_eq!(run.outcome(lib), "hit", "{lib}: {:?}", run.outcomes());
    }
    // fx_app bakes env!("CARGO_MANIFEST_DIR"): the other checkout's entry
    // would print the wrong directory, so it compiles again.
    assert_eq!(run.outcome("fx_app"), "miss");
    let app = Command::new(outside_b.join(&triple).join("debug/fx-app"))
        .output()
        .expect("run fx-app");
    assert_eq!(String::from_utf8_lossy(&app.stdout).trim(), EXPECTED_LINE);
}

#[test]
fn an_unrecognised_target_dir_is_named_by_why_miss() {
    // rustc called by hand with an output directory in no cargo layout:
    // the path stays in the key, and why-miss says so.
    let world = World::new();
    let dir = world.root.path().join("loose");
    std::fs::create_dir_all(dir.join("out")).unwrap();
    std::fs::write(dir.join("lib.rs"), "pub fn f() -> u8 { 7 }\n").unwrap();
    let rustc = |out: &str| {
        let status = world
            .command(common::KACHE, &dir)
            .args([
                "rustc",
                "--crate-name",
                "loose",
                "--edition=2021",
                "lib.rs",
                "--crate-type",
                "lib",
                "--emit=dep-info,metadata,link",
                "--out-dir",
                out,
            ])
            .status()
            .expect("run kache rustc");
        assert!(status.success());
    };
    rustc("out");
    std::fs::create_dir_all(dir.join("out2")).unwrap();
    rustc("out2");
    let why = world.kache(&["why-miss", "loose"]);
    let text = String::from_utf8_lossy(&why.stdout);
    assert!(
        text.contains("target directory was not recognised"),
        "{text}"
    );
    assert!(text.contains("out2"), "{text}");
}

#[test]
fn machine_dependent_inputs_are_keyed_by_what_they_mean_here() {
    // `-C target-cpu=native` is the same text everywhere but a different
    // CPU on each machine; linked outputs (proc-macros, build scripts)
    // depend on the linker and the C library.
    let world = World::new();
    let project = world.project("p");
    let run = world
        .cargo_with(
            &project,
            &["build"],
            &[
                ("RUSTFLAGS", "-C target-cpu=native"),
                ("KACHE_LOG", "kache=trace"),
            ],
        )
        .ok();
    let log = run.stderr();
    let components = |crate_name: &str| -> Vec<String> {
        log.lines()
            .filter(|l| {
                l.contains("key component") && l.contains(&format!("crate_name={crate_name} "))
            })
            .filter_map(|l| l.split("component=").nth(1))
            .filter_map(|rest| {
                rest.split_whitespace()
                    .next()
                    .map(|c| c.trim_matches('"').to_string())
            })
            .collect()
    };
    let core = components("fx_core");
    assert!(core.contains(&"native_cpu".to_string()), "{core:?}\n{log}");
    assert!(
        !core.contains(&"linker".to_string()),
        "an rlib is not linked: {core:?}"
    );
    let macros = components("fx_macros");
    for name in ["linker", "libc", "native_cpu"] {
        assert!(macros.contains(&name.to_string()), "{name} in {macros:?}");
    }
    world.cargo(&project, &["clean"]).ok();
    let warm = world
        .cargo_with(
            &project,
            &["build"],
            &[("RUSTFLAGS", "-C target-cpu=native")],
        )
        .ok();
    assert_all_libs(&warm, "hit");
}
