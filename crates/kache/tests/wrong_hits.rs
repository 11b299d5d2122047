//! The wrong-hit classes of issue 26, each as the workflow that found it:
//! the same sequence of edits and builds under plain cargo and through
//! kache, comparing what the program prints (or what the build says).
//! Plain cargo is the oracle; every test fails when its fix is removed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::{Run, World};

/// Writes `files` (`path`, `content`) under `root`.
fn write_tree(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

/// A workspace written from `files` at `<world>/<name>`.
fn workspace(world: &World, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let root = world.root.path().join(name);
    write_tree(&root, files);
    root
}

/// Plain cargo in `dir`: no wrapper at all.
fn plain(world: &World, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = world.command("cargo", dir);
    cmd.env_remove("RUSTC_WRAPPER").args(args).arg("--offline");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run cargo")
}

fn ok(output: std::process::Output) -> std::process::Output {
    assert!(
        output.status.success(),
        "cargo failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `<dir>/target/debug/<bin>` and returns what it printed.
fn run_bin(dir: &Path, bin: &str) -> String {
    let out = Command::new(dir.join("target/debug").join(bin))
        .output()
        .unwrap_or_else(|e| panic!("run {bin}: {e}"));
    assert!(out.status.success(), "{bin} failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Two copies of one workspace: one built plainly, one through kache.
struct Pair {
    plain: PathBuf,
    kache: PathBuf,
}

impl Pair {
    fn new(world: &World, files: &[(&str, &str)]) -> Self {
        Self {
            plain: workspace(world, "plain", files),
            kache: workspace(world, "kached", files),
        }
    }

    /// Writes one file in both copies.
    fn write(&self, path: &str, content: &str) {
        write_tree(&self.plain, &[(path, content)]);
        write_tree(&self.kache, &[(path, content)]);
    }

    /// Runs cargo in both and returns (plain, kache).
    fn cargo(&self, world: &World, args: &[&str]) -> (std::process::Output, Run) {
        self.cargo_with(world, args, &[])
    }

    fn cargo_with(
        &self,
        world: &World,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (std::process::Output, Run) {
        let p = plain(world, &self.plain, args, env);
        let k = world.cargo_with(&self.kache, args, env);
        (p, k)
    }

    /// Both copies' program output, asserted equal, returned once.
    fn same_output(&self, bin: &str) -> String {
        let p = run_bin(&self.plain, bin);
        let k = run_bin(&self.kache, bin);
        assert_eq!(k, p, "kache's program differs from plain cargo's");
        p
    }
}

const APP_AND_LIB: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        "[workspace]\nmembers = [\"a\", \"app\"]\nresolver = \"2\"\n",
    ),
    (
        "a/Cargo.toml",
        "[package]\nname = \"a\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    ),
    ("a/src/lib.rs", "pub fn v() -> &'static str { \"v1\" }\n"),
    (
        "app/Cargo.toml",
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\na = { path = \"../a\" }\n",
    ),
    (
        "app/src/main.rs",
        "fn main() { println!(\"{}\", a::v()); }\n",
    ),
];

/// Class 1: a restored output keeps the mtime of its first compile, so after
/// a revert and `cargo build -p a`, cargo would find `app` newer than `a`
/// and keep the binary built from v2.
#[test]
fn a_revert_then_building_one_package_still_rebuilds_its_dependents() {
    let world = World::new();
    let pair = Pair::new(&world, APP_AND_LIB);
    let v1 = "pub fn v() -> &'static str { \"v1\" }\n";
    let v2 = "pub fn v() -> &'static str { \"v2\" }\n";
    pair.cargo(&world, &["build"]);
    assert_eq!(pair.same_output("app"), "v1");
    std::thread::sleep(Duration::from_millis(50));
    pair.write("a/src/lib.rs", v2);
    let (p, k) = pair.cargo(&world, &["build"]);
    ok(p);
    k.ok();
    assert_eq!(pair.same_output("app"), "v2");
    std::thread::sleep(Duration::from_millis(50));
    pair.write("a/src/lib.rs", v1);
    let (p, k) = pair.cargo(&world, &["build", "-p", "a"]);
    ok(p);
    let k = k.ok();
    assert_eq!(k.outcome("a"), "hit", "the v1 entry is restored");
    let (p, k) = pair.cargo(&world, &["build"]);
    ok(p);
    k.ok();
    assert_eq!(pair.same_output("app"), "v1");
}

/// A proc-macro that reads what the build script declares: the file names in
/// `data/` (a directory, `rerun-if-changed=data`) and `GREETING`
/// (`rerun-if-env-changed=GREETING`), neither of which rustc's dep-info lists.
const DECLARED: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        "[workspace]\nmembers = [\"lister\", \"app\"]\nresolver = \"2\"\n",
    ),
    (
        "lister/Cargo.toml",
        "[package]\nname = \"lister\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\nproc-macro = true\n",
    ),
    (
        "lister/src/lib.rs",
        r#"use proc_macro::TokenStream;

/// The sorted file names of `$CARGO_MANIFEST_DIR/data`, and `$GREETING`.
#[proc_macro]
pub fn listing(_: TokenStream) -> TokenStream {
    let dir = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("data");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "unset".to_string());
    format!("\"{} {}\"", names.join(","), greeting).parse().unwrap()
}
"#,
    ),
    (
        "app/Cargo.toml",
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\nbuild = \"build.rs\"\n\n[dependencies]\nlister = { path = \"../lister\" }\n",
    ),
    (
        "app/build.rs",
        "fn main() {\n    println!(\"cargo:rerun-if-changed=data\");\n    println!(\"cargo::rerun-if-env-changed=GREETING\");\n}\n",
    ),
    ("app/data/one.sql", "create table one (x int);\n"),
    (
        "app/src/lib.rs",
        "pub fn listing() -> &'static str { lister::listing!() }\n",
    ),
    (
        "app/src/main.rs",
        "fn main() { println!(\"{}\", app::listing()); }\n",
    ),
];

/// Class 2: inputs a build script declares that a macro reads behind
/// rustc's back.
#[test]
fn files_and_variables_a_build_script_declares_are_keyed() {
    let world = World::new();
    let pair = Pair::new(&world, DECLARED);
    pair.cargo(&world, &["build"]);
    assert_eq!(pair.same_output("app"), "one.sql unset");
    // A new migration file: cargo reruns the script and recompiles the app.
    pair.write("app/data/two.sql", "create table two (y int);\n");
    let (p, k) = pair.cargo(&world, &["build"]);
    ok(p);
    k.ok();
    assert_eq!(pair.same_output("app"), "one.sql,two.sql unset");
    let (p, k) = pair.cargo_with(&world, &["build"], &[("GREETING", "hi")]);
    ok(p);
    k.ok();
    assert_eq!(pair.same_output("app"), "one.sql,two.sql hi");
    // Back to the first state after a clean: that entry hits again.
    for dir in [&pair.plain, &pair.kache] {
        std::fs::remove_file(dir.join("app/data/two.sql")).unwrap();
    }
    let (p, k) = pair.cargo(&world, &["clean"]);
    ok(p);
    k.ok();
    let (p, k) = pair.cargo(&world, &["build"]);
    ok(p);
    let k = k.ok();
    assert_eq!(k.outcome("app"), "hit", "{:?}", k.outcomes());
    assert_eq!(pair.same_output("app"), "one.sql unset");
}

/// A macro that bakes the crate's directory into a string literal without
/// `env!` (so no dep-info line names it).
const BAKED: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        "[workspace]\nmembers = [\"baker\", \"lib\", \"app\"]\nresolver = \"2\"\n",
    ),
    (
        "baker/Cargo.toml",
        "[package]\nname = \"baker\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\nproc-macro = true\n",
    ),
    (
        "baker/src/lib.rs",
        "use proc_macro::TokenStream;\n\n#[proc_macro]\npub fn here(_: TokenStream) -> TokenStream {\n    format!(\"{:?}\", std::env::var(\"CARGO_MANIFEST_DIR\").unwrap()).parse().unwrap()\n}\n",
    ),
    (
        "lib/Cargo.toml",
        "[package]\nname = \"lib\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nbaker = { path = \"../baker\" }\n",
    ),
    (
        "lib/src/lib.rs",
        "pub fn here() -> &'static str { baker::here!() }\npub fn plain() -> u32 { 7 }\n",
    ),
    (
        "app/Cargo.toml",
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nlib = { path = \"../lib\" }\n",
    ),
    (
        "app/src/main.rs",
        "fn main() { println!(\"{} {}\", lib::here(), lib::plain()); }\n",
    ),
];

/// Class 3: a machine-local path inside an output makes the output local.
#[test]
fn an_output_holding_its_checkouts_path_is_not_served_to_another_checkout() {
    let world = World::new();
    let first = workspace(&world, "first", BAKED);
    let second = workspace(&world, "second", BAKED);
    world.cargo(&first, &["build"]).ok();
    let run = world.cargo(&second, &["build"]).ok();
    assert_eq!(run.outcome("lib"), "miss", "{:?}", run.outcomes());
    assert_eq!(run.outcome("baker"), "hit", "portable units still hit");
    let printed = run_bin(&second, "app");
    let expected = format!("{} 7", second.join("lib").display());
    assert_eq!(printed, expected);
    let oracle = ok(plain(&world, &second, &["build"], &[]));
    drop(oracle);
    assert_eq!(run_bin(&second, "app"), expected);
}

/// A C library two crates below a linked output.
const LINKED: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        "[workspace]\nmembers = [\"csys\", \"mid\", \"app\"]\nresolver = \"2\"\n",
    ),
    (
        "csys/Cargo.toml",
        "[package]\nname = \"csys\"\nversion = \"0.1.0\"\nedition = \"2021\"\nbuild = \"build.rs\"\nlinks = \"answer\"\n",
    ),
    (
        "csys/build.rs",
        r#"use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=answer.c");
    let out = std::env::var("OUT_DIR").unwrap();
    let object = format!("{out}/answer.o");
    assert!(Command::new("cc").args(["-c", "answer.c", "-fPIC", "-o", &object]).status().unwrap().success());
    assert!(Command::new("ar").args(["rcs", &format!("{out}/libanswer.a"), &object]).status().unwrap().success());
    println!("cargo:rustc-link-search=native={out}");
    println!("cargo:rustc-link-lib=static=answer");
}
"#,
    ),
    ("csys/answer.c", "int answer(void) { return 1; }\n"),
    (
        "csys/src/lib.rs",
        "unsafe extern \"C\" {\n    fn answer() -> i32;\n}\npub fn get() -> i32 { unsafe { answer() } }\n",
    ),
    (
        "mid/Cargo.toml",
        "[package]\nname = \"mid\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\ncsys = { path = \"../csys\" }\n",
    ),
    (
        "mid/src/lib.rs",
        "pub fn get() -> i32 { csys::get() * 10 }\n",
    ),
    (
        "app/Cargo.toml",
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nmid = { path = \"../mid\" }\n",
    ),
    (
        "app/src/main.rs",
        "fn main() { println!(\"{}\", mid::get()); }\n",
    ),
];

/// Class 4: a linked output keys its whole dependency closure, not only its
/// direct `--extern`s (here a cached executable; cdylibs, dylibs and
/// proc-macros link the same way).
#[test]
fn a_changed_c_file_two_crates_down_relinks_the_linked_output() {
    let world = World::with_env(vec![("KACHE_CACHE_EXECUTABLES".into(), "1".into())]);
    let pair = Pair::new(&world, LINKED);
    let (p, k) = pair.cargo(&world, &["build"]);
    ok(p);
    k.ok();
    assert_eq!(pair.same_output("app"), "10");
    std::thread::sleep(Duration::from_millis(50));
    pair.write("csys/answer.c", "int answer(void) { return 2; }\n");
    let (p, k) = pair.cargo(&world, &["build"]);
    ok(p);
    let k = k.ok();
    assert_ne!(k.outcome("app"), "hit", "{:?}", k.outcomes());
    assert_eq!(pair.same_output("app"), "20");
    // And back: the first link's entry is right again, and hits.
    pair.write("csys/answer.c", "int answer(void) { return 1; }\n");
    let (p, k) = pair.cargo(&world, &["build"]);
    ok(p);
    let k = k.ok();
    assert_eq!(k.outcome("app"), "hit", "{:?}", k.outcomes());
    assert_eq!(pair.same_output("app"), "10");
}

const LINTED: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        "[workspace]\nmembers = [\"a\", \"b\"]\nresolver = \"2\"\n",
    ),
    (
        "a/Cargo.toml",
        "[package]\nname = \"a\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    ),
    (
        "a/src/lib.rs",
        "pub fn same(x: u32) -> bool {\n    #[allow(clippy::eq_op)]\n    let _ok = x == x;\n    let v = vec![1, 2, 3];\n    v.len() == 0\n}\n",
    ),
    (
        "b/Cargo.toml",
        "[package]\nname = \"b\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\na = { path = \"../a\" }\n",
    ),
    ("b/src/lib.rs", "pub fn f() -> bool { a::same(1) }\n"),
];

/// Class 6: clippy lints only primary packages under `--no-deps`; an entry
/// stored while `a` was a dependency must not pass `a`'s own lint gate.
#[test]
fn clippy_on_one_package_is_not_served_by_its_run_as_a_dependency() {
    let world = World::new();
    let gate = ["clippy", "-p", "a", "--", "--no-deps", "-D", "warnings"];
    let dep_run = ["clippy", "-p", "b", "--", "--no-deps", "-D", "warnings"];
    let root = workspace(&world, "ws", LINTED);
    // `--offline` must come before clippy's `--`.
    let through_kache = |args: &[&str]| {
        let mut cmd = world.command("cargo", &root);
        cmd.arg(args[0]).arg("--offline").args(&args[1..]);
        cmd.output().expect("run cargo clippy")
    };
    let plain_gate = {
        let mut cmd = world.command("cargo", &root);
        cmd.env_remove("RUSTC_WRAPPER")
            .arg(gate[0])
            .arg("--offline")
            .args(&gate[1..]);
        cmd.output().expect("run cargo clippy")
    };
    assert!(
        !plain_gate.status.success(),
        "the fixture must fail clippy's gate"
    );
    std::fs::remove_dir_all(root.join("target")).unwrap();
    let before = world.events().len();
    let dep = through_kache(&dep_run);
    assert!(
        dep.status.success(),
        "{}",
        String::from_utf8_lossy(&dep.stderr)
    );
    assert!(
        world.events().len() > before,
        "the dependency run went through kache"
    );
    std::fs::remove_dir_all(root.join("target")).unwrap();
    let kache_gate = through_kache(&gate);
    let stderr = String::from_utf8_lossy(&kache_gate.stderr);
    assert!(
        !kache_gate.status.success(),
        "kache let a lint gate pass that plain clippy fails: {stderr}"
    );
    assert!(stderr.contains("len_zero"), "{stderr}");
}

const REMAPPED: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        "[package]\nname = \"rm\"\nversion = \"0.1.0\"\nedition = \"2021\"\nbuild = \"build.rs\"\n",
    ),
    (
        "build.rs",
        "fn main() {\n    let out = std::env::var(\"OUT_DIR\").unwrap();\n    std::fs::write(format!(\"{out}/gen.rs\"), \"pub fn file() -> &'static str { file!() }\").unwrap();\n}\n",
    ),
    (
        "src/lib.rs",
        "include!(concat!(env!(\"OUT_DIR\"), \"/gen.rs\"));\n",
    ),
    (
        "src/main.rs",
        "fn main() { println!(\"{}\", rm::file().split(\"/build/\").next().unwrap()); }\n",
    ),
];

/// Class 7: a user's `--remap-path-prefix` wins over kache's own.
#[test]
fn a_users_remap_path_prefix_wins_over_kaches() {
    let world = World::new();
    let pair = Pair::new(&world, REMAPPED);
    let flags = |dir: &Path| {
        format!(
            "--remap-path-prefix={}=/user-chosen",
            dir.join("target").display()
        )
    };
    let p = plain(
        &world,
        &pair.plain,
        &["build"],
        &[("RUSTFLAGS", &flags(&pair.plain))],
    );
    ok(p);
    world
        .cargo_with(
            &pair.kache,
            &["build"],
            &[("RUSTFLAGS", &flags(&pair.kache))],
        )
        .ok();
    assert_eq!(pair.same_output("rm"), "/user-chosen/debug");
}

/// Sets `path`'s mtime to `when`.
fn set_mtime(path: &Path, when: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(when)
        .unwrap();
}

/// Class 8, sources: a same-size rewrite that keeps the mtime (`cp -p`,
/// `rsync --inplace -t`, git-restore-mtime) is re-hashed.
#[test]
fn a_same_size_rewrite_that_keeps_the_mtime_is_a_miss() {
    let world = World::new();
    let pair = Pair::new(&world, APP_AND_LIB);
    let old = SystemTime::now() - Duration::from_secs(3600);
    for dir in [&pair.plain, &pair.kache] {
        set_mtime(&dir.join("a/src/lib.rs"), old);
    }
    pair.cargo(&world, &["build"]);
    assert_eq!(pair.same_output("app"), "v1");
    // A fresh CI checkout: new content of the same size, the old mtime.
    for dir in [&pair.plain, &pair.kache] {
        std::fs::remove_dir_all(dir.join("target")).unwrap();
        std::fs::write(
            dir.join("a/src/lib.rs"),
            "pub fn v() -> &'static str { \"v9\" }\n",
        )
        .unwrap();
        set_mtime(&dir.join("a/src/lib.rs"), old);
    }
    let (p, k) = pair.cargo(&world, &["build"]);
    ok(p);
    let k = k.ok();
    assert_eq!(k.outcome("a"), "miss", "{:?}", k.outcomes());
    assert_eq!(pair.same_output("app"), "v9");
}

/// Class 8, blobs: bytes overwritten inside a stored rlib with its mtime put
/// back (what bit rot or a tool writing through a hardlink looks like) are
/// never restored, and `doctor --verify` says so.
#[test]
fn a_corrupted_blob_with_its_mtime_put_back_is_never_restored() {
    let world = World::new();
    let root = workspace(&world, "ws", APP_AND_LIB);
    world.cargo(&root, &["build"]).ok();
    let rlib = std::fs::read_dir(root.join("target/debug/deps"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            name.starts_with("liba-") && name.ends_with(".rlib")
        })
        .expect("a's rlib");
    let blob = world
        .blobs()
        .into_iter()
        .find(|b| std::fs::read(b).unwrap() == std::fs::read(&rlib).unwrap())
        .expect("the rlib's blob");
    let mtime = std::fs::metadata(&blob).unwrap().modified().unwrap();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::File::options().write(true).open(&blob).unwrap();
        let len = file.metadata().unwrap().len();
        file.seek(SeekFrom::Start(len / 2)).unwrap();
        file.write_all(b"\xde\xad\xbe\xef").unwrap();
    }
    set_mtime(&blob, mtime);
    let verify = world.kache(&["doctor", "--verify"]);
    assert!(!verify.status.success(), "doctor --verify must catch it");
    std::fs::remove_dir_all(root.join("target")).unwrap();
    let run = world.cargo(&root, &["build"]).ok();
    assert_eq!(run.outcome("a"), "miss", "{:?}", run.outcomes());
    assert_eq!(run_bin(&root, "app"), "v1");
}

/// A macro that embeds a whole folder, one `include_bytes!` per file, as
/// rust-embed (release) and include_dir do: dep-info lists the files, not
/// the folder.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        "[workspace]\nmembers = [\"embed\", \"app\"]\nresolver = \"2\"\n",
    ),
    (
        "embed/Cargo.toml",
        "[package]\nname = \"embed\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\nproc-macro = true\n",
    ),
    (
        "embed/src/lib.rs",
        r#"use proc_macro::TokenStream;

/// `&[(name, bytes)]` for every file of `$CARGO_MANIFEST_DIR/assets`.
#[proc_macro]
pub fn assets(_: TokenStream) -> TokenStream {
    let dir = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("assets");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let items: Vec<String> = files
        .iter()
        .map(|p| format!("({:?}, include_bytes!({:?}) as &[u8])", p.file_name().unwrap().to_string_lossy(), p))
        .collect();
    format!("&[{}]", items.join(", ")).parse().unwrap()
}
"#,
    ),
    (
        "app/Cargo.toml",
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nembed = { path = \"../embed\" }\n",
    ),
    ("app/assets/a.txt", "alpha"),
    (
        "app/src/lib.rs",
        "pub fn names() -> String {\n    let all: &[(&str, &[u8])] = embed::assets!();\n    all.iter().map(|(n, b)| format!(\"{n}={}\", b.len())).collect::<Vec<_>>().join(\",\")\n}\n",
    ),
    (
        "app/src/main.rs",
        "fn main() { println!(\"{}\", app::names()); }\n",
    ),
];

/// A file added to an embedded folder is a miss after `cargo clean`: plain
/// cargo embeds it, so kache must not serve the entry that lacks it.
#[test]
fn a_file_added_to_a_folder_a_macro_embeds_is_a_miss() {
    let world = World::new();
    let pair = Pair::new(&world, EMBEDDED);
    let (p, k) = pair.cargo(&world, &["build"]);
    ok(p);
    k.ok();
    assert_eq!(pair.same_output("app"), "a.txt=5");
    pair.write("app/assets/b.txt", "beta!!");
    for dir in [&pair.plain, &pair.kache] {
        std::fs::remove_dir_all(dir.join("target")).unwrap();
    }
    let (p, k) = pair.cargo(&world, &["build"]);
    ok(p);
    let k = k.ok();
    assert_eq!(k.outcome("app"), "miss", "{:?}", k.outcomes());
    assert_eq!(pair.same_output("app"), "a.txt=5,b.txt=6");
}

/// A macro reading a variable nobody declares: the one kind of input no
/// rule can see (see ARCHITECTURE.md, "What a hit guarantees").
const UNDECLARED: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        "[workspace]\nmembers = [\"peek\", \"app\"]\nresolver = \"2\"\n",
    ),
    (
        "peek/Cargo.toml",
        "[package]\nname = \"peek\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\nproc-macro = true\n",
    ),
    (
        "peek/src/lib.rs",
        "use proc_macro::TokenStream;\n\n#[proc_macro]\npub fn peek(_: TokenStream) -> TokenStream {\n    format!(\"{:?}\", std::env::var(\"UNDECLARED\").unwrap_or_default()).parse().unwrap()\n}\n",
    ),
    (
        "app/Cargo.toml",
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\npeek = { path = \"../peek\" }\n",
    ),
    (
        "app/src/lib.rs",
        "pub fn seen() -> &'static str { peek::peek!() }\n",
    ),
    (
        "app/src/main.rs",
        "fn main() { println!(\"{}\", app::seen()); }\n",
    ),
];

/// `KACHE_VERIFY=1` compiles every hit too: equal outputs count as verified
/// hits, different ones are a `wrong-hit` event naming the files, and the
/// compiled output is what the build keeps.
#[test]
fn kache_verify_counts_verified_hits_and_catches_a_wrong_one() {
    let world = World::new();
    let root = workspace(&world, "ws", UNDECLARED);
    world
        .cargo_with(&root, &["build"], &[("UNDECLARED", "first")])
        .ok();
    std::fs::remove_dir_all(root.join("target")).unwrap();
    let run = world
        .cargo_with(
            &root,
            &["build"],
            &[("UNDECLARED", "second"), ("KACHE_VERIFY", "1")],
        )
        .ok();
    assert_eq!(run.outcome("peek"), "hit", "{:?}", run.outcomes());
    assert_eq!(run.outcome("app"), "wrong-hit", "{:?}", run.outcomes());
    let wrong = run
        .events
        .iter()
        .find(|e| e["outcome"] == "wrong-hit")
        .unwrap();
    let reason = wrong["reason"].as_str().unwrap();
    assert!(
        reason.contains("libapp-") && reason.contains(".rlib"),
        "{reason}"
    );
    assert_eq!(run_bin(&root, "app"), "second", "the compiled output wins");
    let report = world.kache(&["report", "--format", "json"]);
    let summary: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(summary["wrong_hits"], 1, "{summary}");
    assert!(summary["verified_hits"].as_u64().unwrap() >= 1, "{summary}");
    // The entry now holds what rustc wrote: a plain hit serves "second".
    std::fs::remove_dir_all(root.join("target")).unwrap();
    let again = world
        .cargo_with(&root, &["build"], &[("UNDECLARED", "second")])
        .ok();
    assert_eq!(again.outcome("app"), "hit");
    assert_eq!(run_bin(&root, "app"), "second");
}

/// A build script that declares nothing: cargo reruns it, and recompiles
/// the crate, when any file of the package changes, so a macro reading one
/// must see the change through kache too.
#[test]
fn a_build_script_that_declares_nothing_keys_its_whole_package() {
    let world = World::new();
    let files: Vec<(&str, &str)> = DECLARED
        .iter()
        .map(|&(path, text)| {
            if path == "app/build.rs" {
                (path, "fn main() {}\n")
            } else {
                (path, text)
            }
        })
        .collect();
    let pair = Pair::new(&world, &files);
    pair.cargo(&world, &["build"]);
    assert_eq!(pair.same_output("app"), "one.sql unset");
    pair.write("app/data/two.sql", "create table two (y int);\n");
    let (p, k) = pair.cargo(&world, &["build"]);
    ok(p);
    let k = k.ok();
    assert_eq!(k.outcome("app"), "miss", "{:?}", k.outcomes());
    assert_eq!(pair.same_output("app"), "one.sql,two.sql unset");
}

/// A proc-macro whose own build script declares what the macro reads
/// while it expands (in the compile of the crate that uses it).
const MACRO_SCRIPT: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        "[workspace]\nmembers = [\"mac\", \"app\"]\nresolver = \"2\"\n",
    ),
    (
        "mac/Cargo.toml",
        "[package]\nname = \"mac\"\nversion = \"0.1.0\"\nedition = \"2021\"\nbuild = \"build.rs\"\n\n[lib]\nproc-macro = true\n",
    ),
    (
        "mac/build.rs",
        "fn main() {\n    println!(\"cargo:rerun-if-env-changed=MACRO_CFG\");\n    println!(\"cargo:rerun-if-changed=schema.txt\");\n}\n",
    ),
    ("mac/schema.txt", "schema1"),
    (
        "mac/src/lib.rs",
        "use proc_macro::TokenStream;\n\n#[proc_macro]\npub fn show(_: TokenStream) -> TokenStream {\n    let cfg = std::env::var(\"MACRO_CFG\").unwrap_or_default();\n    let schema = std::fs::read_to_string(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/schema.txt\")).unwrap();\n    format!(\"{:?}\", format!(\"env={cfg} schema={schema}\")).parse().unwrap()\n}\n",
    ),
    (
        "app/Cargo.toml",
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nmac = { path = \"../mac\" }\n",
    ),
    (
        "app/src/lib.rs",
        "pub fn show() -> &'static str { mac::show!() }\n",
    ),
    (
        "app/src/main.rs",
        "fn main() { println!(\"{}\", app::show()); }\n",
    ),
];

/// What a macro's own build script declares reaches the key of every crate
/// that uses the macro: cargo recompiles them when it changes, although
/// the macro library comes out byte for byte the same.
#[test]
fn what_a_macros_build_script_declares_is_keyed_for_its_users() {
    let world = World::new();
    let pair = Pair::new(&world, MACRO_SCRIPT);
    let (p, k) = pair.cargo_with(&world, &["build"], &[("MACRO_CFG", "one")]);
    ok(p);
    k.ok();
    assert_eq!(pair.same_output("app"), "env=one schema=schema1");
    let (p, k) = pair.cargo_with(&world, &["build"], &[("MACRO_CFG", "two")]);
    ok(p);
    let k = k.ok();
    assert_ne!(k.outcome("app"), "hit", "{:?}", k.outcomes());
    assert_eq!(pair.same_output("app"), "env=two schema=schema1");
    pair.write("mac/schema.txt", "schema2");
    let (p, k) = pair.cargo_with(&world, &["build"], &[("MACRO_CFG", "two")]);
    ok(p);
    k.ok();
    assert_eq!(pair.same_output("app"), "env=two schema=schema2");
    // Back to the first state: both entries were right, the first hits.
    pair.write("mac/schema.txt", "schema1");
    let (p, k) = pair.cargo_with(&world, &["build"], &[("MACRO_CFG", "one")]);
    ok(p);
    let k = k.ok();
    assert_eq!(k.outcome("app"), "hit", "{:?}", k.outcomes());
    assert_eq!(pair.same_output("app"), "env=one schema=schema1");
}
