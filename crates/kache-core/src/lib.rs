//! Wire types and pure logic shared by the `kache` client and `kache-service`.
//!
//! Architecture invariant: this crate does no I/O. It never opens a file, a
//! socket or a process; callers hand it bytes and strings and get values back.
//! That keeps every rule here unit-testable and reusable by the planner.

pub mod archive;
pub mod args;
pub mod buildscript;
pub mod cc;
pub mod depinfo;
pub mod file_names;
pub mod key;
pub mod linkargs;
pub mod manifest;
pub mod meta;
pub mod normalize;
pub mod plan;
pub mod size;
pub mod unstable;
