//! Engine tests over an in-memory transport whose network can corrupt a chunk in flight.
//!
//! [`MemNet`] carries frames between the [`MemTransport`]s of one test, first in first out
//! per ordered pair of ranks, and checks each arriving header against the posted receive
//! with [`FrameHeader::matches`], as the real transports do. Each rank's engine runs on its
//! own thread. `registration_tests.rs` wraps [`MemTransport`] in a fake that registers memory.

use super::*;
use crate::plan::{self, PlanConfig};
use crate::types::Algo;
use crate::wire::FrameHeader;
use std::collections::VecDeque;

struct Frame {
    header: FrameHeader,
    data: Vec<u8>,
}

/// The network: frames and control messages in flight between ranks.
pub(super) struct MemNet {
    /// `data[from][to]`.
    data: Vec<Vec<VecDeque<Frame>>>,
    /// `control[to]`: (from, payload).
    control: Vec<VecDeque<(Rank, Vec<u8>)>>,
    /// Flip a bit in the payload of data frame (from, msg, chunk), once.
    corrupt: Option<(Rank, u32, u32)>,
}

impl MemNet {
    pub(super) fn new(n: usize, corrupt: Option<(Rank, u32, u32)>) -> Arc<Mutex<MemNet>> {
        Arc::new(Mutex::new(MemNet {
            data: (0..n)
                .map(|_| (0..n).map(|_| VecDeque::new()).collect())
                .collect(),
            control: (0..n).map(|_| VecDeque::new()).collect(),
            corrupt,
        }))
    }
}

pub(super) struct MemTransport {
    rank: Rank,
    net: Arc<Mutex<MemNet>>,
    /// Posted receives per peer: (expected header, destination, token).
    recvs: Vec<VecDeque<(FrameHeader, *mut u8, Token)>>,
    /// Sends copied into the network, to complete at the next poll.
    sent: Vec<Token>,
    /// Also carries memory of this kind (host memory a test passes off as a GPU's).
    pub(super) device_kind: Option<MemKind>,
}

// SAFETY: the raw destinations are lent by the engine under the `Transport` contract and only
// used by the thread that owns the transport.
unsafe impl Send for MemTransport {}

impl MemTransport {
    /// Rank `rank`'s end of `net`, which connects `n` ranks.
    pub(super) fn new(rank: Rank, n: usize, net: Arc<Mutex<MemNet>>) -> MemTransport {
        MemTransport {
            rank,
            net,
            recvs: (0..n).map(|_| VecDeque::new()).collect(),
            sent: Vec::new(),
            device_kind: None,
        }
    }
}

struct NoWake;
impl Waker for NoWake {
    fn wake(&self) {}
}

impl Transport for MemTransport {
    fn name(&self) -> &'static str {
        "mem"
    }

    fn accepts(&self, kind: MemKind) -> bool {
        kind == MemKind::Host || Some(kind) == self.device_kind
    }

    unsafe fn post_send(
        &mut self,
        peer: Rank,
        header: &FrameHeader,
        data: *const u8,
        token: Token,
    ) -> Result<()> {
        // SAFETY: the caller lends `header.len` readable bytes at `data`.
        let mut bytes = unsafe { std::slice::from_raw_parts(data, header.len as usize) }.to_vec();
        let mut net = self.net.lock().unwrap();
        if net.corrupt == Some((self.rank, header.msg, header.chunk)) && !bytes.is_empty() {
            net.corrupt = None;
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x10;
        }
        net.data[self.rank][peer].push_back(Frame {
            header: *header,
            data: bytes,
        });
        self.sent.push(token);
        Ok(())
    }

    unsafe fn post_recv(
        &mut self,
        peer: Rank,
        expect: &FrameHeader,
        dst: *mut u8,
        token: Token,
    ) -> Result<()> {
        self.recvs[peer].push_back((*expect, dst, token));
        Ok(())
    }

    fn send_control(&mut self, peer: Rank, payload: &[u8]) {
        let mut net = self.net.lock().unwrap();
        net.control[peer].push_back((self.rank, payload.to_vec()));
    }

    fn poll(&mut self, out: &mut Vec<Completion>, timeout: Duration) -> Result<()> {
        let before = out.len();
        out.extend(self.sent.drain(..).map(|token| Completion::Sent { token }));
        let mut net = self.net.lock().unwrap();
        for (from, payload) in net.control[self.rank].drain(..) {
            out.push(Completion::Control {
                peer: from,
                payload,
            });
        }
        for peer in 0..self.recvs.len() {
            while !self.recvs[peer].is_empty() {
                let Some(f) = net.data[peer][self.rank].pop_front() else {
                    break;
                };
                let (expect, dst, token) = self.recvs[peer].pop_front().unwrap();
                if !f.header.matches(&expect) {
                    out.push(Completion::BadHeader {
                        token,
                        peer,
                        got: f.header,
                    });
                    continue;
                }
                // SAFETY: the engine lent `expect.len` (== the frame's length) bytes at `dst`.
                unsafe { std::ptr::copy_nonoverlapping(f.data.as_ptr(), dst, f.data.len()) };
                out.push(Completion::Received {
                    token,
                    crc: f.header.crc,
                });
            }
        }
        drop(net);
        if out.len() == before && !timeout.is_zero() {
            std::thread::sleep(timeout.min(Duration::from_millis(1)));
        }
        Ok(())
    }

    fn cancel_all(&mut self) {
        self.recvs.iter_mut().for_each(VecDeque::clear);
        self.sent.clear();
    }

    fn waker(&self) -> Arc<dyn Waker> {
        Arc::new(NoWake)
    }
}

/// Run a ring all-reduce (sum) of `count` f32 on `n` ranks over one [`MemNet`]; rank `r`
/// contributes `r + i` at index `i` and checksums when `checksum[r]`. Returns each rank's
/// result or error.
fn all_reduce(
    n: usize,
    count: usize,
    checksum: &[bool],
    corrupt: Option<(Rank, u32, u32)>,
) -> Vec<Result<Vec<f32>>> {
    let net = MemNet::new(n, corrupt);
    let threads: Vec<_> = (0..n)
        .map(|rank| {
            let t = MemTransport::new(rank, n, net.clone());
            let cfg = EngineConfig {
                chunk_bytes: 1024,
                window: 2,
                timeout: Duration::from_secs(20),
                checksum: checksum[rank],
                ..EngineConfig::default()
            };
            std::thread::spawn(move || {
                let mut e = Engine::new(Box::new(t), rank, n, cfg);
                let desc = CollDesc {
                    kind: CollKind::AllReduce,
                    count,
                    dtype: DataType::Float32,
                    op: ReduceOp::Sum,
                    root: 0,
                };
                let pc = PlanConfig {
                    algo: Some(Algo::Ring),
                    ..PlanConfig::default()
                };
                let sched = plan::plan(&desc, rank, n, false, &pc)?;
                let mut input: Vec<f32> = (0..count).map(|i| (rank + i) as f32).collect();
                let mut output = vec![0f32; count];
                let mem = OpMemory {
                    input: Region::host(input.as_mut_ptr() as *mut u8, count * 4),
                    output: Region::host(output.as_mut_ptr() as *mut u8, count * 4),
                    group: vec![],
                };
                // SAFETY: both buffers live until the call returns and nothing else uses them.
                unsafe { e.run_collective(desc, sched, mem) }?;
                Ok(output)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn expected(n: usize, count: usize) -> Vec<f32> {
    (0..count)
        .map(|i| (0..n).map(|r| (r + i) as f32).sum())
        .collect()
}

#[test]
fn checksummed_chunks_arrive_intact() {
    let (n, count) = (3, 3000);
    for r in all_reduce(n, count, &[true; 3], None) {
        assert_eq!(r.unwrap(), expected(n, count));
    }
}

#[test]
fn without_checksums_the_corruption_goes_unnoticed() {
    // The harness really corrupts: with checksums off the result is silently wrong.
    let (n, count) = (2, 2048);
    let results = all_reduce(n, count, &[false; 2], Some((1, 0, 1)));
    assert_ne!(results[0].as_ref().unwrap(), &expected(n, count));
}

#[test]
fn a_corrupted_chunk_fails_the_operation_on_every_rank_naming_peer_and_chunk() {
    // 2 ranks, ring: message 0 is the reduce-scatter half (received into staging and
    // reduced), message 1 the all-gather half (received in place).
    let (n, count) = (2, 2048);
    for msg in [0, 1] {
        let results = all_reduce(n, count, &[true; 2], Some((1, msg, 1)));
        let e0 = results[0].as_ref().unwrap_err();
        let text = e0.to_string();
        assert!(matches!(e0, Error::Protocol { .. }), "{e0:?}");
        assert!(
            text.contains(&format!("chunk 1 of message {msg} from rank 1"))
                && text.contains("CRC32C")
                && text.contains("all_reduce"),
            "{text}"
        );
        // Rank 1 learns it from rank 0 instead of returning (possibly wrong) data.
        match &results[1] {
            Err(Error::Remote { from: 0, detail }) => {
                assert!(detail.contains("CRC32C"), "{detail}")
            }
            // In the all-gather half rank 1 may already hold its result: rank 0 then
            // received the bad chunk last, and rank 1's data came from rank 0 intact.
            Ok(v) if msg == 1 => assert_eq!(v, &expected(n, count)),
            other => panic!("rank 1: {other:?}"),
        }
    }
}

#[test]
fn checksums_on_one_rank_only_is_a_clear_error() {
    let results = all_reduce(2, 512, &[true, false], None);
    for r in &results {
        let text = r.as_ref().unwrap_err().to_string();
        assert!(
            text.contains("DMSC_CHECKSUM must be the same on every rank")
                && text.contains("rank 0 checksums its chunks"),
            "{text}"
        );
    }
}

/// Every copy, reduction, division and checksum of an operation goes through the device:
/// over the recording FAKE device, the bytes it saw equal what the rank's schedule implies
/// (reductions and copies of its local and receive-reduce actions, one division for the
/// average, a checksum per chunk sent and received), and the result is right.
#[test]
fn every_payload_byte_goes_through_the_device() {
    use crate::device::recording::{Call, RecordingDevice};
    use crate::schedule::Action;
    let (n, count, chunk) = (3usize, 3001usize, 1024usize);
    for algo in [Algo::Ring, Algo::Tree] {
        let net = MemNet::new(n, None);
        let threads: Vec<_> = (0..n)
            .map(|rank| {
                let t = MemTransport::new(rank, n, net.clone());
                let cfg = EngineConfig {
                    chunk_bytes: chunk,
                    window: 2,
                    timeout: Duration::from_secs(20),
                    checksum: true,
                    ..EngineConfig::default()
                };
                std::thread::spawn(move || {
                    let log = Arc::new(Mutex::new(Vec::new()));
                    let dev = RecordingDevice::host(log.clone());
                    let mut e = Engine::with_device(Box::new(t), Box::new(dev), rank, n, cfg);
                    let desc = CollDesc {
                        kind: CollKind::AllReduce,
                        count,
                        dtype: DataType::Float32,
                        op: ReduceOp::Avg,
                        root: 0,
                    };
                    let pc = PlanConfig {
                        algo: Some(algo),
                        ..PlanConfig::default()
                    };
                    let sched = plan::plan(&desc, rank, n, false, &pc).unwrap();
                    // What the schedule implies, counted from the plan alone.
                    let (mut reduce, mut copy, mut scale, mut crc) = (0, 0, 0, 0);
                    let chunks = |elems: usize| (elems * 4).div_ceil(chunk).max(1);
                    for a in sched.steps.iter().flat_map(|s| &s.actions) {
                        match *a {
                            Action::Send { src, .. } => crc += chunks(src.len),
                            Action::Recv { dst, .. } => crc += chunks(dst.len),
                            Action::RecvReduce { dst, .. } => {
                                crc += chunks(dst.len);
                                reduce += dst.len * 4;
                            }
                            Action::Reduce { dst, .. } => reduce += dst.len * 4,
                            Action::Copy { dst, src } if dst != src => copy += dst.len * 4,
                            Action::Copy { .. } => {}
                            Action::Scale { dst } => scale += dst.len * 4,
                        }
                    }
                    let mut input: Vec<f32> = (0..count).map(|i| (rank * 3 + i) as f32).collect();
                    let mut output = vec![0f32; count];
                    let mem = OpMemory {
                        input: Region::host(input.as_mut_ptr() as *mut u8, count * 4),
                        output: Region::host(output.as_mut_ptr() as *mut u8, count * 4),
                        group: vec![],
                    };
                    // SAFETY: both buffers live until the call returns and nothing else uses them.
                    unsafe { e.run_collective(desc, sched, mem) }.unwrap();
                    // What the device saw, tallied in one pass: bytes reduced, copied and
                    // divided, and checksums computed.
                    let (mut r, mut c, mut s, mut k) = (0, 0, 0, 0);
                    for call in log.lock().unwrap().iter() {
                        match *call {
                            Call::Reduce(b) => r += b,
                            Call::Copy(b) => c += b,
                            Call::Scale(b) => s += b,
                            Call::Crc(_) => k += 1,
                            Call::Alloc(_) => {}
                        }
                    }
                    assert_eq!(r, reduce, "{algo:?} rank {rank}: reduced bytes");
                    assert_eq!(c, copy, "{algo:?} rank {rank}: copied bytes");
                    assert_eq!(s, scale, "{algo:?} rank {rank}: divided bytes");
                    assert_eq!(k, crc, "{algo:?} rank {rank}: checksums");
                    (output, scale, reduce)
                })
            })
            .collect();
        let (mut scaled, mut reduced) = (0, 0);
        for t in threads {
            let (out, scale, reduce) = t.join().unwrap();
            scaled += scale;
            reduced += reduce;
            for (i, x) in out.iter().enumerate() {
                let want = (0..n).map(|r| (r * 3 + i) as f32).sum::<f32>() / n as f32;
                assert!(
                    (x - want).abs() <= want.abs() * 1e-6,
                    "{algo:?}: element {i} is {x}, expected {want}"
                );
            }
        }
        assert!(
            scaled > 0 && reduced > 0,
            "{algo:?}: the test must exercise division and reduction"
        );
    }
}
