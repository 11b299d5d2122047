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
            verified: false,
            target_dir: None,
        },
    );
}

/// The crate a rustc call compiles, when it really is a compile: it names
/// a crate (`--crate-name`) and a `.rs` source. Version probes, `--print`
/// requests and cargo's target-info probe (source `-`, crate `___`) are
/// not, and their passthroughs stay out of the event log.
pub fn compiled_crate(args: &[String]) -> Option<&str> {
    let mut crate_name = None;
    let mut has_source = false;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--crate-name" {
            crate_name = iter.next().map(String::as_str);
        } else if let Some(name) = arg.strip_prefix("--crate-name=") {
            crate_name = Some(name);
        } else if !arg.starts_with('-') && arg.ends_with(".rs") {
            has_source = true;
        }
    }
    crate_name.filter(|name| has_source && !name.is_empty())
}

/// The reason a passthrough event records, specific enough to group by
/// (`kache stats` counts passthroughs per reason): a generic reason from
/// the argument parser gets the option that caused it, read from `args`
/// (`unsupported emit kind asm`, `codegen option -C save-temps writes side
/// outputs`). Other reasons are kept as they are.
pub fn passthrough_reason(reason: &str, args: &[String]) -> String {
    match reason {
        "unsupported emit kind" => {
            let kinds: Vec<String> = option_values(args, "--emit")
                .flat_map(|value| value.split(','))
                .filter_map(|kind| {
                    let (name, path) = kind.split_once('=').unwrap_or((kind, ""));
                    let known = matches!(name, "dep-info" | "metadata" | "link");
                    (!known || !path.is_empty()).then(|| {
                        if path.is_empty() {
                            name.to_string()
                        } else {
                            format!("{name}=<path>")
                        }
                    })
                })
                .collect();
            if kinds.is_empty() {
                reason.to_string()
            } else {
                format!("{reason} {}", kinds.join(","))
            }
        }
        "codegen option with side outputs" => {
            let names: Vec<&str> = option_values(args, "-C")
                .chain(option_values(args, "--codegen"))
                .map(|value| value.split_once('=').map_or(value, |(name, _)| name))
                .filter(|name| matches!(*name, "save-temps" | "profile-generate" | "profile-use"))
                .collect();
            match names.first() {
                Some(name) => format!("codegen option -C {name} writes side outputs"),
                None => reason.to_string(),
            }
        }
        _ => reason.to_string(),
    }
}

/// Every value of `flag` in `args`: `flag value`, `flag=value` and, for a
/// one-letter flag, `-Cvalue`.
fn option_values<'a>(args: &'a [String], flag: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    let short = !flag.starts_with("--");
    args.iter().enumerate().filter_map(move |(i, arg)| {
        if arg == flag {
            args.get(i + 1).map(String::as_str)
        } else if let Some(value) = arg.strip_prefix(flag) {
            match value.strip_prefix('=') {
                Some(value) => Some(value),
                None if short && !value.is_empty() => Some(value),
                None => None,
            }
        } else {
            None
        }
    })
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
    /// The hit was verified by compiling (`KACHE_VERIFY`).
    pub verified: bool,
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
        source: matches!(outcome, Outcome::Hit | Outcome::WrongHit)
            .then(|| unit.hit_source.to_string()),
        verified: unit.verified,
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
        Outcome::WrongHit => "WRONG HIT (KACHE_VERIFY: outputs differ; compiled output kept)",
        // A compile never records a refusal; the daemon and `sync` do.
        Outcome::Passthrough | Outcome::Refused => return,
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
            // Not our stderr: cargo would replay it in no-op builds.
            events::tell(&line);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn only_calls_that_compile_a_source_name_a_crate() {
        let compile = argv("--crate-name fx_core --edition=2021 src/lib.rs --crate-type lib");
        assert_eq!(compiled_crate(&compile), Some("fx_core"));
        let joined = argv("--crate-name=app src/main.rs");
        assert_eq!(compiled_crate(&joined), Some("app"));
        for probe in [
            "-vV",
            "- --crate-name ___ --print=file-names --crate-type bin",
            "--print sysroot",
            "--crate-name x --crate-type lib",
        ] {
            assert_eq!(compiled_crate(&argv(probe)), None, "{probe}");
        }
    }

    #[test]
    fn generic_parser_reasons_name_the_option() {
        let emit = argv("--crate-name a src/lib.rs --emit=asm,link,dep-info");
        assert_eq!(
            passthrough_reason("unsupported emit kind", &emit),
            "unsupported emit kind asm"
        );
        let path = argv("--crate-name a src/lib.rs --emit dep-info,link=/t/a.so");
        assert_eq!(
            passthrough_reason("unsupported emit kind", &path),
            "unsupported emit kind link=<path>"
        );
        for flags in ["-Csave-temps", "-C save-temps", "--codegen=save-temps"] {
            let args = argv(&format!("--crate-name a src/lib.rs -C opt-level=1 {flags}"));
            assert_eq!(
                passthrough_reason("codegen option with side outputs", &args),
                "codegen option -C save-temps writes side outputs",
                "{flags}"
            );
        }
        assert_eq!(
            passthrough_reason("unstable option -Zself-profile", &emit),
            "unstable option -Zself-profile"
        );
    }
}
