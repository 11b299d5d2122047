//! `kache monitor` in a real terminal (tmux) while a real build runs.

mod common;

use common::World;
use common::tmux::Terminal;

/// True when the terminal is back in canonical (line) mode, as a shell
/// leaves it; a program that left it raw shows `-icanon`.
fn assert_terminal_restored(term: &Terminal) {
    term.clear();
    // The quotes split the marker, so the typed command never matches it.
    term.line("stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon | sed 's/^/MO''DE:/'");
    let screen = term.wait_for("MODE:", 10);
    assert!(screen.contains("MODE:icanon"), "{screen}");
}

#[test]
fn the_monitor_shows_a_builds_hits_as_they_happen_and_restores_the_terminal() {
    let world = World::new();
    let app = world.project("app");
    world.cargo(&app, &["build"]).ok();
    world.cargo(&app, &["clean"]).ok();

    let term = Terminal::open(&world, &app);
    term.line(&format!("{} monitor", common::KACHE));
    term.wait_for("2 Projects", 30);
    let screen = term.screen();
    assert!(
        !screen.contains("hit (local)"),
        "nothing happened yet:\n{screen}"
    );

    // The warm build runs while the monitor watches.
    let warm = world.cargo(&app, &["build"]).ok();
    let hits = warm
        .outcomes()
        .values()
        .flatten()
        .filter(|o| *o == "hit")
        .count();
    assert!(hits >= 4, "{:?}", warm.outcomes());
    // The monitor refreshes every half second: a screen drawn while the
    // build ran may still be up, so wait for the whole build's count.
    let screen = term.wait_for(&format!("{hits} hits"), 30);
    assert!(screen.contains("hit (local)"), "{screen}");
    assert!(screen.contains("fx_core"), "{screen}");
    // `fx-gen`'s build-script run, replayed: its own kind.
    assert!(
        screen.contains("build-script runs: 1 replayed, 0 executed"),
        "{screen}"
    );

    term.keys(&["2"]);
    let screen = term.wait_for("target/ folders under", 10);
    assert!(
        screen.contains("target") && screen.contains("debug"),
        "{screen}"
    );
    term.keys(&["3"]);
    let screen = term.wait_for("sorted by last use", 10);
    assert!(screen.contains("fx_macros"), "{screen}");
    term.keys(&["/"]);
    term.keys(&["-l", "fx_core"]);
    term.keys(&["Enter"]);
    let screen = term.wait_for("1 of ", 10);
    assert!(!screen.contains("fx_macros"), "filtered:\n{screen}");

    term.keys(&["q"]);
    assert_terminal_restored(&term);

    // Ctrl-C leaves the terminal as it found it too.
    term.line(&format!("{} monitor --since 1h", common::KACHE));
    let screen = term.wait_for("hit (local)", 30);
    assert!(screen.contains("2 Projects"), "history is shown: {screen}");
    term.keys(&["C-c"]);
    assert_terminal_restored(&term);
}
