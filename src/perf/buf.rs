//! Aligned byte buffers for the measured operations.

/// A zeroed byte buffer aligned to 64 bytes (so that every element type is aligned, as the
/// reduction kernels require).
pub struct AlignedBuf {
    raw: Vec<u8>,
    off: usize,
    len: usize,
}

impl AlignedBuf {
    /// Alignment of the first byte.
    pub const ALIGN: usize = 64;

    /// `len` zero bytes (huge pages advised from 4 MiB, see [`super::huge`]).
    pub fn new(len: usize) -> AlignedBuf {
        let mut raw = vec![0u8; len + Self::ALIGN];
        super::huge::advise(&mut raw);
        let off = raw.as_ptr().align_offset(Self::ALIGN).min(Self::ALIGN);
        AlignedBuf { raw, off, len }
    }

    /// A copy of `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> AlignedBuf {
        let mut b = AlignedBuf::new(bytes.len());
        b.bytes_mut().copy_from_slice(bytes);
        b
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.raw[self.off..self.off + self.len]
    }

    /// The bytes, mutably.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.off..self.off + self.len]
    }
}
