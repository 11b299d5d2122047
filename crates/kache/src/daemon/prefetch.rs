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
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt, Shared};
use tracing::{debug, info, warn};

use super::server::State;
use crate::remote::{Pulled, Remote};
use crate::store::Store;

/// How long a pre-key the bucket lacks is not asked again.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(30);
/// Consecutive failures that open the breaker, and how long it stays open.
pub const BREAKER_FAILURES: u32 = 3;
pub const BREAKER_OPEN: Duration = Duration::from_secs(30);
/// At most this many entries are imported for one pre-key.
const MAX_PER_PREKEY: usize = 4;

/// A fetch in flight, shared by every caller asking for the same pre-key.
pub type InFlight = Shared<BoxFuture<'static, usize>>;

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
        match remote.pull(crate_name, &key).await {
            Ok(Pulled::Imported { .. }) => {
                imported += 1;
                state.count_remote_hit();
                mark_origin(state, &key, "remote").await;
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

async fn mark_origin(state: &State, key: &str, source: &'static str) {
    let cache_dir = state.cache_dir.clone();
    let key = key.to_string();
    let _ = tokio::task::spawn_blocking(move || -> Result<()> {
        Store::open(&cache_dir)?.index.set_origin(&key, source)
    })
    .await;
}

/// Prefetches, at most once per cargo process, every entry the bucket holds
/// for the crates of `lockfile` that the local store lacks.
pub async fn build_start(
    state: Arc<State>,
    remote: Remote,
    remote_id: String,
    cargo_pid: u32,
    lockfile: String,
) {
    {
        let mut seen = state.builds.lock().expect("builds lock");
        seen.retain(|_, at| at.elapsed() < Duration::from_secs(6 * 3600));
        if seen.insert(cargo_pid, Instant::now()).is_some() {
            return;
        }
    }
    let packages = match lock_packages(&lockfile) {
        Ok(packages) => packages,
        Err(err) => {
            debug!("no prefetch: {err:#}");
            return;
        }
    };
    let wanted = |crate_name: &str| {
        crate_name == "build_script_build"
            || crate_name
                .split_once(':')
                .is_some_and(|(p, _)| packages.contains(p))
            || packages.iter().any(|p| p.replace('-', "_") == crate_name)
    };
    let listed = match remote.list_entries(wanted).await {
        Ok(listed) => listed,
        Err(err) => {
            warn!("prefetch listing failed: {err}");
            if err.is_transient() {
                state.breaker_failure(&remote_id);
            }
            return;
        }
    };
    let cache_dir = state.cache_dir.clone();
    let missing = tokio::task::spawn_blocking(move || -> Result<Vec<(String, String)>> {
        let store = Store::open(&cache_dir)?;
        Ok(listed
            .into_iter()
            .filter(|(_, key)| store.index.meta(key).is_ok_and(|m| m.is_none()))
            .collect())
    })
    .await;
    let Ok(Ok(missing)) = missing else {
        return;
    };
    info!(entries = missing.len(), "prefetching");
    let slots = (remote.concurrency / 2).max(1);
    let mut results = futures::stream::iter(missing.into_iter().map(|(crate_name, key)| {
        let remote = remote.clone();
        async move { (key.clone(), remote.pull(&crate_name, &key).await) }
    }))
    .buffer_unordered(slots);
    while let Some((key, result)) = results.next().await {
        match result {
            Ok(Pulled::Imported { .. }) => {
                state.count_prefetched();
                mark_origin(&state, &key, "prefetch").await;
            }
            Ok(_) => {}
            Err(err) => warn!(key, "prefetch refused an entry: {err:#}"),
        }
    }
}

/// Package names of a `Cargo.lock`.
fn lock_packages(path: &str) -> Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(path)?;
    let lock: toml::Table = toml::from_str(&text)?;
    Ok(lock
        .get("package")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("name")?.as_str().map(String::from))
        .collect())
}
