//! The OCI registry backend (`type = "oci"`): ghcr.io, GitLab, Harbor, ECR,
//! GAR, Docker Hub or the CNCF distribution registry, spoken to through the
//! OCI distribution API v1.1 (blobs by digest, manifests, tags, the tag
//! listing).
//!
//! # How object names become tags
//!
//! Every object is one tag of one repository, pointing at an OCI image
//! manifest (`artifactType` `application/vnd.kache.object.v1`, the empty
//! config) whose single layer is the object's bytes. An object name
//! `dir/leaf` becomes the tag `{D}.f.{leaf}`, where `{D}` is the first 16
//! hex digits of blake3(`dir`) and `{leaf}` is the last component escaped
//! into the tag charset (`[a-z0-9.-]` as is, every other byte `_xx`). A leaf
//! whose escape would pass the 128 characters a tag may have is stored as
//! `{D}.x.{blake3(leaf), 32 hex}` and its real name is kept in an annotation.
//! Each directory on the way down is a tag too, `{P}.d.{child}` (or
//! `{P}.y.…`) under its parent's `{P}`, written once per process before the
//! first object below it.
//!
//! So a directory's listing is a range of the tag listing: every tag after
//! `{D}.` that starts with `{D}.`. Registries that follow the spec (tags in
//! lexical order, `last` honoured) answer a directory with one request per
//! 1,000 names in it, whatever the repository holds: the daemon's
//! `prekeys/{crate}/{pre_key}/` lookup costs one request at 100k entries.
//! A registry that ignores `last` (distribution 2.8 returns every tag,
//! unsorted, in one answer) is detected on the first listing and then read
//! whole at most every [`FULL_LISTING_TTL`], shared by every listing of the
//! process (about 30 MB at 100k entries: three tags each). Sizes and
//! modification times (`list_info`) cost one manifest read per object.
//!
//! # Credentials, first match wins
//!
//! `KACHE_OCI_USERNAME` / `KACHE_OCI_PASSWORD`; else a token
//! (`KACHE_OCI_TOKEN`, or `GITHUB_TOKEN` when the registry is ghcr.io), sent
//! as the password of the registry's token flow (`WWW-Authenticate: Bearer
//! realm=…,service=…,scope=…`) or of basic auth; else the `auths` entry of
//! the docker credential file (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`); else anonymous.
//!
//! # Bounds
//!
//! A connection attempt gives up after 3 s, a read that stalls after 30 s,
//! a small request after 60 s; a request that fails to connect or gets a
//! 5xx is tried 3 times within about a second. Everything read from the
//! registry is bounded: manifests to 64 KiB, listings to 64 MiB, objects to
//! what the caller accepts, and every blob is checked against its digest.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use ring::digest::{Context as Sha256, SHA256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::storage::{ObjectInfo, RemoteError, Result, Storage};

/// Connection timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A read that makes no progress for this long fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of a request that moves no object (manifests, listings, tokens).
pub const SMALL_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a full tag listing is reused when the registry cannot list a range.
pub const FULL_LISTING_TTL: Duration = Duration::from_secs(20);

/// Objects up to this size are uploaded in one request; larger ones in chunks.
const SINGLE_PUT_MAX: u64 = 16 << 20;
/// One chunk of a chunked upload.
const CHUNK: usize = 8 << 20;
/// The largest manifest read.
const MAX_MANIFEST: u64 = 64 << 10;
/// The largest tag listing page read.
const MAX_LISTING: u64 = 64 << 20;
/// The largest object `get` returns (callers with a tighter bound use
/// `get_bounded` or `get_to_file`).
const MAX_GET: u64 = 256 << 20;
/// Names asked for in one listing page.
const PAGE: usize = 1000;

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
const OBJECT_TYPE: &str = "application/vnd.kache.object.v1";
const DIRECTORY_TYPE: &str = "application/vnd.kache.directory.v1";
const NAME_ANNOTATION: &str = "dev.kache.name";
const MODIFIED_ANNOTATION: &str = "dev.kache.modified-ms";

/// Where a repository is and how to log in to it.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OciSpec {
    /// `ghcr.io`, `registry.example.com:5000`, or a URL (`http://127.0.0.1:5000`).
    pub registry: String,
    /// `owner/project/kache-cache`: lowercase, `/`-separated.
    pub repository: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A bearer-flow token (`KACHE_OCI_TOKEN`, `GITHUB_TOKEN` on ghcr.io).
    pub token: Option<String>,
}

impl std::fmt::Debug for OciSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciSpec")
            .field("registry", &self.registry)
            .field("repository", &self.repository)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("token", &self.token.as_ref().map(|_| "…"))
            .finish()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl OciSpec {
    /// The spec from `KACHE_OCI_*` (environment first, then the given file
    /// values); `None` when no registry or no repository is set.
    pub fn from_env(registry: Option<String>, repository: Option<String>) -> Option<Self> {
        Self::from_lookup(env, registry, repository)
    }

    /// [`OciSpec::from_env`] with the environment read through `env` (a
    /// caller's captured environment, say).
    pub fn from_lookup(
        env: impl Fn(&str) -> Option<String>,
        registry: Option<String>,
        repository: Option<String>,
    ) -> Option<Self> {
        let registry = env("KACHE_OCI_REGISTRY").or(registry)?;
        let repository = env("KACHE_OCI_REPOSITORY").or(repository)?;
        let token = env("KACHE_OCI_TOKEN").or_else(|| {
            host_of(&registry)
                .is_some_and(|h| h == "ghcr.io")
                .then(|| env("GITHUB_TOKEN"))
                .flatten()
        });
        Some(Self {
            registry,
            repository,
            username: env("KACHE_OCI_USERNAME"),
            password: env("KACHE_OCI_PASSWORD"),
            token,
        })
    }

    /// `oci://registry/repository`, for messages.
    pub fn location(&self) -> String {
        let registry = self.registry.trim().trim_end_matches('/');
        let registry = registry
            .split_once("://")
            .map_or(registry, |(_, host)| host);
        format!("oci://{registry}/{}", self.repository)
    }
}

/// `host[:port]` of a registry setting.
fn host_of(registry: &str) -> Option<String> {
    let url = base_url(registry).ok()?;
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

/// The registry's base URL: `https://` unless the setting names a scheme;
/// `docker.io` is Docker Hub's API host.
fn base_url(registry: &str) -> std::result::Result<Url, String> {
    let registry = registry.trim().trim_end_matches('/');
    let text = if registry.contains("://") {
        registry.to_string()
    } else if registry == "docker.io" || registry == "index.docker.io" {
        "https://registry-1.docker.io".to_string()
    } else {
        format!("https://{registry}")
    };
    let url = Url::parse(&text).map_err(|e| format!("registry {registry:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("registry {registry:?} is not an http(s) host"));
    }
    Ok(url)
}

/// A repository name the distribution spec accepts.
fn valid_repository(name: &str) -> bool {
    let component = |c: &str| {
        !c.is_empty()
            && c.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
            && c.as_bytes()[0].is_ascii_alphanumeric()
            && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
    };
    name.len() <= 255 && name.split('/').all(component)
}

/// What a request presents.
#[derive(Clone)]
enum Login {
    Basic { username: String, password: String },
    Anonymous,
}

/// The credentials of `spec`, in the documented order.
fn login(spec: &OciSpec) -> Result<Login> {
    match (&spec.username, &spec.password) {
        (Some(username), Some(password)) => {
            return Ok(Login::Basic {
                username: username.clone(),
                password: password.clone(),
            });
        }
        (None, Some(_)) => {
            return Err(RemoteError::Config(
                "KACHE_OCI_PASSWORD is set without KACHE_OCI_USERNAME".into(),
            ));
        }
        _ => {}
    }
    if let Some(token) = &spec.token {
        return Ok(Login::Basic {
            username: spec
                .username
                .clone()
                .or_else(|| env("GITHUB_ACTOR"))
                .unwrap_or_else(|| "kache".into()),
            password: token.clone(),
        });
    }
    Ok(docker_config_login(spec).unwrap_or(Login::Anonymous))
}

/// The `auths` entry for the registry in the docker credential file.
fn docker_config_login(spec: &OciSpec) -> Option<Login> {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")))?;
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    docker_auth(&text, &host_of(&spec.registry)?)
}

/// The credentials for `host` in a docker `config.json` text.
fn docker_auth(text: &str, host: &str) -> Option<Login> {
    let config: serde_json::Value = serde_json::from_str(text).ok()?;
    let auths = config.get("auths")?.as_object()?;
    let hub = host == "registry-1.docker.io";
    let entry = auths.iter().find_map(|(key, value)| {
        let key_host = key
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        (key_host == host || (hub && key_host == "index.docker.io")).then_some(value)
    })?;
    if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()?;
        let (username, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
        return Some(Login::Basic {
            username: username.to_string(),
            password: password.to_string(),
        });
    }
    match (
        entry.get("username").and_then(|u| u.as_str()),
        entry.get("password").and_then(|p| p.as_str()),
    ) {
        (Some(username), Some(password)) => Some(Login::Basic {
            username: username.to_string(),
            password: password.to_string(),
        }),
        _ => None,
    }
}

/// `(dir, leaf)` of an object name, slashes around it ignored.
fn split(name: &str) -> (&str, &str) {
    let name = name.trim_matches('/');
    match name.rsplit_once('/') {
        Some((dir, leaf)) => (dir, leaf),
        None => ("", name),
    }
}

/// The 16 hex digits that stand for a directory in its children's tags.
fn dir_id(dir: &str) -> String {
    blake3::hash(dir.trim_matches('/').as_bytes()).to_hex()[..16].to_string()
}

/// A leaf in the tag charset: `[a-z0-9.-]` as is, every other byte `_xx`.
fn escape(leaf: &str) -> String {
    let mut out = String::with_capacity(leaf.len());
    for b in leaf.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// The inverse of [`escape`]; `None` for text `escape` never writes.
fn unescape(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'_' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            if hex.bytes().any(|h| h.is_ascii_uppercase()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Characters left for a leaf after `{D}.f.`.
const LEAF_ROOM: usize = 128 - 16 - 3;

/// The tag of an entry of `dir`: `{D}.{plain}.{leaf}` or, for a leaf too
/// long to escape, `{D}.{hashed}.{blake3(leaf)}`.
fn entry_tag(dir: &str, leaf: &str, plain: char, hashed: char) -> String {
    let escaped = escape(leaf);
    if escaped.len() <= LEAF_ROOM {
        format!("{}.{plain}.{escaped}", dir_id(dir))
    } else {
        let hash = blake3::hash(leaf.as_bytes()).to_hex();
        format!("{}.{hashed}.{}", dir_id(dir), &hash[..32])
    }
}

/// The tag of the object `name`.
pub fn object_tag(name: &str) -> String {
    let (dir, leaf) = split(name);
    entry_tag(dir, leaf, 'f', 'x')
}

/// The tag saying `child` is a directory below `parent`.
fn directory_tag(parent: &str, child: &str) -> String {
    entry_tag(parent, child, 'd', 'y')
}

/// One entry of a directory, read back from a tag.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    File(String),
    Dir(String),
    /// Hashed names: the manifest's annotation has the real one.
    HashedFile(String),
    HashedDir(String),
}

/// The entry a tag of the directory `{D}` (`prefix` = `{D}.`) stands for.
fn parse_entry(prefix: &str, tag: &str) -> Option<Entry> {
    let rest = tag.strip_prefix(prefix)?;
    let (kind, text) = rest.split_at_checked(2)?;
    match kind {
        "f." => unescape(text).map(Entry::File),
        "d." => unescape(text).map(Entry::Dir),
        "x." => Some(Entry::HashedFile(tag.to_string())),
        "y." => Some(Entry::HashedDir(tag.to_string())),
        _ => None,
    }
}

/// A digest the registry gave us, checked before it goes into a URL.
fn valid_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn sha256_digest(context: Sha256) -> String {
    let digest = context.finish();
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn sha256_of(bytes: &[u8]) -> String {
    let mut context = Sha256::new(&SHA256);
    context.update(bytes);
    sha256_digest(context)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A layer or config descriptor.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
}

impl Descriptor {
    fn empty() -> Self {
        Self {
            media_type: EMPTY_TYPE.into(),
            digest: EMPTY_DIGEST.into(),
            size: 2,
        }
    }
}

/// The manifest of one object or directory tag.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    artifact_type: Option<String>,
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

impl Manifest {
    fn new(kind: &str, layer: Descriptor, name: &str) -> Self {
        let annotations = HashMap::from([
            (NAME_ANNOTATION.to_string(), name.to_string()),
            (MODIFIED_ANNOTATION.to_string(), now_ms().to_string()),
        ]);
        Self {
            schema_version: 2,
            media_type: Some(MANIFEST_TYPE.into()),
            artifact_type: Some(kind.into()),
            config: Descriptor::empty(),
            layers: vec![layer],
            annotations,
        }
    }

    /// The object's bytes: `None` for an empty object (the empty descriptor).
    fn body(&self) -> Option<&Descriptor> {
        self.layers.first().filter(|l| l.media_type != EMPTY_TYPE)
    }

    fn size(&self) -> u64 {
        self.body().map_or(0, |l| l.size)
    }
}

/// The bearer tokens this process got, per scope.
#[derive(Default)]
struct Auth {
    /// `Basic` once the registry asked for basic auth.
    basic: bool,
    /// Bearer tokens per scope, and which scope reads and writes last needed.
    tokens: HashMap<String, String>,
    read_scope: Option<String>,
    write_scope: Option<String>,
}

/// The whole tag listing, for registries that cannot list a range.
struct FullListing {
    tags: BTreeSet<String>,
    at: Instant,
}

/// An open repository.
pub struct OciStorage {
    client: reqwest::Client,
    base: Url,
    repository: String,
    location: String,
    login: Login,
    auth: Mutex<Auth>,
    /// `None` until the first listing tells; then whether `last` works.
    ranged: Mutex<Option<bool>>,
    full: tokio::sync::Mutex<Option<FullListing>>,
    /// Directory tags known to exist (written or seen by this process).
    dirs: Mutex<HashSet<String>>,
    empty_blob: tokio::sync::OnceCell<()>,
}

/// Opens the repository of `spec` (no request is made yet).
pub fn open(spec: &OciSpec) -> Result<OciStorage> {
    if spec.registry.trim().is_empty() {
        return Err(RemoteError::Config(
            "no registry is configured (KACHE_OCI_REGISTRY)".into(),
        ));
    }
    if !valid_repository(&spec.repository) {
        return Err(RemoteError::Config(format!(
            "repository {:?} is not a valid OCI repository name (lowercase letters, digits, \
             `._-` inside components, `/` between them)",
            spec.repository
        )));
    }
    let base = base_url(&spec.registry).map_err(RemoteError::Config)?;
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .user_agent(concat!("kache/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| RemoteError::Config(format!("building the HTTP client: {e}")))?;
    Ok(OciStorage {
        client,
        base,
        repository: spec.repository.clone(),
        location: spec.location(),
        login: login(spec)?,
        auth: Mutex::new(Auth::default()),
        ranged: Mutex::new(None),
        full: tokio::sync::Mutex::new(None),
        dirs: Mutex::new(HashSet::new()),
        empty_blob: tokio::sync::OnceCell::new(),
    })
}

/// The parameters of a `WWW-Authenticate` challenge: `(scheme, params)`.
fn challenge(header: &str) -> (String, HashMap<String, String>) {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        params.insert(key, value.to_string());
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    (scheme.to_ascii_lowercase(), params)
}

/// The `rel="next"` target of a `Link` header.
fn next_link(header: &str) -> Option<&str> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params
            .contains("rel=\"next\"")
            .then(|| target.trim().trim_start_matches('<').trim_end_matches('>'))
    })
}

/// `CODE: message` of an OCI error body.
fn error_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let first = value.get("errors")?.as_array()?.first()?;
    let code = first.get("code").and_then(|c| c.as_str()).unwrap_or("");
    let message = first.get("message").and_then(|m| m.as_str()).unwrap_or("");
    let text = match (code.is_empty(), message.is_empty()) {
        (false, false) => format!("{code}: {message}"),
        (false, true) => code.to_string(),
        (true, false) => message.to_string(),
        (true, true) => return None,
    };
    Some(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The deepest cause of an error, on one line.
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    let text = current.to_string();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether a request is a read (the pull scope) or a write (push).
fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD)
}

/// A request body that can be sent again.
#[derive(Clone)]
enum Body {
    None,
    Bytes(Bytes, &'static str),
}

impl OciStorage {
    fn url(&self, path: &str) -> Result<Url> {
        self.base
            .join(&format!("/v2/{}/{path}", self.repository))
            .map_err(|e| self.other(format!("building a URL for {path}: {e}")))
    }

    fn other(&self, detail: String) -> RemoteError {
        RemoteError::Other {
            location: self.location.clone(),
            detail,
        }
    }

    fn unavailable(&self, detail: String) -> RemoteError {
        RemoteError::Unavailable {
            location: self.location.clone(),
            detail,
        }
    }

    fn denied(&self, detail: String) -> RemoteError {
        let hint = match self.login {
            Login::Anonymous => {
                "no credentials: set KACHE_OCI_USERNAME and KACHE_OCI_PASSWORD, KACHE_OCI_TOKEN, \
                 or log in with docker"
            }
            Login::Basic { .. } => "check KACHE_OCI_USERNAME and KACHE_OCI_PASSWORD or the token",
        };
        RemoteError::Denied {
            location: self.location.clone(),
            detail: format!("{detail}; {hint}"),
        }
    }

    /// The `Authorization` header a request of this kind presents now.
    fn authorization(&self, write: bool) -> Option<HeaderValue> {
        let auth = self.auth.lock().expect("auth lock");
        let scope = if write {
            auth.write_scope.as_ref()
        } else {
            auth.read_scope.as_ref()
        };
        if let Some(token) = scope.and_then(|s| auth.tokens.get(s)) {
            return HeaderValue::from_str(&format!("Bearer {token}")).ok();
        }
        if auth.basic
            && let Login::Basic { username, password } = &self.login
        {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            return HeaderValue::from_str(&format!("Basic {encoded}")).ok();
        }
        None
    }

    /// Answers a 401's challenge to a request that presented `sent`: basic
    /// auth from now on, or a fresh bearer token for the scope asked.
    /// `Ok(false)` when nothing new can be tried (the credentials were
    /// presented and refused, or there are none).
    async fn answer_challenge(
        &self,
        header: &str,
        write: bool,
        sent: Option<&HeaderValue>,
    ) -> Result<bool> {
        // Another request logged in meanwhile: try again with that.
        if self.authorization(write).as_ref() != sent {
            return Ok(true);
        }
        let (scheme, params) = challenge(header);
        match scheme.as_str() {
            "basic" => {
                let sent_basic = sent
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("Basic "));
                if sent_basic || matches!(self.login, Login::Anonymous) {
                    return Ok(false);
                }
                self.auth.lock().expect("auth lock").basic = true;
                Ok(true)
            }
            "bearer" => {
                let Some(realm) = params.get("realm") else {
                    return Err(self.other(format!("a bearer challenge without a realm: {header}")));
                };
                let actions = if write { "pull,push" } else { "pull" };
                let scope = params
                    .get("scope")
                    .cloned()
                    .unwrap_or_else(|| format!("repository:{}:{actions}", self.repository));
                // A token that was refused may have expired: ask for a new one
                // (the caller bounds how often).
                let token = self
                    .fetch_token(realm, params.get("service"), &scope)
                    .await?;
                let mut auth = self.auth.lock().expect("auth lock");
                auth.tokens.insert(scope.clone(), token);
                if write {
                    auth.write_scope = Some(scope);
                } else {
                    auth.read_scope = Some(scope);
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// A token from the registry's token server (`realm`).
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&String>,
        scope: &str,
    ) -> Result<String> {
        let mut url =
            Url::parse(realm).map_err(|e| self.other(format!("token realm {realm:?}: {e}")))?;
        // Credentials never travel in clear text from a registry reached by TLS.
        if self.base.scheme() == "https" && url.scheme() != "https" {
            return Err(self.other(format!("the token realm {realm:?} is not https")));
        }
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", scope);
        }
        let mut request = self.client.get(url).timeout(SMALL_REQUEST_TIMEOUT);
        if let Login::Basic { username, password } = &self.login {
            request = request.basic_auth(username, Some(password));
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.unavailable(format!("token server: {}", innermost(&e))))?;
        let status = response.status();
        let body = self.read_bounded(response, MAX_MANIFEST).await?;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let detail = error_message(&body).unwrap_or_else(|| status.to_string());
            return Err(self.denied(format!("token server answered {detail}")));
        }
        if !status.is_success() {
            return Err(self.unavailable(format!("token server answered {status}")));
        }
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| self.other(format!("token server's answer: {e}")))?;
        value
            .get("token")
            .or_else(|| value.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .map(String::from)
            .ok_or_else(|| self.other("the token server's answer has no token".into()))
    }

    /// Sends a request, logging in as the registry asks and retrying what
    /// may pass (connection failures, 5xx) a few times. Returns any answer
    /// but 401; a 401 that logging in cannot fix is [`RemoteError::Denied`].
    async fn send(
        &self,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Body,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response> {
        let write = is_write(&method);
        let mut attempt = 0;
        let mut logins = 0;
        loop {
            attempt += 1;
            let mut request = self
                .client
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(timeout) = timeout {
                request = request.timeout(timeout);
            }
            // Credentials go to the registry only, never to a host that a
            // `Location` or `Link` it sent names.
            let same_origin = url.origin() == self.base.origin();
            let sent = if same_origin {
                self.authorization(write)
            } else {
                None
            };
            if let Some(value) = &sent {
                request = request.header(reqwest::header::AUTHORIZATION, value.clone());
            }
            request = match &body {
                Body::None => request,
                Body::Bytes(bytes, content_type) => request
                    .header(reqwest::header::CONTENT_TYPE, *content_type)
                    .body(bytes.clone()),
            };
            let response = match request.send().await {
                Ok(response) => response,
                Err(err) if attempt < 3 && err.is_connect() => {
                    tokio::time::sleep(Duration::from_millis(150 * attempt)).await;
                    continue;
                }
                Err(err) => {
                    let after = if attempt > 1 {
                        format!(" (after {attempt} attempts)")
                    } else {
                        String::new()
                    };
                    return Err(self.unavailable(format!("{}{after}", innermost(&err))));
                }
            };
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED {
                let header = response
                    .headers()
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let body = self.read_bounded(response, 4096).await.unwrap_or_default();
                logins += 1;
                if same_origin
                    && logins <= 3
                    && self.answer_challenge(&header, write, sent.as_ref()).await?
                {
                    continue;
                }
                let detail = error_message(&body).unwrap_or_else(|| status.to_string());
                return Err(self.denied(format!("{method} {} answered {detail}", url.path())));
            }
            if status.is_server_error() && attempt < 3 {
                tokio::time::sleep(Duration::from_millis(150 * attempt)).await;
                continue;
            }
            return Ok(response);
        }
    }

    /// The body of a response, failing once it passes `max` bytes.
    async fn read_bounded(&self, response: reqwest::Response, max: u64) -> Result<Vec<u8>> {
        if response.content_length().is_some_and(|n| n > max) {
            return Err(self.other(format!("an answer larger than the {max} bytes accepted")));
        }
        let mut response = response;
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.unavailable(innermost(&e)))?
        {
            if (body.len() + chunk.len()) as u64 > max {
                return Err(self.other(format!("an answer larger than the {max} bytes accepted")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// An error for an answer the operation did not expect.
    async fn unexpected(&self, what: &str, response: reqwest::Response) -> RemoteError {
        let status = response.status();
        let body = self.read_bounded(response, 4096).await.unwrap_or_default();
        let detail = error_message(&body).unwrap_or_else(|| status.to_string());
        let detail = format!("{what}: {detail}");
        if status == StatusCode::FORBIDDEN {
            self.denied(detail)
        } else if status.is_server_error() {
            self.unavailable(detail)
        } else {
            self.other(detail)
        }
    }

    /// The manifest a tag points at, or `None`.
    async fn manifest(&self, tag: &str) -> Result<Option<Manifest>> {
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static(MANIFEST_TYPE),
        );
        let url = self.url(&format!("manifests/{tag}"))?;
        let response = self
            .send(
                Method::GET,
                url,
                headers,
                Body::None,
                Some(SMALL_REQUEST_TIMEOUT),
            )
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(self
                .unexpected(&format!("reading manifest {tag}"), response)
                .await);
        }
        let body = self.read_bounded(response, MAX_MANIFEST).await?;
        let manifest: Manifest = serde_json::from_slice(&body)
            .map_err(|e| self.other(format!("manifest {tag} is not an OCI manifest: {e}")))?;
        Ok(Some(manifest))
    }

    /// Streams the object behind `tag` into `sink`, checking its size
    /// against `max_bytes` and its digest; `None` when there is no tag.
    async fn fetch(
        &self,
        name: &str,
        max_bytes: u64,
        mut sink: impl AsyncSink,
    ) -> Result<Option<u64>> {
        let Some(manifest) = self.manifest(&object_tag(name)).await? else {
            return Ok(None);
        };
        let Some(layer) = manifest.body() else {
            return Ok(Some(0));
        };
        if layer.size > max_bytes {
            return Err(crate::storage::too_large(&self.location, name, max_bytes));
        }
        if !valid_digest(&layer.digest) {
            return Err(self.other(format!(
                "{name}: the layer digest {:?} is not sha256",
                layer.digest
            )));
        }
        let url = self.url(&format!("blobs/{}", layer.digest))?;
        let mut response = self
            .send(Method::GET, url, HeaderMap::new(), Body::None, None)
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(self.other(format!("{name}: its blob {} is missing", layer.digest)));
        }
        if !response.status().is_success() {
            return Err(self.unexpected(&format!("reading {name}"), response).await);
        }
        let mut context = Sha256::new(&SHA256);
        let mut written = 0u64;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.unavailable(format!("reading {name}: {}", innermost(&e))))?
        {
            written += chunk.len() as u64;
            if written > layer.size || written > max_bytes {
                return Err(self.other(format!(
                    "{name} sent more than the {} bytes its manifest declares",
                    layer.size.min(max_bytes)
                )));
            }
            context.update(&chunk);
            sink.write(&chunk).await?;
        }
        if written != layer.size || sha256_digest(context) != layer.digest {
            return Err(self.other(format!(
                "{name}: the blob does not match its digest {}",
                layer.digest
            )));
        }
        sink.finish().await?;
        Ok(Some(written))
    }

    /// Whether the repository has the blob.
    async fn has_blob(&self, digest: &str) -> Result<bool> {
        let url = self.url(&format!("blobs/{digest}"))?;
        let response = self
            .send(
                Method::HEAD,
                url,
                HeaderMap::new(),
                Body::None,
                Some(SMALL_REQUEST_TIMEOUT),
            )
            .await?;
        Ok(response.status().is_success())
    }

    /// Starts an upload session: the URL to send its data to.
    async fn start_upload(&self) -> Result<Url> {
        let url = self.url("blobs/uploads/")?;
        let response = self
            .send(
                Method::POST,
                url,
                HeaderMap::new(),
                Body::Bytes(Bytes::new(), "application/octet-stream"),
                Some(SMALL_REQUEST_TIMEOUT),
            )
            .await?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(self.unexpected("starting an upload", response).await);
        }
        self.upload_location(&response)
    }

    fn upload_location(&self, response: &reqwest::Response) -> Result<Url> {
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.other("an upload answer without a Location".into()))?;
        self.base
            .join(location)
            .map_err(|e| self.other(format!("upload location {location:?}: {e}")))
    }

    /// Completes an upload at `location` with `digest` (and a last `body`).
    async fn finish_upload(&self, mut location: Url, digest: &str, body: Bytes) -> Result<()> {
        location.query_pairs_mut().append_pair("digest", digest);
        let response = self
            .send(
                Method::PUT,
                location,
                HeaderMap::new(),
                Body::Bytes(body, "application/octet-stream"),
                None,
            )
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(self.unexpected("finishing an upload", response).await);
        }
        Ok(())
    }

    /// Uploads `bytes` as a blob unless the repository has it.
    async fn push_bytes(&self, digest: &str, bytes: Bytes) -> Result<()> {
        if self.has_blob(digest).await? {
            return Ok(());
        }
        let location = self.start_upload().await?;
        self.finish_upload(location, digest, bytes).await
    }

    /// The empty blob every manifest's config names, uploaded once.
    async fn ensure_empty_blob(&self) -> Result<()> {
        self.empty_blob
            .get_or_try_init(|| async {
                self.push_bytes(EMPTY_DIGEST, Bytes::from_static(b"{}"))
                    .await
            })
            .await
            .map(|_| ())
    }

    /// Points `tag` at `manifest`.
    async fn put_manifest(&self, tag: &str, manifest: &Manifest) -> Result<()> {
        let body = serde_json::to_vec(manifest)
            .map_err(|e| self.other(format!("writing a manifest: {e}")))?;
        let url = self.url(&format!("manifests/{tag}"))?;
        let response = self
            .send(
                Method::PUT,
                url,
                HeaderMap::new(),
                Body::Bytes(Bytes::from(body), MANIFEST_TYPE),
                Some(SMALL_REQUEST_TIMEOUT),
            )
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(self
                .unexpected(&format!("writing tag {tag}"), response)
                .await);
        }
        self.remember(tag).await;
        Ok(())
    }

    /// Adds a tag this process wrote to the full listing it keeps, so its
    /// own writes are listed at once.
    async fn remember(&self, tag: &str) {
        if let Some(full) = self.full.lock().await.as_mut() {
            full.tags.insert(tag.to_string());
        }
    }

    /// Writes the directory tags above `name` that this process has not
    /// written or seen yet, top down.
    async fn ensure_dirs(&self, name: &str) -> Result<()> {
        let (dir, _) = split(name);
        if dir.is_empty() {
            return Ok(());
        }
        let mut path = String::new();
        for component in dir.split('/') {
            let parent = path.clone();
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(component);
            let tag = directory_tag(&parent, component);
            if self.dirs.lock().expect("dirs lock").contains(&tag) {
                continue;
            }
            self.ensure_empty_blob().await?;
            let manifest = Manifest::new(DIRECTORY_TYPE, Descriptor::empty(), &path);
            self.put_manifest(&tag, &manifest).await?;
            self.dirs.lock().expect("dirs lock").insert(tag);
        }
        Ok(())
    }

    /// Writes the object's manifest once its blob (`layer`) is there.
    async fn commit(&self, name: &str, layer: Descriptor) -> Result<()> {
        self.ensure_dirs(name).await?;
        self.ensure_empty_blob().await?;
        let manifest = Manifest::new(OBJECT_TYPE, layer, name.trim_matches('/'));
        self.put_manifest(&object_tag(name), &manifest).await
    }

    /// Every tag starting with `prefix` (a directory's `{D}.`), sorted.
    async fn tags_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let ranged = *self.ranged.lock().expect("ranged lock");
        if ranged != Some(false) {
            match self.ranged_listing(prefix).await? {
                Some(tags) => {
                    *self.ranged.lock().expect("ranged lock") = Some(true);
                    return Ok(tags);
                }
                None => *self.ranged.lock().expect("ranged lock") = Some(false),
            }
        }
        let mut full = self.full.lock().await;
        let fresh = full
            .as_ref()
            .is_some_and(|f| f.at.elapsed() < FULL_LISTING_TTL);
        if !fresh {
            let tags = self.whole_listing().await?;
            *full = Some(FullListing {
                tags,
                at: Instant::now(),
            });
        }
        let tags = &full.as_ref().expect("just filled").tags;
        Ok(tags
            .range(prefix.to_string()..)
            .take_while(|t| t.starts_with(prefix))
            .cloned()
            .collect())
    }

    /// One page of the tag listing: its tags and the next page's URL.
    async fn listing_page(&self, url: Url) -> Result<(Vec<String>, Option<Url>)> {
        let response = self
            .send(
                Method::GET,
                url,
                HeaderMap::new(),
                Body::None,
                Some(SMALL_REQUEST_TIMEOUT),
            )
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            // NAME_UNKNOWN: nothing was ever pushed.
            return Ok((Vec::new(), None));
        }
        if !response.status().is_success() {
            return Err(self.unexpected("listing tags", response).await);
        }
        let next = response
            .headers()
            .get(reqwest::header::LINK)
            .and_then(|v| v.to_str().ok())
            .and_then(next_link)
            .and_then(|target| self.base.join(target).ok());
        let body = self.read_bounded(response, MAX_LISTING).await?;
        #[derive(serde::Deserialize)]
        struct Tags {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let tags: Tags = serde_json::from_slice(&body)
            .map_err(|e| self.other(format!("the tag listing does not parse: {e}")))?;
        Ok((tags.tags.unwrap_or_default(), next))
    }

    /// The tags starting with `prefix` through `last`, or `None` when the
    /// registry shows it does not list ranges: a page out of order, or with
    /// a tag at or before `last`. Every page is filtered whole, so a
    /// registry that sends everything in one page is read right either way.
    async fn ranged_listing(&self, prefix: &str) -> Result<Option<Vec<String>>> {
        let mut url = self.url("tags/list")?;
        url.query_pairs_mut()
            .append_pair("n", &PAGE.to_string())
            .append_pair("last", prefix);
        let mut out = Vec::new();
        let mut previous = prefix.to_string();
        loop {
            let (tags, next) = self.listing_page(url).await?;
            for tag in &tags {
                if *tag <= previous {
                    return Ok(None);
                }
                previous.clone_from(tag);
            }
            let more = tags.last().is_some_and(|t| t.starts_with(prefix));
            out.extend(tags.into_iter().filter(|t| t.starts_with(prefix)));
            match next {
                Some(next) if more => url = next,
                _ => return Ok(Some(out)),
            }
        }
    }

    /// Every tag of the repository, following the pages.
    async fn whole_listing(&self) -> Result<BTreeSet<String>> {
        let mut url = self.url("tags/list")?;
        url.query_pairs_mut().append_pair("n", &PAGE.to_string());
        let mut out = BTreeSet::new();
        let mut pages = 0;
        loop {
            let (tags, next) = self.listing_page(url).await?;
            out.extend(tags);
            pages += 1;
            match next {
                Some(next) if pages < 100_000 => url = next,
                _ => return Ok(out),
            }
        }
    }

    /// The entries of one directory: `(files, dirs)` by leaf name.
    async fn entries(&self, dir: &str) -> Result<(Vec<String>, Vec<String>)> {
        let prefix = format!("{}.", dir_id(dir));
        let (mut files, mut dirs) = (Vec::new(), Vec::new());
        for tag in self.tags_with_prefix(&prefix).await? {
            match parse_entry(&prefix, &tag) {
                Some(Entry::File(leaf)) => files.push(leaf),
                Some(Entry::Dir(leaf)) => dirs.push(leaf),
                Some(Entry::HashedFile(tag)) => {
                    if let Some(leaf) = self.hashed_leaf(&tag, dir).await? {
                        files.push(leaf);
                    }
                }
                Some(Entry::HashedDir(tag)) => {
                    if let Some(leaf) = self.hashed_leaf(&tag, dir).await? {
                        dirs.push(leaf);
                    }
                }
                None => {}
            }
        }
        Ok((files, dirs))
    }

    /// The leaf name a hashed tag's manifest records, if it belongs to `dir`.
    async fn hashed_leaf(&self, tag: &str, dir: &str) -> Result<Option<String>> {
        let Some(manifest) = self.manifest(tag).await? else {
            return Ok(None);
        };
        let Some(name) = manifest.annotations.get(NAME_ANNOTATION) else {
            return Ok(None);
        };
        let (parent, leaf) = split(name);
        Ok((parent == dir.trim_matches('/')).then(|| leaf.to_string()))
    }

    /// Every object name below `prefix`, depth first.
    async fn walk(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut pending = vec![prefix.trim_matches('/').to_string()];
        while let Some(dir) = pending.pop() {
            let (files, dirs) = self.entries(&dir).await?;
            let join = |leaf: &str| {
                if dir.is_empty() {
                    leaf.to_string()
                } else {
                    format!("{dir}/{leaf}")
                }
            };
            out.extend(files.iter().map(|f| join(f)));
            pending.extend(dirs.iter().map(|d| join(d)));
        }
        Ok(out)
    }
}

/// Where a fetched object goes: memory or a file.
trait AsyncSink {
    async fn write(&mut self, chunk: &[u8]) -> Result<()>;
    async fn finish(&mut self) -> Result<()>;
}

impl AsyncSink for &mut Vec<u8> {
    async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.extend_from_slice(chunk);
        Ok(())
    }
    async fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

impl AsyncSink for &mut tokio::fs::File {
    async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.write_all(chunk).await?;
        Ok(())
    }
    async fn finish(&mut self) -> Result<()> {
        self.flush().await?;
        Ok(())
    }
}

#[async_trait]
impl Storage for OciStorage {
    fn location(&self) -> &str {
        &self.location
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.get_bounded(key, MAX_GET).await
    }

    async fn get_bounded(&self, key: &str, max_bytes: u64) -> Result<Option<Bytes>> {
        let mut body = Vec::new();
        Ok(self
            .fetch(key, max_bytes, &mut body)
            .await?
            .map(|_| Bytes::from(body)))
    }

    async fn get_to_file(&self, key: &str, dest: &Path, max_bytes: u64) -> Result<Option<u64>> {
        // The manifest first: a missing object creates no file.
        if self.manifest(&object_tag(key)).await?.is_none() {
            return Ok(None);
        }
        let mut file = tokio::fs::File::options()
            .write(true)
            .create_new(true)
            .open(dest)
            .await?;
        self.fetch(key, max_bytes, &mut file).await
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        let layer = if body.is_empty() {
            Descriptor::empty()
        } else {
            let digest = sha256_of(&body);
            let size = body.len() as u64;
            self.push_bytes(&digest, body).await?;
            Descriptor {
                media_type: OBJECT_TYPE.into(),
                digest,
                size,
            }
        };
        self.commit(key, layer).await
    }

    async fn put_file(&self, key: &str, source: &Path) -> Result<()> {
        let size = tokio::fs::metadata(source).await?.len();
        if size <= SINGLE_PUT_MAX {
            let bytes = tokio::fs::read(source).await?;
            return self.put(key, Bytes::from(bytes)).await;
        }
        // Hash first (an identical blob need not move), then send in chunks.
        let mut file = tokio::fs::File::open(source).await?;
        let mut context = Sha256::new(&SHA256);
        let mut buffer = vec![0u8; CHUNK];
        loop {
            let n = file.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            context.update(&buffer[..n]);
        }
        let digest = sha256_digest(context);
        if !self.has_blob(&digest).await? {
            let mut location = self.start_upload().await?;
            let mut file = tokio::fs::File::open(source).await?;
            let mut offset = 0u64;
            loop {
                let mut filled = 0;
                while filled < CHUNK {
                    let n = file.read(&mut buffer[filled..]).await?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 {
                    break;
                }
                let mut headers = HeaderMap::new();
                let range = format!("{offset}-{}", offset + filled as u64 - 1);
                headers.insert(
                    reqwest::header::CONTENT_RANGE,
                    HeaderValue::from_str(&range).map_err(|e| self.other(e.to_string()))?,
                );
                let response = self
                    .send(
                        Method::PATCH,
                        location.clone(),
                        headers,
                        Body::Bytes(
                            Bytes::copy_from_slice(&buffer[..filled]),
                            "application/octet-stream",
                        ),
                        None,
                    )
                    .await?;
                if response.status() != StatusCode::ACCEPTED {
                    return Err(self.unexpected(&format!("uploading {key}"), response).await);
                }
                location = self.upload_location(&response)?;
                offset += filled as u64;
            }
            if offset != size {
                return Err(self.other(format!(
                    "{} changed while it was uploaded",
                    source.display()
                )));
            }
            self.finish_upload(location, &digest, Bytes::new()).await?;
        }
        self.commit(
            key,
            Descriptor {
                media_type: OBJECT_TYPE.into(),
                digest,
                size,
            },
        )
        .await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static(MANIFEST_TYPE),
        );
        let url = self.url(&format!("manifests/{}", object_tag(key)))?;
        let response = self
            .send(
                Method::HEAD,
                url,
                headers,
                Body::None,
                Some(SMALL_REQUEST_TIMEOUT),
            )
            .await?;
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.unexpected(&format!("checking {key}"), response).await),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.walk(prefix).await
    }

    async fn list_info(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let names = self.walk(prefix).await?;
        let infos = futures::stream::iter(names)
            .map(|name| async move {
                let manifest = self.manifest(&object_tag(&name)).await?;
                Ok::<_, RemoteError>(manifest.map(|m| {
                    ObjectInfo {
                        size: m.size(),
                        modified_ms: m
                            .annotations
                            .get(MODIFIED_ANNOTATION)
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0),
                        name,
                    }
                }))
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await;
        let mut out = Vec::new();
        for info in infos {
            if let Some(info) = info? {
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self.entries(prefix).await?.1)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static(MANIFEST_TYPE),
        );
        let url = self.url(&format!("manifests/{}", object_tag(key)))?;
        let response = self
            .send(
                Method::HEAD,
                url,
                headers,
                Body::None,
                Some(SMALL_REQUEST_TIMEOUT),
            )
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        if !response.status().is_success() {
            return Err(self.unexpected(&format!("checking {key}"), response).await);
        }
        let digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .filter(|d| valid_digest(d))
            .map(String::from)
            .ok_or_else(|| self.other(format!("{key}: no manifest digest to delete by")))?;
        // Each object's manifest is its own (it names the object), so
        // deleting it by digest removes this tag only.
        let url = self.url(&format!("manifests/{digest}"))?;
        let response = self
            .send(
                Method::DELETE,
                url,
                HeaderMap::new(),
                Body::None,
                Some(SMALL_REQUEST_TIMEOUT),
            )
            .await?;
        match response.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND => {}
            _ => return Err(self.unexpected(&format!("deleting {key}"), response).await),
        }
        if let Some(full) = self.full.lock().await.as_mut() {
            full.tags.remove(&object_tag(key));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn tag_charset(tag: &str) -> bool {
        let bytes = tag.as_bytes();
        (1..=128).contains(&bytes.len())
            && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    }

    #[test]
    fn every_layout_name_becomes_a_valid_tag_and_lists_back() {
        let layout = crate::Layout::new("artifacts");
        let long_crate = "a_".repeat(64);
        let names = [
            layout.pack("serde_json", KEY),
            layout.entry_manifest("zstd-sys:zstd.c", KEY),
            layout.prekey_marker(&long_crate[..128], KEY, KEY),
            layout.build_manifest("x86_64-unknown-linux-gnu"),
            layout.shard("ci-Main", KEY),
        ];
        for name in &names {
            let tag = object_tag(name);
            assert!(tag_charset(&tag), "{name} -> {tag}");
            let (dir, leaf) = split(name);
            let prefix = format!("{}.", dir_id(dir));
            assert_eq!(
                parse_entry(&prefix, &tag),
                Some(Entry::File(leaf.to_string()))
            );
        }
        // A crate directory whose escaped name does not fit is hashed.
        let dir_tag = directory_tag("artifacts/v3/prekeys", &long_crate[..128]);
        assert!(tag_charset(&dir_tag), "{dir_tag}");
        assert!(matches!(
            parse_entry(&format!("{}.", dir_id("artifacts/v3/prekeys")), &dir_tag),
            Some(Entry::HashedDir(_))
        ));
    }

    #[test]
    fn escaping_is_reversible_and_lowercase() {
        for leaf in [
            "serde_json",
            "Zstd-sys:zstd.c",
            "a+b",
            "x86_64-unknown-linux-gnu.json",
        ] {
            let escaped = escape(leaf);
            assert!(
                !escaped.bytes().any(|b| b.is_ascii_uppercase()),
                "{escaped}"
            );
            assert_eq!(unescape(&escaped).as_deref(), Some(leaf));
        }
        assert_eq!(unescape("_zz"), None);
        assert_eq!(unescape("_4A"), None);
        assert_eq!(unescape("a_2"), None);
    }

    #[test]
    fn challenges_and_links_parse() {
        let (scheme, params) = challenge(
            r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:o/r:pull""#,
        );
        assert_eq!(scheme, "bearer");
        assert_eq!(params["realm"], "https://ghcr.io/token");
        assert_eq!(params["service"], "ghcr.io");
        assert_eq!(params["scope"], "repository:o/r:pull");
        let (scheme, params) = challenge(r#"Basic realm="kache-test""#);
        assert_eq!(
            (scheme.as_str(), params["realm"].as_str()),
            ("basic", "kache-test")
        );
        assert_eq!(
            next_link(r#"</v2/o/r/tags/list?n=2&last=b>; rel="next""#),
            Some("/v2/o/r/tags/list?n=2&last=b")
        );
        assert_eq!(next_link(r#"</x>; rel="prev""#), None);
    }

    #[test]
    fn the_docker_credential_file_is_read() {
        let auth = base64::engine::general_purpose::STANDARD.encode("user:pa:ss");
        let text = format!(
            r#"{{"auths":{{"https://ghcr.io":{{"auth":"{auth}"}},"localhost:5000":{{"username":"u","password":"p"}}}}}}"#
        );
        let Some(Login::Basic { username, password }) = docker_auth(&text, "ghcr.io") else {
            panic!("no login for ghcr.io");
        };
        assert_eq!((username.as_str(), password.as_str()), ("user", "pa:ss"));
        assert!(matches!(
            docker_auth(&text, "localhost:5000"),
            Some(Login::Basic { .. })
        ));
        assert!(docker_auth(&text, "quay.io").is_none());
        assert!(docker_auth("not json", "ghcr.io").is_none());
    }

    #[test]
    fn repositories_and_registries_are_checked() {
        assert!(valid_repository("owner/project/kache-cache"));
        assert!(!valid_repository("Owner/project"));
        assert!(!valid_repository("owner//project"));
        assert!(!valid_repository("-x"));
        assert_eq!(host_of("ghcr.io").as_deref(), Some("ghcr.io"));
        assert_eq!(
            host_of("http://127.0.0.1:5000").as_deref(),
            Some("127.0.0.1:5000")
        );
        assert_eq!(
            host_of("docker.io").as_deref(),
            Some("registry-1.docker.io")
        );
        assert!(base_url("ftp://x").is_err());
        let spec = OciSpec {
            registry: "ghcr.io".into(),
            repository: "Bad Name".into(),
            ..OciSpec::default()
        };
        assert!(matches!(open(&spec), Err(RemoteError::Config(_))));
    }

    #[test]
    fn digests_from_a_registry_are_checked_before_use() {
        assert!(valid_digest(EMPTY_DIGEST));
        assert_eq!(sha256_of(b"{}"), EMPTY_DIGEST);
        assert!(!valid_digest("sha256:../../x"));
        assert!(!valid_digest("md5:abc"));
    }
}
