//! A call on device buffers rewritten onto pinned host twins: which device ranges are
//! copied to the host before the host collective runs, and which are copied back after.
//!
//! Every buffer is copied in, outputs included: an output the collective writes only in part
//! (an all-to-all-v with gaps, a receive shorter than its buffer would not be, but a reduce
//! off the root is empty anyway) then goes back with its unwritten bytes unchanged. Only
//! written buffers are copied back.

use crate::call::{Call, P2pCall, Span};
use dmsc_core::Result;
use dmsc_transports::cuda::device_memory::PinnedBuffer;

/// One device buffer and its host twin.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Twin {
    /// Device address.
    pub dev: usize,
    /// Host twin (pinned).
    pub host: *mut u8,
    /// Bytes.
    pub len: usize,
    /// Whether the call writes it (copied back after the host collective).
    pub written: bool,
}

// SAFETY: addresses only; the staging thread uses them under the contract of the unsafe
// entry point that took the call.
unsafe impl Send for Twin {}

/// A send of a group to this rank itself, done as a host copy between its twins once they
/// hold the device data (NCCL lets a group send to its own rank).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SelfCopy {
    /// The receive's buffer.
    pub dst: *mut u8,
    /// The send's buffer.
    pub src: *const u8,
    /// Bytes.
    pub len: usize,
}

// SAFETY: addresses only, copied under the contract of the call they came from.
unsafe impl Send for SelfCopy {}

/// A call moved onto host twins, and the twins (owned, freed when this drops).
pub(crate) struct Staged<P> {
    /// The call on the host twins.
    pub call: Call,
    /// Each buffer with data, in the call's order.
    pub twins: Vec<Twin>,
    /// The pinned buffers behind the twins (kept alive while copies may run).
    pub pinned: Vec<P>,
}

/// Rewrite `call` onto pinned twins allocated with `alloc`.
pub(crate) fn stage<P: PinnedBuffer>(
    call: &Call,
    mut alloc: impl FnMut(usize) -> Result<P>,
) -> Result<Staged<P>> {
    let mut twins = Vec::new();
    let mut pinned = Vec::new();
    let mut twin = |s: Span, written: bool| -> Result<Span> {
        if s.len == 0 {
            return Ok(Span::EMPTY);
        }
        let mut p = alloc(s.len)?;
        let host = p.as_mut_ptr();
        pinned.push(p);
        twins.push(Twin {
            dev: s.addr(),
            host,
            len: s.len,
            written,
        });
        Ok(Span::new(host, s.len))
    };
    let call = match call {
        Call::Collective {
            desc,
            input,
            output,
            factor,
        } => Call::Collective {
            desc: *desc,
            input: input.map(|i| twin(i, false)).transpose()?,
            output: twin(*output, true)?,
            factor: *factor,
        },
        Call::AllToAllV {
            dtype,
            input,
            output,
            v,
        } => Call::AllToAllV {
            dtype: *dtype,
            input: input.map(|i| twin(i, false)).transpose()?,
            output: twin(*output, true)?,
            v: v.clone(),
        },
        Call::P2p { dtype, ops } => Call::P2p {
            dtype: *dtype,
            ops: ops
                .iter()
                .map(|o| {
                    Ok(P2pCall {
                        buf: twin(o.buf, !o.send)?,
                        ..*o
                    })
                })
                .collect::<Result<_>>()?,
        },
    };
    Ok(Staged {
        call,
        twins,
        pinned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{CollArgs, Names, Shape};
    use dmsc_core::engine::MemKind;
    use dmsc_core::{CollKind, DataType, ReduceOp};

    struct Buf(Vec<u8>);
    impl PinnedBuffer for Buf {
        fn as_mut_ptr(&mut self) -> *mut u8 {
            self.0.as_mut_ptr()
        }
    }

    #[test]
    fn inputs_go_in_outputs_go_in_and_back_and_the_call_moves_to_the_twins() {
        let dev = |a: usize| Span::in_memory(a as *const u8, 64, MemKind::Cuda { device: 0 });
        let args = CollArgs {
            kind: CollKind::AllReduce,
            dtype: DataType::Float32,
            op: ReduceOp::Sum,
            root: 0,
            input: Some(dev(0x1000)),
            output: dev(0x2000),
            count: Some(16),
            factor: None,
        };
        let call = Call::collective(Shape { rank: 0, size: 2 }, args, &Names::RUST).unwrap();
        let s = stage(&call, |n| Ok(Buf(vec![0; n]))).unwrap();
        let t: Vec<(usize, usize, bool)> =
            s.twins.iter().map(|t| (t.dev, t.len, t.written)).collect();
        assert_eq!(t, [(0x1000, 64, false), (0x2000, 64, true)]);
        assert_eq!(s.call.memory(), MemKind::Host);
        match s.call {
            Call::Collective { input, output, .. } => {
                assert_eq!(input.unwrap().ptr, s.twins[0].host);
                assert_eq!(output.ptr, s.twins[1].host);
            }
            _ => panic!("the call changed kind"),
        }
    }
}
