//! What a compile's outcome leaves behind: the event log line and the
//! `KACHE_PROGRESS` line, shared by the rustc and the C-family flows.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use kache_core::size::format_size;

use crate::config::{Config, Progress};
use crate::events::{self, Event, Outcome};
use crate::store::Store;

/// Records a compile kache chose not to cache, with the reason.
pub fn record_passthrough_of(config: &Config, crate_name: &str, started: Instant, reason: &str) {
    let _ = std::fs::create_dir_all(&config.cache_dir);
    events::append(
        &config.cache_dir,
        &Event {
            ts_ms: events::now_ms(),
            crate_name: crate_name.to_string(),
            cache_key: None,
            outcome: Outcome::Passthrough,
            source: None,
            elapsed_ms: started.elapsed().as_millis() as u64,
            bytes: 0,
            compile_ms: 0,
            reason: Some(reason.to_string()),
            target_dir: None,
        },
    );
}

/// What an event and a progress line call one compile.
pub struct Unit<'a> {
    /// The entry's `crate_name` (`fx_core`, `zstd-sys:zstd.c`).
    pub crate_name: &'a str,
    /// How a progress line names it (`build_script_build (serde)`, `zstd-sys: zstd.c`).
    pub display: &'a str,
    /// The progress line may not go to stderr: a build script reads a C
    /// compiler's stderr (the `cc` crate turns it into warnings and takes
    /// any output from a flag probe as "unsupported"). It goes to the
    /// terminal instead, when there is one.
    pub terminal_only: bool,
    /// Where the compile wrote its outputs.
    pub target_dir: Option<&'a Path>,
    /// Where a hit came from: `local`, `remote` or `prefetch`.
    pub hit_source: &'a str,
}

/// The source of a hit on `cache_key`: `remote` or `prefetch` the first
/// time an entry the daemon imported is used, else `local`. Without a
/// remote the index is not even asked.
pub fn hit_source(store: &Store, remote: bool, cache_key: &str) -> String {
    if !remote {
        return "local".to_string();
    }
    store
        .index
        .take_origin(cache_key)
        .ok()
        .flatten()
        .unwrap_or_else(|| "local".to_string())
}

/// Records the event and prints the `KACHE_PROGRESS` line of one compile.
#[allow(clippy::too_many_arguments)]
pub fn report(
    config: &Config,
    started: Instant,
    unit: &Unit,
    outcome: Outcome,
    key: Option<&str>,
    bytes: u64,
    compile_ms: u64,
    reason: Option<String>,
) {
    let elapsed = started.elapsed();
    let event = Event {
        ts_ms: events::now_ms(),
        crate_name: unit.crate_name.to_string(),
        cache_key: key.map(String::from),
        outcome,
        source: (outcome == Outcome::Hit).then(|| unit.hit_source.to_string()),
        elapsed_ms: elapsed.as_millis() as u64,
        bytes,
        compile_ms,
        reason,
        target_dir: unit.target_dir.map(|d| d.to_string_lossy().to_string()),
    };
    events::append(&config.cache_dir, &event);
    let label = match outcome {
        Outcome::Hit => match unit.hit_source {
            "remote" => "remote hit",
            "prefetch" => "prefetch hit",
            _ => "local hit",
        },
        Outcome::Dup => "dup",
        Outcome::Miss => "miss",
        Outcome::Passthrough => return,
    };
    let show = match config.progress {
        Progress::Off => false,
        Progress::Hits => outcome == Outcome::Hit,
        Progress::All => true,
    };
    if show {
        let size = if bytes > 0 {
            format!(", {}", format_size(bytes))
        } else {
            String::new()
        };
        let line = format!(
            "[kache] {}: {label} ({}{size})\n",
            unit.display,
            format_duration(elapsed)
        );
        if unit.terminal_only {
            if let Ok(mut tty) = std::fs::OpenOptions::new().write(true).open("/dev/tty") {
                let _ = tty.write_all(line.as_bytes());
            }
        } else {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

/// The crate as a progress line shows it. Every build script is the crate
/// `build_script_build`, so its package is added: `build_script_build (serde)`.
pub fn display_name(crate_name: &str) -> String {
    match std::env::var("CARGO_PKG_NAME") {
        Ok(package) if crate_name.starts_with("build_script_") => {
            format!("{crate_name} ({package})")
        }
        _ => crate_name.to_string(),
    }
}

/// `12ms`, `1.4s`.
pub fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
}
