//! Side by side with Node: the same scenarios run with Node 20's `fs`
//! (`tests/fs_support/fs_vs_node.js`, on a fixture of its own) and with
//! eventide on each backend (and on io_uring with every op on the pool),
//! and the lines they print (results, error codes and messages, the state
//! left behind) must be the same, but for the differences listed in
//! [`KNOWN`], each with its reason. Skips, with a notice, where `node` is
//! not on PATH. Bounded: one node run (about 0.1 s) per test process.

mod fs_support;
mod util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use eventide::fs::{self, File, Flags, RmOptions, Stats};
use eventide::{Loop, Result};
use util::outcome;

/// Steps whose lines differ from Node's on purpose, with the reason (a
/// known difference must still have Node's outcome and code; only the
/// message may differ). None today: `rm` of a directory is Node's
/// `ERR_FS_EISDIR` and a NUL byte in a path has Node's reason.
const KNOWN: &[(&str, &str)] = &[];

/// Builds the scenarios' starting point under `root` (the same for both).
fn fixture(root: &Path) {
    let write = |name: &str, data: &[u8]| std::fs::write(root.join(name), data).unwrap();
    write("a", b"hello");
    std::fs::hard_link(root.join("a"), root.join("hard")).unwrap();
    std::os::unix::fs::symlink("a", root.join("soft")).unwrap();
    std::fs::create_dir_all(root.join("dir/sub")).unwrap();
    write("dir/x", b"x");
    write("dir/sub/y", b"y");
    std::fs::create_dir_all(root.join("outside")).unwrap();
    write("outside/keep", b"precious");
    std::fs::create_dir(root.join("tree")).unwrap();
    std::os::unix::fs::symlink("../outside", root.join("tree/link")).unwrap();
    std::os::unix::fs::symlink("nowhere", root.join("dang")).unwrap();
    std::fs::create_dir(root.join("emptydir")).unwrap();
    std::os::unix::fs::symlink("emptydir", root.join("todir")).unwrap();
    write("olddest", b"old contents");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::Permissions::from_mode(0o600);
    std::fs::set_permissions(root.join("olddest"), mode).unwrap();
    write("old", b"");
    // Fixed times: before the epoch with a fraction, and after it.
    let set = |name: &str, when: SystemTime| {
        let times = std::fs::FileTimes::new()
            .set_accessed(when)
            .set_modified(when);
        let file = std::fs::File::options()
            .write(true)
            .open(root.join(name))
            .unwrap();
        file.set_times(times).unwrap();
    };
    set("old", SystemTime::UNIX_EPOCH - Duration::from_millis(1500));
    set(
        "a",
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_000_000_250),
    );
}

/// A fixture directory, canonical (the scenarios print paths under it).
fn fixture_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = dir.path().canonicalize().unwrap();
    fixture(&root);
    (dir, root)
}

/// Node's lines, once per test process; `None` without `node`.
fn node_lines() -> Option<&'static Vec<String>> {
    static LINES: OnceLock<Option<Vec<String>>> = OnceLock::new();
    LINES
        .get_or_init(|| {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fs_support/fs_vs_node.js");
            let (_dir, root) = fixture_dir();
            let out = match Command::new("node").arg(&script).arg(&root).output() {
                Ok(out) => out,
                Err(error) => {
                    eprintln!("fs_vs_node: skipped, `node` is not on PATH ({error})");
                    return None;
                }
            };
            assert!(
                out.status.success(),
                "node failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            Some(text.lines().map(str::to_owned).collect())
        })
        .as_ref()
}

/// Formats one result as the script does.
struct Printer {
    root: String,
    lines: Vec<String>,
}

impl Printer {
    fn hide(&self, s: &str) -> String {
        s.replace(&self.root, "<root>")
    }

    fn show(&mut self, label: &str, result: Result<Option<String>>) {
        let line = match result {
            Ok(None) => format!("{label} => ok"),
            Ok(Some(value)) => format!("{label} => ok {}", self.hide(&value)),
            Err(error) => format!(
                "{label} => err {} | {}",
                error.code().unwrap_or("?"),
                self.hide(&error.to_string())
            ),
        };
        self.lines.push(line);
    }

    fn state(&mut self, label: &str, value: &str) {
        let line = format!("{label} => state {}", self.hide(value));
        self.lines.push(line);
    }
}

/// Node's `mtimeMs`: milliseconds since the epoch, negative before it, as
/// a JavaScript number prints.
fn ms(t: SystemTime) -> String {
    let ms = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as f64 / 1e6,
        Err(e) => -(e.duration().as_nanos() as f64 / 1e6),
    };
    format!("{ms}")
}

fn stats(s: Stats) -> String {
    let kind = if s.is_file() {
        "file"
    } else if s.is_dir() {
        "dir"
    } else if s.is_symlink() {
        "link"
    } else {
        "other"
    };
    let size = if s.is_symlink() {
        "-".to_string()
    } else {
        s.size.to_string()
    };
    format!("{kind} size={size} mtimeMs={}", ms(s.mtime))
}

fn list(root: &Path, dir: &str) -> String {
    let mut names: Vec<String> = std::fs::read_dir(root.join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    if names.is_empty() {
        "-".into()
    } else {
        names.join(",")
    }
}

fn exists(root: &Path, p: &str) -> &'static str {
    if root.join(p).symlink_metadata().is_ok() {
        "yes"
    } else {
        "no"
    }
}

type Done<T> = Box<dyn FnOnce(&mut Loop, Result<T>)>;

/// Runs one step to its callback.
fn run<T: 'static>(lp: &mut Loop, start: impl FnOnce(&mut Loop, Done<T>)) -> Result<T> {
    outcome(lp, start)
}

fn unit(r: Result<()>) -> Result<Option<String>> {
    r.map(|()| None)
}

fn slashed(p: PathBuf) -> PathBuf {
    let mut s = p.into_os_string();
    s.push("/");
    s.into()
}

/// The script's steps, with eventide, in the same order.
fn eventide_lines(lp: &mut Loop) -> Vec<String> {
    let (_dir, root) = fixture_dir();
    let at = |p: &str| root.join(p);
    let mut out = Printer {
        root: root.display().to_string(),
        lines: Vec::new(),
    };
    let r = |o: &str| Flags::parse(o).unwrap();
    let rec = RmOptions::new().recursive(true).force(false);
    let force = RmOptions::new().recursive(false).force(true);
    let p = at("a");
    let v = run(lp, move |lp, d| lp.fs().stat(p, d));
    out.show("stat a", v.map(|s| Some(stats(s))));
    let p = at("old");
    let v = run(lp, move |lp, d| lp.fs().stat(p, d));
    out.show("stat old", v.map(|s| Some(stats(s))));
    let p = at("old");
    let v = run(lp, move |lp, d| lp.fs().lstat(p, d));
    out.show("lstat old", v.map(|s| Some(stats(s))));
    let p = at("old");
    let file: File = run(lp, move |lp, d| lp.fs().open(p, r("r"), 0, d)).unwrap();
    let f = file;
    let v = run(lp, move |lp, d| lp.fs().fstat(f, d));
    run(lp, move |lp, d| lp.fs().close(file, d)).unwrap();
    out.show("fstat old", v.map(|s| Some(stats(s))));
    let p = at("soft");
    let v = run(lp, move |lp, d| lp.fs().lstat(p, d));
    out.show(
        "lstat soft",
        v.map(|s| Some(stats(s).split(" mtimeMs").next().unwrap().to_string())),
    );
    let p = at("missing");
    let v = run(lp, move |lp, d| lp.fs().stat(p, d));
    out.show("stat missing", v.map(|_| None));
    let p = at("a/x");
    let v = run(lp, move |lp, d| lp.fs().stat(p, d));
    out.show("stat under a file", v.map(|_| None));

    let p = at("missing");
    let v = run(lp, move |lp, d| lp.fs().open(p, r("r"), 0o666, d));
    out.show("open missing", v.map(|_| None));
    let v = Flags::parse("rw").map(|_| None);
    out.show("open bad flags", v);
    let p = at("dir");
    let v = run(lp, move |lp, d| lp.fs().readdir(p, d));
    let names = |v: Vec<fs::DirEntry>| {
        let mut n: Vec<String> = v
            .into_iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .collect();
        n.sort();
        Some(n.join(","))
    };
    out.show("readdir dir", v.map(names));
    let p = at("a");
    let v = run(lp, move |lp, d| lp.fs().readdir(p, d));
    out.show("readdir a file", v.map(names));
    let (p, q) = (at("missing"), at("x"));
    out.show(
        "rename missing",
        unit(run(lp, move |lp, d| lp.fs().rename(p, q, d))),
    );
    let p = at("dir");
    out.show(
        "unlink dir",
        unit(run(lp, move |lp, d| lp.fs().unlink(p, d))),
    );
    let p = at("dir");
    out.show(
        "rmdir full dir",
        unit(run(lp, move |lp, d| lp.fs().rmdir(p, d))),
    );
    let p = at("a");
    out.show(
        "mkdir existing",
        unit(run(lp, move |lp, d| lp.fs().mkdir(p, 0o777, d))),
    );
    let p = at("a");
    let v = run(lp, move |lp, d| lp.fs().readlink(p, d));
    out.show("readlink a file", v.map(|p| Some(p.display().to_string())));
    let p = at("soft");
    let v = run(lp, move |lp, d| lp.fs().readlink(p, d));
    out.show("readlink soft", v.map(|p| Some(p.display().to_string())));
    let p = at("soft");
    let v = run(lp, move |lp, d| lp.fs().realpath(p, d));
    out.show("realpath soft", v.map(|p| Some(p.display().to_string())));
    let (p, q) = (at("a"), at("hard"));
    out.show(
        "link onto existing",
        unit(run(lp, move |lp, d| lp.fs().link(p, q, d))),
    );
    let q = at("soft");
    let v = run(lp, move |lp, d| lp.fs().symlink("a", q, d));
    out.show("symlink onto existing", unit(v));
    let p = at("missing");
    out.show(
        "chmod missing",
        unit(run(lp, move |lp, d| lp.fs().chmod(p, 0o644, d))),
    );
    let p = at("missing");
    out.show(
        "truncate missing",
        unit(run(lp, move |lp, d| lp.fs().truncate(p, 0, d))),
    );
    let p = at("missing");
    let v = run(lp, move |lp, d| lp.fs().access(p, fs::F_OK, d));
    out.show("access missing", unit(v));
    let text = |v: Vec<u8>| Some(String::from_utf8(v).unwrap());
    let p = at("dir");
    let v = run(lp, move |lp, d| lp.fs().read_file(p, d));
    out.show("readFile dir", v.map(text));
    let p = at("missing");
    let v = run(lp, move |lp, d| lp.fs().read_file(p, d));
    out.show("readFile missing", v.map(text));
    let p = at("a");
    let v = run(lp, move |lp, d| lp.fs().read_file(p, d));
    out.show("readFile a", v.map(text));

    extra_steps(lp, &root, &mut out);

    let copy = |lp: &mut Loop, out: &mut Printer, label: &str, from: &str, to: &str, mode| {
        let (p, q) = (at(from), at(to));
        let v = run(lp, move |lp, d| lp.fs().copy_file(p, q, mode, d));
        out.show(label, unit(v));
    };
    copy(lp, &mut out, "copyFile a a", "a", "a", 0);
    let a = std::fs::read_to_string(at("a")).unwrap();
    out.state("a after copyFile a a", &a);
    copy(lp, &mut out, "copyFile a hard", "a", "hard", 0);
    copy(lp, &mut out, "copyFile a soft", "a", "soft", 0);
    copy(lp, &mut out, "copyFile soft a", "soft", "a", 0);
    let a = std::fs::read_to_string(at("a")).unwrap();
    out.state("a after the copies", &a);
    let excl = fs::COPYFILE_EXCL;
    copy(lp, &mut out, "copyFile a a excl", "a", "a", excl);
    copy(lp, &mut out, "copyFile missing", "missing", "b", 0);
    copy(lp, &mut out, "copyFile dir fresh", "dir", "fresh", 0);
    out.state("fresh exists", exists(&root, "fresh"));
    // Node (libuv) then removes `olddest`; eventide leaves it whole (a
    // deliberate difference, checked in fs_defects.rs): only the error is
    // compared here.
    copy(lp, &mut out, "copyFile dir olddest", "dir", "olddest", 0);
    copy(lp, &mut out, "copyFile a copy", "a", "copy", 0);
    let c = std::fs::read_to_string(at("copy")).unwrap();
    out.state("copy", &c);

    let rm = |lp: &mut Loop, out: &mut Printer, label: &str, p: PathBuf, o: RmOptions| {
        out.show(label, unit(run(lp, move |lp, d| lp.fs().rm(p, o, d))));
    };
    rm(
        lp,
        &mut out,
        "rm tree/link/ recursive",
        slashed(at("tree/link")),
        rec,
    );
    out.state("outside after rm link/", &list(&root, "outside"));
    out.state("link after rm link/", exists(&root, "tree/link"));
    rm(
        lp,
        &mut out,
        "rm missing",
        at("missing"),
        RmOptions::default(),
    );
    rm(lp, &mut out, "rm missing force", at("missing"), force);
    rm(lp, &mut out, "rm under a file", at("a/x"), force);
    rm(lp, &mut out, "rm dir", at("dir"), RmOptions::default());
    rm(lp, &mut out, "rm tree recursive", at("tree"), rec);
    out.state("outside after rm tree", &list(&root, "outside"));
    out.state("tree after rm tree", exists(&root, "tree"));
    rm(lp, &mut out, "rm dir recursive", at("dir"), rec);
    out.state("dir after rm", exists(&root, "dir"));
    rm(lp, &mut out, "rm copy", at("copy"), RmOptions::default());
    rm(lp, &mut out, "rm nul", at("a\0b"), RmOptions::default());
    let p = at("a\0b");
    let v = run(lp, move |lp, d| lp.fs().stat(p, d));
    out.show("stat nul", v.map(|_| None));

    let mkdir_p = |lp: &mut Loop, out: &mut Printer, label: &str, p: PathBuf| {
        let v = run(lp, move |lp, d| lp.fs().mkdir_recursive(p, 0o777, d));
        out.show(label, v.map(|made| made.map(|p| p.display().to_string())));
    };
    mkdir_p(lp, &mut out, "mkdir -p a file", at("a"));
    mkdir_p(lp, &mut out, "mkdir -p under a file", at("a/x/y"));
    mkdir_p(lp, &mut out, "mkdir -p dangling", at("dang"));
    mkdir_p(lp, &mut out, "mkdir -p under dangling", at("dang/x/y"));
    mkdir_p(lp, &mut out, "mkdir -p existing", at("emptydir"));
    mkdir_p(lp, &mut out, "mkdir -p new/a/", slashed(at("new/a")));
    mkdir_p(lp, &mut out, "mkdir -p through a link", at("todir/z"));
    out.state("emptydir", &list(&root, "emptydir"));
    mkdir_p(lp, &mut out, "mkdir -p nul", at("a\0b"));
    copy(lp, &mut out, "copyFile a emptydir", "a", "emptydir", 0);
    copy(lp, &mut out, "copyFile a dang", "a", "dang", 0);
    let nowhere = std::fs::read_to_string(at("nowhere")).unwrap();
    out.state("nowhere", &nowhere);
    out.lines
}

/// The second batch of the script's steps: the main error of more
/// operations, whole-file writes, modes, streams.
fn extra_steps(lp: &mut Loop, root: &Path, out: &mut Printer) {
    let at = |p: &str| root.join(p);
    let r = |o: &str| Flags::parse(o).unwrap();
    let none = |v: Result<()>| v.map(|()| None);
    let p = slashed(at("a"));
    let v = run(lp, move |lp, d| lp.fs().stat(p, d));
    out.show("stat a/", v.map(|_| None));
    let p = at("dir");
    let v = run(lp, move |lp, d| lp.fs().open(p, r("w"), 0o666, d));
    out.show("open dir for writing", v.map(|_| None));
    let p = at("a");
    let v = run(lp, move |lp, d| lp.fs().open(p, r("wx"), 0o666, d));
    out.show("open wx existing", v.map(|_| None));
    let p = at("missing");
    let v = run(lp, move |lp, d| lp.fs().readdir(p, d));
    out.show("readdir missing", v.map(|_| None));
    let p = at("missing");
    out.show(
        "rmdir missing",
        none(run(lp, move |lp, d| lp.fs().rmdir(p, d))),
    );
    let p = at("a");
    out.show(
        "rmdir a file",
        none(run(lp, move |lp, d| lp.fs().rmdir(p, d))),
    );
    let (p, q) = (at("dir"), at("dir/sub/in"));
    let v = run(lp, move |lp, d| lp.fs().rename(p, q, d));
    out.show("rename into itself", none(v));
    let p = at("missing");
    let one = SystemTime::UNIX_EPOCH + Duration::from_secs(1);
    let v = run(lp, move |lp, d| lp.fs().utimes(p, one, one, d));
    out.show("utimes missing", none(v));
    let p = at("missing");
    let v = run(lp, move |lp, d| lp.fs().chown(p, 0, 0, d));
    out.show("chown missing", none(v));
    let p = at("missing");
    let v = run(lp, move |lp, d| lp.fs().lchown(p, 0, 0, d));
    out.show("lchown missing", none(v));
    for (label, name) in [
        ("realpath missing", "missing"),
        ("realpath dangling", "dang"),
    ] {
        let p = at(name);
        let v = run(lp, move |lp, d| lp.fs().realpath(p, d));
        out.show(label, v.map(|p| Some(p.display().to_string())));
    }
    let p = at("missing");
    let v = run(lp, move |lp, d| lp.fs().readlink(p, d));
    out.show("readlink missing", v.map(|p| Some(p.display().to_string())));
    let q = at("missing/l");
    let v = run(lp, move |lp, d| lp.fs().symlink("a", q, d));
    out.show("symlink under missing", none(v));
    let (p, q) = (at("missing"), at("l"));
    out.show(
        "link missing",
        none(run(lp, move |lp, d| lp.fs().link(p, q, d))),
    );
    let p = at("dir");
    out.show(
        "truncate dir",
        none(run(lp, move |lp, d| lp.fs().truncate(p, 0, d))),
    );
    let p = at("a");
    let v = run(lp, move |lp, d| lp.fs().access(p, fs::X_OK, d));
    out.show("access a X_OK", none(v));
    let p = at("dir");
    let v = run(lp, move |lp, d| lp.fs().write_file(p, b"x".to_vec(), d));
    out.show("writeFile dir", none(v));
    for label in ["appendFile new", "appendFile again"] {
        let data = if label.ends_with("new") { "one" } else { "two" };
        let p = at("app");
        let v = run(lp, move |lp, d| lp.fs().append_file(p, data.into(), d));
        out.show(label, none(v));
    }
    let app = std::fs::read_to_string(at("app")).unwrap();
    out.state("app", &app);
    let p = at("app");
    out.show(
        "chmod a 640",
        none(run(lp, move |lp, d| lp.fs().chmod(p, 0o640, d))),
    );
    let p = at("app");
    let v = run(lp, move |lp, d| lp.fs().stat(p, d));
    out.show(
        "stat app mode",
        v.map(|s| Some(format!("{:o}", s.mode & 0o7777))),
    );
    let streams = [
        ("readStream start 1 end 3", "a", Some(1), Some(3)),
        ("readStream missing", "missing", None, None),
        ("readStream start > end", "a", Some(5), Some(2)),
    ];
    for (label, name, start, end) in streams {
        let p = at(name);
        let got = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let g = got.clone();
        let options = fs::ReadStreamOptions::default().start(start).end(end);
        let v = run(lp, move |lp, d| {
            lp.fs().create_read_stream(
                p,
                options,
                move |_, _, chunk| g.borrow_mut().extend_from_slice(chunk),
                d,
            );
        });
        // Node's end callback gets no value: the bytes are shown on success.
        let bytes = String::from_utf8(got.take()).unwrap();
        let shown = |()| (!bytes.is_empty()).then(|| bytes.clone());
        out.show(label, v.map(shown));
    }
    let p = at("missing/w");
    let v = run(lp, move |lp, d| {
        let w = lp
            .fs()
            .create_write_stream(p, fs::WriteStreamOptions::default(), |_, _| {});
        w.write(lp, b"x".to_vec());
        w.end(lp, d);
    });
    out.show("writeStream under missing", none(v));
}

fn side_by_side(lp: &mut Loop) {
    let Some(node) = node_lines() else {
        eprintln!("fs_vs_node: skipped, `node` is not on PATH");
        return;
    };
    let ours = eventide_lines(lp);
    let label = |line: &str| line.split(" => ").next().unwrap_or("").to_string();
    let node_labels: Vec<String> = node.iter().map(|l| label(l)).collect();
    let our_labels: Vec<String> = ours.iter().map(|l| label(l)).collect();
    assert_eq!(node_labels, our_labels, "the two lists of steps agree");
    let mut differences = Vec::new();
    for (theirs, mine) in node.iter().zip(&ours) {
        let step = label(theirs);
        let known = KNOWN.iter().find(|(k, _)| *k == step);
        match known {
            _ if theirs == mine => {}
            Some((_, reason)) => {
                eprintln!("known difference ({reason}):\n  node:     {theirs}\n  eventide: {mine}");
                // The same outcome and code, at least.
                let head = |l: &str| l.split(" | ").next().unwrap_or("").to_string();
                if head(theirs) != head(mine) {
                    differences.push(format!("  node:     {theirs}\n  eventide: {mine}"));
                }
            }
            None => differences.push(format!("  node:     {theirs}\n  eventide: {mine}")),
        }
    }
    eprintln!("{} steps compared with node", ours.len());
    assert!(
        differences.is_empty(),
        "eventide differs from Node:\n{}",
        differences.join("\n")
    );
}

on_every_backend!(side_by_side);

/// The io_uring case again with every file operation on the pool.
#[test]
fn the_same_cases_pass_with_every_op_on_the_pool() {
    fs_support::rerun_uring_cases_on_the_pool();
}
