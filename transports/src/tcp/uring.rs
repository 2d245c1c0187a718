//! The io_uring backend: `sendmsg`/`recvmsg` submitted through an io_uring.
//!
//! Each connection has at most one send and one receive in the kernel at a time (a TCP
//! stream is ordered, so more would only race), and an eventfd read is kept armed so that
//! another thread can interrupt a blocking wait. `user_data` packs the connection index and
//! the operation kind, in the manner of tokio's io_uring driver keeping a slab index there.
//! The iovecs and `msghdr`s the kernel reads live in the boxed connections, which stay put
//! until every submitted operation has completed: [`Transport::cancel_all`] and `Drop`
//! cancel in-flight operations and wait for their completions before releasing anything.

use super::conns::Mesh;
use super::sockopt::set_nonblocking;
use crate::wake::EventFd;
use dmsc_core::engine::{Completion, Token, Transport, Waker};
use dmsc_core::error::{Error, Result};
use dmsc_core::wire::FrameHeader;
use dmsc_core::Rank;
use io_uring::{opcode, types, IoUring};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KIND_SEND: u64 = 0;
const KIND_RECV: u64 = 1;
const KIND_WAKE: u64 = 2;
const KIND_CANCEL: u64 = 3;

/// TCP over io_uring.
pub struct UringTransport {
    ring: IoUring,
    mesh: Mesh,
    wake: Arc<EventFd>,
    wake_buf: Box<u64>,
    wake_armed: bool,
    /// Descriptors of a companion transport whose readability ends a wait (see
    /// [`Transport::watch_fds`]), each with whether its poll is in the kernel. Their
    /// `user_data` is `KIND_WAKE` with index `1 + i` (index 0 is the eventfd's read).
    watch: Vec<(std::os::fd::RawFd, bool)>,
}

/// Try to create a ring; `Err` carries the errno when the kernel refuses.
///
/// Task work (the completion of a receive whose data arrived) is run cooperatively at our next
/// `io_uring_enter`, flagged in the SQ ring, rather than by interrupting the thread: the engine
/// enters the kernel on every poll anyway, and interrupts cost latency on busy cores. Kernels
/// older than 5.19 reject the flags; the ring is then created without them.
pub(crate) fn probe_ring(entries: u32) -> std::io::Result<IoUring> {
    match IoUring::builder()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .build(entries)
    {
        Ok(r) => Ok(r),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::builder().build(entries),
        Err(e) => Err(e),
    }
}

impl UringTransport {
    pub(crate) fn new(mut mesh: Mesh, ring: IoUring) -> Result<UringTransport> {
        for c in mesh.conns.iter().flatten() {
            set_nonblocking(c.fd(), false)?;
        }
        mesh.nonblocking = false;
        let wake = Arc::new(EventFd::new()?);
        mesh.set_waker(wake.clone());
        Ok(UringTransport {
            ring,
            mesh,
            wake,
            wake_buf: Box::new(0),
            wake_armed: false,
            watch: Vec::new(),
        })
    }

    fn push(&mut self, sqe: &io_uring::squeue::Entry) -> Result<()> {
        // SAFETY: every entry pushed references memory that outlives its completion
        // (connection-owned msghdr/iovecs, engine-owned payloads, the boxed wake buffer).
        unsafe {
            while self.ring.submission().push(sqe).is_err() {
                self.ring
                    .submit()
                    .map_err(|e| Error::io("io_uring submit", &e))?;
            }
        }
        Ok(())
    }

    /// Submit a send and/or receive for every idle connection with work.
    fn arm(&mut self) -> Result<()> {
        if !self.wake_armed {
            let e = opcode::Read::new(
                types::Fd(self.wake.raw()),
                &mut *self.wake_buf as *mut u64 as *mut u8,
                8,
            )
            .build()
            .user_data(KIND_WAKE);
            self.push(&e)?;
            self.wake_armed = true;
        }
        for w in 0..self.watch.len() {
            if !self.watch[w].1 {
                let e = opcode::PollAdd::new(types::Fd(self.watch[w].0), libc::POLLIN as u32)
                    .build()
                    .user_data((((w + 1) as u64) << 2) | KIND_WAKE);
                self.push(&e)?;
                self.watch[w].1 = true;
            }
        }
        for i in 0..self.mesh.conns.len() {
            let Some(c) = self.mesh.conns[i].as_deref_mut() else {
                continue;
            };
            if !c.send_busy && c.has_send() && c.prepare_send() {
                let e = opcode::SendMsg::new(types::Fd(c.fd()), &c.send_msg)
                    .flags(libc::MSG_NOSIGNAL as u32)
                    .build()
                    .user_data(((i as u64) << 2) | KIND_SEND);
                c.send_busy = true;
                self.push(&e)?;
            }
            let Some(c) = self.mesh.conns[i].as_deref_mut() else {
                continue;
            };
            if !c.recv_busy {
                let (ready, waitall) = c.prepare_recv();
                if ready {
                    let flags = if waitall { libc::MSG_WAITALL } else { 0 };
                    let e = opcode::RecvMsg::new(types::Fd(c.fd()), &mut c.recv_msg)
                        .flags(flags as u32)
                        .build()
                        .user_data(((i as u64) << 2) | KIND_RECV);
                    c.recv_busy = true;
                    self.push(&e)?;
                }
            }
        }
        Ok(())
    }

    fn wait(&mut self, timeout: Duration) -> Result<()> {
        let r = if timeout.is_zero() {
            self.ring.submit()
        } else {
            let ts = types::Timespec::new()
                .sec(timeout.as_secs())
                .nsec(timeout.subsec_nanos());
            let args = types::SubmitArgs::new().timespec(&ts);
            self.ring.submitter().submit_with_args(1, &args)
        };
        match r {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(Error::io("io_uring_enter", &e)),
        }
    }

    /// Apply every completion in the queue.
    fn reap(&mut self, out: &mut Vec<Completion>) {
        let cqes: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (ud, res) in cqes {
            let kind = ud & 3;
            let i = (ud >> 2) as usize;
            match kind {
                KIND_WAKE if i == 0 => {
                    self.wake_armed = false;
                }
                KIND_WAKE => {
                    if let Some(w) = self.watch.get_mut(i - 1) {
                        w.1 = false;
                    }
                }
                KIND_CANCEL => {}
                KIND_SEND => {
                    let Some(c) = self.mesh.conns.get_mut(i).and_then(|c| c.as_deref_mut()) else {
                        continue;
                    };
                    c.send_busy = false;
                    if res >= 0 {
                        c.on_sent(res as usize, out);
                    } else if !matches!(-res, libc::EAGAIN | libc::EINTR | libc::ECANCELED) {
                        c.on_error(-res, "sendmsg", out);
                    }
                }
                _ => {
                    let Some(c) = self.mesh.conns.get_mut(i).and_then(|c| c.as_deref_mut()) else {
                        continue;
                    };
                    c.recv_busy = false;
                    if res >= 0 {
                        self.mesh.on_received(i, res as usize, out);
                    } else if !matches!(-res, libc::EAGAIN | libc::EINTR | libc::ECANCELED) {
                        c.on_error(-res, "recvmsg", out);
                    }
                }
            }
        }
    }

    /// Cancel everything in the kernel and block until it has all completed: the kernel may
    /// read the iovecs, headers and payloads of a submitted operation until its completion
    /// arrives, so returning earlier would hand memory it still uses back to the engine and
    /// the caller. A cancel that does not take within [`SHUTDOWN_AFTER`] is followed by a
    /// `shutdown(2)` of the busy sockets, which completes any pending send or receive on
    /// them; if the ring itself fails, or the kernel still holds operations after
    /// [`ABORT_AFTER`], the process aborts rather than let that memory be reused.
    fn quiesce(&mut self) {
        let mut sink = Vec::new();
        let mut ids = Vec::new();
        for (i, c) in self.mesh.conns.iter().enumerate() {
            let Some(c) = c.as_deref() else { continue };
            if c.send_busy {
                ids.push(((i as u64) << 2) | KIND_SEND);
            }
            if c.recv_busy {
                ids.push(((i as u64) << 2) | KIND_RECV);
            }
        }
        if self.wake_armed {
            ids.push(KIND_WAKE);
        }
        for (w, &(_, armed)) in self.watch.iter().enumerate() {
            if armed {
                ids.push((((w + 1) as u64) << 2) | KIND_WAKE);
            }
        }
        for id in ids {
            let e = opcode::AsyncCancel::new(id).build().user_data(KIND_CANCEL);
            if let Err(e) = self.push(&e) {
                quiesce_failed(&format!("submitting a cancel: {e}"));
            }
        }
        let start = Instant::now();
        let mut shut = false;
        let busy = |m: &Mesh| m.conns.iter().flatten().any(|c| c.send_busy || c.recv_busy);
        let watching = |w: &[(std::os::fd::RawFd, bool)]| w.iter().any(|x| x.1);
        while busy(&self.mesh) || self.wake_armed || watching(&self.watch) {
            if let Err(e) = self.wait(Duration::from_millis(10)) {
                quiesce_failed(&format!("waiting for cancelled operations: {e}"));
            }
            self.reap(&mut sink);
            let waited = start.elapsed();
            if !shut && waited >= SHUTDOWN_AFTER {
                shut = true;
                for c in self.mesh.conns.iter().flatten() {
                    if c.send_busy || c.recv_busy {
                        // SAFETY: shutdown on a socket this transport owns; the descriptor
                        // stays open (and its number reserved) until the connection drops.
                        unsafe { libc::shutdown(c.fd(), libc::SHUT_RDWR) };
                    }
                }
                if self.wake_armed {
                    // The wake read completes once the eventfd has a value.
                    use dmsc_core::engine::Waker as _;
                    self.wake.wake();
                }
            }
            if waited >= ABORT_AFTER {
                quiesce_failed(&format!(
                    "the kernel still holds operations {:.0} s after they were cancelled",
                    waited.as_secs_f64()
                ));
            }
        }
    }
}

/// When a cancel has not taken, shut the busy sockets down.
const SHUTDOWN_AFTER: Duration = Duration::from_secs(1);
/// When nothing has made the kernel let go, give up on the process.
const ABORT_AFTER: Duration = Duration::from_secs(30);

/// The kernel may still use memory that the caller is about to free or reuse: no error can
/// be returned safely from here, so stop the process.
fn quiesce_failed(what: &str) -> ! {
    let line = format!(
        "fatal: cannot withdraw io_uring operations ({what}); aborting rather than letting \
         the kernel write into memory that is handed back"
    );
    log::error!(target: dmsc_core::subsys::NET, "{line}");
    // The process is about to end: with no logger to carry the reason, print it anyway.
    if log::max_level() < log::LevelFilter::Error {
        eprintln!("dmsc: {line}");
    }
    log::logger().flush();
    std::process::abort()
}

impl Transport for UringTransport {
    fn name(&self) -> &'static str {
        "tcp-uring"
    }

    unsafe fn post_send(
        &mut self,
        peer: Rank,
        header: &FrameHeader,
        data: *const u8,
        token: Token,
    ) -> Result<()> {
        self.mesh.post_send(peer, header, data, token)
    }

    unsafe fn post_recv(
        &mut self,
        peer: Rank,
        expect: &FrameHeader,
        dst: *mut u8,
        token: Token,
    ) -> Result<()> {
        self.mesh.post_recv(peer, expect, dst, token)
    }

    fn send_control(&mut self, peer: Rank, payload: &[u8]) {
        self.mesh.send_control(peer, payload);
    }

    fn poll(&mut self, out: &mut Vec<Completion>, timeout: Duration) -> Result<()> {
        let before = out.len();
        self.reap(out);
        let next = self.mesh.progress(out);
        self.arm()?;
        if out.len() > before {
            self.ring
                .submit()
                .map_err(|e| Error::io("io_uring submit", &e))?;
            return Ok(());
        }
        let timeout = match next {
            Some(t) => timeout.min(t.saturating_duration_since(Instant::now())),
            None => timeout,
        };
        self.wait(timeout)?;
        self.reap(out);
        self.mesh.progress(out);
        // Re-arm right away so the kernel keeps working while the engine computes.
        self.arm()?;
        self.ring
            .submit()
            .map_err(|e| Error::io("io_uring submit", &e))?;
        Ok(())
    }

    fn cancel_all(&mut self) {
        self.quiesce();
        self.mesh.cancel();
    }

    fn watch_fds(&mut self, fds: &[std::os::fd::RawFd]) -> bool {
        self.watch.extend(fds.iter().map(|&fd| (fd, false)));
        true
    }

    fn waker(&self) -> Arc<dyn Waker> {
        self.wake.clone()
    }

    fn describe_peer(&self, peer: Rank) -> Option<String> {
        self.mesh.describe_peer(peer)
    }

    fn path_metrics(&self) -> Option<dmsc_core::engine::PathMetricsHandle> {
        self.mesh.path_metrics()
    }
}

impl Drop for UringTransport {
    fn drop(&mut self) {
        self.quiesce();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::{Conn, Role};
    use dmsc_core::wire::FrameKind;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;

    /// Rank 0 of two over a socket pair whose far end never reads nor writes.
    fn transport() -> (UringTransport, UnixStream, UnixStream) {
        let (d0, d1) = UnixStream::pair().unwrap();
        let (c0, c1) = UnixStream::pair().unwrap();
        let mesh = Mesh {
            conns: vec![
                Some(Conn::new(OwnedFd::from(d0), 1, Role::Data)),
                Some(Conn::new(OwnedFd::from(c0), 1, Role::Control)),
            ],
            data_of: vec![None, Some(0)],
            control_of: vec![None, Some(1)],
            spray: None,
            nonblocking: false,
        };
        let ring = probe_ring(16).expect("io_uring");
        (UringTransport::new(mesh, ring).unwrap(), d1, c1)
    }

    fn header(len: u32) -> FrameHeader {
        FrameHeader::plain(FrameKind::Data, 0, len)
    }

    fn busy(t: &UringTransport) -> bool {
        t.mesh
            .conns
            .iter()
            .flatten()
            .any(|c| c.send_busy || c.recv_busy)
            || t.wake_armed
    }

    /// A receive and a send the kernel cannot finish (nothing arrives; the peer's buffer is
    /// full): cancel_all returns only once the kernel has let go of both.
    #[test]
    fn cancel_all_returns_only_when_the_kernel_holds_nothing() {
        let (mut t, _d1, _c1) = transport();
        let mut dst = vec![0u8; 1 << 16];
        let src = vec![7u8; 64 << 20];
        // SAFETY: both buffers outlive the transport's hold on them (cancel_all below).
        unsafe {
            t.post_recv(1, &header(1 << 16), dst.as_mut_ptr(), 1)
                .unwrap();
            t.post_send(1, &header(src.len() as u32), src.as_ptr(), 2)
                .unwrap();
        }
        let mut out = Vec::new();
        for _ in 0..20 {
            t.poll(&mut out, Duration::from_millis(5)).unwrap();
        }
        assert!(busy(&t), "the test needs operations in the kernel");
        assert!(out
            .iter()
            .all(|c| !matches!(c, Completion::Sent { .. } | Completion::Received { .. })));
        t.cancel_all();
        assert!(
            !busy(&t),
            "cancel_all returned while the kernel still held operations"
        );
        drop(src);
        drop(dst);
    }
}
