//! Unstable (`-Z`) options: which are keyed arguments and which make a
//! compile pass through (see ARCHITECTURE.md, "Correctness notes").

/// Unstable (`-Z`) options that make a call pass through, each with why.
/// Every other `-Z` option is a keyed argument (the key's `unstable`
/// component). A name ending in `*` covers every option it starts.
/// ARCHITECTURE.md ("Correctness notes") lists the same table.
pub const UNSTABLE_DENIED: &[(&str, &str)] = &[
    (
        "dump-*",
        "writes dumps (MIR, dep graph, mono stats) kache does not store",
    ),
    (
        "self-profile*",
        "writes profile data files; a hit would not profile",
    ),
    (
        "profile*",
        "reads a profile file that is not keyed, or prints profiling output",
    ),
    (
        "instrument-*",
        "instrumented code for a profiling run: its runtime and output files are not kache's",
    ),
    ("llvm-time-trace", "writes a timing trace file"),
    (
        "time-*",
        "timing output: replayed stderr would show another compile's times",
    ),
    (
        "print-*",
        "information request (statistics, passes, mono items, type sizes)",
    ),
    ("ls", "information request (prints crate metadata)"),
    (
        "unpretty",
        "information request (prints source or IR instead of compiling)",
    ),
    ("help", "information request"),
    (
        "input-stats",
        "information request (statistics of this run)",
    ),
    ("meta-stats", "information request (statistics of this run)"),
    (
        "macro-stats",
        "information request (statistics of this run)",
    ),
    (
        "incremental-info",
        "reports incremental reuse, which a hit does not do",
    ),
    (
        "assert-incr-state",
        "the outcome depends on the incremental directory, which is not keyed",
    ),
    (
        "query-dep-graph",
        "testing aid for incremental dep-graph dumps",
    ),
    ("nll-facts*", "writes borrow-checker facts to files"),
    ("metrics-dir", "writes metrics files"),
    ("remark-dir", "writes optimisation remark files"),
    (
        "temps-dir",
        "writes intermediate files to another directory",
    ),
    (
        "split-dwarf-out-dir",
        "writes `.dwo` files outside the output directory",
    ),
    ("no-link", "writes a `.rlink` file instead of linking"),
    ("link-only", "links from a `.rlink` file that is not keyed"),
    (
        "codegen-backend",
        "loads a codegen backend library that is not keyed",
    ),
    (
        "llvm-plugins",
        "loads LLVM plugin libraries that are not keyed",
    ),
    (
        "pre-link-arg*",
        "linker arguments may name files (scripts, objects) that are not keyed",
    ),
    (
        "sanitizer-dataflow-abilist",
        "reads ABI list files that are not keyed",
    ),
];

/// Why `-Z<name>` makes a call pass through, if it does.
pub fn unstable_denied(name: &str) -> Option<&'static str> {
    UNSTABLE_DENIED.iter().find_map(|(pattern, reason)| {
        let matches = match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *pattern,
        };
        matches.then_some(*reason)
    })
}
