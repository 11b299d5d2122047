//! What a build script's output declares about the crate it builds.
//!
//! Cargo reruns a build script, and recompiles its crate, when a file or
//! directory named by `cargo:rerun-if-changed` changes or a variable named by
//! `cargo:rerun-if-env-changed` does. Those are exactly the inputs that
//! procedural macros read behind rustc's back (sqlx's `migrate!` lists a
//! directory, `include_dir!` walks one, a macro calls `std::env::var`):
//! rustc's dep-info does not list them, so the wrapper keys them from here.
//! `cargo:rustc-env` values are keyed too: a macro may read them with
//! `std::env::var`, which dep-info does not track either.

/// The declarations of one build-script run that reach the crate's compile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declared {
    /// `rerun-if-changed` paths as written (relative to the package root
    /// unless absolute), in order, de-duplicated.
    pub changed: Vec<String>,
    /// `rerun-if-env-changed` names, in order, de-duplicated.
    pub env: Vec<String>,
    /// `rustc-env` assignments, `(name, value)`, in order.
    pub rustc_env: Vec<(String, String)>,
}

/// Reads a build script's stdout as cargo saved it (`output`, or `run/stdout`
/// in cargo's newer build-dir layout). Both the `cargo:` and `cargo::`
/// spellings count; anything else is ignored, as cargo ignores it.
pub fn parse_output(text: &str) -> Declared {
    let mut declared = Declared::default();
    for line in text.lines() {
        let Some(rest) = line
            .strip_prefix("cargo::")
            .or_else(|| line.strip_prefix("cargo:"))
        else {
            continue;
        };
        let Some((key, value)) = rest.split_once('=') else {
            continue;
        };
        match key {
            "rerun-if-changed" if !declared.changed.iter().any(|c| c == value) => {
                declared.changed.push(value.to_string())
            }
            "rerun-if-env-changed" if !declared.env.iter().any(|e| e == value) => {
                declared.env.push(value.to_string())
            }
            "rustc-env" => {
                if let Some((name, value)) = value.split_once('=') {
                    declared
                        .rustc_env
                        .push((name.to_string(), value.to_string()));
                }
            }
            _ => {}
        }
    }
    declared
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_are_read_and_other_lines_ignored() {
        let text = "cargo:rerun-if-changed=migrations\n\
            cargo::rerun-if-env-changed=DATABASE_URL\n\
            cargo:rerun-if-changed=migrations\n\
            cargo:rustc-env=GIT_HASH=abc=def\n\
            cargo:rustc-link-lib=z\n\
            warning: not a directive\n\
            cargo:rerun-if-changed=build.rs\n";
        let declared = parse_output(text);
        assert_eq!(declared.changed, ["migrations", "build.rs"]);
        assert_eq!(declared.env, ["DATABASE_URL"]);
        assert_eq!(
            declared.rustc_env,
            [("GIT_HASH".to_string(), "abc=def".to_string())]
        );
    }

    #[test]
    fn an_empty_output_declares_nothing() {
        assert_eq!(parse_output(""), Declared::default());
    }
}
