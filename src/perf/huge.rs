//! Transparent huge pages for large benchmark buffers, as numpy does for arrays of 4 MiB and
//! more (`numpy/_core/src/multiarray/alloc.c`, `madvise(MADV_HUGEPAGE)`).
//!
//! Buffers of Python users (numpy arrays, and therefore mpi4py's in the peers' benchmarks) get
//! huge pages on kernels whose THP mode is `madvise`; without the same advice dmsc-perf would
//! measure dmsc on 4 KiB pages only, which costs single-copy transfers a page walk per 4 KiB.

/// Smallest buffer advised, numpy's threshold.
pub const MIN_BYTES: usize = 4 << 20;

/// Ask the kernel to back the page-aligned interior of `buf` with huge pages. Advice only:
/// ignored for small buffers and wherever the kernel declines.
pub fn advise(buf: &mut [u8]) {
    if buf.len() < MIN_BYTES {
        return;
    }
    const PAGE: usize = 4096;
    let start = buf.as_mut_ptr() as usize;
    let first = start.next_multiple_of(PAGE);
    let end = (start + buf.len()) & !(PAGE - 1);
    if end > first {
        // SAFETY: [first, end) lies inside `buf`, which we borrow mutably; MADV_HUGEPAGE only
        // changes how the range is backed, never its contents.
        unsafe {
            libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn advice_keeps_contents() {
        let mut v: Vec<u8> = (0..(8usize << 20)).map(|i| i as u8).collect();
        super::advise(&mut v);
        assert!(v.iter().enumerate().all(|(i, &b)| b == i as u8));
        let mut small = vec![1u8; 100];
        super::advise(&mut small);
        assert_eq!(small, vec![1u8; 100]);
    }
}
