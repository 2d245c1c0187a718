//! Argument checks shared by the calls: streams, buffer sizes (with overflow checks),
//! pointers, ranks. Each failure is a `dmscInvalidArgument` whose message names the
//! argument.

use crate::guard::{FfiError, Res};
use crate::types::c_name;
use dmsc_rs::DataType;
use std::ffi::{c_int, c_void};

/// A caller's buffer: start and length in bytes. Zero-length spans may have any pointer
/// (including NULL) and are never dereferenced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub ptr: *mut u8,
    pub len: usize,
}

impl Span {
    /// The empty span.
    pub const EMPTY: Span = Span {
        ptr: std::ptr::null_mut(),
        len: 0,
    };

    /// The span of `len` bytes at `ptr + off`.
    #[cfg(test)]
    pub fn at(ptr: *const c_void, off: usize, len: usize) -> Span {
        Span {
            ptr: (ptr as *mut u8).wrapping_add(off),
            len,
        }
    }

    /// True if the two spans share a byte.
    pub fn overlaps(&self, o: &Span) -> bool {
        let (a, b) = (self.ptr as usize, o.ptr as usize);
        self.len > 0 && o.len > 0 && a < b.saturating_add(o.len) && b < a.saturating_add(self.len)
    }

    /// View as a byte slice.
    ///
    /// # Safety
    /// Unless empty, the span is readable memory that stays valid, and is not written by
    /// anyone else, for as long as the slice is used.
    pub unsafe fn bytes<'a>(&self) -> &'a [u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: non-empty spans are non-NULL (checked by `span`), at most isize::MAX bytes
        // (checked by `byte_len`), and valid by the caller's contract.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// View as a mutable byte slice.
    ///
    /// # Safety
    /// As [`Span::bytes`], and no one else reads or writes the memory while the slice is used.
    pub unsafe fn bytes_mut<'a>(&self) -> &'a mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: as in `bytes`, with exclusive access by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

/// Bytes of `count * blocks` elements of `dtype`, where `count` is argument `name` of
/// function `f`; an overflow of `size_t` (or a size above `PTRDIFF_MAX`, which no buffer
/// can have) is an error naming `name`.
pub(crate) fn byte_len(
    f: &str,
    name: &str,
    count: usize,
    blocks: usize,
    dtype: DataType,
) -> Res<usize> {
    count
        .checked_mul(blocks)
        .and_then(|n| n.checked_mul(dtype.size()))
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or_else(|| {
            let times = if blocks == 1 {
                String::new()
            } else {
                format!(" * {blocks} ranks")
            };
            FfiError::invalid(
                f,
                format_args!(
                    "{name} {count}{times} of {} ({}-byte elements) overflows the address space",
                    c_name(dtype),
                    dtype.size()
                ),
            )
        })
}

/// The buffer argument `name` of function `f`: `len` bytes at `ptr`, which must not be NULL
/// unless `len` is 0, and must be aligned to the element size.
pub(crate) fn span(
    f: &str,
    name: &str,
    ptr: *const c_void,
    len: usize,
    dtype: DataType,
) -> Res<Span> {
    if len == 0 {
        return Ok(Span::EMPTY);
    }
    if ptr.is_null() {
        return Err(FfiError::invalid(f, format_args!("{name} is NULL")));
    }
    if !(ptr as usize).is_multiple_of(dtype.size()) {
        return Err(FfiError::invalid(
            f,
            format_args!(
                "{name} ({ptr:p}) is not aligned to its {}-byte {} elements",
                dtype.size(),
                c_name(dtype)
            ),
        ));
    }
    Ok(Span {
        ptr: ptr as *mut u8,
        len,
    })
}

/// Fail if the out-of-place buffers `a` and `b` (arguments `an`, `bn`) overlap; `hint` says
/// which overlap would have meant in place.
pub(crate) fn disjoint(f: &str, a: (&str, Span), b: (&str, Span), hint: &str) -> Res<()> {
    if a.1.overlaps(&b.1) {
        return Err(FfiError::invalid(
            f,
            format_args!(
                "{} and {} overlap; in place means {hint}, other overlaps are not allowed",
                a.0, b.0
            ),
        ));
    }
    Ok(())
}

/// The rank argument `name` (root, peer, rank) of function `f`, in `0 .. nranks`.
pub(crate) fn rank_arg(f: &str, name: &str, v: c_int, nranks: usize) -> Res<usize> {
    usize::try_from(v)
        .ok()
        .filter(|&r| r < nranks)
        .ok_or_else(|| {
            FfiError::invalid(
                f,
                format_args!("{name} {v} is out of range for a communicator of {nranks} ranks"),
            )
        })
}

/// The stream argument of function `f`: only NULL (host-synchronous) exists today.
pub(crate) fn no_stream(f: &str, stream: *mut c_void) -> Res<()> {
    if !stream.is_null() {
        return Err(FfiError::invalid(
            f,
            format_args!(
                "stream is {stream:p}, not NULL: device streams arrive with the CUDA transport, \
                 which this version of dmsc does not have; pass NULL for host buffers"
            ),
        ));
    }
    Ok(())
}

/// The output pointer argument `name` of function `f`, which must not be NULL.
pub(crate) fn out<T>(f: &str, name: &str, p: *mut T) -> Res<*mut T> {
    if p.is_null() {
        return Err(FfiError::invalid(f, format_args!("{name} is NULL")));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::dmscResult_t::*;

    #[test]
    fn overflowing_counts_are_named() {
        assert_eq!(
            byte_len("f", "count", 10, 1, DataType::Float32).unwrap(),
            40
        );
        assert_eq!(byte_len("f", "count", 10, 4, DataType::Int64).unwrap(), 320);
        for (count, blocks, t) in [
            (usize::MAX, 1, DataType::Int8),
            (usize::MAX / 2, 1, DataType::Float32),
            (usize::MAX / 4, 4, DataType::Uint8),
            (isize::MAX as usize / 2 + 1, 1, DataType::Float16),
        ] {
            let e = byte_len("dmscAllGather", "sendcount", count, blocks, t).unwrap_err();
            assert_eq!(e.code, dmscInvalidArgument);
            assert!(e.msg.starts_with("dmscAllGather: sendcount"), "{}", e.msg);
        }
    }

    #[test]
    fn null_and_misaligned_buffers_are_named() {
        let x = [0u64; 2];
        let p = x.as_ptr() as *const c_void;
        assert_eq!(span("f", "b", p, 8, DataType::Int64).unwrap().len, 8);
        assert_eq!(
            span("f", "b", std::ptr::null(), 0, DataType::Int64).unwrap(),
            Span::EMPTY
        );
        let e = span(
            "dmscAllReduce",
            "recvbuff",
            std::ptr::null(),
            4,
            DataType::Int8,
        );
        assert_eq!(e.unwrap_err().msg, "dmscAllReduce: recvbuff is NULL");
        let odd = (p as *const u8).wrapping_add(1) as *const c_void;
        let e = span("f", "sendbuff", odd, 4, DataType::Float32).unwrap_err();
        assert!(
            e.msg.contains("sendbuff") && e.msg.contains("aligned"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn overlap_ranks_streams() {
        let base = 0x1000 as *const c_void;
        let a = Span::at(base, 0, 16);
        assert!(a.overlaps(&Span::at(base, 15, 4)));
        assert!(!a.overlaps(&Span::at(base, 16, 4)));
        assert!(!a.overlaps(&Span::at(base, 8, 0)));
        assert!(disjoint(
            "f",
            ("sendbuff", a),
            ("recvbuff", Span::at(base, 4, 4)),
            "x"
        )
        .is_err());
        assert_eq!(rank_arg("f", "root", 3, 4).unwrap(), 3);
        for bad in [-1, 4, c_int::MIN] {
            let e = rank_arg("dmscBroadcast", "root", bad, 4).unwrap_err();
            assert!(e.msg.starts_with("dmscBroadcast: root"), "{}", e.msg);
        }
        assert!(no_stream("f", std::ptr::null_mut()).is_ok());
        let e = no_stream("dmscBarrier", 8 as *mut c_void).unwrap_err();
        assert_eq!(e.code, dmscInvalidArgument);
        assert!(e.msg.contains("stream") && e.msg.contains("CUDA transport"));
        assert!(out::<i32>("f", "count", std::ptr::null_mut()).is_err());
    }
}
