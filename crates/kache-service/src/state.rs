//! The planner's state in memory: every artifact and where it was seen.
//!
//! The database is the durable copy; this is the projection plans are
//! computed from, so a plan never waits on storage. Only the leader holds it,
//! and every change goes to the database first (see `ingest.rs`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use foldhash::{HashMap as FastMap, HashSet as FastSet};
use kache_core::manifest::{Identity, shard_bucket};
use kache_core::plan::{Known, PlanSource, normalize_crate, rank_order};
use serde::{Deserialize, Serialize};

/// How an artifact was seen; the source strength of `kache_core::plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SightingKind {
    /// Under a namespace for an exact `name@version` (seed snapshots).
    Dep,
    /// In a namespace's `Cargo.lock` shard, by shard hash.
    Shard,
    /// In a build manifest or the snapshot's history.
    History,
    /// A bare known key for a crate (a seed's `key_cache`). Every artifact
    /// is a known key of its crate anyway; see `State::known_keys`.
    Key,
}

/// One artifact seen in one context. Stored as one database record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sighting {
    pub kind: SightingKind,
    /// Empty for history and keys.
    pub namespace: String,
    /// `name@version` for deps, the shard hash for shards, the crate otherwise.
    pub scope: String,
    pub cache_key: String,
    pub crate_name: String,
    pub seen_count: u64,
    /// Milliseconds since the Unix epoch.
    pub last_seen: u64,
}

/// What is known about one artifact, whatever the context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub cache_key: String,
    pub crate_name: String,
    pub compile_time_ms: u64,
    pub size: u64,
    pub seen_count: u64,
    pub last_seen: u64,
    /// The build identity a document recorded it under (absent: unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
}

/// What builds did with one key that plans offered (`POST /v2/plan-feedback`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFeedback {
    pub used: u32,
    pub unused: u32,
    /// When a build last reported it used (ms since the epoch; 0: never or
    /// before this was recorded). The bucket's collection keeps a key used
    /// within its window (`gc.rs`).
    #[serde(default)]
    pub last_used_ms: u64,
}

/// A key offered this often and never used is not guessed any more.
pub const NEVER_USED_AFTER: u32 = 3;

impl Sighting {
    /// The record id: stable for the same kind, namespace, scope and key.
    pub fn id(&self) -> String {
        let text = format!(
            "{:?}\u{1f}{}\u{1f}{}\u{1f}{}",
            self.kind, self.namespace, self.scope, self.cache_key
        );
        blake3::hash(text.as_bytes()).to_hex().to_string()
    }

    /// Where the sighting is indexed: history and keys by normalised crate.
    fn index_scope(&self) -> String {
        match self.kind {
            SightingKind::History | SightingKind::Key => normalize_crate(&self.scope).into_owned(),
            _ => self.scope.clone(),
        }
    }
}

/// A failure to read planning state. The in-memory state never fails; the
/// type exists for [`FailingSource`] and for sources backed by storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError(pub String);

/// A source whose every lookup fails: the `KACHE_PLANNER_FAULT=planning`
/// fault injection, used by tests to prove that a planning error is answered
/// with `use_fallback` and HTTP 200.
pub struct FailingSource<'a>(pub &'a State);

impl PlanSource for FailingSource<'_> {
    type Error = SourceError;

    fn is_empty(&self) -> Result<bool, SourceError> {
        self.0.is_empty()
    }

    fn exact_dep(&self, _: &str, _: &str, _: &str) -> Result<Vec<Known<'_>>, SourceError> {
        Err(SourceError("injected planning fault".into()))
    }

    fn shard(&self, _: &str, _: &str) -> Result<Vec<Known<'_>>, SourceError> {
        Err(SourceError("injected planning fault".into()))
    }

    fn history(&self, _: &str) -> Result<impl Iterator<Item = Known<'_>>, SourceError> {
        Err::<std::iter::Empty<_>, _>(SourceError("injected planning fault".into()))
    }

    fn known_keys(&self, _: &str) -> Result<impl Iterator<Item = Known<'_>>, SourceError> {
        Err::<std::iter::Empty<_>, _>(SourceError("injected planning fault".into()))
    }

    fn namespace_keys(&self, _: &str, _: &str) -> Result<Vec<&str>, SourceError> {
        Err(SourceError("injected planning fault".into()))
    }
}

/// One artifact as plans read it: shared strings, no hashing to reach it.
#[derive(Debug)]
struct ArtifactSlot {
    cache_key: Arc<str>,
    crate_name: Arc<str>,
    compile_time_ms: u64,
    size: u64,
    seen_count: u64,
    last_seen: u64,
    identity: Option<Arc<Identity>>,
}

/// One sighting as plans read it: its artifact by index.
#[derive(Debug)]
struct SightingSlot {
    artifact: u32,
    crate_name: Arc<str>,
    seen_count: u64,
    last_seen: u64,
}

/// One entry of a crate's ranked history: everything a plan reads about it
/// but its key, which is in the history's `keys`.
#[derive(Debug)]
struct Ranked {
    /// Where the key is in the history's `keys`.
    key: Range<usize>,
    crate_name: Arc<str>,
    seen_count: u64,
    last_seen: u64,
    compile_time_ms: u64,
    size: u64,
    identity: Option<Arc<Identity>>,
}

/// A crate's history as plans read it: the entries ranked, side by side,
/// and their keys in one string, so a plan's best guesses for a crate are
/// two runs of memory instead of a pointer chase per key.
#[derive(Debug, Default)]
struct RankedHistory {
    keys: String,
    entries: Vec<Ranked>,
}

impl RankedHistory {
    fn known(&self) -> impl Iterator<Item = Known<'_>> {
        self.entries.iter().map(|entry| Known {
            cache_key: &self.keys[entry.key.clone()],
            crate_name: &entry.crate_name,
            seen_count: entry.seen_count,
            last_seen_ms: entry.last_seen,
            compile_time_ms: entry.compile_time_ms,
            size_bytes: entry.size,
            identity: entry.identity.as_deref(),
        })
    }
}

/// The in-memory state.
///
/// The records ingest reads and writes (`sightings`, `artifacts`) sit beside
/// arenas that plans read: a lookup walks indices into `slots` and `views`
/// and borrows their strings, so planning hashes nothing per candidate and
/// copies nothing. History and known-key lists are kept ranked, so a plan
/// reads a crate's best guesses first and stops after a few.
#[derive(Debug, Default)]
pub struct State {
    sightings: HashMap<String, Sighting>,
    artifacts: HashMap<String, Artifact>,
    slots: Vec<ArtifactSlot>,
    slot_of: HashMap<String, u32>,
    views: Vec<SightingSlot>,
    view_of: HashMap<String, u32>,
    /// kind → namespace → scope → sighting views, for every kind but deps.
    /// Nested so a lookup borrows its `&str` arguments instead of
    /// allocating a key.
    by_scope: FastMap<SightingKind, FastMap<String, FastMap<String, Vec<u32>>>>,
    /// Dep sightings (scope `name@version`) as namespace → name → version →
    /// views, so an exact lookup borrows the intent's two strings.
    by_dep: FastMap<String, FastMap<String, FastMap<String, Vec<u32>>>>,
    /// Normalised crate name → its artifacts: the "any known key" source.
    by_crate: FastMap<String, Vec<u32>>,
    /// Normalised crate name → its history, ranked, as plans read it (a
    /// copy of the history sightings' views, remade by `rerank`).
    history: FastMap<String, RankedHistory>,
    /// Artifact slot → the histories holding it other than its own crate's
    /// (rare: documents that disagree on a key's crate). With these,
    /// `put_artifact` knows every copy in `history` to remake.
    foreign_history: FastMap<u32, Vec<String>>,
    /// One allocation per distinct crate name, shared by every view.
    names: FastSet<Arc<str>>,
    /// Package name → its shard bucket, for every name ingested (and its
    /// `-` spelling): plans look buckets up instead of hashing each name.
    buckets: FastMap<String, u64>,
    /// Namespace → normalised crate → the keys its shards recorded.
    shard_keys: FastMap<String, FastMap<String, Vec<String>>>,
    /// One allocation per distinct identity.
    interned: HashMap<Identity, Arc<Identity>>,
    /// Key → plan feedback (stored in the database's `feedback` table).
    feedback: FastMap<String, KeyFeedback>,
    /// Inside [`State::batch`]: the crates to rerank once at its end,
    /// instead of after every record.
    deferred: Option<FastSet<String>>,
}

/// Every record of a state, as the database stores them.
#[derive(Debug, Default)]
pub struct Records {
    pub artifacts: Vec<Artifact>,
    pub sightings: Vec<Sighting>,
    pub feedback: Vec<(String, KeyFeedback)>,
}

/// What a bound drops: artifact keys, sighting ids, and the keys whose
/// feedback goes with their artifact.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Eviction {
    pub artifacts: Vec<String>,
    pub sightings: Vec<String>,
    pub feedback: Vec<String>,
}

impl Eviction {
    pub fn is_empty(&self) -> bool {
        self.artifacts.is_empty() && self.sightings.is_empty()
    }
}

/// Granularity of "oldest" when choosing what to evict: among records last
/// seen within the same hour, the least seen go first.
const EVICTION_AGE_STEP_MS: u64 = 3_600_000;

/// The eviction order, first to go first: last seen (by hour), seen count,
/// then exact time and id, so the choice is deterministic.
fn eviction_rank(last_seen: u64, seen_count: u64, id: &str) -> (u64, u64, u64, &str) {
    (last_seen / EVICTION_AGE_STEP_MS, seen_count, last_seen, id)
}

/// How many of `count` records to drop under `max`: none while at most
/// `max`, else down to 90 % of it, so that a full state does not evict (and
/// rebuild) on every ingest.
fn excess(count: usize, max: usize) -> usize {
    if count <= max {
        0
    } else {
        count - (max - max / 10).max(1)
    }
}

impl State {
    /// A state holding `records`, ranked once at the end.
    pub fn from_records(records: Records) -> Self {
        let mut state = Self::default();
        state.batch(|state| {
            for artifact in records.artifacts {
                state.put_artifact(artifact);
            }
            for sighting in records.sightings {
                state.put_sighting(sighting);
            }
        });
        for (key, counts) in records.feedback {
            state.put_feedback(key, counts);
        }
        state
    }

    /// Runs `change` with reranking deferred: every crate it touched is
    /// reranked once when it returns (a large ingest costs one sort per
    /// crate, not one per record).
    pub fn batch<R>(&mut self, change: impl FnOnce(&mut Self) -> R) -> R {
        let outer = self.deferred.is_some();
        if !outer {
            self.deferred = Some(FastSet::default());
        }
        let result = change(self);
        if !outer && let Some(crates) = self.deferred.take() {
            for name in crates {
                self.rerank(&name);
            }
        }
        result
    }

    /// Whether more than `max_artifacts` artifacts or `max_sightings`
    /// sightings are held.
    pub fn over_bound(&self, max_artifacts: usize, max_sightings: usize) -> bool {
        self.artifacts.len() > max_artifacts || self.sightings.len() > max_sightings
    }

    /// What to drop to get back under the bound (to 90 % of it): the
    /// artifacts last seen longest ago, least seen first among those of the
    /// same hour, each with its sightings and feedback; then, if sightings
    /// are still over their bound, the oldest sightings by the same order.
    pub fn eviction(&self, max_artifacts: usize, max_sightings: usize) -> Eviction {
        let mut eviction = Eviction::default();
        let drop_artifacts = excess(self.artifacts.len(), max_artifacts);
        if drop_artifacts > 0 {
            let mut order: Vec<&Artifact> = self.artifacts.values().collect();
            order.select_nth_unstable_by_key(drop_artifacts - 1, |a| {
                eviction_rank(a.last_seen, a.seen_count, &a.cache_key)
            });
            eviction.artifacts = order[..drop_artifacts]
                .iter()
                .map(|a| a.cache_key.clone())
                .collect();
        }
        let gone: FastSet<&str> = eviction.artifacts.iter().map(String::as_str).collect();
        let mut remaining: Vec<(&String, &Sighting)> = Vec::with_capacity(self.sightings.len());
        for (id, sighting) in &self.sightings {
            if gone.contains(sighting.cache_key.as_str()) {
                eviction.sightings.push(id.clone());
            } else {
                remaining.push((id, sighting));
            }
        }
        let drop_sightings = excess(remaining.len(), max_sightings);
        if drop_sightings > 0 {
            remaining.select_nth_unstable_by_key(drop_sightings - 1, |(id, s)| {
                eviction_rank(s.last_seen, s.seen_count, id)
            });
            eviction.sightings.extend(
                remaining[..drop_sightings]
                    .iter()
                    .map(|(id, _)| (*id).clone()),
            );
        }
        eviction.feedback = eviction
            .artifacts
            .iter()
            .filter(|key| self.feedback.contains_key(key.as_str()))
            .cloned()
            .collect();
        eviction
    }

    /// Copies of the records that remain after `eviction`.
    pub fn kept(&self, eviction: &Eviction) -> Records {
        let artifacts: FastSet<&str> = eviction.artifacts.iter().map(String::as_str).collect();
        let sightings: FastSet<&str> = eviction.sightings.iter().map(String::as_str).collect();
        Records {
            artifacts: self
                .artifacts
                .values()
                .filter(|a| !artifacts.contains(a.cache_key.as_str()))
                .cloned()
                .collect(),
            sightings: self
                .sightings
                .iter()
                .filter(|(id, _)| !sightings.contains(id.as_str()))
                .map(|(_, s)| s.clone())
                .collect(),
            feedback: self
                .feedback
                .iter()
                .filter(|(key, _)| !artifacts.contains(key.as_str()))
                .map(|(key, counts)| (key.clone(), *counts))
                .collect(),
        }
    }

    pub fn sighting_count(&self) -> usize {
        self.sightings.len()
    }

    /// The shared copy of a crate name.
    fn name(&mut self, crate_name: &str) -> Arc<str> {
        if let Some(name) = self.names.get(crate_name) {
            return name.clone();
        }
        let name: Arc<str> = Arc::from(crate_name);
        self.names.insert(name.clone());
        self.remember_bucket(crate_name);
        name
    }

    /// Remembers the shard bucket of a package name and of its `-` spelling.
    fn remember_bucket(&mut self, name: &str) {
        for spelling in [Cow::Borrowed(name), Cow::Owned(name.replace('_', "-"))] {
            if !self.buckets.contains_key(spelling.as_ref()) {
                let bucket = shard_bucket(&spelling);
                self.buckets.insert(spelling.into_owned(), bucket);
            }
        }
    }

    /// Records that the history of `scope` holds the artifact `slot` of the
    /// crate `own`, when that is another crate.
    fn note_foreign(&mut self, slot: u32, own: Arc<str>, scope: &str) {
        let scope = normalize_crate(scope);
        if scope != normalize_crate(&own) {
            let scopes = self.foreign_history.entry(slot).or_default();
            if !scopes.iter().any(|s| *s == scope) {
                scopes.push(scope.into_owned());
            }
        }
    }

    /// The arena slot of `cache_key`, made empty if it has none yet (a
    /// sighting can be loaded before its artifact).
    fn slot(&mut self, cache_key: &str, crate_name: &str) -> u32 {
        if let Some(&at) = self.slot_of.get(cache_key) {
            return at;
        }
        let at = self.slots.len() as u32;
        let crate_name = self.name(crate_name);
        self.slots.push(ArtifactSlot {
            cache_key: Arc::from(cache_key),
            crate_name,
            compile_time_ms: 0,
            size: 0,
            seen_count: 0,
            last_seen: 0,
            identity: None,
        });
        self.slot_of.insert(cache_key.to_string(), at);
        at
    }

    /// Adds or replaces a sighting.
    pub fn put_sighting(&mut self, sighting: Sighting) {
        let id = sighting.id();
        match self.view_of.get(&id) {
            Some(&at) => {
                let view = &mut self.views[at as usize];
                view.seen_count = sighting.seen_count;
                view.last_seen = sighting.last_seen;
            }
            None => {
                if sighting.kind == SightingKind::Shard {
                    let keys = self
                        .shard_keys
                        .entry(sighting.namespace.clone())
                        .or_default()
                        .entry(normalize_crate(&sighting.crate_name).into_owned())
                        .or_default();
                    if !keys.contains(&sighting.cache_key) {
                        keys.push(sighting.cache_key.clone());
                    }
                }
                let artifact = self.slot(&sighting.cache_key, &sighting.crate_name);
                if sighting.kind == SightingKind::History {
                    let own = &self.slots[artifact as usize].crate_name;
                    self.note_foreign(artifact, own.clone(), &sighting.scope);
                }
                let at = self.views.len() as u32;
                let crate_name = self.name(&sighting.crate_name);
                self.views.push(SightingSlot {
                    artifact,
                    crate_name,
                    seen_count: sighting.seen_count,
                    last_seen: sighting.last_seen,
                });
                self.view_of.insert(id.clone(), at);
                if sighting.kind == SightingKind::Dep {
                    // A scope without `@` cannot be asked for: not indexed.
                    if let Some((name, version)) = sighting.scope.rsplit_once('@') {
                        self.remember_bucket(name);
                        self.by_dep
                            .entry(sighting.namespace.clone())
                            .or_default()
                            .entry(name.to_string())
                            .or_default()
                            .entry(version.to_string())
                            .or_default()
                            .push(at);
                    }
                } else {
                    self.by_scope
                        .entry(sighting.kind)
                        .or_default()
                        .entry(sighting.namespace.clone())
                        .or_default()
                        .entry(sighting.index_scope())
                        .or_default()
                        .push(at);
                }
            }
        }
        if matches!(sighting.kind, SightingKind::History | SightingKind::Key) {
            self.rerank(&sighting.scope);
        }
        self.sightings.insert(id, sighting);
    }

    pub fn sighting(&self, id: &str) -> Option<&Sighting> {
        self.sightings.get(id)
    }

    pub fn put_artifact(&mut self, artifact: Artifact) {
        let known = self.artifacts.contains_key(&artifact.cache_key);
        let at = self.slot(&artifact.cache_key, &artifact.crate_name);
        if !known {
            self.by_crate
                .entry(normalize_crate(&artifact.crate_name).into_owned())
                .or_default()
                .push(at);
        }
        let identity = artifact.identity.as_ref().map(|identity| {
            self.interned
                .entry(identity.clone())
                .or_insert_with(|| Arc::new(identity.clone()))
                .clone()
        });
        let crate_name = self.name(&artifact.crate_name);
        let before = std::mem::replace(&mut self.slots[at as usize].crate_name, crate_name);
        // Histories under its former crate now hold a foreign artifact.
        self.note_foreign(at, self.slots[at as usize].crate_name.clone(), &before);
        let slot = &mut self.slots[at as usize];
        slot.compile_time_ms = artifact.compile_time_ms;
        slot.size = artifact.size;
        slot.seen_count = artifact.seen_count;
        slot.last_seen = artifact.last_seen;
        if identity.is_some() {
            slot.identity = identity;
        }
        self.rerank(&artifact.crate_name);
        for scope in self.foreign_history.get(&at).cloned().unwrap_or_default() {
            self.rerank(&scope);
        }
        self.artifacts.insert(artifact.cache_key.clone(), artifact);
    }

    pub fn artifact(&self, key: &str) -> Option<&Artifact> {
        self.artifacts.get(key)
    }

    pub fn artifact_count(&self) -> usize {
        self.artifacts.len()
    }

    /// Distinct crates (by normalised name) with at least one artifact.
    pub fn crate_count(&self) -> usize {
        self.by_crate.len()
    }

    /// The counts each key will have once a build's report on a plan
    /// (`used`, `unused`) is added; the state is not changed.
    pub fn feedback_after(&self, used: &[String], unused: &[String]) -> Vec<(String, KeyFeedback)> {
        let mut after: FastMap<&str, KeyFeedback> = FastMap::default();
        for (keys, is_used) in [(used, true), (unused, false)] {
            for key in keys {
                let counts = after
                    .entry(key)
                    .or_insert_with(|| self.feedback.get(key).copied().unwrap_or_default());
                if is_used {
                    counts.used += 1;
                    counts.last_used_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                } else {
                    counts.unused += 1;
                }
            }
        }
        after
            .into_iter()
            .map(|(key, counts)| (key.to_string(), counts))
            .collect()
    }

    /// What builds did with a key plans offered, if any reported on it.
    pub fn feedback_of(&self, cache_key: &str) -> Option<KeyFeedback> {
        self.feedback.get(cache_key).copied()
    }

    /// Sets what builds did with a key plans offered.
    pub fn put_feedback(&mut self, cache_key: String, counts: KeyFeedback) {
        self.feedback.insert(cache_key, counts);
    }

    /// An artifact as the planner sees it, with the counts of one context.
    fn known<'a>(slot: &'a ArtifactSlot, crate_name: &'a str, seen: u64, last: u64) -> Known<'a> {
        Known {
            cache_key: &slot.cache_key,
            crate_name,
            seen_count: seen,
            last_seen_ms: last,
            compile_time_ms: slot.compile_time_ms,
            size_bytes: slot.size,
            identity: slot.identity.as_deref(),
        }
    }

    /// A sighting as the planner sees it.
    fn view(&self, at: u32) -> Known<'_> {
        let view = &self.views[at as usize];
        let slot = &self.slots[view.artifact as usize];
        Self::known(slot, &view.crate_name, view.seen_count, view.last_seen)
    }

    /// An artifact with its own counts, as the planner sees it.
    fn slot_known(&self, at: u32) -> Known<'_> {
        let slot = &self.slots[at as usize];
        Self::known(slot, &slot.crate_name, slot.seen_count, slot.last_seen)
    }

    fn lookup<'a>(
        &'a self,
        kind: SightingKind,
        namespace: &str,
        scope: &str,
    ) -> impl Iterator<Item = Known<'a>> + use<'a> {
        self.by_scope
            .get(&kind)
            .and_then(|namespaces| namespaces.get(namespace))
            .and_then(|scopes| scopes.get(scope))
            .into_iter()
            .flatten()
            .map(|&at| self.view(at))
    }

    /// Keeps a crate's history, bare-key and known-key lists in
    /// [`rank_order`], so a plan reads the best first and stops early.
    /// Called whenever a count or an identity in them may have changed.
    fn rerank(&mut self, crate_name: &str) {
        let name = normalize_crate(crate_name);
        if let Some(deferred) = &mut self.deferred {
            if !deferred.contains(name.as_ref()) {
                deferred.insert(name.into_owned());
            }
            return;
        }
        let Self {
            by_scope,
            by_crate,
            history,
            views,
            slots,
            ..
        } = self;
        let view = |at: u32| {
            let view = &views[at as usize];
            let slot = &slots[view.artifact as usize];
            Self::known(slot, &view.crate_name, view.seen_count, view.last_seen)
        };
        for kind in [SightingKind::History, SightingKind::Key] {
            let list = by_scope
                .get_mut(&kind)
                .and_then(|namespaces| namespaces.get_mut(""))
                .and_then(|scopes| scopes.get_mut(name.as_ref()));
            if let Some(list) = list {
                list.sort_by(|&a, &b| rank_order(&view(a), &view(b)));
                if kind == SightingKind::History {
                    let mut ranked = RankedHistory::default();
                    for &at in list.iter() {
                        let view = &views[at as usize];
                        let slot = &slots[view.artifact as usize];
                        let start = ranked.keys.len();
                        ranked.keys.push_str(&slot.cache_key);
                        ranked.entries.push(Ranked {
                            key: start..ranked.keys.len(),
                            crate_name: view.crate_name.clone(),
                            seen_count: view.seen_count,
                            last_seen: view.last_seen,
                            compile_time_ms: slot.compile_time_ms,
                            size: slot.size,
                            identity: slot.identity.clone(),
                        });
                    }
                    history.insert(name.to_string(), ranked);
                }
            }
        }
        let slot = |at: u32| {
            let slot = &slots[at as usize];
            Self::known(slot, &slot.crate_name, slot.seen_count, slot.last_seen)
        };
        if let Some(list) = by_crate.get_mut(name.as_ref()) {
            list.sort_by(|&a, &b| rank_order(&slot(a), &slot(b)));
        }
    }
}

impl PlanSource for State {
    type Error = SourceError;

    fn is_empty(&self) -> Result<bool, SourceError> {
        Ok(self.sightings.is_empty())
    }

    fn exact_dep(
        &self,
        namespace: &str,
        name: &str,
        version: &str,
    ) -> Result<Vec<Known<'_>>, SourceError> {
        let views = self
            .by_dep
            .get(namespace)
            .and_then(|names| names.get(name))
            .and_then(|versions| versions.get(version));
        Ok(views
            .into_iter()
            .flatten()
            .map(|&at| self.view(at))
            .collect())
    }

    fn shard(&self, namespace: &str, shard_hash: &str) -> Result<Vec<Known<'_>>, SourceError> {
        Ok(self
            .lookup(SightingKind::Shard, namespace, shard_hash)
            .collect())
    }

    fn history(&self, crate_name: &str) -> Result<impl Iterator<Item = Known<'_>>, SourceError> {
        let ranked = self.history.get(normalize_crate(crate_name).as_ref());
        Ok(ranked.into_iter().flat_map(RankedHistory::known))
    }

    fn known_keys(&self, crate_name: &str) -> Result<impl Iterator<Item = Known<'_>>, SourceError> {
        let slots = self.by_crate.get(normalize_crate(crate_name).as_ref());
        Ok(slots.into_iter().flatten().map(|&at| self.slot_known(at)))
    }

    fn shard_bucket(&self, package: &str) -> u64 {
        match self.buckets.get(package) {
            Some(&bucket) => bucket,
            None => shard_bucket(package),
        }
    }

    fn never_used(&self, cache_key: &str) -> bool {
        self.feedback
            .get(cache_key)
            .is_some_and(|f| f.used == 0 && f.unused >= NEVER_USED_AFTER)
    }

    fn namespace_keys(&self, namespace: &str, crate_name: &str) -> Result<Vec<&str>, SourceError> {
        Ok(self
            .shard_keys
            .get(namespace)
            .and_then(|crates| crates.get(normalize_crate(crate_name).as_ref()))
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kache_core::plan::{BuildIntent, Planned, plan};

    fn history(scope: &str, key: &str, crate_name: &str, last_seen: u64) -> Sighting {
        Sighting {
            kind: SightingKind::History,
            namespace: String::new(),
            scope: scope.into(),
            cache_key: key.into(),
            crate_name: crate_name.into(),
            seen_count: 1,
            last_seen,
        }
    }

    fn artifact(key: &str, crate_name: &str, ms: u64, target: Option<&str>) -> Artifact {
        Artifact {
            cache_key: key.into(),
            crate_name: crate_name.into(),
            compile_time_ms: ms,
            size: 10,
            seen_count: 1,
            last_seen: 1,
            identity: target.map(|target| Identity {
                target: target.into(),
                toolchain: "t".into(),
                profile: "dev".into(),
            }),
        }
    }

    /// (key, compile_time_ms) of the plan for `crate_name` built for `target`.
    fn planned(state: &State, crate_name: &str, target: Option<&str>) -> Vec<(String, u64)> {
        let intent = BuildIntent {
            crate_names: vec![crate_name.into()],
            identity: artifact("", "", 0, target).identity,
            ..BuildIntent::default()
        };
        match plan(&intent, state).unwrap() {
            Planned::Execute(chosen) => chosen
                .iter()
                .map(|c| {
                    (
                        c.candidate.cache_key.to_string(),
                        c.candidate.compile_time_ms,
                    )
                })
                .collect(),
            Planned::Fallback(_) => vec![],
        }
    }

    #[test]
    fn the_ranked_history_follows_every_change_of_its_artifacts() {
        let long = "f".repeat(64);
        let mut state = State::default();
        state.put_sighting(history("serde", &long, "serde", 1));
        state.put_sighting(history("serde", "short-key", "serde", 2));
        state.put_artifact(artifact(&long, "serde", 700, None));
        // The most recently seen first; an inline and a shared key alike.
        assert_eq!(
            planned(&state, "serde", None),
            [("short-key".to_string(), 0), (long.clone(), 700)]
        );
        // A later sighting reorders; a later artifact record updates.
        state.put_sighting(history("serde", &long, "serde", 3));
        state.put_artifact(artifact(
            &long,
            "serde",
            900,
            Some("x86_64-unknown-linux-gnu"),
        ));
        assert_eq!(planned(&state, "serde", None)[0], (long.clone(), 900));
        assert_eq!(
            planned(&state, "serde", Some("aarch64-apple-darwin")),
            [("short-key".to_string(), 0)],
            "an artifact of another identity is never offered"
        );
    }

    #[test]
    fn an_artifact_in_another_crates_history_is_updated_there_too() {
        let mut state = State::default();
        // Two documents disagree: the key is history of `a` and an artifact of `b`.
        state.put_sighting(history("a", "k1", "a", 1));
        state.put_artifact(artifact("k1", "b", 5, None));
        state.put_sighting(history("c", "k1", "c", 1));
        assert_eq!(planned(&state, "a", None), [("k1".to_string(), 5)]);
        state.put_artifact(artifact("k1", "b", 6, Some("x86_64-unknown-linux-gnu")));
        for scope in ["a", "c"] {
            assert_eq!(planned(&state, scope, None), [("k1".to_string(), 6)]);
            assert_eq!(planned(&state, scope, Some("wasm32-unknown-unknown")), []);
        }
    }

    #[test]
    fn remembered_shard_buckets_are_the_contracts_buckets() {
        let mut state = State::default();
        state.put_sighting(history("serde_json", "k1", "serde_json", 1));
        state.put_sighting(Sighting {
            kind: SightingKind::Dep,
            namespace: "ci".into(),
            scope: "proc-macro2@1.0.0".into(),
            ..history("proc_macro2", "k2", "proc_macro2", 1)
        });
        assert!(state.buckets.contains_key("serde-json"));
        assert!(state.buckets.contains_key("proc-macro2"));
        for name in ["serde_json", "serde-json", "proc-macro2", "never-seen"] {
            assert_eq!(
                PlanSource::shard_bucket(&state, name),
                kache_core::manifest::shard_bucket(name)
            );
        }
    }
}
