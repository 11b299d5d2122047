//! What the terminal programs (`monitor`, `config`) share: reading one key
//! press at a time.

use std::time::Duration;

use anyhow::Result;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

/// What the user did while a program waited.
pub enum Press {
    Key(KeyCode),
    /// Ctrl-C: the program quits (raw mode turns it into a key, not a signal).
    Interrupt,
    /// Nothing within the wait (or only a release, a resize, the mouse).
    Nothing,
}

/// Waits up to `wait` for a key press.
pub fn next_press(wait: Duration) -> Result<Press> {
    if !event::poll(wait)? {
        return Ok(Press::Nothing);
    }
    let Event::Key(key) = event::read()? else {
        return Ok(Press::Nothing);
    };
    Ok(if key.kind != KeyEventKind::Press {
        Press::Nothing
    } else if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        Press::Interrupt
    } else {
        Press::Key(key.code)
    })
}
