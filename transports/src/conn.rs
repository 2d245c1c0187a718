//! The per-connection framing state machine of a byte stream, shared by the TCP backends
//! (io_uring and plain sockets) and the shared-memory rings (`crate::shm`).
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
use dmsc_core::spray::wire::{UnitHeader, UnitKind, UNIT_LEN};
use dmsc_core::spray::Placement;
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
    /// One of several paths to the peer (index, incarnation), carrying spray units
    /// (`dmsc_core::spray::wire`): segments, acks and control messages.
    Path(u8, u32),
}

/// Longest header a frame or unit starts with: a unit header plus the engine header a
/// segment carries. On a path every unit starts with this many bytes (the second half is
/// zero for units other than segments), so one read takes any unit's headers.
const MAX_HDR: usize = UNIT_LEN + HEADER_LEN;
/// Spare header buffers a connection keeps (a window of frames in flight).
const SPARE_HDRS: usize = 64;

/// Where a path connection hands what it reads (the spraying layer of the mesh).
pub(crate) trait PathSink {
    /// A segment's headers arrived on `path` from `peer`: where its payload goes.
    fn place(
        &mut self,
        peer: Rank,
        path: usize,
        unit: &UnitHeader,
        engine: &FrameHeader,
    ) -> Result<Placement, Error>;
    /// The payload of the segment placed last on `path` is in.
    fn seg_done(&mut self, peer: Rank, path: usize);
    /// An ack or control unit arrived.
    fn unit(
        &mut self,
        peer: Rank,
        path: usize,
        unit: &UnitHeader,
        payload: Vec<u8>,
        out: &mut Vec<Completion>,
    );
}

/// The sink of a mesh without paths (never called: no connection has the path role).
pub(crate) struct NoPaths;

impl PathSink for NoPaths {
    fn place(
        &mut self,
        _: Rank,
        _: usize,
        _: &UnitHeader,
        _: &FrameHeader,
    ) -> Result<Placement, Error> {
        Err(Error::internal("a path unit on a mesh without paths"))
    }
    fn seg_done(&mut self, _: Rank, _: usize) {}
    fn unit(&mut self, _: Rank, _: usize, _: &UnitHeader, _: Vec<u8>, _: &mut Vec<Completion>) {}
}

struct SendItem {
    /// Boxed: the kernel may read it while the queue moves its items (an insertion ahead of
    /// other units, or the queue growing).
    hdr: Box<[u8; MAX_HDR]>,
    hlen: usize,
    /// The transfer and index of a segment (path connections).
    transfer: Option<(u64, u32)>,
    data: *const u8,
    len: usize,
    /// Owned payload of a control message (then `data` points into it).
    owned: Option<Vec<u8>>,
    token: Option<Token>,
    done: usize,
}

impl SendItem {
    /// Headers `hdr[..hlen]`, then `len` bytes at `data` (memory its owner keeps alive).
    fn borrowed(hdr: Box<[u8; MAX_HDR]>, hlen: usize, data: *const u8, len: usize) -> SendItem {
        SendItem {
            hdr,
            hlen,
            transfer: None,
            data,
            len,
            owned: None,
            token: None,
            done: 0,
        }
    }

    /// Headers `hdr[..hlen]`, then a payload the item owns.
    fn owned(hdr: Box<[u8; MAX_HDR]>, hlen: usize, payload: Vec<u8>) -> SendItem {
        let (data, len) = (payload.as_ptr(), payload.len());
        SendItem {
            owned: Some(payload),
            ..SendItem::borrowed(hdr, hlen, data, len)
        }
    }
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
    /// Header buffers of sent frames, for the next ones (boxes moved back into frames, so
    /// the box itself is what is kept).
    #[allow(clippy::vec_box)]
    spare_hdrs: Vec<Box<[u8; MAX_HDR]>>,
    recvq: VecDeque<RecvItem>,
    rhdr: [u8; MAX_HDR],
    /// Path connections: the unit being read, once its header is validated.
    unit: Option<UnitHeader>,
    /// Path connections: where the current segment's payload goes.
    pdst: *mut u8,
    /// Path connections: where dropped payloads are read to.
    scratch: Vec<u8>,
    /// A send / a receive of this connection is in the kernel (io_uring backend).
    pub(crate) send_busy: bool,
    pub(crate) recv_busy: bool,
    /// Why the connection died (path connections), for metrics and errors.
    pub(crate) failure: Option<String>,
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
            spare_hdrs: Vec::new(),
            recvq: VecDeque::new(),
            rhdr: [0; MAX_HDR],
            unit: None,
            pdst: std::ptr::null_mut(),
            scratch: Vec::new(),
            send_busy: false,
            recv_busy: false,
            failure: None,
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

    /// A zeroed header buffer: a spare one from a frame already sent, or a new one. Each
    /// queued frame's headers are boxed so their address stays put while the kernel reads
    /// them, whatever happens to the queue; recycling the boxes saves an allocation per frame.
    fn new_hdr(&mut self) -> Box<[u8; MAX_HDR]> {
        match self.spare_hdrs.pop() {
            Some(mut h) => {
                h.fill(0);
                h
            }
            None => Box::new([0; MAX_HDR]),
        }
    }

    /// Keep the header buffer of a frame sent in full, for the next frame.
    fn recycle(&mut self, it: SendItem) {
        if self.spare_hdrs.len() < SPARE_HDRS {
            self.spare_hdrs.push(it.hdr);
        }
    }

    /// Queue a data frame.
    pub(crate) fn push_send(&mut self, header: &FrameHeader, data: *const u8, token: Token) {
        let mut hdr = self.new_hdr();
        header.encode((&mut hdr[..HEADER_LEN]).try_into().expect("64 bytes"));
        self.sendq.push_back(SendItem {
            token: Some(token),
            ..SendItem::borrowed(hdr, HEADER_LEN, data, header.len as usize)
        });
    }

    /// Queue a segment on a path connection: its unit header, the transfer's engine header,
    /// then `unit.len` bytes at `data`.
    pub(crate) fn push_segment(
        &mut self,
        unit: &UnitHeader,
        engine: &FrameHeader,
        data: *const u8,
    ) {
        let mut hdr = self.new_hdr();
        unit.encode((&mut hdr[..UNIT_LEN]).try_into().expect("64 bytes"));
        engine.encode((&mut hdr[UNIT_LEN..]).try_into().expect("64 bytes"));
        self.sendq.push_back(SendItem {
            transfer: Some((unit.transfer, unit.seg)),
            ..SendItem::borrowed(hdr, MAX_HDR, data, unit.len as usize)
        });
    }

    /// Queue an ack or control unit on a path connection (payload copied). It goes ahead
    /// of every segment not yet started (behind other such units, whose order it keeps), so
    /// acknowledgements and heartbeats do not wait behind bulk data.
    pub(crate) fn push_unit(&mut self, unit: &UnitHeader, payload: &[u8]) {
        let payload = payload.to_vec();
        let mut hdr = self.new_hdr();
        unit.encode((&mut hdr[..UNIT_LEN]).try_into().expect("64 bytes"));
        let started = usize::from(self.front_started());
        let at = (started..self.sendq.len())
            .find(|&i| self.sendq[i].transfer.is_some())
            .unwrap_or(self.sendq.len());
        self.sendq
            .insert(at, SendItem::owned(hdr, MAX_HDR, payload));
    }

    /// Drop queued segments of transfer `id` that have not started (it was delivered by
    /// other copies). Returns the indices of the segments dropped.
    pub(crate) fn drop_unsent(&mut self, id: u64) -> Vec<u32> {
        let mut dropped = Vec::new();
        let keep_front = self.front_started();
        let mut i = 0;
        self.sendq.retain(|it| {
            i += 1;
            match it.transfer {
                Some((t, s)) if t == id && !(i == 1 && keep_front) => {
                    dropped.push(s);
                    false
                }
                _ => true,
            }
        });
        dropped
    }

    /// The first queued item has bytes written, or a write of it is in the kernel: it must
    /// stay first.
    fn front_started(&self) -> bool {
        self.send_busy || self.sendq.front().is_some_and(|it| it.done > 0)
    }

    /// Queue a control frame (payload copied).
    pub(crate) fn push_control(&mut self, payload: &[u8]) {
        let payload = payload[..payload.len().min(MAX_CONTROL as usize)].to_vec();
        let mut hdr = self.new_hdr();
        FrameHeader::plain(FrameKind::Control, 0, payload.len() as u32)
            .encode((&mut hdr[..HEADER_LEN]).try_into().expect("64 bytes"));
        self.sendq
            .push_back(SendItem::owned(hdr, HEADER_LEN, payload));
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
            && ((matches!(self.role, Role::Control | Role::Path(..)) && !self.eof)
                || self.rgot > 0
                || !self.recvq.is_empty())
    }

    /// Fill `send_iov`/`send_msg` for the next bytes to send. Returns false when idle.
    pub(crate) fn prepare_send(&mut self) -> bool {
        let Some(it) = self.sendq.front() else {
            return false;
        };
        let mut n = 0;
        if it.done < it.hlen {
            self.send_iov[n] = libc::iovec {
                iov_base: it.hdr[it.done..it.hlen].as_ptr() as *mut libc::c_void,
                iov_len: it.hlen - it.done,
            };
            n += 1;
        }
        let data_done = it.done.saturating_sub(it.hlen);
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
            let total = it.hlen + it.len;
            let step = n.min(total - it.done);
            it.done += step;
            n -= step;
            if it.done == total {
                let mut it = self.sendq.pop_front().expect("front exists");
                drop(it.owned.take());
                if let Some(token) = it.token {
                    out.push(Completion::Sent { token });
                }
                self.recycle(it);
            }
        }
        // Zero-length frames already fully sent with their header.
        while let Some(it) = self.sendq.front() {
            if it.done == it.hlen + it.len && it.done > 0 {
                let it = self.sendq.pop_front().expect("front exists");
                if let Some(token) = it.token {
                    out.push(Completion::Sent { token });
                }
                self.recycle(it);
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
        if let Role::Path(..) = self.role {
            self.prepare_recv_path();
            return (true, true);
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
                Role::Data => self.recvq.front().expect("matched receive").dst,
                _ => self.ctrl_buf.as_mut_ptr(),
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

    /// Path connections: the next bytes go to the unit header, the segment's engine header,
    /// or the payload's place.
    fn prepare_recv_path(&mut self) {
        let need_hdr = MAX_HDR;
        if self.rgot < need_hdr {
            self.recv_iov[0] = libc::iovec {
                iov_base: self.rhdr[self.rgot..need_hdr].as_mut_ptr() as *mut libc::c_void,
                iov_len: need_hdr - self.rgot,
            };
        } else {
            let u = self.unit.expect("header read");
            let got = self.rgot - need_hdr;
            let base = if u.kind == UnitKind::Segment {
                self.pdst
            } else {
                self.ctrl_buf.as_mut_ptr()
            };
            self.recv_iov[0] = libc::iovec {
                // SAFETY: got < len, inside the payload's place of len bytes (a destination
                // the sink handed out, the scratch buffer, or ctrl_buf).
                iov_base: unsafe { base.add(got) } as *mut libc::c_void,
                iov_len: u.len as usize - got,
            };
        }
        self.recv_msg.msg_iov = self.recv_iov.as_mut_ptr();
        self.recv_msg.msg_iovlen = 1;
    }

    /// Path connections: account `n` bytes received.
    fn on_received_path(&mut self, n: usize, out: &mut Vec<Completion>, sink: &mut dyn PathSink) {
        let Role::Path(path, _) = self.role else {
            return;
        };
        let path = path as usize;
        if n == 0 {
            self.fail_path("connection closed by the peer".into());
            return;
        }
        let before = self.rgot;
        self.rgot += n;
        if before < MAX_HDR && self.rgot >= MAX_HDR {
            let u = match UnitHeader::decode(&self.rhdr[..UNIT_LEN]) {
                Ok(u) => u,
                Err(e) => return self.protocol_failure(out, e),
            };
            self.unit = Some(u);
            if u.kind != UnitKind::Segment {
                if self.rhdr[UNIT_LEN..].iter().any(|&b| b != 0) {
                    return self.protocol_failure(
                        out,
                        Error::protocol(format!("{:?} unit with a non-zero header tail", u.kind)),
                    );
                }
                self.ctrl_buf.clear();
                self.ctrl_buf.resize(u.len as usize, 0);
            }
        }
        let Some(u) = self.unit else { return };
        if u.kind == UnitKind::Segment && before < MAX_HDR && self.rgot >= MAX_HDR {
            let engine = match FrameHeader::decode(&self.rhdr[UNIT_LEN..MAX_HDR]) {
                Ok(h) if matches!(h.kind, FrameKind::Data | FrameKind::Transport(_)) => h,
                Ok(h) => {
                    return self.protocol_failure(
                        out,
                        Error::protocol(format!("a segment carries a {:?} frame", h.kind)),
                    )
                }
                Err(e) => return self.protocol_failure(out, e),
            };
            let len = u.len as usize;
            let drop_into_scratch = |c: &mut Conn| {
                if c.scratch.len() < len {
                    c.scratch.resize(len, 0);
                }
                c.pdst = c.scratch.as_mut_ptr();
            };
            match sink.place(self.peer, path, &u, &engine) {
                Ok(Placement::Direct(a) | Placement::Stash(a)) => self.pdst = a as *mut u8,
                Ok(Placement::Discard) => drop_into_scratch(self),
                Ok(Placement::Mismatch { token, got }) => {
                    out.push(Completion::BadHeader {
                        token,
                        peer: self.peer,
                        got,
                    });
                    drop_into_scratch(self);
                }
                Err(e) => return self.protocol_failure(out, e),
            }
        }
        if self.rgot == MAX_HDR + u.len as usize {
            self.rgot = 0;
            self.unit = None;
            if u.kind == UnitKind::Segment {
                self.pdst = std::ptr::null_mut();
                sink.seg_done(self.peer, path);
            } else {
                let payload = std::mem::take(&mut self.ctrl_buf);
                sink.unit(self.peer, path, &u, payload, out);
            }
        }
    }

    /// The peer broke the path protocol: that is the peer failing, not the path.
    fn protocol_failure(&mut self, out: &mut Vec<Completion>, e: Error) {
        self.fail_path(e.to_string());
        out.push(Completion::PeerFailed {
            peer: self.peer,
            error: Error::protocol(format!("rank {} broke the path protocol: {e}", self.peer)),
        });
    }

    /// A path connection is over; the mesh takes it down once the kernel is done with it.
    pub(crate) fn fail_path(&mut self, why: String) {
        if !self.dead {
            self.dead = true;
            self.failure = Some(why);
        }
    }

    /// Account `n` bytes received (0 = end of stream).
    pub(crate) fn on_received(
        &mut self,
        n: usize,
        out: &mut Vec<Completion>,
        sink: &mut dyn PathSink,
    ) {
        if let Role::Path(..) = self.role {
            return self.on_received_path(n, out, sink);
        }
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
        let h = FrameHeader::decode(&self.rhdr[..HEADER_LEN])?;
        match (self.role, h.kind) {
            (Role::Control, FrameKind::Control) => {
                self.ctrl_buf.clear();
                self.ctrl_buf.resize(h.len as usize, 0);
                // Bytes read beyond the header in scatter mode cannot happen on control.
            }
            // A transport's own data frames (references to chunks) only ever match a receive
            // that the transport itself posted with that kind.
            (Role::Data, FrameKind::Data | FrameKind::Transport(_)) => {
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
            Role::Control | Role::Path(..) => out.push(Completion::Control {
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
        if let Role::Path(..) = self.role {
            return self.fail_path(what);
        }
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

    /// Path connections: a segment is half written or half read (its stream would lose
    /// its framing if the segment were withdrawn).
    pub(crate) fn mid_segment(&self) -> bool {
        (self.rgot > 0 && self.unit.is_some_and(|u| u.kind == UnitKind::Segment))
            || self
                .sendq
                .front()
                .is_some_and(|it| it.transfer.is_some() && it.done > 0)
    }

    /// Drop every queued operation (the engine is cancelling).
    pub(crate) fn clear(&mut self) {
        // Control messages stay, even one half sent: the control stream must stay whole,
        // since it carries the reason of this failure to the peers. So do a path's acks.
        self.sendq
            .retain(|it| it.token.is_none() && (it.transfer.is_none() || it.done > 0));
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
