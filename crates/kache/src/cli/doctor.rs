//! `kache doctor`: is kache wired into cargo, and is the store sound?
//!
//! Always: whether the cache directory can work at all (a directory, that
//! can be written, with space), the last "cache disabled" notice of a
//! build, and SQLite's full check of the index: an index that fails it is
//! moved aside and rebuilt from the entries on disk, as the wrapper does.
//! `--verify` checks that every referenced blob exists with its size and
//! bytes (every blob is re-hashed: a size or timestamp check cannot see bit
//! rot), that every entry still has its `meta.json`, and finds orphans and
//! stale temp files; `--quick` skips the re-hash; `--repair` does what
//! `--verify` says it will: removes entries with a bad blob or without
//! `meta.json`, the bad blobs, unused blobs and stale temp files, and
//! indexes orphan entry directories again when they hold a whole entry
//! (else removes them).

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use anyhow::Result;
use kache_core::size::format_size;

use crate::config::Config;
use crate::store::{BlobCheck, Store};

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
    /// Fix what --verify finds (implies --verify, and re-hashes every blob).
    #[arg(long)]
    repair: bool,
}

/// Below this much free space on the cache's filesystem doctor warns.
const LOW_SPACE: u64 = 256 << 20;

/// What `--repair` says it will do, as `--verify` tells the user.
const REPAIR_SAYS: &str = "run `kache doctor --repair` to remove the entries with a bad blob or \
     without meta.json and the bad blobs";

/// The config files read, which file set each setting, and what a file
/// set that was not applied (a repository's file naming the remote).
fn config_lines(config: &Config) {
    for source in &config.sources {
        println!("ok   config file {}", source.display());
    }
    for (setting, file) in &config.origins {
        let wins = crate::config::env_name_of(setting)
            .filter(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
            .map(|name| format!(" ({name} in the environment wins)"))
            .unwrap_or_default();
        println!("ok   config {setting} set by {}{wins}", file.display());
    }
    for ignored in &config.ignored {
        println!("warn config {ignored}");
    }
}

pub fn run(config: &Config, args: Args) -> Result<ExitCode> {
    let mut problems = 0;
    match wrapper_status() {
        Ok(line) => println!("ok   {line}"),
        Err(line) => {
            println!("warn {line}");
        }
    }
    config_lines(config);
    match &config.remote {
        Some(remote) => {
            println!(
                "ok   remote {} (zstd level {}{})",
                remote.describe(),
                config.compression_level,
                if config.local_only {
                    "; KACHE_LOCAL_ONLY set, unused"
                } else {
                    ""
                }
            );
            trust_lines(&remote.trust);
        }
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
    if let Some(notice) = crate::store::last_disabled(&config.cache_dir) {
        println!(
            "warn cache disabled in a build {} ago: {}",
            super::age(notice.at_ms / 1000),
            notice.reason
        );
    }
    let mut store = match cache_usable(config).and_then(|()| super::open_store(config)) {
        Ok(store) => store,
        Err(err) => {
            let reason = crate::store::unusable(&config.cache_dir, &err)
                .unwrap_or_else(|| format!("{err:#}"));
            println!("bad  {reason}: builds run without the cache");
            return Ok(ExitCode::FAILURE);
        }
    };
    check_index(&mut store);
    for (path, size) in store.broken_indexes() {
        println!(
            "warn a damaged index was kept as {} ({}); delete it when it is no longer needed",
            path.display(),
            format_size(size)
        );
    }
    let rows = store.index.rows()?;
    println!(
        "ok   store {}: {} entries, {} of blobs",
        config.cache_dir.display(),
        rows.len(),
        format_size(store.disk_usage()?)
    );
    if let Some(free) = free_space(&config.cache_dir)
        && free < LOW_SPACE
    {
        println!(
            "warn only {} free on the filesystem of {}: stores fail when it is full",
            format_size(free),
            config.cache_dir.display()
        );
    }
    if !(args.verify || args.checksums || args.repair) {
        return Ok(ExitCode::SUCCESS);
    }

    // A repair re-hashes: it removes what a full verify would report.
    let checksum = !args.quick || args.repair;
    let refs = store.index.blob_refs()?;
    let mut checked: BTreeMap<String, BlobCheck> = BTreeMap::new();
    let mut broken_entries = BTreeSet::new();
    for (hash, size, key) in &refs {
        let result = checked
            .entry(hash.clone())
            .or_insert_with(|| store.check_blob(hash, *size, checksum))
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
    let without_meta = store.entries_without_meta()?;
    for row in &without_meta {
        println!(
            "bad  entry {} ({}) has no meta.json in the store",
            row.cache_key, row.crate_name
        );
        problems += 1;
    }
    let referenced: BTreeSet<&String> = refs.iter().map(|(h, _, _)| h).collect();
    let on_disk = store.list_blobs()?;
    let unused: Vec<_> = on_disk
        .iter()
        .filter(|b| !b.temp && !referenced.contains(&b.hash))
        .collect();
    if !unused.is_empty() {
        println!(
            "warn {} unused blob files ({})",
            unused.len(),
            format_size(unused.iter().map(|b| b.size).sum())
        );
    }
    let stale = store.stale_temps(false)?;
    if !stale.is_empty() {
        println!(
            "warn {} stale temp files ({}) left by interrupted writes",
            stale.len(),
            format_size(stale.iter().map(|t| t.size).sum())
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
        return repair(
            &mut store,
            broken_entries,
            &bad_blobs,
            &without_meta,
            orphan_dirs,
        );
    }
    if problems > 0 {
        println!("{problems} problems found; {REPAIR_SAYS}");
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "ok   every referenced blob is present{}",
        if args.quick { "" } else { " and intact" }
    );
    Ok(ExitCode::SUCCESS)
}

/// `--repair`: every fix `--verify` announced, in an order that loses
/// nothing (orphans are indexed again before unused blobs are removed).
fn repair(
    store: &mut Store,
    broken_entries: BTreeSet<String>,
    bad_blobs: &[(&String, &BlobCheck)],
    without_meta: &[crate::store::EntryRow],
    orphan_dirs: Vec<std::path::PathBuf>,
) -> Result<ExitCode> {
    let mut keys: Vec<String> = broken_entries.into_iter().collect();
    keys.extend(without_meta.iter().map(|row| row.cache_key.clone()));
    let removed = store.remove_entries(&keys)?;
    for (hash, _) in bad_blobs {
        store.delete_blob(hash)?;
    }
    let (mut adopted, mut dropped) = (0, 0);
    for dir in orphan_dirs {
        if store.adopt_or_remove(&dir)? {
            adopted += 1;
        } else {
            dropped += 1;
        }
    }
    let (files, bytes) = store.remove_unused_blobs()?;
    store.index.clear_hash_cache()?;
    println!(
        "repaired: removed {removed} entries, {} bad blobs, {files} unused blob and stale temp files ({}), {dropped} broken entry directories; indexed {adopted} entries again",
        bad_blobs.len(),
        format_size(bytes)
    );
    Ok(ExitCode::SUCCESS)
}

/// SQLite's full check of the index; one that fails it is rebuilt from the
/// entries on disk (the rebuild prints its line).
fn check_index(store: &mut Store) {
    let damage = match store.index.integrity() {
        Ok(Ok(())) => return,
        Ok(Err(problem)) => anyhow::anyhow!(problem),
        Err(err) => err,
    };
    if let Err(err) = store.rebuild_index(&damage) {
        println!("bad  the index is damaged ({damage:#}) and could not be rebuilt: {err:#}");
    }
}

/// Whether a store in the cache directory could write now: `Err` with the
/// cause when it is not a directory or cannot be written.
fn cache_usable(config: &Config) -> Result<()> {
    let dir = &config.cache_dir;
    if dir.exists() && !dir.is_dir() {
        anyhow::bail!("{} is not a directory", dir.display());
    }
    if dir.is_dir() {
        crate::store::probe_writable(dir)?;
    }
    Ok(())
}

/// Bytes free for us on the filesystem holding `dir`.
fn free_space(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `stat` a valid out
    // pointer for the duration of the call.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
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

/// What the remote's trust settings mean, a line each.
fn trust_lines(trust: &crate::trust::Trust) {
    if trust.trusted_keys.is_empty() {
        println!(
            "warn remote is unauthenticated: every entry in it is trusted (set KACHE_TRUSTED_KEYS to accept only signed entries; see kache keygen)"
        );
    } else {
        println!(
            "ok   remote entries are imported only when signed by one of {} trusted key(s)",
            trust.trusted_keys.len()
        );
    }
    match trust.signing_key() {
        Ok(Some(key)) => println!("ok   uploads are signed by {}", key.public()),
        Ok(None) if !trust.trusted_keys.is_empty() && trust.read_only.is_none() => println!(
            "warn uploads are not signed (no KACHE_SIGNING_KEY): readers that trust keys will refuse them"
        ),
        Ok(None) => {}
        Err(err) => println!("FAIL {err:#}"),
    }
    if let Some(why) = &trust.read_only {
        println!("ok   the remote is read-only for this run: {why}");
    }
}
