//! `kache-service`, the planner: an HTTP server with an embedded database
//! that tells a fresh CI runner or branch which cache artifacts to fetch
//! first.
//!
//! Flow: `config` → (optional `ha` leadership) → `ingest::Backend` (database
//! + in-memory `state`) → `http` routes; plans come from `kache_core::plan`.
//!
//! With a bucket configured, `scan` feeds the same `ingest` path from the
//! manifests and shards clients write.

mod api;
mod auth;
mod config;
mod db;
mod gc;
mod ha;
mod http;
mod ingest;
mod metrics;
mod scan;
mod signed;
mod state;

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Parser;
use tokio::sync::watch;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use crate::auth::Auth;
use crate::config::Config;
use crate::http::App;
use crate::ingest::{Backend, Limits, Mode};

/// mimalloc: plans allocate many small short-lived objects on every worker
/// thread at once, where glibc's allocator spent a quarter of the time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// SurrealKV caches the values it writes up to half the machine's (or the
/// cgroup's) memory less 1 GiB: gigabytes on a large node, growing with every
/// record ingested although the planner reads the database only at start.
/// The planner's memory is its own bounded state, so the cache is held small
/// unless this variable is set.
const VALUE_CACHE_VARIABLE: &str = "SURREAL_SURREALKV_MAX_VALUE_CACHE_SIZE";
const VALUE_CACHE_BYTES: &str = "16777216";

fn main() -> std::process::ExitCode {
    if std::env::var_os(VALUE_CACHE_VARIABLE).is_none() {
        // SAFETY: no other thread exists yet (the runtime starts below), so
        // nothing reads the environment while it is changed.
        unsafe { std::env::set_var(VALUE_CACHE_VARIABLE, VALUE_CACHE_BYTES) };
    }
    let config = Config::parse();
    let filter = std::env::var("KACHE_LOG").unwrap_or_else(|_| "kache_service=info".to_string());
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("kache_service=info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("kache-service: cannot start the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = match config.command.clone() {
        Some(config::Command::Gc { dry_run }) => runtime.block_on(gc::cli(config, dry_run)),
        None => runtime.block_on(serve(config)),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kache-service: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Opens the database, loads the state (within `app.limits`), and imports
/// the seed snapshot.
pub async fn open_backend(db_path: &Path, seed: Option<&Path>, app: &App) -> Result<Backend> {
    let (backend, evicted) = Backend::open(db_path, app.limits).await?;
    app.count_evictions(&evicted);
    if let Some(seed) = seed {
        let snapshot = ingest::read_seed(seed)?;
        let observations = ingest::from_seed(&snapshot)
            .with_context(|| format!("seed snapshot {} is not valid", seed.display()))?;
        let started = std::time::Instant::now();
        let summary = backend.ingest(&observations, Mode::Idempotent).await?;
        app.count_evictions(&summary);
        app.metrics
            .ingested
            .get_or_create(&metrics::KindLabel {
                kind: "seed".into(),
            })
            .inc();
        info!(
            path = %seed.display(),
            observations = summary.observations,
            new_artifacts = summary.new_artifacts,
            new_sightings = summary.new_sightings,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "imported seed snapshot"
        );
    }
    let stored = backend.stored_artifacts().await.unwrap_or(0);
    let (artifacts, crates) = backend.sizes().await;
    info!(
        artifacts,
        crates,
        stored,
        max_artifacts = app.limits.max_artifacts,
        "state loaded"
    );
    Ok(backend)
}

async fn serve(config: Config) -> Result<()> {
    if config.ingest_token.is_some() && config.ingest_token == config.token {
        bail!(
            "--ingest-token must differ from --token: the plan token would hold the ingest scope"
        );
    }
    let auth = Auth::new(
        config.token.as_deref(),
        config.ingest_token.as_deref(),
        config.ingest_namespaces.clone(),
    );
    match auth.mode() {
        "none" => warn!(
            "no token is set (--token / KACHE_PLANNER_TOKEN): every route accepts anonymous \
             requests, so anyone who reaches this port can ingest into any namespace and report \
             feedback that drops keys from every plan; set a token (and --ingest-token for \
             ingest) before exposing it"
        ),
        "ingest_only" => warn!(
            "no plan token is set (--token / KACHE_PLANNER_TOKEN): plans and feedback are \
             anonymous; only ingest needs the ingest token"
        ),
        _ => {}
    }
    let limits = Limits::new(config.max_artifacts);
    let mut app = App::new(config.planner_name.clone(), auth, limits);
    app.documents = signed::Documents::new(config.trusted_keys.clone(), &config.s3_prefix);
    if !app.documents.checked() {
        warn!(
            "no trusted keys (--trusted-keys / KACHE_PLANNER_TRUSTED_KEYS): every well-formed \
             manifest and shard is learned, signed or not"
        );
    }
    app.gc = gc::collector(&config)?;
    let app = Arc::new(app);
    app.metrics.max_artifacts.set(limits.max_artifacts as i64);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    // Check everything that can fail at start before binding the port.
    let ha_namespace = if config.ha_enabled {
        match config.resolve_ha_namespace() {
            Some(namespace) => Some(namespace),
            None => bail!(
                "HA is enabled but no namespace resolves: set --ha-namespace, KACHE_HA_NAMESPACE or \
                 POD_NAMESPACE, or run in a pod with {}",
                config::SERVICE_ACCOUNT_NAMESPACE
            ),
        }
    } else {
        let backend =
            open_backend(&config.db_path, config.seed_state_file.as_deref(), &app).await?;
        app.set_backend(Some(backend)).await;
        None
    };

    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("binding {}", config.bind))?;
    let addr = listener.local_addr()?;
    info!(
        %addr,
        planner = config.planner_name,
        auth = app.auth.mode(),
        ingest_namespaces = %app.auth.namespaces(),
        "listening"
    );
    // Tests and scripts read this line to find an ephemeral port.
    println!("kache-service listening on http://{addr}");

    let ha_task = ha_namespace.map(|namespace| {
        let app = app.clone();
        let config = config.clone();
        let shutdown = shutdown_rx.clone();
        tokio::spawn(async move {
            let result = ha::run(
                app,
                namespace,
                config.ha_lease_name,
                config.db_path,
                config.seed_state_file,
                shutdown,
            )
            .await;
            if let Err(err) = result {
                ha::fatal(&err);
            }
        })
    });

    let scan_task = match config.remote() {
        Some(backend) => {
            let storage = kache_remote::open(&backend)
                .with_context(|| "opening the bucket to learn from".to_string())?;
            Some(tokio::spawn(scan::run(
                app.clone(),
                storage,
                kache_remote::Layout::new(&config.s3_prefix),
                std::time::Duration::from_secs(config.scan_interval.max(1)),
                shutdown_rx.clone(),
            )))
        }
        None => None,
    };

    let gc_task = app
        .gc
        .clone()
        .filter(|_| config.gc_interval > 0)
        .map(|collector| {
            tokio::spawn(gc::run(
                app.clone(),
                collector,
                std::time::Duration::from_secs(config.gc_interval),
                shutdown_rx.clone(),
            ))
        });

    let server =
        axum::serve(listener, http::router(app.clone())).with_graceful_shutdown(async move {
            shutdown_signal().await;
            info!("shutting down: draining requests");
            let _ = shutdown_tx.send(true);
        });
    server.await.context("serving HTTP")?;
    if let Some(task) = ha_task {
        let _ = task.await;
    }
    if let Some(task) = scan_task {
        let _ = task.await;
    }
    if let Some(task) = gc_task {
        let _ = task.await;
    }
    app.set_backend(None).await;
    info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
