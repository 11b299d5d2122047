//! `kache config`: an editor for the config file kache reads, in the
//! terminal (ratatui on crossterm).
//!
//! The file is edited as a document (`toml_edit`), so comments, order and
//! every key the editor does not show survive a save. A field that an
//! environment variable sets is shown locked, with the variable's name: the
//! file's value would not be used. Values are checked when typed, and the
//! whole file is checked the way kache reads it before it is written, after
//! a confirmation. A file that does not parse opens as an empty document with
//! the error shown; saving then keeps the old text beside it (`.broken`).
//!
//! The file is written mode 0600, and a file that would hold a secret (the
//! planner token) is not written inside a git work tree unless `--force`
//! says so: a token in a repository's `.kache.toml` ends up in a commit.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use ratatui::crossterm::event::KeyCode;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Block, Paragraph, Row, Table, TableState};
use ratatui::{DefaultTerminal, Frame};
use toml_edit::{DocumentMut, Item, Table as TomlTable, value};

use super::tui::{Press, next_press};
use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// The file to edit (default: the one kache reads, else the XDG one).
    path: Option<PathBuf>,
    /// Write a secret (the planner token) even into a file inside a git
    /// work tree.
    #[arg(long)]
    force: bool,
}

/// What a field holds, and so how a typed value is checked.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Secret,
    Bool,
    Size,
    Number { min: i64, max: i64 },
    Choice(&'static [&'static str]),
}

struct Field {
    section: &'static str,
    /// `[cache]`, `[cache.remote]`, ... and the key inside it.
    table: &'static [&'static str],
    key: &'static str,
    env: Option<&'static str>,
    kind: Kind,
}

const fn field(
    section: &'static str,
    table: &'static [&'static str],
    key: &'static str,
    env: Option<&'static str>,
    kind: Kind,
) -> Field {
    Field {
        section,
        table,
        key,
        env,
        kind,
    }
}

const CACHE: &[&str] = &["cache"];
const REMOTE: &[&str] = &["cache", "remote"];
const PLANNER: &[&str] = &["cache", "planner"];
const DAEMON: &[&str] = &["cache", "daemon"];

/// Every field the editor shows, by section.
const FIELDS: &[Field] = &[
    field(
        "local cache",
        CACHE,
        "dir",
        Some("KACHE_CACHE_DIR"),
        Kind::Text,
    ),
    field(
        "local cache",
        CACHE,
        "max_size",
        Some("KACHE_MAX_SIZE"),
        Kind::Size,
    ),
    field(
        "local cache",
        CACHE,
        "local_only",
        Some("KACHE_LOCAL_ONLY"),
        Kind::Bool,
    ),
    field(
        "local cache",
        CACHE,
        "cache_build_scripts",
        Some("KACHE_CACHE_BUILD_SCRIPTS"),
        Kind::Bool,
    ),
    field(
        "local cache",
        CACHE,
        "progress",
        Some("KACHE_PROGRESS"),
        Kind::Choice(&["off", "hits", "all"]),
    ),
    field(
        "local cache",
        CACHE,
        "compression_level",
        Some("KACHE_COMPRESSION_LEVEL"),
        Kind::Number { min: 1, max: 22 },
    ),
    field("remote", REMOTE, "type", None, Kind::Choice(&["s3", "fs"])),
    field(
        "remote",
        REMOTE,
        "bucket",
        Some("KACHE_S3_BUCKET"),
        Kind::Text,
    ),
    field(
        "remote",
        REMOTE,
        "endpoint",
        Some("KACHE_S3_ENDPOINT"),
        Kind::Text,
    ),
    field(
        "remote",
        REMOTE,
        "region",
        Some("KACHE_S3_REGION"),
        Kind::Text,
    ),
    field(
        "remote",
        REMOTE,
        "prefix",
        Some("KACHE_S3_PREFIX"),
        Kind::Text,
    ),
    field(
        "remote",
        REMOTE,
        "profile",
        Some("KACHE_S3_PROFILE"),
        Kind::Text,
    ),
    field("remote", REMOTE, "path", None, Kind::Text),
    field(
        "planner",
        PLANNER,
        "endpoint",
        Some("KACHE_PLANNER_ENDPOINT"),
        Kind::Text,
    ),
    field(
        "planner",
        PLANNER,
        "token",
        Some("KACHE_PLANNER_TOKEN"),
        Kind::Secret,
    ),
    field(
        "planner",
        PLANNER,
        "timeout_ms",
        Some("KACHE_PLANNER_TIMEOUT_MS"),
        Kind::Number {
            min: 1,
            max: 600_000,
        },
    ),
    field(
        "daemon",
        DAEMON,
        "idle_timeout_secs",
        Some("KACHE_DAEMON_IDLE_TIMEOUT"),
        Kind::Number {
            min: 0,
            max: 86_400 * 30,
        },
    ),
];

/// Checks a typed value and turns it into the TOML value stored.
fn parse(kind: Kind, text: &str) -> Result<toml_edit::Value, String> {
    match kind {
        Kind::Text | Kind::Secret => Ok(text.into()),
        Kind::Bool => match text {
            "true" | "yes" | "1" => Ok(true.into()),
            "false" | "no" | "0" => Ok(false.into()),
            _ => Err(format!("{text:?} is not true or false")),
        },
        Kind::Size => kache_core::size::parse_size(text)
            .map(|_| text.into())
            .ok_or_else(|| format!("{text:?} is not a size like 10G or 500M")),
        Kind::Number { min, max } => match text.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n.into()),
            _ => Err(format!("{text:?} is not a whole number in {min}..={max}")),
        },
        Kind::Choice(choices) if choices.contains(&text) => Ok(text.into()),
        Kind::Choice(choices) => Err(format!("{text:?} is not one of {}", choices.join(", "))),
    }
}

/// Why `doc` may not be saved at `path`: it holds a secret (a
/// [`Kind::Secret`] field) and `path` is inside a git work tree, without
/// `--force`. `None`: it may.
fn secret_refusal(doc: &DocumentMut, path: &Path, force: bool) -> Option<String> {
    if force {
        return None;
    }
    let secret = FIELDS.iter().find(|field| {
        matches!(field.kind, Kind::Secret) && {
            let mut item = doc.as_item();
            field.table.iter().all(|name| match item.get(name) {
                Some(next) => {
                    item = next;
                    true
                }
                None => false,
            }) && item.get(field.key).is_some()
        }
    })?;
    let tree = git_work_tree(path)?;
    Some(format!(
        "not saved: {} is in the git work tree {} and would hold {}; keep it in your \
         own config (or the environment), or run `kache config --force`",
        path.display(),
        tree.display(),
        field_name(secret)
    ))
}

/// Replaces `path` with `text`, mode 0600 (whatever mode the old file had),
/// through a temp file and a rename.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("toml.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// `cache.planner.token`, for messages.
fn field_name(field: &Field) -> String {
    format!("{}.{}", field.table.join("."), field.key)
}

/// The git work tree `path` is inside (a directory above it holds `.git`).
fn git_work_tree(path: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(path).ok()?;
    absolute
        .ancestors()
        .skip(1)
        .find(|dir| dir.join(".git").exists())
        .map(Path::to_path_buf)
}

struct Editor {
    path: PathBuf,
    doc: DocumentMut,
    /// The text on disk when it did not parse (kept beside it on save).
    broken: Option<String>,
    state: TableState,
    /// The value being typed for the selected field.
    input: Option<String>,
    /// What the last action said.
    message: String,
    /// Asking whether to overwrite the file.
    confirming: bool,
    dirty: bool,
    /// `--force`: a secret may be saved inside a git work tree.
    force: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let path = match args.path {
        Some(path) => path,
        None => Config::editable_path().context("no config path: set HOME or KACHE_CONFIG")?,
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let (doc, broken, message) = match text.parse::<DocumentMut>() {
        Ok(doc) => {
            let message = match Config::check_text(&text) {
                Ok(()) => format!("editing {}", path.display()),
                Err(err) => format!("the file has a problem: {err:#}"),
            };
            (doc, None, message)
        }
        Err(err) => {
            let first = err
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            let message = format!("the file does not parse ({first}); saving replaces it");
            (DocumentMut::new(), Some(text), message)
        }
    };
    let mut editor = Editor {
        path,
        doc,
        broken,
        state: TableState::default().with_selected(0),
        input: None,
        message,
        confirming: false,
        dirty: false,
        force: args.force,
    };
    let mut terminal = ratatui::init();
    let result = editor.run(&mut terminal);
    ratatui::restore();
    result?;
    Ok(ExitCode::SUCCESS)
}

impl Editor {
    fn run(&mut self, terminal: &mut DefaultTerminal) -> Result<()> {
        loop {
            terminal.draw(|frame| self.draw(frame))?;
            let code = match next_press(Duration::from_millis(250))? {
                Press::Key(code) => code,
                Press::Interrupt => return Ok(()),
                Press::Nothing => continue,
            };
            if self.confirming {
                self.confirming = false;
                if matches!(code, KeyCode::Char('y' | 'Y')) {
                    self.save()?;
                } else {
                    self.message = "not saved".into();
                }
                continue;
            }
            if let Some(input) = &mut self.input {
                match code {
                    KeyCode::Enter => self.apply(),
                    KeyCode::Esc => {
                        self.input = None;
                        self.message = "edit cancelled".into();
                    }
                    KeyCode::Backspace => {
                        input.pop();
                    }
                    KeyCode::Char(c) => input.push(c),
                    _ => {}
                }
                continue;
            }
            match code {
                KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                KeyCode::Down | KeyCode::Char('j') => self.state.select_next(),
                KeyCode::Up | KeyCode::Char('k') => self.state.select_previous(),
                KeyCode::Enter => self.edit(),
                KeyCode::Char('d') => self.unset(),
                KeyCode::Char('s') => self.ask_to_save(),
                _ => {}
            }
        }
    }

    fn selected(&self) -> &'static Field {
        &FIELDS[self.state.selected().unwrap_or(0).min(FIELDS.len() - 1)]
    }

    /// The field's table in the document, if present.
    fn table(&self, field: &Field) -> Option<&TomlTable> {
        let mut table = self.doc.as_table();
        for name in field.table {
            table = table.get(name)?.as_table()?;
        }
        Some(table)
    }

    fn current(&self, field: &Field) -> Option<String> {
        let item = self.table(field)?.get(field.key)?;
        Some(match item.as_str() {
            Some(text) => text.to_string(),
            None => item.as_value()?.to_string().trim().to_string(),
        })
    }

    /// The variable that sets this field now, if one does.
    fn locked_by(field: &Field) -> Option<&'static str> {
        field
            .env
            .filter(|name| std::env::var(name).is_ok_and(|v| !v.is_empty()))
    }

    fn edit(&mut self) {
        let field = self.selected();
        if let Some(name) = Self::locked_by(field) {
            self.message = format!(
                "locked: {name} is set, so the file's {} is not used",
                field.key
            );
            return;
        }
        self.input = Some(self.current(field).unwrap_or_default());
        self.message = format!("editing {}: Enter to keep, Esc to cancel", field.key);
    }

    /// Stores the typed value if it is valid; otherwise says why and keeps typing.
    fn apply(&mut self) {
        let field = self.selected();
        let text = self.input.clone().unwrap_or_default();
        match parse(field.kind, text.trim()) {
            Ok(parsed) => {
                let mut table = self.doc.as_table_mut();
                for name in field.table {
                    let item = table
                        .entry(name)
                        .or_insert_with(|| Item::Table(TomlTable::new()));
                    let Some(inner) = item.as_table_mut() else {
                        self.message = format!("{name} is not a table in the file");
                        return;
                    };
                    table = inner;
                }
                table.insert(field.key, value(parsed));
                self.input = None;
                self.dirty = true;
                self.message = format!("{} set (s to save)", field.key);
            }
            Err(problem) => self.message = format!("invalid: {problem}"),
        }
    }

    fn unset(&mut self) {
        let field = self.selected();
        let mut table = Some(self.doc.as_table_mut());
        for name in field.table {
            table = table.and_then(|t| t.get_mut(name)?.as_table_mut());
        }
        if let Some(table) = table
            && table.remove(field.key).is_some()
        {
            self.dirty = true;
            self.message = format!("{} unset (s to save)", field.key);
        }
    }

    fn ask_to_save(&mut self) {
        let text = self.doc.to_string();
        if let Err(err) = Config::check_text(&text) {
            self.message = format!("not saved, the file would not load: {err:#}");
            return;
        }
        if let Some(refusal) = secret_refusal(&self.doc, &self.path, self.force) {
            self.message = refusal;
            return;
        }
        self.confirming = true;
        self.message = format!("overwrite {}? y/n", self.path.display());
    }

    fn save(&mut self) -> Result<()> {
        if let Some(old) = &self.broken {
            std::fs::write(backup_path(&self.path), old)?;
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        write_private(&self.path, &self.doc.to_string())?;
        self.broken = None;
        self.dirty = false;
        self.message = format!("saved {}", self.path.display());
        Ok(())
    }

    fn draw(&mut self, frame: &mut Frame) {
        let [table, input, status] = Layout::vertical([
            Constraint::Min(5),
            Constraint::Length(3),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        let rows: Vec<Row> = FIELDS
            .iter()
            .map(|field| {
                let shown = match (Self::locked_by(field), self.current(field)) {
                    (Some(name), _) => format!("locked by {name}"),
                    (None, Some(_)) if matches!(field.kind, Kind::Secret) => "••••••".into(),
                    (None, Some(value)) => value,
                    (None, None) => "(default)".into(),
                };
                Row::new([
                    field.section.to_string(),
                    format!("{}.{}", field.table.join("."), field.key),
                    shown,
                ])
            })
            .collect();
        let title = format!(
            " kache config — {}{} ",
            self.path.display(),
            if self.dirty { " (modified)" } else { "" }
        );
        frame.render_stateful_widget(
            Table::new(
                rows,
                [
                    Constraint::Length(12),
                    Constraint::Length(34),
                    Constraint::Min(20),
                ],
            )
            .header(
                Row::new(["SECTION", "KEY", "VALUE"])
                    .style(Style::new().add_modifier(Modifier::BOLD)),
            )
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
            .block(Block::bordered().title(title)),
            table,
            &mut self.state,
        );
        let typed = match &self.input {
            Some(text) => format!("{text}▏"),
            None => String::new(),
        };
        frame.render_widget(
            Paragraph::new(typed).block(Block::bordered().title(" value ")),
            input,
        );
        frame.render_widget(
            Paragraph::new(format!(
                "{}  ·  ↑↓ move · Enter edit · d unset · s save · q quit",
                self.message
            )),
            status,
        );
    }
}

/// Where a file that did not parse is kept when the editor replaces it.
fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".broken");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_values_are_checked_by_their_kind() {
        assert!(parse(Kind::Size, "10G").is_ok());
        assert!(parse(Kind::Size, "lots").is_err());
        assert!(parse(Kind::Number { min: 1, max: 22 }, "23").is_err());
        assert_eq!(
            parse(Kind::Number { min: 1, max: 22 }, "9")
                .unwrap()
                .as_integer(),
            Some(9)
        );
        assert!(parse(Kind::Choice(&["s3", "fs"]), "ftp").is_err());
        assert_eq!(parse(Kind::Bool, "yes").unwrap().as_bool(), Some(true));
    }

    #[test]
    fn the_file_is_written_0600_even_over_a_0644_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, "[cache]\n").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[cache]\n");
    }

    #[test]
    fn a_token_is_not_saved_inside_a_git_work_tree_without_force() {
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("repo");
        std::fs::create_dir_all(repo.join(".git")).unwrap();
        let path = repo.join(".kache.toml");
        let with_token: DocumentMut = "[cache.planner]\ntoken = \"t\"\n".parse().unwrap();
        let without: DocumentMut = "[cache]\nmax_size = \"1G\"\n".parse().unwrap();
        let refusal = secret_refusal(&with_token, &path, false).expect("refused");
        assert!(refusal.contains("cache.planner.token"), "{refusal}");
        assert_eq!(secret_refusal(&with_token, &path, true), None, "--force");
        assert_eq!(secret_refusal(&without, &path, false), None, "no secret");
        let outside = root.path().join("config.toml");
        assert_eq!(secret_refusal(&with_token, &outside, false), None);
    }
}
