//! The rank a log line made on this thread names.
//!
//! A process may hold several communicators (`dmscCommInitAll`, split, shrink, torch
//! process groups), so one rank per process is not enough for NCCL's `[rank]` prefix. The
//! executor marks its progress thread, and every job it runs on any thread, with its
//! communicator's rank; a front end marks the thread that creates a communicator. A logger
//! reads [`current`] and falls back to the process's first rank where no mark is set.

use crate::Rank;
use std::cell::Cell;

thread_local! {
    static RANK: Cell<Option<Rank>> = const { Cell::new(None) };
}

/// The rank marked on this thread, if any.
pub fn current() -> Option<Rank> {
    RANK.with(Cell::get)
}

/// Mark this thread with `rank` until the returned guard is dropped (the previous mark comes
/// back then, so marks nest).
pub fn scope(rank: Rank) -> Scope {
    Scope {
        prev: RANK.with(|r| r.replace(Some(rank))),
    }
}

/// Restores the previous mark when dropped; see [`scope`].
#[must_use = "the mark lasts only as long as the guard"]
pub struct Scope {
    prev: Option<Rank>,
}

impl Drop for Scope {
    fn drop(&mut self) {
        RANK.with(|r| r.set(self.prev));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_nest_and_are_per_thread() {
        assert_eq!(current(), None);
        {
            let _a = scope(3);
            assert_eq!(current(), Some(3));
            {
                let _b = scope(5);
                assert_eq!(current(), Some(5));
                std::thread::spawn(|| assert_eq!(current(), None))
                    .join()
                    .unwrap();
            }
            assert_eq!(current(), Some(3));
        }
        assert_eq!(current(), None);
    }
}
