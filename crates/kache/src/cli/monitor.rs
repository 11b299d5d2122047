//! `kache monitor`: a live view of the cache in the terminal (ratatui on
//! crossterm).
//!
//! It reads what kache writes anyway — the event log, the store's index,
//! the daemon's status when one runs — so it works without a daemon and
//! never changes anything. Five tabs: the build (each unit's outcome as it
//! happens), projects (`target/` folders under the current directory),
//! the store (entries, sortable and filterable), transfers (the daemon's
//! queue and counters, recent network hits) and passthroughs (calls kache
//! did not cache, by reason). The terminal is restored on exit, on Ctrl-C
//! and on a panic.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use kache_core::size::format_size;
use ratatui::crossterm::event::KeyCode;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table, Tabs};
use ratatui::{DefaultTerminal, Frame};

use super::clean::{self, TargetDir};
use super::tui::{Press, next_press};
use crate::config::Config;
use crate::daemon::protocol::Status;
use crate::events::{self, Event, Outcome};
use crate::store::EntryRow;

#[derive(clap::Args)]
pub struct Args {
    /// Show this much history first (e.g. 1h, 7d), then follow; default:
    /// only what happens from now on.
    #[arg(long, value_parser = super::parse_age)]
    since: Option<Duration>,
}

const TABS: [&str; 5] = ["Build", "Projects", "Store", "Transfers", "Passthroughs"];

/// How the store tab orders its entries (`s` cycles).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sort {
    Recent,
    Size,
    Hits,
    Name,
}

struct Monitor {
    config: Config,
    since_ms: u64,
    tab: usize,
    events: Vec<Event>,
    entries: Vec<EntryRow>,
    projects: Vec<TargetDir>,
    projects_root: PathBuf,
    daemon: Option<Status>,
    sort: Sort,
    /// Store filter (`/` to type, Enter or Esc to finish).
    filter: String,
    typing: bool,
}

pub fn run(config: &Config, args: Args) -> Result<ExitCode> {
    let since_ms = args.since.map_or_else(events::now_ms, |d| {
        events::now_ms().saturating_sub(d.as_millis() as u64)
    });
    let mut monitor = Monitor {
        config: config.clone(),
        since_ms,
        tab: 0,
        events: Vec::new(),
        entries: Vec::new(),
        projects: Vec::new(),
        projects_root: std::env::current_dir()?,
        daemon: None,
        sort: Sort::Recent,
        filter: String::new(),
        typing: false,
    };
    monitor.refresh_projects();
    // `init` puts the terminal in raw mode on the alternate screen and
    // installs a panic hook that restores it; `restore` undoes it on every
    // way out of the loop.
    let mut terminal = ratatui::init();
    let result = monitor.run(&mut terminal);
    ratatui::restore();
    result?;
    Ok(ExitCode::SUCCESS)
}

impl Monitor {
    fn run(&mut self, terminal: &mut DefaultTerminal) -> Result<()> {
        let mut last = Instant::now() - Duration::from_secs(1);
        loop {
            if last.elapsed() >= Duration::from_millis(500) {
                self.refresh();
                last = Instant::now();
            }
            terminal.draw(|frame| self.draw(frame))?;
            let code = match next_press(Duration::from_millis(200))? {
                Press::Key(code) => code,
                Press::Interrupt => return Ok(()),
                Press::Nothing => continue,
            };
            if self.typing {
                match code {
                    KeyCode::Enter | KeyCode::Esc => self.typing = false,
                    KeyCode::Backspace => {
                        self.filter.pop();
                    }
                    KeyCode::Char(c) => self.filter.push(c),
                    _ => {}
                }
                continue;
            }
            match code {
                KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                KeyCode::Tab | KeyCode::Right => self.select((self.tab + 1) % TABS.len()),
                KeyCode::BackTab | KeyCode::Left => {
                    self.select((self.tab + TABS.len() - 1) % TABS.len())
                }
                KeyCode::Char(c @ '1'..='5') => self.select(c as usize - '1' as usize),
                KeyCode::Char('s') => {
                    self.sort = match self.sort {
                        Sort::Recent => Sort::Size,
                        Sort::Size => Sort::Hits,
                        Sort::Hits => Sort::Name,
                        Sort::Name => Sort::Recent,
                    }
                }
                KeyCode::Char('/') => {
                    self.tab = 2;
                    self.typing = true;
                }
                KeyCode::Char('r') => self.refresh_projects(),
                _ => {}
            }
        }
    }

    /// Shows tab `tab`; the projects tab rescans the disk each time it is
    /// opened (a walk is too slow to repeat every half second).
    fn select(&mut self, tab: usize) {
        self.tab = tab;
        if tab == 1 {
            self.refresh_projects();
        }
    }

    /// Re-reads the event log, the store index and the daemon's status.
    fn refresh(&mut self) {
        self.events = events::read(&self.config.cache_dir, self.since_ms);
        if let Ok(store) = super::open_store(&self.config) {
            self.entries = store.index.rows().unwrap_or_default();
        }
        self.daemon = crate::daemon::client::status(&self.config.cache_dir);
    }

    fn refresh_projects(&mut self) {
        let blobs = clean::store_inodes(&self.config.cache_dir.join("store").join("blobs"));
        self.projects = clean::find_targets(&self.projects_root)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|path| clean::measure(path, &blobs).ok())
            .collect();
    }

    fn draw(&self, frame: &mut Frame) {
        let [tabs, body, help] = Layout::vertical([
            Constraint::Length(3),
            Constraint::Min(3),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        let title = format!(" kache monitor — {} ", self.config.cache_dir.display());
        frame.render_widget(
            Tabs::new(
                TABS.iter()
                    .enumerate()
                    .map(|(i, t)| format!("{} {t}", i + 1)),
            )
            .select(self.tab)
            .highlight_style(Style::new().add_modifier(Modifier::REVERSED))
            .block(Block::bordered().title(title)),
            tabs,
        );
        match self.tab {
            0 => self.draw_build(frame, body),
            1 => self.draw_projects(frame, body),
            2 => self.draw_store(frame, body),
            3 => self.draw_transfers(frame, body),
            _ => self.draw_passthroughs(frame, body),
        }
        let keys = if self.typing {
            format!(
                "filter: {}▏  (Enter to keep, Esc to stop typing)",
                self.filter
            )
        } else {
            "q quit · Tab/1-5 switch · s sort store · / filter store · r rescan projects".into()
        };
        frame.render_widget(Paragraph::new(keys), help);
    }

    fn draw_build(&self, frame: &mut Frame, area: ratatui::layout::Rect) {
        let [head, body] =
            Layout::vertical([Constraint::Length(2), Constraint::Min(1)]).areas(area);
        let summary = super::report::summarize(&self.events, 0);
        let mut headline = format!(
            "{} hits · {} misses · {} dups · {} passthroughs · hit rate {:.0}% · saved {:.1}s",
            summary.hits,
            summary.misses,
            summary.dups,
            summary.passthroughs,
            summary.hit_rate * 100.0,
            summary.time_saved_ms as f64 / 1000.0
        );
        // Runs are counted in the hits and misses too; their own line.
        if summary.build_script_run_hits + summary.build_script_run_misses > 0 {
            headline += &format!(
                "\nbuild-script runs: {} replayed, {} executed",
                summary.build_script_run_hits, summary.build_script_run_misses
            );
        }
        frame.render_widget(Paragraph::new(headline), head);
        let rows = self
            .events
            .iter()
            .rev()
            .filter(|e| e.outcome != Outcome::Passthrough)
            .map(|e| {
                Row::new([
                    super::age(e.ts_ms / 1000),
                    e.crate_name.clone(),
                    outcome_label(e),
                    format!("{} ms", e.elapsed_ms),
                    format_size(e.bytes),
                    short_key(e.cache_key.as_deref()),
                ])
            });
        let columns = [
            ("AGO", Constraint::Length(5)),
            ("CRATE", Constraint::Length(28)),
            ("OUTCOME", Constraint::Length(14)),
            ("TIME", Constraint::Length(10)),
            ("BYTES", Constraint::Length(11)),
            ("KEY", Constraint::Min(16)),
        ];
        frame.render_widget(table(rows, columns, " units, newest first "), body);
    }

    fn draw_projects(&self, frame: &mut Frame, area: ratatui::layout::Rect) {
        let rows = self.projects.iter().map(|p| {
            let shown = p.path.strip_prefix(&self.projects_root).unwrap_or(&p.path);
            Row::new([
                shown.display().to_string(),
                format_size(p.bytes),
                format!(
                    "{:.0}%",
                    p.cached_bytes as f64 * 100.0 / p.bytes.max(1) as f64
                ),
                p.profiles.join(","),
            ])
        });
        let columns = [
            ("PATH", Constraint::Min(30)),
            ("SIZE", Constraint::Length(11)),
            ("CACHED", Constraint::Length(7)),
            ("PROFILES", Constraint::Length(30)),
        ];
        let title = format!(" target/ folders under {} ", self.projects_root.display());
        frame.render_widget(table(rows, columns, title), area);
    }

    fn draw_store(&self, frame: &mut Frame, area: ratatui::layout::Rect) {
        let mut entries: Vec<&EntryRow> = self
            .entries
            .iter()
            .filter(|e| self.filter.is_empty() || e.crate_name.contains(&self.filter))
            .collect();
        match self.sort {
            Sort::Recent => entries.sort_by_key(|e| std::cmp::Reverse(e.last_used)),
            Sort::Size => entries.sort_by_key(|e| std::cmp::Reverse(e.size)),
            Sort::Hits => entries.sort_by_key(|e| std::cmp::Reverse(e.hits)),
            Sort::Name => entries.sort_by(|a, b| a.crate_name.cmp(&b.crate_name)),
        }
        let total: u64 = self.entries.iter().map(|e| e.size).sum();
        let title = format!(
            " {} of {} entries, {} · sorted by {} ",
            entries.len(),
            self.entries.len(),
            format_size(total),
            match self.sort {
                Sort::Recent => "last use",
                Sort::Size => "size",
                Sort::Hits => "hits",
                Sort::Name => "name",
            }
        );
        let rows = entries.into_iter().map(|e| {
            Row::new([
                e.crate_name.clone(),
                format_size(e.size),
                e.hits.to_string(),
                super::age(e.last_used),
                short_key(Some(&e.cache_key)),
            ])
        });
        let columns = [
            ("CRATE", Constraint::Length(28)),
            ("SIZE", Constraint::Length(11)),
            ("HITS", Constraint::Length(6)),
            ("USED", Constraint::Length(6)),
            ("KEY", Constraint::Min(16)),
        ];
        frame.render_widget(table(rows, columns, title), area);
    }

    fn draw_transfers(&self, frame: &mut Frame, area: ratatui::layout::Rect) {
        let [head, body] =
            Layout::vertical([Constraint::Length(6), Constraint::Min(1)]).areas(area);
        let status = match &self.daemon {
            Some(s) => vec![
                Line::from(format!(
                    "daemon pid {} · up {}s · {} uploads queued · {} uploaded · {} remote hits · {} prefetched",
                    s.pid, s.uptime_secs, s.queued, s.uploaded, s.remote_hits, s.prefetched
                )),
                Line::from(format!("remotes: {}", s.remotes.join(", "))),
                Line::from(if s.active.is_empty() {
                    "under way: nothing".to_string()
                } else {
                    let shown: Vec<String> = s
                        .active
                        .iter()
                        .map(|t| {
                            format!(
                                "{} {} ({} ms)",
                                t.direction,
                                short_key(Some(&t.cache_key)),
                                t.elapsed_ms
                            )
                        })
                        .collect();
                    format!("under way ({}): {}", shown.len(), shown.join(" · "))
                }),
            ],
            None => vec![Line::from(
                "no daemon runs: nothing is uploading or prefetching (reading the store and log directly)",
            )],
        };
        frame.render_widget(Paragraph::new(status), head);
        let rows = self
            .events
            .iter()
            .rev()
            .filter(|e| matches!(e.source.as_deref(), Some("remote" | "prefetch")))
            .map(|e| {
                let speed = e.bytes as f64 / (e.elapsed_ms.max(1) as f64 / 1000.0);
                Row::new([
                    super::age(e.ts_ms / 1000),
                    e.crate_name.clone(),
                    e.source.clone().unwrap_or_default(),
                    format_size(e.bytes),
                    format!("{}/s", format_size(speed as u64)),
                    short_key(e.cache_key.as_deref()),
                ])
            });
        let columns = [
            ("AGO", Constraint::Length(5)),
            ("CRATE", Constraint::Length(28)),
            ("FROM", Constraint::Length(9)),
            ("BYTES", Constraint::Length(11)),
            ("SPEED", Constraint::Length(13)),
            ("KEY", Constraint::Min(16)),
        ];
        frame.render_widget(table(rows, columns, " recent downloads "), body);
    }

    fn draw_passthroughs(&self, frame: &mut Frame, area: ratatui::layout::Rect) {
        let mut by_reason: BTreeMap<(String, String), u64> = BTreeMap::new();
        for e in self
            .events
            .iter()
            .filter(|e| e.outcome == Outcome::Passthrough)
        {
            let reason = e.reason.clone().unwrap_or_else(|| "-".into());
            *by_reason.entry((reason, e.crate_name.clone())).or_default() += 1;
        }
        let rows = by_reason
            .into_iter()
            .map(|((reason, name), n)| Row::new([reason, name, n.to_string()]));
        let columns = [
            ("REASON", Constraint::Min(30)),
            ("CRATE", Constraint::Length(28)),
            ("CALLS", Constraint::Length(6)),
        ];
        frame.render_widget(
            table(rows, columns, " calls kache ran rustc for without caching "),
            area,
        );
    }
}

/// A bordered table with a bold header: each column's name beside its width.
fn table<'a, const N: usize>(
    rows: impl IntoIterator<Item = Row<'a>>,
    columns: [(&'static str, Constraint); N],
    title: impl Into<Line<'a>>,
) -> Table<'a> {
    let header = Row::new(columns.map(|(name, _)| name));
    Table::new(rows, columns.map(|(_, width)| width))
        .header(header.style(Style::new().add_modifier(Modifier::BOLD)))
        .block(Block::bordered().title(title))
}

fn outcome_label(event: &Event) -> String {
    match event.outcome {
        Outcome::Hit => format!("hit ({})", event.source.as_deref().unwrap_or("local")),
        Outcome::Miss => "miss".into(),
        Outcome::Dup => "dup".into(),
        Outcome::Passthrough => "passthrough".into(),
        Outcome::WrongHit => "WRONG HIT".into(),
        Outcome::Refused => "refused (remote)".into(),
    }
}

/// The first 16 hex digits of a key: enough to tell entries apart.
fn short_key(key: Option<&str>) -> String {
    key.map_or_else(|| "-".into(), |k| k[..k.len().min(16)].to_string())
}
