//! `kache init`: sets `build.rustc-wrapper` in cargo's user config and,
//! when a remote is configured, offers to run the daemon as a service.
//! `kache init --check` reports every part: wrapper, config file, store,
//! remote, daemon, planner.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// Do not ask before writing.
    #[arg(short = 'y', long)]
    yes: bool,
    /// Only report on every part (wrapper, config, store, remote, daemon,
    /// planner); exit 1 if kache is not the wrapper or a configured part
    /// does not answer.
    #[arg(long)]
    check: bool,
}

/// `$CARGO_HOME/config.toml`, else `~/.cargo/config.toml`.
pub fn cargo_config_path() -> Result<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| crate::config::home_dir().map(|h| h.join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    Ok(home.join("config.toml"))
}

/// The configured `build.rustc-wrapper`, if any.
pub fn configured_wrapper(text: &str) -> Result<Option<String>> {
    let value: toml::Table = toml::from_str(text).context("cargo config is not valid TOML")?;
    Ok(value
        .get("build")
        .and_then(|b| b.get("rustc-wrapper"))
        .and_then(|w| w.as_str())
        .map(String::from))
}

fn is_kache(wrapper: &str) -> bool {
    std::path::Path::new(wrapper)
        .file_stem()
        .is_some_and(|s| s == "kache")
}

pub fn run(config: &Config, args: Args) -> Result<ExitCode> {
    let path = cargo_config_path()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let current =
        configured_wrapper(&text).with_context(|| format!("reading {}", path.display()))?;
    if args.check {
        return check(config, &path, current.as_deref());
    }
    let exe = std::env::current_exe().context("locating the kache binary")?;
    let exe = exe.to_string_lossy().to_string();
    if current.as_deref() == Some(exe.as_str()) {
        println!(
            "already configured: build.rustc-wrapper = {exe:?} in {}",
            path.display()
        );
        return offer_daemon(config, args.yes);
    }
    if let Some(other) = &current {
        println!("replacing build.rustc-wrapper = {other:?}");
    }
    println!(
        "will set build.rustc-wrapper = {exe:?} in {}",
        path.display()
    );
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            bail!("not a terminal: pass -y to confirm");
        }
        if !confirm("proceed?")? {
            println!("nothing changed");
            return Ok(ExitCode::FAILURE);
        }
    }
    let updated = set_wrapper(&text, &exe);
    configured_wrapper(&updated).context("internal error: the edited config does not parse")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, updated).with_context(|| format!("writing {}", path.display()))?;
    println!("done: cargo now builds through kache");
    offer_daemon(config, args.yes)
}

/// Asks a yes/no question on the terminal; no is the default.
fn confirm(question: &str) -> Result<bool> {
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// With a remote configured, the daemon uploads and prefetches in the
/// background: offers to install it as a systemd user service (or, without
/// systemd, to start it now). Declining changes nothing.
fn offer_daemon(config: &Config, yes: bool) -> Result<ExitCode> {
    if config.remote.is_none() || config.local_only {
        return Ok(ExitCode::SUCCESS);
    }
    if super::daemon::service_installed() {
        println!("the daemon service is installed");
        return Ok(ExitCode::SUCCESS);
    }
    let question = if super::daemon::has_systemd() {
        "a remote is configured: install and start the kache daemon as a systemd user service?"
    } else {
        "a remote is configured: start the kache daemon now (no systemd here: add `kache daemon start` to your shell profile)?"
    };
    let asked = !yes && std::io::stdin().is_terminal();
    if !yes && !asked {
        println!("a remote is configured: `kache daemon install` runs the daemon as a service");
        return Ok(ExitCode::SUCCESS);
    }
    if asked && !confirm(question)? {
        println!("daemon left as it is (it also starts on demand)");
        return Ok(ExitCode::SUCCESS);
    }
    if super::daemon::has_systemd() {
        super::daemon::install(&config.cache_dir)
    } else {
        let status = crate::daemon::client::start_and_wait(
            &config.cache_dir,
            std::time::Duration::from_secs(10),
        )?;
        println!("kache daemon running (pid {})", status.pid);
        Ok(ExitCode::SUCCESS)
    }
}

/// One line per part, `ok`, `warn` (works, but worth a look) or `FAIL`.
fn check(config: &Config, path: &std::path::Path, wrapper: Option<&str>) -> Result<ExitCode> {
    let mut failed = false;
    let mut line = |level: &str, text: String| {
        failed |= level == "FAIL";
        println!("{level:<4} {text}");
    };
    match wrapper {
        Some(w) if is_kache(w) => line("ok", format!("wrapper: {w} ({})", path.display())),
        Some(w) => line(
            "FAIL",
            format!("wrapper: {w}, not kache ({})", path.display()),
        ),
        None => line(
            "FAIL",
            "wrapper: kache is not configured; run `kache init`".into(),
        ),
    }
    match &config.source {
        Some(source) => line("ok", format!("config: {}", source.display())),
        None => line(
            "ok",
            "config: no file; defaults and KACHE_* variables".into(),
        ),
    }
    match super::open_store(config)
        .and_then(|store| Ok((store.index.rows()?.len(), store.disk_usage()?)))
    {
        Ok((entries, bytes)) => line(
            "ok",
            format!(
                "store: {} ({entries} entries, {})",
                config.cache_dir.display(),
                kache_core::size::format_size(bytes)
            ),
        ),
        Err(err) => line("FAIL", format!("store: {err:#}")),
    }
    match (&config.remote, config.local_only) {
        (None, _) => line("ok", "remote: none; local cache only".into()),
        (Some(remote), true) => line(
            "warn",
            format!(
                "remote: {} (KACHE_LOCAL_ONLY set: unused)",
                remote.describe()
            ),
        ),
        (Some(remote), false) => line("ok", format!("remote: {}", remote.describe())),
    }
    let service = if super::daemon::service_installed() {
        "; installed as a service"
    } else {
        ""
    };
    match crate::daemon::client::status(&config.cache_dir) {
        Some(status) => line(
            "ok",
            format!(
                "daemon: running (pid {}, {} uploads queued){service}",
                status.pid, status.queued
            ),
        ),
        None if config.remote.is_some() && !config.local_only => line(
            "warn",
            format!("daemon: not running (starts on demand; `kache daemon start`){service}"),
        ),
        None => line("ok", "daemon: not needed without a remote".into()),
    }
    match &config.planner.endpoint {
        None => line("ok", "planner: none; prefetch goes by Cargo.lock".into()),
        Some(endpoint) => match planner_health(endpoint, config.planner.timeout_ms) {
            Ok(()) => line("ok", format!("planner: {endpoint} answers")),
            Err(err) => line("FAIL", format!("planner: {endpoint}: {err:#}")),
        },
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `GET {endpoint}/healthz` within the planner timeout (at least a second).
fn planner_health(endpoint: &str, timeout_ms: u64) -> Result<()> {
    let url = format!("{}/healthz", endpoint.trim_end_matches('/'));
    let timeout = std::time::Duration::from_millis(timeout_ms.max(1000));
    super::transfer_runtime()?.block_on(async {
        let reply = reqwest::Client::builder()
            .timeout(timeout)
            .build()?
            .get(&url)
            .send()
            .await
            .context("no answer")?;
        anyhow::ensure!(reply.status().is_success(), "answered {}", reply.status());
        Ok(())
    })
}

/// Sets `rustc-wrapper` inside `[build]`, keeping every other line as it was.
fn set_wrapper(text: &str, exe: &str) -> String {
    let line = format!(
        "rustc-wrapper = {}",
        serde_json::Value::String(exe.to_string())
    );
    let mut out = Vec::new();
    let mut in_build = false;
    let mut done = false;
    for raw in text.lines() {
        let trimmed = raw.trim();
        if trimmed.starts_with('[') {
            if in_build && !done {
                out.push(line.clone());
                done = true;
            }
            in_build = trimmed == "[build]";
        } else if in_build && trimmed.starts_with("rustc-wrapper") && !done {
            out.push(line.clone());
            done = true;
            continue;
        }
        out.push(raw.to_string());
    }
    if in_build && !done {
        out.push(line.clone());
        done = true;
    }
    if !done {
        if !out.is_empty() {
            out.push(String::new());
        }
        out.push("[build]".to_string());
        out.push(line);
    }
    out.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_a_build_table_or_edits_the_existing_one() {
        let fresh = set_wrapper("", "/bin/kache");
        assert_eq!(
            configured_wrapper(&fresh).unwrap().as_deref(),
            Some("/bin/kache")
        );
        let existing = "[net]\nretry = 2\n[build]\njobs = 4\nrustc-wrapper = \"sccache\"\n[term]\nverbose = true\n";
        let edited = set_wrapper(existing, "/bin/kache");
        assert_eq!(
            configured_wrapper(&edited).unwrap().as_deref(),
            Some("/bin/kache")
        );
        assert!(edited.contains("jobs = 4") && edited.contains("verbose = true"));
        assert!(!edited.contains("sccache"));
        assert_eq!(set_wrapper(&edited, "/bin/kache"), edited, "idempotent");
    }
}
