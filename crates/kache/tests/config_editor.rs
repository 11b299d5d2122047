//! `kache config` in a real terminal (tmux): edits the file kache reads.

mod common;

use common::World;
use common::tmux::Terminal;

const FILE: &str = r#"# my settings
[cache]
max_size = "5G"
cache_executables = false # not shown by the editor

[cache.planner]
timeout_ms = 500
"#;

#[test]
fn the_editor_saves_a_change_keeps_the_rest_refuses_bad_values_and_shows_env_locks() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("kache.toml");
    std::fs::write(&path, FILE).unwrap();
    let world = World::with_env(vec![
        ("KACHE_CONFIG".into(), path.display().to_string()),
        ("KACHE_S3_BUCKET".into(), "from-the-environment".into()),
    ]);
    let term = Terminal::open(&world, world.root.path());
    term.line(&format!("{} config", common::KACHE));
    let screen = term.wait_for("SECTION", 30);
    let bucket = screen
        .lines()
        .find(|l| l.contains("cache.remote.bucket"))
        .unwrap_or_else(|| panic!("no bucket row:\n{screen}"));
    assert!(bucket.contains("locked by KACHE_S3_BUCKET"), "{bucket}");

    // Second row: max_size. A value that is not a size is refused.
    term.keys(&["Down", "Enter"]);
    term.wait_for("editing max_size", 10);
    term.keys(&["BSpace", "BSpace"]);
    term.keys(&["-l", "lots"]);
    term.keys(&["Enter"]);
    term.wait_for("invalid: \"lots\" is not a size", 10);
    term.keys(&["BSpace", "BSpace", "BSpace", "BSpace"]);
    term.keys(&["-l", "10G"]);
    term.keys(&["Enter"]);
    term.wait_for("max_size set", 10);

    // The locked field cannot be edited (the bucket, six rows below).
    for _ in 0..6 {
        term.keys(&["Down"]);
    }
    term.keys(&["Enter"]);
    term.wait_for("locked: KACHE_S3_BUCKET is set", 10);

    term.keys(&["s"]);
    term.wait_for("y/n", 10);
    term.keys(&["y"]);
    term.wait_for("saved", 10);
    term.keys(&["q"]);

    let saved = std::fs::read_to_string(&path).unwrap();
    assert!(saved.contains("max_size = \"10G\""), "{saved}");
    for kept in [
        "# my settings",
        "cache_executables = false # not shown by the editor",
        "timeout_ms = 500",
    ] {
        assert!(saved.contains(kept), "{kept:?} was dropped:\n{saved}");
    }
    let stats = world.kache(&["stats"]);
    assert!(stats.status.success(), "kache reads the saved file");

    // A broken file opens (so it can be fixed) and is kept aside on save.
    std::fs::write(&path, "[cache\nmax_size =").unwrap();
    assert!(!world.kache(&["stats"]).status.success());
    term.clear();
    term.line(&format!("{} config", common::KACHE));
    term.wait_for("does not parse", 30);
    term.keys(&["Down", "Enter"]);
    term.keys(&["-l", "2G"]);
    term.keys(&["Enter"]);
    term.wait_for("max_size set", 10);
    term.keys(&["s"]);
    term.wait_for("y/n", 10);
    term.keys(&["y"]);
    term.wait_for("saved", 10);
    term.keys(&["q"]);
    assert!(world.kache(&["stats"]).status.success());
    assert_eq!(
        std::fs::read_to_string(root.path().join("kache.toml.broken")).unwrap(),
        "[cache\nmax_size ="
    );
}
