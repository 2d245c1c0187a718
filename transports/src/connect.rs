//! The one connect path of every communicator (init, split and shrink): publish what each
//! transport needs in one rendezvous exchange, decide which transport serves the ranks, and
//! set it up.
//!
//! Each rank publishes a host [`Card`](crate::shm::Card) followed by its TCP listening
//! addresses. When every rank shares this rank's host (same boot id, IPC and network
//! namespaces, and all offer shared memory), the ranks connect through shared memory
//! ([`crate::shm`]); otherwise through TCP ([`crate::tcp`]), where pairs on one host still
//! pass large chunks by cross-memory attach. Every rank sees the same cards, and "shares a
//! host" is an equivalence, so every rank makes the same choice without another round.
//! `DMSC_TRANSPORT=shm` insists on shared memory (an error naming the ranks on other hosts)
//! and `DMSC_TRANSPORT=tcp` (or `DMSC_SHM=0`) keeps it off.
//!
//! A communicator that spans hosts is served per peer ([`crate::route`]): shared memory to
//! the ranks on this host, TCP to the others.

use crate::route::RouteTransport;
use crate::shm::{self, Card, ShmOptions};
use crate::tcp::{self, Backend, Exchange, MeshOptions};
use dmsc_core::engine::Transport;
use dmsc_core::error::{Error, Result};

/// Which transport the ranks use (`DMSC_TRANSPORT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Shared memory when every rank is on this host, else TCP.
    Auto,
    /// TCP only.
    Tcp,
    /// Shared memory only: an error when a rank is on another host.
    Shm,
}

impl Choice {
    /// Parse `DMSC_TRANSPORT`: `auto`, `shm`, `tcp`, or a TCP backend (`uring`, `socket`),
    /// which implies TCP.
    pub fn parse(s: &str) -> Result<(Choice, Backend)> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok((Choice::Auto, Backend::Auto)),
            "shm" | "shared" | "sharedmemory" => Ok((Choice::Shm, Backend::Auto)),
            "tcp" => Ok((Choice::Tcp, Backend::Auto)),
            other => match Backend::parse(other) {
                Ok(b) => Ok((Choice::Tcp, b)),
                Err(_) => Err(Error::invalid(format!(
                    "DMSC_TRANSPORT={s} is not one of auto, shm, tcp, uring, socket"
                ))),
            },
        }
    }
}

/// How to connect a communicator.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// The TCP mesh's options (rank, size, id, secret, timeout, paths, backend, CMA).
    pub mesh: MeshOptions,
    /// `DMSC_TRANSPORT`.
    pub choice: Choice,
    /// Offer shared memory (`DMSC_SHM`, default on).
    pub shm: bool,
    /// Bytes of each shared-memory data ring (`DMSC_SHM_RING`).
    pub shm_ring: usize,
}

/// Connect `opts.mesh.rank` to every other rank. `exchange` publishes this rank's bytes and
/// returns every rank's, indexed by rank.
pub fn connect(opts: &ConnectOptions, exchange: Exchange<'_>) -> Result<Box<dyn Transport>> {
    let m = &opts.mesh;
    let willing = opts.shm && opts.choice != Choice::Tcp && m.nranks > 1;
    let listening = shm::Listening::new(willing)?;
    let tcp = tcp::listen(m)?;
    let mut mine = listening.card().encode().to_vec();
    mine.extend_from_slice(tcp.addresses().as_bytes());
    let all = exchange(&mine)?;
    if all.len() != m.nranks {
        return Err(Error::internal(format!(
            "the exchange returned {} entries for {} ranks",
            all.len(),
            m.nranks
        )));
    }
    let cards = all
        .iter()
        .enumerate()
        .map(|(r, b)| decode_record(b, r).map(|(c, _)| c))
        .collect::<Result<Vec<Card>>>()?;
    let me = listening.card();
    let local: Vec<bool> = (0..m.nranks)
        .map(|r| r != m.rank && me.shares_host(&cards[r]))
        .collect();
    let elsewhere: Vec<usize> = (0..m.nranks)
        .filter(|&r| r != m.rank && !local[r])
        .collect();
    if opts.choice == Choice::Shm && !elsewhere.is_empty() {
        let why = if !opts.shm {
            "DMSC_SHM=0 turns it off".to_string()
        } else {
            format!(
                "rank(s) {elsewhere:?} are on another host or namespace, or turned shared memory off"
            )
        };
        return Err(Error::usage(format!(
            "DMSC_TRANSPORT=shm asks for shared memory between all ranks, but {why}"
        )));
    }
    let so = ShmOptions {
        rank: m.rank,
        nranks: m.nranks,
        comm_id: m.comm_id,
        secret: m.secret.clone(),
        timeout: m.timeout,
        data_ring: opts.shm_ring,
        cma: m.cma,
    };
    if willing && elsewhere.is_empty() {
        return shm::connect(&so, listening, &cards, &local);
    }
    let addrs: Vec<Vec<u8>> = all
        .iter()
        .enumerate()
        .map(|(r, b)| decode_record(b, r).map(|(_, a)| a.to_vec()))
        .collect::<Result<_>>()?;
    if !willing || !local.iter().any(|&l| l) {
        drop(listening);
        return tcp::connect_listening(m, tcp, &addrs);
    }
    // Some ranks here, some elsewhere: shared memory to the first, TCP to the others. Both
    // set-ups wait only on their own peers, and each pair sees the same cards, so the two
    // meshes cannot wait on each other.
    let mut mo = m.clone();
    mo.serve = Some((0..m.nranks).map(|r| r != m.rank && !local[r]).collect());
    let net = tcp::connect_listening(&mo, tcp, &addrs)?;
    let near = shm::connect(&so, listening, &cards, &local)?;
    let route = (0..m.nranks)
        .map(|r| (r != m.rank).then_some(usize::from(local[r])))
        .collect();
    Ok(Box::new(RouteTransport::new(vec![net, near], route)?))
}

/// Split the connection record rank `rank` published into its host card and its TCP
/// listening addresses.
pub fn decode_record(b: &[u8], rank: usize) -> Result<(Card, &[u8])> {
    let card = Card::decode(b, rank)?;
    Ok((card, &b[shm::CARD_LEN..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_names_parse() {
        assert_eq!(Choice::parse("").unwrap(), (Choice::Auto, Backend::Auto));
        assert_eq!(Choice::parse("SHM").unwrap(), (Choice::Shm, Backend::Auto));
        assert_eq!(Choice::parse("tcp").unwrap(), (Choice::Tcp, Backend::Auto));
        assert_eq!(
            Choice::parse("socket").unwrap(),
            (Choice::Tcp, Backend::Socket)
        );
        assert_eq!(
            Choice::parse("uring").unwrap(),
            (Choice::Tcp, Backend::Uring)
        );
        let e = Choice::parse("carrier-pigeon").unwrap_err().to_string();
        assert!(
            e.contains("DMSC_TRANSPORT=carrier-pigeon") && e.contains("shm"),
            "{e}"
        );
    }
}
