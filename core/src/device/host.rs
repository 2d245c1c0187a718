//! The host device: dmsc's CPU kernels on host memory.

use super::{Device, DeviceBuffer};
use crate::engine::memory::MemKind;
use crate::error::{Error, Result};
use crate::reduce;
use crate::types::{DataType, ReduceOp};

/// Copies, reductions and checksums on the CPU ([`crate::reduce`]'s kernels).
#[derive(Clone, Copy, Debug, Default)]
pub struct HostDevice;

impl Device for HostDevice {
    fn name(&self) -> &'static str {
        "host"
    }

    fn kind(&self) -> MemKind {
        MemKind::Host
    }

    fn alloc(&mut self, len: usize) -> Result<DeviceBuffer> {
        let mut words = vec![0u64; len.div_ceil(8).max(1)].into_boxed_slice();
        let ptr = words.as_mut_ptr() as *mut u8;
        // SAFETY: the boxed slice holds at least `len` bytes, 8-byte aligned, and moving the
        // box into the buffer does not move its heap memory.
        Ok(unsafe { DeviceBuffer::from_raw(ptr, len, MemKind::Host, Box::new(words)) })
    }

    unsafe fn copy(&mut self, dst: *mut u8, src: *const u8, n: usize) -> Result<()> {
        if n > 0 && !std::ptr::eq(dst, src) {
            // SAFETY: the caller guarantees both ranges; `copy` tolerates overlap.
            unsafe { std::ptr::copy(src, dst, n) };
        }
        Ok(())
    }

    unsafe fn reduce_into(
        &mut self,
        dtype: DataType,
        op: ReduceOp,
        dst: *mut u8,
        a: *const u8,
        b: *const u8,
        n: usize,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let overlap = |p: *const u8, q: *const u8| {
            let (p, q) = (p as usize, q as usize);
            p < q + n && q < p + n
        };
        if overlap(dst, b) || (!std::ptr::eq(dst, a) && overlap(dst, a)) {
            return Err(Error::internal("reduction operands overlap"));
        }
        // SAFETY: the caller guarantees the three ranges; `dst` is either exactly `a` (then
        // only the in-place kernel sees it, once, mutably) or disjoint from both.
        unsafe {
            let out = std::slice::from_raw_parts_mut(dst, n);
            let second = std::slice::from_raw_parts(b, n);
            if std::ptr::eq(dst, a) {
                reduce::reduce_in_place(dtype, op, out, second)
            } else {
                reduce::reduce_into(dtype, op, out, std::slice::from_raw_parts(a, n), second)
            }
        }
    }

    unsafe fn scale_div(
        &mut self,
        dtype: DataType,
        dst: *mut u8,
        n: usize,
        divisor: usize,
    ) -> Result<()> {
        // SAFETY: the caller guarantees the range.
        reduce::scale_div(
            dtype,
            unsafe { std::slice::from_raw_parts_mut(dst, n) },
            divisor,
        )
    }

    unsafe fn scale_mul(
        &mut self,
        dtype: DataType,
        dst: *mut u8,
        src: *const u8,
        n: usize,
        factor: f64,
    ) -> Result<()> {
        if n == 0 {
            // Nothing to read: the pointers may be dangling or NULL.
            return Ok(());
        }
        let s = if std::ptr::eq(dst, src) {
            None
        } else {
            // SAFETY: the caller guarantees the range, which does not overlap `dst`'s.
            Some(unsafe { std::slice::from_raw_parts(src, n) })
        };
        // SAFETY: the caller guarantees the range; when it is `src`'s, only this view of it
        // is made.
        let d = unsafe { std::slice::from_raw_parts_mut(dst, n) };
        reduce::scale_mul(dtype, d, s, factor)
    }

    unsafe fn crc32c(&mut self, src: *const u8, n: usize) -> Result<u32> {
        // SAFETY: the caller guarantees the range.
        Ok(crc32c::crc32c(unsafe {
            std::slice::from_raw_parts(src, n)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_kernels_reduce_in_place_and_out_of_place() {
        let mut d = HostDevice;
        let a = [1f32, 2.0, 3.0];
        let b = [10f32, 20.0, 30.0];
        let mut out = [0f32; 3];
        unsafe {
            d.reduce_into(
                DataType::Float32,
                ReduceOp::Sum,
                out.as_mut_ptr() as *mut u8,
                a.as_ptr() as *const u8,
                b.as_ptr() as *const u8,
                12,
            )
            .unwrap();
        }
        assert_eq!(out, [11.0, 22.0, 33.0]);
        let p = out.as_mut_ptr() as *mut u8;
        unsafe {
            d.reduce_into(
                DataType::Float32,
                ReduceOp::Max,
                p,
                p,
                b.as_ptr() as *const u8,
                12,
            )
            .unwrap();
            d.scale_div(DataType::Float32, p, 12, 11).unwrap();
        }
        assert_eq!(out, [1.0, 2.0, 3.0]);
        // Overlapping operands are refused, not computed.
        let e = unsafe { d.reduce_into(DataType::Float32, ReduceOp::Sum, p, p, p, 12) };
        assert!(e.is_err());
    }

    #[test]
    fn allocations_are_aligned_and_checksums_match_the_crate() {
        let mut d = HostDevice;
        let b = d.alloc(13).unwrap();
        assert_eq!(b.ptr() as usize % 8, 0);
        assert_eq!(b.len(), 13);
        let data = b"123456789";
        assert_eq!(unsafe { d.crc32c(data.as_ptr(), 9) }.unwrap(), 0xe306_9283);
    }
}
