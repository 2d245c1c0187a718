//! The one connect path of every communicator (init, split and shrink): publish what each
//! transport needs in one rendezvous exchange, decide which transport serves the ranks, and
//! set it up.
//!
//! Each rank publishes a host [`Card`](crate::shm::Card), its host name and its TCP
//! listening addresses ([`Record`]). From the cards every rank derives the same
//! [`Topology`]: ranks with one boot id, IPC and network namespace share a host. When every rank shares this rank's host (same boot id, IPC and network
//! namespaces, and all offer shared memory), the ranks connect through shared memory
//! ([`crate::shm`]); otherwise through TCP ([`crate::tcp`]), where pairs on one host still
//! pass large chunks by cross-memory attach. Every rank sees the same cards, and "shares a
//! host" is an equivalence, so every rank makes the same choice without another round.
//! `DMSC_TRANSPORT=shm` insists on shared memory (an error naming the ranks on other hosts)
//! and `DMSC_TRANSPORT=tcp` (or `DMSC_SHM=0`) keeps it off.
//!
//! A communicator that spans hosts is served per peer ([`crate::route`]): shared memory to
//! the ranks on this host, TCP to the others, or RDMA to the others when every rank found a
//! usable RDMA port ([`crate::rdma`]; `DMSC_TRANSPORT=auto` or `rdma`). Each rank prepares
//! its queue pairs before the exchange and publishes their card in its record (empty when it
//! cannot: no device, no library); when any record lacks one, every rank falls back to TCP,
//! and the reason is logged once per process. `DMSC_TRANSPORT=rdma` uses RDMA for every
//! peer, those on this host included.

use crate::rdma::{self, fallback, Prepared, RdmaOptions};
use crate::route::RouteTransport;
use crate::shm::{self, Card, ShmOptions};
use crate::tcp::{self, Backend, Exchange, MeshOptions};
use dmsc_core::engine::Transport;
use dmsc_core::error::{Error, Result};
use dmsc_core::topology::Topology;
use std::collections::HashMap;

/// Which transport the ranks use (`DMSC_TRANSPORT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Shared memory when every rank is on this host, else TCP.
    Auto,
    /// TCP only.
    Tcp,
    /// Shared memory only: an error when a rank is on another host.
    Shm,
    /// RDMA verbs to every peer (TCP when a rank has no usable RDMA port).
    Rdma,
}

impl Choice {
    /// The accepted values, as error messages list them.
    pub const NAMES: &'static str = "auto, shm, tcp, rdma, uring, socket";

    /// Parse `DMSC_TRANSPORT`: `auto`, `shm`, `tcp`, or a TCP backend (`uring`, `socket`),
    /// which implies TCP.
    pub fn parse(s: &str) -> Result<(Choice, Backend)> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok((Choice::Auto, Backend::Auto)),
            "shm" | "shared" | "sharedmemory" => Ok((Choice::Shm, Backend::Auto)),
            "tcp" => Ok((Choice::Tcp, Backend::Auto)),
            "rdma" | "ib" | "verbs" => Ok((Choice::Rdma, Backend::Auto)),
            other => match Backend::parse(other) {
                Ok(b) => Ok((Choice::Tcp, b)),
                Err(_) => Err(Error::invalid(format!(
                    "DMSC_TRANSPORT={s} is not one of {}",
                    Choice::NAMES
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
    /// RDMA to the ranks on other hosts, if offered (`None`: TCP only).
    pub rdma: Option<RdmaSetup>,
}

/// How to try RDMA: the settings and the verbs that provide the devices.
#[derive(Clone)]
pub struct RdmaSetup {
    /// The `DMSC_IB_*` settings.
    pub options: RdmaOptions,
    /// The system's verbs ([`rdma::sys::SysVerbs`]) or, in tests, a fake fabric.
    pub provider: std::sync::Arc<dyn rdma::verbs::VerbsProvider>,
    /// How GPU memory is exported as dma-bufs for registration: `None` for the CUDA
    /// driver's ([`rdma::connect::default_dmabuf`]); tests give the FAKE exporter.
    pub dmabuf: Option<DmabufSource>,
}

/// A maker of dma-buf exporters (one per transport).
pub type DmabufSource =
    std::sync::Arc<dyn Fn() -> Result<Box<dyn rdma::dmabuf_export::DmabufExporter>> + Send + Sync>;

impl std::fmt::Debug for RdmaSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdmaSetup")
            .field("options", &self.options)
            .field("provider", &self.provider.name())
            .field("dmabuf", &self.dmabuf.as_ref().map(|_| "given"))
            .finish()
    }
}

/// A connected communicator: the transport to every peer and the hosts the ranks are on
/// (links not yet measured).
pub struct Connected {
    /// The transport (per peer, through [`crate::route`], when the ranks span hosts).
    pub transport: Box<dyn Transport>,
    /// Which ranks share a host, and the hosts' names.
    pub topology: Topology,
}

/// Connect `opts.mesh.rank` to every other rank. `exchange` publishes this rank's bytes and
/// returns every rank's, indexed by rank.
pub fn connect(opts: &ConnectOptions, exchange: Exchange<'_>) -> Result<Connected> {
    let m = &opts.mesh;
    let willing = opts.shm && opts.choice != Choice::Tcp && m.nranks > 1;
    let listening = shm::Listening::new(willing)?;
    let tcp = tcp::listen(m)?;
    let (prepared, rdma_why) = prepare_rdma(opts);
    let mine = Record {
        card: *listening.card(),
        host_name: shm::host_name(),
        rdma: prepared.as_ref().map_or(&[][..], |p| p.card()),
        addrs: tcp.addresses().as_bytes(),
    }
    .encode();
    let all = exchange(&mine)?;
    if all.len() != m.nranks {
        return Err(Error::internal(format!(
            "the exchange returned {} entries for {} ranks",
            all.len(),
            m.nranks
        )));
    }
    let records = all
        .iter()
        .enumerate()
        .map(|(r, b)| Record::decode(b, r))
        .collect::<Result<Vec<Record>>>()?;
    let topology = topology(&records)?;
    let cards: Vec<Card> = records.iter().map(|r| r.card).collect();
    let rdma = match prepared {
        None => {
            if let Some(why) = rdma_why {
                fallback::log_fallback_once(&why);
            }
            None
        }
        Some(p) => {
            let lacking: Vec<usize> = (0..m.nranks)
                .filter(|&r| records[r].rdma.is_empty())
                .collect();
            if lacking.is_empty() {
                Some((p, records.iter().map(|r| r.rdma.to_vec()).collect()))
            } else {
                fallback::log_fallback_once(&format!(
                    "rank(s) {lacking:?} have no usable RDMA port"
                ));
                None
            }
        }
    };
    let transport = connect_transport(opts, listening, tcp, &cards, &records, rdma)?;
    Ok(Connected {
        transport,
        topology,
    })
}

/// The hosts of the ranks whose records these are: equal host keys, one host.
fn topology(records: &[Record]) -> Result<Topology> {
    let mut ids = HashMap::new();
    let host_id: Vec<usize> = records
        .iter()
        .map(|r| {
            let next = ids.len();
            *ids.entry(r.card.host_key()).or_insert(next)
        })
        .collect();
    let names: Vec<String> = records.iter().map(|r| r.host_name.clone()).collect();
    Topology::new(&host_id, &names)
}

/// This rank's RDMA queue pairs, prepared before the exchange, or why there are none
/// (`None` for both: RDMA was not asked for).
fn prepare_rdma(opts: &ConnectOptions) -> (Option<Prepared>, Option<String>) {
    let m = &opts.mesh;
    let wanted = matches!(opts.choice, Choice::Auto | Choice::Rdma) && m.nranks > 1;
    let Some(setup) = opts.rdma.as_ref().filter(|_| wanted) else {
        return (None, None);
    };
    match rdma::prepare(&*setup.provider, &setup.options, m.rank, m.nranks) {
        Ok(mut p) => {
            match &setup.dmabuf {
                Some(make) => p.use_dmabuf(make()),
                // Without the `cuda` feature there is no GPU memory to take: nothing to say.
                None if cfg!(feature = "cuda") => p.use_dmabuf(rdma::connect::default_dmabuf()),
                None => {}
            }
            (Some(p), None)
        }
        Err(e) => (None, Some(e.to_string())),
    }
}

/// Set up the transport(s) chosen from every rank's card; `rdma` when every rank published
/// an RDMA card.
fn connect_transport(
    opts: &ConnectOptions,
    listening: shm::Listening,
    tcp: tcp::Listening,
    cards: &[Card],
    records: &[Record],
    rdma: Option<(Prepared, Vec<Vec<u8>>)>,
) -> Result<Box<dyn Transport>> {
    let m = &opts.mesh;
    let willing = listening.card().willing;
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
    if let Some((prepared, rdma_cards)) = rdma {
        // Every rank decides alike: all published cards, and the same hosts.
        if opts.choice == Choice::Rdma || !elsewhere.is_empty() {
            drop(tcp);
            let net: Box<dyn Transport> = Box::new(prepared.finish(&rdma_cards)?);
            if opts.choice == Choice::Rdma || !willing || !local.iter().any(|&l| l) {
                drop(listening);
                return Ok(net);
            }
            let near = shm::connect(&so, listening, cards, &local)?;
            let route = (0..m.nranks)
                .map(|r| (r != m.rank).then_some(usize::from(local[r])))
                .collect();
            return Ok(Box::new(RouteTransport::new(vec![net, near], route)?));
        }
    }
    if willing && elsewhere.is_empty() {
        return shm::connect(&so, listening, cards, &local);
    }
    let addrs: Vec<Vec<u8>> = records.iter().map(|r| r.addrs.to_vec()).collect();
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
    let near = shm::connect(&so, listening, cards, &local)?;
    let route = (0..m.nranks)
        .map(|r| (r != m.rank).then_some(usize::from(local[r])))
        .collect();
    Ok(Box::new(RouteTransport::new(vec![net, near], route)?))
}

/// What each rank publishes to connect: its host card, its host name (one length byte,
/// then at most 255 bytes of UTF-8), its RDMA card (two length bytes, little-endian, then the
/// card; none when it offers no RDMA) and its TCP listening addresses (the rest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Host identity and shared-memory listener.
    pub card: Card,
    /// The host's name (`hostname`).
    pub host_name: String,
    /// The RDMA connection card ([`crate::rdma::wire::Card`]), empty when none.
    pub rdma: &'a [u8],
    /// The TCP listening addresses, as the TCP listener writes them.
    pub addrs: &'a [u8],
}

impl<'a> Record<'a> {
    /// The record's bytes (a host name longer than 255 bytes is cut at a character
    /// boundary).
    pub fn encode(&self) -> Vec<u8> {
        let mut name = self.host_name.as_str();
        while name.len() > 255 {
            let mut end = 255;
            while !name.is_char_boundary(end) {
                end -= 1;
            }
            name = &name[..end];
        }
        let mut b = self.card.encode().to_vec();
        b.push(name.len() as u8);
        b.extend_from_slice(name.as_bytes());
        let rdma = &self.rdma[..self.rdma.len().min(u16::MAX as usize)];
        b.extend_from_slice(&(rdma.len() as u16).to_le_bytes());
        b.extend_from_slice(rdma);
        b.extend_from_slice(self.addrs);
        b
    }

    /// Decode the record rank `rank` published.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] naming the rank when the card or the host name is malformed.
    pub fn decode(b: &'a [u8], rank: usize) -> Result<Record<'a>> {
        let card = Card::decode(b, rank)?;
        let rest = &b[shm::CARD_LEN..];
        let bad = || Error::protocol(format!("rank {rank} published a malformed host name"));
        let (&len, rest) = rest.split_first().ok_or_else(bad)?;
        let len = usize::from(len);
        if rest.len() < len {
            return Err(bad());
        }
        let host_name = std::str::from_utf8(&rest[..len])
            .map_err(|_| bad())?
            .to_string();
        let rest = &rest[len..];
        let bad_rdma = || Error::protocol(format!("rank {rank} published a malformed RDMA card"));
        let n = rest
            .get(..2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
            .ok_or_else(bad_rdma)?;
        let rdma = rest.get(2..2 + n).ok_or_else(bad_rdma)?;
        Ok(Record {
            card,
            host_name,
            rdma,
            addrs: &rest[2 + n..],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_names_are_named() {
        let card = Card::local(Some([3; 16])).unwrap();
        let r = Record {
            card,
            host_name: "node-7".into(),
            rdma: b"card",
            addrs: b"127.0.0.1:5000",
        };
        let b = r.encode();
        assert_eq!(Record::decode(&b, 2).unwrap(), r);
        let long = Record {
            host_name: "\u{e9}".repeat(200),
            ..r.clone()
        };
        let b = long.encode();
        let back = Record::decode(&b, 2).unwrap();
        assert_eq!(back.host_name.len(), 254);
        assert_eq!(back.addrs, r.addrs);
        let mut b = r.encode();
        b[shm::CARD_LEN] = 200;
        let e = Record::decode(&b, 2).unwrap_err().to_string();
        assert!(e.contains("rank 2 published a malformed host name"), "{e}");
        let b = card.encode();
        assert!(Record::decode(&b, 2).is_err());
    }

    #[test]
    fn ranks_with_one_host_key_share_a_host_whatever_they_offer() {
        let a = Card::local(Some([1; 16])).unwrap();
        let b = Card::local(None).unwrap();
        let c = Card {
            net_ns: a.net_ns + 1,
            ..a
        };
        let rec = |card, n: &str| Record {
            card,
            host_name: n.into(),
            rdma: b"",
            addrs: b"",
        };
        let t = topology(&[rec(a, "x"), rec(c, "y"), rec(b, "x")]).unwrap();
        assert_eq!(t.nhosts(), 2);
        assert_eq!(t.ranks_of(0), &[0, 2]);
        assert_eq!(t.host_name(1), "y");
    }

    #[test]
    fn transport_names_parse() {
        assert_eq!(Choice::parse("").unwrap(), (Choice::Auto, Backend::Auto));
        assert_eq!(Choice::parse("SHM").unwrap(), (Choice::Shm, Backend::Auto));
        assert_eq!(Choice::parse("tcp").unwrap(), (Choice::Tcp, Backend::Auto));
        assert_eq!(
            Choice::parse("rdma").unwrap(),
            (Choice::Rdma, Backend::Auto)
        );
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
