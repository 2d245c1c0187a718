//! A schedule planned for a subgroup of ranks, placed into one rank's schedule.
//!
//! Hierarchical algorithms run flat algorithms among subsets of the ranks (the ranks of one
//! host, or one rank per host). A flat planner numbers the group's ranks `0..g`; [`append`]
//! renames those peers to the group's global ranks and moves every slice to where the data
//! of that phase lives (for instance the group's `Input` onto a block of the caller's
//! `Output`), then appends the steps after the ones already planned.
//!
//! Phases appended one after another stay deadlock-free when the groups of each phase are
//! disjoint and every rank runs its phases in the same order: each phase of a group starts
//! once its members finished their earlier phases (which depend on earlier phases only), and
//! messages between a pair are matched in order, so a phase's messages never meet another
//! phase's receives.

use crate::schedule::{Action, BufId, Schedule, Slice};
use crate::types::Rank;

/// Where a group schedule's buffer lives in the rank's buffers: `(buffer, first element)`.
pub(crate) type BufMap<'a> = &'a dyn Fn(BufId) -> (BufId, usize);

/// Append `sub`, planned for peers numbered by their position in `members`, to `out`, with
/// peers renamed to `members[p]` and buffers moved by `map`. Copies that the move turns into
/// copies of a slice onto itself are dropped; `out`'s scratch grows to cover `sub`'s and
/// every slice moved into `Scratch`.
pub(crate) fn append(out: &mut Schedule, sub: Schedule, members: &[Rank], map: BufMap) {
    let mv = |s: Slice| {
        let (buf, base) = map(s.buf);
        Slice::new(buf, base + s.offset, s.len)
    };
    for step in sub.steps {
        let actions = step
            .actions
            .into_iter()
            .filter_map(|a| {
                Some(match a {
                    Action::Send { peer, src } => Action::Send {
                        peer: members[peer],
                        src: mv(src),
                    },
                    Action::Recv { peer, dst } => Action::Recv {
                        peer: members[peer],
                        dst: mv(dst),
                    },
                    Action::RecvReduce { peer, local, dst } => Action::RecvReduce {
                        peer: members[peer],
                        local: mv(local),
                        dst: mv(dst),
                    },
                    Action::Copy { src, dst } if mv(src) == mv(dst) => return None,
                    Action::Copy { src, dst } => Action::Copy {
                        src: mv(src),
                        dst: mv(dst),
                    },
                    Action::Reduce { src, dst } => Action::Reduce {
                        src: mv(src),
                        dst: mv(dst),
                    },
                    Action::Scale { dst } => Action::Scale { dst: mv(dst) },
                })
            })
            .collect::<Vec<Action>>();
        let ends = actions.iter().flat_map(|a| a.reads().chain(a.writes()));
        let scratch_end = ends
            .filter(|s| s.buf == BufId::Scratch)
            .map(|s| s.end())
            .max()
            .unwrap_or(0);
        out.scratch_elems = out.scratch_elems.max(scratch_end);
        out.push(actions);
    }
    if sub.scratch_elems > 0 {
        let (buf, base) = map(BufId::Scratch);
        if buf == BufId::Scratch {
            out.scratch_elems = out.scratch_elems.max(base + sub.scratch_elems);
        }
    }
}
