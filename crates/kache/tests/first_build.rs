//! A fresh runner that starts no daemon first: the first compile finds
//! none, starts it and waits (bounded) until its socket answers, so even
//! the first units of the first build are served from a warm bucket
//! (Garage, a real S3 server). Before the wait, on a fresh cache the
//! first compiles ran rustc while the daemon was still starting.

mod common;

use std::process::Output;

use common::garage::Garage;
use common::{EXPECTED_LINE, LIBS, World, run_app};

fn ok(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "kache failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_first_build_on_a_fresh_cache_is_fully_served_without_starting_a_daemon_first() {
    let garage = Garage::start();
    let a = World::with_env(garage.env());
    let project = a.project("p");
    a.cargo(&project, &["build"]).ok();
    ok(a.kache(&["daemon", "stop", "--drain", "60"]));
    a.cargo(&project, &["clean"]).ok();

    // No `kache daemon start`: cargo's first compile meets no daemon.
    let b = World::with_env(garage.env());
    assert!(!b.cache.join("daemon.sock").exists());
    let run = b.cargo(&project, &["build"]).ok();
    for lib in LIBS {
        let sources: Vec<String> = run
            .events
            .iter()
            .filter(|e| e["crate_name"] == *lib && e["outcome"] == "hit")
            .map(|e| e["source"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            sources.len(),
            1,
            "{lib} was not served: {:?}",
            run.outcomes()
        );
        assert!(
            sources[0] == "remote" || sources[0] == "prefetch",
            "{lib} came from {sources:?}"
        );
    }
    assert_eq!(run_app(&project), EXPECTED_LINE);
    ok(b.kache(&["daemon", "stop", "--drain", "10"]));
}
