//! Files a compile wrote into its output directory besides the outputs
//! rustc's table names: split debuginfo (`.dwo`, `.dwp`), which kache
//! stores with the entry, and anything else named after the unit (Windows
//! import libraries and `.pdb`, wasm side files, a `.dSYM` directory), which
//! makes the compile unstorable. Which is which is decided by
//! `Invocation::side_outputs`; this module lists the directory and reads
//! the member names of the compile's rlib.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use kache_core::args::{FileNames, Invocation, ListedFile, Output, SplitDebuginfo};

/// How far before the compile's start a file's change time may lie and
/// still count as written by it: timestamps come from a coarse clock, and
/// some filesystems keep whole seconds. Counting a file too many only ever
/// refuses to store (or stores an unreferenced `.dwo` of the same unit).
const SLACK: Duration = Duration::from_secs(1);

/// The extra outputs of the compile that started at `since` and wrote
/// `outputs` into `out_dir`; `Err` when it also wrote a file named after
/// the unit that kache does not know (the entry would miss it).
pub fn find(
    out_dir: &Path,
    invocation: &Invocation,
    outputs: &[Output],
    names: &FileNames,
    since: SystemTime,
) -> Result<Vec<Output>> {
    let stem = invocation.stem();
    let since_ns = since
        .checked_sub(SLACK)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128);
    let mut listed = Vec::new();
    let listing =
        std::fs::read_dir(out_dir).with_context(|| format!("listing {}", out_dir.display()))?;
    for entry in listing {
        let entry = entry.with_context(|| format!("listing {}", out_dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        // Cheap filter before a stat: only names that contain the stem.
        if !name.contains(stem.as_str()) {
            continue;
        }
        let meta = entry
            .metadata()
            .with_context(|| format!("reading {name} in {}", out_dir.display()))?;
        // A hard link (rustc links `.dwo` files from the incremental
        // directory) changes the ctime, not the mtime.
        let mtime = meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128;
        let ctime = meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128;
        listed.push(ListedFile {
            name: name.to_string(),
            regular: meta.file_type().is_file(),
            changed: mtime.max(ctime) >= since_ns,
        });
    }
    let rlib_members = match invocation.split_debuginfo {
        Some(SplitDebuginfo::Unpacked) => {
            match outputs.iter().find(|o| o.name.ends_with(".rlib")) {
                Some(rlib) => Some(member_names(&out_dir.join(&rlib.name))?),
                None => None,
            }
        }
        _ => None,
    };
    invocation
        .side_outputs(outputs, &listed, names, rlib_members.as_deref())
        .map_err(anyhow::Error::msg)
}

/// The member names of an `ar` archive (an rlib) in the GNU or BSD
/// format, read header by header without loading the members.
pub fn member_names(path: &Path) -> Result<Vec<String>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = BufReader::new(file);
    read_member_names(&mut reader).with_context(|| format!("reading {}", path.display()))
}

fn read_member_names(reader: &mut (impl Read + Seek)) -> Result<Vec<String>> {
    let mut magic = [0u8; 8];
    reader.read_exact(&mut magic)?;
    if &magic != b"!<arch>\n" {
        bail!("not an ar archive");
    }
    let mut names = Vec::new();
    let mut long_names = Vec::new();
    let mut header = [0u8; 60];
    loop {
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(err) => return Err(err.into()),
        }
        if &header[58..60] != b"`\n" {
            bail!("a malformed member header");
        }
        let field = |range: std::ops::Range<usize>| {
            std::str::from_utf8(&header[range]).map(|s| s.trim_end().to_string())
        };
        let raw = field(0..16)?;
        let size: u64 = field(48..58)?.parse().context("a member size")?;
        let mut data_left = size;
        let name = if raw == "/" || raw == "/SYM64/" || raw.starts_with("__.SYMDEF") {
            None // symbol tables
        } else if raw == "//" {
            long_names = vec![0; usize::try_from(size)?];
            reader.read_exact(&mut long_names)?;
            data_left = 0;
            None
        } else if let Some(len) = raw.strip_prefix("#1/") {
            // BSD: the name is the first `len` bytes of the data.
            let len: u64 = len.parse().context("a BSD name length")?;
            if len > size {
                bail!("a BSD name longer than its member");
            }
            let mut name = vec![0; usize::try_from(len)?];
            reader.read_exact(&mut name)?;
            data_left -= len;
            Some(
                String::from_utf8_lossy(&name)
                    .trim_end_matches('\0')
                    .to_string(),
            )
        } else if let Some(offset) = raw.strip_prefix('/') {
            // GNU: an offset into the `//` table, the name ending in "/\n".
            let offset: usize = offset.parse().context("a long-name offset")?;
            let rest = long_names.get(offset..).context("a long-name offset")?;
            let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
            let name = String::from_utf8_lossy(&rest[..end]);
            Some(name.trim_end_matches('/').to_string())
        } else {
            Some(raw.trim_end_matches('/').to_string())
        };
        names.extend(name);
        // Members are padded to an even offset.
        let skip = data_left + size % 2;
        reader.seek(SeekFrom::Current(i64::try_from(skip)?))?;
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn member_names_are_read_from_an_archive_ar_wrote() {
        let dir = tempfile::tempdir().expect("tempdir");
        let long = "a-rather-long-member-name.cgu.0.rcgu.dwo";
        for (name, text) in [("short.o", "odd"), (long, "even"), ("lib.rmeta", "x")] {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        let status = Command::new("ar")
            .current_dir(dir.path())
            .args(["crs", "libx.rlib", "short.o", long, "lib.rmeta"])
            .status()
            .expect("run ar");
        assert!(status.success());
        let names = member_names(&dir.path().join("libx.rlib")).expect("read");
        assert_eq!(names, ["short.o", long, "lib.rmeta"]);
        std::fs::write(dir.path().join("not.rlib"), "plain text").expect("write");
        assert!(member_names(&dir.path().join("not.rlib")).is_err());
    }
}
