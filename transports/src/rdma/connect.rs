//! Setting the RDMA transport up over the bootstrap exchange.
//!
//! Each rank opens its ports (`DMSC_IB_HCA`, [`super::hca`]: every selected active port, at
//! most [`MAX_NICS`] and at most [`RdmaOptions::paths`]), creates for every peer
//! [`RdmaOptions::paths`] reliable-connected queue pairs, queue pair `k` on port
//! `k % ports`, and moves them to INIT, registers its message, mailbox and staging memory on
//! every port, and publishes one [`Card`] (the ports' addresses and every queue pair number)
//! in a single exchange, as the TCP and shared-memory setups do. From the cards each rank
//! connects queue pair `k` to peer `p` with `p`'s queue pair `k` for it (on `p`'s port
//! `k % p's ports`): receives posted, then RTR (remote QPN, LID/GID, the smaller MTU) and
//! RTS (timeout and retry counts), per `ibv_modify_qp(3)`. The queue pairs of every port are
//! paths of the same peer: frames are spread over them and a failed one's work moves to the
//! others, on whichever port they are.

use super::dmabuf_export::DmabufExporter;
use super::options::RdmaOptions;
use super::pool::SlotPool;
use super::qp_state::{QpAttrs, QpState};
use super::transport::{Path, Peer, RdmaTransport, RECV_DEPTH, SEND_DEPTH};
use super::verbs::{Access, RemoteQp, VerbsProvider};
use super::wire::{Card, PeerCard, MAX_NICS, MSG_SLOT};
use dmsc_core::error::{Error, Result};
use dmsc_core::types::Rank;
use dmsc_core::wire::HEADER_LEN;

/// Publishes this rank's bytes and returns every rank's, indexed by rank.
pub type Exchange<'a> = &'a mut dyn FnMut(&[u8]) -> Result<Vec<Vec<u8>>>;

/// Connect `rank` of `nranks` to every other rank through `provider`'s devices:
/// [`prepare`], one exchange of the cards, [`Prepared::finish`].
pub fn connect(
    provider: &dyn VerbsProvider,
    opts: &RdmaOptions,
    rank: Rank,
    nranks: usize,
    exchange: Exchange<'_>,
) -> Result<RdmaTransport> {
    let mut p = prepare(provider, opts, rank, nranks)?;
    p.use_dmabuf(default_dmabuf());
    let all = exchange(p.card())?;
    p.finish(&all)
}

/// How GPU memory becomes dma-bufs unless told otherwise: the CUDA driver's export
/// (`cuMemGetHandleForAddressRange`, with the `cuda` feature), else an error saying why not.
pub fn default_dmabuf() -> Result<Box<dyn DmabufExporter>> {
    #[cfg(feature = "cuda")]
    {
        crate::cuda::dmabuf::CudaDmabuf::probe().map(|x| Box::new(x) as Box<dyn DmabufExporter>)
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(Error::usage("dmsc was built without the cuda feature"))
    }
}

/// A transport whose queue pairs exist (in INIT) and whose card is ready to publish.
pub struct Prepared {
    transport: RdmaTransport,
    card: Vec<u8>,
    paths: usize,
    attrs: QpAttrs,
}

/// Open the selected port, create the queue pairs and register the transport's memory.
/// Fails, with a reason fit for the log, where RDMA cannot serve this rank (no device, none
/// selected, the library missing, the pinned-memory limit).
pub fn prepare(
    provider: &dyn VerbsProvider,
    opts: &RdmaOptions,
    rank: Rank,
    nranks: usize,
) -> Result<Prepared> {
    let devices = provider.devices()?;
    let selected = opts.filter.select(&devices, &opts.hca)?;
    let np = opts.paths;
    let nics = selected.len().min(MAX_NICS).min(np);
    let used: Vec<String> = selected[..nics]
        .iter()
        .map(|s| format!("{}:{}", s.device, s.port))
        .collect();
    if selected.len() > nics {
        log::warn!(
            target: dmsc_core::subsys::NET,
            "rank {rank}: RDMA uses {} of the {} ports selected ({}): at most {MAX_NICS} ports, \
             and no more than DMSC_IB_QPS_PER_CONNECTION={np} (one queue pair per port at least)",
            nics,
            selected.len(),
            used.join(", ")
        );
    } else {
        log::info!(target: dmsc_core::subsys::NET, "rank {rank}: RDMA uses {}", used.join(", "));
    }
    let npeers = nranks.saturating_sub(1);
    let cq_depth = (nranks * np * (RECV_DEPTH + SEND_DEPTH) as usize).max(64);
    let mut ctxs = selected[..nics]
        .iter()
        .map(|s| provider.open(&s.device, s.port, opts.gid_index, cq_depth))
        .collect::<Result<Vec<_>>>()?;
    let rx = SlotPool::new(
        &mut ctxs,
        "receive message slots",
        MSG_SLOT,
        nranks * np * RECV_DEPTH as usize,
        Access::REMOTE_WRITE,
    )?;
    let tx = SlotPool::new(
        &mut ctxs,
        "send message slots",
        MSG_SLOT,
        (npeers * np * 16).max(64),
        Access::LOCAL,
    )?;
    let stage_tx = SlotPool::new(
        &mut ctxs,
        "send staging slots",
        opts.staging_slot,
        opts.staging_slots,
        Access::LOCAL,
    )?;
    let stage_rx = SlotPool::new(
        &mut ctxs,
        "receive staging slots",
        opts.staging_slot,
        opts.staging_slots,
        Access::REMOTE_WRITE,
    )?;
    let mut peers = Vec::with_capacity(nranks);
    let mut card = Card {
        addrs: ctxs.iter().map(|c| c.port_addr()).collect(),
        paths: np as u8,
        peers: vec![PeerCard::default(); nranks],
    };
    for p in 0..nranks {
        if p == rank {
            peers.push(None);
            continue;
        }
        let mut paths = Vec::with_capacity(np);
        for k in 0..np {
            let nic = k % nics;
            let ctx = &mut ctxs[nic];
            let qp = ctx.create_qp(SEND_DEPTH, RECV_DEPTH)?;
            ctx.modify_qp(qp, QpState::Init, &opts.attrs, None)?;
            card.peers[p].qpns.push(qp.qpn);
            paths.push(Path::new(qp, nic));
        }
        let mbox = SlotPool::new(
            &mut ctxs,
            "mailbox",
            HEADER_LEN,
            opts.window,
            Access::REMOTE_WRITE,
        )?;
        let trailers = SlotPool::new(
            &mut ctxs,
            "trailer slots",
            HEADER_LEN,
            2 * opts.window,
            Access::LOCAL,
        )?;
        peers.push(Some(Peer::new(
            paths,
            mbox,
            trailers,
            opts.spray,
            opts.staging_slot as u64,
        )));
    }
    let t = RdmaTransport::from_parts(
        rank,
        ctxs,
        provider.name(),
        opts.attrs,
        peers,
        rx,
        tx,
        stage_tx,
        stage_rx,
        np,
    );
    Ok(Prepared {
        transport: t,
        card: card.encode(),
        paths: np,
        attrs: opts.attrs,
    })
}

impl Prepared {
    /// Register GPU memory through `exporter`'s dma-bufs, or say why GPU memory is refused
    /// ([`RdmaTransport::use_dmabuf`]).
    pub fn use_dmabuf(&mut self, exporter: Result<Box<dyn DmabufExporter>>) {
        self.transport.use_dmabuf(exporter);
    }

    /// The bytes to publish.
    pub fn card(&self) -> &[u8] {
        &self.card
    }

    /// Connect with every rank's card (indexed by rank).
    pub fn finish(self, all: &[Vec<u8>]) -> Result<RdmaTransport> {
        let Prepared {
            transport: mut t,
            paths: np,
            attrs: base,
            ..
        } = self;
        let (rank, nranks) = (t.rank, t.peers.len());
        if all.len() != nranks {
            return Err(Error::internal(format!(
                "the exchange returned {} RDMA cards for {nranks} ranks",
                all.len()
            )));
        }
        let cards = all
            .iter()
            .enumerate()
            .map(|(r, b)| Card::decode(b, r, nranks))
            .collect::<Result<Vec<Card>>>()?;
        for (p, c) in cards.iter().enumerate() {
            if p == rank {
                continue;
            }
            if c.paths as usize != np {
                return Err(Error::invalid(format!(
                    "rank {p} uses {} RDMA queue pairs per peer and rank {rank} {np}: \
                 DMSC_IB_QPS_PER_CONNECTION must be the same on every rank",
                    c.paths
                )));
            }
            let theirs = &c.peers[rank].qpns;
            if theirs.len() != np {
                return Err(Error::protocol(format!(
                    "rank {p}'s RDMA card lists {} queue pairs for rank {rank}, not {np}",
                    theirs.len()
                )));
            }
            for (k, &qpn) in theirs.iter().enumerate() {
                for i in 0..RECV_DEPTH {
                    let slot = t.rx_slot(p, k, i);
                    t.post_rx(p, k, slot)?;
                }
                let remote_nic = k % c.addrs.len();
                let remote = RemoteQp {
                    addr: c.addrs[remote_nic],
                    qpn,
                };
                let path = &mut t.peers[p].as_mut().expect("peer").paths[k];
                path.remote = Some(remote);
                path.remote_nic = remote_nic;
                let (qp, nic) = (path.qp, path.nic);
                let ctx = &mut t.ctxs[nic];
                let attrs = QpAttrs {
                    mtu: remote.addr.mtu.min(ctx.port_addr().mtu),
                    ..base
                };
                ctx.modify_qp(qp, QpState::Rtr, &attrs, Some(remote))?;
                ctx.modify_qp(qp, QpState::Rts, &attrs, None)?;
            }
        }
        t.connected = true;
        Ok(t)
    }
}
