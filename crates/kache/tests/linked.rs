//! One inode per artifact: build-script executables and proc-macro libraries
//! share their inode with the store's blob, on the miss path and on restore.
//! That is safe only because every linker replaces an existing output (unlink
//! or rename) instead of writing into it, and because a blob is verified
//! before each restore. Both are proven here with the linkers of this
//! machine: rust-lld (rustc's default on x86_64 Linux), GNU ld and gold.
//! With build-script runs on (the default) kache moves a build script's
//! linked executable aside, the same inode, to `<name>.kache-real` and
//! writes a launcher (in no blob) in its place.

mod common;

use std::collections::HashSet;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::{EXPECTED_LINE, World, run_app};

/// The switch that turns build-script run caching off.
const RUNS_OFF: (&str, &str) = ("KACHE_CACHE_BUILD_SCRIPTS", "0");

/// The file name kache moves a build script's executable to when it puts
/// its launcher in the executable's place (build-script runs on).
const REAL_SUFFIX: &str = ".kache-real";

/// The build-script executables and proc-macro libraries of a fixture
/// build: the real executable, which is `build_script_build-<h>` with
/// build-script runs off and `build_script_build-<h>.kache-real` with them
/// on (the launcher at the first name is a script kache wrote, see
/// [`launchers`]).
fn linkable_outputs(project: &Path) -> Vec<PathBuf> {
    let debug = project.join("target/debug");
    let mut found: Vec<PathBuf> = build_script_files(project)
        .into_iter()
        .filter(|file| !real_beside(file).exists())
        .collect();
    for file in std::fs::read_dir(debug.join("deps")).unwrap().flatten() {
        let name = file.file_name().to_string_lossy().to_string();
        if name.starts_with("libfx_macros-") && name.ends_with(".so") {
            found.push(file.path());
        }
    }
    assert_eq!(
        found.len(),
        2,
        "one build script and one proc-macro: {found:?}"
    );
    found
}

/// The launchers of a fixture build: each `build_script_build-<h>` with
/// its real executable beside it.
fn launchers(project: &Path) -> Vec<PathBuf> {
    build_script_files(project)
        .into_iter()
        .filter(|file| real_beside(file).exists())
        .collect()
}

/// Where kache moves the executable at `path` when it writes a launcher
/// there.
fn real_beside(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap().to_os_string();
    name.push(REAL_SUFFIX);
    path.with_file_name(name)
}

/// `build_script_build-<h>` and `build_script_build-<h>.kache-real` (never
/// a dep-info file) under `target/debug/build/`.
fn build_script_files(project: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in std::fs::read_dir(project.join("target/debug/build"))
        .unwrap()
        .flatten()
    {
        for file in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let name = file.file_name().to_string_lossy().to_string();
            if name.starts_with("build_script_build-") && !name.ends_with(".d") {
                found.push(file.path());
            }
        }
    }
    found
}

fn inodes(paths: &[PathBuf]) -> HashSet<u64> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().ino())
        .collect()
}

/// Panics unless every one of `outputs` shares its inode with a blob of
/// `world`'s store and is executable.
fn assert_linked_executables(world: &World, outputs: &[PathBuf], linker: &str) {
    let blobs = inodes(&world.blobs());
    for output in outputs {
        let meta = std::fs::metadata(output).unwrap();
        assert!(
            blobs.contains(&meta.ino()),
            "{linker}: {} is not linked into the store",
            output.display()
        );
        assert_ne!(meta.mode() & 0o111, 0, "{linker}: not executable");
    }
}

#[test]
fn linked_outputs_survive_a_relink_by_every_linker_and_restore_linked() {
    let linkers: [(&str, &str); 3] = [
        ("rust-lld", ""),
        ("GNU ld", "-C linker-features=-lld"),
        ("gold", "-C linker-features=-lld -C link-arg=-fuse-ld=gold"),
    ];
    for (linker, flags) in linkers {
        let world = World::new();
        let project = world.project("p");
        // Build-script runs off: the build script's linked executable stays
        // at the path its linker writes. (With them on, kache moves it
        // aside and the linker writes over the launcher, which no blob
        // holds; that case is the end of this loop.)
        let env = [("RUSTFLAGS", flags), RUNS_OFF];
        let run = world.cargo_with(&project, &["build"], &env).ok();
        assert_eq!(run.outcome("fx_macros"), "miss", "{linker}");
        assert!(launchers(&project).is_empty(), "{linker}: a launcher");
        assert_linked_executables(&world, &linkable_outputs(&project), linker);

        // Rebuild both at the same paths with kache out of the way: the
        // linker writes over the linked outputs.
        let touched = std::time::SystemTime::now() + std::time::Duration::from_secs(2);
        for source in ["macros/src/lib.rs", "gen/build.rs"] {
            let file = std::fs::File::options()
                .write(true)
                .open(project.join(source))
                .unwrap();
            file.set_modified(touched).unwrap();
        }
        let disabled = [("RUSTFLAGS", flags), RUNS_OFF, ("KACHE_DISABLED", "1")];
        world.cargo_with(&project, &["build"], &disabled).ok();
        let relinked = inodes(&linkable_outputs(&project));
        assert!(
            relinked.is_disjoint(&inodes(&world.blobs())),
            "{linker} wrote into the linked file instead of replacing it"
        );
        world.assert_store_verifies();

        // The stored (unchanged) blobs serve the next clean build, linked.
        world.cargo(&project, &["clean"]).ok();
        let run = world.cargo_with(&project, &["build"], &env).ok();
        assert_eq!(run.outcome("fx_macros"), "hit", "{linker}");
        assert!(
            run.outcomes()["build_script_build"].contains(&"hit".to_string()),
            "{linker}: {:?}",
            run.outcomes()
        );
        assert!(launchers(&project).is_empty(), "{linker}: a launcher");
        assert_linked_executables(&world, &linkable_outputs(&project), linker);
        assert_eq!(run_app(&project), EXPECTED_LINE, "{linker}");

        // With runs on (the default) the restored executable is linked
        // too, and moved aside whole (the same inode) to `.kache-real`;
        // the launcher in its place is kache's script, in no blob.
        world.cargo(&project, &["clean"]).ok();
        let run = world
            .cargo_with(&project, &["build"], &[("RUSTFLAGS", flags)])
            .ok();
        assert_eq!(run.outcome("fx_macros"), "hit", "{linker}");
        assert!(
            run.outcomes()["build_script_build"].contains(&"hit".to_string()),
            "{linker}: {:?}",
            run.outcomes()
        );
        let outputs = linkable_outputs(&project);
        assert!(
            outputs
                .iter()
                .any(|o| o.to_string_lossy().ends_with(REAL_SUFFIX)),
            "{linker}: no real executable moved aside: {outputs:?}"
        );
        assert_linked_executables(&world, &outputs, linker);
        let launchers = launchers(&project);
        assert_eq!(launchers.len(), 1, "{linker}: {launchers:?}");
        let blobs = inodes(&world.blobs());
        for launcher in &launchers {
            let ino = std::fs::metadata(launcher).unwrap().ino();
            assert!(!blobs.contains(&ino), "{linker}: a launcher is a blob");
            let text = std::fs::read_to_string(launcher).unwrap();
            assert!(text.starts_with("#!/bin/sh"), "{linker}: {text}");
        }
        assert_eq!(run_app(&project), EXPECTED_LINE, "{linker}");
        world.assert_store_verifies();
    }
}

#[test]
fn a_write_in_place_through_a_link_is_a_miss_never_a_wrong_hit() {
    let world = World::new();
    let project = world.project("p");
    world.cargo(&project, &["build"]).ok();
    let proc_macro = linkable_outputs(&project)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "so"))
        .unwrap();
    // Same size, other bytes, through the shared inode.
    let mut file = std::fs::File::options()
        .write(true)
        .open(&proc_macro)
        .unwrap();
    file.seek(SeekFrom::Start(64)).unwrap();
    file.write_all(b"written in place").unwrap();
    drop(file);

    world.cargo(&project, &["clean"]).ok();
    let run = world.cargo(&project, &["build"]).ok();
    assert_eq!(run.outcome("fx_macros"), "miss");
    assert_eq!(run_app(&project), EXPECTED_LINE);
    world.assert_store_verifies();
    // The fresh compile stored good bytes again: the next build hits.
    world.cargo(&project, &["clean"]).ok();
    let run = world.cargo(&project, &["build"]).ok();
    assert_eq!(run.outcome("fx_macros"), "hit");
    assert_eq!(run_app(&project), EXPECTED_LINE);
}
