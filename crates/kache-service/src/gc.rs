//! Garbage collection of the bucket: it stays bounded without deleting what
//! builds use (ARCHITECTURE.md, "Collecting the bucket").
//!
//! One collection lists `{prefix}/v3/` (entry packs, entry manifests,
//! pre-key markers) and `{prefix}/_manifests/` (build manifests, shards),
//! then decides per entry (a crate name and cache key):
//!
//! - kept, `referenced`: a build manifest or shard younger than the keep
//!   window (`--gc-keep-days`) names its key, and the planner accepts that
//!   document (with trusted keys, only a trusted signature for that very
//!   object counts; an unsigned document neither protects nor condemns);
//! - kept, `used`: plan feedback reported the key used within the window;
//! - kept, `young`: one of its objects changed within the grace period
//!   (`--gc-grace`): an upload in progress, whose manifest or build manifest
//!   is still to come;
//! - deleted, `orphan_pack` / `orphan_marker` / `broken_entry`: an
//!   interrupted upload past the grace period (a pack or marker without its
//!   entry manifest, a manifest without its pack);
//! - otherwise deleted, `unreferenced`, oldest day first and, within a day,
//!   least compile time saved per byte first; with `--gc-max-bytes` only
//!   until the bucket is within it (the rest kept, `under_budget`).
//!
//! Documents older than the window are deleted too (`stale_document`).
//! An entry goes manifest first, then pack, then markers, so no reader sees
//! a manifest whose pack is gone. Just before a crate's entries go, its
//! objects are listed again; an entry any of whose objects changed since
//! the first listing is kept (`changed`). A failed delete (a read-only key)
//! ends the run with the store's one-line error.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kache_core::manifest::{BuildManifest, Shard};
use kache_remote::storage::ObjectInfo;
use kache_remote::{Layout, RemoteError, Storage};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::http::App;
use crate::signed::Documents;

/// `--gc-keep-days` by default.
pub const DEFAULT_KEEP_DAYS: u64 = 14;
/// `--gc-grace` (seconds) by default: longer than a CI build, so an entry
/// uploaded early in a build is still young when its build manifest lands.
pub const DEFAULT_GRACE_SECS: u64 = 6 * 3600;
const DAY_MS: u64 = 86_400_000;
/// Largest document read from the bucket (as the scan).
const MAX_DOCUMENT_BYTES: u64 = 64 << 20;
/// Deletions listed in a report; the counts cover every one.
const MAX_LISTED: usize = 1000;

/// What a collection keeps and how far it goes.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub keep_days: u64,
    pub grace_secs: u64,
    /// The bucket's bound (bytes under the prefix); none deletes every
    /// unprotected entry.
    pub max_bytes: Option<u64>,
}

/// A bucket the planner collects.
pub struct Collector {
    pub storage: Box<dyn Storage>,
    pub layout: Layout,
    pub documents: Documents,
    pub settings: Settings,
}

/// Bytes and entries under the prefix.
#[derive(Debug, Default, Clone, Copy, Serialize, JsonSchema)]
pub struct Totals {
    pub bytes: u64,
    pub entries: u64,
}

/// Entries (or documents) and their bytes.
#[derive(Debug, Default, Clone, Copy, Serialize, JsonSchema)]
pub struct Tally {
    pub entries: u64,
    pub bytes: u64,
}

/// One deletion (made, or in a dry run to be made).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Deletion {
    pub reason: String,
    /// The entry manifest, pack, marker or document, the first that goes.
    pub object: String,
    pub bytes: u64,
}

/// What one collection decided (`POST /v2/gc`, `kache-service gc`).
#[derive(Debug, Default, Clone, Serialize, JsonSchema)]
pub struct Report {
    pub dry_run: bool,
    pub before: Totals,
    /// After the deletions (a dry run: had they been made).
    pub after: Totals,
    /// By reason: `unreferenced`, `orphan_pack`, `orphan_marker`,
    /// `broken_entry`, `stale_document`.
    pub deleted: BTreeMap<String, Tally>,
    /// Entries kept, by reason: `referenced`, `used`, `young`,
    /// `under_budget`, `changed`.
    pub kept: BTreeMap<String, u64>,
    /// Documents that protect nothing: refused for their signature (trusted
    /// keys set) or malformed.
    pub ignored_documents: u64,
    pub duration_ms: u64,
    /// The first deletions, at most 1000.
    pub deletions: Vec<Deletion>,
}

#[derive(Debug, Default)]
struct Entry {
    manifest: Option<ObjectInfo>,
    pack: Option<ObjectInfo>,
    markers: Vec<ObjectInfo>,
}

impl Entry {
    fn bytes(&self) -> u64 {
        self.objects().map(|o| o.size).sum()
    }
    fn newest_ms(&self) -> u64 {
        self.objects().map(|o| o.modified_ms).max().unwrap_or(0)
    }
    /// Deletion order: the manifest (the commit marker) first.
    fn objects(&self) -> impl Iterator<Item = &ObjectInfo> {
        self.manifest
            .iter()
            .chain(self.pack.iter())
            .chain(self.markers.iter())
    }
}

/// What an object under `{prefix}/v3/` is: `(crate, key, kind)`.
#[derive(Debug, PartialEq, Eq)]
enum Part {
    Manifest,
    Pack,
    Marker,
}

fn classify_entry_object(v3: &str, name: &str) -> Option<(String, String, Part)> {
    let rest = name.strip_prefix(v3)?.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    let (crate_name, key, part) = match parts.as_slice() {
        ["manifests", c, file] => (*c, file.strip_suffix(".json")?, Part::Manifest),
        ["packs", c, file] => (*c, file.strip_suffix(".tar.zst")?, Part::Pack),
        ["prekeys", c, _pre, key] => (*c, *key, Part::Marker),
        _ => return None,
    };
    (kache_remote::layout::is_valid_crate_name(crate_name)
        && kache_remote::layout::is_valid_key(key))
    .then(|| (crate_name.to_string(), key.to_string(), part))
}

/// `{root}/{key}.json` is a build manifest, `{root}/v3/{ns}/shards/{hash}.json` a shard.
enum Document {
    Manifest,
    Shard { namespace: String, hash: String },
}

fn classify_document(root: &str, name: &str) -> Option<Document> {
    let stem = name
        .strip_prefix(root)?
        .strip_prefix('/')?
        .strip_suffix(".json")?;
    match stem.split('/').collect::<Vec<_>>().as_slice() {
        [_] => Some(Document::Manifest),
        ["v3", namespace, "shards", hash] => Some(Document::Shard {
            namespace: namespace.to_string(),
            hash: hash.to_string(),
        }),
        _ => None,
    }
}

/// Milliseconds since the epoch of an RFC 3339 time (`2026-11-25T10:00:00Z`,
/// fractions and offsets allowed).
fn rfc3339_ms(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &text[19..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        let first: String = frac[..digits]
            .chars()
            .chain("000".chars())
            .take(3)
            .collect();
        millis = first.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            sign * (rest.get(1..3)?.parse::<i64>().ok()? * 60
                + rest.get(4..6)?.parse::<i64>().ok()?)
        }
        _ => return None,
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms = ((days * 86_400 + h * 3600 + mi * 60 + s - offset_min * 60) * 1000) + millis;
    u64::try_from(ms).ok()
}

/// The collection's clock: `KACHE_PLANNER_GC_NOW_MS` (a simulation's day,
/// `bench/bucket-gc.sh`, over a directory whose files it dated) or the
/// system's.
fn now_ms() -> u64 {
    if let Some(ms) = std::env::var("KACHE_PLANNER_GC_NOW_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return ms;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The parent "directory" of a layout name built with a placeholder.
fn parent(name: &str) -> String {
    name.rsplit_once('/')
        .map(|(dir, _)| dir.to_string())
        .unwrap_or_default()
}

impl Report {
    fn delete(&mut self, reason: &str, object: &str, bytes: u64) {
        let tally = self.deleted.entry(reason.to_string()).or_default();
        tally.entries += 1;
        tally.bytes += bytes;
        if self.deletions.len() < MAX_LISTED {
            self.deletions.push(Deletion {
                reason: reason.to_string(),
                object: object.to_string(),
                bytes,
            });
        }
    }
    fn keep(&mut self, reason: &str) {
        *self.kept.entry(reason.to_string()).or_default() += 1;
    }
}

impl Collector {
    /// One collection. `usage(keys, since_ms)` answers, for each of the
    /// bucket's keys, whether plan feedback reported it used since `since_ms`
    /// and its compile time in ms (0: unknown).
    pub async fn collect(
        &self,
        usage: impl AsyncFnOnce(Vec<String>, u64) -> Vec<(bool, u64)>,
        dry_run: bool,
    ) -> Result<Report, RemoteError> {
        let started = Instant::now();
        let started_ms = now_ms();
        let keep_cutoff = started_ms.saturating_sub(self.settings.keep_days * DAY_MS);
        let young_cutoff = started_ms.saturating_sub(self.settings.grace_secs * 1000);
        let mut report = Report {
            dry_run,
            ..Report::default()
        };

        let v3 = parent(&self.layout.manifests_root());
        let mut entries: BTreeMap<(String, String), Entry> = BTreeMap::new();
        let mut total = 0u64;
        for object in self.storage.list_info(&v3).await? {
            total += object.size;
            let Some((crate_name, key, part)) = classify_entry_object(&v3, &object.name) else {
                continue;
            };
            let entry = entries.entry((crate_name, key)).or_default();
            match part {
                Part::Manifest => entry.manifest = Some(object),
                Part::Pack => entry.pack = Some(object),
                Part::Marker => entry.markers.push(object),
            }
        }

        // Documents: what the young, accepted ones reference is protected.
        let root = parent(&self.layout.build_manifest("x"));
        let mut referenced: HashSet<String> = HashSet::new();
        let mut stale = Vec::new();
        for object in self.storage.list_info(&root).await? {
            total += object.size;
            let Some(kind) = classify_document(&root, &object.name) else {
                continue;
            };
            if object.modified_ms < keep_cutoff {
                stale.push(object);
                continue;
            }
            let body = match self
                .storage
                .get_bounded(&object.name, MAX_DOCUMENT_BYTES)
                .await
            {
                Ok(Some(body)) => body,
                Ok(None) => continue,
                Err(RemoteError::TooLarge { .. }) => {
                    report.ignored_documents += 1;
                    continue;
                }
                Err(err) => return Err(err),
            };
            let keys: Option<Vec<String>> = match kind {
                Document::Manifest => serde_json::from_slice::<BuildManifest>(&body)
                    .ok()
                    .filter(|m| self.documents.manifest(m, Some(&object.name)).is_ok())
                    .map(|m| {
                        // Its `created` when older than the upload: a copy
                        // of an old manifest is as old as its builds.
                        if rfc3339_ms(&m.created).is_some_and(|t| t < keep_cutoff) {
                            return Vec::new();
                        }
                        m.entries.into_iter().map(|e| e.cache_key).collect()
                    }),
                Document::Shard { namespace, hash } => serde_json::from_slice::<Shard>(&body)
                    .ok()
                    .filter(|s| {
                        self.documents
                            .shard(s, &namespace, &hash, Some(&object.name))
                            .is_ok()
                    })
                    .map(|s| s.entries.into_iter().map(|e| e.cache_key).collect()),
            };
            match keys {
                Some(keys) => referenced.extend(keys),
                None => report.ignored_documents += 1,
            }
        }
        report.before = Totals {
            bytes: total,
            entries: entries.len() as u64,
        };
        let mut after = total;
        for object in &stale {
            report.delete("stale_document", &object.name, object.size);
            after -= object.size;
        }

        let keys: Vec<String> = entries.keys().map(|(_, key)| key.clone()).collect();
        let usage = usage(keys, keep_cutoff).await;
        let mut candidates = Vec::new();
        let mut doomed: Vec<(&'static str, &(String, String), &Entry)> = Vec::new();
        for ((id, entry), (used, compile_ms)) in entries.iter().zip(usage) {
            let bytes = entry.bytes();
            if referenced.contains(&id.1) {
                report.keep("referenced");
            } else if used {
                report.keep("used");
            } else if entry.newest_ms() >= young_cutoff {
                report.keep("young");
            } else if entry.manifest.is_none() {
                let reason = if entry.pack.is_some() {
                    "orphan_pack"
                } else {
                    "orphan_marker"
                };
                doomed.push((reason, id, entry));
                after -= bytes;
            } else if entry.pack.is_none() {
                doomed.push(("broken_entry", id, entry));
                after -= bytes;
            } else {
                let newest = entry.newest_ms();
                // Compile time saved per byte, in ms per MiB.
                let value = (compile_ms.saturating_add(1) << 20) / bytes.max(1);
                candidates.push(((newest / DAY_MS, value, newest), id, entry));
            }
        }
        candidates.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        for (_, id, entry) in candidates {
            if self.settings.max_bytes.is_some_and(|max| after <= max) {
                report.keep("under_budget");
            } else {
                doomed.push(("unreferenced", id, entry));
                after -= entry.bytes();
            }
        }

        if !dry_run {
            for object in &stale {
                self.storage.delete(&object.name).await?;
            }
        }
        // By crate: one more listing each, just before its entries go.
        doomed.sort_by(|a, b| a.1.cmp(b.1));
        let mut at = 0;
        while at < doomed.len() {
            let crate_name = &doomed[at].1.0;
            let end = at + doomed[at..].partition_point(|d| &d.1.0 == crate_name);
            let now = if dry_run {
                None
            } else {
                Some(self.crate_objects(crate_name).await?)
            };
            for (reason, id, entry) in &doomed[at..end] {
                if let Some(now) = &now {
                    let listed: Vec<(&str, u64)> = entry
                        .objects()
                        .map(|o| (o.name.as_str(), o.modified_ms))
                        .collect();
                    let current: Vec<(&str, u64)> = now
                        .get(&id.1)
                        .map(|objects| {
                            objects
                                .iter()
                                .map(|o| (o.name.as_str(), o.modified_ms))
                                .collect()
                        })
                        .unwrap_or_default();
                    if !same_objects(&listed, &current) {
                        report.keep("changed");
                        after += entry.bytes();
                        continue;
                    }
                }
                let first = entry
                    .objects()
                    .next()
                    .map(|o| o.name.as_str())
                    .unwrap_or("");
                report.delete(reason, first, entry.bytes());
                if !dry_run {
                    for object in entry.objects() {
                        self.storage.delete(&object.name).await?;
                    }
                }
            }
            at = end;
        }
        let deleted_entries =
            doomed.len() as u64 - report.kept.get("changed").copied().unwrap_or(0);
        report.after = Totals {
            bytes: after,
            entries: report.before.entries - deleted_entries,
        };
        report.duration_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// A crate's entry objects as they are now, by cache key.
    async fn crate_objects(
        &self,
        crate_name: &str,
    ) -> Result<HashMap<String, Vec<ObjectInfo>>, RemoteError> {
        let v3 = parent(&self.layout.manifests_root());
        let mut by_key: HashMap<String, Vec<ObjectInfo>> = HashMap::new();
        for dir in [
            self.layout.crate_manifests(crate_name),
            parent(&self.layout.pack(crate_name, "x")),
            format!("{v3}/prekeys/{crate_name}"),
        ] {
            for object in self.storage.list_info(&dir).await? {
                if let Some((c, key, _)) = classify_entry_object(&v3, &object.name)
                    && c == crate_name
                {
                    by_key.entry(key).or_default().push(object);
                }
            }
        }
        Ok(by_key)
    }
}

/// Whether two listings of one entry name the same objects at the same times.
fn same_objects(a: &[(&str, u64)], b: &[(&str, u64)]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

/// The collections' metrics (`kache_planner_gc_*`).
pub struct GcMetrics {
    pub runs: Family<OutcomeLabel, Counter>,
    pub bucket_bytes: Family<WhenLabel, Gauge>,
    pub bucket_entries: Family<WhenLabel, Gauge>,
    pub deleted_entries: Family<ReasonLabel, Counter>,
    pub deleted_bytes: Family<ReasonLabel, Counter>,
    pub kept_entries: Family<ReasonLabel, Gauge>,
    pub duration_ms: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WhenLabel {
    pub when: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

impl GcMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            runs: Family::default(),
            bucket_bytes: Family::default(),
            bucket_entries: Family::default(),
            deleted_entries: Family::default(),
            deleted_bytes: Family::default(),
            kept_entries: Family::default(),
            duration_ms: Gauge::default(),
        };
        for outcome in ["ok", "dry_run", "failed"] {
            let _ = metrics.runs.get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            });
        }
        registry.register(
            "gc_runs",
            "Bucket collections by outcome (ok, dry_run, failed)",
            metrics.runs.clone(),
        );
        registry.register(
            "gc_bucket_bytes",
            "Bytes under the prefix at the last collection, before and after",
            metrics.bucket_bytes.clone(),
        );
        registry.register(
            "gc_bucket_entries",
            "Entries under the prefix at the last collection, before and after",
            metrics.bucket_entries.clone(),
        );
        registry.register(
            "gc_deleted_entries",
            "Entries and documents deleted by collections, by reason",
            metrics.deleted_entries.clone(),
        );
        registry.register(
            "gc_deleted_bytes",
            "Bytes deleted by collections, by reason",
            metrics.deleted_bytes.clone(),
        );
        registry.register(
            "gc_kept_entries",
            "Entries the last collection kept, by reason",
            metrics.kept_entries.clone(),
        );
        registry.register(
            "gc_duration_milliseconds",
            "How long the last collection took",
            metrics.duration_ms.clone(),
        );
        metrics
    }

    fn record(&self, outcome: &str, report: Option<&Report>) {
        self.runs
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
        let Some(report) = report.filter(|r| !r.dry_run) else {
            return;
        };
        for (when, totals) in [("before", report.before), ("after", report.after)] {
            let label = WhenLabel { when: when.into() };
            self.bucket_bytes
                .get_or_create(&label)
                .set(totals.bytes as i64);
            self.bucket_entries
                .get_or_create(&label)
                .set(totals.entries as i64);
        }
        for (reason, tally) in &report.deleted {
            let label = ReasonLabel {
                reason: reason.clone(),
            };
            self.deleted_entries
                .get_or_create(&label)
                .inc_by(tally.entries);
            self.deleted_bytes.get_or_create(&label).inc_by(tally.bytes);
        }
        self.kept_entries.clear();
        for (reason, count) in &report.kept {
            self.kept_entries
                .get_or_create(&ReasonLabel {
                    reason: reason.clone(),
                })
                .set(*count as i64);
        }
        self.duration_ms.set(report.duration_ms as i64);
    }
}

/// One collection at a time (the schedule, the route).
static RUNNING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Why a collection did not run.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("a collection is already running")]
    Busy,
    #[error("not ready: not the leader, or still loading")]
    NotReady,
    #[error("collecting the bucket failed: {0}")]
    Remote(#[from] RemoteError),
}

/// One collection for the service (schedule, route, CLI): the planner's
/// state answers what feedback says; metrics and the log record it.
pub async fn collect(app: &App, collector: &Collector, dry_run: bool) -> Result<Report, Failure> {
    let _running = RUNNING.try_lock().map_err(|_| Failure::Busy)?;
    if app.backend.read().await.is_none() {
        return Err(Failure::NotReady);
    }
    let usage = async |keys: Vec<String>, since_ms: u64| {
        let guard = app.backend.read().await;
        match guard.as_ref() {
            Some(backend) => {
                let state = backend.state.read().await;
                keys.iter()
                    .map(|key| {
                        let used = state
                            .feedback_of(key)
                            .is_some_and(|f| f.last_used_ms >= since_ms);
                        let compile_ms = state.artifact(key).map_or(0, |a| a.compile_time_ms);
                        (used, compile_ms)
                    })
                    .collect()
            }
            // Leadership lost meanwhile: protect everything.
            None => vec![(true, 0); keys.len()],
        }
    };
    match collector.collect(usage, dry_run).await {
        Ok(report) => {
            let outcome = if dry_run { "dry_run" } else { "ok" };
            app.metrics.gc.record(outcome, Some(&report));
            let deleted: u64 = report.deleted.values().map(|t| t.entries).sum();
            info!(
                dry_run,
                before_bytes = report.before.bytes,
                after_bytes = report.after.bytes,
                deleted,
                duration_ms = report.duration_ms,
                "bucket collected"
            );
            Ok(report)
        }
        Err(err) => {
            app.metrics.gc.record("failed", None);
            Err(Failure::Remote(err))
        }
    }
}

/// Collects every `interval` until `shutdown` turns true; only the lease
/// holder (a follower has no backend) collects.
pub async fn run(
    app: Arc<App>,
    collector: Arc<Collector>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    info!(
        location = collector.storage.location(),
        keep_days = collector.settings.keep_days,
        max_bytes = collector.settings.max_bytes,
        "collecting the bucket every {}s",
        interval.as_secs()
    );
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        if app.is_ready() {
            match collect(&app, &collector, false).await {
                Ok(_) | Err(Failure::NotReady) => {}
                Err(err) => warn!("{err}"),
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct GcQuery {
    #[serde(default)]
    dry_run: bool,
}

/// `POST /v2/gc?dry_run=true|false`: one collection now, with the ingest
/// scope (unrestricted, as for build manifests: it touches every namespace).
pub async fn route(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    query: Result<Query<GcQuery>, QueryRejection>,
) -> Response {
    let error = |status: StatusCode, message: String| {
        (
            status,
            axum::Json(crate::api::ErrorReply { error: message }),
        )
            .into_response()
    };
    if let Err(denied) = app.auth.ingest(&headers, None) {
        return match denied {
            crate::auth::Denied::Unauthenticated => error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token".into(),
            ),
            crate::auth::Denied::Forbidden(message) => error(StatusCode::FORBIDDEN, message),
        };
    }
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    let Some(collector) = app.gc.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "no bucket is configured to collect".into(),
        );
    };
    match collect(&app, &collector, query.dry_run).await {
        Ok(report) => axum::Json(report).into_response(),
        Err(Failure::Busy) => error(StatusCode::CONFLICT, Failure::Busy.to_string()),
        Err(Failure::NotReady) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            Failure::NotReady.to_string(),
        ),
        Err(err) => error(StatusCode::BAD_GATEWAY, err.to_string()),
    }
}

/// The bucket the configuration names, to collect.
pub fn collector(config: &crate::config::Config) -> anyhow::Result<Option<Arc<Collector>>> {
    let Some(backend) = config.remote() else {
        return Ok(None);
    };
    let storage = kache_remote::open(&backend)
        .map_err(|err| anyhow::anyhow!("opening the bucket to collect: {err}"))?;
    Ok(Some(Arc::new(Collector {
        storage,
        layout: Layout::new(&config.s3_prefix),
        documents: Documents::new(config.trusted_keys.clone(), &config.s3_prefix),
        settings: config.gc_settings(),
    })))
}

/// `kache-service gc [--dry-run]`: one collection with the database at
/// `--db-path` (its plan feedback protects keys), printed.
pub async fn cli(config: crate::config::Config, dry_run: bool) -> anyhow::Result<()> {
    let Some(collector) = collector(&config)? else {
        anyhow::bail!("no bucket to collect: set KACHE_S3_BUCKET (or --remote-dir)");
    };
    let limits = crate::ingest::Limits::new(config.max_artifacts);
    let mut app = App::new(
        config.planner_name.clone(),
        crate::auth::Auth::new(None, None, config.ingest_namespaces.clone()),
        limits,
    );
    app.documents = collector.documents.clone();
    let backend = crate::open_backend(&config.db_path, None, &app).await?;
    app.set_backend(Some(backend)).await;
    let result = collect(&app, &collector, dry_run).await;
    app.set_backend(None).await;
    print(&result?);
    Ok(())
}

/// Prints a report as `kache-service gc` does: one line per deletion, then
/// the totals.
pub fn print(report: &Report) {
    let verb = if report.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    for deletion in &report.deletions {
        println!(
            "{verb} {} {} ({} bytes)",
            deletion.reason, deletion.object, deletion.bytes
        );
    }
    for (reason, tally) in &report.deleted {
        println!("{verb} {reason}: {} ({} bytes)", tally.entries, tally.bytes);
    }
    for (reason, count) in &report.kept {
        println!("kept {reason}: {count}");
    }
    println!(
        "bucket: {} bytes in {} entries before, {} bytes in {} entries after ({} ms)",
        report.before.bytes,
        report.before.entries,
        report.after.bytes,
        report.after.entries,
        report.duration_ms
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn entry_objects_are_told_apart_and_nothing_else_is_touched() {
        let layout = Layout::new("artifacts");
        let v3 = parent(&layout.manifests_root());
        assert_eq!(v3, "artifacts/v3");
        assert_eq!(
            classify_entry_object(&v3, &layout.pack("serde", KEY)),
            Some(("serde".into(), KEY.into(), Part::Pack))
        );
        assert_eq!(
            classify_entry_object(&v3, &layout.entry_manifest("zstd-sys:zstd.c", KEY)),
            Some(("zstd-sys:zstd.c".into(), KEY.into(), Part::Manifest))
        );
        assert_eq!(
            classify_entry_object(&v3, &layout.prekey_marker("serde", "pre", KEY)),
            Some(("serde".into(), KEY.into(), Part::Marker))
        );
        for other in [
            "artifacts/v3/packs/serde/short.tar.zst",
            "artifacts/v3/packs/../x/0123.tar.zst",
            "artifacts/v3/notes.txt",
            "other/v3/packs/serde/x.tar.zst",
        ] {
            assert_eq!(classify_entry_object(&v3, other), None, "{other}");
        }
    }

    /// Writes `name` under `root`, dated `age` ago.
    fn put_old(root: &std::path::Path, name: &str, body: &[u8], age: Duration) {
        let path = root.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, body).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(std::time::SystemTime::now() - age)
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_entry_that_changes_between_the_listing_and_its_deletion_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let layout = Layout::new("artifacts");
        let day = Duration::from_secs(86_400);
        let (orphan, reused, garbage) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        // An interrupted upload, an old unreferenced entry, another one.
        put_old(root, &layout.pack("serde", &orphan), b"pack", day);
        for key in [&reused, &garbage] {
            put_old(root, &layout.pack("serde", key), b"pack", day);
            put_old(root, &layout.entry_manifest("serde", key), b"{}", day);
        }
        let collector = Collector {
            storage: kache_remote::open(&kache_remote::Backend::Fs(root.to_path_buf())).unwrap(),
            layout: layout.clone(),
            documents: Documents::new(Default::default(), "artifacts"),
            settings: Settings {
                keep_days: 14,
                grace_secs: 3600,
                max_bytes: None,
            },
        };
        // While the collection decides, the orphan's manifest lands and the
        // old entry is uploaded again.
        let usage = async |keys: Vec<String>, _| {
            std::fs::write(root.join(layout.entry_manifest("serde", &orphan)), b"{}").unwrap();
            std::fs::write(root.join(layout.pack("serde", &reused)), b"pack2").unwrap();
            vec![(false, 0); keys.len()]
        };
        let report = collector.collect(usage, false).await.unwrap();
        assert_eq!(report.kept.get("changed"), Some(&2), "{report:?}");
        assert_eq!(report.deleted["unreferenced"].entries, 1, "{report:?}");
        for key in [&orphan, &reused] {
            assert!(root.join(layout.pack("serde", key)).exists());
            assert!(root.join(layout.entry_manifest("serde", key)).exists());
        }
        assert!(!root.join(layout.pack("serde", &garbage)).exists());
        assert!(!root.join(layout.entry_manifest("serde", &garbage)).exists());
        assert_eq!(report.after.entries, 2);
    }

    #[test]
    fn rfc3339_times_parse_to_the_epoch_milliseconds() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_ms("2026-11-25T10:00:00Z"), Some(1_795_600_800_000));
        assert_eq!(
            rfc3339_ms("2026-11-25T11:00:00.250+01:00"),
            Some(1_795_600_800_250)
        );
        assert_eq!(rfc3339_ms("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-25T10:00:00",
        ] {
            assert_eq!(rfc3339_ms(bad), None, "{bad}");
        }
    }
}
