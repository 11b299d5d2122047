//! Toolchain identity: the `rustc -vV` banner (or `cc -v`, `clippy-driver
//! --version`), remembered per binary, probe and stat (size, mtime, inode)
//! so a hit never spawns a process to learn it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use kache_core::args::FileNames;

use crate::store::{Stat, Store};

/// The output of `<binary> <probe>` (`rustc -vV`, `clippy-driver --version`,
/// `cc -v`), stdout then stderr (gcc prints its banner on stderr), from the
/// index when the binary is unchanged.
pub fn identity(store: &Store, rustc: &Path, probe: &str) -> Result<String> {
    probe_output(store, rustc, &[probe])
}

/// The output of `<binary> <args…>`, remembered like [`identity`]: for
/// probes whose answer depends only on the binary (and the machine), such
/// as what `-C target-cpu=native` resolves to.
pub fn probe_output(store: &Store, rustc: &Path, args: &[&str]) -> Result<String> {
    let resolved = resolve(rustc);
    let meta =
        std::fs::metadata(&resolved).with_context(|| format!("reading {}", resolved.display()))?;
    let stat = Stat::of(&meta);
    let probe = args.join(" ");
    let key = format!("{} {probe}", resolved.display());
    if let Some(banner) = store.index.toolchain(&key, &stat)? {
        return Ok(banner);
    }
    let output = Command::new(rustc)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {} {probe}", rustc.display()))?;
    if !output.status.success() {
        bail!("{} {probe} failed with {}", rustc.display(), output.status);
    }
    let mut bytes = output.stdout;
    bytes.extend_from_slice(&output.stderr);
    let banner = String::from_utf8(bytes).context("the version probe printed non-UTF-8")?;
    store.index.remember_toolchain(&key, &stat, &banner)?;
    Ok(banner)
}

/// The C library this machine links against: glibc's version where there
/// is one. A program linked against a newer glibc does not start on an
/// older one, so linked outputs carry it in their key.
pub fn libc_identity() -> String {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: gnu_get_libc_version returns a pointer to a static,
        // NUL-terminated string and has no preconditions.
        let version = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
        format!("glibc {}", version.to_string_lossy())
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        format!("{} {}", std::env::consts::OS, std::env::consts::ARCH)
    }
}

/// A bare `rustc` is looked up on `PATH`, as the OS would.
fn resolve(rustc: &Path) -> PathBuf {
    find_program(rustc.as_os_str()).unwrap_or_else(|| rustc.to_path_buf())
}

/// The file a program name runs: a name with a `/` as it is, a bare name
/// looked up on `PATH` (the first executable file), as `execvp` would.
/// `None` when there is no such executable.
pub fn find_program(program: &OsStr) -> Option<PathBuf> {
    let path = Path::new(program);
    if path.components().count() > 1 || program.as_encoded_bytes().contains(&b'/') {
        return is_executable(path).then(|| path.to_path_buf());
    }
    if program.is_empty() {
        return None;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether `rustc` accepts `flag` (say `--remap-path-scope=macro`, stable
/// only since 1.95), asked once per binary and remembered like the banner:
/// every flag kache adds to a compile must be one this toolchain knows.
pub fn accepts(store: &Store, rustc: &Path, flag: &str) -> bool {
    let resolved = resolve(rustc);
    let Ok(meta) = std::fs::metadata(&resolved) else {
        return false;
    };
    let stat = Stat::of(&meta);
    let key = format!("{} accepts {flag}", resolved.display());
    if let Ok(Some(answer)) = store.index.toolchain(&key, &stat) {
        return answer == "yes";
    }
    let dir = std::env::temp_dir();
    let out = dir.join(format!("kache-probe-{}", std::process::id()));
    let accepted = Command::new(rustc)
        .args(["-", "--crate-name", "___", "--crate-type", "lib", "--emit"])
        .arg(format!("metadata={}", out.display()))
        .arg(flag)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let _ = std::fs::remove_file(&out);
    let _ = store
        .index
        .remember_toolchain(&key, &stat, if accepted { "yes" } else { "no" });
    accepted
}

/// What `rustc` names each crate type's output for `target` (the host when
/// `None`): its `--print=file-names` table, asked once per binary and
/// target and remembered like the banner. `spec_hash` is the content hash
/// of a custom target specification (`--target foo.json`), so an edited
/// spec is asked again; `unstable_options` passes `-Z unstable-options`,
/// which such a spec needs.
pub fn file_names(
    store: &Store,
    rustc: &Path,
    target: Option<&str>,
    spec_hash: Option<&str>,
    unstable_options: bool,
) -> Result<FileNames> {
    let resolved = resolve(rustc);
    let meta =
        std::fs::metadata(&resolved).with_context(|| format!("reading {}", resolved.display()))?;
    let stat = Stat::of(&meta);
    let args = FileNames::probe_args(target, unstable_options);
    let key = format!(
        "{} {} spec={}",
        resolved.display(),
        args.join(" "),
        spec_hash.unwrap_or("none")
    );
    if let Some(names) = store
        .index
        .toolchain(&key, &stat)?
        .and_then(|text| FileNames::from_text(&text))
    {
        return Ok(names);
    }
    let output = Command::new(rustc)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {} {}", rustc.display(), args.join(" ")))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        bail!(
            "rustc --print=file-names failed with {}: {first}",
            output.status
        );
    }
    let stdout = String::from_utf8(output.stdout).context("rustc printed non-UTF-8 file names")?;
    let names = FileNames::parse(&stdout, &stderr).map_err(anyhow::Error::msg)?;
    store
        .index
        .remember_toolchain(&key, &stat, &names.to_text())?;
    Ok(names)
}
