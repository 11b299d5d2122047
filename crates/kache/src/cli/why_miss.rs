//! `kache why-miss <crate>`: compares the crate's newest entry with the one
//! before it and names the key components that changed.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Result;
use kache_core::meta::EntryMeta;

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// The crate name as cargo passes it (`--crate-name`, underscores).
    crate_name: String,
}

/// What differs between two entries of one crate, one line per difference.
pub fn explain(newer: &EntryMeta, older: &EntryMeta) -> Vec<String> {
    let mut reasons = Vec::new();
    let names: std::collections::BTreeSet<&String> = newer
        .components
        .keys()
        .chain(older.components.keys())
        .collect();
    for name in names {
        if newer.components.get(name) != older.components.get(name) {
            reasons.push(format!("{name}: changed"));
        }
    }
    let old_inputs: BTreeMap<&str, &str> = older
        .inputs
        .iter()
        .map(|i| (i.path.as_str(), i.hash.as_str()))
        .collect();
    let new_inputs: BTreeMap<&str, &str> = newer
        .inputs
        .iter()
        .map(|i| (i.path.as_str(), i.hash.as_str()))
        .collect();
    for (path, hash) in &new_inputs {
        match old_inputs.get(path) {
            None => reasons.push(format!("source: {path} is new")),
            Some(old) if old != hash => reasons.push(format!("source: {path} changed")),
            _ => {}
        }
    }
    for path in old_inputs.keys().filter(|p| !new_inputs.contains_key(*p)) {
        reasons.push(format!("source: {path} is no longer read"));
    }
    let old_env: BTreeMap<&String, &Option<String>> =
        older.env_deps.iter().map(|(n, v)| (n, v)).collect();
    for (name, value) in &newer.env_deps {
        if old_env.get(name) != Some(&value) {
            reasons.push(format!("env!: {name} changed"));
        }
    }
    reasons
}

pub fn run(config: &Config, args: Args) -> Result<ExitCode> {
    let store = super::open_store(config)?;
    let entries = store.index.metas_for_crate(&args.crate_name)?;
    let Some(newest) = entries.first() else {
        println!(
            "no entries for crate {:?} (names use underscores, as in `kache list`)",
            args.crate_name
        );
        return Ok(ExitCode::FAILURE);
    };
    // Compare with the newest earlier entry of the same kind of output.
    let previous = entries[1..]
        .iter()
        .find(|e| e.crate_types == newest.crate_types && e.target == newest.target)
        .or_else(|| entries.get(1));
    let Some(previous) = previous else {
        if let Some(why) = &newest.unnormalised {
            println!(
                "{}: the target directory was not recognised: {why}",
                args.crate_name
            );
        }
        println!(
            "{}: one entry only; its first build was a miss because nothing was stored yet",
            args.crate_name
        );
        return Ok(ExitCode::SUCCESS);
    };
    let reasons = explain(newest, previous);
    println!(
        "{}: newest entry {} differs from {} in:",
        args.crate_name,
        &newest.cache_key[..16],
        &previous.cache_key[..16]
    );
    if reasons.is_empty() {
        println!("  nothing kache can name (same inputs; the older entry may have been evicted)");
    }
    for reason in reasons {
        println!("  {reason}");
    }
    if let Some(why) = &newest.unnormalised {
        println!("  note: the target directory was not recognised: {why}");
    }
    Ok(ExitCode::SUCCESS)
}
