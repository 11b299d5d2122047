//! `KACHE_VERIFY`: comparing what a compile wrote with the entry a hit
//! would have restored. Byte for byte, except that an incremental
//! compile's rlib is compared by its members' contents (see
//! `kache_core::archive`): rustc names those objects per session.

use kache_core::key::KeyBuilder;
use kache_core::meta::EntryMeta;

use crate::store::Store;

/// The names of files whose bytes differ between two entries of one unit
/// (or that only one of them has).
fn differing_files(expected: &EntryMeta, compiled: &EntryMeta) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for file in &expected.files {
        let same = compiled
            .files
            .iter()
            .any(|f| f.name == file.name && f.hash == file.hash);
        if !same {
            names.push(file.name.clone());
        }
    }
    for file in &compiled.files {
        if !expected.files.iter().any(|f| f.name == file.name) {
            names.push(file.name.clone());
        }
    }
    names
}

/// Whether file `name` of both entries is an rlib with the same member
/// contents (see `kache_core::archive`).
fn same_archive(store: &Store, expected: &EntryMeta, compiled: &EntryMeta, name: &str) -> bool {
    let blob = |meta: &EntryMeta| {
        let file = meta.files.iter().find(|f| f.name == name)?;
        store.read_blob(&file.hash).ok()
    };
    name.ends_with(".rlib")
        && matches!((blob(expected), blob(compiled)), (Some(a), Some(b)) if kache_core::archive::same_members(&a, &b))
}

/// `None` when a compile wrote what the entry `expected` holds; else why
/// not: the files that differ and the key components that were equal. An
/// `incremental` unit's rlibs are compared by their members' contents.
pub fn divergence(
    store: &Store,
    builder: &KeyBuilder,
    expected: &EntryMeta,
    compiled: &EntryMeta,
    incremental: bool,
) -> Option<String> {
    let mut differing = differing_files(expected, compiled);
    if incremental {
        differing.retain(|name| !same_archive(store, expected, compiled, name));
    }
    let same_key = expected.cache_key == compiled.cache_key;
    if differing.is_empty() && same_key {
        return None;
    }
    let equal: Vec<&str> = builder.components().iter().map(|c| c.name).collect();
    Some(format!(
        "outputs differ: {}; equal: every key component ({}) and {}",
        if differing.is_empty() {
            "none (the compile read other inputs)".to_string()
        } else {
            differing.join(", ")
        },
        equal.join(", "),
        if same_key {
            "every recorded input"
        } else {
            "the recorded inputs then (rustc read others now)"
        }
    ))
}
