# Everyday commands. The README's two set-up commands work without just.

default:
    @just --list

# Build every crate.
build:
    cargo build --workspace --locked

# Every test, as CI runs them.
test:
    bash scripts/test.sh

# Formatting and lints only.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings

# The wrapper benchmark (a 60+ crate project, kache vs plain cargo).
bench:
    bash bench/wrapper.sh

# Install kache and run the cold/warm demo.
demo:
    bash scripts/demo.sh

# The crate version, used to tag release images.
version := `sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1`

# Build the planner's release binary, exactly as the image's build stage does.
build-service:
    cargo build --release --locked -p kache-service

# Build the planner image for the local engine (PLATFORM defaults to linux/amd64).
image-service PLATFORM="linux/amd64":
    PLATFORM={{PLATFORM}} TAG=dev docker buildx bake service --load

# Build and push the planner image tagged with the crate version and latest.
image-service-release PLATFORM="linux/amd64":
    PLATFORM={{PLATFORM}} TAG={{version}} docker buildx bake service-release --push

# Render, lint and validate the Helm chart with the real Helm engine.
test-chart:
    bash scripts/test-chart.sh

# The planner benchmark (100,000 artifacts, wrk at 32 connections).
bench-planner:
    bash bench/planner.sh
