//! `kache clean` in a real terminal, on target folders of real builds.

mod common;

use common::World;
use common::tmux::Terminal;

#[test]
fn clean_lists_target_folders_and_deletes_the_chosen_ones_but_never_the_store() {
    let world = World::new();
    let app = world.project("app");
    world.cargo(&app, &["build"]).ok();
    let target = app.join("target");
    // A folder named target that cargo did not make is not a target folder.
    std::fs::create_dir_all(world.root.path().join("notes/target")).unwrap();

    let term = Terminal::open(&world, world.root.path());
    term.line(&format!("{} clean --dry-run", common::KACHE));
    let screen = term.wait_for("dry run: nothing deleted", 30);
    let row = screen
        .lines()
        .find(|l| l.ends_with("app/target"))
        .unwrap_or_else(|| panic!("app/target not listed:\n{screen}"));
    assert!(row.contains("debug"), "profiles shown: {row}");
    let cached: f64 = row
        .split_whitespace()
        .find_map(|w| w.strip_suffix('%')?.parse().ok())
        .expect("a cached share");
    assert!(cached > 0.0, "rlibs are hardlinked from the store: {row}");
    assert!(!screen.contains("notes/target"), "{screen}");
    assert!(target.is_dir(), "a dry run deletes nothing");

    // Interactive: the selector asks, `1` picks the only folder.
    term.clear();
    term.line(&format!("{} clean", common::KACHE));
    term.wait_for("delete which?", 30);
    term.line("1");
    let screen = term.wait_for("freed", 30);
    assert!(screen.contains("in 1 folder"), "{screen}");
    assert!(!target.exists());

    // The store was not touched: the next build is all hits, `-y` deletes
    // without asking.
    let warm = world.cargo(&app, &["build"]).ok();
    let outcomes = warm.outcomes();
    assert!(
        outcomes.values().flatten().all(|o| o != "miss"),
        "{outcomes:?}"
    );
    world.assert_store_verifies();
    term.clear();
    term.line(&format!("{} clean -y", common::KACHE));
    term.wait_for("freed", 30);
    assert!(!target.exists());
    world.assert_store_verifies();
}
