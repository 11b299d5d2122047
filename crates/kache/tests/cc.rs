//! C and C++ through kache: the `cc` crate runs every compiler command of a
//! build script as `kache <compiler> <args…>` because the wrapper binary is
//! named `kache`. Real cargo builds, real `cc`/`c++`, real build scripts.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::{KACHE, Run, World, edit};

/// The switch that turns build-script run caching off.
const RUNS_OFF: (&str, &str) = ("KACHE_CACHE_BUILD_SCRIPTS", "0");

/// A world with build-script run caching off. A C object is compiled (and
/// cached by `kache cc`) only when a build script really runs; with the
/// default on, a run kache already stored is replayed (`OUT_DIR` restored,
/// its output printed) and asks for no C compile at all. Tests whose
/// subject is the C objects therefore make every script run.
fn c_world() -> World {
    World::with_env(vec![(RUNS_OFF.0.into(), RUNS_OFF.1.into())])
}

/// Whether `name` is a build-script run entry (`<package>:build-script-run`)
/// rather than a C unit (`<package>:<source>`).
fn is_run(name: &str) -> bool {
    name.ends_with(":build-script-run")
}

/// The outcome of every C-family compile of `run` (build-script runs left
/// out: their names hold a `:` too).
fn c_objects(run: &Run) -> BTreeMap<String, String> {
    let mut units = run.c_units();
    units.retain(|name, _| !is_run(name));
    units
}

/// `<package>:build-script-run → outcomes` of `run`.
fn script_runs(run: &Run) -> BTreeMap<String, Vec<String>> {
    let mut runs = run.outcomes();
    runs.retain(|name, _| is_run(name));
    runs
}

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
/// The run entry of the `cfx` build script.
const CFX_RUN: &str = "cfx:build-script-run";

#[test]
fn c_and_cpp_units_build_cold_then_hit_warm_with_the_same_program() {
    let world = c_world();
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
    let world = c_world();
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
    // The first checkout's script runs: its C objects and its run are
    // stored.
    let world = World::new();
    let first = world.project_from("cfx", "first");
    let cold = world.cargo(&first, &["build"]).ok();
    assert_eq!(
        script_runs(&cold)[CFX_RUN],
        ["miss"],
        "{:?}",
        cold.outcomes()
    );

    // With runs off, a second checkout's script runs again and every
    // object it asks for hits.
    let second = world.project_from("cfx", "second-checkout");
    let run = world.cargo_with(&second, &["build"], &[RUNS_OFF]).ok();
    for unit in CFX_UNITS {
        assert_eq!(run.c_units()[*unit], "hit", "{:?}", run.c_units());
    }
    assert_eq!(run_program(&second, "cfx"), CFX_OUTPUT);
    assert_objects_name_no_checkout(&second, &[&first, &second]);

    // With the default on, a third checkout replays the first one's run:
    // no C compile is asked for, and the objects it restores (what the
    // first checkout's compiles stored) name no checkout either. They
    // are copies, never links into the store.
    let third = world.project_from("cfx", "third-checkout");
    let run = world.cargo(&third, &["build"]).ok();
    assert_eq!(script_runs(&run)[CFX_RUN], ["hit"], "{:?}", run.outcomes());
    assert!(c_objects(&run).is_empty(), "{:?}", run.c_units());
    assert_eq!(run_program(&third, "cfx"), CFX_OUTPUT);
    assert_objects_name_no_checkout(&third, &[&first, &second, &third]);
    for object in objects(&third) {
        let links = std::fs::metadata(&object).unwrap().nlink();
        assert_eq!(links, 1, "{} shares an inode", object.display());
    }
}

/// Panics if an object under `project` holds any of `roots`. They are
/// built with debug info: every machine-local root is mapped by
/// `-ffile-prefix-map`.
fn assert_objects_name_no_checkout(project: &Path, roots: &[&Path]) {
    for object in objects(project) {
        let bytes = std::fs::read(&object).unwrap();
        for root in roots {
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
    let c_units = c_objects(&cold);
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
    let runs = script_runs(&cold);
    for package in ["libsqlite3-sys", "zstd-sys", "blake3"] {
        let name = format!("{package}:build-script-run");
        assert_eq!(
            runs.get(&name).map(Vec::as_slice),
            Some(&["miss".to_string()][..]),
            "{runs:?}"
        );
    }
    let expected = run_program(&project, "csys");
    assert!(expected.starts_with("23 "), "{expected}");

    // With the default on, a clean build replays every script's run: its
    // `OUT_DIR` (objects and archives) comes back without a C compile, and
    // the program is the same.
    world.cargo(&project, &["clean"]).ok();
    let replayed = world.cargo(&project, &["build", "--locked"]).ok();
    let replayed_runs = script_runs(&replayed);
    assert_eq!(
        replayed_runs.keys().collect::<Vec<_>>(),
        runs.keys().collect::<Vec<_>>(),
        "{replayed_runs:?}"
    );
    assert!(
        replayed_runs.values().all(|o| o == &["hit"]),
        "every run is replayed: {replayed_runs:?}"
    );
    let replayed_units = c_objects(&replayed);
    assert!(
        replayed_units.is_empty(),
        "a replayed run asks for no C compile: {replayed_units:?}"
    );
    assert_eq!(run_program(&project, "csys"), expected);

    // With runs off, every script runs again and every C unit it compiles
    // hits.
    world.cargo(&project, &["clean"]).ok();
    let warm = world
        .cargo_with(&project, &["build", "--locked"], &[RUNS_OFF])
        .ok();
    assert!(script_runs(&warm).is_empty(), "{:?}", warm.outcomes());
    let warm_units = c_objects(&warm);
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
    let world = c_world();
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
