//! Differential testing against Node: random programs over timers,
//! immediates, next-ticks and microtasks, described as data, run by `node`
//! (printed as JavaScript, each run in a fresh worker thread: a loop of its
//! own) and by eventide (interpreted from the same data), and their traces
//! compared.
//!
//! A program is a list of [`Act`]s: the main script's top level. Every
//! callback logs its label (`c<N>`) when it starts, then runs its own acts.
//! Handles live in numbered variables (`v[N]`), so later acts can clear,
//! refresh, unref, ref or ask `hasRef` of them, as Node code keeps
//! `setTimeout`'s return value.

#![allow(dead_code, unreachable_pub)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::Duration;

use eventide::{ImmediateId, Loop, TimerId};

/// One step of a program.
#[derive(Clone, Debug, PartialEq)]
pub enum Act {
    /// `v[id] = setTimeout(() => { log; body }, ms)`.
    Timeout { id: u32, ms: u32, body: Vec<Act> },
    /// `v[id] = setInterval(..., ms)`, clearing itself after `times` runs
    /// (counted per interval; the check comes after the log, before the
    /// body).
    Interval {
        id: u32,
        ms: u32,
        times: u32,
        body: Vec<Act>,
    },
    /// `v[id] = setImmediate(() => { log; body })`.
    Immediate { id: u32, body: Vec<Act> },
    /// `process.nextTick(() => { log; body })`.
    Tick { id: u32, body: Vec<Act> },
    /// `queueMicrotask(() => { log; body })`.
    Microtask { id: u32, body: Vec<Act> },
    /// `clearTimeout(v[target])` (or `clearImmediate`).
    Clear { target: u32, immediate: bool },
    /// `v[target].refresh()`, by this act at most once (`id` counts it), so
    /// a timeout refreshing itself does not run forever.
    Refresh { id: u32, target: u32 },
    /// `v[target].unref()` (a timer or an immediate).
    Unref { target: u32 },
    /// `v[target].ref()` (a timer or an immediate).
    Ref { target: u32 },
    /// Logs `h<target>:<v[target].hasRef()>`.
    HasRef { target: u32 },
    /// Blocks the thread for `ms` (the scripts' `spin`).
    Spin { ms: u32 },
}

/// Which kinds of act the generator may use (so rules not implemented yet
/// can be left out and added as they land).
#[derive(Clone, Copy, Debug)]
pub struct Features {
    pub refresh: bool,
    /// Refresh any timer, not only one whose callback (or a tick or
    /// microtask it queued) is running: a timeout that fired in an earlier
    /// callback is then refreshed too, which Node allows and eventide
    /// deliberately does not (docs/loop.md).
    pub refresh_anywhere: bool,
    pub has_ref: bool,
    pub spin: bool,
}

impl Features {
    pub const ALL: Features = Features {
        refresh: true,
        refresh_anywhere: true,
        has_ref: true,
        spin: true,
    };
}

/// A small deterministic generator (splitmix64): a seed is a program.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

struct Gen {
    rng: Rng,
    next_id: u32,
    /// Timers (timeouts, intervals) and immediates created so far.
    timers: Vec<u32>,
    immediates: Vec<u32>,
    /// The timers whose callback the act being generated runs in (directly,
    /// or in a tick or microtask queued from it).
    own: Vec<u32>,
    features: Features,
}

/// The program of `seed`.
pub fn generate(seed: u64, features: Features) -> Vec<Act> {
    let mut g = Gen {
        rng: Rng(seed),
        next_id: 1,
        timers: Vec::new(),
        immediates: Vec::new(),
        own: Vec::new(),
        features,
    };
    let n = 1 + g.rng.below(6) as usize;
    g.acts(n, 0)
}

impl Gen {
    fn id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn acts(&mut self, n: usize, depth: u32) -> Vec<Act> {
        (0..n).filter_map(|_| self.act(depth)).collect()
    }

    fn body(&mut self, depth: u32) -> Vec<Act> {
        if depth >= 3 {
            return Vec::new();
        }
        let n = self.rng.below(4) as usize;
        self.acts(n, depth + 1)
    }

    /// A callback's body that runs in a later phase, in the context of
    /// `timer`'s callback (or none).
    fn later_body(&mut self, depth: u32, timer: Option<u32>) -> Vec<Act> {
        let saved = std::mem::replace(&mut self.own, timer.into_iter().collect());
        let body = self.body(depth);
        self.own = saved;
        body
    }

    fn ms(&mut self) -> u32 {
        self.rng.pick(&[0, 0, 1, 1, 2, 5, 10, 20, 50])
    }

    fn act(&mut self, depth: u32) -> Option<Act> {
        let f = self.features;
        Some(match self.rng.below(100) {
            0..20 => {
                let id = self.id();
                let ms = self.ms();
                self.timers.push(id);
                Act::Timeout {
                    id,
                    ms,
                    body: self.later_body(depth, Some(id)),
                }
            }
            20..26 => {
                let id = self.id();
                let ms = self.rng.pick(&[1, 2, 5, 10]);
                let times = 1 + self.rng.below(3) as u32;
                self.timers.push(id);
                Act::Interval {
                    id,
                    ms,
                    times,
                    body: self.later_body(depth + 1, Some(id)),
                }
            }
            26..42 => {
                let id = self.id();
                self.immediates.push(id);
                Act::Immediate {
                    id,
                    body: self.later_body(depth, None),
                }
            }
            42..56 => {
                let id = self.id();
                Act::Tick {
                    id,
                    body: self.body(depth),
                }
            }
            56..70 => {
                let id = self.id();
                Act::Microtask {
                    id,
                    body: self.body(depth),
                }
            }
            70..78 => {
                if !self.immediates.is_empty() && self.rng.below(3) == 0 {
                    let target = self.rng.pick(&self.immediates.clone());
                    Act::Clear {
                        target,
                        immediate: true,
                    }
                } else if !self.timers.is_empty() {
                    let target = self.rng.pick(&self.timers.clone());
                    Act::Clear {
                        target,
                        immediate: false,
                    }
                } else {
                    return None;
                }
            }
            78..84 if f.refresh && !self.timers.is_empty() => {
                let targets = if f.refresh_anywhere {
                    self.timers.clone()
                } else {
                    self.own.clone()
                };
                if targets.is_empty() {
                    return None;
                }
                let target = self.rng.pick(&targets);
                Act::Refresh {
                    id: self.id(),
                    target,
                }
            }
            84..90 if !self.timers.is_empty() || !self.immediates.is_empty() => {
                let both: Vec<u32> = self
                    .timers
                    .iter()
                    .chain(&self.immediates)
                    .copied()
                    .collect();
                let target = self.rng.pick(&both);
                if self.rng.below(2) == 0 {
                    Act::Unref { target }
                } else {
                    Act::Ref { target }
                }
            }
            90..95 if f.has_ref && !self.timers.is_empty() => Act::HasRef {
                target: self.rng.pick(&self.timers.clone()),
            },
            95..100 if f.spin => Act::Spin {
                ms: self.rng.pick(&[1, 2, 3, 5, 8]),
            },
            _ => return None,
        })
    }
}

// ---------------------------------------------------------------- JavaScript

/// How the JavaScript `spin(ms)` reads the time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpinClock {
    /// `performance.now()`: spins `ms` milliseconds, as eventide's side
    /// does (`Instant`), so both sides run the same program.
    Exact,
    /// `Date.now()`: stops at the wall clock's next millisecond boundary
    /// past `ms`, so it spins anywhere in `(ms - 1, ms]`. A program whose
    /// Node trace changes with it depends on where the spins end inside a
    /// millisecond (two timers falling due in the same one), not on a rule.
    Coarse,
}

/// The program as the body of a worker script (CommonJS, as a main
/// script: next-ticks before microtasks after the top level), its spins
/// exact.
pub fn to_js(acts: &[Act]) -> String {
    to_js_with(acts, SpinClock::Exact)
}

/// As [`to_js`], with the spins reading `clock`.
pub fn to_js_with(acts: &[Act], clock: SpinClock) -> String {
    let mut s = String::new();
    s.push_str("const t = []; const v = {}; const once = {};\n");
    s.push_str(match clock {
        SpinClock::Exact => {
            "function spin(ms) { const end = performance.now() + ms; while (performance.now() < end) {} }\n"
        }
        SpinClock::Coarse => {
            "function spin(ms) { const end = Date.now() + ms; while (Date.now() < end) {} }\n"
        }
    });
    s.push_str("process.on('exit', () => require('worker_threads').parentPort.postMessage(t));\n");
    js_acts(&mut s, acts, 0);
    s
}

fn js_acts(s: &mut String, acts: &[Act], indent: usize) {
    for a in acts {
        js_act(s, a, indent);
    }
}

fn js_act(s: &mut String, a: &Act, indent: usize) {
    let pad = "  ".repeat(indent);
    match a {
        Act::Timeout { id, ms, body } => {
            let _ = writeln!(s, "{pad}v[{id}] = setTimeout(() => {{ t.push('c{id}');");
            js_acts(s, body, indent + 1);
            let _ = writeln!(s, "{pad}}}, {ms});");
        }
        Act::Interval {
            id,
            ms,
            times,
            body,
        } => {
            let _ = writeln!(
                s,
                "{pad}{{ let n = 0; const h = setInterval(() => {{ t.push('c{id}'); \
                 if (++n >= {times}) clearInterval(h);"
            );
            js_acts(s, body, indent + 1);
            let _ = writeln!(s, "{pad}}}, {ms}); v[{id}] = h; }}");
        }
        Act::Immediate { id, body } => {
            let _ = writeln!(s, "{pad}v[{id}] = setImmediate(() => {{ t.push('c{id}');");
            js_acts(s, body, indent + 1);
            let _ = writeln!(s, "{pad}}});");
        }
        Act::Tick { id, body } => {
            let _ = writeln!(s, "{pad}process.nextTick(() => {{ t.push('c{id}');");
            js_acts(s, body, indent + 1);
            let _ = writeln!(s, "{pad}}});");
        }
        Act::Microtask { id, body } => {
            let _ = writeln!(s, "{pad}queueMicrotask(() => {{ t.push('c{id}');");
            js_acts(s, body, indent + 1);
            let _ = writeln!(s, "{pad}}});");
        }
        Act::Clear {
            target,
            immediate: false,
        } => {
            let _ = writeln!(s, "{pad}clearTimeout(v[{target}]);");
        }
        Act::Clear {
            target,
            immediate: true,
        } => {
            let _ = writeln!(s, "{pad}clearImmediate(v[{target}]);");
        }
        Act::Refresh { id, target } => {
            let _ = writeln!(
                s,
                "{pad}if (v[{target}] && !once[{id}]) {{ once[{id}] = 1; v[{target}].refresh(); }}"
            );
        }
        Act::Unref { target } => {
            let _ = writeln!(s, "{pad}if (v[{target}]) v[{target}].unref();");
        }
        Act::Ref { target } => {
            let _ = writeln!(s, "{pad}if (v[{target}]) v[{target}].ref();");
        }
        Act::HasRef { target } => {
            let _ = writeln!(
                s,
                "{pad}t.push('h{target}:' + (v[{target}] ? v[{target}].hasRef() : 'none'));"
            );
        }
        Act::Spin { ms } => {
            let _ = writeln!(s, "{pad}spin({ms});");
        }
    }
}

// ------------------------------------------------------------------ eventide

#[derive(Clone, Copy)]
enum Handle {
    Timer(TimerId),
    Immediate(ImmediateId),
}

#[derive(Default)]
struct Env {
    trace: RefCell<Vec<String>>,
    vars: RefCell<HashMap<u32, Handle>>,
    once: RefCell<HashMap<u32, ()>>,
}

/// Runs the program on `lp` and returns its trace.
///
/// Node runs a worker's script from inside its loop's poll phase (so, as in
/// an I/O callback, `setImmediate` comes before `setTimeout(0)`: checked
/// with `node`, 50 runs of 50); eventide runs the program's top level in a
/// pool work callback, which runs in the poll phase too. The main-script
/// order of the first turn (timers first) is pinned by conformance case 06.
pub fn run_eventide(lp: &mut Loop, acts: &[Act]) -> Vec<String> {
    let env = Rc::new(Env::default());
    let (env2, acts) = (env.clone(), acts.to_vec());
    lp.queue_work(|| (), move |lp, _| exec(lp, &env2, &acts));
    lp.run().expect("the loop runs");
    env.trace.take()
}

fn exec(lp: &mut Loop, env: &Rc<Env>, acts: &[Act]) {
    for a in acts {
        exec_one(lp, env, a);
    }
}

/// A callback that logs `c<id>` and runs `body`.
fn callback(env: &Rc<Env>, id: u32, body: &[Act]) -> impl FnMut(&mut Loop) + 'static {
    let env = env.clone();
    let body = body.to_vec();
    move |lp| {
        env.trace.borrow_mut().push(format!("c{id}"));
        exec(lp, &env, &body);
    }
}

fn exec_one(lp: &mut Loop, env: &Rc<Env>, a: &Act) {
    let timer = |target: &u32| match env.vars.borrow().get(target) {
        Some(Handle::Timer(t)) => Some(*t),
        _ => None,
    };
    match a {
        Act::Timeout { id, ms, body } => {
            let t = lp.set_timeout(ms_of(*ms), callback(env, *id, body));
            env.vars.borrow_mut().insert(*id, Handle::Timer(t));
        }
        Act::Interval {
            id,
            ms,
            times,
            body,
        } => {
            let env2 = env.clone();
            let body = body.clone();
            let (id, times) = (*id, *times);
            let mut n = 0;
            let t = lp.set_interval(ms_of(*ms), move |lp, me| {
                env2.trace.borrow_mut().push(format!("c{id}"));
                n += 1;
                if n >= times {
                    lp.clear_timer(me);
                }
                exec(lp, &env2, &body);
            });
            env.vars.borrow_mut().insert(id, Handle::Timer(t));
        }
        Act::Immediate { id, body } => {
            let i = lp.set_immediate(callback(env, *id, body));
            env.vars.borrow_mut().insert(*id, Handle::Immediate(i));
        }
        Act::Tick { id, body } => lp.next_tick(callback(env, *id, body)),
        Act::Microtask { id, body } => lp.queue_microtask(callback(env, *id, body)),
        Act::Clear { target, .. } => {
            let h = env.vars.borrow().get(target).copied();
            match h {
                Some(Handle::Timer(t)) => {
                    lp.clear_timer(t);
                }
                Some(Handle::Immediate(i)) => {
                    lp.clear_immediate(i);
                }
                None => {}
            }
        }
        Act::Refresh { id, target } => {
            if let Some(t) = timer(target)
                && env.once.borrow_mut().insert(*id, ()).is_none()
            {
                lp.refresh_timer(t);
            }
        }
        Act::Unref { target } => {
            let h = env.vars.borrow().get(target).copied();
            match h {
                Some(Handle::Timer(t)) => lp.unref_timer(t),
                Some(Handle::Immediate(i)) => lp.unref_immediate(i),
                None => {}
            }
        }
        Act::Ref { target } => {
            let h = env.vars.borrow().get(target).copied();
            match h {
                Some(Handle::Timer(t)) => lp.ref_timer(t),
                Some(Handle::Immediate(i)) => lp.ref_immediate(i),
                None => {}
            }
        }
        Act::HasRef { target } => {
            let v = match timer(target) {
                Some(t) => lp.timer_has_ref(t).to_string(),
                None => "none".to_owned(),
            };
            env.trace.borrow_mut().push(format!("h{target}:{v}"));
        }
        Act::Spin { ms } => {
            let end = std::time::Instant::now() + ms_of(*ms);
            while std::time::Instant::now() < end {
                std::hint::spin_loop();
            }
        }
    }
}

fn ms_of(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms))
}

// ---------------------------------------------------------------------- node

/// Whether `node` can be run here.
pub fn node_available() -> bool {
    Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The worker-pool driver: reads `[{id, code}]` on stdin, runs each
/// program `runs` times (two workers at a time: the machine's two cores),
/// and prints one JSON line `{"id": .., "traces": [[..], ..]}` per program.
const DRIVER: &str = r#"
const { Worker } = require('worker_threads');
const runs = Number(process.argv[2]);
let input = '';
process.stdin.on('data', d => input += d);
process.stdin.on('end', async () => {
  const programs = JSON.parse(input);
  const jobs = [];
  for (const p of programs) for (let r = 0; r < runs; r++) jobs.push(p);
  const traces = new Map(programs.map(p => [p.id, []]));
  const one = p => new Promise(resolve => {
    const w = new Worker(p.code, { eval: true });
    let got = null;
    const kill = setTimeout(() => w.terminate(), 5000);
    w.on('message', m => { got = m; });
    w.on('error', e => { got = ['error: ' + e.message]; });
    w.on('exit', () => { clearTimeout(kill); resolve(got || ['no trace (killed after 5 s)']); });
  });
  let next = 0;
  async function lane() {
    while (next < jobs.length) {
      const p = jobs[next++];
      traces.get(p.id).push(await one(p));
    }
  }
  await Promise.all([lane(), lane()]);
  for (const p of programs) console.log(JSON.stringify({ id: p.id, traces: traces.get(p.id) }));
});
"#;

/// Runs each program `runs` times with `node`; returns each one's traces
/// (in the order given).
pub fn run_node(programs: &[(u64, String)], runs: u32) -> Vec<Vec<Vec<String>>> {
    let dir = std::env::temp_dir().join(format!("eventide-diff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let driver = dir.join("driver.js");
    std::fs::write(&driver, DRIVER).unwrap();
    let mut input = String::from("[");
    for (i, (id, code)) in programs.iter().enumerate() {
        if i > 0 {
            input.push(',');
        }
        let _ = write!(input, "{{\"id\":{id},\"code\":{}}}", json_string(code));
    }
    input.push(']');
    let mut child = Command::new("node")
        .arg(&driver)
        .arg(runs.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run node");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("node's output");
    assert!(out.status.success(), "node failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut by_id: HashMap<u64, Vec<Vec<String>>> = HashMap::new();
    for line in text.lines() {
        let (id, traces) = parse_line(line);
        by_id.insert(id, traces);
    }
    let _ = std::fs::remove_dir_all(&dir);
    programs
        .iter()
        .map(|(id, _)| by_id.remove(id).expect("a line per program"))
        .collect()
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Parses `{"id":N,"traces":[["a","b"],[..]]}` (the driver's own output:
/// strings without escapes).
fn parse_line(line: &str) -> (u64, Vec<Vec<String>>) {
    let id_at = line.find("\"id\":").expect("an id") + 5;
    let id_end = line[id_at..].find(',').unwrap() + id_at;
    let id = line[id_at..id_end].parse().unwrap();
    let tr_at = line.find("\"traces\":").expect("traces") + 9;
    let body = &line[tr_at..line.len() - 1];
    let body = body
        .trim()
        .strip_prefix('[')
        .unwrap()
        .strip_suffix(']')
        .unwrap();
    let mut traces = Vec::new();
    let mut rest = body;
    while let Some(open) = rest.find('[') {
        let close = rest[open..].find(']').unwrap() + open;
        let inner = &rest[open + 1..close];
        let items = inner
            .split(',')
            .filter(|x| !x.is_empty())
            .map(|x| x.trim_matches('"').to_owned())
            .collect();
        traces.push(items);
        rest = &rest[close + 1..];
    }
    (id, traces)
}

// ------------------------------------------------------------------ shrinking

/// Every program one step smaller than `acts`: one act removed (anywhere
/// in the tree), or a body emptied.
pub fn smaller(acts: &[Act]) -> Vec<Vec<Act>> {
    let mut out = Vec::new();
    for i in 0..acts.len() {
        let mut v = acts.to_vec();
        v.remove(i);
        out.push(v);
        if let Some(body) = body_of(&acts[i]) {
            for b in smaller(body) {
                let mut v = acts.to_vec();
                v[i] = with_body(&acts[i], b);
                out.push(v);
            }
        }
    }
    out
}

fn body_of(a: &Act) -> Option<&Vec<Act>> {
    match a {
        Act::Timeout { body, .. }
        | Act::Interval { body, .. }
        | Act::Immediate { body, .. }
        | Act::Tick { body, .. }
        | Act::Microtask { body, .. } => Some(body),
        _ => None,
    }
}

/// `a` with its body replaced (an act without one comes back as it is).
fn with_body(a: &Act, new: Vec<Act>) -> Act {
    let mut a = a.clone();
    if let Act::Timeout { body, .. }
    | Act::Interval { body, .. }
    | Act::Immediate { body, .. }
    | Act::Tick { body, .. }
    | Act::Microtask { body, .. } = &mut a
    {
        *body = new;
    }
    a
}

/// The size of a program (acts, counted through bodies).
pub fn size(acts: &[Act]) -> usize {
    acts.iter()
        .map(|a| 1 + body_of(a).map_or(0, |b| size(b)))
        .sum()
}
