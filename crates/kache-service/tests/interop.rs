//! Interop with the original kache 0.6 and the seed's plan contract.
//!
//! kache 0.6 writes its build manifest and shards pretty-printed (two-space
//! indent), `created` with nanoseconds, every entry with all its fields, and
//! one shard per non-empty `Cargo.lock` bucket. The documents below are
//! written byte for byte in that form for a real lock file (the `csys`
//! fixture's: zstd, rusqlite, blake3 and their dependencies); the service
//! reads them from the bucket directory like any other. A client that
//! speaks only the seed's contract — the three intent fields, `/v1`, no
//! namespace — must get plans its own types can read.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Service, key, temp_db};
use kache_core::manifest::{shard_bucket, shard_hash};
use serde_json::{Value, json};

/// `[[package]]` name/version pairs of a `Cargo.lock`.
fn lock_packages(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut packages = Vec::new();
    let mut name = None;
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("name = ") {
            name = Some(value.trim_matches('"').to_string());
        } else if let Some(value) = line.strip_prefix("version = ")
            && let Some(name) = name.take()
        {
            packages.push((name, value.trim_matches('"').to_string()));
        }
    }
    packages
}

fn write(root: &Path, name: &str, body: &[u8]) {
    let path = root.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

/// Pretty-printed like kache 0.6's `serde_json::to_vec_pretty`.
fn pretty(value: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(value).unwrap()
}

/// A plan as the seed's client reads it: exactly these fields, these types.
fn assert_seed_plan(plan: &Value) {
    let fields: BTreeSet<&str> = plan
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    let allowed = BTreeSet::from(["plan_id", "planner", "disposition", "candidates", "reason"]);
    assert!(fields.is_subset(&allowed), "unexpected fields in {plan}");
    assert!(
        plan["plan_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{plan}"
    );
    assert!(plan["planner"].is_string(), "{plan}");
    let disposition = plan["disposition"].as_str().unwrap();
    assert!(
        ["execute", "use_fallback", "do_nothing"].contains(&disposition),
        "{plan}"
    );
    for candidate in plan["candidates"].as_array().unwrap() {
        let fields: BTreeSet<&str> = candidate
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        // The seed's two fields, plus only the documented additions.
        assert!(
            fields.contains("cache_key") && fields.contains("crate_name"),
            "{plan}"
        );
        let known = BTreeSet::from(["cache_key", "crate_name", "compile_time_ms", "size_bytes"]);
        assert!(fields.is_subset(&known), "{plan}");
        assert!(candidate["cache_key"].is_string() && candidate["crate_name"].is_string());
    }
}

#[test]
fn documents_of_kache_0_6_are_learned_and_a_seed_client_gets_plans_it_can_read() {
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/csys/Cargo.lock");
    let packages = lock_packages(&lock);
    assert!(packages.len() > 20, "a real lock file: {}", packages.len());

    // What runner A built: one library per package, keyed by its name.
    let crate_of = |package: &str| package.replace('-', "_");
    let bucket_dir = tempfile::tempdir().unwrap();
    let root = bucket_dir.path();
    let entries: Vec<Value> = packages
        .iter()
        .map(|(name, _)| {
            json!({"cache_key": key(name), "crate_name": crate_of(name),
                   "compile_time_ms": 1200, "artifact_size": 48213})
        })
        .collect();
    write(
        root,
        "artifacts/_manifests/x86_64-unknown-linux-gnu.json",
        &pretty(
            &json!({"version": 3, "created": "2026-11-20T09:14:03.512345678Z",
                        "manifest_key": "x86_64-unknown-linux-gnu", "entries": entries}),
        ),
    );
    let mut buckets: BTreeMap<u64, Vec<(String, String)>> = BTreeMap::new();
    for package in &packages {
        buckets
            .entry(shard_bucket(&package.0))
            .or_default()
            .push(package.clone());
    }
    for members in buckets.values() {
        let entries: Vec<Value> = members
            .iter()
            .map(|(name, _)| json!({"cache_key": key(name), "crate_name": crate_of(name)}))
            .collect();
        write(
            root,
            &format!(
                "artifacts/_manifests/v3/main/shards/{}.json",
                shard_hash(members)
            ),
            &pretty(&json!({"version": 3, "entries": entries})),
        );
    }

    let (_dir, db) = temp_db();
    let remote_dir = root.to_str().unwrap().to_string();
    let service = Service::start(&db, &["--remote-dir", &remote_dir, "--scan-interval", "1"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while service.metric("kache_planner_ingested_documents_total{kind=\"bucket_shard\"}")
        < buckets.len() as f64
    {
        assert!(Instant::now() < deadline, "the shards were not ingested");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        service.metric("kache_planner_scan_skipped_documents_total"),
        0.0
    );

    // The seed's intent, on /v1: every package resolves from its shard, in
    // the order the intent names them.
    let names: Vec<String> = packages.iter().map(|(n, _)| crate_of(n)).collect();
    let lock_deps: Vec<Value> = packages.iter().map(|(n, v)| json!([n, v])).collect();
    let intent = json!({"crate_names": names, "namespace": "main", "cargo_lock_deps": lock_deps});
    let reply = service.post("/v1/prefetch-plan", &intent.to_string(), None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let plan = reply.json();
    assert_seed_plan(&plan);
    assert_eq!(plan["disposition"], "execute");
    let offered: Vec<&str> = plan["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cache_key"].as_str().unwrap())
        .collect();
    let mut expected: Vec<String> = packages.iter().map(|(n, _)| key(n)).collect();
    let mut seen = BTreeSet::new();
    expected.retain(|k| seen.insert(k.clone()));
    assert_eq!(offered, expected);

    // Without a namespace the build manifest's history answers.
    let intent = json!({"crate_names": ["zstd_sys", "libsqlite3_sys"], "cargo_lock_deps": []});
    let plan = service.plan(&intent);
    assert_seed_plan(&plan);
    let offered: Vec<&str> = plan["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["crate_name"].as_str().unwrap())
        .collect();
    assert_eq!(offered, ["zstd_sys", "libsqlite3_sys"]);

    // Crates nobody built: `use_fallback`, still in the seed's shape.
    let plan = service.plan(&json!({"crate_names": ["left_pad"]}));
    assert_seed_plan(&plan);
    assert_eq!(plan["disposition"], "use_fallback");
}
