//! kache's shared cache, used by the client (`kache sync`, the daemon) and
//! the planner service alike.
//!
//! - [`layout`]: the object names of `DESIGN.md`, byte for byte;
//! - [`pack`]: an entry's files as `tar.zst`, written streaming and read as
//!   hostile input;
//! - [`storage`]: the [`Storage`] trait and its errors;
//! - [`sign`]: the keys that sign and verify remote documents;
//! - [`oci`]: an OCI registry (ghcr.io, …) as a store, one tag per object;
//! - [`s3`], [`fs`]: one file per backend (adding GCS or Azure is adding a
//!   file that builds its `object_store`).
//!
//! Architecture invariant: this crate knows nothing of the local store, the
//! daemon or the planner. It names objects, moves bytes and checks packs.

pub mod fs;
pub mod layout;
pub mod oci;
pub mod pack;
pub mod s3;
pub mod sign;
pub mod storage;

pub use layout::Layout;
pub use storage::{RemoteError, Storage};

/// Which backend, and where.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    S3(s3::S3Spec),
    Fs(std::path::PathBuf),
    Oci(oci::OciSpec),
}

/// Opens the backend.
pub fn open(backend: &Backend) -> storage::Result<Box<dyn Storage>> {
    Ok(match backend {
        Backend::S3(spec) => Box::new(s3::open(spec)?),
        Backend::Fs(root) => Box::new(fs::open(root)?),
        Backend::Oci(spec) => Box::new(oci::open(spec)?),
    })
}
