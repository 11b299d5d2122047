//! Finding a stored entry whose recorded inputs prove a hit: shared by the
//! rustc and the C-family flows.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kache_core::key;
use kache_core::meta::EntryMeta;
use tracing::trace;

use super::context::Roots;
use crate::store::{HashCache, Store};

/// What an entry records of an `env!`/`option_env!` value: its digest
/// ([`ENV_DIGEST`]), never the value, which may be a secret and would sit
/// in `meta.json`, the index and the bucket. A digest proves a hit as well.
/// Baked-root rows (`=root:<sentinel>`, see `linked.rs`) keep their path.
pub fn env_digest(name: &str, value: &str) -> String {
    if name.starts_with(super::linked::BAKED_ROOT) {
        return value.to_string();
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"kache-env-v1\0");
    hasher.update(name.as_bytes());
    hasher.update(b"\0");
    hasher.update(value.as_bytes());
    format!("{ENV_DIGEST}{}", hasher.finalize().to_hex())
}

/// The prefix of a recorded `env!` digest.
pub const ENV_DIGEST: &str = "blake3:";

/// The most recently used entry under `pre_key` whose recorded inputs all
/// match now (an [`ABSENT`] input must still not exist) and whose `env!`
/// rows equal `env_value(name)` (the recorded form: an [`env_digest`]).
/// Any doubt is a miss.
///
/// Only regular files are hashed: an input that is now a device, a FIFO or
/// a socket (`/dev/zero` grows memory without bound, a FIFO hangs the build)
/// makes the entry impossible, and it is removed rather than tried again
/// by every build.
pub fn find_entry(
    store: &mut Store,
    hasher: &mut HashCache,
    roots: &Roots,
    pre_key: &str,
    env_value: impl Fn(&str) -> Option<String>,
) -> Result<Option<EntryMeta>> {
    let mut impossible = Vec::new();
    let found = find_matching(store, hasher, roots, pre_key, env_value, &mut impossible);
    if !impossible.is_empty() {
        tracing::warn!(
            entries = impossible.len(),
            "removing entries whose inputs are not regular files"
        );
        let _ = store.remove_entries(&impossible);
    }
    found
}

fn find_matching(
    store: &Store,
    hasher: &mut HashCache,
    roots: &Roots,
    pre_key: &str,
    env_value: impl Fn(&str) -> Option<String>,
    impossible: &mut Vec<String>,
) -> Result<Option<EntryMeta>> {
    'candidates: for meta in store.index.candidates(pre_key)? {
        for (name, value) in &meta.env_deps {
            if env_value(name).as_ref() != value.as_ref() {
                trace!(crate_name = %meta.crate_name, name, "env! value differs");
                continue 'candidates;
            }
        }
        for input in &meta.inputs {
            let path = roots.resolve(&roots.normalizer.denormalize(&input.path));
            let matches = if input.hash == ABSENT {
                std::fs::symlink_metadata(&path).is_err()
            } else if input.hash.starts_with(LISTING) {
                listing(&path).is_some_and(|now| now == input.hash)
            } else {
                match std::fs::metadata(&path) {
                    Ok(stat) if !stat.is_file() => {
                        impossible.push(meta.cache_key.clone());
                        continue 'candidates;
                    }
                    Ok(_) => matches!(
                        hasher.hash(store, &path),
                        Ok(hashed) if hashed.hash == input.hash
                    ),
                    Err(_) => false,
                }
            };
            if !matches {
                trace!(crate_name = %meta.crate_name, path = %input.path, "input differs");
                continue 'candidates;
            }
        }
        // The inputs match; recomputing the key (a few hundred bytes of
        // blake3) also rejects a row whose stored key does not follow
        // from its own pre-key and inputs, e.g. a hand-edited index.
        let full = key::full_key(pre_key, &meta.inputs, &meta.env_deps);
        if full == meta.cache_key {
            return Ok(Some(meta));
        }
    }
    Ok(None)
}

/// The hash prefix of a directory input: the directory's entry names, which
/// must be the same for a hit (see [`listing`]).
pub const LISTING: &str = "listing:";

/// `listing:<blake3 of the sorted entry names, directories marked>` of a
/// directory, or `None` when it cannot be read. Recorded for a directory
/// whose every file the compile read (a macro embedding a folder, as
/// `include_dir!` or rust-embed do): a file added there changes what the
/// macro would embed, although no recorded file changed.
pub fn listing(dir: &std::path::Path) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .map(|entry| {
            let entry = entry.ok()?;
            let kind = if entry.file_type().ok()?.is_dir() {
                "d"
            } else {
                "f"
            };
            Some(format!("{kind}:{}", entry.file_name().to_string_lossy()))
        })
        .collect::<Option<_>>()?;
    names.sort();
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"kache-listing-v1\0");
    for name in &names {
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
    }
    Some(format!("{LISTING}{}", hasher.finalize().to_hex()))
}

/// The hash recorded for an input that must *not* exist for an entry to
/// hit (a header that would shadow one the compile found further down the
/// include path).
pub const ABSENT: &str = "absent";

/// Verifies every blob of `meta` before anything is restored: a blob that
/// was written through a link or damaged is a miss, never a wrong hit.
pub fn verify_blobs(store: &Store, meta: &EntryMeta) -> Result<()> {
    for file in &meta.files {
        store
            .verify_blob(&file.hash, file.size)
            .with_context(|| format!("checking {}", file.name))?;
    }
    Ok(())
}

/// After a restore: records the hit with the file hashes it learned, and
/// says where the entry came from (`local`, `remote`, `prefetch`).
pub fn record_hit(
    store: &mut Store,
    hasher: &mut HashCache,
    remote: bool,
    cache_key: &str,
) -> String {
    let hashes = hasher.take_pending();
    let _ = store
        .index
        .record_hit(cache_key, crate::store::now(), &hashes);
    super::outcome::hit_source(store, remote, cache_key)
}

/// After a failed restore: drops the entry, so the compile that follows
/// stores a good one.
pub fn forget(store: &mut Store, cache_key: &str) {
    let _ = store.remove_entries(&[cache_key.to_string()]);
}

/// Directories holding non-Rust inputs of which every regular file is an
/// input: what a macro that embeds a whole folder reads. A directory with
/// one `include_str!`ed file among others is not one.
pub fn embedded_dirs(files: &[String], roots: &Roots) -> Vec<PathBuf> {
    let read: std::collections::BTreeSet<PathBuf> =
        files.iter().map(|f| roots.resolve(f)).collect();
    let mut dirs: Vec<PathBuf> = read
        .iter()
        .filter(|p| p.extension().is_none_or(|e| e != "rs"))
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs.retain(|dir| {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries.flatten().all(|entry| {
                entry.file_type().is_ok_and(|t| !t.is_file()) || read.contains(&entry.path())
            })
        })
    });
    dirs
}
