//! The embedded database: SurrealDB on the SurrealKV engine at `--db-path`.
//!
//! Schema (namespace `kache`, database `planner`):
//! - `artifact:⟨cache_key⟩` — crate, compile time, size, seen count, last seen;
//! - `sighting:⟨blake3(kind, namespace, scope, key)⟩` — one artifact seen in
//!   one context: a namespace's `name@version` or shard, a crate's history,
//!   or simply a known key for a crate, with its own count and time;
//! - `scanned:⟨blake3(object name)⟩` — a bucket document already ingested
//!   and the version (size, modification time) it had, so a restarted
//!   service scans only what is new or changed;
//! - `feedback:⟨blake3(cache_key)⟩` — how often builds used a key plans
//!   offered, and how often they downloaded it for nothing.
//!
//! Records are written whole (`UPSERT … CONTENT`) from the values the state
//! computed, in batches, so a write is idempotent and replaying one is safe.
//! Nothing is queried by field (the state is read whole at start), so the
//! tables carry no secondary index: the seed's two are removed, which halves
//! the cost of a write and of an eviction's deletes, and keeps SurrealDB's
//! memory flat while a bounded state churns.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use surrealdb::engine::local::{Db, SurrealKv};
use surrealdb::{RecordId, Surreal};

use crate::state::{Artifact, Eviction, KeyFeedback, Records, Sighting};

/// Rows per write query.
const BATCH: usize = 2_000;

const SCHEMA: &str = "
DEFINE TABLE IF NOT EXISTS artifact SCHEMALESS;
DEFINE TABLE IF NOT EXISTS sighting SCHEMALESS;
DEFINE TABLE IF NOT EXISTS scanned SCHEMALESS;
DEFINE TABLE IF NOT EXISTS feedback SCHEMALESS;
REMOVE INDEX IF EXISTS sighting_scope ON sighting;
REMOVE INDEX IF EXISTS artifact_crate ON artifact;
";

/// An open database.
pub struct Database {
    store: Store,
    /// Declared after `store`, so it is dropped after it.
    runtime: DbRuntime,
}

/// The queries, on a handle that can be moved onto the database's runtime.
#[derive(Clone)]
pub struct Store {
    db: Surreal<Db>,
}

impl std::ops::Deref for Database {
    type Target = Store;

    fn deref(&self) -> &Store {
        &self.store
    }
}

/// The runtime the database runs on: SurrealDB executes every query on the
/// runtime it was opened from, and a large write is long stretches of CPU
/// that never yield. On its own threads the operating system preempts it,
/// so it cannot hold the workers plans are answered on.
struct DbRuntime(Option<tokio::runtime::Runtime>);

impl DbRuntime {
    fn handle(&self) -> tokio::runtime::Handle {
        match &self.0 {
            Some(runtime) => runtime.handle().clone(),
            // Only `drop` takes it.
            None => unreachable!("the database runtime is gone before its database"),
        }
    }
}

impl Drop for DbRuntime {
    /// Stops the database's tasks (closing the store) and waits for them,
    /// from a plain thread: a runtime cannot be dropped inside another.
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            let stopping = std::thread::spawn(move || {
                runtime.shutdown_timeout(std::time::Duration::from_secs(10));
            });
            let _ = stopping.join();
        }
    }
}

/// A record for `UPSERT … CONTENT`: the id beside the content.
#[derive(Serialize)]
struct Row<T> {
    id: String,
    data: T,
}

/// A record for a bulk `INSERT`: the id inside the content.
#[derive(Serialize)]
struct Record<'a, T> {
    id: &'a str,
    #[serde(flatten)]
    data: &'a T,
}

/// What builds did with one key plans offered, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FeedbackRecord {
    cache_key: String,
    #[serde(flatten)]
    counts: KeyFeedback,
}

/// A bucket document already ingested.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scanned {
    pub name: String,
    pub version: String,
}

#[derive(Deserialize)]
struct Count {
    count: u64,
}

impl Database {
    /// Opens (creating) the database at `path`. Fails with a clear message
    /// when the path cannot be created or does not hold a SurrealKV store.
    pub async fn open(path: &Path) -> Result<Self> {
        if path.is_file() {
            bail!(
                "{} is a file, not a SurrealKV database directory",
                path.display()
            );
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating the database directory {}", parent.display()))?;
        }
        let location = path.to_str().context("the database path is not UTF-8")?;
        // SurrealDB's error text already includes its cause; keep one copy.
        // Wrapped at once: an early return must not drop a bare runtime here.
        let runtime = DbRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("kache-db")
                .enable_all()
                .build()
                .context("starting the database's runtime")?,
        ));
        let location = location.to_string();
        let db = runtime
            .handle()
            .spawn(async move { Surreal::new::<SurrealKv>(location).await })
            .await
            .context("opening the database")?
            .map_err(|e| anyhow::anyhow!("opening the database at {}: {e}", path.display()))?;
        db.use_ns("kache")
            .use_db("planner")
            .await
            .context("selecting the planner database")?;
        db.query(SCHEMA)
            .await
            .with_context(|| format!("defining the schema in {}", path.display()))?
            .check()
            .with_context(|| format!("defining the schema in {}", path.display()))?;
        Ok(Self {
            store: Store { db },
            runtime,
        })
    }

    /// Writes artifacts and sightings (see [`Store::write`]) on the
    /// database's own runtime, serialisation included, so a large write
    /// takes no time from the workers plans are answered on.
    pub async fn write_shared(
        &self,
        artifacts: Arc<Vec<(bool, Artifact)>>,
        sightings: Arc<Vec<(bool, Sighting)>>,
    ) -> Result<()> {
        let store = self.store.clone();
        self.run(async move { store.write(&artifacts, &sightings).await })
            .await
    }

    /// Deletes what a bound evicted (see [`Store::delete`]) on the
    /// database's own runtime.
    pub async fn delete_shared(&self, eviction: Arc<Eviction>) -> Result<()> {
        let store = self.store.clone();
        self.run(async move { store.delete(&eviction).await }).await
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        self.runtime
            .handle()
            .spawn(work)
            .await
            .context("the database task failed")?
    }
}

impl Store {
    /// Reads every record (the state is built from them by the caller).
    pub async fn load(&self) -> Result<Records> {
        let mut response = self
            .db
            .query(
                "SELECT * OMIT id FROM artifact; SELECT * OMIT id FROM sighting; \
                 SELECT * OMIT id FROM feedback;",
            )
            .await
            .context("reading the state")?;
        let artifacts: Vec<Artifact> = response.take(0).context("reading artifacts")?;
        let sightings: Vec<Sighting> = response.take(1).context("reading sightings")?;
        let feedback: Vec<FeedbackRecord> = response.take(2).context("reading feedback")?;
        Ok(Records {
            artifacts,
            sightings,
            feedback: feedback
                .into_iter()
                .map(|record| (record.cache_key, record.counts))
                .collect(),
        })
    }

    /// Deletes what a bound evicted: artifacts by key, sightings by id,
    /// feedback by key. Deleting a record that is not there is no error, so
    /// replaying an eviction is safe.
    pub async fn delete(&self, eviction: &Eviction) -> Result<()> {
        let feedback: Vec<String> = eviction
            .feedback
            .iter()
            .map(|key| blake3::hash(key.as_bytes()).to_hex().to_string())
            .collect();
        for (table, ids) in [
            ("sighting", &eviction.sightings),
            ("feedback", &feedback),
            ("artifact", &eviction.artifacts),
        ] {
            for chunk in ids.chunks(BATCH) {
                let records: Vec<RecordId> = chunk
                    .iter()
                    .map(|id| RecordId::from_table_key(table, id.as_str()))
                    .collect();
                self.db
                    .query("DELETE $records RETURN NONE")
                    .bind(("records", records))
                    .await
                    .with_context(|| format!("deleting {table} records"))?
                    .check()
                    .with_context(|| format!("deleting {table} records"))?;
            }
        }
        Ok(())
    }

    /// Writes the feedback counts of keys, whole (they replace what was
    /// stored for those keys).
    pub async fn write_feedback(&self, counts: &[(String, KeyFeedback)]) -> Result<()> {
        let rows: Vec<Row<FeedbackRecord>> = counts
            .iter()
            .map(|(key, counts)| Row {
                id: blake3::hash(key.as_bytes()).to_hex().to_string(),
                data: FeedbackRecord {
                    cache_key: key.clone(),
                    counts: *counts,
                },
            })
            .collect();
        self.upsert("feedback", serde_json::to_value(rows)?).await
    }

    /// Writes artifacts and sightings, whole, in batches. Records the state
    /// has never seen go in with one bulk `INSERT` per batch (the fast path
    /// of an import); changed records are upserted one by one. If a bulk
    /// insert meets a record that exists after all, that batch is upserted.
    pub async fn write(
        &self,
        artifacts: &[(bool, Artifact)],
        sightings: &[(bool, Sighting)],
    ) -> Result<()> {
        let artifact_rows: Vec<(bool, Row<&Artifact>)> = artifacts
            .iter()
            .map(|(new, a)| {
                (
                    *new,
                    Row {
                        id: a.cache_key.clone(),
                        data: a,
                    },
                )
            })
            .collect();
        self.write_table("artifact", &artifact_rows).await?;
        let sighting_rows: Vec<(bool, Row<&Sighting>)> = sightings
            .iter()
            .map(|(new, s)| {
                (
                    *new,
                    Row {
                        id: s.id(),
                        data: s,
                    },
                )
            })
            .collect();
        self.write_table("sighting", &sighting_rows).await
    }

    async fn write_table<T: Serialize>(
        &self,
        table: &'static str,
        rows: &[(bool, Row<T>)],
    ) -> Result<()> {
        let new: Vec<&Row<T>> = rows
            .iter()
            .filter(|(new, _)| *new)
            .map(|(_, row)| row)
            .collect();
        let changed: Vec<&Row<T>> = rows
            .iter()
            .filter(|(new, _)| !*new)
            .map(|(_, row)| row)
            .collect();
        for chunk in new.chunks(BATCH) {
            let records: Vec<Record<'_, T>> = chunk
                .iter()
                .map(|row| Record {
                    id: &row.id,
                    data: &row.data,
                })
                .collect();
            let inserted = match self
                .db
                .query(format!("INSERT INTO {table} $rows RETURN NONE"))
                .bind(("rows", serde_json::to_value(&records)?))
                .await
            {
                Ok(response) => response.check().map(drop).map_err(|e| e.to_string()),
                Err(err) => Err(err.to_string()),
            };
            if let Err(err) = inserted {
                tracing::debug!(table, "bulk insert failed ({err}); upserting the batch");
                self.upsert(table, serde_json::to_value(chunk)?).await?;
            }
        }
        for chunk in changed.chunks(BATCH) {
            self.upsert(table, serde_json::to_value(chunk)?).await?;
        }
        Ok(())
    }

    async fn upsert(&self, table: &'static str, rows: serde_json::Value) -> Result<()> {
        self.db
            .query(
                "FOR $row IN $rows { UPSERT type::thing($table, $row.id) CONTENT $row.data RETURN NONE; };",
            )
            .bind(("table", table))
            .bind(("rows", rows))
            .await
            .with_context(|| format!("writing {table} records"))?
            .check()
            .with_context(|| format!("writing {table} records"))?;
        Ok(())
    }

    /// Every bucket document already ingested: object name → version.
    pub async fn scanned(&self) -> Result<Vec<Scanned>> {
        let mut response = self
            .db
            .query("SELECT * OMIT id FROM scanned")
            .await
            .context("reading scanned documents")?;
        Ok(response.take(0)?)
    }

    /// Remembers that `name` was ingested at `version`.
    pub async fn mark_scanned(&self, name: &str, version: &str) -> Result<()> {
        let id = blake3::hash(name.as_bytes()).to_hex().to_string();
        self.db
            .query("UPSERT type::thing('scanned', $id) CONTENT $row RETURN NONE")
            .bind(("id", id))
            .bind((
                "row",
                serde_json::to_value(Scanned {
                    name: name.to_string(),
                    version: version.to_string(),
                })?,
            ))
            .await
            .context("recording a scanned document")?
            .check()
            .context("recording a scanned document")?;
        Ok(())
    }

    /// Number of artifact records (a cheap consistency probe for tests and logs).
    pub async fn artifact_count(&self) -> Result<u64> {
        let mut response = self
            .db
            .query("SELECT count() FROM artifact GROUP ALL")
            .await?;
        let counts: Vec<Count> = response.take(0)?;
        Ok(counts.first().map_or(0, |c| c.count))
    }
}
