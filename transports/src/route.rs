//! Serving each peer through its own transport: shared memory for the ranks on this host,
//! TCP for the others (RDMA later), as NCCL picks P2P, SHM or NET per pair of ranks.
//!
//! [`RouteTransport`] forwards every posting to the transport that serves the peer and
//! polls them all. To block without spinning it uses the transports' wait seam
//! ([`Transport::wait_fds`] and friends): the primary transport (TCP) blocks in its own
//! `poll` and also watches the descriptors of the others (the shared-memory sockets, where
//! doorbells ring), whose doorbells are raised first with [`Transport::prepare_wait`].
//! Frames to one peer keep their order because one transport carries all of them.
//!
//! Registration: a peer needs registered memory when the transport serving it does.
//! [`Transport::register`] registers the range with every transport that needs it for some
//! of its peers (a buffer may go to several), and returns a handle of the route's own that
//! names each transport's handle. A registered posting forwards the handle of the transport
//! serving the peer, so each transport only ever sees handles it issued itself.

use dmsc_core::engine::{
    Completion, MemKind, PathMetricsHandle, RegHandle, Token, Transport, Waker,
};
use dmsc_core::error::{Error, Result};
use dmsc_core::wire::FrameHeader;
use dmsc_core::Rank;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A transport that routes each peer to the transport chosen for it.
pub struct RouteTransport {
    /// The transports; `transports[0]` is the one that blocks (and watches the others).
    transports: Vec<Box<dyn Transport>>,
    /// Per rank: the index of the transport that serves it (`None` for this rank).
    route: Vec<Option<usize>>,
    /// Registrations made through the route: its key to each transport's own handle
    /// (`None` for a transport that needs none for these peers).
    regs: HashMap<u64, Vec<Option<RegHandle>>>,
    /// The last key handed out (keys are never reused).
    last_reg: u64,
}

/// Wakes every transport of a route.
struct WakeAll(Vec<Arc<dyn Waker>>);

impl Waker for WakeAll {
    fn wake(&self) {
        for w in &self.0 {
            w.wake();
        }
    }
}

impl RouteTransport {
    /// Route rank `r` to `transports[route[r]]`. `transports[0]` must be able to watch the
    /// others' descriptors ([`Transport::watch_fds`]); each other one must have some.
    pub fn new(mut transports: Vec<Box<dyn Transport>>, route: Vec<Option<usize>>) -> Result<Self> {
        if transports.is_empty() || route.iter().flatten().any(|&i| i >= transports.len()) {
            return Err(Error::internal(
                "a route names a transport that does not exist",
            ));
        }
        let fds: Vec<_> = transports[1..].iter().flat_map(|t| t.wait_fds()).collect();
        if transports.len() > 1 && (fds.is_empty() || !transports[0].watch_fds(&fds)) {
            return Err(Error::internal(format!(
                "the {} transport cannot wait for the {} transport",
                transports[0].name(),
                transports[1].name()
            )));
        }
        Ok(RouteTransport {
            transports,
            route,
            regs: HashMap::new(),
            last_reg: 0,
        })
    }

    fn index(&self, peer: Rank) -> Result<usize> {
        self.route
            .get(peer)
            .copied()
            .flatten()
            .ok_or_else(|| Error::internal(format!("no transport serves rank {peer}")))
    }

    fn to(&mut self, peer: Rank) -> Result<&mut Box<dyn Transport>> {
        let i = self.index(peer)?;
        Ok(&mut self.transports[i])
    }

    /// Whether transport `i` needs memory of `kind` registered for some peer it serves.
    fn registers(&self, i: usize, kind: MemKind) -> bool {
        self.route
            .iter()
            .enumerate()
            .any(|(p, r)| *r == Some(i) && self.transports[i].needs_registration(p, kind))
    }

    /// The handle that the transport serving `peer` issued for the route's `reg` (`None`:
    /// that transport does not register), and its index.
    fn sub_handle(&self, peer: Rank, reg: RegHandle) -> Result<(usize, Option<RegHandle>)> {
        let i = self.index(peer)?;
        let subs = self.regs.get(&reg.key).ok_or_else(|| {
            Error::internal(format!(
                "registration {} was not made by this route",
                reg.key
            ))
        })?;
        Ok((i, subs[i]))
    }
}

impl Transport for RouteTransport {
    fn name(&self) -> &'static str {
        // The name of the whole: what carries most of the traffic off this host.
        self.transports[0].name()
    }

    fn peer_transport(&self, peer: Rank) -> &'static str {
        match self.route.get(peer).copied().flatten() {
            Some(i) => self.transports[i].peer_transport(peer),
            None => "self",
        }
    }

    /// Memory of `kind` may be posted only if every transport of the route takes it: the
    /// engine checks an operation's buffers once, not per peer.
    fn accepts(&self, kind: MemKind) -> bool {
        self.transports.iter().all(|t| t.accepts(kind))
    }

    fn needs_registration(&self, peer: Rank, kind: MemKind) -> bool {
        self.index(peer)
            .is_ok_and(|i| self.transports[i].needs_registration(peer, kind))
    }

    fn register(&mut self, ptr: *mut u8, len: usize, kind: MemKind) -> Result<RegHandle> {
        let mut subs = vec![None; self.transports.len()];
        for i in 0..self.transports.len() {
            if !self.registers(i, kind) {
                continue;
            }
            match self.transports[i].register(ptr, len, kind) {
                Ok(h) => subs[i] = Some(h),
                Err(e) => {
                    for (t, h) in self.transports.iter_mut().zip(&subs) {
                        if let Some(h) = h {
                            t.deregister(*h);
                        }
                    }
                    return Err(e);
                }
            }
        }
        if subs.iter().all(Option::is_none) {
            return Err(Error::internal(format!(
                "no transport of this route registers {kind}"
            )));
        }
        self.last_reg += 1;
        self.regs.insert(self.last_reg, subs);
        Ok(RegHandle { key: self.last_reg })
    }

    fn deregister(&mut self, handle: RegHandle) {
        if let Some(subs) = self.regs.remove(&handle.key) {
            for (t, h) in self.transports.iter_mut().zip(subs) {
                if let Some(h) = h {
                    t.deregister(h);
                }
            }
        }
    }

    unsafe fn post_send(
        &mut self,
        peer: Rank,
        header: &FrameHeader,
        data: *const u8,
        token: Token,
    ) -> Result<()> {
        // SAFETY: forwarded contract.
        unsafe { self.to(peer)?.post_send(peer, header, data, token) }
    }

    unsafe fn post_send_registered(
        &mut self,
        peer: Rank,
        header: &FrameHeader,
        data: *const u8,
        reg: RegHandle,
        token: Token,
    ) -> Result<()> {
        let (i, sub) = self.sub_handle(peer, reg)?;
        let t = &mut self.transports[i];
        // SAFETY: forwarded contract; `h` is the serving transport's own registration of
        // the range the route's `reg` names.
        unsafe {
            match sub {
                Some(h) => t.post_send_registered(peer, header, data, h, token),
                None => t.post_send(peer, header, data, token),
            }
        }
    }

    unsafe fn post_recv_registered(
        &mut self,
        peer: Rank,
        expect: &FrameHeader,
        dst: *mut u8,
        reg: RegHandle,
        token: Token,
    ) -> Result<()> {
        let (i, sub) = self.sub_handle(peer, reg)?;
        let t = &mut self.transports[i];
        // SAFETY: as for `post_send_registered`.
        unsafe {
            match sub {
                Some(h) => t.post_recv_registered(peer, expect, dst, h, token),
                None => t.post_recv(peer, expect, dst, token),
            }
        }
    }

    unsafe fn post_recv(
        &mut self,
        peer: Rank,
        expect: &FrameHeader,
        dst: *mut u8,
        token: Token,
    ) -> Result<()> {
        // SAFETY: forwarded contract.
        unsafe { self.to(peer)?.post_recv(peer, expect, dst, token) }
    }

    fn send_control(&mut self, peer: Rank, payload: &[u8]) {
        if let Ok(t) = self.to(peer) {
            t.send_control(peer, payload);
        }
    }

    fn poll(&mut self, out: &mut Vec<Completion>, timeout: Duration) -> Result<()> {
        let before = out.len();
        for t in self.transports.iter_mut() {
            t.poll(out, Duration::ZERO)?;
        }
        if out.len() > before || timeout.is_zero() {
            return Ok(());
        }
        let mut ready = false;
        for t in self.transports[1..].iter_mut() {
            ready |= t.prepare_wait();
        }
        let r = if ready {
            Ok(())
        } else {
            self.transports[0].poll(out, timeout)
        };
        for t in self.transports[1..].iter_mut() {
            t.end_wait();
            t.poll(out, Duration::ZERO)?;
        }
        r
    }

    fn cancel_all(&mut self) {
        for t in self.transports.iter_mut() {
            t.cancel_all();
        }
    }

    fn waker(&self) -> Arc<dyn Waker> {
        Arc::new(WakeAll(self.transports.iter().map(|t| t.waker()).collect()))
    }

    fn describe_peer(&self, peer: Rank) -> Option<String> {
        let i = self.route.get(peer).copied().flatten()?;
        self.transports[i].describe_peer(peer)
    }

    fn path_metrics(&self) -> Option<PathMetricsHandle> {
        self.transports[0].path_metrics()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmsc_core::wire::FrameKind;
    use dmsc_core::{CollDesc, CollKind, DataType, ReduceOp};
    use std::sync::Mutex;

    /// What one fake transport of a route saw.
    #[derive(Default)]
    struct Seen {
        /// Registrations alive: key to (address, length).
        live: HashMap<u64, (usize, usize)>,
        /// (peer, address, the handle it came with).
        posts: Vec<(Rank, usize, Option<RegHandle>)>,
    }

    /// A FAKE transport: registers (when `registers`) by handing out the keys after `next`,
    /// records postings, and refuses every registration when `refuse` is set.
    struct FakeSub {
        registers: bool,
        refuse: bool,
        next: u64,
        seen: Arc<Mutex<Seen>>,
    }

    struct NoWake;
    impl Waker for NoWake {
        fn wake(&self) {}
    }

    impl Transport for FakeSub {
        fn name(&self) -> &'static str {
            if self.registers {
                "fake-rdma"
            } else {
                "fake-tcp"
            }
        }
        fn wait_fds(&self) -> Vec<std::os::fd::RawFd> {
            vec![-1]
        }
        fn watch_fds(&mut self, _: &[std::os::fd::RawFd]) -> bool {
            true
        }
        fn needs_registration(&self, _: Rank, kind: MemKind) -> bool {
            self.registers && kind == MemKind::Host
        }
        /// The registering fake also takes device memory (as GPUDirect RDMA would).
        fn accepts(&self, kind: MemKind) -> bool {
            kind == MemKind::Host || self.registers
        }
        fn register(&mut self, ptr: *mut u8, len: usize, _: MemKind) -> Result<RegHandle> {
            if self.refuse || !self.registers {
                return Err(Error::internal("fake refuses"));
            }
            self.next += 1;
            let mut seen = self.seen.lock().unwrap();
            seen.live.insert(self.next, (ptr as usize, len));
            Ok(RegHandle { key: self.next })
        }
        fn deregister(&mut self, h: RegHandle) {
            let gone = self.seen.lock().unwrap().live.remove(&h.key);
            assert!(
                gone.is_some(),
                "{} deregistered {h:?} it never issued",
                self.name()
            );
        }
        unsafe fn post_send(
            &mut self,
            p: Rank,
            _: &FrameHeader,
            d: *const u8,
            _: Token,
        ) -> Result<()> {
            self.seen.lock().unwrap().posts.push((p, d as usize, None));
            Ok(())
        }
        unsafe fn post_recv(
            &mut self,
            p: Rank,
            _: &FrameHeader,
            d: *mut u8,
            _: Token,
        ) -> Result<()> {
            self.seen.lock().unwrap().posts.push((p, d as usize, None));
            Ok(())
        }
        unsafe fn post_send_registered(
            &mut self,
            p: Rank,
            _: &FrameHeader,
            d: *const u8,
            reg: RegHandle,
            _: Token,
        ) -> Result<()> {
            self.seen
                .lock()
                .unwrap()
                .posts
                .push((p, d as usize, Some(reg)));
            Ok(())
        }
        unsafe fn post_recv_registered(
            &mut self,
            p: Rank,
            _: &FrameHeader,
            d: *mut u8,
            reg: RegHandle,
            _: Token,
        ) -> Result<()> {
            self.seen
                .lock()
                .unwrap()
                .posts
                .push((p, d as usize, Some(reg)));
            Ok(())
        }
        fn send_control(&mut self, _: Rank, _: &[u8]) {}
        fn poll(&mut self, _: &mut Vec<Completion>, _: Duration) -> Result<()> {
            Ok(())
        }
        fn cancel_all(&mut self) {}
        fn waker(&self) -> Arc<dyn Waker> {
            Arc::new(NoWake)
        }
    }

    fn header() -> FrameHeader {
        FrameHeader {
            kind: FrameKind::Data,
            seq: 1,
            desc: CollDesc {
                kind: CollKind::AllReduce,
                count: 16,
                dtype: DataType::Float32,
                op: ReduceOp::Sum,
                root: 0,
            },
            msg: 0,
            chunk: 0,
            offset: 0,
            len: 64,
            aux: 0,
            crc: None,
        }
    }

    /// A route for rank 0 of 4: rank 1 over a fake that does not register, ranks 2 and 3
    /// over fakes that do (keys from 100 and 200, so that the route's own keys, from 1,
    /// cannot be mistaken for theirs).
    fn route() -> (RouteTransport, Vec<Arc<Mutex<Seen>>>) {
        let seen: Vec<_> = (0..3)
            .map(|_| Arc::new(Mutex::new(Seen::default())))
            .collect();
        let subs: Vec<Box<dyn Transport>> = [(false, 0), (true, 100), (true, 200)]
            .into_iter()
            .zip(&seen)
            .map(|((registers, next), seen)| {
                Box::new(FakeSub {
                    registers,
                    refuse: false,
                    next,
                    seen: seen.clone(),
                }) as Box<dyn Transport>
            })
            .collect();
        let r = RouteTransport::new(subs, vec![None, Some(0), Some(1), Some(2)]).unwrap();
        (r, seen)
    }

    #[test]
    fn each_peer_gets_the_handle_its_own_transport_issued() {
        let (mut r, seen) = route();
        let h = MemKind::Host;
        assert_eq!(
            (0..4)
                .map(|p| r.needs_registration(p, h))
                .collect::<Vec<_>>(),
            [false, false, true, true]
        );
        let buf = [0u8; 64];
        let ptr = buf.as_ptr() as *mut u8;
        let reg = r.register(ptr, 64, h).unwrap();
        assert!(
            seen[0].lock().unwrap().live.is_empty(),
            "the TCP fake registers nothing"
        );
        assert_eq!(seen[1].lock().unwrap().live[&101], (ptr as usize, 64));
        assert_eq!(seen[2].lock().unwrap().live[&201], (ptr as usize, 64));
        // SAFETY: the fakes only record the addresses.
        unsafe {
            r.post_send_registered(2, &header(), ptr, reg, 1).unwrap();
            r.post_recv_registered(3, &header(), ptr, reg, 2).unwrap();
            r.post_send_registered(1, &header(), ptr, reg, 3).unwrap();
        }
        let a = ptr as usize;
        assert_eq!(
            seen[1].lock().unwrap().posts,
            [(2, a, Some(RegHandle { key: 101 }))]
        );
        assert_eq!(
            seen[2].lock().unwrap().posts,
            [(3, a, Some(RegHandle { key: 201 }))]
        );
        assert_eq!(
            seen[0].lock().unwrap().posts,
            [(1, a, None)],
            "posted plainly"
        );
        r.deregister(reg);
        assert!(seen.iter().all(|s| s.lock().unwrap().live.is_empty()));
        // A handle the route does not know is refused.
        // SAFETY: as above.
        let e = unsafe { r.post_send_registered(2, &header(), ptr, reg, 4) }.unwrap_err();
        assert!(e.to_string().contains("not made by this route"), "{e}");
    }

    #[test]
    fn a_route_takes_only_memory_every_transport_of_it_takes() {
        let (mut r, seen) = route();
        let gpu = MemKind::Cuda { device: 0 };
        assert!(r.accepts(MemKind::Host));
        assert!(!r.accepts(gpu), "the TCP-like fake takes host memory only");
        for (i, s) in seen.iter().enumerate() {
            r.transports[i] = Box::new(FakeSub {
                registers: true,
                refuse: false,
                next: 300 + 10 * i as u64,
                seen: s.clone(),
            });
        }
        assert!(r.accepts(gpu));
    }

    #[test]
    fn a_refused_registration_leaves_nothing_registered() {
        let (mut r, seen) = route();
        // Make the last registering fake refuse: the first one's registration is undone.
        let refusing: Box<dyn Transport> = Box::new(FakeSub {
            registers: true,
            refuse: true,
            next: 200,
            seen: seen[2].clone(),
        });
        r.transports[2] = refusing;
        let buf = [0u8; 8];
        assert!(r
            .register(buf.as_ptr() as *mut u8, 8, MemKind::Host)
            .is_err());
        assert!(seen.iter().all(|s| s.lock().unwrap().live.is_empty()));
        assert!(r.regs.is_empty());
    }

    #[test]
    fn a_route_of_transports_that_do_not_register_refuses_to_register() {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let t: Box<dyn Transport> = Box::new(FakeSub {
            registers: false,
            refuse: false,
            next: 0,
            seen,
        });
        let mut r = RouteTransport::new(vec![t], vec![None, Some(0)]).unwrap();
        assert!(!r.needs_registration(1, MemKind::Host));
        let buf = [0u8; 8];
        assert!(r
            .register(buf.as_ptr() as *mut u8, 8, MemKind::Host)
            .is_err());
    }
}
