//! `kache keygen`: a signing key pair for the shared cache.
//!
//! The secret goes to a new file (mode 0600, never overwritten); the
//! public key is printed. Writers set `KACHE_SIGNING_KEY` to the file (or
//! to its content, as a CI secret); readers set `KACHE_TRUSTED_KEYS` to the
//! public key.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use kache_remote::sign::SigningKey;

#[derive(Parser)]
pub struct Args {
    /// Where to write the secret key (refuses an existing file).
    #[arg(long, value_name = "PATH", default_value = "kache-signing.key")]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let (key, secret) = SigningKey::generate().map_err(anyhow::Error::msg)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&args.out)
        .with_context(|| {
            format!(
                "creating {} (an existing key is never replaced)",
                args.out.display()
            )
        })?;
    file.write_all(format!("{secret}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "secret key: {} (mode 0600; keep it with the writers)",
        args.out.display()
    );
    println!("public key: {}", key.public());
    println!();
    println!(
        "writers (CI on the default branch):  KACHE_SIGNING_KEY={}",
        args.out.display()
    );
    println!("                                     (or the file's content, as a CI secret)");
    println!(
        "every reader:                        KACHE_TRUSTED_KEYS={}",
        key.public()
    );
    Ok(ExitCode::SUCCESS)
}
