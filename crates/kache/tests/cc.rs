//! C and C++ through kache: the `cc` crate runs every compiler command of a
//! build script as `kache <compiler> <args…>` because the wrapper binary is
//! named `kache`. Real cargo builds, real `cc`/`c++`, real build scripts.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::{KACHE, World, edit};

/// Runs the fixture program and returns what it printed.
fn run_program(project: &Path, name: &str) -> String {
    let output = Command::new(project.join("target/debug").join(name))
        .output()
        .expect("run the program");
    assert!(output.status.success(), "{name} failed");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

const CFX_UNITS: &[&str] = &["cfx:add.c", "cfx:mul.cpp"];
const CFX_OUTPUT: &str = "add=19 mul=130 file=csrc/add.c";

#[test]
fn c_and_cpp_units_build_cold_then_hit_warm_with_the_same_program() {
    let world = World::new();
    let project = world.project_from("cfx", "p");
    let cold = world.cargo(&project, &["build"]).ok();
    for unit in CFX_UNITS {
        assert_eq!(cold.c_units()[*unit], "miss", "{:?}", cold.c_units());
    }
    assert_eq!(run_program(&project, "cfx"), CFX_OUTPUT);

    world.cargo(&project, &["clean"]).ok();
    let warm = world.cargo(&project, &["build"]).ok();
    for unit in CFX_UNITS {
        assert_eq!(warm.c_units()[*unit], "hit", "{:?}", warm.c_units());
    }
    assert_eq!(run_program(&project, "cfx"), CFX_OUTPUT);
    // The assembler rewrites objects in place: a restored object is a copy,
    // never a hardlink into the store.
    for object in objects(&project) {
        let links = std::fs::metadata(&object).unwrap().nlink();
        assert_eq!(links, 1, "{} shares an inode", object.display());
    }
    // The cc crate's compiler-family probe (`-E`) went through kache too and
    // passed through untouched.
    assert!(
        !warm.stderr().contains("unrecognized subcommand"),
        "{}",
        warm.stderr()
    );
}

fn objects(project: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(project.join("target/debug/build")).unwrap() {
        let out_dir = dir.unwrap().path().join("out");
        for item in std::fs::read_dir(&out_dir).into_iter().flatten().flatten() {
            if item.path().extension().is_some_and(|e| e == "o") {
                out.push(item.path());
            }
        }
    }
    assert!(!out.is_empty(), "no objects under {}", project.display());
    out
}

#[test]
fn editing_a_header_or_a_define_rebuilds_and_reverting_hits_again() {
    let world = World::new();
    let project = world.project_from("cfx", "p");
    world.cargo(&project, &["build"]).ok();
    assert_eq!(run_program(&project, "cfx"), CFX_OUTPUT);

    edit(
        &project,
        "csrc/include/cfx.h",
        "CFX_OFFSET 10",
        "CFX_OFFSET 20",
    );
    let header = world.cargo(&project, &["build"]).ok();
    assert_eq!(header.c_units()["cfx:add.c"], "miss");
    assert_eq!(header.c_units()["cfx:mul.cpp"], "miss");
    assert_eq!(
        run_program(&project, "cfx"),
        "add=29 mul=140 file=csrc/add.c"
    );

    edit(
        &project,
        "build.rs",
        "\"CFX_SCALE\", \"3\"",
        "\"CFX_SCALE\", \"5\"",
    );
    let define = world.cargo(&project, &["build"]).ok();
    assert_eq!(define.c_units()["cfx:add.c"], "miss");
    assert_eq!(
        run_program(&project, "cfx"),
        "add=35 mul=140 file=csrc/add.c"
    );

    edit(
        &project,
        "build.rs",
        "\"CFX_SCALE\", \"5\"",
        "\"CFX_SCALE\", \"3\"",
    );
    edit(
        &project,
        "csrc/include/cfx.h",
        "CFX_OFFSET 20",
        "CFX_OFFSET 10",
    );
    let reverted = world.cargo(&project, &["build"]).ok();
    for unit in CFX_UNITS {
        assert_eq!(reverted.c_units()[*unit], "hit", "{:?}", reverted.c_units());
    }
    assert_eq!(run_program(&project, "cfx"), CFX_OUTPUT);
}

#[test]
fn a_new_header_that_shadows_the_one_used_is_a_miss_not_a_stale_hit() {
    let world = World::new();
    let project = world.project_from("cfx", "p");
    world.cargo(&project, &["build"]).ok();
    assert_eq!(run_program(&project, "cfx"), CFX_OUTPUT);

    // `#include "cfx.h"` looks beside add.c before the -I directory.
    let shadow = std::fs::read_to_string(project.join("csrc/include/cfx.h"))
        .unwrap()
        .replace("CFX_OFFSET 10", "CFX_OFFSET 1000");
    std::fs::write(project.join("csrc/cfx.h"), shadow).unwrap();
    let run = world.cargo(&project, &["build"]).ok();
    assert_eq!(run.c_units()["cfx:add.c"], "miss", "{:?}", run.c_units());
    assert_eq!(
        run_program(&project, "cfx"),
        "add=1009 mul=1120 file=csrc/add.c"
    );
}

#[test]
fn a_second_checkout_hits_and_its_objects_name_no_checkout_path() {
    let world = World::new();
    let first = world.project_from("cfx", "first");
    world.cargo(&first, &["build"]).ok();
    let second = world.project_from("cfx", "second-checkout");
    let run = world.cargo(&second, &["build"]).ok();
    for unit in CFX_UNITS {
        assert_eq!(run.c_units()[*unit], "hit", "{:?}", run.c_units());
    }
    assert_eq!(run_program(&second, "cfx"), CFX_OUTPUT);
    // Built with debug info, yet no object holds either checkout's path:
    // every machine-local root is mapped by -ffile-prefix-map.
    for object in objects(&second) {
        let bytes = std::fs::read(&object).unwrap();
        for root in [&first, &second] {
            let needle = root.to_string_lossy();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} names {needle}",
                object.display()
            );
        }
    }
}

#[test]
fn calls_kache_does_not_cache_run_exactly_as_asked() {
    let world = World::new();
    let dir = world.root.path();
    std::fs::write(
        dir.join("probe.c"),
        "#ifdef __clang__\nclang\n#elif defined(__GNUC__)\ngnu\n#endif\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("hello.c"),
        "#include <stdio.h>\nint main(void) { puts(\"hi from c\"); return 3; }\n",
    )
    .unwrap();
    // The cc crate's family probe: same stdout, stderr and exit code.
    let plain = Command::new("cc")
        .args(["-E", "probe.c"])
        .current_dir(dir)
        .output()
        .unwrap();
    let through = world
        .command(KACHE, dir)
        .args(["cc", "-E", "probe.c"])
        .output()
        .unwrap();
    assert_eq!(through.status.code(), plain.status.code());
    assert_eq!(through.stdout, plain.stdout);
    assert_eq!(through.stderr, plain.stderr);
    assert!(String::from_utf8_lossy(&through.stdout).contains("gnu"));

    // Link mode: compile and link a program in one call.
    let linked = world
        .command(KACHE, dir)
        .args(["cc", "-o", "hello", "hello.c"])
        .output()
        .unwrap();
    assert!(linked.status.success(), "{linked:?}");
    let hello = Command::new(dir.join("hello")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&hello.stdout), "hi from c\n");
    assert_eq!(hello.status.code(), Some(3));

    // Any other program runs too, with its exit code and stdin.
    let mut child = world
        .command(KACHE, dir)
        .args(["sh", "-c", "read line; echo got:$line; exit 7"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"abc\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got:abc\n");

    // A failing compile keeps the compiler's exit code and message.
    let broken = world
        .command(KACHE, dir)
        .args(["cc", "-c", "missing.c", "-o", "missing.o"])
        .output()
        .unwrap();
    let plain_broken = Command::new("cc")
        .args(["-c", "missing.c", "-o", "missing.o"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(broken.status.code(), plain_broken.status.code());
    assert!(String::from_utf8_lossy(&broken.stderr).contains("missing.c"));
}

#[test]
fn a_compiler_that_does_not_exist_is_one_line_naming_it() {
    let world = World::new();
    for missing in ["clang-404", "/no/such/dir/gcc"] {
        let out = world.kache(&[missing, "-c", "x.c", "-o", "x.o"]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(missing), "{stderr}");
    }
    // Neither a subcommand nor a program: the command line's own error.
    let out = world.kache(&["frobnicate-nothing"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand"));
}

#[test]
fn real_c_crates_from_crates_io_build_and_hit_through_kache() {
    // zstd-sys (C and assembly), libsqlite3-sys (bundled sqlite3.c) and
    // blake3 (assembly through cc), exactly as published.
    let world = World::new();
    let project = world.project_from("csys", "p");
    let cold = world.cargo(&project, &["build", "--locked"]).ok();
    let c_units = cold.c_units();
    for unit in ["libsqlite3-sys:sqlite3.c", "zstd-sys:zstd_compress.c"] {
        assert_eq!(
            c_units.get(unit).map(String::as_str),
            Some("miss"),
            "{c_units:?}"
        );
    }
    assert!(
        c_units.keys().any(|k| k.starts_with("blake3:")),
        "{c_units:?}"
    );
    let expected = run_program(&project, "csys");
    assert!(expected.starts_with("23 "), "{expected}");

    world.cargo(&project, &["clean"]).ok();
    let warm = world.cargo(&project, &["build", "--locked"]).ok();
    let warm_units = warm.c_units();
    assert_eq!(warm_units.len(), c_units.len(), "{warm_units:?}");
    assert!(
        warm_units.values().all(|o| o == "hit"),
        "every C unit hits: {warm_units:?}"
    );
    assert_eq!(run_program(&project, "csys"), expected);
}

const INCBIN_UNITS: &[&str] = &["cincbin:blobs.c", "cincbin:blobs.S"];

/// What the `cincbin` program prints with every blob at `version`.
fn incbin_output(version: &str) -> String {
    format!(
        "plain=plain-{version} split=split-{version} part=part macro=macro-{version} \
         asm=asm-{version} included=included-{version}"
    )
}

/// Overwrites a blob with new bytes of the same size.
fn rewrite_blob(project: &Path, name: &str, from: &str, to: &str) {
    assert_eq!(from.len(), to.len());
    edit(project, &format!("blobs/{name}"), from, to);
}

#[test]
fn a_changed_incbin_blob_rebuilds_the_object_that_embeds_it() {
    // The assembler reads these blobs itself, through `.incbin` in C inline
    // assembly (one literal, split literals, after `;` with offset and
    // length, a name built by incbin.h-style macros) and in a `.S` (after a
    // label, and inside a file it `.include`s): no dep file names them.
    let world = World::new();
    let project = world.project_from("cincbin", "p");
    world.cargo(&project, &["build"]).ok();
    assert_eq!(run_program(&project, "cincbin"), incbin_output("1"));

    // One blob at a time, same size: each edit is a miss of the object that
    // embeds it, and the program prints the new bytes, as plain cargo would.
    let steps: &[(&str, &str, &str, &str, &str)] = &[
        (
            "plain.bin",
            "plain-1",
            "plain-2",
            "cincbin:blobs.c",
            "plain=plain-2",
        ),
        (
            "split.bin",
            "split-1",
            "split-2",
            "cincbin:blobs.c",
            "split=split-2",
        ),
        (
            "part.bin",
            "xxpart-1yy",
            "xxPART-1yy",
            "cincbin:blobs.c",
            "part=PART",
        ),
        (
            "macro.bin",
            "macro-1",
            "macro-2",
            "cincbin:blobs.c",
            "macro=macro-2",
        ),
        ("asm.bin", "asm-1", "asm-2", "cincbin:blobs.S", "asm=asm-2"),
        (
            "included.bin",
            "included-1",
            "included-2",
            "cincbin:blobs.S",
            "included=included-2",
        ),
    ];
    for (blob, from, to, unit, shows) in steps {
        rewrite_blob(&project, blob, from, to);
        let run = world.cargo(&project, &["build"]).ok();
        let printed = run_program(&project, "cincbin");
        assert!(printed.contains(shows), "{blob}: {printed}");
        assert_eq!(run.c_units()[*unit], "miss", "{blob}: {:?}", run.c_units());
    }

    // Back to the first blobs: both objects hit their first entries.
    for (blob, from, to, _, _) in steps {
        rewrite_blob(&project, blob, to, from);
    }
    let reverted = world.cargo(&project, &["build"]).ok();
    for unit in INCBIN_UNITS {
        assert_eq!(reverted.c_units()[*unit], "hit", "{:?}", reverted.c_units());
    }
    assert_eq!(run_program(&project, "cincbin"), incbin_output("1"));

    // The blobs are keyed by where they are in the checkout: a second
    // checkout hits.
    let second = world.project_from("cincbin", "second-checkout");
    let run = world.cargo(&second, &["build"]).ok();
    for unit in INCBIN_UNITS {
        assert_eq!(run.c_units()[*unit], "hit", "{:?}", run.c_units());
    }
    assert_eq!(run_program(&second, "cincbin"), incbin_output("1"));
}

#[test]
fn a_blob_that_appears_earlier_in_the_assemblers_search_is_a_miss() {
    // `.incbin "plain.bin"` is found under `-I blobs`; gas looks in the
    // build script's directory (the package root) first.
    let world = World::new();
    let project = world.project_from("cincbin", "p");
    world.cargo(&project, &["build"]).ok();
    assert_eq!(run_program(&project, "cincbin"), incbin_output("1"));
    std::fs::write(project.join("plain.bin"), "PLAIN-9").unwrap();
    // Nothing cargo watches changed and the C source stays as it was: an
    // edit of the build script makes it run again.
    edit(
        &project,
        "build.rs",
        "no dep file lists",
        "no dep file names",
    );
    let run = world.cargo(&project, &["build"]).ok();
    let printed = run_program(&project, "cincbin");
    assert!(printed.contains("plain=PLAIN-9"), "{printed}");
    assert_eq!(
        run.c_units()["cincbin:blobs.c"],
        "miss",
        "{:?}",
        run.c_units()
    );
}

/// A clang on `PATH`: `clang`, else the newest `clang-<major>`
/// (scripts/test.sh installs one).
fn clang() -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut versioned = Vec::new();
    for dir in std::env::split_paths(&path) {
        if dir.join("clang").is_file() {
            return "clang".to_string();
        }
        for item in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = item.file_name().to_string_lossy().to_string();
            if let Some(major) = name.strip_prefix("clang-")
                && let Ok(major) = major.parse::<u32>()
            {
                versioned.push((major, name));
            }
        }
    }
    versioned.sort();
    let (_, name) = versioned
        .pop()
        .expect("clang on PATH (scripts/test.sh installs it)");
    name
}

#[test]
fn with_clang_an_incbin_compile_passes_through_with_its_reason() {
    // clang's integrated assembler lists no `.incbin` file in its dep file
    // and has no `--MD`: what it reads cannot be keyed, so a compile whose
    // inputs mention `.incbin` runs every time.
    let world = World::new();
    let project = world.project_from("cincbin", "p");
    let clang = clang();
    let env = [("CC", clang.as_str())];
    let cold = world.cargo_with(&project, &["build"], &env).ok();
    assert_eq!(run_program(&project, "cincbin"), incbin_output("1"));
    rewrite_blob(&project, "plain.bin", "plain-1", "plain-2");
    rewrite_blob(&project, "asm.bin", "asm-1", "asm-2");
    let warm = world.cargo_with(&project, &["build"], &env).ok();
    let printed = run_program(&project, "cincbin");
    assert!(
        printed.contains("plain=plain-2") && printed.contains("asm=asm-2"),
        "{printed}"
    );
    for run in [&cold, &warm] {
        for unit in INCBIN_UNITS {
            let events: Vec<_> = run
                .events
                .iter()
                .filter(|e| e["crate_name"] == *unit)
                .collect();
            assert_eq!(events.len(), 1, "{unit}: {events:?}");
            assert_eq!(events[0]["outcome"], "passthrough", "{unit}: {events:?}");
            let reason = events[0]["reason"].as_str().unwrap_or_default();
            assert!(reason.contains(".incbin"), "{unit}: {reason}");
        }
    }
}
