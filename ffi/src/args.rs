//! Argument checks of the C calls: streams, counts (with overflow checks), output
//! pointers, ranks (the buffer checks every front end shares are in `dmsc_rs::call`). Each failure is a `dmscInvalidArgument` whose message names the
//! argument.

use crate::guard::{Ctx, FfiError, Res};
use crate::types::c_name;
use dmsc_core::engine::MemKind;
use dmsc_rs::DataType;
use std::ffi::{c_int, c_void};

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

/// The rank argument `name` (rank, excluded rank) of function `f`, in `0 .. nranks`.
pub(crate) fn rank_arg(f: &str, name: &str, v: c_int, nranks: usize) -> Res<usize> {
    dmsc_rs::call::rank_arg(name, v, nranks).ctx(f)
}

/// The stream argument of function `f`, for a call whose buffers are in `memory`: NULL
/// (host-synchronous, or the default stream) always; a stream only for CUDA device buffers,
/// which only a build with the `cuda` feature recognises.
pub(crate) fn stream_arg(f: &str, stream: *mut c_void, memory: MemKind) -> Res<()> {
    if stream.is_null() || memory != MemKind::Host {
        return Ok(());
    }
    let why = if cfg!(feature = "cuda") {
        "but the buffers are host memory: a stream orders calls on CUDA device buffers"
    } else {
        "but this libdmsc was built without the CUDA transport (feature `cuda`), so buffers \
         are host memory"
    };
    Err(FfiError::invalid(
        f,
        format_args!("stream is {stream:p}, not NULL, {why}; pass NULL for host buffers"),
    ))
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
    fn ranks_streams_outputs() {
        assert_eq!(rank_arg("f", "root", 3, 4).unwrap(), 3);
        for bad in [-1, 4, c_int::MIN] {
            let e = rank_arg("dmscBroadcast", "root", bad, 4).unwrap_err();
            assert!(e.msg.starts_with("dmscBroadcast: root"), "{}", e.msg);
        }
        assert!(stream_arg("f", std::ptr::null_mut(), MemKind::Host).is_ok());
        let dev = MemKind::Cuda { device: 0 };
        assert!(stream_arg("f", 8 as *mut c_void, dev).is_ok());
        assert!(stream_arg("f", std::ptr::null_mut(), dev).is_ok());
        let e = stream_arg("dmscBarrier", 8 as *mut c_void, MemKind::Host).unwrap_err();
        assert_eq!(e.code, dmscInvalidArgument);
        assert!(
            e.msg.starts_with("dmscBarrier: stream") && e.msg.contains("CUDA"),
            "{}",
            e.msg
        );
        assert!(out::<i32>("f", "count", std::ptr::null_mut()).is_err());
    }
}
