//! One inode per artifact: build-script executables and proc-macro libraries
//! share their inode with the store's blob, on the miss path and on restore.
//! That is safe only because every linker replaces an existing output (unlink
//! or rename) instead of writing into it, and because a blob is verified
//! before each restore. Both are proven here with the linkers of this
//! machine: rust-lld (rustc's default on x86_64 Linux), GNU ld and gold.

mod common;

use std::collections::HashSet;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::{EXPECTED_LINE, World, run_app};

/// The build-script executables and proc-macro libraries of a fixture build.
fn linkable_outputs(project: &Path) -> Vec<PathBuf> {
    let debug = project.join("target/debug");
    let mut found = Vec::new();
    for dir in std::fs::read_dir(debug.join("build")).unwrap().flatten() {
        for file in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let name = file.file_name().to_string_lossy().to_string();
            if name.starts_with("build_script_build-") && !name.ends_with(".d") {
                found.push(file.path());
            }
        }
    }
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

fn inodes(paths: &[PathBuf]) -> HashSet<u64> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().ino())
        .collect()
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
        let env = [("RUSTFLAGS", flags)];
        let run = world.cargo_with(&project, &["build"], &env).ok();
        assert_eq!(run.outcome("fx_macros"), "miss", "{linker}");
        let outputs = linkable_outputs(&project);
        let blobs = inodes(&world.blobs());
        for output in &outputs {
            let ino = std::fs::metadata(output).unwrap().ino();
            assert!(
                blobs.contains(&ino),
                "{linker}: {} is not linked into the store",
                output.display()
            );
        }

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
        let env = [("RUSTFLAGS", flags), ("KACHE_DISABLED", "1")];
        world.cargo_with(&project, &["build"], &env).ok();
        let relinked = inodes(&linkable_outputs(&project));
        assert!(
            relinked.is_disjoint(&inodes(&world.blobs())),
            "{linker} wrote into the linked file instead of replacing it"
        );
        world.assert_store_verifies();

        // The stored (unchanged) blobs serve the next clean build, linked.
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
        let blobs = inodes(&world.blobs());
        for output in linkable_outputs(&project) {
            let meta = std::fs::metadata(&output).unwrap();
            assert!(blobs.contains(&meta.ino()), "{linker}: restored as a copy");
            assert_ne!(meta.mode() & 0o111, 0, "{linker}: not executable");
        }
        assert_eq!(run_app(&project), EXPECTED_LINE, "{linker}");
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
