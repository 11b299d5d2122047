//! Build-script runs as cache entries (on unless `KACHE_CACHE_BUILD_SCRIPTS=0`).
//!
//! Cargo runs a build script by executing `build/<pkg>-<h>/build-script-build`,
//! a hard link of the executable rustc wrote beside it
//! (`build_script_build-<h>`). kache cannot see that run otherwise, so with
//! the switch on (the default), after the wrapper compiled or restored that executable it
//! moves it to `build_script_build-<h>.kache-real` and writes a small
//! `#!/bin/sh` launcher in its place ([`install_launchers`]); cargo then
//! links the launcher. The launcher runs `kache build-script-run <real>
//! <blake3 of real> -- <args>` ([`launch`]), which:
//!
//! 1. refuses a real binary whose content is not the recorded hash (a
//!    launcher can never run a stale script);
//! 2. with the switch off (or kache disabled) becomes the real script, exactly
//!    as cargo would have run it;
//! 3. otherwise builds the run's pre-key from what cargo passes the script
//!    (see [`env::keyed_env`]), the script's hash, every file of its package
//!    (declared or not: `cargo clean` would rerun it) and the compilers it
//!    may call, and looks for a stored run whose declarations
//!    (`rerun-if-changed` files and directories by content,
//!    `rerun-if-env-changed` variables by value) still hold now; a hit
//!    restores `OUT_DIR` (reflink, else a copy: never a hard link, scripts
//!    rewrite their files in place) and replays the run's stdout and
//!    stderr without executing the script;
//! 4. on a miss runs the real script, tees its output, and stores the run:
//!    every file of `OUT_DIR` as a blob, with a manifest (`manifest`) that
//!    maps the flat entry names (`out.<n>`) back to relative paths.
//!
//! Anything kache cannot key or store (a symlink in `OUT_DIR`, output that
//! is not UTF-8, a declared file changed while the script ran, a script
//! that wrote into its own package) runs the script and stores nothing.
//! With the switch off nothing here runs: the compile entries and their
//! keys are the same either way, because the launcher is written only into
//! `target/`, never into the store.

mod env;
mod out_dir;
mod process;
mod session;

use out_dir::break_links;
use session::RunSession;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use kache_core::args::{Extern, Invocation, Output, OutputKind};
use tracing::{debug, warn};

use super::lookup;
use crate::config::Config;

/// The switch (`0` turns it off; on by default, see
/// [`Config::cache_build_scripts`]).
pub const FLAG: &str = "KACHE_CACHE_BUILD_SCRIPTS";

/// The subcommand the launcher calls (`argv[1]`).
pub const SUBCOMMAND: &str = "build-script-run";

/// Appended to the real script's file name.
const REAL_SUFFIX: &str = ".kache-real";

/// The launcher's second line, which marks a file as ours.
const LAUNCHER_MARK: &str = "# kache build-script launcher";

/// The `crate_types` of a run entry: runs are their own kind.
pub const RUN_KIND: &str = "build-script-run";

/// The entry file holding the `OUT_DIR` manifest.
const MANIFEST: &str = "manifest";

/// `env_deps` names of the declarations a run entry was keyed by.
pub const DECLARED: &str = "build-script declared #";

/// Most files an `OUT_DIR` may hold and still be stored.
const MAX_FILES: usize = 20_000;

/// Build-dependencies whose purpose is to record the build itself: the
/// repository's commit, tags and dirty state (`git2`, `gix`, `vergen*`,
/// `shadow-rs`), or the environment and job count (`built`, `build-data`).
/// None of that is in cargo's rules (`cargo clean` would see a new
/// commit, a replay would not), so a script linking one is never cached.
const RECORDS_THE_BUILD: &[&str] = &[
    "git2",
    "gix",
    "shadow_rs",
    "built",
    "build_data",
    "build_info_build",
    "git_testament",
];

/// Whether `name` (underscores) is one of [`RECORDS_THE_BUILD`], or a
/// `vergen*` or `gix*` crate.
fn is_recorder(name: &str) -> bool {
    RECORDS_THE_BUILD.contains(&name) || name.starts_with("vergen") || name.starts_with("gix_")
}

/// The message of a run that is never cached because it links `name`.
fn records_reason(name: &str) -> String {
    format!("build script records the repository or the build ({name}): not cached")
}

/// The recorder (see [`RECORDS_THE_BUILD`]) among a script's direct
/// build-dependencies, under its own name or an alias (`bi = { package =
/// "built" }`: the rlib's file name says `libbuilt-<hash>.rlib`).
fn recorder_among(externs: &[Extern]) -> Option<&str> {
    externs.iter().find_map(|e| {
        let alias = e.name.rsplit(':').next().unwrap_or(&e.name);
        let real = e
            .path
            .as_deref()
            .and_then(|p| Path::new(p).file_stem())
            .and_then(|stem| stem.to_str())
            .and_then(|stem| stem.strip_prefix("lib"))
            .map(|stem| stem.rsplit_once('-').map_or(stem, |(name, _)| name));
        [Some(alias), real]
            .into_iter()
            .flatten()
            .find(|name| is_recorder(name))
    })
}

/// The recorder a script's binary links through a helper crate, which only
/// the binary still shows: a recorder's functions keep its crate name in
/// their symbols (`_ZN5built…`), its panic locations its registry path
/// (`…/index.crates.io-<h>/built-0.8.1/src/…`). Two passes over the bytes,
/// one per marker, whatever the number of names.
fn recorder_linked(binary: &[u8]) -> Option<String> {
    let names = || RECORDS_THE_BUILD.iter().copied().chain(["vergen", "gix"]);
    for at in memchr::memmem::find_iter(binary, b"_ZN") {
        let rest = &binary[at + 3..];
        if let Some(name) = names().find(|name| {
            let len = name.len().to_string();
            rest.starts_with(len.as_bytes()) && rest[len.len()..].starts_with(name.as_bytes())
        }) {
            return Some(name.to_string());
        }
    }
    const REGISTRY: &[u8] = b".crates.io-";
    for at in memchr::memmem::find_iter(binary, REGISTRY) {
        let rest = &binary[at + REGISTRY.len()..];
        let Some(slash) = rest.iter().take(64).position(|&b| b == b'/') else {
            continue;
        };
        let component = &rest[slash + 1..];
        if let Some(name) = names().find(|name| {
            let dashed = name.replace('_', "-");
            component.starts_with(dashed.as_bytes())
                && component.get(dashed.len()) == Some(&b'-')
                && component
                    .get(dashed.len() + 1)
                    .is_some_and(u8::is_ascii_digit)
        }) {
            return Some(name.to_string());
        }
    }
    None
}

/// After the wrapper wrote (compiled or restored) a build script's
/// executable into `out_dir`: replaces each linked executable among
/// `outputs` with a launcher, the real binary beside it. Does nothing with
/// the switch off or for any other crate, and for a script that records
/// the build ([`RECORDS_THE_BUILD`]: that is said once, as a passthrough
/// of its run). A failure leaves the real binary where it was (the script
/// then runs uncached) and never fails the build.
pub fn install_launchers(
    config: &Config,
    invocation: &Invocation,
    out_dir: &Path,
    outputs: &[Output],
) {
    let crate_name = &invocation.crate_name;
    // Cargo compiles a build script into `<profile>/build/<pkg>-<hash>/`;
    // any other place (another layout, a user's crate of that name) is
    // left alone.
    let in_build_dir = out_dir
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|name| name == "build");
    if !config.cache_build_scripts || !crate_name.starts_with("build_script_") || !in_build_dir {
        return;
    }
    let never_cached = |reason: String| {
        let package = std::env::var("CARGO_PKG_NAME").unwrap_or_else(|_| "build-script".into());
        let unit = format!("{package}:{RUN_KIND}");
        super::outcome::record_passthrough_of(config, &unit, Instant::now(), &reason);
    };
    if let Some(name) = recorder_among(&invocation.externs) {
        return never_cached(records_reason(name));
    }
    for output in outputs
        .iter()
        .filter(|o| o.kind == OutputKind::LinkedExecutable)
    {
        let path = out_dir.join(&output.name);
        // Read once: scanned for a recorder, then hashed for the launcher.
        let binary = match std::fs::read(&path) {
            Ok(binary) => binary,
            Err(err) => {
                warn!(path = %path.display(), "build-script launcher not installed: {err:#}");
                continue;
            }
        };
        if let Some(name) = recorder_linked(&binary) {
            return never_cached(records_reason(&name));
        }
        let hash = blake3::hash(&binary).to_hex().to_string();
        if let Err(err) = install_launcher(&path, &hash) {
            warn!(path = %path.display(), "build-script launcher not installed: {err:#}");
        }
    }
}

/// Moves the real script at `path` (whose content hashes to `hash`) aside
/// and writes the launcher in its place.
fn install_launcher(path: &Path, hash: &str) -> Result<()> {
    let real = real_path(path);
    let kache = std::env::current_exe().context("finding the kache binary")?;
    // Rename keeps the inode: a real binary restored as a link to its blob
    // stays one, and nothing is written through it.
    std::fs::rename(path, &real).with_context(|| format!("moving {} aside", path.display()))?;
    let written = (|| -> Result<()> {
        let name = real
            .file_name()
            .context("the script has no file name")?
            .to_string_lossy()
            .to_string();
        let text = launcher_text(&kache, &real, &name, hash);
        let temp = path.with_file_name(format!("{name}.kache-tmp"));
        std::fs::write(&temp, text)?;
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&temp, path)?;
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::rename(&real, path);
    }
    written
}

/// How an entry records one declaration line of [`declared::describe`]:
/// as it is, but a declared variable's value (`env NAME=value`) as its
/// digest, like an `env!` value ([`lookup::env_digest`]): a script may
/// declare a token, and the entry sits in the index and the bucket. The
/// digest proves a replay as well as the value would, and `why-miss` can
/// still name the variable.
pub fn recorded_form(line: &str) -> String {
    if let Some(rest) = line.strip_prefix("env ")
        && let Some((name, value)) = rest.split_once('=')
    {
        return format!("env {name}={}", lookup::env_digest(name, value));
    }
    line.to_string()
}

/// `<path>.kache-real`.
fn real_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(REAL_SUFFIX);
    PathBuf::from(name)
}

/// The launcher: finds the real script beside itself (cargo runs it through
/// a hard link in the same directory), else at the path it was written
/// for, and hands it to kache; without kache it runs the script directly.
fn launcher_text(kache: &Path, real: &Path, real_name: &str, hash: &str) -> String {
    let q = |p: &Path| shell_quote(&p.to_string_lossy());
    format!(
        "#!/bin/sh\n{LAUNCHER_MARK} ({FLAG}); see ARCHITECTURE.md.\n\
         r=\"$(dirname -- \"$0\")\"/{name}\n\
         [ -f \"$r\" ] || r={real}\n\
         k={kache}\n\
         [ -x \"$k\" ] && exec \"$k\" {SUBCOMMAND} \"$r\" {hash} -- \"$@\"\n\
         exec \"$r\" \"$@\"\n",
        name = shell_quote(real_name),
        real = q(real),
        kache = q(kache),
    )
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// blake3 hex of a file's content.
fn hash_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = blake3::Hasher::new();
    std::io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// `kache build-script-run <real> <hash> -- <args…>`: runs, or replays, one
/// build-script run (see the module documentation). Returns the exit code.
pub fn launch(args: Vec<OsString>) -> i32 {
    let (real, hash, script_args) = match args.as_slice() {
        [real, hash, sep, rest @ ..] if sep == "--" => {
            (PathBuf::from(real), hash.to_string_lossy(), rest.to_vec())
        }
        _ => {
            eprintln!("kache: usage: kache {SUBCOMMAND} <script> <blake3> -- <args…>");
            return 2;
        }
    };
    match hash_file(&real) {
        Ok(actual) if actual == hash => {}
        Ok(_) => {
            eprintln!(
                "kache: {} is not the build script its launcher was written for; \
                 run `cargo clean` for this package",
                real.display()
            );
            return 101;
        }
        Err(err) => {
            eprintln!("kache: {err:#}");
            return 101;
        }
    }
    let config = match Config::load() {
        Ok(config) if !config.disabled && config.cache_build_scripts => config,
        // An OUT_DIR restored while the flag was on shares inodes with
        // the store; the script must not write through them.
        _ => return exec_unshared(&real, &script_args),
    };
    crate::logging::init_for_wrapper();
    let started = Instant::now();
    let mut run = match RunSession::open(&config, &real, &hash, &script_args, started) {
        Ok(run) => run,
        Err(err) => {
            debug!("build-script run not cached: {err:#}");
            return exec_unshared(&real, &script_args);
        }
    };
    run.run()
}

/// Becomes the real script once no file of `OUT_DIR` shares its inode
/// with a blob (an earlier run stored or restored them as links: a script
/// rewriting one in place would change the blob, and every other checkout
/// linked to it). A file that can be neither copied nor removed is left
/// (the cache never fails a build; a restore re-hashes every blob). Returns
/// only if the exec fails.
fn exec_unshared(real: &Path, args: &[OsString]) -> i32 {
    if let Some(out_dir) = std::env::var_os("OUT_DIR")
        && let Err(err) = break_links(Path::new(&out_dir))
    {
        warn!(out_dir = %Path::new(&out_dir).display(), "cannot unshare OUT_DIR: {err:#}");
    }
    exec(real, args)
}

/// Becomes the real script; returns only if that fails.
fn exec(real: &Path, args: &[OsString]) -> i32 {
    let err = Command::new(real).args(args).exec();
    eprintln!("kache: cannot run {}: {err}", real.display());
    101
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_launcher_quotes_paths_and_names_the_hash() {
        let text = launcher_text(
            Path::new("/opt/k'ache/kache"),
            Path::new("/t/build/x-1/build_script_build-1.kache-real"),
            "build_script_build-1.kache-real",
            "abc",
        );
        assert!(text.starts_with("#!/bin/sh\n"));
        assert!(text.contains("k='/opt/k'\\''ache/kache'"));
        assert!(text.contains("build-script-run \"$r\" abc --"));
    }
}
