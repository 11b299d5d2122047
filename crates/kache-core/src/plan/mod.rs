//! Prefetch planning: the pure logic that turns a build intent into ranked
//! candidates (the HTTP wire types are in `wire.rs`, re-exported here).
//!
//! Sources are merged by confidence. First the *exact* source: artifacts seen
//! under the intent's namespace for the very `name@version` packages of its
//! `Cargo.lock` (legacy seed mappings, and ingested shards whose hash equals
//! the hash of one of the intent's shard buckets). Then per-crate *history*
//! for crates still unresolved, then *any known key* for the crate. A crate
//! resolved by a stronger source is not offered again by a weaker one.
//! Candidates follow the intent's crate order and no key appears twice.
//!
//! A shard that no longer matches means one of its packages changed. Every
//! package of it that the namespace built before is *changed*, and so is
//! every crate that depends on one (through the intent's optional
//! `crate_deps` graph): their old artifacts were built against the old
//! version and cannot hit, so neither the exact source nor a weaker one
//! offers them. Only keys never built in this namespace remain (another
//! branch may have built the new combination).
//!
//! An artifact recorded under another build identity (target, toolchain,
//! profile) than the intent's is never offered; one of unknown identity
//! ranks below matching ones. Keys that plans kept offering and builds never
//! used are not guessed again. Within a budget, the candidates that save the
//! most compile time per byte are kept, still in the build's order.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};

use foldhash::{HashMap as FastMap, HashSet as FastSet};

use crate::manifest::{Identity, shard_bucket, shard_hash};

mod wire;
pub use wire::{Budget, BuildIntent, Disposition, PlanCandidate, PrefetchPlan};

/// Which source offered a candidate (the `source` label of the metrics),
/// strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKind {
    Exact,
    History,
    Known,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::History => "history",
            Self::Known => "known",
        }
    }
}

/// A candidate, borrowed from the source's state, and the source that
/// offered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen<'a> {
    pub candidate: PlanCandidate<&'a str>,
    pub source: SourceKind,
}

/// What the planner knows about one artifact in one context, borrowed from
/// the source: looking up an artifact copies nothing and touches no shared
/// reference count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known<'a> {
    pub cache_key: &'a str,
    pub crate_name: &'a str,
    pub seen_count: u64,
    /// Milliseconds since the Unix epoch.
    pub last_seen_ms: u64,
    pub compile_time_ms: u64,
    pub size_bytes: u64,
    /// The identity it was built for, when a document said.
    pub identity: Option<&'a Identity>,
}

/// The state a plan is computed from. Implemented by the service's state and,
/// later, by the client's local fallback planner.
pub trait PlanSource {
    type Error;
    /// True when nothing at all is known: plans fall back with `no_state`.
    fn is_empty(&self) -> Result<bool, Self::Error>;
    /// Artifacts seen in `namespace` for exactly `name@version`.
    fn exact_dep(
        &self,
        namespace: &str,
        name: &str,
        version: &str,
    ) -> Result<Vec<Known<'_>>, Self::Error>;
    /// Artifacts of the shard `shard_hash` ingested for `namespace`.
    fn shard(&self, namespace: &str, shard_hash: &str) -> Result<Vec<Known<'_>>, Self::Error>;
    /// Artifacts recorded in build history for a crate, best first
    /// ([`rank_order`]): a plan takes the first few that qualify.
    fn history(&self, crate_name: &str) -> Result<impl Iterator<Item = Known<'_>>, Self::Error>;
    /// Any key known for a crate, best first ([`rank_order`]).
    fn known_keys(&self, crate_name: &str) -> Result<impl Iterator<Item = Known<'_>>, Self::Error>;
    /// Every key `namespace`'s shards recorded for a crate, whatever the
    /// shard: what this namespace built the crate as before.
    fn namespace_keys(&self, namespace: &str, crate_name: &str) -> Result<Vec<&str>, Self::Error>;
    /// [`shard_bucket`] of a package; a source may answer from memory.
    fn shard_bucket(&self, package: &str) -> u64 {
        shard_bucket(package)
    }
    /// True for a key plans offered again and again and builds never used:
    /// it is not guessed any more (an exact match still offers it).
    fn never_used(&self, _cache_key: &str) -> bool {
        false
    }
}

/// Why a plan could not execute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    NoState,
    NoCandidates,
    PlanningError,
}

impl Fallback {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoState => "no_state",
            Self::NoCandidates => "no_candidates",
            Self::PlanningError => "planning_error",
        }
    }
}

/// The result of planning, before the service adds `plan_id` and `planner`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned<'a> {
    Execute(Vec<Chosen<'a>>),
    Fallback(Fallback),
}

/// Per crate, at most this many history or known-key candidates are offered.
pub const WEAKER_SOURCE_LIMIT: usize = 3;

/// Cargo writes package names with `-`, rustc crate names use `_`.
/// Borrowed when there is nothing to replace.
pub fn normalize_crate(name: &str) -> Cow<'_, str> {
    if name.contains('-') {
        Cow::Owned(name.replace('-', "_"))
    } else {
        Cow::Borrowed(name)
    }
}

/// Drops what was built for another identity than `wanted`.
fn keep_identity(known: &mut Vec<Known<'_>>, wanted: Option<&Identity>) {
    if let Some(wanted) = wanted {
        known.retain(|k| k.identity.is_none_or(|i| i == wanted));
    }
}

/// The order a crate's artifacts are offered in: a known identity first
/// (only matching ones are left by then), then most recently seen, then most
/// often seen, then by key for stability.
pub fn rank_order(a: &Known<'_>, b: &Known<'_>) -> Ordering {
    b.identity
        .is_some()
        .cmp(&a.identity.is_some())
        .then(b.last_seen_ms.cmp(&a.last_seen_ms))
        .then(b.seen_count.cmp(&a.seen_count))
        .then(a.cache_key.cmp(b.cache_key))
}

fn rank(known: &mut [Known<'_>]) {
    known.sort_by(rank_order);
}

/// The first [`WEAKER_SOURCE_LIMIT`] of a weaker source's ranked keys that
/// can hit: not built against a changed dependency, not given up on, not of
/// another identity.
fn best_guesses<'a, S: PlanSource>(
    ranked: impl Iterator<Item = Known<'a>>,
    stale: Option<&HashSet<&str>>,
    identity: Option<&Identity>,
    source: &S,
) -> impl Iterator<Item = Known<'a>> {
    ranked
        .filter(move |k| stale.is_none_or(|stale| !stale.contains(k.cache_key)))
        .filter(move |k| identity.is_none_or(|wanted| k.identity.is_none_or(|i| i == wanted)))
        .filter(|k| !source.never_used(k.cache_key))
        .take(WEAKER_SOURCE_LIMIT)
}

/// Plans `intent` against `source`. Errors from the source propagate; the
/// caller turns them into `use_fallback` with `planning_error`.
pub fn plan<'a, S: PlanSource>(
    intent: &BuildIntent,
    source: &'a S,
) -> Result<Planned<'a>, S::Error> {
    if source.is_empty()? {
        return Ok(Planned::Fallback(Fallback::NoState));
    }
    // Maps keyed by what a request sent are seeded per process (foldhash),
    // so no intent can make them degrade.
    // Sized once: growing these maps request by request showed in profiles.
    let crates = intent.crate_names.len() + intent.cargo_lock_deps.len();
    let mut order: Vec<Cow<str>> = Vec::with_capacity(crates);
    let mut position: FastMap<Cow<str>, usize> =
        FastMap::with_capacity_and_hasher(crates, Default::default());
    for name in &intent.crate_names {
        let name = normalize_crate(name);
        if !position.contains_key(&name) {
            position.insert(name.clone(), order.len());
            order.push(name);
        }
    }
    // Weaker sources answer only for crates the build named.
    let named = order.len();
    // Crates only known from Cargo.lock rank after the named ones.
    for (name, _) in &intent.cargo_lock_deps {
        let name = normalize_crate(name);
        if !position.contains_key(&name) {
            position.insert(name.clone(), order.len());
            order.push(name);
        }
    }

    let identity = intent.identity.as_ref();
    // (crate position, source, rank within crate) → candidate
    let mut chosen: Vec<(usize, SourceKind, usize, Known<'a>)> =
        Vec::with_capacity(WEAKER_SOURCE_LIMIT * intent.crate_names.len());
    let mut resolved: FastSet<Cow<str>> =
        FastSet::with_capacity_and_hasher(crates, Default::default());
    // Changed crates and their dependents → their keys that cannot hit.
    let mut stale: FastMap<Cow<str>, HashSet<&'a str>> = FastMap::default();

    if let Some(namespace) = intent.namespace.as_deref() {
        let mut exact = Vec::new();
        for (name, version) in &intent.cargo_lock_deps {
            exact.extend(source.exact_dep(namespace, name, version)?);
        }
        let mut buckets: BTreeMap<u64, Vec<&(String, String)>> = BTreeMap::new();
        for dep in &intent.cargo_lock_deps {
            buckets
                .entry(source.shard_bucket(&dep.0))
                .or_default()
                .push(dep);
        }
        // The packages of a bucket whose shard no longer matches changed;
        // those the namespace built before have keys that cannot hit.
        let mut built_before = Vec::new();
        for packages in buckets.values() {
            let found = source.shard(namespace, &shard_hash(packages))?;
            if found.is_empty() {
                for (name, _) in packages {
                    let name = normalize_crate(name);
                    if stale.contains_key(&name) {
                        continue;
                    }
                    let keys = source.namespace_keys(namespace, &name)?;
                    if !keys.is_empty() {
                        stale.insert(name.clone(), keys.into_iter().collect());
                        built_before.push(name);
                    }
                }
            }
            exact.extend(found);
        }
        let built_before = built_before.iter().map(|name| name.to_string()).collect();
        for name in dependents(&intent.crate_deps, built_before) {
            if let std::collections::hash_map::Entry::Vacant(slot) = stale.entry(name.into()) {
                let keys = source.namespace_keys(namespace, slot.key())?;
                slot.insert(keys.into_iter().collect());
            }
        }
        let mut by_crate: BTreeMap<Cow<str>, Vec<Known<'a>>> = BTreeMap::new();
        for known in exact {
            by_crate
                .entry(normalize_crate(known.crate_name))
                .or_default()
                .push(known);
        }
        for (name, mut known) in by_crate {
            if stale.contains_key(&name) {
                continue;
            }
            keep_identity(&mut known, identity);
            if known.is_empty() {
                continue;
            }
            rank(&mut known);
            let at = *position.entry(name.clone()).or_insert(usize::MAX);
            for (i, k) in known.into_iter().enumerate() {
                chosen.push((at, SourceKind::Exact, i, k));
            }
            resolved.insert(name);
        }
    }

    for strength in [SourceKind::History, SourceKind::Known] {
        for name in &order[..named] {
            if resolved.contains(name) {
                continue;
            }
            let (stale, at) = (stale.get(name), position[name]);
            let before = chosen.len();
            let picked = |(i, k)| (at, strength, i, k);
            if strength == SourceKind::History {
                let best = best_guesses(source.history(name)?, stale, identity, source);
                chosen.extend(best.enumerate().map(picked));
            } else {
                let best = best_guesses(source.known_keys(name)?, stale, identity, source);
                chosen.extend(best.enumerate().map(picked));
            }
            if chosen.len() > before {
                resolved.insert(name.clone());
            }
        }
    }

    chosen.sort_by_key(|c| (c.0, c.1, c.2));
    let mut seen: FastSet<&str> =
        FastSet::with_capacity_and_hasher(chosen.len(), Default::default());
    let mut candidates: Vec<Chosen> = chosen
        .into_iter()
        .filter(|c| seen.insert(c.3.cache_key))
        .map(|(_, source, _, known)| Chosen {
            source,
            candidate: candidate(known),
        })
        .collect();
    if let Some(budget) = intent.budget {
        within_budget(&mut candidates, budget);
    }
    Ok(if candidates.is_empty() {
        Planned::Fallback(Fallback::NoCandidates)
    } else {
        Planned::Execute(candidates)
    })
}

/// Every crate that depends, directly or not, on one of `changed`.
fn dependents(graph: &BTreeMap<String, Vec<String>>, changed: Vec<String>) -> HashSet<String> {
    let mut users: HashMap<String, Vec<&str>> = HashMap::new();
    for (name, deps) in graph {
        for dep in deps {
            users
                .entry(normalize_crate(dep).into_owned())
                .or_default()
                .push(name.as_str());
        }
    }
    let mut found = HashSet::new();
    let mut queue = changed;
    while let Some(name) = queue.pop() {
        for user in users.get(&name).into_iter().flatten() {
            let user = normalize_crate(user).into_owned();
            if found.insert(user.clone()) {
                queue.push(user);
            }
        }
    }
    found
}

/// Keeps the candidates that save the most compile time per byte until
/// either limit is reached, in their original (build) order. A candidate
/// of unknown size or time is worth the least: known values come first.
fn within_budget(candidates: &mut Vec<Chosen<'_>>, budget: Budget) {
    let max_count = budget.max_candidates.unwrap_or(usize::MAX);
    let max_bytes = budget.max_bytes.unwrap_or(u64::MAX);
    let density = |c: &PlanCandidate<&str>| c.compile_time_ms as f64 / c.size_bytes.max(1) as f64;
    let mut by_value: Vec<usize> = (0..candidates.len()).collect();
    by_value.sort_by(|&a, &b| {
        let (a, b) = (&candidates[a].candidate, &candidates[b].candidate);
        density(b).total_cmp(&density(a))
    });
    let mut keep = vec![false; candidates.len()];
    let (mut count, mut bytes) = (0usize, 0u64);
    for i in by_value {
        if count == max_count {
            break;
        }
        let size = candidates[i].candidate.size_bytes;
        if bytes.saturating_add(size) > max_bytes {
            continue;
        }
        keep[i] = true;
        count += 1;
        bytes += size;
    }
    let mut index = 0;
    candidates.retain(|_| {
        index += 1;
        keep[index - 1]
    });
}

fn candidate(known: Known<'_>) -> PlanCandidate<&str> {
    PlanCandidate {
        cache_key: known.cache_key,
        crate_name: known.crate_name,
        compile_time_ms: known.compile_time_ms,
        size_bytes: known.size_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Fake {
        deps: HashMap<(String, String), Vec<Known<'static>>>,
        shards: HashMap<(String, String), Vec<Known<'static>>>,
        history: HashMap<String, Vec<Known<'static>>>,
        keys: HashMap<String, Vec<Known<'static>>>,
        fail: bool,
    }

    impl PlanSource for Fake {
        type Error = &'static str;
        fn is_empty(&self) -> Result<bool, Self::Error> {
            Ok(self.deps.is_empty()
                && self.shards.is_empty()
                && self.history.is_empty()
                && self.keys.is_empty())
        }
        fn exact_dep(
            &self,
            ns: &str,
            name: &str,
            version: &str,
        ) -> Result<Vec<Known<'_>>, Self::Error> {
            if self.fail {
                return Err("broken");
            }
            Ok(self
                .deps
                .get(&(ns.to_string(), format!("{name}@{version}")))
                .cloned()
                .unwrap_or_default())
        }
        fn shard(&self, ns: &str, hash: &str) -> Result<Vec<Known<'_>>, Self::Error> {
            Ok(self
                .shards
                .get(&(ns.to_string(), hash.to_string()))
                .cloned()
                .unwrap_or_default())
        }
        fn history(&self, name: &str) -> Result<impl Iterator<Item = Known<'_>>, Self::Error> {
            Ok(ranked(self.history.get(name)))
        }
        fn known_keys(&self, name: &str) -> Result<impl Iterator<Item = Known<'_>>, Self::Error> {
            Ok(ranked(self.keys.get(name)))
        }
        fn namespace_keys(&self, ns: &str, name: &str) -> Result<Vec<&str>, Self::Error> {
            Ok(self
                .shards
                .iter()
                .filter(|((n, _), _)| n == ns)
                .flat_map(|(_, known)| known)
                .filter(|k| k.crate_name == name)
                .map(|k| k.cache_key)
                .collect())
        }
    }

    fn ranked(known: Option<&Vec<Known<'static>>>) -> std::vec::IntoIter<Known<'static>> {
        let mut known = known.cloned().unwrap_or_default();
        rank(&mut known);
        known.into_iter()
    }

    /// Leaks its strings: a test's source lives as long as the test.
    fn leak(text: &str) -> &'static str {
        Box::leak(text.to_string().into_boxed_str())
    }

    fn known(key: &str, name: &str, seen: u64, last: u64) -> Known<'static> {
        Known {
            cache_key: leak(key),
            crate_name: leak(name),
            seen_count: seen,
            last_seen_ms: last,
            compile_time_ms: 0,
            size_bytes: 0,
            identity: None,
        }
    }

    fn keys(planned: Planned) -> Vec<String> {
        match planned {
            Planned::Execute(c) => c
                .into_iter()
                .map(|c| c.candidate.cache_key.to_string())
                .collect(),
            Planned::Fallback(f) => panic!("fell back: {f:?}"),
        }
    }

    fn intent(names: &[&str], ns: Option<&str>, deps: &[(&str, &str)]) -> BuildIntent {
        BuildIntent {
            crate_names: names.iter().map(|s| s.to_string()).collect(),
            namespace: ns.map(String::from),
            cargo_lock_deps: deps
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            crate_deps: BTreeMap::new(),
            identity: None,
            budget: None,
        }
    }

    #[test]
    fn empty_state_and_no_match_fall_back_with_their_reasons() {
        let empty = Fake::default();
        assert_eq!(
            plan(&intent(&["serde"], None, &[]), &empty).unwrap(),
            Planned::Fallback(Fallback::NoState)
        );
        let mut some = Fake::default();
        some.history
            .insert("tokio".into(), vec![known("t1", "tokio", 1, 1)]);
        assert_eq!(
            plan(&intent(&["serde"], None, &[]), &some).unwrap(),
            Planned::Fallback(Fallback::NoCandidates)
        );
        some.fail = true;
        assert!(
            plan(
                &intent(&["serde"], Some("ci"), &[("serde", "1.0.0")]),
                &some
            )
            .is_err()
        );
    }

    #[test]
    fn stronger_sources_resolve_crates_first_and_order_follows_the_intent() {
        let mut s = Fake::default();
        s.deps.insert(
            ("ci".into(), "serde@1.0.210".into()),
            vec![known("exact-serde", "serde", 1, 1)],
        );
        s.history
            .insert("serde".into(), vec![known("hist-serde", "serde", 9, 9)]);
        s.history
            .insert("tokio".into(), vec![known("hist-tokio", "tokio", 1, 5)]);
        s.keys
            .insert("tokio".into(), vec![known("key-tokio", "tokio", 1, 1)]);
        s.keys
            .insert("anyhow".into(), vec![known("key-anyhow", "anyhow", 1, 1)]);
        let planned = plan(
            &intent(
                &["anyhow", "tokio", "serde"],
                Some("ci"),
                &[("serde", "1.0.210")],
            ),
            &s,
        )
        .unwrap();
        assert_eq!(keys(planned), ["key-anyhow", "hist-tokio", "exact-serde"]);
    }

    #[test]
    fn ranking_prefers_recent_then_frequent_and_keys_are_unique() {
        let mut s = Fake::default();
        s.history.insert(
            "serde".into(),
            vec![
                known("old", "serde", 50, 1),
                known("new", "serde", 1, 9),
                known("new-often", "serde", 7, 9),
            ],
        );
        s.keys
            .insert("serde_json".into(), vec![known("new", "serde_json", 1, 1)]);
        let planned = plan(&intent(&["serde", "serde-json", "serde"], None, &[]), &s).unwrap();
        assert_eq!(keys(planned), ["new-often", "new", "old"]);
    }

    #[test]
    fn an_ingested_shard_matches_only_the_exact_versions_of_its_bucket() {
        let deps = [("serde", "1.0.210"), ("serde_json", "1.0.1")];
        let mut s = Fake::default();
        let bucket = shard_bucket("serde");
        let packages: Vec<(String, String)> = deps
            .iter()
            .filter(|(n, _)| shard_bucket(n) == bucket)
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        s.shards.insert(
            ("ci".into(), shard_hash(&packages)),
            vec![known("shard-serde", "serde", 1, 1)],
        );
        let hit = plan(&intent(&["serde"], Some("ci"), &deps), &s).unwrap();
        assert_eq!(keys(hit), ["shard-serde"]);
        let bumped = [("serde", "1.0.211"), ("serde_json", "1.0.1")];
        assert_eq!(
            plan(&intent(&["serde"], Some("ci"), &bumped), &s).unwrap(),
            Planned::Fallback(Fallback::NoCandidates)
        );
        assert_eq!(
            plan(&intent(&["serde"], Some("other"), &deps), &s).unwrap(),
            Planned::Fallback(Fallback::NoCandidates)
        );
    }

    #[test]
    fn a_changed_dependency_rules_out_its_own_and_its_dependents_old_artifacts() {
        let before = [
            ("itoa", "1.0.15"),
            ("serde_json", "1.0.1"),
            ("anyhow", "1.0.0"),
        ];
        let names = ["itoa", "serde_json", "anyhow"];
        let buckets: HashSet<u64> = names.iter().map(|n| shard_bucket(n)).collect();
        assert_eq!(buckets.len(), 3, "the test needs three shards");
        let mut s = Fake::default();
        for (name, version) in before {
            let packages = vec![(name.to_string(), version.to_string())];
            s.shards.insert(
                ("ci".into(), shard_hash(&packages)),
                vec![known(&format!("{name}-old"), name, 1, 1)],
            );
        }
        // Another branch built the new itoa: a key this namespace never had.
        s.history.insert(
            "itoa".into(),
            vec![
                known("itoa-old", "itoa", 9, 9),
                known("itoa-new", "itoa", 1, 1),
            ],
        );
        s.history.insert(
            "serde_json".into(),
            vec![known("serde_json-old", "serde_json", 9, 9)],
        );
        let mut bumped = intent(
            &names,
            Some("ci"),
            &[
                ("itoa", "1.0.14"),
                ("serde_json", "1.0.1"),
                ("anyhow", "1.0.0"),
            ],
        );
        bumped
            .crate_deps
            .insert("serde_json".into(), vec!["itoa".into()]);
        assert_eq!(keys(plan(&bumped, &s).unwrap()), ["itoa-new", "anyhow-old"]);
        // Without the graph only the changed package itself is ruled out.
        bumped.crate_deps.clear();
        assert_eq!(
            keys(plan(&bumped, &s).unwrap()),
            ["itoa-new", "serde_json-old", "anyhow-old"]
        );
        // Nothing changed: every exact key, no guesses.
        let mut same = intent(&names, Some("ci"), &before);
        same.crate_deps
            .insert("serde_json".into(), vec!["itoa".into()]);
        assert_eq!(
            keys(plan(&same, &s).unwrap()),
            ["itoa-old", "serde_json-old", "anyhow-old"]
        );
    }

    fn id(target: &str, profile: &str) -> Option<&'static Identity> {
        Some(Box::leak(Box::new(Identity {
            target: target.into(),
            toolchain: "t".into(),
            profile: profile.into(),
        })))
    }

    #[test]
    fn another_identity_is_never_offered_and_an_unknown_one_ranks_last() {
        let linux = "x86_64-unknown-linux-gnu";
        let mut s = Fake::default();
        let mut release = known("serde-release", "serde", 9, 9);
        release.identity = id(linux, "release");
        let mut musl = known("serde-musl", "serde", 9, 9);
        musl.identity = id("x86_64-unknown-linux-musl", "dev");
        let mut dev = known("serde-dev", "serde", 1, 1);
        dev.identity = id(linux, "dev");
        let unknown = known("serde-unknown", "serde", 9, 9);
        s.history
            .insert("serde".into(), vec![release, musl, unknown, dev]);
        let mut wanted = intent(&["serde"], None, &[]);
        wanted.identity = id(linux, "dev").cloned();
        assert_eq!(
            keys(plan(&wanted, &s).unwrap()),
            ["serde-dev", "serde-unknown"]
        );
        // An intent without identity is the old behaviour: everything ranks.
        wanted.identity = None;
        assert_eq!(keys(plan(&wanted, &s).unwrap()).len(), 3);
    }

    #[test]
    fn a_budget_keeps_the_most_time_saved_per_byte_in_build_order() {
        let mut s = Fake::default();
        // (crate, compile ms, bytes): b is dense, c is huge, a in between.
        for (name, ms, bytes) in [("a", 1000, 1000), ("b", 4000, 100), ("c", 5000, 100_000)] {
            let mut k = known(&format!("{name}-1"), name, 1, 1);
            k.compile_time_ms = ms;
            k.size_bytes = bytes;
            s.history.insert(name.into(), vec![k]);
        }
        let mut wanted = intent(&["a", "b", "c"], None, &[]);
        wanted.budget = Some(Budget {
            max_candidates: Some(2),
            max_bytes: None,
        });
        assert_eq!(keys(plan(&wanted, &s).unwrap()), ["a-1", "b-1"]);
        wanted.budget = Some(Budget {
            max_candidates: None,
            max_bytes: Some(50_000),
        });
        assert_eq!(keys(plan(&wanted, &s).unwrap()), ["a-1", "b-1"]);
        wanted.budget = Some(Budget {
            max_candidates: Some(1),
            max_bytes: Some(500),
        });
        assert_eq!(keys(plan(&wanted, &s).unwrap()), ["b-1"]);
        let Planned::Execute(chosen) = plan(&wanted, &s).unwrap() else {
            panic!()
        };
        assert_eq!(chosen[0].candidate.compile_time_ms, 4000);
        assert_eq!(chosen[0].source, SourceKind::History);
    }
}
