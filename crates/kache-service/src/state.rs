//! The planner's state in memory: every artifact and where it was seen.
//!
//! The database is the durable copy; this is the projection plans are
//! computed from, so a plan never waits on storage. Only the leader holds it,
//! and every change goes to the database first (see `ingest.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use kache_core::manifest::Identity;
use kache_core::plan::{Known, PlanSource, normalize_crate};
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
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KeyFeedback {
    pub used: u32,
    pub unused: u32,
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
            SightingKind::History | SightingKind::Key => normalize_crate(&self.scope),
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

    fn exact_dep(&self, _: &str, _: &str, _: &str) -> Result<Vec<Known>, SourceError> {
        Err(SourceError("injected planning fault".into()))
    }

    fn shard(&self, _: &str, _: &str) -> Result<Vec<Known>, SourceError> {
        Err(SourceError("injected planning fault".into()))
    }

    fn history(&self, _: &str) -> Result<Vec<Known>, SourceError> {
        Err(SourceError("injected planning fault".into()))
    }

    fn known_keys(&self, _: &str) -> Result<Vec<Known>, SourceError> {
        Err(SourceError("injected planning fault".into()))
    }

    fn namespace_keys(&self, _: &str, _: &str) -> Result<Vec<String>, SourceError> {
        Err(SourceError("injected planning fault".into()))
    }
}

/// The in-memory state.
#[derive(Debug, Default)]
pub struct State {
    sightings: HashMap<String, Sighting>,
    /// kind → namespace → scope → sighting ids. Nested so a lookup borrows
    /// its `&str` arguments instead of allocating a key.
    by_scope: HashMap<SightingKind, HashMap<String, HashMap<String, Vec<String>>>>,
    artifacts: HashMap<String, Artifact>,
    /// Normalised crate name → its artifacts' keys: the "any known key" source.
    by_crate: HashMap<String, Vec<String>>,
    /// Namespace → normalised crate → the keys its shards recorded.
    shard_keys: HashMap<String, HashMap<String, Vec<String>>>,
    /// Key → its artifact's identity, shared (one allocation per identity).
    identities: HashMap<String, Arc<Identity>>,
    interned: HashMap<Identity, Arc<Identity>>,
    /// Key → plan feedback (memory only: a restart forgets it).
    feedback: HashMap<String, KeyFeedback>,
}

impl State {
    /// Adds or replaces a sighting.
    pub fn put_sighting(&mut self, sighting: Sighting) {
        let id = sighting.id();
        if !self.sightings.contains_key(&id) {
            if sighting.kind == SightingKind::Shard {
                let keys = self
                    .shard_keys
                    .entry(sighting.namespace.clone())
                    .or_default()
                    .entry(normalize_crate(&sighting.crate_name))
                    .or_default();
                if !keys.contains(&sighting.cache_key) {
                    keys.push(sighting.cache_key.clone());
                }
            }
            self.by_scope
                .entry(sighting.kind)
                .or_default()
                .entry(sighting.namespace.clone())
                .or_default()
                .entry(sighting.index_scope())
                .or_default()
                .push(id.clone());
        }
        self.sightings.insert(id, sighting);
    }

    pub fn sighting(&self, id: &str) -> Option<&Sighting> {
        self.sightings.get(id)
    }

    pub fn put_artifact(&mut self, artifact: Artifact) {
        if let Some(identity) = &artifact.identity {
            let shared = self
                .interned
                .entry(identity.clone())
                .or_insert_with(|| Arc::new(identity.clone()))
                .clone();
            self.identities.insert(artifact.cache_key.clone(), shared);
        }
        if !self.artifacts.contains_key(&artifact.cache_key) {
            self.by_crate
                .entry(normalize_crate(&artifact.crate_name))
                .or_default()
                .push(artifact.cache_key.clone());
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

    /// Records what a build did with keys a plan offered.
    pub fn record_feedback(&mut self, used: &[String], unused: &[String]) {
        for key in used {
            self.feedback.entry(key.clone()).or_default().used += 1;
        }
        for key in unused {
            self.feedback.entry(key.clone()).or_default().unused += 1;
        }
    }

    /// A sighting (or an artifact) as the planner sees it: with its
    /// artifact's cost and identity.
    fn known(&self, cache_key: &str, crate_name: &str, seen: u64, last: u64) -> Known {
        let artifact = self.artifacts.get(cache_key);
        Known {
            cache_key: cache_key.to_string(),
            crate_name: crate_name.to_string(),
            seen_count: seen,
            last_seen_ms: last,
            compile_time_ms: artifact.map_or(0, |a| a.compile_time_ms),
            size_bytes: artifact.map_or(0, |a| a.size),
            identity: self.identities.get(cache_key).cloned(),
        }
    }

    fn lookup(&self, kind: SightingKind, namespace: &str, scope: &str) -> Vec<Known> {
        self.by_scope
            .get(&kind)
            .and_then(|namespaces| namespaces.get(namespace))
            .and_then(|scopes| scopes.get(scope))
            .into_iter()
            .flatten()
            .filter_map(|id| self.sightings.get(id))
            .map(|s| self.known(&s.cache_key, &s.crate_name, s.seen_count, s.last_seen))
            .collect()
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
    ) -> Result<Vec<Known>, SourceError> {
        Ok(self.lookup(SightingKind::Dep, namespace, &format!("{name}@{version}")))
    }

    fn shard(&self, namespace: &str, shard_hash: &str) -> Result<Vec<Known>, SourceError> {
        Ok(self.lookup(SightingKind::Shard, namespace, shard_hash))
    }

    fn history(&self, crate_name: &str) -> Result<Vec<Known>, SourceError> {
        Ok(self.lookup(SightingKind::History, "", &normalize_crate(crate_name)))
    }

    fn known_keys(&self, crate_name: &str) -> Result<Vec<Known>, SourceError> {
        let keys = self.by_crate.get(&normalize_crate(crate_name));
        Ok(keys
            .into_iter()
            .flatten()
            .filter_map(|key| self.artifacts.get(key))
            .map(|a| self.known(&a.cache_key, &a.crate_name, a.seen_count, a.last_seen))
            .collect())
    }

    fn never_used(&self, cache_key: &str) -> bool {
        self.feedback
            .get(cache_key)
            .is_some_and(|f| f.used == 0 && f.unused >= NEVER_USED_AFTER)
    }

    fn namespace_keys(
        &self,
        namespace: &str,
        crate_name: &str,
    ) -> Result<Vec<String>, SourceError> {
        Ok(self
            .shard_keys
            .get(namespace)
            .and_then(|crates| crates.get(&normalize_crate(crate_name)))
            .cloned()
            .unwrap_or_default())
    }
}
