//! Many builds at once on one store, and builds killed at random moments.
//!
//! Sixteen cargo builds of four projects (two Rust, two with C through the
//! `cc` crate, each in four checkouts) share one empty store: none may fail,
//! none may fall back because of the store, the warm round is all hits, and
//! the store verifies clean. Then builds are killed with SIGKILL (the whole
//! process group: cargo, rustc, the wrapper, the linker) at spread-out
//! moments; whatever they leave, the store verifies clean and serves a
//! correct program.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{EXPECTED_LINE, World, edit, run_app};
use serde_json::Value;

/// Runs `cargo build` in every directory at once.
fn build_all(world: &World, dirs: &[PathBuf]) -> Vec<Output> {
    let children: Vec<_> = dirs
        .iter()
        .map(|dir| {
            world
                .command("cargo", dir)
                .args(["build", "--offline"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn cargo")
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait for cargo"))
        .collect()
}

/// Events logged from index `from` on.
fn events_since(world: &World, from: usize) -> Vec<Value> {
    world.events().split_off(from)
}

#[test]
fn sixteen_builds_of_four_projects_at_once_share_one_store() {
    let world = World::new();
    let mut dirs = Vec::new();
    for copy in 0..4 {
        let fx = world.project(&format!("fx-{copy}"));
        let fx_edited = world.project(&format!("fx-edited-{copy}"));
        edit(&fx_edited, "macros/src/lib.rs", "42u32", "43u32");
        let cfx = world.project_from("cfx", &format!("cfx-{copy}"));
        let cfx_edited = world.project_from("cfx", &format!("cfx-edited-{copy}"));
        edit(
            &cfx_edited,
            "build.rs",
            "\"CFX_SCALE\", \"3\"",
            "\"CFX_SCALE\", \"4\"",
        );
        dirs.extend([fx, fx_edited, cfx, cfx_edited]);
    }

    let outputs = build_all(&world, &dirs);
    for (dir, out) in dirs.iter().zip(&outputs) {
        assert!(
            out.status.success(),
            "{} failed:\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let cold = events_since(&world, 0);
    for event in &cold {
        let reason = event["reason"].as_str().unwrap_or_default();
        assert!(
            !reason.contains("locked") && !reason.contains("busy") && !reason.contains("store"),
            "a compile fell back because of the store: {event}"
        );
    }
    world.assert_store_verifies();
    for copy in 0..4 {
        assert_eq!(run_app(&dirs[copy * 4]), EXPECTED_LINE);
        assert!(run_app(&dirs[copy * 4 + 1]).contains("answer=43"));
    }

    for dir in &dirs {
        std::fs::remove_dir_all(dir.join("target")).unwrap();
    }
    let seen = world.events().len();
    let outputs = build_all(&world, &dirs);
    assert!(outputs.iter().all(|o| o.status.success()));
    let warm = events_since(&world, seen);
    let cached: Vec<&Value> = warm
        .iter()
        .filter(|e| e["outcome"] != "passthrough")
        .collect();
    assert!(
        cached.len() >= 16 * 4,
        "too few cached units: {}",
        cached.len()
    );
    for event in cached {
        assert_eq!(
            event["outcome"], "hit",
            "a warm unit was not a hit: {event}"
        );
    }
    world.assert_store_verifies();
    assert_eq!(run_app(&dirs[0]), EXPECTED_LINE);
}

/// Sends SIGKILL to the process group `pid` leads.
fn kill_group(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .status();
}

fn clean(project: &Path) {
    let _ = std::fs::remove_dir_all(project.join("target"));
}

#[test]
fn builds_killed_at_random_moments_never_leave_an_entry_that_serves_wrong_bytes() {
    use std::os::unix::process::CommandExt;
    let world = World::new();
    let project = world.project("p");
    // Spread over a cold fixture build (about 2 s alone here): during rustc,
    // during stores, during restores of the rounds that follow.
    for (round, delay_ms) in [150u64, 400, 700, 1000, 1400, 1900, 2500, 300]
        .into_iter()
        .enumerate()
    {
        if round % 3 == 2 {
            clean(&project);
        }
        let child = world
            .command("cargo", &project)
            .args(["build", "--offline"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn cargo");
        std::thread::sleep(Duration::from_millis(delay_ms));
        kill_group(child.id());
        let _ = child.wait_with_output();
        world.assert_store_verifies();
    }
    // Whatever the kills left, a clean build is correct, and so is the one
    // served entirely from the store after it.
    for _ in 0..2 {
        clean(&project);
        let run = world.cargo(&project, &["build"]).ok();
        assert_eq!(run_app(&project), EXPECTED_LINE, "{:?}", run.outcomes());
    }
    let run = {
        clean(&project);
        world.cargo(&project, &["build"]).ok()
    };
    for (name, outcomes) in run.outcomes() {
        for outcome in outcomes.iter().filter(|o| *o != "passthrough") {
            assert_eq!(outcome, "hit", "{name}: {outcomes:?}");
        }
    }
    assert_eq!(run_app(&project), EXPECTED_LINE);
    world.assert_store_verifies();
}
