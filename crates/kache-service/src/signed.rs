//! Which documents the planner learns from. With trusted keys set
//! (`--trusted-keys` / `KACHE_PLANNER_TRUSTED_KEYS`, the clients'
//! `KACHE_TRUSTED_KEYS`), a build manifest or shard is learned only when a
//! trusted key signed it for the object it is stored as
//! (`BuildManifest::signed_message`): a bucket writer without the key can
//! neither teach plans nor move a signed shard into another namespace.
//! Without trusted keys every well-formed document is learned, as before.

use kache_core::manifest::{BuildManifest, Shard};
use kache_remote::Layout;
use kache_remote::sign::{Refusal, TrustedKeys};

/// The signature check for documents, by where they are (or would be) stored.
#[derive(Debug, Clone)]
pub struct Documents {
    trusted: TrustedKeys,
    layout: Layout,
}

impl Documents {
    /// Checks documents against `trusted` (empty: nothing is checked);
    /// objects are named under `prefix`, as the clients write them.
    pub fn new(trusted: TrustedKeys, prefix: &str) -> Self {
        Self {
            trusted,
            layout: Layout::new(prefix),
        }
    }

    /// Whether signatures are checked at all (for `/healthz` and the log).
    pub fn checked(&self) -> bool {
        !self.trusted.is_empty()
    }

    /// A build manifest stored at `object` (by default where its
    /// `manifest_key` puts it).
    pub fn manifest(&self, manifest: &BuildManifest, object: Option<&str>) -> Result<(), Refusal> {
        if self.trusted.is_empty() {
            return Ok(());
        }
        let default = self.layout.build_manifest(&manifest.manifest_key);
        let object = object.unwrap_or(&default);
        self.trusted.verify(
            &manifest.signed_message(object),
            manifest.signature.as_ref(),
        )
    }

    /// A shard of `namespace` named `hash`, stored at `object` (by default
    /// where the layout puts it).
    pub fn shard(
        &self,
        shard: &Shard,
        namespace: &str,
        hash: &str,
        object: Option<&str>,
    ) -> Result<(), Refusal> {
        if self.trusted.is_empty() {
            return Ok(());
        }
        let default = self.layout.shard(namespace, hash);
        let object = object.unwrap_or(&default);
        self.trusted
            .verify(&shard.signed_message(object), shard.signature.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kache_core::manifest::{MANIFEST_VERSION, ShardEntry};
    use kache_remote::sign::SigningKey;

    fn shard() -> Shard {
        Shard {
            version: MANIFEST_VERSION,
            entries: vec![ShardEntry {
                cache_key: "a".repeat(64),
                crate_name: "serde".into(),
            }],
            identity: None,
            signature: None,
        }
    }

    #[test]
    fn only_a_trusted_signature_for_this_very_object_is_learned() {
        let (key, _) = SigningKey::generate().unwrap();
        let docs = Documents::new(TrustedKeys::from_keys(vec![key.public()]), "artifacts");
        let layout = Layout::new("artifacts");
        let mut signed = shard();
        signed.signature = Some(key.sign(&signed.signed_message(&layout.shard("main", "h1"))));
        assert_eq!(docs.shard(&signed, "main", "h1", None), Ok(()));
        // The same signed shard replayed into another namespace or name.
        assert!(docs.shard(&signed, "pr-7", "h1", None).is_err());
        assert!(docs.shard(&signed, "main", "h2", None).is_err());
        // Its entries changed under the signature.
        let mut tampered = signed.clone();
        tampered.entries[0].cache_key = "b".repeat(64);
        assert!(matches!(
            docs.shard(&tampered, "main", "h1", None),
            Err(Refusal::BadSignature(_))
        ));
        assert_eq!(
            docs.shard(&shard(), "main", "h1", None),
            Err(Refusal::Unsigned)
        );
        // Unchecked without trusted keys.
        let open = Documents::new(TrustedKeys::default(), "artifacts");
        assert!(!open.checked());
        assert_eq!(open.shard(&shard(), "main", "h1", None), Ok(()));
    }
}
