//! The service's wire types beyond kache-core's, and the OpenAPI document
//! (`GET /openapi.json`) built from the very types the handlers read and
//! write, so the document cannot drift from the code.
//!
//! Request and reply schemas come from `schemars` (JSON Schema 2020-12,
//! which OpenAPI 3.1 uses as is); the paths, status codes and content types
//! are written here once, beside the router in `http.rs`.

use kache_core::manifest::{BuildManifest, Shard};
use kache_core::plan::{BuildIntent, PrefetchPlan};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Every error: a sentence naming the problem.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorReply {
    pub error: String,
}

/// `GET /healthz`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Health {
    /// Always `ok`: the process answers.
    pub status: String,
    pub planner: String,
    pub version: String,
    /// Who may call the plan and ingest routes: `none` (anyone: no token
    /// is configured), `bearer` (one token for every route), `scoped` (a
    /// plan token and a separate ingest token), `ingest_only` (plans are
    /// anonymous, ingest needs the ingest token).
    pub auth: String,
}

/// `GET /readyz`: `ready` (200) or `not_ready` (503).
#[derive(Debug, Serialize, JsonSchema)]
pub struct Readiness {
    pub status: String,
}

/// `POST /v2/manifests` and `/v2/shards/...` on success.
#[derive(Debug, Serialize, JsonSchema)]
pub struct IngestReply {
    /// Always `ok`.
    pub status: String,
    pub summary: crate::ingest::Summary,
}

/// `POST /v2/plan-feedback`: what a build did with one plan's candidates.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Feedback {
    /// The `plan_id` of the plan reported on (once).
    pub plan_id: String,
    /// Prefetched and used by a compile.
    #[serde(default)]
    pub used: Vec<String>,
    /// Downloaded and never used.
    #[serde(default)]
    pub unused: Vec<String>,
    /// Arrived after the unit needed them.
    #[serde(default)]
    pub late: Vec<String>,
}

/// The counts a feedback report was taken with.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FeedbackReply {
    /// Always `ok`.
    pub status: String,
    pub used: usize,
    pub unused: usize,
    pub late: usize,
    /// Whether the report changed the keys' stored feedback (and so what
    /// plans offer): only a caller holding the ingest scope's does. Others
    /// are counted in `/metrics` only.
    pub counts_for_ranking: bool,
}

/// A reference to `T`'s schema (defined under `components`).
fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    serde_json::to_value(generator.subschema_for::<T>()).expect("a schema serializes")
}

/// The OpenAPI 3.1 document of the service.
pub fn document() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let intent = schema_of::<BuildIntent>(&mut generator);
    let plan = schema_of::<PrefetchPlan<String>>(&mut generator);
    let manifest = schema_of::<BuildManifest>(&mut generator);
    let shard = schema_of::<Shard>(&mut generator);
    let feedback = schema_of::<Feedback>(&mut generator);
    let error = schema_of::<ErrorReply>(&mut generator);
    let health = schema_of::<Health>(&mut generator);
    let readiness = schema_of::<Readiness>(&mut generator);
    let ingested = schema_of::<IngestReply>(&mut generator);
    let feedback_reply = schema_of::<FeedbackReply>(&mut generator);
    let gc_report = schema_of::<crate::gc::Report>(&mut generator);
    let components = generator.take_definitions(true);

    let json_body = |schema: &Value| json!({"content": {"application/json": {"schema": schema}}});
    let reply = |description: &str, schema: &Value| {
        let mut reply = json_body(schema);
        reply["description"] = description.into();
        reply
    };
    let failure = |description: &str| reply(description, &error);
    // Every POST route shares auth, readiness and the body limit.
    let gated = |mut responses: Value| {
        responses["401"] = failure("Missing or wrong bearer token (when one is configured).");
        responses["413"] = json!({"description": "Body over 8 MiB."});
        responses["503"] = failure("Not ready: not the leader, or still loading.");
        responses
    };
    let plan_route = json!({
        "post": {
            "summary": "Plan what a build should prefetch",
            "description": "A plan that cannot execute is `use_fallback` with 200, never an error.",
            "security": [{}, {"bearer": []}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": intent}}},
            "responses": gated(json!({
                "200": reply("The plan.", &plan),
                "400": failure("Malformed intent."),
            })),
        }
    });
    let ingest_route = |summary: &str, body: &Value, parameters: Value| {
        json!({
            "post": {
                "summary": summary,
                "security": [{}, {"bearer": []}],
                "parameters": parameters,
                "requestBody": {"required": true, "content": {"application/json": {"schema": body}}},
                "responses": gated(json!({
                    "200": reply("Ingested.", &ingested),
                    "400": failure("Malformed or unsupported document, or a cache_key that is not 64 lowercase hex digits."),
                    "403": failure("A valid token without the ingest scope (the plan token while an ingest token is set), or a namespace KACHE_PLANNER_INGEST_NAMESPACES does not admit."),
                    "500": failure("The database refused the write."),
                })),
            }
        })
    };
    let path_parameter = |name: &str, description: &str, schema: Value| {
        json!({"name": name, "in": "path", "required": true, "description": description,
               "schema": schema})
    };
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "kache planner",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Plans what a build should prefetch from the shared cache, learns from build manifests and Cargo.lock shards, and takes feedback on its plans.",
        },
        "paths": {
            "/healthz": {"get": {
                "summary": "Liveness",
                "responses": {"200": reply("The process answers.", &health)},
            }},
            "/readyz": {"get": {
                "summary": "Readiness",
                "responses": {
                    "200": reply("Ready to plan.", &readiness),
                    "503": reply("Not ready.", &readiness),
                },
            }},
            "/metrics": {"get": {
                "summary": "Prometheus metrics (OpenMetrics text)",
                "responses": {"200": {
                    "description": "The metrics.",
                    "content": {"application/openmetrics-text": {"schema": {"type": "string"}}},
                }},
            }},
            "/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": {
                    "description": "The OpenAPI document.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }},
            }},
            "/v1/prefetch-plan": plan_route.clone(),
            "/v2/prefetch-plan": plan_route,
            "/v2/manifests": ingest_route("Learn from a build manifest", &manifest, json!([])),
            "/v2/shards/{namespace}/{shard_hash}": ingest_route(
                "Learn from a Cargo.lock shard",
                &shard,
                json!([
                    path_parameter(
                        "namespace",
                        "The branch or namespace the shard belongs to.",
                        json!({"type": "string"}),
                    ),
                    path_parameter(
                        "shard_hash",
                        "blake3 hex of the shard's name@version packages.",
                        json!({"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}),
                    ),
                ]),
            ),
            "/v2/plan-feedback": {"post": {
                "summary": "Report what a build did with a plan's candidates",
                "security": [{}, {"bearer": []}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": feedback}}},
                "responses": gated(json!({
                    "200": reply("Counted.", &feedback_reply),
                    "400": failure("Malformed, or names a key the plan did not offer."),
                    "404": failure("No such plan, or already reported."),
                    "500": failure("The database refused the write (the report can be retried)."),
                })),
            }},
            "/v2/gc": {"post": {
                "summary": "Collect the bucket now",
                "description": "Deletes what no young build manifest or shard references, no plan used lately and no upload is still writing (see ARCHITECTURE.md); needs the ingest scope for every namespace. With dry_run, decides and deletes nothing.",
                "security": [{}, {"bearer": []}],
                "parameters": [{"name": "dry_run", "in": "query", "required": false,
                                "description": "Decide, report, delete nothing.",
                                "schema": {"type": "boolean", "default": false}}],
                "responses": {
                    "200": reply("What the collection decided.", &gc_report),
                    "400": failure("A malformed query."),
                    "401": failure("Missing or wrong bearer token (when one is configured)."),
                    "403": failure("A valid token without the ingest scope for every namespace."),
                    "404": failure("No bucket is configured."),
                    "409": failure("A collection is already running."),
                    "502": failure("The bucket failed (unreachable, or it refused a delete: a read-only key)."),
                    "503": failure("Not ready: not the leader, or still loading."),
                },
            }},
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves_and_every_route_is_described() {
        let doc = document();
        let text = doc.to_string();
        for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &reference[..reference.find('"').unwrap()];
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{name} is referenced but not defined"
            );
        }
        let paths: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        // Every route `http::router` serves.
        let routes = [
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/v1/prefetch-plan",
            "/v2/prefetch-plan",
            "/v2/manifests",
            "/v2/shards/{namespace}/{shard_hash}",
            "/v2/plan-feedback",
            "/v2/gc",
        ];
        for route in routes {
            assert!(paths.contains(&route), "{route} is not in the document");
        }
        assert_eq!(paths.len(), routes.len());
    }
}
