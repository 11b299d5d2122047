//! Bounded state, through the real binary: a flood of new artifacts keeps
//! the state (and the process's memory) within `--max-artifacts` while plans
//! are served, the oldest and least seen go first, the bound survives a
//! restart, and keys that are not 64 hex digits are refused with a precise
//! message.

mod common;

use common::{Service, key, keys, temp_db};
use serde_json::json;

/// A manifest of `count` artifacts of crate `crate_name`, keys numbered
/// from `first`.
fn manifest(crate_name: &str, first: usize, count: usize) -> String {
    let entries: Vec<_> = (first..first + count)
        .map(|i| {
            json!({"cache_key": format!("{i:064x}"), "crate_name": crate_name,
                   "compile_time_ms": 1_000, "artifact_size": 10_000})
        })
        .collect();
    json!({"version": 3, "created": "2026-12-01T00:00:00Z",
           "manifest_key": "x86_64-unknown-linux-gnu", "entries": entries})
    .to_string()
}

/// The resident memory of a process, in KiB (`VmRSS` in /proc).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_flood_of_artifacts_stays_within_the_bound_in_state_and_memory_while_plans_are_served() {
    let (_dir, db) = temp_db();
    let max = 500;
    let service = Service::start(&db, &["--max-artifacts", &max.to_string()]);
    let pid = service.child.id();
    assert_eq!(service.metric("kache_planner_state_max_artifacts"), 500.0);

    // The keep-worthy artifact: seen again and again, so it outlives the flood.
    let keeper = json!({"version": 3, "created": "2026-12-01T00:00:00Z",
        "manifest_key": "x86_64-unknown-linux-gnu",
        "entries": [{"cache_key": key("keeper"), "crate_name": "keeper",
                     "compile_time_ms": 9_000, "artifact_size": 1_000}]})
    .to_string();
    // 12,000 artifacts in all, 24 times the bound. (The debug build's
    // database costs about a millisecond a record; bench/planner.sh floods
    // a release build with 8 MiB documents.)
    let per_document = 500;
    let documents = 24;
    // Seen three times before the flood: more than any flood artifact.
    for _ in 0..3 {
        assert_eq!(service.post("/v2/manifests", &keeper, None).status, 200);
    }
    let mut rss_after_warmup = 0;
    for n in 0..documents {
        assert_eq!(service.post("/v2/manifests", &keeper, None).status, 200);
        let reply = service.post(
            "/v2/manifests",
            &manifest(&format!("flood{}", n % 7), n * per_document, per_document),
            None,
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
        let artifacts = service.metric("kache_planner_state_artifacts ");
        assert!(
            artifacts <= max as f64,
            "{artifacts} artifacts after document {n}"
        );
        let plan = service.plan(&json!({"crate_names": ["keeper", "flood0"]}));
        assert_eq!(plan["disposition"], "execute", "{plan}");
        assert_eq!(keys(&plan)[0], key("keeper"), "{plan}");
        if n == 4 {
            rss_after_warmup = rss_kib(pid);
        }
    }
    let rss_after_flood = rss_kib(pid);
    let evicted = service.metric("kache_planner_evicted_artifacts_total");
    eprintln!(
        "VmRSS after 5 documents ({} artifacts seen): {} MiB; after {documents} ({} seen): \
         {} MiB; {evicted} evicted; max {max}",
        5 * per_document,
        rss_after_warmup / 1024,
        documents * per_document,
        rss_after_flood / 1024
    );
    assert!(
        evicted >= (documents * per_document - max) as f64,
        "{evicted} evicted"
    );
    // Five times as many artifacts came after the warm-up. A sanity bound
    // only (allocator and database caches move): the measurement that tells
    // a bounded state from an unbounded one is the benchmark's.
    assert!(
        rss_after_flood < rss_after_warmup * 2 + 64 * 1024,
        "memory grew with the flood: {rss_after_warmup} KiB -> {rss_after_flood} KiB"
    );

    // The database holds the bound too: a restart loads no more.
    assert_eq!(service.stop(), 0);
    let service = Service::start(&db, &["--max-artifacts", &max.to_string()]);
    let artifacts = service.metric("kache_planner_state_artifacts ");
    assert!(
        artifacts > 0.0 && artifacts <= max as f64,
        "{artifacts} after restart"
    );
    let plan = service.plan(&json!({"crate_names": ["keeper"]}));
    assert_eq!(keys(&plan), [key("keeper")]);
    assert_eq!(service.stop(), 0);

    // A lowered bound applies at the next start.
    let service = Service::start(&db, &["--max-artifacts", "100"]);
    assert!(service.metric("kache_planner_state_artifacts ") <= 100.0);
    let plan = service.plan(&json!({"crate_names": ["keeper"]}));
    assert_eq!(keys(&plan), [key("keeper")], "the most seen is kept");
}

#[test]
fn cache_keys_that_are_not_64_lowercase_hex_digits_are_refused_with_400() {
    let (_dir, db) = temp_db();
    let service = Service::start(&db, &[]);
    let good = key("fine");
    let cases = [
        ("abc".to_string(), "got 3 characters"),
        ("a".repeat(65), "got 65 characters"),
        (format!("{}G", &good[..63]), "found 'G' at position 63"),
        (good.to_uppercase(), "found"),
        (format!("{}é", &good[..62]), "found 'é' at position 62"),
        ("../../etc/passwd".to_string(), "got 16 characters"),
    ];
    for (bad, detail) in &cases {
        let body = json!({"version": 3, "created": "2026-12-01T00:00:00Z",
            "manifest_key": "m", "entries": [
                {"cache_key": good, "crate_name": "ok", "compile_time_ms": 1, "artifact_size": 1},
                {"cache_key": bad, "crate_name": "bad", "compile_time_ms": 1, "artifact_size": 1}]})
        .to_string();
        let reply = service.post("/v2/manifests", &body, None);
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
        let message = reply.json()["error"].as_str().unwrap().to_string();
        assert!(
            message.starts_with("entries[1]: invalid cache_key")
                && message.contains("expected 64 lowercase hex digits")
                && message.contains(detail),
            "{bad}: {message}"
        );
        let shard = json!({"version": 3, "entries": [{"cache_key": bad, "crate_name": "bad"}]});
        let path = format!("/v2/shards/ci/{}", key("shard"));
        let reply = service.post(&path, &shard.to_string(), None);
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
        assert!(reply.body.contains("entries[0]: invalid cache_key"));
    }
    // Nothing of a refused document was stored, not even its good entry.
    assert_eq!(service.metric("kache_planner_state_artifacts "), 0.0);
    // A very long key is quoted shortened.
    let long = "z".repeat(100_000);
    let body = json!({"version": 3, "created": "x", "manifest_key": "m",
        "entries": [{"cache_key": long, "crate_name": "c", "compile_time_ms": 1, "artifact_size": 1}]})
    .to_string();
    let reply = service.post("/v2/manifests", &body, None);
    assert_eq!(reply.status, 400);
    assert!(reply.body.len() < 400, "{}", reply.body.len());

    // Ingest bodies are read after the gate, under the same 8 MiB limit.
    let frame = "{\"version\": 3, \"entries\": [], \"pad\": \"\"}";
    let limit = 8 << 20;
    let huge = frame.replace(
        "\"pad\": \"",
        &format!("\"pad\": \"{}", "x".repeat(limit + 1 - frame.len())),
    );
    assert_eq!(huge.len(), limit + 1);
    assert_eq!(service.post("/v2/manifests", &huge, None).status, 413);
    let path = format!("/v2/shards/ci/{}", key("shard"));
    assert_eq!(service.post(&path, &huge, None).status, 413);
}
