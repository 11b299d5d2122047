//! `kache`: a build cache for Rust.
//!
//! `argv[1]` decides the mode (see ARCHITECTURE.md):
//! - rustc or clippy-driver: kache is cargo's `RUSTC_WRAPPER` for that compile;
//! - a kache subcommand or an option: the command-line tool;
//! - `build-script-run`: a build-script launcher's call (see
//!   `wrapper::build_run`, unless `KACHE_CACHE_BUILD_SCRIPTS=0`);
//! - any other program that exists (a path, or a name on `PATH`): the `cc`
//!   crate's compiler wrapper mode, which caches C-family object compiles and
//!   runs everything else exactly as asked;
//! - otherwise a compiler-like name is an error naming it, and anything else
//!   is the command line's error.

mod cli;
mod config;
mod daemon;
mod events;
mod fault;
mod lockfile;
mod logging;
mod owner;
mod remote;
mod store;
mod trust;
mod wrapper;

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let _self = args.next();
    let rest: Vec<_> = args.collect();
    if let Some(first) = rest.first() {
        let code = if wrapper::is_compiler(first) {
            Some(wrapper::run(first.clone(), rest[1..].to_vec()))
        } else if first == wrapper::BUILD_SCRIPT_RUN {
            Some(wrapper::run_build_script(rest[1..].to_vec()))
        } else if wrapper::is_other_program(first, cli::is_command) {
            Some(wrapper::run_program(first.clone(), rest[1..].to_vec()))
        } else {
            None
        };
        if let Some(code) = code {
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
    }
    // The daemon logs to its own file (see `kache daemon run`).
    let daemon_run = rest.len() >= 2 && rest[0] == "daemon" && rest[1] == "run";
    if !daemon_run {
        // `kache stats | head` ends quietly when the reader goes away, as
        // any command-line tool does, instead of panicking on EPIPE.
        // SAFETY: restoring the default disposition of SIGPIPE has no
        // preconditions; no other thread runs yet.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
        logging::init_for_cli();
    }
    match cli::run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("kache: {err:#}");
            ExitCode::FAILURE
        }
    }
}
