//! Socket options and modes of the mesh's TCP streams: `TCP_NODELAY` and buffer sizes on
//! every connection, the unsent-bytes limit of path connections, blocking or not.

use dmsc_core::error::{Error, Result};
use std::net::TcpStream;

/// Set up a connection's socket: `TCP_NODELAY`, and the buffer sizes `DMSC_SOCKET_BUF` asks
/// for.
pub(super) fn tune(s: &TcpStream) -> Result<()> {
    s.set_nodelay(true)
        .map_err(|e| Error::io("setting TCP_NODELAY", &e))?;
    if let Some(bytes) = std::env::var("DMSC_SOCKET_BUF")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    {
        use std::os::fd::AsRawFd;
        for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
            // SAFETY: setsockopt with a pointer to a local int of the size passed.
            unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    &bytes as *const i32 as *const libc::c_void,
                    4,
                )
            };
        }
    }
    Ok(())
}

/// Keep at most one segment of unsent bytes in a path socket's send buffer
/// (`TCP_NOTSENT_LOWAT`): the rest waits in the connection's queue, where acks and control
/// messages can go ahead of it, and where the sender's window, not the kernel's buffer,
/// decides how much a path holds.
pub(crate) fn limit_unsent(s: &impl std::os::fd::AsRawFd) {
    let v: libc::c_int = 128 << 10;
    // SAFETY: setsockopt with a pointer to a local int of the size passed.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Set (`on`) or clear `O_NONBLOCK` on `fd`.
pub(crate) fn set_nonblocking(fd: i32, on: bool) -> Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        let fl = if on {
            fl | libc::O_NONBLOCK
        } else {
            fl & !libc::O_NONBLOCK
        };
        if libc::fcntl(fd, libc::F_SETFL, fl) < 0 {
            return Err(Error::io(
                "setting O_NONBLOCK",
                &std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}
