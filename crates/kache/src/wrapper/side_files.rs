//! Files a compile wrote into its output directory besides the outputs
//! rustc's table names: split debuginfo (`.dwo`, `.dwp`), which kache
//! stores with the entry, and anything else named after the unit (Windows
//! import libraries and `.pdb`, wasm side files, a `.dSYM` directory), which
//! makes the compile unstorable. Which is which is decided by
//! `Invocation::side_outputs`; this module only lists the directory.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use kache_core::args::{FileNames, Invocation, Output};

/// How far before the compile's start a file's change time may lie and
/// still count as written by it: file timestamps come from a coarse clock.
/// Counting a file too many only ever refuses to store (or stores a `.dwo`
/// of the same unit written moments before).
const SLACK: Duration = Duration::from_secs(1);

/// The extra outputs of the compile that started at `since` and wrote
/// `outputs` into `out_dir`; `Err` when it also wrote a file named after
/// the unit that kache does not know (the entry would miss it).
pub fn find(
    out_dir: &Path,
    invocation: &Invocation,
    outputs: &[Output],
    names: &FileNames,
    since: SystemTime,
) -> Result<Vec<Output>> {
    let stem = invocation.stem();
    let since_ns = since
        .checked_sub(SLACK)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128);
    let mut written = Vec::new();
    let listing =
        std::fs::read_dir(out_dir).with_context(|| format!("listing {}", out_dir.display()))?;
    for entry in listing {
        let entry = entry.with_context(|| format!("listing {}", out_dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        // Cheap filter before a stat: only names that contain the stem.
        if !name.contains(stem.as_str()) {
            continue;
        }
        let meta = entry
            .metadata()
            .with_context(|| format!("reading {name} in {}", out_dir.display()))?;
        // A hard link (rustc links `.dwo` files from the incremental
        // directory) changes the ctime, not the mtime.
        let changed = [
            meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        ];
        if changed.iter().any(|t| *t >= since_ns) {
            written.push((name.to_string(), meta.file_type().is_file()));
        }
    }
    invocation
        .side_outputs(outputs, &written, names)
        .map_err(anyhow::Error::msg)
}
