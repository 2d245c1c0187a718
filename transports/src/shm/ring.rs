//! A single-producer single-consumer ring of stamped records in shared memory.
//!
//! The ring carries a byte stream, as a socket does, cut into records. A record starts at a
//! position that is a multiple of [`ALIGN`] with a 16-byte header (a stamp and the payload
//! length) and is followed by its payload; the next record starts at the next multiple of
//! [`ALIGN`]. The stamp is the record's own position plus one, stored last with `Release`, so
//! the consumer learns that a record is complete by reading the very line that holds it:
//! there is no shared `tail` word to read first, and a small frame reaches the peer as one
//! 128-byte line pair (Open MPI vader's "fast boxes" poll the message itself for the same
//! reason; the positions follow Lamport's ring, L. Lamport, "Proving the correctness of
//! multiprocess programs", 1977, and Linux's `kfifo`).
//!
//! Positions only grow (2^64 bytes never wrap in practice) and index the power-of-two buffer
//! modulo its size. The consumer publishes `head`, the position up to which it has consumed
//! whole records, on a line of its own; the producer keeps its own position privately and
//! reloads `head` only when its last view of it leaves too little room.
//!
//! Orderings: the producer zeroes the stamp word where its *next* record will start, copies
//! the payload, writes the length, then stores the stamp with `Release`; the consumer loads
//! the stamp with `Acquire` before reading the length and the payload, and stores `head`
//! with `Release` once it has copied a record out; the producer loads `head` with `Acquire`
//! before reusing that space. The zeroed next stamp is what keeps stale bytes from passing
//! for a record: the word the consumer polls was cleared before the record it follows was
//! published, so it holds either zero or a new stamp, never a byte of an earlier lap's payload
//! that happens to equal the position. For that, the producer always leaves one
//! [`ALIGN`] slot free.
//!
//! The ring never trusts the other process: a `head` outside what was produced, off
//! alignment, or a record length larger than the ring is reported as a corrupt ring instead
//! of being used to index memory; every copy stays inside the ring's buffer.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Bytes of one ring's control block: `head` on its own 128-byte line pair, and a second
/// pair kept free (adjacent-line prefetchers fetch 128-byte pairs).
pub(crate) const CONTROL_BYTES: usize = 256;
/// Records start at multiples of this (one line pair).
pub(crate) const ALIGN: usize = 128;
/// Bytes of a record's header: the stamp (u64) and the payload length (u32), padded.
const RECORD_HEADER: usize = 16;

/// Span in the ring of a record with `len` payload bytes.
fn span(len: usize) -> usize {
    (RECORD_HEADER + len).next_multiple_of(ALIGN)
}

/// A view of one ring inside a mapped segment, as its producer or its consumer.
pub(crate) struct Ring {
    head: *const AtomicU64,
    buf: *mut u8,
    cap: usize,
    /// Producer: where the next record goes. Consumer: where the current record starts.
    pos: u64,
    /// Producer: the consumer's `head` as last loaded.
    seen_head: u64,
    /// Consumer: payload length and bytes already copied of the record at `pos`, once its
    /// stamp was seen.
    current: Option<(usize, usize)>,
}

// SAFETY: a Ring is a view into a shared mapping that outlives it (the segment owns the
// mapping and the ring borrows it for the transport's life); only one thread drives it.
unsafe impl Send for Ring {}

/// The other side broke the ring's invariants.
#[derive(Debug)]
pub(crate) struct Corrupt(pub String);

impl Ring {
    /// A view of the ring whose control block starts at `base` and whose `cap` data bytes
    /// follow it. Each ring has one producer view and one consumer view, each made once.
    ///
    /// # Safety
    /// `base` must be 128-byte aligned and valid for reads and writes of
    /// `CONTROL_BYTES + cap` bytes for as long as the ring is used, and zeroed before either
    /// side first uses it; `cap` must be a power of two of at least `2 * ALIGN`. Exactly one
    /// process may produce into the ring and one consume from it.
    pub(crate) unsafe fn new(base: *mut u8, cap: usize) -> Ring {
        debug_assert!(cap.is_power_of_two() && cap >= 2 * ALIGN);
        debug_assert_eq!(base as usize % 128, 0);
        Ring {
            head: base as *const AtomicU64,
            // SAFETY (pointer arithmetic): the data bytes follow the control block.
            buf: unsafe { base.add(CONTROL_BYTES) },
            cap,
            pos: 0,
            seen_head: 0,
            current: None,
        }
    }

    fn head(&self) -> &AtomicU64 {
        // SAFETY: aligned, inside the live mapping (`Ring::new`'s contract); AtomicU64 has
        // the layout of u64, and all access to it from either process is atomic.
        unsafe { &*self.head }
    }

    /// The stamp word of the record starting at `pos`.
    fn stamp(&self, pos: u64) -> &AtomicU64 {
        let at = (pos as usize) & (self.cap - 1);
        // SAFETY: `pos` is a multiple of ALIGN and the buffer a multiple of it, so the
        // 16-byte header lies inside the buffer, 8-byte aligned (the buffer is 128-byte
        // aligned); both sides access the stamp only atomically.
        unsafe { &*(self.buf.add(at) as *const AtomicU64) }
    }

    /// The length word of the record starting at `pos`.
    fn len_word(&self, pos: u64) -> &AtomicU32 {
        let at = (pos as usize) & (self.cap - 1);
        // SAFETY: as in `stamp`, 8 bytes further.
        unsafe { &*(self.buf.add(at + 8) as *const AtomicU32) }
    }

    /// Producer: bytes of the ring not yet given back by the consumer, after reloading its
    /// position.
    fn reload_room(&mut self) -> Result<usize, Corrupt> {
        let head = self.head().load(Ordering::Acquire);
        if head < self.seen_head || head > self.pos || !head.is_multiple_of(ALIGN as u64) {
            return Err(Corrupt(format!(
                "ring consumer position {head} is outside [{}, {}] or off alignment",
                self.seen_head, self.pos
            )));
        }
        self.seen_head = head;
        Ok(self.room())
    }

    /// Producer: free bytes by the last view of `head`, less the slot always left free.
    fn room(&self) -> usize {
        (self.cap - (self.pos - self.seen_head) as usize).saturating_sub(ALIGN)
    }

    /// Producer: payload bytes that one record could carry now.
    pub(crate) fn free(&mut self) -> Result<usize, Corrupt> {
        Ok(self.reload_room()?.saturating_sub(RECORD_HEADER))
    }

    /// Producer: copy as much of `iov` as fits into one record, publish it, and return the
    /// byte count.
    ///
    /// # Safety
    /// Every `(ptr, len)` of `iov` must be valid for reads of `len` bytes.
    pub(crate) unsafe fn write(&mut self, iov: &[(*const u8, usize)]) -> Result<usize, Corrupt> {
        let want: usize = iov.iter().map(|&(_, l)| l).sum();
        if want == 0 {
            return Ok(0);
        }
        let mut room = self.room();
        if room < span(want) {
            room = self.reload_room()?;
        }
        let len = want.min(room.saturating_sub(RECORD_HEADER));
        if len == 0 {
            return Ok(0);
        }
        let start = self.pos;
        let next = start + span(len) as u64;
        // The next record's stamp word lies in the slot `room` keeps free; cleared before
        // this record is published, it can only read as zero or as that record's stamp.
        self.stamp(next).store(0, Ordering::Relaxed);
        let mut at = start + RECORD_HEADER as u64;
        let mut left = len;
        for &(p, l) in iov {
            let n = l.min(left);
            // SAFETY: `p` is readable for `l >= n` bytes (contract); the record's span is
            // free ring space.
            unsafe { self.copy_in(at, p, n) };
            at += n as u64;
            left -= n;
            if left == 0 {
                break;
            }
        }
        self.len_word(start).store(len as u32, Ordering::Relaxed);
        self.stamp(start).store(start + 1, Ordering::Release);
        self.pos = next;
        Ok(len)
    }

    /// Consumer: the payload length and bytes consumed of the record at `pos`, once it is
    /// published.
    fn current(&mut self) -> Result<Option<(usize, usize)>, Corrupt> {
        if self.current.is_none() && self.stamp(self.pos).load(Ordering::Acquire) == self.pos + 1 {
            let len = self.len_word(self.pos).load(Ordering::Relaxed) as usize;
            if len == 0 || span(len) > self.cap - ALIGN {
                return Err(Corrupt(format!(
                    "a record at ring position {} claims {len} bytes in a ring of {}",
                    self.pos, self.cap
                )));
            }
            self.current = Some((len, 0));
        }
        Ok(self.current)
    }

    /// Consumer: true when bytes may be waiting (a cheap check before blocking).
    pub(crate) fn readable(&mut self) -> bool {
        self.current().map_or(true, |c| c.is_some())
    }

    /// Consumer: copy up to the sum of `iov`'s lengths into it, release the space of every
    /// record fully copied, and return the byte count.
    ///
    /// # Safety
    /// Every `(ptr, len)` of `iov` must be valid for writes of `len` bytes and not overlap
    /// the ring.
    pub(crate) unsafe fn read(&mut self, iov: &[(*mut u8, usize)]) -> Result<usize, Corrupt> {
        let mut total = 0;
        let mut iov = iov.iter().copied().filter(|&(_, l)| l > 0);
        let mut dst = iov.next();
        while let Some((p, l)) = dst {
            let Some((len, done)) = self.current()? else {
                break;
            };
            let n = l.min(len - done);
            // SAFETY: `p` is writable for `l >= n` bytes (contract); the bytes are the
            // published payload of the current record.
            unsafe {
                self.copy_out(self.pos + (RECORD_HEADER + done) as u64, p, n);
            }
            total += n;
            dst = if n == l {
                iov.next()
            } else {
                // SAFETY (pointer arithmetic): inside the caller's buffer.
                Some((unsafe { p.add(n) }, l - n))
            };
            if done + n == len {
                self.pos += span(len) as u64;
                self.current = None;
                self.head().store(self.pos, Ordering::Release);
            } else {
                self.current = Some((len, done + n));
            }
        }
        Ok(total)
    }

    /// Copy `n` bytes from `src` into the ring at position `pos`, wrapping at the end.
    ///
    /// # Safety
    /// `src` readable for `n` bytes; `[pos, pos + n)` free ring space, `n <= cap`.
    unsafe fn copy_in(&self, pos: u64, src: *const u8, n: usize) {
        let at = (pos as usize) & (self.cap - 1);
        let first = n.min(self.cap - at);
        // SAFETY: at + first <= cap and the rest (n - first <= cap - first) wraps to the
        // buffer's start; the ring buffer and `src` (caller memory) are distinct.
        unsafe {
            std::ptr::copy_nonoverlapping(src, self.buf.add(at), first);
            std::ptr::copy_nonoverlapping(src.add(first), self.buf, n - first);
        }
    }

    /// Copy `n` bytes at position `pos` out of the ring to `dst`, wrapping at the end.
    ///
    /// # Safety
    /// `dst` writable for `n` bytes; `[pos, pos + n)` published ring bytes, `n <= cap`.
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

    /// A zeroed ring over heap memory, 128-byte aligned.
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
        let (_mem, mut tx, mut rx) = heap_ring(512);
        let mut next_in = 0u8;
        let mut next_out = 0u8;
        for round in 0..2000usize {
            let len = 1 + round * 7 % 400;
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
        loop {
            let mut rest = vec![0u8; 64];
            let m = unsafe { rx.read(&[(rest.as_mut_ptr(), 64)]) }.unwrap();
            if m == 0 {
                break;
            }
            for &b in &rest[..m] {
                next_out = next_out.wrapping_add(1);
                assert_eq!(b, next_out);
            }
        }
        assert_eq!(next_in, next_out);
        assert!(!rx.readable());
    }

    #[test]
    fn a_full_ring_takes_nothing_and_scatter_reads_fill_in_order() {
        let (_mem, mut tx, mut rx) = heap_ring(512);
        let a = [1u8; 200];
        let b = [2u8; 200];
        // One slot stays free and each record has a header: 512 - 128 - 16 bytes fit.
        let n = unsafe { tx.write(&[(a.as_ptr(), 200), (b.as_ptr(), 200)]) }.unwrap();
        assert_eq!(n, 368);
        assert_eq!(unsafe { tx.write(&[(a.as_ptr(), 1)]) }.unwrap(), 0);
        assert_eq!(tx.free().unwrap(), 0);
        let (mut x, mut y) = ([0u8; 4], [0u8; 400]);
        let m = unsafe { rx.read(&[(x.as_mut_ptr(), 4), (y.as_mut_ptr(), 400)]) }.unwrap();
        assert_eq!(m, 368);
        assert_eq!(x, [1; 4]);
        assert_eq!(&y[..196], &[1; 196]);
        assert_eq!(&y[196..364], &[2; 168]);
        // Consumed records give their space back.
        assert_eq!(tx.free().unwrap(), 368);
    }

    #[test]
    fn a_reader_sees_a_record_only_once_it_is_whole() {
        let (_mem, mut tx, mut rx) = heap_ring(1024);
        assert!(!rx.readable());
        let msg = [7u8; 100];
        assert_eq!(unsafe { tx.write(&[(msg.as_ptr(), 100)]) }.unwrap(), 100);
        assert!(rx.readable());
        // Read in two parts: the record's space returns only after the second.
        let mut part = [0u8; 60];
        assert_eq!(unsafe { rx.read(&[(part.as_mut_ptr(), 60)]) }.unwrap(), 60);
        assert_eq!(tx.free().unwrap(), 1024 - 128 - 128 - 16);
        assert_eq!(unsafe { rx.read(&[(part.as_mut_ptr(), 60)]) }.unwrap(), 40);
        assert_eq!(tx.free().unwrap(), 1024 - 128 - 16);
        assert!(!rx.readable());
    }

    #[test]
    fn stale_payload_never_passes_for_a_record() {
        // Fill every slot with payload words equal to the stamps the reader will look for
        // on later laps; the producer's zeroing of the next stamp must hide them.
        let cap = 1024;
        let (_mem, mut tx, mut rx) = heap_ring(cap);
        for lap in 0..8u64 {
            // The word at absolute position x holds x + cap + 1: the stamp a record starting
            // at the same place one lap later will carry.
            let at = tx.pos + RECORD_HEADER as u64;
            let forged: Vec<u8> = (0..cap as u64 / 8)
                .flat_map(|i| (at + i * 8 + cap as u64 + 1).to_le_bytes())
                .collect();
            let n = unsafe { tx.write(&[(forged.as_ptr(), 700)]) }.unwrap();
            let mut got = vec![0u8; 700];
            assert_eq!(unsafe { rx.read(&[(got.as_mut_ptr(), 700)]) }.unwrap(), n);
            assert!(!rx.readable(), "stale bytes read as a record on lap {lap}");
            let small = [9u8; 3];
            assert_eq!(unsafe { tx.write(&[(small.as_ptr(), 3)]) }.unwrap(), 3);
            let mut s = [0u8; 8];
            assert_eq!(unsafe { rx.read(&[(s.as_mut_ptr(), 8)]) }.unwrap(), 3);
            assert!(!rx.readable(), "stale bytes read as a record on lap {lap}");
        }
    }

    #[test]
    fn corrupt_positions_and_lengths_are_errors_not_indices() {
        let (_mem, mut tx, mut rx) = heap_ring(512);
        tx.head().store(1000, Ordering::Relaxed);
        assert!(tx.free().is_err());
        tx.head().store(0, Ordering::Relaxed);
        // A stamped record claiming more than the ring holds.
        rx.stamp(0).store(1, Ordering::Relaxed);
        rx.len_word(0).store(1 << 20, Ordering::Relaxed);
        let mut d = [0u8; 4];
        assert!(unsafe { rx.read(&[(d.as_mut_ptr(), 4)]) }.is_err());
        rx.len_word(0).store(0, Ordering::Relaxed);
        assert!(unsafe { rx.read(&[(d.as_mut_ptr(), 4)]) }.is_err());
    }
}
