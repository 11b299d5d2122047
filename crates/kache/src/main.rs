//! `kache`: a build cache for Rust.
//!
//! When `argv[1]` names rustc (or clippy-driver) kache is cargo's
//! `RUSTC_WRAPPER` and caches that compile; otherwise it is a command-line
//! tool over the local store.

mod cli;
mod config;
mod events;
mod logging;
mod store;
mod wrapper;

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let _self = args.next();
    let rest: Vec<_> = args.collect();
    if let Some(first) = rest.first()
        && wrapper::is_compiler(first)
    {
        let compiler = rest[0].clone();
        let code = wrapper::run(compiler, rest[1..].to_vec());
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    logging::init_for_cli();
    match cli::run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("kache: {err:#}");
            ExitCode::FAILURE
        }
    }
}
