//! The argument checks every front end shares, each with the one function that words its
//! error: rank arguments, NULL and misaligned buffers, buffers too small, buffers that
//! overlap, buffers of one call in different kinds of memory, and lengths that are not whole
//! blocks.

use dmsc_core::engine::MemKind;
use dmsc_core::{DataType, Error, Result};
use std::fmt::Display;

use super::Span;

/// The rank argument `name` (root, peer, dst, src) as a rank of a communicator of `n`.
pub fn rank_arg<T: Copy + Display + TryInto<usize>>(name: &str, v: T, n: usize) -> Result<usize> {
    v.try_into().ok().filter(|&r| r < n).ok_or_else(|| {
        Error::invalid(format!(
            "{name} {v} is out of range for a communicator of {n} ranks"
        ))
    })
}

/// Buffer `name`, which the call uses: not NULL unless empty, aligned to its elements and a
/// whole number of them.
pub(crate) fn usable(name: &str, s: Span, dtype: DataType) -> Result<()> {
    if s.len == 0 {
        return Ok(());
    }
    if s.ptr.is_null() {
        return Err(Error::invalid(format!("{name} is NULL")));
    }
    let es = dtype.size();
    if !s.addr().is_multiple_of(es) {
        return Err(Error::invalid(format!(
            "{name} at {:p} is not aligned to its {es}-byte {dtype} elements",
            s.ptr
        )));
    }
    if !s.len.is_multiple_of(es) {
        return Err(Error::invalid(format!(
            "{name} has {} bytes, not a whole number of {dtype} elements ({es} bytes each)",
            s.len
        )));
    }
    Ok(())
}

/// Buffer `name` holds at least `elems` elements of `dtype`.
pub(crate) fn holds(name: &str, s: Span, elems: usize, dtype: DataType) -> Result<()> {
    let want = elems
        .checked_mul(dtype.size())
        .filter(|&w| w <= isize::MAX as usize)
        .ok_or_else(|| {
            Error::invalid(format!(
                "{name}: {elems} {dtype} elements overflow the address space"
            ))
        })?;
    if s.len < want {
        return Err(Error::invalid(format!(
            "{name} has {} bytes but the call needs {want} ({elems} {dtype} elements)",
            s.len
        )));
    }
    Ok(())
}

/// The buffers of one call are all in one kind of memory: all in host memory or all on one
/// CUDA device (empty buffers, which are never touched, do not count). The error names the
/// first two that differ and where each is.
pub(crate) fn one_memory<'a>(bufs: impl IntoIterator<Item = (&'a str, Span)>) -> Result<MemKind> {
    let mut first: Option<(&str, Span)> = None;
    for (name, s) in bufs.into_iter().filter(|(_, s)| s.len > 0) {
        match first {
            None => first = Some((name, s)),
            Some((f, fs)) if fs.kind != s.kind => {
                return Err(Error::invalid(format!(
                    "{f} is {} but {name} is {}: the buffers of one call must all be host \
                     memory or all on the same CUDA device",
                    fs.kind, s.kind
                )))
            }
            Some(_) => {}
        }
    }
    Ok(first.map_or(MemKind::Host, |(_, s)| s.kind))
}

/// Distinct buffers `a` and `b` must not overlap; `in_place` says which layout would have
/// meant in place (built only for the error, off the path of every valid call).
pub(crate) fn apart(
    a: (&str, Span),
    b: (&str, Span),
    in_place: impl FnOnce() -> String,
) -> Result<()> {
    if a.1.overlaps(&b.1) {
        return Err(Error::invalid(format!(
            "{} and {} overlap; in place means {}, other overlaps are not allowed",
            a.0,
            b.0,
            in_place()
        )));
    }
    Ok(())
}

/// `elems` elements of buffer `name` split into `n` equal blocks: the block's count.
pub(crate) fn blocks(name: &str, elems: usize, n: usize) -> Result<usize> {
    if !elems.is_multiple_of(n) {
        return Err(Error::invalid(format!(
            "{name} has {elems} elements, not a multiple of the {n} ranks"
        )));
    }
    Ok(elems / n)
}

/// Two buffers' element counts that the call needs equal, or in the ratio `want` describes.
pub(crate) fn mismatch(name: &str, have: usize, want: impl Display) -> Error {
    Error::invalid(format!("{name} has {have} elements but {want}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_name_the_argument() {
        assert_eq!(rank_arg("root", 3usize, 4).unwrap(), 3);
        let e = rank_arg("root", -1i64, 4).unwrap_err().to_string();
        assert!(
            e.contains("root -1 is out of range for a communicator of 4 ranks"),
            "{e}"
        );
        let null = Span::new(std::ptr::null(), 4);
        let e = usable("recvbuff", null, DataType::Int8)
            .unwrap_err()
            .to_string();
        assert!(e.contains("recvbuff is NULL"), "{e}");
        let odd = Span::new(0x1001 as *const u8, 4);
        let e = usable("tensor", odd, DataType::Float32)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tensor at 0x1001 is not aligned"), "{e}");
        let short = Span::new(0x1000 as *const u8, 6);
        assert!(usable("b", short, DataType::Float32).is_err());
        assert!(usable("b", Span::EMPTY, DataType::Float64).is_ok());
        assert!(holds("b", short, 1, DataType::Float32).is_ok());
        assert!(holds("b", short, 2, DataType::Float32).is_err());
        assert!(holds("b", short, usize::MAX, DataType::Float32).is_err());
        let (a, b) = (
            Span::new(0x1000 as *const u8, 8),
            Span::new(0x1004 as *const u8, 8),
        );
        let e = apart(("sendbuff", a), ("recvbuff", b), || "x".into())
            .unwrap_err()
            .to_string();
        assert!(e.contains("sendbuff and recvbuff overlap"), "{e}");
        assert_eq!(blocks("t", 8, 4).unwrap(), 2);
        assert!(blocks("t", 9, 4).is_err());
    }

    #[test]
    fn one_call_keeps_to_one_kind_of_memory() {
        let host = Span::new(0x1000 as *const u8, 8);
        let dev = |d| Span::in_memory(0x7000_0000 as *const u8, 8, MemKind::Cuda { device: d });
        assert_eq!(
            one_memory([("a", host), ("b", host)]).unwrap(),
            MemKind::Host
        );
        assert_eq!(
            one_memory([("a", dev(1)), ("b", dev(1))]).unwrap(),
            MemKind::Cuda { device: 1 }
        );
        let e = one_memory([("sendbuff", host), ("recvbuff", dev(0))])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sendbuff is host memory but recvbuff is CUDA device 0 memory"),
            "{e}"
        );
        let e = one_memory([("sendbuff", dev(0)), ("recvbuff", dev(1))])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("CUDA device 0 memory but recvbuff is CUDA device 1"),
            "{e}"
        );
        // An empty buffer is never touched, whatever kind it claims.
        let empty_dev = Span::in_memory(std::ptr::null(), 0, MemKind::Cuda { device: 0 });
        assert_eq!(
            one_memory([("a", host), ("b", empty_dev)]).unwrap(),
            MemKind::Host
        );
    }
}
