//! The Unix stream socket of each pair of ranks on one host: set-up (authentication and the
//! hand-over of the segment's descriptor with `SCM_RIGHTS`, see `unix(7)`), then doorbell
//! and liveness for the pair's whole life: a byte wakes a peer blocked in `poll`, and the
//! end of the stream, which the kernel signals as soon as the peer's process dies, tells the
//! survivor at once.
//!
//! Listeners live in the abstract namespace (`unix(7)`), which belongs to the network
//! namespace: a rank in another network namespace cannot even connect, so two test "hosts"
//! made of namespaces on one kernel never mistake each other for the same host. Names carry
//! 128 random bits; the name alone grants nothing, as every connection must then pass the
//! job secret's challenge ([`crate::auth`]).

use dmsc_core::error::{Error, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::time::{Duration, Instant};

/// The abstract socket name of a listener with `nonce`.
pub(crate) fn name(nonce: &[u8; 16]) -> Vec<u8> {
    let mut n = b"dmsc-shm-".to_vec();
    for b in nonce {
        n.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    n
}

/// Listen on a fresh abstract name; returns the listener (nonblocking) and the name's nonce.
pub(crate) fn listen() -> Result<(UnixListener, [u8; 16])> {
    let nonce = crate::auth::random_bytes::<16>()?;
    let addr = SocketAddr::from_abstract_name(name(&nonce))
        .map_err(|e| Error::io("naming a shared-memory listener", &e))?;
    let l = UnixListener::bind_addr(&addr)
        .map_err(|e| Error::io("listening for same-host peers", &e))?;
    l.set_nonblocking(true)
        .map_err(|e| Error::io("setting a listener nonblocking", &e))?;
    Ok((l, nonce))
}

/// Connect to the listener named by `nonce`.
pub(crate) fn connect(nonce: &[u8; 16]) -> std::io::Result<UnixStream> {
    UnixStream::connect_addr(&SocketAddr::from_abstract_name(name(nonce))?)
}

/// Accept one connection before `deadline` (the listener is nonblocking).
pub(crate) fn accept(l: &UnixListener, deadline: Instant) -> Result<Option<UnixStream>> {
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)
                    .map_err(|e| Error::io("setting a socket blocking", &e))?;
                return Ok(Some(s));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(None);
                }
                let mut p = libc::pollfd {
                    fd: l.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                let ms = left.as_millis().clamp(1, 100) as i32;
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut p, 1, ms) };
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("accepting a same-host peer", &e)),
        }
    }
}

/// Send `bytes` with descriptor `fd` attached.
pub(crate) fn send_with_fd(s: &UnixStream, bytes: &[u8], fd: RawFd) -> Result<()> {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // Room for one descriptor's control message, 8-byte aligned.
    let mut cbuf = [0u64; 4];
    // SAFETY: msghdr is plain old data.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    // SAFETY: CMSG_SPACE is a pure size computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as _;
    // SAFETY: the control buffer holds CMSG_SPACE(4) bytes, so the first header and its
    // 4-byte payload fit; the pointers come from the CMSG macros over that buffer.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(4) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut i32, fd);
    }
    let n = loop {
        // SAFETY: `msg` points at the live iovec and control buffer above.
        let n = unsafe { libc::sendmsg(s.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        // A signal (the host process's, e.g. Python's) may interrupt the call: retry.
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break n;
    };
    if n != bytes.len() as isize {
        return Err(Error::io(
            "handing a shared-memory segment to a peer",
            &std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Receive exactly `buf.len()` bytes (one message) and the descriptor sent with them, within
/// the stream's read timeout.
pub(crate) fn recv_with_fd(s: &UnixStream, buf: &mut [u8]) -> Result<Option<OwnedFd>> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 4];
    // SAFETY: msghdr is plain old data.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    let n = loop {
        // SAFETY: the iovec and control buffer are live locals of the sizes given.
        let n = unsafe {
            libc::recvmsg(
                s.as_raw_fd(),
                &mut msg,
                libc::MSG_WAITALL | libc::MSG_CMSG_CLOEXEC,
            )
        };
        // A signal may interrupt the wait before anything arrived (then nothing was
        // consumed): retry.
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break n;
    };
    if n < 0 {
        return Err(Error::io(
            "receiving a shared-memory segment from a peer",
            &std::io::Error::last_os_error(),
        ));
    }
    if n == 0 {
        return Err(Error::protocol(
            "a same-host peer closed its connection before its hello",
        ));
    }
    if (n as usize) < buf.len() {
        // MSG_WAITALL returns early when a signal arrives mid-message; the descriptor came
        // with the first bytes, the rest follows as plain data.
        use std::io::Read;
        let mut rest = s;
        rest.read_exact(&mut buf[n as usize..])
            .map_err(|e| Error::io("reading the rest of a same-host peer's hello", &e))?;
    }
    let mut fd = None;
    // SAFETY: walking the control messages the kernel wrote into `cbuf`, with the CMSG
    // macros; each SCM_RIGHTS payload holds descriptors now owned by this process.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                for i in 0..count {
                    let raw = std::ptr::read_unaligned((libc::CMSG_DATA(c) as *const i32).add(i));
                    let owned = OwnedFd::from_raw_fd(raw);
                    if fd.is_none() {
                        fd = Some(owned);
                    }
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(Error::protocol(
            "a same-host peer sent more descriptors than a segment",
        ));
    }
    Ok(fd)
}

/// Ring the peer's doorbell: one byte, never blocking (a full socket buffer already holds
/// unread rings, which is as good).
pub(crate) fn ring(fd: RawFd) {
    let b = 1u8;
    // SAFETY: sends one byte from a local; nonblocking, no SIGPIPE.
    unsafe {
        libc::send(
            fd,
            &b as *const u8 as *const libc::c_void,
            1,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
}

/// Consume pending doorbell bytes. Returns true when the stream has ended (the peer closed
/// it or died) or failed.
pub(crate) fn drain(fd: RawFd) -> bool {
    let mut b = [0u8; 64];
    loop {
        // SAFETY: reads into a local buffer of the size given; nonblocking.
        let n = unsafe {
            libc::recv(
                fd,
                b.as_mut_ptr() as *mut libc::c_void,
                b.len(),
                libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => return true,
            n if n > 0 => continue,
            _ => {
                let e = std::io::Error::last_os_error();
                return match e.kind() {
                    std::io::ErrorKind::WouldBlock => false,
                    std::io::ErrorKind::Interrupted => continue,
                    _ => true,
                };
            }
        }
    }
}

/// Block until one of `fds` is readable (or hung up), or `timeout` passes.
pub(crate) fn wait(fds: &mut [libc::pollfd], timeout: Duration) -> Result<()> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `fds` is a valid array of pollfd of the given length; `ts` a live local.
    let r = unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as _, &ts, std::ptr::null()) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(Error::io("waiting for same-host peers (ppoll)", &e));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descriptor_crosses_with_its_hello() {
        let (l, nonce) = listen().unwrap();
        let c = connect(&nonce).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let a = accept(&l, deadline).unwrap().unwrap();
        let (r, w) = UnixStream::pair().unwrap();
        send_with_fd(&c, b"0123456789abcdef", w.as_raw_fd()).unwrap();
        let mut buf = [0u8; 16];
        let fd = recv_with_fd(&a, &mut buf).unwrap().unwrap();
        assert_eq!(&buf, b"0123456789abcdef");
        // The received descriptor is the same socket end.
        let f = UnixStream::from(fd);
        ring(f.as_raw_fd());
        let mut one = [0u8; 1];
        use std::io::Read;
        (&r).read_exact(&mut one).unwrap();
        assert_eq!(one, [1]);
        assert!(
            !drain(r.as_raw_fd()),
            "nothing more, and the stream is open"
        );
        drop(c);
        assert!(
            drain(a.as_raw_fd()),
            "end of stream seen after the peer closed"
        );
    }

    #[test]
    fn a_wrong_name_does_not_connect() {
        assert!(connect(&[7u8; 16]).is_err());
    }
}
