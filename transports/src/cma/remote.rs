//! Copying from another process's memory with `process_vm_readv(2)` (Linux cross-memory
//! attach, the mechanism behind Open MPI's `vader` CMA path).

use std::io;

/// Copy `len` bytes at address `remote` in process `pid` to `dst`, looping over partial
/// transfers.
///
/// # Safety
/// `dst` must be valid for writes of `len` bytes and not be accessed by anyone else for the
/// duration of the call.
pub(crate) unsafe fn read(pid: i32, remote: u64, dst: *mut u8, len: usize) -> io::Result<()> {
    let mut done = 0usize;
    while done < len {
        let local = libc::iovec {
            // SAFETY: done < len, so the pointer stays inside the caller's buffer.
            iov_base: unsafe { dst.add(done) } as *mut libc::c_void,
            iov_len: len - done,
        };
        let far = libc::iovec {
            iov_base: (remote + done as u64) as *mut libc::c_void,
            iov_len: len - done,
        };
        // SAFETY: `local` describes memory the caller lent us for writing; the kernel checks
        // `far` against the other process's address space and fails with EFAULT outside it.
        let n = unsafe { libc::process_vm_readv(pid, &local, 1, &far, 1, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "process_vm_readv transferred nothing",
            ));
        }
        done += n as usize;
    }
    Ok(())
}

/// Read one `u64` at `remote` in process `pid`.
pub(crate) fn read_u64(pid: i32, remote: u64) -> io::Result<u64> {
    let mut v = 0u64;
    // SAFETY: `v` is a local of exactly 8 bytes that nothing else touches.
    unsafe { read(pid, remote, &mut v as *mut u64 as *mut u8, 8)? };
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory() {
        let src: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let mut dst = vec![0u8; src.len()];
        let pid = std::process::id() as i32;
        // SAFETY: dst is a local buffer of the length passed.
        unsafe { read(pid, src.as_ptr() as u64, dst.as_mut_ptr(), dst.len()) }.unwrap();
        assert_eq!(src, dst);
        let word = 0x1234_5678_9abc_def0u64;
        assert_eq!(read_u64(pid, &word as *const u64 as u64).unwrap(), word);
    }

    #[test]
    fn bad_address_is_an_error_not_a_crash() {
        let pid = std::process::id() as i32;
        assert!(read_u64(pid, 8).is_err());
    }
}
