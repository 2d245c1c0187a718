//! Peer liveness: heartbeats, and telling a stopped, hung or killed peer from a quiet one.
//!
//! A killed peer's kernel closes its sockets, so its death shows as an end of stream or a
//! reset; a stopped peer (SIGSTOP, a debugger, a link that drops everything) shows nothing at
//! all, since its kernel keeps acknowledging TCP. Both are caught here:
//!
//! - **Heartbeats.** Every engine sends a [`ControlMsg::Heartbeat`] on each control
//!   connection every [`interval`] (a fifth of `DMSC_HEARTBEAT_TIMEOUT`): from its drive loop
//!   while an operation runs (the loop never blocks past the next heartbeat) and from the
//!   communicator's progress thread while idle. Any control message counts as a sign of life.
//!   A peer not heard from for [`limit`] (four fifths of the timeout) is declared lost. Its
//!   last message left at most one interval before it went silent, so it is declared lost
//!   within `DMSC_HEARTBEAT_TIMEOUT` of stopping, with the last fifth left for scheduling
//!   delays. This is the fixed-timeout detector of Raft (§5.6: heartbeat interval well below
//!   the election timeout) and etcd (100 ms heartbeats, 1 s election timeout), in the role of
//!   PyTorch's NCCL heartbeat monitor.
//! - **Deafness is not silence.** Time during which this rank did not poll (it was itself
//!   stopped, starved of CPU, or busy in a long local copy) is not held against its peers:
//!   whatever they sent meanwhile waits in the socket buffers.
//! - **Goodbyes.** A communicator being destroyed sends [`ControlMsg::Bye`] before closing its
//!   connections; the end of stream that follows is then a departure, not a failure. A control
//!   connection that ends without a goodbye ([`Completion::Closed`]) means the process exited
//!   or was killed: an idle engine records the loss at once, and a running operation fails if
//!   it still needs that peer after [`CLOSE_GRACE`] (data the peer sent before it died may
//!   still be waiting in the socket buffers).

use super::control::ControlMsg;
use super::exec::Exec;
use super::transport::Completion;
use super::Engine;
use crate::error::{Error, Result};
use crate::types::Rank;
use std::time::{Duration, Instant};

/// Heartbeat interval for a heartbeat timeout: a fifth of it.
pub(crate) fn interval(timeout: Duration) -> Duration {
    timeout / 5
}

/// Silence after which a peer is declared lost: the timeout less one interval.
pub(crate) fn limit(timeout: Duration) -> Duration {
    timeout - interval(timeout)
}

/// How long an operation may still wait on a peer whose connections closed without a goodbye.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_millis(100);

/// What this rank knows about one peer.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum State {
    /// Talking (or not yet silent for long enough).
    Live,
    /// Said goodbye: its communicator is gone, in good order. Also this rank's own entry.
    Left,
    /// Its control connection ended without a goodbye.
    Closed {
        /// When this rank noticed.
        at: Instant,
        /// What was observed.
        detail: String,
    },
    /// Declared lost (silence, or an error naming it); no more heartbeats go to it.
    Lost,
}

struct Peer {
    heard: Instant,
    state: State,
}

/// Liveness of every peer of one engine.
pub(crate) struct Liveness {
    /// (interval, limit, timeout); `None`: heartbeats off.
    timing: Option<(Duration, Duration, Duration)>,
    /// Periods without polling at least this long are forgiven: half an interval, above the
    /// idle progress thread's period, so that its regular naps count as listening (what
    /// arrives meanwhile is read at its next poll).
    deaf_min: Duration,
    peers: Vec<Peer>,
    /// When the last poll returned: from then until the next poll this rank is deaf.
    last_poll_end: Instant,
    next_heartbeat: Instant,
    /// No peer can have been silent for `limit` before this.
    next_scan: Instant,
    /// Peers in [`State::Closed`].
    closed: usize,
    /// The longest silence of a live peer seen so far, and that peer (`DMSC_DEBUG=INFO`
    /// prints it: the margin left to `DMSC_HEARTBEAT_TIMEOUT` on a given machine and load).
    longest: (Duration, Rank),
}

impl Liveness {
    /// Every peer live and just heard from; the first heartbeats are due at once.
    pub(crate) fn new(
        me: Rank,
        nranks: usize,
        timeout: Option<Duration>,
        now: Instant,
    ) -> Liveness {
        let timing = timeout
            .filter(|t| !t.is_zero())
            .map(|t| (interval(t), limit(t), t));
        let peers = (0..nranks)
            .map(|p| Peer {
                heard: now,
                state: if p == me { State::Left } else { State::Live },
            })
            .collect();
        Liveness {
            timing,
            deaf_min: timing.map_or(Duration::MAX, |t| t.0 / 2),
            peers,
            last_poll_end: now,
            next_heartbeat: now,
            next_scan: now + timing.map_or(Duration::ZERO, |t| t.1),
            closed: 0,
            longest: (Duration::ZERO, me),
        }
    }

    /// A message from `peer` arrived.
    pub(crate) fn heard(&mut self, peer: Rank, now: Instant) {
        if let Some(p) = self.peers.get_mut(peer) {
            let quiet = now.saturating_duration_since(p.heard);
            if p.state == State::Live && quiet > self.longest.0 {
                self.longest = (quiet, peer);
            }
            p.heard = p.heard.max(now);
        }
    }

    /// The longest silence of a live peer seen so far, and that peer.
    pub(crate) fn longest_silence(&self) -> (Duration, Rank) {
        self.longest
    }

    /// `peer` said goodbye.
    pub(crate) fn left(&mut self, peer: Rank) {
        self.set(peer, State::Left);
    }

    /// `peer`'s control connection ended; a departure if it said goodbye first.
    pub(crate) fn closed(&mut self, peer: Rank, now: Instant, detail: &str) {
        if self.state(peer) == Some(&State::Live) {
            self.set(
                peer,
                State::Closed {
                    at: now,
                    detail: detail.to_string(),
                },
            );
        }
    }

    /// `peer` is lost: stop sending it heartbeats.
    pub(crate) fn lost(&mut self, peer: Rank) {
        if matches!(self.state(peer), Some(State::Live | State::Closed { .. })) {
            self.set(peer, State::Lost);
        }
    }

    fn set(&mut self, peer: Rank, state: State) {
        if let Some(p) = self.peers.get_mut(peer) {
            if matches!(p.state, State::Closed { .. }) {
                self.closed -= 1;
            }
            if matches!(state, State::Closed { .. }) {
                self.closed += 1;
            }
            p.state = state;
        }
    }

    /// What this rank knows about `peer`.
    pub(crate) fn state(&self, peer: Rank) -> Option<&State> {
        self.peers.get(peer).map(|p| &p.state)
    }

    /// A poll starts: forgive the peers the time this rank was not listening.
    pub(crate) fn before_poll(&mut self, now: Instant) {
        let deaf = now.saturating_duration_since(self.last_poll_end);
        if deaf >= self.deaf_min {
            for p in &mut self.peers {
                p.heard = (p.heard + deaf).min(now);
            }
            // Scan again soon: the cached earliest deadline is stale.
            self.next_scan = now;
        }
    }

    /// A poll returned.
    pub(crate) fn after_poll(&mut self, now: Instant) {
        self.last_poll_end = now;
    }

    /// How long a poll may block before something here is due.
    pub(crate) fn until_next_event(&self, now: Instant) -> Duration {
        let mut next = match self.timing {
            Some(_) => self.next_heartbeat.min(self.next_scan),
            None => return self.until_close_grace(now).unwrap_or(Duration::MAX),
        };
        if let Some(d) = self.until_close_grace(now) {
            next = next.min(now + d);
        }
        next.saturating_duration_since(now)
    }

    fn until_close_grace(&self, now: Instant) -> Option<Duration> {
        if self.closed == 0 {
            return None;
        }
        self.peers
            .iter()
            .filter_map(|p| match &p.state {
                State::Closed { at, .. } => {
                    Some((*at + CLOSE_GRACE).saturating_duration_since(now))
                }
                _ => None,
            })
            .min()
    }

    /// The peers a heartbeat is due to now (empty when none is).
    pub(crate) fn heartbeats_due(&mut self, now: Instant) -> Vec<Rank> {
        let Some((interval, ..)) = self.timing else {
            return Vec::new();
        };
        if now < self.next_heartbeat {
            return Vec::new();
        }
        self.next_heartbeat = now + interval;
        self.live_peers().collect()
    }

    /// Peers that are neither gone nor lost.
    pub(crate) fn live_peers(&self) -> impl Iterator<Item = Rank> + '_ {
        self.peers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.state == State::Live)
            .map(|(r, _)| r)
    }

    /// A live peer silent for longer than the limit, with its silence.
    pub(crate) fn silent(&mut self, now: Instant) -> Option<(Rank, Duration)> {
        let (_, limit, _) = self.timing?;
        if now < self.next_scan {
            return None;
        }
        let mut earliest = None::<Instant>;
        for (r, p) in self.peers.iter().enumerate() {
            if p.state != State::Live {
                continue;
            }
            let quiet = now.saturating_duration_since(p.heard);
            if quiet >= limit {
                return Some((r, quiet));
            }
            earliest = Some(earliest.map_or(p.heard, |e| e.min(p.heard)));
        }
        self.next_scan = earliest.map_or(now + limit, |e| e + limit);
        None
    }

    /// Peers whose connections closed without a goodbye at least [`CLOSE_GRACE`] ago.
    pub(crate) fn closed_for_long(&self, now: Instant) -> Vec<(Rank, String)> {
        if self.closed == 0 {
            return Vec::new();
        }
        self.peers
            .iter()
            .enumerate()
            .filter_map(|(r, p)| match &p.state {
                State::Closed { at, detail }
                    if now.saturating_duration_since(*at) >= CLOSE_GRACE =>
                {
                    Some((r, detail.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// Any peer whose connections closed without a goodbye, however recently.
    pub(crate) fn any_closed(&self) -> Option<(Rank, String)> {
        if self.closed == 0 {
            return None;
        }
        self.peers
            .iter()
            .enumerate()
            .find_map(|(r, p)| match &p.state {
                State::Closed { detail, .. } => Some((r, detail.clone())),
                _ => None,
            })
    }

    /// A few words on `peer` for a timeout report, e.g. `last message 0.250 s ago`.
    pub(crate) fn describe(&self, peer: Rank, now: Instant) -> String {
        let Some(p) = self.peers.get(peer) else {
            return String::new();
        };
        match &p.state {
            State::Live | State::Lost => format!(
                "last message {:.3} s ago",
                now.saturating_duration_since(p.heard).as_secs_f64()
            ),
            State::Left => "it destroyed its communicator".into(),
            State::Closed { detail, .. } => format!("its connection ended: {detail}"),
        }
    }

    /// The configured heartbeat timeout, if heartbeats are on.
    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.timing.map(|t| t.2)
    }
}

impl Engine {
    /// Poll the transport (never blocking past the next heartbeat or liveness deadline),
    /// note every sign of life and every closed connection, and send the heartbeats due.
    pub(super) fn poll_io(&mut self, out: &mut Vec<Completion>, wait: Duration) -> Result<()> {
        self.poll_io_at(out, wait, Instant::now())
    }

    /// [`Engine::poll_io`] at `now`, a moment ago (the drive loop reads the clock once per
    /// turn: on a spinning rank the clock is a good share of each turn's cost).
    pub(super) fn poll_io_at(
        &mut self,
        out: &mut Vec<Completion>,
        wait: Duration,
        now: Instant,
    ) -> Result<()> {
        self.live.before_poll(now);
        let due = self.live.heartbeats_due(now);
        if !due.is_empty() {
            let hb = ControlMsg::Heartbeat.encode();
            for p in due {
                self.transport.send_control(p, &hb);
            }
        }
        let wait = wait.min(self.live.until_next_event(now));
        let first = out.len();
        let r = self.transport.poll(out, wait);
        // A poll that may not block returned at once: `now` still holds.
        let now = if wait.is_zero() { now } else { Instant::now() };
        self.live.after_poll(now);
        for c in &out[first..] {
            match c {
                Completion::Control { peer, .. } => self.live.heard(*peer, now),
                Completion::Closed { peer, detail } => self.live.closed(*peer, now, detail),
                _ => {}
            }
        }
        r
    }

    /// The error for a peer that went silent, or for one whose connections closed without a
    /// goodbye: at once when idle (`ex` is `None`), after [`CLOSE_GRACE`] when the operation
    /// in progress still waits on it.
    pub(super) fn check_peers(&mut self, ex: Option<&Exec>) -> Result<()> {
        self.check_peers_at(ex, Instant::now())
    }

    /// [`Engine::check_peers`] at `now`, a moment ago.
    pub(super) fn check_peers_at(&mut self, ex: Option<&Exec>, now: Instant) -> Result<()> {
        if let Some((peer, quiet)) = self.live.silent(now) {
            self.live.lost(peer);
            let t = self.live.timeout().unwrap_or_default();
            let paths = self
                .transport
                .describe_peer(peer)
                .map(|d| format!("; its paths: {d}"))
                .unwrap_or_default();
            return Err(Error::PeerLost {
                peer,
                detail: format!(
                    "no message from it for {} ms (rank {} declares a peer lost within DMSC_HEARTBEAT_TIMEOUT={} s of its going silent): the process is stopped or hung, or the network drops its packets{paths}",
                    quiet.as_millis(),
                    self.rank,
                    t.as_secs_f64()
                ),
            });
        }
        let closed = match ex {
            None => self.live.any_closed().into_iter().collect::<Vec<_>>(),
            Some(ex) => {
                let gone = self.live.closed_for_long(now);
                if gone.is_empty() {
                    return Ok(());
                }
                let waiting = ex.waiting_on();
                gone.into_iter()
                    .filter(|(p, _)| waiting.contains(p))
                    .collect()
            }
        };
        if let Some((peer, detail)) = closed.into_iter().next() {
            self.live.lost(peer);
            return Err(Error::PeerLost {
                peer,
                detail: format!(
                    "its connection to rank {} ended without a goodbye ({detail}): the process exited or was killed without destroying its communicator",
                    self.rank
                ),
            });
        }
        Ok(())
    }
}

impl Drop for Engine {
    /// Say goodbye, so that peers take the closing connections for a departure.
    fn drop(&mut self) {
        if self.live.timeout().is_some()
            && log::log_enabled!(target: crate::subsys::RAS, log::Level::Info)
        {
            let (quiet, peer) = self.live.longest_silence();
            log::info!(
                target: crate::subsys::RAS,
                "rank {} longest silence of a live peer: {:.1} ms (rank {peer})",
                self.rank,
                quiet.as_secs_f64() * 1e3
            );
        }
        let bye = ControlMsg::Bye.encode();
        let peers: Vec<Rank> = self.live.live_peers().collect();
        for p in peers {
            self.transport.send_control(p, &bye);
        }
        // Hand the goodbyes to the kernel before the transport closes the sockets.
        let mut sink = Vec::new();
        for _ in 0..2 {
            sink.clear();
            if self.transport.poll(&mut sink, Duration::ZERO).is_err() {
                break;
            }
        }
        // Nothing is posted between operations: release every registration while the
        // transport is still there.
        self.close_registrations();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Poll once at `at` (a zero-length poll).
    fn poll_at(l: &mut Liveness, at: Instant) {
        l.before_poll(at);
        l.after_poll(at);
    }

    #[test]
    fn a_silent_peer_is_lost_after_the_limit_and_not_before() {
        let t0 = Instant::now();
        let mut l = Liveness::new(0, 3, Some(T), t0);
        assert_eq!(interval(T), ms(200));
        assert_eq!(limit(T), ms(800));
        // Poll every 5 ms; rank 1 talks every 200 ms, rank 2 stops at 300 ms.
        let mut lost = None;
        for i in 1..=400u64 {
            let now = t0 + ms(5 * i);
            poll_at(&mut l, now);
            if i % 40 == 0 {
                l.heard(1, now);
                if 5 * i <= 300 {
                    l.heard(2, now);
                }
            }
            if let Some((p, quiet)) = l.silent(now) {
                lost = Some((p, 5 * i, quiet));
                break;
            }
        }
        // Last heard at 200 ms: lost at 1000 ms, within 1 s of stopping (300 ms).
        let (p, at, quiet) = lost.expect("rank 2 is lost");
        assert_eq!(p, 2);
        assert_eq!(at, 1000);
        assert_eq!(quiet, ms(800));
    }

    #[test]
    fn time_spent_not_polling_is_forgiven() {
        let t0 = Instant::now();
        let mut l = Liveness::new(0, 2, Some(T), t0);
        poll_at(&mut l, t0 + ms(10));
        // Regular naps of the idle progress thread are not forgiven.
        for i in 1..=15 {
            poll_at(&mut l, t0 + ms(10 + 50 * i));
        }
        assert_eq!(l.silent(t0 + ms(760)), None);
        poll_at(&mut l, t0 + ms(810));
        assert_eq!(l.silent(t0 + ms(810)).map(|s| s.0), Some(1));
        let mut l = Liveness::new(0, 2, Some(T), t0);
        poll_at(&mut l, t0 + ms(10));
        // This rank itself was stopped for 5 s: the peer's messages wait in the buffers.
        poll_at(&mut l, t0 + ms(5010));
        assert_eq!(l.silent(t0 + ms(5010)), None);
        l.heard(1, t0 + ms(5011));
        assert_eq!(l.silent(t0 + ms(5500)), None);
    }

    #[test]
    fn heartbeats_go_to_live_peers_every_interval() {
        let t0 = Instant::now();
        let mut l = Liveness::new(1, 4, Some(T), t0);
        assert_eq!(l.heartbeats_due(t0), vec![0, 2, 3]);
        assert!(l.heartbeats_due(t0 + ms(199)).is_empty());
        l.left(2);
        l.lost(3);
        assert_eq!(l.heartbeats_due(t0 + ms(201)), vec![0]);
        assert!(l.until_next_event(t0 + ms(250)) <= ms(200));
    }

    #[test]
    fn goodbyes_and_closed_connections() {
        let t0 = Instant::now();
        let mut l = Liveness::new(0, 3, Some(T), t0);
        l.left(1);
        l.closed(1, t0, "connection closed by the peer");
        assert_eq!(l.state(1), Some(&State::Left));
        l.closed(2, t0 + ms(5), "connection reset");
        assert!(matches!(l.state(2), Some(State::Closed { .. })));
        assert_eq!(l.any_closed().map(|c| c.0), Some(2));
        assert!(l.closed_for_long(t0 + ms(50)).is_empty());
        assert_eq!(l.closed_for_long(t0 + ms(105)).len(), 1);
        assert!(l.until_next_event(t0 + ms(50)) <= ms(55));
        l.lost(2);
        assert_eq!(l.any_closed(), None);
        // Departed and lost peers are never reported silent.
        assert_eq!(l.silent(t0 + ms(10_000)), None);
    }

    /// A transport whose peers never answer: posted work never completes, control messages
    /// are recorded, and completions queued by the test are delivered.
    struct Quiet {
        inbox: Vec<Completion>,
        sent: std::sync::Arc<std::sync::Mutex<Vec<(Rank, ControlMsg)>>>,
    }

    struct NoWake;
    impl super::super::Waker for NoWake {
        fn wake(&self) {}
    }

    impl super::super::Transport for Quiet {
        fn name(&self) -> &'static str {
            "quiet"
        }
        unsafe fn post_send(
            &mut self,
            _: Rank,
            _: &crate::wire::FrameHeader,
            _: *const u8,
            _: super::super::Token,
        ) -> Result<()> {
            Ok(())
        }
        unsafe fn post_recv(
            &mut self,
            _: Rank,
            _: &crate::wire::FrameHeader,
            _: *mut u8,
            _: super::super::Token,
        ) -> Result<()> {
            Ok(())
        }
        fn send_control(&mut self, peer: Rank, payload: &[u8]) {
            let m = ControlMsg::decode(payload).expect("a valid control message");
            self.sent.lock().unwrap().push((peer, m));
        }
        fn poll(&mut self, out: &mut Vec<Completion>, timeout: Duration) -> Result<()> {
            if self.inbox.is_empty() {
                std::thread::sleep(timeout.min(ms(2)));
            }
            out.append(&mut self.inbox);
            Ok(())
        }
        fn cancel_all(&mut self) {}
        fn waker(&self) -> std::sync::Arc<dyn super::super::Waker> {
            std::sync::Arc::new(NoWake)
        }
    }

    type Sent = std::sync::Arc<std::sync::Mutex<Vec<(Rank, ControlMsg)>>>;

    fn engine(inbox: Vec<Completion>, heartbeat: Duration) -> (Engine, Sent) {
        let sent = Sent::default();
        let t = Quiet {
            inbox,
            sent: sent.clone(),
        };
        let cfg = super::super::EngineConfig {
            timeout: Duration::from_secs(20),
            heartbeat_timeout: Some(heartbeat),
            ..Default::default()
        };
        (Engine::new(Box::new(t), 0, 2, cfg), sent)
    }

    fn control(peer: Rank, m: ControlMsg) -> Completion {
        Completion::Control {
            peer,
            payload: m.encode(),
        }
    }

    #[test]
    fn a_silent_peer_fails_the_operation_and_everyone_hears_of_it() {
        use crate::types::{CollDesc, CollKind, DataType, ReduceOp};
        // The peer's silence starts when the engine is made: time from before that.
        let t = Instant::now();
        let (mut e, sent) = engine(vec![], ms(250));
        let desc = CollDesc {
            kind: CollKind::AllReduce,
            count: 1024,
            dtype: DataType::Float32,
            op: ReduceOp::Sum,
            root: 0,
        };
        let sched = crate::plan::plan(&desc, 0, 2, false, &Default::default()).unwrap();
        let mut buf = vec![1f32; 1024];
        let region = super::super::Region::host(buf.as_mut_ptr() as *mut u8, 4096);
        let mem = super::super::OpMemory {
            input: region,
            output: region,
            group: vec![],
        };
        // SAFETY: `buf` outlives the call and nothing else touches it meanwhile.
        let r = unsafe { e.run_collective(desc, sched, mem) };
        let took = t.elapsed();
        match r {
            Err(Error::PeerLost { peer: 1, detail }) => {
                assert!(detail.contains("no message from it for"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
        // Lost after 4/5 of the timeout of silence, well within the timeout.
        assert!(took >= ms(200) && took < ms(250 + 200), "{took:?}");
        let sent = sent.lock().unwrap();
        assert!(sent.contains(&(1, ControlMsg::Heartbeat)));
        assert!(sent.iter().any(|(p, m)| *p == 1
            && matches!(m, ControlMsg::Failed { class: super::super::control::ErrorClass::PeerLost, ranks, .. } if ranks == &[1])));
        // Sticky: the next call fails at once with the same error.
        assert!(matches!(e.failure(), Some(Error::PeerLost { peer: 1, .. })));
    }

    #[test]
    fn an_idle_engine_records_a_death_but_not_a_goodbye() {
        let closed = || Completion::Closed {
            peer: 1,
            detail: "connection closed by the peer".into(),
        };
        let (mut e, _) = engine(vec![control(1, ControlMsg::Bye), closed()], T);
        e.service(Duration::ZERO).unwrap();
        assert_eq!(e.failure(), None);
        let (mut e, sent) = engine(vec![closed()], T);
        e.service(Duration::ZERO).unwrap();
        match e.failure() {
            Some(Error::PeerLost { peer: 1, detail }) => {
                assert!(detail.contains("without a goodbye"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
        // Dropping says goodbye to the peers still there (none here: rank 1 is lost).
        drop(e);
        assert!(!sent.lock().unwrap().contains(&(1, ControlMsg::Bye)));
    }

    #[test]
    fn an_abort_between_calls_reaches_the_peers() {
        let (mut e, sent) = engine(vec![], T);
        e.abort_handle().abort();
        e.service(Duration::ZERO).unwrap();
        assert!(matches!(e.failure(), Some(Error::Aborted { .. })));
        assert!(sent.lock().unwrap().iter().any(|(p, m)| *p == 1
            && matches!(
                m,
                ControlMsg::Failed {
                    class: super::super::control::ErrorClass::Aborted,
                    ..
                }
            )));
        drop(e);
        assert!(sent.lock().unwrap().contains(&(1, ControlMsg::Bye)));
    }

    #[test]
    fn heartbeats_off() {
        let t0 = Instant::now();
        let mut l = Liveness::new(0, 2, None, t0);
        assert!(l.heartbeats_due(t0).is_empty());
        assert_eq!(l.silent(t0 + ms(100_000)), None);
        assert_eq!(l.until_next_event(t0), Duration::MAX);
        let mut z = Liveness::new(0, 2, Some(Duration::ZERO), t0);
        assert!(z.heartbeats_due(t0).is_empty());
    }
}
