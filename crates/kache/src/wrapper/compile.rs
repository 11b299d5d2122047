//! Running rustc: plainly (passthrough) or with its output teed, so cargo
//! sees every line as it comes (pipelining starts on the `.rmeta` notice)
//! while kache keeps a copy to replay on later hits.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// The program cargo asked kache to run: rustc itself, or clippy-driver,
/// which takes the rustc path as its first argument.
pub struct Compiler {
    /// The rustc binary (the toolchain identity).
    pub rustc: PathBuf,
    /// clippy-driver, when the call goes through it.
    pub driver: Option<PathBuf>,
}

impl Compiler {
    fn program(&self) -> &Path {
        self.driver.as_deref().unwrap_or(&self.rustc)
    }

    fn lead(&self) -> Vec<OsString> {
        self.driver
            .iter()
            .map(|_| self.rustc.clone().into_os_string())
            .collect()
    }

    /// Runs the compiler with inherited stdio: the fallback of every failure.
    pub fn passthrough(&self, args: &[OsString]) -> i32 {
        let mut all = self.lead();
        all.extend_from_slice(args);
        passthrough(self.program(), &all)
    }

    /// Runs the compiler with its output teed (see [`run_teed`]).
    pub fn run_teed(&self, args: &[String], display: &[(String, String)]) -> Result<Compiled> {
        let mut all: Vec<String> = self
            .lead()
            .into_iter()
            .map(|a| a.to_string_lossy().to_string())
            .collect();
        all.extend_from_slice(args);
        run_teed(self.program(), &all, display)
    }
}

/// What one rustc run produced.
pub struct Compiled {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Lines in which rustc refused an option, held back from cargo (see
    /// [`refuses_an_option`]): the caller reruns without kache's flags, or
    /// forwards them.
    pub held: Vec<u8>,
    pub elapsed: Duration,
}

/// Whether a stderr line is rustc refusing a command-line option (it comes
/// before any compile output). Such a line is not shown to cargo at once:
/// when the option was one kache added, the compile is rerun as cargo asked
/// and the line would only confuse.
pub fn refuses_an_option(line: &[u8]) -> bool {
    let text = String::from_utf8_lossy(line);
    text.contains("Unrecognized option") || text.contains("unknown print request")
}

/// Runs rustc with inherited stdio and returns its exit code. This is the
/// fallback of every failure path, so it only fails if rustc cannot start.
pub fn passthrough(rustc: &Path, args: &[OsString]) -> i32 {
    match Command::new(rustc).args(args).status() {
        Ok(status) => exit_code(status),
        Err(err) => {
            eprintln!("kache: cannot run {}: {err}", rustc.display());
            127
        }
    }
}

/// Runs rustc, forwarding stdout and stderr line by line while recording them.
/// Each stderr line has its remapped path prefixes turned back into real
/// ones (`display`: `(remapped, real)`, see `Roots::display_paths`), so
/// diagnostics name this checkout's files, as without kache. Fails only
/// when rustc cannot be started.
pub fn run_teed(rustc: &Path, args: &[String], display: &[(String, String)]) -> Result<Compiled> {
    let started = Instant::now();
    let mut child = Command::new(rustc)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", rustc.display()))?;
    let stdout_pipe = child.stdout.take().expect("stdout is piped");
    let stdout_thread = std::thread::spawn(move || tee(stdout_pipe, std::io::stdout()));
    let mut stderr = Vec::new();
    let mut held = Vec::new();
    let mut reader = BufReader::new(child.stderr.take().expect("stderr is piped"));
    let mut err_out = std::io::stderr();
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = unmap(&line, display);
                if refuses_an_option(&line) {
                    held.extend_from_slice(&line);
                    continue;
                }
                let _ = err_out.write_all(&line);
                let _ = err_out.flush();
                stderr.extend_from_slice(&line);
            }
        }
    }
    // rustc has run: from here on nothing may fail, or the caller would run it twice.
    let code = child.wait().map_or(1, exit_code);
    let stdout = stdout_thread.join().unwrap_or_default();
    Ok(Compiled {
        code,
        stdout,
        stderr,
        held,
        elapsed: started.elapsed(),
    })
}

/// `line` with every `remapped` prefix that ends at a `/` replaced by its
/// real path.
fn unmap(line: &[u8], display: &[(String, String)]) -> Vec<u8> {
    let mut out = line.to_vec();
    for (remapped, real) in display {
        let needle = format!("{remapped}/");
        if memchr::memmem::find(&out, needle.as_bytes()).is_none() {
            continue;
        }
        let replacement = format!("{real}/");
        let mut next = Vec::with_capacity(out.len());
        let mut rest = &out[..];
        while let Some(at) = memchr::memmem::find(rest, needle.as_bytes()) {
            next.extend_from_slice(&rest[..at]);
            next.extend_from_slice(replacement.as_bytes());
            rest = &rest[at + needle.len()..];
        }
        next.extend_from_slice(rest);
        out = next;
    }
    out
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Copies `from` to `to` as it comes (flushing each chunk, so cargo sees
/// a line the moment it is written) and returns everything copied.
pub(super) fn tee(mut from: impl Read, mut to: impl Write) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                let _ = to.write_all(&buf[..n]);
                let _ = to.flush();
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remapped_prefixes_in_diagnostics_become_real_paths() {
        let display = vec![
            ("/kache/target".to_string(), "/w/a/target".to_string()),
            ("/kache/cargo".to_string(), "/home/u/.cargo".to_string()),
        ];
        let line = br#"{"file_name":"/kache/target/debug/build/x/out/gen.rs","rendered":"--> /kache/cargo/registry/y.rs and /kache/targetx"}"#;
        assert_eq!(
            String::from_utf8(unmap(line, &display)).unwrap(),
            r#"{"file_name":"/w/a/target/debug/build/x/out/gen.rs","rendered":"--> /home/u/.cargo/registry/y.rs and /kache/targetx"}"#
        );
        assert_eq!(unmap(b"plain line\n", &display), b"plain line\n");
    }
}
