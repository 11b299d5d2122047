//! The one path by which state changes: observations from a build manifest,
//! a `Cargo.lock` shard or a seed snapshot are written to the database and
//! then applied to the in-memory state. The HTTP ingest routes, the seed
//! import, and (later) the bucket reader all call [`Backend::ingest`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use kache_core::manifest::{BuildManifest, Identity, MANIFEST_VERSION, Shard};
use serde::Deserialize;

use crate::db::Database;
use crate::state::{Artifact, Sighting, SightingKind, State};

/// The leader's database and state, always changed together.
pub struct Backend {
    db: Database,
    pub state: State,
    /// Bucket documents already ingested: object name → version.
    scanned: HashMap<String, String>,
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
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Backend {
    /// Opens the database and loads its state.
    pub async fn open(path: &Path) -> Result<Self> {
        let db = Database::open(path).await?;
        let state = db.load().await?;
        let scanned = db
            .scanned()
            .await?
            .into_iter()
            .map(|s| (s.name, s.version))
            .collect();
        Ok(Self { db, state, scanned })
    }

    /// Records `observations`: database first, then memory.
    pub async fn ingest(&mut self, observations: &[Observation], mode: Mode) -> Result<Summary> {
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
                match (self.state.sighting(&id), mode) {
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
                match (self.state.artifact(&obs.cache_key), mode) {
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
        let artifacts: Vec<(bool, Artifact)> = artifacts
            .into_values()
            .map(|a| (self.state.artifact(&a.cache_key).is_none(), a))
            .collect();
        let sightings: Vec<(bool, Sighting)> = sightings
            .into_values()
            .map(|s| (self.state.sighting(&s.id()).is_none(), s))
            .collect();
        self.db.write(&artifacts, &sightings).await?;
        for (_, artifact) in artifacts {
            self.state.put_artifact(artifact);
        }
        for (_, sighting) in sightings {
            self.state.put_sighting(sighting);
        }
        Ok(summary)
    }

    /// Adds a build's report on a plan (`used`, `unused` keys) to each
    /// key's feedback: database first, then memory.
    pub async fn record_feedback(&mut self, used: &[String], unused: &[String]) -> Result<()> {
        let counts = self.state.feedback_after(used, unused);
        if counts.is_empty() {
            return Ok(());
        }
        self.db.write_feedback(&counts).await?;
        for (key, counts) in counts {
            self.state.put_feedback(key, counts);
        }
        Ok(())
    }

    /// The version of a bucket document when it was ingested.
    pub fn scanned(&self, name: &str) -> Option<&str> {
        self.scanned.get(name).map(String::as_str)
    }

    /// Remembers (database first) that a bucket document was ingested.
    pub async fn mark_scanned(&mut self, name: &str, version: &str) -> Result<()> {
        self.db.mark_scanned(name, version).await?;
        self.scanned.insert(name.to_string(), version.to_string());
        Ok(())
    }

    /// Artifact records in the database.
    pub async fn stored_artifacts(&self) -> Result<u64> {
        self.db.artifact_count().await
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
        bail!("invalid {what} {value:?}: use 1-256 letters, digits and -_.+@");
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
        check_token("cache_key", key)?;
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
        .map(|entry| {
            let mut obs = Observation::new(
                SightingKind::History,
                "",
                &entry.crate_name,
                &entry.cache_key,
                &entry.crate_name,
            )?;
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
        .map(|entry| {
            let mut obs = Observation::new(
                SightingKind::Shard,
                namespace,
                &scope,
                &entry.cache_key,
                &entry.crate_name,
            )?;
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
