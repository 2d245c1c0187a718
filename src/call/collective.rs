//! The builder of a collective's [`Call`]: NCCL's in-place layouts, the buffers this rank
//! uses, NCCL's per-call count (given by the front end or derived from the buffers'
//! lengths), and the size checks, once for every front end.

use super::check::{apart, blocks, holds, mismatch, one_memory, rank_arg, usable};
use super::{Call, Names, Shape, Span};
use dmsc_core::plan;
use dmsc_core::{CollDesc, CollKind, DataType, Error, ReduceOp, Result};

/// A collective's arguments as a front end received them.
#[derive(Clone, Copy, Debug)]
pub struct CollArgs {
    /// The collective (not all-to-all-v or send/recv, which have their own builders).
    pub kind: CollKind,
    /// Element type of both buffers.
    pub dtype: DataType,
    /// Reduction operator (ignored where none applies).
    pub op: ReduceOp,
    /// Root of broadcast and reduce (ignored otherwise).
    pub root: usize,
    /// The buffer read; `None` is in place on `output`. A buffer laid out as NCCL's
    /// in-place calls lay it out (the same buffer; for all-gather this rank's block of
    /// `output`, for reduce-scatter `output` at this rank's block of it) also means in place.
    pub input: Option<Span>,
    /// The buffer written.
    pub output: Span,
    /// NCCL's count for `kind` (see [`CollKind`]) when the front end has one (C, the byte
    /// API); `None` derives it from the buffers' lengths.
    pub count: Option<usize>,
    /// This rank's factor for [`ReduceOp::PreMulSum`], which needs one; no other operator
    /// takes one.
    pub factor: Option<f64>,
}

impl Call {
    /// Check a collective's arguments and describe it.
    pub fn collective(shape: Shape, a: CollArgs, names: &Names) -> Result<Call> {
        let (n, kind, dtype) = (shape.size, a.kind, a.dtype);
        match kind {
            CollKind::AllToAllV | CollKind::SendRecv => {
                return Err(Error::invalid(format!("{kind} has its own entry point")))
            }
            CollKind::Barrier => return Ok(Call::barrier()),
            _ => {}
        }
        let reduces = matches!(
            kind,
            CollKind::AllReduce | CollKind::ReduceScatter | CollKind::Reduce
        );
        let op = if reduces { a.op } else { ReduceOp::Sum };
        let factor = if reduces { a.factor } else { None };
        op.check_dtype(dtype)?;
        match (op, factor) {
            (ReduceOp::PreMulSum, None) => {
                return Err(Error::invalid(format!(
                    "{kind} with reduce op premul_sum needs this rank's factor (factor= in \
                     Python, the *_premul methods in Rust, an operator made by \
                     dmscRedOpCreatePreMulSum in C)"
                )))
            }
            (ReduceOp::PreMulSum, Some(f)) => {
                dmsc_core::reduce::factor_as_int(dtype, f)?;
            }
            (op, Some(f)) => {
                return Err(Error::invalid(format!(
                    "a factor ({f}) is given with reduce op {op}; only premul_sum takes one"
                )))
            }
            _ => {}
        }
        let root = match kind {
            CollKind::Broadcast | CollKind::Reduce => rank_arg("root", a.root, n)?,
            _ => 0,
        };
        let is_root = shape.rank == root;
        let (input, output) = match a.input {
            Some(i) if in_place_layout(kind, i, a.output, shape) => (None, i.union(&a.output)),
            other => (other, a.output),
        };
        // Only the root reads a broadcast's input and writes a reduction's output.
        let (input, output) = match input {
            Some(_) if kind == CollKind::Broadcast && !is_root => (Some(Span::EMPTY), output),
            Some(i) if kind == CollKind::Reduce && !is_root => (Some(i), Span::EMPTY),
            other => (other, output),
        };
        match input {
            Some(i) => {
                usable(names.input, i, dtype)?;
                usable(names.output, output, dtype)?;
                apart((names.input, i), (names.output, output), || {
                    layout_text(kind, names)
                })?;
                one_memory([(names.input, i), (names.output, output)])?;
            }
            None => usable(names.in_place, output, dtype)?,
        }
        let es = dtype.size();
        let count = match a.count {
            Some(c) => c,
            None => derive_count(
                kind,
                is_root,
                input.map(|i| i.len / es),
                output.len / es,
                n,
                names,
            )?,
        };
        let desc = CollDesc {
            kind,
            count,
            dtype,
            op,
            root,
        };
        let (in_elems, out_elems) = plan::buffer_elems(&desc, n)?;
        match input {
            Some(i) => {
                if kind != CollKind::Broadcast || is_root {
                    holds(names.input, i, in_elems, dtype)?;
                }
                if kind != CollKind::Reduce || is_root {
                    holds(names.output, output, out_elems, dtype)?;
                }
            }
            None => holds(names.in_place, output, in_elems.max(out_elems), dtype)?,
        }
        Ok(Call::Collective {
            desc,
            input,
            output,
            factor,
        })
    }

    /// A barrier.
    pub fn barrier() -> Call {
        Call::Collective {
            desc: CollDesc {
                kind: CollKind::Barrier,
                count: 0,
                dtype: DataType::Uint8,
                op: ReduceOp::Sum,
                root: 0,
            },
            input: Some(Span::EMPTY),
            output: Span::EMPTY,
            factor: None,
        }
    }
}

/// `input` and `output` laid out as NCCL's in-place calls lay them out: the same buffer, or
/// for all-gather the input at this rank's block of the output, for reduce-scatter the
/// output at this rank's block of the input.
fn in_place_layout(kind: CollKind, input: Span, output: Span, shape: Shape) -> bool {
    let at_block = |whole: Span, part: Span| {
        whole.len == part.len.wrapping_mul(shape.size)
            && whole.addr().wrapping_add(shape.rank.wrapping_mul(part.len)) == part.addr()
    };
    match kind {
        CollKind::AllGather => at_block(output, input),
        CollKind::ReduceScatter => at_block(input, output),
        _ => input == output,
    }
}

/// How the caller would have written the call in place, for the overlap error.
fn layout_text(kind: CollKind, names: &Names) -> String {
    let (i, o) = (names.input, names.output);
    match kind {
        CollKind::AllGather => format!("{i} == {o} + rank * count elements"),
        CollKind::ReduceScatter => format!("{o} == {i} + rank * count elements"),
        _ => format!("{i} == {o}"),
    }
}

/// NCCL's per-call count from the buffers' element counts (`input == None`: in place on
/// `output`), checking that they fit each other.
fn derive_count(
    kind: CollKind,
    is_root: bool,
    input: Option<usize>,
    output: usize,
    n: usize,
    names: &Names,
) -> Result<usize> {
    let (iname, oname) = (names.input, names.output);
    let Some(i) = input else {
        return match kind {
            CollKind::AllGather | CollKind::ReduceScatter | CollKind::AllToAll => {
                blocks(names.in_place, output, n)
            }
            _ => Ok(output),
        };
    };
    let o = output;
    let must_match = || mismatch(oname, o, format_args!("{iname} has {i}; they must match"));
    Ok(match kind {
        CollKind::AllReduce if o != i => return Err(must_match()),
        CollKind::Broadcast | CollKind::Reduce if is_root && o != i => {
            let on_root = format_args!("{iname} has {i} on the root; they must match");
            return Err(mismatch(oname, o, on_root));
        }
        CollKind::Broadcast => o,
        CollKind::AllGather if Some(o) != i.checked_mul(n) => {
            let want = format_args!("all_gather needs size * {iname} = {n} * {i}");
            return Err(mismatch(oname, o, want));
        }
        CollKind::ReduceScatter if Some(i) != o.checked_mul(n) => {
            let want = format_args!("reduce_scatter needs size * {oname} = {n} * {o}");
            return Err(mismatch(iname, i, want));
        }
        CollKind::ReduceScatter => o,
        CollKind::AllToAll => {
            let c = blocks(iname, i, n)?;
            if o != i {
                return Err(must_match());
            }
            c
        }
        _ => i,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: Names = Names {
        input: "sendbuff",
        output: "recvbuff",
        in_place: "recvbuff",
        v: ["a", "b", "c", "d"],
    };

    fn args(kind: CollKind, input: Option<Span>, output: Span, count: Option<usize>) -> CollArgs {
        CollArgs {
            kind,
            dtype: DataType::Float32,
            op: ReduceOp::Sum,
            root: 0,
            factor: None,
            input,
            output,
            count,
        }
    }

    fn at(base: &[f32], off: usize, len: usize) -> Span {
        Span::new(base.as_ptr().wrapping_add(off) as *const u8, len * 4)
    }

    #[test]
    fn nccl_in_place_layouts_are_recognised() {
        let b = vec![0f32; 16];
        let shape = Shape { rank: 1, size: 4 };
        let ag = args(
            CollKind::AllGather,
            Some(at(&b, 4, 4)),
            at(&b, 0, 16),
            Some(4),
        );
        let Call::Collective { input, output, .. } = Call::collective(shape, ag, &C).unwrap()
        else {
            panic!("not a collective")
        };
        assert_eq!((input, output), (None, at(&b, 0, 16)));
        let rs = args(
            CollKind::ReduceScatter,
            Some(at(&b, 0, 16)),
            at(&b, 4, 4),
            None,
        );
        let call = Call::collective(shape, rs, &C).unwrap();
        assert!(matches!(call, Call::Collective { input: None, desc, .. } if desc.count == 4));
        // Block 2 is not this rank's: an overlap, not in place.
        let bad = args(
            CollKind::AllGather,
            Some(at(&b, 8, 4)),
            at(&b, 0, 16),
            Some(4),
        );
        let e = Call::collective(shape, bad, &C).unwrap_err().to_string();
        assert!(
            e.contains("sendbuff and recvbuff overlap; in place means sendbuff == recvbuff + rank"),
            "{e}"
        );
    }

    #[test]
    fn host_and_device_buffers_in_one_call_are_refused_naming_both() {
        use dmsc_core::engine::MemKind;
        let x = vec![0f32; 4];
        let shape = Shape { rank: 0, size: 2 };
        let dev = Span::in_memory(0x7f00_0000 as *const u8, 16, MemKind::Cuda { device: 0 });
        let mixed = args(CollKind::AllReduce, Some(at(&x, 0, 4)), dev, Some(4));
        let e = Call::collective(shape, mixed, &C).unwrap_err().to_string();
        assert!(
            e.contains("sendbuff is host memory but recvbuff is CUDA device 0 memory"),
            "{e}"
        );
        // All on the device is a valid call that says where its memory is.
        let dev_in = Span::in_memory(0x7e00_0000 as *const u8, 16, MemKind::Cuda { device: 0 });
        let ok = args(CollKind::AllReduce, Some(dev_in), dev, Some(4));
        let call = Call::collective(shape, ok, &C).unwrap();
        assert_eq!(call.memory(), MemKind::Cuda { device: 0 });
        let host = args(
            CollKind::AllReduce,
            Some(at(&x, 0, 4)),
            at(&x, 0, 4),
            Some(4),
        );
        assert_eq!(
            Call::collective(shape, host, &C).unwrap().memory(),
            MemKind::Host
        );
    }

    #[test]
    fn counts_are_derived_and_checked() {
        let (x, y) = (vec![0f32; 8], vec![0f32; 8]);
        let shape = Shape { rank: 0, size: 2 };
        let ar = args(CollKind::AllReduce, Some(at(&x, 0, 4)), at(&y, 0, 5), None);
        let e = Call::collective(shape, ar, &Names::RUST)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("output has 5 elements but input has 4; they must match"),
            "{e}"
        );
        let ag = args(CollKind::AllGather, Some(at(&x, 0, 4)), at(&y, 0, 8), None);
        let call = Call::collective(shape, ag, &Names::RUST).unwrap();
        assert!(matches!(call, Call::Collective { desc, .. } if desc.count == 4));
        let a2a = args(CollKind::AllToAll, None, at(&y, 0, 7), None);
        let e = Call::collective(shape, a2a, &Names::RUST)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("buffer has 7 elements, not a multiple of the 2 ranks"),
            "{e}"
        );
        // Given counts are checked against the buffers.
        let small = args(
            CollKind::AllReduce,
            Some(at(&x, 0, 4)),
            at(&y, 0, 2),
            Some(4),
        );
        let e = Call::collective(shape, small, &C).unwrap_err().to_string();
        assert!(
            e.contains("recvbuff has 8 bytes but the call needs 16"),
            "{e}"
        );
    }

    #[test]
    fn only_the_root_uses_its_side() {
        let x = vec![0f32; 4];
        let null = Span::new(std::ptr::null(), 16);
        let leaf = Shape { rank: 1, size: 2 };
        let bc = CollArgs {
            root: 0,
            ..args(CollKind::Broadcast, Some(null), at(&x, 0, 4), Some(4))
        };
        let call = Call::collective(leaf, bc, &C).unwrap();
        assert!(matches!(call, Call::Collective { input: Some(s), .. } if s.len == 0));
        let e = Call::collective(Shape { rank: 0, size: 2 }, bc, &C).unwrap_err();
        assert!(e.to_string().contains("sendbuff is NULL"), "{e}");
        let red = args(CollKind::Reduce, Some(at(&x, 0, 4)), null, Some(4));
        assert!(Call::collective(leaf, red, &C).is_ok());
        let far = CollArgs { root: 2, ..red };
        let e = Call::collective(leaf, far, &C).unwrap_err().to_string();
        assert!(e.contains("root 2 is out of range"), "{e}");
    }

    #[test]
    fn operators_are_checked_against_the_type_and_the_factor() {
        let (a, b) = (vec![0f32; 4], vec![0f32; 4]);
        let shape = Shape { rank: 0, size: 2 };
        let base = args(CollKind::AllReduce, Some(at(&a, 0, 4)), at(&b, 0, 4), None);
        let err = |x: CollArgs| Call::collective(shape, x, &C).unwrap_err().to_string();
        let band = CollArgs {
            op: ReduceOp::BAnd,
            ..base
        };
        let e = err(band);
        assert!(
            e.contains("band applies to integer types only, not float"),
            "{e}"
        );
        let ints = CollArgs {
            dtype: DataType::Int32,
            ..band
        };
        assert!(Call::collective(shape, ints, &C).is_ok());
        let premul = CollArgs {
            op: ReduceOp::PreMulSum,
            ..base
        };
        assert!(
            err(premul).contains("all_reduce with reduce op premul_sum needs this rank's factor")
        );
        let with = CollArgs {
            factor: Some(0.5),
            ..premul
        };
        let Call::Collective { desc, factor, .. } = Call::collective(shape, with, &C).unwrap()
        else {
            panic!("not a collective")
        };
        assert_eq!((desc.op, factor), (ReduceOp::PreMulSum, Some(0.5)));
        let whole = CollArgs {
            dtype: DataType::Int32,
            ..with
        };
        assert!(err(whole).contains("factor 0.5 is not a whole number, which int32 needs"));
        let stray = CollArgs {
            factor: Some(2.0),
            ..base
        };
        assert!(err(stray)
            .contains("a factor (2) is given with reduce op sum; only premul_sum takes one"));
        // Collectives that do not reduce ignore the operator and its factor.
        let ag = CollArgs {
            kind: CollKind::Broadcast,
            ..with
        };
        let Call::Collective { desc, factor, .. } = Call::collective(shape, ag, &C).unwrap() else {
            panic!("not a collective")
        };
        assert_eq!((desc.op, factor), (ReduceOp::Sum, None));
    }
}
