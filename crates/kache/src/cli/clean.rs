//! `kache clean`: finds cargo `target/` folders under a directory, shows
//! what each holds and what share of it the cache keeps anyway, and deletes
//! the ones chosen.
//!
//! Only target folders are ever deleted: never the store, never the remote.
//! A folder is a target folder when it is named `target` and cargo marked it
//! (`CACHEDIR.TAG` or `.rustc_info.json`). The search skips hidden folders
//! and never descends into a target folder.

use std::collections::HashSet;
use std::fs;
use std::io::{self, BufRead, IsTerminal, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use kache_core::size::format_size;

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// Where to look (default: the current directory).
    path: Option<PathBuf>,
    /// Show what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Delete every folder found without asking (for scripts).
    #[arg(short = 'y', long)]
    yes: bool,
}

/// One target folder and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetDir {
    pub path: PathBuf,
    pub bytes: u64,
    /// Bytes of files that are hardlinks of store blobs: deleting them frees
    /// nothing the cache would not keep, and a warm build restores them.
    pub cached_bytes: u64,
    /// `debug`, `release`, `x86_64-unknown-linux-musl/release`, ...
    pub profiles: Vec<String>,
}

pub fn run(config: &Config, args: Args) -> Result<ExitCode> {
    let root = match args.path {
        Some(path) => path,
        None => std::env::current_dir().context("reading the current directory")?,
    };
    let blobs = store_inodes(&config.cache_dir.join("store").join("blobs"));
    let found = find_targets(&root)?
        .into_iter()
        .map(|path| measure(path, &blobs))
        .collect::<Result<Vec<_>>>()?;
    if found.is_empty() {
        println!("no target folders under {}", root.display());
        return Ok(ExitCode::SUCCESS);
    }
    print_table(&root, &found);
    if args.dry_run {
        println!("dry run: nothing deleted");
        return Ok(ExitCode::SUCCESS);
    }
    let chosen: Vec<&TargetDir> = if args.yes {
        found.iter().collect()
    } else if io::stdin().is_terminal() {
        select(&found)?
    } else {
        anyhow::bail!("not a terminal: pass -y to delete every folder listed, or --dry-run");
    };
    let mut freed = 0;
    for dir in &chosen {
        fs::remove_dir_all(&dir.path)
            .with_context(|| format!("deleting {}", dir.path.display()))?;
        println!("deleted {}", dir.path.display());
        freed += dir.bytes;
    }
    println!(
        "freed {} in {} folder{}",
        format_size(freed),
        chosen.len(),
        if chosen.len() == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

/// Target folders under `root`, sorted by path.
pub fn find_targets(root: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            // An unreadable folder is skipped, not fatal.
            Err(_) if dir != root => continue,
            Err(err) => return Err(err).with_context(|| format!("reading {}", dir.display())),
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // Symlinks are not followed: they could leave `root`.
            if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = entry.path();
            if name == "target" {
                if is_cargo_target(&path) {
                    found.push(path);
                }
                continue;
            }
            stack.push(path);
        }
    }
    found.sort();
    Ok(found)
}

fn is_cargo_target(path: &Path) -> bool {
    path.join("CACHEDIR.TAG").is_file() || path.join(".rustc_info.json").is_file()
}

/// The (device, inode) of every store blob; empty when there is no store.
pub fn store_inodes(blobs: &Path) -> HashSet<(u64, u64)> {
    let mut inodes = HashSet::new();
    for shard in fs::read_dir(blobs).into_iter().flatten().flatten() {
        for blob in fs::read_dir(shard.path()).into_iter().flatten().flatten() {
            if let Ok(meta) = blob.metadata() {
                inodes.insert((meta.dev(), meta.ino()));
            }
        }
    }
    inodes
}

pub fn measure(path: PathBuf, blobs: &HashSet<(u64, u64)>) -> Result<TargetDir> {
    let (mut bytes, mut cached_bytes) = (0, 0);
    let mut stack = vec![path.clone()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                bytes += meta.len();
                if meta.nlink() > 1 && blobs.contains(&(meta.dev(), meta.ino())) {
                    cached_bytes += meta.len();
                }
            }
        }
    }
    let profiles = profiles(&path);
    Ok(TargetDir {
        path,
        bytes,
        cached_bytes,
        profiles,
    })
}

/// Profile folders (those cargo keeps fingerprints in), one level of target
/// triple deep.
fn profiles(target: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let children = |dir: &Path| -> Vec<(String, PathBuf)> {
        let mut list: Vec<_> = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect();
        list.sort();
        list
    };
    for (name, path) in children(target) {
        if path.join(".fingerprint").is_dir() {
            found.push(name);
            continue;
        }
        for (inner, inner_path) in children(&path) {
            if inner_path.join(".fingerprint").is_dir() {
                found.push(format!("{name}/{inner}"));
            }
        }
    }
    found
}

fn print_table(root: &Path, found: &[TargetDir]) {
    println!(
        "{:>3}  {:>10}  {:>7}  {:<24}  PATH",
        "#", "SIZE", "CACHED", "PROFILES"
    );
    for (i, dir) in found.iter().enumerate() {
        let share = dir.cached_bytes as f64 * 100.0 / dir.bytes.max(1) as f64;
        let shown = dir.path.strip_prefix(root).unwrap_or(&dir.path);
        println!(
            "{:>3}  {:>10}  {:>6.0}%  {:<24}  {}",
            i + 1,
            format_size(dir.bytes),
            share,
            if dir.profiles.is_empty() {
                "-".to_string()
            } else {
                dir.profiles.join(",")
            },
            shown.display()
        );
    }
    let total: u64 = found.iter().map(|d| d.bytes).sum();
    let cached: u64 = found.iter().map(|d| d.cached_bytes).sum();
    println!(
        "{} folders, {} in all; {} of it is hardlinked from the cache (a warm build restores it)",
        found.len(),
        format_size(total),
        format_size(cached)
    );
}

/// Asks which folders to delete: numbers and ranges (`1 3-5`), `a` for all,
/// an empty line for none.
fn select(found: &[TargetDir]) -> Result<Vec<&TargetDir>> {
    print!("delete which? numbers like 1 3-5, a for all, Enter for none: ");
    io::stdout().flush()?;
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    let picked = parse_selection(line.trim(), found.len())?;
    Ok(picked.into_iter().map(|i| &found[i]).collect())
}

/// Zero-based indices of a selection like `1 3-5` or `a`, in order, each once.
pub fn parse_selection(text: &str, count: usize) -> Result<Vec<usize>> {
    if text.eq_ignore_ascii_case("a") || text.eq_ignore_ascii_case("all") {
        return Ok((0..count).collect());
    }
    let mut picked = Vec::new();
    for part in text.split([' ', ',']).filter(|p| !p.is_empty()) {
        let (from, to) = part.split_once('-').unwrap_or((part, part));
        let number = |n: &str| -> Result<usize> {
            let n: usize = n
                .parse()
                .with_context(|| format!("{part:?} is not a number or a range like 3-5"))?;
            anyhow::ensure!((1..=count).contains(&n), "{n} is not in 1..={count}");
            Ok(n - 1)
        };
        for i in number(from)?..=number(to)? {
            if !picked.contains(&i) {
                picked.push(i);
            }
        }
    }
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_name_folders_by_number_and_range() {
        assert_eq!(parse_selection("a", 3).unwrap(), [0, 1, 2]);
        assert_eq!(parse_selection("3 1-2 1", 3).unwrap(), [2, 0, 1]);
        assert!(parse_selection("", 3).unwrap().is_empty());
        assert!(parse_selection("4", 3).is_err());
        assert!(parse_selection("x", 3).is_err());
    }

    #[test]
    fn only_marked_target_folders_are_found_and_never_searched_inside() {
        let root = tempfile::tempdir().unwrap();
        let make = |rel: &str, marker: Option<&str>| {
            let dir = root.path().join(rel);
            fs::create_dir_all(dir.join("debug/.fingerprint")).unwrap();
            if let Some(marker) = marker {
                fs::write(dir.join(marker), "").unwrap();
            }
        };
        make("a/target", Some("CACHEDIR.TAG"));
        make("b/c/target", Some(".rustc_info.json"));
        make("a/target/nested/target", Some("CACHEDIR.TAG"));
        make(".hidden/target", Some("CACHEDIR.TAG"));
        make("d/target", None);
        let found = find_targets(root.path()).unwrap();
        let rel: Vec<_> = found
            .iter()
            .map(|p| p.strip_prefix(root.path()).unwrap().to_path_buf())
            .collect();
        assert_eq!(
            rel,
            [PathBuf::from("a/target"), PathBuf::from("b/c/target")]
        );
        assert_eq!(profiles(&found[0]), ["debug"]);
    }
}
