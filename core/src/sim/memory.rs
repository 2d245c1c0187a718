//! The memory of one simulated rank: `Input` and `Output` as views of one allocation (so
//! in-place aliasing is real), plus scratch and group buffers.

use crate::schedule::BufId;

/// Bytes in an 8-byte-aligned allocation, so that typed reduction kernels can view any
/// element-aligned range of it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Aligned {
    words: Vec<u64>,
    len: usize,
}

impl Aligned {
    /// `len` bytes, all `fill`.
    pub(crate) fn filled(len: usize, fill: u8) -> Aligned {
        let mut a = Aligned {
            words: vec![0; len.div_ceil(8)],
            len,
        };
        a.bytes_mut().fill(fill);
        a
    }

    /// A copy of `b`.
    pub(crate) fn from_bytes(b: &[u8]) -> Aligned {
        let mut a = Aligned::filled(b.len(), 0);
        a.bytes_mut().copy_from_slice(b);
        a
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialized bytes; u8 has no alignment or
        // validity requirements.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and the borrow of `self` is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

/// A byte range of one of the rank's allocations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    /// 0: the Input/Output allocation, 1: scratch, 2 + i: group buffer i.
    pub(crate) space: u64,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl Loc {
    pub(crate) fn overlaps(&self, o: &Loc) -> bool {
        self.space == o.space && self.start < o.end && o.start < self.end
    }
}

/// A view `[at, at + len)` (bytes) of the main allocation.
#[derive(Clone, Copy, Debug)]
struct View {
    at: usize,
    len: usize,
}

/// One rank's buffers. `Input` and `Output` are views of a single allocation, placed apart
/// (out of place) or overlapping (in place); scratch is allocated by the simulator from the
/// schedule, filled with garbage so that reads of unwritten scratch show up.
#[derive(Clone, Debug)]
pub struct RankMem {
    main: Aligned,
    input: View,
    output: View,
    pub(crate) scratch: Aligned,
    groups: Vec<Aligned>,
}

impl RankMem {
    /// Separate `Input` and `Output` buffers with the given initial contents.
    pub fn separate(input: &[u8], output: &[u8]) -> RankMem {
        let at = input.len().next_multiple_of(8);
        let mut main = Aligned::filled(at + output.len(), 0);
        main.bytes_mut()[..input.len()].copy_from_slice(input);
        main.bytes_mut()[at..].copy_from_slice(output);
        RankMem::with_views(main, (0, input.len()), (at, output.len()))
    }

    /// One buffer `buf` holding both: `Input` is `buf[input.0 .. input.0 + input.1]` and
    /// `Output` is `buf[output.0 .. output.0 + output.1]` (byte offsets and lengths, clipped
    /// to the buffer).
    pub fn aliased(buf: &[u8], input: (usize, usize), output: (usize, usize)) -> RankMem {
        RankMem::with_views(Aligned::from_bytes(buf), input, output)
    }

    fn with_views(main: Aligned, input: (usize, usize), output: (usize, usize)) -> RankMem {
        let clip = |(at, len): (usize, usize)| {
            let at = at.min(main.len);
            View {
                at,
                len: len.min(main.len - at),
            }
        };
        RankMem {
            input: clip(input),
            output: clip(output),
            main,
            scratch: Aligned::default(),
            groups: Vec::new(),
        }
    }

    /// Add send/recv group buffers `Group(0)`, `Group(1)`, ...
    pub fn with_groups(mut self, groups: &[Vec<u8>]) -> RankMem {
        self.groups = groups.iter().map(|g| Aligned::from_bytes(g)).collect();
        self
    }

    /// The bytes of `Input`.
    pub fn input(&self) -> &[u8] {
        &self.main.bytes()[self.input.at..self.input.at + self.input.len]
    }

    /// The bytes of `Output`.
    pub fn output(&self) -> &[u8] {
        &self.main.bytes()[self.output.at..self.output.at + self.output.len]
    }

    /// The bytes of group buffer `i` (empty if there is none).
    pub fn group(&self, i: usize) -> &[u8] {
        self.groups.get(i).map_or(&[], |g| g.bytes())
    }

    /// Byte length of a buffer, `None` when the rank has no such buffer.
    pub(crate) fn len_of(&self, buf: BufId) -> Option<usize> {
        match buf {
            BufId::Input => Some(self.input.len),
            BufId::Output => Some(self.output.len),
            BufId::Scratch => Some(self.scratch.len),
            BufId::Group(i) => self.groups.get(i as usize).map(|g| g.len),
        }
    }

    /// Where bytes `[start, end)` of `buf` live (bounds already checked).
    pub(crate) fn loc(&self, buf: BufId, start: usize, end: usize) -> Loc {
        let (space, base) = match buf {
            BufId::Input => (0, self.input.at),
            BufId::Output => (0, self.output.at),
            BufId::Scratch => (1, 0),
            BufId::Group(i) => (2 + u64::from(i), 0),
        };
        Loc {
            space,
            start: base + start,
            end: base + end,
        }
    }

    fn space(&self, space: u64) -> &Aligned {
        match space {
            0 => &self.main,
            1 => &self.scratch,
            g => &self.groups[(g - 2) as usize],
        }
    }

    fn space_mut(&mut self, space: u64) -> &mut Aligned {
        match space {
            0 => &mut self.main,
            1 => &mut self.scratch,
            g => &mut self.groups[(g - 2) as usize],
        }
    }

    /// A copy of the bytes at `l`, in an aligned buffer.
    pub(crate) fn read(&self, l: Loc) -> Aligned {
        Aligned::from_bytes(&self.space(l.space).bytes()[l.start..l.end])
    }

    /// Overwrite the bytes at `l`.
    pub(crate) fn write(&mut self, l: Loc, data: &[u8]) {
        self.space_mut(l.space).bytes_mut()[l.start..l.end].copy_from_slice(data);
    }
}
