//! `kache stats`: hit rate, time saved and the size of the store.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use kache_core::size::format_size;

use super::report::{headline, passthrough_lines, summarize};
use crate::config::Config;
use crate::events;

#[derive(clap::Args)]
pub struct Args {
    /// Only events this recent (e.g. 1h, 7d); default: all.
    #[arg(long, value_parser = super::parse_age)]
    since: Option<Duration>,
}

/// How many passthrough reasons `stats` lists (`report --top` sets its own).
const STATS_REASONS: usize = 10;

pub fn run(config: &Config, args: Args) -> Result<ExitCode> {
    let since = args
        .since
        .map_or(0, |d| events::now_ms().saturating_sub(d.as_millis() as u64));
    let summary = summarize(&events::read(&config.cache_dir, since), 0);
    let store = super::open_store(config)?;
    let rows = store.index.rows()?;
    print!("{}", headline(&summary));
    print!("{}", passthrough_lines(&summary, STATS_REASONS));
    println!(
        "store: {} entries, {} on disk (limit {}) in {}",
        rows.len(),
        format_size(store.disk_usage()?),
        format_size(config.max_size),
        config.cache_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
