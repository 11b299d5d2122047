#!/usr/bin/env bash
# Small projects whose procedural macros read files and variables behind
# rustc's back, for bench/real-world.sh. The macros run in a library crate
# (cached by kache); the binary prints what the library embedded.
#
#   embed-assets: include_dir! and rust-embed over `assets/` (no build
#     script declares the folder: a new file there is seen only through the
#     folder's listing); rust-embed's folder comes from $EMBED_ASSETS
#     (interpolate-folder-path), which build.rs declares with
#     rerun-if-env-changed. In a debug build rust-embed bakes the folder's
#     absolute path into the library and reads it at run time.
#   sqlx-migrate: sqlx::migrate!("./migrations") with the sqlite feature,
#     build.rs as `sqlx migrate build-script` writes it; the program applies
#     the migrations to an in-memory database and prints them and the tables.
#
# Usage: bash bench/macro-projects.sh write NAME DIR   (writes the project)
#        bash bench/macro-projects.sh edit NAME DIR    (adds an asset file /
#                                                       a third migration)
set -euo pipefail
action=${1:?usage: macro-projects.sh write|edit NAME DIR}
name=${2:?NAME: embed-assets or sqlx-migrate}
dir=${3:?DIR}

write_embed() {
    mkdir -p "$dir/src" "$dir/assets/sub" "$dir/assets-alt"
    cat > "$dir/Cargo.toml" <<'TOML'
[package]
name = "embed-assets"
version = "0.1.0"
edition = "2021"

[dependencies]
include_dir = "=0.7.4"
rust-embed = { version = "=8.13.0", features = ["interpolate-folder-path"] }

# Not part of any workspace above it.
[workspace]
TOML
    cat > "$dir/build.rs" <<'RS'
// rust-embed's folder is read from EMBED_ASSETS while the macro expands.
fn main() {
    println!("cargo:rerun-if-env-changed=EMBED_ASSETS");
}
RS
    cat > "$dir/src/lib.rs" <<'RS'
//! Embeds `assets/` with include_dir and `$EMBED_ASSETS` with rust-embed.
use include_dir::{include_dir, Dir};
use rust_embed::RustEmbed;

static ASSETS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/assets");

#[derive(RustEmbed)]
#[folder = "$EMBED_ASSETS"]
struct Embedded;

fn walk(dir: &Dir<'_>, out: &mut Vec<String>) {
    for file in dir.files() {
        let text = String::from_utf8_lossy(file.contents()).trim().replace('\n', "|");
        out.push(format!("include_dir {} {} {text}", file.path().display(), file.contents().len()));
    }
    for sub in dir.dirs() {
        walk(sub, out);
    }
}

/// One line per embedded file: which macro, its name, size and text.
pub fn lines() -> Vec<String> {
    let mut lines = Vec::new();
    walk(&ASSETS, &mut lines);
    for name in Embedded::iter() {
        let data = Embedded::get(&name).map(|f| f.data.into_owned()).unwrap_or_default();
        let text = String::from_utf8_lossy(&data).trim().replace('\n', "|");
        lines.push(format!("rust-embed {name} {} {text}", data.len()));
    }
    lines.sort();
    lines
}
RS
    cat > "$dir/src/main.rs" <<'RS'
fn main() {
    for line in embed_assets::lines() {
        println!("{line}");
    }
}
RS
    echo hello > "$dir/assets/a.txt"
    printf 'two\nlines\n' > "$dir/assets/sub/b.txt"
    echo alternative > "$dir/assets-alt/alt.txt"
}

write_sqlx() {
    mkdir -p "$dir/src" "$dir/migrations"
    cat > "$dir/Cargo.toml" <<'TOML'
[package]
name = "sqlx-migrate"
version = "0.1.0"
edition = "2021"

[dependencies]
sqlx = { version = "=0.8.6", default-features = false, features = ["sqlite", "migrate", "macros", "runtime-tokio"] }
tokio = { version = "1", features = ["rt", "macros"] }

# Not part of any workspace above it.
[workspace]
TOML
    cat > "$dir/build.rs" <<'RS'
// As `sqlx migrate build-script` writes it: a new migration reruns the build.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
RS
    cat > "$dir/src/lib.rs" <<'RS'
//! The migrations `sqlx::migrate!` embeds at compile time.
use sqlx::Row;

/// The migrations, then the tables they make in an empty database.
pub async fn lines() -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let migrator = sqlx::migrate!("./migrations");
    let mut lines = Vec::new();
    for m in migrator.iter() {
        lines.push(format!("migration {} {} {}", m.version, m.description, m.sql.len()));
    }
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await?;
    migrator.run(&pool).await?;
    let rows = sqlx::query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .fetch_all(&pool)
        .await?;
    for row in rows {
        lines.push(format!("table {}", row.get::<String, _>(0)));
    }
    Ok(lines)
}
RS
    cat > "$dir/src/main.rs" <<'RS'
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    for line in sqlx_migrate::lines().await? {
        println!("{line}");
    }
    Ok(())
}
RS
    echo 'CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);' > "$dir/migrations/0001_users.sql"
    echo 'CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, body TEXT);' > "$dir/migrations/0002_posts.sql"
}

case "$action $name" in
    "write embed-assets") write_embed ;;
    "write sqlx-migrate") write_sqlx ;;
    "edit embed-assets") echo 'added later' > "$dir/assets/sub/c.txt" ;;
    "edit sqlx-migrate") echo 'CREATE TABLE tags (id INTEGER PRIMARY KEY, label TEXT);' > "$dir/migrations/0003_tags.sql" ;;
    *) echo "unknown: $action $name" >&2; exit 2 ;;
esac
