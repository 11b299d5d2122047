//! `kache daemon run`: one daemon per cache directory, serving the wire
//! protocol on `{cache_dir}/daemon.sock`.
//!
//! Start-up: take `daemon.lock` (a second daemon finds it held and exits
//! cleanly), replace a stale socket, listen (bound under umask 077: the
//! socket is 0600 from its first instant, in a 0700 cache directory).
//! Every connection's peer must be this daemon's own uid, and requests
//! arrive without secrets: the caller's credentials are resolved here from
//! its own environment (see [`super::peer`]). Then it answers
//! requests, drains the upload queue, and exits on `Shutdown` (after
//! draining, within the caller's bound) or when idle for
//! `KACHE_DAEMON_IDLE_TIMEOUT` seconds with nothing queued.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};

use super::client;
use super::feedback;
use super::peer;
use super::prefetch;
use super::protocol::{RemoteSettings, Request, Response};
use super::state::State;
use super::uploads;

/// Default `KACHE_DAEMON_IDLE_TIMEOUT`: an hour.
pub const DEFAULT_IDLE_SECS: u64 = 3600;

/// Runs the daemon in the foreground until it is stopped or idle.
/// Runs the daemon; `idle_secs` is the configured idle timeout
/// (`KACHE_DAEMON_IDLE_TIMEOUT` or `[cache.daemon] idle_timeout_secs`),
/// [`DEFAULT_IDLE_SECS`] when unset.
pub fn run(cache_dir: PathBuf, seed: Option<RemoteSettings>, idle_secs: Option<u64>) -> Result<()> {
    // The daemon never runs a compile: everything it creates is the user's
    // alone (the socket, the index, downloaded entries' metadata).
    // SAFETY: umask() has no preconditions and cannot fail.
    unsafe { libc::umask(0o077) };
    crate::owner::private_dir(&cache_dir)?;
    let lock_path = cache_dir.join("daemon.lock");
    let lock = crate::store::open_lock_file(&lock_path)?;
    if lock.try_lock().is_err() {
        println!("a kache daemon already runs for {}", cache_dir.display());
        return Ok(());
    }
    // From now on nothing recreates the cache directory if it is deleted.
    crate::store::pin_cache_dir(&cache_dir);
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
    // Bound under the umask `run` set: no instant at which others could
    // connect. The chmod after it only repeats what the umask did.
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
                if crate::store::cache_dir_gone(&state.cache_dir) {
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
    let peer = peer::Peer::of(&stream).ok();
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    if BufReader::new(read).read_line(&mut line).await.is_err() {
        return;
    }
    let parsed = serde_json::from_str::<Request>(&line);
    let response = match (peer, parsed) {
        (Some(peer), _) if !peer.is_same_user() => {
            warn!(uid = peer.uid, "refused a connection from another user");
            Response::Refused {
                reason: format!(
                    "this daemon serves uid {} only, not uid {}",
                    crate::owner::my_uid(),
                    peer.uid
                ),
            }
        }
        (None, _) => Response::Refused {
            reason: "the caller's credentials cannot be read (SO_PEERCRED)".to_string(),
        },
        (Some(peer), Ok(request)) => {
            let request = if peer::needs_credentials(&request) {
                let own = tokio::task::spawn_blocking(move || peer.config())
                    .await
                    .ok()
                    .flatten();
                peer::with_credentials(request, own.as_ref(), |asked| state.known_settings(asked))
            } else {
                request
            };
            handle(&state, request).await
        }
        (Some(_), Err(err)) => Response::Error {
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
