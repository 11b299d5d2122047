//! `kache doctor`: is kache wired into cargo, and is the store sound?
//!
//! `--verify` checks that every referenced blob exists with its size and
//! bytes (every blob is re-hashed: a size or timestamp check cannot see bit
//! rot) and finds orphans; `--quick` skips the re-hash; `--repair` removes
//! entries with a bad blob, the bad blobs themselves, and orphans.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use anyhow::Result;
use kache_core::size::format_size;

use crate::config::Config;
use crate::store::BlobCheck;

#[derive(clap::Args)]
pub struct Args {
    /// Check the store's blobs (every byte re-hashed) and entries.
    #[arg(long)]
    verify: bool,
    /// Kept for scripts: --verify always re-hashes now (implies --verify).
    #[arg(long, hide = true)]
    checksums: bool,
    /// With --verify: only check that blobs exist with their sizes.
    #[arg(long)]
    quick: bool,
    /// Delete what is broken (implies --verify).
    #[arg(long)]
    repair: bool,
}

pub fn run(config: &Config, args: Args) -> Result<ExitCode> {
    let mut problems = 0;
    match wrapper_status() {
        Ok(line) => println!("ok   {line}"),
        Err(line) => {
            println!("warn {line}");
        }
    }
    if let Some(source) = &config.source {
        println!("ok   config file {}", source.display());
    }
    match &config.remote {
        Some(remote) => println!(
            "ok   remote {} (zstd level {}{})",
            remote.describe(),
            config.compression_level,
            if config.local_only {
                "; KACHE_LOCAL_ONLY set, unused"
            } else {
                ""
            }
        ),
        None => println!("ok   no remote configured: local cache only"),
    }
    if let Some(endpoint) = &config.planner.endpoint {
        println!(
            "ok   planner {endpoint} (timeout {} ms, {})",
            config.planner.timeout_ms,
            if config.planner.token.is_some() {
                "token set"
            } else {
                "anonymous"
            }
        );
    }
    let mut store = super::open_store(config)?;
    let rows = store.index.rows()?;
    println!(
        "ok   store {}: {} entries, {} of blobs",
        config.cache_dir.display(),
        rows.len(),
        format_size(store.disk_usage()?)
    );
    if !(args.verify || args.checksums || args.repair) {
        return Ok(ExitCode::SUCCESS);
    }

    let refs = store.index.blob_refs()?;
    let mut checked: BTreeMap<String, BlobCheck> = BTreeMap::new();
    let mut broken_entries = BTreeSet::new();
    for (hash, size, key) in &refs {
        let result = checked
            .entry(hash.clone())
            .or_insert_with(|| store.check_blob(hash, *size, !args.quick))
            .clone();
        if result != BlobCheck::Ok {
            broken_entries.insert(key.clone());
        }
    }
    let bad_blobs: Vec<(&String, &BlobCheck)> = checked
        .iter()
        .filter(|(_, c)| **c != BlobCheck::Ok)
        .collect();
    for (hash, check) in &bad_blobs {
        let what = match check {
            BlobCheck::Missing => "missing".to_string(),
            BlobCheck::WrongSize { actual } => format!("has {actual} bytes, expected another size"),
            BlobCheck::WrongHash { actual } => {
                format!("is corrupt: contents hash to {}", &actual[..16])
            }
            BlobCheck::Ok => unreachable!("filtered"),
        };
        println!("bad  blob {hash} {what}");
        problems += 1;
    }
    let referenced: BTreeSet<&String> = refs.iter().map(|(h, _, _)| h).collect();
    let on_disk = store.list_blobs()?;
    let orphans: Vec<_> = on_disk
        .iter()
        .filter(|b| b.temp || !referenced.contains(&b.hash))
        .collect();
    if !orphans.is_empty() {
        println!(
            "warn {} orphan blob files ({})",
            orphans.len(),
            format_size(orphans.iter().map(|b| b.size).sum())
        );
    }
    let orphan_dirs = store.orphan_entry_dirs()?;
    if !orphan_dirs.is_empty() {
        println!(
            "warn {} entry directories without an index row",
            orphan_dirs.len()
        );
    }
    if !broken_entries.is_empty() {
        println!("bad  {} entries depend on a bad blob", broken_entries.len());
    }

    if args.repair {
        let keys: Vec<String> = broken_entries.into_iter().collect();
        let removed = store.remove_entries(&keys)?;
        for (hash, _) in &bad_blobs {
            store.delete_blob(hash)?;
        }
        let (files, bytes) = store.remove_unused_blobs()?;
        for dir in orphan_dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        store.index.clear_hash_cache()?;
        println!(
            "repaired: removed {removed} entries, {} bad blobs, {files} unused blob files ({})",
            bad_blobs.len(),
            format_size(bytes)
        );
        return Ok(ExitCode::SUCCESS);
    }
    if problems > 0 {
        println!("{problems} problems found; run `kache doctor --repair` to remove them");
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "ok   every referenced blob is present{}",
        if args.quick { "" } else { " and intact" }
    );
    Ok(ExitCode::SUCCESS)
}

/// Whether cargo will call kache: `RUSTC_WRAPPER`, else the cargo config.
fn wrapper_status() -> Result<String, String> {
    if let Ok(wrapper) = std::env::var("RUSTC_WRAPPER")
        && !wrapper.is_empty()
    {
        return if wrapper.contains("kache") {
            Ok(format!("RUSTC_WRAPPER={wrapper}"))
        } else {
            Err(format!("RUSTC_WRAPPER={wrapper} is not kache"))
        };
    }
    let path = super::init::cargo_config_path().map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    match super::init::configured_wrapper(&text) {
        Ok(Some(w)) if w.contains("kache") => Ok(format!("cargo rustc-wrapper = {w}")),
        Ok(Some(w)) => Err(format!("cargo rustc-wrapper is {w}, not kache")),
        _ => Err(format!(
            "kache is not cargo's rustc-wrapper (run `kache init`; {})",
            path.display()
        )),
    }
}
