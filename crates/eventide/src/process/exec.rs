//! `exec_file`: Node's `child_process.execFile`, a child's output
//! collected whole, with a max buffer and a timeout.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use super::{Child, ExitStatus, SpawnOptions, Stdio};
use crate::event_loop::Loop;
use crate::net::Pipe;
use crate::timers::TimerId;
use crate::{Error, Result};

/// Node's default `maxBuffer` for `execFile` (1 MiB).
pub const DEFAULT_MAX_BUFFER: usize = 1024 * 1024;

/// How [`Loop::exec_file`] collects (Node's `execFile` options).
#[derive(Clone, Copy, Debug)]
pub struct ExecOptions {
    /// The most bytes kept of stdout, and of stderr (Node's `maxBuffer`,
    /// 1 MiB by default): a child that writes more is killed with
    /// `kill_signal`, and the result is [`Error::MaxBuffer`].
    pub max_buffer: usize,
    /// Kill the child with `kill_signal` if it runs longer (Node's
    /// `timeout`; `None`, the default, waits for ever).
    pub timeout: Option<Duration>,
    /// The signal of the timeout and of the max buffer (Node's
    /// `killSignal`, `SIGTERM` by default).
    pub kill_signal: i32,
}

impl Default for ExecOptions {
    fn default() -> ExecOptions {
        ExecOptions {
            max_buffer: DEFAULT_MAX_BUFFER,
            timeout: None,
            kill_signal: libc::SIGTERM,
        }
    }
}

/// What [`Loop::exec_file`] collected (Node's `execFile` callback's
/// `stdout`, `stderr`, and its error's `code`, `signal`, `killed`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// How the child ended. A nonzero code is not an error here (Node
    /// makes it one, `Command failed: ...`): check [`ExitStatus::success`].
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
    /// Whether the timeout killed it (Node's `err.killed`).
    pub killed: bool,
}

type OnDone = Box<dyn FnOnce(&mut Loop, Result<Output>)>;

struct Collect {
    out: [Vec<u8>; 2],
    over: Option<&'static str>,
    killed: bool,
    timer: Option<TimerId>,
    done: Option<OnDone>,
}

impl Loop {
    /// Node's `child_process.execFile`: runs the child with its stdout and
    /// stderr piped, collects both, and calls `on_done` once it has exited
    /// and both pipes closed (Node's `'close'`) with its [`Output`]. A
    /// child still running after `exec.timeout` is killed with
    /// `exec.kill_signal` (`killed` is then `true`); one that writes more
    /// than `exec.max_buffer` bytes to either is killed the same way and
    /// the result is [`Error::MaxBuffer`] (`stdout maxBuffer length
    /// exceeded`, as Node's). The child is returned for its pid, its
    /// stdin (if piped in `options`) and [`Child::kill`].
    ///
    /// # Errors
    ///
    /// As [`Loop::spawn`].
    pub fn exec_file(
        &mut self,
        options: SpawnOptions,
        exec: ExecOptions,
        on_done: impl FnOnce(&mut Loop, Result<Output>) + 'static,
    ) -> Result<Child> {
        let options = options.stdout(Stdio::Pipe).stderr(Stdio::Pipe);
        let child = self.spawn(options, |_, _| {})?;
        let collect = Rc::new(RefCell::new(Collect {
            out: [Vec::new(), Vec::new()],
            over: None,
            killed: false,
            timer: None,
            done: Some(Box::new(on_done)),
        }));
        let pipes: [(Option<Pipe>, &'static str); 2] =
            [(child.stdout(), "stdout"), (child.stderr(), "stderr")];
        for (i, (pipe, name)) in pipes.into_iter().enumerate() {
            let Some(pipe) = pipe else { continue };
            let c = Rc::clone(&collect);
            let killer = child.clone();
            pipe.read_start(
                self,
                move |lp, pipe, data| {
                    let mut c = c.borrow_mut();
                    let room = exec.max_buffer.saturating_sub(c.out[i].len());
                    if data.len() > room {
                        c.out[i].extend_from_slice(&data[..room]);
                        if c.over.is_none() {
                            c.over = Some(name);
                            let _ = killer.kill(exec.kill_signal);
                        }
                        drop(c);
                        // Nothing more is kept: the pipe closes, as Node
                        // destroys the child's stdio.
                        pipe.close(lp);
                        return;
                    }
                    c.out[i].extend_from_slice(data);
                },
                |_, _, _| {},
            );
        }
        if let Some(timeout) = exec.timeout {
            let c = Rc::clone(&collect);
            let killer = child.clone();
            let timer = self.set_timeout(timeout, move |_| {
                if killer.kill(exec.kill_signal).is_ok() {
                    c.borrow_mut().killed = true;
                }
            });
            collect.borrow_mut().timer = Some(timer);
        }
        let c = Rc::clone(&collect);
        child.on_close(move |lp, status| {
            let (done, timer, result) = {
                let mut c = c.borrow_mut();
                let result = match c.over {
                    Some(stream) => Err(Error::MaxBuffer { stream }),
                    None => Ok(Output {
                        status,
                        stdout: std::mem::take(&mut c.out[0]),
                        stderr: std::mem::take(&mut c.out[1]),
                        killed: c.killed,
                    }),
                };
                (c.done.take(), c.timer.take(), result)
            };
            if let Some(timer) = timer {
                lp.clear_timer(timer);
            }
            if let Some(done) = done {
                done(lp, result);
            }
        });
        Ok(child)
    }
}
