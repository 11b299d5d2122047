//! The planner learns from the bucket: manifests and shards that clients
//! wrote under `{prefix}/_manifests/` (here a shared directory, the clients'
//! `type = "fs"` backend; the same code reads S3) are ingested on start,
//! then every interval, incrementally across restarts.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Service, key, keys, temp_db};
use serde_json::json;

fn write(root: &Path, name: &str, body: &str) {
    let path = root.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn manifests_and_shards_in_the_bucket_are_learned_skipped_when_hostile_and_not_rescanned() {
    let bucket = tempfile::tempdir().unwrap();
    let root = bucket.path();
    // Exactly the seed's document shapes (version 3).
    write(
        root,
        "artifacts/_manifests/x86_64-unknown-linux-gnu.json",
        &json!({"version": 3, "created": "2026-11-25T10:00:00Z",
                "manifest_key": "x86_64-unknown-linux-gnu",
                "entries": [{"cache_key": key("serde-1"), "crate_name": "serde",
                             "compile_time_ms": 900, "artifact_size": 1000},
                            {"cache_key": key("zstd-c"), "crate_name": "zstd-sys:zstd.c",
                             "compile_time_ms": 400, "artifact_size": 100}]})
        .to_string(),
    );
    let packages = vec![("anyhow".to_string(), "1.0.0".to_string())];
    let hash = kache_core::manifest::shard_hash(&packages);
    write(
        root,
        &format!("artifacts/_manifests/v3/ci/shards/{hash}.json"),
        &json!({"version": 3, "entries": [{"cache_key": key("anyhow-1"), "crate_name": "anyhow"}]})
            .to_string(),
    );
    write(root, "artifacts/_manifests/broken.json", "{ not json");
    write(
        root,
        "artifacts/_manifests/v3/ci/shards/not-a-hash.json",
        &json!({"version": 3, "entries": []}).to_string(),
    );

    let (_dir, db) = temp_db();
    let dir_arg = root.to_str().unwrap().to_string();
    let extra = ["--remote-dir", dir_arg.as_str(), "--scan-interval", "1"];
    let service = Service::start(&db, &extra);
    wait_for("the first scan", || {
        service.metric("kache_planner_ingested_documents_total{kind=\"bucket_shard\"}") >= 1.0
    });
    assert_eq!(
        service.metric("kache_planner_ingested_documents_total{kind=\"bucket_manifest\"}"),
        1.0
    );
    assert_eq!(
        service.metric("kache_planner_scan_skipped_documents_total"),
        2.0
    );

    // What it learned shows in plans: the shard for this exact Cargo.lock,
    // history for the crates (a C unit's crate name included).
    let plan = service.plan(&json!({
        "crate_names": ["anyhow", "serde"],
        "namespace": "ci",
        "cargo_lock_deps": [["anyhow", "1.0.0"]]
    }));
    assert_eq!(plan["disposition"], "execute", "{plan}");
    assert_eq!(keys(&plan), [key("anyhow-1"), key("serde-1")]);

    // A restart on the same database rescans nothing that did not change…
    drop(service);
    let service = Service::start(&db, &extra);
    std::thread::sleep(Duration::from_secs(3));
    for kind in ["bucket_manifest", "bucket_shard"] {
        let name = format!("kache_planner_ingested_documents_total{{kind=\"{kind}\"}}");
        assert_eq!(service.metric(&name), 0.0, "{kind} rescanned");
    }
    // …and picks up a document that changed.
    write(
        root,
        "artifacts/_manifests/x86_64-unknown-linux-gnu.json",
        &json!({"version": 3, "created": "2026-11-25T11:00:00Z",
                "manifest_key": "x86_64-unknown-linux-gnu",
                "entries": [{"cache_key": key("serde-2"), "crate_name": "serde"}]})
        .to_string(),
    );
    wait_for("the changed manifest", || {
        service.metric("kache_planner_ingested_documents_total{kind=\"bucket_manifest\"}") >= 1.0
    });
    let plan = service.plan(&json!({"crate_names": ["serde"]}));
    assert!(keys(&plan).contains(&key("serde-2")), "{plan}");
}
