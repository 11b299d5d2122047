//! The daemon's wire protocol: one JSON request per line on
//! `{cache_dir}/daemon.sock`, one JSON response line back.
//!
//! Every request that touches the remote carries the caller's resolved
//! remote settings ([`RemoteSettings`]): the daemon serves whichever remote
//! the caller is configured for, never the one of the build that started it.
//! The socket lives in the user's cache directory and is created mode 0600,
//! so the credentials in a request reach only the user's own daemon.

use serde::{Deserialize, Serialize};

use crate::config::RemoteConfig;

/// A remote as a caller resolved it (credentials included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSettings {
    pub backend: kache_remote::Backend,
    pub prefix: String,
    pub concurrency: usize,
    pub compression_level: i32,
}

impl RemoteSettings {
    pub fn new(config: &RemoteConfig, compression_level: i32) -> Self {
        Self {
            backend: config.backend.clone(),
            prefix: config.prefix.clone(),
            concurrency: config.concurrency,
            compression_level,
        }
    }

    pub fn to_config(&self) -> RemoteConfig {
        RemoteConfig {
            backend: self.backend.clone(),
            prefix: self.prefix.clone(),
            concurrency: self.concurrency,
        }
    }

    /// A stable id of *where* the objects go (backend and prefix, never
    /// the secrets): the upload queue is kept per id.
    pub fn id(&self) -> String {
        let place = match &self.backend {
            kache_remote::Backend::S3(spec) => format!(
                "s3|{}|{}|{}",
                spec.bucket,
                spec.endpoint.as_deref().unwrap_or(""),
                spec.region
            ),
            kache_remote::Backend::Fs(path) => format!("fs|{}", path.display()),
        };
        let text = format!("{place}|{}", self.prefix);
        blake3::hash(text.as_bytes()).to_hex()[..16].to_string()
    }
}

/// What a client asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Version, pid, uptime, queue depth, remotes in use.
    Status,
    /// Queue these entries for upload (fire and forget).
    Upload {
        remote: RemoteSettings,
        keys: Vec<String>,
    },
    /// Download and import the bucket's entries for one compile's pre-key,
    /// answering within `deadline_ms`.
    Fetch {
        remote: RemoteSettings,
        crate_name: String,
        pre_key: String,
        deadline_ms: u64,
    },
    /// A build starts: prefetch what the planner advises, else what its
    /// `Cargo.lock` names.
    BuildStart {
        remote: RemoteSettings,
        /// The cargo process, so one build starts one prefetch.
        cargo_pid: u32,
        lockfile: String,
        #[serde(default)]
        planner: Option<super::planner::PlannerSettings>,
        #[serde(default)]
        namespace: Option<String>,
        /// The build's identity, for the planner (absent: unknown).
        #[serde(default)]
        identity: Option<kache_core::manifest::Identity>,
        /// Answer when the prefetch is done (`kache prefetch --wait`),
        /// and run it even if this cargo process already had one.
        #[serde(default)]
        wait: bool,
    },
    /// Finish queued uploads (within `drain_ms`), then exit.
    Shutdown { drain_ms: u64 },
}

/// What the daemon answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Status(Status),
    /// The request was taken.
    Accepted,
    /// Entries imported for a fetch (0: the bucket has none, or the
    /// deadline passed, or the remote is failing).
    Fetched {
        imported: usize,
    },
    /// A waited-for prefetch: entries imported and where the list came from.
    Prefetched {
        imported: usize,
        plan: String,
    },
    /// The daemon cannot serve this (with why).
    Refused {
        reason: String,
    },
    Error {
        message: String,
    },
}

/// `kache daemon` (status).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    /// Modification time of the daemon's binary (seconds): a caller with a
    /// newer binary replaces the daemon.
    pub binary_mtime: u64,
    pub pid: u32,
    pub socket: String,
    pub uptime_secs: u64,
    /// Uploads waiting, all remotes.
    pub queued: u64,
    /// The remotes requests have used, as `s3://bucket at endpoint (prefix p)`.
    pub remotes: Vec<String>,
    pub remote_hits: u64,
    pub prefetched: u64,
    pub uploaded: u64,
    /// Transfers under way now, oldest first (absent from older daemons).
    #[serde(default)]
    pub active: Vec<ActiveTransfer>,
}

/// One upload or download under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveTransfer {
    /// `upload` or `download`.
    pub direction: String,
    pub cache_key: String,
    /// Milliseconds since it started.
    pub elapsed_ms: u64,
}
