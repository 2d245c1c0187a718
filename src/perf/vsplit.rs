//! The per-peer counts of dmsc-perf's `all_to_allv`: a deterministic, non-uniform split.
//!
//! A row of `all_to_allv` moves as much as `all_to_all` of the same size: every rank sends
//! and receives `total = count * nranks` elements (`count` as [`super::sizes::layout`] gives
//! it for all_to_all). The total is cut into `nranks` parts weighted 1, 2, ..., `nranks`
//! ([`parts`]); rank `i` sends part `(i + j) % nranks` to rank `j`. Each part index occurs
//! once per row and once per column of that matrix, so every rank sends `total` elements and
//! receives `total` elements, while the pieces between pairs of ranks differ (by a factor up
//! to `nranks`). Displacements are the prefix sums of the counts, in rank order.

/// The element counts of the parts of `total` over `nranks` ranks: part `k` is
/// `floor(total * (k + 1) / (nranks * (nranks + 1) / 2))`, and the last part also takes
/// what rounding left over, so that the parts sum to `total`.
pub fn part(total: usize, nranks: usize, k: usize) -> usize {
    let n = nranks.max(1) as u128;
    let weights = n * (n + 1) / 2;
    let floor = |k: u128| (total as u128 * (k + 1) / weights) as usize;
    if k + 1 == nranks.max(1) {
        let others: usize = (0..k as u128).map(floor).sum();
        total - others
    } else {
        floor(k as u128)
    }
}

/// Every part of `total` (see [`part`]).
pub fn parts(total: usize, nranks: usize) -> Vec<usize> {
    (0..nranks.max(1)).map(|k| part(total, nranks, k)).collect()
}

/// Elements rank `from` sends to rank `to`.
pub fn piece(total: usize, nranks: usize, from: usize, to: usize) -> usize {
    part(total, nranks, (from + to) % nranks.max(1))
}

/// One rank's arguments to `all_to_all_v` (in elements).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VSplit {
    /// Elements sent to each rank.
    pub send_counts: Vec<usize>,
    /// Where in the send buffer each rank's elements start.
    pub send_displs: Vec<usize>,
    /// Elements received from each rank.
    pub recv_counts: Vec<usize>,
    /// Where in the receive buffer each rank's elements land.
    pub recv_displs: Vec<usize>,
}

/// Prefix sums: the displacement of each count.
fn displs(counts: &[usize]) -> Vec<usize> {
    counts
        .iter()
        .scan(0, |at, c| {
            let d = *at;
            *at += c;
            Some(d)
        })
        .collect()
}

impl VSplit {
    /// Rank `rank`'s split of `total` elements each way over `nranks` ranks.
    pub fn for_rank(total: usize, nranks: usize, rank: usize) -> VSplit {
        let n = nranks.max(1);
        let send_counts: Vec<usize> = (0..n).map(|j| piece(total, n, rank, j)).collect();
        let recv_counts: Vec<usize> = (0..n).map(|i| piece(total, n, i, rank)).collect();
        VSplit {
            send_displs: displs(&send_counts),
            recv_displs: displs(&recv_counts),
            send_counts,
            recv_counts,
        }
    }

    /// `[send_counts, send_displs, recv_counts, recv_displs]`, as `all_to_all_v` takes them.
    pub fn args(&self) -> [&[usize]; 4] {
        [
            &self.send_counts,
            &self.send_displs,
            &self.recv_counts,
            &self.recv_displs,
        ]
    }
}

/// Where element `idx` of rank `me`'s receive buffer comes from: `(source rank, index in the
/// source's send buffer)`; `None` beyond the `total` received elements.
pub fn source_of(total: usize, nranks: usize, me: usize, idx: usize) -> Option<(usize, usize)> {
    let n = nranks.max(1);
    let mut start = 0;
    for i in 0..n {
        let c = piece(total, n, i, me);
        if idx < start + c {
            // Rank i's elements for `me` start after what it sends to ranks 0..me.
            let sdispl: usize = (0..me).map(|j| piece(total, n, i, j)).sum();
            return Some((i, sdispl + idx - start));
        }
        start += c;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_sum_and_differ() {
        for n in 1..=9 {
            for total in [0, 1, 7, 100, 1000, 4096 * 3] {
                let p = parts(total, n);
                assert_eq!(p.iter().sum::<usize>(), total, "n={n} total={total}");
                if total >= n * (n + 1) && n > 1 {
                    assert!(p.windows(2).all(|w| w[0] < w[1]), "{p:?}");
                }
            }
        }
        assert_eq!(parts(100, 4), vec![10, 20, 30, 40]);
        assert_eq!(parts(10, 3), vec![1, 3, 6]);
    }

    #[test]
    fn every_rank_sends_and_receives_the_total() {
        for n in 1..=6 {
            let total = 37 * n;
            let splits: Vec<VSplit> = (0..n).map(|r| VSplit::for_rank(total, n, r)).collect();
            for (r, s) in splits.iter().enumerate() {
                assert_eq!(s.send_counts.iter().sum::<usize>(), total);
                assert_eq!(s.recv_counts.iter().sum::<usize>(), total);
                for (j, other) in splits.iter().enumerate() {
                    assert_eq!(s.send_counts[j], other.recv_counts[r]);
                }
                assert_eq!(s.send_displs[0], 0);
            }
        }
        let s = VSplit::for_rank(100, 4, 1);
        assert_eq!(s.send_counts, vec![20, 30, 40, 10]);
        assert_eq!(s.send_displs, vec![0, 20, 50, 90]);
    }

    #[test]
    fn sources_match_the_displacements() {
        let (total, n) = (60, 3);
        for me in 0..n {
            let mine = VSplit::for_rank(total, n, me);
            for idx in 0..total {
                let (src, at) = source_of(total, n, me, idx).expect("in range");
                let theirs = VSplit::for_rank(total, n, src);
                let off = idx - mine.recv_displs[src];
                assert!(off < mine.recv_counts[src]);
                assert_eq!(at, theirs.send_displs[me] + off);
            }
            assert_eq!(source_of(total, n, me, total), None);
        }
    }
}
