//! [`Span`]: a caller's buffer as an address, a length and the kind of memory it is in, the
//! form in which every front end (Rust slices, C pointers, Python buffers) hands memory to an
//! operation.

use dmsc_core::engine::MemKind;

/// `len` bytes at `ptr`, in memory of `kind`. A span is only an address: it is read or written only through the
/// `unsafe` entry points that run a [`Call`](super::Call), whose callers promise the memory
/// is valid. A zero-length span may have any address, NULL included, and is never touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub ptr: *mut u8,
    /// Length in bytes.
    pub len: usize,
    /// Where the memory is: host memory, or a CUDA device's (as the front end found it, e.g.
    /// with the CUDA driver's pointer attributes).
    pub kind: MemKind,
}

// SAFETY: a span is a plain address and length; memory behind it is only accessed under the
// contract of the unsafe functions that run a call, whichever thread runs them.
unsafe impl Send for Span {}
// SAFETY: as above; sharing a span shares only the two numbers.
unsafe impl Sync for Span {}

impl Span {
    /// The empty span.
    pub const EMPTY: Span = Span {
        ptr: std::ptr::null_mut(),
        len: 0,
        kind: MemKind::Host,
    };

    /// The span of `len` bytes of host memory at `ptr` (no check: the builders of
    /// [`Call`](super::Call) check what they use).
    pub fn new(ptr: *const u8, len: usize) -> Span {
        Span::in_memory(ptr, len, MemKind::Host)
    }

    /// The span of `len` bytes at `ptr`, in memory of `kind`.
    pub fn in_memory(ptr: *const u8, len: usize, kind: MemKind) -> Span {
        Span {
            ptr: ptr as *mut u8,
            len,
            kind,
        }
    }

    /// The span of a byte slice.
    pub fn of(b: &[u8]) -> Span {
        Span::new(b.as_ptr(), b.len())
    }

    /// Address of the first byte, as a number.
    pub fn addr(&self) -> usize {
        self.ptr as usize
    }

    /// True if the two spans share a byte (empty spans share none).
    pub fn overlaps(&self, o: &Span) -> bool {
        let (a, b) = (self.addr(), o.addr());
        self.len > 0 && o.len > 0 && a < b.saturating_add(o.len) && b < a.saturating_add(self.len)
    }

    /// The smallest span holding both (for two spans of one buffer).
    pub fn union(&self, o: &Span) -> Span {
        if self.len == 0 {
            return *o;
        }
        if o.len == 0 {
            return *self;
        }
        let start = self.addr().min(o.addr());
        let end = (self.addr() + self.len).max(o.addr() + o.len);
        let ptr = if start == self.addr() {
            self.ptr
        } else {
            o.ptr
        };
        Span {
            ptr,
            len: end - start,
            kind: self.kind,
        }
    }

    /// The `len` bytes at offset `off` (the caller checked `off + len <= self.len`).
    pub(crate) fn sub(&self, off: usize, len: usize) -> Span {
        Span {
            ptr: self.ptr.wrapping_add(off),
            len,
            kind: self.kind,
        }
    }

    /// View as a byte slice.
    ///
    /// # Safety
    /// Unless empty, the span is readable memory, valid and not written by anyone else while
    /// the slice is used; `len` is at most `isize::MAX`.
    pub unsafe fn bytes<'a>(&self) -> &'a [u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: non-empty, so the caller vouches for the memory and its size.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// View as a mutable byte slice.
    ///
    /// # Safety
    /// As [`Span::bytes`], and no one else reads or writes the memory while the slice is used.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn bytes_mut<'a>(&self) -> &'a mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: as in `bytes`, with exclusive access by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_and_union() {
        let s = |a: usize, l: usize| Span::new(a as *const u8, l);
        assert!(s(0x1000, 16).overlaps(&s(0x100f, 4)));
        assert!(!s(0x1000, 16).overlaps(&s(0x1010, 4)));
        assert!(!s(0x1000, 16).overlaps(&s(0x1008, 0)));
        assert_eq!(s(0x1000, 8).union(&s(0x1004, 12)), s(0x1000, 16));
        assert_eq!(s(0x1004, 4).union(&s(0x1000, 16)), s(0x1000, 16));
        assert_eq!(Span::EMPTY.union(&s(0x1000, 4)), s(0x1000, 4));
    }
}
