//! Making communicators: unique ids, init from an id or from the launcher's environment,
//! split and shrink (`ncclGetUniqueId`, `ncclCommInitRank`, `ncclCommInitRankConfig`, `ncclCommInitAll`,
//! `ncclCommSplit`, `ncclCommShrink` in NCCL's `nccl.h`).

use crate::args::{out, rank_arg};
use crate::comm::{comm_for_op, COMMS};
use crate::config::{dmscConfig_t, resolve, Base};
use crate::group;
use crate::guard::{guard, Ctx, FfiError, Res};
use crate::handle::{dmscComm_t, handle_of};
use crate::result::dmscResult_t;
use dmsc_rs::{Communicator, UniqueId};
use std::ffi::{c_char, c_int};

/// Bytes of a `dmscUniqueId` (NCCL's `NCCL_UNIQUE_ID_BYTES`).
pub const DMSC_UNIQUE_ID_BYTES: usize = 128;

/// `color` for `dmscCommSplit` meaning "join no new communicator" (`NCCL_SPLIT_NOCOLOR`).
pub const DMSC_SPLIT_NOCOLOR: c_int = -1;

/// `flags` of `dmscCommShrink`: leave the parent as it is (`NCCL_SHRINK_DEFAULT`).
pub const DMSC_SHRINK_DEFAULT: c_int = 0;
/// `flags` of `dmscCommShrink`: abort the parent first, so that operations still in flight
/// on it (on other threads) end at once (`NCCL_SHRINK_ABORT`).
pub const DMSC_SHRINK_ABORT: c_int = 1;

const _: () = assert!(DMSC_UNIQUE_ID_BYTES == UniqueId::SIZE);

/// A job's rendezvous token (NCCL's `ncclUniqueId`): made once by `dmscGetUniqueId`, copied
/// to every rank by the program (an MPI broadcast, a file, a socket...), and passed to
/// `dmscCommInitRank` on each. Plain bytes: copy it freely. It names the rendezvous store
/// that the process which made it serves, plus a random job nonce; it is versioned and
/// checksummed, so a corrupted id is `dmscInvalidArgument`, not a hang.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct dmscUniqueId {
    /// The encoded id.
    pub internal: [c_char; DMSC_UNIQUE_ID_BYTES],
}

/// Make a unique id for a new job (`ncclGetUniqueId`): starts a rendezvous store in this
/// process, listening on the interface `DMSC_SOCKET_IFNAME` selects (default: the first
/// non-loopback IPv4 interface). Call it on one process, give the id to every rank, then
/// call `dmscCommInitRank` on each; the making process must take part (its store lives
/// until the communicator it joins with this id is destroyed).
///
/// Errors: `dmscInvalidArgument` if `uniqueId` is NULL or no interface matches;
/// `dmscSystemError` if the store cannot listen.
/// Thread safety: callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn dmscGetUniqueId(uniqueId: *mut dmscUniqueId) -> dmscResult_t {
    const F: &str = "dmscGetUniqueId";
    guard(F, || {
        let slot = out(F, "uniqueId", uniqueId)?;
        let bytes = dmsc_rs::new_unique_id().ctx(F)?.to_bytes();
        let id = dmscUniqueId {
            internal: bytes.map(|b| b as c_char),
        };
        // SAFETY: non-NULL; the caller passes a writable dmscUniqueId.
        unsafe { slot.write(id) };
        Ok(())
    })
}

/// Register a new communicator and store its handle in `*comm`.
///
/// # Safety
/// `comm` is a writable `dmscComm_t` (checked non-NULL).
unsafe fn publish(comm: *mut dmscComm_t, c: Communicator) {
    let id = COMMS.insert(c);
    // SAFETY: the caller's contract.
    unsafe { comm.write(handle_of(id)) };
}

/// The output argument `comm` of function `f`, set to NULL until the call succeeds.
///
/// # Safety
/// `comm` is NULL or a writable `dmscComm_t`.
unsafe fn comm_out(f: &str, comm: *mut dmscComm_t) -> Res<*mut dmscComm_t> {
    let p = out(f, "comm", comm)?;
    // SAFETY: non-NULL and writable by the caller's contract.
    unsafe { p.write(std::ptr::null_mut()) };
    Ok(p)
}

/// Join the communicator of `nranks` ranks named by `commId` as rank `rank`
/// (`ncclCommInitRank`), with settings from the `DMSC_*` environment variables: the same
/// as `dmscCommInitRankConfig` with a NULL config.
///
/// Errors: see `dmscCommInitRankConfig`.
/// Thread safety: as `dmscCommInitRankConfig`.
#[no_mangle]
pub unsafe extern "C" fn dmscCommInitRank(
    comm: *mut dmscComm_t,
    nranks: c_int,
    commId: dmscUniqueId,
    rank: c_int,
) -> dmscResult_t {
    // SAFETY: forwarded contract; a NULL config is allowed.
    unsafe {
        init_rank(
            "dmscCommInitRank",
            comm,
            nranks,
            commId,
            rank,
            std::ptr::null(),
        )
    }
}

/// Join the communicator of `nranks` ranks named by `commId` as rank `rank`, with settings
/// `config` (`ncclCommInitRankConfig`; NULL: all from the environment). Collective over the
/// `nranks` processes: every rank calls it with the same id, and it returns once all have
/// joined and connected, or the config's timeout passed. On success `*comm` is the new
/// communicator, on failure NULL.
///
/// Errors: `dmscInvalidArgument` if `comm` is NULL, `nranks` < 1, `rank` is not in
/// `0 ... nranks-1`, `commId` is not a valid id, or the config is invalid (the message names
/// the field); `dmscTimeout` if the other ranks did not arrive in time; `dmscSystemError`
/// on a network failure.
/// Thread safety: callable from any thread; concurrent calls for different communicators
/// are fine.
#[no_mangle]
pub unsafe extern "C" fn dmscCommInitRankConfig(
    comm: *mut dmscComm_t,
    nranks: c_int,
    commId: dmscUniqueId,
    rank: c_int,
    config: *const dmscConfig_t,
) -> dmscResult_t {
    // SAFETY: forwarded contract.
    unsafe { init_rank("dmscCommInitRankConfig", comm, nranks, commId, rank, config) }
}

/// # Safety
/// As `dmscCommInitRankConfig`.
unsafe fn init_rank(
    f: &str,
    comm: *mut dmscComm_t,
    nranks: c_int,
    commId: dmscUniqueId,
    rank: c_int,
    config: *const dmscConfig_t,
) -> dmscResult_t {
    guard(f, || {
        // SAFETY: the caller's contract: comm is NULL or writable.
        let comm = unsafe { comm_out(f, comm) }?;
        if nranks < 1 {
            return Err(FfiError::invalid(
                f,
                format_args!("nranks {nranks} must be at least 1"),
            ));
        }
        let rank = rank_arg(f, "rank", rank, nranks as usize)?;
        let id = UniqueId::from_bytes(&commId.internal.map(|b| b as u8))
            .map_err(|e| FfiError::invalid(f, format_args!("commId: {e}")))?;
        // SAFETY: the caller's contract: config is NULL or a readable dmscConfig_t.
        let cfg = unsafe { resolve(f, config, Base::Env) }?;
        let c = Communicator::init_with_id(&id, rank, nranks as usize, cfg).ctx(f)?;
        // SAFETY: comm is non-NULL and writable.
        unsafe { publish(comm, c) };
        Ok(())
    })
}

/// The most communicators one `dmscCommInitAll` makes.
const MAX_INIT_ALL: c_int = 1024;

/// Make `ndev` communicators of one job in this process (`ncclCommInitAll`): `comms[i]`
/// becomes rank `i` of `ndev`, all connected to each other (shared memory within the
/// process; their rendezvous store listens on loopback only), with settings from the `DMSC_*`
/// environment. NCCL puts rank `i` on GPU
/// `devlist[i]`; dmsc communicators are host ones, so `devlist` may be NULL and otherwise
/// must hold `ndev` distinct device numbers >= 0, which are checked and not used yet. Use
/// each communicator from its own thread (operations block until all ranks take part).
/// On failure every `comms[i]` is NULL and nothing stays allocated.
///
/// Errors: `dmscInvalidArgument` if `comms` is NULL, `ndev` is not in 1..=1024, or `devlist`
/// holds a negative or repeated entry; `dmscTimeout` or `dmscSystemError` if the ranks could not
/// connect.
/// Thread safety: callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn dmscCommInitAll(
    comms: *mut dmscComm_t,
    ndev: c_int,
    devlist: *const c_int,
) -> dmscResult_t {
    const F: &str = "dmscCommInitAll";
    guard(F, || {
        let comms = out(F, "comms", comms)?;
        if !(1..=MAX_INIT_ALL).contains(&ndev) {
            return Err(FfiError::invalid(
                F,
                format_args!(
                    "ndev {ndev} must be in 1..={MAX_INIT_ALL} (one thread joins per communicator)"
                ),
            ));
        }
        let n = ndev as usize;
        // SAFETY: non-NULL; the caller passes an array of ndev handles.
        let slots = unsafe { std::slice::from_raw_parts_mut(comms, n) };
        slots.fill(std::ptr::null_mut());
        if !devlist.is_null() {
            // SAFETY: the caller passes NULL or an array of ndev ints.
            let devs = unsafe { std::slice::from_raw_parts(devlist, n) };
            for (i, &d) in devs.iter().enumerate() {
                if d < 0 || devs[..i].contains(&d) {
                    return Err(FfiError::invalid(
                        F,
                        format_args!(
                            "devlist[{i}] is {d}: device numbers must be >= 0 and distinct"
                        ),
                    ));
                }
            }
        }
        // SAFETY: NULL selects the environment's settings.
        let cfg = unsafe { resolve(F, std::ptr::null(), Base::Env) }?;
        let id = dmsc_rs::new_local_unique_id().ctx(F)?;
        // Every rank joins at once, each on its own thread: joining blocks until all have.
        let joined: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..n)
                .map(|r| {
                    let (id, cfg) = (&id, cfg.clone());
                    s.spawn(move || Communicator::init_with_id(id, r, n, cfg))
                })
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(dmsc_rs::Error::internal("a joining thread panicked"))
                    })
                })
                .collect()
        });
        let mut made = Vec::with_capacity(n);
        let mut first_err = None;
        for r in joined {
            match r {
                Ok(c) => made.push(c),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            // Dropped together: none is handed out, and the store goes if none took it.
            drop(made);
            dmsc_rs::release_unique_id(&id);
            return Err(e).ctx(F);
        }
        for (slot, c) in slots.iter_mut().zip(made) {
            // SAFETY: slot points into the caller's writable array.
            unsafe { publish(slot, c) };
        }
        Ok(())
    })
}

/// Join the communicator described by the launcher's environment: dmscrun and torchrun
/// (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`), Open MPI (`OMPI_COMM_WORLD_RANK`,
/// `OMPI_COMM_WORLD_SIZE`) or Slurm (`SLURM_PROCID`, `SLURM_NTASKS`), with the store at
/// `DMSC_STORE_ADDR` or `MASTER_ADDR:MASTER_PORT`. No unique id is needed: rank 0 serves the
/// rendezvous store. `config` as for `dmscCommInitRankConfig` (NULL: all from the
/// environment). Collective over all ranks of the job. On success `*comm` is the new
/// communicator, on failure NULL. (NCCL has no equivalent; this is dmsc's usual entry
/// point.)
///
/// Errors: `dmscInvalidArgument` if `comm` is NULL, the environment describes no job or is
/// inconsistent, or the config is invalid; `dmscTimeout` if the other ranks did not arrive
/// in time; `dmscSystemError` on a network failure.
/// Thread safety: callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn dmscCommInitFromEnv(
    comm: *mut dmscComm_t,
    config: *const dmscConfig_t,
) -> dmscResult_t {
    const F: &str = "dmscCommInitFromEnv";
    guard(F, || {
        // SAFETY: the caller's contract: comm is NULL or writable.
        let comm = unsafe { comm_out(F, comm) }?;
        // SAFETY: the caller's contract: config is NULL or a readable dmscConfig_t.
        let cfg = unsafe { resolve(F, config, Base::Env) }?;
        let c = Communicator::from_env_with_config(cfg).ctx(F)?;
        // SAFETY: comm is non-NULL and writable.
        unsafe { publish(comm, c) };
        Ok(())
    })
}

/// Split `comm` into new communicators by `color` (`ncclCommSplit`): ranks passing the same
/// color form one, ordered by `key` and then by rank in `comm`. A rank passing
/// `DMSC_SPLIT_NOCOLOR` joins none and gets `*newcomm = NULL`. Collective over all ranks of
/// `comm` (like an operation on it). `config`: NULL inherits `comm`'s settings; otherwise
/// its set fields override them (`socketIfname` must stay unset: the new communicator
/// listens on `comm`'s interface). The new communicator is independent of `comm` and must
/// be destroyed on its own.
///
/// Errors: `dmscInvalidArgument` if `newcomm` is NULL, `color` is negative other than
/// `DMSC_SPLIT_NOCOLOR`, or the config is invalid; `dmscInvalidUsage` if `comm` is not a
/// live communicator or inside a group; and the errors of an operation on `comm`.
/// Thread safety: as an operation on `comm`.
#[no_mangle]
pub unsafe extern "C" fn dmscCommSplit(
    comm: dmscComm_t,
    color: c_int,
    key: c_int,
    newcomm: *mut dmscComm_t,
    config: *const dmscConfig_t,
) -> dmscResult_t {
    const F: &str = "dmscCommSplit";
    guard(F, || {
        let newcomm = out(F, "newcomm", newcomm)?;
        // SAFETY: non-NULL and writable by the caller's contract.
        unsafe { newcomm.write(std::ptr::null_mut()) };
        let (_, parent) = comm_for_op(F, comm)?;
        if group::depth() > 0 {
            return Err(FfiError::usage(
                F,
                "cannot split between dmscGroupStart and dmscGroupEnd",
            ));
        }
        let color = match color {
            DMSC_SPLIT_NOCOLOR => None,
            c if c >= 0 => Some(c as u32),
            c => {
                return Err(FfiError::invalid(
                    F,
                    format_args!(
                        "color {c} is negative; use a color >= 0, or DMSC_SPLIT_NOCOLOR (-1)"
                    ),
                ))
            }
        };
        // SAFETY: the caller's contract: config is NULL or a readable dmscConfig_t.
        let cfg = unsafe { resolve(F, config, Base::Parent(parent.config().clone())) }?;
        if let Some(c) = parent
            .split_with_config(color, i64::from(key), cfg)
            .ctx(F)?
        {
            // SAFETY: newcomm is non-NULL and writable.
            unsafe { publish(newcomm, c) };
        }
        Ok(())
    })
}

/// Build a new communicator of the ranks of `comm` minus the `excludeRanksCount` ranks listed
/// at `excludeRanksList` (`ncclCommShrink`), typically after `dmscPeerLost` named a lost
/// rank. Every surviving rank calls it with the same list; the excluded ranks do not. The
/// new ranks are the survivors in their order in `comm`. `comm` may be failed (it usually
/// is) and is left as it is, to be destroyed on its own; with `flags` `DMSC_SHRINK_ABORT` it
/// is aborted first. `config`: NULL inherits `comm`'s settings; otherwise its set fields
/// override them (`socketIfname` must stay unset). The rendezvous runs through the store
/// `comm` was built with: it must still be reachable (always under dmscrun, which serves it;
/// elsewhere rank 0 serves it unless `DMSC_STORE_EXTERNAL` is set).
///
/// Errors: `dmscInvalidArgument` if `newcomm` is NULL, `excludeRanksList` is NULL with a
/// positive count, the count is negative, a listed rank is out of range or is the calling
/// rank, `flags` is unknown, or the config is invalid; `dmscInvalidUsage` if `comm` is not a
/// live communicator, was made by `dmscCommSplit`, is used inside a group, or the survivors
/// passed different lists; `dmscTimeout` and `dmscSystemError` from the rendezvous.
/// Thread safety: callable while other threads use `comm` (they should abort it first, or
/// pass `DMSC_SHRINK_ABORT`).
#[no_mangle]
pub unsafe extern "C" fn dmscCommShrink(
    comm: dmscComm_t,
    excludeRanksList: *const c_int,
    excludeRanksCount: c_int,
    newcomm: *mut dmscComm_t,
    config: *const dmscConfig_t,
    flags: c_int,
) -> dmscResult_t {
    const F: &str = "dmscCommShrink";
    guard(F, || {
        let newcomm = out(F, "newcomm", newcomm)?;
        // SAFETY: non-NULL and writable by the caller's contract.
        unsafe { newcomm.write(std::ptr::null_mut()) };
        let (_, parent) = comm_for_op(F, comm)?;
        if group::depth() > 0 {
            return Err(FfiError::usage(
                F,
                "cannot shrink between dmscGroupStart and dmscGroupEnd",
            ));
        }
        if flags != DMSC_SHRINK_DEFAULT && flags != DMSC_SHRINK_ABORT {
            return Err(FfiError::invalid(
                F,
                format_args!(
                    "flags {flags} is not DMSC_SHRINK_DEFAULT (0) or DMSC_SHRINK_ABORT (1)"
                ),
            ));
        }
        let count = usize::try_from(excludeRanksCount).map_err(|_| {
            FfiError::invalid(
                F,
                format_args!("excludeRanksCount {excludeRanksCount} is negative"),
            )
        })?;
        let list: &[c_int] = if count == 0 {
            &[]
        } else if excludeRanksList.is_null() {
            return Err(FfiError::invalid(
                F,
                format_args!("excludeRanksList is NULL but excludeRanksCount is {count}"),
            ));
        } else {
            // SAFETY: the caller's contract: excludeRanksCount readable ints.
            unsafe { std::slice::from_raw_parts(excludeRanksList, count) }
        };
        let exclude = list
            .iter()
            .map(|&r| rank_arg(F, "excluded rank", r, parent.size()))
            .collect::<Res<Vec<_>>>()?;
        // SAFETY: the caller's contract: config is NULL or a readable dmscConfig_t.
        let cfg = unsafe { resolve(F, config, Base::Parent(parent.config().clone())) }?;
        if flags == DMSC_SHRINK_ABORT {
            parent.abort();
        }
        let c = parent.shrink_with_config(&exclude, cfg).ctx(F)?;
        // SAFETY: newcomm is non-NULL and writable.
        unsafe { publish(newcomm, c) };
        Ok(())
    })
}
