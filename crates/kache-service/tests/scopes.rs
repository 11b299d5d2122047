//! Who may do what, through the real binary: the plan token, the ingest
//! token and its namespaces, feedback that changes rankings, and the loud
//! anonymous mode.

mod common;

use common::{Service, key, keys, temp_db};
use serde_json::{Value, json};

fn manifest(entries: &[(&str, &str)]) -> String {
    json!({
        "version": 3,
        "created": "2026-12-01T00:00:00Z",
        "manifest_key": "x86_64-unknown-linux-gnu",
        "entries": entries.iter().map(|(k, c)| json!({
            "cache_key": key(k), "crate_name": c, "compile_time_ms": 4_000, "artifact_size": 1_000
        })).collect::<Vec<_>>()
    })
    .to_string()
}

fn shard(entries: &[(&str, &str)]) -> String {
    json!({"version": 3, "entries": entries.iter().map(|(k, c)| json!({
        "cache_key": key(k), "crate_name": c
    })).collect::<Vec<_>>()})
    .to_string()
}

const SHARD_HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn shard_path(namespace: &str) -> String {
    format!("/v2/shards/{namespace}/{SHARD_HASH}")
}

#[test]
fn with_an_ingest_token_the_plan_token_cannot_ingest_and_the_ingest_token_keeps_to_its_namespaces()
{
    let (_dir, db) = temp_db();
    let (plan, ingest) = ("plan-token-value", "ingest-token-value");
    let mut cmd = common::command(&db, &["--token", plan]);
    cmd.env("KACHE_PLANNER_INGEST_TOKEN", ingest)
        .env("KACHE_PLANNER_INGEST_NAMESPACES", "ci-*, main");
    let service = Service::spawn(cmd);
    assert_eq!(service.get("/healthz").json()["auth"], "scoped");
    let body = shard(&[("serde-1", "serde")]);

    // The plan token is known but may not ingest: 403, saying why.
    let refused = service.post(&shard_path("ci-1"), &body, Some(plan));
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap()
            .contains("ingest needs the ingest token"),
        "{}",
        refused.body
    );
    let refused = service.post("/v2/manifests", &manifest(&[("a-1", "a")]), Some(plan));
    assert_eq!(refused.status, 403, "{}", refused.body);
    // No token or a stranger's: 401, as before.
    assert_eq!(service.post(&shard_path("ci-1"), &body, None).status, 401);
    assert_eq!(
        service
            .post(&shard_path("ci-1"), &body, Some("nobody"))
            .status,
        401
    );

    // The ingest token writes the namespaces it is given, and no other.
    for namespace in ["ci-1", "ci-feature-x", "main"] {
        let reply = service.post(&shard_path(namespace), &body, Some(ingest));
        assert_eq!(reply.status, 200, "{namespace}: {}", reply.body);
    }
    for namespace in ["prod", "mainline", "xci-1"] {
        let reply = service.post(&shard_path(namespace), &body, Some(ingest));
        assert_eq!(reply.status, 403, "{namespace}: {}", reply.body);
        assert!(
            reply
                .body
                .contains(&format!("namespace \\\"{namespace}\\\"")),
            "{}",
            reply.body
        );
    }
    // A manifest feeds every namespace's history: not admitted by `ci-*, main`.
    let reply = service.post("/v2/manifests", &manifest(&[("a-1", "a")]), Some(ingest));
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(reply.body.contains("build manifests"), "{}", reply.body);

    // Both tokens plan; nothing else does.
    let intent = json!({"crate_names": ["serde"]}).to_string();
    for token in [plan, ingest] {
        assert_eq!(
            service
                .post("/v2/prefetch-plan", &intent, Some(token))
                .status,
            200
        );
    }
    assert_eq!(service.post("/v2/prefetch-plan", &intent, None).status, 401);
    assert!(!service.logs().contains(ingest), "no token reaches a log");
    assert!(!service.logs().contains(plan), "no token reaches a log");

    // Without a namespace list the ingest token writes everything, manifests
    // included; the plan token still may not.
    let (_dir2, db2) = temp_db();
    let service = Service::start(&db2, &["--token", plan, "--ingest-token", ingest]);
    let body = manifest(&[("a-1", "a")]);
    assert_eq!(service.post("/v2/manifests", &body, Some(plan)).status, 403);
    assert_eq!(
        service.post("/v2/manifests", &body, Some(ingest)).status,
        200
    );
    assert_eq!(
        service
            .post(
                &shard_path("anything"),
                &shard(&[("b-1", "b")]),
                Some(ingest)
            )
            .status,
        200
    );
}

#[test]
fn with_no_token_the_service_warns_at_start_and_reports_auth_none() {
    let (_dir, db) = temp_db();
    let open = Service::start(&db, &[]);
    let health = open.get("/healthz").json();
    assert_eq!(health["auth"], "none");
    assert_eq!(health["status"], "ok", "the seed's fields stay");
    assert!(health["planner"].is_string() && health["version"].is_string());
    let logs = open.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("WARN") && l.contains("no token is set")),
        "{logs}"
    );
    // Still the seed's contract: anonymous requests are accepted.
    let reply = open.post("/v2/manifests", &manifest(&[("a-1", "a")]), None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    drop(open);

    let (_dir2, db2) = temp_db();
    let guarded = Service::start(&db2, &["--token", "t0ken"]);
    assert_eq!(guarded.get("/healthz").json()["auth"], "bearer");
    assert!(!guarded.logs().contains("no token is set"));

    let (_dir3, db3) = temp_db();
    let ingest_only = Service::start(&db3, &["--ingest-token", "ingest"]);
    assert_eq!(ingest_only.get("/healthz").json()["auth"], "ingest_only");
    let intent = json!({"crate_names": ["a"]}).to_string();
    assert_eq!(
        ingest_only.post("/v2/prefetch-plan", &intent, None).status,
        200
    );
    assert_eq!(
        ingest_only
            .post("/v2/manifests", &manifest(&[("a-1", "a")]), None)
            .status,
        401
    );

    // The same value for both tokens would give the plan token every scope.
    let (_dir4, db4) = temp_db();
    let (code, stderr) = common::run_to_exit(common::command(
        &db4,
        &["--token", "x", "--ingest-token", "x"],
    ));
    assert_ne!(code, 0);
    assert!(stderr.contains("must differ"), "{stderr}");
}

#[test]
fn only_feedback_from_the_ingest_scope_drops_a_key_from_plans() {
    let (_dir, db) = temp_db();
    let (plan, ingest) = ("plan-token-value", "ingest-token-value");
    let service = Service::start(&db, &["--token", plan, "--ingest-token", ingest]);
    let body = manifest(&[("hyper-1", "hyper"), ("tokio-1", "tokio")]);
    assert_eq!(
        service.post("/v2/manifests", &body, Some(ingest)).status,
        200
    );
    let ask = json!({"crate_names": ["tokio", "hyper"]}).to_string();
    let report = |token: &str| -> Value {
        let plan = service.post("/v2/prefetch-plan", &ask, Some(token)).json();
        assert!(keys(&plan).contains(&key("hyper-1")), "{plan}");
        let report = json!({"plan_id": plan["plan_id"], "used": [key("tokio-1")],
                            "unused": [key("hyper-1")]});
        let reply = service.post("/v2/plan-feedback", &report.to_string(), Some(token));
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()
    };
    // Any number of laptops' reports are counted, but drop nothing.
    for _ in 0..4 {
        assert_eq!(report(plan)["counts_for_ranking"], false);
    }
    let unused = "kache_planner_feedback_candidates_total{source=\"history\",result=\"unused\"}";
    assert_eq!(service.metric(unused), 4.0);
    let plan_now = service.post("/v2/prefetch-plan", &ask, Some(plan)).json();
    assert!(keys(&plan_now).contains(&key("hyper-1")), "{plan_now}");
    // Three from the ingest scope do.
    for _ in 0..3 {
        assert_eq!(report(ingest)["counts_for_ranking"], true);
    }
    let plan_now = service.post("/v2/prefetch-plan", &ask, Some(plan)).json();
    assert_eq!(keys(&plan_now), [key("tokio-1")]);
}
