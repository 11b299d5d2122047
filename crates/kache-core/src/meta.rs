//! `store/<cache_key>/meta.json`: the description of one stored entry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::args::OutputKind;
use crate::key::Input;

/// Format version written into every `meta.json`.
pub const META_VERSION: u32 = 1;

/// One cache entry: what produced it, which files it holds, what rustc printed.
///
/// Paths inside `stdout`, `stderr`, `inputs` and dep-info blobs are
/// normalised (see [`crate::normalize`]); a restore denormalises them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    pub version: u32,
    pub cache_key: String,
    /// The pre-key this entry was found under (see [`crate::key`]).
    pub pre_key: String,
    pub crate_name: String,
    pub crate_types: Vec<String>,
    /// Target triple, or `host`.
    pub target: String,
    /// `debug` or `release`-like summary read from the codegen flags.
    pub profile: String,
    pub features: Vec<String>,
    pub files: Vec<FileRecord>,
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub stderr: String,
    pub compile_time_ms: u64,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// The source files rustc read, by content.
    pub inputs: Vec<Input>,
    /// `env!`/`option_env!` variables and their values at compile time.
    pub env_deps: Vec<(String, Option<String>)>,
    /// Digest of each pre-key component, for `why-miss`.
    pub components: BTreeMap<String, String>,
    /// A machine-local path kache could not normalise, and why. It stays in
    /// the key as is, so the entry only hits from the same place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unnormalised: Option<String>,
}

/// One stored output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// File name inside the output directory.
    pub name: String,
    pub size: u64,
    /// blake3 hex of the stored bytes (the blob's name).
    pub hash: String,
    /// The executable bit: set exactly for `OutputKind::Executable` and
    /// `OutputKind::LinkedExecutable`.
    pub executable: bool,
    /// How the file may be restored.
    pub kind: OutputKind,
}

impl FileRecord {
    /// May the file share an inode with its blob (see `OutputKind`)?
    pub fn linkable(&self) -> bool {
        matches!(
            self.kind,
            OutputKind::Immutable | OutputKind::LinkedExecutable
        )
    }
}

impl EntryMeta {
    /// Total bytes of the entry's files.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}
