//! `dmscGetLastError`: the message of the last failed call, per thread (NCCL's
//! `ncclGetLastError`, made thread-local so that threads using different communicators do
//! not see each other's messages).

use crate::handle::dmscComm_t;
use std::cell::RefCell;
use std::ffi::{c_char, CString};

thread_local! {
    static LAST: RefCell<CString> = RefCell::new(CString::default());
}

/// Record `msg` as this thread's last error (interior NULs, which C cannot show, become
/// spaces).
pub(crate) fn set(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST.with(|l| *l.borrow_mut() = c);
}

/// This thread's last error message, as Rust text (for tests).
#[cfg(test)]
pub(crate) fn get() -> String {
    LAST.with(|l| l.borrow().to_string_lossy().into_owned())
}

/// A sentence describing why the most recent failed dmsc call on this thread failed, naming
/// the function and the argument or the cause, e.g. `"dmscAllReduce: recvbuff is NULL"`;
/// the empty string if no call on this thread has failed. Successful calls leave it
/// unchanged (like `errno`). `comm` is ignored and may be NULL: the message is per thread,
/// not per communicator, and `dmscCommGetAsyncError` also leaves the communicator's error
/// here.
///
/// The string belongs to dmsc: it stays valid until the next failing dmsc call on this
/// thread; copy it to keep it. Never NULL.
///
/// Errors: none (it returns a string, not a result).
/// Thread safety: callable from any thread; each thread has its own message.
#[no_mangle]
pub extern "C" fn dmscGetLastError(comm: dmscComm_t) -> *const c_char {
    let _ = comm;
    std::panic::catch_unwind(|| LAST.with(|l| l.borrow().as_ptr()))
        .unwrap_or(c"dmscGetLastError: internal error".as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last() -> String {
        // SAFETY: dmscGetLastError returns a NUL-terminated string valid until the next
        // failing call on this thread; it is copied at once.
        unsafe { CStr::from_ptr(dmscGetLastError(std::ptr::null_mut())) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn per_thread_and_nul_safe() {
        set("dmscAllReduce: recvbuff is NULL");
        assert_eq!(last(), "dmscAllReduce: recvbuff is NULL");
        std::thread::spawn(|| assert_eq!(last(), ""))
            .join()
            .unwrap();
        set("a\0b");
        assert_eq!(get(), "a b");
    }
}
