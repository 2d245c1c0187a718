//! A counting gate: at most `max` holders at once (the store's connections still
//! authenticating, [`super::ServerConfig::max_pending`]).
//!
//! Entering is a compare-and-swap loop on one counter, so the bound holds whichever threads
//! enter and leave concurrently (a check-then-increment would let two entrants pass a full
//! gate). The `loom_*` tests check the bound and that every permit is returned under the C11
//! memory model (see `dmsc_core::sync`).

use dmsc_core::sync::{AtomicUsize, Ordering};

/// At most `max` holders at once.
#[derive(Debug)]
pub(crate) struct Gate {
    held: AtomicUsize,
    max: usize,
}

impl Gate {
    /// A gate for `max` holders.
    pub(crate) fn new(max: usize) -> Gate {
        Gate {
            held: AtomicUsize::new(0),
            max,
        }
    }

    /// The bound.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Take a place; false when all `max` are held.
    pub(crate) fn try_enter(&self) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Give back a place taken with [`Gate::try_enter`].
    pub(crate) fn leave(&self) {
        let _ = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Places held now.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn bounds_holders_and_returns_places() {
        let g = Gate::new(2);
        assert!(g.try_enter() && g.try_enter());
        assert!(!g.try_enter());
        g.leave();
        assert!(g.try_enter());
        g.leave();
        g.leave();
        g.leave(); // an extra leave never wraps below zero
        assert_eq!(g.held(), 0);
        assert_eq!(g.max(), 2);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::thread;
    use std::sync::Arc;

    /// Two threads race for one place, each leaving after it entered: never both inside
    /// at once, and the place comes back.
    #[test]
    fn loom_never_more_than_max_inside() {
        loom::model(|| {
            let g = Arc::new(Gate::new(1));
            let inside = Arc::new(AtomicUsize::new(0));
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let (g, inside) = (g.clone(), inside.clone());
                    thread::spawn(move || {
                        if g.try_enter() {
                            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                            assert!(now <= 1, "{now} holders of a gate for 1");
                            inside.fetch_sub(1, Ordering::SeqCst);
                            g.leave();
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            assert_eq!(g.held.load(Ordering::SeqCst), 0);
        });
    }
}
