//! The shared segment of one pair of ranks: an anonymous, sealed `memfd` mapped by both.
//!
//! The higher rank of a pair creates the segment and hands its descriptor to the lower rank
//! over their authenticated Unix socket (`SCM_RIGHTS`). Nothing is ever named in a
//! filesystem, so nothing is left behind in `/dev/shm` whatever happens to either process:
//! the kernel frees the memory once the last mapping goes. The creator seals the size
//! (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`) before sending it, and the receiver checks
//! the seals and the size before mapping, so neither side can truncate the file under the
//! other's mapping (which would turn its next access into `SIGBUS`).
//!
//! Layout (every offset a multiple of 4096):
//!
//! | offset | what |
//! | --- | --- |
//! | 0 | header: magic, version, the two ranks, the communicator id, ring sizes |
//! | 1024 + 128·s | side `s`'s doorbell word ([`super::doorbell`]); side 0 is the lower rank |
//! | 4096 | four rings ([`super::ring`]): data 0→1, data 1→0, control 0→1, control 1→0 |

use super::ring::{Ring, CONTROL_BYTES};
use dmsc_core::error::{Error, Result};
use dmsc_core::wire::{le_u32, le_u64};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::AtomicU32;

const MAGIC: u64 = u64::from_le_bytes(*b"DMSCSHM1");
const VERSION: u32 = 2;
const PAGE: usize = 4096;
const RINGS_AT: usize = PAGE;
const DOORBELL_AT: usize = 1024;

/// Which ring of a pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Channel {
    /// Data frames.
    Data,
    /// Control frames.
    Control,
}

/// Ring sizes of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sizes {
    /// Bytes of each data ring (a power of two).
    pub data: usize,
    /// Bytes of each control ring (a power of two).
    pub control: usize,
}

impl Sizes {
    fn ring_span(cap: usize) -> usize {
        (CONTROL_BYTES + cap).next_multiple_of(PAGE)
    }

    fn total(&self) -> usize {
        RINGS_AT + 2 * Self::ring_span(self.data) + 2 * Self::ring_span(self.control)
    }
}

/// One mapped pair segment.
pub(crate) struct Segment {
    base: *mut u8,
    len: usize,
    sizes: Sizes,
    /// 0 for the lower rank of the pair, 1 for the higher.
    side: usize,
}

// SAFETY: the mapping is owned by the segment and only accessed through atomics (positions,
// doorbells) or by the single thread driving the transport (ring bytes).
unsafe impl Send for Segment {}

fn os_err(what: &str) -> Error {
    Error::io(what.to_string(), &std::io::Error::last_os_error())
}

impl Segment {
    /// Create the segment of the pair (`lo`, `hi`) as rank `hi`, returning it and the
    /// sealed descriptor to hand to `lo`.
    pub(crate) fn create(
        lo: u32,
        hi: u32,
        comm_id: u64,
        sizes: Sizes,
    ) -> Result<(Segment, OwnedFd)> {
        let name = c"dmsc-shm";
        // SAFETY: plain system call with a NUL-terminated name; the result is owned below.
        let fd = unsafe {
            libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if fd < 0 {
            return Err(os_err("creating a shared-memory segment (memfd_create)"));
        }
        // SAFETY: fd is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let len = sizes.total();
        // SAFETY: plain system calls on a descriptor we own.
        unsafe {
            if libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) != 0 {
                return Err(os_err("sizing a shared-memory segment"));
            }
            let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
            if libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) != 0 {
                return Err(os_err("sealing a shared-memory segment"));
            }
        }
        let seg = Segment::map(&fd, len, sizes, 1)?;
        let mut h = [0u8; 40];
        h[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&lo.to_le_bytes());
        h[16..20].copy_from_slice(&hi.to_le_bytes());
        h[20..28].copy_from_slice(&comm_id.to_le_bytes());
        h[28..32].copy_from_slice(&(sizes.data as u32).to_le_bytes());
        h[32..36].copy_from_slice(&(sizes.control as u32).to_le_bytes());
        // SAFETY: the header fits the first page of the fresh mapping, which nobody else
        // has mapped yet.
        unsafe { std::ptr::copy_nonoverlapping(h.as_ptr(), seg.base, h.len()) };
        Ok((seg, fd))
    }

    /// Map the segment `fd` received from the higher rank `hi`, as rank `lo`, after checking
    /// its seals, its size and its header.
    pub(crate) fn open(fd: &OwnedFd, lo: u32, hi: u32, comm_id: u64) -> Result<Segment> {
        // SAFETY: plain system call on a descriptor we own.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        let need = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        if seals < 0 || seals & need != need {
            return Err(Error::protocol(format!(
                "rank {hi} sent a shared-memory segment that is not sealed against resizing"
            )));
        }
        // SAFETY: fstat into a zeroed local struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(os_err("reading the size of a shared-memory segment"));
        }
        let len = st.st_size as usize;
        if len < PAGE {
            return Err(Error::protocol(format!(
                "rank {hi} sent a shared-memory segment of {len} bytes"
            )));
        }
        let probe = Segment::map(
            fd,
            PAGE,
            Sizes {
                data: 0,
                control: 0,
            },
            0,
        )?;
        let mut h = [0u8; 40];
        // SAFETY: the first page is mapped and at least 40 bytes long.
        unsafe { std::ptr::copy_nonoverlapping(probe.base, h.as_mut_ptr(), h.len()) };
        drop(probe);
        let sizes = Sizes {
            data: le_u32(&h, 28) as usize,
            control: le_u32(&h, 32) as usize,
        };
        let ok_size = |n: usize| n.is_power_of_two() && (4096..=1 << 30).contains(&n);
        if le_u64(&h, 0) != MAGIC
            || le_u32(&h, 8) != VERSION
            || le_u32(&h, 12) != lo
            || le_u32(&h, 16) != hi
            || le_u64(&h, 20) != comm_id
            || !ok_size(sizes.data)
            || !ok_size(sizes.control)
            || sizes.total() != len
        {
            return Err(Error::protocol(format!(
                "rank {hi} sent a shared-memory segment whose header does not describe the pair ({lo}, {hi}) of communicator {comm_id:#x}"
            )));
        }
        Segment::map(fd, len, sizes, 0)
    }

    fn map(fd: &OwnedFd, len: usize, sizes: Sizes, side: usize) -> Result<Segment> {
        // SAFETY: a fresh shared mapping of `len` bytes of a file at least that long (sealed
        // against shrinking); it is unmapped in Drop.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                // Populated at once: otherwise the first lap of every ring takes a page fault
                // per 4 KiB on the hot path.
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(os_err("mapping a shared-memory segment"));
        }
        Ok(Segment {
            base: p as *mut u8,
            len,
            sizes,
            side,
        })
    }

    /// The ring this side writes on `ch`.
    pub(crate) fn tx(&self, ch: Channel) -> Ring {
        self.ring(ch, self.side)
    }

    /// The ring this side reads on `ch`.
    pub(crate) fn rx(&self, ch: Channel) -> Ring {
        self.ring(ch, 1 - self.side)
    }

    /// The ring written by side `from` on `ch`.
    fn ring(&self, ch: Channel, from: usize) -> Ring {
        let d = Sizes::ring_span(self.sizes.data);
        let c = Sizes::ring_span(self.sizes.control);
        let (off, cap) = match ch {
            Channel::Data => (RINGS_AT + from * d, self.sizes.data),
            Channel::Control => (RINGS_AT + 2 * d + from * c, self.sizes.control),
        };
        debug_assert!(off + CONTROL_BYTES + cap <= self.len);
        // SAFETY: `off` is page aligned and the ring's span lies inside the mapping, which
        // the segment keeps alive as long as the transport that owns both; one side
        // produces into each ring, the other consumes.
        unsafe { Ring::new(self.base.add(off), cap) }
    }

    /// The doorbell word of side `s` (0: lower rank).
    pub(crate) fn doorbell(&self, s: usize) -> &AtomicU32 {
        // SAFETY: inside the first page, 128-byte aligned; only accessed atomically.
        unsafe { &*(self.base.add(DOORBELL_AT + 128 * s) as *const AtomicU32) }
    }

    /// This side's index (0: lower rank).
    pub(crate) fn side(&self) -> usize {
        self.side
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; no ring view outlives the
        // segment (the transport drops its rings first).
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: Sizes = Sizes {
        data: 1 << 16,
        control: 1 << 12,
    };

    #[test]
    fn both_sides_see_each_others_rings() {
        let (hi, fd) = Segment::create(2, 5, 0xabc, SIZES).unwrap();
        let lo = Segment::open(&fd, 2, 5, 0xabc).unwrap();
        let msg = *b"hello";
        assert_eq!(
            unsafe { hi.tx(Channel::Data).write(&[(msg.as_ptr(), 5)]) }.unwrap(),
            5
        );
        let mut got = [0u8; 5];
        let mut rx = lo.rx(Channel::Data);
        assert_eq!(unsafe { rx.read(&[(got.as_mut_ptr(), 5)]) }.unwrap(), 5);
        assert_eq!(&got, b"hello");
        // The control rings are distinct from the data rings.
        assert!(!lo.rx(Channel::Control).readable());
        assert!(!hi.rx(Channel::Data).readable());
    }

    #[test]
    fn a_segment_for_another_pair_or_unsealed_is_refused() {
        let (_hi, fd) = Segment::create(2, 5, 0xabc, SIZES).unwrap();
        assert!(Segment::open(&fd, 1, 5, 0xabc).is_err());
        assert!(Segment::open(&fd, 2, 5, 0xabd).is_err());
        // An unsealed file of the right size.
        let raw = unsafe { libc::memfd_create(c"x".as_ptr(), libc::MFD_CLOEXEC) };
        let plain = unsafe { OwnedFd::from_raw_fd(raw) };
        unsafe { libc::ftruncate(raw, SIZES.total() as libc::off_t) };
        let e = Segment::open(&plain, 2, 5, 0xabc)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not sealed"), "{e}");
    }
}
