//! `tracing` output to stderr, filtered by `KACHE_LOG`.

use tracing_subscriber::EnvFilter;

/// In wrapper mode logging costs nothing unless `KACHE_LOG` is set.
pub fn init_for_wrapper() {
    if let Ok(filter) = std::env::var("KACHE_LOG")
        && !filter.is_empty()
    {
        init(&filter);
    }
}

/// For commands: `KACHE_LOG`, default `warn`.
pub fn init_for_cli() {
    init(&std::env::var("KACHE_LOG").unwrap_or_else(|_| "warn".to_string()));
}

fn init(filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}

/// For the daemon: `KACHE_LOG` (default `info`) appended to its log file
/// (mode 0600).
pub fn init_for_daemon(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
    // A log from before the mode was set: the user's alone too.
    let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
    let filter = std::env::var("KACHE_LOG").unwrap_or_else(|_| "kache=info".to_string());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .with_target(false)
        .try_init();
    Ok(())
}
