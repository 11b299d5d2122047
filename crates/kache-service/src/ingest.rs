//! The one path by which state changes: observations from a build manifest,
//! a `Cargo.lock` shard or a seed snapshot are written to the database and
//! then applied to the in-memory state. The HTTP ingest routes, the seed
//! import and the bucket reader (`scan.rs`) all call [`Backend::ingest`].
//!
//! Locking: plans read [`Backend::state`]. A change is computed under a read
//! lock, written to the database under no state lock at all, and applied to
//! memory in slices of [`APPLY_SLICE`] records, each under a short write
//! lock, so plans keep answering while a large ingest or a bucket scan is
//! being stored. Changers (ingest, feedback, eviction) take
//! [`Backend::writer`] first, one at a time, so what one computed is still
//! true when it is applied.
//!
//! Bound: at most `--max-artifacts` artifacts (and [`SIGHTINGS_PER_ARTIFACT`]
//! times as many sightings) are kept. Past it, the least recently seen go
//! first (least seen first among those of the same hour), with their
//! sightings and feedback, from the database and from memory (see
//! [`State::eviction`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use kache_core::manifest::{BuildManifest, Identity, MANIFEST_VERSION, Shard};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use crate::db::Database;
use crate::state::{Artifact, Sighting, SightingKind, State};

/// `--max-artifacts` when not set. Measured here (release build, a flood of
/// 8 MiB manifests of 50,000 new artifacts each, 600,000 in all): resident
/// memory peaks at about 0.7 GiB with this bound and 1.1 GiB with twice
/// it; the chart's memory limit (1.5 GiB) covers this bound.
pub const DEFAULT_MAX_ARTIFACTS: u64 = 100_000;

/// Sightings kept per artifact allowed (one artifact can be seen in many
/// namespaces and shards; their number is bounded too).
pub const SIGHTINGS_PER_ARTIFACT: usize = 8;

/// Records applied to memory under one hold of the state's write lock.
pub const APPLY_SLICE: usize = 1_024;

/// How much state a backend keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_artifacts: usize,
    pub max_sightings: usize,
}

impl Limits {
    pub fn new(max_artifacts: u64) -> Self {
        let max_artifacts = usize::try_from(max_artifacts).unwrap_or(usize::MAX).max(1);
        Self {
            max_artifacts,
            max_sightings: max_artifacts.saturating_mul(SIGHTINGS_PER_ARTIFACT),
        }
    }
}

/// The leader's database and state, always changed together.
pub struct Backend {
    db: Database,
    /// What plans read; written only to apply what is already stored.
    pub state: RwLock<State>,
    /// Held by whoever changes the state (and the database), for the whole
    /// change.
    writer: Mutex<()>,
    /// Bucket documents already ingested: object name → version.
    scanned: std::sync::Mutex<HashMap<String, String>>,
    limits: Limits,
}

/// One fact to record: an artifact seen in a context.
#[derive(Debug, Clone)]
pub struct Observation {
    pub kind: SightingKind,
    pub namespace: String,
    pub scope: String,
    pub cache_key: String,
    pub crate_name: String,
    pub compile_time_ms: u64,
    pub size: u64,
    /// The document's build identity, if it had one.
    pub identity: Option<Identity>,
}

/// How an ingest counts what it has already seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A new observation: counts go up and the time moves.
    Count,
    /// A snapshot import: only what is missing is added, so importing the
    /// same snapshot twice changes nothing.
    Idempotent,
}

/// What an ingest changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct Summary {
    pub observations: usize,
    pub new_artifacts: usize,
    pub new_sightings: usize,
    /// Artifacts dropped (with their sightings) to stay within
    /// `KACHE_PLANNER_MAX_ARTIFACTS`.
    pub evicted_artifacts: usize,
    /// Sightings dropped, with their artifacts or on their own bound.
    pub evicted_sightings: usize,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Records to write, each marked new (never stored) or not.
struct Change {
    artifacts: Vec<(bool, Artifact)>,
    sightings: Vec<(bool, Sighting)>,
    summary: Summary,
}

impl Backend {
    /// Opens the database and loads its state, evicting what is over
    /// `limits` (a lowered bound applies at the next start). Returns the
    /// backend and what was evicted.
    pub async fn open(path: &Path, limits: Limits) -> Result<(Self, Summary)> {
        let db = Database::open(path).await?;
        let records = db.load().await?;
        let state = tokio::task::spawn_blocking(move || State::from_records(records))
            .await
            .context("building the state")?;
        let scanned = db
            .scanned()
            .await?
            .into_iter()
            .map(|s| (s.name, s.version))
            .collect();
        let backend = Self {
            db,
            state: RwLock::new(state),
            writer: Mutex::new(()),
            scanned: std::sync::Mutex::new(scanned),
            limits,
        };
        let mut summary = Summary::default();
        {
            let _writer = backend.writer.lock().await;
            backend.enforce_bound(&mut summary).await?;
        }
        Ok((backend, summary))
    }

    /// Records `observations`: database first, then memory; then evicts
    /// what is over the bound.
    pub async fn ingest(&self, observations: &[Observation], mode: Mode) -> Result<Summary> {
        let _writer = self.writer.lock().await;
        let change = {
            let state = self.state.read().await;
            // Long and CPU-bound: the worker's other tasks move elsewhere.
            tokio::task::block_in_place(|| compute(&state, observations, mode))
        };
        // No state lock here: plans go on while the database writes.
        let started = std::time::Instant::now();
        let artifacts = Arc::new(change.artifacts);
        let sightings = Arc::new(change.sightings);
        self.db
            .write_shared(artifacts.clone(), sightings.clone())
            .await?;
        tracing::debug!(
            artifacts = artifacts.len(),
            sightings = sightings.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "stored"
        );
        let mut summary = change.summary;
        let artifacts = Arc::try_unwrap(artifacts).unwrap_or_else(|shared| (*shared).clone());
        let sightings = Arc::try_unwrap(sightings).unwrap_or_else(|shared| (*shared).clone());
        let mut artifacts = artifacts.into_iter().map(|(_, a)| a).peekable();
        while artifacts.peek().is_some() {
            let mut state = self.state.write().await;
            state.batch(|state| {
                for artifact in artifacts.by_ref().take(APPLY_SLICE) {
                    state.put_artifact(artifact);
                }
            });
        }
        let mut sightings = sightings.into_iter().map(|(_, s)| s).peekable();
        while sightings.peek().is_some() {
            let mut state = self.state.write().await;
            state.batch(|state| {
                for sighting in sightings.by_ref().take(APPLY_SLICE) {
                    state.put_sighting(sighting);
                }
            });
        }
        self.enforce_bound(&mut summary).await?;
        Ok(summary)
    }

    /// Drops what is over the bound, database first. The new state is
    /// built beside the old one, which plans read meanwhile, and swapped in
    /// at once. The caller holds `writer`.
    async fn enforce_bound(&self, summary: &mut Summary) -> Result<()> {
        let Limits {
            max_artifacts,
            max_sightings,
        } = self.limits;
        let (eviction, kept) = {
            let state = self.state.read().await;
            if !state.over_bound(max_artifacts, max_sightings) {
                return Ok(());
            }
            // Sorting and copying the whole state: CPU-bound, so the
            // worker's other tasks (plans) move elsewhere meanwhile.
            let chosen = tokio::task::block_in_place(|| {
                let eviction = state.eviction(max_artifacts, max_sightings);
                let kept = (!eviction.is_empty()).then(|| state.kept(&eviction));
                (eviction, kept)
            });
            match chosen {
                (eviction, Some(kept)) => (eviction, kept),
                (_, None) => return Ok(()),
            }
        };
        let started = std::time::Instant::now();
        let eviction = Arc::new(eviction);
        self.db.delete_shared(eviction.clone()).await?;
        let deleted_ms = started.elapsed().as_millis() as u64;
        let rebuilt = tokio::task::spawn_blocking(move || State::from_records(kept))
            .await
            .context("rebuilding the state after an eviction")?;
        let old = std::mem::replace(&mut *self.state.write().await, rebuilt);
        // Freeing a whole state takes a while; not on a worker.
        tokio::task::spawn_blocking(move || drop(old));
        summary.evicted_artifacts += eviction.artifacts.len();
        summary.evicted_sightings += eviction.sightings.len();
        tracing::info!(
            evicted_artifacts = eviction.artifacts.len(),
            evicted_sightings = eviction.sightings.len(),
            max_artifacts,
            deleted_ms,
            rebuilt_ms = started.elapsed().as_millis() as u64 - deleted_ms,
            "state over its bound: dropped the oldest, least seen records"
        );
        Ok(())
    }

    /// Adds a build's report on a plan (`used`, `unused` keys) to each
    /// key's feedback: database first, then memory.
    pub async fn record_feedback(&self, used: &[String], unused: &[String]) -> Result<()> {
        let _writer = self.writer.lock().await;
        let counts = self.state.read().await.feedback_after(used, unused);
        if counts.is_empty() {
            return Ok(());
        }
        self.db.write_feedback(&counts).await?;
        let mut state = self.state.write().await;
        for (key, counts) in counts {
            state.put_feedback(key, counts);
        }
        Ok(())
    }

    /// The version of a bucket document when it was ingested.
    pub fn scanned(&self, name: &str) -> Option<String> {
        self.scanned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Remembers (database first) that a bucket document was ingested.
    pub async fn mark_scanned(&self, name: &str, version: &str) -> Result<()> {
        self.db.mark_scanned(name, version).await?;
        self.scanned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_string(), version.to_string());
        Ok(())
    }

    /// Artifact records in the database.
    pub async fn stored_artifacts(&self) -> Result<u64> {
        self.db.artifact_count().await
    }

    /// (artifacts, crates) held in memory.
    pub async fn sizes(&self) -> (usize, usize) {
        let state = self.state.read().await;
        (state.artifact_count(), state.crate_count())
    }
}

/// What recording `observations` changes, against the state as it is.
fn compute(state: &State, observations: &[Observation], mode: Mode) -> Change {
    let now = now_ms();
    let mut summary = Summary {
        observations: observations.len(),
        ..Summary::default()
    };
    let mut sightings: HashMap<String, Sighting> = HashMap::new();
    let mut artifacts: HashMap<String, Artifact> = HashMap::new();
    for obs in observations {
        let fresh = Sighting {
            kind: obs.kind,
            namespace: obs.namespace.clone(),
            scope: obs.scope.clone(),
            cache_key: obs.cache_key.clone(),
            crate_name: obs.crate_name.clone(),
            seen_count: 1,
            last_seen: now,
        };
        let id = fresh.id();
        if let std::collections::hash_map::Entry::Vacant(slot) = sightings.entry(id.clone()) {
            match (state.sighting(&id), mode) {
                (Some(_), Mode::Idempotent) => {}
                (Some(old), Mode::Count) => {
                    slot.insert(Sighting {
                        seen_count: old.seen_count + 1,
                        last_seen: now,
                        ..old.clone()
                    });
                }
                (None, _) => {
                    summary.new_sightings += 1;
                    slot.insert(fresh);
                }
            }
        }
        if !artifacts.contains_key(&obs.cache_key) {
            match (state.artifact(&obs.cache_key), mode) {
                (Some(_), Mode::Idempotent) => {}
                (Some(old), Mode::Count) => {
                    let mut next = old.clone();
                    next.seen_count += 1;
                    next.last_seen = now;
                    if obs.compile_time_ms > 0 {
                        next.compile_time_ms = obs.compile_time_ms;
                    }
                    if obs.size > 0 {
                        next.size = obs.size;
                    }
                    if obs.identity.is_some() {
                        next.identity = obs.identity.clone();
                    }
                    artifacts.insert(obs.cache_key.clone(), next);
                }
                (None, _) => {
                    summary.new_artifacts += 1;
                    artifacts.insert(
                        obs.cache_key.clone(),
                        Artifact {
                            cache_key: obs.cache_key.clone(),
                            crate_name: obs.crate_name.clone(),
                            compile_time_ms: obs.compile_time_ms,
                            size: obs.size,
                            seen_count: 1,
                            last_seen: now,
                            identity: obs.identity.clone(),
                        },
                    );
                }
            }
        }
    }
    Change {
        artifacts: artifacts
            .into_values()
            .map(|a| (state.artifact(&a.cache_key).is_none(), a))
            .collect(),
        sightings: sightings
            .into_values()
            .map(|s| (state.sighting(&s.id()).is_none(), s))
            .collect(),
        summary,
    }
}

/// Checks a cache key: 64 lowercase hex digits, a blake3 hash as every
/// kache client writes it. The message says what is wrong precisely.
pub fn check_key(key: &str) -> Result<()> {
    let shown = shorten(key);
    if key.len() != 64 {
        bail!(
            "invalid cache_key {shown:?}: expected 64 lowercase hex digits (a blake3 hash), got {} \
             characters",
            key.chars().count()
        );
    }
    if let Some((at, c)) = key
        .char_indices()
        .find(|(_, c)| !matches!(c, '0'..='9' | 'a'..='f'))
    {
        bail!(
            "invalid cache_key {shown:?}: expected 64 lowercase hex digits (a blake3 hash), found \
             {c:?} at position {at}"
        );
    }
    Ok(())
}

/// A value as an error message quotes it: at most 80 characters.
fn shorten(value: &str) -> String {
    match value.char_indices().nth(80) {
        Some((at, _)) => format!("{}…", &value[..at]),
        None => value.to_string(),
    }
}

/// Rejects names that cannot be a crate, key, namespace or hash. `:` is
/// allowed: C units are stored as `package:file.c`.
fn check_token(what: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 256
        && value.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+' | b'@' | b':')
        });
    if !ok {
        let value = shorten(value);
        bail!("invalid {what} {value:?}: use 1-256 letters, digits and -_.+@:");
    }
    Ok(())
}

impl Observation {
    /// An observation without cost figures, its key and crate checked.
    fn new(
        kind: SightingKind,
        namespace: &str,
        scope: &str,
        key: &str,
        crate_name: &str,
    ) -> Result<Self> {
        check_key(key)?;
        check_token("crate_name", crate_name)?;
        Ok(Self {
            kind,
            namespace: namespace.to_string(),
            scope: scope.to_string(),
            cache_key: key.to_string(),
            crate_name: crate_name.to_string(),
            compile_time_ms: 0,
            size: 0,
            identity: None,
        })
    }
}

/// Observations from a build manifest (`POST /v2/manifests`): each entry is
/// history for its crate. (Every observed artifact is also a known key for
/// its crate; the state derives that from the artifact itself.)
pub fn from_manifest(manifest: &BuildManifest) -> Result<Vec<Observation>> {
    if manifest.version != MANIFEST_VERSION {
        bail!(
            "unsupported manifest version {} (expected {MANIFEST_VERSION})",
            manifest.version
        );
    }
    manifest
        .entries
        .iter()
        .enumerate()
        .map(|(at, entry)| {
            let mut obs = Observation::new(
                SightingKind::History,
                "",
                &entry.crate_name,
                &entry.cache_key,
                &entry.crate_name,
            )
            .with_context(|| format!("entries[{at}]"))?;
            obs.compile_time_ms = entry.compile_time_ms;
            obs.size = entry.artifact_size;
            obs.identity = manifest.identity.clone();
            Ok(obs)
        })
        .collect()
}

/// Observations from a namespace's shard (`POST /v2/shards/{ns}/{hash}`).
pub fn from_shard(namespace: &str, shard_hash: &str, shard: &Shard) -> Result<Vec<Observation>> {
    check_token("namespace", namespace)?;
    if shard_hash.len() != 64 || !shard_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("invalid shard hash {shard_hash:?}: expected 64 hex digits");
    }
    if shard.version != MANIFEST_VERSION {
        bail!(
            "unsupported shard version {} (expected {MANIFEST_VERSION})",
            shard.version
        );
    }
    let scope = shard_hash.to_ascii_lowercase();
    shard
        .entries
        .iter()
        .enumerate()
        .map(|(at, entry)| {
            let mut obs = Observation::new(
                SightingKind::Shard,
                namespace,
                &scope,
                &entry.cache_key,
                &entry.crate_name,
            )
            .with_context(|| format!("entries[{at}]"))?;
            obs.identity = shard.identity.clone();
            Ok(obs)
        })
        .collect()
}

/// The legacy seed snapshot. Every map is optional.
#[derive(Debug, Default, Deserialize)]
pub struct SeedSnapshot {
    #[serde(default)]
    pub namespaces: BTreeMap<String, SeedNamespace>,
    #[serde(default)]
    pub history: BTreeMap<String, Vec<SeedCandidate>>,
    #[serde(default)]
    pub key_cache: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SeedNamespace {
    #[serde(default)]
    pub deps: BTreeMap<String, Vec<SeedCandidate>>,
}

#[derive(Debug, Deserialize)]
pub struct SeedCandidate {
    pub cache_key: String,
    #[serde(default)]
    pub crate_name: Option<String>,
}

/// Reads and checks a seed snapshot file.
pub fn read_seed(path: &Path) -> Result<SeedSnapshot> {
    let text =
        std::fs::read(path).with_context(|| format!("reading seed snapshot {}", path.display()))?;
    serde_json::from_slice(&text)
        .with_context(|| format!("seed snapshot {} is not a valid snapshot", path.display()))
}

/// Observations from a seed snapshot. `key_cache` entries are recorded as
/// bare known keys; deps and history carry their own context.
pub fn from_seed(seed: &SeedSnapshot) -> Result<Vec<Observation>> {
    let mut out = Vec::new();
    for (namespace, ns) in &seed.namespaces {
        check_token("namespace", namespace)?;
        for (dep, candidates) in &ns.deps {
            let Some((name, _version)) = dep.rsplit_once('@') else {
                bail!("seed dep {dep:?} in namespace {namespace:?} is not name@version");
            };
            for c in candidates {
                let crate_name = c.crate_name.as_deref().unwrap_or(name);
                out.push(Observation::new(
                    SightingKind::Dep,
                    namespace,
                    dep,
                    &c.cache_key,
                    crate_name,
                )?);
            }
        }
    }
    for (crate_name, candidates) in &seed.history {
        for c in candidates {
            let name = c.crate_name.as_deref().unwrap_or(crate_name);
            out.push(Observation::new(
                SightingKind::History,
                "",
                crate_name,
                &c.cache_key,
                name,
            )?);
        }
    }
    for (crate_name, keys) in &seed.key_cache {
        for key in keys {
            out.push(Observation::new(
                SightingKind::Key,
                "",
                crate_name,
                key,
                crate_name,
            )?);
        }
    }
    Ok(out)
}
