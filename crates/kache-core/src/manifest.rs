//! Remote wire documents: per-entry manifests, build manifests and
//! `Cargo.lock` shards.

use std::borrow::Borrow;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Version of the manifest and shard documents.
pub const MANIFEST_VERSION: u32 = 3;
/// Number of shard buckets `Cargo.lock` packages are spread over.
pub const SHARD_BUCKETS: u64 = 64;

/// `{prefix}/v3/manifests/{crate_name}/{cache_key}.json`: one stored entry.
/// Written after its pack, so it is the commit marker listings rely on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryManifest {
    pub version: u32,
    pub cache_key: String,
    pub crate_name: String,
    /// The pack's full object key.
    pub pack_key: String,
    /// Compressed size of the pack.
    pub pack_bytes: u64,
    /// Sum of the entry's file sizes.
    pub original_bytes: u64,
    pub file_count: u64,
    /// blake3 hex of the pack's bytes, so a signature covers the pack
    /// itself (an addition to the original's format; absent from older
    /// writers, and then no signature can be checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack_blake3: Option<String>,
    /// The writer's signature over [`EntryManifest::signed_message`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

/// An ed25519 signature of a remote document (an addition to the
/// original's format, ignored by readers that know nothing of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Signature {
    /// The signer's public key: `ed25519:` and 64 hex digits.
    pub key: String,
    /// The signature: 128 hex digits.
    pub sig: String,
}

impl EntryManifest {
    /// The bytes a writer signs: every field a reader acts on, each on its
    /// own line after a domain tag, so a signature cannot be moved to
    /// another key, crate or pack, nor a pack swapped under it.
    pub fn signed_message(&self) -> Vec<u8> {
        format!(
            "kache-entry-manifest-v1\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
            self.version,
            self.cache_key,
            self.crate_name,
            self.pack_key,
            self.pack_blake3.as_deref().unwrap_or(""),
            self.pack_bytes,
            self.original_bytes,
            self.file_count,
        )
        .into_bytes()
    }
}

/// The bytes a writer signs for a build manifest or a shard stored at
/// `object`: a domain tag, the object's key (a shard cannot be replayed
/// into another namespace) and the document as JSON without its signature.
/// Reader and writer serialise the same struct, so the bytes agree; a
/// field unknown to the reader is dropped on both sides of the check and
/// never acted on.
pub fn signed_document<T: Serialize>(tag: &str, object: &str, document: &T) -> Vec<u8> {
    let mut message = format!("kache-{tag}-v1\n{object}\n").into_bytes();
    // Serialising a struct of strings and integers cannot fail.
    message.extend(serde_json::to_vec(document).unwrap_or_default());
    message
}

/// What a build's artifacts can only serve builds of: the same target,
/// toolchain and profile. Optional in every document (older writers and
/// the original kache omit it); `None` means "unknown".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Identity {
    /// Target triple the build compiled for.
    pub target: String,
    /// blake3 hex of the `rustc -vV` banner.
    pub toolchain: String,
    /// Cargo profile (`dev`, `release`, a custom one).
    pub profile: String,
}

impl Identity {
    /// blake3 hex of a `rustc -vV` banner.
    pub fn toolchain_of(rustc_vv: &str) -> String {
        blake3::hash(rustc_vv.as_bytes()).to_hex().to_string()
    }

    /// The `host:` triple of a `rustc -vV` banner.
    pub fn host_of(rustc_vv: &str) -> Option<&str> {
        rustc_vv
            .lines()
            .find_map(|l| l.strip_prefix("host: "))
            .map(str::trim)
    }

    /// The cargo profile a summary of codegen flags stands for: an
    /// optimised build is `release`, an unoptimised one `dev`.
    pub fn profile_of_opt(optimised: bool) -> &'static str {
        if optimised { "release" } else { "dev" }
    }

    /// The identity of `cargo <args…>`: its `--target` (else the host), the
    /// toolchain, and its profile as `dev` or `release` (`--release`, `-r`,
    /// `--profile`, `cargo install`, `cargo bench`). `None` for a custom
    /// profile, which may be either: unknown never filters anything out.
    pub fn of_cargo(args: &[String], rustc_vv: &str) -> Option<Self> {
        let mut target = None;
        let mut profile = None;
        let mut subcommand = None;
        let mut iter = args.iter().peekable();
        while let Some(arg) = iter.next() {
            match arg.as_str() {
                "--release" | "-r" => profile = Some("release".to_string()),
                "--debug" => profile = Some("dev".to_string()),
                "--target" => target = iter.next().cloned(),
                "--profile" => profile = iter.next().cloned(),
                _ => {
                    if let Some(t) = arg.strip_prefix("--target=") {
                        target = Some(t.to_string());
                    } else if let Some(p) = arg.strip_prefix("--profile=") {
                        profile = Some(p.to_string());
                    } else if subcommand.is_none()
                        && !arg.starts_with(['-', '+'])
                        && !arg.contains('/')
                    {
                        subcommand = Some(arg.clone());
                    }
                }
            }
        }
        let profile = match profile.as_deref() {
            Some("dev" | "test") => "dev",
            Some("release" | "bench") => "release",
            Some(_) => return None,
            None => match subcommand.as_deref() {
                Some("install" | "bench") => "release",
                _ => "dev",
            },
        };
        Some(Self {
            target: target.or_else(|| Self::host_of(rustc_vv).map(String::from))?,
            toolchain: Self::toolchain_of(rustc_vv),
            profile: profile.to_string(),
        })
    }
}

/// `{prefix}/_manifests/{manifest_key}.json`, written by `kache save-manifest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BuildManifest {
    /// [`MANIFEST_VERSION`]; another is refused.
    #[schemars(range(min = 3, max = 3))]
    pub version: u32,
    /// RFC 3339 creation time.
    pub created: String,
    pub manifest_key: String,
    pub entries: Vec<ManifestEntry>,
    /// An addition to the original's format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// The writer's signature (see [`BuildManifest::signed_message`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

impl BuildManifest {
    /// What a writer signs for this manifest stored at `object`.
    pub fn signed_message(&self, object: &str) -> Vec<u8> {
        let unsigned = Self {
            signature: None,
            ..self.clone()
        };
        signed_document("build-manifest", object, &unsigned)
    }
}

/// One entry of a [`BuildManifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ManifestEntry {
    pub cache_key: String,
    pub crate_name: String,
    #[serde(default)]
    pub compile_time_ms: u64,
    #[serde(default)]
    pub artifact_size: u64,
}

/// `{prefix}/_manifests/v3/{namespace}/shards/{shard_hash}.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Shard {
    /// [`MANIFEST_VERSION`]; another is refused.
    #[schemars(range(min = 3, max = 3))]
    pub version: u32,
    pub entries: Vec<ShardEntry>,
    /// An addition to the original's format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// The writer's signature (see [`Shard::signed_message`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

impl Shard {
    /// What a writer signs for this shard stored at `object`.
    pub fn signed_message(&self, object: &str) -> Vec<u8> {
        let unsigned = Self {
            signature: None,
            ..self.clone()
        };
        signed_document("shard", object, &unsigned)
    }
}

/// One entry of a [`Shard`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ShardEntry {
    pub cache_key: String,
    pub crate_name: String,
}

/// The bucket a `Cargo.lock` package falls into:
/// `u64_le(blake3(name)[0..8]) % 64`.
pub fn shard_bucket(package_name: &str) -> u64 {
    let hash = blake3::hash(package_name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first) % SHARD_BUCKETS
}

/// A shard's name: the blake3 hex of its packages written `name@version`,
/// sorted, joined by `|`.
pub fn shard_hash<P: Borrow<(String, String)>>(packages: &[P]) -> String {
    // Compared and hashed as the `name@version` strings they stand for,
    // without building them: the planner hashes every bucket of every plan.
    fn spelled((name, version): &(String, String)) -> impl Iterator<Item = u8> + '_ {
        name.bytes().chain([b'@']).chain(version.bytes())
    }
    let mut sorted: Vec<&(String, String)> = packages.iter().map(Borrow::borrow).collect();
    sorted.sort_by(|a, b| spelled(a).cmp(spelled(b)));
    // One buffer, hashed at once: many tiny updates cost more than the copy.
    let length = sorted.iter().map(|(n, v)| n.len() + v.len() + 2).sum();
    let mut text = Vec::with_capacity(length);
    for (i, (name, version)) in sorted.into_iter().enumerate() {
        if i > 0 {
            text.push(b'|');
        }
        text.extend_from_slice(name.as_bytes());
        text.push(b'@');
        text.extend_from_slice(version.as_bytes());
    }
    blake3::hash(&text).to_hex().as_str().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_hash_ignores_order_and_changes_with_a_bump() {
        let a = vec![
            ("serde".to_string(), "1.0.210".to_string()),
            ("anyhow".into(), "1.0.0".into()),
        ];
        let b = vec![a[1].clone(), a[0].clone()];
        assert_eq!(shard_hash(&a), shard_hash(&b));
        let bumped = vec![("serde".to_string(), "1.0.211".to_string()), a[1].clone()];
        assert_ne!(shard_hash(&a), shard_hash(&bumped));
        assert_eq!(
            shard_hash(&a),
            blake3::hash(b"anyhow@1.0.0|serde@1.0.210")
                .to_hex()
                .to_string()
        );
        // Sorted as the joined strings, not as (name, version) pairs:
        // `a-b@1` comes before `a@1` because `-` sorts before `@`.
        let prefix = [
            ("a".to_string(), "1".to_string()),
            ("a-b".into(), "1".into()),
        ];
        assert_eq!(
            shard_hash(&prefix),
            blake3::hash(b"a-b@1|a@1").to_hex().to_string()
        );
    }

    #[test]
    fn a_cargo_command_line_names_its_identity() {
        let vv = "rustc 1.95.0 (59807616e 2026-04-14)\nhost: x86_64-unknown-linux-gnu\n";
        let of = |args: &str| {
            let args: Vec<String> = args.split_whitespace().map(String::from).collect();
            Identity::of_cargo(&args[1..], vv).map(|i| (i.target, i.profile))
        };
        let host = "x86_64-unknown-linux-gnu".to_string();
        assert_eq!(of("cargo build"), Some((host.clone(), "dev".into())));
        assert_eq!(
            of("cargo +stable build -r"),
            Some((host.clone(), "release".into()))
        );
        assert_eq!(
            of("cargo build --profile=bench --target aarch64-unknown-linux-gnu"),
            Some(("aarch64-unknown-linux-gnu".into(), "release".into()))
        );
        assert_eq!(
            of("cargo install ripgrep"),
            Some((host.clone(), "release".into()))
        );
        assert_eq!(of("cargo test --profile test"), Some((host, "dev".into())));
        assert_eq!(of("cargo build --profile ci-fast"), None);
        let identity = Identity::of_cargo(&[], vv).unwrap();
        assert_eq!(
            identity.toolchain,
            blake3::hash(vv.as_bytes()).to_hex().to_string()
        );
    }

    #[test]
    fn buckets_are_stable_and_in_range() {
        let bucket = shard_bucket("serde");
        assert!(bucket < SHARD_BUCKETS);
        assert_eq!(bucket, shard_bucket("serde"));
    }

    #[test]
    fn manifest_round_trips_with_defaults() {
        let text = r#"{"version":3,"created":"2026-11-24T00:00:00Z","manifest_key":"x86_64-unknown-linux-gnu",
            "entries":[{"cache_key":"k","crate_name":"serde"}]}"#;
        let manifest: BuildManifest = serde_json::from_str(text).unwrap();
        assert_eq!(manifest.entries[0].compile_time_ms, 0);
        let again: BuildManifest =
            serde_json::from_str(&serde_json::to_string(&manifest).unwrap()).unwrap();
        assert_eq!(manifest, again);
    }
}
