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
}
