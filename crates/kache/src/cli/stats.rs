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
    let read = events::read_counted(&config.cache_dir, since);
    let summary = summarize(&read.events, 0);
    print!("{}", headline(&summary));
    print!("{}", passthrough_lines(&summary, STATS_REASONS));
    print!("{}", skipped_line(read.skipped));
    print!("{}", disabled_line(config));
    let store = super::open_store(config)?;
    let rows = store.index.rows()?;
    println!(
        "store: {} entries, {} on disk (limit {}) in {}",
        rows.len(),
        format_size(store.disk_usage()?),
        format_size(config.max_size),
        config.cache_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `skipped 2 malformed lines of events.jsonl`, or nothing.
pub fn skipped_line(skipped: usize) -> String {
    match skipped {
        0 => String::new(),
        1 => "skipped 1 malformed line of events.jsonl\n".to_string(),
        n => format!("skipped {n} malformed lines of events.jsonl\n"),
    }
}

/// The last "cache disabled" notice of a build, while no entry was stored
/// since, or nothing.
pub fn disabled_line(config: &Config) -> String {
    match crate::store::last_disabled(&config.cache_dir) {
        Some(notice) => format!(
            "cache disabled in a build {} ago: {}\n",
            super::age(notice.at_ms / 1000),
            notice.reason
        ),
        None => String::new(),
    }
}
