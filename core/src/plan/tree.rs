//! Pipelined double-binary-tree all-reduce.
//!
//! ## The trees
//!
//! NCCL's construction (`src/graph/trees.cc`, `ncclGetBtree` / `ncclGetDtree`): tree 0 is a
//! binary tree over ranks `0..n` built from the bits of the rank. For a rank `r > 0` with
//! lowest set bit `b`, its parent is `(r ^ b) | (b << 1)`, or `r ^ b` when that is out of
//! range; its children are `r - b/2` and the first of `r + b/2, r + b/4, ..., r + 1` that is
//! in range. Rank 0 is the root and has the single child `2^k`, the largest power of two
//! below `n`. Odd ranks are leaves. Tree 1 mirrors tree 0 (`r -> n-1-r`) when `n` is even
//! and shifts it by one rank (`r -> r+1 mod n`) when `n` is odd, so most ranks that are
//! interior in one tree are leaves in the other and the load is balanced. Tree 0 reduces and
//! broadcasts the first half of the data, tree 1 the second half (Sanders, Speck and Träff,
//! "Two-tree algorithms for full bandwidth broadcast, reduction and scan", Parallel
//! Computing 35(12), 2009, is the idea NCCL follows).
//!
//! ## The pipeline
//!
//! Each half is cut into segments of [`super::PlanConfig::segment_bytes`]. Every node sends
//! segment `k` up at time `up(v) + k` and so forwards segment `k` while it receives segment
//! `k+1` from its children; the root starts sending the reduced segments down as soon as the
//! first is complete, and each node forwards segment `k` down one time unit after receiving
//! it. Both trees run at the same time on the same global clock (see `timeline.rs`).
//!
//! The up times: a leaf sends segment 0 at time 0; an inner node sends at least one time
//! unit after its last child's segment arrives. A node's two children never deliver the same
//! segment at the same time (the later one is delayed by one unit), because both would
//! update the same accumulator in one step: the first child's segment is combined with the
//! node's input into `Output` (`RecvReduce { local: Input, dst: Output }`), the second into
//! that partial sum.
//!
//! Buffers: partial sums and the final result live in `Output`, so `Input` is only read, no
//! scratch is needed, and in place the same schedule is correct. Each element is reduced at
//! one root (and divided there for `Avg`), then broadcast, so results are bit-identical on
//! every rank.
//!
//! Steps: with `K` segments per tree and `D` the tree depth, about `K + 3D` (at most one up
//! step per level for the first delivered child plus one for the second, one down step
//! per level).

use super::timeline::Timeline;
use super::{segment, sl, Slice2};
use crate::schedule::{Action, BufId, Schedule};
use crate::types::Rank;

/// One rooted tree over the ranks `0..n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    /// The root.
    pub root: Rank,
    /// Parent of every rank (`None` for the root).
    pub parent: Vec<Option<Rank>>,
    /// Children of every rank (at most two, in NCCL's order `down0, down1`).
    pub children: Vec<Vec<Rank>>,
}

impl Tree {
    /// Build from a parent/children function of the rank.
    fn from_fn(n: usize, f: impl Fn(Rank) -> (Option<Rank>, Vec<Rank>)) -> Tree {
        let (parent, children): (Vec<_>, Vec<_>) = (0..n).map(f).unzip();
        let root = parent.iter().position(Option::is_none).unwrap_or(0);
        Tree {
            root,
            parent,
            children,
        }
    }

    /// Ranks in breadth-first order from the root.
    fn bfs(&self) -> Vec<Rank> {
        let mut order: Vec<Rank> = (!self.parent.is_empty())
            .then_some(self.root)
            .into_iter()
            .collect();
        let mut i = 0;
        while i < order.len() {
            order.extend_from_slice(&self.children[order[i]]);
            i += 1;
        }
        order
    }

    /// Depth of the tree (0 for a single node).
    pub fn depth(&self) -> usize {
        let mut depth = vec![0usize; self.parent.len()];
        let mut max = 0;
        for v in self.bfs() {
            if let Some(p) = self.parent[v] {
                depth[v] = depth[p] + 1;
                max = max.max(depth[v]);
            }
        }
        max
    }
}

/// NCCL's binary tree `ncclGetBtree` for rank `r` of `n`: `(parent, children)`.
fn btree_node(n: usize, r: Rank) -> (Option<Rank>, Vec<Rank>) {
    // Lowest set bit of r, or the smallest power of two >= n for r = 0.
    let mut bit = 1;
    while bit < n && bit & r == 0 {
        bit <<= 1;
    }
    if r == 0 {
        let child = (n > 1).then_some(bit >> 1);
        return (None, child.into_iter().collect());
    }
    let mut up = (r ^ bit) | (bit << 1);
    if up >= n {
        up = r ^ bit;
    }
    let mut children = Vec::with_capacity(2);
    let mut low = bit >> 1;
    if low > 0 {
        children.push(r - low);
        while low > 0 && r + low >= n {
            low >>= 1;
        }
        if low > 0 {
            children.push(r + low);
        }
    }
    (Some(up), children)
}

/// NCCL's double binary tree over `n` ranks: tree 0, and tree 1 mirrored (even `n`) or
/// shifted by one rank (odd `n`).
pub fn double_tree(n: usize) -> [Tree; 2] {
    let t0 = Tree::from_fn(n, |r| btree_node(n, r));
    // Rank r of tree 1 plays the part of rank `relabel(r, false)` of tree 0.
    let relabel = |r: Rank, into_tree1: bool| match (n % 2 == 1, into_tree1) {
        (true, true) => (r + 1) % n,
        (true, false) => (r + n - 1) % n,
        (false, _) => n - 1 - r,
    };
    let t1 = Tree::from_fn(n, |r| {
        let (p, c) = btree_node(n, relabel(r, false));
        let to = |x| relabel(x, true);
        (p.map(to), c.into_iter().map(to).collect())
    });
    [t0, t1]
}

/// Global times of one tree's pipeline (segment 0; segment `k` is `k` later).
#[derive(Debug)]
struct Timing {
    /// When each non-root rank sends segment 0 to its parent.
    up: Vec<usize>,
    /// When each rank sends segment 0 to its children (the root: once reduced and scaled).
    down: Vec<usize>,
}

fn timing(tree: &Tree, avg: bool) -> Timing {
    let n = tree.parent.len();
    let order = tree.bfs();
    let mut up = vec![0usize; n];
    let mut ready = vec![0usize; n];
    // Children before parents: walk the breadth-first order backwards.
    for &v in order.iter().rev() {
        let mut kids: Vec<Rank> = tree.children[v].clone();
        kids.sort_by_key(|&c| (ready[c], c));
        let mut last: Option<usize> = None;
        for c in kids {
            let t = match last {
                Some(l) if ready[c] <= l => l + 1,
                _ => ready[c],
            };
            up[c] = t;
            last = Some(t);
        }
        ready[v] = last.map_or(0, |l| l + 1);
    }
    let mut down = vec![0usize; n];
    for &v in &order {
        down[v] = match tree.parent[v] {
            None => ready[v] + usize::from(avg),
            Some(p) => down[p] + 1,
        };
    }
    Timing { up, down }
}

/// Rank `rank`'s double-binary-tree all-reduce of `count` elements over `n >= 2` ranks in
/// segments of `seg` elements.
pub(crate) fn plan(rank: Rank, n: usize, count: usize, seg: usize, avg: bool) -> Schedule {
    let half = count - count / 2;
    let ranges = [(0, half), (half, count - half)];
    let mut t = Timeline::default();
    for (tree, range) in double_tree(n).iter().zip(ranges) {
        if range.1 > 0 {
            place(&mut t, tree, &timing(tree, avg), rank, range, seg, avg);
        }
    }
    t.into_schedule(0)
}

/// Place rank `v`'s part of one tree's pipeline over `range`.
fn place(
    t: &mut Timeline,
    tree: &Tree,
    tm: &Timing,
    v: Rank,
    (start, len): Slice2,
    seg: usize,
    avg: bool,
) {
    let nseg = len.div_ceil(seg);
    let input = |s| sl(BufId::Input, s);
    let output = |s| sl(BufId::Output, s);
    // Children in the order their segments arrive.
    let mut kids = tree.children[v].clone();
    kids.sort_by_key(|&c| tm.up[c]);
    for k in 0..nseg {
        let s = segment(start, len, seg, k);
        // Up: combine the children's partial sums with our input.
        for (i, &c) in kids.iter().enumerate() {
            let local = if i == 0 { input(s) } else { output(s) };
            let dst = output(s);
            t.at(
                tm.up[c] + k,
                Action::RecvReduce {
                    peer: c,
                    local,
                    dst,
                },
            );
        }
        let partial = if kids.is_empty() { input(s) } else { output(s) };
        match tree.parent[v] {
            Some(p) => {
                t.at(
                    tm.up[v] + k,
                    Action::Send {
                        peer: p,
                        src: partial,
                    },
                );
                t.at(
                    tm.down[p] + k,
                    Action::Recv {
                        peer: p,
                        dst: output(s),
                    },
                );
            }
            None if avg => t.at(tm.down[v] - 1 + k, Action::Scale { dst: output(s) }),
            None => {}
        }
        // Down: forward the result to the children.
        for &c in &tree.children[v] {
            t.at(
                tm.down[v] + k,
                Action::Send {
                    peer: c,
                    src: output(s),
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_tree(t: &Tree, n: usize) {
        assert_eq!(t.parent[t.root], None);
        for v in 0..n {
            assert!(t.children[v].len() <= 2, "n={n} v={v}");
            for &c in &t.children[v] {
                assert_eq!(t.parent[c], Some(v), "n={n}: child {c} of {v}");
            }
            if let Some(p) = t.parent[v] {
                assert!(t.children[p].contains(&v), "n={n}: parent {p} of {v}");
            }
        }
        let mut seen = t.bfs();
        seen.sort_unstable();
        assert_eq!(seen, (0..n).collect::<Vec<_>>(), "n={n}: not spanning");
    }

    #[test]
    fn trees_span_and_agree() {
        let [a, _] = double_tree(0);
        assert_eq!(a.depth(), 0);
        for n in 1..=200 {
            let [a, b] = double_tree(n);
            check_tree(&a, n);
            check_tree(&b, n);
            assert_eq!(a.root, 0);
            let root1 = if n % 2 == 1 && n > 1 { 1 } else { n - 1 };
            assert_eq!(b.root, root1, "n={n}");
            assert!(a.depth() <= 2 * n.ilog2() as usize + 1);
        }
    }

    #[test]
    fn nccl_illustration_14_ranks() {
        // The picture in trees.cc for 14 ranks.
        let [t, _] = double_tree(14);
        assert_eq!(t.children[0], vec![8]);
        assert_eq!(t.children[8], vec![4, 12]);
        assert_eq!(t.children[12], vec![10, 13]);
        assert_eq!(t.children[4], vec![2, 6]);
        assert_eq!(t.parent[13], Some(12));
        assert!(t.children[13].is_empty());
    }

    #[test]
    fn most_ranks_are_a_leaf_somewhere() {
        for n in 2..=64 {
            let [a, b] = double_tree(n);
            let inner_in_both = (0..n)
                .filter(|&r| !a.children[r].is_empty() && !b.children[r].is_empty())
                .count();
            assert!(inner_in_both <= 1, "n={n}: {inner_in_both}");
        }
    }

    #[test]
    fn children_send_at_distinct_times() {
        for n in 2..=64 {
            for tree in double_tree(n) {
                let tm = timing(&tree, false);
                for v in 0..n {
                    let kids = &tree.children[v];
                    if kids.len() == 2 {
                        assert_ne!(tm.up[kids[0]], tm.up[kids[1]]);
                    }
                    for &c in kids {
                        assert!(tm.up[c] < tm.down[v]);
                    }
                }
            }
        }
    }
}
