//! Object names in the bucket (see `DESIGN.md`, "S3 layout"), byte for byte:
//!
//! - `{prefix}/v3/packs/{crate_name}/{cache_key}.tar.zst`: an entry's files;
//! - `{prefix}/v3/manifests/{crate_name}/{cache_key}.json`: its manifest,
//!   written after the pack (the commit marker);
//! - `{prefix}/_manifests/{manifest_key}.json`: a build manifest;
//! - `{prefix}/_manifests/v3/{namespace}/shards/{shard_hash}.json`: a shard.
//!
//! Every name taken from outside (a listing, a document) is checked by
//! [`is_valid_key`] and [`is_valid_crate_name`] before it becomes a path
//! anywhere.

/// The object names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Without leading or trailing `/`; may be empty.
    prefix: String,
}

impl Layout {
    /// Names under `prefix` (default `artifacts`); slashes around it are ignored.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_matches('/').to_string(),
        }
    }

    fn join(&self, rest: &str) -> String {
        if self.prefix.is_empty() {
            rest.to_string()
        } else {
            format!("{}/{rest}", self.prefix)
        }
    }

    /// `{prefix}/v3/packs/{crate_name}/{cache_key}.tar.zst`.
    pub fn pack(&self, crate_name: &str, cache_key: &str) -> String {
        self.join(&format!("v3/packs/{crate_name}/{cache_key}.tar.zst"))
    }

    /// `{prefix}/v3/manifests/{crate_name}/{cache_key}.json`.
    pub fn entry_manifest(&self, crate_name: &str, cache_key: &str) -> String {
        self.join(&format!("v3/manifests/{crate_name}/{cache_key}.json"))
    }

    /// `{prefix}/v3/manifests`: one "directory" per crate below it.
    pub fn manifests_root(&self) -> String {
        self.join("v3/manifests")
    }

    /// `{prefix}/v3/manifests/{crate_name}`.
    pub fn crate_manifests(&self, crate_name: &str) -> String {
        self.join(&format!("v3/manifests/{crate_name}"))
    }

    /// `{prefix}/v3/prekeys/{crate_name}/{pre_key}/{cache_key}`: an empty
    /// marker kache adds (beside the layout above, which other readers
    /// ignore) so a client that knows only a compile's pre-key can find the
    /// entries to prove a hit from. Written after the manifest.
    pub fn prekey_marker(&self, crate_name: &str, pre_key: &str, cache_key: &str) -> String {
        self.join(&format!("v3/prekeys/{crate_name}/{pre_key}/{cache_key}"))
    }

    /// `{prefix}/v3/prekeys/{crate_name}/{pre_key}`: the markers of one pre-key.
    pub fn prekey_dir(&self, crate_name: &str, pre_key: &str) -> String {
        self.join(&format!("v3/prekeys/{crate_name}/{pre_key}"))
    }

    /// `{prefix}/_manifests/{manifest_key}.json`.
    pub fn build_manifest(&self, manifest_key: &str) -> String {
        self.join(&format!("_manifests/{manifest_key}.json"))
    }

    /// `{prefix}/_manifests/v3/{namespace}/shards/{shard_hash}.json`.
    pub fn shard(&self, namespace: &str, shard_hash: &str) -> String {
        self.join(&format!(
            "_manifests/v3/{namespace}/shards/{shard_hash}.json"
        ))
    }

    /// `(crate_name, cache_key)` of an entry manifest's object name, when it
    /// is one and both parts have the expected shape.
    pub fn parse_entry_manifest(&self, object: &str) -> Option<(String, String)> {
        let root = self.manifests_root();
        let rest = object.strip_prefix(&root)?.strip_prefix('/')?;
        let (crate_name, file) = rest.split_once('/')?;
        let key = file.strip_suffix(".json")?;
        (is_valid_crate_name(crate_name) && is_valid_key(key))
            .then(|| (crate_name.to_string(), key.to_string()))
    }
}

/// A cache key: 64 lowercase hex digits.
pub fn is_valid_key(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A crate name as kache stores it: rustc crate names (`serde_json`,
/// `build_script_build`) and C units (`zstd-sys:zstd.c`). 1 to 128 ASCII
/// letters, digits and `_ - + . :`, not starting with `.`: never a path.
pub fn is_valid_crate_name(text: &str) -> bool {
    (1..=128).contains(&text.len())
        && !text.starts_with('.')
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn names_follow_the_design_byte_for_byte() {
        let layout = Layout::new("/artifacts/");
        assert_eq!(
            layout.pack("serde", KEY),
            format!("artifacts/v3/packs/serde/{KEY}.tar.zst")
        );
        assert_eq!(
            layout.entry_manifest("serde", KEY),
            format!("artifacts/v3/manifests/serde/{KEY}.json")
        );
        assert_eq!(
            layout.build_manifest("x86_64-unknown-linux-gnu"),
            "artifacts/_manifests/x86_64-unknown-linux-gnu.json"
        );
        assert_eq!(
            layout.shard("ci-main", "abc"),
            "artifacts/_manifests/v3/ci-main/shards/abc.json"
        );
        assert_eq!(
            Layout::new("").pack("a", KEY),
            format!("v3/packs/a/{KEY}.tar.zst")
        );
    }

    #[test]
    fn only_well_formed_manifest_names_parse() {
        let layout = Layout::new("artifacts");
        let name = layout.entry_manifest("zstd-sys:zstd.c", KEY);
        assert_eq!(
            layout.parse_entry_manifest(&name),
            Some(("zstd-sys:zstd.c".to_string(), KEY.to_string()))
        );
        for bad in [
            format!("artifacts/v3/manifests/../{KEY}.json"),
            format!("artifacts/v3/manifests/a/b/{KEY}.json"),
            "artifacts/v3/manifests/serde/notakey.json".to_string(),
            format!("artifacts/v3/packs/serde/{KEY}.json"),
            format!("other/v3/manifests/serde/{KEY}.json"),
        ] {
            assert_eq!(layout.parse_entry_manifest(&bad), None, "{bad}");
        }
        assert!(!is_valid_crate_name(".."));
        assert!(!is_valid_crate_name("a/b"));
        assert!(!is_valid_crate_name(""));
        assert!(is_valid_crate_name("build_script_build"));
    }
}
