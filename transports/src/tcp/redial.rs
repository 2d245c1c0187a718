//! Connecting failed paths again, off the progress thread.
//!
//! The higher rank of a pair dials (as at setup); the lower rank keeps its path listeners
//! open and accepts. Both run the full authentication ([`super::greet`]) before a
//! connection is handed to the transport, so a stranger gets no further than at setup.
//! Dialing and the handshakes block, so they run on helper threads: one long-lived acceptor
//! and a short-lived thread per dial attempt, each with a deadline. Results reach the
//! transport through a channel, and its waker interrupts its poll.

use super::greet::greet_one;
use super::options::MeshOptions;
use crate::conn::Role;
use dmsc_core::engine::Waker;
use dmsc_core::error::{Error, Result};
use dmsc_core::Rank;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest wait for a path's TCP connection to be established.
pub(crate) const DIAL_TIMEOUT: Duration = Duration::from_millis(400);
/// Longest wait for a new path's handshake.
const GREET_TIMEOUT: Duration = Duration::from_secs(2);

/// A path connection made again, or a failed attempt.
pub(crate) struct Dialed {
    pub(crate) peer: Rank,
    pub(crate) path: usize,
    pub(crate) epoch: u32,
    pub(crate) result: Result<TcpStream>,
}

type SharedWaker = Arc<Mutex<Option<Arc<dyn Waker>>>>;

/// The acceptor thread and the channel of dial results.
pub(crate) struct PathService {
    results: Receiver<Dialed>,
    send: Sender<Dialed>,
    stop: Arc<AtomicBool>,
    waker: SharedWaker,
    opts: Arc<MeshOptions>,
    acceptor: Option<JoinHandle<()>>,
    /// Dial threads that may still run (joined on drop: none outlives the transport).
    dials: Vec<JoinHandle<()>>,
}

impl PathService {
    /// Start accepting path connections on `listeners` (the lower rank of each pair).
    pub(crate) fn new(opts: &MeshOptions, listeners: Vec<TcpListener>) -> Result<PathService> {
        let (send, results) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let waker: SharedWaker = Arc::new(Mutex::new(None));
        let opts = Arc::new(opts.clone());
        for l in &listeners {
            l.set_nonblocking(true)
                .map_err(|e| Error::io("setting a path listener nonblocking", &e))?;
        }
        let acceptor = {
            let (send, stop, waker, opts) =
                (send.clone(), stop.clone(), waker.clone(), opts.clone());
            std::thread::Builder::new()
                .name(format!("dmsc-paths-{}", opts.rank))
                .spawn(move || accept_loop(listeners, send, stop, waker, opts))
                .map_err(|e| Error::io("starting the path acceptor thread", &e))?
        };
        Ok(PathService {
            results,
            send,
            stop,
            waker,
            opts,
            acceptor: Some(acceptor),
            dials: Vec::new(),
        })
    }

    /// The transport's waker, poked when a result arrives.
    pub(crate) fn set_waker(&self, w: Arc<dyn Waker>) {
        if let Ok(mut g) = self.waker.lock() {
            *g = Some(w);
        }
    }

    /// Dial path `path` of `peer` at `addr` again, as incarnation `epoch`.
    pub(crate) fn dial(&mut self, peer: Rank, path: usize, epoch: u32, addr: SocketAddr) {
        self.dials.retain(|h| !h.is_finished());
        let (send, waker, opts) = (self.send.clone(), self.waker.clone(), self.opts.clone());
        let stop = self.stop.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("dmsc-dial-{peer}-{path}"))
            .spawn(move || {
                let result = TcpStream::connect_timeout(&addr, DIAL_TIMEOUT)
                    .map_err(|e| Error::io(format!("connecting path {path} to {addr}"), &e))
                    .and_then(|s| {
                        let role = Role::Path(path as u8, epoch);
                        let deadline = Instant::now() + GREET_TIMEOUT;
                        greet_one(s, addr, Some((peer, role)), &opts, deadline, Some(&stop))
                    })
                    .map(|(s, _, _)| s);
                let _ = send.send(Dialed {
                    peer,
                    path,
                    epoch,
                    result,
                });
                poke(&waker);
            });
        match spawned {
            Ok(h) => self.dials.push(h),
            Err(e) => {
                let _ = self.send.send(Dialed {
                    peer,
                    path,
                    epoch,
                    result: Err(Error::io("starting a dial thread", &e)),
                });
            }
        }
    }

    /// Results that arrived since the last call.
    pub(crate) fn poll(&self) -> Vec<Dialed> {
        self.results.try_iter().collect()
    }
}

impl Drop for PathService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
        // A dial in progress ends within its connect timeout.
        for h in self.dials.drain(..) {
            let _ = h.join();
        }
        // Connections made but never taken: closed here.
        while self.results.try_recv().is_ok() {}
    }
}

fn poke(waker: &SharedWaker) {
    if let Ok(g) = waker.lock() {
        if let Some(w) = g.as_ref() {
            w.wake();
        }
    }
}

fn accept_loop(
    listeners: Vec<TcpListener>,
    send: Sender<Dialed>,
    stop: Arc<AtomicBool>,
    waker: SharedWaker,
    opts: Arc<MeshOptions>,
) {
    let mut fds: Vec<libc::pollfd> = listeners
        .iter()
        .map(|l| libc::pollfd {
            fd: l.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    while !stop.load(Ordering::Acquire) {
        for f in fds.iter_mut() {
            f.revents = 0;
        }
        // SAFETY: `fds` is a valid array of pollfds of listeners alive for the whole call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        if n <= 0 {
            continue;
        }
        for (k, l) in listeners.iter().enumerate() {
            if fds[k].revents == 0 {
                continue;
            }
            while let Ok((s, from)) = l.accept() {
                let deadline = Instant::now() + GREET_TIMEOUT;
                match greet_one(s, from, None, &opts, deadline, Some(&stop)) {
                    Ok((s, peer, Role::Path(p, epoch))) => {
                        let _ = send.send(Dialed {
                            peer,
                            path: p as usize,
                            epoch,
                            result: Ok(s),
                        });
                        poke(&waker);
                    }
                    Ok((_, peer, role)) => crate::auth::log_refusal(
                        dmsc_core::subsys::NET,
                        format_args!(
                            "rank {}: refused a {role:?} connection from rank {peer} at \
                         {from} after setup",
                            opts.rank
                        ),
                    ),
                    Err(e) => crate::auth::log_refusal(
                        dmsc_core::subsys::NET,
                        format_args!("rank {}: refused a connection from {from}: {e}", opts.rank),
                    ),
                }
            }
        }
    }
}
