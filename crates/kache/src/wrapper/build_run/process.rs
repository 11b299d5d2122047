//! Running the real script with its output teed.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};

use super::super::compile::tee;

/// A finished run of the real script.
pub(super) struct Ran {
    pub(super) code: i32,
    pub(super) stdout: Vec<u8>,
    pub(super) stderr: Vec<u8>,
    pub(super) elapsed_ms: u64,
}

/// Runs `real`, passing its stdout and stderr through as they come and
/// keeping a copy of each.
pub(super) fn tee_run(real: &Path, args: &[OsString]) -> Result<Ran> {
    let started = Instant::now();
    let mut child = Command::new(real)
        .args(args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", real.display()))?;
    let out = child.stdout.take().context("no stdout pipe")?;
    let err = child.stderr.take().context("no stderr pipe")?;
    let out_thread = std::thread::spawn(move || tee(out, std::io::stdout()));
    let err_thread = std::thread::spawn(move || tee(err, std::io::stderr()));
    let status = child.wait().context("waiting for the build script")?;
    let stdout = out_thread.join().unwrap_or_default();
    let stderr = err_thread.join().unwrap_or_default();
    let code = status.code().unwrap_or(101);
    Ok(Ran {
        code,
        stdout,
        stderr,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}
