#!/usr/bin/env bash
# Writes the benchmarks' Rust project (axum + tokio + serde + clap + tracing:
# about 90 crates from crates.io) into the directory $1.
set -euo pipefail
dir=${1:?usage: rust-project.sh <dir>}
mkdir -p "$dir/src"
cat > "$dir/Cargo.toml" <<'TOML'
[package]
name = "bench-app"
version = "0.1.0"
edition = "2021"

[dependencies]
axum = "0.8"
tokio = { version = "1", features = ["full"] }
serde = { version = "1", features = ["derive"] }
serde_json = "1"
clap = { version = "4", features = ["derive"] }
tracing = "0.1"
tracing-subscriber = "0.3"

# Not part of the kache workspace above it.
[workspace]
TOML
cat > "$dir/src/main.rs" <<'RS'
use axum::{Json, Router, routing::get};
use clap::Parser;
use serde::Serialize;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: String,
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt::init();
    let args = Args::parse();
    let app: Router = Router::new().route("/", get(|| async { Json(Health { status: "ok" }) }));
    let listener = tokio::net::TcpListener::bind(&args.bind).await.unwrap();
    tracing::info!("listening on {}", listener.local_addr().unwrap());
    let _ = app;
}
RS
