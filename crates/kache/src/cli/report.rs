//! `kache report`: what the cache did, as text, JSON, Markdown or a GitHub
//! step summary. `kache stats` prints the same summary's headline.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use kache_core::size::format_size;
use schemars::JsonSchema;
use serde::Serialize;

use crate::config::Config;
use crate::events::{self, Event, Outcome};

#[derive(clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Only events this recent (e.g. 1h, 7d); default: all.
    #[arg(long, value_parser = super::parse_age)]
    since: Option<Duration>,
    /// How many crates to list in each table.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Write to this file instead of stdout (`github` appends, as
    /// `$GITHUB_STEP_SUMMARY` expects).
    #[arg(long)]
    output: Option<std::path::PathBuf>,
    /// Print the JSON Schema of `--format json` (published as
    /// docs/report.schema.json) and exit.
    #[arg(long)]
    schema: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
    Markdown,
    Github,
}

/// Totals over a set of events: the document `--format json` prints.
#[derive(Debug, Default, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields, title = "kache build report")]
pub struct Summary {
    pub hits: u64,
    pub dups: u64,
    pub misses: u64,
    pub passthroughs: u64,
    /// Hits that `KACHE_VERIFY` also compiled and found byte for byte equal.
    pub verified_hits: u64,
    /// Hits that `KACHE_VERIFY` found different from what rustc wrote
    /// (`wrong-hit` events): each is a bug in kache's key.
    pub wrong_hits: u64,
    /// hits / (hits + dups + misses), 0 when there were none.
    pub hit_rate: f64,
    /// Compile time the hits did not spend, from the stored compile times.
    pub time_saved_ms: u64,
    /// rustc time spent on misses and dups.
    pub compile_ms: u64,
    pub bytes_restored: u64,
    pub bytes_stored: u64,
    /// Median wall time of a hit.
    pub hit_median_ms: u64,
    /// Hits served from entries the daemon fetched for that very compile.
    pub remote_hits: u64,
    /// Hits served from entries the daemon prefetched at build start.
    pub prefetch_hits: u64,
    /// Bytes restored from remote and prefetched entries (what came over
    /// the network for this build's hits).
    pub remote_bytes: u64,
    /// Wall time of the remote hits: what compiles waited on the bucket.
    pub remote_wait_ms: u64,
    /// Slowest misses, by compile time.
    pub slowest_misses: Vec<CrateLine>,
    /// Crates with the most hits.
    pub top_hits: Vec<CrateLine>,
    /// Every reason compiles passed through, most compiles first (ties by
    /// reason): what is not cached and why. Its counts add up to
    /// `passthroughs`.
    pub passthrough_reasons: Vec<ReasonLine>,
    /// Remote entries not imported because no trusted key signed them (or
    /// their pack was not the one signed), by reason: `unsigned`,
    /// `untrusted key`, `bad signature`, `pack mismatch`.
    #[serde(default)]
    pub refused: Vec<ReasonLine>,
    /// Build-script runs replayed from the cache (`KACHE_CACHE_BUILD_SCRIPTS`),
    /// also counted in `hits`.
    #[serde(default)]
    pub build_script_run_hits: u64,
    /// Build-script runs executed and stored, also counted in `misses`.
    #[serde(default)]
    pub build_script_run_misses: u64,
}

/// One reason compiles were not cached.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ReasonLine {
    /// As the passthrough event recorded it, e.g. `unstable option
    /// -Zself-profile`.
    pub reason: String,
    /// Compiles that passed through for it.
    pub count: u64,
}

/// One crate in a table.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CrateLine {
    pub crate_name: String,
    /// Misses or hits of this crate.
    pub count: u64,
    /// Compile time: spent (misses) or saved (hits).
    pub ms: u64,
}

/// The JSON Schema of [`Summary`], as published in docs/report.schema.json.
pub fn schema() -> String {
    let schema = schemars::schema_for!(Summary);
    serde_json::to_string_pretty(&schema).expect("a schema serializes") + "\n"
}

/// Sums up `events`, keeping `top` lines per table.
pub fn summarize(events: &[Event], top: usize) -> Summary {
    let mut summary = Summary::default();
    let mut hit_times = Vec::new();
    let mut misses: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut hits: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut reasons: BTreeMap<&str, u64> = BTreeMap::new();
    let mut refused: BTreeMap<&str, u64> = BTreeMap::new();
    for event in events {
        if event.crate_name.ends_with(":build-script-run") {
            match event.outcome {
                Outcome::Hit => summary.build_script_run_hits += 1,
                Outcome::Miss => summary.build_script_run_misses += 1,
                _ => {}
            }
        }
        match event.outcome {
            Outcome::Refused => {
                *refused
                    .entry(event.reason.as_deref().unwrap_or(NO_REASON))
                    .or_default() += 1;
            }
            Outcome::WrongHit => {
                summary.wrong_hits += 1;
                summary.compile_ms += event.compile_ms;
            }
            Outcome::Hit => {
                summary.hits += 1;
                summary.verified_hits += u64::from(event.verified);
                summary.time_saved_ms += event.compile_ms;
                summary.bytes_restored += event.bytes;
                hit_times.push(event.elapsed_ms);
                match event.source.as_deref() {
                    Some("remote") => {
                        summary.remote_hits += 1;
                        summary.remote_bytes += event.bytes;
                        summary.remote_wait_ms += event.elapsed_ms;
                    }
                    Some("prefetch") => {
                        summary.prefetch_hits += 1;
                        summary.remote_bytes += event.bytes;
                    }
                    _ => {}
                }
                let line = hits.entry(&event.crate_name).or_default();
                line.0 += 1;
                line.1 += event.compile_ms;
            }
            Outcome::Miss | Outcome::Dup => {
                if event.outcome == Outcome::Miss {
                    summary.misses += 1;
                } else {
                    summary.dups += 1;
                }
                summary.compile_ms += event.compile_ms;
                summary.bytes_stored += event.bytes;
                let line = misses.entry(&event.crate_name).or_default();
                line.0 += 1;
                line.1 += event.compile_ms;
            }
            Outcome::Passthrough => {
                summary.passthroughs += 1;
                *reasons
                    .entry(event.reason.as_deref().unwrap_or(NO_REASON))
                    .or_default() += 1;
            }
        }
    }
    let cacheable = summary.hits + summary.dups + summary.misses;
    if cacheable > 0 {
        summary.hit_rate = summary.hits as f64 / cacheable as f64;
    }
    hit_times.sort_unstable();
    summary.hit_median_ms = hit_times.get(hit_times.len() / 2).copied().unwrap_or(0);
    let table = |map: BTreeMap<&str, (u64, u64)>, by_count: bool| {
        let mut lines: Vec<CrateLine> = map
            .into_iter()
            .map(|(name, (count, ms))| CrateLine {
                crate_name: name.to_string(),
                count,
                ms,
            })
            .collect();
        if by_count {
            lines.sort_by(|a, b| b.count.cmp(&a.count).then(b.ms.cmp(&a.ms)));
        } else {
            lines.sort_by_key(|l| std::cmp::Reverse(l.ms));
        }
        lines.truncate(top);
        lines
    };
    summary.slowest_misses = table(misses, false);
    summary.top_hits = table(hits, true);
    let mut reasons: Vec<ReasonLine> = reasons
        .into_iter()
        .map(|(reason, count)| ReasonLine {
            reason: reason.to_string(),
            count,
        })
        .collect();
    // Stable: equal counts stay in the map's (alphabetical) order.
    reasons.sort_by_key(|line| std::cmp::Reverse(line.count));
    summary.passthrough_reasons = reasons;
    summary.refused = refused
        .into_iter()
        .map(|(reason, count)| ReasonLine {
            reason: reason.to_string(),
            count,
        })
        .collect();
    summary
}

/// What a passthrough event without a reason (an old log) is counted as.
const NO_REASON: &str = "no reason recorded";

/// `  unstable option -Zfoo: 31 compiles` lines, most compiles first, at
/// most `limit` of them and a line saying how many more reasons there are;
/// empty when nothing passed through.
pub fn passthrough_lines(s: &Summary, limit: usize) -> String {
    if s.passthrough_reasons.is_empty() {
        return String::new();
    }
    let mut text = String::from("passthrough by reason:\n");
    for line in s.passthrough_reasons.iter().take(limit) {
        text.push_str(&format!("  {}: {}\n", line.reason, compiles(line.count)));
    }
    let more = s.passthrough_reasons.len().saturating_sub(limit);
    if more > 0 {
        let rest: u64 = s.passthrough_reasons[limit..].iter().map(|l| l.count).sum();
        text.push_str(&format!("  ({more} more reasons: {})\n", compiles(rest)));
    }
    text
}

/// `1 compile`, `31 compiles`.
fn compiles(count: u64) -> String {
    if count == 1 {
        "1 compile".to_string()
    } else {
        format!("{count} compiles")
    }
}

/// `12.3s`-style seconds.
pub fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// The headline lines shared by `stats` and the text report.
pub fn headline(s: &Summary) -> String {
    let mut text = headline_local(s);
    if s.remote_hits + s.prefetch_hits > 0 {
        text.push_str(&format!(
            "from the remote: {} remote hits, {} prefetch hits, {} fetched, {} waited\n",
            s.remote_hits,
            s.prefetch_hits,
            format_size(s.remote_bytes),
            secs(s.remote_wait_ms),
        ));
    }
    text
}

fn headline_local(s: &Summary) -> String {
    format!(
        "hits: {}  misses: {}  dups: {}  passthrough: {}\nhit rate: {:.1}%\n\
         time saved: {}  (compiling misses took {})\nrestored: {}  stored: {}\nmedian hit: {} ms\n{}",
        s.hits,
        s.misses,
        s.dups,
        s.passthroughs,
        s.hit_rate * 100.0,
        secs(s.time_saved_ms),
        secs(s.compile_ms),
        format_size(s.bytes_restored),
        format_size(s.bytes_stored),
        s.hit_median_ms,
        if s.verified_hits + s.wrong_hits > 0 {
            format!(
                "verified hits (KACHE_VERIFY): {}  wrong hits: {}\n",
                s.verified_hits, s.wrong_hits
            )
        } else {
            String::new()
        },
    ) + &refused_line(s)
        + &if s.build_script_run_hits + s.build_script_run_misses > 0 {
            format!(
                "build-script runs: {} replayed, {} executed\n",
                s.build_script_run_hits, s.build_script_run_misses
            )
        } else {
            String::new()
        }
}

/// `refused: unsigned 3, bad signature 1` (remote entries not imported),
/// or nothing.
pub fn refused_line(s: &Summary) -> String {
    if s.refused.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = s
        .refused
        .iter()
        .map(|l| format!("{} {}", l.reason, l.count))
        .collect();
    format!("refused (remote): {}\n", parts.join(", "))
}

fn render(summary: &Summary, format: Format, top: usize) -> Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(summary)? + "\n",
        Format::Text => {
            let mut out = headline(summary);
            let reasons = passthrough_lines(summary, top);
            if !reasons.is_empty() {
                out.push('\n');
                out.push_str(&reasons);
            }
            out.push_str("\nslowest misses:\n");
            for line in &summary.slowest_misses {
                out.push_str(&format!(
                    "  {:<32} {:>8}  ({}x)\n",
                    line.crate_name,
                    secs(line.ms),
                    line.count
                ));
            }
            out.push_str("\nmost hits:\n");
            for line in &summary.top_hits {
                out.push_str(&format!(
                    "  {:<32} {:>6}x  saved {}\n",
                    line.crate_name,
                    line.count,
                    secs(line.ms)
                ));
            }
            out
        }
        Format::Markdown | Format::Github => {
            let mut out = String::from("## kache build report\n\n| | |\n|---|---|\n");
            for (name, value) in [
                ("Hits", summary.hits.to_string()),
                ("Misses", summary.misses.to_string()),
                ("Dups", summary.dups.to_string()),
                ("Passthrough", summary.passthroughs.to_string()),
                ("Hit rate", format!("{:.1}%", summary.hit_rate * 100.0)),
                ("Time saved", secs(summary.time_saved_ms)),
                ("Restored", format_size(summary.bytes_restored)),
                ("Median hit", format!("{} ms", summary.hit_median_ms)),
                ("Remote hits", summary.remote_hits.to_string()),
                ("Prefetch hits", summary.prefetch_hits.to_string()),
                ("Fetched from the remote", format_size(summary.remote_bytes)),
                ("Waited on the remote", secs(summary.remote_wait_ms)),
                (
                    "Build-script runs replayed",
                    summary.build_script_run_hits.to_string(),
                ),
                (
                    "Build-script runs executed",
                    summary.build_script_run_misses.to_string(),
                ),
            ] {
                out.push_str(&format!("| {name} | {value} |\n"));
            }
            out.push_str(
                "\n### Slowest misses\n\n| Crate | Compile time | Count |\n|---|---:|---:|\n",
            );
            for line in &summary.slowest_misses {
                out.push_str(&format!(
                    "| `{}` | {} | {} |\n",
                    line.crate_name,
                    secs(line.ms),
                    line.count
                ));
            }
            if !summary.passthrough_reasons.is_empty() {
                out.push_str("\n### Not cached\n\n| Reason | Compiles |\n|---|---:|\n");
                for line in summary.passthrough_reasons.iter().take(top) {
                    out.push_str(&format!(
                        "| {} | {} |\n",
                        markdown_cell(&line.reason),
                        line.count
                    ));
                }
                let more = summary.passthrough_reasons.len().saturating_sub(top);
                if more > 0 {
                    let rest: u64 = summary.passthrough_reasons[top..]
                        .iter()
                        .map(|l| l.count)
                        .sum();
                    out.push_str(&format!("| {more} more reasons | {rest} |\n"));
                }
            }
            out
        }
    })
}

/// A table cell: a `|` would end the cell, a newline the row.
fn markdown_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

pub fn run(config: &Config, args: Args) -> Result<ExitCode> {
    if args.schema {
        print!("{}", schema());
        return Ok(ExitCode::SUCCESS);
    }
    let since = args
        .since
        .map_or(0, |d| events::now_ms().saturating_sub(d.as_millis() as u64));
    let read = events::read_counted(&config.cache_dir, since);
    if read.skipped > 0 {
        // On stderr: stdout may be a JSON document.
        eprint!("kache: {}", super::stats::skipped_line(read.skipped));
    }
    let text = render(&summarize(&read.events, args.top), args.format, args.top)?;
    let output = args.output.clone().or_else(|| {
        matches!(args.format, Format::Github)
            .then(|| std::env::var_os("GITHUB_STEP_SUMMARY").map(Into::into))
            .flatten()
    });
    match output {
        Some(path) => {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(matches!(args.format, Format::Github))
                .write(true)
                .truncate(!matches!(args.format, Format::Github))
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            std::io::Write::write_all(&mut file, text.as_bytes())?;
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_schema_is_the_one_the_types_make() {
        // Compared as JSON values: the order of properties depends on the
        // features schemars is built with in a workspace build.
        let published: serde_json::Value =
            serde_json::from_str(include_str!("../../../../docs/report.schema.json")).unwrap();
        let generated: serde_json::Value = serde_json::from_str(&schema()).unwrap();
        assert!(
            published == generated,
            "docs/report.schema.json is stale: run `kache report --schema > docs/report.schema.json`"
        );
    }

    fn event(name: &str, outcome: Outcome, elapsed_ms: u64, compile_ms: u64) -> Event {
        Event {
            ts_ms: 0,
            crate_name: name.into(),
            cache_key: None,
            outcome,
            source: None,
            elapsed_ms,
            bytes: 10,
            compile_ms,
            reason: None,
            verified: false,
            target_dir: None,
        }
    }

    #[test]
    fn remote_and_prefetch_hits_are_counted_apart() {
        let mut remote = event("a", Outcome::Hit, 40, 100);
        remote.source = Some("remote".into());
        let mut prefetch = event("b", Outcome::Hit, 3, 100);
        prefetch.source = Some("prefetch".into());
        let mut local = event("c", Outcome::Hit, 2, 100);
        local.source = Some("local".into());
        let s = summarize(&[remote, prefetch, local], 5);
        assert_eq!((s.hits, s.remote_hits, s.prefetch_hits), (3, 1, 1));
        assert_eq!((s.remote_bytes, s.remote_wait_ms), (20, 40));
        assert!(headline(&s).contains("1 remote hits, 1 prefetch hits"));
    }

    #[test]
    fn summary_counts_rates_and_tables() {
        let events = [
            event("a", Outcome::Miss, 900, 800),
            event("b", Outcome::Miss, 300, 200),
            event("a", Outcome::Hit, 5, 800),
            event("b", Outcome::Hit, 7, 200),
            event("b", Outcome::Hit, 3, 200),
            event("c", Outcome::Passthrough, 1, 0),
        ];
        let s = summarize(&events, 1);
        assert_eq!((s.hits, s.misses, s.passthroughs), (3, 2, 1));
        assert!((s.hit_rate - 0.6).abs() < 1e-9);
        assert_eq!(s.time_saved_ms, 1200);
        assert_eq!(s.hit_median_ms, 5);
        assert_eq!(s.slowest_misses[0].crate_name, "a");
        assert_eq!(s.top_hits[0].crate_name, "b");
        assert_eq!(s.top_hits.len(), 1);
    }

    #[test]
    fn passthroughs_are_counted_by_reason_most_first() {
        let reason = |why: Option<&str>| {
            let mut e = event("x", Outcome::Passthrough, 1, 0);
            e.reason = why.map(String::from);
            e
        };
        let events = [
            reason(Some("unstable option -Zfoo")),
            reason(Some("source from stdin")),
            reason(Some("unstable option -Zfoo")),
            reason(None),
            reason(Some("unstable option -Zfoo")),
            reason(Some("a|b")),
        ];
        let s = summarize(&events, 10);
        let lines: Vec<(&str, u64)> = s
            .passthrough_reasons
            .iter()
            .map(|l| (l.reason.as_str(), l.count))
            .collect();
        assert_eq!(
            lines,
            [
                ("unstable option -Zfoo", 3),
                ("a|b", 1),
                ("no reason recorded", 1),
                ("source from stdin", 1)
            ]
        );
        let text = passthrough_lines(&s, 2);
        assert!(
            text.contains("  unstable option -Zfoo: 3 compiles\n"),
            "{text}"
        );
        assert!(text.contains("  a|b: 1 compile\n"), "{text}");
        assert!(text.contains("(2 more reasons: 2 compiles)"), "{text}");
        let markdown = render(&s, Format::Markdown, 10).unwrap();
        assert!(
            markdown.contains("| unstable option -Zfoo | 3 |"),
            "{markdown}"
        );
        assert!(markdown.contains("| a\\|b | 1 |"), "{markdown}");
        assert!(passthrough_lines(&summarize(&[], 10), 10).is_empty());
    }
}
