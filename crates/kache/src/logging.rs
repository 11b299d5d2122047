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
