//! Packs: one entry's files as `tar` in `zstd`.
//!
//! The first member is `meta.json` (the entry's [`EntryMeta`]), then each
//! stored file under its recorded name. Writing streams from the store's
//! blobs into any `Write` (a temporary file before upload); nothing is held
//! whole in memory.
//!
//! Reading treats the pack as hostile. [`unpack`] writes into an empty
//! directory the caller owns and returns the meta only when everything
//! checks out: regular files only (no links, devices or directories), flat
//! safe names, `meta.json` first and well formed, the key and crate name it
//! was fetched under, every declared file present once with its size and
//! blake3, nothing else, and a bounded total size. On any error the
//! directory may hold partial files and the caller deletes it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use kache_core::meta::EntryMeta;

use crate::layout::{is_valid_crate_name, is_valid_key};

/// The name of a pack's first member.
pub const META_NAME: &str = "meta.json";

/// Largest `meta.json` accepted (it lists inputs, so it can be large).
const MAX_META_BYTES: u64 = 64 << 20;

/// Why a pack was refused.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("reading the pack: {0}")]
    Io(#[from] io::Error),
    #[error("the pack is empty")]
    Empty,
    #[error("the first member is {0:?}, not meta.json")]
    MetaNotFirst(String),
    #[error("meta.json does not parse: {0}")]
    BadMeta(String),
    #[error("member {0:?} is not a regular file")]
    NotAFile(String),
    #[error("member name {0:?} is not a plain file name")]
    UnsafeName(String),
    #[error("member {0:?} is not declared in meta.json")]
    Undeclared(String),
    #[error("member {0:?} appears twice")]
    Duplicate(String),
    #[error("declared file {0:?} is missing")]
    Missing(String),
    #[error("{name:?} has {actual} bytes, meta.json says {expected}")]
    WrongSize {
        name: String,
        expected: u64,
        actual: u64,
    },
    #[error("{name:?} does not match its recorded blake3")]
    WrongHash { name: String },
    #[error("the pack unpacks to more than {0} bytes")]
    TooLarge(u64),
    #[error("the pack holds entry {found:?}, expected {expected:?}")]
    WrongEntry { expected: String, found: String },
}

/// Writes the pack of `meta` to `out`. `blob(hash)` opens the stored bytes
/// of a file. Returns the sum of the files' sizes.
pub fn write(
    meta: &EntryMeta,
    mut blob: impl FnMut(&str) -> io::Result<File>,
    level: i32,
    out: impl Write,
) -> io::Result<u64> {
    let encoder = zstd::Encoder::new(out, level)?;
    let mut tar = tar::Builder::new(encoder);
    let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
    append(&mut tar, META_NAME, json.len() as u64, 0o644, &json[..])?;
    let mut total = 0;
    for file in &meta.files {
        let source = blob(&file.hash)?;
        let mode = if file.executable { 0o755 } else { 0o644 };
        append(
            &mut tar,
            &file.name,
            file.size,
            mode,
            source.take(file.size),
        )?;
        total += file.size;
    }
    tar.into_inner()?.finish()?.flush()?;
    Ok(total)
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    size: u64,
    mode: u32,
    data: impl Read,
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(0);
    tar.append_data(&mut header, name, data)
}

/// Unpacks `pack` into the empty directory `dest` and returns the verified
/// meta. `expected` is the `(crate_name, cache_key)` the pack was fetched
/// under; `max_bytes` bounds the unpacked total.
pub fn unpack(
    pack: impl Read,
    dest: &Path,
    expected: (&str, &str),
    max_bytes: u64,
) -> Result<EntryMeta, PackError> {
    let decoder = zstd::Decoder::new(pack)?;
    // Bounds the decompressed stream, tar headers included.
    let mut archive = tar::Archive::new(decoder.take(max_bytes.saturating_add(1 << 20)));
    let mut members = archive.entries()?;
    let first = members.next().ok_or(PackError::Empty)??;
    let name = member_name(&first)?;
    if name != META_NAME {
        return Err(PackError::MetaNotFirst(name));
    }
    if first.header().entry_type() != tar::EntryType::Regular {
        return Err(PackError::NotAFile(name));
    }
    if first.size() > MAX_META_BYTES {
        return Err(PackError::TooLarge(MAX_META_BYTES));
    }
    let mut json = Vec::new();
    first.take(MAX_META_BYTES).read_to_end(&mut json)?;
    let meta: EntryMeta =
        serde_json::from_slice(&json).map_err(|e| PackError::BadMeta(e.to_string()))?;
    check_meta(&meta, expected)?;

    let declared: BTreeMap<&str, (u64, &str)> = meta
        .files
        .iter()
        .map(|f| (f.name.as_str(), (f.size, f.hash.as_str())))
        .collect();
    let mut seen = BTreeMap::new();
    let mut total = 0u64;
    for member in members {
        let mut member = member?;
        let name = member_name(&member)?;
        if member.header().entry_type() != tar::EntryType::Regular {
            return Err(PackError::NotAFile(name));
        }
        let Some(&(size, hash)) = declared.get(name.as_str()) else {
            return Err(PackError::Undeclared(name));
        };
        if seen.insert(name.clone(), ()).is_some() {
            return Err(PackError::Duplicate(name));
        }
        total = total.saturating_add(member.size());
        if total > max_bytes {
            return Err(PackError::TooLarge(max_bytes));
        }
        if member.size() != size {
            return Err(PackError::WrongSize {
                name,
                expected: size,
                actual: member.size(),
            });
        }
        // create_new: never follows or replaces anything already there.
        let mut out = File::options()
            .write(true)
            .create_new(true)
            .open(dest.join(&name))?;
        let mut hasher = blake3::Hasher::new();
        let mut buffer = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            let n = member.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            out.write_all(&buffer[..n])?;
            written += n as u64;
        }
        if written != size {
            return Err(PackError::WrongSize {
                name,
                expected: size,
                actual: written,
            });
        }
        if hasher.finalize().to_hex().as_str() != hash {
            return Err(PackError::WrongHash { name });
        }
    }
    if let Some(missing) = declared.keys().find(|n| !seen.contains_key(**n)) {
        return Err(PackError::Missing(missing.to_string()));
    }
    Ok(meta)
}

/// The member's name, if it is one plain file name.
fn member_name<R: Read>(member: &tar::Entry<R>) -> Result<String, PackError> {
    let raw = member.path_bytes();
    let name = String::from_utf8_lossy(&raw).to_string();
    if is_safe_file_name(&name) {
        Ok(name)
    } else {
        Err(PackError::UnsafeName(name))
    }
}

/// One path component that is neither hidden nor special: no `/`, `\`,
/// NUL, not `.`/`..`, not starting with `.`.
pub fn is_safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
}

fn check_meta(meta: &EntryMeta, (crate_name, key): (&str, &str)) -> Result<(), PackError> {
    if meta.cache_key != key || meta.crate_name != crate_name {
        return Err(PackError::WrongEntry {
            expected: format!("{crate_name}/{key}"),
            found: format!("{}/{}", meta.crate_name, meta.cache_key),
        });
    }
    if !is_valid_key(&meta.cache_key)
        || !is_valid_key(&meta.pre_key)
        || !is_valid_crate_name(&meta.crate_name)
    {
        return Err(PackError::BadMeta("malformed key or crate name".into()));
    }
    let mut names = std::collections::BTreeSet::new();
    for file in &meta.files {
        if !names.insert(file.name.as_str()) {
            return Err(PackError::Duplicate(file.name.clone()));
        }
        if !is_safe_file_name(&file.name) || file.name == META_NAME {
            return Err(PackError::UnsafeName(file.name.clone()));
        }
        if !is_valid_key(&file.hash) {
            return Err(PackError::BadMeta(format!(
                "{:?} has a malformed hash",
                file.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kache_core::args::OutputKind;
    use kache_core::meta::{FileRecord, META_VERSION};

    const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn meta(files: &[(&str, &[u8])]) -> EntryMeta {
        EntryMeta {
            version: META_VERSION,
            cache_key: KEY.into(),
            pre_key: KEY.into(),
            crate_name: "demo".into(),
            crate_types: vec!["lib".into()],
            target: "host".into(),
            profile: "debug".into(),
            features: vec![],
            files: files
                .iter()
                .map(|(name, bytes)| FileRecord {
                    name: name.to_string(),
                    size: bytes.len() as u64,
                    hash: blake3::hash(bytes).to_hex().to_string(),
                    executable: false,
                    kind: OutputKind::Immutable,
                })
                .collect(),
            stdout: String::new(),
            stderr: String::new(),
            compile_time_ms: 1,
            created: 0,
            inputs: vec![],
            env_deps: vec![],
            components: Default::default(),
            unnormalised: None,
        }
    }

    /// A pack written member by member with raw headers, so hostile names
    /// and types the `tar` builder would refuse can be produced.
    fn raw_pack(members: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, kind, data) in members {
            let mut header = tar::Header::new_gnu();
            let bytes = name.as_bytes();
            header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            if *kind == tar::EntryType::Symlink || *kind == tar::EntryType::Link {
                header.set_link_name("/etc/passwd").unwrap();
                header.set_size(0);
            }
            header.set_cksum();
            tar.append(
                &header,
                if header.size().unwrap() == 0 {
                    &[][..]
                } else {
                    *data
                },
            )
            .unwrap();
        }
        zstd::encode_all(&tar.into_inner().unwrap()[..], 3).unwrap()
    }

    fn meta_json(meta: &EntryMeta) -> Vec<u8> {
        serde_json::to_vec(meta).unwrap()
    }

    fn unpack_into(pack: &[u8]) -> (tempfile::TempDir, Result<EntryMeta, PackError>) {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let result = unpack(pack, &dest, ("demo", KEY), 1 << 20);
        (root, result)
    }

    /// Nothing may appear outside `dest`.
    fn assert_nothing_outside(root: &tempfile::TempDir) {
        let names: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["dest"]);
    }

    #[test]
    fn a_pack_round_trips_through_write_and_unpack() {
        let dir = tempfile::tempdir().unwrap();
        let files: [(&str, &[u8]); 2] = [("libdemo.rlib", b"rlib bytes"), ("demo.d", b"deps")];
        for (name, bytes) in files {
            std::fs::write(
                dir.path().join(blake3::hash(bytes).to_hex().as_str()),
                bytes,
            )
            .unwrap();
            let _ = name;
        }
        let meta = meta(&files);
        let mut out = Vec::new();
        let total = write(&meta, |hash| File::open(dir.path().join(hash)), 3, &mut out).unwrap();
        assert_eq!(total, 14);
        let (root, result) = unpack_into(&out);
        assert_eq!(result.unwrap(), meta);
        assert_eq!(
            std::fs::read(root.path().join("dest/libdemo.rlib")).unwrap(),
            b"rlib bytes"
        );
    }

    #[test]
    fn hostile_packs_import_nothing_and_write_nothing_outside() {
        let good: &[u8] = b"rlib bytes";
        let m = meta(&[("libdemo.rlib", good)]);
        let json = meta_json(&m);
        let regular = tar::EntryType::Regular;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "traversal",
                raw_pack(&[(META_NAME, regular, &json), ("../evil", regular, good)]),
            ),
            (
                "absolute",
                raw_pack(&[(META_NAME, regular, &json), ("/tmp/evil", regular, good)]),
            ),
            (
                "symlink",
                raw_pack(&[
                    (META_NAME, regular, &json),
                    ("libdemo.rlib", tar::EntryType::Symlink, b""),
                ]),
            ),
            (
                "hardlink",
                raw_pack(&[
                    (META_NAME, regular, &json),
                    ("libdemo.rlib", tar::EntryType::Link, b""),
                ]),
            ),
            (
                "device",
                raw_pack(&[
                    (META_NAME, regular, &json),
                    ("libdemo.rlib", tar::EntryType::Char, b""),
                ]),
            ),
            (
                "wrong hash",
                raw_pack(&[
                    (META_NAME, regular, &json),
                    ("libdemo.rlib", regular, b"rlib bytez"),
                ]),
            ),
            (
                "undeclared",
                raw_pack(&[
                    (META_NAME, regular, &json),
                    ("libdemo.rlib", regular, good),
                    ("extra", regular, good),
                ]),
            ),
            ("missing file", raw_pack(&[(META_NAME, regular, &json)])),
            (
                "meta not first",
                raw_pack(&[("libdemo.rlib", regular, good), (META_NAME, regular, &json)]),
            ),
            (
                "other entry",
                raw_pack(&[
                    (
                        META_NAME,
                        regular,
                        &meta_json(&EntryMeta {
                            cache_key: "f".repeat(64),
                            ..m.clone()
                        }),
                    ),
                    ("libdemo.rlib", regular, good),
                ]),
            ),
            (
                "unsafe declared name",
                raw_pack(&[(
                    META_NAME,
                    regular,
                    &meta_json(&EntryMeta {
                        files: vec![FileRecord {
                            name: "../x".into(),
                            ..m.files[0].clone()
                        }],
                        ..m.clone()
                    }),
                )]),
            ),
            ("not zstd", b"this is not a pack".to_vec()),
        ];
        for (what, pack) in cases {
            let (root, result) = unpack_into(&pack);
            assert!(result.is_err(), "{what} was accepted");
            assert_nothing_outside(&root);
        }
    }

    #[test]
    fn an_oversize_member_and_a_flipped_byte_are_refused() {
        let big = vec![7u8; 2 << 20];
        let m = meta(&[("libdemo.rlib", &big)]);
        let pack = raw_pack(&[
            (META_NAME, tar::EntryType::Regular, &meta_json(&m)),
            ("libdemo.rlib", tar::EntryType::Regular, &big),
        ]);
        let (_root, result) = unpack_into(&pack);
        assert!(matches!(result, Err(PackError::TooLarge(_))), "{result:?}");

        let small: &[u8] = b"rlib bytes";
        let m = meta(&[("libdemo.rlib", small)]);
        let tar_bytes = {
            let mut tar = tar::Builder::new(Vec::new());
            let json = meta_json(&m);
            append(&mut tar, META_NAME, json.len() as u64, 0o644, &json[..]).unwrap();
            append(&mut tar, "libdemo.rlib", small.len() as u64, 0o644, small).unwrap();
            tar.into_inner().unwrap()
        };
        // Flip one byte of the file's content inside the (uncompressed) tar.
        let at = tar_bytes
            .windows(small.len())
            .position(|w| w == small)
            .unwrap();
        let mut flipped = tar_bytes.clone();
        flipped[at] ^= 0x01;
        let pack = zstd::encode_all(&flipped[..], 3).unwrap();
        let (_root, result) = unpack_into(&pack);
        assert!(
            matches!(result, Err(PackError::WrongHash { .. })),
            "{result:?}"
        );
        // And a flipped byte in the compressed stream fails too.
        let mut pack = zstd::encode_all(&tar_bytes[..], 3).unwrap();
        let middle = pack.len() / 2;
        pack[middle] ^= 0xff;
        let (_root, result) = unpack_into(&pack);
        assert!(result.is_err());
    }
}
