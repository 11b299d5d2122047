//! A real terminal for the interactive commands: a private tmux server
//! (its own socket), keys typed with `send-keys`, the screen read with
//! `capture-pane`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::World;

/// One tmux server with one 120×40 window running `bash`, killed on drop.
pub struct Terminal {
    socket: String,
}

impl Terminal {
    /// A shell in `dir` with the world's environment (kache's cache dir and
    /// config); the prompt is `$ `.
    pub fn open(world: &World, dir: &Path) -> Self {
        let socket = format!("kache-test-{}-{}", std::process::id(), unique());
        let status = world
            .command("tmux", dir)
            .env_remove("TMUX")
            .env("PS1", "$ ")
            .env("TERM", "xterm-256color")
            .args(["-L", &socket, "-f", "/dev/null", "new-session", "-d"])
            .args(["-x", "120", "-y", "40", "bash", "--norc", "--noprofile"])
            .status()
            .expect("run tmux");
        assert!(status.success(), "tmux did not start");
        Self { socket }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("run tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `text` and presses Enter.
    pub fn line(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "0", "-l", text]);
        self.tmux(&["send-keys", "-t", "0", "Enter"]);
    }

    /// Presses keys by tmux name (`q`, `Tab`, `Down`, `C-c`, ...).
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "0"];
        args.extend(keys);
        self.tmux(&args);
    }

    /// What the window shows now.
    pub fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "0"])
    }

    /// Waits until the screen contains `text` and returns the screen;
    /// panics with the screen after `seconds`.
    pub fn wait_for(&self, text: &str, seconds: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{text:?} never appeared; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clears the screen and its history, so later waits see only new text.
    pub fn clear(&self) {
        self.line("clear");
        self.tmux(&["clear-history", "-t", "0"]);
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.tmux(&["kill-server"]);
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
