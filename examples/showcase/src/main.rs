//! Lists the files under a folder with their size, age and blake3 hash, as
//! an aligned table or as JSON, under a small policy read from TOML.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use base64::Engine;
use chrono::{DateTime, Local};
use clap::Parser;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use unicode_width::UnicodeWidthStr;

#[derive(Parser)]
struct Args {
    /// The folder to list.
    #[arg(default_value = "src")]
    path: String,
    /// Only files modified within this long, e.g. `2h` or `30days`.
    #[arg(long, value_parser = humantime::parse_duration)]
    within: Option<Duration>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Log what is skipped.
    #[arg(short, long)]
    verbose: bool,
}

/// Which versions of this tool the policy is written for, and what to skip.
#[derive(Deserialize)]
struct Policy {
    requires: String,
    skip: Vec<String>,
}

const POLICY: &str = r#"
requires = ">=0.1, <2"
skip = ["target", ".git"]
"#;

#[derive(Debug, thiserror::Error)]
#[error("the policy requires version {required}, this is {actual}")]
struct WrongVersion {
    required: semver::VersionReq,
    actual: semver::Version,
}

#[derive(Serialize)]
struct Entry {
    name: String,
    bytes: u64,
    size: String,
    modified: String,
    blake3: String,
    id: String,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let level = if args.verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::WARN
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();

    let policy: Policy = toml::from_str(POLICY)?;
    let required = semver::VersionReq::parse(&policy.requires)?;
    let actual = semver::Version::parse(env!("CARGO_PKG_VERSION"))?;
    if !required.matches(&actual) {
        return Err(WrongVersion { required, actual }.into());
    }

    let mut entries: SmallVec<[Entry; 16]> = SmallVec::new();
    let walk = walkdir::WalkDir::new(&args.path)
        .sort_by_file_name()
        .into_iter();
    let walk = walk.filter_entry(|e| !policy.skip.iter().any(|s| e.file_name() == s.as_str()));
    for found in walk {
        let found = found?;
        if !found.file_type().is_file() {
            continue;
        }
        let modified = found.metadata()?.modified()?;
        let age = SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default();
        if args.within.is_some_and(|within| age > within) {
            tracing::debug!(path = %found.path().display(), "older than --within");
            continue;
        }
        entries.push(describe(found.path(), modified)?);
    }

    if args.json {
        println!("{}", serde_json::to_string_pretty(entries.as_slice())?);
        return Ok(());
    }
    let width = entries.iter().map(|e| e.name.width()).max().unwrap_or(0);
    for e in &entries {
        let pad = " ".repeat(width - e.name.width());
        println!(
            "{}{pad}  {:>9}  {}  {}  {}",
            e.name, e.size, e.modified, e.blake3, e.id
        );
    }
    Ok(())
}

fn describe(path: &Path, modified: SystemTime) -> Result<Entry> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let hash = blake3::hash(&bytes);
    let modified: DateTime<Local> = modified.into();
    Ok(Entry {
        name: path.display().to_string(),
        bytes: bytes.len() as u64,
        size: bytesize::ByteSize(bytes.len() as u64).to_string(),
        modified: modified.format("%Y-%m-%d %H:%M").to_string(),
        blake3: hash.to_hex()[..16].to_string(),
        id: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&hash.as_bytes()[..9]),
    })
}
