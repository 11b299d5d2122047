//! `kache daemon [run|start|stop|restart|log|install|uninstall]`; without
//! a subcommand, the status of the daemon of this cache directory.

use std::io::{BufRead, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::config::Config;
use crate::daemon::client;
use crate::daemon::protocol::{RemoteSettings, Request, Response};
use crate::daemon::server;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Run the daemon in the foreground (what the service manager runs).
    Run,
    /// Start it in the background; returns once its socket answers.
    Start,
    /// Finish queued uploads (at most --drain seconds), then stop it.
    Stop {
        #[arg(long, default_value_t = 30)]
        drain: u64,
    },
    /// Stop, then start.
    Restart,
    /// Follow the daemon's log.
    Log {
        /// Print what is there and exit instead of following.
        #[arg(long)]
        no_follow: bool,
    },
    /// Install a systemd user unit running `kache daemon run` (Restart=always).
    Install,
    /// Remove the systemd user unit.
    Uninstall,
}

pub fn run(config: &Config, args: Args) -> Result<ExitCode> {
    let dir = &config.cache_dir;
    match args.action {
        None => status(config),
        Some(Action::Run) => {
            crate::owner::private_dir(dir)?;
            rotate_log(dir);
            crate::logging::init_for_daemon(&client::log_path(dir))?;
            let seed = config
                .remote
                .as_ref()
                .filter(|_| !config.local_only)
                .map(|r| RemoteSettings::new(r, config.compression_level));
            server::run(dir.clone(), seed, config.daemon_idle_secs)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Action::Start) => {
            let status = client::start_and_wait(dir, Duration::from_secs(10))?;
            println!(
                "kache daemon running (pid {}, {})",
                status.pid, status.socket
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(Action::Stop { drain }) => stop(dir, drain),
        Some(Action::Restart) => {
            stop(dir, 30)?;
            let status = client::start_and_wait(dir, Duration::from_secs(10))?;
            println!(
                "kache daemon running (pid {}, {})",
                status.pid, status.socket
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(Action::Log { no_follow }) => follow_log(dir, !no_follow),
        Some(Action::Install) => install(dir),
        Some(Action::Uninstall) => uninstall(),
    }
}

fn status(config: &Config) -> Result<ExitCode> {
    let Some(status) = client::status(&config.cache_dir) else {
        println!(
            "no kache daemon runs for {} (it starts on demand when a remote is configured; `kache daemon start`)",
            config.cache_dir.display()
        );
        return Ok(ExitCode::FAILURE);
    };
    println!("kache daemon {} (pid {})", status.version, status.pid);
    println!("socket:   {}", status.socket);
    println!("uptime:   {}s", status.uptime_secs);
    println!("queued:   {} uploads", status.queued);
    println!(
        "served:   {} remote hits, {} prefetched, {} uploaded",
        status.remote_hits, status.prefetched, status.uploaded
    );
    if status.remotes.is_empty() {
        println!("remotes:  none used yet");
    }
    for remote in &status.remotes {
        println!("remote:   {remote}");
    }
    match &config.planner.endpoint {
        Some(endpoint) => println!("planner:  {endpoint}"),
        None => println!("planner:  none configured"),
    }
    Ok(ExitCode::SUCCESS)
}

fn stop(dir: &Path, drain: u64) -> Result<ExitCode> {
    crate::owner::check_socket(&client::socket_path(dir))?;
    let Some(status) = client::status(dir) else {
        println!("no kache daemon runs for {}", dir.display());
        return Ok(ExitCode::SUCCESS);
    };
    let deadline = Duration::from_secs(drain + 5);
    match client::request(
        dir,
        &Request::Shutdown {
            drain_ms: drain * 1000,
        },
        deadline,
    )? {
        Response::Accepted => {}
        other => bail!("the daemon answered {other:?}"),
    }
    // Wait for the process to go, so a restart never races the old one.
    for _ in 0..100 {
        if client::status(dir).is_none() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("kache daemon stopped (pid {})", status.pid);
    Ok(ExitCode::SUCCESS)
}

/// Keeps the log bounded: past 8 MiB it moves to `daemon.log.1`.
fn rotate_log(dir: &Path) {
    let log = client::log_path(dir);
    if std::fs::metadata(&log).is_ok_and(|m| m.len() > 8 << 20) {
        let _ = std::fs::rename(&log, log.with_extension("log.1"));
    }
}

fn follow_log(dir: &Path, follow: bool) -> Result<ExitCode> {
    let path = client::log_path(dir);
    let file = std::fs::File::open(&path)
        .with_context(|| format!("no daemon log at {}", path.display()))?;
    let mut reader = std::io::BufReader::new(file);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            if !follow {
                return Ok(ExitCode::SUCCESS);
            }
            std::thread::sleep(Duration::from_millis(300));
            // A rotation replaced the file: reopen it.
            let here = reader.stream_position()?;
            if std::fs::metadata(&path).is_ok_and(|m| m.len() < here) {
                reader = std::io::BufReader::new(std::fs::File::open(&path)?);
                reader.seek(SeekFrom::Start(0))?;
            }
            continue;
        }
        print!("{line}");
    }
}

const UNIT: &str = "kache-daemon.service";

/// True when `kache daemon install` wrote its unit.
pub(super) fn service_installed() -> bool {
    systemd_user_dir().is_ok_and(|dir| dir.join(UNIT).is_file())
}

fn systemd_user_dir() -> Result<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| crate::config::home_dir().map(|h| h.join(".config")))
        .context("no home directory")?;
    Ok(base.join("systemd/user"))
}

pub(super) fn has_systemd() -> bool {
    Path::new("/run/systemd/system").is_dir()
        && Command::new("systemctl")
            .args(["--user", "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
}

pub(super) fn install(dir: &Path) -> Result<ExitCode> {
    if !has_systemd() {
        eprintln!(
            "kache: this machine runs no systemd user manager; run `kache daemon start` from your shell profile instead"
        );
        return Ok(ExitCode::FAILURE);
    }
    let exe = std::env::current_exe()?;
    let unit_dir = systemd_user_dir()?;
    std::fs::create_dir_all(&unit_dir)?;
    let unit = format!(
        "[Unit]\nDescription=kache build cache daemon\n\n[Service]\nExecStart={} daemon run\n\
         Environment=KACHE_CACHE_DIR={}\nEnvironment=KACHE_DAEMON_IDLE_TIMEOUT=0\n\
         Restart=always\nRestartSec=2\n\n[Install]\nWantedBy=default.target\n",
        exe.display(),
        dir.display()
    );
    std::fs::write(unit_dir.join(UNIT), unit)?;
    let ok = Command::new("systemctl")
        .args(["--user", "daemon-reload"])
        .status()?
        .success()
        && Command::new("systemctl")
            .args(["--user", "enable", "--now", UNIT])
            .status()?
            .success();
    if !ok {
        bail!("systemctl --user enable --now {UNIT} failed");
    }
    println!("installed {}", unit_dir.join(UNIT).display());
    Ok(ExitCode::SUCCESS)
}

fn uninstall() -> Result<ExitCode> {
    if !has_systemd() {
        eprintln!("kache: this machine runs no systemd user manager: nothing to uninstall");
        return Ok(ExitCode::FAILURE);
    }
    let _ = Command::new("systemctl")
        .args(["--user", "disable", "--now", UNIT])
        .status();
    let path = systemd_user_dir()?.join(UNIT);
    if path.exists() {
        std::fs::remove_file(&path)?;
    }
    let _ = Command::new("systemctl")
        .args(["--user", "daemon-reload"])
        .status();
    println!("removed {}", path.display());
    Ok(ExitCode::SUCCESS)
}
