//! A staged call cut into pieces along its elements, so its staging pipelines: the
//! device-to-host copy of piece `k + 1` runs while piece `k`'s host collective is on the
//! network, and piece `k`'s copy back runs while piece `k + 1` is (see `stager`).
//!
//! Only the collectives that treat every element alike and index all their buffers the same
//! way are cut: all-reduce, broadcast and reduce (with any operator, `PreMulSum`'s factor
//! included). Piece `k` is the same collective on elements `k * n .. (k + 1) * n` of every
//! buffer, so the pieces together compute exactly what the whole call does. The other
//! kinds (whose buffers hold one block per rank: all-gather, reduce-scatter, all-to-all,
//! gather, scatter; all-to-all-v; send/receive groups) are one piece: their whole buffers
//! are staged before the collective runs, and copied back after it. This is the chunking of
//! NCCL's pipelined ring over its staging buffers, at the granularity of whole collectives
//! (NCCL's design docs; read for design only).
//!
//! Every rank must cut a call alike, or their jobs would not match: the cut depends only on
//! the call's description and the communicator's staging chunk, the same on every rank, and
//! it requires that every rank passes device buffers for the call (as NCCL does).

use super::staged::Twin;
use crate::call::{Call, Span};
use dmsc_core::CollKind;
use std::ops::Range;

/// One piece of a staged call.
#[derive(Debug)]
pub(crate) struct Piece {
    /// The call on this piece's part of the host twins.
    pub call: Call,
    /// The bytes of every twin (the same range of each) this piece reads and writes.
    pub bytes: Range<usize>,
}

/// `call` (on host twins of `twins`) in pieces of about `chunk` bytes (at least one element
/// each); one piece, the whole call with `bytes` covering every twin, when it cannot be cut.
pub(crate) fn pieces(call: &Call, twins: &[Twin], chunk: usize) -> Vec<Piece> {
    let whole = || {
        vec![Piece {
            call: call.clone(),
            bytes: 0..twins.iter().map(|t| t.len).max().unwrap_or(0),
        }]
    };
    let Call::Collective {
        desc,
        input,
        output,
        factor,
    } = call
    else {
        return whole();
    };
    if !matches!(
        desc.kind,
        CollKind::AllReduce | CollKind::Broadcast | CollKind::Reduce
    ) {
        return whole();
    }
    let es = desc.dtype.size();
    let total = desc.count * es;
    // Every buffer with data holds at least the whole count (the call's builder checked
    // it); a longer one is cut like the others, so that every rank cuts the call into the same
    // pieces whatever the lengths of its own buffers (a reduce root with an oversized
    // output and ranks without one).
    let spans = input.iter().chain([output]);
    if es == 0 || spans.clone().any(|s| s.len != 0 && s.len < total) {
        return whole();
    }
    let per = (chunk / es).max(1);
    if per >= desc.count {
        return whole();
    }
    let cut = |s: Span, off: usize, len: usize| if s.len == 0 { s } else { s.sub(off, len) };
    (0..desc.count.div_ceil(per))
        .map(|k| {
            let n = per.min(desc.count - k * per);
            let (off, len) = (k * per * es, n * es);
            let mut d = *desc;
            d.count = n;
            Piece {
                call: Call::Collective {
                    desc: d,
                    input: input.map(|i| cut(i, off, len)),
                    output: cut(*output, off, len),
                    factor: *factor,
                },
                bytes: off..off + len,
            }
        })
        .collect()
}

/// The part of twin `t` in piece bytes `r` (empty where the twin is shorter: a twin of a
/// piece that is the whole call, or an empty buffer).
pub(crate) fn part(t: &Twin, r: &Range<usize>) -> Range<usize> {
    r.start.min(t.len)..r.end.min(t.len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{CollArgs, Names, Shape};
    use dmsc_core::engine::MemKind;
    use dmsc_core::{DataType, ReduceOp};

    fn call(kind: CollKind, rank: usize, count: usize, in_place: bool) -> Call {
        let dev = |a: usize, blocks: usize| {
            Span::in_memory(a as *const u8, blocks * count * 4, MemKind::Host)
        };
        let (ib, ob) = match kind {
            CollKind::AllGather => (1, 2),
            CollKind::ReduceScatter => (2, 1),
            _ => (1, 1),
        };
        let args = CollArgs {
            kind,
            dtype: DataType::Float32,
            op: ReduceOp::Sum,
            root: 0,
            input: (!in_place).then(|| dev(0x1000, ib)),
            output: dev(0x10_0000, ob),
            count: Some(count),
            factor: None,
        };
        Call::collective(Shape { rank, size: 2 }, args, &Names::RUST).unwrap()
    }

    fn twins(c: &Call) -> Vec<Twin> {
        let Call::Collective { input, output, .. } = c else {
            unreachable!()
        };
        input
            .iter()
            .chain([output])
            .map(|s| Twin {
                dev: 0,
                host: s.ptr,
                len: s.len,
                written: true,
            })
            .collect()
    }

    #[test]
    fn elementwise_collectives_are_cut_into_pieces_that_tile_every_buffer() {
        for kind in [CollKind::AllReduce, CollKind::Broadcast, CollKind::Reduce] {
            for rank in [0, 1] {
                for in_place in [false, true] {
                    let c = call(kind, rank, 37, in_place);
                    let ps = pieces(&c, &twins(&c), 40);
                    assert_eq!(ps.len(), 4, "{kind} rank {rank} in place {in_place}");
                    let mut next = 0;
                    for p in &ps {
                        assert_eq!(p.bytes.start, next);
                        next = p.bytes.end;
                        let Call::Collective {
                            desc,
                            input,
                            output,
                            ..
                        } = &p.call
                        else {
                            panic!("a piece changed kind")
                        };
                        assert_eq!(desc.count * 4, p.bytes.len());
                        for s in input.iter().chain([output]).filter(|s| s.len > 0) {
                            assert_eq!(s.len, p.bytes.len());
                        }
                        if output.len > 0 {
                            assert_eq!(output.addr(), 0x10_0000 + p.bytes.start);
                        }
                    }
                    assert_eq!(next, 37 * 4);
                }
            }
        }
    }

    #[test]
    fn block_collectives_and_small_calls_stay_whole() {
        for kind in [CollKind::AllGather, CollKind::ReduceScatter] {
            let c = call(kind, 0, 37, false);
            let ps = pieces(&c, &twins(&c), 40);
            assert_eq!(ps.len(), 1, "{kind}");
            assert_eq!(
                ps[0].bytes,
                0..twins(&c).iter().map(|t| t.len).max().unwrap()
            );
        }
        let c = call(CollKind::AllReduce, 0, 10, false);
        assert_eq!(pieces(&c, &twins(&c), 40).len(), 1);
        // A chunk below one element still makes pieces of one element.
        let c = call(CollKind::AllReduce, 0, 3, false);
        assert_eq!(pieces(&c, &twins(&c), 1).len(), 3);
    }
}
