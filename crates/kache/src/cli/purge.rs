//! `kache purge`: removes every entry, or those of one crate.

use std::process::ExitCode;

use anyhow::Result;
use kache_core::size::format_size;

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// Only entries of this crate.
    #[arg(long)]
    crate_name: Option<String>,
}

pub fn run(config: &Config, args: Args) -> Result<ExitCode> {
    let mut store = super::open_store(config)?;
    let keys: Vec<String> = store
        .index
        .rows()?
        .into_iter()
        .filter(|r| args.crate_name.as_ref().is_none_or(|n| &r.crate_name == n))
        .map(|r| r.cache_key)
        .collect();
    let removed = store.remove_entries(&keys)?;
    let (_, bytes) = store.remove_unused_blobs()?;
    println!(
        "removed {removed} entries and {} of blobs",
        format_size(bytes)
    );
    Ok(ExitCode::SUCCESS)
}
