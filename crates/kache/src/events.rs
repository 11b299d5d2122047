//! The append-only event log, `{cache_dir}/events.jsonl`: one JSON object per
//! compile outcome, read by `stats`, `report` and `why-miss`.
//!
//! Each event is written with a single `write` on a file opened for append,
//! so concurrent wrappers never interleave within a line. Lines that do not
//! parse (a torn write from a killed process or a full disk, garbage) are
//! skipped when reading, counted, and never stop the lines after them.
//!
//! [`tell`] writes the lines a build shows the user (`KACHE_PROGRESS`, the
//! cache's health) where cargo does not keep them for replay.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
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
    /// A remote entry was not imported: trusted keys are set and it is not
    /// signed by one (the reason says how), or its pack is not the one
    /// signed. Written by whoever pulled (the daemon, `kache sync`).
    Refused,
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
        .mode(0o600)
        .open(log_path(cache_dir))
    {
        let _ = file.write_all(&line);
    }
}

/// Events at or after `since_ms`, oldest first; malformed lines are skipped.
pub fn read(cache_dir: &Path, since_ms: u64) -> Vec<Event> {
    read_counted(cache_dir, since_ms).events
}

/// What [`read_counted`] found in the log.
#[derive(Debug, Default)]
pub struct Read {
    /// Events at or after the asked time, oldest first.
    pub events: Vec<Event>,
    /// Lines that are not an event (torn, not UTF-8, not JSON), skipped.
    pub skipped: usize,
}

/// Events at or after `since_ms`, oldest first, and how many lines were
/// skipped because they are not an event. A bad line costs only itself:
/// every line after it is read.
pub fn read_counted(cache_dir: &Path, since_ms: u64) -> Read {
    let mut out = Read::default();
    let Ok(file) = File::open(log_path(cache_dir)) else {
        return out;
    };
    // Split on bytes: a line that is not UTF-8 is one bad line, where
    // `lines()` would end the whole read with an error.
    for line in BufReader::new(file).split(b'\n') {
        let Ok(line) = line else {
            break;
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Event>(&line) {
            Ok(event) if event.ts_ms >= since_ms => out.events.push(event),
            Ok(_) => {}
            Err(_) => out.skipped += 1,
        }
    }
    out
}

/// Rewrites the log keeping only events at or after `since_ms` (used by gc).
/// Malformed lines are dropped. The new log is written beside the old one
/// and renamed over it; a failed write (a full disk) removes what it wrote.
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
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut file| file.write_all(&text))
        .and_then(|()| std::fs::rename(&temp, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// Writes `line` (newline included) where the person running the build
/// sees it exactly once.
///
/// In a compile cargo is our parent and reads our stderr through a pipe:
/// it keeps every line it reads there with the unit and prints them again
/// whenever it does not rerun the unit, so a progress line written there
/// would reappear, as if new, in every later no-op build. So the line goes
/// straight to cargo's own stderr when that is a terminal or a pipe (on a
/// terminal after clearing cargo's progress bar, which cargo redraws).
/// Anywhere else (no cargo parent, a log file that cargo writes at its own
/// offset, an error) it goes to our stderr.
pub fn tell(line: &str) {
    if let Some((mut file, terminal)) = cargo_stderr() {
        let text = if terminal {
            format!("\r\x1b[K{line}")
        } else {
            line.to_string()
        };
        if file.write_all(text.as_bytes()).is_ok() {
            return;
        }
    }
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Cargo's stderr, when our parent is cargo and it is a terminal or a
/// pipe, with whether it is a terminal.
fn cargo_stderr() -> Option<(File, bool)> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileTypeExt;
    // SAFETY: getppid() has no preconditions.
    let parent = unsafe { libc::getppid() };
    let exe = std::fs::read_link(format!("/proc/{parent}/exe")).ok()?;
    if !exe
        .file_name()
        .is_some_and(|name| name.to_string_lossy().starts_with("cargo"))
    {
        return None;
    }
    let file = OpenOptions::new()
        .append(true)
        .open(format!("/proc/{parent}/fd/2"))
        .ok()?;
    let kind = file.metadata().ok()?.file_type();
    if !(kind.is_fifo() || kind.is_char_device()) {
        return None;
    }
    // SAFETY: isatty() only inspects the descriptor, which `file` owns.
    let terminal = unsafe { libc::isatty(file.as_raw_fd()) } == 1;
    Some((file, terminal))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ts_ms: u64) -> Event {
        Event {
            ts_ms,
            crate_name: "c".into(),
            cache_key: None,
            outcome: Outcome::Miss,
            source: None,
            elapsed_ms: 1,
            bytes: 0,
            compile_ms: 0,
            verified: false,
            reason: None,
            target_dir: None,
        }
    }

    #[test]
    fn a_malformed_line_is_skipped_counted_and_the_rest_is_read() {
        let dir = tempfile::tempdir().unwrap();
        append(dir.path(), &event(1));
        let mut log = OpenOptions::new()
            .append(true)
            .open(log_path(dir.path()))
            .unwrap();
        log.write_all(b"{\"ts_ms\":2,\"crate\n\xff\xfe not utf-8\n\n")
            .unwrap();
        append(dir.path(), &event(3));
        append(dir.path(), &event(4));
        let read = read_counted(dir.path(), 0);
        let times: Vec<u64> = read.events.iter().map(|e| e.ts_ms).collect();
        assert_eq!(times, [1, 3, 4]);
        assert_eq!(read.skipped, 2);
        assert_eq!(read_counted(dir.path(), 3).events.len(), 2);
    }
}
