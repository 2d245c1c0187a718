//! A rank's actions placed on a global clock, turned into a [`Schedule`].
//!
//! Planners put each action at the global time at which it happens. All ranks compute the
//! same times from the same formulas, so the two ends of every message sit at the same time
//! on both ranks, and (as long as a pair exchanges its messages of one time in the same order
//! on both sides) the steps of all ranks can advance in lockstep: no step ever waits for a
//! peer that is waiting for a later step of its own. Times at which a rank has nothing to do
//! are dropped from its schedule.

use crate::schedule::{Action, Schedule, Step};

/// Actions per global time.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    slots: Vec<Vec<Action>>,
}

impl Timeline {
    /// Place `action` at time `t` (after the actions already there).
    pub(crate) fn at(&mut self, t: usize, action: Action) {
        if self.slots.len() <= t {
            self.slots.resize_with(t + 1, Vec::new);
        }
        self.slots[t].push(action);
    }

    /// The schedule: one step per non-empty time, local actions first (the order in which
    /// they run anyway), transfers in placement order.
    pub(crate) fn into_schedule(self, scratch_elems: usize) -> Schedule {
        let steps = self
            .slots
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(|mut actions| {
                actions.sort_by_key(|a| !a.is_local()); // stable: keeps transfer order
                Step { actions }
            })
            .collect();
        Schedule {
            steps,
            scratch_elems,
        }
    }
}
