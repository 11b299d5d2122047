//! What the daemon shares between connections and workers: the open
//! remotes, fetches in flight, the breaker, pending plans, counters and the
//! transfers under way. `server` creates it; `uploads`, `prefetch` and
//! `feedback` work on it; it imports none of them.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::future::{BoxFuture, Shared};
use tokio::sync::Notify;
use tracing::warn;

use super::client;
use super::planner::PlannerSettings;
use super::protocol::{ActiveTransfer, RemoteSettings, Status};
use crate::remote::Remote;
use crate::store::Store;

/// Consecutive failures that open the breaker, and how long it stays open.
pub const BREAKER_FAILURES: u32 = 3;
pub const BREAKER_OPEN: Duration = Duration::from_secs(30);

/// A fetch in flight, shared by every caller asking for the same pre-key.
pub type InFlight = Shared<BoxFuture<'static, usize>>;

/// A plan whose build is not over yet.
pub struct PendingPlan {
    pub settings: PlannerSettings,
    pub plan_id: String,
    /// Every key the plan offered.
    pub offered: Vec<String>,
    /// The keys this prefetch downloaded and imported.
    pub imported: Vec<String>,
    /// The build it serves; `None` until a build starts (`kache prefetch`).
    pub cargo_pid: Option<u32>,
    pub made: Instant,
}

/// What the daemon shares between connections and workers.
pub struct State {
    pub cache_dir: PathBuf,
    started: Instant,
    pub(super) last_request: Mutex<Instant>,
    /// Remote id → the settings and open remote requests brought.
    remotes: Mutex<HashMap<String, (RemoteSettings, Remote)>>,
    pub inflight: Mutex<HashMap<(String, String, String), InFlight>>,
    pub negative: Mutex<HashMap<(String, String, String), Instant>>,
    /// Plans whose feedback is not reported yet.
    pub plans: Mutex<Vec<PendingPlan>>,
    /// Keys a compile's own fetch imported (for `late` in plan feedback).
    pub fetched: Mutex<HashSet<String>>,
    /// Cache key → the lock its pull holds, so pulls of one key never overlap.
    pub pulling: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Remote id → (consecutive failures, opened at).
    breaker: Mutex<HashMap<String, (u32, Option<Instant>)>>,
    pub builds: Mutex<HashMap<u32, Instant>>,
    pub uploads_ready: Notify,
    pub(super) shutdown: Notify,
    remote_hits: AtomicU64,
    prefetched: AtomicU64,
    uploaded: AtomicU64,
    /// Transfers under way, by a serial number (see [`State::transfer`]).
    active: Mutex<std::collections::BTreeMap<u64, (&'static str, String, Instant)>>,
    next_transfer: AtomicU64,
}

/// Marks one transfer as under way until dropped.
pub struct Transfer<'a> {
    state: &'a State,
    id: u64,
}

impl Drop for Transfer<'_> {
    fn drop(&mut self) {
        self.state
            .active
            .lock()
            .expect("active lock")
            .remove(&self.id);
    }
}

impl State {
    /// A fresh state for the daemon of `cache_dir`.
    pub(super) fn new(cache_dir: PathBuf) -> Self {
        Self {
            cache_dir,
            started: Instant::now(),
            last_request: Mutex::new(Instant::now()),
            remotes: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            negative: Mutex::new(HashMap::new()),
            pulling: Mutex::new(HashMap::new()),
            plans: Mutex::new(Vec::new()),
            fetched: Mutex::new(HashSet::new()),
            breaker: Mutex::new(HashMap::new()),
            builds: Mutex::new(HashMap::new()),
            uploads_ready: Notify::new(),
            shutdown: Notify::new(),
            remote_hits: AtomicU64::new(0),
            prefetched: AtomicU64::new(0),
            uploaded: AtomicU64::new(0),
            active: Mutex::new(Default::default()),
            next_transfer: AtomicU64::new(0),
        }
    }

    /// Lists an `upload` or `download` of `key` in the status while the
    /// returned guard lives.
    pub fn transfer(&self, direction: &'static str, key: &str) -> Transfer<'_> {
        let id = self.next_transfer.fetch_add(1, Ordering::Relaxed);
        self.active
            .lock()
            .expect("active lock")
            .insert(id, (direction, key.to_string(), Instant::now()));
        Transfer { state: self, id }
    }

    /// The open remote for `settings`, opening it on first use.
    pub(super) fn remote(&self, settings: &RemoteSettings) -> Result<(String, Remote)> {
        let id = settings.id();
        let mut remotes = self.remotes.lock().expect("remotes lock");
        if let Some((known, remote)) = remotes.get(&id)
            && known == settings
        {
            return Ok((id, remote.clone()));
        }
        let remote = Remote::open(
            &settings.to_config(),
            settings.compression_level,
            &self.cache_dir,
        )?;
        remotes.insert(id.clone(), (settings.clone(), remote.clone()));
        Ok((id, remote))
    }

    /// The full settings (credentials included) this daemon holds for the
    /// remote `asked` names, if any.
    pub(super) fn known_settings(&self, asked: &RemoteSettings) -> Option<RemoteSettings> {
        self.remotes
            .lock()
            .expect("remotes lock")
            .get(&asked.id())
            .map(|(known, _)| known.clone())
    }

    /// Every remote id with known settings.
    pub fn known_remotes(&self) -> Vec<(String, Remote)> {
        self.remotes
            .lock()
            .expect("remotes lock")
            .iter()
            .map(|(id, (_, remote))| (id.clone(), remote.clone()))
            .collect()
    }

    pub fn breaker_open(&self, id: &str) -> bool {
        let mut breaker = self.breaker.lock().expect("breaker lock");
        match breaker.get_mut(id) {
            Some((_, Some(opened))) if opened.elapsed() < BREAKER_OPEN => true,
            Some(state @ (_, Some(_))) => {
                // Half open: let the next request through.
                *state = (BREAKER_FAILURES - 1, None);
                false
            }
            _ => false,
        }
    }

    pub fn breaker_failure(&self, id: &str) {
        let mut breaker = self.breaker.lock().expect("breaker lock");
        let state = breaker.entry(id.to_string()).or_insert((0, None));
        state.0 += 1;
        if state.0 >= BREAKER_FAILURES && state.1.is_none() {
            warn!(
                remote = id,
                "remote keeps failing: not asking it for {}s",
                BREAKER_OPEN.as_secs()
            );
            state.1 = Some(Instant::now());
        }
    }

    pub fn breaker_success(&self, id: &str) {
        self.breaker.lock().expect("breaker lock").remove(id);
    }

    pub fn count_remote_hit(&self) {
        self.remote_hits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_prefetched(&self) {
        self.prefetched.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_upload(&self) {
        self.uploaded.fetch_add(1, Ordering::Relaxed);
    }

    /// Queued uploads: `(all remotes, remotes this daemon can serve)`.
    pub(super) fn queued(&self) -> (u64, u64) {
        let known: Vec<String> = self.known_remotes().into_iter().map(|(id, _)| id).collect();
        let rows = Store::open(&self.cache_dir)
            .and_then(|s| s.index.queued_uploads())
            .unwrap_or_default();
        rows.iter().fold((0, 0), |(all, servable), (id, n)| {
            (all + n, servable + if known.contains(id) { *n } else { 0 })
        })
    }

    /// Uploads queued for remotes this daemon can serve.
    pub(super) fn queued_servable(&self) -> u64 {
        self.queued().1
    }

    pub(super) fn status(&self) -> Status {
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            binary_mtime: client::own_binary_mtime(),
            pid: std::process::id(),
            socket: client::socket_path(&self.cache_dir).display().to_string(),
            uptime_secs: self.started.elapsed().as_secs(),
            queued: self.queued().0,
            remotes: self
                .remotes
                .lock()
                .expect("remotes lock")
                .values()
                .map(|(s, _)| s.to_config().describe())
                .collect(),
            remote_hits: self.remote_hits.load(Ordering::Relaxed),
            prefetched: self.prefetched.load(Ordering::Relaxed),
            uploaded: self.uploaded.load(Ordering::Relaxed),
            active: self
                .active
                .lock()
                .expect("active lock")
                .values()
                .map(|(direction, key, started)| ActiveTransfer {
                    direction: direction.to_string(),
                    cache_key: key.clone(),
                    elapsed_ms: started.elapsed().as_millis() as u64,
                })
                .collect(),
        }
    }
}
