//! Client configuration: environment over config files over defaults.
//!
//! The files merge: the user's own (`KACHE_CONFIG`, else
//! `$XDG_CONFIG_HOME/kache/config.toml`), then the repository's nearest
//! `.kache.toml` (walking up from the current directory) on top, then every
//! setting's environment name over both. `KACHE_CONFIG` is the whole file
//! configuration when set (no walk-up).
//!
//! A repository's file is someone else's text: unless the user's own file
//! says `trust_repo_config = true`, it may not choose where the remote or
//! the planner is, nor any credential or trust setting
//! ([`REPO_RESTRICTED`]); such keys are ignored and listed in
//! [`Config::ignored`]. A file another user owns or may write is not read
//! at all (see [`crate::owner::trusted_file`]).
//!
//! Everything reads the environment through an [`Env`], so the daemon can
//! resolve a caller's settings from that caller's own environment and
//! working directory (see `daemon/peer.rs`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// Default `KACHE_MAX_SIZE`: 50 GiB.
pub const DEFAULT_MAX_SIZE: u64 = 50 << 30;

/// Resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub cache_dir: PathBuf,
    pub max_size: u64,
    pub disabled: bool,
    pub local_only: bool,
    pub key_salt: Option<String>,
    pub progress: Progress,
    pub cache_executables: bool,
    /// `KACHE_CACHE_BUILD_SCRIPTS` (`cache_build_scripts`, default on):
    /// build-script runs are cached and replayed (see `wrapper::build_run`).
    pub cache_build_scripts: bool,
    /// `KACHE_VERIFY`: every hit also compiles, and compares what rustc
    /// wrote with what the hit would have restored.
    pub verify: bool,
    pub compression_level: i32,
    pub remote: Option<RemoteConfig>,
    pub planner: PlannerConfig,
    /// The daemon exits after this many idle seconds (`None`: its default).
    pub daemon_idle_secs: Option<u64>,
    /// The most specific file the settings came from (the repository's,
    /// else the user's), if any.
    pub source: Option<PathBuf>,
    /// Every file read, the user's first.
    pub sources: Vec<PathBuf>,
    /// Which file set each file setting (`remote.bucket` → path).
    pub origins: BTreeMap<String, PathBuf>,
    /// Settings a file set that were not applied, and why (one line each).
    pub ignored: Vec<String>,
}

/// Where settings are read from: this process's environment, or a captured
/// one (a daemon's caller). Empty values count as unset.
#[derive(Debug, Clone, Default)]
pub struct Env {
    captured: Option<HashMap<String, String>>,
}

impl Env {
    /// This process's environment.
    pub fn process() -> Self {
        Self { captured: None }
    }

    /// A captured environment (`NAME=value` pairs).
    pub fn captured(vars: HashMap<String, String>) -> Self {
        Self {
            captured: Some(vars),
        }
    }

    /// The value of `name`, `None` when unset or empty.
    pub fn get(&self, name: &str) -> Option<String> {
        match &self.captured {
            None => env(name),
            Some(vars) => vars.get(name).filter(|v| !v.is_empty()).cloned(),
        }
    }

    fn flag(&self, name: &str) -> Option<bool> {
        self.get(name)
            .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
    }
}

/// The environment variable that wins over a file setting (`remote.bucket`
/// → `KACHE_S3_BUCKET`), if there is one.
pub fn env_name_of(setting: &str) -> Option<&'static str> {
    Some(match setting {
        "dir" => "KACHE_CACHE_DIR",
        "max_size" => "KACHE_MAX_SIZE",
        "local_only" => "KACHE_LOCAL_ONLY",
        "key_salt" => "KACHE_KEY_SALT",
        "progress" => "KACHE_PROGRESS",
        "cache_executables" => "KACHE_CACHE_EXECUTABLES",
        "cache_build_scripts" => "KACHE_CACHE_BUILD_SCRIPTS",
        "compression_level" => "KACHE_COMPRESSION_LEVEL",
        "remote.bucket" => "KACHE_S3_BUCKET",
        "remote.endpoint" => "KACHE_S3_ENDPOINT",
        "remote.region" => "KACHE_S3_REGION",
        "remote.prefix" => "KACHE_S3_PREFIX",
        "remote.profile" => "KACHE_S3_PROFILE",
        "remote.registry" => "KACHE_OCI_REGISTRY",
        "remote.repository" => "KACHE_OCI_REPOSITORY",
        "remote.trusted_keys" => "KACHE_TRUSTED_KEYS",
        "remote.signing_key" => "KACHE_SIGNING_KEY",
        "remote.read_only" => "KACHE_REMOTE_READ_ONLY",
        "planner.endpoint" => "KACHE_PLANNER_ENDPOINT",
        "planner.token" => "KACHE_PLANNER_TOKEN",
        "planner.timeout_ms" => "KACHE_PLANNER_TIMEOUT_MS",
        "daemon.idle_timeout_secs" => "KACHE_DAEMON_IDLE_TIMEOUT",
        _ => return None,
    })
}

/// Keys (under `[cache]`) a repository's `.kache.toml` may not set unless
/// the user's own file says `trust_repo_config = true`: where the remote
/// and the planner are, credentials, and what is trusted. `read_only =
/// true` is always allowed (it only takes rights away).
pub const REPO_RESTRICTED: &[&str] = &[
    "trust_repo_config",
    "remote.type",
    "remote.bucket",
    "remote.endpoint",
    "remote.region",
    "remote.profile",
    "remote.path",
    "remote.registry",
    "remote.repository",
    "remote.trusted_keys",
    "remote.signing_key",
    "remote.read_only",
    "planner.endpoint",
    "planner.token",
];

/// What `KACHE_PROGRESS` prints per compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Off,
    /// `1` or `hits`: hit lines only.
    Hits,
    /// `verbose` or `all`: every line.
    All,
}

/// `[cache.remote]`: an S3-compatible bucket (`type = "s3"`, the default)
/// or a shared directory (`type = "fs"`, `path = …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteConfig {
    pub backend: kache_remote::Backend,
    pub prefix: String,
    /// Concurrent transfers (`KACHE_S3_CONCURRENCY`, default 16).
    pub concurrency: usize,
    /// Which signatures are accepted, the signing key, whether this run
    /// may write, and the download bounds (see [`crate::trust`]).
    pub trust: crate::trust::Trust,
}

impl RemoteConfig {
    /// `s3://bucket at endpoint/prefix` or `fs:/path/prefix`, for messages.
    pub fn describe(&self) -> String {
        let location = match &self.backend {
            kache_remote::Backend::S3(spec) => spec.location(),
            kache_remote::Backend::Fs(path) => format!("fs:{}", path.display()),
            kache_remote::Backend::Oci(spec) => spec.location(),
        };
        format!("{location} (prefix {})", self.prefix)
    }
}

/// `[cache.planner]`: consulted only when `endpoint` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannerConfig {
    pub endpoint: Option<String>,
    pub token: Option<String>,
    pub timeout_ms: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    cache: FileCache,
}

/// What one file may set (its keys are checked by [`FileConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    /// The user's own file: everything.
    User,
    /// A repository's `.kache.toml`: not [`REPO_RESTRICTED`], unless trusted.
    Repo { trusted: bool },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCache {
    dir: Option<PathBuf>,
    max_size: Option<String>,
    local_only: Option<bool>,
    key_salt: Option<String>,
    progress: Option<String>,
    cache_executables: Option<bool>,
    cache_build_scripts: Option<bool>,
    compression_level: Option<i32>,
    remote: Option<FileRemote>,
    planner: Option<FilePlanner>,
    daemon: Option<FileDaemon>,
    /// The user's own file only: a repository's `.kache.toml` may set the
    /// remote, the planner and trust settings too.
    trust_repo_config: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDaemon {
    idle_timeout_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRemote {
    #[serde(rename = "type")]
    kind: Option<String>,
    bucket: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    prefix: Option<String>,
    profile: Option<String>,
    path: Option<PathBuf>,
    /// `type = "oci"`: the registry and repository (`KACHE_OCI_*` win).
    registry: Option<String>,
    repository: Option<String>,
    trusted_keys: Option<Vec<String>>,
    signing_key: Option<String>,
    read_only: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePlanner {
    endpoint: Option<String>,
    token: Option<String>,
    timeout_ms: Option<u64>,
}

/// Reads an environment variable, treating an empty value as unset.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Progress {
    fn parse(text: &str) -> Self {
        match text {
            "1" | "hits" => Self::Hits,
            "verbose" | "all" => Self::All,
            _ => Self::Off,
        }
    }
}

impl Config {
    /// Checks a config file's text the way [`Config::load`] reads it (with
    /// this process's environment on top): the error names what is wrong.
    pub fn check_text(text: &str) -> Result<()> {
        let file = toml::from_str::<FileConfig>(text)?;
        Self::resolve(file.cache, &Env::process()).map(|_| ())
    }

    /// The file `kache config` edits: `KACHE_CONFIG`, else the nearest
    /// `.kache.toml`, else the user's XDG one.
    pub fn editable_path() -> Option<PathBuf> {
        let env = Env::process();
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        if let Some(path) = env.get("KACHE_CONFIG") {
            return Some(PathBuf::from(path));
        }
        repo_file(&cwd, &env).or_else(|| user_file_path(&env))
    }

    /// Loads the configuration for the current process.
    pub fn load() -> Result<Self> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        Self::load_in(&Env::process(), &cwd)
    }

    /// Loads the configuration a process with environment `env` in the
    /// directory `cwd` would load.
    pub fn load_in(env: &Env, cwd: &Path) -> Result<Self> {
        let mut layers: Vec<(PathBuf, Layer)> = Vec::new();
        let mut ignored = Vec::new();
        if let Some(path) = env.get("KACHE_CONFIG") {
            layers.push((cwd.join(path), Layer::User));
        } else {
            if let Some(user) = user_file_path(env).filter(|p| p.is_file()) {
                layers.push((user, Layer::User));
            }
            if let Some(repo) = repo_file(cwd, env)
                && !layers.iter().any(|(p, _)| same_file(p, &repo))
            {
                layers.push((repo, Layer::Repo { trusted: false }));
            }
        }
        let mut merged = toml::Table::new();
        let mut origins = BTreeMap::new();
        let mut sources = Vec::new();
        let mut trusted = false;
        for (path, layer) in layers {
            if let Err(foreign) = crate::owner::trusted_file(&path) {
                ignored.push(format!("{foreign}"));
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            // Each file must be valid on its own, so an error names it.
            let checked = toml::from_str::<FileConfig>(&text)
                .with_context(|| format!("parsing config file {}", path.display()))?;
            let mut table: toml::Table = toml::from_str(&text)
                .with_context(|| format!("parsing config file {}", path.display()))?;
            let layer = match layer {
                Layer::User => {
                    trusted |= checked.cache.trust_repo_config.unwrap_or(false);
                    Layer::User
                }
                Layer::Repo { .. } => Layer::Repo { trusted },
            };
            let cache = match table.remove("cache") {
                Some(toml::Value::Table(cache)) => cache,
                _ => toml::Table::new(),
            };
            let target = match merged
                .entry("cache")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            {
                toml::Value::Table(t) => t,
                _ => unreachable!("only tables are inserted under cache"),
            };
            merge_layer(target, cache, "", &path, layer, &mut origins, &mut ignored);
            sources.push(path);
        }
        let file: FileConfig = toml::Value::Table(merged)
            .try_into()
            .context("merging the config files")?;
        let mut config = Self::resolve(file.cache, env)?;
        config.source = sources.last().cloned();
        config.sources = sources;
        config.origins = origins;
        config.ignored = ignored;
        Ok(config)
    }

    fn resolve(file: FileCache, env: &Env) -> Result<Self> {
        let cache_dir = env
            .get("KACHE_CACHE_DIR")
            .map(PathBuf::from)
            .or(file.dir)
            .unwrap_or_else(|| default_cache_dir(env));
        let max_size = match env.get("KACHE_MAX_SIZE").or(file.max_size) {
            Some(text) => kache_core::size::parse_size(&text)
                .with_context(|| format!("KACHE_MAX_SIZE: cannot read {text:?} as a size"))?,
            None => DEFAULT_MAX_SIZE,
        };
        let compression_level = match env.get("KACHE_COMPRESSION_LEVEL") {
            Some(text) => text
                .parse()
                .with_context(|| format!("KACHE_COMPRESSION_LEVEL: {text:?} is not a number"))?,
            None => file.compression_level.unwrap_or(3),
        };
        if !(1..=22).contains(&compression_level) {
            bail!("KACHE_COMPRESSION_LEVEL must be within 1..=22, got {compression_level}");
        }
        let remote = resolve_remote(file.remote.unwrap_or_default(), max_size, env)?;
        let file_planner = file.planner.unwrap_or_default();
        let timeout_ms = match env.get("KACHE_PLANNER_TIMEOUT_MS") {
            Some(text) => text
                .parse()
                .with_context(|| format!("KACHE_PLANNER_TIMEOUT_MS: {text:?} is not a number"))?,
            None => file_planner.timeout_ms.unwrap_or(750),
        };
        let daemon_idle_secs = match env.get("KACHE_DAEMON_IDLE_TIMEOUT") {
            Some(text) => Some(text.parse().with_context(|| {
                format!("KACHE_DAEMON_IDLE_TIMEOUT: {text:?} is not a number of seconds")
            })?),
            None => file.daemon.and_then(|d| d.idle_timeout_secs),
        };
        Ok(Self {
            cache_dir,
            max_size,
            daemon_idle_secs,
            disabled: env.flag("KACHE_DISABLED").unwrap_or(false),
            verify: env.flag("KACHE_VERIFY").unwrap_or(false),
            local_only: env
                .flag("KACHE_LOCAL_ONLY")
                .or(file.local_only)
                .unwrap_or(false),
            key_salt: env.get("KACHE_KEY_SALT").or(file.key_salt),
            progress: Progress::parse(
                &env.get("KACHE_PROGRESS")
                    .or(file.progress)
                    .unwrap_or_default(),
            ),
            cache_executables: env
                .flag("KACHE_CACHE_EXECUTABLES")
                .or(file.cache_executables)
                .unwrap_or(false),
            cache_build_scripts: env
                .flag("KACHE_CACHE_BUILD_SCRIPTS")
                .or(file.cache_build_scripts)
                .unwrap_or(true),
            compression_level,
            remote,
            planner: PlannerConfig {
                endpoint: env.get("KACHE_PLANNER_ENDPOINT").or(file_planner.endpoint),
                token: env.get("KACHE_PLANNER_TOKEN").or(file_planner.token),
                timeout_ms,
            },
            source: None,
            sources: Vec::new(),
            origins: BTreeMap::new(),
            ignored: Vec::new(),
        })
    }
}

/// The remote from `KACHE_S3_*` and `[cache.remote]`; `None` when no bucket
/// (or, for `type = "fs"`, no path) is set.
fn resolve_remote(file: FileRemote, max_size: u64, env: &Env) -> Result<Option<RemoteConfig>> {
    let prefix = env
        .get("KACHE_S3_PREFIX")
        .or(file.prefix)
        .unwrap_or_else(|| "artifacts".to_string());
    let concurrency = match env.get("KACHE_S3_CONCURRENCY") {
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=256).contains(n))
            .with_context(|| {
                format!("KACHE_S3_CONCURRENCY: {text:?} is not a number in 1..=256")
            })?,
        None => 16,
    };
    // No type and no bucket, but a registry in the environment: OCI.
    let implied = if env.get("KACHE_S3_BUCKET").is_none() && env.get("KACHE_OCI_REGISTRY").is_some()
    {
        "oci"
    } else {
        "s3"
    };
    let backend = match file.kind.as_deref().unwrap_or(implied) {
        "oci" => match kache_remote::oci::OciSpec::from_lookup(
            |name| env.get(name),
            file.registry,
            file.repository,
        ) {
            Some(spec) => kache_remote::Backend::Oci(spec),
            None => bail!(
                "[cache.remote] type \"oci\" needs a registry and a repository \
                 (KACHE_OCI_REGISTRY, KACHE_OCI_REPOSITORY)"
            ),
        },
        "fs" => match file.path {
            Some(path) => kache_remote::Backend::Fs(path),
            None => bail!("[cache.remote] type \"fs\" needs a path"),
        },
        "s3" => {
            let Some(bucket) = env.get("KACHE_S3_BUCKET").or(file.bucket) else {
                return Ok(None);
            };
            kache_remote::Backend::S3(kache_remote::s3::S3Spec {
                bucket,
                endpoint: env.get("KACHE_S3_ENDPOINT").or(file.endpoint),
                region: env
                    .get("KACHE_S3_REGION")
                    .or(file.region)
                    .unwrap_or_else(|| "us-east-1".to_string()),
                access_key: env.get("KACHE_S3_ACCESS_KEY"),
                secret_key: env.get("KACHE_S3_SECRET_KEY"),
                profile: env.get("KACHE_S3_PROFILE").or(file.profile),
            })
        }
        other => {
            bail!("[cache.remote] type {other:?} is not supported (\"s3\", \"fs\" or \"oci\")")
        }
    };
    let trust = crate::trust::Trust::resolve(
        crate::trust::FileTrust {
            trusted_keys: file.trusted_keys,
            signing_key: file.signing_key,
            read_only: file.read_only,
        },
        max_size,
        |name| env.get(name),
    )?;
    Ok(Some(RemoteConfig {
        backend,
        prefix,
        concurrency,
        trust,
    }))
}

/// Merges one file's `[cache]` table into `into`: tables key by key,
/// values replaced. A repository layer's restricted keys are dropped
/// (listed in `ignored`) unless trusted; `read_only = true` always passes,
/// and `trusted_keys` from a trusted repository add to the user's.
fn merge_layer(
    into: &mut toml::Table,
    from: toml::Table,
    prefix: &str,
    path: &Path,
    layer: Layer,
    origins: &mut BTreeMap<String, PathBuf>,
    ignored: &mut Vec<String>,
) {
    for (key, value) in from {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if let toml::Value::Table(table) = value {
            let slot = into
                .entry(key.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(slot) = slot {
                merge_layer(slot, table, &name, path, layer, origins, ignored);
            }
            continue;
        }
        let restricted = REPO_RESTRICTED.contains(&name.as_str());
        let harmless = name == "remote.read_only" && value.as_bool() == Some(true);
        let allowed = match layer {
            Layer::User => true,
            Layer::Repo { trusted } => {
                name != "trust_repo_config" && (trusted || !restricted || harmless)
            }
        };
        if !allowed {
            ignored.push(format!(
                "{name} in {} is ignored: a repository's file may not set it (set trust_repo_config = true in your own config to allow)",
                path.display()
            ));
            continue;
        }
        let value = match (name.as_str(), into.get(&key), value) {
            ("remote.trusted_keys", Some(toml::Value::Array(old)), toml::Value::Array(new))
                if matches!(layer, Layer::Repo { .. }) =>
            {
                let mut keys = old.clone();
                keys.extend(new.into_iter().filter(|k| !old.contains(k)));
                toml::Value::Array(keys)
            }
            (_, _, value) => value,
        };
        into.insert(key, value);
        origins.insert(name, path.to_path_buf());
    }
}

/// Whether `a` and `b` name the same file.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => a == b,
    }
}

/// The nearest `.kache.toml` walking up from `cwd`, unless `cwd` lies in
/// `CARGO_HOME`: cargo compiles registry and git dependencies from there,
/// and a published crate's own `.kache.toml` is not the user's repository.
fn repo_file(cwd: &Path, env: &Env) -> Option<PathBuf> {
    let cargo_home = env.get("CARGO_HOME").map(PathBuf::from).or_else(|| {
        env.get("HOME")
            .map(|home| PathBuf::from(home).join(".cargo"))
    });
    if cargo_home.is_some_and(|home| cwd.starts_with(home)) {
        return None;
    }
    cwd.ancestors()
        .map(|dir| dir.join(".kache.toml"))
        .find(|candidate| candidate.is_file())
}

/// `$XDG_CONFIG_HOME/kache/config.toml` (whether or not it exists).
fn user_file_path(env: &Env) -> Option<PathBuf> {
    let xdg = env
        .get("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| env.get("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(xdg.join("kache").join("config.toml"))
}

/// `$XDG_CACHE_HOME/kache`, else `~/.cache/kache`, else (neither set)
/// [`crate::owner::fallback_cache_dir`].
fn default_cache_dir(env: &Env) -> PathBuf {
    env.get("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env.get("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map_or_else(crate::owner::fallback_cache_dir, |dir| dir.join("kache"))
}

/// The user's home directory from `HOME`.
pub fn home_dir() -> Option<PathBuf> {
    env("HOME").map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_settings_apply_with_defaults_for_the_rest() {
        let file: FileConfig = toml::from_str(
            "[cache]\nmax_size = \"2GiB\"\n[cache.remote]\ntype = \"s3\"\nbucket = \"b\"\n\
             [cache.planner]\ntoken = \"t\"\n",
        )
        .unwrap();
        let config = Config::resolve(file.cache, &Env::process()).unwrap();
        assert_eq!(config.max_size, 2 << 30);
        let remote = config.remote.unwrap();
        let kache_remote::Backend::S3(spec) = &remote.backend else {
            panic!("an s3 remote: {remote:?}");
        };
        assert_eq!(
            (spec.region.as_str(), remote.prefix.as_str()),
            ("us-east-1", "artifacts")
        );
        assert_eq!(remote.concurrency, 16);
        assert_eq!(config.planner.timeout_ms, 750);
        assert_eq!(
            config.planner.endpoint, None,
            "a token alone configures no planner"
        );
    }

    #[test]
    fn unknown_keys_and_remote_types_are_errors() {
        assert!(toml::from_str::<FileConfig>("[cache]\nmax_sise = \"1G\"\n").is_err());
        let file: FileConfig = toml::from_str("[cache.remote]\ntype = \"gcs\"\n").unwrap();
        assert!(Config::resolve(file.cache, &Env::process()).is_err());
    }

    #[test]
    fn a_shared_directory_is_a_remote_too() {
        let file: FileConfig =
            toml::from_str("[cache.remote]\ntype = \"fs\"\npath = \"/mnt/cache\"\n").unwrap();
        let remote = Config::resolve(file.cache, &Env::process())
            .unwrap()
            .remote
            .unwrap();
        assert_eq!(
            remote.backend,
            kache_remote::Backend::Fs(PathBuf::from("/mnt/cache"))
        );
        let file: FileConfig = toml::from_str("[cache.remote]\ntype = \"fs\"\n").unwrap();
        assert!(
            Config::resolve(file.cache, &Env::process()).is_err(),
            "fs without a path"
        );
    }

    #[test]
    fn an_oci_registry_is_a_remote_too() {
        let file: FileConfig = toml::from_str(
            "[cache.remote]\ntype = \"oci\"\nregistry = \"ghcr.io\"\nrepository = \"o/r/kache-cache\"\n",
        )
        .unwrap();
        let remote = Config::resolve(file.cache, &Env::process())
            .unwrap()
            .remote
            .unwrap();
        let kache_remote::Backend::Oci(spec) = &remote.backend else {
            panic!("an oci remote: {remote:?}");
        };
        assert_eq!(
            (spec.registry.as_str(), spec.repository.as_str()),
            ("ghcr.io", "o/r/kache-cache")
        );
        let file: FileConfig = toml::from_str("[cache.remote]\ntype = \"oci\"\n").unwrap();
        assert!(
            Config::resolve(file.cache, &Env::process()).is_err(),
            "oci without a registry"
        );
    }

    #[test]
    fn a_dependency_s_own_kache_toml_in_cargo_home_is_never_read() {
        let root = tempfile::tempdir().unwrap();
        let package = root.path().join("cargo/registry/src/index/evil-1.0.0");
        std::fs::create_dir_all(&package).unwrap();
        std::fs::write(package.join(".kache.toml"), "[cache]\ndir = \"/tmp/x\"\n").unwrap();
        let cargo_home = root.path().join("cargo").display().to_string();
        let env = Env::captured([("CARGO_HOME".to_string(), cargo_home)].into());
        assert_eq!(repo_file(&package, &env), None);
        assert_eq!(
            repo_file(&package, &Env::captured(Default::default())),
            Some(package.join(".kache.toml")),
            "outside CARGO_HOME the walk finds it"
        );
    }

    /// A user config (XDG) and a repository `.kache.toml` in a temp tree;
    /// `Config::load_in` with only the variables given.
    fn load_with(user: &str, repo: &str, vars: &[(&str, &str)]) -> (Config, tempfile::TempDir) {
        let root = tempfile::tempdir().unwrap();
        let user = user.replace("PUBLIC", &public_key());
        let xdg = root.path().join("xdg/kache");
        std::fs::create_dir_all(&xdg).unwrap();
        std::fs::write(xdg.join("config.toml"), &user).unwrap();
        let repo_dir = root.path().join("repo/sub");
        std::fs::create_dir_all(&repo_dir).unwrap();
        std::fs::write(root.path().join("repo/.kache.toml"), repo).unwrap();
        let mut env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.insert(
            "XDG_CONFIG_HOME".into(),
            root.path().join("xdg").display().to_string(),
        );
        let config = Config::load_in(&Env::captured(env), &repo_dir).unwrap();
        (config, root)
    }

    /// A public key that parses, made once per test process.
    fn public_key() -> String {
        static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        KEY.get_or_init(|| {
            let (key, _secret) = kache_remote::sign::SigningKey::generate().unwrap();
            key.public().to_string()
        })
        .clone()
    }

    const USER: &str = "[cache]\nmax_size = \"3G\"\nkey_salt = \"user\"\n\
        [cache.remote]\ntype = \"fs\"\npath = \"/user/remote\"\n\
        trusted_keys = [\"PUBLIC\"]\n\
        [cache.planner]\nendpoint = \"http://planner.user\"\n";
    const REPO: &str = "[cache]\nmax_size = \"5G\"\n\
        [cache.remote]\npath = \"/repo/remote\"\nprefix = \"repo\"\n\
        signing_key = \"/repo/key\"\ntrusted_keys = []\n\
        [cache.planner]\nendpoint = \"http://planner.evil\"\ntoken = \"t\"\n";

    #[test]
    fn files_merge_user_then_repository_then_environment() {
        let (config, root) = load_with(USER, REPO, &[("KACHE_KEY_SALT", "env")]);
        assert_eq!(config.max_size, 5 << 30, "the repository's file wins");
        assert_eq!(
            config.key_salt.as_deref(),
            Some("env"),
            "the environment wins"
        );
        let remote = config.remote.as_ref().unwrap();
        assert_eq!(remote.prefix, "repo", "a harmless repository key applies");
        assert_eq!(
            config.origins.get("max_size"),
            Some(&root.path().join("repo/.kache.toml"))
        );
        assert_eq!(
            config.origins.get("remote.path"),
            Some(&root.path().join("xdg/kache/config.toml"))
        );
        assert_eq!(config.sources.len(), 2);
    }

    #[test]
    fn a_repository_file_may_not_move_the_remote_or_planner_nor_set_secrets() {
        let (config, _root) = load_with(USER, REPO, &[]);
        let remote = config.remote.as_ref().unwrap();
        assert_eq!(
            remote.backend,
            kache_remote::Backend::Fs(PathBuf::from("/user/remote"))
        );
        assert_eq!(remote.trust.signing_key, None);
        assert_eq!(remote.trust.trusted_keys.len(), 1, "not removed");
        assert_eq!(
            config.planner.endpoint.as_deref(),
            Some("http://planner.user")
        );
        assert_eq!(config.planner.token, None);
        for key in [
            "remote.path",
            "remote.signing_key",
            "remote.trusted_keys",
            "planner.endpoint",
            "planner.token",
        ] {
            assert!(
                config
                    .ignored
                    .iter()
                    .any(|l| l.starts_with(&format!("{key} in "))),
                "{key}: {:?}",
                config.ignored
            );
        }
        // A repository cannot trust itself.
        let (config, _root) = load_with(
            USER,
            "[cache]\ntrust_repo_config = true\n[cache.planner]\nendpoint = \"http://e\"\n",
            &[],
        );
        assert_eq!(
            config.planner.endpoint.as_deref(),
            Some("http://planner.user")
        );
    }

    #[test]
    fn trust_repo_config_in_the_users_file_lets_the_repository_set_everything() {
        let user = format!("{USER}\n").replace("[cache]\n", "[cache]\ntrust_repo_config = true\n");
        let (config, _root) = load_with(&user, REPO, &[]);
        let remote = config.remote.as_ref().unwrap();
        assert_eq!(
            remote.backend,
            kache_remote::Backend::Fs(PathBuf::from("/repo/remote"))
        );
        assert_eq!(remote.trust.signing_key.as_deref(), Some("/repo/key"));
        assert_eq!(
            remote.trust.trusted_keys.len(),
            1,
            "an empty list from the repository removes none of the user's keys"
        );
        assert_eq!(
            config.planner.endpoint.as_deref(),
            Some("http://planner.evil")
        );
        assert!(config.ignored.is_empty(), "{:?}", config.ignored);
    }

    #[test]
    fn a_config_file_others_may_write_is_not_read() {
        use std::os::unix::fs::PermissionsExt;
        let (_, root) = load_with(USER, "[cache]\nmax_size = \"5G\"\n", &[]);
        let repo_file = root.path().join("repo/.kache.toml");
        std::fs::set_permissions(&repo_file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let env = Env::captured(HashMap::from([(
            "XDG_CONFIG_HOME".to_string(),
            root.path().join("xdg").display().to_string(),
        )]));
        let config = Config::load_in(&env, &root.path().join("repo/sub")).unwrap();
        assert_eq!(config.max_size, 3 << 30);
        assert!(
            config
                .ignored
                .iter()
                .any(|l| l.contains("other users may write")),
            "{:?}",
            config.ignored
        );
    }

    #[test]
    fn without_home_the_cache_is_a_directory_named_for_the_user() {
        let dir = default_cache_dir(&Env::captured(HashMap::new()));
        assert_eq!(
            dir.file_name().unwrap().to_string_lossy(),
            format!("kache-{}", crate::owner::my_uid())
        );
    }

    #[test]
    fn progress_values() {
        assert_eq!(Progress::parse("1"), Progress::Hits);
        assert_eq!(Progress::parse("hits"), Progress::Hits);
        assert_eq!(Progress::parse("all"), Progress::All);
        assert_eq!(Progress::parse("verbose"), Progress::All);
        assert_eq!(Progress::parse("yes"), Progress::Off);
    }
}
