//! `kache list`: stored entries, optionally of one crate.

use std::process::ExitCode;

use anyhow::Result;
use kache_core::size::format_size;

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// Only entries of this crate.
    crate_name: Option<String>,
    /// Sort order.
    #[arg(long, value_enum, default_value_t = Sort::Name)]
    sort: Sort,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Sort {
    Name,
    Size,
    Hits,
    Age,
}

pub fn run(config: &Config, args: Args) -> Result<ExitCode> {
    let store = super::open_store(config)?;
    let mut rows = store.index.rows()?;
    if let Some(name) = &args.crate_name {
        rows.retain(|r| &r.crate_name == name);
    }
    match args.sort {
        Sort::Name => rows.sort_by(|a, b| {
            a.crate_name
                .cmp(&b.crate_name)
                .then(b.created.cmp(&a.created))
        }),
        Sort::Size => rows.sort_by_key(|r| std::cmp::Reverse(r.size)),
        Sort::Hits => rows.sort_by_key(|r| std::cmp::Reverse(r.hits)),
        Sort::Age => rows.sort_by_key(|r| std::cmp::Reverse(r.created)),
    }
    println!(
        "{:<32} {:<16} {:>10} {:>6} {:>6} {:>9}",
        "CRATE", "KEY", "SIZE", "HITS", "AGE", "COMPILE"
    );
    for row in &rows {
        println!(
            "{:<32} {:<16} {:>10} {:>6} {:>6} {:>9}",
            row.crate_name,
            &row.cache_key[..16.min(row.cache_key.len())],
            format_size(row.size),
            row.hits,
            super::age(row.created),
            super::report::secs(row.compile_time_ms),
        );
    }
    if rows.is_empty() {
        println!("(no entries)");
    }
    Ok(ExitCode::SUCCESS)
}
