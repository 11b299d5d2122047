//! The cache never fails a build because of a flag it added: a toolchain
//! that rejects one gets the compile exactly as cargo asked, and the event
//! says why nothing was stored.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{EXPECTED_LINE, World, run_app};

/// A `rustc` that refuses `--remap-path-prefix` (as a rustc that does not
/// know a flag does) and is the real one otherwise.
fn picky_rustc(dir: &std::path::Path) -> std::path::PathBuf {
    let real = String::from_utf8(
        std::process::Command::new("rustup")
            .args(["which", "rustc"])
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default(),
    )
    .unwrap_or_default()
    .trim()
    .to_string();
    let real = if real.is_empty() {
        "rustc".to_string()
    } else {
        real
    };
    std::fs::create_dir_all(dir).unwrap();
    let shim = dir.join("rustc");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\nfor arg in \"$@\"; do\n  case \"$arg\" in\n    --remap-path-prefix*) echo \"error: Unrecognized option: 'remap-path-prefix'\" >&2; exit 1;;\n  esac\ndone\nexec {real} \"$@\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    shim
}

#[test]
fn a_rejected_flag_reruns_the_compile_as_cargo_asked() {
    let world = World::new();
    let project = world.project("p");
    let shim = picky_rustc(&world.root.path().join("picky"));
    let run = world
        .cargo_with(&project, &["build"], &[("RUSTC", shim.to_str().unwrap())])
        .ok();
    assert!(
        !run.stderr().contains("Unrecognized option"),
        "the refusal of kache's flag is not shown: {}",
        run.stderr()
    );
    assert_eq!(run_app(&project), EXPECTED_LINE);
    let reasons: Vec<&str> = run
        .events
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("rejected a flag kache added")),
        "{reasons:?}"
    );
    // A build-script run is not a compile: `fx-gen`'s script, compiled as
    // cargo asked, still runs through kache's launcher, and that run is
    // keyed by the script's own bytes and stored like any other.
    let compiles: Vec<&serde_json::Value> = run
        .events
        .iter()
        .filter(|e| !is_run(e["crate_name"].as_str().unwrap_or_default()))
        .collect();
    assert!(!compiles.is_empty(), "{:?}", run.outcomes());
    assert!(
        !compiles.iter().any(|e| e["outcome"] != "passthrough"),
        "nothing is stored from a compile that had to be rerun: {:?}",
        run.outcomes()
    );
    let listed = world.kache(&["list"]);
    assert!(listed.status.success(), "{listed:?}");
    let stored: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .skip(1)
        .filter(|line| *line != "(no entries)")
        .filter_map(|line| line.split_whitespace().next().map(String::from))
        .collect();
    assert!(
        stored.iter().all(|name| is_run(name)),
        "only build-script runs are stored: {stored:?}"
    );
}

/// Whether `name` is a build-script run entry (`<package>:build-script-run`).
fn is_run(name: &str) -> bool {
    name.ends_with(":build-script-run")
}
