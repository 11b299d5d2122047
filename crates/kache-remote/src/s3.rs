//! The S3 backend: any S3-compatible endpoint, path-style addressing.
//!
//! Credentials, first match wins: an explicit key pair
//! (`KACHE_S3_ACCESS_KEY` / `KACHE_S3_SECRET_KEY`), else a named profile
//! from the shared credentials file (`~/.aws/credentials`, or
//! `AWS_SHARED_CREDENTIALS_FILE`), else the standard AWS chain
//! (`AWS_ACCESS_KEY_ID`…, web identity, container and instance metadata).
//!
//! Time bound: a connection attempt gives up after 3 s, a request after
//! 60 s, and a failing request is retried with backoff for at most 15 s.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::{BackoffConfig, ClientOptions, RetryConfig};

use crate::storage::{ObjectStorage, RemoteError, Result};

/// Connection timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Timeout of one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a failing request is retried.
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(15);

/// Where a bucket is and how to sign for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct S3Spec {
    pub bucket: String,
    /// `http(s)://host:port`; `None` is AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// A profile of the shared credentials file.
    pub profile: Option<String>,
}

impl S3Spec {
    /// `s3://bucket (endpoint)`, for messages.
    pub fn location(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => format!("s3://{} at {endpoint}", self.bucket),
            None => format!("s3://{}", self.bucket),
        }
    }
}

/// Opens the bucket of `spec`.
pub fn open(spec: &S3Spec) -> Result<ObjectStorage> {
    if spec.bucket.is_empty() {
        return Err(RemoteError::Config("no bucket is configured".into()));
    }
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(&spec.bucket)
        .with_region(&spec.region)
        .with_virtual_hosted_style_request(false)
        .with_client_options(
            ClientOptions::new()
                .with_connect_timeout(CONNECT_TIMEOUT)
                .with_timeout(REQUEST_TIMEOUT),
        )
        .with_retry(RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(3),
                base: 2.0,
            },
            max_retries: 4,
            retry_timeout: RETRY_TIMEOUT,
        });
    if let Some(endpoint) = &spec.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    match (&spec.access_key, &spec.secret_key) {
        (Some(key), Some(secret)) => {
            builder = builder
                .with_access_key_id(key)
                .with_secret_access_key(secret);
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(RemoteError::Config(
                "KACHE_S3_ACCESS_KEY and KACHE_S3_SECRET_KEY must be set together".into(),
            ));
        }
        (None, None) => {
            let profile = spec
                .profile
                .clone()
                .or_else(|| std::env::var("AWS_PROFILE").ok());
            if let Some(profile) = profile {
                let (key, secret, token) = profile_credentials(&profile)?;
                builder = builder
                    .with_access_key_id(key)
                    .with_secret_access_key(secret);
                if let Some(token) = token {
                    builder = builder.with_token(token);
                }
            }
        }
    }
    let store = builder
        .build()
        .map_err(|e| RemoteError::Config(e.to_string()))?;
    Ok(ObjectStorage::new(Arc::new(store), spec.location()))
}

/// `(access key, secret, session token)` of `profile` in the shared
/// credentials file.
fn profile_credentials(profile: &str) -> Result<(String, String, Option<String>)> {
    let path = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".aws/credentials"))
        })
        .ok_or_else(|| RemoteError::Config("no home directory for ~/.aws/credentials".into()))?;
    let text = std::fs::read_to_string(&path).map_err(|e| {
        RemoteError::Config(format!(
            "profile {profile}: reading {}: {e}",
            path.display()
        ))
    })?;
    let values = ini_section(&text, profile);
    let get = |name: &str| {
        values
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(key), Some(secret)) => Ok((key, secret, get("aws_session_token"))),
        _ => Err(RemoteError::Config(format!(
            "profile {profile} in {} has no aws_access_key_id and aws_secret_access_key",
            path.display()
        ))),
    }
}

/// The `key = value` pairs of `[section]` in an INI text.
fn ini_section(text: &str, section: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            inside = name == section || name.strip_prefix("profile ") == Some(section);
            continue;
        }
        if inside && let Some((key, value)) = line.split_once('=') {
            out.push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_section_is_read_from_the_credentials_file() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key = B\n\n\
                    [profile ci]\naws_access_key_id=C\naws_secret_access_key=D\naws_session_token = T\n";
        assert_eq!(
            ini_section(text, "ci"),
            [
                ("aws_access_key_id".to_string(), "C".to_string()),
                ("aws_secret_access_key".to_string(), "D".to_string()),
                ("aws_session_token".to_string(), "T".to_string()),
            ]
        );
        assert_eq!(ini_section(text, "default").len(), 2);
        assert!(ini_section(text, "missing").is_empty());
    }

    #[test]
    fn half_a_key_pair_is_a_configuration_error() {
        let spec = S3Spec {
            bucket: "b".into(),
            access_key: Some("k".into()),
            ..S3Spec::default()
        };
        assert!(matches!(open(&spec), Err(RemoteError::Config(_))));
        assert!(matches!(
            open(&S3Spec::default()),
            Err(RemoteError::Config(_))
        ));
    }
}
