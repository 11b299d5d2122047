//! Build-script runs cached as entries (on unless `KACHE_CACHE_BUILD_SCRIPTS=0`):
//! real cargo builds of `tests/fixtures/bs`, each compared with plain cargo
//! (no wrapper) doing the same sequence in a second copy.
//!
//! The fixture's scripts append a line to `runs-<package>.log` in the
//! workspace root whenever they really execute: a replayed run adds none.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Run, World, edit};

/// The switch on, as it is by default (named, so every step says which).
const FLAG: (&str, &str) = ("KACHE_CACHE_BUILD_SCRIPTS", "1");
/// The switch off.
const OFF: (&str, &str) = ("KACHE_CACHE_BUILD_SCRIPTS", "0");
const APP_RUN: &str = "bs-app:build-script-run";
/// A value of the variable `bs-app` declares, never to be stored as is.
const SECRET_WORD: &str = "bs-secret-4e1f90";
const UNDECLARED_RUN: &str = "bs-undeclared:build-script-run";

/// One kache copy and one plain copy of the fixture in one world.
struct Pair {
    world: World,
    kache: PathBuf,
    plain: PathBuf,
}

/// What one step did: the kache run, and how many times each script
/// executed in either copy (`(bs-app, bs-undeclared)`).
struct Step {
    run: Run,
    kache_ran: (usize, usize),
    plain_ran: (usize, usize),
}

impl Pair {
    fn new() -> Self {
        let world = World::new();
        let kache = world.project_from("bs", "kache");
        let plain = world.project_from("bs", "plain");
        Self {
            world,
            kache,
            plain,
        }
    }

    /// Edits the same file the same way in both copies.
    fn edit(&self, file: &str, from: &str, to: &str) {
        edit(&self.kache, file, from, to);
        edit(&self.plain, file, from, to);
    }

    fn write(&self, file: &str, text: &str) {
        for dir in [&self.kache, &self.plain] {
            std::fs::write(dir.join(file), text).expect("write");
        }
    }

    /// `cargo build <args>` in both copies (kache with `env`, which should
    /// hold the flag to test it), then both programs' output compared.
    fn step(&self, args: &[&str], env: &[(&str, &str)]) -> Step {
        let kache_before = runs(&self.kache);
        let plain_before = runs(&self.plain);
        let mut build = vec!["build", "-j", "2"];
        build.extend_from_slice(args);
        let run = self.world.cargo_with(&self.kache, &build, env).ok();
        let script_env: Vec<(&str, &str)> = env
            .iter()
            .filter(|(k, _)| !k.starts_with("KACHE_"))
            .copied()
            .collect();
        plain_cargo(&self.world, &self.plain, &build, &script_env);
        let profile = if args.contains(&"--release") {
            "release"
        } else {
            "debug"
        };
        assert_eq!(
            program_output(&self.kache, profile),
            program_output(&self.plain, profile),
            "kache and plain cargo built different programs after `cargo {}`\n{}",
            build.join(" "),
            run.stderr()
        );
        let kache_after = runs(&self.kache);
        let plain_after = runs(&self.plain);
        Step {
            run,
            kache_ran: (
                kache_after.0 - kache_before.0,
                kache_after.1 - kache_before.1,
            ),
            plain_ran: (
                plain_after.0 - plain_before.0,
                plain_after.1 - plain_before.1,
            ),
        }
    }

    fn clean(&self) {
        for dir in [&self.kache, &self.plain] {
            let status = self
                .world
                .command("cargo", dir)
                .args(["clean", "--offline", "--quiet"])
                .status()
                .expect("cargo clean");
            assert!(status.success());
        }
    }
}

/// How many times each fixture script executed in `project`.
fn runs(project: &Path) -> (usize, usize) {
    let count = |package: &str| {
        std::fs::read_to_string(project.join(format!("runs-{package}.log")))
            .map(|text| text.lines().count())
            .unwrap_or(0)
    };
    (count("bs-app"), count("bs-undeclared"))
}

/// Plain cargo: the world's environment without any wrapper.
fn plain_cargo(world: &World, dir: &Path, args: &[&str], env: &[(&str, &str)]) {
    let mut cmd = world.command("cargo", dir);
    cmd.env_remove("RUSTC_WRAPPER").args(args).arg("--offline");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run plain cargo");
    assert!(
        out.status.success(),
        "plain cargo failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What `bs-app` prints, or that it was not built (a `-p` build of the
/// other package): both copies must say the same.
fn program_output(project: &Path, profile: &str) -> String {
    let program = project.join("target").join(profile).join("bs-app");
    if !program.exists() {
        return "(bs-app not built)".to_string();
    }
    let out = Command::new(program).output().expect("run bs-app");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The cached outcomes of the build-script runs of `run`.
fn run_outcomes(run: &Run) -> (String, String) {
    let outcomes = run.outcomes();
    let one = |name: &str| {
        outcomes
            .get(name)
            .map(|list| list.join(","))
            .unwrap_or_default()
    };
    (one(APP_RUN), one(UNDECLARED_RUN))
}

/// The unit directory of the package's build-script run (the one holding
/// `output`), for `profile`.
fn run_dir(project: &Path, profile: &str, package: &str) -> PathBuf {
    let build = project.join("target").join(profile).join("build");
    std::fs::read_dir(&build)
        .expect("list build/")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}-")))
                && p.join("output").is_file()
        })
        .unwrap_or_else(|| panic!("no run directory for {package}"))
}

/// Relative paths of every file below `dir`, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("list").flatten() {
            let name = format!("{rel}{}", entry.file_name().to_string_lossy());
            if entry.file_type().expect("type").is_dir() {
                walk(&entry.path(), &format!("{name}/"), out);
            } else {
                out.push(name);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out);
    out.sort();
    out
}

/// Every file below `dir` whose name ends with `suffix`.
fn files_named(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(files_named(&path, suffix));
        } else if path.to_string_lossy().ends_with(suffix) {
            out.push(path);
        }
    }
    out
}

#[test]
fn after_cargo_clean_a_run_is_replayed_without_executing_the_script() {
    let pair = Pair::new();
    let first = pair.step(&[], &[FLAG]);
    assert_eq!(first.kache_ran, (1, 1), "a first build runs both scripts");
    assert_eq!(
        run_outcomes(&first.run),
        ("miss".to_string(), "miss".to_string())
    );

    pair.clean();
    let again = pair.step(&[], &[FLAG]);
    assert_eq!(again.plain_ran, (1, 1), "plain cargo reruns both scripts");
    assert_eq!(
        again.kache_ran,
        (0, 0),
        "kache replayed both runs without executing a script"
    );
    assert_eq!(
        run_outcomes(&again.run),
        ("hit".to_string(), "hit".to_string())
    );
    // What cargo saw is what the script printed: the directives (the static
    // library built with `cc`, `rustc-cfg`, `rustc-env`), its stderr, and
    // the same OUT_DIR tree (the generated module, the archive).
    for package in ["bs-app", "bs-undeclared"] {
        let kache = run_dir(&pair.kache, "debug", package);
        let plain = run_dir(&pair.plain, "debug", package);
        let read = |dir: &Path, file: &str, root: &Path| {
            std::fs::read_to_string(dir.join(file))
                .expect("read")
                .replace(&root.to_string_lossy().to_string(), "<ws>")
                .replace(
                    &dir.file_name().unwrap().to_string_lossy().to_string(),
                    "<unit>",
                )
        };
        assert_eq!(
            read(&kache, "output", &pair.kache),
            read(&plain, "output", &pair.plain),
            "{package}: the replayed stdout"
        );
        assert_eq!(
            read(&kache, "stderr", &pair.kache),
            read(&plain, "stderr", &pair.plain),
            "{package}: the replayed stderr"
        );
        assert_eq!(
            tree(&kache.join("out")),
            tree(&plain.join("out")),
            "{package}: OUT_DIR"
        );
    }
    let output = std::fs::read_to_string(run_dir(&pair.kache, "debug", "bs-app").join("output"))
        .expect("read output");
    for directive in [
        "cargo:rustc-link-lib=static=bsscale",
        "cargo:rustc-cfg=bs_cfg",
        "cargo:rustc-env=BS_ENV=debug",
    ] {
        assert!(output.contains(directive), "{directive} replayed");
    }
    // Runs are counted as their own kind.
    let stats = pair.world.kache(&["stats"]);
    let stats = String::from_utf8_lossy(&stats.stdout);
    assert!(
        stats.contains("build-script runs: 2 replayed, 2 executed"),
        "{stats}"
    );
    assert_eq!(
        program_output(&pair.kache, "debug"),
        "value=first word=unset extra=false scaled=6 cfg=true env=debug notes=plain notes \
         unlisted=unlisted one"
    );
    pair.world.assert_store_verifies();
}

#[test]
fn a_change_to_what_the_script_reads_or_declares_reruns_it() {
    let pair = Pair::new();
    let first = pair.step(&[], &[FLAG]);
    assert_eq!(first.kache_ran, (1, 1));

    // The script itself: its compile is stored again (the launcher's
    // `.kache-real` beside it is no unknown side file), and the new script
    // runs.
    pair.edit("app/build.rs", "says hello", "says hi");
    let step = pair.step(&[], &[FLAG]);
    assert_eq!(
        (step.plain_ran, step.kache_ran),
        ((1, 0), (1, 0)),
        "build.rs"
    );
    assert_eq!(step.run.outcome("build_script_build"), "miss");

    // A declared file (inside a declared folder).
    pair.edit("app/data/value.txt", "first", "second");
    let step = pair.step(&[], &[FLAG]);
    assert_eq!(
        (step.plain_ran, step.kache_ran),
        ((1, 0), (1, 0)),
        "value.txt"
    );

    // A new file in a declared folder, which the script does not even read.
    pair.write("app/data/unread.txt", "x");
    let step = pair.step(&[], &[FLAG]);
    assert_eq!(
        (step.plain_ran, step.kache_ran),
        ((1, 0), (1, 0)),
        "new file"
    );

    // A declared variable.
    let step = pair.step(&[], &[FLAG, ("BS_VALUE", SECRET_WORD)]);
    assert_eq!(
        (step.plain_ran, step.kache_ran),
        ((1, 0), (1, 0)),
        "BS_VALUE"
    );
    // `why-miss` names it; the entry records its digest, never the value
    // (which only the generated file, a blob, holds).
    let why = pair.world.kache(&["why-miss", APP_RUN]);
    let why_text = String::from_utf8_lossy(&why.stdout);
    assert!(
        why_text.contains("declared: env BS_VALUE changed"),
        "{why_text}"
    );
    for name in ["index.db", "index.db-wal"] {
        let bytes = std::fs::read(pair.world.cache.join(name)).unwrap_or_default();
        assert!(
            !bytes
                .windows(SECRET_WORD.len())
                .any(|w| w == SECRET_WORD.as_bytes()),
            "{name} holds the declared variable's value"
        );
    }

    // A feature.
    let step = pair.step(
        &["--features", "bs-app/extra"],
        &[FLAG, ("BS_VALUE", SECRET_WORD)],
    );
    assert_eq!(step.kache_ran, step.plain_ran, "a feature");
    assert_eq!(step.kache_ran.0, 1, "a feature");

    // The profile.
    let step = pair.step(&["--release"], &[FLAG, ("BS_VALUE", SECRET_WORD)]);
    assert_eq!(step.kache_ran, (1, 1), "the release profile");

    // A script that declares nothing: any file of its package.
    pair.edit("undeclared/notes.txt", "plain", "edited");
    let step = pair.step(&[], &[FLAG, ("BS_VALUE", SECRET_WORD)]);
    assert_eq!(
        (step.plain_ran, step.kache_ran),
        ((0, 1), (0, 1)),
        "notes.txt"
    );
    pair.edit(
        "undeclared/src/lib.rs",
        "include!",
        "// a comment\ninclude!",
    );
    let step = pair.step(&[], &[FLAG, ("BS_VALUE", SECRET_WORD)]);
    assert_eq!((step.plain_ran, step.kache_ran), ((0, 1), (0, 1)), "lib.rs");

    // Back to the first state: cargo reruns both scripts, kache has both
    // runs and replays them.
    pair.edit("app/build.rs", "says hi", "says hello");
    pair.edit("app/data/value.txt", "second", "first");
    for dir in [&pair.kache, &pair.plain] {
        std::fs::remove_file(dir.join("app/data/unread.txt")).expect("rm");
    }
    pair.edit("undeclared/notes.txt", "edited", "plain");
    pair.edit(
        "undeclared/src/lib.rs",
        "// a comment\ninclude!",
        "include!",
    );
    let step = pair.step(&[], &[FLAG]);
    assert_eq!(step.plain_ran, (1, 1));
    assert_eq!(step.kache_ran, (0, 0), "both runs replayed");
    assert_eq!(
        run_outcomes(&step.run),
        ("hit".to_string(), "hit".to_string())
    );
    pair.world.assert_store_verifies();
}

#[test]
fn another_target_runs_the_script_again_and_each_target_replays_its_own_run() {
    // `bs-undeclared` alone: its library builds for wasm too (the machine's
    // toolchain has the target: scripts/install-toolchains.sh).
    let pair = Pair::new();
    let host = pair.step(&["-p", "bs-undeclared"], &[FLAG]);
    assert_eq!((host.plain_ran, host.kache_ran), ((0, 1), (0, 1)));
    let wasm = ["-p", "bs-undeclared", "--target", "wasm32-unknown-unknown"];
    // The script is the same host binary; `TARGET` (and `CARGO_CFG_*`)
    // differ, so the host's run is not replayed for wasm.
    let step = pair.step(&wasm, &[FLAG]);
    assert_eq!((step.plain_ran, step.kache_ran), ((0, 1), (0, 1)), "wasm");
    let wasm_run: Vec<String> = step.run.outcomes()[UNDECLARED_RUN].clone();
    assert_eq!(wasm_run, ["miss"], "a run of its own");
    // After a clean, each target gets its own run back.
    pair.clean();
    for (args, what) in [(&wasm[..], "wasm"), (&["-p", "bs-undeclared"][..], "host")] {
        let step = pair.step(args, &[FLAG]);
        assert_eq!(
            (step.plain_ran, step.kache_ran),
            ((0, 1), (0, 0)),
            "{what}: replayed"
        );
        assert_eq!(step.run.outcome(UNDECLARED_RUN), "hit", "{what}");
    }
}

#[test]
fn after_cargo_clean_an_undeclared_package_file_is_read_again() {
    let pair = Pair::new();
    pair.step(&[], &[FLAG]);
    // Cargo does not rerun a script for a file it did not declare...
    pair.edit("app/unlisted.txt", "one", "two");
    let step = pair.step(&[], &[FLAG]);
    assert_eq!((step.plain_ran, step.kache_ran), ((0, 0), (0, 0)));
    // ...but `cargo clean` does, and a replayed run is never staler.
    pair.clean();
    let step = pair.step(&[], &[FLAG]);
    assert_eq!(step.plain_ran, (1, 1));
    assert_eq!(step.kache_ran, (1, 0), "the package changed: executed");
    assert!(program_output(&pair.kache, "debug").ends_with("unlisted=unlisted two"));
}

#[test]
fn with_the_flag_off_nothing_changes() {
    let pair = Pair::new();
    let off = pair.step(&[], &[OFF]);
    assert_eq!(off.kache_ran, (1, 1));
    let (app, undeclared) = run_outcomes(&off.run);
    assert!(app.is_empty() && undeclared.is_empty(), "no run entries");
    assert!(
        files_named(&pair.kache.join("target"), ".kache-real").is_empty(),
        "no launcher without the flag"
    );
    let script = files_named(
        &pair.kache.join("target/debug/build"),
        "/build-script-build",
    );
    assert!(!script.is_empty());
    for path in &script {
        let bytes = std::fs::read(path).expect("read");
        assert_eq!(
            &bytes[..4],
            b"\x7fELF",
            "{} is the real script",
            path.display()
        );
    }
    let keys = |run: &Run| -> Vec<(String, String)> {
        let mut keys: Vec<(String, String)> = run
            .events
            .iter()
            .filter(|e| !e["crate_name"].as_str().unwrap_or_default().contains(':'))
            .filter_map(|e| {
                Some((
                    e["crate_name"].as_str()?.to_string(),
                    e["cache_key"].as_str()?.to_string(),
                ))
            })
            .collect();
        keys.sort();
        keys
    };
    let off_keys = keys(&off.run);
    assert!(off_keys.iter().any(|(c, _)| c == "build_script_build"));

    // The flag changes no compile's key: every compile hits what the
    // flag-off build stored.
    pair.clean();
    let on = pair.step(&[], &[FLAG]);
    assert_eq!(keys(&on.run), off_keys, "the same compile keys");
    for event in on.run.events.iter().filter(|e| {
        !e["crate_name"].as_str().unwrap_or_default().contains(':') && e["outcome"] != "passthrough"
    }) {
        assert_eq!(event["outcome"], "hit", "{event}");
    }
    assert_eq!(
        run_outcomes(&on.run),
        ("miss".to_string(), "miss".to_string())
    );

    // Off, with the launchers of the flag-on build in place: cargo reruns
    // the script (its declared folder changed) and the launcher runs it,
    // stores and replays nothing.
    pair.write("app/data/another.txt", "x");
    let launched = pair.step(&[], &[OFF]);
    assert_eq!(launched.kache_ran, (1, 0), "executed, not replayed");
    let (app, undeclared) = run_outcomes(&launched.run);
    assert!(app.is_empty() && undeclared.is_empty(), "no run events");

    // Off again after a clean: the scripts run, nothing is replayed.
    pair.clean();
    let off_again = pair.step(&[], &[OFF]);
    assert_eq!(off_again.kache_ran, (1, 1), "executed, not replayed");
    let (app, undeclared) = run_outcomes(&off_again.run);
    assert!(app.is_empty() && undeclared.is_empty());
    assert!(files_named(&pair.kache.join("target"), ".kache-real").is_empty());
}

#[test]
fn kache_verify_executes_a_stored_run_and_compares_it() {
    let pair = Pair::new();
    pair.step(&[], &[FLAG]);
    pair.clean();
    let verified = pair.step(&[], &[FLAG, ("KACHE_VERIFY", "1")]);
    assert_eq!(verified.kache_ran, (1, 1), "a verified run executes");
    let runs: Vec<_> = verified
        .run
        .events
        .iter()
        .filter(|e| e["crate_name"] == APP_RUN || e["crate_name"] == UNDECLARED_RUN)
        .collect();
    assert_eq!(runs.len(), 2);
    for event in runs {
        assert_eq!(event["outcome"], "hit", "{event}");
        assert_eq!(event["verified"], true, "{event}");
    }
}

#[test]
fn a_launcher_never_runs_a_real_script_that_is_not_its_own() {
    let pair = Pair::new();
    pair.step(&[], &[FLAG]);
    let real = files_named(&pair.kache.join("target"), ".kache-real");
    assert_eq!(real.len(), 2, "one real script per package: {real:?}");
    let launcher = real[0].with_file_name("build-script-build");
    let before = std::fs::read(&real[0]).expect("read");
    // Another script in its place (same size, other bytes).
    let mut other = before.clone();
    let last = other.len() - 1;
    other[last] ^= 0xff;
    // A new inode: the real script may share its inode with a blob.
    std::fs::remove_file(&real[0]).expect("rm");
    std::fs::write(&real[0], &other).expect("write");
    std::fs::set_permissions(
        &real[0],
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let out = Command::new(&launcher)
        .env(FLAG.0, FLAG.1)
        .env("KACHE_CACHE_DIR", &pair.world.cache)
        .output()
        .expect("run the launcher");
    assert!(!out.status.success(), "a stale script must not run");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not the build script"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_run_stored_on_one_machine_is_replayed_from_the_remote_on_another() {
    let shared = tempfile::tempdir().expect("tempdir");
    let mut pair = Pair::new();
    pair.world.env = vec![pair.world.fs_remote(shared.path())];
    pair.step(&[], &[FLAG]);
    let pushed = pair.world.kache_in(&pair.kache, &["sync", "--push"], &[]);
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );

    // Another machine: an empty cache, the checkout somewhere else.
    let mut other = Pair::new();
    other.world.env = vec![other.world.fs_remote(shared.path())];
    let step = other.step(&[], &[FLAG]);
    assert_eq!(step.plain_ran, (1, 1));
    assert_eq!(step.kache_ran, (0, 0), "both runs came from the remote");
    for name in [APP_RUN, UNDECLARED_RUN] {
        let event = step
            .run
            .events
            .iter()
            .find(|e| e["crate_name"] == name)
            .unwrap_or_else(|| panic!("no event for {name}"));
        assert_eq!(event["outcome"], "hit", "{event}");
        // Fetched for the run, or prefetched at the build's start.
        assert!(
            event["source"] == "remote" || event["source"] == "prefetch",
            "{event}"
        );
    }
    other.world.assert_store_verifies();
}

/// How many times `package`'s script executed in a `bslinks` copy.
fn links_runs(project: &Path, package: &str) -> usize {
    std::fs::read_to_string(project.join(format!("runs-{package}.log")))
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

/// What `bsl-top` prints.
fn links_program(project: &Path) -> String {
    let out = Command::new(project.join("target/debug/bsl-top"))
        .output()
        .expect("run bsl-top");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_value_a_links_dependency_hands_down_is_keyed() {
    let world = World::new();
    let kache = world.project_from("bslinks", "kache");
    let plain = world.project_from("bslinks", "plain");
    // Cargo reruns `bsl-top`'s script whenever `bsl-dep`'s reran, with
    // `DEP_BSLINKS_MODE` set from what that run printed (`cargo:mode=`, a
    // value, not a path): a replay must be of a run that saw that value.
    for mode in ["a", "b", "a", "b"] {
        let env = [FLAG, ("BSL_MODE", mode)];
        let before = links_runs(&kache, "bsl-top");
        let run = world.cargo_with(&kache, &["build", "-j", "2"], &env).ok();
        plain_cargo(&world, &plain, &["build", "-j", "2"], &[("BSL_MODE", mode)]);
        assert_eq!(
            links_program(&kache),
            links_program(&plain),
            "BSL_MODE={mode}\n{}",
            run.stderr()
        );
        assert_eq!(links_program(&kache), format!("mode={mode}"));
        let top = run.outcome("bsl-top:build-script-run");
        if before == 0 {
            assert_eq!(top, "miss", "the first build runs the script");
        }
        // Once each mode has been seen, the run is replayed.
        if mode == "a" && before > 0 {
            assert_eq!(top, "hit", "BSL_MODE={mode}: replayed");
        }
    }
    world.assert_store_verifies();
}

#[test]
fn a_run_that_writes_into_its_own_package_is_not_replayed() {
    let world = World::new();
    let first = world.project_from("bssrc", "first");
    let run = world
        .cargo_with(&first, &["build", "-j", "2"], &[FLAG])
        .ok();
    assert!(
        run.outcomes().contains_key("bss-app:build-script-run"),
        "the run went through kache: {:?}",
        run.outcomes()
    );
    // Another checkout, without the file the script writes into `src/`:
    // only executing the script makes it. (In the first checkout the
    // package now holds it, so its key differs anyway.)
    let second = world.project_from("bssrc", "second");
    let run = world.cargo_with(&second, &["build", "-j", "2"], &[FLAG]);
    assert!(
        run.output.status.success(),
        "a replayed run did not write src/generated.rs:\n{}",
        run.stderr()
    );
    let out = Command::new(second.join("target/debug/bss-app"))
        .output()
        .expect("run bss-app");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "value=first");
    assert_eq!(run.outcome("bss-app:build-script-run"), "miss");
}

#[test]
fn a_run_kache_cannot_key_never_writes_through_to_a_blob() {
    let pair = Pair::new();
    // The first run's OUT_DIR files are linked into the store.
    let first = pair.step(&[], &[FLAG]);
    assert_eq!(first.kache_ran, (1, 1));
    // A package kache cannot key (a tree deeper than any walk goes): the
    // run is neither looked up nor stored, and the script executes as
    // cargo would run it; it rewrites `OUT_DIR/notes.rs` in place.
    for dir in [&pair.kache, &pair.plain] {
        let deep: PathBuf = (0..70).fold(dir.join("undeclared"), |p, _| p.join("d"));
        std::fs::create_dir_all(&deep).expect("mkdir");
    }
    pair.edit("undeclared/notes.txt", "plain", "edited");
    let step = pair.step(&[], &[FLAG]);
    assert_eq!((step.plain_ran, step.kache_ran), ((0, 1), (0, 1)));
    assert!(program_output(&pair.kache, "debug").contains("notes=edited notes"));
    pair.world.assert_store_verifies();
}

#[test]
fn a_script_run_without_kache_never_writes_through_to_a_blob() {
    let pair = Pair::new();
    // A run stored, then replayed after a clean.
    pair.step(&[], &[FLAG]);
    pair.clean();
    let replayed = pair.step(&[], &[FLAG]);
    assert_eq!(replayed.kache_ran, (0, 0));
    // The flag off and the script edited: cargo recompiles it (no launcher
    // now) and runs it itself, in the same OUT_DIR, rewriting its files in
    // place; so does any build without kache.
    pair.edit("app/build.rs", "says hello", "says hi");
    pair.edit("app/data/value.txt", "first", "second");
    let step = pair.step(&[], &[OFF]);
    assert_eq!(step.kache_ran, (1, 0));
    assert!(program_output(&pair.kache, "debug").starts_with("value=second"));
    pair.world.assert_store_verifies();
}

/// `bs-undeclared`'s script replaced by one that logs its run, reads
/// `reads` (relative to the package) into `NOTES` and prints `extra`.
fn undeclared_script(reads: &[&str], extra: &str) -> String {
    let reads: Vec<String> = reads.iter().map(|r| format!("{r:?}")).collect();
    format!(
        r#"use std::io::Write;
use std::path::Path;
fn main() {{
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let out = std::env::var("OUT_DIR").unwrap();
    let log = Path::new(&manifest).join("../runs-bs-undeclared.log");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    writeln!(file, "ran").unwrap();
    let mut notes = String::new();
    for read in [{reads}] {{
        notes += std::fs::read_to_string(Path::new(&manifest).join(read)).unwrap().trim();
        notes += " ";
    }}
    std::fs::write(Path::new(&out).join("notes.rs"), format!("pub const NOTES: &str = {{:?}};\n", notes)).unwrap();
    {extra}
}}
"#,
        reads = reads.join(", ")
    )
}

/// The reason the newest event of `unit` in `run` gives, if any.
fn reason_of(run: &Run, unit: &str) -> String {
    run.events
        .iter()
        .rev()
        .find(|e| e["crate_name"] == unit)
        .and_then(|e| e["reason"].as_str().map(String::from))
        .unwrap_or_default()
}

#[test]
fn a_script_cargo_always_reruns_or_that_reads_the_repository_is_never_replayed() {
    let pair = Pair::new();
    // `rerun-if-changed=NULL`: a path that does not exist, which cargo
    // reruns on every build. The input lies outside the package.
    pair.write("shared.txt", "one");
    pair.write(
        "undeclared/build.rs",
        &undeclared_script(
            &["../shared.txt"],
            r#"println!("cargo:rerun-if-changed=NULL");"#,
        ),
    );
    let first = pair.step(&[], &[FLAG]);
    assert_eq!(first.kache_ran.1, 1);
    assert!(
        reason_of(&first.run, UNDECLARED_RUN).contains("NULL, which does not exist"),
        "{:?}",
        first.run.outcomes()
    );
    pair.write("shared.txt", "two");
    let step = pair.step(&[], &[FLAG]);
    assert_eq!(step.plain_ran.1, 1, "cargo reruns it");
    assert_eq!(step.kache_ran.1, 1, "and so does kache: nothing was stored");
    assert!(program_output(&pair.kache, "debug").contains("notes=two"));

    // A script that declares a file of the repository (as vergen does).
    for dir in [&pair.kache, &pair.plain] {
        std::fs::create_dir_all(dir.join(".git")).expect("mkdir");
    }
    pair.write(".git/HEAD", "ref: refs/heads/main\n");
    pair.write(
        "undeclared/build.rs",
        &undeclared_script(
            &["../.git/HEAD"],
            r#"println!("cargo:rerun-if-changed=../.git/HEAD");"#,
        ),
    );
    let step = pair.step(&[], &[FLAG]);
    assert_eq!(step.kache_ran.1, 1);
    assert!(
        reason_of(&step.run, UNDECLARED_RUN).contains("reads the repository"),
        "{:?}",
        step.run.outcomes()
    );
    pair.clean();
    let step = pair.step(&[], &[FLAG]);
    assert_eq!(
        step.kache_ran.1, 1,
        "executed after a clean, never replayed"
    );
}

#[test]
fn a_hidden_file_or_a_symlinked_input_of_the_package_reruns_a_script_that_declares_nothing() {
    let pair = Pair::new();
    pair.write("undeclared/.env", "API=one");
    for dir in [&pair.kache, &pair.plain] {
        std::fs::create_dir_all(dir.join("undeclared/.config")).expect("mkdir");
    }
    pair.write("undeclared/.config/api.txt", "URL=one");
    pair.write("shared.proto", "message A {}");
    for dir in [&pair.kache, &pair.plain] {
        std::os::unix::fs::symlink("../shared.proto", dir.join("undeclared/api.proto"))
            .expect("symlink");
    }
    pair.write(
        "undeclared/build.rs",
        &undeclared_script(&[".env", ".config/api.txt", "api.proto"], ""),
    );
    let first = pair.step(&[], &[FLAG]);
    assert_eq!(first.kache_ran.1, 1);
    // A tracked dotfile: cargo's package list holds it, so a clean reruns
    // the script and kache must not replay the old run.
    pair.write("undeclared/.env", "API=two");
    pair.clean();
    let step = pair.step(&[], &[FLAG]);
    assert_eq!(step.kache_ran.1, 1, ".env");
    assert!(program_output(&pair.kache, "debug").contains("API=two"));
    // A file in a hidden folder of the package, likewise.
    pair.write("undeclared/.config/api.txt", "URL=two");
    pair.clean();
    let step = pair.step(&[], &[FLAG]);
    assert_eq!(step.kache_ran.1, 1, ".config/api.txt");
    assert!(program_output(&pair.kache, "debug").contains("URL=two"));
    // The target of a symlink in the package (a shared proto folder).
    pair.write("shared.proto", "message A { int32 b = 1; }");
    let step = pair.step(&[], &[FLAG]);
    assert_eq!((step.plain_ran.1, step.kache_ran.1), (1, 1), "symlinked");
    pair.clean();
    let step = pair.step(&[], &[FLAG]);
    assert_eq!(step.kache_ran.1, 0, "replayed once nothing changed");
    assert!(program_output(&pair.kache, "debug").contains("int32 b"));
}

#[test]
fn a_script_that_links_a_crate_recording_the_build_is_never_cached() {
    // A crate named as `built` (which bakes the job count and CI variables
    // into the program), linked three ways: directly, under an alias, and
    // through a helper crate (only the script's binary shows that one).
    let ways = [
        ("built = { path = \"../built\" }", "built::write();"),
        (
            "bi = { package = \"built\", path = \"../built\" }",
            "bi::write();",
        ),
        ("helper = { path = \"../helper\" }", "helper::write();"),
    ];
    for (dependency, call) in ways {
        let pair = Pair::new();
        for dir in [&pair.kache, &pair.plain] {
            for krate in ["built", "helper"] {
                std::fs::create_dir_all(dir.join(krate).join("src")).expect("mkdir");
            }
        }
        let manifest = |name: &str, deps: &str| {
            format!(
                "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n[dependencies]\n{deps}\n"
            )
        };
        pair.write("built/Cargo.toml", &manifest("built", ""));
        pair.write(
            "built/src/lib.rs",
            "pub fn write() {\n    std::hint::black_box(7);\n}\n",
        );
        pair.write(
            "helper/Cargo.toml",
            &manifest("helper", "built = { path = \"../built\" }"),
        );
        pair.write(
            "helper/src/lib.rs",
            "pub fn write() {\n    built::write();\n}\n",
        );
        pair.edit(
            "undeclared/Cargo.toml",
            "publish = false",
            &format!("publish = false\n\n[build-dependencies]\n{dependency}"),
        );
        pair.edit(
            "Cargo.toml",
            "\"undeclared\"]",
            "\"undeclared\", \"built\", \"helper\"]",
        );
        pair.write(
            "undeclared/build.rs",
            &undeclared_script(&["notes.txt"], call),
        );
        let first = pair.step(&[], &[FLAG]);
        assert_eq!(first.kache_ran.1, 1, "{dependency}");
        assert!(
            reason_of(&first.run, UNDECLARED_RUN)
                .contains("records the repository or the build (built)"),
            "{dependency}: {:?}",
            first.run.outcomes()
        );
        pair.clean();
        let step = pair.step(&[], &[FLAG]);
        assert_eq!(
            step.kache_ran,
            (0, 1),
            "{dependency}: bs-app replayed, bs-undeclared executed"
        );
    }
}

#[test]
fn a_variable_cargo_configuration_sets_reruns_the_script_after_a_clean() {
    let pair = Pair::new();
    for dir in [&pair.kache, &pair.plain] {
        std::fs::create_dir_all(dir.join(".cargo")).expect("mkdir");
    }
    pair.write(".cargo/config.toml", "[env]\nGREETING = \"a\"\n");
    // Read without declaring it: cargo reruns nothing when it changes,
    // but `cargo clean` does.
    pair.write(
        "undeclared/build.rs",
        &undeclared_script(
            &["notes.txt"],
            r#"std::fs::write(Path::new(&out).join("notes.rs"), format!("pub const NOTES: &str = {:?};\n", std::env::var("GREETING").unwrap_or_default())).unwrap();"#,
        ),
    );
    let first = pair.step(&[], &[FLAG]);
    assert_eq!(first.kache_ran.1, 1);
    assert!(program_output(&pair.kache, "debug").contains("notes=a"));
    pair.write(".cargo/config.toml", "[env]\nGREETING = \"b\"\n");
    pair.clean();
    let step = pair.step(&[], &[FLAG]);
    assert_eq!(step.kache_ran.1, 1, "executed, not replayed");
    assert!(program_output(&pair.kache, "debug").contains("notes=b"));
    // Back: the first run is replayed.
    pair.write(".cargo/config.toml", "[env]\nGREETING = \"a\"\n");
    pair.clean();
    let step = pair.step(&[], &[FLAG]);
    assert_eq!(step.kache_ran.1, 0, "replayed");
    assert!(program_output(&pair.kache, "debug").contains("notes=a"));
}
