//! An eventfd that interrupts a blocked `poll`/`io_uring_enter` from another thread.

use dmsc_core::engine::Waker;
use dmsc_core::error::{Error, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The eventfd behind a transport's [`Waker`].
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    pub(crate) fn new() -> Result<EventFd> {
        // SAFETY: plain system call; the returned descriptor is owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(Error::io(
                "creating an eventfd",
                &std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: fd is a fresh descriptor owned by nobody else.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Consume pending wake-ups.
    pub(crate) fn drain(&self) {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into a local u64 from a nonblocking eventfd.
        unsafe { libc::read(self.raw(), &mut v as *mut u64 as *mut libc::c_void, 8) };
    }
}

impl Waker for EventFd {
    fn wake(&self) {
        let v = 1u64;
        // SAFETY: writes 8 bytes from a local u64 to an eventfd we own.
        unsafe { libc::write(self.raw(), &v as *const u64 as *const libc::c_void, 8) };
    }
}
