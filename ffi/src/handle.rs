//! Opaque handles (`dmscComm_t`, `dmscRequest_t`) and the registry behind them.
//!
//! A handle's value is not a pointer but an id, drawn from one process-wide counter and
//! never reused, that keys a global registry (`Mutex<HashMap<id, Arc<T>>>`). A destroyed,
//! freed or made-up handle is therefore never dereferenced: looking it up fails, and the
//! call returns `dmscInvalidUsage` naming it. (NCCL's handles are real pointers, so a use
//! after `ncclCommDestroy` is undefined behaviour there.)

use crate::guard::{FfiError, Res};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

/// The opaque communicator type; only pointers to it (`dmscComm_t`) exist. (Not `repr(C)`,
/// so cbindgen declares it as an incomplete struct.)
pub struct dmscComm {
    _opaque: [u8; 0],
}

/// A communicator (NCCL's `ncclComm_t`): a group of ranks that run operations together.
/// Made by `dmscCommInitRank`, `dmscCommInitRankConfig`, `dmscCommInitFromEnv` or
/// `dmscCommSplit`; released by `dmscCommDestroy` or `dmscCommAbort`. The value is an opaque
/// id, never reused, so a destroyed handle is detected (`dmscInvalidUsage`).
pub type dmscComm_t = *mut dmscComm;

/// The opaque request type; only pointers to it (`dmscRequest_t`) exist.
pub struct dmscRequest {
    _opaque: [u8; 0],
}

/// A non-blocking operation in progress, made by one of the `dmsc*Async` calls and
/// released by `dmscRequestFree`. Like `dmscComm_t`, an opaque id that is never reused.
pub type dmscRequest_t = *mut dmscRequest;

/// The next handle id; 0 stays NULL.
static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// Live objects of one kind, by handle id.
pub(crate) struct Registry<T> {
    kind: &'static str,
    map: LazyLock<Mutex<HashMap<usize, Arc<T>>>>,
}

impl<T> Registry<T> {
    /// An empty registry of objects called `kind` in messages ("communicator").
    pub const fn new(kind: &'static str) -> Registry<T> {
        Registry {
            kind,
            map: LazyLock::new(|| Mutex::new(HashMap::new())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<usize, Arc<T>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register `v` under a fresh id.
    pub fn insert(&self, v: T) -> usize {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, Arc::new(v));
        id
    }

    /// The live object with id `id`.
    pub fn get(&self, id: usize) -> Option<Arc<T>> {
        self.lock().get(&id).cloned()
    }

    /// Unregister the object with id `id`; later lookups fail.
    pub fn remove(&self, id: usize) -> Option<Arc<T>> {
        self.lock().remove(&id)
    }

    /// Look up the handle argument `name` of function `f`: NULL is `dmscInvalidArgument`,
    /// an id that is not live (destroyed, freed, or never made) is `dmscInvalidUsage`.
    pub fn lookup(&self, f: &str, name: &str, id: usize) -> Res<Arc<T>> {
        if id == 0 {
            return Err(FfiError::invalid(f, format_args!("{name} is NULL")));
        }
        self.get(id).ok_or_else(|| self.dead(f, name, id))
    }

    /// Like [`Registry::lookup`], and unregister.
    pub fn take(&self, f: &str, name: &str, id: usize) -> Res<Arc<T>> {
        if id == 0 {
            return Err(FfiError::invalid(f, format_args!("{name} is NULL")));
        }
        self.remove(id).ok_or_else(|| self.dead(f, name, id))
    }

    fn dead(&self, f: &str, name: &str, id: usize) -> FfiError {
        FfiError::usage(
            f,
            format_args!(
                "{name} ({id:#x}) is not a live {kind}: it was already {gone}, or was never \
                 made by dmsc",
                kind = self.kind,
                gone = if self.kind == "request" {
                    "freed"
                } else {
                    "destroyed"
                },
            ),
        )
    }
}

/// The id a handle carries.
pub(crate) fn id_of<P>(h: *mut P) -> usize {
    h as usize
}

/// The handle carrying `id`.
pub(crate) fn handle_of<P>(id: usize) -> *mut P {
    id as *mut P
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::dmscResult_t::*;

    #[test]
    fn ids_are_never_reused_and_dead_ones_are_usage_errors() {
        static R: Registry<u32> = Registry::new("communicator");
        let a = R.insert(1);
        let b = R.insert(2);
        assert_ne!(a, b);
        assert_eq!(*R.lookup("f", "comm", a).unwrap(), 1);
        assert_eq!(*R.take("f", "comm", a).unwrap(), 1);
        let e = R.lookup("dmscCommCount", "comm", a).unwrap_err();
        assert_eq!(e.code, dmscInvalidUsage);
        assert!(
            e.msg.contains("comm") && e.msg.contains("destroyed"),
            "{}",
            e.msg
        );
        assert_eq!(R.take("f", "comm", a).unwrap_err().code, dmscInvalidUsage);
        let c = R.insert(3);
        assert!(c > b, "a freed id is not handed out again");
        assert_eq!(
            R.lookup("f", "comm", 0).unwrap_err().code,
            dmscInvalidArgument
        );
        assert_eq!(
            R.lookup("f", "comm", 0xdead_beef).unwrap_err().code,
            dmscInvalidUsage
        );
    }

    #[test]
    fn handles_carry_ids() {
        let h: dmscComm_t = handle_of(42);
        assert_eq!(id_of(h), 42);
        assert!(handle_of::<dmscRequest>(0).is_null());
    }
}
