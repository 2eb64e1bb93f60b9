//! The io_uring extension: what the ring was set up with, and that the
//! polling backend has none of it.

mod util;

use eventide_reactor::{BackendKind, Reactor};

conformance!(uring_info_describes_the_ring_only_on_io_uring);

fn uring_info_describes_the_ring_only_on_io_uring(r: &mut Reactor) {
    match r.backend() {
        BackendKind::Poll | BackendKind::Epoll => assert!(r.uring_info().is_none()),
        BackendKind::Uring => {
            let info = r.uring_info().expect("io_uring details");
            eprintln!("{info:?}");
            assert!(info.sq_entries >= 1 && info.cq_entries >= info.sq_entries);
            assert!(!(info.defer_taskrun && info.coop_taskrun));
            assert_eq!(info.multishot_recv, info.provided_buffers > 0);
            if !info.multishot_recv {
                eprintln!("note: this kernel has no multishot recv; recv_multi runs single-shot");
            }
        }
    }
}
