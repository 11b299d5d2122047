//! `kache sync`: pull what this workspace's `Cargo.lock` needs from the
//! remote, push what this workspace built. Works without the daemon.
//!
//! Pull takes every entry of the crates in `Cargo.lock` (members and
//! dependencies, build scripts and C units included); push takes every
//! entry the event log shows was compiled or restored into this workspace's
//! target directory (all its units, not only its members). `--all` drops
//! both filters. Any failed transfer makes the exit code non-zero.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use kache_core::size::format_size;

use super::workspace::Workspace;
use crate::config::Config;
use crate::remote::{self, Pulled, Pushed, Remote};

#[derive(clap::Args)]
pub struct Args {
    /// Download the entries this workspace's Cargo.lock needs.
    #[arg(long)]
    pull: bool,
    /// Upload the entries this workspace built.
    #[arg(long)]
    push: bool,
    /// No filter: every entry of the bucket (pull) or of the local store (push).
    #[arg(long)]
    all: bool,
    /// Print what would move; move nothing.
    #[arg(long)]
    dry_run: bool,
    /// The workspace's Cargo.toml (default: cargo's search from the current directory).
    #[arg(long, value_name = "PATH")]
    manifest_path: Option<PathBuf>,
}

/// Totals of one direction.
#[derive(Default)]
struct Tally {
    moved: u64,
    present: u64,
    failed: Vec<String>,
    pack_bytes: u64,
    original_bytes: u64,
}

pub fn run(config: &Config, args: Args) -> Result<ExitCode> {
    let remote_config = super::remote_of(config)?;
    let (pull, push) = match (args.pull, args.push) {
        (false, false) => (true, true),
        other => other,
    };
    let workspace = if args.all {
        None
    } else {
        Some(Workspace::load(args.manifest_path.as_deref())?)
    };
    let remote = Remote::open(remote_config, config.compression_level, &config.cache_dir)
        .with_context(|| format!("opening {}", remote_config.describe()))?;
    let store = super::open_store(config)?;
    let runtime = super::transfer_runtime()?;
    let started = Instant::now();
    let mut failed = false;

    if pull {
        let listed = runtime
            .block_on(remote.list_entries(|c| workspace.as_ref().is_none_or(|w| w.wants(c))));
        let listed = listed.map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut todo = Vec::new();
        for (crate_name, key) in listed {
            if store.index.meta(&key)?.is_none() {
                todo.push((crate_name, key));
            }
        }
        if args.dry_run {
            for (crate_name, key) in &todo {
                println!("would pull {crate_name} {}", &key[..16]);
            }
            println!(
                "would pull {} entries from {}",
                todo.len(),
                remote.location()
            );
        } else {
            let tally = runtime.block_on(transfer(&remote, todo, "pull", |remote, (c, k)| {
                let remote = remote.clone();
                async move {
                    match remote.pull(&c, &k, None).await? {
                        Pulled::Imported {
                            pack_bytes,
                            original_bytes,
                        } => Ok(Some((pack_bytes, original_bytes))),
                        Pulled::Present | Pulled::Missing | Pulled::Refused(_) => Ok(None),
                    }
                }
            }))?;
            failed |= print_tally("pulled", &tally, remote.location());
        }
    }

    if push && let Some(why) = remote.read_only() {
        println!("kache: the remote is read-only for this run ({why}): nothing pushed");
    } else if push {
        let keys: Vec<String> = match &workspace {
            Some(workspace) => workspace
                .built_keys(&config.cache_dir)
                .into_iter()
                .filter(|k| store.index.meta(k).is_ok_and(|m| m.is_some()))
                .collect(),
            None => store
                .index
                .rows()?
                .into_iter()
                .map(|r| r.cache_key)
                .collect(),
        };
        // Fails here, once, on a wrong secret or an unreachable bucket.
        runtime
            .block_on(remote.list_entries(|_| false))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if args.dry_run {
            println!(
                "would push up to {} entries to {} (those it does not hold yet)",
                keys.len(),
                remote.location()
            );
        } else {
            let items: Vec<(String, String)> =
                keys.into_iter().map(|k| (String::new(), k)).collect();
            let tally = runtime.block_on(transfer(&remote, items, "push", |remote, (_, k)| {
                let remote = remote.clone();
                async move {
                    match remote.push(&k).await? {
                        Pushed::Uploaded {
                            pack_bytes,
                            original_bytes,
                        } => Ok(Some((pack_bytes, original_bytes))),
                        Pushed::Present => Ok(None),
                    }
                }
            }))?;
            failed |= print_tally("pushed", &tally, remote.location());
        }
    }
    if !args.dry_run {
        println!("done in {:.1}s", started.elapsed().as_secs_f64());
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs `one` over `items`, `remote.concurrency` at a time, with a progress
/// bar on a terminal and a line per transfer otherwise. A denial (wrong
/// secret, missing permission) ends the whole run with one line.
async fn transfer<F, Fut>(
    remote: &Remote,
    items: Vec<(String, String)>,
    verb: &str,
    one: F,
) -> Result<Tally>
where
    F: Fn(&Remote, (String, String)) -> Fut,
    Fut: std::future::Future<Output = Result<Option<(u64, u64)>>>,
{
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(items.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(verb.to_string());
        Some(bar)
    } else {
        None
    };
    let mut tally = Tally::default();
    let mut results = futures::stream::iter(items.into_iter().map(|item| {
        let label = if item.0.is_empty() {
            item.1[..16].to_string()
        } else {
            format!("{} {}", item.0, &item.1[..16])
        };
        let fut = one(remote, item);
        async move { (label, fut.await) }
    }))
    .buffer_unordered(remote.concurrency);
    while let Some((label, result)) = results.next().await {
        match result {
            Ok(Some((pack, original))) => {
                tally.moved += 1;
                tally.pack_bytes += pack;
                tally.original_bytes += original;
                match &bar {
                    Some(bar) => bar.set_message(label),
                    None => println!("{verb} {label} ({})", format_size(pack)),
                }
            }
            Ok(None) => tally.present += 1,
            Err(err) => {
                if let Some(denied) = remote::denial(&err) {
                    if let Some(bar) = &bar {
                        bar.abandon();
                    }
                    bail!("{denied}");
                }
                tally.failed.push(format!("{label}: {err:#}"));
            }
        }
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(tally)
}

/// Prints one direction's summary; true when something failed.
fn print_tally(verb: &str, tally: &Tally, location: &str) -> bool {
    let ratio = if tally.pack_bytes > 0 {
        format!(
            ", compression {:.2}x",
            tally.original_bytes as f64 / tally.pack_bytes as f64
        )
    } else {
        String::new()
    };
    println!(
        "{verb} {} entries ({} packed from {}{ratio}), {} already there, {} failed ({location})",
        tally.moved,
        format_size(tally.pack_bytes),
        format_size(tally.original_bytes),
        tally.present,
        tally.failed.len(),
    );
    for failure in tally.failed.iter().take(10) {
        eprintln!("  failed: {failure}");
    }
    if tally.failed.len() > 10 {
        eprintln!("  … and {} more", tally.failed.len() - 10);
    }
    !tally.failed.is_empty()
}
