//! The daemon: a real `kache daemon` process, a real S3 server (Garage),
//! real cargo builds whose wrapper talks to the daemon.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::garage::Garage;
use common::{ENTRIES, EXPECTED_LINE, GEN_RUN, Run, World, edit, gen_run_output, run_app};

fn ok(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "kache failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `kache daemon stop`: returns once the queue is drained and it exited.
fn stop(world: &World) {
    ok(world.kache(&["daemon", "stop", "--drain", "60"]));
}

/// How many entries a fresh cache could pull from the bucket of `env`.
fn bucket_entries(env: &[(String, String)]) -> usize {
    let mut probe = World::new();
    probe.env = env.to_vec();
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
fn a_fresh_cache_builds_from_a_warm_bucket_through_remote_and_prefetch_hits() {
    let garage = Garage::start();
    let a = World::with_env(garage.env());
    let project = a.project("p");
    // The first build starts the daemon on demand; misses are uploaded.
    a.cargo(&project, &["build"]).ok();
    stop(&a);
    // Every library unit and fx-gen's build-script run.
    assert_eq!(bucket_entries(&garage.env()), ENTRIES.len());
    let ran = gen_run_output(&project);

    a.cargo(&project, &["clean"]).ok();
    let b = World::with_env(garage.env());
    ok(b.kache(&["daemon", "start"]));
    let run = b.cargo(&project, &["build"]).ok();
    for name in ENTRIES {
        let sources = hit_sources(&run, name);
        assert_eq!(sources.len(), 1, "{name}: {:?}", run.outcomes());
        assert!(
            sources[0] == "remote" || sources[0] == "prefetch",
            "{name} came from {sources:?}"
        );
    }
    assert!(
        run.stderr().contains("remote hit") || run.stderr().contains("prefetch hit"),
        "{}",
        run.stderr()
    );
    assert_eq!(gen_run_output(&project), ran);
    assert_eq!(run_app(&project), EXPECTED_LINE);
    let status = ok(b.kache(&["daemon"]));
    assert!(status.contains(&garage.endpoint), "{status}");
    stop(&b);
}

#[test]
fn builds_with_different_remotes_on_one_cache_each_use_their_own() {
    let garage = Garage::start();
    let shared = tempfile::tempdir().unwrap();
    let world = World::with_env(garage.env());
    let project = world.project("p");
    world.cargo(&project, &["build"]).ok();

    // Same cache dir, same running daemon, another remote: a directory.
    let config = world.root.path().join("fs-remote.toml");
    std::fs::write(
        &config,
        format!(
            "[cache.remote]\ntype = \"fs\"\npath = \"{}\"\n",
            shared.path().display()
        ),
    )
    .unwrap();
    edit(
        &project,
        "core/src/lib.rs",
        "unused_on_purpose = 1",
        "unused_on_purpose = 2",
    );
    let fs_env: Vec<(String, String)> =
        vec![("KACHE_CONFIG".into(), config.to_string_lossy().to_string())];
    let env: Vec<(&str, &str)> = fs_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // KACHE_S3_BUCKET from the world would win over the file: drop it.
    let mut fs_world = World::new();
    fs_world.cache = world.cache.clone();
    fs_world.env = fs_env.clone();
    let run = fs_world.cargo_with(&project, &["build"], &env).ok();
    assert_eq!(run.outcome("fx_core"), "miss");
    ok(fs_world.kache(&["daemon", "stop", "--drain", "60"]));

    // The edited fx_core went to the directory, not to the bucket.
    let core = shared.path().join("artifacts/v3/manifests/fx_core");
    assert_eq!(std::fs::read_dir(&core).map(|d| d.count()).unwrap_or(0), 1);
    assert_eq!(
        bucket_entries(&garage.env()),
        ENTRIES.len(),
        "the bucket got only the first build"
    );
}

#[test]
fn a_daemon_killed_mid_upload_resumes_and_the_bucket_never_shows_a_half_entry() {
    let garage = Garage::start();
    let world = World::with_env(garage.env());
    let project = world.project("p");
    // The daemon the build starts dies (SIGKILL) right after its first pack
    // upload, before that entry's manifest.
    world
        .cargo_with(
            &project,
            &["build"],
            &[("KACHE_FAULT", "after-pack-upload")],
        )
        .ok();
    let deadline = Instant::now() + Duration::from_secs(20);
    while world.cache.join("daemon.sock").exists()
        && String::from_utf8_lossy(&world.kache(&["daemon"]).stdout).contains("pid")
    {
        assert!(Instant::now() < deadline, "the faulty daemon never died");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        bucket_entries(&garage.env()) < ENTRIES.len(),
        "the kill left work queued"
    );
    // A new daemon resumes the durable queue (runs too); stop drains it.
    ok(world.kache(&["daemon", "start"]));
    stop(&world);
    assert_eq!(bucket_entries(&garage.env()), ENTRIES.len());
    // And every listed entry imports whole.
    let fresh = World::with_env(garage.env());
    let out = ok(fresh.kache_in(&project, &["sync", "--pull"], &[]));
    assert!(
        out.contains(&format!("pulled {} entries", ENTRIES.len())),
        "{out}"
    );
}

#[test]
fn a_daemon_from_an_older_binary_is_replaced() {
    let garage = Garage::start();
    let world = World::with_env(garage.env());
    let old = world.root.path().join("old/kache");
    std::fs::create_dir_all(old.parent().unwrap()).unwrap();
    std::fs::copy(common::KACHE, &old).unwrap();
    let a_day_ago = std::time::SystemTime::now() - Duration::from_secs(86_400);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(a_day_ago)
        .unwrap();
    let started = world
        .command(old.to_str().unwrap(), world.root.path())
        .args(["daemon", "start"])
        .output()
        .unwrap();
    let first = ok(started);
    let old_pid = pid_of(&first);
    let project = world.project("p");
    world.cargo(&project, &["build"]).ok();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = String::from_utf8_lossy(&world.kache(&["daemon"]).stdout).to_string();
        if status.contains("pid") && pid_of(&status) != old_pid {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old daemon was not replaced: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop(&world);
}

fn pid_of(text: &str) -> String {
    text.split("pid ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_bucket_that_is_down_or_stalls_costs_a_build_only_its_deadline() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    // A server that accepts connections and never answers.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stalled_url = format!("http://{}", stalled.local_addr().unwrap());
    let stalled_port = stalled.local_addr().unwrap().port().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in stalled.incoming().flatten() {
            held.push(stream);
        }
    });
    for endpoint in [closed, stalled_url] {
        let mut world = World::new();
        world.env = vec![
            ("KACHE_S3_BUCKET".into(), "kache".into()),
            ("KACHE_S3_ENDPOINT".into(), endpoint.clone()),
            ("KACHE_S3_ACCESS_KEY".into(), "GKtest".into()),
            ("KACHE_S3_SECRET_KEY".into(), "secret".into()),
            ("KACHE_REMOTE_DEADLINE_MS".into(), "500".into()),
        ];
        let project = world.project("p");
        ok(world.kache(&["daemon", "start"]));
        let run = world.cargo(&project, &["build"]).ok();
        // The run of fx-gen's build script asks the bucket too.
        for name in ENTRIES {
            assert_eq!(run.outcome(name), "miss", "{endpoint} {name}");
        }
        assert_eq!(run_app(&project), EXPECTED_LINE);
        if !endpoint.contains(&stalled_port) {
            // Connection refused every time: the breaker stops the asking.
            let log_path = world.cache.join("daemon.log");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if log.contains("keeps failing") {
                    break;
                }
                assert!(Instant::now() < deadline, "no breaker in {log}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        ok(world.kache(&["daemon", "stop", "--drain", "0"]));
    }
}

#[test]
fn without_a_remote_no_daemon_is_started() {
    let world = World::new();
    let project = world.project("p");
    world.cargo(&project, &["build"]).ok();
    world.cargo(&project, &["clean"]).ok();
    let warm = world.cargo(&project, &["build"]).ok();
    assert_eq!(hit_sources(&warm, "fx_core"), ["local"]);
    for name in ["daemon.sock", "daemon.log", "builds"] {
        assert!(!world.cache.join(name).exists(), "{name} exists");
    }
}

#[test]
fn the_planner_plan_is_prefetched_and_a_down_planner_falls_back_to_the_lock() {
    let service = common::service::Service::start();
    let shared = tempfile::tempdir().unwrap();
    let mut a = World::new();
    a.env = vec![a.fs_remote(shared.path())];
    let project = a.project("p");
    a.cargo_with(&project, &["build"], &[("KACHE_LOCAL_ONLY", "1")])
        .ok();
    let saved = ok(a.kache_in(&project, &["save-manifest", "--namespace", "ci"], &[]));
    // One profile was built (target/debug only): the identity is known.
    assert!(saved.contains(" dev (toolchain "), "{saved}");
    // The service learns what runner A built (the manifest and its shards).
    let manifests = shared.path().join("artifacts/_manifests");
    for item in std::fs::read_dir(&manifests).unwrap().flatten() {
        if item.path().extension().is_some_and(|e| e == "json") {
            let body = std::fs::read_to_string(item.path()).unwrap();
            assert_eq!(service.request("POST", "/v2/manifests", &body).0, 200);
        }
    }
    let shards = manifests.join("v3/ci/shards");
    for item in std::fs::read_dir(&shards).unwrap().flatten() {
        let name = item.file_name().to_string_lossy().to_string();
        let hash = name.strip_suffix(".json").unwrap();
        let body = std::fs::read_to_string(item.path()).unwrap();
        let (status, reply) = service.request("POST", &format!("/v2/shards/ci/{hash}"), &body);
        assert_eq!(status, 200, "{reply}");
    }

    // Runner B: empty cache, the planner configured.
    let ran = gen_run_output(&project);
    a.cargo(&project, &["clean"]).ok();
    let mut b = World::new();
    b.env = vec![
        b.fs_remote(shared.path()),
        ("KACHE_PLANNER_ENDPOINT".into(), service.url.clone()),
    ];
    // The same identity as runner A's: every candidate fits.
    let out = ok(b.kache_in(
        &project,
        &[
            "prefetch",
            "--wait",
            "--namespace",
            "ci",
            "--profile",
            "dev",
        ],
        &[],
    ));
    // The plan names the libraries and fx-gen's build-script run (its
    // package's shard lists it); the build scripts' compiles the bucket
    // holds come with it (an intent cannot name them).
    let planned = ENTRIES.len() - 1;
    assert!(
        out.contains(&format!("prefetched {} entries", ENTRIES.len())),
        "{out}"
    );
    assert!(
        out.contains(&format!("from planner ({planned} candidates)")),
        "{out}"
    );
    let run = b.cargo(&project, &["build"]).ok();
    for name in ENTRIES {
        assert_eq!(
            hit_sources(&run, name),
            ["prefetch"],
            "{name}: {:?}",
            run.outcomes()
        );
    }
    assert_eq!(gen_run_output(&project), ran);
    assert_eq!(run_app(&project), EXPECTED_LINE);
    ok(b.kache(&["daemon", "stop"]));
    // Stopping reported the plan: every prefetched candidate was used.
    let (_, metrics) = service.request("GET", "/metrics", "");
    let used = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                "kache_planner_feedback_candidates_total{source=\"exact\",result=\"used\"}",
            )
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert_eq!(used, Some(planned as f64), "{metrics}");
    assert!(
        metrics.contains(
            "kache_planner_feedback_candidates_total{source=\"exact\",result=\"unused\"} 0"
        ),
        "{metrics}"
    );

    // A release build: runner A's dev artifacts cannot serve it, so the
    // planner offers none of them.
    let mut release = World::new();
    release.env = b.env.clone();
    let out = ok(release.kache_in(
        &project,
        &["prefetch", "--wait", "--namespace", "ci", "--release"],
        &[],
    ));
    assert!(out.contains("planner fallback: no_candidates"), "{out}");
    ok(release.kache(&["daemon", "stop"]));

    // Runner C: the planner is down: the Cargo.lock fallback still fetches.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut c = World::new();
    c.env = vec![
        c.fs_remote(shared.path()),
        ("KACHE_PLANNER_ENDPOINT".into(), down),
    ];
    let out = ok(c.kache_in(&project, &["prefetch", "--wait"], &[]));
    assert!(out.contains("planner fallback"), "{out}");
    assert!(
        out.contains(&format!("prefetched {} entries", ENTRIES.len())),
        "{out}"
    );
    ok(c.kache(&["daemon", "stop"]));

    // Runner D, a branch that bumped fx-gen: fx-gen's old artifacts (its
    // build-script run too, keyed by the version cargo passes it) and
    // those of its dependents (fx-core, then fx-app) were built against the
    // old version and cannot hit: the plan offers only fx-macros.
    let manifest = project.join("gen/Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("0.1.0", "0.1.1")).unwrap();
    a.cargo(&project, &["generate-lockfile"]).ok();
    let mut d = World::new();
    d.env = vec![
        d.fs_remote(shared.path()),
        ("KACHE_PLANNER_ENDPOINT".into(), service.url.clone()),
    ];
    let out = ok(d.kache_in(&project, &["prefetch", "--wait", "--namespace", "ci"], &[]));
    // One candidate (plus the bucket's build script, which every plan brings).
    assert!(out.contains("from planner (1 candidates)"), "{out}");
    ok(d.kache(&["daemon", "stop"]));
    d.cargo(&project, &["clean"]).ok();
    let run = d
        .cargo_with(&project, &["build"], &[("KACHE_PREFETCH", "0")])
        .ok();
    assert_eq!(hit_sources(&run, "fx_macros"), ["prefetch"]);
    for stale in ["fx_gen", GEN_RUN] {
        assert!(
            hit_sources(&run, stale).is_empty(),
            "{stale}: {:?}",
            run.outcomes()
        );
    }
}

#[test]
fn a_read_only_remote_is_used_but_never_written() {
    let garage = Garage::start();
    let mut env = garage.env();
    env.push(("KACHE_REMOTE_READ_ONLY".into(), "1".into()));
    let world = World::with_env(env);
    let project = world.project("p");
    world.cargo(&project, &["build"]).ok();
    stop(&world);
    assert_eq!(bucket_entries(&garage.env()), 0);
}
