//! The withdrawal epoch: how a receiver that copies a chunk out of a sender's memory learns
//! that the sender withdrew it meanwhile (see [`super::CmaTransport`]).
//!
//! It is a seqlock reduced to its check (Boehm, "Can seqlocks get along with programming
//! language memory models?", MSPC 2012): the sender bumps the epoch before it lets go of
//! the memory ([`withdraw`]); the receiver copies, then re-reads the epoch
//! ([`unchanged_after_copy`]) and delivers the chunk only when it is the one announced in the
//! chunk's descriptor. The copy and the re-read are `process_vm_readv` calls, plain loads
//! with no ordering of their own, so both ends fence: a release fence after the bump orders
//! it before every later write to the withdrawn memory, and an acquire fence between copy and
//! re-read makes a copy that saw such a write also see the bump. The `loom_*` tests below
//! check this under the C11 model (plain loads modelled as relaxed ones); without either
//! fence, they find a copy of overwritten memory delivered as data.

use dmsc_core::error::Result;
use dmsc_core::sync::{fence, AtomicU64, Ordering};

/// A fresh epoch word: its address goes to the peers ([`address`]). It starts at a random
/// value and is never freed: a receiver may read it after its transport is gone, and must
/// then find a value that still means "withdrawn", never reused memory (8 bytes per
/// communicator).
pub(crate) fn new_epoch() -> &'static AtomicU64 {
    let seed = crate::store::random_nonce().unwrap_or(0x005e_ed0f_d15c_0001);
    Box::leak(Box::new(AtomicU64::new(seed)))
}

/// The address peers read the epoch at.
pub(crate) fn address(epoch: &'static AtomicU64) -> u64 {
    epoch as *const AtomicU64 as u64
}

/// The value to announce in the descriptor of a chunk posted now.
pub(crate) fn current(epoch: &AtomicU64) -> u64 {
    epoch.load(Ordering::SeqCst)
}

/// Withdraw every chunk announced so far. After this returns, the memory of those chunks may
/// be written or freed.
pub(crate) fn withdraw(epoch: &AtomicU64) {
    epoch.fetch_add(1, Ordering::SeqCst);
    // Later writes to the withdrawn memory must not be seen without the bump.
    fence(Ordering::Release);
}

/// After copying a chunk announced with epoch `announced`: true when the sender had not
/// withdrawn it, so the copy is the chunk's data. `read_now` reads the sender's epoch.
pub(crate) fn unchanged_after_copy(
    announced: u64,
    read_now: impl FnOnce() -> Result<u64>,
) -> Result<bool> {
    // A copy that saw a write made after the bump must see the bump in the re-read.
    fence(Ordering::Acquire);
    Ok(read_now()? == announced)
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::thread;
    use std::sync::Arc;

    const OLD: u64 = 0x0dd_da7a;
    const NEW: u64 = 0x0bad_f00d;

    /// A sender withdraws a chunk of two words and reuses the memory while a receiver copies
    /// it (word by word, as `process_vm_readv` may): whatever the interleaving and whichever
    /// stores the loads see, a delivered copy is the chunk as announced.
    #[test]
    fn loom_a_copy_of_withdrawn_memory_is_never_delivered() {
        loom::model(|| {
            let epoch = Arc::new(AtomicU64::new(5));
            let chunk = Arc::new([AtomicU64::new(OLD), AtomicU64::new(OLD)]);
            let announced = current(&epoch);
            let sender = {
                let (epoch, chunk) = (epoch.clone(), chunk.clone());
                thread::spawn(move || {
                    withdraw(&epoch);
                    // The caller's next use of its buffer.
                    chunk[0].store(NEW, Ordering::Relaxed);
                    chunk[1].store(NEW, Ordering::Relaxed);
                })
            };
            let copy = [
                chunk[0].load(Ordering::Relaxed),
                chunk[1].load(Ordering::Relaxed),
            ];
            let valid =
                unchanged_after_copy(announced, || Ok(epoch.load(Ordering::Relaxed))).unwrap();
            if valid {
                assert_eq!(copy, [OLD, OLD], "a copy of withdrawn memory was delivered");
            }
            sender.join().unwrap();
        });
    }

    /// Once the sender has withdrawn (and the receiver has learnt of it by any synchronizing
    /// means), no copy passes the check.
    #[test]
    fn loom_after_withdrawal_the_check_fails() {
        loom::model(|| {
            let epoch = Arc::new(AtomicU64::new(9));
            let announced = current(&epoch);
            let e = epoch.clone();
            thread::spawn(move || withdraw(&e)).join().unwrap();
            assert!(
                !unchanged_after_copy(announced, || Ok(epoch.load(Ordering::Relaxed))).unwrap()
            );
        });
    }
}
