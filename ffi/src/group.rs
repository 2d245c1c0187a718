//! `dmscGroupStart` / `dmscGroupEnd` (`ncclGroupStart` / `ncclGroupEnd`).
//!
//! Each thread has a nesting depth. While it is above zero, the blocking calls of this
//! thread (on any communicator) are checked and recorded instead of run, and return
//! `dmscSuccess`; their buffers are the caller's responsibility until the outermost
//! `dmscGroupEnd`, as in NCCL. That call then runs the recorded operations: per
//! communicator, the collectives in call order and then all sends and receives as one
//! batch that progresses concurrently (so two ranks that both send first do not deadlock);
//! different communicators progress concurrently too. It returns when all have finished.

use crate::guard::{guard, FfiError, Res};
use crate::op::{post, post_p2p};
use crate::result::dmscResult_t;
use dmsc_rs::call::{Call, P2pCall};
use dmsc_rs::{Communicator, Request};
use std::cell::RefCell;
use std::sync::Arc;

/// An operation recorded inside a group.
struct Recorded {
    /// The call that recorded it.
    f: &'static str,
    /// Its communicator's handle id.
    comm_id: usize,
    comm: Arc<Communicator>,
    call: Call,
}

#[derive(Default)]
struct GroupState {
    depth: usize,
    ops: Vec<Recorded>,
}

thread_local! {
    static GROUP: RefCell<GroupState> = RefCell::new(GroupState::default());
}

/// This thread's group nesting depth (0: not in a group).
pub(crate) fn depth() -> usize {
    GROUP.with(|g| g.borrow().depth)
}

/// Record `op` if this thread is inside a group and hand it back otherwise.
pub(crate) fn record(
    f: &'static str,
    comm_id: usize,
    comm: &Arc<Communicator>,
    call: Call,
) -> Option<Call> {
    GROUP.with(|g| {
        let mut g = g.borrow_mut();
        if g.depth == 0 {
            return Some(call);
        }
        g.ops.push(Recorded {
            f,
            comm_id,
            comm: comm.clone(),
            call,
        });
        None
    })
}

/// Start a group (`ncclGroupStart`): until the matching outermost `dmscGroupEnd`, this
/// thread's blocking operations (collectives, `dmscSend`, `dmscRecv`, on any communicator)
/// are checked and recorded, not run; each returns `dmscSuccess` or its argument error at
/// once, and its buffers must stay valid and untouched until `dmscGroupEnd` returns.
/// Groups nest; only the outermost end runs the operations. The `dmsc*Async` calls,
/// `dmscCommSplit` and `dmscCommDestroy` are `dmscInvalidUsage` inside a group.
///
/// Errors: none besides `dmscInternalError`.
/// Thread safety: groups are per thread.
#[no_mangle]
pub extern "C" fn dmscGroupStart() -> dmscResult_t {
    guard("dmscGroupStart", || {
        GROUP.with(|g| g.borrow_mut().depth += 1);
        Ok(())
    })
}

/// End a group (`ncclGroupEnd`). The outermost end runs the operations recorded since the
/// outermost `dmscGroupStart`: per communicator, the collectives in call order, then all
/// sends and receives together (they progress concurrently, so a ring in which every rank
/// sends first and receives second completes); different communicators progress
/// concurrently. It returns when all have finished: `dmscSuccess`, or the first error in
/// call order (the message names the recorded call and its communicator). Every rank must
/// record the same collectives in the same order, and matching sends and receives.
/// Sends and receives match by order and byte count (element types are not compared, as
/// in NCCL).
///
/// Errors: `dmscInvalidUsage` without a matching `dmscGroupStart`; otherwise the errors
/// of the recorded operations (communicators destroyed after recording still run them).
/// Thread safety: groups are per thread.
#[no_mangle]
pub extern "C" fn dmscGroupEnd() -> dmscResult_t {
    const F: &str = "dmscGroupEnd";
    guard(F, || {
        let ops = GROUP.with(|g| {
            let mut g = g.borrow_mut();
            match g.depth {
                0 => Err(FfiError::usage(
                    F,
                    "no group is open: call dmscGroupStart first",
                )),
                1 => {
                    g.depth = 0;
                    Ok(Some(std::mem::take(&mut g.ops)))
                }
                _ => {
                    g.depth -= 1;
                    Ok(None)
                }
            }
        })?;
        match ops {
            Some(ops) if !ops.is_empty() => run(ops),
            _ => Ok(()),
        }
    })
}

/// One communicator's share of a group.
struct Batch {
    comm_id: usize,
    comm: Arc<Communicator>,
    colls: Vec<(&'static str, Call)>,
    p2p: Vec<P2pCall>,
}

/// Run a closed group's operations and wait for all of them.
fn run(ops: Vec<Recorded>) -> Res<()> {
    let mut batches: Vec<Batch> = Vec::new();
    for r in ops {
        let i = match batches.iter().position(|b| b.comm_id == r.comm_id) {
            Some(i) => i,
            None => {
                batches.push(Batch {
                    comm_id: r.comm_id,
                    comm: r.comm,
                    colls: vec![],
                    p2p: vec![],
                });
                batches.len() - 1
            }
        };
        match r.call {
            Call::P2p { ops, .. } => batches[i].p2p.extend(ops),
            call => batches[i].colls.push((r.f, call)),
        }
    }
    // Post everything, then wait for everything: the requests wait on drop, so even on an
    // early error no operation outlives this call (the caller's buffers are free after it).
    let mut posted: Vec<(&'static str, usize, dmsc_rs::Result<Request<'static>>)> = vec![];
    for b in &batches {
        for (f, call) in &b.colls {
            // SAFETY: the group contract keeps the buffers valid until dmscGroupEnd returns,
            // and every request is waited for below before it does.
            posted.push((f, b.comm_id, unsafe { post(&b.comm, call) }));
        }
        if !b.p2p.is_empty() {
            // SAFETY: as above.
            let req = unsafe { post_p2p(&b.comm, b.p2p.clone()) };
            posted.push(("dmscSend/dmscRecv", b.comm_id, req));
        }
    }
    let mut first: Option<FfiError> = None;
    for (f, comm_id, req) in posted {
        if let Err(e) = req.and_then(|r| r.wait()) {
            first.get_or_insert_with(|| {
                let mut err = FfiError::dmsc("dmscGroupEnd", &e);
                err.msg = format!("dmscGroupEnd: {f} on comm {comm_id:#x}: {e}");
                err
            });
        }
    }
    match first {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::dmscResult_t::*;

    #[test]
    fn nesting_is_per_thread_and_unbalanced_ends_are_usage_errors() {
        assert_eq!(dmscGroupEnd(), dmscInvalidUsage);
        assert_eq!(dmscGroupStart(), dmscSuccess);
        assert_eq!(dmscGroupStart(), dmscSuccess);
        assert_eq!(depth(), 2);
        std::thread::spawn(|| assert_eq!(depth(), 0))
            .join()
            .unwrap();
        assert_eq!(dmscGroupEnd(), dmscSuccess);
        assert_eq!(depth(), 1);
        assert_eq!(dmscGroupEnd(), dmscSuccess, "an empty group ends fine");
        assert_eq!(depth(), 0);
        assert_eq!(dmscGroupEnd(), dmscInvalidUsage);
        assert!(crate::last_error::get().starts_with("dmscGroupEnd: no group is open"));
    }
}
