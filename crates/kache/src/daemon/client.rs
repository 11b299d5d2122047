//! Talking to the daemon from the wrapper and the CLI: synchronous, every
//! call bounded by a deadline, and starting the daemon on demand. A compile
//! that finds none waits for the one it started, at most
//! [`DAEMON_START_WAIT`] (and never past the remote deadline), so a fresh
//! runner's first compiles are served from the bucket too.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::protocol::{Request, Response, Status};

/// `{cache_dir}/daemon.sock`.
pub fn socket_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join("daemon.sock")
}

/// `{cache_dir}/daemon.log`.
pub fn log_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join("daemon.log")
}

/// Sends one request and reads the answer, all within `deadline`.
/// Fails when no daemon listens, and with a [`crate::owner::Foreign`]
/// error when the socket or the process listening on it belongs to
/// another user: nothing is sent to it. The request goes without its
/// secrets ([`Request::without_secrets`]); the daemon resolves them.
pub fn request(cache_dir: &Path, request: &Request, deadline: Duration) -> Result<Response> {
    let started = Instant::now();
    let socket = socket_path(cache_dir);
    crate::owner::check_socket(&socket)?;
    let stream = UnixStream::connect(&socket)
        .with_context(|| format!("no daemon answers on {}", socket.display()))?;
    let (uid, _) = crate::owner::peer_cred(&stream).context("asking the daemon's uid")?;
    if uid != crate::owner::my_uid() {
        return Err(crate::owner::Foreign {
            what: "daemon listening on",
            path: socket,
            owner: Some(uid),
        }
        .into());
    }
    let remaining = |at: Instant| {
        deadline
            .checked_sub(at.elapsed())
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_millis(1))
    };
    stream.set_write_timeout(Some(remaining(started)))?;
    let mut line = serde_json::to_vec(&request.without_secrets())?;
    line.push(b'\n');
    (&stream).write_all(&line)?;
    stream.set_read_timeout(Some(remaining(started)))?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .context("reading the daemon's answer")?;
    if answer.is_empty() {
        bail!("the daemon closed the connection");
    }
    serde_json::from_str(&answer).context("the daemon's answer does not parse")
}

/// The daemon's status, if one answers.
pub fn status(cache_dir: &Path) -> Option<Status> {
    match request(cache_dir, &Request::Status, Duration::from_secs(2)) {
        Ok(Response::Status(status)) => Some(status),
        _ => None,
    }
}

/// Starts `kache daemon run` for `cache_dir` in the background, detached
/// from the caller's session, without waiting for it.
pub fn spawn(cache_dir: &Path) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("locating the kache binary")?;
    crate::owner::private_dir(cache_dir)?;
    let mut cmd = Command::new(exe);
    cmd.args(["daemon", "run"])
        .env("KACHE_CACHE_DIR", cache_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid() is async-signal-safe; it detaches the daemon from
    // cargo's process group so a Ctrl-C of the build does not kill it.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            // Drop descriptors inherited from cargo (jobserver, pipes): a
            // long-lived daemon must not hold a build's pipes open.
            for fd in 3..1024 {
                libc::close(fd);
            }
            Ok(())
        });
    }
    cmd.spawn().context("starting kache daemon")?;
    Ok(())
}

/// Starts a daemon and waits until its socket answers.
pub fn start_and_wait(cache_dir: &Path, timeout: Duration) -> Result<Status> {
    if let Some(status) = status(cache_dir) {
        return Ok(status);
    }
    spawn(cache_dir)?;
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Some(status) = status(cache_dir) {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "the daemon did not answer within {}s (see {})",
        timeout.as_secs(),
        log_path(cache_dir).display()
    )
}

/// Modification time of this process's binary, in seconds.
pub fn own_binary_mtime() -> u64 {
    std::env::current_exe()
        .and_then(std::fs::metadata)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// The wrapper's link to the daemon for one compile: present only when a
/// remote is configured and `KACHE_LOCAL_ONLY` is off. Every call is
/// bounded; a daemon that is not running is started, and the compile that
/// finds none waits for it within [`DAEMON_START_WAIT`].
pub struct Link {
    cache_dir: PathBuf,
    settings: super::protocol::RemoteSettings,
    planner: Option<super::planner::PlannerSettings>,
    namespace: Option<String>,
    deadline: Duration,
}

/// Default `KACHE_REMOTE_DEADLINE_MS`: how long a compile waits for the
/// bucket before it compiles.
pub const DEFAULT_FETCH_DEADLINE_MS: u64 = 3000;

/// How long a compile that found no daemon waits for the one just started
/// (capped by `KACHE_REMOTE_DEADLINE_MS`). A daemon answers within tens of
/// milliseconds of its start; a second is far above that, and small beside
/// the compile it may save.
pub const DAEMON_START_WAIT: Duration = Duration::from_millis(1000);

/// At most one daemon start per cache directory in this interval.
const SPAWN_INTERVAL: Duration = Duration::from_secs(5);

impl Link {
    pub fn for_config(config: &crate::config::Config) -> Option<Self> {
        let remote = config.remote.as_ref().filter(|_| !config.local_only)?;
        let deadline = std::env::var("KACHE_REMOTE_DEADLINE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_FETCH_DEADLINE_MS);
        Some(Self {
            cache_dir: config.cache_dir.clone(),
            settings: super::protocol::RemoteSettings::new(remote, config.compression_level),
            planner: super::planner::PlannerSettings::from_config(&config.planner),
            namespace: std::env::var("KACHE_NAMESPACE")
                .ok()
                .filter(|n| !n.is_empty()),
            deadline: Duration::from_millis(deadline),
        })
    }

    /// Once per cargo process: replaces a daemon older than this binary,
    /// starts one if none answers, and asks it to prefetch what the
    /// workspace's `Cargo.lock` names.
    /// `lockfile` is only asked for when the build is announced, so the
    /// other compiles of a build pay one `stat` here.
    /// `identity` likewise: the build's, for the planner.
    pub fn build_start(
        &self,
        lockfile: impl FnOnce() -> Option<PathBuf>,
        identity: impl FnOnce() -> Option<kache_core::manifest::Identity>,
    ) {
        // SAFETY: getppid() has no preconditions.
        let cargo_pid = unsafe { libc::getppid() } as u32;
        let markers = self.cache_dir.join("builds");
        let marker = markers.join(cargo_pid.to_string());
        if marker.exists() || self.foreign_daemon() {
            return;
        }
        // Until a daemon answers, every compile of the build tries again
        // (and the first one starts it); then exactly one announces the build.
        match status(&self.cache_dir) {
            Some(daemon) if daemon.binary_mtime < own_binary_mtime() => {
                let _ = request(
                    &self.cache_dir,
                    &Request::Shutdown { drain_ms: 0 },
                    Duration::from_secs(2),
                );
                self.spawn_rate_limited();
                return;
            }
            Some(_) => {}
            // A fresh runner: without a daemon every compile would miss
            // what the bucket holds, so wait (bounded) for the one started.
            None => {
                self.spawn_rate_limited();
                if !self.wait_for_daemon() {
                    return;
                }
            }
        }
        let _ = std::fs::create_dir_all(&markers);
        let first = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
            .is_ok();
        // `KACHE_PREFETCH=0`: remote hits on demand only (benchmarks compare).
        let prefetch = std::env::var("KACHE_PREFETCH")
            .map_or(true, |v| v != "0" && !v.eq_ignore_ascii_case("false"));
        if first
            && prefetch
            && let Some(lockfile) = lockfile()
        {
            let _ = request(
                &self.cache_dir,
                &Request::BuildStart {
                    remote: self.settings.clone(),
                    cargo_pid,
                    lockfile: lockfile.display().to_string(),
                    planner: self.planner.clone(),
                    namespace: self.namespace.clone(),
                    identity: identity(),
                    wait: false,
                },
                Duration::from_millis(200),
            );
        }
    }

    /// Asks the daemon to import the bucket's entries for this compile;
    /// how many it imported within the deadline (0 on any failure).
    pub fn fetch(&self, crate_name: &str, pre_key: &str) -> usize {
        if self.foreign_daemon() {
            return 0;
        }
        let ask = Request::Fetch {
            remote: self.settings.clone(),
            crate_name: crate_name.to_string(),
            pre_key: pre_key.to_string(),
            deadline_ms: self.deadline.as_millis() as u64,
        };
        match request(
            &self.cache_dir,
            &ask,
            self.deadline + Duration::from_millis(200),
        ) {
            Ok(Response::Fetched { imported }) => imported,
            Ok(Response::Refused { reason }) => {
                tracing::warn!("the daemon refused the remote: {reason}");
                0
            }
            Ok(_) => 0,
            Err(_) => {
                self.spawn_rate_limited();
                0
            }
        }
    }

    /// Queues an upload of `cache_key` (durably, in the index) and wakes
    /// the daemon; returns at once.
    pub fn upload(&self, store: &crate::store::Store, cache_key: &str) {
        // A read-only run (`KACHE_REMOTE_READ_ONLY=1`, a pull request from a
        // fork) uses the bucket and never writes to it; says so once a build.
        if let Some(why) = &self.settings.trust.read_only {
            self.say_once_per_build(
                "read-only",
                &format!(
                    "kache: the remote is read-only for this run ({why}): nothing is uploaded"
                ),
            );
            return;
        }
        let id = self.settings.id();
        if store
            .index
            .enqueue_upload(cache_key, &id, crate::store::now())
            .is_err()
        {
            return;
        }
        if self.foreign_daemon() {
            return;
        }
        let poke = Request::Upload {
            remote: self.settings.clone(),
            keys: vec![cache_key.to_string()],
        };
        if request(&self.cache_dir, &poke, Duration::from_millis(100)).is_err() {
            self.spawn_rate_limited();
        }
    }

    /// Whether the daemon socket belongs to another user: then this build
    /// goes on without the daemon (nothing is sent, none is started), and
    /// says so in one line, once.
    fn foreign_daemon(&self) -> bool {
        match crate::owner::check_socket(&socket_path(&self.cache_dir)) {
            Ok(_) => false,
            Err(foreign) => {
                self.say_once_per_build(
                    "foreign-daemon",
                    &format!("kache: {foreign}: building without the daemon"),
                );
                true
            }
        }
    }

    /// Prints `line` on stderr once per cargo process and `what` (a marker
    /// beside the build markers), so a build of 300 units says it once.
    fn say_once_per_build(&self, what: &str, line: &str) {
        // SAFETY: getppid() has no preconditions.
        let cargo_pid = unsafe { libc::getppid() };
        let markers = self.cache_dir.join("builds");
        let _ = std::fs::create_dir_all(&markers);
        let first = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(markers.join(format!("{cargo_pid}.{what}")))
            .is_ok();
        if first {
            // Not our own stderr: cargo would replay it in no-op builds.
            crate::events::tell(&format!("{line}\n"));
        }
    }

    /// Waits until a daemon started in the last [`SPAWN_INTERVAL`] answers
    /// on its socket, for at most [`DAEMON_START_WAIT`] and never longer
    /// than the remote deadline; whether one answered. Without a recent
    /// start there is nothing to wait for: a daemon that cannot start costs
    /// a build one bounded wait per interval, not one per compile.
    fn wait_for_daemon(&self) -> bool {
        let stamp = self.cache_dir.join("daemon.spawned");
        let recent = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|e| e < SPAWN_INTERVAL));
        if !recent {
            return false;
        }
        let bound = DAEMON_START_WAIT.min(self.deadline);
        let started = Instant::now();
        loop {
            let left = bound.saturating_sub(started.elapsed());
            if left.is_zero() {
                return false;
            }
            if let Ok(Response::Status(_)) = request(&self.cache_dir, &Request::Status, left) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10).min(left));
        }
    }

    /// Starts a daemon unless one was started in the last few seconds (many
    /// wrappers start at once; a second daemon would find the lock held and
    /// exit, but need not be started at all).
    fn spawn_rate_limited(&self) {
        let stamp = self.cache_dir.join("daemon.spawned");
        let recent = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|e| e < SPAWN_INTERVAL));
        if recent {
            return;
        }
        let _ = std::fs::write(&stamp, b"");
        let _ = spawn(&self.cache_dir);
    }
}
