//! The OCI registry remote (`type = "oci"`): a real registry (Debian's
//! `docker-registry`, the CNCF distribution registry, on loopback with
//! bcrypt htpasswd auth) and real cargo builds on both sides — pushed by
//! one runner, served to a fresh one through the daemon's remote hits and
//! prefetch, and learned from by the planner.

mod common;
#[path = "common/registry.rs"]
mod registry;

use std::net::TcpListener;
use std::process::Output;
use std::time::{Duration, Instant};

use common::{ENTRIES, EXPECTED_LINE, GEN_RUN, Run, World, gen_run_output, run_app};
use registry::Registry;

/// Builds that leave the remote to `kache sync`: no daemon.
const LOCAL: &[(&str, &str)] = &[("KACHE_LOCAL_ONLY", "1")];

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn ok(out: Output) -> String {
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "kache failed:\n{stdout}\n{stderr}");
    stdout
}

/// How many entries a fresh cache could pull from the remote of `env`.
fn remote_entries(env: &[(String, String)]) -> usize {
    let probe = World::with_env(env.to_vec());
    let out = ok(probe.kache_in(
        probe.root.path(),
        &["sync", "--pull", "--all", "--dry-run"],
        &[],
    ));
    let line = out
        .lines()
        .find(|l| l.starts_with("would pull ") && l.contains(" entries from "))
        .unwrap_or_else(|| panic!("{out}"));
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// The `source` of every hit of `crate_name` in a run.
fn hit_sources(run: &Run, crate_name: &str) -> Vec<String> {
    run.events
        .iter()
        .filter(|e| e["crate_name"] == crate_name && e["outcome"] == "hit")
        .map(|e| e["source"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_fresh_runner_is_served_from_the_registry_by_remote_and_prefetch_hits() {
    let registry = Registry::start();
    let a = World::with_env(registry.env());
    let project = a.project("p");
    // Runner A: the first build starts the daemon on demand, which uploads
    // every miss to the registry.
    a.cargo(&project, &["build"]).ok();
    ok(a.kache(&["daemon", "stop", "--drain", "60"]));
    // Every library unit and fx-gen's build-script run.
    assert_eq!(remote_entries(&registry.env()), ENTRIES.len());
    let ran = gen_run_output(&project);

    // Runner B: a new cache and a new checkout path; no daemon started
    // first (the first compile waits for the one it starts). `fx_app`
    // bakes its checkout path in (`env!("CARGO_MANIFEST_DIR")`), so it is
    // machine-local by design and compiles here; every portable library
    // and fx-gen's build-script run (keyed by normalised paths) come from
    // the registry.
    let b = World::with_env(registry.env());
    let checkout = b.project("elsewhere");
    let run = b.cargo(&checkout, &["build"]).ok();
    for lib in ["fx_gen", "fx_core", "fx_macros", GEN_RUN] {
        let sources = hit_sources(&run, lib);
        assert_eq!(sources.len(), 1, "{lib}: {:?}", run.outcomes());
        assert!(
            sources[0] == "remote" || sources[0] == "prefetch",
            "{lib} came from {sources:?}"
        );
    }
    assert_eq!(run.outcome("fx_app"), "miss");
    assert!(
        run.stderr().contains("remote hit") || run.stderr().contains("prefetch hit"),
        "{}",
        run.stderr()
    );
    assert_eq!(gen_run_output(&checkout), ran);
    assert_eq!(run_app(&checkout), EXPECTED_LINE);
    let status = ok(b.kache(&["daemon"]));
    assert!(
        status.contains(registry.url.trim_start_matches("http://")),
        "{status}"
    );
    ok(b.kache(&["daemon", "stop", "--drain", "10"]));

    // Runner C: a new cache, A's checkout path after `cargo clean`: every
    // library unit is served, the first build already.
    a.cargo(&project, &["clean"]).ok();
    let c = World::with_env(registry.env());
    let run = c.cargo(&project, &["build"]).ok();
    for name in ENTRIES {
        let sources = hit_sources(&run, name);
        assert_eq!(sources.len(), 1, "{name}: {:?}", run.outcomes());
        assert!(
            sources[0] == "remote" || sources[0] == "prefetch",
            "{name} came from {sources:?}"
        );
    }
    assert_eq!(gen_run_output(&project), ran);
    assert_eq!(run_app(&project), EXPECTED_LINE);
    ok(c.kache(&["daemon", "stop", "--drain", "10"]));
}

#[test]
fn sync_and_save_manifest_round_trip_through_the_registry() {
    let registry = Registry::start();
    let a = World::with_env(registry.env());
    let project = a.project("p");
    a.cargo_with(&project, &["build"], LOCAL).ok();
    let ran = gen_run_output(&project);
    // Every library unit and fx-gen's build-script run.
    let pushed = ok(a.kache_in(&project, &["sync", "--push"], &[]));
    assert!(
        pushed.contains(&format!("pushed {} entries", ENTRIES.len())),
        "{pushed}"
    );
    let again = ok(a.kache_in(&project, &["sync", "--push"], &[]));
    assert!(again.contains("pushed 0 entries"), "{again}");
    let saved = ok(a.kache_in(&project, &["save-manifest", "--namespace", "ci-main"], &[]));
    assert!(
        saved.contains(&format!("wrote {} entries", ENTRIES.len())),
        "{saved}"
    );

    a.cargo(&project, &["clean"]).ok();
    let b = World::with_env(registry.env());
    let checkout = project.clone();
    let pulled = ok(b.kache_in(&checkout, &["sync", "--pull"], &[]));
    assert!(
        pulled.contains(&format!("pulled {} entries", ENTRIES.len())),
        "{pulled}"
    );
    let warm = b.cargo_with(&checkout, &["build"], LOCAL).ok();
    for name in ENTRIES {
        assert_eq!(warm.outcome(name), "hit", "{name}: {:?}", warm.outcomes());
    }
    assert_eq!(gen_run_output(&checkout), ran);
    assert_eq!(run_app(&checkout), EXPECTED_LINE);
    b.assert_store_verifies();
}

#[test]
fn a_wrong_password_is_one_clear_line_and_a_failure() {
    let registry = Registry::start();
    let world = World::with_env(registry.env());
    let project = world.project("p");
    world.cargo_with(&project, &["build"], LOCAL).ok();
    let out = world.kache_in(
        &project,
        &["sync", "--push"],
        &[("KACHE_OCI_PASSWORD", "not-the-password")],
    );
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("access denied"), "{stderr}");
    assert!(stderr.contains("KACHE_OCI_PASSWORD"), "{stderr}");
    assert!(
        stderr.contains(registry.url.trim_start_matches("http://"))
            && stderr.contains(&registry.repository),
        "{stderr}"
    );
}

#[test]
fn a_registry_that_is_down_or_stalls_keeps_builds_green_within_the_deadline() {
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    // Accepts connections and never answers.
    let stalled = TcpListener::bind("127.0.0.1:0").unwrap();
    let stalled_url = format!("http://{}", stalled.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in stalled.incoming().flatten() {
            held.push(stream);
        }
    });
    for url in [closed.clone(), stalled_url] {
        let world = World::with_env(vec![
            ("KACHE_OCI_REGISTRY".into(), url.clone()),
            ("KACHE_OCI_REPOSITORY".into(), "team/cache".into()),
            ("KACHE_OCI_USERNAME".into(), "u".into()),
            ("KACHE_OCI_PASSWORD".into(), "p".into()),
            ("KACHE_REMOTE_DEADLINE_MS".into(), "500".into()),
        ]);
        let project = world.project("p");
        let run = world.cargo(&project, &["build"]).ok();
        // The run of fx-gen's build script asks the registry too.
        for name in ENTRIES {
            assert_eq!(run.outcome(name), "miss", "{url} {name}");
        }
        assert_eq!(run_app(&project), EXPECTED_LINE);
        let _ = world.kache(&["daemon", "stop", "--drain", "0"]);
        if url != closed {
            continue;
        }
        // `kache sync` says what failed in one line and fails.
        let out = world.kache_in(&project, &["sync", "--push"], &[]);
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{url}: {stdout}");
        assert!(
            stderr.contains(url.trim_start_matches("http://")),
            "{stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}

#[test]
fn the_planner_learns_from_what_runners_saved_in_the_registry() {
    let registry = Registry::start();
    let a = World::with_env(registry.env());
    let project = a.project("p");
    a.cargo_with(&project, &["build"], LOCAL).ok();
    ok(a.kache_in(&project, &["save-manifest", "--namespace", "ci"], &[]));

    let service = common::service::Service::start_with(&["--scan-interval", "1"], &registry.env());
    let deadline = Instant::now() + Duration::from_secs(60);
    let manifest = "kache_planner_ingested_documents_total{kind=\"bucket_manifest\"}";
    let shard = "kache_planner_ingested_documents_total{kind=\"bucket_shard\"}";
    while service.metric(manifest) < 1.0 || service.metric(shard) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the planner learned nothing from the registry:\n{}",
            service.request("GET", "/metrics", "").1
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // What it learned shows in plans: history for a crate runner A built.
    let (_, plan) = service.request(
        "POST",
        "/v2/prefetch-plan",
        r#"{"crate_names": ["fx_core"]}"#,
    );
    assert!(plan.contains("\"disposition\":\"execute\""), "{plan}");
    assert!(plan.contains("\"crate_name\":\"fx_core\""), "{plan}");
}
