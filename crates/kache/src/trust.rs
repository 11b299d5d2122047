//! What one run trusts of the remote and may write to it.
//!
//! - **Trusted keys** (`KACHE_TRUSTED_KEYS`, `[cache.remote] trusted_keys`):
//!   with any set, only entries signed by one of them are imported (see
//!   [`crate::remote`]); without, the remote is unauthenticated, as before,
//!   and `kache doctor` says so.
//! - **The signing key** (`KACHE_SIGNING_KEY`, `[cache.remote] signing_key`):
//!   a file holding the secret `kache keygen` wrote, or the secret itself
//!   (a CI secret in the environment). Every upload is signed with it.
//! - **Read-only runs**: with `KACHE_REMOTE_READ_ONLY=1`, on a GitHub pull
//!   request from a fork (read from `GITHUB_EVENT_PATH`) or a GitLab merge
//!   request from another project, nothing is written to the remote. An
//!   explicit `KACHE_REMOTE_READ_ONLY` (or `read_only` in the file) wins
//!   over the detection either way.
//! - **Bounds** on what one download may bring ([`Limits`]).

use std::path::Path;

use anyhow::{Context, Result, bail};
use kache_remote::sign::{SigningKey, TrustedKeys};
use serde::{Deserialize, Serialize};

/// Bounds on downloads, each with its environment name and default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// `KACHE_REMOTE_MAX_ENTRY_BYTES` (default 4 GiB): the largest pack
    /// downloaded, and the largest total its files may unpack to.
    pub max_entry_bytes: u64,
    /// `KACHE_REMOTE_MAX_MANIFEST_BYTES` (default 32 MiB): the largest build
    /// manifest or shard read (they are read whole into memory). Entry
    /// manifests are a few hundred bytes and bounded at 64 KiB.
    pub max_manifest_bytes: u64,
    /// `KACHE_PREFETCH_MAX_ENTRIES` (default 5,000): entries one prefetch
    /// downloads at most.
    pub max_prefetch_entries: usize,
    /// `KACHE_PREFETCH_MAX_BYTES` (default half of `KACHE_MAX_SIZE`): bytes
    /// one prefetch downloads at most, so speculation never evicts more
    /// than half the cache.
    pub max_prefetch_bytes: u64,
}

/// The largest entry manifest read.
pub const MAX_ENTRY_MANIFEST_BYTES: u64 = 64 << 10;

impl Limits {
    /// The defaults for a cache of `max_size` bytes.
    pub fn defaults(max_size: u64) -> Self {
        Self {
            max_entry_bytes: 4 << 30,
            max_manifest_bytes: 32 << 20,
            max_prefetch_entries: 5_000,
            max_prefetch_bytes: max_size / 2,
        }
    }
}

/// The remote's trust settings for this run (carried to the daemon with
/// the rest of the remote's settings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trust {
    /// Public keys (`ed25519:…`), already checked to parse.
    pub trusted_keys: Vec<String>,
    /// A path to the secret key file, or the secret itself.
    pub signing_key: Option<String>,
    /// Why this run writes nothing to the remote; `None`: it may write.
    pub read_only: Option<String>,
    pub limits: Limits,
}

impl Default for Trust {
    fn default() -> Self {
        Self {
            trusted_keys: Vec::new(),
            signing_key: None,
            read_only: None,
            limits: Limits::defaults(crate::config::DEFAULT_MAX_SIZE),
        }
    }
}

/// The file settings [`Trust::resolve`] reads besides the environment.
#[derive(Debug, Default)]
pub struct FileTrust {
    pub trusted_keys: Option<Vec<String>>,
    pub signing_key: Option<String>,
    pub read_only: Option<bool>,
}

impl Trust {
    /// Reads the trust settings: environment over file over defaults.
    /// A malformed key or bound is an error, never a silent "trust all".
    pub fn resolve(
        file: FileTrust,
        max_size: u64,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let trusted_keys = match env("KACHE_TRUSTED_KEYS") {
            Some(text) => text,
            None => file.trusted_keys.unwrap_or_default().join(","),
        };
        let parsed = TrustedKeys::parse(&trusted_keys)
            .map_err(anyhow::Error::msg)
            .context("KACHE_TRUSTED_KEYS")?;
        let trusted_keys = parsed.keys().iter().map(ToString::to_string).collect();
        let explicit = env("KACHE_REMOTE_READ_ONLY")
            .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
            .or(file.read_only);
        let read_only = match explicit {
            Some(true) => Some("KACHE_REMOTE_READ_ONLY is set".to_string()),
            Some(false) => None,
            None => untrusted_job(&env),
        };
        let defaults = Limits::defaults(max_size);
        let bound = |name: &str, default: u64| -> Result<u64> {
            match env(name) {
                Some(text) => kache_core::size::parse_size(&text)
                    .with_context(|| format!("{name}: cannot read {text:?} as a size")),
                None => Ok(default),
            }
        };
        let limits = Limits {
            max_entry_bytes: bound("KACHE_REMOTE_MAX_ENTRY_BYTES", defaults.max_entry_bytes)?,
            max_manifest_bytes: bound(
                "KACHE_REMOTE_MAX_MANIFEST_BYTES",
                defaults.max_manifest_bytes,
            )?,
            max_prefetch_entries: match env("KACHE_PREFETCH_MAX_ENTRIES") {
                Some(text) => text.parse().with_context(|| {
                    format!("KACHE_PREFETCH_MAX_ENTRIES: {text:?} is not a number")
                })?,
                None => defaults.max_prefetch_entries,
            },
            max_prefetch_bytes: bound("KACHE_PREFETCH_MAX_BYTES", defaults.max_prefetch_bytes)?,
        };
        Ok(Self {
            trusted_keys,
            signing_key: env("KACHE_SIGNING_KEY").or(file.signing_key),
            read_only,
            limits,
        })
    }

    /// The keys signatures are accepted from (empty: nothing is checked).
    pub fn trusted(&self) -> TrustedKeys {
        // Checked when resolved; should one not parse after all (a request
        // written by hand), nothing is trusted rather than everything.
        TrustedKeys::parse(&self.trusted_keys.join(",")).unwrap_or_else(|_| TrustedKeys::nobody())
    }

    /// The signing key, loaded from its file or read inline; `None` when
    /// none is configured.
    pub fn signing_key(&self) -> Result<Option<SigningKey>> {
        let Some(setting) = &self.signing_key else {
            return Ok(None);
        };
        // The setting is a secret or a path to one: no message ever shows
        // it (a CI secret pasted with quotes, or without its prefix, must
        // not end up in a log). A value holding the prefix anywhere is
        // taken as the key itself, quotes and spaces around it dropped.
        let text = if let Some(at) = setting.find("kache-secret-") {
            setting[at..]
                .trim_end_matches(|c: char| c.is_whitespace() || c == '"' || c == '\'')
                .to_string()
        } else {
            match std::fs::read_to_string(Path::new(setting)) {
                Ok(text) => text,
                Err(err) => bail!(
                    "KACHE_SIGNING_KEY is neither a key (kache-secret-ed25519:…) nor a file that can be read ({})",
                    err.kind()
                ),
            }
        };
        match SigningKey::parse(&text) {
            Ok(key) => Ok(Some(key)),
            // Never echo the text: it may be a secret with a typo.
            Err(why) => bail!("KACHE_SIGNING_KEY: {why}"),
        }
    }
}

/// Why the CI job this process runs in must not write to a shared cache,
/// if it is one that runs code from outside the repository: a GitHub pull
/// request whose head is another repository (a fork), or a GitLab merge
/// request from another project.
pub fn untrusted_job(env: &impl Fn(&str) -> Option<String>) -> Option<String> {
    if let (Some(source), Some(target)) = (
        env("CI_MERGE_REQUEST_SOURCE_PROJECT_ID"),
        env("CI_MERGE_REQUEST_PROJECT_ID"),
    ) && source != target
    {
        return Some(format!(
            "a GitLab merge request from another project ({source})"
        ));
    }
    let path = env("GITHUB_EVENT_PATH")?;
    let text = std::fs::read(&path).ok()?;
    github_fork_pull_request(&text)
        .map(|head| format!("a GitHub pull request from a fork ({head}; GITHUB_EVENT_PATH)"))
}

/// The head repository of a pull-request event whose head is not its base
/// repository; `"unknown"` when the head repository is gone (a deleted
/// fork). `None` for any other event.
pub fn github_fork_pull_request(event: &[u8]) -> Option<String> {
    let event: serde_json::Value = serde_json::from_slice(event).ok()?;
    let pull = event.get("pull_request")?;
    let base = pull
        .pointer("/base/repo/full_name")
        .and_then(|v| v.as_str());
    let head_repo = pull.pointer("/head/repo");
    let head = head_repo
        .and_then(|r| r.get("full_name"))
        .and_then(|v| v.as_str());
    let fork = head_repo
        .and_then(|r| r.get("fork"))
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    match head {
        None => Some("unknown".to_string()),
        Some(head) if fork || Some(head) != base => Some(head.to_string()),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    const FORK: &str = r#"{"action":"opened","pull_request":{
        "head":{"repo":{"full_name":"mallory/kache","fork":true}},
        "base":{"repo":{"full_name":"team/kache","fork":false}}}}"#;
    const SAME_REPO: &str = r#"{"action":"opened","pull_request":{
        "head":{"repo":{"full_name":"team/kache","fork":false}},
        "base":{"repo":{"full_name":"team/kache","fork":false}}}}"#;

    #[test]
    fn a_pull_request_from_a_fork_is_read_only_unless_overridden() {
        let dir = tempfile::tempdir().unwrap();
        let event = dir.path().join("event.json");
        std::fs::write(&event, FORK).unwrap();
        let path = event.to_str().unwrap();
        let trust = Trust::resolve(
            FileTrust::default(),
            1 << 30,
            env_of(&[("GITHUB_EVENT_PATH", path)]),
        )
        .unwrap();
        let why = trust.read_only.expect("a fork's pull request is read-only");
        assert!(why.contains("mallory/kache"), "{why}");
        let forced = Trust::resolve(
            FileTrust::default(),
            1 << 30,
            env_of(&[("GITHUB_EVENT_PATH", path), ("KACHE_REMOTE_READ_ONLY", "0")]),
        )
        .unwrap();
        assert_eq!(forced.read_only, None, "an explicit setting wins");

        std::fs::write(&event, SAME_REPO).unwrap();
        let own = Trust::resolve(
            FileTrust::default(),
            1 << 30,
            env_of(&[("GITHUB_EVENT_PATH", path)]),
        )
        .unwrap();
        assert_eq!(own.read_only, None, "a branch of the repository writes");
        let push = br#"{"ref":"refs/heads/main","repository":{"full_name":"team/kache"}}"#;
        assert_eq!(github_fork_pull_request(push), None);
        let deleted =
            br#"{"pull_request":{"head":{"repo":null},"base":{"repo":{"full_name":"t/k"}}}}"#;
        assert_eq!(
            github_fork_pull_request(deleted).as_deref(),
            Some("unknown")
        );
    }

    #[test]
    fn gitlab_merge_requests_from_another_project_and_the_flag() {
        let mr = env_of(&[
            ("CI_MERGE_REQUEST_SOURCE_PROJECT_ID", "12"),
            ("CI_MERGE_REQUEST_PROJECT_ID", "7"),
        ]);
        assert!(untrusted_job(&mr).is_some());
        let own = env_of(&[
            ("CI_MERGE_REQUEST_SOURCE_PROJECT_ID", "7"),
            ("CI_MERGE_REQUEST_PROJECT_ID", "7"),
        ]);
        assert!(untrusted_job(&own).is_none());
        let flag = Trust::resolve(
            FileTrust::default(),
            1 << 30,
            env_of(&[("KACHE_REMOTE_READ_ONLY", "1")]),
        )
        .unwrap();
        assert!(flag.read_only.is_some());
        let file = Trust::resolve(
            FileTrust {
                read_only: Some(true),
                ..FileTrust::default()
            },
            1 << 30,
            env_of(&[]),
        )
        .unwrap();
        assert!(file.read_only.is_some());
    }

    #[test]
    fn keys_and_bounds_are_checked_when_read() {
        let bad = Trust::resolve(
            FileTrust::default(),
            1 << 30,
            env_of(&[("KACHE_TRUSTED_KEYS", "ed25519:nothex")]),
        );
        assert!(bad.is_err(), "a malformed key never means trust all");
        let (key, secret) = SigningKey::generate().unwrap();
        let trust = Trust::resolve(
            FileTrust {
                trusted_keys: Some(vec![key.public().to_string()]),
                ..FileTrust::default()
            },
            1 << 30,
            env_of(&[
                ("KACHE_SIGNING_KEY", &secret),
                ("KACHE_PREFETCH_MAX_BYTES", "1MiB"),
            ]),
        )
        .unwrap();
        assert_eq!(trust.trusted().keys(), &[key.public()]);
        assert_eq!(trust.signing_key().unwrap().unwrap().public(), key.public());
        assert_eq!(trust.limits.max_prefetch_bytes, 1 << 20);
        assert_eq!(trust.limits.max_entry_bytes, 4 << 30);
        let typo = Trust {
            signing_key: Some(format!("{secret}x")),
            ..Trust::default()
        };
        let err = typo.signing_key().unwrap_err().to_string();
        assert!(
            !err.contains(&secret[25..]),
            "the secret is not echoed: {err}"
        );
        // Quoted, as a CI secret is sometimes saved: still the key.
        let quoted = Trust {
            signing_key: Some(format!("\"{secret}\"\n")),
            ..Trust::default()
        };
        assert_eq!(
            quoted.signing_key().unwrap().unwrap().public(),
            key.public()
        );
        // Without its prefix it looks like a path; the error never shows it.
        let bare = Trust {
            signing_key: Some(secret[21..].to_string()),
            ..Trust::default()
        };
        let err = format!("{:#}", bare.signing_key().unwrap_err());
        assert!(
            !err.contains(&secret[25..]),
            "the secret is not echoed: {err}"
        );
    }
}
