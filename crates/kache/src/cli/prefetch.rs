//! `kache prefetch [--wait]`: what a build start does, run explicitly
//! before `cargo build` (a CI step): the daemon asks the planner when one is
//! configured, else prefetches by `Cargo.lock`. With `--wait` it returns
//! when the entries are in the local store and says what it fetched.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};

use super::workspace::Workspace;
use crate::config::Config;
use crate::daemon::client;
use crate::daemon::planner::PlannerSettings;
use crate::daemon::protocol::{RemoteSettings, Request, Response};

#[derive(clap::Args)]
pub struct Args {
    /// Wait until the entries are local, and print what was fetched.
    #[arg(long)]
    wait: bool,
    /// The namespace the planner plans for (default: KACHE_NAMESPACE).
    #[arg(long, env = "KACHE_NAMESPACE")]
    namespace: Option<String>,
    /// The workspace's Cargo.toml.
    #[arg(long, value_name = "PATH")]
    manifest_path: Option<PathBuf>,
    /// The build will be `--release`: the planner offers only artifacts of
    /// that profile (without it or `--profile`, the profile is unknown and
    /// nothing is filtered by identity).
    #[arg(long, conflicts_with = "profile")]
    release: bool,
    /// The cargo profile the build will use.
    #[arg(long)]
    profile: Option<String>,
    /// The target the build will compile for (default: the host).
    #[arg(long)]
    target: Option<String>,
}

/// The identity the build will have, when a profile was named.
fn identity(args: &Args, root: &std::path::Path) -> Option<kache_core::manifest::Identity> {
    let mut cargo: Vec<String> = vec!["build".into()];
    if args.release {
        cargo.push("--release".into());
    } else {
        cargo.extend(["--profile".to_string(), args.profile.clone()?]);
    }
    if let Some(target) = &args.target {
        cargo.extend(["--target".to_string(), target.clone()]);
    }
    let rustc_vv = super::rustc_vv(root).ok()?;
    kache_core::manifest::Identity::of_cargo(&cargo, &rustc_vv)
}

pub fn run(config: &Config, args: Args) -> Result<ExitCode> {
    let remote = super::remote_of(config)?;
    let workspace = Workspace::load(args.manifest_path.as_deref())?;
    client::start_and_wait(&config.cache_dir, Duration::from_secs(10))?;
    let root = workspace
        .lockfile
        .parent()
        .unwrap_or(std::path::Path::new("."));
    let identity = identity(&args, root);
    let request = Request::BuildStart {
        remote: RemoteSettings::new(remote, config.compression_level),
        cargo_pid: std::process::id(),
        lockfile: workspace.lockfile.display().to_string(),
        planner: PlannerSettings::from_config(&config.planner),
        namespace: args.namespace.filter(|n| !n.is_empty()),
        identity,
        wait: args.wait,
    };
    let deadline = if args.wait {
        Duration::from_secs(3600)
    } else {
        Duration::from_secs(5)
    };
    match client::request(&config.cache_dir, &request, deadline)? {
        Response::Prefetched { imported, plan } => {
            println!("prefetched {imported} entries (from {plan})");
            Ok(ExitCode::SUCCESS)
        }
        Response::Accepted => {
            println!("prefetch handed to the daemon (`kache daemon log` shows it)");
            Ok(ExitCode::SUCCESS)
        }
        Response::Refused { reason } => bail!("{reason}"),
        other => bail!("the daemon answered {other:?}"),
    }
}
