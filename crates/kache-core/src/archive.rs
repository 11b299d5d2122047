//! Comparing two `ar` archives (rlibs) by what they hold.
//!
//! An incremental compile names its object files after the session
//! (`crate-hash.<cgu>.<random>.rcgu.o`): two incremental compiles of the
//! same inputs write rlibs whose members are byte for byte equal but named
//! differently. `KACHE_VERIFY` compares such rlibs by the contents of their
//! members, so that naming is not taken for a wrong hit.

/// The contents of every member of the `ar` archive `bytes`, except the
/// symbol table (`/`, `__.SYMDEF`) and GNU's long-name table (`//`), whose
/// bytes depend on member names and offsets. `None` if `bytes` is not a
/// well-formed archive.
pub fn member_contents(bytes: &[u8]) -> Option<Vec<&[u8]>> {
    let mut rest = bytes.strip_prefix(b"!<arch>\n")?;
    let mut members = Vec::new();
    while !rest.is_empty() {
        if rest[0] == b'\n' {
            rest = &rest[1..];
            continue;
        }
        if rest.len() < 60 || &rest[58..60] != b"`\n" {
            return None;
        }
        let name = std::str::from_utf8(&rest[..16]).ok()?.trim_end();
        let size: usize = std::str::from_utf8(&rest[48..58])
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let body = rest.get(60..60 + size)?;
        let is_table = matches!(name, "/" | "//" | "/SYM64/") || name.starts_with("__.SYMDEF");
        if !is_table {
            members.push(body);
        }
        rest = &rest[60 + size..];
    }
    Some(members)
}

/// Whether two archives hold the same member contents, in any order.
pub fn same_members(a: &[u8], b: &[u8]) -> bool {
    match (member_contents(a), member_contents(b)) {
        (Some(mut a), Some(mut b)) => {
            a.sort_unstable();
            b.sort_unstable();
            a == b
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, body: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            0,
            0,
            0,
            644,
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        if body.len() % 2 == 1 {
            out.push(b'\n');
        }
        out
    }

    fn archive(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = b"!<arch>\n".to_vec();
        for (name, body) in members {
            out.extend(member(name, body));
        }
        out
    }

    #[test]
    fn members_named_differently_with_equal_contents_are_the_same() {
        let a = archive(&[
            ("/", b"symtab-a"),
            ("lib.rmeta/", b"meta"),
            ("x.1abc.o/", b"code"),
        ]);
        let b = archive(&[
            ("/", b"symtab-b!"),
            ("lib.rmeta/", b"meta"),
            ("x.2xyz.o/", b"code"),
        ]);
        assert!(same_members(&a, &b));
        let c = archive(&[("lib.rmeta/", b"meta"), ("x.2xyz.o/", b"cod3")]);
        assert!(!same_members(&a, &c));
        assert!(!same_members(&a, b"not an archive"));
        assert_eq!(member_contents(&a).unwrap(), [&b"meta"[..], &b"code"[..]]);
    }
}
