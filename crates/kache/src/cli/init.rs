//! `kache init`: sets `build.rustc-wrapper` in cargo's user config.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

#[derive(clap::Args)]
pub struct Args {
    /// Do not ask before writing.
    #[arg(short = 'y', long)]
    yes: bool,
    /// Only report whether kache is configured (exit 1 if not).
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

pub fn run(args: Args) -> Result<ExitCode> {
    let path = cargo_config_path()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let current =
        configured_wrapper(&text).with_context(|| format!("reading {}", path.display()))?;
    if args.check {
        return Ok(match current {
            Some(w) if is_kache(&w) => {
                println!("kache is cargo's rustc-wrapper ({w}) in {}", path.display());
                ExitCode::SUCCESS
            }
            Some(w) => {
                println!(
                    "cargo's rustc-wrapper is {w}, not kache ({})",
                    path.display()
                );
                ExitCode::FAILURE
            }
            None => {
                println!("kache is not configured; run `kache init`");
                ExitCode::FAILURE
            }
        });
    }
    let exe = std::env::current_exe().context("locating the kache binary")?;
    let exe = exe.to_string_lossy().to_string();
    if current.as_deref() == Some(exe.as_str()) {
        println!(
            "already configured: build.rustc-wrapper = {exe:?} in {}",
            path.display()
        );
        return Ok(ExitCode::SUCCESS);
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
        print!("proceed? [y/N] ");
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
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
    Ok(ExitCode::SUCCESS)
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
