//! Argument checks and buffer layouts: turning a method's Python arguments into a checked
//! [`Call`], with errors that name the arguments.

use crate::buffer::Buf;
use crate::call::{Call, Op};
use crate::errors::invalid;
use dmsc::{CollKind, ReduceOp};
use pyo3::prelude::*;

/// The communicator's shape: what argument checks need to know.
#[derive(Clone, Copy)]
pub struct Shape {
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub size: usize,
}

impl Shape {
    /// `root` as a rank, or an error naming it.
    pub fn check_root(&self, root: i64) -> PyResult<usize> {
        usize::try_from(root)
            .ok()
            .filter(|&r| r < self.size)
            .ok_or_else(|| {
                invalid(format!(
                    "root {root} is out of range for a communicator of {} ranks",
                    self.size
                ))
            })
    }

    /// `peer` (the argument `what`) as a rank, or an error naming it.
    pub fn check_peer(&self, what: &str, peer: i64) -> PyResult<usize> {
        usize::try_from(peer)
            .ok()
            .filter(|&r| r < self.size)
            .ok_or_else(|| {
                invalid(format!(
                    "{what} {peer} is out of range for a communicator of {} ranks",
                    self.size
                ))
            })
    }

    /// Blocks of `size()` equal parts: the count of one, or an error naming `name`.
    fn blocks(&self, name: &str, b: &Buf) -> PyResult<usize> {
        if !b.elems().is_multiple_of(self.size) {
            return Err(invalid(format!(
                "{name} has {} elements, not a multiple of the {} ranks",
                b.elems(),
                self.size
            )));
        }
        Ok(b.elems() / self.size)
    }

    /// A collective of the form `f(tensor, ..., out=None)`: in place on `tensor` without
    /// `out` (`in_place_writable`: whether `tensor` is then written), else `tensor` -> `out`.
    /// `out` aliasing `tensor` the way NCCL's in-place calls do also means in place.
    pub fn collective(
        &self,
        kind: CollKind,
        tensor: &Bound<'_, PyAny>,
        out: Option<&Bound<'_, PyAny>>,
        (op, root): (ReduceOp, usize),
        in_place_writable: bool,
    ) -> PyResult<Call> {
        let n = self.size;
        let (input, output) = match out {
            None => (None, Buf::get("tensor", tensor, in_place_writable)?),
            Some(o) => {
                let t = Buf::get("tensor", tensor, false)?;
                let o = Buf::get("out", o, true)?;
                same_dtype(&t, &o)?;
                let (input, output) = if is_in_place(kind, &t, &o, self.rank, n) {
                    (None, o)
                } else if t.overlaps(&o) {
                    return Err(invalid(
                        "out overlaps tensor; pass distinct buffers, or omit out= to work in \
                         place",
                    ));
                } else {
                    (Some(t), o)
                };
                (input, output)
            }
        };
        let count = self.count(kind, input.as_ref(), &output, root)?;
        Ok(Call {
            op: Op::Coll {
                kind,
                count,
                op,
                root,
            },
            dtype: output.dtype,
            input,
            output: Some(output),
        })
    }

    /// all_to_all_v's call: split sizes (rows of the first dimension) to element counts and
    /// displacements; `output` being `input` means in place.
    pub fn all_to_all_v(
        &self,
        output: &Bound<'_, PyAny>,
        input: &Bound<'_, PyAny>,
        output_split_sizes: Option<Vec<i64>>,
        input_split_sizes: Option<Vec<i64>>,
    ) -> PyResult<Call> {
        let o = Buf::get("output", output, true)?;
        let i = Buf::get("input", input, false)?;
        if i.dtype != o.dtype {
            return Err(invalid(format!(
                "output has element type {} but input has {}; they must match",
                o.dtype.name(),
                i.dtype.name()
            )));
        }
        let n = self.size;
        let (sc, sd) = splits("input", &i, input_split_sizes, n)?;
        let (rc, rd) = splits("output", &o, output_split_sizes, n)?;
        let input = if i.same_memory(&o) {
            None
        } else if i.overlaps(&o) {
            return Err(invalid(
                "output overlaps input; pass distinct buffers, or the same one for in place",
            ));
        } else {
            Some(i)
        };
        Ok(Call {
            op: Op::AllToAllV([sc, sd, rc, rd]),
            dtype: o.dtype,
            input,
            output: Some(o),
        })
    }

    /// send_recv's call: `tensor` to `dst`, `out` from `src`, as one group.
    pub fn send_recv(
        &self,
        tensor: &Bound<'_, PyAny>,
        dst: i64,
        out: &Bound<'_, PyAny>,
        src: i64,
        tag: u32,
    ) -> PyResult<Call> {
        let to = self.check_peer("dst", dst)?;
        let from = self.check_peer("src", src)?;
        let t = Buf::get("tensor", tensor, false)?;
        let o = Buf::get("out", out, true)?;
        same_dtype(&t, &o)?;
        if t.overlaps(&o) {
            return Err(invalid("out overlaps tensor; pass distinct buffers"));
        }
        Ok(Call {
            op: Op::SendRecv { to, from, tag },
            dtype: t.dtype,
            input: Some(t),
            output: Some(o),
        })
    }

    /// NCCL's per-call count from the buffers, with size checks that name the arguments.
    fn count(
        &self,
        kind: CollKind,
        input: Option<&Buf>,
        out: &Buf,
        root: usize,
    ) -> PyResult<usize> {
        let n = self.size;
        let mismatch =
            |want: String| invalid(format!("out has {} elements but {want}", out.elems()));
        let Some(t) = input else {
            return match kind {
                CollKind::AllGather | CollKind::ReduceScatter | CollKind::AllToAll => {
                    self.blocks("tensor", out)
                }
                _ => Ok(out.elems()),
            };
        };
        Ok(match kind {
            CollKind::AllReduce => {
                if out.elems() != t.elems() {
                    return Err(mismatch(format!(
                        "tensor has {}; they must match",
                        t.elems()
                    )));
                }
                t.elems()
            }
            CollKind::Broadcast => {
                if self.rank == root && out.elems() != t.elems() {
                    return Err(mismatch(format!(
                        "tensor has {} on the root; they must match",
                        t.elems()
                    )));
                }
                out.elems()
            }
            CollKind::Reduce => {
                if self.rank == root && out.elems() != t.elems() {
                    return Err(mismatch(format!(
                        "tensor has {} on the root; they must match",
                        t.elems()
                    )));
                }
                t.elems()
            }
            CollKind::AllGather => {
                if Some(out.elems()) != t.elems().checked_mul(n) {
                    return Err(mismatch(format!(
                        "all_gather needs size * tensor = {n} * {}",
                        t.elems()
                    )));
                }
                t.elems()
            }
            CollKind::ReduceScatter => {
                if Some(t.elems()) != out.elems().checked_mul(n) {
                    return Err(invalid(format!(
                        "tensor has {} elements but reduce_scatter needs size * out = {n} * {}",
                        t.elems(),
                        out.elems()
                    )));
                }
                out.elems()
            }
            CollKind::AllToAll => {
                let c = self.blocks("tensor", t)?;
                if out.elems() != t.elems() {
                    return Err(mismatch(format!(
                        "tensor has {}; they must match",
                        t.elems()
                    )));
                }
                c
            }
            _ => out.elems(),
        })
    }
}

/// `out=` aliasing `tensor` the way NCCL's in-place calls do: the same buffer, or for
/// all_gather / reduce_scatter the per-rank block at `rank`.
fn is_in_place(kind: CollKind, t: &Buf, o: &Buf, rank: usize, n: usize) -> bool {
    let at_block = |whole: &Buf, part: &Buf| {
        part.len > 0
            && whole.len == part.len * n
            && whole.ptr.wrapping_add(rank * part.len) == part.ptr
    };
    match kind {
        CollKind::AllGather => at_block(o, t),
        CollKind::ReduceScatter => at_block(t, o),
        _ => t.len > 0 && t.same_memory(o),
    }
}

fn same_dtype(t: &Buf, o: &Buf) -> PyResult<()> {
    if t.dtype != o.dtype {
        return Err(invalid(format!(
            "out has element type {} but tensor has {}; they must match",
            o.dtype.name(),
            t.dtype.name()
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
