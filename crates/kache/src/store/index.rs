//! `index.db`: the SQLite index of entries, their blobs, and two small caches
//! (file hashes by stat, toolchain banners by rustc binary).
//!
//! Many wrapper processes share one index, so it runs in WAL mode with a busy
//! timeout; every multi-row change is one transaction.
//!
//! The index is a cache of what the store's `meta.json` files say (plus
//! usage counts, the upload queue and stat caches): an index that SQLite
//! finds corrupt is rebuilt from them (`heal.rs`), and a row whose
//! `meta.json` is gone is dropped when a lookup finds it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use kache_core::meta::EntryMeta;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};

/// 3: the stat cache (`file_stats`) also matches the inode change time.
/// 4: `incremental_dirs`, which session directory a unit's rustc uses.
/// 6: `macro_scripts`, the build script behind a proc-macro library, per
/// target directory (a cache, rebuilt from scratch on migration).
const SCHEMA_VERSION: i64 = 6;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
    cache_key TEXT PRIMARY KEY,
    pre_key TEXT NOT NULL,
    crate_name TEXT NOT NULL,
    size INTEGER NOT NULL,
    compile_time_ms INTEGER NOT NULL,
    created INTEGER NOT NULL,
    last_used INTEGER NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0,
    meta TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_by_pre_key ON entries(pre_key, last_used);
CREATE INDEX IF NOT EXISTS entries_by_crate ON entries(crate_name, created);
CREATE TABLE IF NOT EXISTS entry_blobs (
    cache_key TEXT NOT NULL,
    hash TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (cache_key, hash)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entry_blobs_by_hash ON entry_blobs(hash);
DROP TABLE IF EXISTS file_hashes;
CREATE TABLE IF NOT EXISTS file_stats (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    hash TEXT NOT NULL
) WITHOUT ROWID;
DROP TABLE IF EXISTS macro_scripts;
CREATE TABLE IF NOT EXISTS macro_scripts (
    hash TEXT NOT NULL,
    target_dir TEXT NOT NULL,
    out_dir TEXT NOT NULL,
    package TEXT NOT NULL,
    PRIMARY KEY (hash, target_dir)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS incremental_dirs (
    pre_key TEXT PRIMARY KEY,
    dir TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS toolchains (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    banner TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads (
    cache_key TEXT NOT NULL,
    remote TEXT NOT NULL,
    added INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    PRIMARY KEY (cache_key, remote)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS origins (
    cache_key TEXT PRIMARY KEY,
    source TEXT NOT NULL
) WITHOUT ROWID;
";

/// The schema version stored in the index, with a clear error for a file
/// that is not an index. SQLite checks the file's header here, and that the
/// file holds as many pages as the header says: garbage and truncation are
/// both found at this first read.
fn schema_version(conn: &Connection, path: &Path) -> Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .with_context(|| format!("the index {} is unreadable", path.display()))
}

/// SQLite's own words for the first SQLite error in `err`'s chain.
pub fn sqlite_failure(err: &anyhow::Error) -> Option<(ErrorCode, String)> {
    err.chain()
        .find_map(|cause| match cause.downcast_ref::<rusqlite::Error>() {
            Some(rusqlite::Error::SqliteFailure(e, message)) => {
                Some((e.code, message.clone().unwrap_or_else(|| e.to_string())))
            }
            _ => None,
        })
}

/// Whether `err` says the index file itself is damaged (not a database, or
/// a malformed one), which only a rebuild repairs.
pub fn is_corruption(err: &anyhow::Error) -> bool {
    matches!(
        sqlite_failure(err),
        Some((ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase, _))
    )
}

/// Switches a new index file to WAL and creates the schema.
fn init_schema(conn: &Connection) -> Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
    ))
    .context("creating the index schema")
}

/// Writes `(path, stat, hash)` rows of the stat cache inside `tx`.
fn insert_hashes(tx: &rusqlite::Transaction<'_>, items: &[(String, Stat, String)]) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT OR REPLACE INTO file_stats (path, size, mtime_ns, ctime_ns, ino, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (path, stat, hash) in items {
        stmt.execute(params![
            path,
            stat.size as i64,
            stat.mtime_ns,
            stat.ctime_ns,
            stat.ino as i64,
            hash
        ])?;
    }
    Ok(())
}

/// A row of `entries` without the full metadata.
#[derive(Debug, Clone)]
pub struct EntryRow {
    pub cache_key: String,
    pub crate_name: String,
    pub size: u64,
    pub compile_time_ms: u64,
    pub created: u64,
    pub last_used: u64,
    pub hits: u64,
}

/// A cached stat of a file and its content hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub size: u64,
    pub mtime_ns: i64,
    /// The inode change time: no tool can set it back, so a rewrite that
    /// keeps size and mtime (`cp -p`, `rsync -t`, `touch -r`, a write
    /// through a hardlink with the mtime restored) still changes it.
    pub ctime_ns: i64,
    pub ino: u64,
}

impl Stat {
    /// The stat of a file as the index remembers it.
    pub fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        let mtime_ns = meta
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec());
        Self {
            size: meta.len(),
            mtime_ns,
            ctime_ns: meta
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.ctime_nsec()),
            ino: meta.ino(),
        }
    }
}

/// The open index.
pub struct Index {
    conn: Connection,
    /// `store/` beside the index, where each entry's `meta.json` lives.
    store_dir: PathBuf,
}

/// The lock file that guards creating, checking and rebuilding `index`.
pub(super) fn lock_path(index: &Path) -> PathBuf {
    index.with_extension("db.lock")
}

impl Index {
    /// Opens (creating if needed, unless `create` is false) the index at
    /// `path`.
    ///
    /// Creating the schema and switching to WAL must not race: when many
    /// wrappers start at once on a new cache, SQLite can answer "database is
    /// locked" at once instead of waiting. So the version check runs under a
    /// shared lock on `index.db.lock`, and initialisation under an exclusive
    /// one.
    pub fn open(path: &Path, create: bool) -> Result<Self> {
        let lock_path = lock_path(path);
        let lock = super::open_lock_file(&lock_path)?;
        lock.lock_shared()
            .with_context(|| format!("locking {}", lock_path.display()))?;
        let conn = Self::connect(path, create)?;
        if schema_version(&conn, path)? != SCHEMA_VERSION {
            lock.unlock()?;
            lock.lock()
                .with_context(|| format!("locking {}", lock_path.display()))?;
            if schema_version(&conn, path)? != SCHEMA_VERSION {
                init_schema(&conn)?;
            }
        }
        lock.unlock()?;
        Self::ready(conn, path)
    }

    /// Opens or creates the index at `path` while the caller holds the
    /// exclusive lock on [`lock_path`] (a rebuild).
    pub(super) fn open_locked(path: &Path) -> Result<Self> {
        let conn = Self::connect(path, true)?;
        if schema_version(&conn, path)? != SCHEMA_VERSION {
            init_schema(&conn)?;
        }
        Self::ready(conn, path)
    }

    fn connect(path: &Path, create: bool) -> Result<Connection> {
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        // The index (and its -wal and -shm files, which SQLite creates with
        // the index's own mode) is the user's alone: 0600.
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(create)
                .truncate(false)
                .mode(0o600)
                .open(path);
            if let Ok(file) = file
                && file
                    .metadata()
                    .is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
            {
                let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
            }
        }
        let conn = Connection::open_with_flags(path, flags)
            .with_context(|| format!("opening {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(30))?;
        Ok(conn)
    }

    fn ready(conn: Connection, path: &Path) -> Result<Self> {
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let store_dir = path.parent().unwrap_or(Path::new(".")).join("store");
        Ok(Self { conn, store_dir })
    }

    /// SQLite's full check of the file (every page read): `Ok` when it
    /// holds together, else the first problem found. Slow on a big index:
    /// for `doctor`, not for a compile.
    pub fn integrity(&self) -> Result<std::result::Result<(), String>> {
        let first: String = self
            .conn
            .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))?;
        Ok(if first == "ok" { Ok(()) } else { Err(first) })
    }

    /// How many entries the index holds.
    pub fn entry_count(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM entries", [], |r| r.get::<_, i64>(0))?
            as u64)
    }

    /// Entries recorded under `pre_key`, most recently used first.
    ///
    /// A row whose `meta.json` is gone from the store (deleted by hand or
    /// by a cleaner) is dropped here: the store no longer holds that entry,
    /// so it must stop hitting.
    pub fn candidates(&self, pre_key: &str) -> Result<Vec<EntryMeta>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT meta FROM entries WHERE pre_key = ?1 ORDER BY last_used DESC LIMIT 16",
        )?;
        let rows = stmt.query_map([pre_key], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for text in rows {
            // A row that no longer parses is skipped: a miss, never a wrong hit.
            let Ok(meta) = serde_json::from_str::<EntryMeta>(&text?) else {
                continue;
            };
            if self.meta_file_exists(&meta.cache_key) {
                out.push(meta);
            } else {
                gone.push(meta.cache_key);
            }
        }
        drop(stmt);
        if !gone.is_empty() {
            tracing::debug!(?gone, "meta.json is gone: dropping the entries");
            self.remove_rows(&gone)?;
        }
        Ok(out)
    }

    /// Whether the entry `cache_key` still has its `store/<key>/meta.json`.
    pub fn meta_file_exists(&self, cache_key: &str) -> bool {
        super::is_hex_key(cache_key) && self.store_dir.join(cache_key).join("meta.json").is_file()
    }

    /// Inserts or replaces an entry and its blob references.
    pub fn insert(&mut self, meta: &EntryMeta, now: u64) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM entry_blobs WHERE cache_key = ?1",
            [&meta.cache_key],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO entries
             (cache_key, pre_key, crate_name, size, compile_time_ms, created, last_used, hits, meta)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8)",
            params![
                meta.cache_key,
                meta.pre_key,
                meta.crate_name,
                meta.size() as i64,
                meta.compile_time_ms as i64,
                meta.created as i64,
                now as i64,
                serde_json::to_string(meta)?,
            ],
        )?;
        for file in &meta.files {
            tx.execute(
                "INSERT OR IGNORE INTO entry_blobs (cache_key, hash, size) VALUES (?1, ?2, ?3)",
                params![meta.cache_key, file.hash, file.size as i64],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a hit (bumps the counter and the last-used time) together with
    /// the file hashes the restore learned, in one transaction.
    pub fn record_hit(
        &mut self,
        cache_key: &str,
        now: u64,
        hashes: &[(String, Stat, String)],
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE entries SET hits = hits + 1, last_used = ?2 WHERE cache_key = ?1",
            params![cache_key, now as i64],
        )?;
        insert_hashes(&tx, hashes)?;
        tx.commit()?;
        Ok(())
    }

    /// Queues `cache_key` for upload to the remote with id `remote`
    /// (durable: a restarted daemon resumes the queue).
    pub fn enqueue_upload(&self, cache_key: &str, remote: &str, now: u64) -> Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO uploads (cache_key, remote, added) VALUES (?1, ?2, ?3)",
            params![cache_key, remote, now as i64],
        )?;
        Ok(())
    }

    /// Up to `limit` queued uploads for `remote` due at `now`, oldest first.
    pub fn due_uploads(&self, remote: &str, now: u64, limit: usize) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT cache_key FROM uploads WHERE remote = ?1 AND next_try <= ?2
             ORDER BY added LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![remote, now as i64, limit as i64], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Queued uploads per remote id.
    pub fn queued_uploads(&self) -> Result<Vec<(String, u64)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT remote, COUNT(*) FROM uploads GROUP BY remote")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Drops a finished upload.
    pub fn finish_upload(&self, cache_key: &str, remote: &str) -> Result<()> {
        self.conn.execute(
            "DELETE FROM uploads WHERE cache_key = ?1 AND remote = ?2",
            params![cache_key, remote],
        )?;
        Ok(())
    }

    /// Failed attempts of a queued upload so far.
    pub fn upload_attempts(&self, cache_key: &str, remote: &str) -> Result<u32> {
        Ok(self
            .conn
            .query_row(
                "SELECT attempts FROM uploads WHERE cache_key = ?1 AND remote = ?2",
                params![cache_key, remote],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// Records a failed attempt; the upload is tried again at `next_try`.
    pub fn retry_upload(
        &self,
        cache_key: &str,
        remote: &str,
        next_try: u64,
        error: &str,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE uploads SET attempts = attempts + 1, next_try = ?3, last_error = ?4
             WHERE cache_key = ?1 AND remote = ?2",
            params![cache_key, remote, next_try as i64, error],
        )?;
        Ok(())
    }

    /// Where an imported entry came from, while no hit has used it yet.
    pub fn origin(&self, cache_key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT source FROM origins WHERE cache_key = ?1",
                [cache_key],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Remembers that an entry came from the remote (`remote` or `prefetch`).
    pub fn set_origin(&self, cache_key: &str, source: &str) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO origins (cache_key, source) VALUES (?1, ?2)",
            params![cache_key, source],
        )?;
        Ok(())
    }

    /// The origin of an entry on its first hit, forgotten afterwards: later
    /// hits of it are local.
    pub fn take_origin(&self, cache_key: &str) -> Result<Option<String>> {
        // Read first: almost every hit has no origin, and a read takes no
        // write lock, so concurrent hits do not queue behind each other.
        let source: Option<String> = self
            .conn
            .query_row(
                "SELECT source FROM origins WHERE cache_key = ?1",
                [cache_key],
                |r| r.get(0),
            )
            .optional()?;
        if source.is_some() {
            self.conn
                .execute("DELETE FROM origins WHERE cache_key = ?1", [cache_key])?;
        }
        Ok(source)
    }

    /// Removes entries; returns how many existed.
    pub fn remove(&mut self, keys: &[String]) -> Result<usize> {
        self.remove_rows(keys)
    }

    fn remove_rows(&self, keys: &[String]) -> Result<usize> {
        let tx = self.conn.unchecked_transaction()?;
        let mut removed = 0;
        for key in keys {
            removed += tx.execute("DELETE FROM entries WHERE cache_key = ?1", [key])?;
            tx.execute("DELETE FROM entry_blobs WHERE cache_key = ?1", [key])?;
        }
        tx.commit()?;
        Ok(removed)
    }

    /// Every entry, for listing and garbage collection.
    pub fn rows(&self) -> Result<Vec<EntryRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT cache_key, crate_name, size, compile_time_ms, created, last_used, hits FROM entries",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(EntryRow {
                cache_key: r.get(0)?,
                crate_name: r.get(1)?,
                size: r.get::<_, i64>(2)? as u64,
                compile_time_ms: r.get::<_, i64>(3)? as u64,
                created: r.get::<_, i64>(4)? as u64,
                last_used: r.get::<_, i64>(5)? as u64,
                hits: r.get::<_, i64>(6)? as u64,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The metadata of one entry.
    pub fn meta(&self, cache_key: &str) -> Result<Option<EntryMeta>> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT meta FROM entries WHERE cache_key = ?1",
                [cache_key],
                |r| r.get(0),
            )
            .optional()?;
        text.map(|t| serde_json::from_str(&t).context("entry metadata in the index is corrupt"))
            .transpose()
    }

    /// Entries of one crate, newest first.
    pub fn metas_for_crate(&self, crate_name: &str) -> Result<Vec<EntryMeta>> {
        let mut stmt = self.conn.prepare(
            "SELECT meta FROM entries WHERE crate_name = ?1 ORDER BY created DESC, rowid DESC",
        )?;
        let rows = stmt.query_map([crate_name], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for text in rows {
            out.push(
                serde_json::from_str(&text?).context("entry metadata in the index is corrupt")?,
            );
        }
        Ok(out)
    }

    /// `(blob hash, size)` pairs referenced by any entry, with the entries using each.
    pub fn blob_refs(&self) -> Result<Vec<(String, u64, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT hash, size, cache_key FROM entry_blobs")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Whether any entry still references `hash`.
    pub fn blob_in_use(&self, hash: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM entry_blobs WHERE hash = ?1 LIMIT 1",
                [hash],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// A remembered content hash for `path` if its stat still matches.
    pub fn cached_hash(&self, path: &str, stat: &Stat) -> Result<Option<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT hash FROM file_stats WHERE path = ?1 AND size = ?2 AND mtime_ns = ?3 AND ctime_ns = ?4 AND ino = ?5",
        )?;
        Ok(stmt
            .query_row(
                params![
                    path,
                    stat.size as i64,
                    stat.mtime_ns,
                    stat.ctime_ns,
                    stat.ino as i64
                ],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Remembers content hashes by stat, in one transaction.
    pub fn remember_hashes(&mut self, items: &[(String, Stat, String)]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        insert_hashes(&tx, items)?;
        tx.commit()?;
        Ok(())
    }

    /// A remembered `rustc -vV` banner for a rustc binary with this stat.
    pub fn toolchain(&self, path: &str, stat: &Stat) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT banner FROM toolchains WHERE path = ?1 AND size = ?2 AND mtime_ns = ?3",
                params![path, stat.size as i64, stat.mtime_ns],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn remember_toolchain(&self, path: &str, stat: &Stat, banner: &str) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO toolchains (path, size, mtime_ns, banner) VALUES (?1, ?2, ?3, ?4)",
            params![path, stat.size as i64, stat.mtime_ns, banner],
        )?;
        Ok(())
    }

    /// The name of the directory (`<crate>-<id>`, inside `-C incremental`)
    /// that rustc keeps its state in for the unit under `pre_key`, as last
    /// seen after a compile of it.
    pub fn incremental_dir(&self, pre_key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT dir FROM incremental_dirs WHERE pre_key = ?1",
                [pre_key],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The `OUT_DIR` and package directory of the build script behind the
    /// proc-macro library whose content hash is `hash`, as last compiled
    /// or restored into `target_dir` (each checkout has its own: the same
    /// macro bytes stand for another checkout's files there).
    pub fn macro_script(&self, hash: &str, target_dir: &str) -> Result<Option<(String, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT out_dir, package FROM macro_scripts WHERE hash = ?1 AND target_dir = ?2",
                [hash, target_dir],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Remembers [`Index::macro_script`] for `hash` in `target_dir`.
    pub fn remember_macro_script(
        &self,
        hash: &str,
        target_dir: &str,
        out_dir: &str,
        package: &str,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO macro_scripts (hash, target_dir, out_dir, package) VALUES (?1, ?2, ?3, ?4)",
            params![hash, target_dir, out_dir, package],
        )?;
        Ok(())
    }

    /// Remembers [`Index::incremental_dir`] for `pre_key`.
    pub fn remember_incremental_dir(&self, pre_key: &str, dir: &str) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO incremental_dirs (pre_key, dir) VALUES (?1, ?2)",
            params![pre_key, dir],
        )?;
        Ok(())
    }

    /// Forgets every remembered file hash (after a repair).
    pub fn clear_hash_cache(&self) -> Result<()> {
        self.conn.execute("DELETE FROM file_stats", [])?;
        Ok(())
    }
}
