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
