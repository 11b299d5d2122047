//! Reads a TOML document of named texts, finds the words matching a pattern
//! in each, and prints a JSON summary with each text's blake3 hash and its
//! zstd-compressed size.

use std::collections::BTreeMap;

use anyhow::Result;
use clap::Parser;
use serde::{Deserialize, Serialize};

#[derive(Parser)]
struct Args {
    /// The pattern words must match.
    #[arg(long, default_value = r"\b[a-z]{5,}\b")]
    pattern: String,
}

#[derive(Deserialize)]
struct Input {
    texts: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Summary {
    words: Vec<String>,
    blake3: String,
    zstd_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("no text matched {0:?}")]
struct NothingMatched(String);

const INPUT: &str = r#"
[texts]
cache = "a build cache restores outputs instead of compiling them again"
rust = "cargo calls the wrapper for every crate of the dependency graph"
"#;

fn main() -> Result<()> {
    let args = Args::parse();
    let input: Input = toml::from_str(INPUT)?;
    let pattern = regex::Regex::new(&args.pattern)?;
    let mut out = BTreeMap::new();
    for (name, text) in &input.texts {
        let words: Vec<String> = pattern
            .find_iter(text)
            .map(|m| m.as_str().to_string())
            .collect();
        let summary = Summary {
            words,
            blake3: blake3::hash(text.as_bytes()).to_hex()[..16].to_string(),
            zstd_bytes: zstd::encode_all(text.as_bytes(), 3)?.len(),
        };
        out.insert(name.clone(), summary);
    }
    if out.values().all(|s| s.words.is_empty()) {
        return Err(NothingMatched(args.pattern).into());
    }
    for (name, summary) in &out {
        println!("{name}: {}", serde_json::to_string(summary)?);
    }
    Ok(())
}
