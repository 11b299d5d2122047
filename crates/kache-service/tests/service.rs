//! The real `kache-service` binary over HTTP: routes, status codes, the
//! three fallbacks, planning after seeding and after ingest, persistence,
//! idempotent import, concurrency and startup failures.

mod common;

use common::{Service, key, keys, post, run_to_exit, temp_db, write_seed};
use serde_json::{Value, json};

fn seed() -> Value {
    json!({
        "namespaces": {"ci": {"deps": {
            "serde@1.0.210": [{"cache_key": key("serde-exact"), "crate_name": "serde"}]
        }}},
        "history": {
            "tokio": [{"cache_key": key("tokio-hist"), "crate_name": "tokio"}],
            "serde": [{"cache_key": key("serde-hist"), "crate_name": "serde"}]
        },
        "key_cache": {"anyhow": [key("anyhow-key")], "tokio": [key("tokio-key")]}
    })
}

fn manifest(entries: &[(&str, &str, u64)]) -> String {
    json!({
        "version": 3,
        "created": "2026-11-24T00:00:00Z",
        "manifest_key": "x86_64-unknown-linux-gnu",
        "entries": entries.iter().map(|(k, c, ms)| json!({
            "cache_key": key(k), "crate_name": c, "compile_time_ms": ms, "artifact_size": 1000
        })).collect::<Vec<_>>()
    })
    .to_string()
}

#[test]
fn probes_metrics_and_error_routes_answer_as_specified() {
    let (_dir, db) = temp_db();
    let service = Service::start(&db, &["--planner-name", "edge-planner"]);
    let metrics = service.get("/metrics");
    assert_eq!(metrics.status, 200);
    for outcome in [
        "execute",
        "fallback_no_state",
        "fallback_no_candidates",
        "fallback_planning_error",
        "unauthorized",
        "not_ready",
    ] {
        assert!(
            metrics.body.contains(&format!(
                "kache_planner_requests_total{{outcome=\"{outcome}\"}} 0"
            )),
            "{outcome} missing from the first scrape:\n{}",
            metrics.body
        );
    }
    assert!(metrics.body.contains("kache_planner_ready 1"));
    assert!(
        metrics
            .body
            .contains("kache_planner_plan_duration_seconds_bucket")
    );

    let health = service.get("/healthz");
    assert_eq!(health.status, 200);
    let body = health.json();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["planner"], "edge-planner");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(service.get("/readyz").status, 200);

    let unknown = service.get("/v3/nothing");
    assert_eq!(unknown.status, 404);
    assert!(unknown.json()["error"].is_string());
    assert_eq!(service.get("/v2/prefetch-plan").status, 405);

    let malformed = service.post("/v2/prefetch-plan", "{\"crate_names\": [1,", None);
    assert_eq!(malformed.status, 400);
    assert!(
        malformed.json()["error"]
            .as_str()
            .unwrap()
            .contains("invalid JSON"),
        "{}",
        malformed.body
    );
    let wrong_type = service.post("/v2/prefetch-plan", "{\"crate_names\": \"serde\"}", None);
    assert_eq!(wrong_type.status, 400);

    // One byte over the limit: the service has read the whole body when it
    // answers, so the client never writes into a closed connection.
    let frame = "{\"crate_names\": [\"\"]}";
    let limit = 8 << 20;
    let huge = frame.replace(
        "[\"",
        &format!("[\"{}", "x".repeat(limit + 1 - frame.len())),
    );
    assert_eq!(huge.len(), limit + 1);
    assert_eq!(service.post("/v2/prefetch-plan", &huge, None).status, 413);

    let bad_manifest = service.post(
        "/v2/manifests",
        "{\"version\": 2, \"created\": \"x\", \"manifest_key\": \"k\", \"entries\": []}",
        None,
    );
    assert_eq!(bad_manifest.status, 400);
    assert!(
        bad_manifest.body.contains("unsupported manifest version"),
        "{}",
        bad_manifest.body
    );
    let bad_shard = service.post(
        "/v2/shards/ci/not-a-hash",
        "{\"version\": 3, \"entries\": []}",
        None,
    );
    assert_eq!(bad_shard.status, 400);
    assert_eq!(service.stop(), 0, "SIGTERM drains and exits 0");
}

#[test]
fn use_fallback_is_answered_for_no_state_no_candidates_and_planning_errors() {
    let (dir, db) = temp_db();
    let empty = Service::start(&db, &[]);
    let plan = empty.plan(&json!({"crate_names": ["serde"]}));
    assert_eq!(plan["disposition"], "use_fallback");
    assert_eq!(plan["reason"], "no_state");
    assert_eq!(plan["planner"], "planner");
    drop(empty);

    let seed = write_seed(dir.path(), &seed());
    let (_dir2, db2) = temp_db();
    let seeded = Service::start(&db2, &["--seed-state-file", seed.to_str().unwrap()]);
    let plan = seeded.plan(&json!({"crate_names": ["never-seen"], "namespace": "ci"}));
    assert_eq!(plan["disposition"], "use_fallback");
    assert_eq!(plan["reason"], "no_candidates");
    assert_eq!(plan["candidates"], json!([]));
    drop(seeded);

    let (_dir3, db3) = temp_db();
    let mut cmd = common::command(&db3, &["--seed-state-file", seed.to_str().unwrap()]);
    cmd.env("KACHE_PLANNER_FAULT", "planning");
    let faulty = Service::spawn(cmd);
    let plan = faulty.plan(&json!({"crate_names": ["serde"], "namespace": "ci", "cargo_lock_deps": [["serde", "1.0.210"]]}));
    assert_eq!(plan["disposition"], "use_fallback");
    assert_eq!(plan["reason"], "planning_error");
    let metrics = faulty.get("/metrics").body;
    assert!(
        metrics.contains("kache_planner_requests_total{outcome=\"fallback_planning_error\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_seeded_planner_executes_ordered_deduplicated_candidates_on_both_versions() {
    let (dir, db) = temp_db();
    let seed = write_seed(dir.path(), &seed());
    let service = Service::start(&db, &["--seed-state-file", seed.to_str().unwrap()]);
    let intent = json!({
        "crate_names": ["anyhow", "tokio", "serde", "tokio"],
        "namespace": "ci",
        "cargo_lock_deps": [["serde", "1.0.210"], ["tokio", "1.40.0"]],
        "budget_bytes": 123
    });
    for path in ["/v1/prefetch-plan", "/v2/prefetch-plan"] {
        let reply = service.post(path, &intent.to_string(), None);
        assert_eq!(reply.status, 200);
        let plan = reply.json();
        assert_eq!(plan["disposition"], "execute");
        // anyhow: known key; tokio: history (beats its known key); serde: exact dep (beats history).
        assert_eq!(
            keys(&plan),
            [key("anyhow-key"), key("tokio-hist"), key("serde-exact")]
        );
    }
    let a = service.plan(&intent)["plan_id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = service.plan(&intent)["plan_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(a, b, "plan_id is unique per response");
    let logs = service.logs();
    assert!(logs.contains("imported seed snapshot"), "{logs}");
}

#[test]
fn ingested_manifests_and_shards_grow_the_state_and_survive_a_restart() {
    let (_dir, db) = temp_db();
    let service = Service::start(&db, &[]);
    let reply = service.post(
        "/v2/manifests",
        &manifest(&[("serde-m1", "serde", 900), ("syn-m1", "syn", 2000)]),
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let plan = service.plan(&json!({"crate_names": ["syn", "serde"]}));
    assert_eq!(keys(&plan), [key("syn-m1"), key("serde-m1")]);

    // A shard for the namespace's Cargo.lock bucket holding serde@1.0.210.
    let packages = vec![("serde".to_string(), "1.0.210".to_string())];
    let hash = kache_core::manifest::shard_hash(&packages);
    let shard = json!({"version": 3, "entries": [{"cache_key": key("serde-shard"), "crate_name": "serde"}]});
    let reply = service.post(&format!("/v2/shards/ci/{hash}"), &shard.to_string(), None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let intent = json!({"crate_names": ["serde"], "namespace": "ci", "cargo_lock_deps": [["serde", "1.0.210"]]});
    assert_eq!(
        keys(&service.plan(&intent)),
        [key("serde-shard")],
        "the exact shard beats history"
    );
    let bumped = json!({"crate_names": ["serde"], "namespace": "ci", "cargo_lock_deps": [["serde", "1.0.211"]]});
    assert_eq!(
        keys(&service.plan(&bumped)),
        [key("serde-m1")],
        "a bumped version falls to history"
    );
    assert_eq!(service.stop(), 0);

    let again = Service::start(&db, &[]);
    assert_eq!(
        keys(&again.plan(&intent)),
        [key("serde-shard")],
        "state survives a restart"
    );
    assert_eq!(
        keys(&again.plan(&json!({"crate_names": ["syn", "serde"]}))),
        [key("syn-m1"), key("serde-m1")]
    );
    let metrics = again.get("/metrics").body;
    assert!(
        metrics.contains("kache_planner_state_artifacts 3"),
        "{metrics}"
    );
}

#[test]
fn a_second_import_of_the_same_snapshot_changes_nothing() {
    let (dir, db) = temp_db();
    let seed = write_seed(dir.path(), &seed());
    let args = ["--seed-state-file", seed.to_str().unwrap()];
    let first = Service::start(&db, &args);
    let intent = json!({"crate_names": ["anyhow", "tokio", "serde"], "namespace": "ci", "cargo_lock_deps": [["serde", "1.0.210"]]});
    let before = keys(&first.plan(&intent));
    let metrics_before = first.get("/metrics").body;
    assert!(first.logs().contains("new_artifacts=5"), "{}", first.logs());
    assert_eq!(first.stop(), 0);

    let second = Service::start(&db, &args);
    assert_eq!(keys(&second.plan(&intent)), before);
    assert!(
        second.logs().contains("new_artifacts=0"),
        "{}",
        second.logs()
    );
    assert!(
        second.logs().contains("new_sightings=0"),
        "{}",
        second.logs()
    );
    let artifacts = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("kache_planner_state_artifacts"))
            .map(String::from)
    };
    assert_eq!(
        artifacts(&second.get("/metrics").body),
        artifacts(&metrics_before)
    );
}

#[test]
fn bearer_auth_guards_plans_and_ingest_but_not_probes() {
    let (_dir, db) = temp_db();
    let token = "s3cret-token-value";
    let service = Service::start(&db, &["--token", token]);
    let body = json!({"crate_names": ["serde"]}).to_string();
    assert_eq!(service.post("/v2/prefetch-plan", &body, None).status, 401);
    assert_eq!(
        service
            .post("/v2/prefetch-plan", &body, Some("wrong"))
            .status,
        401
    );
    assert_eq!(
        service
            .post("/v2/prefetch-plan", &body, Some(&format!("{token}x")))
            .status,
        401
    );
    assert_eq!(
        service.post("/v2/manifests", &manifest(&[]), None).status,
        401
    );
    let ok = service.post("/v2/prefetch-plan", &body, Some(token));
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["disposition"], "use_fallback");
    assert_eq!(
        service
            .post("/v2/manifests", &manifest(&[("a", "a", 1)]), Some(token))
            .status,
        200
    );
    assert_eq!(service.get("/healthz").status, 200);
    assert_eq!(service.get("/readyz").status, 200);
    assert_eq!(service.get("/metrics").status, 200);
    assert!(
        service
            .get("/metrics")
            .body
            .contains("kache_planner_requests_total{outcome=\"unauthorized\"} 3")
    );
    assert!(
        !service.logs().contains(token),
        "the token never reaches a log line"
    );

    let (_dir2, db2) = temp_db();
    let mut cmd = common::command(&db2, &[]);
    cmd.env("KACHE_PLANNER_TOKEN", token);
    let from_env = Service::spawn(cmd);
    assert_eq!(from_env.post("/v2/prefetch-plan", &body, None).status, 401);
    assert_eq!(
        from_env
            .post("/v2/prefetch-plan", &body, Some(token))
            .status,
        200
    );
}

#[test]
fn sixty_four_concurrent_clients_get_correct_answers() {
    let (dir, db) = temp_db();
    let seed = write_seed(dir.path(), &seed());
    let service = Service::start(&db, &["--seed-state-file", seed.to_str().unwrap()]);
    let url = service.url.clone();
    let intent = json!({"crate_names": ["anyhow", "tokio", "serde"], "namespace": "ci", "cargo_lock_deps": [["serde", "1.0.210"]]}).to_string();
    let expected = vec![key("anyhow-key"), key("tokio-hist"), key("serde-exact")];
    let threads: Vec<_> = (0..64)
        .map(|i| {
            let (url, intent, expected) = (url.clone(), intent.clone(), expected.clone());
            std::thread::spawn(move || {
                for _ in 0..5 {
                    if i % 8 == 0 {
                        let reply = post(
                            &url,
                            "/v2/manifests",
                            &manifest(&[("other", "other", 1)]),
                            None,
                        );
                        assert_eq!(reply.status, 200);
                    }
                    let reply = post(&url, "/v2/prefetch-plan", &intent, None);
                    assert_eq!(reply.status, 200);
                    assert_eq!(keys(&reply.json()), expected);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("client thread");
    }
}

#[test]
fn startup_fails_clearly_on_a_bad_db_path_a_malformed_seed_or_no_ha_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-db");
    std::fs::write(&file, "garbage").unwrap();
    let (code, stderr) = run_to_exit(common::command(&file, &[]));
    assert_ne!(code, 0);
    assert!(stderr.contains("not-a-db"), "{stderr}");

    let blocked = file.join("under-a-file/planner.db");
    let (code, stderr) = run_to_exit(common::command(&blocked, &[]));
    assert_ne!(code, 0);
    assert!(stderr.contains("database"), "{stderr}");

    // A real database whose files were damaged.
    let damaged = dir.path().join("damaged.db");
    let service = Service::start(&damaged, &[]);
    assert_eq!(
        service
            .post("/v2/manifests", &manifest(&[("k", "c", 1)]), None)
            .status,
        200
    );
    assert_eq!(service.stop(), 0);
    for item in std::fs::read_dir(&damaged).unwrap().flatten() {
        for file in std::fs::read_dir(item.path()).unwrap().flatten() {
            std::fs::write(file.path(), [0xA5u8; 97]).unwrap();
        }
    }
    let (code, stderr) = run_to_exit(common::command(&damaged, &[]));
    assert_ne!(
        code, 0,
        "a corrupt database is a startup error, not an empty planner"
    );
    assert!(stderr.contains("opening the database"), "{stderr}");

    let seed = dir.path().join("seed.json");
    std::fs::write(&seed, "{\"history\": {\"serde\": \"not a list\"}}").unwrap();
    let (code, stderr) = run_to_exit(common::command(
        &dir.path().join("db"),
        &["--seed-state-file", seed.to_str().unwrap()],
    ));
    assert_ne!(code, 0);
    assert!(stderr.contains("seed snapshot"), "{stderr}");

    let mut cmd = common::command(&dir.path().join("db2"), &["--ha-enabled"]);
    cmd.env(
        "KACHE_SERVICE_ACCOUNT_NAMESPACE_FILE",
        dir.path().join("absent"),
    );
    let (code, stderr) = run_to_exit(cmd);
    assert_ne!(code, 0);
    assert!(stderr.contains("no namespace resolves"), "{stderr}");
}

#[test]
fn version_and_help_are_printed() {
    let out = std::process::Command::new(common::BIN)
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = std::process::Command::new(common::BIN)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--bind",
        "--db-path",
        "--token",
        "--planner-name",
        "--seed-state-file",
        "--ha-enabled",
        "--ha-namespace",
        "--ha-lease-name",
    ] {
        assert!(help.contains(flag), "{flag}");
    }
}
