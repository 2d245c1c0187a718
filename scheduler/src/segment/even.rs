//! The baseline: the same number of layers in every stage.

/// Cuts of `n` layers into `k` stages of `⌊n/k⌋` or `⌈n/k⌉` layers; `None` when `k` is 0 or
/// larger than `n`.
pub fn cuts(n: usize, k: usize) -> Option<Vec<usize>> {
    if k == 0 || k > n {
        return None;
    }
    Some((0..=k).map(|s| s * n / k).collect())
}
