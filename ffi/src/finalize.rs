//! `dmscCommFinalize` (NCCL's `ncclCommFinalize`): finish everything issued on a
//! communicator before it is destroyed.

use crate::comm::{comm_for_op, mark_finalized};
use crate::group;
use crate::guard::{guard, Ctx, FfiError};
use crate::handle::dmscComm_t;
use crate::result::dmscResult_t;

/// Finish every operation issued on `comm` (`ncclCommFinalize`): returns once all of this
/// rank's operations on it, non-blocking ones included, have completed and every rank of
/// `comm` has called it (it ends with a barrier, so no peer still needs this rank). After
/// it, `comm` takes no operation (`dmscInvalidUsage`) but answers queries, and
/// `dmscCommDestroy` frees it without waiting for anyone. Collective over all ranks of
/// `comm`, like an operation on it.
///
/// Errors: `dmscInvalidArgument` if `comm` is NULL; `dmscInvalidUsage` if it is not a live
/// communicator, was already finalized, or the call is between `dmscGroupStart` and
/// `dmscGroupEnd`; and the errors of an operation on `comm` (then it is not finalized).
/// Thread safety: as an operation on `comm`.
#[no_mangle]
pub extern "C" fn dmscCommFinalize(comm: dmscComm_t) -> dmscResult_t {
    const F: &str = "dmscCommFinalize";
    guard(F, || {
        let (id, c) = comm_for_op(F, comm)?;
        if group::depth() > 0 {
            return Err(FfiError::usage(
                F,
                "cannot finalize between dmscGroupStart and dmscGroupEnd",
            ));
        }
        // Operations run in the order they were issued, so this barrier runs after every
        // request queued before it, and returns only when every rank has reached it.
        c.barrier().ctx(F)?;
        mark_finalized(id);
        Ok(())
    })
}
