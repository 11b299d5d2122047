//! `kache gc`: drops entries older than `--max-age`, then the least recently
//! used ones until the blobs fit in `KACHE_MAX_SIZE`, then every blob no
//! entry uses.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use kache_core::size::format_size;

use crate::config::Config;
use crate::store::{Store, now};

#[derive(clap::Args)]
pub struct Args {
    /// Also drop entries not used for this long (e.g. 30d).
    #[arg(long, value_parser = super::parse_age)]
    max_age: Option<Duration>,
}

/// Events older than this are dropped from the log by a collection.
const EVENT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// Runs a collection; returns `(entries removed, bytes freed)`.
///
/// An entry not used for `max_age` or longer goes (`0s` drops every entry),
/// then the least recently used ones until the rest fits in `max_size`.
/// Index rows whose `meta.json` is gone, entry directories without a row,
/// unused blobs and stale temp files go too.
pub fn collect(
    store: &mut Store,
    max_size: u64,
    max_age: Option<Duration>,
) -> Result<(usize, u64)> {
    let before = store.disk_usage()?;
    let gone: Vec<String> = store
        .entries_without_meta()?
        .into_iter()
        .map(|row| row.cache_key)
        .collect();
    store.remove_entries(&gone)?;
    let mut rows = store.index.rows()?;
    rows.sort_by_key(|r| r.last_used);
    // Oldest first: the entries past --max-age are a prefix, and the least
    // recently used ones follow until the rest fits.
    let now = now();
    let mut total: u64 = rows.iter().map(|r| r.size).sum();
    let mut doomed = Vec::new();
    for row in &rows {
        let unused_for = now.saturating_sub(row.last_used);
        let too_old = max_age.is_some_and(|age| unused_for >= age.as_secs());
        if !too_old && total <= max_size {
            break;
        }
        doomed.push(row.cache_key.clone());
        total = total.saturating_sub(row.size);
    }
    let removed = store.remove_entries(&doomed)? + gone.len();
    for dir in store.orphan_entry_dirs()? {
        let _ = std::fs::remove_dir_all(dir);
    }
    store.remove_unused_blobs()?;
    let keep_events_ms = EVENT_RETENTION.as_millis() as u64;
    let _ = crate::events::truncate_before(
        store.root(),
        crate::events::now_ms().saturating_sub(keep_events_ms),
    );
    let after = store.disk_usage()?;
    Ok((removed, before.saturating_sub(after)))
}

pub fn run(config: &Config, args: Args) -> Result<ExitCode> {
    let mut store = super::open_store(config)?;
    let (removed, freed) = collect(&mut store, config.max_size, args.max_age)?;
    println!(
        "removed {removed} entries, freed {}; store now {} (limit {})",
        format_size(freed),
        format_size(store.disk_usage()?),
        format_size(config.max_size)
    );
    Ok(ExitCode::SUCCESS)
}
