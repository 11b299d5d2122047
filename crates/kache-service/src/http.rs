//! The HTTP API (DESIGN.md, "Planner HTTP API").
//!
//! `POST /v1/prefetch-plan` and `/v2/prefetch-plan` share one handler. A plan
//! that cannot execute is `use_fallback` with HTTP 200, never an error. Auth
//! (when a token is set; scopes in `auth.rs`) is checked first, readiness
//! second, the body last: an ingest body is read only once its sender is
//! let in, and at most [`INGEST_PERMITS`] at a time.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kache_core::manifest::{BuildManifest, Shard};
use kache_core::plan::{
    BuildIntent, Chosen, Disposition, Fallback, Planned, PrefetchPlan, SourceKind, plan,
};
use tokio::sync::{RwLock, Semaphore};
use tracing::{info, warn};

use crate::api::{ErrorReply, Feedback, FeedbackReply, Health, IngestReply, Readiness};
use crate::auth::{Auth, Denied};
use crate::ingest::{self, Backend, Limits, Mode};
use crate::metrics::{FeedbackLabel, Metrics, OutcomeLabel};
use crate::state::{FailingSource, SourceError};

/// Request bodies larger than this get 413.
pub const BODY_LIMIT: usize = 8 << 20;

/// Ingest requests whose bodies may be in memory at once (one being
/// stored, one being parsed); others wait for a permit before their body is
/// read, so a burst of large documents cannot pile up.
pub const INGEST_PERMITS: usize = 2;

/// Everything a request handler needs.
pub struct App {
    pub planner: String,
    /// The tokens (hashed, never logged) and what each may do.
    pub auth: Auth,
    /// How much state a backend keeps.
    pub limits: Limits,
    ingest_permits: Semaphore,
    ready: AtomicBool,
    pub backend: RwLock<Option<Backend>>,
    pub metrics: Metrics,
    /// `KACHE_PLANNER_FAULT=planning`: every plan hits a source error.
    fault_planning: bool,
    plans: Mutex<PlanLog>,
    /// `GET /openapi.json`, written once.
    openapi: Bytes,
    /// Which manifests and shards are learned (signatures).
    pub documents: crate::signed::Documents,
    /// The bucket `POST /v2/gc` collects, when one is configured.
    pub gc: Option<Arc<crate::gc::Collector>>,
}

/// Executed plans kept for feedback: the newest [`PLAN_LOG_CAPACITY`].
pub const PLAN_LOG_CAPACITY: usize = 4096;

/// What a plan offered, compactly: (key hash, source, bytes), sorted by
/// hash. A hash, not the key, so remembering a plan costs 24 bytes per
/// candidate and no map. The hash is not collision-resistant: a client that
/// crafts a colliding key can only miscount its own feedback.
type Offered = Vec<(u64, SourceKind, u64)>;

fn key_hash(key: &str) -> u64 {
    foldhash::fast::FixedState::default().hash_one(key)
}

/// Built before the log's lock is taken: plans do not queue on hashing.
fn offered(chosen: &[Chosen<'_>]) -> Offered {
    let mut offered: Offered = chosen
        .iter()
        .map(|c| {
            (
                key_hash(c.candidate.cache_key),
                c.source,
                c.candidate.size_bytes,
            )
        })
        .collect();
    offered.sort_unstable_by_key(|o| o.0);
    offered
}

#[derive(Default)]
struct PlanLog {
    order: VecDeque<String>,
    plans: HashMap<String, Offered>,
}

impl PlanLog {
    fn remember(&mut self, plan_id: String, offered: Offered) {
        if self.order.len() == PLAN_LOG_CAPACITY
            && let Some(oldest) = self.order.pop_front()
        {
            self.plans.remove(&oldest);
        }
        self.order.push_back(plan_id.clone());
        self.plans.insert(plan_id, offered);
    }
}

impl App {
    pub fn new(planner: String, auth: Auth, limits: Limits) -> Self {
        Self {
            planner,
            auth,
            limits,
            ingest_permits: Semaphore::new(INGEST_PERMITS),
            ready: AtomicBool::new(false),
            backend: RwLock::new(None),
            metrics: Metrics::new(),
            fault_planning: std::env::var("KACHE_PLANNER_FAULT").is_ok_and(|v| v == "planning"),
            plans: Mutex::new(PlanLog::default()),
            openapi: Bytes::from(crate::api::document().to_string()),
            documents: crate::signed::Documents::new(Default::default(), "artifacts"),
            gc: None,
        }
    }

    /// Installs (or removes) the backend and updates readiness.
    pub async fn set_backend(&self, backend: Option<Backend>) {
        let mut slot = self.backend.write().await;
        let ready = backend.is_some();
        if let Some(backend) = &backend {
            self.publish_state_size(backend).await;
        }
        *slot = backend;
        self.ready.store(ready, Ordering::SeqCst);
        self.metrics.ready.set(i64::from(ready));
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub async fn publish_state_size(&self, backend: &Backend) {
        let (artifacts, crates) = backend.sizes().await;
        self.metrics.artifacts.set(artifacts as i64);
        self.metrics.crates.set(crates as i64);
    }

    /// Counts what an ingest evicted.
    pub fn count_evictions(&self, summary: &ingest::Summary) {
        self.metrics
            .evicted_artifacts
            .inc_by(summary.evicted_artifacts as u64);
        self.metrics
            .evicted_sightings
            .inc_by(summary.evicted_sightings as u64);
    }
}

/// The answer to a refused request: 401 or 403.
fn refusal(denied: Denied) -> Response {
    match denied {
        Denied::Unauthenticated => error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"),
        Denied::Forbidden(message) => error(StatusCode::FORBIDDEN, message),
    }
}

/// The router with every route.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/prefetch-plan", post(prefetch_plan))
        .route("/v2/prefetch-plan", post(prefetch_plan))
        .route("/v2/manifests", post(ingest_manifest))
        .route("/v2/shards/{namespace}/{shard_hash}", post(ingest_shard))
        .route("/v2/plan-feedback", post(plan_feedback))
        .route("/v2/gc", post(crate::gc::route))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(app)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let reply = ErrorReply {
        error: message.into(),
    };
    (status, axum::Json(reply)).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such route")
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    axum::Json(Health {
        status: "ok".into(),
        planner: app.planner.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        auth: app.auth.mode().into(),
    })
    .into_response()
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let (status, word) = if app.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    };
    let reply = Readiness {
        status: word.into(),
    };
    (status, axum::Json(reply)).into_response()
}

async fn openapi(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        app.openapi.clone(),
    )
        .into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
        .into_response()
}

/// Parses a JSON body; the error names the problem.
fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))
}

async fn prefetch_plan(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    if let Err(denied) = app.auth.plan(&headers) {
        app.metrics.count("unauthorized");
        return refusal(denied);
    }
    let guard = app.backend.read().await;
    let Some(backend) = guard.as_ref().filter(|_| app.is_ready()) else {
        app.metrics.count("not_ready");
        return error(StatusCode::SERVICE_UNAVAILABLE, "not ready");
    };
    let intent: BuildIntent = match parse(&body) {
        Ok(intent) => intent,
        Err(message) => {
            app.metrics.count("bad_request");
            return error(StatusCode::BAD_REQUEST, message);
        }
    };
    let state = backend.state.read().await;
    // A bug in planning must not become an HTTP error: it is a fallback.
    let failing = FailingSource(&state);
    let planned = std::panic::catch_unwind(AssertUnwindSafe(|| {
        if app.fault_planning {
            plan(&intent, &failing)
        } else {
            plan(&intent, &*state)
        }
    }))
    .map_err(|_| SourceError("planning panicked".into()))
    .and_then(|result| result);
    let (disposition, candidates, reason) = match planned {
        Ok(Planned::Execute(candidates)) => (Disposition::Execute, candidates, None),
        Ok(Planned::Fallback(fallback)) => (Disposition::UseFallback, Vec::new(), Some(fallback)),
        Err(SourceError(err)) => {
            warn!("planning failed ({err}); answering use_fallback");
            (
                Disposition::UseFallback,
                Vec::new(),
                Some(Fallback::PlanningError),
            )
        }
    };
    let outcome = match reason {
        None => "execute".to_string(),
        Some(fallback) => format!("fallback_{}", fallback.as_str()),
    };
    app.metrics.count(&outcome);
    if reason.is_none() {
        app.metrics.candidates.observe(candidates.len() as f64);
    }
    let plan_id = uuid::Uuid::new_v4().to_string();
    if !candidates.is_empty() {
        let offered = offered(&candidates);
        app.plans
            .lock()
            .expect("plan log lock")
            .remember(plan_id.clone(), offered);
    }
    // Written while the state is still borrowed: the candidates' strings are
    // the state's own, copied once, into the response.
    let response = PrefetchPlan::<&str> {
        plan_id,
        planner: app.planner.clone(),
        disposition,
        candidates: candidates.into_iter().map(|c| c.candidate).collect(),
        reason: reason.map(|r| r.as_str().to_string()),
    };
    let mut body = Vec::with_capacity(256 + 128 * response.candidates.len());
    response.write_json(&mut body);
    drop(response);
    drop(state);
    drop(guard);
    app.metrics.latency.observe(started.elapsed().as_secs_f64());
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Shared gate of the ingest routes: auth (for a shard's `namespace`, or a
/// manifest), then readiness, then a permit; then the body is read. `Err` is
/// the refusal.
async fn admit<'a>(
    app: &'a App,
    headers: &HeaderMap,
    namespace: Option<&str>,
    request: Request,
) -> Result<(tokio::sync::SemaphorePermit<'a>, Bytes), Response> {
    app.auth.ingest(headers, namespace).map_err(refusal)?;
    if !app.is_ready() {
        return Err(error(StatusCode::SERVICE_UNAVAILABLE, "not ready"));
    }
    let permit = app
        .ingest_permits
        .acquire()
        .await
        .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
    // Honours the router's DefaultBodyLimit: 413 past it.
    let body = Bytes::from_request(request, &())
        .await
        .map_err(IntoResponse::into_response)?;
    Ok((permit, body))
}

async fn apply(app: &App, kind: &str, observations: Vec<ingest::Observation>) -> Response {
    let guard = app.backend.read().await;
    let Some(backend) = guard.as_ref() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "not ready");
    };
    match backend.ingest(&observations, Mode::Count).await {
        Ok(summary) => {
            app.publish_state_size(backend).await;
            app.count_evictions(&summary);
            app.metrics
                .ingested
                .get_or_create(&crate::metrics::KindLabel {
                    kind: kind.to_string(),
                })
                .inc();
            info!(
                kind,
                observations = summary.observations,
                new_artifacts = summary.new_artifacts,
                evicted_artifacts = summary.evicted_artifacts,
                "ingested"
            );
            let reply = IngestReply {
                status: "ok".into(),
                summary,
            };
            axum::Json(reply).into_response()
        }
        Err(err) => {
            warn!("ingest failed: {err:#}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("storing the {kind} failed"),
            )
        }
    }
}

/// `POST /v2/manifests`. With trusted keys, a manifest no trusted key
/// signed (for where its `manifest_key` stores it) is 403.
async fn ingest_manifest(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let (_permit, body) = match admit(&app, &headers, None, request).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal,
    };
    // Parsing megabytes is CPU-bound: the worker's other tasks (plans)
    // move elsewhere meanwhile.
    let observations = tokio::task::block_in_place(|| {
        let manifest: BuildManifest = parse(&body).map_err(|m| (StatusCode::BAD_REQUEST, m))?;
        drop(body);
        app.documents
            .manifest(&manifest, None)
            .map_err(|refusal| refused(&app, &refusal))?;
        ingest::from_manifest(&manifest)
            .map_err(|err| (StatusCode::BAD_REQUEST, format!("{err:#}")))
    });
    match observations {
        Ok(observations) => apply(&app, "manifest", observations).await,
        Err((status, message)) => error(status, message),
    }
}

/// `POST /v2/shards/{namespace}/{shard_hash}`. With trusted keys, a shard
/// no trusted key signed for this namespace and name is 403.
async fn ingest_shard(
    State(app): State<Arc<App>>,
    Path((namespace, shard_hash)): Path<(String, String)>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let (_permit, body) = match admit(&app, &headers, Some(&namespace), request).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal,
    };
    let observations = tokio::task::block_in_place(|| {
        let shard: Shard = parse(&body).map_err(|m| (StatusCode::BAD_REQUEST, m))?;
        drop(body);
        app.documents
            .shard(&shard, &namespace, &shard_hash, None)
            .map_err(|refusal| refused(&app, &refusal))?;
        ingest::from_shard(&namespace, &shard_hash, &shard)
            .map_err(|err| (StatusCode::BAD_REQUEST, format!("{err:#}")))
    });
    match observations {
        Ok(observations) => apply(&app, "shard", observations).await,
        Err((status, message)) => error(status, message),
    }
}

/// Counts a document refused for its signature; the 403 that answers it.
fn refused(app: &App, refusal: &kache_remote::sign::Refusal) -> (StatusCode, String) {
    app.metrics
        .refused_documents
        .get_or_create(&crate::metrics::KindLabel {
            kind: refusal.reason().to_string(),
        })
        .inc();
    (
        StatusCode::FORBIDDEN,
        format!("the document is refused: {refusal} (trusted keys are set)"),
    )
}

/// Counts a report by outcome and answers.
fn feedback_reply(app: &App, outcome: &str, response: Response) -> Response {
    app.metrics
        .feedback_reports
        .get_or_create(&OutcomeLabel {
            outcome: outcome.to_string(),
        })
        .inc();
    response
}

/// One report per plan: a second one (or one for a plan this process did
/// not make, or forgot) is 404. Every key must be a candidate of the plan.
///
/// Every accepted report is counted in `/metrics`; only one from a caller
/// holding the ingest scope changes the keys' stored feedback, and with it
/// what plans offer (a key reported unused three times and never used is
/// no longer guessed). With one token, or none, every caller holds it.
async fn plan_feedback(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let caller = match app.auth.plan(&headers) {
        Ok(caller) => caller,
        Err(denied) => return feedback_reply(&app, "unauthorized", refusal(denied)),
    };
    if !app.is_ready() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "not ready");
    }
    let feedback: Feedback = match parse(&body) {
        Ok(feedback) => feedback,
        Err(message) => {
            return feedback_reply(&app, "bad_request", error(StatusCode::BAD_REQUEST, message));
        }
    };
    let mut results: Vec<(&str, SourceKind, u64)> = Vec::new();
    // The plan is claimed (taken from the log) so it is counted once; it
    // goes back if the counts cannot be stored, so the report can be retried.
    let offered = {
        let mut log = app.plans.lock().expect("plan log lock");
        let Some(offered) = log.plans.get(&feedback.plan_id) else {
            let message = format!("no plan {:?} to report on", feedback.plan_id);
            return feedback_reply(&app, "unknown_plan", error(StatusCode::NOT_FOUND, message));
        };
        for (result, keys) in [
            ("used", &feedback.used),
            ("unused", &feedback.unused),
            ("late", &feedback.late),
        ] {
            for key in keys {
                let hash = key_hash(key);
                let found = offered
                    .binary_search_by_key(&hash, |o| o.0)
                    .ok()
                    .map(|at| (offered[at].1, offered[at].2));
                let Some((source, bytes)) = found else {
                    let message = format!("{key:?} was not a candidate of this plan");
                    let refusal = error(StatusCode::BAD_REQUEST, message);
                    return feedback_reply(&app, "bad_request", refusal);
                };
                results.push((result, source, bytes));
            }
        }
        log.plans.remove(&feedback.plan_id)
    };
    if caller.may_ingest
        && let Some(backend) = app.backend.read().await.as_ref()
        && let Err(err) = backend
            .record_feedback(&feedback.used, &feedback.unused)
            .await
    {
        warn!("storing plan feedback failed: {err:#}");
        if let Some(offered) = offered {
            let mut log = app.plans.lock().expect("plan log lock");
            log.plans.insert(feedback.plan_id.clone(), offered);
        }
        let refusal = error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("storing the feedback failed: {err:#}"),
        );
        return feedback_reply(&app, "storage_error", refusal);
    }
    for (result, source, bytes) in &results {
        let label = FeedbackLabel {
            source: source.as_str().to_string(),
            result: result.to_string(),
        };
        app.metrics.feedback_candidates.get_or_create(&label).inc();
        app.metrics
            .feedback_bytes
            .get_or_create(&label)
            .inc_by(*bytes);
    }
    let reply = FeedbackReply {
        status: "ok".into(),
        used: feedback.used.len(),
        unused: feedback.unused.len(),
        late: feedback.late.len(),
        counts_for_ranking: caller.may_ingest,
    };
    feedback_reply(&app, "ok", axum::Json(reply).into_response())
}
