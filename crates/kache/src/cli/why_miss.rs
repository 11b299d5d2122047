//! `kache why-miss <crate>`: compares the crate's newest entry with the one
//! before it and names the key components that changed.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Result;
use kache_core::meta::EntryMeta;

use crate::config::Config;
use crate::wrapper::RUN_DECLARED;

#[derive(clap::Args)]
pub struct Args {
    /// The crate name as cargo passes it (`--crate-name`, underscores), or
    /// `<package>:build-script-run` for a build script's runs.
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
    let (new_declared, new_env): (Vec<_>, Vec<_>) = newer
        .env_deps
        .iter()
        .partition(|(name, _)| name.starts_with(RUN_DECLARED));
    let old_env: BTreeMap<&String, &Option<String>> =
        older.env_deps.iter().map(|(n, v)| (n, v)).collect();
    for (name, value) in new_env {
        if old_env.get(name) != Some(&value) {
            reasons.push(format!("env!: {name} changed"));
        }
    }
    // A build-script run's declarations (`file <path>=<state>`, `env
    // <name>=<digest>`, `env <name>!` when unset, `package <state>`),
    // matched by what they name.
    let declared = |meta: &EntryMeta| -> BTreeMap<String, String> {
        meta.env_deps
            .iter()
            .filter(|(name, _)| name.starts_with(RUN_DECLARED))
            .filter_map(|(_, line)| line.as_deref())
            .map(|line| {
                let (subject, state) = if let Some(unset) = line.strip_suffix('!') {
                    (unset, "unset")
                } else if let Some(pair) = line.split_once('=') {
                    pair
                } else {
                    line.split_once(' ').unwrap_or((line, ""))
                };
                (subject.to_string(), state.to_string())
            })
            .collect()
    };
    if !new_declared.is_empty() {
        let (new, old) = (declared(newer), declared(older));
        for (subject, state) in &new {
            match old.get(subject) {
                None => reasons.push(format!("declared: {subject} is new")),
                Some(before) if before != state => {
                    reasons.push(format!("declared: {subject} changed"))
                }
                _ => {}
            }
        }
        for subject in old.keys().filter(|s| !new.contains_key(*s)) {
            reasons.push(format!("declared: {subject} is no longer declared"));
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
