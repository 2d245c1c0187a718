//! The builder of a group of sends and receives ([`Call::P2p`]): each operation's peer and
//! buffer, one element size for the group, and no receive buffer overlapping another buffer.

use super::check::{one_memory, rank_arg, usable};
use super::{Call, Shape, Span};
use dmsc_core::{DataType, Error, Result};

/// One send or receive of a group.
#[derive(Clone, Copy, Debug)]
pub struct P2pCall {
    /// Send (true) or receive.
    pub send: bool,
    /// The peer rank.
    pub peer: usize,
    /// Message tag; matched in order per peer and tag.
    pub tag: u32,
    /// The buffer.
    pub buf: Span,
    /// Element type of the buffer.
    pub dtype: DataType,
}

impl P2pCall {
    /// What the operation is, for error messages.
    fn what(&self) -> String {
        if self.send {
            format!("the send to rank {}", self.peer)
        } else {
            format!("the receive from rank {}", self.peer)
        }
    }

    /// Check the operation on its own: its peer and its buffer.
    pub fn check(&self, shape: Shape) -> Result<()> {
        rank_arg("peer", self.peer, shape.size)?;
        usable(
            &format!("the buffer of {}", self.what()),
            self.buf,
            self.dtype,
        )
    }
}

impl Call {
    /// Check a group of sends and receives and describe it. Element types may differ
    /// between operations only where their sizes agree (the wire carries elements).
    pub fn p2p(shape: Shape, ops: Vec<P2pCall>) -> Result<Call> {
        for o in &ops {
            o.check(shape)?;
        }
        let dtype = ops.first().map_or(DataType::Uint8, |o| o.dtype);
        if let Some(o) = ops.iter().find(|o| o.dtype.size() != dtype.size()) {
            return Err(Error::invalid(format!(
                "a group mixes element types {dtype} and {}; use one group per type",
                o.dtype
            )));
        }
        check_receive_overlaps(&ops)?;
        let names: Vec<String> = ops
            .iter()
            .map(|o| format!("the buffer of {}", o.what()))
            .collect();
        one_memory(
            names
                .iter()
                .map(String::as_str)
                .zip(ops.iter().map(|o| o.buf)),
        )?;
        Ok(Call::P2p { dtype, ops })
    }
}

/// A receive buffer that overlaps another buffer of the same group would be written while
/// the other operation reads or writes it (and, between ranks of one host, while a peer
/// copies from it): an argument error, never a race.
fn check_receive_overlaps(ops: &[P2pCall]) -> Result<()> {
    for (i, a) in ops.iter().enumerate().filter(|(_, a)| !a.send) {
        for (j, b) in ops.iter().enumerate() {
            if i != j && a.buf.overlaps(&b.buf) {
                return Err(Error::invalid(format!(
                    "the buffer of {} overlaps the buffer of {} in the same group",
                    a.what(),
                    b.what()
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(send: bool, b: &[u8], off: usize, len: usize, peer: usize) -> P2pCall {
        P2pCall {
            send,
            peer,
            tag: 0,
            buf: Span::new(b.as_ptr().wrapping_add(off), len),
            dtype: DataType::Uint8,
        }
    }

    #[test]
    fn receives_must_not_overlap_other_buffers() {
        let b = vec![0u8; 64];
        let shape = Shape { rank: 0, size: 3 };
        let swap = vec![op(true, &b, 0, 32, 1), op(false, &b, 16, 32, 1)];
        let e = Call::p2p(shape, swap).unwrap_err().to_string();
        assert!(
            e.contains("receive from rank 1") && e.contains("send to rank 1"),
            "{e}"
        );
        // Disjoint halves, and one buffer sent to two peers, are fine.
        let ok = vec![
            op(true, &b, 0, 32, 1),
            op(true, &b, 0, 32, 2),
            op(false, &b, 32, 32, 1),
        ];
        Call::p2p(shape, ok).unwrap();
        let e = Call::p2p(shape, vec![op(true, &b, 0, 1, 3)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("peer 3 is out of range"), "{e}");
        let mixed = vec![
            op(true, &b, 0, 8, 1),
            P2pCall {
                dtype: DataType::Float64,
                ..op(false, &b, 8, 8, 1)
            },
        ];
        let e = Call::p2p(shape, mixed).unwrap_err().to_string();
        assert!(e.contains("mixes element types"), "{e}");
        let on_gpu = P2pCall {
            buf: Span::in_memory(
                0x7f00_0000 as *const u8,
                8,
                dmsc_core::engine::MemKind::Cuda { device: 0 },
            ),
            ..op(false, &b, 8, 8, 2)
        };
        let e = Call::p2p(shape, vec![op(true, &b, 0, 8, 1), on_gpu])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "the buffer of the send to rank 1 is host memory but the buffer of the \
                 receive from rank 2 is CUDA device 0 memory"
            ),
            "{e}"
        );
    }
}
