//! The little-endian codec every wire format of dmsc is written with: frame headers
//! ([`crate::wire`]), spray units, control messages, the rendezvous protocol, the unique id,
//! and the transports' hand-shake records. One bounds-checked [`Reader`] and the `le_*`
//! accessors for fixed layouts, so no decoder indexes past its input or spells out its own
//! byte order.

use crate::error::{Error, Result};

/// The little-endian `u16` at `b[i..i + 2]`; the caller has checked that `b` is long enough.
pub fn le_u16(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

/// The little-endian `u32` at `b[i..i + 4]`; the caller has checked that `b` is long enough.
pub fn le_u32(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// The little-endian `u64` at `b[i..i + 8]`; the caller has checked that `b` is long enough.
pub fn le_u64(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(a)
}

/// Reads little-endian fields in order from a buffer; running past its end is an error
/// naming what was being read, never a panic.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader of `buf`, which holds a `what` (for error messages: "control message").
    pub fn new(buf: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { buf, pos: 0, what }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(Error::protocol(format!(
                "{} of {} bytes ends early (truncated): {n} more bytes needed at offset {}",
                self.what,
                self.buf.len(),
                self.pos
            )));
        };
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next byte.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    /// The next little-endian `u16`.
    pub fn u16(&mut self) -> Result<u16> {
        Ok(le_u16(self.take(2)?, 0))
    }

    /// The next little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(le_u32(self.take(4)?, 0))
    }

    /// The next little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(le_u64(self.take(8)?, 0))
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Where the next read starts.
    pub fn position(&self) -> usize {
        self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_in_order_and_running_out_is_an_error_naming_the_input() {
        let b = [1u8, 2, 0, 3, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0];
        let mut r = Reader::new(&b, "test record");
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(r.u16().unwrap(), 2);
        assert_eq!(r.u32().unwrap(), 3);
        assert_eq!(r.remaining(), 7);
        let e = r.u64().unwrap_err().to_string();
        assert!(e.contains("test record of 14 bytes ends early"), "{e}");
        assert_eq!(le_u64(&[9, 0, 0, 0, 0, 0, 0, 0], 0), 9);
    }
}
