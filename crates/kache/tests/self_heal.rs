//! The cache heals itself and says so. Every fault here is made for real:
//! the index overwritten or truncated on disk, the cache on a tmpfs of a few
//! MB that the store fills, a read-only bind mount, files deleted from the
//! store, a daemon's cache directory removed under it. Builds are real cargo
//! builds of the fixture through the kache binary. Mounts need root (CI runs
//! as root); each is undone by a guard, also when the test fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{EXPECTED_LINE, LIBS, Run, World, run_app};

/// A filesystem mounted for one test, unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    /// A tmpfs of `size` (as `mount -o size=` reads it) at `at`.
    fn tmpfs(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        mount(&["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"], at);
        Self(at.to_path_buf())
    }

    /// `source` seen read-only at `at` (a bind mount remounted `ro`: root
    /// ignores permission bits, not a read-only mount).
    fn read_only(source: &Path, at: &Path) -> Self {
        std::fs::create_dir_all(at).unwrap();
        mount(&["--bind", &source.to_string_lossy()], at);
        let guard = Self(at.to_path_buf());
        mount(&["-o", "remount,ro,bind"], at);
        guard
    }

    /// Remounts the tmpfs with a new size.
    fn resize(&self, size: &str) {
        mount(&["-o", &format!("remount,size={size}")], &self.0);
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let done = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !done {
            // Busy (a process still inside): detach it now, freed when idle.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn mount(args: &[&str], at: &Path) {
    let out = Command::new("mount").args(args).arg(at).output().unwrap();
    assert!(
        out.status.success(),
        "mount {args:?} {} failed (these tests need root): {}",
        at.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The lines kache itself printed into a build's stderr (`kache: …`).
fn kache_lines(run: &Run) -> Vec<String> {
    run.stderr()
        .lines()
        .filter(|l| l.starts_with("kache: "))
        .map(String::from)
        .collect()
}

/// Panics unless every library unit of the fixture was a hit in `run`.
fn assert_all_hit(run: &Run) {
    for lib in LIBS {
        assert_eq!(run.outcome(lib), "hit", "{lib}: {:?}", run.outcomes());
    }
}

/// Every temp file (`.tmp-*`) under `dir`.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for item in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = item.path();
        if item.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(temp_files(&path));
        } else if item.file_name().to_string_lossy().starts_with(".tmp-") {
            out.push(path);
        }
    }
    out
}

/// The cache key of `crate_name`'s entry, from the event log.
fn key_of(world: &World, crate_name: &str) -> String {
    world
        .events()
        .iter()
        .rev()
        .find(|e| e["crate_name"] == crate_name && e["outcome"] == "miss")
        .and_then(|e| e["cache_key"].as_str().map(String::from))
        .unwrap_or_else(|| panic!("no stored entry of {crate_name}"))
}

/// Builds the fixture, damages the index with `damage`, and checks that the
/// next build rebuilds it once (one line), keeps the damaged file, and hits.
fn index_damage_is_healed(damage: impl FnOnce(&Path)) {
    let world = World::new();
    let project = world.project("p");
    world.cargo(&project, &["build"]).ok();
    let index = world.cache.join("index.db");
    damage(&index);
    let damaged = std::fs::read(&index).unwrap();

    world.cargo(&project, &["clean"]).ok();
    let healed = world.cargo(&project, &["build"]).ok();
    let lines = kache_lines(&healed);
    assert_eq!(lines.len(), 1, "one line says so: {}", healed.stderr());
    assert!(
        lines[0].contains("could not be read") && lines[0].contains("rebuilt the index from 6"),
        "{}",
        lines[0]
    );
    assert_all_hit(&healed);
    assert_eq!(run_app(&project), EXPECTED_LINE);
    let kept: Vec<PathBuf> = std::fs::read_dir(&world.cache)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("index.db.broken-")
                && !p.to_string_lossy().ends_with("-wal")
        })
        .collect();
    assert_eq!(kept.len(), 1, "the damaged index is kept: {kept:?}");
    assert_eq!(std::fs::read(&kept[0]).unwrap(), damaged);

    // Once: the next build finds a sound index and says nothing.
    world.cargo(&project, &["clean"]).ok();
    let again = world.cargo(&project, &["build"]).ok();
    assert!(kache_lines(&again).is_empty(), "{}", again.stderr());
    assert_all_hit(&again);
    let doctor = world.kache(&["doctor", "--verify"]);
    assert!(doctor.status.success(), "{}", text(&doctor));
    assert!(text(&doctor).contains("damaged index was kept"));
}

#[test]
fn garbage_over_the_start_of_the_index_is_moved_aside_and_rebuilt_then_hits() {
    index_damage_is_healed(|index| {
        let mut bytes = std::fs::read(index).unwrap();
        assert!(bytes.len() > 4096);
        for (i, b) in bytes.iter_mut().take(4096).enumerate() {
            *b = (i as u8).wrapping_mul(31) ^ 0xa5;
        }
        std::fs::write(index, bytes).unwrap();
    });
}

#[test]
fn a_truncated_index_is_moved_aside_and_rebuilt_then_hits() {
    index_damage_is_healed(|index| {
        let len = std::fs::metadata(index).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(index).unwrap();
        file.set_len(len / 2).unwrap();
    });
}

#[test]
fn damaged_pages_inside_the_index_found_by_a_compile_are_rebuilt_once() {
    let world = World::new();
    let project = world.project("p");
    world.cargo(&project, &["build"]).ok();
    // The header page stays intact, so opening succeeds; every other page
    // after it is garbage, which the first query that reads one reports.
    let index = world.cache.join("index.db");
    let mut bytes = std::fs::read(&index).unwrap();
    for page in bytes.chunks_mut(4096).skip(1).step_by(2) {
        page.fill(0x5a);
    }
    std::fs::write(&index, bytes).unwrap();
    world.cargo(&project, &["clean"]).ok();
    let healed = world.cargo(&project, &["build"]).ok();
    assert_eq!(run_app(&project), EXPECTED_LINE);
    let lines = kache_lines(&healed);
    assert_eq!(lines.len(), 1, "{}", healed.stderr());
    assert!(lines[0].contains("could not be read"), "{}", lines[0]);
    world.cargo(&project, &["clean"]).ok();
    let again = world.cargo(&project, &["build"]).ok();
    assert!(kache_lines(&again).is_empty(), "{}", again.stderr());
    assert_all_hit(&again);
}

#[test]
fn builds_racing_on_a_damaged_index_rebuild_it_once() {
    let world = World::new();
    let a = world.project("a");
    let b = world.project("b");
    world.cargo(&a, &["build"]).ok();
    let index = world.cache.join("index.db");
    let mut bytes = std::fs::read(&index).unwrap();
    bytes[..4096].fill(0x5a);
    std::fs::write(&index, bytes).unwrap();
    world.cargo(&a, &["clean"]).ok();
    let spawn = |dir: &Path| {
        world
            .command("cargo", dir)
            .args(["build", "--offline"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn cargo")
    };
    let (first, second) = (spawn(&a), spawn(&b));
    let (first, second) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    assert!(first.status.success() && second.status.success());
    assert_eq!(run_app(&a), EXPECTED_LINE);
    assert_eq!(run_app(&b), EXPECTED_LINE);
    let both = format!("{}{}", text(&first), text(&second));
    let rebuilt = both
        .lines()
        .filter(|l| l.contains("could not be read"))
        .count();
    assert_eq!(rebuilt, 1, "one rebuild, one line: {both}");
    world.assert_store_verifies();
    world.cargo(&a, &["clean"]).ok();
    assert_all_hit(&world.cargo(&a, &["build"]).ok());
}

#[test]
fn a_deleted_index_is_refilled_from_the_entries_on_disk() {
    let world = World::new();
    let project = world.project("p");
    world.cargo(&project, &["build"]).ok();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!(
            "{}{suffix}",
            world.cache.join("index.db").display()
        ));
    }
    world.cargo(&project, &["clean"]).ok();
    let healed = world.cargo(&project, &["build"]).ok();
    let lines = kache_lines(&healed);
    assert_eq!(lines.len(), 1, "{}", healed.stderr());
    assert!(lines[0].contains("was missing"), "{}", lines[0]);
    assert_all_hit(&healed);
}

#[test]
fn a_store_that_fills_its_disk_keeps_builds_green_leaves_no_temp_file_and_serves_nothing_half_written()
 {
    let mut world = World::new();
    let small = Mount::tmpfs(&world.root.path().join("small"), "3m");
    world.cache = small.0.join("cache");
    let project = world.project("p");
    // The fixture stores about 9.5 MiB: the disk fills during this build.
    let full = world.cargo(&project, &["build"]).ok();
    assert_eq!(run_app(&project), EXPECTED_LINE);
    let lines = kache_lines(&full);
    assert_eq!(lines.len(), 1, "once per build: {}", full.stderr());
    assert!(
        lines[0].starts_with("kache: cache disabled for this build: no space left"),
        "{}",
        lines[0]
    );
    assert_eq!(temp_files(&world.cache), Vec::<PathBuf>::new());
    let stats = world.kache(&["stats"]);
    assert!(
        text(&stats).contains("cache disabled in a build"),
        "{}",
        text(&stats)
    );

    // A second build on the full disk: still green, still nothing left over.
    world.cargo(&project, &["clean"]).ok();
    world.cargo(&project, &["build"]).ok();
    assert_eq!(run_app(&project), EXPECTED_LINE);
    let gc = world.kache(&["gc"]);
    assert!(gc.status.success(), "{}", text(&gc));
    assert_eq!(temp_files(&world.cache), Vec::<PathBuf>::new());

    // Space is back: what is served is whole, and everything gets stored.
    small.resize("64m");
    world.cargo(&project, &["clean"]).ok();
    let refill = world.cargo(&project, &["build"]).ok();
    assert!(kache_lines(&refill).is_empty(), "{}", refill.stderr());
    assert_eq!(run_app(&project), EXPECTED_LINE);
    world.assert_store_verifies();
    world.cargo(&project, &["clean"]).ok();
    let warm = world.cargo(&project, &["build"]).ok();
    assert_all_hit(&warm);
    assert_eq!(run_app(&project), EXPECTED_LINE);
    let stats = world.kache(&["stats"]);
    assert!(
        !text(&stats).contains("cache disabled"),
        "a later build stored entries: {}",
        text(&stats)
    );
    drop(small);
}

#[test]
fn a_read_only_cache_builds_green_and_says_so_once_whatever_progress_says() {
    let mut world = World::new();
    let writable = world.root.path().join("rw");
    world.cache = writable.join("cache");
    let project = world.project("p");
    world.cargo(&project, &["build"]).ok();
    let ro = Mount::read_only(&writable, &world.root.path().join("ro"));
    world.cache = ro.0.join("cache");

    world.cargo(&project, &["clean"]).ok();
    let run = world.cargo_with(&project, &["build"], &[("KACHE_PROGRESS", "0")]);
    let run = run.ok();
    assert_eq!(run_app(&project), EXPECTED_LINE);
    assert_eq!(
        kache_lines(&run),
        [format!(
            "kache: cache disabled for this build: {} is on a read-only filesystem",
            world.cache.display()
        )],
        "{}",
        run.stderr()
    );
    let stats = world.kache(&["stats"]);
    assert!(
        text(&stats).contains("read-only filesystem"),
        "{}",
        text(&stats)
    );
    let doctor = world.kache(&["doctor"]);
    assert!(!doctor.status.success());
    assert!(
        text(&doctor).contains("read-only filesystem"),
        "{}",
        text(&doctor)
    );
    drop(ro);
}

#[test]
fn a_cache_dir_that_is_a_file_builds_green_and_says_so_once() {
    let mut world = World::new();
    world.cache = world.root.path().join("a-file");
    std::fs::write(&world.cache, "not a directory").unwrap();
    let project = world.project("p");
    let run = world.cargo(&project, &["build"]).ok();
    assert_eq!(run_app(&project), EXPECTED_LINE);
    assert_eq!(
        kache_lines(&run),
        [format!(
            "kache: cache disabled for this build: {} is not a directory",
            world.cache.display()
        )],
        "{}",
        run.stderr()
    );
    let doctor = world.kache(&["doctor"]);
    assert!(!doctor.status.success());
    assert!(
        text(&doctor).contains("is not a directory"),
        "{}",
        text(&doctor)
    );
}

#[test]
fn an_entry_whose_meta_json_is_deleted_stops_hitting_and_verify_and_repair_see_it() {
    let world = World::new();
    let project = world.project("p");
    world.cargo(&project, &["build"]).ok();
    let store = world.cache.join("store");

    // Found by a compile: the entry is dropped, the unit compiles again.
    std::fs::remove_file(store.join(key_of(&world, "fx_gen")).join("meta.json")).unwrap();
    world.cargo(&project, &["clean"]).ok();
    let run = world.cargo(&project, &["build"]).ok();
    // Compiled again (`dup`: its bytes are still stored), not restored.
    assert_eq!(run.outcome("fx_gen"), "dup", "{:?}", run.outcomes());
    assert_eq!(run.outcome("fx_core"), "hit");
    assert_eq!(run_app(&project), EXPECTED_LINE);

    // Found by verify, removed by repair.
    std::fs::remove_file(store.join(key_of(&world, "fx_core")).join("meta.json")).unwrap();
    let verify = world.kache(&["doctor", "--verify"]);
    assert!(!verify.status.success(), "{}", text(&verify));
    assert!(
        text(&verify).contains("has no meta.json"),
        "{}",
        text(&verify)
    );
    assert!(text(&verify).contains("kache doctor --repair"));
    let repair = world.kache(&["doctor", "--repair"]);
    assert!(repair.status.success(), "{}", text(&repair));
    world.assert_store_verifies();
    world.cargo(&project, &["clean"]).ok();
    let after = world.cargo(&project, &["build"]).ok();
    assert_ne!(after.outcome("fx_core"), "hit", "{:?}", after.outcomes());
    world.cargo(&project, &["clean"]).ok();
    assert_all_hit(&world.cargo(&project, &["build"]).ok());
}

#[test]
fn repair_does_everything_verify_says_it_will() {
    let world = World::new();
    let project = world.project("p");
    world.cargo(&project, &["build"]).ok();
    let store = world.cache.join("store");
    // A blob with a flipped byte, an entry without meta.json, a stale temp
    // file (its writer, a pid above Linux's limit, cannot run), an entry
    // directory without an index row.
    let mut blobs = world.blobs();
    blobs.sort_by_key(|b| std::fs::metadata(b).unwrap().len());
    let victim = blobs.last().unwrap().clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::remove_file(&victim).unwrap();
    std::fs::write(&victim, &bytes).unwrap();
    std::fs::remove_file(store.join(key_of(&world, "fx_gen")).join("meta.json")).unwrap();
    let temp = victim.with_file_name(".tmp-4194305-0-stale");
    std::fs::write(&temp, vec![0u8; 4096]).unwrap();
    let orphan = store.join("ab".repeat(32));
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("meta.json"), "{ not an entry").unwrap();

    let verify = world.kache(&["doctor", "--verify"]);
    let said = text(&verify);
    assert!(!verify.status.success(), "{said}");
    for expected in [
        "is corrupt",
        "has no meta.json",
        "stale temp files",
        "entry directories without an index row",
        "run `kache doctor --repair`",
    ] {
        assert!(said.contains(expected), "{expected:?} in {said}");
    }
    let repair = world.kache(&["doctor", "--repair"]);
    assert!(repair.status.success(), "{}", text(&repair));
    assert!(!victim.exists(), "the corrupt blob is gone");
    assert!(!temp.exists(), "the stale temp file is gone");
    assert!(!orphan.exists(), "the broken entry directory is gone");
    let after = world.kache(&["doctor", "--verify"]);
    assert!(after.status.success(), "{}", text(&after));
    assert!(
        !text(&after).contains("bad ") && !text(&after).contains("stale"),
        "{}",
        text(&after)
    );
    world.cargo(&project, &["clean"]).ok();
    world.cargo(&project, &["build"]).ok();
    assert_eq!(run_app(&project), EXPECTED_LINE);
}

#[test]
fn a_stale_temp_file_is_removed_by_the_next_store_or_gc() {
    let world = World::new();
    let project = world.project("p");
    world.cargo(&project, &["build"]).ok();
    let shard = world.blobs()[0].parent().unwrap().to_path_buf();
    let plant = || {
        let temp = shard.join(".tmp-4194305-7-halfwritten");
        std::fs::write(&temp, vec![1u8; 8192]).unwrap();
        temp
    };
    let temp = plant();
    let gc = world.kache(&["gc"]);
    assert!(gc.status.success(), "{}", text(&gc));
    assert!(!temp.exists(), "gc removes a stale temp file");

    // The next compile that stores sweeps (at most once an hour: the
    // stamp of the last sweep is removed here to make this one due).
    let temp = plant();
    let _ = std::fs::remove_file(world.cache.join("store/.swept"));
    common::edit(&project, "core/greeting.txt", "hello", "howdy");
    let run = world.cargo(&project, &["build"]).ok();
    assert_eq!(run.outcome("fx_core"), "miss");
    assert!(!temp.exists(), "the next store removes a stale temp file");
}

#[test]
fn stats_and_report_skip_a_malformed_event_line_and_count_what_follows() {
    let world = World::new();
    let project = world.project("p");
    world.cargo(&project, &["build"]).ok();
    {
        use std::io::Write;
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(world.cache.join("events.jsonl"))
            .unwrap();
        // A torn, non-UTF-8 line, as a full disk or a killed writer leaves.
        log.write_all(b"{\"ts_ms\":17\xff\xfe,\"crate_na\n")
            .unwrap();
    }
    world.cargo(&project, &["clean"]).ok();
    // (The harness's own event reader stops at the bad line: `stats` counts.)
    world.cargo(&project, &["build"]).ok();

    let stats = world.kache(&["stats"]);
    let said = text(&stats);
    assert!(stats.status.success(), "{said}");
    assert!(
        said.contains("hits: 6") && said.contains("misses: 6"),
        "the events after the bad line count: {said}"
    );
    assert!(said.contains("skipped 1 malformed line"), "{said}");
    let report = world.kache(&["report", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(json["hits"], 6, "{json}");
    assert!(String::from_utf8_lossy(&report.stderr).contains("skipped 1 malformed line"));
}

#[test]
fn gc_max_age_0s_removes_every_entry() {
    let world = World::new();
    let project = world.project("p");
    world.cargo(&project, &["build"]).ok();
    let gc = world.kache(&["gc", "--max-age", "0s"]);
    assert!(gc.status.success(), "{}", text(&gc));
    assert!(text(&gc).contains("removed 6 entries"), "{}", text(&gc));
    assert!(world.blobs().is_empty(), "{:?}", world.blobs());
    assert!(text(&world.kache(&["list"])).contains("(no entries)"));
    world.cargo(&project, &["clean"]).ok();
    let run = world.cargo(&project, &["build"]).ok();
    assert!(run.events.iter().all(|e| e["outcome"] != "hit"));
    assert_eq!(run_app(&project), EXPECTED_LINE);
}

#[test]
fn a_unit_cargo_did_not_run_prints_no_progress_line() {
    let world = World::new();
    let project = world.project("p");
    let cold = world.cargo(&project, &["build"]).ok();
    assert!(
        cold.stderr().contains("[kache] fx_core: miss ("),
        "{}",
        cold.stderr()
    );
    let noop = world.cargo(&project, &["build"]).ok();
    assert!(!noop.stderr().contains("[kache]"), "{}", noop.stderr());
    assert!(
        noop.stderr().contains("unused variable"),
        "cargo still replays rustc's warnings: {}",
        noop.stderr()
    );
    world.cargo(&project, &["clean"]).ok();
    let warm = world.cargo(&project, &["build"]).ok();
    assert!(
        warm.stderr().contains("[kache] fx_core: local hit ("),
        "{}",
        warm.stderr()
    );
    let noop = world.cargo(&project, &["build"]).ok();
    assert!(!noop.stderr().contains("[kache]"), "{}", noop.stderr());
}

#[test]
fn a_daemon_whose_cache_dir_is_deleted_exits_and_recreates_nothing() {
    let mut world = World::new();
    let shared = world.root.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let remote = world.fs_remote(&shared);
    world.env.push(remote);
    world
        .env
        .push(("KACHE_DAEMON_IDLE_TIMEOUT".into(), "600".into()));
    let project = world.project("p");
    world.cargo(&project, &["build"]).ok();
    let started = world.kache(&["daemon", "start"]);
    assert!(started.status.success(), "{}", text(&started));
    let said = text(&started);
    let pid: u32 = said
        .split("pid ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {said}"));

    std::fs::remove_dir_all(&world.cache).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while runs(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let alive = runs(pid);
    if alive {
        // SAFETY: kill(2) on the daemon this test started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    assert!(!alive, "the daemon outlived its cache directory");
    assert!(
        !world.cache.exists(),
        "the daemon recreated {}",
        world.cache.display()
    );
}

/// Whether process `pid` runs (a zombie waiting for its reaper does not).
fn runs(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|s| s != "Z"))
        })
        .unwrap_or(false)
}
