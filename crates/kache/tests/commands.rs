//! The command line over a real store filled by real cargo builds.

mod common;

use common::{EXPECTED_LINE, World, run_app};

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn kache_alone_prints_help_and_bad_input_gets_a_one_line_reason() {
    let world = World::new();
    let help = world.kache(&[]);
    assert!(text(&help).contains("Usage: kache"), "{}", text(&help));
    for sub in [
        "init", "stats", "list", "why-miss", "report", "gc", "purge", "doctor",
    ] {
        let out = world.kache(&[sub, "--help"]);
        assert!(out.status.success(), "{sub} --help");
        assert!(text(&out).contains("Usage: kache"), "{sub}");
    }
    let bad = world.kache(&["stats", "--since", "yesterday-ish"]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("not a duration"), "{}", text(&bad));
}

#[test]
fn a_flipped_byte_is_caught_by_verify_and_removed_by_repair() {
    let world = World::new();
    let project = world.project("p");
    world.cargo(&project, &["build"]).ok();
    let clean = world.kache(&["doctor", "--verify", "--checksums"]);
    assert!(clean.status.success(), "{}", text(&clean));

    // Flip one byte in the largest blob (a proc-macro or rlib).
    let mut blobs = world.blobs();
    blobs.sort_by_key(|b| std::fs::metadata(b).unwrap().len());
    let victim = blobs.last().unwrap();
    let mut perms = std::fs::metadata(victim).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(victim, perms).unwrap();
    let mut bytes = std::fs::read(victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(victim, &bytes).unwrap();

    let sizes_only = world.kache(&["doctor", "--verify", "--quick"]);
    assert!(
        sizes_only.status.success(),
        "--quick checks sizes only: {}",
        text(&sizes_only)
    );
    let caught = world.kache(&["doctor", "--verify"]);
    assert!(!caught.status.success(), "--verify re-hashes every blob");
    assert!(text(&caught).contains("is corrupt"), "{}", text(&caught));
    let repaired = world.kache(&["doctor", "--repair", "--checksums"]);
    assert!(repaired.status.success(), "{}", text(&repaired));
    assert!(!victim.exists(), "the corrupt blob is gone");
    let after = world.kache(&["doctor", "--verify", "--checksums"]);
    assert!(after.status.success(), "{}", text(&after));

    // The entry that used it is gone too: the next build compiles it again.
    world.cargo(&project, &["clean"]).ok();
    let rebuilt = world.cargo(&project, &["build"]).ok();
    assert!(rebuilt.events.iter().any(|e| e["outcome"] == "miss"));
    assert_eq!(run_app(&project), EXPECTED_LINE);
}

#[test]
fn a_wrapper_killed_mid_store_leaves_the_store_usable() {
    let world = World::new();
    let project = world.project("p");
    let killed = world.cargo_with(&project, &["build"], &[("KACHE_FAULT", "after-blobs")]);
    assert!(!killed.output.status.success(), "the kill fails that build");
    assert!(
        !world.blobs().is_empty(),
        "blobs were written before the kill"
    );

    let next = world.cargo(&project, &["build"]).ok();
    assert_eq!(run_app(&project), EXPECTED_LINE);
    assert!(
        next.events.iter().all(|e| e["outcome"] != "hit"),
        "no entry was committed by the killed run"
    );
    let verify = world.kache(&["doctor", "--verify", "--checksums"]);
    assert!(verify.status.success(), "{}", text(&verify));
    world.cargo(&project, &["clean"]).ok();
    let warm = world.cargo(&project, &["build"]).ok();
    assert_eq!(warm.outcome("fx_core"), "hit");
}

#[test]
fn why_miss_names_the_changed_component() {
    let world = World::new();
    let project = world.project("p");
    world.cargo(&project, &["build"]).ok();
    world
        .cargo_with(&project, &["build"], &[("RUSTFLAGS", "-C opt-level=1")])
        .ok();
    let out = world.kache(&["why-miss", "fx_core"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("codegen: changed"), "{}", text(&out));

    common::edit(&project, "core/greeting.txt", "hello", "hey");
    world.cargo(&project, &["build"]).ok();
    let out = world.kache(&["why-miss", "fx_core"]);
    assert!(
        text(&out).contains("greeting.txt changed"),
        "{}",
        text(&out)
    );

    let unknown = world.kache(&["why-miss", "no_such_crate"]);
    assert!(!unknown.status.success());
}

#[test]
fn stats_list_and_report_describe_what_happened() {
    let world = World::new();
    let project = world.project("p");
    world.cargo(&project, &["build"]).ok();
    world.cargo(&project, &["clean"]).ok();
    world.cargo(&project, &["build"]).ok();

    // Five library compiles and `fx-gen`'s build-script run, each stored
    // once and hit once (runs are entries too, and counted apart as well).
    let stats = text(&world.kache(&["stats", "--since", "1h"]));
    assert!(stats.contains("hits: 6"), "{stats}");
    assert!(stats.contains("misses: 6"), "{stats}");
    assert!(
        stats.contains("build-script runs: 1 replayed, 1 executed"),
        "{stats}"
    );

    let list = text(&world.kache(&["list", "fx_core", "--sort", "size"]));
    assert_eq!(
        list.lines().filter(|l| l.starts_with("fx_core ")).count(),
        1,
        "{list}"
    );
    let all = text(&world.kache(&["list", "--sort", "hits"]));
    assert_eq!(all.lines().count(), 7, "header and six entries: {all}");
    assert!(all.contains("fx-gen:build-script-run"), "{all}");

    let json = world.kache(&["report", "--format", "json", "--top", "2"]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json report");
    assert_eq!(report["hits"], 6);
    assert_eq!(report["build_script_run_hits"], 1);
    assert_eq!(report["slowest_misses"].as_array().unwrap().len(), 2);
    assert_matches_published_schema(&json.stdout);
    let md_path = world.root.path().join("report.md");
    let md = world.kache(&[
        "report",
        "--format",
        "markdown",
        "--output",
        md_path.to_str().unwrap(),
    ]);
    assert!(md.status.success());
    let markdown = std::fs::read_to_string(md_path).unwrap();
    assert!(markdown.contains("| Hits | 6 |"), "{markdown}");
    assert!(
        markdown.contains("| Build-script runs replayed | 1 |"),
        "{markdown}"
    );
    let github = world.root.path().join("summary.md");
    std::fs::write(&github, "earlier step\n").unwrap();
    let gh = world
        .command(common::KACHE, world.root.path())
        .args(["report", "--format", "github"])
        .env("GITHUB_STEP_SUMMARY", &github)
        .output()
        .unwrap();
    assert!(gh.status.success());
    let summary = std::fs::read_to_string(github).unwrap();
    assert!(
        summary.starts_with("earlier step\n## kache build report"),
        "appends: {summary}"
    );
}

/// Validates a real report against docs/report.schema.json with an
/// independent validator (Python's `jsonschema`, draft 2020-12).
fn assert_matches_published_schema(report: &[u8]) {
    let schema =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/report.schema.json");
    let mut check = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys, jsonschema\n\
schema = json.load(open(sys.argv[1]))\n\
jsonschema.validators.validator_for(schema).check_schema(schema)\n\
jsonschema.validate(json.load(sys.stdin), schema)\n",
        ])
        .arg(&schema)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with jsonschema (scripts/test.sh installs it)");
    std::io::Write::write_all(check.stdin.as_mut().unwrap(), report).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the report does not match its schema:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The validator can fail: a report with a field the schema does not know
    // is refused.
    let mut extra: serde_json::Value = serde_json::from_slice(report).unwrap();
    extra["surprise"] = 1.into();
    let refused = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys, jsonschema\n\
jsonschema.validate(json.loads(sys.argv[2]), json.load(open(sys.argv[1])))\n",
        ])
        .arg(&schema)
        .arg(extra.to_string())
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "an unknown field must not validate"
    );
}

#[test]
fn gc_and_purge_remove_entries_and_their_unused_blobs() {
    let world = World::new();
    let project = world.project("p");
    world.cargo(&project, &["build"]).ok();
    let before = world.blobs().len();
    let purge = world.kache(&["purge", "--crate-name", "fx_macros"]);
    assert!(purge.status.success(), "{}", text(&purge));
    assert!(
        text(&purge).contains("removed 1 entries"),
        "{}",
        text(&purge)
    );
    assert!(world.blobs().len() < before);
    let list = text(&world.kache(&["list"]));
    assert!(!list.contains("fx_macros"));

    let gc = world
        .command(common::KACHE, world.root.path())
        .args(["gc"])
        .env("KACHE_MAX_SIZE", "1")
        .output()
        .unwrap();
    assert!(gc.status.success(), "{}", text(&gc));
    assert!(
        world.blobs().is_empty(),
        "everything over a 1-byte budget is collected"
    );
    assert!(text(&world.kache(&["list"])).contains("(no entries)"));
    // The project still builds and runs after its cache vanished.
    world.cargo(&project, &["clean"]).ok();
    world.cargo(&project, &["build"]).ok();
    assert_eq!(run_app(&project), EXPECTED_LINE);

    let aged = world.kache(&["gc", "--max-age", "0s"]);
    assert!(aged.status.success());
}

#[test]
fn init_configures_cargo_idempotently() {
    let world = World::new();
    let cargo_home = world.root.path().join("cargo-home");
    let run = |args: &[&str]| {
        world
            .command(common::KACHE, world.root.path())
            .args(args)
            .env("CARGO_HOME", &cargo_home)
            .output()
            .unwrap()
    };
    let check = run(&["init", "--check"]);
    assert!(!check.status.success());
    let first = run(&["init", "-y"]);
    assert!(first.status.success(), "{}", text(&first));
    let config = std::fs::read_to_string(cargo_home.join("config.toml")).unwrap();
    assert!(
        config.contains("[build]") && config.contains("rustc-wrapper"),
        "{config}"
    );
    let second = run(&["init", "-y"]);
    assert!(text(&second).contains("already configured"));
    assert_eq!(
        std::fs::read_to_string(cargo_home.join("config.toml")).unwrap(),
        config
    );
    let check = run(&["init", "--check"]);
    assert!(check.status.success(), "{}", text(&check));
    for part in ["wrapper", "config", "store", "remote", "daemon", "planner"] {
        assert!(
            text(&check).contains(&format!("ok   {part}: ")),
            "{part} not reported:\n{}",
            text(&check)
        );
    }
    // A configured planner that does not answer fails the check.
    let silent = world
        .command(common::KACHE, world.root.path())
        .args(["init", "--check"])
        .env("CARGO_HOME", &cargo_home)
        .env("KACHE_PLANNER_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert!(!silent.status.success());
    assert!(
        text(&silent).contains("FAIL planner: http://127.0.0.1:9"),
        "{}",
        text(&silent)
    );
    let no_tty = run(&["init"]);
    assert!(
        no_tty.status.success(),
        "already configured needs no confirmation"
    );

    // With a remote, `init -y` also gets the daemon running (a systemd
    // user service where there is one, else started now).
    let shared = world.root.path().join("shared");
    let (name, value) = world.fs_remote(&shared);
    let with_remote = world
        .command(common::KACHE, world.root.path())
        .args(["init", "-y"])
        .env("CARGO_HOME", &cargo_home)
        .env(&name, &value)
        .output()
        .unwrap();
    assert!(with_remote.status.success(), "{}", text(&with_remote));
    let said = text(&with_remote);
    assert!(
        said.contains("kache daemon running") || said.contains("installed"),
        "{said}"
    );
    let check = world
        .command(common::KACHE, world.root.path())
        .args(["init", "--check"])
        .env("CARGO_HOME", &cargo_home)
        .env(&name, &value)
        .output()
        .unwrap();
    assert!(
        text(&check).contains("ok   daemon: running"),
        "{}",
        text(&check)
    );
    world
        .command(common::KACHE, world.root.path())
        .args(["daemon", "stop"])
        .env(&name, &value)
        .output()
        .unwrap();
}

#[test]
fn passthroughs_are_counted_by_reason_in_stats_and_report() {
    let world = World::new();
    let project = world.project("p");
    // `-C save-temps` leaves files kache does not know: every compile of
    // the build (build scripts, the proc-macro, libraries, bins) passes
    // through. cargo's own probes (`-vV`, `--print`) go through kache too
    // and must not be counted.
    let saved = world
        .cargo_with(&project, &["build", "-v"], &[("RUSTFLAGS", "-Csave-temps")])
        .ok();
    let compiles = saved
        .stderr()
        .lines()
        .filter(|l| l.trim_start().starts_with("Running `") && l.contains("--crate-name"))
        .count();
    assert!(compiles >= 5, "{}", saved.stderr());
    assert_eq!(saved.events.len(), compiles, "{:?}", saved.events);
    assert_eq!(run_app(&project), EXPECTED_LINE);
    // One more reason, one compile: an emit kind kache does not store.
    // (World::cargo appends `--offline`, which would land after `--`.)
    let asm = world
        .command("cargo", &project)
        .args(["rustc", "-p", "fx-core", "--offline", "--"])
        .arg("--emit=asm,link,dep-info")
        .output()
        .unwrap();
    assert!(asm.status.success(), "{}", text(&asm));

    let save_temps = "codegen option -C save-temps writes side outputs";
    let stats = text(&world.kache(&["stats"]));
    let expected = format!(
        "passthrough by reason:\n  {save_temps}: {compiles} compiles\n  \
         unsupported emit kind asm: 1 compile\n"
    );
    assert!(stats.contains(&expected), "{stats}");
    assert!(
        stats.contains(&format!("passthrough: {}", compiles + 1)),
        "nothing else passed through: {stats}"
    );

    let json = world.kache(&["report", "--format", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json report");
    assert_eq!(
        report["passthrough_reasons"],
        serde_json::json!([
            {"reason": save_temps, "count": compiles},
            {"reason": "unsupported emit kind asm", "count": 1},
        ])
    );
    assert_matches_published_schema(&json.stdout);
    let markdown = text(&world.kache(&["report", "--format", "markdown"]));
    assert!(
        markdown.contains(&format!("| {save_temps} | {compiles} |")),
        "{markdown}"
    );
    let report_text = text(&world.kache(&["report"]));
    assert!(report_text.contains(&expected), "{report_text}");
}
