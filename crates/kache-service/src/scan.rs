//! Learning from the bucket: the planner reads the build manifests and
//! shards clients write (`{prefix}/_manifests/…`) on start and then every
//! `--scan-interval` seconds, through the same `ingest` path as the POST
//! routes.
//!
//! Incremental: a document is read again only when its version (size and
//! modification time) differs from the one recorded in the database when it
//! was ingested, so a restart rescans nothing. Only the lease holder scans
//! (a follower has no backend). A malformed or hostile document is skipped,
//! counted in `/metrics` and recorded as seen (until it changes); a bucket
//! that is down is logged and counted, and the next interval tries again.

use std::sync::Arc;
use std::time::Duration;

use kache_core::manifest::{BuildManifest, Shard};
use kache_remote::{Layout, Storage};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::http::App;
use crate::ingest::{self, Mode};
use crate::metrics::KindLabel;

/// Largest document read from the bucket.
const MAX_DOCUMENT_BYTES: usize = 64 << 20;

/// What kind of document an object under `_manifests/` is.
#[derive(Debug, PartialEq, Eq)]
enum Document {
    Manifest,
    Shard { namespace: String, hash: String },
}

/// Scans until `shutdown` turns true.
pub async fn run(
    app: Arc<App>,
    storage: Box<dyn Storage>,
    layout: Layout,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    info!(
        location = storage.location(),
        "learning from the bucket every {}s",
        interval.as_secs()
    );
    loop {
        if app.is_ready() {
            match scan_once(&app, storage.as_ref(), &layout).await {
                Ok((ingested, skipped)) if ingested + skipped > 0 => {
                    info!(ingested, skipped, "bucket scanned");
                }
                Ok(_) => {}
                Err(err) => {
                    app.metrics.scan_errors.inc();
                    warn!("scanning the bucket failed: {err}");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One pass: `(documents ingested, documents skipped)`.
pub async fn scan_once(
    app: &App,
    storage: &dyn Storage,
    layout: &Layout,
) -> Result<(usize, usize), kache_remote::RemoteError> {
    let root = layout.build_manifest("x");
    let root = root
        .strip_suffix("/x.json")
        .unwrap_or("_manifests")
        .to_string();
    let mut objects = storage.list_info(&root).await?;
    objects.sort_by(|a, b| a.name.cmp(&b.name));
    let (mut ingested, mut skipped) = (0, 0);
    for object in objects {
        let Some(kind) = classify(&root, &object.name) else {
            continue;
        };
        let version = format!("{}:{}", object.size, object.modified_ms);
        {
            let guard = app.backend.read().await;
            let Some(backend) = guard.as_ref() else {
                return Ok((ingested, skipped));
            };
            if backend.scanned(&object.name).as_deref() == Some(version.as_str()) {
                continue;
            }
        }
        let body = if object.size as usize > MAX_DOCUMENT_BYTES {
            None
        } else {
            storage.get(&object.name).await?
        };
        let parsed = body
            .ok_or_else(|| anyhow::anyhow!("missing or larger than {MAX_DOCUMENT_BYTES} bytes"))
            .and_then(|bytes| observations(app, &kind, &object.name, &bytes));
        // Shared: plans go on while this document is stored (see ingest.rs).
        let guard = app.backend.read().await;
        let Some(backend) = guard.as_ref() else {
            return Ok((ingested, skipped));
        };
        match parsed {
            Ok(observations) => {
                match backend.ingest(&observations, Mode::Count).await {
                    Ok(summary) => app.count_evictions(&summary),
                    Err(err) => {
                        warn!(object = object.name, "ingesting failed: {err:#}");
                        continue;
                    }
                }
                let label = match kind {
                    Document::Manifest => "bucket_manifest",
                    Document::Shard { .. } => "bucket_shard",
                };
                app.metrics
                    .ingested
                    .get_or_create(&KindLabel { kind: label.into() })
                    .inc();
                ingested += 1;
            }
            Err(err) => {
                warn!(
                    object = object.name,
                    "skipping a malformed document: {err:#}"
                );
                app.metrics.scan_skipped.inc();
                skipped += 1;
            }
        }
        if let Err(err) = backend.mark_scanned(&object.name, &version).await {
            warn!(object = object.name, "recording the scan failed: {err:#}");
        }
    }
    if let Some(backend) = app.backend.read().await.as_ref() {
        app.publish_state_size(backend).await;
    }
    Ok((ingested, skipped))
}

/// `{root}/{key}.json` is a build manifest; `{root}/v3/{ns}/shards/{hash}.json` a shard.
fn classify(root: &str, name: &str) -> Option<Document> {
    let rest = name.strip_prefix(root)?.strip_prefix('/')?;
    let stem = rest.strip_suffix(".json")?;
    let parts: Vec<&str> = stem.split('/').collect();
    match parts.as_slice() {
        [_key] => Some(Document::Manifest),
        ["v3", namespace, "shards", hash] => Some(Document::Shard {
            namespace: namespace.to_string(),
            hash: hash.to_string(),
        }),
        _ => None,
    }
}

/// What a document stored at `object` teaches, once it parses and (with
/// trusted keys) carries a trusted signature for that very object.
fn observations(
    app: &App,
    kind: &Document,
    object: &str,
    bytes: &[u8],
) -> anyhow::Result<Vec<ingest::Observation>> {
    let checked = match kind {
        Document::Manifest => {
            let manifest: BuildManifest = serde_json::from_slice(bytes)?;
            app.documents
                .manifest(&manifest, Some(object))
                .map(|()| ingest::from_manifest(&manifest))
        }
        Document::Shard { namespace, hash } => {
            let shard: Shard = serde_json::from_slice(bytes)?;
            app.documents
                .shard(&shard, namespace, hash, Some(object))
                .map(|()| ingest::from_shard(namespace, hash, &shard))
        }
    };
    match checked {
        Ok(observations) => observations,
        Err(refusal) => {
            app.metrics
                .refused_documents
                .get_or_create(&KindLabel {
                    kind: refusal.reason().to_string(),
                })
                .inc();
            anyhow::bail!("refused: {refusal} (trusted keys are set)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_and_shards_are_told_apart_and_nothing_else_is_read() {
        let root = "artifacts/_manifests";
        assert_eq!(
            classify(root, "artifacts/_manifests/x86_64-unknown-linux-gnu.json"),
            Some(Document::Manifest)
        );
        assert_eq!(
            classify(root, "artifacts/_manifests/v3/ci/shards/abc.json"),
            Some(Document::Shard {
                namespace: "ci".into(),
                hash: "abc".into()
            })
        );
        for other in [
            "artifacts/_manifests/v3/ci/other/abc.json",
            "artifacts/_manifests/notes.txt",
            "artifacts/v3/manifests/serde/k.json",
        ] {
            assert_eq!(classify(root, other), None, "{other}");
        }
    }
}
