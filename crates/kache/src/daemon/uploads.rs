//! The upload queue: durable rows in `index.db` (`uploads`), drained by the
//! daemon with bounded concurrency. A failed upload is retried with
//! exponential backoff (2 s, 4 s, … up to 5 minutes); a permission error
//! waits the longest. A daemon killed mid-upload resumes from the rows after
//! restart, and since a pack is uploaded before its manifest, the bucket
//! never shows a half entry.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use tracing::{info, warn};

use super::state::State;
use crate::remote::{self, Pushed};
use crate::store::{self, Store};

/// Longest wait between two attempts of one upload.
const MAX_BACKOFF_SECS: u64 = 300;

/// Uploads everything due, for every remote whose settings are known.
/// Returns how many uploads finished (uploaded or already there).
pub async fn drain_due(state: &Arc<State>) -> Result<usize> {
    let mut done = 0;
    for (id, remote) in state.known_remotes() {
        let (cache_dir, queue_id) = (state.cache_dir.clone(), id.clone());
        let due = tokio::task::spawn_blocking(move || -> Result<Vec<String>> {
            Store::open(&cache_dir)?
                .index
                .due_uploads(&queue_id, store::now(), 256)
        })
        .await??;
        if due.is_empty() {
            continue;
        }
        let concurrency = remote.concurrency.max(1);
        let mut results = futures::stream::iter(due.into_iter().map(|key| {
            let remote = remote.clone();
            async move {
                let shown = state.transfer("upload", &key);
                let result = remote.push(&key).await;
                drop(shown);
                (key, result)
            }
        }))
        .buffer_unordered(concurrency);
        while let Some((key, result)) = results.next().await {
            let cache_dir = state.cache_dir.clone();
            let id = id.clone();
            match result {
                Ok(pushed) => {
                    if matches!(pushed, Pushed::Uploaded { .. }) {
                        state.count_upload();
                        info!(key, "uploaded");
                    }
                    done += 1;
                    tokio::task::spawn_blocking(move || -> Result<()> {
                        Store::open(&cache_dir)?.index.finish_upload(&key, &id)
                    })
                    .await??;
                }
                Err(err) => {
                    let denied = remote::denial(&err).is_some();
                    let message = format!("{err:#}");
                    warn!(key, "upload failed: {message}");
                    tokio::task::spawn_blocking(move || -> Result<()> {
                        let store = Store::open(&cache_dir)?;
                        let index = &store.index;
                        // A local entry gone (gc) cannot be uploaded: drop it.
                        if index.meta(&key)?.is_none() {
                            return index.finish_upload(&key, &id);
                        }
                        let attempts = index.upload_attempts(&key, &id)?;
                        let wait = if denied {
                            MAX_BACKOFF_SECS
                        } else {
                            (2u64 << attempts.min(8)).min(MAX_BACKOFF_SECS)
                        };
                        index.retry_upload(&key, &id, store::now() + wait, &message)?;
                        Ok(())
                    })
                    .await??;
                }
            }
        }
    }
    Ok(done)
}

/// Runs the queue until the daemon stops: drains what is due, then waits for
/// a new upload or the next retry.
pub async fn worker(state: Arc<State>) {
    loop {
        if let Err(err) = drain_due(&state).await {
            warn!("upload queue: {err:#}");
        }
        tokio::select! {
            _ = state.uploads_ready.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}
