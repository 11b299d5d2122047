//! Getting entries from the bucket before rustc would run: one compile's
//! entries on demand ([`fetch`]), and a whole build's at its start
//! ([`build_start`]).
//!
//! A unit the build needs now is never queued behind speculative downloads:
//! prefetch takes at most half the remote's transfer slots, fetches take
//! their own. Concurrent fetches of one pre-key download once; a pre-key
//! the bucket does not have is not asked again for 30 s; a remote whose
//! requests keep failing is not asked for 30 s (the breaker). None of this
//! can serve a wrong entry: whatever is imported is proven by the wrapper's
//! own lookup, like a local entry.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::StreamExt;
use futures::future::FutureExt;
use tracing::{debug, info, warn};

use super::feedback;
use super::planner::{self, Decision, PlannerSettings};
use super::state::PendingPlan;
use super::state::{InFlight, State};
use crate::remote::{Pulled, Remote};
use crate::store::Store;

/// How long a pre-key the bucket lacks is not asked again.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(30);
/// At most this many entries are imported for one pre-key.
const MAX_PER_PREKEY: usize = 4;

/// Downloads and imports the bucket's entries for `(crate_name, pre_key)`;
/// the number imported. Never fails: a failure is 0 and feeds the breaker.
pub fn fetch(
    state: &Arc<State>,
    remote: Remote,
    id: String,
    crate_name: String,
    pre_key: String,
) -> InFlight {
    let slot = (id.clone(), crate_name.clone(), pre_key.clone());
    let mut inflight = state.inflight.lock().expect("inflight lock");
    if let Some(existing) = inflight.get(&slot) {
        return existing.clone();
    }
    let task_state = state.clone();
    let task_slot = slot.clone();
    let future = async move {
        let imported = fetch_once(&task_state, &remote, &id, &crate_name, &pre_key).await;
        task_state
            .inflight
            .lock()
            .expect("inflight lock")
            .remove(&task_slot);
        imported
    }
    .boxed()
    .shared();
    // Run it even if every caller gives up at its deadline: a later compile
    // of the same unit then finds it locally.
    tokio::spawn(future.clone());
    inflight.insert(slot, future.clone());
    future
}

async fn fetch_once(
    state: &State,
    remote: &Remote,
    id: &str,
    crate_name: &str,
    pre_key: &str,
) -> usize {
    let negative_key = (id.to_string(), crate_name.to_string(), pre_key.to_string());
    if let Some(at) = state
        .negative
        .lock()
        .expect("negative lock")
        .get(&negative_key)
        && at.elapsed() < NEGATIVE_TTL
    {
        return 0;
    }
    if state.breaker_open(id) {
        return 0;
    }
    let keys = match remote.keys_for_prekey(crate_name, pre_key).await {
        Ok(keys) => {
            state.breaker_success(id);
            keys
        }
        Err(err) => {
            warn!(crate_name, "remote check failed: {err}");
            state.breaker_failure(id);
            return 0;
        }
    };
    if keys.is_empty() {
        state
            .negative
            .lock()
            .expect("negative lock")
            .insert(negative_key, Instant::now());
        return 0;
    }
    let mut imported = 0;
    for key in keys.into_iter().take(MAX_PER_PREKEY) {
        match pull_once(state, remote, crate_name, &key, "remote").await {
            Ok(Pulled::Imported { .. }) => {
                imported += 1;
                state.count_remote_hit();
                state.fetched.lock().expect("fetched lock").insert(key);
            }
            Ok(_) => {}
            Err(err) => {
                warn!(crate_name, key, "remote entry refused: {err:#}");
                state.breaker_failure(id);
            }
        }
    }
    debug!(crate_name, imported, "fetched");
    imported
}

/// Pulls one entry, recording `origin`. Pulls of one key never overlap: a
/// second one (a compile's fetch while the prefetch has the same entry in
/// flight) waits for the first and then finds the entry present, so an
/// entry is downloaded once and its origin is set once, before its first hit.
async fn pull_once(
    state: &State,
    remote: &Remote,
    crate_name: &str,
    key: &str,
    origin: &'static str,
) -> Result<Pulled> {
    let lock = state
        .pulling
        .lock()
        .expect("pulling lock")
        .entry(key.to_string())
        .or_default()
        .clone();
    let pulled = {
        let _turn = lock.lock().await;
        let _shown = state.transfer("download", key);
        remote.pull(crate_name, key, Some(origin)).await
    };
    let mut pulling = state.pulling.lock().expect("pulling lock");
    // Clones are taken under the map's lock: two left (the map's and
    // ours) means nobody else waits for this key.
    if Arc::strong_count(&lock) == 2 {
        pulling.remove(key);
    }
    pulled
}

/// What one build start asks for.
pub struct BuildStart {
    pub remote: Remote,
    pub remote_id: String,
    pub cargo_pid: u32,
    pub lockfile: String,
    pub planner: Option<PlannerSettings>,
    pub namespace: Option<String>,
    pub identity: Option<kache_core::manifest::Identity>,
    /// Run even if this cargo process already had a prefetch.
    pub explicit: bool,
}

/// Prefetches, at most once per cargo process: the planner's candidates in
/// order when it has a plan, else every entry the bucket holds for the
/// crates of `Cargo.lock` that the local store lacks. Returns how many
/// entries were imported and where the list came from.
pub async fn build_start(state: Arc<State>, start: BuildStart) -> (usize, String) {
    {
        let mut seen = state.builds.lock().expect("builds lock");
        seen.retain(|_, at| at.elapsed() < Duration::from_secs(6 * 3600));
        if seen.insert(start.cargo_pid, Instant::now()).is_some() && !start.explicit {
            return (0, "already prefetched for this build".into());
        }
    }
    if !start.explicit {
        feedback::attach_build(&state, start.cargo_pid);
    }
    let mut origin = "Cargo.lock".to_string();
    if let Some(planner) = &start.planner {
        let lockfile = PathBuf::from(&start.lockfile);
        let namespace = start.namespace.clone();
        let identity = start.identity.clone();
        let intent =
            tokio::task::spawn_blocking(move || planner::intent(&lockfile, namespace, identity))
                .await;
        let decision = match intent {
            Ok(Ok(intent)) => planner::decide(planner, &intent).await,
            Ok(Err(err)) => Decision::Fallback(format!("no intent: {err:#}")),
            Err(err) => Decision::Fallback(format!("no intent: {err}")),
        };
        match decision {
            Decision::Execute {
                plan_id,
                candidates,
            } => {
                let mut wanted: Vec<(String, String)> = candidates
                    .into_iter()
                    .map(|c| (c.crate_name.to_string(), c.cache_key.to_string()))
                    .collect();
                let offered: Vec<String> = wanted.iter().map(|(_, key)| key.clone()).collect();
                let count = wanted.len();
                // An intent names libraries; build scripts (all named
                // `build_script_build`, run before their crate compiles)
                // come first, as the `Cargo.lock` prefetch takes them.
                if let Ok(scripts) = start
                    .remote
                    .list_entries(|c| c == "build_script_build")
                    .await
                {
                    wanted.splice(0..0, scripts);
                }
                let mut imported = import_in_order(&state, &start.remote, wanted).await;
                let done = imported.len();
                // Feedback is about the plan's own candidates.
                imported.retain(|key| offered.contains(key));
                info!(
                    candidates = count,
                    imported = imported.len(),
                    "prefetched the planner's plan"
                );
                feedback::remember(
                    &state,
                    PendingPlan {
                        settings: planner.clone(),
                        plan_id,
                        offered,
                        imported,
                        cargo_pid: (!start.explicit).then_some(start.cargo_pid),
                        made: Instant::now(),
                    },
                );
                return (done, format!("planner ({count} candidates)"));
            }
            Decision::Nothing => return (0, "planner: do_nothing".into()),
            Decision::Fallback(reason) => {
                info!("planner: falling back to Cargo.lock: {reason}");
                origin = format!("Cargo.lock (planner fallback: {reason})");
            }
        }
    }
    let packages = match lock_packages(&start.lockfile) {
        Ok(packages) => packages,
        Err(err) => {
            debug!("no prefetch: {err:#}");
            return (0, format!("nothing: {err:#}"));
        }
    };
    let wanted = |crate_name: &str| crate::lockfile::needs(&packages, crate_name);
    let listed = match start.remote.list_entries(wanted).await {
        Ok(listed) => listed,
        Err(err) => {
            warn!("prefetch listing failed: {err}");
            if err.is_transient() {
                state.breaker_failure(&start.remote_id);
            }
            return (0, format!("nothing: {err}"));
        }
    };
    let imported = import_in_order(&state, &start.remote, listed).await;
    (imported.len(), origin)
}

/// Pulls the entries the local store lacks, in the given order, with at
/// most half the remote's transfer slots; marks each as prefetched.
/// Returns the keys imported.
async fn import_in_order(
    state: &Arc<State>,
    remote: &Remote,
    wanted: Vec<(String, String)>,
) -> Vec<String> {
    let cache_dir = state.cache_dir.clone();
    let missing = tokio::task::spawn_blocking(move || -> Result<Vec<(String, String)>> {
        let store = Store::open(&cache_dir)?;
        Ok(wanted
            .into_iter()
            .filter(|(_, key)| store.index.meta(key).is_ok_and(|m| m.is_none()))
            .collect())
    })
    .await;
    let Ok(Ok(mut missing)) = missing else {
        return Vec::new();
    };
    // Speculation is bounded: a bucket (or a plan) naming a million entries
    // costs at most this many downloads and bytes.
    let limits = *remote.limits();
    if missing.len() > limits.max_prefetch_entries {
        info!(
            listed = missing.len(),
            kept = limits.max_prefetch_entries,
            "prefetch capped by KACHE_PREFETCH_MAX_ENTRIES"
        );
        missing.truncate(limits.max_prefetch_entries);
    }
    info!(entries = missing.len(), "prefetching");
    let mut bytes = 0u64;
    let slots = (remote.concurrency / 2).max(1);
    let mut imported = Vec::new();
    let mut results = futures::stream::iter(missing.into_iter().map(|(crate_name, key)| {
        let remote = remote.clone();
        async move {
            let pulled = pull_once(state, &remote, &crate_name, &key, "prefetch").await;
            (key.clone(), pulled)
        }
    }))
    .buffered(slots);
    while let Some((key, result)) = results.next().await {
        match result {
            Ok(Pulled::Imported { original_bytes, .. }) => {
                imported.push(key);
                state.count_prefetched();
                bytes += original_bytes;
                if bytes >= limits.max_prefetch_bytes {
                    // Dropping the stream cancels the downloads under way;
                    // their temporary directories go with them.
                    info!(bytes, "prefetch stopped at KACHE_PREFETCH_MAX_BYTES");
                    break;
                }
            }
            Ok(_) => {}
            Err(err) => warn!(key, "prefetch refused an entry: {err:#}"),
        }
    }
    imported
}

/// Package names of a `Cargo.lock`.
fn lock_packages(path: &str) -> Result<BTreeSet<String>> {
    Ok(crate::lockfile::packages(std::path::Path::new(path))?
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}
