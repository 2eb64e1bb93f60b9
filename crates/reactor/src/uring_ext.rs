//! io_uring-only extras: what the ring was set up with and what the kernel
//! was found to support. Nothing here is needed to use the reactor; it is for
//! diagnostics, benchmarks and tests ([`Reactor::uring_info`](crate::Reactor::uring_info)).

/// How the io_uring backend set itself up, found by probing at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UringInfo {
    /// Submission queue entries.
    pub sq_entries: u32,
    /// Completion queue entries.
    pub cq_entries: u32,
    /// `IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN` were accepted.
    pub defer_taskrun: bool,
    /// `IORING_SETUP_COOP_TASKRUN` was used (the fallback when
    /// `DEFER_TASKRUN` is refused).
    pub coop_taskrun: bool,
    /// Multishot accept is used for [`Op::accept_multi`](crate::Op::accept_multi).
    pub multishot_accept: bool,
    /// Multishot recv from a provided-buffer ring is used for
    /// [`Op::recv_multi`](crate::Op::recv_multi).
    pub multishot_recv: bool,
    /// Size of each provided buffer (and of `recv_multi` buffers on the
    /// single-shot path).
    pub provided_buffer_size: usize,
    /// Number of buffers in the provided-buffer ring (0 without one).
    pub provided_buffers: u16,
    /// Slots of the fixed-file table [`Op::read_file`](crate::Op::read_file)
    /// opens files into (direct descriptors): 0 until the first
    /// `read_file` registers it, and 0 for good where the kernel cannot
    /// (no `IORING_OP_FIXED_FD_INSTALL`, before 6.8), where registering
    /// failed, or with `EVENTIDE_URING_NO_DIRECT` set; `read_file` then
    /// uses ordinary descriptors, as it also does when every slot is
    /// taken.
    pub direct_files: u32,
    /// The wait takes a timeout argument (`IORING_FEAT_EXT_ARG`, 5.11);
    /// without it a timed wait submits a `TIMEOUT` request.
    pub ext_arg: bool,
    /// Cancel by descriptor (`IORING_ASYNC_CANCEL_FD`/`ALL`, 5.19), found
    /// by a test request at setup: a close cancels its descriptor's
    /// operations in one request linked to it. Without it, each operation
    /// is cancelled by itself before the close.
    pub cancel_by_fd: bool,
    /// `IORING_OP_SHUTDOWN` (5.11); without it `shutdown(2)` is called at
    /// submission.
    pub shutdown_op: bool,
    /// The kernel release `EVENTIDE_URING_AS_KERNEL` made the backend act
    /// as (only what that release had is used), as `(major, minor)`.
    pub as_kernel: Option<(u32, u32)>,
}
