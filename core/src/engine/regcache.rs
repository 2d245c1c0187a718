//! The registration cache: which address ranges a transport has registered, so that a
//! buffer used again and again is registered once.
//!
//! Transports that move data by DMA (RDMA verbs with `ibv_reg_mr`, CUDA with
//! `cudaHostRegister` or IPC handles) must register memory before they post it, and
//! registering costs a system call, page pinning and often a round trip to the device: far
//! too much to pay on every chunk. [`RegCache`] remembers what was registered, keyed by
//! address range and [`MemKind`], and hands out [`RegLease`]s that pin an entry while an
//! operation uses it. It performs no registration itself: it asks a [`Registrar`] (the
//! engine's transport, or a test's fake), and it is owned and driven by one thread (the
//! engine's), so it takes no locks.
//!
//! # The model
//!
//! - **Whole pages.** A miss registers the requested range rounded out to page boundaries
//!   ([`RegCacheConfig::page`]), since hardware pins and translates whole pages anyway and
//!   neighbouring buffers in those pages then hit too.
//! - **Containment is a hit.** Indexed entries of one kind never overlap; they sit in a
//!   [`BTreeMap`] keyed by start address, so a lookup is the last entry starting at or
//!   before the buffer, and it hits when that entry also ends at or after the buffer's end:
//!   O(log n).
//! - **Overlaps merge.** A miss whose pages overlap indexed entries registers the union of
//!   its pages and theirs once, and takes the old entries out of the index: an unused one is
//!   deregistered at once, one in use keeps its registration until its last lease is
//!   released (a lease's handle never dies under it).
//! - **Bounded, least recently used first.** At most [`RegCacheConfig::max_entries`]
//!   entries and [`RegCacheConfig::max_bytes`] bytes stay indexed. Making room evicts
//!   entries no lease holds, least recently released first, and deregisters them; entries in
//!   use are never evicted, so the bound may be exceeded while they are (then trimmed as
//!   they are released). A registration the registrar refuses (pinned memory may be what ran
//!   out) is tried once more after evicting every unused entry, for the requested pages
//!   alone.
//! - **Closing.** [`RegCache::close`] deregisters everything. The cache cannot reach its
//!   registrar when it is dropped, so its owner closes it first: the engine does so when it
//!   is dropped, before its transport goes.
//!
//! # Freed memory: the stale registration hazard
//!
//! The cache knows addresses, not allocations. If the owner of a buffer frees it and the
//! allocator later maps new memory at the same address, a lookup hits the old entry and the
//! transport would move data through a registration of pages that are no longer that memory
//! (with RDMA, silently the old physical pages). UCX avoids this by hooking the allocator
//! and `munmap` and invalidating on every unmap; NCCL leaves it to the user, who registers
//! with `ncclCommRegister` and must `ncclCommDeregister` before freeing. dmsc takes NCCL's
//! side without hooks: memory dmsc allocates itself (staging and scratch buffers) is
//! [`RegCache::invalidate`]d before it is freed, and memory a caller is about to free must
//! be invalidated by the caller ([`super::Engine::invalidate_registrations`]). Today no
//! transport registers, so nothing can go stale; a registering transport should also guard
//! itself where the hardware allows it (on-demand paging, CUDA's buffer ids).
//!
//! # Sources
//!
//! Read to learn the design, never copied:
//! - NCCL's registration cache, `src/register/register.cc` with `src/include/register.h`
//!   and `register_inline.h` (NVIDIA/nccl): a per-communicator array of page-rounded
//!   ranges sorted by start, a hit when a range contains the buffer, a reference count per
//!   range, each transport's handles (`regMr` for the network, IPC for peers) made on first
//!   use and all released when the communicator is destroyed. It never evicts; users
//!   deregister.
//! - UCX's rcache, `src/ucs/memory/rcache.c` and `rcache.h` (openucx/ucx): page-aligned
//!   regions merged with the ones they overlap, reference counts that keep merged-away
//!   regions alive until released, an LRU list with bounds on regions and bytes, and
//!   invalidation driven by memory-unmap events.

use super::memory::{MemKind, RegHandle};
use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashMap};

/// What registers memory for a [`RegCache`]: the engine's transport (through an adapter in
/// the engine) or a test's fake.
pub trait Registrar {
    /// Register the `len` bytes at `ptr`, memory of `kind`, and return the handle that names
    /// the registration. `ptr` is an address handed to a driver: the registrar does not read
    /// or write through it.
    fn register(&mut self, ptr: *mut u8, len: usize, kind: MemKind) -> Result<RegHandle>;

    /// Release a registration made by [`Registrar::register`]; the handle is not used again.
    fn deregister(&mut self, handle: RegHandle);
}

/// The bounds of a [`RegCache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegCacheConfig {
    /// Registrations cover whole pages of this many bytes (rounded up to a power of two).
    pub page: usize,
    /// Most entries kept indexed (entries in use may exceed it while they are).
    pub max_entries: usize,
    /// Most bytes kept registered by indexed entries (likewise).
    pub max_bytes: usize,
}

impl RegCacheConfig {
    /// The page size registrations are rounded to by default: the common host page.
    pub const DEFAULT_PAGE: usize = 4096;
}

impl Default for RegCacheConfig {
    fn default() -> Self {
        RegCacheConfig {
            page: Self::DEFAULT_PAGE,
            max_entries: 256,
            max_bytes: 8 << 30,
        }
    }
}

/// What a [`RegCache`] did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegStats {
    /// Acquisitions served by an existing entry.
    pub hits: u64,
    /// Acquisitions that had to register.
    pub misses: u64,
    /// Calls to [`Registrar::register`] that succeeded.
    pub registrations: u64,
    /// Calls to [`Registrar::deregister`].
    pub deregistrations: u64,
    /// Unused entries evicted to respect the bounds.
    pub evictions: u64,
    /// Entries taken out of the index because a new registration covered them.
    pub merges: u64,
    /// Entries taken out of the index by [`RegCache::invalidate`].
    pub invalidations: u64,
}

/// A use of a cached registration: the entry stays registered (and out of eviction's
/// reach) until the lease is given back with [`RegCache::release`].
#[derive(Debug)]
#[must_use = "a lease pins its registration until it is given back with RegCache::release"]
pub struct RegLease {
    id: u64,
    handle: RegHandle,
    start: usize,
    end: usize,
}

impl RegLease {
    /// The registrar's handle for a range containing the leased buffer.
    pub fn handle(&self) -> RegHandle {
        self.handle
    }

    /// The registered range, `[start, end)` as addresses (whole pages).
    pub fn range(&self) -> (usize, usize) {
        (self.start, self.end)
    }
}

/// One registration.
#[derive(Debug)]
struct Entry {
    kind: MemKind,
    /// First byte (page-aligned).
    start: usize,
    /// One past the last byte (page-aligned).
    end: usize,
    handle: RegHandle,
    /// Leases outstanding.
    refs: usize,
    /// Invariant: `Some(t)` exactly when the entry is indexed, unused (`refs == 0`) and
    /// `lru[t]` names it.
    lru_tick: Option<u64>,
    /// In `index` (false: merged away or invalidated, alive only for its leases).
    indexed: bool,
}

impl Entry {
    fn len(&self) -> usize {
        self.end - self.start
    }
}

/// Registrations keyed by address range; see the module documentation.
#[derive(Debug)]
pub struct RegCache {
    cfg: RegCacheConfig,
    /// Per kind: start address to entry id. Invariant: the indexed entries of one kind are
    /// pairwise disjoint.
    index: HashMap<MemKind, BTreeMap<usize, u64>>,
    /// Every live registration, indexed or not.
    entries: HashMap<u64, Entry>,
    /// Unused indexed entries by the tick of their last release, oldest first.
    lru: BTreeMap<u64, u64>,
    next_id: u64,
    tick: u64,
    /// Count and bytes of the indexed entries.
    indexed: usize,
    indexed_bytes: usize,
    stats: RegStats,
}

/// `addr` as a pointer derived from `ptr` (the registrar only hands it to a driver).
fn at(ptr: *mut u8, addr: usize) -> *mut u8 {
    ptr.wrapping_sub((ptr as usize).wrapping_sub(addr))
}

impl RegCache {
    /// An empty cache with bounds `cfg`.
    pub fn new(cfg: RegCacheConfig) -> RegCache {
        RegCache {
            cfg: RegCacheConfig {
                page: cfg.page.max(1).next_power_of_two(),
                ..cfg
            },
            index: HashMap::new(),
            entries: HashMap::new(),
            lru: BTreeMap::new(),
            next_id: 0,
            tick: 0,
            indexed: 0,
            indexed_bytes: 0,
            stats: RegStats::default(),
        }
    }

    /// The bounds (with the page size as used).
    pub fn config(&self) -> RegCacheConfig {
        self.cfg
    }

    /// What the cache did so far.
    pub fn stats(&self) -> RegStats {
        self.stats
    }

    /// Indexed entries (those a lookup can hit).
    pub fn len(&self) -> usize {
        self.indexed
    }

    /// True when no entry is indexed.
    pub fn is_empty(&self) -> bool {
        self.indexed == 0
    }

    /// Bytes registered by indexed entries.
    pub fn registered_bytes(&self) -> usize {
        self.indexed_bytes
    }

    /// The handle of the entry containing the `len` bytes at `ptr`, without leasing it.
    pub fn lookup(&self, ptr: *const u8, len: usize, kind: MemKind) -> Option<RegHandle> {
        let a = ptr as usize;
        let id = self.find(kind, a, a.checked_add(len)?)?;
        Some(self.entries[&id].handle)
    }

    /// A lease on a registration containing the `len` bytes at `ptr`: an existing entry's
    /// (a hit), or a new one covering the buffer's pages and every indexed entry they overlap
    /// (a miss). Fails when the registrar refuses, even after evicting every unused entry.
    pub fn acquire(
        &mut self,
        r: &mut dyn Registrar,
        ptr: *mut u8,
        len: usize,
        kind: MemKind,
    ) -> Result<RegLease> {
        let a = ptr as usize;
        let b = a
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or_else(|| Error::internal(format!("registering {len} bytes at {a:#x}")))?;
        if let Some(id) = self.find(kind, a, b) {
            self.stats.hits += 1;
            return Ok(self.pin(id));
        }
        self.stats.misses += 1;
        let mask = self.cfg.page - 1;
        let s = a & !mask;
        let e = b.checked_add(mask).map_or(b, |x| x & !mask).max(b);
        let merged = self.overlapping(kind, s, e);
        let (mut us, mut ue) = (s, e);
        for id in &merged {
            let en = &self.entries[id];
            us = us.min(en.start);
            ue = ue.max(en.end);
        }
        self.stats.merges += merged.len() as u64;
        for id in merged {
            self.unindex(r, id);
        }
        self.make_room(r, ue - us);
        let handle = match r.register(at(ptr, us), ue - us, kind) {
            Ok(h) => h,
            Err(refused) => {
                let evicted = self.evict_while(r, |_| true);
                if evicted == 0 && (us, ue) == (s, e) {
                    return Err(refused);
                }
                (us, ue) = (s, e);
                r.register(at(ptr, s), e - s, kind)?
            }
        };
        self.stats.registrations += 1;
        self.next_id += 1;
        let id = self.next_id;
        self.entries.insert(
            id,
            Entry {
                kind,
                start: us,
                end: ue,
                handle,
                refs: 1,
                lru_tick: None,
                indexed: true,
            },
        );
        self.index.entry(kind).or_default().insert(us, id);
        self.indexed += 1;
        self.indexed_bytes += ue - us;
        Ok(RegLease {
            id,
            handle,
            start: us,
            end: ue,
        })
    }

    /// Give a lease back. The entry's last lease makes it evictable (or deregisters it, when
    /// it was merged away or invalidated meanwhile). A lease from before [`RegCache::close`]
    /// is ignored.
    pub fn release(&mut self, r: &mut dyn Registrar, lease: RegLease) {
        let Some(en) = self.entries.get_mut(&lease.id) else {
            return;
        };
        debug_assert!(en.refs > 0 && en.handle == lease.handle);
        en.refs = en.refs.saturating_sub(1);
        if en.refs > 0 {
            return;
        }
        if en.indexed {
            self.tick += 1;
            en.lru_tick = Some(self.tick);
            self.lru.insert(self.tick, lease.id);
            self.make_room_for(r, 0, 0);
        } else {
            self.drop_entry(r, lease.id);
        }
    }

    /// Forget every registration overlapping the `len` bytes at `ptr`, memory its owner is
    /// about to free (see the module documentation for why this matters): unused entries
    /// are deregistered now, entries in use when their last lease is released, and no later
    /// lookup hits any of them.
    pub fn invalidate(&mut self, r: &mut dyn Registrar, ptr: *const u8, len: usize) {
        let a = ptr as usize;
        let b = a.saturating_add(len);
        if a == b {
            return;
        }
        let kinds: Vec<MemKind> = self.index.keys().copied().collect();
        for kind in kinds {
            let hit = self.overlapping(kind, a, b);
            self.stats.invalidations += hit.len() as u64;
            for id in hit {
                self.unindex(r, id);
            }
        }
    }

    /// Deregister every registration, in use or not; outstanding leases become void
    /// (releasing them does nothing). The owner guarantees that nothing posted still uses
    /// one.
    pub fn close(&mut self, r: &mut dyn Registrar) {
        for (_, en) in self.entries.drain() {
            r.deregister(en.handle);
            self.stats.deregistrations += 1;
        }
        self.index.clear();
        self.lru.clear();
        self.indexed = 0;
        self.indexed_bytes = 0;
    }

    /// The indexed entry of `kind` containing `[a, b)`.
    fn find(&self, kind: MemKind, a: usize, b: usize) -> Option<u64> {
        let (_, &id) = self.index.get(&kind)?.range(..=a).next_back()?;
        (self.entries[&id].end >= b).then_some(id)
    }

    /// The indexed entries of `kind` overlapping `[s, e)`.
    fn overlapping(&self, kind: MemKind, s: usize, e: usize) -> Vec<u64> {
        let Some(map) = self.index.get(&kind) else {
            return Vec::new();
        };
        // Entries are disjoint and sorted: walking down from `e`, the first one that ends at
        // or before `s` is followed only by others that do.
        map.range(..e)
            .rev()
            .map(|(_, &id)| id)
            .take_while(|id| self.entries[id].end > s)
            .collect()
    }

    fn pin(&mut self, id: u64) -> RegLease {
        let en = self.entries.get_mut(&id).expect("indexed entries are live");
        en.refs += 1;
        if let Some(t) = en.lru_tick.take() {
            self.lru.remove(&t);
        }
        RegLease {
            id,
            handle: en.handle,
            start: en.start,
            end: en.end,
        }
    }

    /// Take entry `id` out of the index; deregister it unless a lease holds it.
    fn unindex(&mut self, r: &mut dyn Registrar, id: u64) {
        let Some(en) = self.entries.get_mut(&id) else {
            return;
        };
        if !en.indexed {
            return;
        }
        en.indexed = false;
        let (kind, start, len, refs) = (en.kind, en.start, en.len(), en.refs);
        if let Some(map) = self.index.get_mut(&kind) {
            map.remove(&start);
            if map.is_empty() {
                self.index.remove(&kind);
            }
        }
        self.indexed -= 1;
        self.indexed_bytes -= len;
        if refs == 0 {
            self.drop_entry(r, id);
        }
    }

    /// Remove an entry that is out of the index and unused, and deregister it.
    fn drop_entry(&mut self, r: &mut dyn Registrar, id: u64) {
        if let Some(en) = self.entries.remove(&id) {
            if let Some(t) = en.lru_tick {
                self.lru.remove(&t);
            }
            r.deregister(en.handle);
            self.stats.deregistrations += 1;
        }
    }

    /// Evict until one more entry of `bytes` fits the bounds (or nothing is evictable).
    fn make_room(&mut self, r: &mut dyn Registrar, bytes: usize) {
        self.make_room_for(r, 1, bytes);
    }

    fn make_room_for(&mut self, r: &mut dyn Registrar, entries: usize, bytes: usize) {
        let (max_e, max_b) = (self.cfg.max_entries, self.cfg.max_bytes);
        self.evict_while(r, |c| {
            c.indexed + entries > max_e || c.indexed_bytes.saturating_add(bytes) > max_b
        });
    }

    /// Evict unused entries, least recently used first, while `more(self)`; returns how
    /// many.
    fn evict_while(&mut self, r: &mut dyn Registrar, more: impl Fn(&RegCache) -> bool) -> usize {
        let mut n = 0;
        while more(self) {
            let Some((_, id)) = self.lru.pop_first() else {
                break;
            };
            if let Some(en) = self.entries.get_mut(&id) {
                en.lru_tick = None;
            }
            self.unindex(r, id);
            self.stats.evictions += 1;
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One call the fake registrar saw.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Call {
        Register {
            start: usize,
            len: usize,
            kind: MemKind,
            key: u64,
        },
        Deregister {
            key: u64,
        },
    }

    /// A FAKE registrar: it registers nothing, hands out increasing keys, records every call
    /// and the registrations alive, and refuses once `capacity` are alive (as pinned memory
    /// running out would).
    #[derive(Default)]
    struct FakeRegistrar {
        calls: Vec<Call>,
        live: HashMap<u64, (usize, usize, MemKind)>,
        next: u64,
        capacity: Option<usize>,
    }

    impl Registrar for FakeRegistrar {
        fn register(&mut self, ptr: *mut u8, len: usize, kind: MemKind) -> Result<RegHandle> {
            if self.capacity.is_some_and(|c| self.live.len() >= c) {
                return Err(Error::internal("fake: out of pinnable memory"));
            }
            self.next += 1;
            let (start, key) = (ptr as usize, self.next);
            self.live.insert(key, (start, len, kind));
            self.calls.push(Call::Register {
                start,
                len,
                kind,
                key,
            });
            Ok(RegHandle { key })
        }

        fn deregister(&mut self, h: RegHandle) {
            assert!(
                self.live.remove(&h.key).is_some(),
                "deregistered {h:?} twice or never registered it"
            );
            self.calls.push(Call::Deregister { key: h.key });
        }
    }

    impl FakeRegistrar {
        fn registered(&self) -> Vec<(usize, usize)> {
            self.calls
                .iter()
                .filter_map(|c| match *c {
                    Call::Register { start, len, .. } => Some((start, start + len)),
                    _ => None,
                })
                .collect()
        }

        fn deregistered(&self) -> Vec<u64> {
            self.calls
                .iter()
                .filter_map(|c| match *c {
                    Call::Deregister { key } => Some(key),
                    _ => None,
                })
                .collect()
        }
    }

    const H: MemKind = MemKind::Host;
    const PAGE: usize = 4096;

    fn p(addr: usize) -> *mut u8 {
        std::ptr::without_provenance_mut(addr)
    }

    fn cache(max_entries: usize, max_bytes: usize) -> RegCache {
        RegCache::new(RegCacheConfig {
            page: PAGE,
            max_entries,
            max_bytes,
        })
    }

    /// Acquire and release at once: the entry stays cached, unused.
    fn touch(c: &mut RegCache, r: &mut FakeRegistrar, addr: usize, len: usize) -> RegHandle {
        let l = c.acquire(r, p(addr), len, H).unwrap();
        let h = l.handle();
        c.release(r, l);
        h
    }

    #[test]
    fn a_miss_registers_whole_pages_and_a_buffer_inside_them_hits() {
        let (mut c, mut r) = (cache(16, usize::MAX), FakeRegistrar::default());
        let a = c.acquire(&mut r, p(0x10010), 100, H).unwrap();
        assert_eq!(r.registered(), vec![(0x10000, 0x11000)]);
        assert_eq!(a.range(), (0x10000, 0x11000));
        // Another buffer in the same page, and the first one again: hits, same handle.
        let b = c.acquire(&mut r, p(0x10800), 0x800, H).unwrap();
        let a2 = c.acquire(&mut r, p(0x10010), 100, H).unwrap();
        assert_eq!((b.handle(), a2.handle()), (a.handle(), a.handle()));
        assert_eq!(r.registered().len(), 1);
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.registrations), (2, 1, 1));
        assert_eq!(c.lookup(p(0x10fff), 1, H), Some(a.handle()));
        assert_eq!(c.lookup(p(0x10fff), 2, H), None, "one byte past the pages");
        for l in [a, b, a2] {
            c.release(&mut r, l);
        }
        assert!(r.deregistered().is_empty(), "released entries stay cached");
    }

    #[test]
    fn a_buffer_straddling_pages_is_rounded_out_at_both_ends() {
        let (mut c, mut r) = (cache(16, usize::MAX), FakeRegistrar::default());
        touch(&mut c, &mut r, 0x10ff0, 0x20);
        touch(&mut c, &mut r, 0x23000, 0x2000);
        assert_eq!(
            r.registered(),
            vec![(0x10000, 0x12000), (0x23000, 0x25000)],
            "aligned buffers are not widened"
        );
        assert_eq!(c.registered_bytes(), 0x4000);
    }

    #[test]
    fn memory_kinds_are_cached_apart() {
        let (mut c, mut r) = (cache(16, usize::MAX), FakeRegistrar::default());
        let h = touch(&mut c, &mut r, 0x10000, 64);
        let g = c
            .acquire(&mut r, p(0x10000), 64, MemKind::Cuda { device: 0 })
            .unwrap();
        assert_ne!(h, g.handle());
        assert_eq!(c.len(), 2);
        c.release(&mut r, g);
    }

    #[test]
    fn a_range_overlapping_cached_ones_registers_their_union_once() {
        let (mut c, mut r) = (cache(16, usize::MAX), FakeRegistrar::default());
        let a = touch(&mut c, &mut r, 0x10000, 0x2000);
        let b = touch(&mut c, &mut r, 0x14000, 0x1000);
        let far = touch(&mut c, &mut r, 0x40000, 0x1000);
        // [0x11000, 0x14800) overlaps both a and b: one registration of all three ranges.
        let u = c.acquire(&mut r, p(0x11000), 0x3800, H).unwrap();
        assert_eq!(u.range(), (0x10000, 0x15000));
        assert_eq!(r.registered().last(), Some(&(0x10000, 0x15000)));
        let mut gone = r.deregistered();
        gone.sort_unstable();
        assert_eq!(gone, vec![a.key, b.key], "unused, merged away");
        assert_eq!(c.len(), 2);
        assert_eq!(c.stats().merges, 2);
        // The old ranges now hit the union; the far one is untouched.
        assert_eq!(c.lookup(p(0x10000), 16, H), Some(u.handle()));
        assert_eq!(c.lookup(p(0x40000), 16, H), Some(far));
        c.release(&mut r, u);
    }

    #[test]
    fn a_buffer_spanning_two_adjacent_entries_merges_them() {
        let (mut c, mut r) = (cache(16, usize::MAX), FakeRegistrar::default());
        touch(&mut c, &mut r, 0x10000, PAGE);
        touch(&mut c, &mut r, 0x11000, PAGE);
        assert_eq!(c.len(), 2, "adjacent entries are not merged by themselves");
        let h = touch(&mut c, &mut r, 0x10f00, 0x200);
        assert_eq!(c.len(), 1);
        assert_eq!(c.lookup(p(0x10000), 2 * PAGE, H), Some(h));
    }

    #[test]
    fn an_entry_merged_away_while_in_use_keeps_its_handle_until_released() {
        let (mut c, mut r) = (cache(16, usize::MAX), FakeRegistrar::default());
        let held = c.acquire(&mut r, p(0x10000), PAGE, H).unwrap();
        let wide = c.acquire(&mut r, p(0x10000), 3 * PAGE, H).unwrap();
        assert_ne!(held.handle(), wide.handle());
        assert!(r.deregistered().is_empty(), "the held handle stays valid");
        assert_eq!(c.lookup(p(0x10000), 16, H), Some(wide.handle()));
        let key = held.handle().key;
        c.release(&mut r, held);
        assert_eq!(
            r.deregistered(),
            vec![key],
            "deregistered at its last release"
        );
        c.release(&mut r, wide);
        assert_eq!(r.live.len(), 1);
    }

    #[test]
    fn the_least_recently_used_unused_entry_is_evicted_and_deregistered() {
        let (mut c, mut r) = (cache(2, usize::MAX), FakeRegistrar::default());
        let a = touch(&mut c, &mut r, 0x10000, 8);
        let b = touch(&mut c, &mut r, 0x20000, 8);
        assert_eq!(
            touch(&mut c, &mut r, 0x10000, 8),
            a,
            "a hit; a is now the most recent"
        );
        let d = touch(&mut c, &mut r, 0x30000, 8);
        assert_eq!(r.deregistered(), vec![b.key]);
        assert_eq!(c.lookup(p(0x20000), 8, H), None);
        assert_eq!(c.lookup(p(0x10000), 8, H), Some(a));
        assert_eq!(c.lookup(p(0x30000), 8, H), Some(d));
        assert_eq!(c.stats().evictions, 1);
    }

    #[test]
    fn the_byte_bound_evicts_too() {
        let (mut c, mut r) = (cache(100, 2 * PAGE), FakeRegistrar::default());
        let a = touch(&mut c, &mut r, 0x10000, PAGE);
        touch(&mut c, &mut r, 0x20000, PAGE);
        touch(&mut c, &mut r, 0x30000, PAGE);
        assert_eq!(r.deregistered(), vec![a.key]);
        assert_eq!(c.registered_bytes(), 2 * PAGE);
    }

    #[test]
    fn leases_keep_entries_from_eviction_until_released() {
        let (mut c, mut r) = (cache(1, usize::MAX), FakeRegistrar::default());
        let a = c.acquire(&mut r, p(0x10000), 8, H).unwrap();
        let b = c.acquire(&mut r, p(0x20000), 8, H).unwrap();
        // Over the bound while both are in use: nothing was evicted.
        assert_eq!(c.len(), 2);
        assert!(r.deregistered().is_empty());
        let (ka, kb) = (a.handle().key, b.handle().key);
        c.release(&mut r, a);
        assert_eq!(r.deregistered(), vec![ka], "trimmed back to the bound");
        c.release(&mut r, b);
        assert_eq!(c.len(), 1);
        assert_eq!(c.lookup(p(0x20000), 8, H), Some(RegHandle { key: kb }));
    }

    #[test]
    fn invalidated_ranges_are_deregistered_and_never_hit_again() {
        let (mut c, mut r) = (cache(16, usize::MAX), FakeRegistrar::default());
        let a = touch(&mut c, &mut r, 0x10000, 3 * PAGE);
        let keep = touch(&mut c, &mut r, 0x20000, PAGE);
        // One byte of the entry is enough.
        c.invalidate(&mut r, p(0x12fff), 1);
        assert_eq!(r.deregistered(), vec![a.key]);
        assert_eq!(c.lookup(p(0x10000), 8, H), None);
        assert_eq!(c.lookup(p(0x20000), 8, H), Some(keep));
        // The same address again is a fresh registration (the memory may be new).
        let again = touch(&mut c, &mut r, 0x10000, 8);
        assert_ne!(again, a);
        assert_eq!(c.stats().invalidations, 1);
    }

    #[test]
    fn an_entry_invalidated_in_use_is_deregistered_at_its_last_release() {
        let (mut c, mut r) = (cache(16, usize::MAX), FakeRegistrar::default());
        let held = c.acquire(&mut r, p(0x10000), 8, H).unwrap();
        c.invalidate(&mut r, p(0x10000), 8);
        assert!(r.deregistered().is_empty());
        assert_eq!(c.lookup(p(0x10000), 8, H), None);
        let fresh = c.acquire(&mut r, p(0x10000), 8, H).unwrap();
        assert_ne!(fresh.handle(), held.handle());
        let key = held.handle().key;
        c.release(&mut r, held);
        assert_eq!(r.deregistered(), vec![key]);
        c.release(&mut r, fresh);
    }

    #[test]
    fn close_deregisters_everything_and_voids_leases() {
        let (mut c, mut r) = (cache(16, usize::MAX), FakeRegistrar::default());
        touch(&mut c, &mut r, 0x10000, 8);
        let held = c.acquire(&mut r, p(0x20000), 8, H).unwrap();
        let merged_away = c.acquire(&mut r, p(0x30000), 8, H).unwrap();
        let wide = c.acquire(&mut r, p(0x30000), 2 * PAGE, H).unwrap();
        assert_eq!(r.live.len(), 4);
        c.close(&mut r);
        assert!(
            r.live.is_empty(),
            "every registration released: {:?}",
            r.live
        );
        assert!(c.is_empty());
        // Leases from before the close do nothing (no double deregistration).
        for l in [held, merged_away, wide] {
            c.release(&mut r, l);
        }
        assert_eq!(r.deregistered().len(), 4);
    }

    #[test]
    fn a_refused_registration_is_retried_after_evicting_unused_entries() {
        let mut r = FakeRegistrar {
            capacity: Some(2),
            ..Default::default()
        };
        let mut c = cache(16, usize::MAX);
        let a = touch(&mut c, &mut r, 0x10000, 8);
        let held = c.acquire(&mut r, p(0x20000), 8, H).unwrap();
        // The registrar is full: the unused entry goes, the held one stays.
        let d = c.acquire(&mut r, p(0x30000), 8, H).unwrap();
        assert_eq!(r.deregistered(), vec![a.key]);
        // Full again with both in use: the error comes back and the cache is unchanged.
        let e = c.acquire(&mut r, p(0x40000), 8, H).unwrap_err();
        assert!(e.to_string().contains("out of pinnable memory"), "{e}");
        assert_eq!(c.len(), 2);
        c.release(&mut r, held);
        c.release(&mut r, d);
    }

    #[test]
    fn zero_bytes_and_wrapping_ranges_are_refused() {
        let (mut c, mut r) = (cache(16, usize::MAX), FakeRegistrar::default());
        assert!(c.acquire(&mut r, p(0x10000), 0, H).is_err());
        assert!(c.acquire(&mut r, p(usize::MAX - 8), 64, H).is_err());
        assert!(r.calls.is_empty());
    }
}
