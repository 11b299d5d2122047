//! High availability: contend for a `coordination.k8s.io/v1` Lease and hold
//! the database only while leading.
//!
//! A follower answers `/healthz` 200 and `/readyz` 503. On becoming leader the
//! instance opens the database, loads its state and turns ready; on losing
//! the lease it turns not ready first, then closes the database, then
//! contends again. On shutdown a leader steps down so a standby takes over
//! within one retry period instead of one lease duration.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use kunobi_ha::leader::{Identity, LeaderElection};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::http::App;

/// Runs leader election until `shutdown` fires. Returns an error only for
/// failures that should stop the process (no API server, unusable database).
pub async fn run(
    app: Arc<App>,
    namespace: String,
    lease_name: String,
    db_path: PathBuf,
    seed: Option<PathBuf>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "kache-service".to_string());
    let identity = format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    info!(
        namespace,
        lease = lease_name,
        identity,
        "contending for leadership"
    );
    let election = LeaderElection::builder(client, namespace, lease_name)
        .identity(Identity::Custom(identity))
        .build();
    loop {
        let mut guard = tokio::select! {
            acquired = election.acquire() => acquired.context("acquiring the lease")?,
            _ = shutdown.changed() => return Ok(()),
        };
        info!("became leader; opening the database");
        let backend = crate::open_backend(&db_path, seed.as_deref(), &app).await?;
        app.set_backend(Some(backend)).await;
        let lost = tokio::select! {
            reason = guard.lost() => Some(reason),
            _ = shutdown.changed() => None,
        };
        app.set_backend(None).await;
        match lost {
            Some(reason) => warn!(
                ?reason,
                "lost leadership; closed the database, contending again"
            ),
            None => {
                info!("shutting down: stepping down");
                guard.step_down().await;
                return Ok(());
            }
        }
    }
}

/// Logs and exits: used when the leader cannot serve at all.
pub fn fatal(err: &anyhow::Error) -> ! {
    error!("{err:#}");
    eprintln!("kache-service: {err:#}");
    std::process::exit(1)
}
