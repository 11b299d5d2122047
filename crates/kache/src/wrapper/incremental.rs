//! Incremental compilation and the cache: rustc's incremental directory is
//! rustc's alone (kache never writes into it, and a hit leaves it as it
//! was); whether a compile was incremental is part of its key. One rule
//! lives here: a crate under work that lost its incremental state (after
//! `cargo clean`) is compiled rather than restored, so the next edit is an
//! incremental compile again, as with plain cargo.

use std::time::SystemTime;

use kache_core::args::Invocation;

use super::context::Roots;
use crate::store::Store;

/// How many stored versions of a unit make its crate one under work.
const HOT_ENTRIES: usize = 3;
/// Within how long those versions were stored.
const HOT_WINDOW_SECS: u64 = 12 * 3600;

/// Whether this unit should compile although it may hit, and why: an
/// incremental unit of a crate under work (at least
/// [`HOT_ENTRIES`] versions of it stored in the last
/// [`HOT_WINDOW_SECS`]) whose incremental directory holds no session
/// for it, as after `cargo clean`. A hit would leave rustc without
/// state, so the next edit would compile the whole crate where plain
/// cargo's is incremental; compiling now costs that once, at the time
/// plain cargo pays it too. Never in CI (`CI` set), where nobody edits
/// and every hit counts.
pub fn needs_state(
    store: &Store,
    roots: &Roots,
    invocation: &Invocation,
    pre_key: &str,
) -> Option<String> {
    let dir = invocation.incremental.as_deref()?;
    if std::env::var_os("CI").is_some() {
        return None;
    }
    let dir = roots.resolve(dir);
    // The unit's own directory when a compile of it was seen (a check
    // and a build of one crate, or its lib and bin, each have one),
    // else any of the crate's.
    let has_session = match store.index.incremental_dir(pre_key).ok().flatten() {
        Some(name) => dir.join(name).is_dir(),
        None => {
            let prefix = format!("{}-", invocation.crate_name);
            std::fs::read_dir(&dir).is_ok_and(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            })
        }
    };
    if has_session {
        return None;
    }
    let since = crate::store::now().saturating_sub(HOT_WINDOW_SECS);
    let recent = store
        .index
        .candidates(pre_key)
        .ok()?
        .iter()
        .filter(|m| m.created >= since)
        .count();
    (recent >= HOT_ENTRIES).then(|| {
        format!(
            "compiled for rustc's incremental state: {recent} versions in the last {}h and no session in {}",
            HOT_WINDOW_SECS / 3600,
            dir.display()
        )
    })
}

/// After a compile: remembers which `<crate>-<id>` directory of the
/// incremental directory rustc just wrote a session into (the one
/// modified since `since`), for [`needs_state`].
pub fn remember_dir(
    store: &Store,
    roots: &Roots,
    invocation: &Invocation,
    pre_key: &str,
    since: SystemTime,
) {
    let Some(dir) = invocation.incremental.as_deref() else {
        return;
    };
    let prefix = format!("{}-", invocation.crate_name);
    let Ok(entries) = std::fs::read_dir(roots.resolve(dir)) else {
        return;
    };
    let written: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since)
        })
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    if let [only] = written.as_slice() {
        let _ = store.index.remember_incremental_dir(pre_key, only);
    }
}
