//! Fault injection for the crash-safety tests, used by every floor that
//! has a moment worth crashing at (the wrapper between blobs and entry,
//! a push between pack and manifest).

/// Fault injection for the crash-safety tests: with `KACHE_FAULT=<point>`
/// the process kills itself with SIGKILL at that point, as an OOM killer or
/// a cancelled CI job would.
pub fn point(name: &str) {
    if std::env::var("KACHE_FAULT").is_ok_and(|v| v == name) {
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
