//! How the engine registers the memory it posts, for transports that need it
//! ([`Transport::needs_registration`]).
//!
//! The engine asks its transport once per device, when the device is attached, which peers
//! need its kind of memory registered. When none does (TCP, shared memory, CMA), nothing here
//! runs: no lookup, no lease, and frames are posted with [`Transport::post_send`] and
//! [`Transport::post_recv`] as always. Otherwise, for each operation:
//! - every non-empty buffer of the operation (input, output, group buffers, scratch) is
//!   leased from the engine's [`RegCache`] before anything is posted (a miss registers it
//!   through the transport), and its [`Region::reg`] carries the handle; a handle the caller
//!   put there is replaced;
//! - every frame of at least one byte to or from a peer that needs registration is posted
//!   with the handle of the region it lies in ([`Transport::post_send_registered`],
//!   [`Transport::post_recv_registered`]); a receive reduced on arrival lands in a staging
//!   slot, registered once for the slot's life ([`super::staging::StagingPool::registration`]);
//! - the leases are given back when the operation ends, after a failed operation's posted
//!   work was withdrawn ([`Transport::cancel_all`]), so a registration never goes while a
//!   posting uses it.
//!
//! Running the same operation on the same buffers again hits the cache: each buffer is
//! registered once. Memory the engine frees itself (a scratch buffer or staging slot
//! replaced by a larger one) is invalidated first; memory a caller frees must be
//! invalidated by the caller ([`Engine::invalidate_registrations`]; see
//! [`super::regcache`] for the hazard). When the engine is dropped, every registration is
//! released before the transport goes.

use super::memory::{MemKind, OpMemory, RegHandle, Region};
use super::regcache::{RegCache, RegCacheConfig, RegLease, RegStats, Registrar};
use super::transport::Transport;
use super::Engine;
use crate::device::DeviceBuffer;
use crate::error::Result;
use crate::types::Rank;

/// A transport seen as the cache's [`Registrar`].
pub(crate) struct TransportRegistrar<'a, T: ?Sized>(pub(crate) &'a mut T);

impl<T: Transport + ?Sized> Registrar for TransportRegistrar<'_, T> {
    fn register(&mut self, ptr: *mut u8, len: usize, kind: MemKind) -> Result<RegHandle> {
        self.0.register(ptr, len, kind)
    }

    fn deregister(&mut self, handle: RegHandle) {
        self.0.deregister(handle)
    }
}

/// The engine's registration state: the cache of registrations, for every device's memory.
pub(crate) struct Registration {
    pub(crate) cache: RegCache,
}

impl Registration {
    pub(crate) fn new(cfg: RegCacheConfig) -> Registration {
        Registration {
            cache: RegCache::new(cfg),
        }
    }
}

/// Per rank of `nranks`, whether `t` needs memory of `kind` registered for frames to and from
/// it (never for `rank` itself); empty when no peer does.
pub(crate) fn registered_peers(
    t: &dyn Transport,
    rank: Rank,
    nranks: usize,
    kind: MemKind,
) -> Vec<bool> {
    let peers: Vec<bool> = (0..nranks)
        .map(|p| p != rank && t.needs_registration(p, kind))
        .collect();
    if peers.iter().any(|&b| b) {
        peers
    } else {
        Vec::new()
    }
}

impl Engine {
    /// Lease a registration for every non-empty buffer of an operation and put its handle in
    /// the region (no-op when no peer needs registration). Leases taken before a failure are
    /// in `leases` too, for [`Engine::release_memory`].
    pub(super) fn lease_memory(
        &mut self,
        dev: usize,
        mem: &mut OpMemory,
        scratch: &mut Region,
        leases: &mut Vec<RegLease>,
    ) -> Result<()> {
        if self.devices[dev].reg_peers.is_empty() {
            return Ok(());
        }
        let mut r = TransportRegistrar(&mut *self.transport);
        let regions = [&mut mem.input, &mut mem.output]
            .into_iter()
            .chain(mem.group.iter_mut())
            .chain([scratch]);
        for region in regions {
            region.reg = None;
            if region.len == 0 {
                continue;
            }
            let lease = self
                .reg
                .cache
                .acquire(&mut r, region.ptr, region.len, region.kind)?;
            region.reg = Some(lease.handle());
            leases.push(lease);
        }
        Ok(())
    }

    /// Give an operation's leases back and free retired staging slots. Nothing posted may
    /// still use the memory (the operation finished, or its work was cancelled).
    pub(super) fn release_memory(&mut self, leases: Vec<RegLease>) {
        let mut r = TransportRegistrar(&mut *self.transport);
        for l in leases {
            self.reg.cache.release(&mut r, l);
        }
        for d in &mut self.devices {
            for b in d.pool.retire(&mut self.reg.cache, &mut r) {
                d.discard(b);
            }
        }
    }

    /// Forget the registrations of `old`, a buffer of device `dev` replaced by a larger one,
    /// and let it go ([`DeviceSlot::discard`](super::devices::DeviceSlot::discard)).
    pub(super) fn forget_buffer(&mut self, dev: usize, old: DeviceBuffer) {
        let mut r = TransportRegistrar(&mut *self.transport);
        self.reg.cache.invalidate(&mut r, old.ptr(), old.len());
        self.devices[dev].discard(old);
    }

    /// Forget the registrations of the caller's buffers of an operation on device memory, so
    /// that none outlives the call: the caller may free such memory and allocate other memory
    /// at the same address (a GPU allocator reuses addresses), which a cached registration
    /// would still reach through the old pages. Host memory registrations stay cached (see
    /// [`Engine::invalidate_registrations`] for their rule).
    pub(super) fn forget_device_buffers(&mut self, mem: &[(usize, usize)]) {
        let mut r = TransportRegistrar(&mut *self.transport);
        for &(ptr, len) in mem {
            self.reg.cache.invalidate(&mut r, ptr as *const u8, len);
        }
    }

    /// Forget the registrations of the `len` bytes at `ptr`, caller memory about to be freed
    /// (or unmapped), so that memory mapped later at the same address is not posted through
    /// a registration of the old pages. Call it between operations; it does nothing unless
    /// the transport registers memory.
    pub fn invalidate_registrations(&mut self, ptr: *const u8, len: usize) {
        let mut r = TransportRegistrar(&mut *self.transport);
        self.reg.cache.invalidate(&mut r, ptr, len);
    }

    /// What the registration cache did so far (all zero unless the transport registers).
    pub fn registration_stats(&self) -> RegStats {
        self.reg.cache.stats()
    }

    /// Release every registration (the engine is going; nothing is posted).
    pub(super) fn close_registrations(&mut self) {
        let mut r = TransportRegistrar(&mut *self.transport);
        self.reg.cache.close(&mut r);
    }
}
