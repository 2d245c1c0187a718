//! A single-producer single-consumer byte ring in shared memory.
//!
//! The classic Lamport ring (L. Lamport, "Proving the correctness of multiprocess programs",
//! 1977; the layout of Linux's `kfifo` and of Open MPI vader's per-peer FIFOs): two
//! monotonically increasing 64-bit positions, `head` (bytes consumed, written only by the
//! consumer) and `tail` (bytes produced, written only by the producer), each on its own
//! cache line, and a power-of-two byte buffer indexed by position modulo its size.
//!
//! Orderings: the producer copies bytes into the buffer, then stores `tail` with `Release`;
//! the consumer loads `tail` with `Acquire` before reading those bytes, then stores `head`
//! with `Release` once it has copied them out; the producer loads `head` with `Acquire`
//! before reusing that space. Each position has exactly one writer, so no read-modify-write
//! is needed, and positions never wrap in practice (2^64 bytes).
//!
//! The ring never trusts the other process: a `tail` that runs ahead of `head` by more than
//! the capacity, or a `head` beyond `tail`, is reported as a corrupt ring instead of being
//! used to index memory.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of one ring's control block: `head` and `tail`, each on its own 128-byte line
/// (two lines, as adjacent-line prefetchers pair them).
pub(crate) const CONTROL_BYTES: usize = 256;

/// A view of one ring inside a mapped segment.
pub(crate) struct Ring {
    head: *const AtomicU64,
    tail: *const AtomicU64,
    buf: *mut u8,
    cap: usize,
    /// This side's cached copy of the position the other side writes.
    cached: u64,
}

// SAFETY: a Ring is a view into a shared mapping that outlives it (the segment owns the
// mapping and the ring borrows it for the transport's life); only one thread drives it.
unsafe impl Send for Ring {}

/// The other side broke the ring's invariants.
#[derive(Debug)]
pub(crate) struct Corrupt(pub String);

impl Ring {
    /// A view of the ring whose control block starts at `base` and whose `cap` data bytes
    /// follow it.
    ///
    /// # Safety
    /// `base` must be 128-byte aligned and valid for reads and writes of
    /// `CONTROL_BYTES + cap` bytes for as long as the ring is used; `cap` must be a power of
    /// two. Exactly one process may produce into the ring and one consume from it.
    pub(crate) unsafe fn new(base: *mut u8, cap: usize) -> Ring {
        debug_assert!(cap.is_power_of_two());
        debug_assert_eq!(base as usize % 128, 0);
        Ring {
            head: base as *const AtomicU64,
            // SAFETY (pointer arithmetic): inside the control block, per the contract.
            tail: unsafe { base.add(128) } as *const AtomicU64,
            // SAFETY (pointer arithmetic): the data bytes follow the control block.
            buf: unsafe { base.add(CONTROL_BYTES) },
            cap,
            cached: 0,
        }
    }

    fn head(&self) -> &AtomicU64 {
        // SAFETY: aligned, inside the live mapping (`Ring::new`'s contract); AtomicU64 has
        // the layout of u64, and all access to it from either process is atomic.
        unsafe { &*self.head }
    }

    fn tail(&self) -> &AtomicU64 {
        // SAFETY: as in `head`.
        unsafe { &*self.tail }
    }

    /// Producer: bytes that can be written now.
    pub(crate) fn free(&mut self) -> Result<usize, Corrupt> {
        let tail = self.tail().load(Ordering::Relaxed);
        let head = self.head().load(Ordering::Acquire);
        self.cached = head;
        let used = tail
            .checked_sub(head)
            .filter(|&u| u <= self.cap as u64)
            .ok_or_else(|| {
                Corrupt(format!(
                    "ring consumer position {head} is ahead of producer position {tail}"
                ))
            })?;
        Ok(self.cap - used as usize)
    }

    /// Producer: copy as much of `iov` as fits, publish it, and return the byte count.
    ///
    /// # Safety
    /// Every `(ptr, len)` of `iov` must be valid for reads of `len` bytes.
    pub(crate) unsafe fn write(&mut self, iov: &[(*const u8, usize)]) -> Result<usize, Corrupt> {
        let mut room = self.free()?;
        let start = self.tail().load(Ordering::Relaxed);
        let mut pos = start;
        for &(p, len) in iov {
            let n = len.min(room);
            // SAFETY: `p` is readable for `len >= n` bytes (contract); `copy_in` writes `n`
            // bytes of free ring space.
            unsafe { self.copy_in(pos, p, n) };
            pos += n as u64;
            room -= n;
            if n < len || room == 0 {
                break;
            }
        }
        if pos != start {
            self.tail().store(pos, Ordering::Release);
        }
        Ok((pos - start) as usize)
    }

    /// Consumer: bytes that can be read now.
    pub(crate) fn available(&mut self) -> Result<usize, Corrupt> {
        let head = self.head().load(Ordering::Relaxed);
        let tail = self.tail().load(Ordering::Acquire);
        self.cached = tail;
        let used = tail
            .checked_sub(head)
            .filter(|&u| u <= self.cap as u64)
            .ok_or_else(|| {
                Corrupt(format!(
                    "ring producer position {tail} is not within one ring of consumer position {head}"
                ))
            })?;
        Ok(used as usize)
    }

    /// Consumer: true when bytes may be waiting (a cheap check before blocking).
    pub(crate) fn readable(&mut self) -> bool {
        self.available().map_or(true, |n| n > 0)
    }

    /// Consumer: copy up to the sum of `iov`'s lengths into it, release the space, and
    /// return the byte count.
    ///
    /// # Safety
    /// Every `(ptr, len)` of `iov` must be valid for writes of `len` bytes and not overlap
    /// the ring.
    pub(crate) unsafe fn read(&mut self, iov: &[(*mut u8, usize)]) -> Result<usize, Corrupt> {
        let mut have = self.available()?;
        let start = self.head().load(Ordering::Relaxed);
        let mut pos = start;
        for &(p, len) in iov {
            let n = len.min(have);
            // SAFETY: `p` is writable for `len >= n` bytes (contract); `copy_out` reads `n`
            // published bytes.
            unsafe { self.copy_out(pos, p, n) };
            pos += n as u64;
            have -= n;
            if n < len || have == 0 {
                break;
            }
        }
        if pos != start {
            self.head().store(pos, Ordering::Release);
        }
        Ok((pos - start) as usize)
    }

    /// Copy `n` bytes from `src` into the ring at position `pos`, wrapping at the end.
    ///
    /// # Safety
    /// `src` readable for `n` bytes; `[pos, pos + n)` free ring space.
    unsafe fn copy_in(&self, pos: u64, src: *const u8, n: usize) {
        let at = (pos as usize) & (self.cap - 1);
        let first = n.min(self.cap - at);
        // SAFETY: at + first <= cap and the rest wraps to the buffer's start; the ring
        // buffer and `src` (caller memory) are distinct.
        unsafe {
            std::ptr::copy_nonoverlapping(src, self.buf.add(at), first);
            std::ptr::copy_nonoverlapping(src.add(first), self.buf, n - first);
        }
    }

    /// Copy `n` bytes at position `pos` out of the ring to `dst`, wrapping at the end.
    ///
    /// # Safety
    /// `dst` writable for `n` bytes; `[pos, pos + n)` published ring bytes.
    unsafe fn copy_out(&self, pos: u64, dst: *mut u8, n: usize) {
        let at = (pos as usize) & (self.cap - 1);
        let first = n.min(self.cap - at);
        // SAFETY: as in `copy_in`, in the other direction.
        unsafe {
            std::ptr::copy_nonoverlapping(self.buf.add(at), dst, first);
            std::ptr::copy_nonoverlapping(self.buf, dst.add(first), n - first);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring over heap memory, 128-byte aligned.
    fn heap_ring(cap: usize) -> (Vec<u128>, Ring, Ring) {
        let mut mem = vec![0u128; (CONTROL_BYTES + cap) / 16 + 8];
        let p = mem.as_mut_ptr() as *mut u8;
        let base = unsafe { p.add(p.align_offset(128)) };
        // SAFETY: the vector outlives both views in every test below.
        let (a, b) = unsafe { (Ring::new(base, cap), Ring::new(base, cap)) };
        (mem, a, b)
    }

    #[test]
    fn bytes_arrive_in_order_across_the_wrap() {
        let (_mem, mut tx, mut rx) = heap_ring(64);
        let mut next_in = 0u8;
        let mut next_out = 0u8;
        for round in 0..200usize {
            let len = 1 + round % 50;
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    next_in = next_in.wrapping_add(1);
                    next_in
                })
                .collect();
            let mut sent = 0;
            while sent < len {
                let n = unsafe { tx.write(&[(data[sent..].as_ptr(), len - sent)]) }.unwrap();
                sent += n;
                let mut got = vec![0u8; 37];
                let m = unsafe { rx.read(&[(got.as_mut_ptr(), 37)]) }.unwrap();
                for &b in &got[..m] {
                    next_out = next_out.wrapping_add(1);
                    assert_eq!(b, next_out);
                }
            }
        }
        let mut rest = vec![0u8; 64];
        let m = unsafe { rx.read(&[(rest.as_mut_ptr(), 64)]) }.unwrap();
        for &b in &rest[..m] {
            next_out = next_out.wrapping_add(1);
            assert_eq!(b, next_out);
        }
        assert_eq!(next_in, next_out);
    }

    #[test]
    fn a_full_ring_takes_nothing_and_scatter_reads_fill_in_order() {
        let (_mem, mut tx, mut rx) = heap_ring(16);
        let a = [1u8; 10];
        let b = [2u8; 10];
        let n = unsafe { tx.write(&[(a.as_ptr(), 10), (b.as_ptr(), 10)]) }.unwrap();
        assert_eq!(n, 16);
        assert_eq!(unsafe { tx.write(&[(a.as_ptr(), 1)]) }.unwrap(), 0);
        let (mut x, mut y) = ([0u8; 4], [0u8; 20]);
        let m = unsafe { rx.read(&[(x.as_mut_ptr(), 4), (y.as_mut_ptr(), 20)]) }.unwrap();
        assert_eq!(m, 16);
        assert_eq!(x, [1; 4]);
        assert_eq!(&y[..6], &[1; 6]);
        assert_eq!(&y[6..12], &[2; 6]);
    }

    #[test]
    fn corrupt_positions_are_errors_not_indices() {
        let (_mem, mut tx, mut rx) = heap_ring(16);
        tx.tail().store(1000, Ordering::Relaxed);
        assert!(rx.available().is_err());
        assert!(tx.free().is_err());
        let mut d = [0u8; 4];
        assert!(unsafe { rx.read(&[(d.as_mut_ptr(), 4)]) }.is_err());
    }
}
