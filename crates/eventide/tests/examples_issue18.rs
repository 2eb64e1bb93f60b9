//! Issue 18's programs run as their users run them: the examples
//! `copy_upper` and `ticker_work`, built by cargo (`cargo build --example`,
//! with this test's features and profile, so a stale binary is never
//! run), started as processes on each compiled backend
//! (`EVENTIDE_BACKEND`), their exit status, stdout, stderr and files
//! checked. Bounded: each process is killed and the test failed after
//! [`LIMIT`].
//!
//! `copy_upper` is also compared byte for byte with the Node program it
//! stands for (skipped, with a notice, where `node` is not on PATH).

mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use eventide::BackendKind;

/// The longest a run of an example may take.
const LIMIT: Duration = Duration::from_secs(60);

/// The read stream's chunk (Node's default `highWaterMark` for files).
const CHUNK: usize = 64 * 1024;

/// The examples' executables, built once per test process.
fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<Vec<PathBuf>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let mut cargo = Command::new(env!("CARGO"));
        cargo.args(["build", "--quiet", "--message-format=json"]);
        cargo.args(["--manifest-path", env!("CARGO_MANIFEST_PATH")]);
        cargo.args(["--example", "copy_upper", "--example", "ticker_work"]);
        // The features this test was built with: the same library.
        let features: Vec<&str> = [
            ("uring", cfg!(feature = "uring")),
            ("epoll", cfg!(feature = "epoll")),
            ("poll", cfg!(feature = "poll")),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
        cargo.args(["--no-default-features", "--features", &features.join(",")]);
        if !cfg!(debug_assertions) {
            cargo.arg("--release");
        }
        let out = cargo.stderr(Stdio::inherit()).output().expect("run cargo");
        assert!(out.status.success(), "cargo build --example failed");
        // One JSON message a line; the artifacts' carry `"executable"`.
        let text = String::from_utf8(out.stdout).expect("cargo prints UTF-8");
        text.lines()
            .filter_map(|line| {
                let at = line.find("\"executable\":\"")? + "\"executable\":\"".len();
                let end = line[at..].find('"')?;
                Some(PathBuf::from(&line[at..at + end]))
            })
            .collect()
    });
    built
        .iter()
        .find(|path| path.file_name().is_some_and(|file| file == name))
        .unwrap_or_else(|| panic!("cargo built no {name}: {built:?}"))
        .clone()
}

/// What a finished process left.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `program` with `args` in `dir`, on `backend`, for at most
/// [`LIMIT`].
fn run(program: &Path, args: &[&str], dir: &Path, backend: BackendKind) -> Run {
    let (out_path, err_path) = (dir.join(".stdout"), dir.join(".stderr"));
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("EVENTIDE_BACKEND", backend.to_string())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("start the example");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > LIMIT {
            child.kill().ok();
            child.wait().ok();
            panic!("{program:?} {args:?} still ran after {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let read = |path: &Path| {
        let bytes = std::fs::read(path).unwrap();
        std::fs::remove_file(path).unwrap();
        String::from_utf8(bytes).expect("UTF-8 output")
    };
    Run {
        code: status.code(),
        stdout: read(&out_path),
        stderr: read(&err_path),
    }
}

/// The backends compiled in and allowed here.
fn backends() -> Vec<BackendKind> {
    [BackendKind::Uring, BackendKind::Epoll, BackendKind::Poll]
        .into_iter()
        .filter(|&kind| util::new_loop(kind).is_some())
        .collect()
}

/// A text of several chunks where a multibyte character straddles every
/// chunk boundary (2-, 3- and 4-byte ones, and `ß`, which upper-cases to
/// two letters), with bytes that are not UTF-8 (one cut by a boundary),
/// ending inside a character.
fn fixture() -> Vec<u8> {
    let mut text = Vec::new();
    let straddlers: [&[u8]; 5] = [
        "é".as_bytes(),
        "€".as_bytes(),
        "😀".as_bytes(),
        "ß".as_bytes(),
        // A 4-byte start cut short by `a`: not UTF-8, after the boundary.
        b"\xF0\x9F\x98a",
    ];
    for (i, straddler) in straddlers.iter().enumerate() {
        let boundary = (i + 1) * CHUNK;
        let words = "the quick brown fox jumps over the lazy dog; ";
        while text.len() < boundary - 1 {
            let room = boundary - 1 - text.len();
            text.extend_from_slice(&words.as_bytes()[..room.min(words.len())]);
        }
        text.extend_from_slice(straddler);
        text.extend_from_slice("naïve Ωmega straße \u{1F600} ".as_bytes());
    }
    text.extend_from_slice(b"\xFF end \xE2\x82");
    for i in 1..=straddlers.len() {
        // The byte after each boundary continues the character before it.
        assert_eq!(text[i * CHUNK] & 0xC0, 0x80, "boundary {i}");
    }
    text
}

/// `copy_upper IN OUT` on a file of six chunks, on each backend: OUT is
/// IN upper-cased as a whole (Unicode's upper case, U+FFFD for what is not
/// UTF-8), with nothing printed.
#[test]
fn copy_upper_streams_a_file_of_several_chunks_whole() {
    let program = example("copy_upper");
    let input = fixture();
    let expected = String::from_utf8_lossy(&input).to_uppercase().into_bytes();
    assert_ne!(input, expected);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), &input).unwrap();
    for backend in backends() {
        let done = run(&program, &["in.txt", "out.txt"], dir.path(), backend);
        assert_eq!(
            (done.code, done.stderr.as_str()),
            (Some(0), ""),
            "{backend}"
        );
        assert_eq!(done.stdout, "");
        let output = std::fs::read(dir.path().join("out.txt")).unwrap();
        assert!(output == expected, "{backend}: OUT is not IN upper-cased");
    }
}

/// A missing IN: Node's message on stderr, exit status 1, and OUT
/// created empty (as Node's program, whose write stream opens it).
#[test]
fn copy_upper_missing_input_exits_1_with_nodes_message() {
    let program = example("copy_upper");
    let dir = tempfile::tempdir().unwrap();
    for backend in backends() {
        std::fs::write(dir.path().join("out"), b"old").unwrap();
        let done = run(&program, &["nosuch", "out"], dir.path(), backend);
        assert_eq!(done.code, Some(1), "{backend}");
        assert_eq!(
            done.stderr,
            "Error: ENOENT: no such file or directory, open 'nosuch'\n"
        );
        assert_eq!(std::fs::read(dir.path().join("out")).unwrap(), b"");
        // Both failing: IN's error, as Node's.
        std::fs::create_dir_all(dir.path().join("adir")).unwrap();
        let done = run(&program, &["nosuch", "adir"], dir.path(), backend);
        assert_eq!(done.code, Some(1), "{backend}");
        assert_eq!(
            done.stderr,
            "Error: ENOENT: no such file or directory, open 'nosuch'\n"
        );
    }
}

/// OUT that cannot be written: a directory (the open fails), and
/// `/dev/full` (every write fails, ENOSPC, while reading waits for the
/// write stream to drain): Node's messages, exit status 1. Wrong usage:
/// a usage line, exit status 2.
#[test]
fn copy_upper_output_errors_and_usage() {
    let program = example("copy_upper");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), fixture()).unwrap();
    std::fs::create_dir(dir.path().join("adir")).unwrap();
    for backend in backends() {
        let done = run(&program, &["in.txt", "adir"], dir.path(), backend);
        assert_eq!(done.code, Some(1), "{backend}");
        assert_eq!(
            done.stderr,
            "Error: EISDIR: illegal operation on a directory, open 'adir'\n"
        );
        if Path::new("/dev/full").exists() {
            let done = run(&program, &["in.txt", "/dev/full"], dir.path(), backend);
            assert_eq!(done.code, Some(1), "{backend}");
            assert_eq!(
                done.stderr,
                "Error: ENOSPC: no space left on device, write\n"
            );
        }
        for args in [&[][..], &["in.txt"], &["a", "b", "c"]] {
            let done = run(&program, args, dir.path(), backend);
            assert_eq!(done.code, Some(2), "{backend} {args:?}");
            assert_eq!(done.stderr, "usage: copy_upper IN OUT\n");
        }
    }
}

/// The Node program `copy_upper` stands for (its module docs show it).
const COPY_UPPER_JS: &str = r#"
const fs = require('fs');
const { Transform, pipeline } = require('stream');
const { StringDecoder } = require('string_decoder');
const [, , input, output] = process.argv;
const decoder = new StringDecoder('utf8');
const upper = new Transform({
  transform(chunk, _, done) { done(null, decoder.write(chunk).toUpperCase()); },
  flush(done) { done(null, decoder.end().toUpperCase()); },
});
pipeline(fs.createReadStream(input), upper, fs.createWriteStream(output), (error) => {
  if (error) { console.error(String(error)); process.exit(1); }
});
"#;

/// Node's program and the example on the same inputs: the same OUT bytes,
/// stderr and exit status.
#[test]
fn copy_upper_does_what_the_node_program_does() {
    let program = example("copy_upper");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("copy_upper.js");
    std::fs::write(&script, COPY_UPPER_JS).unwrap();
    std::fs::write(dir.path().join("in.txt"), fixture()).unwrap();
    std::fs::create_dir(dir.path().join("adir")).unwrap();
    let cases = [
        ["in.txt", "out"],
        ["nosuch", "out"],
        ["in.txt", "adir"],
        ["nosuch", "adir"],
    ];
    for [input, output] in cases {
        let node = Command::new("node")
            .arg(&script)
            .args([input, output])
            .current_dir(dir.path())
            .output();
        let node = match node {
            Ok(node) => node,
            Err(error) => {
                eprintln!("skipped: `node` is not on PATH ({error})");
                return;
            }
        };
        let node_out = std::fs::read(dir.path().join(output)).ok();
        let _ = std::fs::remove_file(dir.path().join(output));
        let done = run(&program, &[input, output], dir.path(), backends()[0]);
        assert_eq!(done.code, node.status.code(), "{input} {output}");
        let node_stderr = String::from_utf8_lossy(&node.stderr);
        assert_eq!(done.stderr, node_stderr, "{input} {output}");
        let our_out = std::fs::read(dir.path().join(output)).ok();
        assert!(
            our_out == node_out,
            "{input} {output}: OUT differs from Node's"
        );
        let _ = std::fs::remove_file(dir.path().join(output));
    }
}

/// The primes below `limit`, by a sieve (not the example's way).
fn primes_below(limit: usize) -> u64 {
    let mut composite = vec![false; limit];
    let mut count = 0;
    for n in 2..limit {
        if !composite[n] {
            count += 1;
            (n * n..limit).step_by(n).for_each(|m| composite[m] = true);
        }
    }
    count
}

/// `ticker_work 5000000 1` on each backend: it ticks while the pool
/// counts (at least once: the counting takes far longer than the 1 ms
/// period), stops ticking when the last job is in, prints the right count
/// and exits 0 by itself.
#[test]
fn ticker_work_ticks_while_the_pool_counts_then_exits() {
    let program = example("ticker_work");
    let dir = tempfile::tempdir().unwrap();
    let expected = primes_below(5_000_000);
    for backend in backends() {
        let done = run(&program, &["5000000", "1"], dir.path(), backend);
        assert_eq!(
            (done.code, done.stderr.as_str()),
            (Some(0), ""),
            "{backend}"
        );
        let lines: Vec<&str> = done.stdout.lines().collect();
        // "<ms> ms  <what>": the time, then what happened.
        let what: Vec<&str> = lines
            .iter()
            .map(|line| line.split_once(" ms  ").expect("a stamped line").1)
            .collect();
        assert_eq!(what[0], "8 jobs queued on the pool");
        let ticks: Vec<&str> = what
            .iter()
            .copied()
            .filter(|w| w.starts_with("tick "))
            .collect();
        assert!(!ticks.is_empty(), "{backend}: no tick:\n{}", done.stdout);
        for (i, tick) in ticks.iter().enumerate() {
            assert!(tick.starts_with(&format!("tick {} (", i + 1)), "{tick}");
        }
        let jobs: u64 = what
            .iter()
            .filter(|w| w.contains(" primes in ["))
            .map(|w| w.split(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        let job_lines = what.iter().filter(|w| w.contains(" primes in [")).count();
        assert_eq!((job_lines, jobs), (8, expected), "{backend}");
        // The total is the last line: no tick after it.
        assert_eq!(
            *what.last().unwrap(),
            format!("{expected} primes below 5000000 ({} ticks)", ticks.len())
        );
        let usage = run(&program, &["many"], dir.path(), backend);
        assert_eq!(usage.code, Some(2));
        assert_eq!(usage.stderr, "usage: ticker_work [LIMIT [PERIOD_MS]]\n");
    }
}
