//! Setting up the shared-memory links of a communicator whose ranks share one host.
//!
//! Before the rendezvous exchange each rank listens on a fresh abstract Unix socket
//! ([`Listening`]) and publishes its [`Card`]. Afterwards every rank connects to each lower
//! rank, proves knowledge of the job's secret in both directions (the handshake of the TCP
//! mesh, [`crate::auth`]), creates the pair's segment and hands it over with a hello naming
//! its rank and the communicator; the lower rank checks the hello and the segment, maps it
//! and confirms with one byte. A connection that fails the handshake is dropped and the
//! listener keeps waiting for the real peer, so a stranger on the host can neither join nor
//! read anything. Connecting only downwards and accepting only from above cannot deadlock:
//! rank 0 only accepts, and every rank's connects wait only on lower ranks.
//!
//! The listener is closed as soon as the links are up; the segments were never named in a
//! filesystem, so nothing outlives the processes.

use super::card::Card;
use super::segment::{Segment, Sizes};
use super::{sock, ShmTransport};
use crate::auth::{self, AuthError};
use crate::cma;
use dmsc_core::auth::{Purpose, Secret, Side};
use dmsc_core::engine::Transport;
use dmsc_core::error::{Error, Result};
use dmsc_core::wire::{le_u32, le_u64};
use dmsc_core::Rank;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

const HELLO_MAGIC: u32 = u32::from_le_bytes(*b"DSHH");
const HELLO_LEN: usize = 24;

/// How to set the links up.
#[derive(Clone, Debug)]
pub struct ShmOptions {
    /// This rank.
    pub rank: Rank,
    /// Number of ranks.
    pub nranks: usize,
    /// The communicator's id.
    pub comm_id: u64,
    /// The job's secret (`None`: links are not authenticated; then every rank has none).
    pub secret: Option<Secret>,
    /// Deadline of the whole set-up.
    pub timeout: Duration,
    /// Bytes of each data ring (`DMSC_SHM_RING`, a power of two).
    pub data_ring: usize,
    /// Pass large chunks by cross-memory attach where the pair allows it (`DMSC_CMA`).
    pub cma: bool,
}

impl ShmOptions {
    /// Default size of a data ring: enough for a window of chunks in flight while staying
    /// within the last-level cache of small hosts.
    pub const DEFAULT_DATA_RING: usize = 4 << 20;
}

/// This rank's listener and card, made before the rendezvous exchange.
pub struct Listening {
    listener: Option<UnixListener>,
    card: Card,
}

impl Listening {
    /// Listen if `willing`; the card says whether.
    pub fn new(willing: bool) -> Result<Listening> {
        if !willing {
            return Ok(Listening {
                listener: None,
                card: Card::local(None)?,
            });
        }
        let (l, nonce) = sock::listen()?;
        Ok(Listening {
            listener: Some(l),
            card: Card::local(Some(nonce))?,
        })
    }

    /// The card to publish.
    pub fn card(&self) -> &Card {
        &self.card
    }
}

fn hello(rank: Rank, comm_id: u64) -> [u8; HELLO_LEN] {
    let mut b = [0u8; HELLO_LEN];
    b[0..4].copy_from_slice(&HELLO_MAGIC.to_le_bytes());
    b[4..8].copy_from_slice(&(rank as u32).to_le_bytes());
    b[8..16].copy_from_slice(&comm_id.to_le_bytes());
    b
}

/// The rank a hello names, after checking it belongs to this communicator and to a rank
/// that connects to `me`.
fn parse_hello(b: &[u8; HELLO_LEN], me: Rank, nranks: usize, comm_id: u64) -> Result<Rank> {
    if le_u32(b, 0) != HELLO_MAGIC || b[16..].iter().any(|&x| x != 0) {
        return Err(Error::protocol("not a shared-memory hello"));
    }
    if le_u64(b, 8) != comm_id {
        return Err(Error::protocol(format!(
            "shared-memory hello for communicator {:#x}, this is {comm_id:#x}",
            le_u64(b, 8)
        )));
    }
    let peer = le_u32(b, 4) as usize;
    if peer <= me || peer >= nranks {
        return Err(Error::protocol(format!(
            "shared-memory hello from rank {peer}, expected one in {}..{nranks}",
            me + 1
        )));
    }
    Ok(peer)
}

/// Build the shared-memory transport of `opts.rank` to the ranks `local` marks (which share
/// this host; `cards`, indexed by rank, as published).
pub fn connect(
    opts: &ShmOptions,
    l: Listening,
    cards: &[Card],
    local: &[bool],
) -> Result<Box<dyn Transport>> {
    let deadline = Instant::now() + opts.timeout;
    if cards.len() != opts.nranks || local.len() != opts.nranks {
        return Err(Error::internal(format!(
            "{} host cards for {} ranks",
            cards.len(),
            opts.nranks
        )));
    }
    let listener = l
        .listener
        .ok_or_else(|| Error::internal("shared memory set up without a listener"))?;
    let sizes = Sizes {
        data: opts.data_ring,
        control: 256 << 10,
    };
    let me = opts.rank;
    let mut links: Vec<(Rank, Segment, UnixStream)> = Vec::with_capacity(opts.nranks);
    for (peer, card) in cards.iter().enumerate().take(me).filter(|(p, _)| local[*p]) {
        let mut s = sock::connect(&card.nonce).map_err(|e| {
            Error::io(
                format!("connecting to rank {peer} over shared memory (is it on this host?)"),
                &e,
            )
        })?;
        auth::handshake(
            &mut s,
            opts.secret.as_ref(),
            Purpose::Mesh,
            Side::Connector,
            opts.comm_id,
            deadline,
        )
        .map_err(|e| refused_by(peer, e))?;
        let (seg, fd) = Segment::create(peer as u32, me as u32, opts.comm_id, sizes)?;
        sock::send_with_fd(&s, &hello(me, opts.comm_id), fd.as_raw_fd())?;
        drop(fd);
        set_timeout(&s, deadline)?;
        let mut ok = [0u8; 1];
        s.read_exact(&mut ok).map_err(|e| {
            Error::io(
                format!("waiting for rank {peer} to map our shared segment"),
                &e,
            )
        })?;
        if ok != [1] {
            return Err(Error::protocol(format!(
                "rank {peer} refused our shared-memory segment"
            )));
        }
        links.push((peer, seg, s));
    }
    let mut waiting = (me + 1..opts.nranks).filter(|&p| local[p]).count();
    while waiting > 0 {
        let Some(mut s) = sock::accept(&listener, deadline)? else {
            let have: Vec<Rank> = links.iter().map(|l| l.0).filter(|&r| r > me).collect();
            let missing: Vec<Rank> = (me + 1..opts.nranks)
                .filter(|r| !have.contains(r))
                .collect();
            return Err(Error::Timeout {
                op: format!("setting up shared memory on rank {me}"),
                waited_s: opts.timeout.as_secs_f64(),
                missing: missing.clone(),
                detail: format!("rank(s) {missing:?} did not connect"),
            });
        };
        let until = deadline.min(Instant::now() + auth::ACCEPT_DEADLINE);
        if let Err(e) = auth::handshake(
            &mut s,
            opts.secret.as_ref(),
            Purpose::Mesh,
            Side::Acceptor,
            opts.comm_id,
            until,
        ) {
            auth::log_refusal(
                dmsc_core::subsys::SHM,
                format_args!("rank {me} refused a same-host connection: {e}"),
            );
            continue;
        }
        set_timeout(&s, until)?;
        let mut h = [0u8; HELLO_LEN];
        let fd = sock::recv_with_fd(&s, &mut h)?;
        let peer = parse_hello(&h, me, opts.nranks, opts.comm_id)?;
        if !local[peer] {
            return Err(Error::protocol(format!(
                "rank {peer} connected over shared memory but is not on this host"
            )));
        }
        if links.iter().any(|l| l.0 == peer) {
            return Err(Error::protocol(format!(
                "rank {peer} connected twice over shared memory"
            )));
        }
        let fd = fd.ok_or_else(|| {
            Error::protocol(format!("rank {peer} sent its hello without a segment"))
        })?;
        let seg = Segment::open(&fd, me as u32, peer as u32, opts.comm_id)?;
        drop(fd);
        s.write_all(&[1])
            .map_err(|e| Error::io(format!("confirming rank {peer}'s segment"), &e))?;
        links.push((peer, seg, s));
        waiting -= 1;
    }
    drop(listener);
    links.sort_by_key(|l| l.0);
    // Which pairs may also pass large chunks by reference.
    let epoch = cma::new_epoch();
    let peers: Vec<Rank> = links.iter().map(|l| l.0).collect();
    let verdicts = {
        let mut streams: Vec<&mut UnixStream> = links.iter_mut().map(|l| &mut l.2).collect();
        cma::negotiate(
            &mut streams,
            &peers,
            opts.cma,
            cma::epoch_address(epoch),
            deadline,
        )?
    };
    let mut memory = vec![None; opts.nranks];
    for (&peer, v) in peers.iter().zip(verdicts) {
        memory[peer] = v;
    }
    let ref_min = cma::SHM_REF_MIN;
    log::info!(
        target: dmsc_core::subsys::SHM,
        "rank {me}: shared memory with rank(s) {peers:?}, data rings of {} B, memory attach \
         from {} B with {} of them",
        opts.data_ring,
        ref_min,
        memory.iter().filter(|m| m.is_some()).count()
    );
    let shm = ShmTransport::new(me, opts.nranks, links)?;
    if memory.iter().any(Option::is_some) {
        Ok(Box::new(cma::CmaTransport::new(
            Box::new(shm),
            memory,
            epoch,
            ref_min,
        )))
    } else {
        Ok(Box::new(shm))
    }
}

fn set_timeout(s: &UnixStream, deadline: Instant) -> Result<()> {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(10));
    s.set_read_timeout(Some(left))
        .map_err(|e| Error::io("setting a socket timeout", &e))
}

fn refused_by(peer: Rank, e: AuthError) -> Error {
    match e {
        AuthError::Rejected(e) | AuthError::Garbled(e) => Error::usage(format!(
            "rank {peer} rejected this rank's shared-memory connection: {e} (DMSC_SECRET must be the same on every rank)"
        )),
        other => Error::protocol(format!(
            "authenticating the shared-memory link to rank {peer}: {other}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hellos_are_checked() {
        let h = hello(3, 0x77);
        assert_eq!(parse_hello(&h, 1, 4, 0x77).unwrap(), 3);
        assert!(parse_hello(&h, 1, 4, 0x78).is_err());
        assert!(parse_hello(&h, 3, 4, 0x77).is_err());
        assert!(parse_hello(&h, 0, 3, 0x77).is_err());
        let mut g = h;
        g[20] = 1;
        assert!(parse_hello(&g, 1, 4, 0x77).is_err());
    }

    fn opts(rank: Rank, nranks: usize, secret: Option<Secret>) -> ShmOptions {
        ShmOptions {
            rank,
            nranks,
            comm_id: 0xfeed,
            secret,
            timeout: Duration::from_secs(10),
            data_ring: 1 << 16,
            cma: false,
        }
    }

    /// Three ranks as threads of one process: every link comes up and carries frames.
    #[test]
    fn three_ranks_connect_and_exchange_control_messages() {
        let ls: Vec<Listening> = (0..3).map(|_| Listening::new(true).unwrap()).collect();
        let cards: Vec<Card> = ls.iter().map(|l| *l.card()).collect();
        let handles: Vec<_> = ls
            .into_iter()
            .enumerate()
            .map(|(r, l)| {
                let cards = cards.clone();
                std::thread::spawn(move || {
                    let mut t = connect(&opts(r, 3, None), l, &cards, &[true; 3]).unwrap();
                    for p in (0..3).filter(|&p| p != r) {
                        t.send_control(p, &[r as u8, p as u8]);
                    }
                    let mut got = Vec::new();
                    let until = Instant::now() + Duration::from_secs(10);
                    while got.len() < 2 && Instant::now() < until {
                        let mut out = Vec::new();
                        t.poll(&mut out, Duration::from_millis(50)).unwrap();
                        for c in out {
                            if let dmsc_core::engine::Completion::Control { peer, payload } = c {
                                got.push((peer, payload));
                            }
                        }
                    }
                    got.sort();
                    (r, got)
                })
            })
            .collect();
        for h in handles {
            let (r, got) = h.join().unwrap();
            let want: Vec<(Rank, Vec<u8>)> = (0..3)
                .filter(|&p| p != r)
                .map(|p| (p, vec![p as u8, r as u8]))
                .collect();
            assert_eq!(got, want, "rank {r}");
        }
    }

    /// A stranger without the secret is refused and the real peer still gets in.
    #[test]
    fn a_stranger_without_the_secret_is_refused() {
        let secret = Secret::new(&[0xab; 32]).unwrap();
        let l0 = Listening::new(true).unwrap();
        let l1 = Listening::new(true).unwrap();
        let cards = vec![*l0.card(), *l1.card()];
        let nonce = cards[0].nonce;
        // Rank 0 is accepting while the stranger knocks, so it is rank 0 that turns it away.
        let (c0, s0) = (cards.clone(), secret.clone());
        let t0 = std::thread::spawn(move || {
            connect(&opts(0, 2, Some(s0)), l0, &c0, &[true; 2]).map(|_| ())
        });
        let mut s = sock::connect(&nonce).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let wrong = Secret::new(&[0xcd; 32]).unwrap();
        let e = auth::handshake(
            &mut s,
            Some(&wrong),
            Purpose::Mesh,
            Side::Connector,
            0xfeed,
            deadline,
        )
        .unwrap_err();
        assert!(
            matches!(e, AuthError::Rejected(_) | AuthError::Closed(_)),
            "{e}"
        );
        connect(&opts(1, 2, Some(secret)), l1, &cards, &[true; 2]).unwrap();
        t0.join().unwrap().unwrap();
    }
}
