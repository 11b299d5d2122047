//! The daemon's wire protocol: one JSON request per line on
//! `{cache_dir}/daemon.sock`, one JSON response line back.
//!
//! Every request that touches the remote carries the caller's resolved
//! remote settings ([`RemoteSettings`]) *without their secrets*: the daemon
//! serves whichever remote the caller is configured for, never the one of
//! the build that started it, and resolves the credentials itself from the
//! caller's own environment and directory (`daemon/peer.rs`). No access
//! key, secret key, registry password or token, planner token or signing
//! key is ever written to the socket: [`Request::without_secrets`] is what
//! the client sends.

use serde::{Deserialize, Serialize};

use crate::config::RemoteConfig;

/// A remote as a caller resolved it (credentials included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSettings {
    pub backend: kache_remote::Backend,
    pub prefix: String,
    pub concurrency: usize,
    pub compression_level: i32,
    /// Signatures, read-only rule and bounds (absent from older clients:
    /// the defaults, an unauthenticated remote).
    #[serde(default)]
    pub trust: crate::trust::Trust,
}

impl RemoteSettings {
    pub fn new(config: &RemoteConfig, compression_level: i32) -> Self {
        Self {
            backend: config.backend.clone(),
            prefix: config.prefix.clone(),
            concurrency: config.concurrency,
            compression_level,
            trust: config.trust.clone(),
        }
    }

    pub fn to_config(&self) -> RemoteConfig {
        RemoteConfig {
            backend: self.backend.clone(),
            prefix: self.prefix.clone(),
            concurrency: self.concurrency,
            trust: self.trust.clone(),
        }
    }

    /// The same settings without credentials: S3 keys, registry login,
    /// the signing key. What travels on the socket.
    pub fn without_secrets(&self) -> Self {
        let mut public = self.clone();
        match &mut public.backend {
            kache_remote::Backend::S3(spec) => {
                spec.access_key = None;
                spec.secret_key = None;
            }
            kache_remote::Backend::Oci(spec) => {
                spec.username = None;
                spec.password = None;
                spec.token = None;
            }
            kache_remote::Backend::Fs(_) => {}
        }
        public.trust.signing_key = None;
        public
    }

    /// These settings with the credentials of `full`, when `full` is the
    /// same remote (equal once both are [`without_secrets`](Self::without_secrets)).
    pub fn with_secrets_of(&self, full: &RemoteSettings) -> Option<Self> {
        (self.without_secrets() == full.without_secrets()).then(|| full.clone())
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
            kache_remote::Backend::Oci(spec) => {
                format!("oci|{}|{}", spec.registry, spec.repository)
            }
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

impl Request {
    /// The request as it may travel: every secret removed (see the module
    /// documentation).
    pub fn without_secrets(&self) -> Self {
        let mut public = self.clone();
        match &mut public {
            Request::Upload { remote, .. } | Request::Fetch { remote, .. } => {
                *remote = remote.without_secrets();
            }
            Request::BuildStart {
                remote, planner, ..
            } => {
                *remote = remote.without_secrets();
                if let Some(planner) = planner {
                    planner.token = None;
                }
            }
            Request::Status | Request::Shutdown { .. } => {}
        }
        public
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn s3_settings() -> RemoteSettings {
        RemoteSettings {
            backend: kache_remote::Backend::S3(kache_remote::s3::S3Spec {
                bucket: "b".into(),
                endpoint: Some("http://127.0.0.1:1".into()),
                region: "us-east-1".into(),
                access_key: Some("ACCESS-KEY-ID".into()),
                secret_key: Some("SECRET-ACCESS-KEY".into()),
                profile: None,
            }),
            prefix: "artifacts".into(),
            concurrency: 4,
            compression_level: 3,
            trust: crate::trust::Trust {
                signing_key: Some("kache-secret-ed25519:SIGNING".into()),
                ..Default::default()
            },
        }
    }

    #[test]
    fn no_request_serializes_a_secret() {
        let planner = Some(super::super::planner::PlannerSettings {
            endpoint: "http://planner".into(),
            token: Some("PLANNER-TOKEN".into()),
            timeout_ms: 750,
        });
        let requests = [
            Request::Upload {
                remote: s3_settings(),
                keys: vec!["k".into()],
            },
            Request::Fetch {
                remote: s3_settings(),
                crate_name: "c".into(),
                pre_key: "p".into(),
                deadline_ms: 1,
            },
            Request::BuildStart {
                remote: s3_settings(),
                cargo_pid: 1,
                lockfile: "Cargo.lock".into(),
                planner,
                namespace: None,
                identity: None,
                wait: false,
            },
        ];
        for request in requests {
            let wire = serde_json::to_string(&request.without_secrets()).unwrap();
            for secret in [
                "ACCESS-KEY-ID",
                "SECRET-ACCESS-KEY",
                "SIGNING",
                "PLANNER-TOKEN",
            ] {
                assert!(!wire.contains(secret), "{secret} in {wire}");
            }
            assert!(wire.contains("http://127.0.0.1:1"), "{wire}");
        }
    }

    #[test]
    fn secrets_are_put_back_only_for_the_same_remote() {
        let full = s3_settings();
        let public = full.without_secrets();
        assert_eq!(public.with_secrets_of(&full), Some(full.clone()));
        let mut elsewhere = public.clone();
        elsewhere.prefix = "other".into();
        assert_eq!(elsewhere.with_secrets_of(&full), None);
    }
}
