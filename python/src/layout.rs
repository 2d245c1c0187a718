//! From a method's Python arguments to a checked [`Call`]: the buffers are taken from the
//! Python objects (element types must agree, since a `Span` carries none), all_to_all_v's
//! split sizes become counts and displacements, and the shared builders of `dmsc::call`
//! do the rest (NCCL's in-place layouts, counts, overlaps, alignment), as for Rust and C.

use crate::buffer::Buf;
use crate::call::Call;
use crate::errors::{invalid, to_py};
use dmsc::call::{self, CollArgs, Names, P2pCall, Shape};
use dmsc::{CollKind, ReduceOp};
use pyo3::prelude::*;

/// The names of a collective's arguments in the Python API.
const NAMES: Names = Names {
    input: "tensor",
    output: "out",
    in_place: "tensor",
    v: [
        "input counts",
        "input displacements",
        "output counts",
        "output displacements",
    ],
};

/// The names of all_to_all_v's arguments.
const A2AV_NAMES: Names = Names {
    input: "input",
    output: "output",
    in_place: "output",
    ..NAMES
};

/// `v` (the argument `what`) as a rank of a communicator of `shape.size`.
pub fn rank(shape: Shape, what: &str, v: i64) -> PyResult<usize> {
    call::rank_arg(what, v, shape.size).map_err(to_py)
}

/// A collective of the form `f(tensor, ..., out=None)`: in place on `tensor` without
/// `out` (`in_place_writable`: whether `tensor` is then written), else `tensor` -> `out`.
/// `out` aliasing `tensor` the way NCCL's in-place calls do also means in place.
pub fn collective(
    shape: Shape,
    kind: CollKind,
    tensor: &Bound<'_, PyAny>,
    out: Option<&Bound<'_, PyAny>>,
    (op, factor, root): (ReduceOp, Option<f64>, usize),
    in_place_writable: bool,
) -> PyResult<Call> {
    let (bufs, dtype, input) = match out {
        None => {
            let t = Buf::get("tensor", tensor, in_place_writable)?;
            let dtype = t.dtype;
            (vec![t], dtype, None)
        }
        Some(o) => {
            let t = Buf::get("tensor", tensor, false)?;
            let o = Buf::get("out", o, true)?;
            same_dtype(("out", &o), ("tensor", &t))?;
            let (dtype, input) = (o.dtype, Some(t.span()));
            (vec![o, t], dtype, input)
        }
    };
    let args = CollArgs {
        kind,
        dtype,
        op,
        root,
        input,
        output: bufs[0].span(),
        count: None,
        factor,
    };
    let call = dmsc::call::Call::collective(shape, args, &NAMES).map_err(to_py)?;
    Ok(Call::new(call, bufs))
}

/// all_to_all_v's call: split sizes (rows of the first dimension) to element counts and
/// displacements; `output` being `input` means in place.
pub fn all_to_all_v(
    shape: Shape,
    output: &Bound<'_, PyAny>,
    input: &Bound<'_, PyAny>,
    output_split_sizes: Option<Vec<i64>>,
    input_split_sizes: Option<Vec<i64>>,
) -> PyResult<Call> {
    let o = Buf::get("output", output, true)?;
    let i = Buf::get("input", input, false)?;
    same_dtype(("output", &o), ("input", &i))?;
    let n = shape.size;
    let (sc, sd) = splits("input", &i, input_split_sizes, n)?;
    let (rc, rd) = splits("output", &o, output_split_sizes, n)?;
    let (dtype, v) = (o.dtype, [sc, sd, rc, rd]);
    let call =
        dmsc::call::Call::all_to_all_v(shape, dtype, Some(i.span()), o.span(), v, &A2AV_NAMES)
            .map_err(to_py)?;
    Ok(Call::new(call, vec![o, i]))
}

/// One side of a point-to-point call: the buffer argument's name, the buffer, the peer.
pub type Side<'a, 'py> = (&'static str, &'a Bound<'py, PyAny>, i64);

/// The send (to `dst`) and the receive (from `src`) of one group; each side is optional, so
/// this makes send, recv and send_recv.
pub fn p2p(shape: Shape, send: Option<Side>, recv: Option<Side>, tag: u32) -> PyResult<Call> {
    let mut bufs = vec![];
    let mut ops = vec![];
    for (is_send, side) in [(true, send), (false, recv)] {
        let Some((buf_name, obj, peer)) = side else {
            continue;
        };
        let peer_name = if is_send { "dst" } else { "src" };
        let peer = rank(shape, peer_name, peer)?;
        let b = Buf::get(buf_name, obj, !is_send)?;
        if let Some(first) = bufs.first() {
            same_dtype((buf_name, &b), ("tensor", first))?;
        }
        ops.push(P2pCall {
            send: is_send,
            peer,
            tag,
            buf: b.span(),
            dtype: b.dtype,
        });
        bufs.push(b);
    }
    let call = dmsc::call::Call::p2p(shape, ops).map_err(to_py)?;
    Ok(Call::new(call, bufs))
}

/// The second buffer `b` has the first one's (`a`'s) element type.
fn same_dtype(a: (&str, &Buf), b: (&str, &Buf)) -> PyResult<()> {
    if a.1.dtype != b.1.dtype {
        return Err(invalid(format!(
            "{} has element type {} but {} has {}; they must match",
            a.0,
            a.1.dtype.name(),
            b.0,
            b.1.dtype.name()
        )));
    }
    Ok(())
}

pub fn index(what: &str, v: i64) -> PyResult<usize> {
    usize::try_from(v).map_err(|_| invalid(format!("{what} must not be negative, got {v}")))
}

/// Per-rank split sizes (in rows) into element counts and displacements.
fn splits(
    name: &str,
    b: &Buf,
    sizes: Option<Vec<i64>>,
    n: usize,
) -> PyResult<(Vec<usize>, Vec<usize>)> {
    let rows = match sizes {
        None => {
            if !b.rows.is_multiple_of(n) {
                return Err(invalid(format!(
                    "{name} has {} rows, not a multiple of the {n} ranks; give {name}_split_sizes",
                    b.rows
                )));
            }
            vec![b.rows / n; n]
        }
        Some(s) => {
            if s.len() != n {
                return Err(invalid(format!(
                    "{name}_split_sizes has {} entries, expected one per rank ({n})",
                    s.len()
                )));
            }
            let s = s
                .iter()
                .map(|&x| index(&format!("{name}_split_sizes entry"), x))
                .collect::<PyResult<Vec<usize>>>()?;
            let total = s.iter().try_fold(0usize, |a, &x| a.checked_add(x));
            if total != Some(b.rows) {
                return Err(invalid(format!(
                    "{name}_split_sizes {s:?} do not add up to the {} rows of {name}",
                    b.rows
                )));
            }
            s
        }
    };
    let per_row = b.elems().checked_div(b.rows).unwrap_or(0);
    let counts: Vec<usize> = rows.iter().map(|r| r * per_row).collect();
    let displs = counts
        .iter()
        .scan(0usize, |acc, &c| {
            let d = *acc;
            *acc += c;
            Some(d)
        })
        .collect();
    Ok((counts, displs))
}
