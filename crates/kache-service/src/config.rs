//! Command-line flags and their environment variables (DESIGN.md, "Service
//! configuration").

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// The kache planner: answers a build's intent with the cache artifacts worth
/// fetching first.
#[derive(Debug, Clone, Parser)]
#[command(name = "kache-service", version)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "KACHE_PLANNER_BIND", default_value = "0.0.0.0:8080")]
    pub bind: SocketAddr,
    /// Path of the embedded database (SurrealKV).
    #[arg(
        long,
        env = "KACHE_PLANNER_DB_PATH",
        default_value = "/var/lib/kache/planner.db"
    )]
    pub db_path: PathBuf,
    /// Bearer token required on plan, feedback and (without --ingest-token)
    /// ingest routes; none accepts anonymous requests.
    #[arg(long, env = "KACHE_PLANNER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The only token that may ingest (`POST /v2/manifests`, `/v2/shards/…`);
    /// it may also plan. With it set, the plan token gets 403 on ingest.
    #[arg(long, env = "KACHE_PLANNER_INGEST_TOKEN", hide_env_values = true)]
    pub ingest_token: Option<String>,
    /// Namespaces ingest may write, comma-separated, `*` matching any run of
    /// characters (`ci-*,main`). A build manifest has no namespace: it feeds
    /// every namespace's history, so only a list holding `*` itself admits it.
    #[arg(
        long,
        env = "KACHE_PLANNER_INGEST_NAMESPACES",
        default_value = "*",
        value_parser = crate::auth::NamespacePatterns::parse
    )]
    pub ingest_namespaces: crate::auth::NamespacePatterns,
    /// Most artifacts kept (in memory and in the database); past it the
    /// least recently seen, then least seen, are dropped with their sightings.
    #[arg(long, env = "KACHE_PLANNER_MAX_ARTIFACTS", default_value_t = crate::ingest::DEFAULT_MAX_ARTIFACTS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_artifacts: u64,
    /// Name reported in plans and on /healthz.
    #[arg(long, env = "KACHE_PLANNER_NAME", default_value = "planner")]
    pub planner_name: String,
    /// Legacy JSON snapshot imported (idempotently) at start.
    #[arg(long, env = "KACHE_PLANNER_SEED_STATE_FILE")]
    pub seed_state_file: Option<PathBuf>,
    /// Contend for a Kubernetes Lease and serve only while holding it.
    #[arg(
        long,
        env = "KACHE_HA_ENABLED",
        num_args = 0..=1,
        default_value_t = false,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub ha_enabled: bool,
    /// Namespace of the Lease (else POD_NAMESPACE, else the service-account namespace).
    #[arg(long, env = "KACHE_HA_NAMESPACE")]
    pub ha_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(long, env = "KACHE_HA_LEASE_NAME", default_value = "kache-service")]
    pub ha_lease_name: String,
    /// The bucket to learn from (manifests and shards clients write there).
    #[arg(long, env = "KACHE_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// The bucket's endpoint (default: AWS).
    #[arg(long, env = "KACHE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "KACHE_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Object prefix, as the clients use it.
    #[arg(long, env = "KACHE_S3_PREFIX", default_value = "artifacts")]
    pub s3_prefix: String,
    #[arg(long, env = "KACHE_S3_PROFILE")]
    pub s3_profile: Option<String>,
    #[arg(long, env = "KACHE_S3_ACCESS_KEY", hide_env_values = true)]
    pub s3_access_key: Option<String>,
    #[arg(long, env = "KACHE_S3_SECRET_KEY", hide_env_values = true)]
    pub s3_secret_key: Option<String>,
    /// A shared directory instead of a bucket (the clients' `type = "fs"`).
    #[arg(long, env = "KACHE_REMOTE_DIR", conflicts_with = "s3_bucket")]
    pub remote_dir: Option<PathBuf>,
    /// Public keys (`ed25519:…`, comma-separated) whose signatures make a
    /// build manifest or shard worth learning from; none learns from every
    /// well-formed document.
    #[arg(
        long,
        env = "KACHE_PLANNER_TRUSTED_KEYS",
        default_value = "",
        value_parser = kache_remote::sign::TrustedKeys::parse
    )]
    pub trusted_keys: kache_remote::sign::TrustedKeys,
    /// Seconds between two scans of the bucket.
    #[arg(long, env = "KACHE_PLANNER_SCAN_INTERVAL", default_value_t = 60)]
    pub scan_interval: u64,
    /// Seconds between two collections of the bucket (`gc.rs`); 0 (the
    /// default) collects only on demand.
    #[arg(long, env = "KACHE_PLANNER_GC_INTERVAL", default_value_t = 0)]
    pub gc_interval: u64,
    /// Entries a build manifest or shard this young references, or plan
    /// feedback reported used this recently, are never collected.
    #[arg(long, env = "KACHE_PLANNER_GC_KEEP_DAYS", default_value_t = crate::gc::DEFAULT_KEEP_DAYS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub gc_keep_days: u64,
    /// Collect other entries only until the bucket holds at most this many
    /// bytes; unset collects every one.
    #[arg(long, env = "KACHE_PLANNER_GC_MAX_BYTES")]
    pub gc_max_bytes: Option<u64>,
    /// Seconds an object is young (an upload in progress): never collected.
    #[arg(long, env = "KACHE_PLANNER_GC_GRACE", default_value_t = crate::gc::DEFAULT_GRACE_SECS)]
    pub gc_grace: u64,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do instead of serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Collect the bucket once (with the database at --db-path, for plan
    /// feedback) and print each deletion; the service must not be running
    /// on that database (use `POST /v2/gc` then).
    Gc {
        /// Print the decisions, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Where Kubernetes mounts the pod's namespace.
pub const SERVICE_ACCOUNT_NAMESPACE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

impl Config {
    /// What a collection keeps (`--gc-*`).
    pub fn gc_settings(&self) -> crate::gc::Settings {
        crate::gc::Settings {
            keep_days: self.gc_keep_days,
            grace_secs: self.gc_grace,
            max_bytes: self.gc_max_bytes,
        }
    }

    /// The bucket (or shared directory) to learn from, if configured.
    pub fn remote(&self) -> Option<kache_remote::Backend> {
        if let Some(dir) = &self.remote_dir {
            return Some(kache_remote::Backend::Fs(dir.clone()));
        }
        // No bucket but an OCI registry (`KACHE_OCI_*`, as the clients read them).
        if self.s3_bucket.is_none()
            && let Some(spec) = kache_remote::oci::OciSpec::from_env(None, None)
        {
            return Some(kache_remote::Backend::Oci(spec));
        }
        Some(kache_remote::Backend::S3(kache_remote::s3::S3Spec {
            bucket: self.s3_bucket.clone()?,
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            access_key: self.s3_access_key.clone(),
            secret_key: self.s3_secret_key.clone(),
            profile: self.s3_profile.clone(),
        }))
    }

    /// The HA namespace: the flag, then `POD_NAMESPACE`, then the
    /// service-account namespace file.
    pub fn resolve_ha_namespace(&self) -> Option<String> {
        let file = std::env::var_os("KACHE_SERVICE_ACCOUNT_NAMESPACE_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(SERVICE_ACCOUNT_NAMESPACE));
        self.ha_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .or_else(|| std::fs::read_to_string(file).ok())
            .map(|ns| ns.trim().to_string())
            .filter(|ns| !ns.is_empty())
    }
}
