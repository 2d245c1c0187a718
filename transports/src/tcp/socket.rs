//! The plain-socket backend: nonblocking sockets multiplexed with `poll(2)`.
//!
//! Taken when io_uring is refused (a container's seccomp answers `EPERM`, old kernels
//! `ENOSYS`) or forced with `DMSC_TRANSPORT=socket`.

use super::conns::Mesh;
use super::sockopt::set_nonblocking;
use crate::wake::EventFd;
use dmsc_core::engine::{Completion, Token, Transport, Waker};
use dmsc_core::error::{Error, Result};
use dmsc_core::wire::FrameHeader;
use dmsc_core::Rank;
use std::sync::Arc;
use std::time::Duration;

/// TCP over nonblocking sockets and `poll(2)`.
pub struct SocketTransport {
    mesh: Mesh,
    wake: Arc<EventFd>,
    pollfds: Vec<libc::pollfd>,
    /// A companion transport's descriptors whose readability ends a wait
    /// ([`Transport::watch_fds`]).
    watch: Vec<std::os::fd::RawFd>,
}

impl SocketTransport {
    pub(crate) fn new(mut mesh: Mesh) -> Result<SocketTransport> {
        for c in mesh.conns.iter().flatten() {
            set_nonblocking(c.fd(), true)?;
        }
        mesh.nonblocking = true;
        let wake = Arc::new(EventFd::new()?);
        mesh.set_waker(wake.clone());
        Ok(SocketTransport {
            mesh,
            wake,
            pollfds: Vec::new(),
            watch: Vec::new(),
        })
    }

    /// Move bytes on every connection until the kernel would block.
    fn pump(&mut self, out: &mut Vec<Completion>) {
        for i in 0..self.mesh.conns.len() {
            let Some(c) = self.mesh.conns[i].as_deref_mut() else {
                continue;
            };
            while c.has_send() && c.prepare_send() {
                // SAFETY: send_msg describes iovecs into memory valid per the post_send
                // contract or owned by the connection.
                let n = unsafe {
                    libc::sendmsg(c.fd(), &c.send_msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
                };
                if n < 0 {
                    let e = errno();
                    if e == libc::EAGAIN || e == libc::EINTR {
                        break;
                    }
                    c.on_error(e, "sendmsg", out);
                    break;
                }
                c.on_sent(n as usize, out);
            }
            while let Some(c) = self.mesh.conns[i].as_deref_mut() {
                let (ready, _) = c.prepare_recv();
                if !ready {
                    break;
                }
                // SAFETY: recv_msg describes iovecs into a validated destination or the
                // connection's own header buffer.
                let n = unsafe { libc::recvmsg(c.fd(), &mut c.recv_msg, libc::MSG_DONTWAIT) };
                if n < 0 {
                    let e = errno();
                    if e == libc::EAGAIN || e == libc::EINTR {
                        break;
                    }
                    c.on_error(e, "recvmsg", out);
                    break;
                }
                self.mesh.on_received(i, n as usize, out);
                if n == 0 {
                    break;
                }
            }
        }
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

impl Transport for SocketTransport {
    fn name(&self) -> &'static str {
        "tcp-socket"
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
        self.pump(out);
        let next = self.mesh.progress(out);
        if self.mesh.spray.is_some() {
            // Progress queued units: write them now.
            self.pump(out);
        }
        if out.len() > before || timeout.is_zero() {
            return Ok(());
        }
        let timeout = match next {
            Some(t) => timeout.min(t.saturating_duration_since(std::time::Instant::now())),
            None => timeout,
        };
        self.pollfds.clear();
        self.pollfds.push(libc::pollfd {
            fd: self.wake.raw(),
            events: libc::POLLIN,
            revents: 0,
        });
        for &fd in &self.watch {
            self.pollfds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        for c in self.mesh.conns.iter().flatten() {
            let mut ev = 0;
            if c.wants_recv() {
                ev |= libc::POLLIN;
            }
            if c.has_send() {
                ev |= libc::POLLOUT;
            }
            self.pollfds.push(libc::pollfd {
                fd: if ev == 0 { -1 } else { c.fd() },
                events: ev,
                revents: 0,
            });
        }
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: pollfds is a valid array of pollfd of the given length.
        let r = unsafe { libc::poll(self.pollfds.as_mut_ptr(), self.pollfds.len() as _, ms) };
        if r < 0 && errno() != libc::EINTR {
            return Err(Error::io("poll", &std::io::Error::last_os_error()));
        }
        if self.pollfds[0].revents != 0 {
            self.wake.drain();
        }
        self.pump(out);
        if self.mesh.spray.is_some() {
            self.mesh.progress(out);
            self.pump(out);
        }
        Ok(())
    }

    fn cancel_all(&mut self) {
        // Nothing is in the kernel's hands between calls: dropping the queues is enough.
        self.mesh.cancel();
    }

    fn watch_fds(&mut self, fds: &[std::os::fd::RawFd]) -> bool {
        self.watch.extend_from_slice(fds);
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
