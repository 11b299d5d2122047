//! `KACHE_VERIFY`: comparing what a compile wrote with the entry a hit
//! would have restored. Byte for byte, except that an incremental
//! compile's rlib is compared by its members' contents (see
//! `kache_core::archive`): rustc names those objects per session.

use kache_core::meta::EntryMeta;

use crate::store::Store;

/// The names of files whose bytes differ between two entries of one unit
/// (or that only one of them has).
pub fn differing_files(expected: &EntryMeta, compiled: &EntryMeta) -> Vec<String> {
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
pub fn same_archive(store: &Store, expected: &EntryMeta, compiled: &EntryMeta, name: &str) -> bool {
    let blob = |meta: &EntryMeta| {
        let file = meta.files.iter().find(|f| f.name == name)?;
        store.read_blob(&file.hash).ok()
    };
    name.ends_with(".rlib")
        && matches!((blob(expected), blob(compiled)), (Some(a), Some(b)) if kache_core::archive::same_members(&a, &b))
}
