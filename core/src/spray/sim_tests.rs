//! A sender and a receiver joined by simulated paths with a fake clock: rates, delays, silent
//! cuts, reconnection. Every test checks the delivered bytes against the sent ones.

use super::wire::{UnitHeader, UnitKind};
use super::*;
use crate::types::{CollDesc, CollKind, DataType, ReduceOp};
use crate::wire::{FrameHeader, FrameKind};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Ev {
    /// A segment's header reaches the receiver.
    Head,
    /// Its payload has arrived in full.
    Tail,
}

struct SimPath {
    rate: f64,
    delay: f64,
    free_at: f64,
    cut: bool,
    up: bool,
    epoch: u32,
    attempt: u32,
    redial_at: Option<f64>,
    /// (time, event, transmit)
    events: VecDeque<(f64, Ev, Transmit)>,
    /// Placement of the segment whose head arrived and tail has not.
    reading: Option<usize>,
}

struct Sim {
    t0: Instant,
    now: f64,
    tx: Sender,
    rx: Receiver,
    paths: Vec<SimPath>,
    acks: VecDeque<(f64, super::wire::Ack)>,
    src: Vec<Vec<u8>>,
    dst: Vec<Vec<u8>>,
    sent_done: Vec<bool>,
    recv_done: Vec<bool>,
    posted_send: usize,
    posted_recv: usize,
    window: usize,
    /// Receives are posted this long after the matching send (tests the side buffer).
    post_lag: f64,
    last_ack_path: usize,
    deliveries: Vec<(f64, u64)>,
}

fn header(len: u32, i: u64) -> FrameHeader {
    FrameHeader {
        kind: FrameKind::Data,
        seq: 1,
        desc: CollDesc {
            kind: CollKind::AllReduce,
            count: 1 << 20,
            dtype: DataType::Uint8,
            op: ReduceOp::Sum,
            root: 0,
        },
        msg: 0,
        chunk: i as u32,
        offset: 0,
        len,
        aux: 0,
        crc: None,
    }
}

impl Sim {
    fn new(cfg: SprayConfig, rates_mbit: &[f64], sizes: &[usize], seed: u64) -> Sim {
        let mut rng = Rng(seed | 1);
        let t0 = Instant::now();
        let src: Vec<Vec<u8>> = sizes
            .iter()
            .map(|&n| (0..n).map(|_| rng.next() as u8).collect())
            .collect();
        Sim {
            t0,
            now: 0.0,
            tx: Sender::new(cfg, rates_mbit.len(), t0),
            rx: Receiver::new(rates_mbit.len()),
            paths: rates_mbit
                .iter()
                .map(|&r| SimPath {
                    rate: r * 1e6 / 8.0,
                    delay: 0.0005,
                    free_at: 0.0,
                    cut: false,
                    up: true,
                    epoch: 1,
                    attempt: 0,
                    redial_at: None,
                    events: VecDeque::new(),
                    reading: None,
                })
                .collect(),
            acks: VecDeque::new(),
            dst: sizes.iter().map(|&n| vec![0u8; n]).collect(),
            sent_done: vec![false; sizes.len()],
            recv_done: vec![false; sizes.len()],
            src,
            posted_send: 0,
            posted_recv: 0,
            window: 16,
            post_lag: 0.0,
            last_ack_path: 0,
            deliveries: Vec::new(),
        }
    }

    fn instant(&self, t: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(t)
    }

    fn done(&self) -> bool {
        self.sent_done.iter().all(|&d| d) && self.recv_done.iter().all(|&d| d)
    }

    /// Post sends (and receives) within the window.
    fn post(&mut self) {
        let n = self.src.len();
        while self.posted_send < n
            && self.posted_send - self.sent_done.iter().filter(|&&d| d).count() < self.window
        {
            let i = self.posted_send;
            let h = header(self.src[i].len() as u32, i as u64);
            let id = self.tx.push(i as u64, h, self.src[i].as_ptr() as usize);
            assert_eq!(id, i as u64);
            self.posted_send += 1;
        }
    }

    fn post_recvs(&mut self, due: f64) {
        while self.posted_recv < self.posted_send && due >= self.post_lag {
            let i = self.posted_recv;
            let h = header(self.dst[i].len() as u32, i as u64);
            self.rx
                .post(h, self.dst[i].as_mut_ptr() as usize, i as u64)
                .unwrap();
            self.posted_recv += 1;
        }
    }

    fn pump(&mut self) {
        let now = self.instant(self.now);
        for (p, why) in self.tx.handle_timeout(now) {
            assert!(why.contains("no delivery"), "{why}");
            self.kill(p);
        }
        while let Some(t) = self.tx.poll_transmit(now) {
            let p = &mut self.paths[t.path];
            assert!(p.up, "sender used a path that is down");
            let start = self.now.max(p.free_at);
            let end = start + t.len as f64 / p.rate;
            p.free_at = end;
            if !p.cut {
                p.events.push_back((start + p.delay, Ev::Head, t));
                p.events.push_back((end + p.delay, Ev::Tail, t));
            }
        }
        while let Some((tok, _id)) = self.tx.poll_completed() {
            assert!(!self.sent_done[tok as usize]);
            self.sent_done[tok as usize] = true;
        }
        while let Some((tok, _)) = self.rx.poll_completed() {
            let i = tok as usize;
            assert!(!self.recv_done[i]);
            assert!(self.dst[i] == self.src[i], "transfer {i} arrived wrong");
            self.recv_done[i] = true;
        }
        assert!(self.rx.poll_mismatch().is_none());
        self.rx.handle_timeout(now);
        while let Some(q) = self.rx.poll_kill() {
            self.kill(q);
        }
        if self.rx.ack_due() {
            let ack = self.rx.ack();
            let p = &self.paths[self.last_ack_path];
            if !p.cut && p.up {
                self.acks.push_back((self.now + p.delay, ack));
            } else if let Some(q) = self.paths.iter().find(|q| !q.cut && q.up) {
                self.acks.push_back((self.now + q.delay, ack));
            }
        }
    }

    /// The transport closes path `p` on both ends.
    fn kill(&mut self, p: usize) {
        let now = self.instant(self.now);
        let path = &mut self.paths[p];
        if !path.up {
            return;
        }
        path.up = false;
        path.events.clear();
        path.reading = None;
        path.free_at = self.now;
        path.attempt = 0;
        self.rx.on_path_down(p);
        self.tx.on_path_down(p, "killed", now);
        let d = self.tx.redial_delay(p, 0).as_secs_f64();
        self.paths[p].redial_at = Some(self.now + d);
    }

    fn step(&mut self) {
        // Next event time.
        let mut next = f64::INFINITY;
        for p in &self.paths {
            if let Some(e) = p.events.front() {
                next = next.min(e.0);
            }
            if let Some(r) = p.redial_at {
                next = next.min(r);
            }
        }
        if let Some(a) = self.acks.front() {
            next = next.min(a.0);
        }
        if let Some(t) = self.tx.poll_timeout(self.instant(self.now)) {
            next = next.min(t.saturating_duration_since(self.t0).as_secs_f64());
        }
        if let Some(t) = self.rx.poll_timeout() {
            next = next.min(t.saturating_duration_since(self.t0).as_secs_f64());
        }
        if self.posted_recv < self.posted_send {
            next = next.min(self.now + self.post_lag.max(1e-6));
        }
        assert!(next.is_finite(), "simulation stalled at {}", self.now);
        self.now = self.now.max(next);
        let now = self.now;
        self.post_recvs(if self.post_lag > 0.0 {
            self.post_lag
        } else {
            0.0
        });
        for pi in 0..self.paths.len() {
            if self.paths[pi].redial_at.is_some_and(|r| r <= now) {
                let p = &mut self.paths[pi];
                if p.cut {
                    p.attempt += 1;
                    let d = self
                        .tx
                        .redial_delay(pi, self.paths[pi].attempt)
                        .as_secs_f64();
                    self.paths[pi].redial_at = Some(now + d);
                } else {
                    p.redial_at = None;
                    p.up = true;
                    p.epoch += 1;
                    let e = p.epoch;
                    self.rx.on_path_up(pi, e);
                    self.tx.on_path_up(pi, e, self.instant(now));
                }
            }
            while self.paths[pi].events.front().is_some_and(|e| e.0 <= now) {
                let (_, ev, t) = self.paths[pi].events.pop_front().unwrap();
                self.arrive(pi, ev, t);
            }
        }
        while self.acks.front().is_some_and(|a| a.0 <= now) {
            let (_, ack) = self.acks.pop_front().unwrap();
            self.tx.on_ack(&ack, self.instant(now));
        }
        self.pump();
        self.post();
        self.pump();
    }

    fn arrive(&mut self, p: usize, ev: Ev, t: Transmit) {
        match ev {
            Ev::Head => {
                let unit = UnitHeader {
                    kind: UnitKind::Segment,
                    path: p as u8,
                    epoch: t.epoch,
                    transfer: t.transfer,
                    seg: t.seg,
                    nsegs: t.nsegs,
                    offset: t.offset,
                    len: t.len as u32,
                    total: t.total,
                };
                let mut b = [0u8; super::wire::UNIT_LEN];
                unit.encode(&mut b);
                let unit = UnitHeader::decode(&b).unwrap();
                let at = match self.rx.place(p, &unit, &t.header).unwrap() {
                    Placement::Direct(a) | Placement::Stash(a) => a,
                    Placement::Discard => 0,
                    Placement::Mismatch { .. } => panic!("mismatch"),
                };
                self.paths[p].reading = Some(at);
            }
            Ev::Tail => {
                let at = self.paths[p].reading.take().expect("head before tail");
                if at != 0 {
                    // SAFETY: both ranges are live buffers of at least t.len bytes.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            t.data as *const u8,
                            at as *mut u8,
                            t.len as usize,
                        )
                    };
                }
                self.rx.seg_done(p, self.instant(self.now));
                self.tx.on_heard(p, self.instant(self.now));
                self.last_ack_path = p;
                self.deliveries.push((self.now, t.len));
            }
        }
    }

    fn run(&mut self, until: f64, mut at: impl FnMut(&mut Sim)) -> f64 {
        self.post();
        self.post_recvs(0.0);
        self.pump();
        while !self.done() {
            assert!(self.now < until, "not done by t={until}");
            self.step();
            at(self);
        }
        self.now
    }

    fn cut(&mut self, p: usize) {
        let path = &mut self.paths[p];
        path.cut = true;
        // Whatever is on the wire is lost; the segment being read stays half written.
        path.events.clear();
    }
}

const MBIT: [f64; 4] = [100.0, 200.0, 300.0, 400.0];

fn bulk(cfg: SprayConfig, seed: u64) -> Sim {
    Sim::new(cfg, &MBIT, &[512 << 10; 96], seed)
}

fn efficiency(s: &Sim, elapsed: f64) -> f64 {
    let bytes: f64 = s.src.iter().map(|v| v.len() as f64).sum();
    let sum: f64 = s.paths.iter().map(|p| p.rate).sum();
    bytes / elapsed / sum
}

#[test]
fn adaptive_reaches_the_sum_of_heterogeneous_paths() {
    let mut s = bulk(SprayConfig::default(), 1);
    let t = s.run(10.0, |_| {});
    let e = efficiency(&s, t);
    let mut rr = bulk(
        SprayConfig {
            mode: Mode::RoundRobin,
            ..Default::default()
        },
        1,
    );
    let trr = rr.run(10.0, |_| {});
    let err = efficiency(&rr, trr);
    eprintln!("adaptive {e:.3} of the sum, roundrobin {err:.3}");
    assert!(e > 0.9, "adaptive reached {e:.3} of the sum of rates");
    assert!(err < e, "roundrobin {err:.3} beat adaptive {e:.3}");
    let (dup, total) = s.tx.duplicate_bytes();
    assert!(dup as f64 <= 0.05 * total as f64 + (128 << 10) as f64);
}

#[test]
fn single_mode_uses_one_path() {
    let mut s = bulk(
        SprayConfig {
            mode: Mode::Single,
            ..Default::default()
        },
        2,
    );
    s.src.truncate(8);
    s.dst.truncate(8);
    s.sent_done.truncate(8);
    s.recv_done.truncate(8);
    s.run(10.0, |_| {});
    let m = s.tx.metrics();
    assert!(m[0].bytes_sent >= 8 * (512 << 10));
    assert!(m[1..].iter().all(|p| p.bytes_sent == 0));
}

#[test]
fn random_cuts_lose_nothing_and_throughput_recovers() {
    let mut recover = Vec::new();
    for seed in 1..=60u64 {
        let mut rng = Rng(seed * 7919);
        let mut s = bulk(SprayConfig::default(), seed);
        let victim = rng.below(4) as usize;
        let cut_at = 0.05 + rng.below(400) as f64 / 1000.0;
        let restore_at = cut_at + 0.3 + rng.below(700) as f64 / 1000.0;
        let mut cut = false;
        let mut restored = false;
        s.run(20.0, |s| {
            if !cut && s.now >= cut_at {
                s.cut(victim);
                cut = true;
            }
            if cut && !restored && s.now >= restore_at {
                s.paths[victim].cut = false;
                restored = true;
            }
        });
        // Throughput in the 100 ms windows after the cut, against the survivors' capacity.
        let survivors: f64 = s
            .paths
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != victim)
            .map(|(_, p)| p.rate)
            .sum();
        let rate_in = |a: f64, b: f64| {
            s.deliveries
                .iter()
                .filter(|d| d.0 >= a && d.0 < b)
                .map(|d| d.1 as f64)
                .sum::<f64>()
                / (b - a)
        };
        let end = s.now;
        let mut t = cut_at;
        let mut back = None;
        while t + 0.1 <= end.min(restore_at) {
            if rate_in(t, t + 0.1) >= 0.9 * survivors {
                back = Some(t + 0.1 - cut_at);
                break;
            }
            t += 0.01;
        }
        if let Some(b) = back {
            recover.push(b);
        }
        let m = s.tx.metrics();
        assert!(
            m[victim].failures >= 1 || end < cut_at + 0.2,
            "seed {seed}: never suspected"
        );
    }
    recover.sort_by(f64::total_cmp);
    eprintln!(
        "recovered in {} of 60 runs: median {:.3} s, max {:.3} s",
        recover.len(),
        recover[recover.len() / 2],
        recover.last().unwrap()
    );
    assert!(recover.len() >= 30);
    assert!(recover[recover.len() / 2] <= 0.5);
}

#[test]
fn a_restored_path_is_used_again() {
    let mut s = Sim::new(SprayConfig::default(), &MBIT, &[512 << 10; 800], 3);
    let mut phase = 0;
    let mut sent_before = 0;
    let mut back_after = None;
    s.run(30.0, |s| {
        if phase == 0 && s.now >= 0.2 {
            s.cut(3);
            phase = 1;
        } else if phase == 1 && s.now >= 0.8 {
            s.paths[3].cut = false;
            sent_before = s.tx.metrics()[3].bytes_sent;
            phase = 2;
        } else if phase == 2 && s.tx.metrics()[3].bytes_sent > sent_before {
            back_after = Some(s.now - 0.8);
            phase = 3;
        }
    });
    let back = back_after.expect("path 3 never used again");
    eprintln!("path 3 in use again {back:.3} s after it came back");
    assert!(back <= 2.0);
}

#[test]
fn a_flapping_path_loses_nothing_and_is_held_down() {
    let mut s = Sim::new(SprayConfig::default(), &MBIT, &[512 << 10; 1500], 4);
    let mut next = 0.1;
    let mut flips = 0;
    s.run(60.0, |s| {
        if s.now >= next {
            if s.paths[1].cut {
                s.paths[1].cut = false;
            } else {
                s.cut(1);
            }
            flips += 1;
            next += 0.5;
        }
    });
    let m = s.tx.metrics()[1].clone();
    eprintln!(
        "{flips} flips, {} failures, changes {:?}",
        m.failures,
        m.changes.len()
    );
    // Far fewer readmissions than flips: the path is held down rather than oscillating.
    let ups = m.changes.iter().filter(|c| c.1 == PathState::Up).count();
    assert!(
        ups * 2 <= flips.max(4),
        "{ups} readmissions for {flips} flips"
    );
}

#[test]
fn late_receives_take_the_side_buffer() {
    let mut s = Sim::new(
        SprayConfig::default(),
        &[400.0, 400.0],
        &[300_000, 7, 0, 1 << 20],
        5,
    );
    s.post_lag = 0.05;
    s.run(10.0, |_| {});
}

#[test]
fn every_path_cut_stalls_without_suspecting_the_last() {
    let mut s = bulk(SprayConfig::default(), 6);
    let mut cut = false;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        s.run(3.0, |s| {
            if !cut && s.now > 0.1 {
                for p in 0..4 {
                    s.cut(p);
                }
                cut = true;
            }
        })
    }));
    assert!(r.is_err(), "finished with every path cut");
    let up = (0..4)
        .filter(|&p| s.tx.path_state(p) == Some(PathState::Up))
        .count();
    assert_eq!(up, 1, "the last live path must be left to the heartbeats");
}

#[test]
fn a_stuck_writer_is_closed_before_its_segment_is_used() {
    // Path 0 is cut after a segment's header arrived: the segment is half written in place.
    // Its copy is re-sent on path 1 into a side buffer; path 0 must be closed before the
    // receive completes.
    let mut s = Sim::new(SprayConfig::default(), &[100.0, 100.0], &[1 << 20; 4], 7);
    let mut cut = false;
    s.run(10.0, |s| {
        if !cut && s.paths[0].reading.is_some() {
            s.cut(0);
            cut = true;
        }
    });
    assert!(cut);
    assert!(s.tx.metrics()[0].bytes_requeued > 0);
}

#[test]
fn mismatched_headers_are_reported() {
    let mut tx = Sender::new(SprayConfig::default(), 1, Instant::now());
    let mut rx = Receiver::new(1);
    let src = [1u8; 100];
    let mut dst = vec![0u8; 100];
    tx.push(9, header(100, 0), src.as_ptr() as usize);
    let mut other = header(100, 0);
    other.desc.kind = CollKind::AllGather;
    rx.post(other, dst.as_mut_ptr() as usize, 5).unwrap();
    let t = tx.poll_transmit(Instant::now()).unwrap();
    let unit = UnitHeader {
        kind: UnitKind::Segment,
        path: 0,
        epoch: 1,
        transfer: t.transfer,
        seg: t.seg,
        nsegs: t.nsegs,
        offset: t.offset,
        len: t.len as u32,
        total: t.total,
    };
    match rx.place(0, &unit, &t.header).unwrap() {
        Placement::Mismatch { token, got } => {
            assert_eq!(token, 5);
            assert_eq!(got.desc.kind, CollKind::AllReduce);
        }
        p => panic!("{p:?}"),
    }
    assert_eq!(dst, vec![0u8; 100]);
    // A segment disagreeing with its transfer's shape is a protocol error.
    let mut bad = unit;
    bad.transfer = 1;
    bad.nsegs = 2;
    bad.len = 10;
    assert!(rx.place(0, &bad, &t.header).is_err());
}

#[test]
fn a_path_measured_slow_early_is_probed_and_used_again() {
    // Path 0 runs at a tenth of its speed for its first second (a start-up stall, a
    // neighbour's burst), so its first rate sample is far too low. An earliest-completion
    // choice alone would then never pick it again, and its rate would never be measured
    // again: an idle path must be probed.
    let mut s = Sim::new(SprayConfig::default(), &MBIT, &[512 << 10; 1200], 5);
    let nominal = s.paths[0].rate;
    s.paths[0].rate = nominal / 10.0;
    let mut sent_at_recovery = None;
    let t = s.run(60.0, |s| {
        if sent_at_recovery.is_none() && s.now >= 1.0 {
            s.paths[0].rate = nominal;
            sent_at_recovery = Some((s.now, s.tx.metrics()[0].bytes_sent));
        }
    });
    let (t1, sent1) = sent_at_recovery.expect("the run lasted past 1 s");
    let carried = (s.tx.metrics()[0].bytes_sent - sent1) as f64;
    let total: f64 = s.src.iter().map(|v| v.len() as f64).sum();
    let share = nominal / s.paths.iter().map(|p| p.rate).sum::<f64>();
    eprintln!(
        "path 0 carried {:.1} MB of {:.1} MB after {t1:.2} s, its fair share {:.1} MB (run {t:.2} s)",
        carried / 1e6,
        total / 1e6,
        share * total / 1e6
    );
    assert!(
        carried >= 0.5 * share * total * (t - t1) / t,
        "path 0 carried {carried} bytes after its speed recovered: starved"
    );
}
