//! Client configuration: environment, then a config file, then defaults.
//!
//! The file is `KACHE_CONFIG`, else the nearest `.kache.toml` walking up from
//! the current directory, else `$XDG_CONFIG_HOME/kache/config.toml`. Every
//! setting has an environment name that wins over the file.

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
    /// `KACHE_VERIFY`: every hit also compiles, and compares what rustc
    /// wrote with what the hit would have restored.
    pub verify: bool,
    pub compression_level: i32,
    pub remote: Option<RemoteConfig>,
    pub planner: PlannerConfig,
    /// The daemon exits after this many idle seconds (`None`: its default).
    pub daemon_idle_secs: Option<u64>,
    /// The file the settings came from, if any.
    pub source: Option<PathBuf>,
}

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
}

impl RemoteConfig {
    /// `s3://bucket at endpoint/prefix` or `fs:/path/prefix`, for messages.
    pub fn describe(&self) -> String {
        let location = match &self.backend {
            kache_remote::Backend::S3(spec) => spec.location(),
            kache_remote::Backend::Fs(path) => format!("fs:{}", path.display()),
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCache {
    dir: Option<PathBuf>,
    max_size: Option<String>,
    local_only: Option<bool>,
    key_salt: Option<String>,
    progress: Option<String>,
    cache_executables: Option<bool>,
    compression_level: Option<i32>,
    remote: Option<FileRemote>,
    planner: Option<FilePlanner>,
    daemon: Option<FileDaemon>,
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

/// `1` or `true` (any case) is on; anything else is off.
pub fn env_flag(name: &str) -> Option<bool> {
    env(name).map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
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
        Self::resolve(file.cache, None).map(|_| ())
    }

    /// The file `kache config` edits: the one in use, else the XDG one.
    pub fn editable_path() -> Option<PathBuf> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        config_file(&cwd).or_else(|| {
            let xdg = env("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .or_else(|| home_dir().map(|h| h.join(".config")))?;
            Some(xdg.join("kache").join("config.toml"))
        })
    }

    /// Loads the configuration for the current process.
    pub fn load() -> Result<Self> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let source = config_file(&cwd);
        let file = match &source {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        Self::resolve(file.cache, source)
    }

    fn resolve(file: FileCache, source: Option<PathBuf>) -> Result<Self> {
        let cache_dir = env("KACHE_CACHE_DIR")
            .map(PathBuf::from)
            .or(file.dir)
            .unwrap_or_else(default_cache_dir);
        let max_size = match env("KACHE_MAX_SIZE").or(file.max_size) {
            Some(text) => kache_core::size::parse_size(&text)
                .with_context(|| format!("KACHE_MAX_SIZE: cannot read {text:?} as a size"))?,
            None => DEFAULT_MAX_SIZE,
        };
        let compression_level = match env("KACHE_COMPRESSION_LEVEL") {
            Some(text) => text
                .parse()
                .with_context(|| format!("KACHE_COMPRESSION_LEVEL: {text:?} is not a number"))?,
            None => file.compression_level.unwrap_or(3),
        };
        if !(1..=22).contains(&compression_level) {
            bail!("KACHE_COMPRESSION_LEVEL must be within 1..=22, got {compression_level}");
        }
        let remote = resolve_remote(file.remote.unwrap_or_default())?;
        let file_planner = file.planner.unwrap_or_default();
        let timeout_ms = match env("KACHE_PLANNER_TIMEOUT_MS") {
            Some(text) => text
                .parse()
                .with_context(|| format!("KACHE_PLANNER_TIMEOUT_MS: {text:?} is not a number"))?,
            None => file_planner.timeout_ms.unwrap_or(750),
        };
        let daemon_idle_secs = match env("KACHE_DAEMON_IDLE_TIMEOUT") {
            Some(text) => Some(text.parse().with_context(|| {
                format!("KACHE_DAEMON_IDLE_TIMEOUT: {text:?} is not a number of seconds")
            })?),
            None => file.daemon.and_then(|d| d.idle_timeout_secs),
        };
        Ok(Self {
            cache_dir,
            max_size,
            daemon_idle_secs,
            disabled: env_flag("KACHE_DISABLED").unwrap_or(false),
            verify: env_flag("KACHE_VERIFY").unwrap_or(false),
            local_only: env_flag("KACHE_LOCAL_ONLY")
                .or(file.local_only)
                .unwrap_or(false),
            key_salt: env("KACHE_KEY_SALT").or(file.key_salt),
            progress: Progress::parse(&env("KACHE_PROGRESS").or(file.progress).unwrap_or_default()),
            cache_executables: env_flag("KACHE_CACHE_EXECUTABLES")
                .or(file.cache_executables)
                .unwrap_or(false),
            compression_level,
            remote,
            planner: PlannerConfig {
                endpoint: env("KACHE_PLANNER_ENDPOINT").or(file_planner.endpoint),
                token: env("KACHE_PLANNER_TOKEN").or(file_planner.token),
                timeout_ms,
            },
            source,
        })
    }
}

/// The remote from `KACHE_S3_*` and `[cache.remote]`; `None` when no bucket
/// (or, for `type = "fs"`, no path) is set.
fn resolve_remote(file: FileRemote) -> Result<Option<RemoteConfig>> {
    let prefix = env("KACHE_S3_PREFIX")
        .or(file.prefix)
        .unwrap_or_else(|| "artifacts".to_string());
    let concurrency = match env("KACHE_S3_CONCURRENCY") {
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=256).contains(n))
            .with_context(|| {
                format!("KACHE_S3_CONCURRENCY: {text:?} is not a number in 1..=256")
            })?,
        None => 16,
    };
    let backend = match file.kind.as_deref().unwrap_or("s3") {
        "fs" => match file.path {
            Some(path) => kache_remote::Backend::Fs(path),
            None => bail!("[cache.remote] type \"fs\" needs a path"),
        },
        "s3" => {
            let Some(bucket) = env("KACHE_S3_BUCKET").or(file.bucket) else {
                return Ok(None);
            };
            kache_remote::Backend::S3(kache_remote::s3::S3Spec {
                bucket,
                endpoint: env("KACHE_S3_ENDPOINT").or(file.endpoint),
                region: env("KACHE_S3_REGION")
                    .or(file.region)
                    .unwrap_or_else(|| "us-east-1".to_string()),
                access_key: env("KACHE_S3_ACCESS_KEY"),
                secret_key: env("KACHE_S3_SECRET_KEY"),
                profile: env("KACHE_S3_PROFILE").or(file.profile),
            })
        }
        other => bail!("[cache.remote] type {other:?} is not supported (\"s3\" or \"fs\")"),
    };
    Ok(Some(RemoteConfig {
        backend,
        prefix,
        concurrency,
    }))
}

/// `KACHE_CONFIG`, else the nearest `.kache.toml`, else the XDG config file.
fn config_file(cwd: &Path) -> Option<PathBuf> {
    if let Some(path) = env("KACHE_CONFIG") {
        return Some(PathBuf::from(path));
    }
    for dir in cwd.ancestors() {
        let candidate = dir.join(".kache.toml");
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    let xdg = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| home_dir().map(|h| h.join(".config")))?;
    let candidate = xdg.join("kache").join("config.toml");
    candidate.is_file().then_some(candidate)
}

/// `$XDG_CACHE_HOME/kache`, else `~/.cache/kache`.
fn default_cache_dir() -> PathBuf {
    env("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| home_dir().map(|h| h.join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("kache")
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
        let config = Config::resolve(file.cache, None).unwrap();
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
        assert!(Config::resolve(file.cache, None).is_err());
    }

    #[test]
    fn a_shared_directory_is_a_remote_too() {
        let file: FileConfig =
            toml::from_str("[cache.remote]\ntype = \"fs\"\npath = \"/mnt/cache\"\n").unwrap();
        let remote = Config::resolve(file.cache, None).unwrap().remote.unwrap();
        assert_eq!(
            remote.backend,
            kache_remote::Backend::Fs(PathBuf::from("/mnt/cache"))
        );
        let file: FileConfig = toml::from_str("[cache.remote]\ntype = \"fs\"\n").unwrap();
        assert!(
            Config::resolve(file.cache, None).is_err(),
            "fs without a path"
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
