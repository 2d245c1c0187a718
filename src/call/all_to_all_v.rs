//! The builder of an all-to-all-v's [`Call`] (`MPI_Alltoallv`): one count and displacement
//! per rank for each direction, in elements, checked against the buffers.

use super::check::{apart, holds, one_memory, usable};
use super::{Call, Names, Shape, Span};
use dmsc_core::{DataType, Error, Result};

impl Call {
    /// Check an all-to-all-v's arguments and describe it. `v` holds send counts, send
    /// displacements, receive counts and receive displacements, one entry per rank;
    /// `input == None`, or `input` starting where `output` does, is in place.
    pub fn all_to_all_v(
        shape: Shape,
        dtype: DataType,
        input: Option<Span>,
        output: Span,
        v: [Vec<usize>; 4],
        names: &Names,
    ) -> Result<Call> {
        let n = shape.size;
        for (a, name) in v.iter().zip(names.v) {
            if a.len() != n {
                return Err(Error::invalid(format!(
                    "{name} has {} entries, expected one per rank ({n})",
                    a.len()
                )));
            }
        }
        let [sc, mut sd, rc, mut rd] = v;
        let s_end = extent(&sc, &sd, names.v[0], names.v[1])?;
        let r_end = extent(&rc, &rd, names.v[2], names.v[3])?;
        // A displacement without data means nothing; the plan would still bound the buffer
        // by it.
        for (counts, displs) in [(&sc, &mut sd), (&rc, &mut rd)] {
            for (d, _) in displs.iter_mut().zip(counts).filter(|(_, &c)| c == 0) {
                *d = 0;
            }
        }
        let (input, output) = match input {
            Some(i) if i.ptr == output.ptr => (None, i.union(&output)),
            other => (other, output),
        };
        match input {
            Some(i) => {
                usable(names.input, i, dtype)?;
                usable(names.output, output, dtype)?;
                let same = || format!("{} == {}", names.input, names.output);
                apart((names.input, i), (names.output, output), same)?;
                one_memory([(names.input, i), (names.output, output)])?;
                holds(names.input, i, s_end, dtype)?;
                holds(names.output, output, r_end, dtype)?;
            }
            None => {
                usable(names.in_place, output, dtype)?;
                holds(names.in_place, output, s_end.max(r_end), dtype)?;
            }
        }
        Ok(Call::AllToAllV {
            dtype,
            input,
            output,
            v: Box::new([sc, sd, rc, rd]),
        })
    }
}

/// Elements spanned by counts `c` at displacements `d` (arguments `cn`, `dn`).
fn extent(c: &[usize], d: &[usize], cn: &str, dn: &str) -> Result<usize> {
    end_of(c, d).map_err(|i| {
        Error::invalid(format!(
            "{cn}[{i}] + {dn}[{i}] = {} + {} overflows",
            c[i], d[i]
        ))
    })
}

/// Elements spanned by counts `c` at displacements `d` (the largest end of a non-empty
/// block), or the index of the first entry whose end overflows. Front ends that size buffers
/// from the counts (C) use it too; the builder names an overflow.
pub fn end_of(c: &[usize], d: &[usize]) -> std::result::Result<usize, usize> {
    c.iter()
        .zip(d)
        .enumerate()
        .try_fold(0usize, |m, (i, (&c, &d))| match c.checked_add(d) {
            Some(e) => Ok(if c == 0 { m } else { m.max(e) }),
            None => Err(i),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_entries_and_overlaps() {
        assert_eq!(extent(&[2, 0, 3], &[0, 100, 2], "c", "d").unwrap(), 5);
        let e = extent(&[1, usize::MAX], &[0, 1], "sendcounts", "sdispls").unwrap_err();
        assert!(e.to_string().contains("sendcounts[1] + sdispls[1]"), "{e}");
        let b = [0u32; 8];
        let shape = Shape { rank: 0, size: 2 };
        let s =
            |off: usize, len: usize| Span::new(b.as_ptr().wrapping_add(off) as *const u8, len * 4);
        let v = || [vec![2, 2], vec![0, 2], vec![2, 2], vec![0, 2]];
        let e = Call::all_to_all_v(
            shape,
            DataType::Uint32,
            Some(s(0, 4)),
            s(2, 4),
            v(),
            &Names::RUST,
        )
        .unwrap_err();
        assert!(e.to_string().contains("input and output overlap"), "{e}");
        let call = Call::all_to_all_v(
            shape,
            DataType::Uint32,
            Some(s(0, 4)),
            s(0, 4),
            v(),
            &Names::RUST,
        )
        .unwrap();
        assert!(matches!(call, Call::AllToAllV { input: None, .. }));
        let short = [vec![1], vec![0], vec![1, 1], vec![0, 1]];
        let e = Call::all_to_all_v(shape, DataType::Uint32, None, s(0, 4), short, &Names::RUST)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("send_counts has 1 entries, expected one per rank (2)"),
            "{e}"
        );
        let big = [vec![5, 0], vec![0, 9], vec![1, 1], vec![0, 1]];
        let e = Call::all_to_all_v(
            shape,
            DataType::Uint32,
            Some(s(0, 4)),
            s(4, 4),
            big,
            &Names::RUST,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("input has 16 bytes but the call needs 20"),
            "{e}"
        );
    }
}
