//! `kache daemon run`: one daemon per cache directory, serving the wire
//! protocol on `{cache_dir}/daemon.sock`.
//!
//! Start-up: take `daemon.lock` (a second daemon finds it held and exits
//! cleanly), replace a stale socket, listen (mode 0600). Then it answers
//! requests, drains the upload queue, and exits on `Shutdown` (after
//! draining, within the caller's bound) or when idle for
//! `KACHE_DAEMON_IDLE_TIMEOUT` seconds with nothing queued.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;
use tracing::{info, warn};

use super::client;
use super::feedback;
use super::prefetch::{self, BREAKER_FAILURES, BREAKER_OPEN, InFlight};
use super::protocol::{ActiveTransfer, RemoteSettings, Request, Response, Status};
use super::uploads;
use crate::remote::Remote;
use crate::store::Store;

/// Default `KACHE_DAEMON_IDLE_TIMEOUT`: an hour.
pub const DEFAULT_IDLE_SECS: u64 = 3600;

/// What the daemon shares between connections and workers.
pub struct State {
    pub cache_dir: PathBuf,
    started: Instant,
    last_request: Mutex<Instant>,
    /// Remote id → the settings and open remote requests brought.
    remotes: Mutex<HashMap<String, (RemoteSettings, Remote)>>,
    pub inflight: Mutex<HashMap<(String, String, String), InFlight>>,
    pub negative: Mutex<HashMap<(String, String, String), Instant>>,
    /// Plans whose feedback is not reported yet.
    pub plans: Mutex<Vec<feedback::PendingPlan>>,
    /// Keys a compile's own fetch imported (for `late` in plan feedback).
    pub fetched: Mutex<HashSet<String>>,
    /// Cache key → the lock its pull holds, so pulls of one key never overlap.
    pub pulling: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Remote id → (consecutive failures, opened at).
    breaker: Mutex<HashMap<String, (u32, Option<Instant>)>>,
    pub builds: Mutex<HashMap<u32, Instant>>,
    pub uploads_ready: Notify,
    shutdown: Notify,
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
    fn new(cache_dir: PathBuf) -> Self {
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
    fn remote(&self, settings: &RemoteSettings) -> Result<(String, Remote)> {
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
    fn queued(&self) -> (u64, u64) {
        let known: Vec<String> = self.known_remotes().into_iter().map(|(id, _)| id).collect();
        let rows = Store::open(&self.cache_dir)
            .and_then(|s| s.index.queued_uploads())
            .unwrap_or_default();
        rows.iter().fold((0, 0), |(all, servable), (id, n)| {
            (all + n, servable + if known.contains(id) { *n } else { 0 })
        })
    }

    /// Uploads queued for remotes this daemon can serve.
    fn queued_servable(&self) -> u64 {
        self.queued().1
    }

    fn status(&self) -> Status {
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

/// Runs the daemon in the foreground until it is stopped or idle.
/// Runs the daemon; `idle_secs` is the configured idle timeout
/// (`KACHE_DAEMON_IDLE_TIMEOUT` or `[cache.daemon] idle_timeout_secs`),
/// [`DEFAULT_IDLE_SECS`] when unset.
pub fn run(cache_dir: PathBuf, seed: Option<RemoteSettings>, idle_secs: Option<u64>) -> Result<()> {
    std::fs::create_dir_all(&cache_dir)?;
    let lock_path = cache_dir.join("daemon.lock");
    let lock = crate::store::open_lock_file(&lock_path)?;
    if lock.try_lock().is_err() {
        println!("a kache daemon already runs for {}", cache_dir.display());
        return Ok(());
    }
    let idle = idle_secs.unwrap_or(DEFAULT_IDLE_SECS);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(serve(cache_dir.clone(), seed, idle));
    let _ = std::fs::remove_file(client::socket_path(&cache_dir));
    drop(lock);
    result
}

async fn serve(cache_dir: PathBuf, seed: Option<RemoteSettings>, idle_secs: u64) -> Result<()> {
    let socket = client::socket_path(&cache_dir);
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("listening on {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    let state = Arc::new(State::new(cache_dir));
    // The environment it was started with serves only uploads queued for
    // that same remote; requests bring their own settings.
    if let Some(seed) = seed
        && let Err(err) = state.remote(&seed)
    {
        warn!("remote from the environment unusable: {err:#}");
    }
    info!(pid = std::process::id(), socket = %socket.display(), "daemon started");
    tokio::spawn(uploads::worker(state.clone()));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    *state.last_request.lock().expect("idle lock") = Instant::now();
                    tokio::spawn(connection(state.clone(), stream));
                }
            }
            _ = state.shutdown.notified() => {
                info!("daemon stopping");
                return Ok(());
            }
            _ = tokio::time::sleep(Duration::from_secs(5)) => {
                tokio::spawn({
                    let state = state.clone();
                    async move { feedback::report_finished(&state, false).await }
                });
                if !state.cache_dir.join("index.db").exists() {
                    info!("the cache directory is gone: exiting");
                    return Ok(());
                }
                let idle_for = state.last_request.lock().expect("idle lock").elapsed();
                if idle_secs > 0
                    && idle_for >= Duration::from_secs(idle_secs)
                    && state.inflight.lock().expect("inflight lock").is_empty()
                    && state.queued_servable() == 0
                {
                    info!("idle for {}s with nothing queued: exiting", idle_for.as_secs());
                    return Ok(());
                }
            }
        }
    }
}

async fn connection(state: Arc<State>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    if BufReader::new(read).read_line(&mut line).await.is_err() {
        return;
    }
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(request) => handle(&state, request).await,
        Err(err) => Response::Error {
            message: format!("malformed request: {err}"),
        },
    };
    if let Ok(mut bytes) = serde_json::to_vec(&response) {
        bytes.push(b'\n');
        let _ = write.write_all(&bytes).await;
    }
}

async fn handle(state: &Arc<State>, request: Request) -> Response {
    match request {
        Request::Status => Response::Status(state.status()),
        Request::Upload { remote, keys } => match state.remote(&remote) {
            Ok(_) => {
                let _ = keys;
                state.uploads_ready.notify_one();
                Response::Accepted
            }
            Err(err) => refused(&remote, err),
        },
        Request::Fetch {
            remote,
            crate_name,
            pre_key,
            deadline_ms,
        } => match state.remote(&remote) {
            Ok((id, opened)) => {
                let inflight = prefetch::fetch(state, opened, id, crate_name, pre_key);
                let deadline = Duration::from_millis(deadline_ms);
                let imported = tokio::time::timeout(deadline, inflight).await.unwrap_or(0);
                Response::Fetched { imported }
            }
            Err(err) => refused(&remote, err),
        },
        Request::BuildStart {
            remote,
            cargo_pid,
            lockfile,
            planner,
            namespace,
            identity,
            wait,
        } => match state.remote(&remote) {
            Ok((id, opened)) => {
                let start = prefetch::BuildStart {
                    remote: opened,
                    remote_id: id,
                    cargo_pid,
                    lockfile,
                    planner,
                    namespace,
                    identity,
                    explicit: wait,
                };
                let task = tokio::spawn(prefetch::build_start(state.clone(), start));
                if wait {
                    match task.await {
                        Ok((imported, plan)) => Response::Prefetched { imported, plan },
                        Err(err) => Response::Error {
                            message: format!("prefetch failed: {err}"),
                        },
                    }
                } else {
                    Response::Accepted
                }
            }
            Err(err) => refused(&remote, err),
        },
        Request::Shutdown { drain_ms } => {
            let deadline = Instant::now() + Duration::from_millis(drain_ms);
            while Instant::now() < deadline && state.queued_servable() > 0 {
                let before = state.queued_servable();
                let _ = uploads::drain_due(state).await;
                if state.queued_servable() == before {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            feedback::report_finished(state, true).await;
            state.shutdown.notify_one();
            Response::Accepted
        }
    }
}

fn refused(remote: &RemoteSettings, err: anyhow::Error) -> Response {
    Response::Refused {
        reason: format!("cannot use {}: {err:#}", remote.to_config().describe()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_is_listed_in_the_status_while_under_way() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::new(dir.path().to_path_buf());
        let upload = state.transfer("upload", "k1");
        let download = state.transfer("download", "k2");
        let active = state.status().active;
        assert_eq!(
            active
                .iter()
                .map(|t| (t.direction.as_str(), t.cache_key.as_str()))
                .collect::<Vec<_>>(),
            [("upload", "k1"), ("download", "k2")]
        );
        drop(upload);
        assert_eq!(state.status().active.len(), 1);
        drop(download);
        assert!(state.status().active.is_empty());
    }
}
