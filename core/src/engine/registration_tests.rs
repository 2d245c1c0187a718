//! Engine tests over a FAKE transport that requires registered memory for every peer: it
//! wraps the in-memory transport of `tests.rs`, records every registration, and checks that
//! each frame is posted with a live handle whose range contains the frame's bytes.

use super::tests::{MemNet, MemTransport};
use super::*;
use crate::plan::{self, PlanConfig};
use crate::types::Algo;
use crate::wire::FrameHeader;
use std::collections::HashMap;

/// What the fake saw, shared with the test.
#[derive(Default)]
struct RegLog {
    /// Live registrations: key to `[start, end)`.
    live: HashMap<u64, (usize, usize)>,
    /// Every registration made, in order: `[start, end)`.
    made: Vec<(usize, usize)>,
    /// Frames posted with a handle.
    registered_posts: usize,
    /// Contract violations found (posting without a handle, outside its range, with a dead
    /// handle; ranges not of whole pages; deregistering twice).
    violations: Vec<String>,
}

/// The FAKE registering transport.
struct RegisteringFake {
    inner: MemTransport,
    log: Arc<Mutex<RegLog>>,
    next: u64,
    /// Also carries (and registers) [`GPU`] memory: host memory the tests pass off as a GPU's.
    gpu: bool,
}

/// The memory kind of the FAKE GPU of these tests.
const GPU: MemKind = MemKind::Cuda { device: 0 };

impl RegisteringFake {
    fn check(&self, what: &str, peer: Rank, ptr: usize, len: u32, reg: Option<RegHandle>) {
        let mut log = self.log.lock().unwrap();
        let end = ptr + len as usize;
        let problem = match reg.map(|h| (h, log.live.get(&h.key).copied())) {
            _ if len == 0 => None,
            None => Some(format!(
                "{what} to {peer} of {len} bytes without a registration"
            )),
            Some((h, None)) => Some(format!("{what} to {peer} with dead handle {h:?}")),
            Some((h, Some((s, e)))) if ptr < s || end > e => Some(format!(
                "{what} to {peer} of [{ptr:#x}, {end:#x}) outside {h:?} = [{s:#x}, {e:#x})"
            )),
            Some(_) => None,
        };
        if reg.is_some() {
            log.registered_posts += 1;
        }
        log.violations.extend(problem);
    }
}

impl Transport for RegisteringFake {
    fn name(&self) -> &'static str {
        "registering fake"
    }

    fn accepts(&self, kind: MemKind) -> bool {
        kind == MemKind::Host || (self.gpu && kind == GPU)
    }

    fn needs_registration(&self, _peer: Rank, kind: MemKind) -> bool {
        self.accepts(kind)
    }

    fn register(&mut self, ptr: *mut u8, len: usize, _kind: MemKind) -> Result<RegHandle> {
        let mut log = self.log.lock().unwrap();
        let start = ptr as usize;
        if !start.is_multiple_of(4096) || !len.is_multiple_of(4096) {
            log.violations.push(format!(
                "registered [{start:#x}, +{len:#x}): not whole pages"
            ));
        }
        self.next += 1;
        log.live.insert(self.next, (start, start + len));
        log.made.push((start, start + len));
        Ok(RegHandle { key: self.next })
    }

    fn deregister(&mut self, h: RegHandle) {
        let mut log = self.log.lock().unwrap();
        if log.live.remove(&h.key).is_none() {
            log.violations.push(format!("deregistered dead {h:?}"));
        }
    }

    unsafe fn post_send(
        &mut self,
        peer: Rank,
        header: &FrameHeader,
        data: *const u8,
        token: Token,
    ) -> Result<()> {
        self.check("send", peer, data as usize, header.len, None);
        // SAFETY: forwarded contract.
        unsafe { self.inner.post_send(peer, header, data, token) }
    }

    unsafe fn post_recv(
        &mut self,
        peer: Rank,
        expect: &FrameHeader,
        dst: *mut u8,
        token: Token,
    ) -> Result<()> {
        self.check("receive", peer, dst as usize, expect.len, None);
        // SAFETY: forwarded contract.
        unsafe { self.inner.post_recv(peer, expect, dst, token) }
    }

    unsafe fn post_send_registered(
        &mut self,
        peer: Rank,
        header: &FrameHeader,
        data: *const u8,
        reg: RegHandle,
        token: Token,
    ) -> Result<()> {
        self.check("send", peer, data as usize, header.len, Some(reg));
        // SAFETY: forwarded contract.
        unsafe { self.inner.post_send(peer, header, data, token) }
    }

    unsafe fn post_recv_registered(
        &mut self,
        peer: Rank,
        expect: &FrameHeader,
        dst: *mut u8,
        reg: RegHandle,
        token: Token,
    ) -> Result<()> {
        self.check("receive", peer, dst as usize, expect.len, Some(reg));
        // SAFETY: forwarded contract.
        unsafe { self.inner.post_recv(peer, expect, dst, token) }
    }

    fn send_control(&mut self, peer: Rank, payload: &[u8]) {
        self.inner.send_control(peer, payload)
    }

    fn poll(&mut self, out: &mut Vec<Completion>, timeout: Duration) -> Result<()> {
        self.inner.poll(out, timeout)
    }

    fn cancel_all(&mut self) {
        self.inner.cancel_all()
    }

    fn waker(&self) -> Arc<dyn Waker> {
        self.inner.waker()
    }
}

/// Run `body` on `n` ranks, each with an engine over its registering fake; returns each
/// rank's log (after its engine was dropped) and `body`'s result.
fn on_ranks<R: Send + 'static>(
    n: usize,
    body: impl Fn(&mut Engine, Rank) -> R + Send + Sync + 'static,
) -> Vec<(RegLog, R)> {
    on_ranks_with(n, false, body)
}

/// As [`on_ranks`]; with `gpu` the fakes carry [`GPU`] memory too.
fn on_ranks_with<R: Send + 'static>(
    n: usize,
    gpu: bool,
    body: impl Fn(&mut Engine, Rank) -> R + Send + Sync + 'static,
) -> Vec<(RegLog, R)> {
    let net = MemNet::new(n, None);
    let body = Arc::new(body);
    let threads: Vec<_> = (0..n)
        .map(|rank| {
            let log = Arc::new(Mutex::new(RegLog::default()));
            let t = RegisteringFake {
                inner: MemTransport::new(rank, n, net.clone()),
                log: log.clone(),
                next: 0,
                gpu,
            };
            let body = body.clone();
            std::thread::spawn(move || {
                let cfg = EngineConfig {
                    chunk_bytes: 4096,
                    window: 2,
                    timeout: Duration::from_secs(20),
                    ..EngineConfig::default()
                };
                let mut e = Engine::new(Box::new(t), rank, n, cfg);
                let r = body(&mut e, rank);
                drop(e);
                let log = std::mem::take(&mut *log.lock().unwrap());
                (log, r)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn all_reduce_desc(count: usize) -> CollDesc {
    CollDesc {
        kind: CollKind::AllReduce,
        count,
        dtype: DataType::Float32,
        op: ReduceOp::Sum,
        root: 0,
    }
}

/// One all-reduce (sum) of `input` into `output` with `algo`.
fn all_reduce(e: &mut Engine, algo: Algo, input: &mut [f32], output: &mut [f32]) -> Result<()> {
    let desc = all_reduce_desc(input.len());
    let pc = PlanConfig {
        algo: Some(algo),
        ..PlanConfig::default()
    };
    let sched = plan::plan(&desc, e.rank(), e.nranks(), false, &pc)?;
    let mem = OpMemory {
        input: Region::host(input.as_mut_ptr() as *mut u8, input.len() * 4),
        output: Region::host(output.as_mut_ptr() as *mut u8, output.len() * 4),
        group: vec![],
    };
    // SAFETY: both buffers are borrowed mutably for the whole call.
    unsafe { e.run_collective(desc, sched, mem) }
}

/// Every frame of every algorithm (staging slots, scratch and point-to-point group buffers
/// included) is posted with a live handle whose range contains it; results are right; and
/// dropping the engine deregisters everything.
#[test]
fn every_posted_frame_lies_in_a_range_registered_with_its_handle() {
    let (n, count) = (3usize, 5000usize);
    let results = on_ranks(n, move |e, rank| {
        let mut sums = Vec::new();
        for algo in [
            Algo::Ring,
            Algo::Tree,
            Algo::RecursiveDoubling,
            Algo::Rabenseifner,
        ] {
            let mut input: Vec<f32> = (0..count).map(|i| (rank + i) as f32).collect();
            let mut output = vec![0f32; count];
            all_reduce(e, algo, &mut input, &mut output).unwrap();
            sums.push(output);
        }
        // A ring exchange of group buffers.
        let (to, from) = ((rank + 1) % n, (rank + n - 1) % n);
        let ops = [
            plan::P2p::Send {
                peer: to,
                buf: 0,
                len: count,
            },
            plan::P2p::Recv {
                peer: from,
                buf: 1,
                len: count,
            },
        ];
        let sched = plan::plan_send_recv(rank, n, &ops).unwrap();
        let mut out: Vec<f32> = (0..count).map(|i| (rank * count + i) as f32).collect();
        let mut back = vec![0f32; count];
        let mem = OpMemory {
            input: Region::EMPTY,
            output: Region::EMPTY,
            group: vec![
                Region::host(out.as_mut_ptr() as *mut u8, count * 4),
                Region::host(back.as_mut_ptr() as *mut u8, count * 4),
            ],
        };
        // SAFETY: both buffers are borrowed mutably for the whole call.
        unsafe { e.run_p2p(DataType::Float32, &ops, &[0, 0], sched, mem) }.unwrap();
        (sums, back, e.registration_stats())
    });
    for (rank, (log, (sums, back, stats))) in results.into_iter().enumerate() {
        assert!(
            log.violations.is_empty(),
            "rank {rank}: {:#?}",
            log.violations
        );
        assert!(
            log.registered_posts > 0,
            "rank {rank}: nothing was posted registered"
        );
        assert!(
            log.live.is_empty(),
            "rank {rank}: left registered: {:?}",
            log.live
        );
        assert_eq!(stats.registrations as usize, log.made.len());
        for s in sums {
            let want: Vec<f32> = (0..count)
                .map(|i| (0..n).map(|r| (r + i) as f32).sum())
                .collect();
            assert_eq!(s, want, "rank {rank}");
        }
        let from = (rank + n - 1) % n;
        let want: Vec<f32> = (0..count).map(|i| (from * count + i) as f32).collect();
        assert_eq!(back, want, "rank {rank}");
    }
}

/// The same collective on the same buffers, ten times: every buffer is registered during
/// the first run only, later runs hit the cache; invalidating a buffer makes the next run
/// register it again.
#[test]
fn the_same_collective_ten_times_registers_each_buffer_once() {
    let (n, count) = (2usize, 3000usize);
    let results = on_ranks(n, move |e, rank| {
        let mut input: Vec<f32> = (0..count).map(|i| (rank * 2 + i) as f32).collect();
        let mut output = vec![0f32; count];
        let mut after = Vec::new();
        for _ in 0..10 {
            // Recursive doubling uses scratch too: input, output and scratch are leased.
            all_reduce(e, Algo::RecursiveDoubling, &mut input, &mut output).unwrap();
            after.push(e.registration_stats());
        }
        let covered = [input.as_ptr(), output.as_ptr()].map(|p| {
            e.reg
                .cache
                .lookup(p as *const u8, count * 4, MemKind::Host)
                .is_some()
        });
        e.invalidate_registrations(output.as_ptr() as *const u8, count * 4);
        all_reduce(e, Algo::RecursiveDoubling, &mut input, &mut output).unwrap();
        let last = e.registration_stats();
        (after, covered, last, output)
    });
    for (rank, (log, (after, covered, last, output))) in results.into_iter().enumerate() {
        assert!(
            log.violations.is_empty(),
            "rank {rank}: {:#?}",
            log.violations
        );
        let first = after[0];
        assert!(first.registrations > 0 && first.misses > 0);
        for (run, s) in after.iter().enumerate() {
            assert_eq!(
                (s.registrations, s.misses),
                (first.registrations, first.misses),
                "rank {rank}: run {} registered again",
                run + 1
            );
        }
        // Each later run leased input, output and scratch, all hits.
        assert_eq!(after[9].hits - after[0].hits, 9 * 3, "rank {rank}");
        assert_eq!(covered, [true, true], "rank {rank}: buffers not registered");
        assert_eq!(log.made.len() as u64, last.registrations);
        assert!(
            last.misses > first.misses && last.registrations > first.registrations,
            "rank {rank}: the invalidated output was not registered again: {last:?}"
        );
        assert!(last.invalidations >= 1);
        assert!(
            log.live.is_empty(),
            "rank {rank}: left registered: {:?}",
            log.live
        );
        let want: Vec<f32> = (0..count)
            .map(|i| (0..n).map(|r| (r * 2 + i) as f32).sum())
            .collect();
        assert_eq!(output, want);
    }
}

/// With a transport that does not register, the engine leases nothing and posts as before.
#[test]
fn a_transport_that_does_not_register_sees_no_registration() {
    let net = MemNet::new(3, None);
    let e = Engine::new(
        Box::new(MemTransport::new(0, 3, net)),
        0,
        3,
        EngineConfig::default(),
    );
    assert!(e.devices.iter().all(|d| d.reg_peers.is_empty()));
    assert_eq!(e.registration_stats(), RegStats::default());
}

/// The caller's device buffers are registered for one call only (a GPU allocator reuses
/// addresses), while host buffers and the engine's own staging stay cached.
#[test]
fn the_callers_device_buffers_are_registered_for_one_call_only() {
    use crate::device::recording::RecordingDevice;
    let count = 5000usize;
    let results = on_ranks_with(2, true, move |e, rank| {
        let gpu = RecordingDevice {
            log: Arc::default(),
            kind: GPU,
        };
        e.add_device(Box::new(gpu)).unwrap();
        let mut input: Vec<f32> = (0..count).map(|i| (rank + i) as f32).collect();
        let mut output = vec![0f32; count];
        let mut run = |e: &mut Engine, kind: MemKind| {
            let desc = all_reduce_desc(count);
            let pc = PlanConfig {
                algo: Some(Algo::Ring),
                ..PlanConfig::default()
            };
            let sched = plan::plan(&desc, e.rank(), e.nranks(), false, &pc).unwrap();
            let region = |p: *mut f32| Region {
                kind,
                ..Region::host(p as *mut u8, count * 4)
            };
            let mem = OpMemory {
                input: region(input.as_mut_ptr()),
                output: region(output.as_mut_ptr()),
                group: vec![],
            };
            // SAFETY: both buffers are borrowed mutably for the whole call.
            unsafe { e.run_collective(desc, sched, mem) }.unwrap();
            e.registration_stats().misses
        };
        let gpu = [run(e, GPU), run(e, GPU)];
        let host = [
            run(e, MemKind::Host),
            run(e, MemKind::Host),
            run(e, MemKind::Host),
        ];
        (gpu, host, output)
    });
    for (log, (gpu, host, out)) in results {
        assert!(log.violations.is_empty(), "{:?}", log.violations);
        assert!(
            gpu[1] > gpu[0],
            "the second device call re-registers: {gpu:?}"
        );
        assert_eq!(host[2], host[1], "host calls hit the cache: {host:?}");
        let want: Vec<f32> = (0..count).map(|i| (2 * i + 1) as f32).collect();
        assert_eq!(out, want);
    }
}
