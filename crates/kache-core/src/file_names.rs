//! Output naming per target: rustc's own `--print=file-names` table.

use crate::args::CrateType;

/// What rustc names the output of each crate type for one target: its
/// answer to `rustc - --crate-name ___ --print=file-names --crate-type …`
/// ([`FileNames::probe_args`]), which is how cargo learns the names too.
/// A crate type the target does not support has no entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileNames {
    /// `(crate type, prefix, suffix)`: the file is `prefix + stem + suffix`.
    names: Vec<(CrateType, String, String)>,
}

impl FileNames {
    /// The crate types asked about, in the order rustc answers.
    const PROBED: [CrateType; 6] = [
        CrateType::Bin,
        CrateType::Rlib,
        CrateType::Dylib,
        CrateType::Cdylib,
        CrateType::Staticlib,
        CrateType::ProcMacro,
    ];

    /// The probe's arguments; rustc reads the (empty) crate from stdin.
    /// `unstable_options` adds `-Z unstable-options`, which a custom target
    /// specification (`--target foo.json`) needs.
    pub fn probe_args(target: Option<&str>, unstable_options: bool) -> Vec<String> {
        let mut args: Vec<String> = ["-", "--crate-name", "___", "--print=file-names"]
            .map(String::from)
            .into();
        for kind in Self::PROBED {
            args.extend(["--crate-type".to_string(), kind.as_str().to_string()]);
        }
        if let Some(target) = target {
            args.extend(["--target".to_string(), target.to_string()]);
        }
        if unstable_options {
            args.extend(["-Z".to_string(), "unstable-options".to_string()]);
        }
        args
    }

    /// Reads the probe's answer: one line per supported crate type on
    /// stdout, in the order asked; a crate type the target does not support
    /// gets no line, only a warning on stderr ("dropping unsupported crate
    /// type `dylib` for target …"). Cargo reads it the same way.
    pub fn parse(stdout: &str, stderr: &str) -> Result<Self, String> {
        let mut lines = stdout.lines();
        let mut names = Vec::new();
        for kind in Self::PROBED {
            let quoted = format!("crate type `{}`", kind.as_str());
            let unsupported = stderr.lines().any(|line| {
                (line.contains("unsupported crate type") || line.contains("unknown crate type"))
                    && line.contains(&quoted)
            });
            if unsupported {
                continue;
            }
            let line = lines
                .next()
                .ok_or_else(|| format!("no file name for crate type {}", kind.as_str()))?;
            let (prefix, suffix) = line
                .split_once("___")
                .ok_or_else(|| format!("unexpected file name {line:?}"))?;
            if prefix.contains('/') || suffix.contains('/') {
                return Err(format!("unexpected file name {line:?}"));
            }
            names.push((kind, prefix.to_string(), suffix.to_string()));
        }
        Ok(Self { names })
    }

    /// A line per crate type, `<type>\t<prefix>\t<suffix>`: how the table is
    /// remembered in the index.
    pub fn to_text(&self) -> String {
        self.names
            .iter()
            .map(|(kind, prefix, suffix)| format!("{}\t{prefix}\t{suffix}\n", kind.as_str()))
            .collect()
    }

    /// Reads [`FileNames::to_text`] back; `None` if it is not such a text.
    pub fn from_text(text: &str) -> Option<Self> {
        let mut names = Vec::new();
        for line in text.lines() {
            let mut fields = line.split('\t');
            let kind = CrateType::parse(fields.next()?)?;
            let prefix = fields.next()?.to_string();
            let suffix = fields.next()?.to_string();
            if fields.next().is_some() {
                return None;
            }
            names.push((kind, prefix, suffix));
        }
        Some(Self { names })
    }

    /// The file `kind` compiles to for `stem` (`<crate><extra-filename>`);
    /// `lib` is an rlib. `None` when the target does not support `kind`.
    pub fn name(&self, kind: CrateType, stem: &str) -> Option<String> {
        let kind = if kind == CrateType::Lib {
            CrateType::Rlib
        } else {
            kind
        };
        self.names
            .iter()
            .find(|(k, _, _)| *k == kind)
            .map(|(_, prefix, suffix)| format!("{prefix}{stem}{suffix}"))
    }

    /// Every prefix the table uses (`""`, `lib`).
    pub(crate) fn prefixes(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|(_, prefix, _)| prefix.as_str())
    }
}
