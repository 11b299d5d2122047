//! Prometheus metrics, served on `GET /metrics` without auth.
//!
//! Plan requests are counted by outcome; every outcome is present (at zero)
//! from the first scrape, so "no state", "no candidates" and "error" can be
//! told apart and alerted on without waiting for a first occurrence.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Outcomes of a plan request.
pub const OUTCOMES: &[&str] = &[
    "execute",
    "fallback_no_state",
    "fallback_no_candidates",
    "fallback_planning_error",
    "unauthorized",
    "not_ready",
    "bad_request",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// Plan feedback: which source offered a candidate, and what became of it
/// (`used`, `unused`, `late`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeedbackLabel {
    pub source: String,
    pub result: String,
}

/// Feedback results, and the sources of `kache_core::plan::SourceKind`.
pub const FEEDBACK_RESULTS: &[&str] = &["used", "unused", "late"];
pub const SOURCES: &[&str] = &["exact", "history", "known"];

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<OutcomeLabel, Counter>,
    pub latency: Histogram,
    pub candidates: Histogram,
    pub ready: Gauge<i64, AtomicI64>,
    pub artifacts: Gauge<i64, AtomicI64>,
    pub crates: Gauge<i64, AtomicI64>,
    pub ingested: Family<KindLabel, Counter>,
    /// Bucket documents skipped as malformed or hostile.
    pub scan_skipped: Counter,
    /// Manifests and shards refused for their signature (trusted keys set),
    /// by reason (`unsigned`, `untrusted key`, `bad signature`).
    pub refused_documents: Family<KindLabel, Counter>,
    /// Bucket scans that failed (the bucket was unreachable).
    pub scan_errors: Counter,
    /// Records dropped to stay within `KACHE_PLANNER_MAX_ARTIFACTS`.
    pub evicted_artifacts: Counter,
    pub evicted_sightings: Counter,
    /// The configured `KACHE_PLANNER_MAX_ARTIFACTS`.
    pub max_artifacts: Gauge<i64, AtomicI64>,
    /// Reported candidates and their bytes, by source and result.
    /// Precision is used / (used + unused); wasted bytes are the `unused`
    /// bytes; the on-time share is 1 - late / used.
    pub feedback_candidates: Family<FeedbackLabel, Counter>,
    pub feedback_bytes: Family<FeedbackLabel, Counter>,
    /// Feedback reports by outcome (`ok`, `unknown_plan`, `bad_request`).
    pub feedback_reports: Family<OutcomeLabel, Counter>,
    /// The bucket's collections (`kache_planner_gc_*`, see `gc.rs`).
    pub gc: crate::gc::GcMetrics,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kache_planner");
        let requests = Family::<OutcomeLabel, Counter>::default();
        for outcome in OUTCOMES {
            let _ = requests.get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            });
        }
        registry.register("requests", "Plan requests by outcome", requests.clone());
        let latency = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "plan_duration_seconds",
            "Time to answer a plan request",
            latency.clone(),
        );
        let candidates =
            Histogram::new([0.0, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0]);
        registry.register(
            "plan_candidates",
            "Candidates per executed plan",
            candidates.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 when the database is open and leadership is held",
            ready.clone(),
        );
        let artifacts = Gauge::default();
        registry.register(
            "state_artifacts",
            "Artifacts known to the planner",
            artifacts.clone(),
        );
        let crates = Gauge::default();
        registry.register(
            "state_crates",
            "Crates known to the planner",
            crates.clone(),
        );
        let ingested = Family::<KindLabel, Counter>::default();
        for kind in [
            "manifest",
            "shard",
            "seed",
            "bucket_manifest",
            "bucket_shard",
        ] {
            let _ = ingested.get_or_create(&KindLabel {
                kind: kind.to_string(),
            });
        }
        registry.register(
            "ingested_documents",
            "Documents ingested by kind",
            ingested.clone(),
        );
        let scan_skipped = Counter::default();
        registry.register(
            "scan_skipped_documents",
            "Bucket documents skipped as malformed or hostile",
            scan_skipped.clone(),
        );
        let refused_documents = Family::<KindLabel, Counter>::default();
        registry.register(
            "refused_documents",
            "Manifests and shards refused for their signature, by reason",
            refused_documents.clone(),
        );
        let scan_errors = Counter::default();
        registry.register(
            "scan_errors",
            "Bucket scans that failed",
            scan_errors.clone(),
        );
        let evicted_artifacts = Counter::default();
        registry.register(
            "evicted_artifacts",
            "Artifacts dropped (least recently seen first) to stay within the state bound",
            evicted_artifacts.clone(),
        );
        let evicted_sightings = Counter::default();
        registry.register(
            "evicted_sightings",
            "Sightings dropped with their artifacts or on their own bound",
            evicted_sightings.clone(),
        );
        let max_artifacts = Gauge::default();
        registry.register(
            "state_max_artifacts",
            "The state bound: most artifacts kept (KACHE_PLANNER_MAX_ARTIFACTS)",
            max_artifacts.clone(),
        );
        let feedback_candidates = Family::<FeedbackLabel, Counter>::default();
        let feedback_bytes = Family::<FeedbackLabel, Counter>::default();
        for source in SOURCES {
            for result in FEEDBACK_RESULTS {
                let label = FeedbackLabel {
                    source: source.to_string(),
                    result: result.to_string(),
                };
                let _ = feedback_candidates.get_or_create(&label);
                let _ = feedback_bytes.get_or_create(&label);
            }
        }
        registry.register(
            "feedback_candidates",
            "Plan candidates reported by clients, by planner source and result \
             (used, unused: downloaded and never used, late: arrived after the unit needed it)",
            feedback_candidates.clone(),
        );
        registry.register(
            "feedback_bytes",
            "Bytes of reported plan candidates, by planner source and result",
            feedback_bytes.clone(),
        );
        let feedback_reports = Family::<OutcomeLabel, Counter>::default();
        for outcome in ["ok", "unknown_plan", "bad_request", "unauthorized"] {
            let _ = feedback_reports.get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            });
        }
        registry.register(
            "feedback_reports",
            "Plan feedback reports by outcome",
            feedback_reports.clone(),
        );
        let gc = crate::gc::GcMetrics::register(&mut registry);
        Self {
            gc,
            registry,
            feedback_candidates,
            feedback_bytes,
            feedback_reports,
            requests,
            latency,
            candidates,
            ready,
            artifacts,
            crates,
            ingested,
            scan_skipped,
            refused_documents,
            scan_errors,
            evicted_artifacts,
            evicted_sightings,
            max_artifacts,
        }
    }

    /// Counts one plan request with `outcome`.
    pub fn count(&self, outcome: &str) {
        self.requests
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
