//! The storage trait every backend implements, and its errors.
//!
//! A backend is a flat namespace of objects named by `/`-separated keys.
//! The contract: `put` is atomic (a reader sees the whole object or none),
//! `get` of a missing object is `Ok(None)`, `list` returns every object
//! below a prefix "directory", and every error says which store it came
//! from in one line. Retries with backoff happen inside the backend, within
//! a bounded time (see [`crate::s3`]); an error returned here is final.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Objects up to this size are uploaded in one request; larger ones in parts.
const SINGLE_PUT_MAX: u64 = 16 << 20;
/// The size of one part of a multipart upload.
const PART_SIZE: usize = 8 << 20;

/// What went wrong talking to a store.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The store refused the credentials or the operation.
    #[error(
        "access denied by {location}: {detail} (check the access key, secret and bucket permissions)"
    )]
    Denied { location: String, detail: String },
    /// The store could not be reached or kept failing after retries.
    #[error("{location} is unavailable: {detail}")]
    Unavailable { location: String, detail: String },
    /// A local file could not be read or written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The configuration cannot work (a missing bucket name, a bad URL).
    #[error("remote configuration: {0}")]
    Config(String),
    /// An object larger than the reader accepts (see `get_bounded`,
    /// `get_to_file`): nothing of it is kept.
    #[error("{location}: {detail}")]
    TooLarge { location: String, detail: String },
    /// Anything else the store said, in one line.
    #[error("{location}: {detail}")]
    Other { location: String, detail: String },
}

impl RemoteError {
    /// Whether retrying later could help (an outage), as opposed to a
    /// configuration or permission problem.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

pub type Result<T> = std::result::Result<T, RemoteError>;

/// The error of an object larger than a reader accepts.
pub fn too_large(location: &str, key: &str, max_bytes: u64) -> RemoteError {
    RemoteError::TooLarge {
        location: location.to_string(),
        detail: format!("{key} is larger than the {max_bytes} bytes accepted"),
    }
}

/// An object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub name: String,
    pub size: u64,
    /// Last modification, milliseconds since the Unix epoch.
    pub modified_ms: u64,
}

/// A flat key-value object store.
#[async_trait]
pub trait Storage: Send + Sync {
    /// Where the objects live, for messages: `s3://bucket (endpoint)`, `fs:/mnt/cache`.
    fn location(&self) -> &str;
    /// The whole object, or `None` when it does not exist.
    async fn get(&self, key: &str) -> Result<Option<Bytes>>;
    /// The whole object if it has at most `max_bytes`; a larger one is an
    /// error naming the bound. Documents read from a hostile bucket (entry
    /// and build manifests, shards) come through here. A backend that can
    /// stream overrides this so a large object is never held in memory.
    async fn get_bounded(&self, key: &str, max_bytes: u64) -> Result<Option<Bytes>> {
        let Some(bytes) = self.get(key).await? else {
            return Ok(None);
        };
        if bytes.len() as u64 > max_bytes {
            return Err(too_large(self.location(), key, max_bytes));
        }
        Ok(Some(bytes))
    }
    /// Streams the object into a new file at `dest`; `None` when it does
    /// not exist. Fails once more than `max_bytes` arrive.
    async fn get_to_file(&self, key: &str, dest: &Path, max_bytes: u64) -> Result<Option<u64>>;
    /// Stores `body` under `key`, replacing any previous object.
    async fn put(&self, key: &str, body: Bytes) -> Result<()>;
    /// Stores the file at `source` under `key`, streaming large files in parts.
    async fn put_file(&self, key: &str, source: &Path) -> Result<()>;
    /// Whether an object exists.
    async fn exists(&self, key: &str) -> Result<bool>;
    /// The names of every object below `prefix/`.
    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self
            .list_info(prefix)
            .await?
            .into_iter()
            .map(|o| o.name)
            .collect())
    }
    /// Every object below `prefix/` with its size and modification time.
    async fn list_info(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    /// The names of the "directories" directly below `prefix/` (last component only).
    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>>;
    /// Deletes an object; deleting a missing one is not an error.
    async fn delete(&self, key: &str) -> Result<()>;
}

/// A [`Storage`] over any `object_store` backend. The backend files
/// ([`crate::s3`], [`crate::fs`]) only build the `ObjectStore`.
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    location: String,
}

impl ObjectStorage {
    pub fn new(store: Arc<dyn ObjectStore>, location: String) -> Self {
        Self { store, location }
    }

    fn error(&self, err: object_store::Error) -> RemoteError {
        classify(&self.location, err)
    }
}

/// Maps an `object_store` error to one line of [`RemoteError`]: the
/// server's own error code and message when it sent one, else the
/// innermost cause (`Connection refused`), never a request dump.
fn classify(location: &str, err: object_store::Error) -> RemoteError {
    let location = location.to_string();
    let full = one_line(&err);
    let detail = server_message(&full).unwrap_or_else(|| {
        let cause = innermost(&err);
        match full
            .split("after ")
            .nth(1)
            .and_then(|r| r.split(',').next())
        {
            Some(retries) if retries.contains("retries") => format!("{cause} (after {retries})"),
            _ => cause,
        }
    });
    match err {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => RemoteError::Denied { location, detail },
        object_store::Error::Generic { .. } => {
            let lower = full.to_ascii_lowercase();
            let denied = [
                "403 forbidden",
                "401 unauthorized",
                "accessdenied",
                "signaturedoesnotmatch",
                "invalidaccesskeyid",
            ];
            if denied.iter().any(|d| lower.contains(d)) {
                RemoteError::Denied { location, detail }
            } else {
                RemoteError::Unavailable { location, detail }
            }
        }
        _ => RemoteError::Other { location, detail },
    }
}

/// `Code: Message` from an S3 XML error body inside `text`.
fn server_message(text: &str) -> Option<String> {
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{name}>"))?;
        Some(text[start..start + end].trim().to_string())
    };
    match (tag("Code"), tag("Message")) {
        (Some(code), Some(message)) => Some(format!("{code}: {message}")),
        (Some(code), None) => Some(code),
        _ => None,
    }
}

/// The deepest source of an error: the cause a person can act on.
fn innermost(err: &dyn std::error::Error) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    let text = current.to_string();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An error and its sources on one line, bounded in length.
fn one_line(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    let mut line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.len() > 400 {
        let mut cut = 400;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    line
}

fn is_not_found(err: &object_store::Error) -> bool {
    matches!(err, object_store::Error::NotFound { .. })
}

#[async_trait]
impl Storage for ObjectStorage {
    fn location(&self) -> &str {
        &self.location
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        match self.store.get(&ObjectPath::from(key)).await {
            Ok(result) => Ok(Some(result.bytes().await.map_err(|e| self.error(e))?)),
            Err(err) if is_not_found(&err) => Ok(None),
            Err(err) => Err(self.error(err)),
        }
    }

    async fn get_bounded(&self, key: &str, max_bytes: u64) -> Result<Option<Bytes>> {
        let result = match self.store.get(&ObjectPath::from(key)).await {
            Ok(result) => result,
            Err(err) if is_not_found(&err) => return Ok(None),
            Err(err) => return Err(self.error(err)),
        };
        if result.meta.size > max_bytes {
            return Err(too_large(&self.location, key, max_bytes));
        }
        let mut stream = result.into_stream();
        let mut body = Vec::new();
        while let Some(chunk) = stream.try_next().await.map_err(|e| self.error(e))? {
            if (body.len() + chunk.len()) as u64 > max_bytes {
                return Err(too_large(&self.location, key, max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(Bytes::from(body)))
    }

    async fn get_to_file(&self, key: &str, dest: &Path, max_bytes: u64) -> Result<Option<u64>> {
        let result = match self.store.get(&ObjectPath::from(key)).await {
            Ok(result) => result,
            Err(err) if is_not_found(&err) => return Ok(None),
            Err(err) => return Err(self.error(err)),
        };
        if result.meta.size > max_bytes {
            return Err(RemoteError::TooLarge {
                location: self.location.clone(),
                detail: format!(
                    "{key} has {} bytes, more than the {max_bytes} accepted",
                    result.meta.size
                ),
            });
        }
        let mut file = tokio::fs::File::options()
            .write(true)
            .create_new(true)
            .open(dest)
            .await?;
        let mut stream = result.into_stream();
        let mut written = 0u64;
        while let Some(chunk) = stream.try_next().await.map_err(|e| self.error(e))? {
            written += chunk.len() as u64;
            if written > max_bytes {
                return Err(RemoteError::TooLarge {
                    location: self.location.clone(),
                    detail: format!("{key} sent more than the {max_bytes} bytes accepted"),
                });
            }
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        Ok(Some(written))
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        self.store
            .put(&ObjectPath::from(key), PutPayload::from_bytes(body))
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    async fn put_file(&self, key: &str, source: &Path) -> Result<()> {
        let size = tokio::fs::metadata(source).await?.len();
        if size <= SINGLE_PUT_MAX {
            let bytes = tokio::fs::read(source).await?;
            return self.put(key, Bytes::from(bytes)).await;
        }
        let upload = self
            .store
            .put_multipart(&ObjectPath::from(key))
            .await
            .map_err(|e| self.error(e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut file = tokio::fs::File::open(source).await?;
        let mut buffer = vec![0u8; PART_SIZE];
        loop {
            let n = file.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            writer
                .wait_for_capacity(4)
                .await
                .map_err(|e| self.error(e))?;
            writer.write(&buffer[..n]);
        }
        writer.finish().await.map_err(|e| self.error(e))?;
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        match self.store.head(&ObjectPath::from(key)).await {
            Ok(_) => Ok(true),
            Err(err) if is_not_found(&err) => Ok(false),
            Err(err) => Err(self.error(err)),
        }
    }

    async fn list_info(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let prefix = ObjectPath::from(prefix);
        self.store
            .list(Some(&prefix))
            .map_ok(|meta| ObjectInfo {
                name: meta.location.to_string(),
                size: meta.size,
                modified_ms: meta.last_modified.timestamp_millis().max(0) as u64,
            })
            .try_collect()
            .await
            .map_err(|e| self.error(e))
    }

    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let listing = self
            .store
            .list_with_delimiter(Some(&ObjectPath::from(prefix)))
            .await
            .map_err(|e| self.error(e))?;
        Ok(listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(String::from))
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&ObjectPath::from(key)).await {
            Ok(()) => Ok(()),
            Err(err) if is_not_found(&err) => Ok(()),
            Err(err) => Err(self.error(err)),
        }
    }
}
