//! The per-connection framing state machine shared by the io_uring and plain-socket backends.
//!
//! A connection carries frames (a 64-byte [`FrameHeader`] and its payload) in each direction.
//! The backends only move bytes: they ask [`Conn::send_iov`] / [`Conn::recv_iov`] where the
//! next bytes go, perform one `sendmsg`/`recvmsg` (directly or through io_uring), and report
//! the byte count back with [`Conn::on_sent`] / [`Conn::on_received`]. The state machine turns
//! byte counts into [`Completion`]s, checks every arriving header against the receive it
//! matches, and never writes a payload before its header has been validated.
//!
//! The iovecs and the `msghdr` live inside the boxed connection, so their addresses stay
//! fixed while the kernel (io_uring) holds them.

use dmsc_core::engine::{Completion, Token};
use dmsc_core::error::Error;
use dmsc_core::wire::{FrameHeader, FrameKind, HEADER_LEN, MAX_CONTROL};
use dmsc_core::Rank;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Frames whose payload is at most this long are read together with their header in one
/// `recvmsg` (one system call per small message).
const SMALL_FRAME: usize = 4096;

/// What a connection is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Data frames of collectives and point-to-point messages.
    Data,
    /// Control messages.
    Control,
}

struct SendItem {
    hdr: [u8; HEADER_LEN],
    data: *const u8,
    len: usize,
    /// Owned payload of a control message (then `data` points into it).
    owned: Option<Vec<u8>>,
    token: Option<Token>,
    done: usize,
}

struct RecvItem {
    expect: FrameHeader,
    dst: *mut u8,
    token: Token,
}

/// One TCP connection to a peer.
pub(crate) struct Conn {
    fd: OwnedFd,
    pub(crate) peer: Rank,
    pub(crate) role: Role,
    sendq: VecDeque<SendItem>,
    recvq: VecDeque<RecvItem>,
    rhdr: [u8; HEADER_LEN],
    /// Bytes of the current incoming frame received so far (header included).
    rgot: usize,
    /// The current incoming frame's header, once validated.
    cur: Option<FrameHeader>,
    /// Whether the payload of the current small frame is being read together with its header.
    scatter: bool,
    ctrl_buf: Vec<u8>,
    pub(crate) dead: bool,
    /// The peer closed its end cleanly while nothing was expected from it.
    eof: bool,
    pub(crate) send_iov: [libc::iovec; 2],
    pub(crate) recv_iov: [libc::iovec; 2],
    pub(crate) send_msg: libc::msghdr,
    pub(crate) recv_msg: libc::msghdr,
}

// SAFETY: the raw pointers inside point to memory whose validity the engine guarantees
// (Transport::post_* contracts) or to this connection's own buffers; a Conn is only used by
// the thread that currently drives its transport.
unsafe impl Send for Conn {}

impl Conn {
    pub(crate) fn new(fd: OwnedFd, peer: Rank, role: Role) -> Box<Conn> {
        // SAFETY: msghdr is plain old data; all-zero is a valid empty value.
        let zero_msg: libc::msghdr = unsafe { std::mem::zeroed() };
        let zero_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Box::new(Conn {
            fd,
            peer,
            role,
            sendq: VecDeque::new(),
            recvq: VecDeque::new(),
            rhdr: [0; HEADER_LEN],
            rgot: 0,
            cur: None,
            scatter: false,
            ctrl_buf: Vec::new(),
            dead: false,
            eof: false,
            send_iov: [zero_iov; 2],
            recv_iov: [zero_iov; 2],
            send_msg: zero_msg,
            recv_msg: zero_msg,
        })
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Queue a data frame.
    pub(crate) fn push_send(&mut self, header: &FrameHeader, data: *const u8, token: Token) {
        let mut hdr = [0u8; HEADER_LEN];
        header.encode(&mut hdr);
        self.sendq.push_back(SendItem {
            hdr,
            data,
            len: header.len as usize,
            owned: None,
            token: Some(token),
            done: 0,
        });
    }

    /// Queue a control frame (payload copied).
    pub(crate) fn push_control(&mut self, payload: &[u8]) {
        let payload = payload[..payload.len().min(MAX_CONTROL as usize)].to_vec();
        let mut hdr = [0u8; HEADER_LEN];
        FrameHeader::plain(FrameKind::Control, 0, payload.len() as u32).encode(&mut hdr);
        let data = payload.as_ptr();
        self.sendq.push_back(SendItem {
            hdr,
            data,
            len: payload.len(),
            owned: Some(payload),
            token: None,
            done: 0,
        });
    }

    /// Queue a receive of the next data frame.
    pub(crate) fn push_recv(&mut self, expect: &FrameHeader, dst: *mut u8, token: Token) {
        self.recvq.push_back(RecvItem {
            expect: *expect,
            dst,
            token,
        });
    }

    pub(crate) fn has_send(&self) -> bool {
        !self.dead && !self.sendq.is_empty()
    }

    /// True when the connection wants bytes: always for control, when a receive is posted
    /// (or a frame is half read) for data.
    pub(crate) fn wants_recv(&self) -> bool {
        !self.dead
            && ((self.role == Role::Control && !self.eof)
                || self.rgot > 0
                || !self.recvq.is_empty())
    }

    /// Fill `send_iov`/`send_msg` for the next bytes to send. Returns false when idle.
    pub(crate) fn prepare_send(&mut self) -> bool {
        let Some(it) = self.sendq.front() else {
            return false;
        };
        let mut n = 0;
        if it.done < HEADER_LEN {
            self.send_iov[n] = libc::iovec {
                iov_base: it.hdr[it.done..].as_ptr() as *mut libc::c_void,
                iov_len: HEADER_LEN - it.done,
            };
            n += 1;
        }
        let data_done = it.done.saturating_sub(HEADER_LEN);
        if it.len > data_done {
            self.send_iov[n] = libc::iovec {
                // SAFETY: data_done < len, inside the posted payload.
                iov_base: unsafe { it.data.add(data_done) } as *mut libc::c_void,
                iov_len: it.len - data_done,
            };
            n += 1;
        }
        self.send_msg.msg_iov = self.send_iov.as_mut_ptr();
        self.send_msg.msg_iovlen = n as _;
        true
    }

    /// Account `n` bytes sent; completed data frames are appended to `out`.
    pub(crate) fn on_sent(&mut self, mut n: usize, out: &mut Vec<Completion>) {
        while n > 0 {
            let Some(it) = self.sendq.front_mut() else {
                return;
            };
            let total = HEADER_LEN + it.len;
            let step = n.min(total - it.done);
            it.done += step;
            n -= step;
            if it.done == total {
                let it = self.sendq.pop_front().expect("front exists");
                drop(it.owned);
                if let Some(token) = it.token {
                    out.push(Completion::Sent { token });
                }
            }
        }
        // Zero-length frames already fully sent with their header.
        while let Some(it) = self.sendq.front() {
            if it.done == HEADER_LEN + it.len && it.done > 0 {
                let it = self.sendq.pop_front().expect("front exists");
                if let Some(token) = it.token {
                    out.push(Completion::Sent { token });
                }
            } else {
                break;
            }
        }
    }

    /// Fill `recv_iov`/`recv_msg` for the next bytes to read. Returns (ready, waitall).
    pub(crate) fn prepare_recv(&mut self) -> (bool, bool) {
        if !self.wants_recv() {
            return (false, false);
        }
        let n;
        let waitall;
        if self.rgot < HEADER_LEN {
            self.recv_iov[0] = libc::iovec {
                iov_base: self.rhdr[self.rgot..].as_mut_ptr() as *mut libc::c_void,
                iov_len: HEADER_LEN - self.rgot,
            };
            let mut k = 1;
            // A small expected frame: read its payload in the same call.
            self.scatter = false;
            if self.role == Role::Data {
                if let Some(r) = self.recvq.front() {
                    let len = r.expect.len as usize;
                    if len > 0 && len <= SMALL_FRAME {
                        self.recv_iov[1] = libc::iovec {
                            iov_base: r.dst as *mut libc::c_void,
                            iov_len: len,
                        };
                        k = 2;
                        self.scatter = true;
                    }
                }
            }
            n = k;
            waitall = !self.scatter;
        } else {
            let cur = self.cur.expect("header validated before payload");
            let got = self.rgot - HEADER_LEN;
            let len = cur.len as usize;
            let base = match self.role {
                Role::Control => self.ctrl_buf.as_mut_ptr(),
                Role::Data => self.recvq.front().expect("matched receive").dst,
            };
            self.recv_iov[0] = libc::iovec {
                // SAFETY: got < len, inside the destination of len bytes.
                iov_base: unsafe { base.add(got) } as *mut libc::c_void,
                iov_len: len - got,
            };
            n = 1;
            waitall = true;
        }
        self.recv_msg.msg_iov = self.recv_iov.as_mut_ptr();
        self.recv_msg.msg_iovlen = n as _;
        (true, waitall)
    }

    /// Account `n` bytes received (0 = end of stream).
    pub(crate) fn on_received(&mut self, n: usize, out: &mut Vec<Completion>) {
        if n == 0 {
            // A peer that finished and exited closes its connections; that is only an error
            // when something is still expected from it. The end of a control connection is
            // always reported: the engine tells a goodbye from a death.
            if self.role == Role::Data && self.rgot == 0 && self.recvq.is_empty() {
                self.eof = true;
            } else {
                self.fail(out, "connection closed by the peer".into());
            }
            return;
        }
        let before = self.rgot;
        self.rgot += n;
        if before < HEADER_LEN && self.rgot >= HEADER_LEN {
            if let Err(e) = self.on_header(out) {
                self.fail_with(out, e);
                return;
            }
            if self.dead {
                return;
            }
        }
        self.maybe_finish(out);
    }

    fn on_header(&mut self, out: &mut Vec<Completion>) -> Result<(), Error> {
        let h = FrameHeader::decode(&self.rhdr)?;
        match (self.role, h.kind) {
            (Role::Control, FrameKind::Control) => {
                self.ctrl_buf.clear();
                self.ctrl_buf.resize(h.len as usize, 0);
                // Bytes read beyond the header in scatter mode cannot happen on control.
            }
            (Role::Data, FrameKind::Data | FrameKind::DataRef) => {
                let r = self
                    .recvq
                    .front()
                    .ok_or_else(|| Error::protocol("data frame arrived with no receive posted"))?;
                if !h.matches(&r.expect) {
                    let token = r.token;
                    out.push(Completion::BadHeader {
                        token,
                        peer: self.peer,
                        got: h,
                    });
                    self.dead = true;
                    return Ok(());
                }
                if self.scatter && (h.len as usize) > SMALL_FRAME {
                    return Err(Error::internal("scatter read of a large frame"));
                }
            }
            (role, kind) => {
                return Err(Error::protocol(format!(
                    "unexpected {kind:?} frame on a {role:?} connection"
                )))
            }
        }
        self.cur = Some(h);
        Ok(())
    }

    fn maybe_finish(&mut self, out: &mut Vec<Completion>) {
        let Some(cur) = self.cur else { return };
        if self.rgot < HEADER_LEN + cur.len as usize {
            return;
        }
        if self.rgot > HEADER_LEN + cur.len as usize {
            // Only possible when a scatter read ran past a frame shorter than expected,
            // which the header check rules out.
            self.fail_with(out, Error::internal("read past the end of a frame"));
            return;
        }
        match self.role {
            Role::Control => out.push(Completion::Control {
                peer: self.peer,
                payload: std::mem::take(&mut self.ctrl_buf),
            }),
            Role::Data => {
                let r = self.recvq.pop_front().expect("matched receive");
                out.push(Completion::Received {
                    token: r.token,
                    crc: cur.crc,
                });
            }
        }
        self.rgot = 0;
        self.cur = None;
        self.scatter = false;
    }

    fn fail(&mut self, out: &mut Vec<Completion>, what: String) {
        if self.role == Role::Control {
            // End of stream or an OS error: the control channel is over (a message cut
            // short is dropped). Whether that is a failure is the engine's call.
            if !self.dead {
                self.dead = true;
                out.push(Completion::Closed {
                    peer: self.peer,
                    detail: what,
                });
            }
            return;
        }
        let kind = if self.role == Role::Data {
            "data"
        } else {
            "control"
        };
        self.fail_with(
            out,
            Error::System {
                context: format!("talking to rank {} ({kind} connection)", self.peer),
                errno: None,
                detail: what,
            },
        );
    }

    pub(crate) fn fail_with(&mut self, out: &mut Vec<Completion>, error: Error) {
        if self.dead {
            return;
        }
        self.dead = true;
        out.push(Completion::PeerFailed {
            peer: self.peer,
            error,
        });
    }

    /// Report an OS error from a send or receive.
    pub(crate) fn on_error(&mut self, errno: i32, what: &str, out: &mut Vec<Completion>) {
        let e = std::io::Error::from_raw_os_error(errno);
        self.fail(out, format!("{what} failed: {e}"));
    }

    /// Drop every queued operation (the engine is cancelling).
    pub(crate) fn clear(&mut self) {
        // Control messages stay, even one half sent: the control stream must stay whole,
        // since it carries the reason of this failure to the peers.
        self.sendq.retain(|it| it.token.is_none());
        if !self.recvq.is_empty() || self.rgot > 0 {
            if self.role == Role::Data && self.rgot > 0 {
                self.dead = true;
            }
            self.recvq.clear();
        }
        if self.role == Role::Data && self.rgot > 0 {
            self.rgot = 0;
            self.cur = None;
        }
    }
}
