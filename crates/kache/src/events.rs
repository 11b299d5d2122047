//! The append-only event log, `{cache_dir}/events.jsonl`: one JSON object per
//! compile outcome, read by `stats`, `report` and `why-miss`.
//!
//! Each event is written with a single `write` on a file opened for append,
//! so concurrent wrappers never interleave within a line. Lines that do not
//! parse (a torn write from a killed process) are skipped when reading.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What happened to one rustc call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Restored from the cache without running rustc.
    Hit,
    /// The key missed, but every output byte was already stored.
    Dup,
    /// Compiled and stored.
    Miss,
    /// Not cached: rustc ran unchanged.
    Passthrough,
    /// Under `KACHE_VERIFY`: the key hit, but rustc wrote different bytes
    /// than the entry holds. The compiled output was kept.
    #[serde(rename = "wrong-hit")]
    WrongHit,
}

/// One line of the event log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: u64,
    pub crate_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<String>,
    pub outcome: Outcome,
    /// Where a hit came from: `local`, `prefetch` or `remote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Wall time kache spent on the call, rustc included.
    pub elapsed_ms: u64,
    /// Bytes restored (hit) or stored (miss/dup).
    #[serde(default)]
    pub bytes: u64,
    /// rustc's time for a miss; the stored compile time a hit saved.
    #[serde(default)]
    pub compile_ms: u64,
    /// Under `KACHE_VERIFY`, on a hit or wrong hit: the compile ran too and
    /// its outputs were compared with the entry's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verified: bool,
    /// Why a call passed through or was not stored; for a wrong hit, which
    /// files differed and which key components were equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The target directory the compile wrote into, when known: `kache
    /// sync --push` shares what one workspace built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_dir: Option<String>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn log_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join("events.jsonl")
}

/// Appends one event. Failures are ignored: the log never fails a build.
pub fn append(cache_dir: &Path, event: &Event) {
    let Ok(mut line) = serde_json::to_vec(event) else {
        return;
    };
    line.push(b'\n');
    if let Ok(mut file) = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(cache_dir))
    {
        let _ = file.write_all(&line);
    }
}

/// Events at or after `since_ms`, oldest first.
pub fn read(cache_dir: &Path, since_ms: u64) -> Vec<Event> {
    let Ok(file) = std::fs::File::open(log_path(cache_dir)) else {
        return Vec::new();
    };
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<Event>(&line).ok())
        .filter(|e| e.ts_ms >= since_ms)
        .collect()
}

/// Rewrites the log keeping only events at or after `since_ms` (used by gc).
pub fn truncate_before(cache_dir: &Path, since_ms: u64) -> std::io::Result<()> {
    let keep = read(cache_dir, since_ms);
    let mut text = Vec::new();
    for event in keep {
        if let Ok(line) = serde_json::to_vec(&event) {
            text.extend_from_slice(&line);
            text.push(b'\n');
        }
    }
    let path = log_path(cache_dir);
    let temp = path.with_extension("jsonl.tmp");
    std::fs::write(&temp, text)?;
    std::fs::rename(temp, path)
}
