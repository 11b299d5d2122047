//! Plans that pay for themselves, against the real binary: build identity
//! (an artifact of another target, toolchain or profile is never offered),
//! budgets (never exceeded, the most time saved per byte kept) and per-plan
//! feedback (`POST /v2/plan-feedback`: auth, 400, 404, metrics, and keys
//! that are never used stop being guessed).

mod common;

use common::{Service, key, keys, temp_db};
use serde_json::{Value, json};

const LINUX: &str = "x86_64-unknown-linux-gnu";

fn identity(target: &str, toolchain: &str, profile: &str) -> Value {
    json!({"target": target, "toolchain": toolchain, "profile": profile})
}

/// A build manifest of `(key label, crate, compile ms, bytes)` entries.
fn manifest(entries: &[(&str, &str, u64, u64)], identity: Option<Value>) -> String {
    let entries: Vec<Value> = entries
        .iter()
        .map(|(label, name, ms, bytes)| {
            json!({"cache_key": key(label), "crate_name": name,
                   "compile_time_ms": ms, "artifact_size": bytes})
        })
        .collect();
    let mut doc = json!({"version": 3, "created": "2026-11-25T10:00:00Z",
                         "manifest_key": LINUX, "entries": entries});
    if let Some(identity) = identity {
        doc["identity"] = identity;
    }
    doc.to_string()
}

fn ingest(service: &Service, body: &str) {
    let reply = service.post("/v2/manifests", body, None);
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[test]
fn artifacts_of_another_identity_are_never_offered_and_unknown_ones_rank_last() {
    let (_dir, db) = temp_db();
    let service = Service::start(&db, &[]);
    ingest(
        &service,
        &manifest(
            &[("serde-dev", "serde", 900, 1000)],
            Some(identity(LINUX, "t1", "dev")),
        ),
    );
    ingest(
        &service,
        &manifest(
            &[("serde-release", "serde", 900, 1000)],
            Some(identity(LINUX, "t1", "release")),
        ),
    );
    ingest(
        &service,
        &manifest(
            &[("serde-musl", "serde", 900, 1000)],
            Some(identity("x86_64-unknown-linux-musl", "t1", "dev")),
        ),
    );
    ingest(
        &service,
        &manifest(
            &[("serde-old-rustc", "serde", 900, 1000)],
            Some(identity(LINUX, "t0", "dev")),
        ),
    );
    // The original's documents have no identity: unknown, ranked last.
    ingest(
        &service,
        &manifest(&[("serde-unknown", "serde", 900, 1000)], None),
    );

    let plan =
        service.plan(&json!({"crate_names": ["serde"], "identity": identity(LINUX, "t1", "dev")}));
    assert_eq!(keys(&plan), [key("serde-dev"), key("serde-unknown")]);
    let plan = service
        .plan(&json!({"crate_names": ["serde"], "identity": identity(LINUX, "t1", "release")}));
    assert_eq!(keys(&plan), [key("serde-release"), key("serde-unknown")]);
    // A new toolchain nobody built with yet: only the unknown one.
    let plan =
        service.plan(&json!({"crate_names": ["serde"], "identity": identity(LINUX, "t2", "dev")}));
    assert_eq!(keys(&plan), [key("serde-unknown")]);
    // An intent of the seed's shape (no identity) still gets candidates.
    let plan = service.plan(&json!({"crate_names": ["serde"]}));
    assert_eq!(plan["disposition"], "execute");
    assert_eq!(keys(&plan).len(), 3, "at most three guesses per crate");
}

#[test]
fn a_budget_is_never_exceeded_and_keeps_the_most_time_saved_per_byte() {
    let (_dir, db) = temp_db();
    let service = Service::start(&db, &[]);
    // (label, crate, compile ms, bytes): dense ones are b and d.
    ingest(
        &service,
        &manifest(
            &[
                ("a", "a", 1_000, 100_000),
                ("b", "b", 8_000, 10_000),
                ("c", "c", 2_000, 400_000),
                ("d", "d", 3_000, 5_000),
            ],
            None,
        ),
    );
    let names = ["a", "b", "c", "d"];
    let plan = service.plan(&json!({"crate_names": names}));
    assert_eq!(keys(&plan).len(), 4);
    assert_eq!(plan["candidates"][1]["compile_time_ms"], 8_000);
    assert_eq!(plan["candidates"][1]["size_bytes"], 10_000);

    let plan = service.plan(&json!({"crate_names": names, "budget": {"max_candidates": 2}}));
    assert_eq!(
        keys(&plan),
        [key("b"), key("d")],
        "densest two, in build order"
    );
    let plan = service.plan(&json!({"crate_names": names, "budget": {"max_bytes": 120_000}}));
    assert_eq!(keys(&plan), [key("a"), key("b"), key("d")]);
    let total: u64 = plan["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["size_bytes"].as_u64().unwrap())
        .sum();
    assert!(total <= 120_000);
    let plan = service.plan(&json!({"crate_names": names, "budget": {"max_bytes": 1}}));
    assert_eq!(plan["disposition"], "use_fallback");
}

#[test]
fn feedback_is_authorised_validated_counted_and_stops_useless_guesses() {
    let (_dir, db) = temp_db();
    let token = "feedback-token";
    let service = Service::start(&db, &["--token", token]);
    let auth = Some(token);
    let body = manifest(
        &[
            ("hyper-1", "hyper", 5_000, 2_000),
            ("tokio-1", "tokio", 9_000, 3_000),
        ],
        None,
    );
    assert_eq!(service.post("/v2/manifests", &body, auth).status, 200);
    let ask = json!({"crate_names": ["tokio", "hyper"]}).to_string();
    let plan_of = || -> Value {
        let reply = service.post("/v2/prefetch-plan", &ask, auth);
        assert_eq!(reply.status, 200);
        reply.json()
    };
    let plan = plan_of();
    let plan_id = plan["plan_id"].as_str().unwrap().to_string();
    let report = json!({"plan_id": plan_id, "used": [key("tokio-1")],
                        "unused": [key("hyper-1")], "late": []})
    .to_string();

    assert_eq!(service.post("/v2/plan-feedback", &report, None).status, 401);
    assert_eq!(
        service.post("/v2/plan-feedback", "{not json", auth).status,
        400
    );
    assert_eq!(
        service
            .post("/v2/plan-feedback", &json!({"used": []}).to_string(), auth)
            .status,
        400,
        "plan_id is required"
    );
    let stranger = json!({"plan_id": plan_id, "used": [key("serde-1")]}).to_string();
    assert_eq!(
        service.post("/v2/plan-feedback", &stranger, auth).status,
        400
    );
    let unknown = json!({"plan_id": "no-such-plan", "used": []}).to_string();
    assert_eq!(
        service.post("/v2/plan-feedback", &unknown, auth).status,
        404
    );

    let reply = service.post("/v2/plan-feedback", &report, auth);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        service.post("/v2/plan-feedback", &report, auth).status,
        404,
        "one report per plan"
    );
    let used = "kache_planner_feedback_candidates_total{source=\"history\",result=\"used\"}";
    let unused_bytes = "kache_planner_feedback_bytes_total{source=\"history\",result=\"unused\"}";
    assert_eq!(service.metric(used), 1.0);
    assert_eq!(service.metric(unused_bytes), 2_000.0);
    assert_eq!(
        service.metric("kache_planner_feedback_reports_total{outcome=\"ok\"}"),
        1.0
    );

    // hyper-1 is downloaded and never used, plan after plan: after three
    // such reports it is not guessed any more; tokio-1 still is.
    for _ in 0..2 {
        let plan = plan_of();
        assert!(keys(&plan).contains(&key("hyper-1")));
        let report = json!({"plan_id": plan["plan_id"], "used": [key("tokio-1")],
                            "unused": [key("hyper-1")]});
        assert_eq!(
            service
                .post("/v2/plan-feedback", &report.to_string(), auth)
                .status,
            200
        );
    }
    assert_eq!(keys(&plan_of()), [key("tokio-1")]);

    // The feedback is stored: a restarted service still does not guess it.
    assert_eq!(service.stop(), 0);
    let service = Service::start(&db, &["--token", token]);
    let reply = service.post("/v2/prefetch-plan", &ask, auth);
    assert_eq!(keys(&reply.json()), [key("tokio-1")]);
}
