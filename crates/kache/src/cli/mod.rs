//! The command line: one file per command.

mod clean;
mod config_editor;
mod daemon;
mod doctor;
mod gc;
mod init;
mod keygen;
mod list;
mod monitor;
mod prefetch;
mod purge;
mod report;
mod save_manifest;
mod stats;
mod sync;
mod tui;
mod why_miss;
mod workspace;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::store::Store;

/// A build cache for Rust. Use it as cargo's RUSTC_WRAPPER (`kache init`).
#[derive(Parser)]
#[command(name = "kache", version, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Set kache as cargo's rustc-wrapper in ~/.cargo/config.toml.
    Init(init::Args),
    /// Hit rate, time saved and store size.
    Stats(stats::Args),
    /// List stored entries.
    List(list::Args),
    /// Explain why a crate missed: which key component changed.
    WhyMiss(why_miss::Args),
    /// A build report as text, JSON, Markdown or a GitHub step summary.
    Report(report::Args),
    /// Remove old entries, then least recently used ones down to KACHE_MAX_SIZE.
    Gc(gc::Args),
    /// Remove every entry, or those of one crate.
    Purge(purge::Args),
    /// Find target/ folders under this directory and delete the ones chosen.
    Clean(clean::Args),
    /// A live view: the build as it happens, projects, store, transfers, passthroughs.
    Monitor(monitor::Args),
    /// Edit the config file in the terminal (works on a broken file too).
    Config(config_editor::Args),
    /// Check the setup and the store; optionally verify checksums and repair.
    Doctor(doctor::Args),
    /// Pull what this workspace needs from the remote, push what it built.
    Sync(sync::Args),
    /// The background daemon: status, or run|start|stop|restart|log|install|uninstall.
    Daemon(daemon::Args),
    /// Write this workspace's build manifest (and Cargo.lock shards) for the planner.
    SaveManifest(save_manifest::Args),
    /// Prefetch what this build will need (planner, else Cargo.lock) before cargo runs.
    Prefetch(prefetch::Args),
    /// Make a key pair that signs what this machine uploads (KACHE_SIGNING_KEY).
    Keygen(keygen::Args),
}

/// Whether `name` is a kache subcommand (or `help`): such an `argv[1]` is
/// never taken for a program to run.
pub fn is_command(name: &str) -> bool {
    use clap::CommandFactory;
    name == "help" || Cli::command().find_subcommand(name).is_some()
}

/// Parses the command line and runs the command.
pub fn run() -> Result<ExitCode> {
    match Cli::parse().command {
        // The editor is how a broken config file gets fixed: it must not
        // need one that loads.
        Command::Config(args) => config_editor::run(args),
        // Needs no configuration either.
        Command::Keygen(args) => keygen::run(args),
        command => run_loaded(command, &Config::load()?),
    }
}

/// Runs a command that reads the configuration.
fn run_loaded(command: Command, config: &Config) -> Result<ExitCode> {
    match command {
        Command::Init(args) => init::run(config, args),
        Command::Stats(args) => stats::run(config, args),
        Command::List(args) => list::run(config, args),
        Command::WhyMiss(args) => why_miss::run(config, args),
        Command::Report(args) => report::run(config, args),
        Command::Gc(args) => gc::run(config, args),
        Command::Purge(args) => purge::run(config, args),
        Command::Clean(args) => clean::run(config, args),
        Command::Monitor(args) => monitor::run(config, args),
        Command::Config(args) => config_editor::run(args),
        Command::Doctor(args) => doctor::run(config, args),
        Command::Sync(args) => sync::run(config, args),
        Command::Daemon(args) => daemon::run(config, args),
        Command::SaveManifest(args) => save_manifest::run(config, args),
        Command::Prefetch(args) => prefetch::run(config, args),
        Command::Keygen(args) => keygen::run(args),
    }
}

/// Opens the store of `config`.
fn open_store(config: &Config) -> Result<Store> {
    Store::open(&config.cache_dir)
        .with_context(|| format!("opening the cache in {}", config.cache_dir.display()))
}

/// The remote the remote commands use: an error naming what to set when
/// none is configured, or when `KACHE_LOCAL_ONLY` turns it off.
fn remote_of(config: &Config) -> Result<&crate::config::RemoteConfig> {
    let Some(remote) = &config.remote else {
        anyhow::bail!(
            "no remote is configured: set KACHE_S3_BUCKET (and KACHE_S3_ENDPOINT), or [cache.remote] in {}",
            config
                .source
                .as_deref()
                .map_or_else(|| "a config file".to_string(), |p| p.display().to_string())
        );
    };
    if config.local_only {
        anyhow::bail!("KACHE_LOCAL_ONLY is set: every remote path is off");
    }
    Ok(remote)
}

/// The runtime transfers run on (two workers: this machine's kind of CI
/// runner has two cores, and transfers wait on the network, not the CPU).
fn transfer_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the transfer runtime")
}

/// Parses `7d`, `12h`, `30m` and other humantime durations.
fn parse_age(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 7d or 12h: {e}"))
}

/// `3m ago`-style ages from a Unix time in seconds.
fn age(unix_secs: u64) -> String {
    let secs = crate::store::now().saturating_sub(unix_secs);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

/// `rustc -vV` as the build sees it (run in the workspace, so a
/// `rust-toolchain` file counts), stdout then stderr like the wrapper's.
pub fn rustc_vv(dir: &std::path::Path) -> Result<String> {
    let output =
        std::process::Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
            .arg("-vV")
            .current_dir(dir)
            .output()
            .context("running rustc -vV")?;
    if !output.status.success() {
        anyhow::bail!("rustc -vV failed with {}", output.status);
    }
    let mut text = String::from_utf8_lossy(&output.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Ok(text)
}
